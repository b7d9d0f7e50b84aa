//! What happens when a Whisperer ends or its pod restarts.
//!
//! A pod that restarts as a NEW pod (a Deployment rollout, a deleted pod replaced) has a new
//! uid and no ephemeral containers: the pod watch (`watch/triggers.rs`) wakes every Attachment
//! selecting it and it is attached like any new pod (generation 1). A Whisperer that ENDS
//! inside a live pod (it crashed, or the pod's containers restarted and the kubelet reports it
//! terminated) cannot be restarted: ephemeral containers never are. The next generation
//! (`whisperer-<name>-2`, `-3` ...) replaces it, up to `--max-generations`; an expired
//! Attachment replaces nothing. A container under one of our names that is not ours (another
//! image or `WHISPERER_ATTACHMENT_UID`) is stepped over, never counted as attached.
//!
//! [`choose`] is pure; `pods/plan.rs` calls it for every selected pod on every pass.

use crate::engine::{ephemeral_container_name, SkipReason, ENV_ATTACHMENT_UID};
use crate::reconciler::attachment::status::PodEntry;
use crate::reconciler::crd::PodState;
use crate::reconciler::watch::PodInfo;

/// Container names of generations 1..=max.
pub fn generation_names(attachment: &str, max: u32) -> Vec<String> {
    (1..=max.max(1))
        .map(|g| ephemeral_container_name(attachment, g))
        .collect()
}

/// The generation number of `names[index]`.
pub fn gen_of(index: usize) -> u32 {
    u32::try_from(index + 1).unwrap_or(u32::MAX)
}

/// Where a pod stands with one identity's generations.
#[derive(Debug, Clone, PartialEq)]
pub enum Choice {
    /// Nothing to attach: the pod's entry says why (attached, expired, exhausted, conflict).
    Settled(PodEntry),
    /// Attach generation `index + 1` (`names[index]`); `note` says what it replaces.
    Attach { index: usize, note: Option<String> },
}

/// The generation to attach to `pod`, given which of `names` are ours (`ours(i)`: the pod
/// holds our container `names[i]`, or we patched it moments ago).
pub fn choose(
    pod: &PodInfo,
    names: &[String],
    expired: bool,
    ours: impl Fn(usize) -> bool,
) -> Choice {
    let entry = |state| PodEntry::new(pod.name(), state);
    let current = (0..names.len()).rev().find(|&i| ours(i));
    let mut note = None;
    let start = match current {
        None => 0,
        Some(i) => {
            let name = &names[i];
            let Some(t) = pod.ephemeral_terminated(name) else {
                return Choice::Settled(entry(PodState::Attached).container(name, gen_of(i)));
            };
            let ended = format!(
                "{name} terminated (exit code {}{})",
                t.exit_code,
                t.reason
                    .as_deref()
                    .map(|r| format!(", {r}"))
                    .unwrap_or_default()
            );
            if expired {
                let e = entry(PodState::Skipped)
                    .container(name, gen_of(i))
                    .reason(SkipReason::Expired.as_str(), Some(ended));
                return Choice::Settled(e);
            }
            if i + 1 >= names.len() {
                let e = entry(PodState::Failed).container(name, gen_of(i)).reason(
                    "GenerationsExhausted",
                    Some(format!("{ended}; all {} generations used", names.len())),
                );
                return Choice::Settled(e);
            }
            note = Some(format!("{ended}; generation {} replaces it", i + 2));
            i + 1
        }
    };
    // A name held by a container that is not ours (another image or attachment uid, e.g.
    // one a pod owner added to fake an attachment) is skipped, never counted as attached.
    let foreign: Vec<&str> = (start..names.len())
        .filter(|&i| pod.has_ephemeral(&names[i]))
        .map(|i| names[i].as_str())
        .collect();
    let Some(next) = (start..names.len()).find(|&i| !pod.has_ephemeral(&names[i])) else {
        let e = entry(PodState::Failed).reason(
            SkipReason::NameConflict.as_str(),
            Some(format!(
                "ephemeral containers {foreign:?} exist but are not this attachment's Whisperer \
                 (image or {} differ); no generation name is left",
                ENV_ATTACHMENT_UID
            )),
        );
        return Choice::Settled(e);
    };
    if !foreign.is_empty() {
        let n = format!(
            "ephemeral container {:?} is not this attachment's Whisperer (image or {} differ)",
            foreign[0], ENV_ATTACHMENT_UID
        );
        note = Some(note.map_or(n.clone(), |prev| format!("{prev}; {n}")));
    }
    Choice::Attach { index: next, note }
}
