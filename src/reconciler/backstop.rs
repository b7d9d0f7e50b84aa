//! The backstop: pods that opted in (`whisperer.dev/inject: "true"`, or every pod with
//! `--inject-by-default`) in a namespace labelled `injection=enabled`, which the webhook would
//! have injected but which carry no `whisperer.dev/injected` marker — the webhook was down and
//! `failurePolicy: Ignore` let them through. They are counted in
//! `whisperer_backstop_uninjected_pods`, reported once each with a Warning Event on the pod,
//! and with `--backstop-attach` given an ephemeral Whisperer (`whisperer-backstop`, attachment
//! identity `backstop`) through the same engine as Attachments.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::ResourceExt;

use super::context::{Context, Severity};
use super::pods::batch::{execute, settle};
use super::pods::generations::generation_names;
use super::pods::patcher::PatchAnswer;
use super::pods::plan::{step, Dedup, PodAction, Request};
use super::watch::PodInfo;
use crate::engine::pod_security::{Level, LABEL_ENFORCE};
use crate::engine::{decide_sidecar, Decision, ANNOTATION_INJECTED, ANNOTATION_PROFILE};

/// Attachment identity of backstop Whisperers (container `whisperer-backstop`).
pub const BACKSTOP_IDENTITY: &str = "backstop";
/// Namespace label the webhook's namespaceSelector requires.
pub const NAMESPACE_LABEL: (&str, &str) = ("injection", "enabled");

fn pod_reference(p: &PodInfo) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: Some(p.name().to_string()),
        namespace: Some(p.namespace().to_string()),
        uid: Some(p.uid().to_string()),
        ..ObjectReference::default()
    }
}

/// Opted-in pods the webhook missed.
fn uninjected(ctx: &Context) -> Vec<Arc<PodInfo>> {
    let settings = ctx.settings.load();
    let enabled: HashMap<String, Option<Level>> = ctx
        .caches
        .namespaces
        .state()
        .iter()
        .filter(|n| {
            n.labels().get(NAMESPACE_LABEL.0).map(String::as_str) == Some(NAMESPACE_LABEL.1)
        })
        .map(|n| {
            let level = n.labels().get(LABEL_ENFORCE).map(|v| Level::from_label(v));
            (n.name_any(), level)
        })
        .collect();
    ctx.caches.pods.filter(
        |ns| enabled.contains_key(ns),
        |p| {
            if p.terminating() || p.finished() || p.annotation(ANNOTATION_INJECTED).is_some() {
                return false;
            }
            // The webhook's own question, asked of the cache entry.
            let level = enabled.get(p.namespace()).copied().flatten();
            matches!(
                decide_sidecar(p, p.namespace(), level, &settings),
                Decision::Inject(_)
            )
        },
    )
}

pub async fn run(ctx: Arc<Context>, interval: Duration, attach: bool) {
    let mut reported: HashSet<String> = HashSet::new();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        scan(&ctx, attach, &mut reported).await;
    }
}

#[tracing::instrument(name = "backstop_scan", skip_all, fields(attach = attach, uninjected))]
async fn scan(ctx: &Context, attach: bool, reported: &mut HashSet<String>) {
    let mut pods = uninjected(ctx);
    pods.sort_by(|a, b| (a.namespace(), a.name()).cmp(&(b.namespace(), b.name())));
    tracing::Span::current().record("uninjected", pods.len());
    ctx.metrics
        .backstop_uninjected
        .set(i64::try_from(pods.len()).unwrap_or(i64::MAX));
    let recorder = ctx.recorder();
    let current: HashSet<String> = pods.iter().map(|p| p.uid().to_string()).collect();
    reported.retain(|uid| current.contains(uid));
    for p in &pods {
        if reported.insert(p.uid().to_string()) {
            tracing::warn!(
                namespace = p.namespace(),
                pod = p.name(),
                "opted-in pod was admitted without the Whisperer"
            );
            let note = if attach {
                "the pod opted in to the Whisperer but was admitted without it (was the webhook \
                 down?); the backstop attaches it as the ephemeral container whisperer-backstop"
            } else {
                "the pod opted in to the Whisperer but was admitted without it (was the webhook \
                 down?); recreate the pod, or run the injector with --backstop-attach"
            };
            ctx.publish(
                &recorder,
                &pod_reference(p),
                Severity::Warning,
                "NotInjected",
                note.into(),
            )
            .await;
        }
    }
    if !attach {
        return;
    }
    let settings = ctx.settings.load_full();
    let names = generation_names(BACKSTOP_IDENTITY, ctx.max_generations);
    let mut work = Vec::new();
    let mut dedup = Dedup::default();
    for p in &pods {
        let profile = p
            .annotation(ANNOTATION_PROFILE)
            .map_or_else(|| settings.config.default_profile.clone(), str::to_string);
        let req = Request {
            attachment: BACKSTOP_IDENTITY,
            // The backstop is one identity for every pod: its name serves as its uid.
            attachment_uid: BACKSTOP_IDENTITY,
            profile: &profile,
            target_container: None,
            deadline: None,
            expired: false,
            extra_env: &[],
        };
        if let PodAction::Patch(w) = step(p, &req, &names, &settings, &ctx.backoff) {
            work.push(dedup.share(*w));
        }
    }
    let mut answers = execute(work, &ctx.patcher, ctx.concurrency);
    while let Some((w, answer)) = answers.next().await {
        let Some((entry, _)) = settle(&w, &answer, &ctx.backoff) else {
            continue;
        };
        let (severity, reason, note) = match &answer {
            PatchAnswer::Attached => (
                Severity::Normal,
                "Attached",
                format!(
                    "backstop attached the Whisperer as ephemeral container {}",
                    w.container.name
                ),
            ),
            _ => (
                Severity::Warning,
                "AttachFailed",
                format!(
                    "backstop could not attach {}: {}: {}",
                    w.container.name,
                    entry.reason.unwrap_or_default(),
                    entry.message.unwrap_or_default()
                ),
            ),
        };
        ctx.publish(&recorder, &pod_reference(&w.pod), severity, reason, note)
            .await;
    }
}
