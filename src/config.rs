//! Profiles and namespace policy, read from a YAML file.
//!
//! Container fields are plain Kubernetes core/v1 types so a profile reads like a pod spec.
//! Parsing is strict (`deny_unknown_fields`) so a typo is an error naming the field rather
//! than a silently ignored setting.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    EnvVar, HostAlias, ResourceRequirements, SecurityContext, Volume, VolumeMount,
};
use serde::{Deserialize, Serialize};

fn default_batch_owner_kinds() -> Vec<String> {
    ["Job.batch", "Workflow.argoproj.io", "TaskRun.tekton.dev"]
        .map(String::from)
        .to_vec()
}

/// Namespaces the injector never touches, whatever their labels say.
pub const ALWAYS_DENIED: [&str; 3] = ["kube-system", "kube-public", "kube-node-lease"];

/// Default container name of the sidecar (DESIGN.md vocabulary).
pub const DEFAULT_CONTAINER_NAME: &str = "whisperer";

/// Image of the built-in profile, used when `serve` runs without a config file.
pub const DEFAULT_IMAGE: &str = "ghcr.io/whisperer-dev/whisperer:v0.1.0";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("config file {path}: field `{field}`: {message}")]
    Invalid {
        path: String,
        field: String,
        message: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    pub default_profile: String,
    #[serde(default)]
    pub namespaces: NamespacePolicy,
    /// Owners whose pods run to completion, as `Kind.group` (`Job.batch`,
    /// `Workflow.argoproj.io`): `sidecarMode: auto` gives their pods the native sidecar, so a
    /// classic sidecar does not keep them from finishing.
    #[serde(default = "default_batch_owner_kinds")]
    pub batch_owner_kinds: Vec<String>,
    pub profiles: BTreeMap<String, Profile>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamespacePolicy {
    /// Empty: every namespace that is not denied.
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub deny: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SidecarMode {
    /// Native sidecar for pods owned by a Job (so the Job can complete), classic otherwise.
    #[default]
    Auto,
    /// Always a regular entry in `spec.containers`.
    Classic,
    /// Always an init container with `restartPolicy: Always`.
    Native,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Profile {
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<SecurityContext>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_mounts: Vec<VolumeMount>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Volume>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_aliases: Vec<HostAlias>,
    #[serde(default)]
    pub sidecar_mode: SidecarMode,
    /// Upper bound for a runtime attachment's time-to-live, as written (e.g. `24h`).
    #[serde(default, rename = "maxTtl", skip_serializing_if = "Option::is_none")]
    pub max_ttl_text: Option<String>,
    /// `maxTtl` parsed; filled in by [`Config::parse`].
    #[serde(skip)]
    pub max_ttl: Option<Duration>,
    /// Empty: any namespace the global policy allows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_namespaces: Vec<String>,
    /// Capture pods that share the node's network, PID or IPC namespace. Off: such a
    /// Whisperer would record the node's traffic, not the workload's.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_host_namespaces: bool,
    /// Let Attachments capture pods annotated `whisperer.dev/inject: "false"`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub attach_to_opted_out: bool,
    /// Hold the pod's other containers until the Whisperer is ready, so their start-up
    /// traffic is captured. Unset: on for native sidecars (a startupProbe), off for classic
    /// ones (first container with a postStart hook, which also delays the app).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_application_until_ready: Option<bool>,
    /// Command that returns once the agent in the same container is ready (startupProbe and
    /// postStart hook); default [`DEFAULT_READY_COMMAND`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ready_command: Vec<String>,
    /// What a pod may tune by annotation (`whisperer.dev/cpu`, `/memory`, `/filter`).
    #[serde(default, skip_serializing_if = "Overrides::is_empty")]
    pub overrides: Overrides,
    /// Bytes of capture files the agent may keep (a quantity, e.g. `200Mi`), passed as
    /// `WHISPERER_MAX_CAPTURE_BYTES`; the agent holds its rotation total under it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_capture_bytes: Option<k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
}

/// Per-pod overrides a profile allows; absent: the annotation is refused.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Overrides {
    /// Range for `whisperer.dev/cpu` (the container's CPU request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<QuantityRange>,
    /// Range for `whisperer.dev/memory` (request and limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<QuantityRange>,
    /// Allow `whisperer.dev/filter` (a capture filter passed as `--filter`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub filter: bool,
}

impl Overrides {
    pub fn is_empty(&self) -> bool {
        self == &Overrides::default()
    }
}

/// Inclusive bounds, as Kubernetes quantities (`100m`, `64Mi`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QuantityRange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<String>,
}

impl Profile {
    pub fn ready_command(&self) -> Vec<String> {
        if self.ready_command.is_empty() {
            DEFAULT_READY_COMMAND.map(String::from).to_vec()
        } else {
            self.ready_command.clone()
        }
    }

    pub fn container_name(&self) -> &str {
        self.container_name
            .as_deref()
            .unwrap_or(DEFAULT_CONTAINER_NAME)
    }
}

/// The agent's own readiness check: asks the agent's local metrics listener and waits.
pub const DEFAULT_READY_COMMAND: [&str; 4] = ["/whisperer", "ready", "--wait", "60s"];

/// User and group the agent image runs as (distroless `nonroot`).
pub const AGENT_UID: i64 = 65532;

/// The least privilege with which the agent still captures (see the shipped ConfigMap for
/// the reason behind each field): NET_RAW alone, held by the agent binary as a file
/// capability so it runs as non-root. `allowPrivilegeEscalation` is left unset on purpose:
/// `false` sets no_new_privs, under which the kernel ignores file capabilities.
pub fn hardened_security_context() -> SecurityContext {
    SecurityContext {
        capabilities: Some(k8s_openapi::api::core::v1::Capabilities {
            add: Some(vec!["NET_RAW".into()]),
            drop: Some(vec!["ALL".into()]),
        }),
        run_as_non_root: Some(true),
        run_as_user: Some(AGENT_UID),
        run_as_group: Some(AGENT_UID),
        read_only_root_filesystem: Some(true),
        seccomp_profile: Some(k8s_openapi::api::core::v1::SeccompProfile {
            type_: "RuntimeDefault".into(),
            localhost_profile: None,
        }),
        ..Default::default()
    }
}

impl Default for Config {
    /// The built-in profile: lets `serve` run on a fresh machine with no file at all.
    fn default() -> Self {
        let profile = Profile {
            image: DEFAULT_IMAGE.to_string(),
            args: vec!["--interface".into(), "any".into()],
            security_context: Some(hardened_security_context()),
            max_ttl_text: Some("24h".into()),
            max_ttl: Some(Duration::from_secs(24 * 3600)),
            ..Default::default()
        };
        Config {
            default_profile: "default".into(),
            namespaces: NamespacePolicy::default(),
            batch_owner_kinds: default_batch_owner_kinds(),
            profiles: BTreeMap::from([("default".to_string(), profile)]),
        }
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_with_bytes(path).map(|(cfg, _)| cfg)
    }

    /// Loads and also returns the exact bytes parsed, so a reload watcher can start from them.
    pub fn load_with_bytes(path: &Path) -> Result<(Config, Vec<u8>), ConfigError> {
        let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let cfg = Config::from_bytes(&bytes, &path.display().to_string())?;
        Ok((cfg, bytes))
    }

    /// Parses file contents; `origin` names the file in errors.
    pub fn from_bytes(bytes: &[u8], origin: &str) -> Result<Config, ConfigError> {
        let text = std::str::from_utf8(bytes).map_err(|e| ConfigError::Parse {
            path: origin.to_string(),
            message: e.to_string(),
        })?;
        Config::parse(text, origin)
    }

    /// Parses and validates; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let mut cfg: Config = serde_yaml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_string(),
            message: e.to_string(),
        })?;
        cfg.validate(origin)?;
        for (name, p) in cfg.profiles.iter_mut() {
            p.max_ttl = match &p.max_ttl_text {
                Some(t) => {
                    Some(
                        humantime::parse_duration(t).map_err(|e| ConfigError::Invalid {
                            path: origin.to_string(),
                            field: format!("profiles.{name}.maxTtl"),
                            message: format!("{t:?} is not a duration like 30m or 24h: {e}"),
                        })?,
                    )
                }
                None => None,
            };
        }
        Ok(cfg)
    }

    fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |field: String, message: &str| ConfigError::Invalid {
            path: origin.to_string(),
            field,
            message: message.to_string(),
        };
        for (i, k) in self.batch_owner_kinds.iter().enumerate() {
            if !k
                .split_once('.')
                .is_some_and(|(kind, group)| !kind.is_empty() && !group.is_empty())
            {
                return Err(invalid(
                    format!("batchOwnerKinds[{i}]"),
                    &format!("{k:?} must be Kind.group, like Job.batch or Workflow.argoproj.io"),
                ));
            }
        }
        if !self.profiles.contains_key(&self.default_profile) {
            return Err(invalid(
                "defaultProfile".into(),
                &format!(
                    "names profile {:?}, which is not defined",
                    self.default_profile
                ),
            ));
        }
        for (name, p) in &self.profiles {
            let at = |f: &str| format!("profiles.{name}.{f}");
            if !is_dns_label(name) {
                return Err(invalid(
                    format!("profiles.{name}"),
                    "profile names must be DNS labels (lowercase alphanumerics and '-', at most 63)",
                ));
            }
            if p.image.trim().is_empty() {
                return Err(invalid(at("image"), "must not be empty"));
            }
            if !is_dns_label(p.container_name()) {
                return Err(invalid(at("containerName"), "must be a DNS label"));
            }
            for (i, m) in p.volume_mounts.iter().enumerate() {
                if !p.volumes.iter().any(|v| v.name == m.name) {
                    return Err(invalid(
                        at(&format!("volumeMounts[{i}].name")),
                        &format!("volume {:?} is not among the profile's volumes", m.name),
                    ));
                }
            }
            for (i, a) in p.host_aliases.iter().enumerate() {
                if a.ip.parse::<std::net::IpAddr>().is_err() {
                    return Err(invalid(
                        at(&format!("hostAliases[{i}].ip")),
                        "is not an IP address",
                    ));
                }
            }
            if p.security_context.as_ref().and_then(|c| c.run_as_non_root) == Some(false) {
                return Err(invalid(
                    at("securityContext.runAsNonRoot"),
                    "must not be false: it would override a pod that asked for non-root; leave it unset or true",
                ));
            }
            if let Some(q) = &p.max_capture_bytes {
                if crate::engine::overrides::quantity_value(&q.0).is_none_or(|v| v < 1.0) {
                    return Err(invalid(
                        at("maxCaptureBytes"),
                        &format!("{:?} is not a positive quantity (like 200Mi)", q.0),
                    ));
                }
            }
            for (field, range) in [("cpu", &p.overrides.cpu), ("memory", &p.overrides.memory)] {
                let Some(range) = range else { continue };
                for (end, q) in [("min", &range.min), ("max", &range.max)] {
                    if let Some(q) = q {
                        if crate::engine::overrides::quantity_value(q).is_none() {
                            return Err(invalid(
                                at(&format!("overrides.{field}.{end}")),
                                &format!("{q:?} is not a Kubernetes quantity (like 100m or 64Mi)"),
                            ));
                        }
                    }
                }
            }
            for (i, e) in p.env.iter().enumerate() {
                if e.name.is_empty() {
                    return Err(invalid(at(&format!("env[{i}].name")), "must not be empty"));
                }
            }
        }
        Ok(())
    }
}

/// Namespace policy with the always-denied set folded in.
#[derive(Debug, Clone)]
pub struct NamespaceRules {
    allow: Vec<String>,
    deny: Vec<String>,
}

/// Why a namespace may not be touched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamespaceDenial {
    System,
    InjectorOwn,
    Denied,
    NotAllowed,
}

impl NamespaceRules {
    pub fn new(policy: &NamespacePolicy, own_namespace: &str) -> Self {
        let mut deny = policy.deny.clone();
        deny.push(own_namespace.to_string());
        NamespaceRules {
            allow: policy.allow.clone(),
            deny,
        }
    }

    pub fn check(&self, ns: &str) -> Result<(), NamespaceDenial> {
        if ALWAYS_DENIED.contains(&ns) {
            return Err(NamespaceDenial::System);
        }
        if self.deny.last().is_some_and(|own| own == ns) {
            return Err(NamespaceDenial::InjectorOwn);
        }
        if self.deny.iter().any(|d| d == ns) {
            return Err(NamespaceDenial::Denied);
        }
        if !self.allow.is_empty() && !self.allow.iter().any(|a| a == ns) {
            return Err(NamespaceDenial::NotAllowed);
        }
        Ok(())
    }
}

pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
defaultProfile: default
namespaces:
  allow: []
  deny: [legacy]
profiles:
  default:
    image: ghcr.io/whisperer-dev/whisperer:v0.1.0
    args: ["--interface", "any"]
    env: [{name: WHISPERER_LOG, value: info}]
    resources: {requests: {cpu: 10m, memory: 32Mi}, limits: {memory: 128Mi}}
    securityContext: {capabilities: {add: [NET_RAW], drop: [ALL]}}
    volumeMounts: [{name: whisperer-captures, mountPath: /captures}]
    volumes: [{name: whisperer-captures, emptyDir: {sizeLimit: 256Mi}}]
    hostAliases: [{ip: 10.96.0.50, hostnames: [collector.whisperer-system]}]
    sidecarMode: auto
    maxTtl: 24h
  deep:
    image: ghcr.io/whisperer-dev/whisperer:v0.1.0
    containerName: deep-capture
    sidecarMode: native
    allowedNamespaces: [team-a]
"#;

    #[test]
    fn parses_full_file() {
        let cfg = Config::parse(FULL, "t.yaml").expect("valid config");
        assert_eq!(cfg.profiles.len(), 2);
        let d = &cfg.profiles["default"];
        assert_eq!(d.max_ttl, Some(Duration::from_secs(86400)));
        assert_eq!(d.host_aliases[0].ip, "10.96.0.50");
        assert_eq!(cfg.profiles["deep"].sidecar_mode, SidecarMode::Native);
        assert_eq!(cfg.profiles["deep"].container_name(), "deep-capture");
    }

    #[test]
    fn built_in_default_is_valid() {
        let cfg = Config::default();
        let text = serde_yaml::to_string(&cfg).expect("serialize");
        assert_eq!(Config::parse(&text, "x").expect("round trip"), cfg);
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                FULL.replace("defaultProfile: default", "defaultProfile: nope"),
                "defaultProfile",
            ),
            (
                FULL.replace("ip: 10.96.0.50", "ip: not-an-ip"),
                "profiles.default.hostAliases[0].ip",
            ),
            (
                FULL.replace(
                    "mountPath: /captures",
                    "mountPath: /c}, {name: ghost, mountPath: /g",
                ),
                "profiles.default.volumeMounts[1].name",
            ),
            (
                FULL.replace("containerName: deep-capture", "containerName: Deep_Capture"),
                "profiles.deep.containerName",
            ),
            (FULL.replace("maxTtl: 24h", "maxTtl: soon"), "maxTtl"),
            (
                FULL.replace("drop: [ALL]}", "drop: [ALL]}, runAsNonRoot: false"),
                "profiles.default.securityContext.runAsNonRoot",
            ),
            (
                FULL.replace(
                    "maxTtl: 24h",
                    "maxTtl: 24h\n    overrides: {cpu: {max: lots}}",
                ),
                "profiles.default.overrides.cpu.max",
            ),
            (
                FULL.replace(
                    "defaultProfile: default",
                    "defaultProfile: default\nbatchOwnerKinds: [Job]",
                ),
                "batchOwnerKinds[0]",
            ),
            (
                FULL.replace("sidecarMode: auto", "sidecarMod: auto"),
                "sidecarMod",
            ),
        ];
        for (text, field) in cases {
            let err = Config::parse(&text, "cfg.yaml")
                .expect_err(field)
                .to_string();
            assert!(err.contains(field), "{err:?} should name {field}");
            assert!(err.contains("cfg.yaml"), "{err:?} should name the file");
        }
    }

    #[test]
    fn namespace_rules() {
        let policy = NamespacePolicy {
            allow: vec![],
            deny: vec!["legacy".into()],
        };
        let r = NamespaceRules::new(&policy, "whisperer-system");
        assert_eq!(r.check("kube-system"), Err(NamespaceDenial::System));
        assert_eq!(
            r.check("whisperer-system"),
            Err(NamespaceDenial::InjectorOwn)
        );
        assert_eq!(r.check("legacy"), Err(NamespaceDenial::Denied));
        assert_eq!(r.check("team-a"), Ok(()));
        let only = NamespaceRules::new(
            &NamespacePolicy {
                allow: vec!["team-a".into()],
                deny: vec![],
            },
            "whisperer-system",
        );
        assert_eq!(only.check("team-b"), Err(NamespaceDenial::NotAllowed));
        assert_eq!(only.check("team-a"), Ok(()));
    }
}
