//! `check` against a real API server: a working registration passes; a wrong caBundle is
//! found both by comparing it with the served certificate and by the dry-run pod that comes
//! back uninjected.

use support::injector;
mod support;

use injector::start_and_register;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::ByteString;
use kube::api::{Api, Patch, PatchParams};
use support::ControlPlane;
use whisperer_injector::check::{self, CheckArgs};

async fn run_check(cp: &ControlPlane, ns: &str) -> (bool, serde_json::Value) {
    let kubeconfig = cp.kubeconfig_path().display().to_string();
    let args = check_args(&["-n", ns, "--kubeconfig", &kubeconfig, "-o", "json"]);
    let (ok, out) = check::run(&args).await.expect("check runs");
    (ok, serde_json::from_str(&out).expect("json findings"))
}

fn check_args(flags: &[&str]) -> CheckArgs {
    use clap::Parser;
    #[derive(clap::Parser)]
    struct Wrap {
        #[command(flatten)]
        args: CheckArgs,
    }
    Wrap::try_parse_from(std::iter::once("check").chain(flags.iter().copied()))
        .expect("flags")
        .args
}

fn finding<'a>(findings: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    findings
        .as_array()
        .expect("list")
        .iter()
        .find(|f| f["check"] == name)
        .unwrap_or_else(|| panic!("no {name} in {findings}"))
}

#[tokio::test]
async fn check_tells_a_working_from_a_broken_registration() {
    let cp = ControlPlane::start().await;
    let ns = cp.namespace(&[("injection", "enabled")]).await;
    let mut injector = start_and_register(&cp, &ns, &[]).await;

    let (ok, findings) = run_check(&cp, &ns).await;
    assert!(ok, "{findings}");
    assert_eq!(finding(&findings, "caBundle")["ok"], true);
    let called = finding(&findings, "webhook called");
    assert_eq!(called["ok"], true, "{called}");
    assert!(called["detail"]
        .as_str()
        .unwrap_or_default()
        .contains("injected in"));

    // Register the webhook with another CA: the API server can no longer verify it.
    let other = certs_gen::generate(&certs_gen::CertRequest::new("other", "elsewhere"))
        .expect("another CA");
    let api = Api::<MutatingWebhookConfiguration>::all(cp.client());
    let mut cfg = api.get("whisperer-injector").await.expect("registration");
    for w in cfg.webhooks.iter_mut().flatten() {
        w.client_config.ca_bundle = Some(ByteString(other.ca_cert_pem.clone().into_bytes()));
    }
    cfg.metadata.managed_fields = None;
    api.patch(
        "whisperer-injector",
        &PatchParams::apply("check-test").force(),
        &Patch::Apply(&cfg),
    )
    .await
    .expect("patch caBundle");
    let findings = support::poll_until(
        support::WAIT,
        "the API server to use the wrong caBundle",
        || async {
            let (ok, f) = run_check(&cp, &ns).await;
            (!ok && finding(&f, "webhook called")["ok"] == false).then_some(f)
        },
    )
    .await;
    let ca = finding(&findings, "caBundle");
    assert_eq!(ca["ok"], false, "{ca}");
    assert!(
        ca["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("does not verify"),
        "{ca}"
    );
    injector.stop().await;
}
