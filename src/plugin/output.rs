//! What the plugin prints: the `-o json` shapes (stable, documented in the README under
//! "kubectl plugin"; fields are only ever added) and the text helpers (tables, relative times).

use serde::Serialize;

/// `-o` of the listing commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// One Attachment, as `ls -o json` lists it (`{"items": [...]}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachmentRow {
    pub name: String,
    pub namespace: String,
    /// `Deployment/web`, `Pod/db-0` or `selector app=web`.
    pub target: String,
    /// Pending, Attached, Expired, Detached, Failed; `null` before the reconciler saw it.
    pub phase: Option<String>,
    pub attached_pods: i32,
    pub selected_pods: i32,
    /// RFC 3339; `null` without a time-to-live.
    pub expires_at: Option<String>,
    /// `spec.profile`; `null` means the configured default profile.
    pub profile: Option<String>,
    /// Who created it (`status.requestedBy`), when the webhook recorded it.
    pub requested_by: Option<String>,
}

/// Where one pod stands, as `attach -o json` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodRow {
    pub pod: String,
    /// Attached, Pending, Refused, Skipped, Failed.
    pub state: String,
    pub container: Option<String>,
    pub reason: Option<String>,
    pub message: Option<String>,
}

/// The result of `attach -o json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachResult {
    pub name: String,
    pub namespace: String,
    pub target: String,
    pub phase: Option<String>,
    pub attached_pods: i32,
    pub selected_pods: i32,
    /// `attached` (every selected pod), `refused` (some pod refused or failed, or the
    /// Attachment failed), `timeout`, or `created` (`--no-wait`).
    pub result: String,
    /// The Ready condition's message when the Attachment as a whole failed.
    pub message: Option<String>,
    pub pods: Vec<PodRow>,
}

/// One pod with an outdated Whisperer, as `outdated -o json` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OutdatedRow {
    pub namespace: String,
    /// `deployment/web`, `statefulset/db` ...; `null` for a pod no workload owns.
    pub workload: Option<String>,
    pub pod: String,
    /// The pod's marker (`profile=default,hash=...`).
    pub old: String,
    /// What the profile injects today; `null` when today's config would not inject it.
    pub new: Option<String>,
}

/// `outdated -o json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OutdatedList {
    pub items: Vec<OutdatedRow>,
    /// Commands that roll the pods (one per workload).
    pub commands: Vec<String>,
    /// Injected pods that were compared.
    pub checked_pods: usize,
}

/// A `{"items": [...]}` list.
#[derive(Debug, Clone, Serialize)]
pub struct List<T: Serialize> {
    pub items: Vec<T>,
}

pub fn json<T: Serialize>(v: &T) -> Result<String, super::PluginError> {
    serde_json::to_string_pretty(v)
        .map(|mut s| {
            s.push('\n');
            s
        })
        .map_err(|e| super::PluginError::Output(e.to_string()))
}

/// Columns padded like kubectl's tables (three spaces between columns).
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let last = cells.len().saturating_sub(1);
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            s.push_str(c);
            if i < last {
                let pad = widths[i] - c.chars().count() + 3;
                s.extend(std::iter::repeat_n(' ', pad));
            }
        }
        s.push('\n');
        s
    };
    let mut out = line(header.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

/// kubectl-style short duration: `45s`, `29m`, `5h3m`, `3d`.
pub fn short_duration(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..=119 => format!("{s}s"),
        120..=3599 => format!("{}m", s / 60),
        3600..=172_799 => {
            let (h, m) = (s / 3600, (s % 3600) / 60);
            if m == 0 || h >= 8 {
                format!("{h}h")
            } else {
                format!("{h}h{m}m")
            }
        }
        _ => format!("{}d", s / 86_400),
    }
}

/// `in 29m` or `5m ago` for a deadline, seen from `now`.
pub fn relative(at: k8s_openapi::jiff::Timestamp, now: k8s_openapi::jiff::Timestamp) -> String {
    let secs = at.as_second() - now.as_second();
    if secs >= 0 {
        format!("in {}", short_duration(secs))
    } else {
        format!("{} ago", short_duration(-secs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_kubectl() {
        assert_eq!(short_duration(45), "45s");
        assert_eq!(short_duration(29 * 60 + 59), "29m");
        assert_eq!(short_duration(5 * 3600 + 3 * 60), "5h3m");
        assert_eq!(short_duration(10 * 3600 + 3 * 60), "10h");
        assert_eq!(short_duration(3 * 86_400), "3d");
        let now = k8s_openapi::jiff::Timestamp::from_second(1_000_000).expect("ts");
        let later = k8s_openapi::jiff::Timestamp::from_second(1_000_000 + 1800).expect("ts");
        assert_eq!(relative(later, now), "in 30m");
        assert_eq!(relative(now, later), "30m ago");
    }

    #[test]
    fn tables_align() {
        let t = table(
            &["NAME", "PHASE"],
            &[
                vec!["a".into(), "Attached".into()],
                vec!["longer".into(), "-".into()],
            ],
        );
        assert_eq!(t, "NAME     PHASE\na        Attached\nlonger   -\n");
    }
}
