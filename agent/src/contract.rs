//! The env contract with the injector, in one place. The injector (webhook sidecar or
//! reconciler ephemeral container) sets these; the agent reads them once at start. Unknown
//! variables are ignored, and a malformed value is logged and treated as absent, so a newer
//! injector never stops an older agent from capturing.

use std::net::SocketAddr;

pub const POD_NAME: &str = "WHISPERER_POD_NAME";
pub const POD_NAMESPACE: &str = "WHISPERER_POD_NAMESPACE";
pub const PROFILE: &str = "WHISPERER_PROFILE";
/// `host:port` of the injector's DNS proxy, which answers PTR for pod IPs.
pub const DNS_SERVER: &str = "WHISPERER_DNS_SERVER";
/// Set for attachments only.
pub const ATTACHMENT: &str = "WHISPERER_ATTACHMENT";
/// The Attachment's uid (logs; the control URL already names it).
pub const ATTACHMENT_UID: &str = "WHISPERER_ATTACHMENT_UID";
/// RFC 3339; the agent stops at this instant whatever the control API says.
pub const DEADLINE: &str = "WHISPERER_DEADLINE";
pub const CONTROL_URL: &str = "WHISPERER_CONTROL_URL";
/// Bearer token for [`CONTROL_URL`].
pub const CONTROL_TOKEN: &str = "WHISPERER_CONTROL_TOKEN";
/// PEM of the CA that signs the control API's certificate (optional; `--control-ca` wins).
pub const CONTROL_CA: &str = "WHISPERER_CONTROL_CA";
/// Container memory limit in bytes or as a Kubernetes quantity (optional): the reassembly
/// budget is held to a quarter of it.
pub const MEMORY_LIMIT: &str = "WHISPERER_MEMORY_LIMIT";
/// Most bytes of capture files to keep (bytes or a quantity; optional): `--max-total` is held
/// under it.
pub const MAX_CAPTURE_BYTES: &str = "WHISPERER_MAX_CAPTURE_BYTES";

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Contract {
    pub pod_name: Option<String>,
    pub pod_namespace: Option<String>,
    pub profile: Option<String>,
    pub dns_server: Option<SocketAddr>,
    pub attachment: Option<String>,
    pub attachment_uid: Option<String>,
    pub deadline: Option<jiff::Timestamp>,
    pub control_url: Option<String>,
    pub control_token: Option<String>,
    pub control_ca_pem: Option<String>,
    pub memory_limit: Option<u64>,
    pub max_capture_bytes: Option<u64>,
}

fn non_empty(get: &dyn Fn(&str) -> Option<String>, key: &str) -> Option<String> {
    get(key)
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// `host:port` or a bare host (port 53); names are not resolved here, only addresses.
fn parse_dns(v: &str) -> Option<SocketAddr> {
    v.parse().ok().or_else(|| {
        v.parse::<std::net::IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, 53))
    })
}

/// A Kubernetes quantity as bytes (`64Mi`, `1G`, `67108864`).
fn parse_quantity(v: &str) -> Option<u64> {
    crate::size::parse_size(v).ok()
}

impl Contract {
    pub fn from_env() -> Contract {
        Contract::from_lookup(&|k| std::env::var(k).ok())
    }

    /// Reads the contract through `get` (the process env, or a map in tests).
    pub fn from_lookup(get: &dyn Fn(&str) -> Option<String>) -> Contract {
        let dns_server = non_empty(get, DNS_SERVER).and_then(|v| {
            let parsed = parse_dns(&v);
            if parsed.is_none() {
                tracing::warn!(value = %v, "{DNS_SERVER} is not an ip:port; names come from the hosts file only");
            }
            parsed
        });
        let deadline = non_empty(get, DEADLINE).and_then(|v| match v.parse::<jiff::Timestamp>() {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!(value = %v, error = %e, "{DEADLINE} is not an RFC 3339 time; ignored");
                None
            }
        });
        let quantity = |key: &str| {
            non_empty(get, key).and_then(|v| {
                let parsed = parse_quantity(&v);
                if parsed.is_none() {
                    tracing::warn!(value = %v, "{key} is not a quantity; ignored");
                }
                parsed
            })
        };
        let memory_limit = quantity(MEMORY_LIMIT);
        let max_capture_bytes = quantity(MAX_CAPTURE_BYTES);
        Contract {
            pod_name: non_empty(get, POD_NAME),
            pod_namespace: non_empty(get, POD_NAMESPACE),
            profile: non_empty(get, PROFILE),
            dns_server,
            attachment: non_empty(get, ATTACHMENT),
            attachment_uid: non_empty(get, ATTACHMENT_UID),
            deadline,
            control_url: non_empty(get, CONTROL_URL),
            control_token: non_empty(get, CONTROL_TOKEN),
            control_ca_pem: non_empty(get, CONTROL_CA),
            memory_limit,
            max_capture_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(pairs: &[(&str, &str)]) -> Contract {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Contract::from_lookup(&move |k| m.get(k).cloned())
    }

    #[test]
    fn attachment_env() {
        let c = from(&[
            (POD_NAME, "web-0"),
            (POD_NAMESPACE, "team-a"),
            (PROFILE, "default"),
            (DNS_SERVER, "10.96.0.53:5353"),
            (ATTACHMENT, "debug"),
            (DEADLINE, "2026-12-01T22:00:00Z"),
            (
                CONTROL_URL,
                "https://whisperer-injector.whisperer-system.svc:443/agent/v1/x",
            ),
            (CONTROL_TOKEN, "abc"),
            (ATTACHMENT_UID, "u-1"),
            ("WHISPERER_SOMETHING_NEWER", "x"),
            (MEMORY_LIMIT, "64Mi"),
            (MAX_CAPTURE_BYTES, "200Mi"),
        ]);
        assert_eq!(c.max_capture_bytes, Some(200 << 20));
        assert_eq!(c.pod_name.as_deref(), Some("web-0"));
        assert_eq!(c.dns_server, Some("10.96.0.53:5353".parse().expect("addr")));
        assert_eq!(
            c.deadline,
            Some("2026-12-01T22:00:00Z".parse().expect("ts"))
        );
        assert_eq!(c.memory_limit, Some(64 << 20));
        assert_eq!(c.attachment_uid.as_deref(), Some("u-1"));
    }

    #[test]
    fn bad_values_are_absent_not_fatal() {
        let c = from(&[
            (DNS_SERVER, "dns.example:53"),
            (DEADLINE, "tomorrow"),
            (POD_NAME, "  "),
        ]);
        assert_eq!(c, Contract::default());
        assert_eq!(
            from(&[(DNS_SERVER, "10.0.0.10")]).dns_server,
            Some("10.0.0.10:53".parse().expect("addr"))
        );
    }
}
