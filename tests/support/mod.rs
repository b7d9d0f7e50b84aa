//! Shared helpers for integration tests: `mod support;` in a test file.
//!
//! The local Kubernetes control plane (etcd + kube-apiserver, optionally
//! kube-controller-manager) lives in [`controlplane`]; the simulated cluster (kube-scheduler +
//! kwok) in [`kwok`]; the scheduler and kubelet stand-in for small tests in [`kubelet`]; the
//! reconciler as a benchmark's child process in [`reconciler_process`]; objects in
//! [`builders`]; the Attachment CRD in [`crd`]; metrics text in [`metrics`]; DNS queries in [`dns`]; an HTTPS client for the webhook in [`https`]; the
//! webhook started in-process and registered with the API server in [`injector`]; helm and
//! kustomize (tests/helm/build.sh) in [`helm`]; the kubectl plugin run as a subprocess in
//! [`plugin`]. See
//! tests/README.md. Benches and examples use the same module
//! (`#[path = "../tests/support/mod.rs"] mod support;`): nothing here is written twice.

// Each integration test binary uses a different subset of these helpers.
#![allow(dead_code, unused_imports)]

pub mod builders;
pub mod certs;
pub mod controlplane;
pub mod crd;
pub mod dns;
pub mod helm;
pub mod https;
pub mod impersonate;
pub mod injector;
pub mod kubelet;
pub mod kwok;
pub mod manifests;
pub mod metrics;
pub mod netns;
pub mod plugin;
pub mod reconciler_process;

pub use controlplane::{
    binary_dir, free_port, install_rustls_provider, poll_until, ControlPlane, KUBERNETES_VERSION,
    WAIT,
};
pub use crd::install_attachment_crd;
pub use kubelet::{kubelet_unreachable, terminate_ephemeral, Kubelet};
