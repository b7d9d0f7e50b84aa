//! What one pass does to each selected pod, shared by Attachments and the backstop: find the
//! pod's current Whisperer generation, ask the engine whether (and what) to attach, patch in
//! bounded parallel with one dry run per pod template first, and read the answers back into
//! status entries and the back-off memory.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::{stream, StreamExt};
use k8s_openapi::api::core::v1::{EnvVar, EphemeralContainer};
use tokio::time::Instant;

use super::attach::{Outcome, Patcher};
use super::crd::PodState;
use super::memory::Memory;
use super::podcache::PodInfo;
use super::status::PodEntry;
use crate::engine::{
    decide_attach, ephemeral_container_name, AttachSubject, Decision, Settings, SkipReason,
};
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

#[derive(Debug)]
pub enum Step {
    /// Nothing to send; the pod's standing, and when a back-off ends if one runs.
    Entry(PodEntry, Option<Instant>),
    Patch(Box<Work>),
}

/// Container names of generations 1..=max.
pub fn generation_names(attachment: &str, max: u32) -> Vec<String> {
    (1..=max.max(1))
        .map(|g| ephemeral_container_name(attachment, g))
        .collect()
}

fn gen_of(index: usize) -> u32 {
    u32::try_from(index + 1).unwrap_or(u32::MAX)
}

pub fn step(
    pod: &Arc<PodInfo>,
    req: &Request<'_>,
    names: &[String],
    settings: &Settings,
    memory: &Memory,
) -> Step {
    let uid = pod.uid();
    let entry = |state| PodEntry::new(pod.name(), state);
    let image = settings
        .config
        .profiles
        .get(req.profile)
        .map_or("", |p| p.image.as_str());
    let ours = |i: usize| {
        memory.recently_attached(uid, &names[i])
            || pod.ephemeral_is(&names[i], image, req.attachment_uid)
    };
    let current = (0..names.len()).rev().find(|&i| ours(i));
    let mut note = None;
    let start = match current {
        None => 0,
        Some(i) => {
            let name = &names[i];
            let Some(t) = pod.ephemeral_terminated(name) else {
                return Step::Entry(entry(PodState::Attached).container(name, gen_of(i)), None);
            };
            let ended = format!(
                "{name} terminated (exit code {}{})",
                t.exit_code,
                t.reason
                    .as_deref()
                    .map(|r| format!(", {r}"))
                    .unwrap_or_default()
            );
            if req.expired {
                let e = entry(PodState::Skipped)
                    .container(name, gen_of(i))
                    .reason(SkipReason::Expired.as_str(), Some(ended));
                return Step::Entry(e, None);
            }
            if i + 1 >= names.len() {
                let e = entry(PodState::Failed).container(name, gen_of(i)).reason(
                    "GenerationsExhausted",
                    Some(format!("{ended}; all {} generations used", names.len())),
                );
                return Step::Entry(e, None);
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
                crate::engine::ENV_ATTACHMENT_UID
            )),
        );
        return Step::Entry(e, None);
    };
    if !foreign.is_empty() {
        let n = format!(
            "ephemeral container {:?} is not this attachment's Whisperer (image or {} differ)",
            foreign[0],
            crate::engine::ENV_ATTACHMENT_UID
        );
        note = Some(note.map_or(n.clone(), |prev| format!("{prev}; {n}")));
    }
    let name = &names[next];
    let generation = gen_of(next);
    if let Some((e, retry_at)) = memory.backing_off(uid, name) {
        return Step::Entry(e, Some(retry_at));
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
    match decide_attach(&pod.to_pod(), &subject, settings) {
        Decision::Inject(plan) => {
            let mut notes: Vec<String> = note.into_iter().collect();
            notes.extend(plan.warnings.iter().cloned());
            Step::Patch(Box::new(Work {
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
            Step::Entry(e, None)
        }
    }
}

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

async fn run_group(
    group: Vec<Work>,
    patcher: &Patcher,
    concurrency: usize,
) -> Vec<(Work, Outcome)> {
    let Some(first) = group.first() else {
        return Vec::new();
    };
    let dry = patcher
        .add(
            first.pod.namespace(),
            first.pod.name(),
            &first.container,
            true,
        )
        .await;
    if let Outcome::Refused { .. } = dry {
        return group.into_iter().map(|w| (w, dry.clone())).collect();
    }
    stream::iter(group)
        .map(|w| async move {
            let o = patcher
                .add(w.pod.namespace(), w.pod.name(), &w.container, false)
                .await;
            (w, o)
        })
        .buffer_unordered(concurrency)
        .collect()
        .await
}

/// Patches every pod of `works`: a dry run per template group first, then the real patches.
pub async fn execute(
    works: Vec<Work>,
    patcher: &Patcher,
    concurrency: usize,
) -> Vec<(Work, Outcome)> {
    let mut groups: BTreeMap<String, Vec<Work>> = BTreeMap::new();
    for w in works {
        groups.entry(template_key(&w)).or_default().push(w);
    }
    stream::iter(groups.into_values())
        .map(|g| run_group(g, patcher, concurrency))
        .buffer_unordered(concurrency)
        .flat_map(stream::iter)
        .collect()
        .await
}

/// The status entry for a patch answer (`None`: the pod is gone), remembering successes and
/// failures; the `Instant` is when a failed pod is tried again.
pub fn settle(w: &Work, outcome: &Outcome, memory: &Memory) -> Option<(PodEntry, Option<Instant>)> {
    let name = &w.container.name;
    let base = PodEntry::new(w.pod.name(), PodState::Attached).container(name, w.generation);
    let failed = |state: PodState, reason: &str, message: String| {
        let e = PodEntry {
            state,
            ..base.clone()
        }
        .reason(reason, Some(message));
        let at = memory.record_failure(w.pod.uid(), name, e.clone());
        Some((e, Some(at)))
    };
    match outcome {
        Outcome::Attached => {
            memory.record_attached(w.pod.uid(), name);
            let mut e = base.clone();
            e.message = w.note.clone();
            Some((e, None))
        }
        Outcome::Gone => None,
        Outcome::Refused { reason, message } => failed(PodState::Refused, reason, message.clone()),
        Outcome::Dropped => failed(
            PodState::Refused,
            "Dropped",
            format!("the API server accepted the patch but the answer has no container {name:?}"),
        ),
        Outcome::Failed { message } => failed(PodState::Pending, "PatchFailed", message.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::config::DEFAULT_IMAGE;
    use crate::engine::ENV_ATTACHMENT_UID;
    use crate::reconciler::podview::{
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
            env: Vec::new(),
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
        let mem = Memory::default();
        let s = settings();
        match step(
            &Arc::new(PodInfo::new(&running("p", &[]))),
            &REQ,
            &names,
            &s,
            &mem,
        ) {
            Step::Patch(w) => {
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
            Step::Entry(e, None) => assert_eq!(e.state, PodState::Attached),
            other => panic!("{other:?}"),
        }
        let mut p = running("p", &["whisperer-cap"]);
        terminated(&mut p, "whisperer-cap");
        match step(&Arc::new(PodInfo::new(&p)), &REQ, &names, &s, &mem) {
            Step::Patch(w) => {
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
            Step::Entry(e, None) => {
                assert_eq!(e.state, PodState::Failed);
                assert_eq!(e.reason.as_deref(), Some("GenerationsExhausted"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_look_alike_container_is_not_an_attachment() {
        let names = generation_names("cap", 3);
        let mem = Memory::default();
        let s = settings();
        // Same name, but another image: a pod owner's fake.
        let mut fake = running("p", &["whisperer-cap"]);
        fake.spec.ephemeral_containers[0].image = Some("busybox".into());
        match step(&Arc::new(PodInfo::new(&fake)), &REQ, &names, &s, &mem) {
            Step::Patch(w) => {
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
            Step::Patch(w) if w.generation == 2
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
            Step::Entry(e, None) => {
                assert_eq!(e.state, PodState::Failed);
                assert_eq!(e.reason.as_deref(), Some("name-conflict"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn skips_and_memory() {
        let names = generation_names("cap", 3);
        let mem = Memory::default();
        let s = settings();
        let mut pending = running("p", &[]);
        pending.status.phase = Some("Pending".into());
        match step(&Arc::new(PodInfo::new(&pending)), &REQ, &names, &s, &mem) {
            Step::Entry(e, None) => {
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
            Step::Entry(e, None) => assert_eq!(e.state, PodState::Skipped),
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
            Step::Entry(e, None) => assert_eq!(e.state, PodState::Failed),
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
            Step::Entry(e, None) => assert_eq!(e.state, PodState::Attached),
            other => panic!("{other:?}"),
        }
        // A refused pod waits for its back-off.
        let pod = Arc::new(PodInfo::new(&running("r", &[])));
        let Step::Patch(w) = step(&pod, &REQ, &names, &s, &mem) else {
            panic!("expected a patch")
        };
        let refused = Outcome::Refused {
            reason: "PodSecurity",
            message: "violates PodSecurity \"baseline:latest\"".into(),
        };
        let (e, at) = settle(&w, &refused, &mem).expect("entry");
        assert_eq!((e.state, at.is_some()), (PodState::Refused, true));
        match step(&pod, &REQ, &names, &s, &mem) {
            Step::Entry(e, Some(_)) => assert_eq!(e.reason.as_deref(), Some("PodSecurity")),
            other => panic!("{other:?}"),
        }
    }
}
