//! `kubectl whisper attach KIND/NAME`: creates an Attachment for the workload and follows its
//! status until every selected pod is attached, some pod is refused, or the timeout. Progress
//! is a bar redrawn in place on a terminal and plain lines otherwise; each refusal is printed
//! once per pod with its reason.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use futures::StreamExt;
use kube::api::{ObjectMeta, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;

use super::error::kube as kube_err;
use super::output::{self, AttachResult, PodRow};
use super::{target, Outcome, PluginError, Session};
use crate::reconciler::{Attachment, AttachmentSpec, Phase, PodState, TargetRef};

#[derive(Debug, Clone, clap::Args)]
pub struct AttachArgs {
    /// deployment/NAME, statefulset/NAME, daemonset/NAME, replicaset/NAME, job/NAME,
    /// cronjob/NAME or pod/NAME (short names as kubectl: deploy, sts, ds, rs, cj, po).
    pub target: String,
    /// Time to live, e.g. 30m, 2h (capped by the profile's maxTtl); the profile's maxTtl
    /// when unset.
    #[arg(long)]
    pub ttl: Option<String>,
    /// Whisperer profile (needs `use` on profiles.whisperer.dev); the default profile when unset.
    #[arg(long)]
    pub profile: Option<String>,
    /// Container whose network the Whisperer joins; the pod's first container when unset.
    #[arg(long)]
    pub container: Option<String>,
    /// Name of the Attachment; default: the target's name and a random suffix.
    #[arg(long)]
    pub name: Option<String>,
    /// Wait until every selected pod is attached (the default).
    #[arg(long, overrides_with = "no_wait")]
    pub wait: bool,
    /// Create the Attachment and return.
    #[arg(long, overrides_with = "wait")]
    pub no_wait: bool,
    /// How long to wait.
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Output: text, or json (the final state, printed once).
    #[arg(short = 'o', long, value_enum, default_value_t = output::Format::Text)]
    pub output: output::Format,
}

impl AttachArgs {
    pub fn wait(&self) -> bool {
        !self.no_wait
    }
}

/// Where the Attachment stands, from its status.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Progress {
    /// The reconciler has not written a status for this generation yet.
    Unseen,
    Waiting {
        attached: i32,
        selected: i32,
    },
    /// Every selected pod is attached (or left alone on purpose: Skipped).
    Done {
        attached: i32,
        selected: i32,
    },
    /// Every selected pod is settled and at least one was refused or failed.
    Refused {
        attached: i32,
        selected: i32,
    },
    /// The Attachment as a whole failed (policy, unknown profile ...).
    Failed {
        message: String,
    },
}

fn progress(a: &Attachment) -> Progress {
    let Some(st) = a.status.as_ref() else {
        return Progress::Unseen;
    };
    if st.observed_generation.is_none() || st.observed_generation < a.metadata.generation {
        return Progress::Unseen;
    }
    let (attached, selected) = (st.attached_pods, st.selected_pods);
    if st.phase == Some(Phase::Failed) {
        let message = st
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .map(|c| format!("{}: {}", c.reason, c.message))
            .unwrap_or_else(|| "the Attachment failed".into());
        return Progress::Failed { message };
    }
    if matches!(st.phase, Some(Phase::Expired | Phase::Detached)) {
        return Progress::Failed {
            message: format!(
                "the Attachment is {}",
                st.phase.map(Phase::as_str).unwrap_or_default()
            ),
        };
    }
    let listed = i32::try_from(st.pods.len()).unwrap_or(i32::MAX) + st.omitted_pods;
    let settled = |s: PodState| !matches!(s, PodState::Pending);
    let all_settled =
        selected > 0 && listed >= selected && st.pods.iter().all(|e| settled(e.state));
    let refused = st
        .pods
        .iter()
        .any(|e| matches!(e.state, PodState::Refused | PodState::Failed));
    match (all_settled, refused) {
        (true, false) => Progress::Done { attached, selected },
        (true, true) => Progress::Refused { attached, selected },
        (false, _) => Progress::Waiting { attached, selected },
    }
}

fn rows(a: &Attachment) -> Vec<PodRow> {
    a.status
        .iter()
        .flat_map(|s| s.pods.iter())
        .map(|e| PodRow {
            pod: e.pod.clone(),
            state: format!("{:?}", e.state),
            container: e.container.clone(),
            reason: e.reason.clone(),
            message: e.message.clone(),
        })
        .collect()
}

/// Prints progress and each refusal once; a bar redrawn in place on a terminal.
struct Printer {
    tty: bool,
    quiet: bool,
    last: Option<(i32, i32)>,
    said: BTreeMap<String, (String, Option<String>)>,
    bar_drawn: bool,
}

impl Printer {
    fn counts(&mut self, attached: i32, selected: i32) {
        if self.quiet || self.last == Some((attached, selected)) {
            return;
        }
        self.last = Some((attached, selected));
        let mut out = std::io::stdout().lock();
        if self.tty {
            const WIDTH: i32 = 30;
            let filled = if selected > 0 {
                (attached.clamp(0, selected) * WIDTH) / selected
            } else {
                0
            };
            let bar: String = (0..WIDTH)
                .map(|i| if i < filled { '#' } else { '-' })
                .collect();
            let _ = write!(out, "\r\x1b[2K[{bar}] attached {attached}/{selected}");
            self.bar_drawn = true;
        } else {
            let _ = writeln!(out, "attached {attached}/{selected}");
        }
        let _ = out.flush();
    }

    fn end_bar(&mut self) {
        if self.bar_drawn {
            println!();
            self.bar_drawn = false;
        }
    }

    /// Refused, failed and skipped pods, each time their state or reason changes.
    fn pods(&mut self, a: &Attachment) {
        if self.quiet {
            return;
        }
        for e in a.status.iter().flat_map(|s| s.pods.iter()) {
            let word = match e.state {
                PodState::Refused => "refused",
                PodState::Failed => "failed",
                PodState::Skipped => "skipped",
                PodState::Attached | PodState::Pending => continue,
            };
            let key = (word.to_string(), e.reason.clone());
            if self.said.get(&e.pod) == Some(&key) {
                continue;
            }
            self.said.insert(e.pod.clone(), key);
            self.end_bar();
            println!(
                "{word} pod/{}: {}{}",
                e.pod,
                e.reason.as_deref().unwrap_or("no reason given"),
                e.message
                    .as_deref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            );
        }
    }
}

pub async fn run(s: &Session, args: &AttachArgs) -> Result<Outcome, PluginError> {
    let (kind, name) = target::parse(&args.target)?;
    let shown = target::display(kind, &name);
    let ns = &s.namespace;
    let api = Api::<Attachment>::namespaced(s.client.clone(), ns);
    let mut object = Attachment::new(
        args.name.as_deref().unwrap_or_default(),
        AttachmentSpec {
            target: Some(TargetRef {
                kind,
                name: name.clone(),
            }),
            selector: None,
            profile: args.profile.clone(),
            container: args.container.clone(),
            ttl: args.ttl.clone(),
        },
    );
    if args.name.is_none() {
        object.metadata = ObjectMeta {
            generate_name: Some(format!("{}-", generated_prefix(&name))),
            ..Default::default()
        };
    }
    let created = api
        .create(&PostParams::default(), &object)
        .await
        .map_err(kube_err(format!(
            "cannot create an Attachment for {shown} in namespace {ns}"
        )))?;
    let att_name = created.metadata.name.clone().unwrap_or_default();
    let json = args.output == output::Format::Json;
    if !json {
        println!("attachment.whisperer.dev/{att_name} created for {shown} in namespace {ns}");
    }
    let result = |a: &Attachment, result: &str, message: Option<String>| {
        let st = a.status.clone().unwrap_or_default();
        AttachResult {
            name: att_name.clone(),
            namespace: ns.clone(),
            target: st.target.clone().unwrap_or_else(|| a.target_description()),
            phase: st.phase.map(|p| p.as_str().to_string()),
            attached_pods: st.attached_pods,
            selected_pods: st.selected_pods,
            result: result.into(),
            message,
            pods: rows(a),
        }
    };
    if !args.wait() {
        if json {
            print!("{}", output::json(&result(&created, "created", None))?);
        }
        return Ok(Outcome::Ok);
    }

    let mut printer = Printer {
        tty: std::io::stdout().is_terminal(),
        quiet: json,
        last: None,
        said: BTreeMap::new(),
        bar_drawn: false,
    };
    let mut latest = created;
    let config = watcher::Config::default().fields(&format!("metadata.name={att_name}"));
    let mut events = watcher(api.clone(), config).applied_objects().boxed();
    let deadline = tokio::time::Instant::now() + args.timeout;
    let end = loop {
        let next = tokio::time::timeout_at(deadline, events.next()).await;
        let a = match next {
            Err(_) => {
                break Progress::Waiting {
                    attached: -1,
                    selected: -1,
                }
            }
            Ok(None) => {
                return Err(PluginError::Usage(format!(
                    "the watch on attachment {ns}/{att_name} ended"
                )))
            }
            Ok(Some(Err(e))) => {
                return Err(PluginError::Usage(format!(
                    "cannot watch attachment {ns}/{att_name}: {e}"
                )))
            }
            Ok(Some(Ok(a))) => a,
        };
        latest = a;
        let p = progress(&latest);
        printer.pods(&latest);
        match p {
            Progress::Unseen => continue,
            Progress::Waiting { attached, selected } => printer.counts(attached, selected),
            Progress::Done { attached, selected } | Progress::Refused { attached, selected } => {
                printer.counts(attached, selected);
                break p;
            }
            Progress::Failed { .. } => break p,
        }
    };
    printer.end_bar();
    let (outcome, word, message) = match end {
        Progress::Done { selected, .. } => {
            if !json {
                println!(
                    "{selected} pod{} of {shown} attached; detach with: kubectl whisper detach {att_name} -n {ns}",
                    if selected == 1 { "" } else { "s" }
                );
            }
            (Outcome::Ok, "attached", None)
        }
        Progress::Refused { attached, selected } => {
            if !json {
                println!(
                    "attached {attached}/{selected}: the pods above were refused; \
                     `kubectl describe attachment {att_name} -n {ns}` has the details"
                );
            }
            (Outcome::Incomplete, "refused", None)
        }
        Progress::Failed { message } => {
            if !json {
                println!("attachment {att_name} failed: {message}");
            }
            (Outcome::Incomplete, "refused", Some(message))
        }
        Progress::Waiting { .. } | Progress::Unseen => {
            let st = latest.status.clone().unwrap_or_default();
            if !json {
                let waiting: Vec<String> = st
                    .pods
                    .iter()
                    .filter(|e| e.state == PodState::Pending)
                    .map(|e| match &e.reason {
                        Some(r) => format!("{} ({r})", e.pod),
                        None => e.pod.clone(),
                    })
                    .collect();
                let seen = if latest.status.is_none() {
                    " (no status yet: is the injector's reconciler running?)".to_string()
                } else if waiting.is_empty() {
                    String::new()
                } else {
                    format!("; still pending: {}", waiting.join(", "))
                };
                println!(
                    "timed out after {}: attached {}/{}{seen}",
                    humantime::format_duration(args.timeout),
                    st.attached_pods,
                    st.selected_pods
                );
            }
            (Outcome::Incomplete, "timeout", None)
        }
    };
    if json {
        print!("{}", output::json(&result(&latest, word, message))?);
    }
    Ok(outcome)
}

/// The name part before the API server's random suffix: short enough that the container name
/// `whisperer-<attachment>` stays readable.
fn generated_prefix(target: &str) -> String {
    let cut: String = target.chars().take(40).collect();
    cut.trim_end_matches(['-', '.']).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconciler::{AttachmentStatus, PodAttachment};

    fn att(pods: &[(&str, PodState)], selected: i32, phase: Phase) -> Attachment {
        let mut a = Attachment::new(
            "a",
            AttachmentSpec {
                target: None,
                selector: None,
                profile: None,
                container: None,
                ttl: None,
            },
        );
        a.metadata.generation = Some(1);
        a.status = Some(AttachmentStatus {
            phase: Some(phase),
            observed_generation: Some(1),
            selected_pods: selected,
            attached_pods: i32::try_from(pods.iter().filter(|p| p.1 == PodState::Attached).count())
                .expect("small"),
            pods: pods
                .iter()
                .map(|(n, s)| PodAttachment {
                    pod: n.to_string(),
                    container: None,
                    generation: None,
                    state: *s,
                    reason: None,
                    message: None,
                    time: None,
                })
                .collect(),
            ..Default::default()
        });
        a
    }

    #[test]
    fn progress_follows_the_status() {
        use PodState::*;
        let p = progress(&att(&[("a", Attached), ("b", Pending)], 2, Phase::Attached));
        assert_eq!(
            p,
            Progress::Waiting {
                attached: 1,
                selected: 2
            }
        );
        let p = progress(&att(
            &[("a", Attached), ("b", Attached)],
            2,
            Phase::Attached,
        ));
        assert_eq!(
            p,
            Progress::Done {
                attached: 2,
                selected: 2
            }
        );
        let p = progress(&att(&[("a", Attached), ("b", Refused)], 2, Phase::Attached));
        assert_eq!(
            p,
            Progress::Refused {
                attached: 1,
                selected: 2
            }
        );
        // Not every selected pod listed yet.
        let p = progress(&att(&[("a", Attached)], 3, Phase::Attached));
        assert_eq!(
            p,
            Progress::Waiting {
                attached: 1,
                selected: 3
            }
        );
        let mut stale = att(&[("a", Attached)], 1, Phase::Attached);
        stale.metadata.generation = Some(2);
        assert_eq!(progress(&stale), Progress::Unseen);
        assert!(matches!(
            progress(&att(&[], 0, Phase::Failed)),
            Progress::Failed { .. }
        ));
    }

    #[test]
    fn generated_names_stay_short() {
        assert_eq!(generated_prefix("web"), "web");
        assert_eq!(generated_prefix(&"x".repeat(80)).len(), 40);
    }
}
