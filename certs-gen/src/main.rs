//! `certs-gen`: CA + serving certificate for the whisperer-injector webhook, the TLS Secret
//! manifest and the rendered `MutatingWebhookConfiguration`.

use std::fs;
use std::io::{self, Write as _};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use certs_gen::{
    generate, render_webhook, sans, secret_manifest, CertRequest, CertsError, KeyAlgorithm,
    RenderError, TemplateValues, DEFAULT_NAMESPACE, DEFAULT_PATH, DEFAULT_PORT,
    DEFAULT_SECRET_NAME, DEFAULT_SERVICE, DEFAULT_WEBHOOK_NAME,
};
use clap::Parser;

/// Generate a private CA and a serving certificate for the whisperer-injector webhook, the
/// `kubernetes.io/tls` Secret that carries it, and the MutatingWebhookConfiguration
/// (rendered from webhook.yaml.tmpl) that trusts the CA.
///
/// Writes ca.crt, ca.key, tls.crt, tls.key, secret.yaml into --out-dir and the webhook
/// configuration to --webhook-out. Keys and secret.yaml are written with mode 0600.
#[derive(Debug, Parser)]
#[command(name = "certs-gen", version)]
struct Cli {
    /// Name of the webhook Service.
    #[arg(long, default_value = DEFAULT_SERVICE)]
    service: String,
    /// Namespace of the webhook Service (the injector's own namespace, never injected).
    #[arg(long, default_value = DEFAULT_NAMESPACE)]
    namespace: String,
    /// Extra DNS name for the serving certificate (repeatable).
    #[arg(long = "dns", value_name = "NAME")]
    dns: Vec<String>,
    /// Extra IP address for the serving certificate (repeatable).
    #[arg(long = "ip", value_name = "ADDR")]
    ip: Vec<IpAddr>,
    /// Directory for ca.crt, ca.key, tls.crt, tls.key and secret.yaml (created if missing).
    #[arg(long, value_name = "DIR", default_value = "./certs")]
    out_dir: PathBuf,
    /// Overwrite files that already exist (otherwise certs-gen refuses and names them).
    #[arg(long)]
    force: bool,
    /// Lifetime of the serving certificate, in days.
    #[arg(long, value_name = "DAYS", default_value_t = 365)]
    validity_days: u32,
    /// Lifetime of the CA certificate, in days.
    #[arg(long, value_name = "DAYS", default_value_t = 3650)]
    ca_validity_days: u32,
    /// Key algorithm of the CA and the serving certificate.
    #[arg(long, value_enum, default_value_t = KeyAlgorithm::EcdsaP256)]
    key_algorithm: KeyAlgorithm,
    /// MutatingWebhookConfiguration template.
    #[arg(long, value_name = "FILE", default_value = "./webhook.yaml.tmpl")]
    template: PathBuf,
    /// Where to write the rendered webhook configuration [default: <out-dir>/webhook.yaml].
    #[arg(long, value_name = "FILE")]
    webhook_out: Option<PathBuf>,
    /// Out-of-cluster form: the API server calls this https URL (clientConfig.url) instead of
    /// the Service. Its host is added to the certificate's SANs.
    #[arg(long, value_name = "URL", conflicts_with_all = ["path", "port"])]
    url: Option<String>,
    /// HTTP path of the webhook on the Service.
    #[arg(long, default_value = DEFAULT_PATH)]
    path: String,
    /// Service port of the webhook.
    #[arg(long, default_value_t = DEFAULT_PORT)]
    port: u16,
    /// Name of the kubernetes.io/tls Secret in secret.yaml.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_SECRET_NAME)]
    secret_name: String,
    /// metadata.name of the MutatingWebhookConfiguration.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_WEBHOOK_NAME)]
    webhook_name: String,
}

#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(
        "refusing to overwrite existing file(s): {}; pass --force to overwrite",
        .0.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    Exists(Vec<PathBuf>),
    #[error("{flag} {value:?}: {reason}")]
    InvalidFlag {
        flag: &'static str,
        value: String,
        reason: String,
    },
    #[error("{flag}: {source}")]
    Certs {
        flag: &'static str,
        #[source]
        source: CertsError,
    },
    #[error("cannot read --template {}: {source}", .path.display())]
    ReadTemplate {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot render --template {} ({flag}): {source}", .path.display())]
    Render {
        path: PathBuf,
        flag: &'static str,
        #[source]
        source: RenderError,
    },
    #[error("cannot create directory {}: {source}", .path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

struct Output {
    path: PathBuf,
    contents: String,
    mode: u32,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("certs-gen: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> Result<(), CliError> {
    validate_dns_subdomain("--secret-name", &cli.secret_name)?;
    validate_dns_subdomain("--webhook-name", &cli.webhook_name)?;

    let ca_crt = cli.out_dir.join("ca.crt");
    let ca_key = cli.out_dir.join("ca.key");
    let tls_crt = cli.out_dir.join("tls.crt");
    let tls_key = cli.out_dir.join("tls.key");
    let secret = cli.out_dir.join("secret.yaml");
    let webhook = cli
        .webhook_out
        .clone()
        .unwrap_or_else(|| cli.out_dir.join("webhook.yaml"));

    // Refuse before generating anything, and name every file in the way.
    if !cli.force {
        let existing: Vec<PathBuf> = [&ca_crt, &ca_key, &tls_crt, &tls_key, &secret, &webhook]
            .into_iter()
            .filter(|p| p.symlink_metadata().is_ok())
            .cloned()
            .collect();
        if !existing.is_empty() {
            return Err(CliError::Exists(existing));
        }
    }

    let template = fs::read_to_string(&cli.template).map_err(|source| CliError::ReadTemplate {
        path: cli.template.clone(),
        source,
    })?;

    let mut req = CertRequest {
        service: cli.service.clone(),
        namespace: cli.namespace.clone(),
        extra_dns: cli.dns.clone(),
        extra_ips: cli.ip.clone(),
        validity_days: cli.validity_days,
        ca_validity_days: cli.ca_validity_days,
        key_algorithm: cli.key_algorithm,
    };
    let mut notes = Vec::new();
    if let Some(url) = &cli.url {
        let host = url_host(url).ok_or_else(|| CliError::InvalidFlag {
            flag: "--url",
            value: url.clone(),
            reason: "expected https://HOST[:PORT]/PATH".into(),
        })?;
        match host.parse::<IpAddr>() {
            Ok(ip) if !req.extra_ips.contains(&ip) => {
                req.extra_ips.push(ip);
                notes.push(format!(
                    "added the --url host {ip} to the certificate's IP SANs"
                ));
            }
            Ok(_) => {}
            Err(_) if !sans(&req).iter().any(|s| s.eq_ignore_ascii_case(&host)) => {
                notes.push(format!(
                    "added the --url host {host} to the certificate's DNS SANs"
                ));
                req.extra_dns.push(host);
            }
            Err(_) => {}
        }
    }

    let certs = generate(&req).map_err(|source| CliError::Certs {
        flag: certs_flag(&source),
        source,
    })?;

    let values = TemplateValues {
        name: cli.webhook_name.clone(),
        ca_bundle_b64: certs_gen::ca_bundle_b64(&certs.ca_cert_pem),
        service: cli.service.clone(),
        namespace: cli.namespace.clone(),
        path: cli.path.clone(),
        port: cli.port,
        url: cli.url.clone(),
    };
    let rendered = render_webhook(&template, &values).map_err(|source| CliError::Render {
        path: cli.template.clone(),
        flag: render_flag(&source),
        source,
    })?;

    let outputs = [
        Output {
            path: ca_crt,
            contents: certs.ca_cert_pem.clone(),
            mode: 0o644,
        },
        Output {
            path: ca_key,
            contents: certs.ca_key_pem.clone(),
            mode: 0o600,
        },
        Output {
            path: tls_crt,
            contents: certs.cert_pem.clone(),
            mode: 0o644,
        },
        Output {
            path: tls_key,
            contents: certs.key_pem.clone(),
            mode: 0o600,
        },
        Output {
            // Holds the serving key, base64: as private as tls.key.
            path: secret,
            contents: secret_manifest(&cli.secret_name, &cli.namespace, &certs),
            mode: 0o600,
        },
        Output {
            path: webhook,
            contents: format!(
                "# Generated by certs-gen from {}; CA expires {}.\n{rendered}",
                cli.template.display(),
                certs.ca_not_after_rfc3339()
            ),
            mode: 0o644,
        },
    ];
    for out in &outputs {
        if let Some(dir) = out.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(|source| CliError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
    }
    for out in &outputs {
        write_file(&out.path, &out.contents, out.mode, cli.force)?;
    }

    println!(
        "serving certificate ({}) for {}",
        cli.key_algorithm,
        certs.sans.join(", ")
    );
    for note in &notes {
        println!("  {note}");
    }
    println!(
        "certificate expires {} ({} days); CA expires {} ({} days)",
        certs.not_after_rfc3339(),
        cli.validity_days,
        certs.ca_not_after_rfc3339(),
        cli.ca_validity_days
    );
    println!("wrote:");
    for out in &outputs {
        println!("  {} (mode {:o})", out.path.display(), out.mode);
    }
    Ok(())
}

/// Writes `contents` to a new file created with `mode` (an existing file is removed first
/// under --force, so a loose mode on an old file never survives).
fn write_file(path: &Path, contents: &str, mode: u32, force: bool) -> Result<(), CliError> {
    let werr = |source| CliError::Write {
        path: path.to_path_buf(),
        source,
    };
    if force {
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(werr(e)),
        }
    }
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = opts.open(path).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            CliError::Exists(vec![path.to_path_buf()])
        } else {
            werr(e)
        }
    })?;
    #[cfg(unix)]
    {
        // The umask may have narrowed the mode further; keys must be exactly 0600.
        use std::os::unix::fs::PermissionsExt as _;
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(werr)?;
    }
    file.write_all(contents.as_bytes()).map_err(werr)?;
    file.sync_all().map_err(werr)
}

/// Host part of `https://HOST[:PORT][/PATH]`, without brackets for IPv6.
fn url_host(url: &str) -> Option<String> {
    let rest = url.strip_prefix("https://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    if authority.contains('@') {
        return None;
    }
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        match authority.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => authority,
        }
    };
    (!host.is_empty()).then(|| host.to_owned())
}

fn validate_dns_subdomain(flag: &'static str, value: &str) -> Result<(), CliError> {
    let ok = !value.is_empty()
        && value.len() <= 253
        && value.split('.').all(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(CliError::InvalidFlag {
            flag,
            value: value.to_owned(),
            reason: "must be a DNS-1123 subdomain (lowercase letters, digits, '-' and '.')".into(),
        })
    }
}

fn certs_flag(e: &CertsError) -> &'static str {
    match e {
        CertsError::InvalidName { field, .. } => match *field {
            "service" => "--service",
            "namespace" => "--namespace",
            _ => "--dns",
        },
        CertsError::InvalidValidity { field, .. } => match *field {
            "ca_validity_days" => "--ca-validity-days",
            _ => "--validity-days",
        },
        CertsError::UnknownKeyAlgorithm(_) | CertsError::Rcgen { .. } => "--key-algorithm",
    }
}

fn render_flag(e: &RenderError) -> &'static str {
    match e {
        RenderError::InvalidValue { name, .. } => match *name {
            "WEBHOOK_NAME" => "--webhook-name",
            "SERVICE_NAME" => "--service",
            "NAMESPACE" => "--namespace",
            "WEBHOOK_PATH" => "--path",
            "WEBHOOK_PORT" => "--port",
            "WEBHOOK_URL" => "--url",
            _ => "--template",
        },
        RenderError::MissingValues { placeholders } => {
            match placeholders.first().map(|p| p.name.as_str()) {
                Some("WEBHOOK_URL") => "--url",
                Some("WEBHOOK_PORT") => "--port",
                Some("WEBHOOK_PATH") => "--path",
                _ => "--template",
            }
        }
        _ => "--template",
    }
}

#[cfg(test)]
mod tests {
    use super::url_host;

    #[test]
    fn url_hosts() {
        assert_eq!(
            url_host("https://127.0.0.1:8443/mutate").as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(url_host("https://[::1]:8443/x").as_deref(), Some("::1"));
        assert_eq!(
            url_host("https://hook.example.com/mutate").as_deref(),
            Some("hook.example.com")
        );
        assert_eq!(url_host("http://x/"), None);
        assert_eq!(url_host("https:///x"), None);
    }
}
