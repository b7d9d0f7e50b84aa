//! Pod Security Standards, judged for what an injection ADDS (container and volumes): the
//! rest of the pod is its owner's business, and Pod Security Admission judges it either way.
//!
//! The webhook asks this before answering, because Pod Security Admission runs after
//! mutation: a patch that breaks the namespace's `enforce` level would make pod creation fail,
//! which the injector must never cause. The rules follow
//! <https://kubernetes.io/docs/concepts/security/pod-security-standards/> (latest version).

use k8s_openapi::api::core::v1::{Container, PodSecurityContext, Volume};

/// Namespace label holding the enforced level.
pub const LABEL_ENFORCE: &str = "pod-security.kubernetes.io/enforce";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Privileged,
    Baseline,
    Restricted,
}

impl Level {
    /// The label value; unknown values are treated as `restricted`, as PSA does for an
    /// invalid level (it fails closed).
    pub fn from_label(value: &str) -> Level {
        match value {
            "privileged" => Level::Privileged,
            "baseline" => Level::Baseline,
            _ => Level::Restricted,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Privileged => "privileged",
            Level::Baseline => "baseline",
            Level::Restricted => "restricted",
        }
    }
}

/// Capabilities the baseline level lets a container add.
const BASELINE_CAPABILITIES: [&str; 13] = [
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// Volume sources the restricted level allows.
fn restricted_volume(v: &Volume) -> bool {
    v.host_path.is_none()
        && v.aws_elastic_block_store.is_none()
        && v.azure_disk.is_none()
        && v.azure_file.is_none()
        && v.cephfs.is_none()
        && v.cinder.is_none()
        && v.fc.is_none()
        && v.flex_volume.is_none()
        && v.flocker.is_none()
        && v.gce_persistent_disk.is_none()
        && v.git_repo.is_none()
        && v.glusterfs.is_none()
        && v.iscsi.is_none()
        && v.nfs.is_none()
        && v.photon_persistent_disk.is_none()
        && v.portworx_volume.is_none()
        && v.quobyte.is_none()
        && v.rbd.is_none()
        && v.scale_io.is_none()
        && v.storageos.is_none()
        && v.vsphere_volume.is_none()
}

fn strip_cap(c: &str) -> &str {
    c.strip_prefix("CAP_").unwrap_or(c)
}

/// What the added container and volumes break at `level`, one line per rule; empty when
/// they pass. `pod` is the pod's own security context (restricted rules may be met there).
pub fn violations(
    container: &Container,
    volumes: &[Volume],
    pod: Option<&PodSecurityContext>,
    level: Level,
) -> Vec<String> {
    let mut out = Vec::new();
    if level == Level::Privileged {
        return out;
    }
    let sc = container.security_context.as_ref();
    let name = &container.name;
    if sc.and_then(|s| s.privileged) == Some(true) {
        out.push(format!("container {name:?} is privileged"));
    }
    let added: Vec<&str> = sc
        .and_then(|s| s.capabilities.as_ref())
        .and_then(|c| c.add.as_deref())
        .unwrap_or_default()
        .iter()
        .map(|c| strip_cap(c))
        .collect();
    let beyond_baseline: Vec<&str> = added
        .iter()
        .copied()
        .filter(|c| !BASELINE_CAPABILITIES.contains(c))
        .collect();
    if !beyond_baseline.is_empty() {
        out.push(format!(
            "container {name:?} adds capabilities {beyond_baseline:?}, beyond the baseline set"
        ));
    }
    if container
        .ports
        .iter()
        .flatten()
        .any(|p| p.host_port.is_some_and(|h| h != 0))
    {
        out.push(format!("container {name:?} uses hostPort"));
    }
    if sc
        .and_then(|s| s.proc_mount.as_deref())
        .is_some_and(|m| m != "Default")
    {
        out.push(format!("container {name:?} sets a non-default procMount"));
    }
    let seccomp_type = sc
        .and_then(|s| s.seccomp_profile.as_ref())
        .map(|p| p.type_.as_str())
        .or_else(|| {
            pod.and_then(|p| p.seccomp_profile.as_ref())
                .map(|p| p.type_.as_str())
        });
    if seccomp_type == Some("Unconfined") {
        out.push(format!("container {name:?} runs seccomp Unconfined"));
    }
    if sc
        .and_then(|s| s.app_armor_profile.as_ref())
        .is_some_and(|p| p.type_ == "Unconfined")
    {
        out.push(format!("container {name:?} runs AppArmor Unconfined"));
    }
    if sc
        .and_then(|s| s.windows_options.as_ref())
        .and_then(|w| w.host_process)
        == Some(true)
    {
        out.push(format!("container {name:?} is a Windows host process"));
    }
    if let Some(t) = sc
        .and_then(|s| s.se_linux_options.as_ref())
        .and_then(|o| o.type_.as_deref())
    {
        if ![
            "",
            "container_t",
            "container_init_t",
            "container_kvm_t",
            "container_engine_t",
        ]
        .contains(&t)
        {
            out.push(format!("container {name:?} sets SELinux type {t:?}"));
        }
    }
    for v in volumes {
        if v.host_path.is_some() {
            out.push(format!("volume {:?} is a hostPath", v.name));
        }
    }
    if level == Level::Baseline {
        return out;
    }

    for v in volumes {
        if v.host_path.is_none() && !restricted_volume(v) {
            out.push(format!(
                "volume {:?} uses a type the restricted level forbids",
                v.name
            ));
        }
    }
    if sc.and_then(|s| s.allow_privilege_escalation) != Some(false) {
        out.push(format!(
            "container {name:?} does not set allowPrivilegeEscalation: false"
        ));
    }
    let non_root = sc
        .and_then(|s| s.run_as_non_root)
        .or_else(|| pod.and_then(|p| p.run_as_non_root));
    if non_root != Some(true) {
        out.push(format!(
            "container {name:?} does not set runAsNonRoot: true"
        ));
    }
    let user = sc
        .and_then(|s| s.run_as_user)
        .or_else(|| pod.and_then(|p| p.run_as_user));
    if user == Some(0) {
        out.push(format!("container {name:?} runs as user 0"));
    }
    if !matches!(seccomp_type, Some("RuntimeDefault" | "Localhost")) {
        out.push(format!(
            "container {name:?} sets no seccomp profile RuntimeDefault or Localhost"
        ));
    }
    let drops_all = sc
        .and_then(|s| s.capabilities.as_ref())
        .and_then(|c| c.drop.as_deref())
        .unwrap_or_default()
        .iter()
        .any(|c| c == "ALL");
    if !drops_all {
        out.push(format!("container {name:?} does not drop ALL capabilities"));
    }
    let beyond_restricted: Vec<&str> = added
        .iter()
        .copied()
        .filter(|c| *c != "NET_BIND_SERVICE")
        .collect();
    if !beyond_restricted.is_empty() {
        out.push(format!(
            "container {name:?} adds capabilities {beyond_restricted:?}; restricted allows only NET_BIND_SERVICE"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Capabilities, HostPathVolumeSource, SeccompProfile, SecurityContext,
    };

    fn agent(add: &[&str]) -> Container {
        Container {
            name: "whisperer".into(),
            security_context: Some(SecurityContext {
                capabilities: Some(Capabilities {
                    add: Some(add.iter().map(|s| s.to_string()).collect()),
                    drop: Some(vec!["ALL".into()]),
                }),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    ..Default::default()
                }),
                run_as_non_root: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn net_raw_breaks_baseline_and_restricted_only() {
        let c = agent(&["NET_RAW"]);
        assert!(violations(&c, &[], None, Level::Privileged).is_empty());
        let base = violations(&c, &[], None, Level::Baseline);
        assert_eq!(base.len(), 1, "{base:?}");
        assert!(base[0].contains("NET_RAW"));
        let restricted = violations(&c, &[], None, Level::Restricted);
        assert!(restricted
            .iter()
            .any(|v| v.contains("allowPrivilegeEscalation")));
        assert!(restricted.iter().any(|v| v.contains("NET_RAW")));
    }

    #[test]
    fn a_container_without_extra_capabilities_passes_baseline() {
        let c = agent(&["CAP_NET_BIND_SERVICE"]);
        assert!(violations(&c, &[], None, Level::Baseline).is_empty());
        let mut strict = c.clone();
        if let Some(sc) = strict.security_context.as_mut() {
            sc.allow_privilege_escalation = Some(false);
        }
        assert!(violations(&strict, &[], None, Level::Restricted).is_empty());
    }

    #[test]
    fn pod_level_context_satisfies_restricted() {
        let mut c = agent(&[]);
        if let Some(sc) = c.security_context.as_mut() {
            sc.allow_privilege_escalation = Some(false);
            sc.run_as_non_root = None;
            sc.seccomp_profile = None;
        }
        let pod = PodSecurityContext {
            run_as_non_root: Some(true),
            seccomp_profile: Some(SeccompProfile {
                type_: "Localhost".into(),
                localhost_profile: Some("p.json".into()),
            }),
            ..Default::default()
        };
        assert!(violations(&c, &[], Some(&pod), Level::Restricted).is_empty());
        assert_eq!(violations(&c, &[], None, Level::Restricted).len(), 2);
    }

    #[test]
    fn privileged_and_host_path_break_baseline() {
        let mut c = agent(&[]);
        if let Some(sc) = c.security_context.as_mut() {
            sc.privileged = Some(true);
        }
        let v = Volume {
            name: "host".into(),
            host_path: Some(HostPathVolumeSource {
                path: "/".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(violations(&c, &[v], None, Level::Baseline).len(), 2);
    }

    #[test]
    fn unknown_level_fails_closed() {
        assert_eq!(Level::from_label("baseline"), Level::Baseline);
        assert_eq!(Level::from_label("bogus"), Level::Restricted);
    }
}
