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
}

impl SkipReason {
    pub const ALL: [SkipReason; 14] = [
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
        }
    }
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
