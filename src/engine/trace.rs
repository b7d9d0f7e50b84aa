//! What the admission decision looked at, rule by rule, for `explain`. The webhook passes
//! `()`, which records nothing and costs nothing; explain passes a `Vec<Step>`. Either way the
//! rules run once, in [`super::decide_admission_traced`], so explain cannot drift from them.

/// One rule and what it found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub rule: Rule,
    pub passed: bool,
    pub detail: String,
}

/// The admission rules, in the order they are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// `whisperer.dev/inject` (or `--inject-by-default`).
    OptIn,
    /// The `whisperer.dev/injected` marker.
    Marker,
    /// Namespace policy, the profile, and its allowed namespaces.
    Profile,
    /// Host namespaces and opt-out, for this pod and profile.
    PodPolicy,
    /// Container and volume names, overrides, sidecar placement.
    Plan,
    /// The namespace's Pod Security level.
    PodSecurity,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::OptIn => "opt-in annotation",
            Rule::Marker => "injection marker",
            Rule::Profile => "namespace policy and profile",
            Rule::PodPolicy => "pod policy (host namespaces, opt-out)",
            Rule::Plan => "sidecar plan (names, overrides, placement)",
            Rule::PodSecurity => "Pod Security level",
        }
    }
}

pub trait Trace {
    fn step(&mut self, rule: Rule, passed: bool, detail: impl FnOnce() -> String);
}

impl Trace for () {
    #[inline]
    fn step(&mut self, _: Rule, _: bool, _: impl FnOnce() -> String) {}
}

impl Trace for Vec<Step> {
    fn step(&mut self, rule: Rule, passed: bool, detail: impl FnOnce() -> String) {
        self.push(Step {
            rule,
            passed,
            detail: detail(),
        });
    }
}
