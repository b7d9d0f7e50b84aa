//! What one pass does to one selected pod, shared by Attachments and the backstop: pick
//! the generation (`generations.rs`), wait out a back-off (`backoff.rs`), then ask the engine
//! whether and what to attach, reading the pod cache entry directly. The answer is a status
//! entry, or a container to patch (`batch.rs`).

use std::sync::Arc;

use k8s_openapi::api::core::v1::{EnvVar, EphemeralContainer};
use tokio::time::Instant;

use super::backoff::Backoff;
use super::generations::{choose, gen_of, Choice};
use crate::engine::{decide_attach, AttachSubject, Decision, Settings, SkipReason};
use crate::reconciler::attachment::status::PodEntry;
use crate::reconciler::crd::PodState;
use crate::reconciler::watch::PodInfo;
use crate::render::ephemeral_container;

/// One Whisperer request, with the clock already read.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Attachment identity: names the containers and goes into `WHISPERER_ATTACHMENT`.
    pub attachment: &'a str,
    /// The attachment's uid (`WHISPERER_ATTACHMENT_UID`): a container found under one of our
    /// names counts as ours only when it carries it and the profile's image.
    pub attachment_uid: &'a str,
    pub profile: &'a str,
    pub target_container: Option<&'a str>,
    /// RFC 3339, handed to the agent in `WHISPERER_DEADLINE`.
    pub deadline: Option<&'a str>,
    pub expired: bool,
    /// Set last in the agent's env (the control API's URL and token).
    pub extra_env: &'a [EnvVar],
}

/// A pod to patch.
#[derive(Debug, Clone)]
pub struct Work {
    pub pod: Arc<PodInfo>,
    pub generation: u32,
    pub container: EphemeralContainer,
    /// Said in the status entry (engine warnings, the previous generation's end).
    pub note: Option<String>,
}

/// What a pass does with one pod.
#[derive(Debug)]
pub enum PodAction {
    /// Nothing to send; the pod's standing, and when a back-off ends if one runs.
    Report(PodEntry, Option<Instant>),
    Patch(Box<Work>),
}

/// Decides what this pass does with `pod`.
pub fn step(
    pod: &Arc<PodInfo>,
    req: &Request<'_>,
    names: &[String],
    settings: &Settings,
    backoff: &Backoff,
) -> PodAction {
    let uid = pod.uid();
    let entry = |state| PodEntry::new(pod.name(), state);
    let image = settings
        .config
        .profiles
        .get(req.profile)
        .map_or("", |p| p.image.as_str());
    let ours = |i: usize| {
        backoff.recently_attached(uid, &names[i])
            || pod.ephemeral_is(&names[i], image, req.attachment_uid)
    };
    let (next, note) = match choose(pod, names, req.expired, ours) {
        Choice::Settled(e) => return PodAction::Report(e, None),
        Choice::Attach { index, note } => (index, note),
    };
    let name = &names[next];
    let generation = gen_of(next);
    if let Some((e, retry_at)) = backoff.backing_off(uid, name) {
        return PodAction::Report(e, Some(retry_at));
    }
    let subject = AttachSubject {
        attachment: req.attachment,
        attachment_uid: req.attachment_uid,
        profile: Some(req.profile),
        target_container: req.target_container,
        deadline: req.deadline,
        expired: req.expired,
        generation,
        extra_env: req.extra_env,
    };
    match decide_attach(&**pod, &subject, settings) {
        Decision::Inject(plan) => {
            let mut notes: Vec<String> = note.into_iter().collect();
            notes.extend(plan.warnings.iter().cloned());
            PodAction::Patch(Box::new(Work {
                pod: pod.clone(),
                generation,
                container: ephemeral_container(&plan),
                note: (!notes.is_empty()).then(|| notes.join("; ")),
            }))
        }
        Decision::Skip { reason, detail } => {
            let state = match reason {
                SkipReason::AlreadyAttached => PodState::Attached,
                SkipReason::PodNotRunning if !pod.finished() => PodState::Pending,
                SkipReason::PodNotRunning
                | SkipReason::PodTerminating
                | SkipReason::AlreadyInjected
                | SkipReason::Expired => PodState::Skipped,
                _ => PodState::Failed,
            };
            let mut e = entry(state).container(name, generation);
            if state != PodState::Attached {
                e = e.reason(reason.as_str(), detail.or(note));
            }
            PodAction::Report(e, None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::config::DEFAULT_IMAGE;
    use crate::engine::ENV_ATTACHMENT_UID;
    use crate::reconciler::pods::batch::settle;
    use crate::reconciler::pods::generations::generation_names;
    use crate::reconciler::pods::patcher::PatchAnswer;
    use crate::reconciler::watch::{
        ContainerView, EnvView, EphemeralState, EphemeralStatus, PodView, Terminated,
    };

    fn settings() -> Settings {
        Settings::new(Arc::new(Config::default()), "whisperer-system")
    }

    fn running(name: &str, ephemeral: &[&str]) -> PodView {
        let mut p = PodView::default();
        p.metadata.name = Some(name.into());
        p.metadata.namespace = Some("a".into());
        p.metadata.uid = Some(format!("uid-{name}"));
        p.spec.containers = vec![ContainerView {
            name: "app".into(),
            image: Some("nginx".into()),
            ..ContainerView::default()
        }];
        p.spec.ephemeral_containers = ephemeral
            .iter()
            .map(|n| ContainerView {
                name: n.to_string(),
                image: Some(DEFAULT_IMAGE.into()),
                env: vec![EnvView {
                    name: ENV_ATTACHMENT_UID.into(),
                    value: Some("uid-cap".into()),
                }],
                ..ContainerView::default()
            })
            .collect();
        p.status.phase = Some("Running".into());
        p
    }

    fn terminated(p: &mut PodView, name: &str) {
        p.status.ephemeral_container_statuses.push(EphemeralStatus {
            name: name.into(),
            state: EphemeralState {
                terminated: Some(Terminated {
                    exit_code: 1,
                    reason: Some("Error".into()),
                }),
            },
        });
    }

    const REQ: Request<'static> = Request {
        attachment: "cap",
        attachment_uid: "uid-cap",
        profile: "default",
        target_container: None,
        deadline: Some("2030-01-01T00:00:00Z"),
        expired: false,
        extra_env: &[],
    };

    #[test]
    fn generations_follow_terminations() {
        let names = generation_names("cap", 3);
        assert_eq!(
            names,
            ["whisperer-cap", "whisperer-cap-2", "whisperer-cap-3"]
        );
        let mem = Backoff::default();
        let s = settings();
        match step(
            &Arc::new(PodInfo::new(&running("p", &[]))),
            &REQ,
            &names,
            &s,
            &mem,
        ) {
            PodAction::Patch(w) => {
                assert_eq!(
                    (w.generation, w.container.name.as_str()),
                    (1, "whisperer-cap")
                );
                assert_eq!(w.container.target_container_name.as_deref(), Some("app"));
            }
            other => panic!("{other:?}"),
        }
        match step(
            &Arc::new(PodInfo::new(&running("p", &["whisperer-cap"]))),
            &REQ,
            &names,
            &s,
            &mem,
        ) {
            PodAction::Report(e, None) => assert_eq!(e.state, PodState::Attached),
            other => panic!("{other:?}"),
        }
        let mut p = running("p", &["whisperer-cap"]);
        terminated(&mut p, "whisperer-cap");
        match step(&Arc::new(PodInfo::new(&p)), &REQ, &names, &s, &mem) {
            PodAction::Patch(w) => {
                assert_eq!(w.generation, 2);
                assert!(w.note.as_deref().is_some_and(|n| n.contains("exit code 1")));
            }
            other => panic!("{other:?}"),
        }
        let mut p = running(
            "p",
            &["whisperer-cap", "whisperer-cap-2", "whisperer-cap-3"],
        );
        terminated(&mut p, "whisperer-cap-3");
        match step(&Arc::new(PodInfo::new(&p)), &REQ, &names, &s, &mem) {
            PodAction::Report(e, None) => {
                assert_eq!(e.state, PodState::Failed);
                assert_eq!(e.reason.as_deref(), Some("GenerationsExhausted"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_look_alike_container_is_not_an_attachment() {
        let names = generation_names("cap", 3);
        let mem = Backoff::default();
        let s = settings();
        // Same name, but another image: a pod owner's fake.
        let mut fake = running("p", &["whisperer-cap"]);
        fake.spec.ephemeral_containers[0].image = Some("busybox".into());
        match step(&Arc::new(PodInfo::new(&fake)), &REQ, &names, &s, &mem) {
            PodAction::Patch(w) => {
                assert_eq!(w.container.name, "whisperer-cap-2");
                assert!(w
                    .note
                    .as_deref()
                    .is_some_and(|n| n.contains("not this attachment")));
            }
            other => panic!("{other:?}"),
        }
        // Same name and image, but another attachment's uid.
        let mut other = running("p", &["whisperer-cap"]);
        other.spec.ephemeral_containers[0].env[0].value = Some("uid-old".into());
        assert!(matches!(
            step(&Arc::new(PodInfo::new(&other)), &REQ, &names, &s, &mem),
            PodAction::Patch(w) if w.generation == 2
        ));
        // Every name taken by look-alikes: refused, never "attached".
        let mut all = running(
            "p",
            &["whisperer-cap", "whisperer-cap-2", "whisperer-cap-3"],
        );
        for c in &mut all.spec.ephemeral_containers {
            c.image = Some("busybox".into());
        }
        match step(&Arc::new(PodInfo::new(&all)), &REQ, &names, &s, &mem) {
            PodAction::Report(e, None) => {
                assert_eq!(e.state, PodState::Failed);
                assert_eq!(e.reason.as_deref(), Some("name-conflict"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn skips_and_memory() {
        let names = generation_names("cap", 3);
        let mem = Backoff::default();
        let s = settings();
        let mut pending = running("p", &[]);
        pending.status.phase = Some("Pending".into());
        match step(&Arc::new(PodInfo::new(&pending)), &REQ, &names, &s, &mem) {
            PodAction::Report(e, None) => {
                assert_eq!(e.state, PodState::Pending);
                assert_eq!(e.reason.as_deref(), Some("pod-not-running"));
            }
            other => panic!("{other:?}"),
        }
        let expired = Request {
            expired: true,
            ..REQ
        };
        match step(
            &Arc::new(PodInfo::new(&running("p", &[]))),
            &expired,
            &names,
            &s,
            &mem,
        ) {
            PodAction::Report(e, None) => assert_eq!(e.state, PodState::Skipped),
            other => panic!("{other:?}"),
        }
        let missing = Request {
            target_container: Some("nope"),
            ..REQ
        };
        match step(
            &Arc::new(PodInfo::new(&running("p", &[]))),
            &missing,
            &names,
            &s,
            &mem,
        ) {
            PodAction::Report(e, None) => assert_eq!(e.state, PodState::Failed),
            other => panic!("{other:?}"),
        }
        // A patch the watch has not echoed yet counts as attached.
        mem.record_attached("uid-q", "whisperer-cap");
        match step(
            &Arc::new(PodInfo::new(&running("q", &[]))),
            &REQ,
            &names,
            &s,
            &mem,
        ) {
            PodAction::Report(e, None) => assert_eq!(e.state, PodState::Attached),
            other => panic!("{other:?}"),
        }
        // A refused pod waits for its back-off.
        let pod = Arc::new(PodInfo::new(&running("r", &[])));
        let PodAction::Patch(w) = step(&pod, &REQ, &names, &s, &mem) else {
            panic!("expected a patch")
        };
        let refused = PatchAnswer::Refused {
            reason: "PodSecurity",
            message: "violates PodSecurity \"baseline:latest\"".into(),
        };
        let (e, at) = settle(&w, &refused, &mem).expect("entry");
        assert_eq!((e.state, at.is_some()), (PodState::Refused, true));
        match step(&pod, &REQ, &names, &s, &mem) {
            PodAction::Report(e, Some(_)) => assert_eq!(e.reason.as_deref(), Some("PodSecurity")),
            other => panic!("{other:?}"),
        }
    }
}
