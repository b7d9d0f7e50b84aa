//! Wiring: capture thread, writer, names, control poller, metrics server, and the one place
//! that decides when to stop (control API `stop`, the deadline, SIGTERM/SIGINT, or a capture
//! that failed). Stopping always flushes: open flows are reported, the pcapng file is closed.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, oneshot};

use crate::capture::{self, CaptureConfig, CaptureError};
use crate::cli::Args;
use crate::contract::Contract;
use crate::control::{self, ControlError, ControlEvent};
use crate::emit::{self, Collector};
use crate::flows::{FlowTable, Limits};
use crate::metrics::Metrics;
use crate::names::Names;
use crate::rotate::{RotateConfig, Rotator};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error("control API client: {0}")]
    Control(#[from] ControlError),
    #[error("cannot serve metrics on {addr}: {source}")]
    Metrics {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the capture thread: {0}")]
    Thread(std::io::Error),
}

/// Why the agent stopped (logged, and the exit is 0 for all of them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    Control(String),
    Deadline,
    Signal(&'static str),
    CaptureEnded,
}

/// A name that is safe in a file name.
fn file_prefix(pod: Option<&str>) -> String {
    match pod {
        Some(p) => {
            let clean: String = p
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                        c
                    } else {
                        '_'
                    }
                })
                .take(100)
                .collect();
            format!("whisperer-{clean}")
        }
        None => "whisperer".into(),
    }
}

fn until(deadline: Option<jiff::Timestamp>) -> Option<Duration> {
    let d = deadline?;
    let left = d.duration_since(jiff::Timestamp::now());
    Some(Duration::try_from(left).unwrap_or(Duration::ZERO))
}

async fn serve_metrics(addr: SocketAddr, registry: Arc<Registry>) -> Result<(), RunError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| RunError::Metrics { addr, source })?;
    tracing::info!(%addr, "serving metrics on /metrics");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let registry = registry.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let registry = registry.clone();
                    async move {
                        let mut text = String::new();
                        let status = if req.uri().path() == "/metrics" {
                            let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
                            200
                        } else {
                            text.push_str("not found\n");
                            404
                        };
                        hyper::Response::builder()
                            .status(status)
                            .header(
                                hyper::header::CONTENT_TYPE,
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )
                            .body(Full::new(Bytes::from(text)))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(())
}

pub async fn run(args: Args, contract: Contract) -> Result<StopReason, RunError> {
    let mut deadline = contract.deadline;
    if until(deadline).is_some_and(|d| d.is_zero()) {
        tracing::info!(deadline = ?contract.deadline, "the deadline has passed; not capturing");
        return Ok(StopReason::Deadline);
    }
    let metrics = Metrics::default();
    let mut registry = Registry::default();
    metrics.register(&mut registry);

    let opened = capture::open(&CaptureConfig {
        interface: args.interface.clone(),
        filter: args.filter.clone(),
        snaplen: args.snaplen,
        buffer_size: args.buffer_size,
    })?;
    // Capture is open: from here on packets are seen, so the pod's other containers may start.
    crate::ready::announce();
    let rotator = (!args.no_pcap).then(|| {
        if !args.out_dir.is_dir() {
            tracing::warn!(
                dir = %args.out_dir.display(),
                "--out-dir does not exist (an attached Whisperer gets no volume); JSON lines only"
            );
        }
        Rotator::new(
            RotateConfig {
                dir: args.out_dir.clone(),
                prefix: file_prefix(contract.pod_name.as_deref()),
                rotate_size: args.rotate_size,
                rotate_every: args.rotate_every,
                keep: args.keep,
                max_total: contract
                    .max_capture_bytes
                    .map_or(args.max_total, |m| m.min(args.max_total)),
                linktype: opened.link.linktype(),
                snaplen: args.snaplen,
                interface: args.interface.clone(),
            },
            metrics.clone(),
        )
    });
    let mut memory = args.reassembly_memory as usize;
    if let Some(limit) = contract.memory_limit {
        memory = memory.min((limit / 4) as usize);
    }
    let limits = Limits {
        max_header: args.max_header as usize,
        flow_buffer: args.flow_buffer as usize,
        memory,
        max_flows: args.max_flows,
        idle_ns: args.flow_timeout.as_nanos() as u64,
    };
    let table = FlowTable::new(limits, metrics.clone());
    // At most 64 batches of 256 records wait for the writer (a few MiB); more are dropped.
    let (tx, rx) = mpsc::channel(64);
    let stop = Arc::new(AtomicBool::new(false));
    let (done_tx, mut done_rx) = oneshot::channel();
    let capture = {
        let (stop, metrics) = (stop.clone(), metrics.clone());
        std::thread::Builder::new()
            .name("capture".into())
            .spawn(move || {
                let r = capture::run(opened, rotator, table, tx, stop, metrics);
                let _ = done_tx.send(());
                r
            })
            .map_err(RunError::Thread)?
    };

    let names = if args.no_names {
        Names::disabled(metrics.clone())
    } else {
        Names::new(
            args.dns_server.or(contract.dns_server),
            Some(&args.hosts_file),
            metrics.clone(),
        )
    };
    let collector = match &args.collector {
        Some(url) => Some(Collector::start(
            url.clone(),
            control::https_client(None)?,
            metrics.clone(),
        )),
        None => None,
    };
    let writer = tokio::spawn(emit::run(
        rx,
        names,
        std::io::stdout(),
        collector,
        metrics.clone(),
    ));

    let (ctl_tx, mut ctl_rx) = mpsc::channel(4);
    match (&contract.control_url, &contract.control_token) {
        (Some(url), Some(token)) => {
            let ca = match &args.control_ca {
                Some(path) => Some(std::fs::read(path).map_err(|source| ControlError::ReadCa {
                    path: path.display().to_string(),
                    source,
                })?),
                None => contract.control_ca_pem.clone().map(String::into_bytes),
            };
            let client = control::https_client(ca.as_deref())?;
            tokio::spawn(control::poll(
                client,
                url.clone(),
                token.clone(),
                args.control_interval,
                metrics.clone(),
                ctl_tx,
            ));
        }
        (Some(_), None) => {
            tracing::warn!("WHISPERER_CONTROL_URL without WHISPERER_CONTROL_TOKEN; not polling")
        }
        _ => drop(ctl_tx),
    }
    if let Some(addr) = args.metrics_listen {
        serve_metrics(addr, Arc::new(registry)).await?;
    }
    tracing::info!(
        interface = %args.interface,
        pod = contract.pod_name.as_deref().unwrap_or("-"),
        attachment = contract.attachment.as_deref().unwrap_or("-"),
        attachment_uid = contract.attachment_uid.as_deref().unwrap_or("-"),
        deadline = ?deadline,
        "capturing"
    );

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(RunError::Thread)?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(RunError::Thread)?;
    let mut control_open = true;
    let reason = loop {
        let sleep = until(deadline).unwrap_or(Duration::from_secs(365 * 24 * 3600));
        tokio::select! {
            _ = term.recv() => break StopReason::Signal("SIGTERM"),
            _ = int.recv() => break StopReason::Signal("SIGINT"),
            _ = tokio::time::sleep(sleep) => break StopReason::Deadline,
            _ = &mut done_rx => break StopReason::CaptureEnded,
            ev = ctl_rx.recv(), if control_open => match ev {
                Some(ControlEvent::Stop(reason)) => break StopReason::Control(reason),
                Some(ControlEvent::Deadline(d)) => {
                    if deadline != Some(d) {
                        tracing::info!(deadline = %d, "deadline from the control API");
                        deadline = Some(d);
                    }
                }
                None => control_open = false,
            },
        }
    };
    tracing::info!(?reason, "stopping: flushing flows and files");
    stop.store(true, Ordering::Relaxed);
    let captured = tokio::task::spawn_blocking(move || capture.join())
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(Ok(()));
    let _ = writer.await;
    captured?;
    Ok(reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        assert_eq!(file_prefix(Some("web-0")), "whisperer-web-0");
        assert_eq!(file_prefix(Some("a/b c")), "whisperer-a_b_c");
        assert_eq!(file_prefix(None), "whisperer");
    }
}
