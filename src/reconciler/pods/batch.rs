//! Patching a pass's pods: grouped by pod template, one dry run speaks for each group (Pod
//! Security would judge its pods alike), then the real patches in bounded parallel; each
//! answer becomes the pod's status entry and is remembered for the back-off.

use std::collections::BTreeMap;

use futures::stream::{self, BoxStream};
use futures::StreamExt;
use tokio::time::Instant;

use super::backoff::Backoff;
use super::patcher::{PatchAnswer, Patcher};
use super::plan::Work;
use crate::reconciler::attachment::status::PodEntry;
use crate::reconciler::crd::PodState;

/// Pods whose ephemeral container Pod Security would judge alike: same controller, same
/// template revision, same container. One dry run speaks for the group.
fn template_key(w: &Work) -> String {
    let revision = w
        .pod
        .label("pod-template-hash")
        .or_else(|| w.pod.label("controller-revision-hash"));
    match (w.pod.controller(), revision) {
        (Some((kind, name)), Some(rev)) => format!("{kind}/{name}/{rev}/{}", w.container.name),
        (Some(("Job", name)), None) => format!("Job/{name}/{}", w.container.name),
        _ => format!("pod/{}/{}", w.pod.uid(), w.container.name),
    }
}

/// The dry run, then the group's real patches as they are answered.
fn run_group(
    group: Vec<Work>,
    patcher: &Patcher,
    concurrency: usize,
) -> BoxStream<'_, (Work, PatchAnswer)> {
    stream::once(async move {
        let Some(first) = group.first() else {
            return stream::empty().boxed();
        };
        let dry = patcher
            .add(
                first.pod.namespace(),
                first.pod.name(),
                &first.container,
                true,
            )
            .await;
        if let PatchAnswer::Refused { .. } = dry {
            return stream::iter(group.into_iter().map(move |w| (w, dry.clone()))).boxed();
        }
        stream::iter(group)
            .map(move |w| async move {
                let o = patcher
                    .add(w.pod.namespace(), w.pod.name(), &w.container, false)
                    .await;
                (w, o)
            })
            .buffer_unordered(concurrency)
            .boxed()
    })
    .flatten()
    .boxed()
}

/// Patches every pod of `works`: a dry run per template group first, then the real patches.
/// Answers are yielded as they come so the caller settles each and drops its pod: a pass over
/// 10,000 pods would otherwise hold every pod's pre-patch cache entry (the watch has replaced
/// it by then) until the last answer.
pub fn execute(
    works: Vec<Work>,
    patcher: &Patcher,
    concurrency: usize,
) -> BoxStream<'_, (Work, PatchAnswer)> {
    let mut groups: BTreeMap<String, Vec<Work>> = BTreeMap::new();
    for w in works {
        groups.entry(template_key(&w)).or_default().push(w);
    }
    stream::iter(groups.into_values())
        .map(move |g| run_group(g, patcher, concurrency))
        .flatten_unordered(concurrency)
        .boxed()
}

/// The status entry for a patch answer (`None`: the pod is gone), remembering successes and
/// failures; the `Instant` is when a failed pod is tried again.
pub fn settle(
    w: &Work,
    outcome: &PatchAnswer,
    backoff: &Backoff,
) -> Option<(PodEntry, Option<Instant>)> {
    let name = &w.container.name;
    let base = PodEntry::new(w.pod.name(), PodState::Attached).container(name, w.generation);
    let failed = |state: PodState, reason: &str, message: String| {
        let e = PodEntry {
            state,
            ..base.clone()
        }
        .reason(reason, Some(message));
        let at = backoff.record_failure(w.pod.uid(), name, e.clone());
        Some((e, Some(at)))
    };
    match outcome {
        PatchAnswer::Attached => {
            backoff.record_attached(w.pod.uid(), name);
            let mut e = base.clone();
            e.message = w.note.clone();
            Some((e, None))
        }
        PatchAnswer::Gone => None,
        PatchAnswer::Refused { reason, message } => {
            failed(PodState::Refused, reason, message.clone())
        }
        PatchAnswer::Dropped => failed(
            PodState::Refused,
            "Dropped",
            format!("the API server accepted the patch but the answer has no container {name:?}"),
        ),
        PatchAnswer::Failed { message } => {
            failed(PodState::Pending, "PatchFailed", message.clone())
        }
    }
}
