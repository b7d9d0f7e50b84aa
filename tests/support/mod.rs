//! Shared helpers for integration tests: `mod support;` in a test file.
//!
//! The local Kubernetes control plane (etcd + kube-apiserver, optionally
//! kube-controller-manager) lives in [`controlplane`]; see tests/README.md.

// Each integration test binary uses a different subset of these helpers.
#![allow(dead_code, unused_imports)]

pub mod certs;
pub mod controlplane;
pub mod crd;
pub mod impersonate;
pub mod manifests;
pub mod netns;

pub use controlplane::{
    binary_dir, free_port, install_rustls_provider, poll_until, ControlPlane, KUBERNETES_VERSION,
};
pub use crd::install_attachment_crd;
