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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconciler::watch::{
        ContainerView, EphemeralState, EphemeralStatus, PodView, Terminated,
    };

    /// A pod holding `ephemeral` containers, the names in `ended` terminated.
    fn pod(ephemeral: &[&str], ended: &[&str]) -> PodInfo {
        let mut v = PodView::default();
        v.metadata.name = Some("p".into());
        v.metadata.namespace = Some("a".into());
        v.spec.ephemeral_containers = ephemeral
            .iter()
            .map(|n| ContainerView {
                name: n.to_string(),
                ..Default::default()
            })
            .collect();
        v.status.ephemeral_container_statuses = ended
            .iter()
            .map(|n| EphemeralStatus {
                name: n.to_string(),
                state: EphemeralState {
                    terminated: Some(Terminated {
                        exit_code: 137,
                        reason: Some("OOMKilled".into()),
                    }),
                },
            })
            .collect();
        PodInfo::new(&v)
    }

    fn names() -> Vec<String> {
        generation_names("cap", 3)
    }

    /// Every container under our names is ours.
    fn all_ours(p: &PodInfo) -> impl Fn(usize) -> bool + '_ {
        let n = names();
        move |i| p.has_ephemeral(&n[i])
    }

    #[test]
    fn a_new_pod_gets_generation_one() {
        let p = pod(&[], &[]);
        assert_eq!(
            choose(&p, &names(), false, all_ours(&p)),
            Choice::Attach {
                index: 0,
                note: None
            }
        );
    }

    #[test]
    fn a_running_whisperer_is_attached() {
        let p = pod(&["whisperer-cap"], &[]);
        let Choice::Settled(e) = choose(&p, &names(), false, all_ours(&p)) else {
            panic!("settled")
        };
        assert_eq!((e.state, e.generation), (PodState::Attached, Some(1)));
    }

    #[test]
    fn an_ended_whisperer_is_replaced_by_the_next_generation() {
        let p = pod(&["whisperer-cap"], &["whisperer-cap"]);
        match choose(&p, &names(), false, all_ours(&p)) {
            Choice::Attach { index: 1, note } => {
                let note = note.expect("note");
                assert!(note.contains("exit code 137, OOMKilled"), "{note}");
                assert!(note.contains("generation 2 replaces it"), "{note}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn nothing_replaces_a_whisperer_after_expiry_or_the_last_generation() {
        let p = pod(&["whisperer-cap"], &["whisperer-cap"]);
        let Choice::Settled(e) = choose(&p, &names(), true, all_ours(&p)) else {
            panic!("settled")
        };
        assert_eq!(
            (e.state, e.reason.as_deref()),
            (PodState::Skipped, Some("expired"))
        );
        let all = ["whisperer-cap", "whisperer-cap-2", "whisperer-cap-3"];
        let p = pod(&all, &["whisperer-cap-3"]);
        let Choice::Settled(e) = choose(&p, &names(), false, all_ours(&p)) else {
            panic!("settled")
        };
        assert_eq!(
            (e.state, e.reason.as_deref()),
            (PodState::Failed, Some("GenerationsExhausted"))
        );
    }

    #[test]
    fn a_look_alike_is_stepped_over() {
        // Generation 1's name is taken by somebody else's container.
        let p = pod(&["whisperer-cap"], &[]);
        match choose(&p, &names(), false, |_| false) {
            Choice::Attach { index: 1, note } => {
                assert!(note.is_some_and(|n| n.contains("is not this attachment's Whisperer")))
            }
            other => panic!("{other:?}"),
        }
        let p = pod(
            &["whisperer-cap", "whisperer-cap-2", "whisperer-cap-3"],
            &[],
        );
        let Choice::Settled(e) = choose(&p, &names(), false, |_| false) else {
            panic!("settled")
        };
        assert_eq!(e.reason.as_deref(), Some("name-conflict"));
    }
}
