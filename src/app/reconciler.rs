//! The reconciler inside `serve`, with the agent control API it feeds.

use prometheus_client::registry::Registry;
use sha2::{Digest, Sha256};

use super::AppError;
use crate::cli::{ServeArgs, Toggle};
use crate::control::{ControlState, TokenKey};
use crate::reconciler::{self, ReconcilerError, ReconcilerHandle};
use crate::webhook::SharedSettings;

/// The key agent tokens are minted with. Every replica must hold the same one: an explicit
/// file, else a key derived from the serving key (all replicas mount the same Secret), else
/// (self-signed, one process) a random one.
pub(super) fn token_key(args: &ServeArgs) -> Result<TokenKey, AppError> {
    if let Some(path) = &args.agent_token_key {
        return Ok(TokenKey::from_file(path)?);
    }
    if let Some(key) = &args.tls_key {
        let pem = std::fs::read(key).map_err(|source| crate::tls::TlsError::Read {
            path: key.display().to_string(),
            source,
        })?;
        let mut h = Sha256::new();
        h.update(b"whisperer agent token key v1\0");
        h.update(&pem);
        return Ok(TokenKey::from_bytes(h.finalize().to_vec()));
    }
    Ok(TokenKey::random()?)
}

fn control_base_url(args: &ServeArgs) -> String {
    args.control_url
        .clone()
        .unwrap_or_else(|| format!("https://whisperer-injector.{}.svc:443", args.namespace))
}

/// Starts the reconciler; `Ok(None)` when `--reconciler auto` finds no CRD installed.
pub(super) async fn start(
    args: &ServeArgs,
    client: kube::Client,
    settings: SharedSettings,
    registry: &mut Registry,
    key: TokenKey,
) -> Result<Option<(ReconcilerHandle, ControlState)>, AppError> {
    let env = reconciler::control_api_env(&control_base_url(args), key.clone());
    let started = reconciler::start_with_agent_env(
        client,
        settings,
        args.namespace.clone(),
        &args.reconciler_opts,
        registry,
        Some(env),
    )
    .await;
    match started {
        Ok(handle) => {
            let control = ControlState {
                key,
                lookup: handle.attachment_lookup(),
            };
            Ok(Some((handle, control)))
        }
        Err(ReconcilerError::CrdMissing) if args.reconciler == Toggle::Auto => {
            tracing::warn!(
                "the Attachment CRD is not installed: runtime attachment is off (kubectl apply -f manifests/crd-attachments.yaml)"
            );
            Ok(None)
        }
        Err(e) => Err(AppError::Reconciler(e)),
    }
}
