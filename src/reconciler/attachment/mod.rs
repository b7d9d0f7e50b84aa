//! Reconciling one Attachment. This file is the I/O of a pass, in order: check the
//! Attachment (`checks.rs`), select its pods (`selection.rs`), decide and patch each pod
//! (`crate::reconciler::pods`), conclude phase / readiness / requeue (`conclusion.rs`, pure),
//! write the status (`status.rs`) and publish the Events (`events.rs`). Deletion runs
//! `detach.rs` through the finalizer.

pub mod checks;
pub mod conclusion;
pub mod detach;
pub mod events;
pub mod selection;
pub mod status;
pub mod ttl;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::runtime::events::Recorder;
use kube::runtime::finalizer::{finalizer, Event as Finalizer};
use kube::{Api, Resource, ResourceExt};
use tokio::time::Instant;

use self::checks::{check, Accepted};
use self::conclusion::{conclude, conclude_refused, needs_no_pods_reason, Conclusion, Pass};
use self::events::PodTally;
use self::selection::{explain_no_pods, resolve, Matcher};
use self::status::{write_status, PodEntry, Snapshot};
use super::context::{Context, Severity};
use super::crd::{Attachment, FINALIZER};
use super::metrics::ReconcileKind;
use super::pods::batch::{execute, settle};
use super::pods::generations::generation_names;
use super::pods::patcher::PatchAnswer;
use super::pods::plan::{step, Dedup, PodAction, Request};
use super::ReconcilerError;

/// The controller's entry point: apply, or detach when the Attachment is being deleted.
pub async fn reconcile(att: Arc<Attachment>, ctx: Arc<Context>) -> Result<Action, ReconcilerError> {
    let ns = att.namespace().ok_or(ReconcilerError::NoNamespace)?;
    let api: Api<Attachment> = Api::namespaced(ctx.client.clone(), &ns);
    let started = Instant::now();
    let mut kind = ReconcileKind::apply;
    let result = finalizer(&api, FINALIZER, att, |event| async {
        match event {
            Finalizer::Apply(a) => apply(&a, &ctx).await,
            Finalizer::Cleanup(a) => {
                kind = ReconcileKind::detach;
                detach::detach(&a, &ctx).await
            }
        }
    })
    .await
    .or_else(|e| match e {
        // A queued pass over an Attachment whose cleanup already let it go: nothing to do.
        kube::runtime::finalizer::Error::RemoveFinalizer(kube::Error::Api(s)) if s.code == 404 => {
            Ok(Action::await_change())
        }
        e => Err(ReconcilerError::Finalizer(Box::new(e))),
    });
    ctx.metrics
        .reconciled(kind, result.is_ok(), started.elapsed());
    result
}

pub fn error_policy(att: Arc<Attachment>, err: &ReconcilerError, ctx: Arc<Context>) -> Action {
    ctx.metrics.error(err.kind());
    tracing::warn!(attachment = %att.name_any(), namespace = ?att.namespace(), error = %err, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

async fn publish_all(
    ctx: &Context,
    recorder: &Recorder,
    att: &Attachment,
    notes: Vec<events::Note>,
) {
    let reference = att.object_ref(&());
    for n in notes {
        let severity = if n.warning {
            Severity::Warning
        } else {
            Severity::Normal
        };
        ctx.publish(recorder, &reference, severity, n.reason, n.text)
            .await;
    }
}

#[tracing::instrument(
    name = "reconcile",
    skip_all,
    fields(attachment = %att.name_any(), namespace = ?att.namespace(), phase, selected, attached)
)]
async fn apply(att: &Attachment, ctx: &Context) -> Result<Action, ReconcilerError> {
    let ns = att.namespace().ok_or(ReconcilerError::NoNamespace)?;
    let name = att.name_any();
    let api: Api<Attachment> = Api::namespaced(ctx.client.clone(), &ns);
    let now = Timestamp::now();
    let recorder = ctx.recorder();
    let old_phase = att.status.as_ref().and_then(|s| s.phase);
    let by = events::requested_by_note(att);
    let write = |c: &Conclusion, pods: Vec<PodEntry>, expires_at| {
        let span = tracing::Span::current();
        span.record("phase", c.phase.as_str());
        let st = status::build(Snapshot {
            phase: c.phase,
            target: att.target_description(),
            requested_by: att.requested_by().map(str::to_string),
            expires_at,
            generation: att.metadata.generation,
            pods,
            readiness: c.readiness.clone(),
            now,
            old: att.status.as_ref(),
        });
        span.record("selected", st.selected_pods);
        span.record("attached", st.attached_pods);
        st
    };

    let settings = ctx.settings.load_full();
    let Accepted { profile, deadline } = match check(att, &ns, &settings) {
        Ok(accepted) => accepted,
        Err(refused) => {
            let c = conclude_refused(&refused, ctx.resync);
            let st = write(&c, Vec::new(), None);
            let news = events::refusal_is_news(att.status.as_ref(), &refused.message);
            write_status(&api, att, &st).await?;
            if news {
                // The Event's reason is the refusal's (UnknownProfile, InvalidSpec ...).
                ctx.publish(
                    &recorder,
                    &att.object_ref(&()),
                    Severity::Warning,
                    &refused.reason,
                    format!("{}{by}", refused.message),
                )
                .await;
            }
            return Ok(Action::requeue(c.requeue_after));
        }
    };

    let expired = deadline.expired(now);
    let deadline_text = deadline.rfc3339();
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
    let names = generation_names(&name, ctx.max_generations);
    let pods = resolve(att, &Matcher::of(att), &ctx.caches.pods, &ctx.caches.owners);

    let mut entries: Vec<PodEntry> = Vec::with_capacity(pods.len());
    let mut retry_at: Option<Instant> = None;
    let mut work = Vec::new();
    let mut dedup = Dedup::default();
    for pod in pods.iter().filter(|p| !p.terminating()) {
        match step(pod, &req, &names, &settings, &ctx.backoff) {
            PodAction::Report(e, at) => {
                retry_at = earliest(retry_at, at);
                entries.push(e);
            }
            PodAction::Patch(w) => work.push(dedup.share(*w)),
        }
    }
    // Patched pods are held by their work item; the rest need not outlive the plan.
    drop(pods);
    let mut newly_attached = PodTally::default();
    let mut refused = PodTally::default();
    let started = Instant::now();
    let to_patch = work.len();
    let mut answers = execute(work, &ctx.patcher, ctx.concurrency);
    while let Some((w, answer)) = answers.next().await {
        let Some((e, at)) = settle(&w, &answer, &ctx.backoff) else {
            continue;
        };
        match &answer {
            PatchAnswer::Attached => newly_attached.push(w.pod.name(), || None),
            _ => refused.push(w.pod.name(), || {
                Some(format!(
                    "{}: {}",
                    e.reason.as_deref().unwrap_or_default(),
                    e.message.as_deref().unwrap_or_default()
                ))
            }),
        }
        retry_at = earliest(retry_at, at);
        entries.push(e);
    }
    entries.sort_by(|a, b| a.pod.cmp(&b.pod));

    let no_pods = if needs_no_pods_reason(&entries, expired) {
        Some(explain_no_pods(att, &ns, &ctx.client).await)
    } else {
        None
    };
    let c = conclude(&Pass {
        entries: &entries,
        expired,
        deadline: deadline_text.as_deref(),
        ttl_note: deadline.note.as_deref(),
        remaining: deadline.remaining(now),
        retry_in: retry_at.map(|at| at.saturating_duration_since(Instant::now())),
        no_pods: no_pods.as_deref(),
        resync: ctx.resync,
    });
    let st = write(&c, entries, deadline.at);
    write_status(&api, att, &st).await?;
    tracing::debug!(
        patched = to_patch,
        patch_seconds = started.elapsed().as_secs_f64(),
        attached_now = st.attached_pods,
        "reconciled"
    );
    let notes = events::after_pass(
        &by,
        &newly_attached,
        &refused,
        expired,
        old_phase,
        deadline_text.as_deref(),
    );
    publish_all(ctx, &recorder, att, notes).await;
    Ok(Action::requeue(c.requeue_after))
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
