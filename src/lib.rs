//! whisperer-injector: puts the Whisperer capture agent next to Kubernetes workloads,
//! declaratively (mutating admission webhook) or at runtime (ephemeral containers).
//!
//! `engine` and `render` are pure; everything that touches a socket or the API server is a
//! thin layer around them.

pub mod app;
pub mod check;
pub mod cli;
pub mod config;
pub mod control;
pub mod dns;
pub mod engine;
pub mod explain;
pub mod http_error;
pub mod kubeclient;
pub mod lean_json;
pub mod metrics;
pub mod offline;
pub mod plugin;
pub mod reconciler;
pub mod reload;
pub mod render;
pub mod status;
pub mod tls;
pub mod webhook;
