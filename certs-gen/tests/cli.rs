//! The certs-gen binary: files, modes, refusal to overwrite, errors that name the culprit.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;

const FILES: [&str; 6] = [
    "ca.crt",
    "ca.key",
    "tls.crt",
    "tls.key",
    "secret.yaml",
    "webhook.yaml",
];

fn certs_gen(out_dir: &Path, extra: &[&str]) -> Output {
    let template = common::template_path();
    Command::new(env!("CARGO_BIN_EXE_certs-gen"))
        .arg("--out-dir")
        .arg(out_dir)
        .arg("--template")
        .arg(&template)
        .args(extra)
        .output()
        .expect("run certs-gen")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).expect("metadata").permissions().mode() & 0o777
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).expect("read")
}

#[test]
fn writes_files_with_modes_and_refuses_to_overwrite() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("certs");
    let run = certs_gen(&out, &[]);
    assert!(run.status.success(), "stderr: {}", text(&run.stderr));
    let stdout = text(&run.stdout);
    assert!(stdout.contains("certificate expires 20"), "{stdout}");
    for f in FILES {
        assert!(out.join(f).is_file(), "{f} missing");
        assert!(
            stdout.contains(&out.join(f).display().to_string()),
            "{f} not listed: {stdout}"
        );
    }
    for key in ["ca.key", "tls.key", "secret.yaml"] {
        assert_eq!(mode(&out.join(key)), 0o600, "{key}");
    }
    for public in ["ca.crt", "tls.crt", "webhook.yaml"] {
        assert_eq!(mode(&out.join(public)), 0o644, "{public}");
    }
    let ca = read(&out.join("ca.crt"));
    let crt = read(&out.join("tls.crt"));
    common::handshake(
        &ca,
        &crt,
        &read(&out.join("tls.key")),
        "whisperer-injector.whisperer-system.svc",
    )
    .expect("handshake with written files");
    let cfg: MutatingWebhookConfiguration =
        serde_yaml::from_str(&read(&out.join("webhook.yaml"))).expect("webhook.yaml");
    let hook = &cfg.webhooks.expect("webhooks")[0];
    assert_eq!(
        hook.client_config.ca_bundle.as_ref().expect("caBundle").0,
        ca.as_bytes()
    );
    let svc = hook.client_config.service.as_ref().expect("service form");
    assert_eq!(svc.port, Some(443));

    // Second run without --force: refused, nothing changed, every existing file named.
    let again = certs_gen(&out, &[]);
    assert!(!again.status.success());
    let stderr = text(&again.stderr);
    assert!(stderr.contains("--force"), "{stderr}");
    for f in FILES {
        assert!(
            stderr.contains(&out.join(f).display().to_string()),
            "{f} not named: {stderr}"
        );
    }
    assert_eq!(read(&out.join("ca.crt")), ca);
    assert_eq!(read(&out.join("tls.crt")), crt);

    // Even one existing file is enough to refuse.
    let other = tmp.path().join("other");
    fs::create_dir_all(&other).expect("mkdir");
    fs::write(other.join("tls.key"), "keep me").expect("write");
    let one = certs_gen(&other, &[]);
    assert!(!one.status.success());
    let stderr = text(&one.stderr);
    assert!(
        stderr.contains(&other.join("tls.key").display().to_string()),
        "{stderr}"
    );
    assert!(!stderr.contains("ca.crt"), "{stderr}");
    assert_eq!(read(&other.join("tls.key")), "keep me");
    assert!(!other.join("ca.crt").exists(), "nothing written on refusal");

    // --force overwrites, and a loosened key mode is tightened again.
    fs::set_permissions(out.join("tls.key"), fs::Permissions::from_mode(0o644)).expect("chmod");
    let forced = certs_gen(&out, &["--force"]);
    assert!(forced.status.success(), "stderr: {}", text(&forced.stderr));
    assert_ne!(read(&out.join("ca.crt")), ca, "new CA");
    assert_eq!(mode(&out.join("tls.key")), 0o600);
}

#[test]
fn url_form_adds_host_to_sans() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let webhook_out = tmp.path().join("rendered/hook.yaml");
    let run = certs_gen(
        tmp.path(),
        &[
            "--url",
            "https://127.0.0.1:8443/mutate",
            "--dns",
            "hook.example.com",
            "--ip",
            "::1",
            "--key-algorithm",
            "ed25519",
            "--validity-days",
            "7",
            "--webhook-out",
            webhook_out.to_str().expect("utf8 path"),
        ],
    );
    assert!(run.status.success(), "stderr: {}", text(&run.stderr));
    assert!(!tmp.path().join("webhook.yaml").exists());
    let cfg: MutatingWebhookConfiguration =
        serde_yaml::from_str(&read(&webhook_out)).expect("webhook yaml");
    let hook = &cfg.webhooks.expect("webhooks")[0];
    assert_eq!(
        hook.client_config.url.as_deref(),
        Some("https://127.0.0.1:8443/mutate")
    );
    assert!(hook.client_config.service.is_none());
    let ca = read(&tmp.path().join("ca.crt"));
    let crt = read(&tmp.path().join("tls.crt"));
    for name in [
        "127.0.0.1",
        "::1",
        "hook.example.com",
        "whisperer-injector.whisperer-system.svc",
    ] {
        common::verify(&ca, &crt, name).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    common::verify(&ca, &crt, "127.0.0.2").expect_err("not a SAN");
}

#[test]
fn errors_name_the_flag_or_file() {
    let tmp = tempfile::tempdir().expect("tempdir");

    let missing = tmp.path().join("nope.tmpl");
    let run = Command::new(env!("CARGO_BIN_EXE_certs-gen"))
        .arg("--out-dir")
        .arg(tmp.path().join("a"))
        .arg("--template")
        .arg(&missing)
        .output()
        .expect("run");
    assert!(!run.status.success());
    let stderr = text(&run.stderr);
    assert!(
        stderr.contains("--template") && stderr.contains("nope.tmpl"),
        "{stderr}"
    );
    assert!(!tmp.path().join("a").exists(), "nothing written");

    let bad_tmpl = tmp.path().join("bad.tmpl");
    fs::write(&bad_tmpl, "a: ${CA_BUNDLE}\nb: ${NOT_A_THING}\n").expect("write");
    let run = Command::new(env!("CARGO_BIN_EXE_certs-gen"))
        .arg("--out-dir")
        .arg(tmp.path().join("b"))
        .arg("--template")
        .arg(&bad_tmpl)
        .output()
        .expect("run");
    assert!(!run.status.success());
    let stderr = text(&run.stderr);
    assert!(
        stderr.contains("bad.tmpl") && stderr.contains("${NOT_A_THING} (line 2)"),
        "{stderr}"
    );
    assert!(!tmp.path().join("b").exists(), "nothing written");

    let cases: [(&[&str], &str); 7] = [
        (&["--dns", "bad_name!"], "--dns"),
        (&["--service", "Not-Valid"], "--service"),
        (&["--validity-days", "4000"], "--validity-days"),
        (&["--url", "http://127.0.0.1/mutate"], "--url"),
        (&["--url", "https://x/m", "--path", "/p"], "--path"),
        (&["--ip", "not-an-ip"], "--ip"),
        (&["--key-algorithm", "rsa"], "--key-algorithm"),
    ];
    for (args, flag) in cases {
        let dir = tmp.path().join("c");
        let run = certs_gen(&dir, args);
        assert!(!run.status.success(), "{args:?} should fail");
        let stderr = text(&run.stderr);
        assert!(
            stderr.contains(flag),
            "{args:?}: stderr does not name {flag}: {stderr}"
        );
        assert!(!dir.exists(), "{args:?}: nothing written");
    }
}
