//! The reconciler's question: should this running pod get an ephemeral Whisperer?

use k8s_openapi::api::core::v1::EnvVar;
use sha2::{Digest, Sha256};

use super::policy::{check_pod, resolve_profile, Front};
use super::{
    plan, Decision, Placement, Plan, PodFacts, Settings, SkipReason, ANNOTATION_INJECTED,
    ENV_ATTACHMENT, ENV_ATTACHMENT_UID, ENV_DEADLINE, ENV_MEMORY_LIMIT,
};
use crate::config::Profile;

/// What an `Attachment` asks for, with the time-dependent facts already resolved by the
/// caller (the engine reads no clock).
#[derive(Debug, Clone, Copy)]
pub struct AttachSubject<'a> {
    pub attachment: &'a str,
    /// Identity of the attachment (its uid), written to [`ENV_ATTACHMENT_UID`] so a found
    /// container can be told apart from one somebody else named alike.
    pub attachment_uid: &'a str,
    pub profile: Option<&'a str>,
    /// Container whose namespaces the Whisperer joins; `None` picks the pod's first container.
    pub target_container: Option<&'a str>,
    /// RFC 3339 deadline handed to the agent so it can stop itself.
    pub deadline: Option<&'a str>,
    /// The caller found the attachment past its deadline.
    pub expired: bool,
    /// Attempt number for this pod, from 1; a new generation replaces a Whisperer that died.
    pub generation: u32,
    /// Extra env for the agent (control API address, token ...), set last.
    pub extra_env: &'a [EnvVar],
}

/// `whisperer-<attachment>[-<generation>]`, at most 63 characters and a valid container name
/// (a DNS label), deterministic so a retry sends the same body. Attachment names may hold dots
/// (`release.v2`), which container names may not: those become `-`, and a short hash of the
/// real name keeps `release.v2` and `release-v2` apart. A long name is cut the same way.
pub fn ephemeral_container_name(attachment: &str, generation: u32) -> String {
    let suffix = if generation > 1 {
        format!("-{generation}")
    } else {
        String::new()
    };
    let label: String = attachment
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let full = format!("whisperer-{label}{suffix}");
    if label == attachment && full.len() <= 63 {
        return full;
    }
    let digest = hex::encode(&Sha256::digest(attachment.as_bytes())[..4]);
    let room = 63 - "whisperer-".len() - 1 - digest.len() - suffix.len();
    let cut: String = label.chars().take(room).collect();
    format!("whisperer-{}-{digest}{suffix}", cut.trim_end_matches('-'))
}

/// Whether the pod runs this profile's sidecar: marked by injection AND carrying a container
/// of the profile's name and image.
pub(crate) fn has_sidecar(pod: &impl PodFacts, profile_name: &str, profile: &Profile) -> bool {
    let marked = pod
        .annotation(ANNOTATION_INJECTED)
        .and_then(plan::marker_profile)
        == Some(profile_name);
    marked
        && pod
            .containers()
            .chain(pod.init_containers())
            .any(|c| c.name == profile.container_name() && c.image == Some(profile.image.as_str()))
}

/// The memory the attached Whisperer will use: the profile's limit, else its request.
fn agent_memory(profile: &Profile) -> Option<(u64, &str)> {
    let r = profile.resources.as_ref()?;
    let q = r
        .limits
        .as_ref()
        .and_then(|l| l.get("memory"))
        .or_else(|| r.requests.as_ref().and_then(|l| l.get("memory")))?;
    super::overrides::quantity_value(&q.0).map(|v| (v.max(0.0) as u64, q.0.as_str()))
}

/// An ephemeral container carries no resources and lives inside the pod's memory limit: when
/// every container is bounded and their requests leave less than the agent's budget, the
/// agent (or the app) would be OOM-killed, so the attach is refused.
fn no_headroom(pod: &impl PodFacts, profile: &Profile) -> Option<Decision> {
    let (asked, asked_text) = agent_memory(profile)?;
    let bounds = pod.memory_bounds()?;
    let room = bounds.limit.saturating_sub(bounds.requested);
    (room < asked).then(|| {
        let mib = |b: u64| format!("{}Mi", b >> 20);
        Decision::problem(
            SkipReason::NoHeadroom,
            format!(
                "the pod's containers are limited to {} of memory and request {}, leaving {}; the Whisperer needs {asked_text} (raise a container's limit above its request, or attach with a smaller profile)",
                mib(bounds.limit),
                mib(bounds.requested),
                mib(room)
            ),
        )
    })
}

pub fn decide_attach(
    pod: &impl PodFacts,
    subject: &AttachSubject<'_>,
    settings: &Settings,
) -> Decision {
    if subject.expired {
        return Decision::skip(SkipReason::Expired);
    }
    let namespace = pod.namespace().unwrap_or_default();
    let (profile_name, profile) = match resolve_profile(settings, namespace, subject.profile)
        .and_then(|(name, p)| check_pod(pod, name, p, Front::Attachment).map(|()| (name, p)))
    {
        Ok(found) => found,
        Err(r) => return Decision::problem(r.reason, r.message),
    };
    if pod.terminating() {
        return Decision::skip(SkipReason::PodTerminating);
    }
    if pod.phase() != Some("Running") {
        return Decision::skip(SkipReason::PodNotRunning);
    }
    if !pod.has_spec() {
        return Decision::skip(SkipReason::NotAPod);
    }
    // A pod whose webhook sidecar already runs this profile needs no second capture. The
    // marker alone proves nothing (the pod's owner can write it): the sidecar must be there.
    if has_sidecar(pod, profile_name, profile) {
        return Decision::skip(SkipReason::AlreadyInjected);
    }
    let target = match subject.target_container {
        Some(t) if pod.containers().any(|c| c.name == t) => t.to_string(),
        Some(t) => {
            return Decision::problem(
                SkipReason::TargetContainerMissing,
                format!("the pod has no container named {t:?}"),
            )
        }
        None => match pod.containers().next() {
            Some(c) => c.name.to_string(),
            None => return Decision::skip(SkipReason::TargetContainerMissing),
        },
    };
    if let Some(refusal) = no_headroom(pod, profile) {
        return refusal;
    }
    let name = ephemeral_container_name(subject.attachment, subject.generation.max(1));
    if pod.ephemeral_names().any(|n| n == name) {
        return Decision::skip(SkipReason::AlreadyAttached);
    }
    let mut env = vec![
        EnvVar {
            name: ENV_ATTACHMENT.into(),
            value: Some(subject.attachment.into()),
            ..Default::default()
        },
        EnvVar {
            name: ENV_ATTACHMENT_UID.into(),
            value: Some(subject.attachment_uid.into()),
            ..Default::default()
        },
    ];
    // Ephemeral containers carry no resources: the agent bounds itself to the profile's limit.
    if let Some(limit) = profile
        .resources
        .as_ref()
        .and_then(|r| r.limits.as_ref())
        .and_then(|l| l.get("memory"))
    {
        env.push(EnvVar {
            name: ENV_MEMORY_LIMIT.into(),
            value: Some(limit.0.clone()),
            ..Default::default()
        });
    }
    if let Some(deadline) = subject.deadline {
        env.push(EnvVar {
            name: ENV_DEADLINE.into(),
            value: Some(deadline.into()),
            ..Default::default()
        });
    }
    env.extend(subject.extra_env.iter().cloned());
    let mut container = plan::container(
        profile_name,
        profile,
        &name,
        settings.dns_server.as_deref(),
        env,
    );
    // An attached Whisperer mounts nothing: the pod's volumes hold the workload's data and
    // secrets, and the API server policy on the injector's account refuses any mount.
    let mut warnings = Vec::new();
    if let Some(mounts) = container.volume_mounts.take() {
        let names: Vec<&str> = mounts.iter().map(|m| m.name.as_str()).collect();
        warnings.push(format!(
            "volume mounts {names:?} dropped: attached Whisperers mount no volume of the pod"
        ));
    }
    if !profile.host_aliases.is_empty() {
        warnings.push(
            "hostAliases are not applied to running pods: the Whisperer resolves them through the DNS proxy"
                .into(),
        );
    }
    let hash = plan::plan_hash(&container, Placement::Ephemeral, &[], &[]);
    Decision::Inject(Box::new(Plan {
        profile: profile_name.to_string(),
        container,
        placement: Placement::Ephemeral,
        target_container: Some(target),
        host_aliases: Vec::new(),
        volumes: Vec::new(),
        marker: plan::marker_value(profile_name, &hash),
        warnings,
    }))
}
