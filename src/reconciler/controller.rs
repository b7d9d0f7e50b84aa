//! Reconciling one Attachment: policy checks, deadline, the pods it selects, patches, status,
//! Events, and the detach finalizer.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{finalizer, Event as Finalizer};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::{json, Value};
use tokio::time::Instant;

use super::attach::{Outcome, Patcher, FIELD_MANAGER};
use super::crd::{Attachment, AttachmentStatus, Phase, PodState, TargetKind, FINALIZER};
use super::deadline::{deadline, Deadline};
use super::informers::Caches;
use super::memory::Memory;
use super::metrics::{ErrorKind, ReconcilerMetrics};
use super::podwork::{self, Request, Step};
use super::status::{self, PodEntry, Readiness, Snapshot};
use super::ReconcilerError;
use crate::engine::policy::resolve_profile;
use crate::webhook::SharedSettings;

/// Shared by every reconcile and the backstop.
pub struct Ctx {
    pub client: Client,
    pub settings: SharedSettings,
    pub caches: Caches,
    pub patcher: Patcher,
    pub metrics: ReconcilerMetrics,
    pub memory: Memory,
    pub reporter: Reporter,
    pub max_generations: u32,
    pub resync: Duration,
    pub concurrency: usize,
    /// Extra env per Attachment (the control API's URL and token).
    pub agent_env: Option<super::agent::AgentEnv>,
}

impl Ctx {
    /// A recorder per pass: kube's recorder folds same-reason events into a series that keeps
    /// the first note, which would misreport later passes.
    pub fn recorder(&self) -> Recorder {
        Recorder::new(self.client.clone(), self.reporter.clone())
    }

    pub async fn publish(
        &self,
        recorder: &Recorder,
        reference: &k8s_openapi::api::core::v1::ObjectReference,
        warning: bool,
        reason: &str,
        note: String,
    ) {
        let ev = KubeEvent {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.into(),
            note: Some(truncate(note, 1000)),
            action: reason.into(),
            secondary: None,
        };
        if let Err(e) = recorder.publish(&ev, reference).await {
            self.metrics.error(ErrorKind::event);
            tracing::warn!(reason, error = %e, "cannot publish event");
        }
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max.saturating_sub(3);
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

/// `a, b, c and 7 more`
fn list_names(names: &[String], max: usize) -> String {
    let mut s = names
        .iter()
        .take(max)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > max {
        s.push_str(&format!(" and {} more", names.len() - max));
    }
    s
}

pub async fn reconcile(att: Arc<Attachment>, ctx: Arc<Ctx>) -> Result<Action, ReconcilerError> {
    let ns = att.namespace().ok_or(ReconcilerError::NoNamespace)?;
    let api: Api<Attachment> = Api::namespaced(ctx.client.clone(), &ns);
    finalizer(&api, FINALIZER, att, |event| async {
        match event {
            Finalizer::Apply(a) => apply(&a, &ctx).await,
            Finalizer::Cleanup(a) => detach(&a, &ctx).await,
        }
    })
    .await
    .map_err(|e| ReconcilerError::Finalizer(Box::new(e)))
}

pub fn error_policy(att: Arc<Attachment>, err: &ReconcilerError, ctx: Arc<Ctx>) -> Action {
    ctx.metrics.error(ErrorKind::attachment_api);
    tracing::warn!(attachment = %att.name_any(), namespace = ?att.namespace(), error = %err, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// Writes `new` unless equal to what the object holds. Keys the old status had and the new
/// one lacks are sent as null, so a merge patch removes them.
async fn write_status(
    api: &Api<Attachment>,
    att: &Attachment,
    new: &AttachmentStatus,
) -> Result<(), ReconcilerError> {
    if att.status.as_ref() == Some(new) {
        return Ok(());
    }
    let name = att.name_any();
    let mut body = serde_json::to_value(new).map_err(ReconcilerError::Serialize)?;
    if let (Some(old), Value::Object(fields)) = (att.status.as_ref(), &mut body) {
        if let Ok(Value::Object(old)) = serde_json::to_value(old) {
            for k in old.keys() {
                fields.entry(k.clone()).or_insert(Value::Null);
            }
        }
    }
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    api.patch_status(&name, &params, &Patch::Merge(json!({ "status": body })))
        .await
        .map_err(|source| ReconcilerError::Status { name, source })?;
    Ok(())
}

/// Why an Attachment cannot work at all, as (condition reason, message).
fn refusal(att: &Attachment, ns: &str, ctx: &Ctx) -> Result<(String, Deadline), (String, String)> {
    let settings = ctx.settings.load();
    let (profile_name, profile) = resolve_profile(&settings, ns, att.spec.profile.as_deref())
        .map_err(|r| (r.reason.condition_reason(), r.message))?;
    if att.metadata.name.as_deref() == Some(super::backstop::BACKSTOP_IDENTITY) {
        return Err((
            "InvalidSpec".into(),
            "the name \"backstop\" is reserved for the backstop's Whisperers".into(),
        ));
    }
    if let super::targets::Matcher::Nothing(why) = super::targets::Matcher::of(att) {
        return Err(("InvalidSpec".into(), why));
    }
    let created = att
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or_else(Timestamp::now, |t| t.0);
    let dl = deadline(
        created,
        att.spec.ttl.as_deref(),
        profile.max_ttl,
        profile_name,
    )
    .map_err(|e| ("InvalidSpec".to_string(), e))?;
    Ok((profile_name.to_string(), dl))
}

async fn apply(att: &Attachment, ctx: &Ctx) -> Result<Action, ReconcilerError> {
    let ns = att.namespace().ok_or(ReconcilerError::NoNamespace)?;
    let name = att.name_any();
    let api: Api<Attachment> = Api::namespaced(ctx.client.clone(), &ns);
    let now = Timestamp::now();
    let recorder = ctx.recorder();
    let reference = att.object_ref(&());
    let by = requested_by_note(att);
    let old_phase = att.status.as_ref().and_then(|s| s.phase);
    let snapshot = |phase, pods, readiness, expires_at| Snapshot {
        phase,
        target: att.target_description(),
        requested_by: att.requested_by().map(str::to_string),
        expires_at,
        generation: att.metadata.generation,
        pods,
        readiness,
        now,
        old: att.status.as_ref(),
    };

    let (profile, dl) = match refusal(att, &ns, ctx) {
        Ok(x) => x,
        Err((reason, message)) => {
            let readiness = Readiness {
                ready: false,
                reason: reason.clone(),
                message: message.clone(),
            };
            let st = status::build(snapshot(Phase::Failed, Vec::new(), readiness, None));
            let changed = att
                .status
                .as_ref()
                .and_then(|s| s.conditions.first())
                .map(|c| &c.message)
                != Some(&message);
            write_status(&api, att, &st).await?;
            if changed || old_phase != Some(Phase::Failed) {
                ctx.publish(
                    &recorder,
                    &reference,
                    true,
                    &reason,
                    format!("{message}{by}"),
                )
                .await;
            }
            // The configuration may change: look again at the resync.
            return Ok(Action::requeue(ctx.resync));
        }
    };

    let settings = ctx.settings.load_full();
    let expired = dl.expired(now);
    let deadline_text = dl.rfc3339();
    let uid = att.metadata.uid.clone().unwrap_or_default();
    let extra_env = ctx
        .agent_env
        .as_ref()
        .map(|f| f(&ns, &name, &uid))
        .unwrap_or_default();
    let req = Request {
        attachment: &name,
        attachment_uid: &uid,
        extra_env: &extra_env,
        profile: &profile,
        target_container: att.spec.container.as_deref(),
        deadline: deadline_text.as_deref(),
        expired,
    };
    let names = podwork::generation_names(&name, ctx.max_generations);
    let matcher = super::targets::Matcher::of(att);
    let pods = super::targets::resolve(att, &matcher, &ctx.caches.pods, &ctx.caches.owners);

    let mut entries: Vec<PodEntry> = Vec::with_capacity(pods.len());
    let mut retry_at: Option<Instant> = None;
    let mut work = Vec::new();
    for pod in pods.iter().filter(|p| !p.terminating()) {
        match podwork::step(pod, &req, &names, &settings, &ctx.memory) {
            Step::Entry(e, at) => {
                retry_at = earliest(retry_at, at);
                entries.push(e);
            }
            Step::Patch(w) => work.push(*w),
        }
    }
    let mut newly_attached = Vec::new();
    let mut refused: Vec<(String, String)> = Vec::new();
    let started = Instant::now();
    let to_patch = work.len();
    for (w, outcome) in podwork::execute(work, &ctx.patcher, ctx.concurrency).await {
        let Some((e, at)) = podwork::settle(&w, &outcome, &ctx.memory) else {
            continue;
        };
        match &outcome {
            Outcome::Attached => newly_attached.push(w.pod.name().to_string()),
            _ => refused.push((
                w.pod.name().to_string(),
                format!(
                    "{}: {}",
                    e.reason.clone().unwrap_or_default(),
                    e.message.clone().unwrap_or_default()
                ),
            )),
        }
        retry_at = earliest(retry_at, at);
        entries.push(e);
    }
    entries.sort_by(|a, b| a.pod.cmp(&b.pod));

    let attached = entries
        .iter()
        .filter(|e| e.state == PodState::Attached)
        .count();
    let eligible = entries
        .iter()
        .filter(|e| e.state != PodState::Skipped)
        .count();
    let phase = if expired {
        Phase::Expired
    } else if attached > 0 {
        Phase::Attached
    } else {
        Phase::Pending
    };
    let mut readiness = if expired {
        Readiness {
            ready: false,
            reason: "Expired".into(),
            message: format!(
                "the ttl ran out at {}: no pod is attached any more; {attached} pod(s) keep their \
                 Whisperer, which stops itself at that deadline",
                deadline_text.clone().unwrap_or_default()
            ),
        }
    } else if entries.is_empty() {
        Readiness {
            ready: false,
            reason: "NoPods".into(),
            message: no_pods_message(att, &ns, ctx).await,
        }
    } else if attached == eligible {
        Readiness {
            ready: true,
            reason: "AllAttached".into(),
            message: format!("{attached} of {eligible} pod(s) attached"),
        }
    } else {
        Readiness {
            ready: false,
            reason: "PartiallyAttached".into(),
            message: format!(
                "{attached} of {eligible} pod(s) attached; {}",
                summarize(&entries)
            ),
        }
    };
    if let Some(note) = &dl.note {
        readiness.message.push_str(&format!(" ({note})"));
    }
    let st = status::build(snapshot(phase, entries, readiness, dl.at));
    write_status(&api, att, &st).await?;
    tracing::debug!(
        attachment = %name,
        namespace = %ns,
        selected = st.selected_pods,
        attached = st.attached_pods,
        patched = to_patch,
        patch_seconds = started.elapsed().as_secs_f64(),
        "reconciled"
    );

    if !newly_attached.is_empty() {
        let note = format!(
            "attached the Whisperer to {} pod(s){by}: {}",
            newly_attached.len(),
            list_names(&newly_attached, 10)
        );
        ctx.publish(&recorder, &reference, false, "Attached", note)
            .await;
    }
    if !refused.is_empty() {
        let (pod, why) = &refused[0];
        let note = format!(
            "{} pod(s) not attached{by}, e.g. {pod}: {why}",
            refused.len()
        );
        ctx.publish(&recorder, &reference, true, "AttachFailed", note)
            .await;
    }
    if expired && old_phase != Some(Phase::Expired) {
        let note = format!(
            "the ttl ran out at {}; no further pods will be attached",
            deadline_text.unwrap_or_default()
        );
        ctx.publish(&recorder, &reference, false, "Expired", note)
            .await;
    }

    let mut next = ctx.resync;
    if let Some(left) = dl.remaining(now) {
        next = next.min(left + Duration::from_millis(500));
    }
    if let Some(at) = retry_at {
        next = next.min(at.saturating_duration_since(Instant::now()) + Duration::from_millis(100));
    }
    Ok(Action::requeue(next))
}

/// ` (requested by alice)`, or nothing when no requester is recorded.
fn requested_by_note(att: &Attachment) -> String {
    att.requested_by()
        .map(|u| format!(" (requested by {u})"))
        .unwrap_or_default()
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// `2 pending (pod-not-running), 1 refused (PodSecurity)`
fn summarize(entries: &[PodEntry]) -> String {
    let mut counts: std::collections::BTreeMap<(String, String), usize> = Default::default();
    for e in entries
        .iter()
        .filter(|e| e.state != PodState::Attached && e.state != PodState::Skipped)
    {
        let state = format!("{:?}", e.state).to_lowercase();
        *counts
            .entry((state, e.reason.clone().unwrap_or_default()))
            .or_default() += 1;
    }
    counts
        .into_iter()
        .map(|((state, reason), n)| format!("{n} {state} ({reason})"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Says whether the target exists when nothing is selected.
async fn no_pods_message(att: &Attachment, ns: &str, ctx: &Ctx) -> String {
    let Some(t) = &att.spec.target else {
        return format!(
            "no pod in namespace {ns:?} matches the {}",
            att.target_description()
        );
    };
    let c = ctx.client.clone();
    let found = match t.kind {
        TargetKind::Deployment => Api::<Deployment>::namespaced(c, ns)
            .get_metadata_opt(&t.name)
            .await
            .map(|o| o.is_some()),
        TargetKind::StatefulSet => Api::<StatefulSet>::namespaced(c, ns)
            .get_metadata_opt(&t.name)
            .await
            .map(|o| o.is_some()),
        TargetKind::DaemonSet => Api::<DaemonSet>::namespaced(c, ns)
            .get_metadata_opt(&t.name)
            .await
            .map(|o| o.is_some()),
        TargetKind::ReplicaSet => Api::<ReplicaSet>::namespaced(c, ns)
            .get_metadata_opt(&t.name)
            .await
            .map(|o| o.is_some()),
        TargetKind::Job => Api::<Job>::namespaced(c, ns)
            .get_metadata_opt(&t.name)
            .await
            .map(|o| o.is_some()),
        TargetKind::CronJob => Api::<CronJob>::namespaced(c, ns)
            .get_metadata_opt(&t.name)
            .await
            .map(|o| o.is_some()),
        TargetKind::Pod => Api::<Pod>::namespaced(c, ns)
            .get_metadata_opt(&t.name)
            .await
            .map(|o| o.is_some()),
    };
    match found {
        Ok(false) => format!(
            "{} {:?} not found in namespace {ns:?} (an Attachment only reaches its own namespace)",
            t.kind.as_str(),
            t.name
        ),
        Ok(true) => format!("{} {:?} has no pods yet", t.kind.as_str(), t.name),
        Err(e) => format!("no pods found for {} {:?} ({e})", t.kind.as_str(), t.name),
    }
}

/// The Attachment is being deleted: stop attaching, say so, and let the finalizer go.
async fn detach(att: &Attachment, ctx: &Ctx) -> Result<Action, ReconcilerError> {
    let ns = att.namespace().ok_or(ReconcilerError::NoNamespace)?;
    let api: Api<Attachment> = Api::namespaced(ctx.client.clone(), &ns);
    let attached = att.status.as_ref().map_or(0, |s| s.attached_pods);
    let deadline = att
        .status
        .as_ref()
        .and_then(|s| s.expires_at.as_ref())
        .map(|t| format!("its deadline {}", t.0))
        .unwrap_or_else(|| "the control API tells it to stop".into());
    let message = format!(
        "Attachment deleted: no further pods are attached. Ephemeral containers cannot be \
         removed, so the {attached} Whisperer(s) already attached keep running until {deadline} \
         or their pod ends."
    );
    let mut st = att.status.clone().unwrap_or_default();
    st.phase = Some(Phase::Detached);
    st.conditions = vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
        type_: status::CONDITION_READY.into(),
        status: "False".into(),
        reason: "Detached".into(),
        message: message.clone(),
        last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::now()),
        observed_generation: att.metadata.generation,
    }];
    if let Err(e) = write_status(&api, att, &st).await {
        // Recording the phase is best effort; the Event below is the durable record.
        tracing::info!(error = %e, "cannot write Detached status");
    }
    let recorder = ctx.recorder();
    ctx.publish(&recorder, &att.object_ref(&()), false, "Detached", message)
        .await;
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        assert_eq!(truncate("abcdef".into(), 5), "ab...");
        assert_eq!(
            list_names(&["a".into(), "b".into(), "c".into()], 2),
            "a, b and 1 more"
        );
        let entries = vec![
            PodEntry::new("a", PodState::Pending).reason("pod-not-running", None),
            PodEntry::new("b", PodState::Pending).reason("pod-not-running", None),
            PodEntry::new("c", PodState::Refused).reason("PodSecurity", None),
            PodEntry::new("d", PodState::Attached),
        ];
        assert_eq!(
            summarize(&entries),
            "2 pending (pod-not-running), 1 refused (PodSecurity)"
        );
    }
}
