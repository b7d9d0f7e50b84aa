//! What an injection adds to a pod, computed against the pod as it is.

use k8s_openapi::api::core::v1::{
    Container, EnvVar, EnvVarSource, ExecAction, HostAlias, Lifecycle, LifecycleHandler,
    ObjectFieldSelector, Probe, Volume,
};
use sha2::{Digest, Sha256};

use super::{
    Decision, PodFacts, Settings, SkipReason, ENV_DNS_SERVER, ENV_POD_NAME, ENV_POD_NAMESPACE,
    ENV_PROFILE, NATIVE_SIDECARS_SINCE,
};
use crate::config::{Profile, SidecarMode};

/// Where the Whisperer goes in the pod spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Appended to `spec.containers`.
    Sidecar,
    /// First entry of `spec.initContainers` with `restartPolicy: Always`, so it captures the
    /// init containers too and does not keep a Job's pod from completing.
    NativeSidecar,
    /// First entry of `spec.containers` with a postStart hook that waits for the agent: the
    /// kubelet starts the next container only once the hook returns.
    FirstSidecar,
    /// `spec.ephemeralContainers` of a running pod.
    Ephemeral,
}

/// One change to `spec.hostAliases`: never duplicates an ip+hostname the pod already has.
#[derive(Debug, Clone, PartialEq)]
pub enum HostAliasChange {
    /// A new entry for an IP the pod has no entry for.
    Add(HostAlias),
    /// Hostnames missing from the pod's existing entry at `index`.
    Extend {
        index: usize,
        hostnames: Vec<String>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub profile: String,
    pub container: Container,
    pub placement: Placement,
    /// Ephemeral only: the container whose namespaces the Whisperer joins.
    pub target_container: Option<String>,
    pub host_aliases: Vec<HostAliasChange>,
    pub volumes: Vec<Volume>,
    /// Value of the `whisperer.dev/injected` marker.
    pub marker: String,
    /// Problems worth telling the user that did not stop the injection.
    pub warnings: Vec<String>,
}

pub(crate) fn marker_value(profile: &str, hash: &str) -> String {
    format!("profile={profile},hash={hash}")
}

/// Profile named in a marker, if the marker is ours.
pub(crate) fn marker_profile(marker: &str) -> Option<&str> {
    marker.split(',').find_map(|kv| kv.strip_prefix("profile="))
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn value_env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

/// The container every front-end starts from. `extra_env` comes last so an attachment's
/// identity wins over a profile that happens to set the same name.
pub(crate) fn container(
    profile_name: &str,
    profile: &Profile,
    name: &str,
    dns_server: Option<&str>,
    extra_env: Vec<EnvVar>,
) -> Container {
    let mut env = Vec::with_capacity(profile.env.len() + 4 + extra_env.len());
    env.push(field_env(ENV_POD_NAME, "metadata.name"));
    env.push(field_env(ENV_POD_NAMESPACE, "metadata.namespace"));
    env.push(value_env(ENV_PROFILE, profile_name));
    if let Some(dns) = dns_server {
        env.push(value_env(ENV_DNS_SERVER, dns));
    }
    if let Some(max) = &profile.max_capture_bytes {
        env.push(value_env(super::ENV_MAX_CAPTURE_BYTES, &max.0));
    }
    env.extend(profile.env.iter().cloned());
    env.extend(extra_env);
    // Later entries win in Kubernetes, but duplicates are confusing to read: keep the last.
    let mut seen = std::collections::HashSet::new();
    let mut deduped: Vec<EnvVar> = env
        .into_iter()
        .rev()
        .filter(|e| seen.insert(e.name.clone()))
        .collect();
    deduped.reverse();

    let non_empty = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
    Container {
        name: name.to_string(),
        image: Some(profile.image.clone()),
        image_pull_policy: profile.image_pull_policy.clone(),
        command: non_empty(&profile.command),
        args: non_empty(&profile.args),
        env: Some(deduped),
        resources: profile.resources.clone(),
        security_context: profile.security_context.clone(),
        volume_mounts: (!profile.volume_mounts.is_empty()).then(|| profile.volume_mounts.clone()),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Default::default()
    }
}

/// Whether an owner of the pod is one of `kinds` (`Kind.group`): its pod runs to completion.
fn owned_by_batch(pod: &impl PodFacts, kinds: &[String]) -> bool {
    pod.owners().any(|(api_version, owner_kind)| {
        let group = api_version.split_once('/').map_or("", |(g, _)| g);
        kinds
            .iter()
            .filter_map(|k| k.split_once('.'))
            .any(|(kind, g)| kind == owner_kind && g == group)
    })
}

pub fn host_alias_changes(pod_aliases: &[HostAlias], wanted: &[HostAlias]) -> Vec<HostAliasChange> {
    let mut changes: Vec<HostAliasChange> = Vec::new();
    for want in wanted {
        let hostnames = want.hostnames.as_deref().unwrap_or_default();
        match pod_aliases.iter().position(|a| a.ip == want.ip) {
            Some(index) => {
                let have = pod_aliases[index].hostnames.as_deref().unwrap_or_default();
                let missing: Vec<String> = hostnames
                    .iter()
                    .filter(|h| !have.contains(h))
                    .cloned()
                    .collect();
                if !missing.is_empty() {
                    changes.push(HostAliasChange::Extend {
                        index,
                        hostnames: missing,
                    });
                }
            }
            None => {
                // The profile itself may list one IP twice; fold those into one new entry.
                let existing = changes.iter_mut().find_map(|c| match c {
                    HostAliasChange::Add(a) if a.ip == want.ip => Some(a),
                    _ => None,
                });
                match existing {
                    Some(a) => {
                        let names = a.hostnames.get_or_insert_with(Vec::new);
                        for h in hostnames {
                            if !names.contains(h) {
                                names.push(h.clone());
                            }
                        }
                    }
                    None => changes.push(HostAliasChange::Add(want.clone())),
                }
            }
        }
    }
    changes
}

/// Where the sidecar goes in this pod, decided before anything is built: the checks that can
/// refuse the pod (name conflicts, native sidecars unsupported) and the placement.
#[derive(Debug, Clone, PartialEq)]
pub struct SidecarChoice {
    pub placement: Placement,
    pub warnings: Vec<String>,
}

pub(crate) fn choose_sidecar(
    pod: &impl PodFacts,
    profile_name: &str,
    profile: &Profile,
    settings: &Settings,
) -> Result<SidecarChoice, Decision> {
    if !pod.has_spec() {
        return Err(Decision::problem(
            SkipReason::NotAPod,
            "pod has no spec".into(),
        ));
    }
    let name = profile.container_name();
    let taken = pod
        .containers()
        .chain(pod.init_containers())
        .map(|c| c.name)
        .chain(pod.ephemeral_names())
        .any(|n| n == name);
    if taken {
        return Err(Decision::problem(
            SkipReason::NameConflict,
            format!("the pod already has a container named {name:?}"),
        ));
    }
    if let Some(v) = profile
        .volumes
        .iter()
        .find(|v| pod.volume_names().any(|p| p == v.name))
    {
        return Err(Decision::problem(
            SkipReason::NameConflict,
            format!("the pod already has a volume named {:?}", v.name),
        ));
    }

    let native = settings.native_sidecars();
    let batch = owned_by_batch(pod, &settings.config.batch_owner_kinds);
    let mut warnings = Vec::new();
    let placement = match profile.sidecar_mode {
        SidecarMode::Classic => Placement::Sidecar,
        SidecarMode::Native if !native => {
            return Err(Decision::problem(
                SkipReason::NativeSidecarUnsupported,
                format!(
                    "profile {profile_name:?} asks for a native sidecar, which needs Kubernetes {}.{} or later",
                    NATIVE_SIDECARS_SINCE.0, NATIVE_SIDECARS_SINCE.1
                ),
            ))
        }
        SidecarMode::Native => Placement::NativeSidecar,
        SidecarMode::Auto if batch && native => Placement::NativeSidecar,
        SidecarMode::Auto => {
            if batch {
                warnings.push(format!(
                    "a classic sidecar keeps this batch pod running after its work ends: native \
                     sidecars need Kubernetes {}.{} or later",
                    NATIVE_SIDECARS_SINCE.0, NATIVE_SIDECARS_SINCE.1
                ));
            }
            Placement::Sidecar
        }
    };
    let hold = profile
        .hold_application_until_ready
        .unwrap_or(placement == Placement::NativeSidecar);
    let placement = match (placement, hold) {
        (Placement::Sidecar, true) => Placement::FirstSidecar,
        (p, _) => p,
    };
    Ok(SidecarChoice {
        placement,
        warnings,
    })
}

/// The sidecar container for a placement before any per-pod override: the same for every pod
/// of a profile, so the webhook builds it once per config load.
pub fn base_sidecar_container(
    profile_name: &str,
    profile: &Profile,
    settings: &Settings,
    placement: Placement,
) -> Container {
    let mut container = container(
        profile_name,
        profile,
        profile.container_name(),
        settings.dns_server.as_deref(),
        Vec::new(),
    );
    let ready = || ExecAction {
        command: Some(profile.ready_command()),
    };
    match placement {
        // The kubelet starts later init and app containers once a native sidecar's
        // startupProbe passed.
        Placement::NativeSidecar if profile.hold_application_until_ready.unwrap_or(true) => {
            container.startup_probe = Some(Probe {
                exec: Some(ready()),
                period_seconds: Some(1),
                timeout_seconds: Some(65),
                failure_threshold: Some(60),
                ..Default::default()
            });
        }
        Placement::FirstSidecar => {
            container.lifecycle = Some(Lifecycle {
                post_start: Some(LifecycleHandler {
                    exec: Some(ready()),
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
        _ => {}
    }
    if placement == Placement::NativeSidecar {
        container.restart_policy = Some("Always".into());
    }
    container
}

/// The marker of an injection without overrides: `profile=<name>,hash=<16 hex>`.
pub fn base_marker(
    profile_name: &str,
    profile: &Profile,
    container: &Container,
    placement: Placement,
) -> String {
    let hash = plan_hash(
        container,
        placement,
        &profile.host_aliases,
        &profile.volumes,
    );
    marker_value(profile_name, &hash)
}

/// Plans a sidecar injection at admission time.
pub(crate) fn sidecar(
    pod: &impl PodFacts,
    profile_name: &str,
    profile: &Profile,
    settings: &Settings,
) -> Decision {
    let SidecarChoice {
        placement,
        warnings,
    } = match choose_sidecar(pod, profile_name, profile, settings) {
        Ok(choice) => choice,
        Err(refused) => return refused,
    };
    let mut container = base_sidecar_container(profile_name, profile, settings, placement);
    if let Err(why) = super::overrides::apply_with(
        &mut container,
        |key| pod.annotation(key),
        &profile.overrides,
    ) {
        return Decision::problem(SkipReason::OverrideRefused, why);
    }
    let host_aliases = host_alias_changes(pod.host_aliases(), &profile.host_aliases);
    let volumes = profile.volumes.clone();
    let marker = base_marker(profile_name, profile, &container, placement);
    Decision::Inject(Box::new(Plan {
        profile: profile_name.to_string(),
        container,
        placement,
        target_container: None,
        host_aliases,
        volumes,
        marker,
        warnings,
    }))
}

/// Stable over runs and machines: hashes the JSON form of what is injected.
pub(crate) fn plan_hash(
    container: &Container,
    placement: Placement,
    host_aliases: &[HostAlias],
    volumes: &[Volume],
) -> String {
    let mut h = Sha256::new();
    // Serializing these k8s-openapi types cannot fail (no maps with non-string keys).
    h.update(serde_json::to_vec(container).unwrap_or_default());
    h.update(format!("{placement:?}"));
    h.update(serde_json::to_vec(host_aliases).unwrap_or_default());
    h.update(serde_json::to_vec(volumes).unwrap_or_default());
    hex::encode(&h.finalize()[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alias(ip: &str, names: &[&str]) -> HostAlias {
        HostAlias {
            ip: ip.into(),
            hostnames: Some(names.iter().map(|s| s.to_string()).collect()),
        }
    }

    #[test]
    fn host_alias_merge_never_duplicates() {
        let pod = [alias("10.0.0.1", &["a", "b"])];
        let want = [
            alias("10.0.0.1", &["b", "c"]),
            alias("10.0.0.2", &["d"]),
            alias("10.0.0.2", &["d", "e"]),
            alias("10.0.0.1", &["a"]),
        ];
        assert_eq!(
            host_alias_changes(&pod, &want),
            vec![
                HostAliasChange::Extend {
                    index: 0,
                    hostnames: vec!["c".into()]
                },
                HostAliasChange::Add(alias("10.0.0.2", &["d", "e"])),
            ]
        );
        assert!(host_alias_changes(&pod, &[alias("10.0.0.1", &["a"])]).is_empty());
    }

    #[test]
    fn marker_round_trip() {
        let m = marker_value("deep", "0011223344556677");
        assert_eq!(marker_profile(&m), Some("deep"));
        assert_eq!(marker_profile("something else"), None);
    }
}
