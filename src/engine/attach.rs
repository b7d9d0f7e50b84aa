//! The reconciler's question: should this running pod get an ephemeral Whisperer?

use k8s_openapi::api::core::v1::{EnvVar, Pod};
use sha2::{Digest, Sha256};

use super::{
    plan, Decision, Placement, Plan, Settings, SkipReason, ANNOTATION_INJECTED, ENV_ATTACHMENT,
    ENV_DEADLINE,
};

/// What an `Attachment` asks for, with the time-dependent facts already resolved by the
/// caller (the engine reads no clock).
#[derive(Debug, Clone, Copy)]
pub struct AttachSubject<'a> {
    pub attachment: &'a str,
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

/// `whisperer-<attachment>[-<generation>]`, at most 63 characters, deterministic so a retry
/// sends the same body; a long attachment name is cut and made unique with a short hash.
pub fn ephemeral_container_name(attachment: &str, generation: u32) -> String {
    let suffix = if generation > 1 {
        format!("-{generation}")
    } else {
        String::new()
    };
    let full = format!("whisperer-{attachment}{suffix}");
    if full.len() <= 63 {
        return full;
    }
    let digest = hex::encode(&Sha256::digest(attachment.as_bytes())[..4]);
    let room = 63 - "whisperer-".len() - 1 - digest.len() - suffix.len();
    let cut: String = attachment.chars().take(room).collect();
    format!("whisperer-{}-{digest}{suffix}", cut.trim_end_matches('-'))
}

pub fn decide_attach(pod: &Pod, subject: &AttachSubject<'_>, settings: &Settings) -> Decision {
    if subject.expired {
        return Decision::skip(SkipReason::Expired);
    }
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    if let Err(why) = settings.namespaces.check(namespace) {
        return Decision::problem(
            SkipReason::NamespaceDenied,
            format!("namespace {namespace:?} is denied ({why:?})"),
        );
    }
    let cfg = &settings.config;
    let profile_name = subject.profile.unwrap_or(&cfg.default_profile);
    let Some(profile) = cfg.profiles.get(profile_name) else {
        return Decision::problem(
            SkipReason::UnknownProfile,
            format!("profile {profile_name:?} is not configured"),
        );
    };
    if !profile.allowed_namespaces.is_empty()
        && !profile.allowed_namespaces.iter().any(|n| n == namespace)
    {
        return Decision::problem(
            SkipReason::ProfileNotAllowed,
            format!("profile {profile_name:?} may not be used in namespace {namespace:?}"),
        );
    }
    if pod.metadata.deletion_timestamp.is_some() {
        return Decision::skip(SkipReason::PodTerminating);
    }
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if phase != Some("Running") {
        return Decision::skip(SkipReason::PodNotRunning);
    }
    // A pod whose webhook sidecar already runs this profile needs no second capture.
    let marker = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_INJECTED));
    if marker.and_then(|m| plan::marker_profile(m)) == Some(profile_name) {
        return Decision::skip(SkipReason::AlreadyInjected);
    }
    let Some(spec) = pod.spec.as_ref() else {
        return Decision::skip(SkipReason::NotAPod);
    };
    let target = match subject.target_container {
        Some(t) if spec.containers.iter().any(|c| c.name == t) => t.to_string(),
        Some(t) => {
            return Decision::problem(
                SkipReason::TargetContainerMissing,
                format!("the pod has no container named {t:?}"),
            )
        }
        None => match spec.containers.first() {
            Some(c) => c.name.clone(),
            None => return Decision::skip(SkipReason::TargetContainerMissing),
        },
    };
    let name = ephemeral_container_name(subject.attachment, subject.generation.max(1));
    if spec
        .ephemeral_containers
        .iter()
        .flatten()
        .any(|c| c.name == name)
    {
        return Decision::skip(SkipReason::AlreadyAttached);
    }
    let mut env = vec![EnvVar {
        name: ENV_ATTACHMENT.into(),
        value: Some(subject.attachment.into()),
        ..Default::default()
    }];
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
    // Ephemeral containers may not mount volumes the pod lacks: keep only mounts the pod has.
    let pod_volumes = spec.volumes.as_deref().unwrap_or_default();
    let mut warnings = Vec::new();
    if let Some(mounts) = container.volume_mounts.as_mut() {
        mounts.retain(|m| {
            let keep = pod_volumes.iter().any(|v| v.name == m.name);
            if !keep {
                warnings.push(format!(
                    "volume mount {:?} dropped: ephemeral containers cannot add volumes",
                    m.name
                ));
            }
            keep
        });
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
