/// Why the engine left a pod alone. The string forms are stable: they are metric label
/// values, admission warnings and Attachment status reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SkipReason {
    NotCreate,
    NotAPod,
    NamespaceDenied,
    NotRequested,
    OptedOut,
    AlreadyInjected,
    AlreadyAttached,
    UnknownProfile,
    ProfileNotAllowed,
    NameConflict,
    PodTerminating,
    PodNotRunning,
    TargetContainerMissing,
    Expired,
    /// The pod shares the node's network, PID or IPC namespace (`hostNetwork` ...).
    HostNamespaces,
    /// The added container would break the namespace's Pod Security `enforce` level.
    PodSecurity,
    /// The profile wants a native sidecar and the API server is older than 1.29.
    NativeSidecarUnsupported,
    /// A `whisperer.dev/cpu|memory|filter` annotation the profile does not allow.
    OverrideRefused,
    /// Every container has a memory limit, and what their requests leave is less than the
    /// attached Whisperer's budget (it would share the pod's memory with no room).
    NoHeadroom,
}

impl SkipReason {
    pub const ALL: [SkipReason; 19] = [
        SkipReason::NotCreate,
        SkipReason::NotAPod,
        SkipReason::NamespaceDenied,
        SkipReason::NotRequested,
        SkipReason::OptedOut,
        SkipReason::AlreadyInjected,
        SkipReason::AlreadyAttached,
        SkipReason::UnknownProfile,
        SkipReason::ProfileNotAllowed,
        SkipReason::NameConflict,
        SkipReason::PodTerminating,
        SkipReason::PodNotRunning,
        SkipReason::TargetContainerMissing,
        SkipReason::Expired,
        SkipReason::HostNamespaces,
        SkipReason::PodSecurity,
        SkipReason::NativeSidecarUnsupported,
        SkipReason::OverrideRefused,
        SkipReason::NoHeadroom,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::NotCreate => "not-create",
            SkipReason::NotAPod => "not-a-pod",
            SkipReason::NamespaceDenied => "namespace-denied",
            SkipReason::NotRequested => "not-requested",
            SkipReason::OptedOut => "opted-out",
            SkipReason::AlreadyInjected => "already-injected",
            SkipReason::AlreadyAttached => "already-attached",
            SkipReason::UnknownProfile => "unknown-profile",
            SkipReason::ProfileNotAllowed => "profile-not-allowed",
            SkipReason::NameConflict => "name-conflict",
            SkipReason::PodTerminating => "pod-terminating",
            SkipReason::PodNotRunning => "pod-not-running",
            SkipReason::TargetContainerMissing => "target-container-missing",
            SkipReason::Expired => "expired",
            SkipReason::HostNamespaces => "host-namespaces",
            SkipReason::PodSecurity => "pod-security",
            SkipReason::NativeSidecarUnsupported => "native-sidecar-unsupported",
            SkipReason::OverrideRefused => "override-refused",
            SkipReason::NoHeadroom => "no-headroom",
        }
    }

    /// The CamelCase form, for condition reasons and Events (`namespace-denied` ->
    /// `NamespaceDenied`).
    pub fn condition_reason(self) -> String {
        self.as_str()
            .split('-')
            .map(|w| {
                let mut c = w.chars();
                c.next()
                    .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                    .unwrap_or_default()
            })
            .collect()
    }
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
