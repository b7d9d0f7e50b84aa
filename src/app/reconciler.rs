//! The reconciler inside `serve`, with the agent control API it feeds.

use prometheus_client::registry::Registry;

use super::AppError;
use crate::cli::{ServeArgs, Toggle};
use crate::control::{ControlState, KeyPair, TokenKey, TokenKeys, ENV_CONTROL_CA};
use crate::engine::SharedSettings;
use crate::reconciler::{self, ReconcilerError, ReconcilerHandle};

/// Contents of watched files, in order.
pub(super) type FileBytes = Vec<Vec<u8>>;

/// The keys agent tokens are minted and checked with, and the bytes they were read from (for
/// the reload watcher). Every replica must hold the same keys: the `--agent-token-keys`
/// directory (a Secret volume), else (one process) a random key that dies with it.
pub(super) fn token_keys(args: &ServeArgs) -> Result<(TokenKeys, Option<FileBytes>), AppError> {
    let random = || -> Result<TokenKeys, AppError> { Ok(TokenKeys::single(TokenKey::random()?)) };
    let Some(dir) = &args.agent_token_keys else {
        tracing::warn!(
            "no --agent-token-keys: agent tokens use a random key of this process; with several \
             replicas, or after a restart, agents get 401 from replicas that did not mint them"
        );
        return Ok((random()?, None));
    };
    // The shipped Deployment mounts the Secret as optional: until it is created the directory
    // is empty, and the reload watcher switches to the Secret's keys once it appears.
    let [current, _] = KeyPair::files(dir);
    if !current.exists() {
        tracing::warn!(
            dir = %dir.display(),
            "agent token keys not there yet (create the Secret whisperer-agent-token-keys): \
             using a random key of this process until they appear"
        );
        return Ok((random()?, Some(vec![Vec::new(), Vec::new()])));
    }
    let (pair, bytes) = KeyPair::load(dir)?;
    Ok((TokenKeys::new(pair), Some(bytes)))
}

/// The CA attached agents verify the control API with: `--control-ca`, else the `ca.crt`
/// certs-gen puts next to the serving certificate (the Secret's key), else the generated CA.
pub(super) fn control_ca(
    args: &ServeArgs,
    generated: Option<&str>,
) -> Result<Option<String>, AppError> {
    let read = |path: &std::path::Path| {
        std::fs::read_to_string(path).map_err(|source| {
            AppError::Tls(crate::tls::TlsError::Read {
                path: path.display().to_string(),
                source,
            })
        })
    };
    if let Some(path) = &args.control_ca {
        return read(path).map(Some);
    }
    if let Some(beside) = args
        .tls_cert
        .as_deref()
        .and_then(std::path::Path::parent)
        .map(|d| d.join("ca.crt"))
        .filter(|p| p.exists())
    {
        return read(&beside).map(Some);
    }
    Ok(generated.map(str::to_string))
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
    key: TokenKeys,
    control_ca: std::sync::Arc<arc_swap::ArcSwapOption<String>>,
) -> Result<Option<(ReconcilerHandle, ControlState)>, AppError> {
    let base = reconciler::control_api_env(&control_base_url(args), key.clone());
    // An ephemeral agent can mount nothing: the CA that verifies the control API travels in
    // its env, next to the URL and token. Read per attachment: a self-managed Secret can
    // change it while the server runs.
    let env: reconciler::AgentEnv = std::sync::Arc::new(move |ns: &str, name: &str, uid: &str| {
        let mut env = base(ns, name, uid);
        if let Some(pem) = control_ca.load_full() {
            env.push(k8s_openapi::api::core::v1::EnvVar {
                name: ENV_CONTROL_CA.into(),
                value: Some((*pem).clone()),
                ..Default::default()
            });
        }
        env
    });
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
