//! Self-managed TLS (`serve --tls-secret`) against a real kube-apiserver: from no Secret and
//! a webhook configuration without caBundle to injected pods; renewals and a CA roll under
//! continuous pod creation with no failed or un-injected creation; two replicas where only
//! the Lease holder writes and the other serves each new certificate.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, PostParams};
use support::injector::{self, dry_run, has_whisperer, pod, PROFILES};
use support::{poll_until, ControlPlane, WAIT};
use whisperer_injector::app::Running;

const SECRET: &str = "whisperer-injector-tls";

struct Replica {
    running: Running,
    _dir: tempfile::TempDir,
}

async fn start_replica(cp: &ControlPlane, identity: &str, lifetimes: &[&str]) -> Replica {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, PROFILES).expect("write");
    let (config, kubeconfig) = (
        config.display().to_string(),
        cp.kubeconfig_path().display().to_string(),
    );
    let mut argv = vec![
        "--tls-secret",
        SECRET,
        "--tls-extra-san",
        "127.0.0.1",
        "--tls-extra-san",
        "localhost",
        "--kubeconfig",
        &kubeconfig,
        "--config",
        &config,
        "--leader-election-identity",
        identity,
        // Long enough that a renewal answered late by a loaded API server does not move the
        // Lease mid-test; a clean shutdown releases it, so a takeover does not wait for it.
        "--leader-election-lease-duration",
        "15s",
        "--leader-election-renew-deadline",
        "10s",
        "--leader-election-retry-period",
        "200ms",
    ];
    argv.extend_from_slice(lifetimes);
    let running = whisperer_injector::app::start(&support::https::serve_args(&argv))
        .await
        .expect("serve --tls-secret starts");
    Replica { running, _dir: dir }
}

async fn injector_namespace(cp: &ControlPlane) {
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "whisperer-system"}
    }))
    .expect("namespace");
    match Api::<Namespace>::all(cp.client())
        .create(&PostParams::default(), &ns)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("create whisperer-system: {e}"),
    }
}

fn key(s: &Secret, k: &str) -> Vec<u8> {
    s.data
        .as_ref()
        .and_then(|d| d.get(k))
        .map(|b| b.0.clone())
        .unwrap_or_default()
}

fn cert_count(pem: &[u8]) -> usize {
    rustls_pemfile::certs(&mut &pem[..]).count()
}

async fn secret(cp: &ControlPlane) -> Option<Secret> {
    Api::<Secret>::namespaced(cp.client(), "whisperer-system")
        .get_opt(SECRET)
        .await
        .expect("read the Secret")
}

/// The leaf a TLS client gets from `replica` when it trusts `ca` (panics if it does not
/// verify).
async fn served_leaf(replica: &Replica, ca: &[u8]) -> Vec<u8> {
    let ca = String::from_utf8(ca.to_vec()).expect("PEM");
    let tls = support::https::raw_tls(replica.running.addr, &ca, "http/1.1").await;
    tls.get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .expect("a peer certificate")
}

fn first_der(pem: &[u8]) -> Vec<u8> {
    rustls_pemfile::certs(&mut &pem[..])
        .next()
        .and_then(Result::ok)
        .map(|c| c.to_vec())
        .expect("a certificate")
}

async fn admin_sample(replica: &Replica, series: &str) -> f64 {
    let text = support::https::metrics(replica.running.admin_addr).await;
    support::https::sample(&text, series).unwrap_or(0.0)
}

#[tokio::test]
async fn from_nothing_to_injected_pods_through_renewals_and_a_ca_roll() {
    let cp = ControlPlane::start().await;
    injector_namespace(&cp).await;
    let ns = cp.namespace(&[("injection", "enabled")]).await;
    // Serving certificate renewed every 8 s (2/3 of 12 s); CA rolled at 32 s. Each step
    // leaves the replica and the API server (its webhook client reads the caBundle through a
    // watch) a third of a lifetime or an overlap of 4 s to catch up: seconds, on a loaded
    // machine, not a race.
    let replica = start_replica(
        &cp,
        "solo",
        &[
            "--tls-cert-lifetime",
            "12s",
            "--tls-ca-lifetime",
            "48s",
            "--tls-roll-overlap",
            "4s",
        ],
    )
    .await;
    let url = format!("https://127.0.0.1:{}/mutate", replica.running.addr.port());
    injector::register(&cp, &url, None).await;
    injector::wait_until_called(&cp, &ns).await;

    // The caBundle is the Secret's ca.crt, and /readyz is green.
    let s = secret(&cp).await.expect("the injector created its Secret");
    let mwc = Api::<MutatingWebhookConfiguration>::all(cp.client())
        .get("whisperer-injector")
        .await
        .expect("webhook configuration");
    let bundle = mwc.webhooks.unwrap_or_default()[0]
        .client_config
        .ca_bundle
        .clone()
        .expect("caBundle set by the injector");
    assert_eq!(bundle.0, key(&s, "ca.crt"));
    let ready = support::https::admin_get(replica.running.admin_addr, "/readyz").await;
    assert_eq!(ready.status, 200, "{:?}", ready.json());

    // Create pods without pause until the CA has rolled and the old one is gone again.
    let pods = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(cp.client(), &ns);
    let started = Instant::now();
    let (mut created, mut failed, mut not_injected) = (0u32, Vec::new(), 0u32);
    let mut leaves = BTreeSet::new();
    let mut max_cas = 1;
    let mut roll_done = false;
    let roll_limit = Duration::from_secs(150);
    while started.elapsed() < roll_limit && !roll_done {
        let name = format!("p{created}");
        // Every tenth pod is stored for real; the rest go through admission as dry runs.
        let params = if created % 10 == 0 {
            PostParams::default()
        } else {
            dry_run()
        };
        match pods.create(&params, &pod(&name, true)).await {
            Ok(p) if has_whisperer(&p) => {}
            Ok(_) => not_injected += 1,
            Err(e) => failed.push(e.to_string()),
        }
        created += 1;
        if created % 5 == 0 {
            let s = secret(&cp).await.expect("Secret");
            leaves.insert(key(&s, "tls.crt"));
            let cas = cert_count(&key(&s, "ca.crt"));
            max_cas = max_cas.max(cas);
            roll_done = max_cas == 2 && cas == 1;
        }
    }
    assert!(failed.is_empty(), "failed creations: {failed:?}");
    assert_eq!(not_injected, 0, "pods created without the Whisperer");
    assert!(
        roll_done,
        "the CA roll did not finish within {roll_limit:?} (max CAs seen {max_cas})"
    );
    assert!(leaves.len() >= 3, "renewals seen: {}", leaves.len());
    assert!(created > 100, "only {created} pods were created");
    eprintln!(
        "{created} pods created over {:?}, {} serving certificates, CA roll seen",
        started.elapsed(),
        leaves.len()
    );

    // What is served is what the Secret holds, verified by its ca.crt.
    let s = secret(&cp).await.expect("Secret");
    let want = first_der(&key(&s, "tls.crt"));
    poll_until(WAIT, "the new leaf served", || async {
        (served_leaf(&replica, &key(&s, "ca.crt")).await == want).then_some(())
    })
    .await;
    assert!(admin_sample(&replica, "whisperer_tls_writes_total{step=\"roll_ca\"}").await >= 1.0);
    replica.running.shutdown().await;
}

#[tokio::test]
async fn two_replicas_only_the_lease_holder_writes_and_both_serve_each_renewal() {
    let cp = ControlPlane::start().await;
    injector_namespace(&cp).await;
    let life = ["--tls-cert-lifetime", "12s", "--tls-ca-lifetime", "1h"];
    let a = start_replica(&cp, "replica-a", &life).await;
    let b = start_replica(&cp, "replica-b", &life).await;
    let s = poll_until(WAIT, "the Secret created", || async { secret(&cp).await }).await;
    let lease = poll_until(WAIT, "the TLS Lease held", || async {
        Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(
            cp.client(),
            "whisperer-system",
        )
        .get_opt("whisperer-injector-tls")
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec?.holder_identity)
    })
    .await;
    let (leader, follower) = if lease == "replica-a" {
        (&a, &b)
    } else {
        (&b, &a)
    };
    // The gauge is set once the Lease is taken, a moment after the Lease shows the holder.
    poll_until(WAIT, "the leader's gauge", || async {
        (admin_sample(leader, "whisperer_tls_keeper_leader").await == 1.0).then_some(())
    })
    .await;
    assert_eq!(
        admin_sample(follower, "whisperer_tls_keeper_leader").await,
        0.0
    );

    // Two renewals later, each replica serves the latest leaf, and only the leader wrote.
    let mut seen = vec![key(&s, "tls.crt")];
    for _ in 0..2 {
        let last = seen.last().cloned().expect("a leaf");
        poll_until(WAIT, "a renewal", || async {
            let s = secret(&cp).await?;
            (key(&s, "tls.crt") != last).then_some(())
        })
        .await;
        // Both serve the leaf the Secret holds (the follower through its watch). The Secret is
        // read again on every try: on a loaded machine the next renewal may come first.
        let served = poll_until(WAIT, "the renewed leaf served by both", || async {
            let s = secret(&cp).await?;
            let (leaf, ca) = (key(&s, "tls.crt"), key(&s, "ca.crt"));
            let want = first_der(&leaf);
            for r in [leader, follower] {
                if served_leaf(r, &ca).await != want {
                    return None;
                }
            }
            Some(leaf)
        })
        .await;
        seen.push(served);
    }
    let writes = |r| async move {
        let text = support::https::metrics(r).await;
        support::metrics::sum(&text, "whisperer_tls_writes_total", "step=")
    };
    assert!(
        writes(leader.running.admin_addr).await >= 3.0,
        "create + 2 renewals"
    );
    assert_eq!(
        writes(follower.running.admin_addr).await,
        0.0,
        "the follower wrote"
    );

    // The leader leaves: the follower takes the Lease and keeps renewing.
    let (leader, follower) = if lease == "replica-a" { (a, b) } else { (b, a) };
    leader.running.shutdown().await;
    poll_until(WAIT, "the follower leads", || async {
        (admin_sample(&follower, "whisperer_tls_keeper_leader").await == 1.0).then_some(())
    })
    .await;
    let last = seen.last().cloned().expect("a leaf");
    poll_until(WAIT, "a renewal by the new leader", || async {
        let s = secret(&cp).await?;
        (key(&s, "tls.crt") != last).then_some(())
    })
    .await;
    follower.running.shutdown().await;
}
