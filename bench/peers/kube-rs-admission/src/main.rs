//! The kube-rs `admission_controller` example as a benchmark peer: warp serving TLS, the body
//! parsed as `AdmissionReview<DynamicObject>`, a patch that adds the label
//! `admission=modified-by-admission-controller` (and rejects a resource labelled `illegal`).
//! Kept as the example has it, with two changes for the bench: the port comes from
//! `ADMISSION_PORT` (default 8443, as upstream) and the certificate paths from
//! `ADMISSION_TLS_CERT` / `ADMISSION_TLS_KEY` (default: upstream's file names).
use std::convert::Infallible;
use std::error::Error;

use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use kube::core::{DynamicObject, Resource, ResourceExt};
use tracing::{error, info, warn};
use warp::{reply, Filter, Reply};

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt::init();

    let routes = warp::path("mutate")
        .and(warp::body::json())
        .and_then(mutate_handler)
        .with(warp::trace::request());

    let ip = std::env::var("ADMISSION_PRIVATE_IP").expect("ADMISSION_PRIVATE_IP");
    let addr: std::net::SocketAddr = format!("{ip}:{}", env_or("ADMISSION_PORT", "8443"))
        .parse()
        .expect("address");
    warp::serve(warp::post().and(routes))
        .tls()
        .cert_path(env_or("ADMISSION_TLS_CERT", "admission-controller-tls.crt"))
        .key_path(env_or("ADMISSION_TLS_KEY", "admission-controller-tls.key"))
        .run(addr)
        .await;
}

/// Turns the review into a request, answers it, and wraps the answer in a review again.
async fn mutate_handler(body: AdmissionReview<DynamicObject>) -> Result<impl Reply, Infallible> {
    let req: AdmissionRequest<_> = match body.try_into() {
        Ok(req) => req,
        Err(err) => {
            error!("invalid request: {err}");
            return Ok(reply::json(
                &AdmissionResponse::invalid(err.to_string()).into_review(),
            ));
        }
    };
    let mut res = AdmissionResponse::from(&req);
    if let Some(obj) = req.object {
        let name = obj.name_any();
        res = match mutate(res.clone(), &obj) {
            Ok(res) => {
                info!("accepted: {:?} on Foo {}", req.operation, name);
                res
            }
            Err(err) => {
                warn!("denied: {:?} on {} ({})", req.operation, name, err);
                res.deny(err.to_string())
            }
        };
    }
    Ok(reply::json(&res.into_review()))
}

/// Refuses an `illegal` label; adds `admission` when missing (creating the labels map first).
fn mutate(res: AdmissionResponse, obj: &DynamicObject) -> Result<AdmissionResponse, Box<dyn Error>> {
    if obj.labels().contains_key("illegal") {
        return Err("Resource contained 'illegal' label".into());
    }
    if obj.labels().contains_key("admission") {
        return Ok(res);
    }
    let mut ops = Vec::new();
    if obj.meta().labels.is_none() {
        ops.push(json_patch::PatchOperation::Add(json_patch::AddOperation {
            path: "/metadata/labels".parse()?,
            value: serde_json::json!({}),
        }));
    }
    ops.push(json_patch::PatchOperation::Add(json_patch::AddOperation {
        path: "/metadata/labels/admission".parse()?,
        value: serde_json::Value::String("modified-by-admission-controller".into()),
    }));
    Ok(res.with_patch(json_patch::Patch(ops))?)
}
