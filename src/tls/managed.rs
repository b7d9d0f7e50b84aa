//! Self-managed TLS (`serve --tls-secret`): every replica serves what the Secret holds (a
//! watch, swapped in place); the leader keeps the Secret valid ([`super::pki`]) and the
//! caBundle of its own MutatingWebhookConfiguration equal to the Secret's `ca.crt`.
//!
//! The leader polls (two GETs per `interval`) rather than watching: it is one process, the
//! load is negligible, and a poll also repairs a caBundle that a re-applied manifest or a
//! hand edit changed without any event ordering to reason about.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use futures::StreamExt;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use super::pki::{self, Change, Pki, PkiPolicy, Step};
use super::{LoadedCert, SwappableCert};

/// What the keeper did, per replica: only the leader's counters move.
#[derive(Clone, Default)]
pub struct KeeperMetrics {
    pub writes: Family<WriteLabels, Counter>,
    pub leading: Gauge,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    pub step: WriteStep,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum WriteStep {
    create,
    roll_ca,
    issue_serving,
    drop_old_ca,
    ca_bundle,
    agent_token_keys,
}

impl KeeperMetrics {
    pub fn new(registry: &mut Registry) -> KeeperMetrics {
        let m = KeeperMetrics::default();
        registry.register(
            "whisperer_tls_writes",
            "Writes of the self-managed TLS Secret (by step) and of the caBundle, by this replica",
            m.writes.clone(),
        );
        registry.register(
            "whisperer_tls_keeper_leader",
            "1 while this replica holds the TLS keeper's Lease",
            m.leading.clone(),
        );
        m
    }

    fn wrote(&self, step: WriteStep) {
        self.writes.get_or_create(&WriteLabels { step }).inc();
    }
}

/// Where the self-managed PKI lives and what it must cover.
#[derive(Debug, Clone)]
pub struct ManagedTls {
    pub namespace: String,
    pub secret: String,
    pub webhook_config: String,
    pub policy: PkiPolicy,
    /// How often the leader compares the Secret and the caBundle with what they should be.
    pub interval: Duration,
    /// Secret of agent token keys to create (random `current`) when missing; never changed.
    pub token_keys_secret: Option<String>,
}

fn data_of(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect()
}

/// What one replica took from the Secret.
pub struct Served {
    pub cert: LoadedCert,
    /// `ca.crt`: every CA currently trusted (what attached agents verify the control API with).
    pub ca_bundle: String,
}

/// Every replica: watches the Secret and swaps its serving pair into `resolver` whenever it
/// changes; `on_served` hears about each pair put in service (metrics, readiness, the CA
/// agents are given). A Secret that does not parse is logged and the previous pair stays.
pub fn follow(
    client: Client,
    cfg: &ManagedTls,
    resolver: Arc<SwappableCert>,
    on_served: impl Fn(&Served) + Send + 'static,
    on_rejected: impl Fn() + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    let api: Api<Secret> = Api::namespaced(client, &cfg.namespace);
    let name = cfg.secret.clone();
    let selector = format!("metadata.name={name}");
    let stream = watcher(api, watcher::Config::default().fields(&selector)).default_backoff();
    tokio::spawn(async move {
        let mut last: Option<Vec<u8>> = None;
        futures::pin_mut!(stream);
        while let Some(ev) = stream.next().await {
            let secret = match ev {
                Ok(Event::Apply(s) | Event::InitApply(s)) => s,
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, secret = %name, "watch of the TLS Secret failed; retrying");
                    continue;
                }
            };
            let data = data_of(&secret);
            let (Some(crt), Some(key)) = (data.get(pki::TLS_CRT), data.get(pki::TLS_KEY)) else {
                continue;
            };
            let fingerprint = [crt.as_slice(), key.as_slice()].concat();
            if last.as_ref() == Some(&fingerprint) {
                continue;
            }
            let origin = format!("Secret {name} key");
            match super::parse_pem(
                crt,
                key,
                &format!("{origin} {}", pki::TLS_CRT),
                &format!("{origin} {}", pki::TLS_KEY),
            ) {
                Ok(cert) => {
                    resolver.swap(cert.key.clone());
                    last = Some(fingerprint);
                    let ca_bundle = data
                        .get(pki::CA_CRT)
                        .map(|b| String::from_utf8_lossy(b).into_owned())
                        .unwrap_or_default();
                    tracing::info!(secret = %name, not_after = ?cert.not_after, "serving the certificate from the Secret");
                    on_served(&Served { cert, ca_bundle });
                }
                Err(e) => {
                    on_rejected();
                    tracing::error!(error = %e, secret = %name, "the TLS Secret's pair is unusable; still serving the previous one");
                }
            }
        }
    })
}

#[derive(Debug, thiserror::Error)]
enum KeepError {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
    #[error("the Secret exists with type {0:?}; it must be kubernetes.io/tls (delete it to let the injector create it)")]
    WrongType(String),
    #[error("caBundle patch: {0}")]
    Patch(serde_json::Error),
    #[error("random key: {0}")]
    Random(getrandom::Error),
}

/// The leader: keeps the Secret and the caBundle right until `stop`.
pub async fn keep(
    client: Client,
    cfg: ManagedTls,
    metrics: KeeperMetrics,
    mut stop: watch::Receiver<bool>,
) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &cfg.namespace);
    let hooks: Api<MutatingWebhookConfiguration> = Api::all(client);
    // Checked until seen once per term: nothing here deletes or changes it afterwards.
    let mut token_keys = cfg.token_keys_secret.clone();
    loop {
        if let Some(name) = &token_keys {
            match ensure_token_keys(&secrets, &cfg, name).await {
                Ok(created) => {
                    if created {
                        metrics.wrote(WriteStep::agent_token_keys);
                    }
                    token_keys = None;
                }
                Err(e) => {
                    tracing::warn!(error = %e, secret = %name, "cannot check the agent token keys; retrying");
                }
            }
        }
        let wait = match keep_once(&secrets, &hooks, &cfg, &metrics).await {
            Ok(wait) => wait,
            Err(e) => {
                tracing::warn!(error = %e, secret = %cfg.secret, "cannot keep the TLS Secret; retrying");
                cfg.interval
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// One pass: publish the bundle, take at most one step; returns how long to wait.
async fn keep_once(
    secrets: &Api<Secret>,
    hooks: &Api<MutatingWebhookConfiguration>,
    cfg: &ManagedTls,
    metrics: &KeeperMetrics,
) -> Result<Duration, KeepError> {
    let current = secrets.get_opt(&cfg.secret).await?;
    if let Some(t) = current.as_ref().and_then(|s| s.type_.as_deref()) {
        if t != "kubernetes.io/tls" {
            return Err(KeepError::WrongType(t.to_string()));
        }
    }
    let parsed = current.as_ref().map(|s| Pki::parse(&data_of(s)));
    if let Some(Err(e)) = &parsed {
        tracing::warn!(error = %e, secret = %cfg.secret, "the TLS Secret is unusable; replacing its contents");
    }
    // Just patched counts as not yet published: the API server picks the new caBundle up
    // asynchronously, so the serving certificate moves one pass later at the earliest.
    let published = match parsed.as_ref() {
        Some(Ok(p)) => {
            publish(hooks, &cfg.webhook_config, &p.ca_bundle()).await? == Published::Already
        }
        _ => false,
    };
    let now = certs_gen::OffsetDateTime::now_utc();
    let step = pki::next_step(
        parsed.as_ref().map(|r| r.as_ref()),
        &cfg.policy,
        now.unix_timestamp(),
        published,
    );
    let base = parsed.as_ref().and_then(|r| r.as_ref().ok());
    let change = match step {
        Step::Wait(s) => {
            let s = u64::try_from(s).unwrap_or(1);
            return Ok(cfg.interval.min(Duration::from_secs(s)));
        }
        Step::Write(change) => change,
    };
    match &change {
        Change::Create(why) => {
            tracing::info!(secret = %cfg.secret, reason = %why, "creating the CA and serving certificate")
        }
        Change::RollCa => {
            tracing::info!(secret = %cfg.secret, "rolling the CA: new CA trusted beside the old one")
        }
        Change::IssueLeaf(why) => {
            tracing::info!(secret = %cfg.secret, reason = why, "issuing a new serving certificate")
        }
        Change::DropOldCas => {
            tracing::info!(secret = %cfg.secret, "CA roll done: the old CA is no longer trusted")
        }
    }
    let data = pki::apply(&change, base, &cfg.policy, now)?;
    if write(secrets, cfg, current, data).await? {
        metrics.wrote(match change {
            Change::Create(_) => WriteStep::create,
            Change::RollCa => WriteStep::roll_ca,
            Change::IssueLeaf(_) => WriteStep::issue_serving,
            Change::DropOldCas => WriteStep::drop_old_ca,
        });
    }
    // Straight on: the next pass publishes what was written.
    Ok(Duration::ZERO)
}

/// Creates the agent token keys Secret with a random `current` key when it does not exist, so
/// every replica mints and checks agent tokens with the same key without a manual step. An
/// existing Secret is never touched (rotation is the operator's, see the README).
async fn ensure_token_keys(
    secrets: &Api<Secret>,
    cfg: &ManagedTls,
    name: &str,
) -> Result<bool, KeepError> {
    if secrets.get_opt(name).await?.is_some() {
        return Ok(false);
    }
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(KeepError::Random)?;
    // Hex text: the key file is read trimmed, and text survives `kubectl edit`.
    let data = BTreeMap::from([(
        crate::control::CURRENT_KEY_FILE.to_string(),
        ByteString(hex::encode(key).into_bytes()),
    )]);
    let s = new_secret(cfg, name, "Opaque", data);
    match secrets.create(&PostParams::default(), &s).await {
        Ok(_) => {
            tracing::info!(secret = %name, "created the agent token keys");
            Ok(true)
        }
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// A Secret of the injector's namespace, labelled as the injector's own.
fn new_secret(
    cfg: &ManagedTls,
    name: &str,
    type_: &str,
    data: BTreeMap<String, ByteString>,
) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(cfg.namespace.clone()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_string(),
                "whisperer-injector".to_string(),
            )])),
            ..ObjectMeta::default()
        },
        type_: Some(type_.into()),
        data: Some(data),
        ..Secret::default()
    }
}

async fn write(
    secrets: &Api<Secret>,
    cfg: &ManagedTls,
    current: Option<Secret>,
    data: BTreeMap<String, Vec<u8>>,
) -> Result<bool, KeepError> {
    let data = data.into_iter().map(|(k, v)| (k, ByteString(v))).collect();
    let result = match current {
        Some(mut s) => {
            // resourceVersion stays: a replica that lost the Lease mid-write gets 409.
            s.data = Some(data);
            secrets
                .replace(&cfg.secret, &PostParams::default(), &s)
                .await
        }
        None => {
            let s = new_secret(cfg, &cfg.secret, "kubernetes.io/tls", data);
            secrets.create(&PostParams::default(), &s).await
        }
    };
    match result {
        Ok(_) => Ok(true),
        // Someone else wrote first: the next pass reads what they wrote.
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Published {
    Already,
    JustPatched,
    /// No configuration (or one without webhooks): nothing trusts the Secret yet.
    Nowhere,
}

/// Makes every webhook of the configuration carry `bundle`.
async fn publish(
    hooks: &Api<MutatingWebhookConfiguration>,
    name: &str,
    bundle: &str,
) -> Result<Published, KeepError> {
    let Some(mwc) = hooks.get_opt(name).await? else {
        tracing::warn!(webhook_config = %name, "MutatingWebhookConfiguration not found; its caBundle cannot be set yet");
        return Ok(Published::Nowhere);
    };
    let webhooks = mwc.webhooks.unwrap_or_default();
    let mut ops = Vec::new();
    for (i, w) in webhooks.iter().enumerate() {
        if w.client_config.ca_bundle.as_ref().map(|b| b.0.as_slice()) == Some(bundle.as_bytes()) {
            continue;
        }
        let b64 = base64::engine::general_purpose::STANDARD.encode(bundle);
        // The test op makes the patch fail instead of writing into another webhook when the
        // list was reordered since the read.
        ops.push(serde_json::json!({"op": "test", "path": format!("/webhooks/{i}/name"), "value": w.name}));
        ops.push(serde_json::json!({"op": "add", "path": format!("/webhooks/{i}/clientConfig/caBundle"), "value": b64}));
    }
    if webhooks.is_empty() {
        return Ok(Published::Nowhere);
    }
    if ops.is_empty() {
        return Ok(Published::Already);
    }
    let patch: json_patch::Patch =
        serde_json::from_value(serde_json::Value::Array(ops)).map_err(KeepError::Patch)?;
    hooks
        .patch(name, &PatchParams::default(), &Patch::Json::<()>(patch))
        .await?;
    tracing::info!(webhook_config = %name, webhooks = webhooks.len(), "caBundle updated");
    Ok(Published::JustPatched)
}
