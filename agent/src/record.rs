//! What the agent reports: one record per HTTP exchange, one per closed non-HTTP flow.

use std::net::{IpAddr, SocketAddr};

use serde::Serialize;

use crate::http::Issue;
use crate::Ts;

/// How a flow ended (a closed set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    Fin,
    Rst,
    Idle,
    Evicted,
    Shutdown,
}

impl Close {
    pub fn as_str(self) -> &'static str {
        match self {
            Close::Fin => "fin",
            Close::Rst => "rst",
            Close::Idle => "idle",
            Close::Evicted => "evicted",
            Close::Shutdown => "shutdown",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    pub start: Ts,
    pub end: Ts,
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub method: Option<Box<str>>,
    pub path: Option<Box<str>>,
    /// HTTP/1.<version>.
    pub version: u8,
    pub status: Option<u16>,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub issue: Option<Issue>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowSummary {
    pub start: Ts,
    pub end: Ts,
    /// The side that sent the SYN, or the first packet seen.
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
    pub close: Close,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Http(Exchange),
    Flow(FlowSummary),
}

impl Record {
    /// The two addresses whose names the line carries.
    pub fn ips(&self) -> [IpAddr; 2] {
        match self {
            Record::Http(e) => [e.client.ip(), e.server.ip()],
            Record::Flow(f) => [f.client.ip(), f.server.ip()],
        }
    }
}

fn rfc3339(ts: Ts) -> String {
    let t = jiff::Timestamp::from_nanosecond(i128::from(ts)).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    format!("{:.6}", t)
}

fn millis(start: Ts, end: Ts) -> f64 {
    (end.saturating_sub(start) / 1_000) as f64 / 1_000.0
}

#[derive(Serialize)]
struct HttpLine<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    time: String,
    duration_ms: f64,
    src: String,
    dst: String,
    src_name: Option<&'a str>,
    dst_name: Option<&'a str>,
    method: Option<&'a str>,
    path: Option<&'a str>,
    version: String,
    status: Option<u16>,
    request_bytes: u64,
    response_bytes: u64,
    truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    issue: Option<&'static str>,
}

#[derive(Serialize)]
struct FlowLine<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    time: String,
    duration_ms: f64,
    src: String,
    dst: String,
    src_name: Option<&'a str>,
    dst_name: Option<&'a str>,
    packets_sent: u64,
    packets_received: u64,
    bytes_sent: u64,
    bytes_received: u64,
    close: &'static str,
}

/// Appends the JSON line (with its newline) for `record` to `out`.
pub fn write_line(record: &Record, names: [Option<&str>; 2], out: &mut Vec<u8>) {
    // Serializing these plain structs into a Vec cannot fail.
    let _ = match record {
        Record::Http(e) => serde_json::to_writer(
            &mut *out,
            &HttpLine {
                kind: "http",
                time: rfc3339(e.start),
                duration_ms: millis(e.start, e.end),
                src: e.client.to_string(),
                dst: e.server.to_string(),
                src_name: names[0],
                dst_name: names[1],
                method: e.method.as_deref(),
                path: e.path.as_deref(),
                version: format!("1.{}", e.version),
                status: e.status,
                request_bytes: e.request_bytes,
                response_bytes: e.response_bytes,
                truncated: e.issue.is_some(),
                issue: e.issue.map(Issue::as_str),
            },
        ),
        Record::Flow(f) => serde_json::to_writer(
            &mut *out,
            &FlowLine {
                kind: "flow",
                time: rfc3339(f.start),
                duration_ms: millis(f.start, f.end),
                src: f.client.to_string(),
                dst: f.server.to_string(),
                src_name: names[0],
                dst_name: names[1],
                packets_sent: f.packets[0],
                packets_received: f.packets[1],
                bytes_sent: f.bytes[0],
                bytes_received: f.bytes[1],
                close: f.close.as_str(),
            },
        ),
    };
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_line_shape() {
        let r = Record::Http(Exchange {
            start: 1_764_600_000_123_456_789,
            end: 1_764_600_000_125_956_789,
            client: "10.0.0.1:40000".parse().expect("addr"),
            server: "10.0.0.2:80".parse().expect("addr"),
            method: Some("GET".into()),
            path: Some("/x?y=1".into()),
            version: 1,
            status: Some(404),
            request_bytes: 80,
            response_bytes: 120,
            issue: None,
        });
        let mut out = Vec::new();
        write_line(&r, [Some("client.team.pod.cluster.local"), None], &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(v["type"], "http");
        assert_eq!(v["time"], "2025-12-01T14:40:00.123456Z");
        assert_eq!(v["duration_ms"], 2.5);
        assert_eq!(v["src"], "10.0.0.1:40000");
        assert_eq!(v["src_name"], "client.team.pod.cluster.local");
        assert_eq!(v["dst_name"], serde_json::Value::Null);
        assert_eq!(v["status"], 404);
        assert_eq!(v["truncated"], false);
        assert!(v.get("issue").is_none());
        assert!(out.ends_with(b"}\n"));
    }
}
