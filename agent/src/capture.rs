//! The capture thread: libpcap on the pod's interface(s), every frame to pcapng and to the
//! flow table, records to the async side in batches. It owns everything on the hot path, so
//! nothing there takes a lock or waits on the network; a full records queue drops (counted).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;

use crate::decode::{decode, Decoded, Link};
use crate::flows::FlowTable;
use crate::metrics::{Drop, Metrics};
use crate::record::Record;
use crate::rotate::Rotator;
use crate::Ts;

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("cannot capture on {interface:?}: {source} (the agent needs CAP_NET_RAW in the pod's network namespace)")]
    Open {
        interface: String,
        source: pcap::Error,
    },
    #[error("invalid --filter {filter:?}: {source}")]
    Filter { filter: String, source: pcap::Error },
    #[error("capture on {interface:?} failed: {source}")]
    Read {
        interface: String,
        source: pcap::Error,
    },
}

pub struct CaptureConfig {
    pub interface: String,
    pub filter: Option<String>,
    pub snaplen: u32,
    pub buffer_size: u64,
}

pub struct Opened {
    cap: pcap::Capture<pcap::Active>,
    pub link: Link,
    interface: String,
}

/// Opens the capture (not promiscuous: the pod's own traffic is all there is to see).
pub fn open(cfg: &CaptureConfig) -> Result<Opened, CaptureError> {
    let open_err = |source| CaptureError::Open {
        interface: cfg.interface.clone(),
        source,
    };
    let mut cap = pcap::Capture::from_device(cfg.interface.as_str())
        .map_err(open_err)?
        .promisc(false)
        .snaplen(i32::try_from(cfg.snaplen).unwrap_or(i32::MAX))
        .buffer_size(i32::try_from(cfg.buffer_size).unwrap_or(i32::MAX))
        .timeout(100)
        .precision(pcap::Precision::Nano)
        .open()
        .map_err(open_err)?;
    if let Some(f) = cfg.filter.as_deref().filter(|f| !f.trim().is_empty()) {
        cap.filter(f, true).map_err(|source| CaptureError::Filter {
            filter: f.to_string(),
            source,
        })?;
    }
    // Non-blocking, with our own poll(2) below: libpcap's TPACKET_V3 read can block until
    // the next packet when the ring is empty, and the loop must flush and check for stop.
    let cap = cap.setnonblock().map_err(open_err)?;
    let link = Link::from_dlt(cap.get_datalink().0);
    Ok(Opened {
        cap,
        link,
        interface: cfg.interface.clone(),
    })
}

fn now_ns() -> Ts {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Records per batch sent to the writer, and the longest a record waits in a batch.
const BATCH: usize = 256;
const BATCH_AGE: Duration = Duration::from_millis(50);

struct Batcher {
    tx: mpsc::Sender<Vec<Record>>,
    batch: Vec<Record>,
    since: Instant,
    metrics: Metrics,
}

impl Batcher {
    fn send(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH));
        let n = batch.len() as u64;
        if self.tx.try_send(batch).is_err() {
            self.metrics.drop(Drop::record_queue, n);
        }
        self.since = Instant::now();
    }
}

/// Runs until `stop` is set, then closes every flow and the current file.
pub fn run(
    mut opened: Opened,
    mut rotator: Option<Rotator>,
    mut table: FlowTable,
    tx: mpsc::Sender<Vec<Record>>,
    stop: Arc<AtomicBool>,
    metrics: Metrics,
) -> Result<(), CaptureError> {
    let link = opened.link;
    let mut b = Batcher {
        tx,
        batch: Vec::with_capacity(BATCH),
        since: Instant::now(),
        metrics: metrics.clone(),
    };
    let mut last_sweep = Instant::now();
    let mut since_check: u32 = 0;
    let mut result = Ok(());
    // After stop, the loop goes on until the kernel has retired the last block of packets
    // (its timeout is 100 ms), so what arrived just before the stop is written too.
    let mut drain_until: Option<Instant> = None;
    loop {
        if drain_until.is_none() && stop.load(Ordering::Relaxed) {
            drain_until = Some(Instant::now() + Duration::from_millis(150));
        }
        match opened.cap.next_packet() {
            Ok(p) => {
                let ts = p.header.ts.tv_sec as u64 * 1_000_000_000 + p.header.ts.tv_usec as u64;
                metrics.packets.inc();
                metrics.bytes.inc_by(u64::from(p.header.len));
                if let Some(r) = rotator.as_mut() {
                    r.write(ts, p.data, p.header.len);
                }
                match decode(link, p.data) {
                    Decoded::Tcp(seg) => table.segment(&seg, p.header.len, ts, &mut b.batch),
                    Decoded::Other => {
                        metrics.undecoded.inc();
                    }
                }
                if b.batch.len() >= BATCH {
                    b.send();
                }
                since_check += 1;
                if since_check < 64 {
                    continue;
                }
            }
            Err(pcap::Error::TimeoutExpired)
                if drain_until.is_some_and(|t| Instant::now() >= t) =>
            {
                break;
            }
            Err(pcap::Error::TimeoutExpired) => {
                // Nothing ready: push out what waits, then sleep until the kernel retires a
                // block of packets (at most the 100 ms block timeout) or the stop check is due.
                b.send();
                if let Some(r) = rotator.as_mut() {
                    r.flush(now_ns());
                }
                let mut fds = [rustix::event::PollFd::new(
                    &opened.cap,
                    rustix::event::PollFlags::IN,
                )];
                let timeout = rustix::event::Timespec {
                    tv_sec: 0,
                    tv_nsec: 100_000_000,
                };
                let _ = rustix::event::poll(&mut fds, Some(&timeout));
            }
            Err(source) => {
                result = Err(CaptureError::Read {
                    interface: opened.interface.clone(),
                    source,
                });
                break;
            }
        }
        since_check = 0;
        if b.since.elapsed() >= BATCH_AGE {
            b.send();
        }
        if last_sweep.elapsed() >= Duration::from_secs(1) {
            last_sweep = Instant::now();
            table.sweep(now_ns(), &mut b.batch);
            if let Ok(s) = opened.cap.stats() {
                let dropped = u64::from(s.dropped) + u64::from(s.if_dropped);
                let before = metrics.kernel_dropped.get();
                if dropped > before {
                    metrics.drop(Drop::kernel, dropped - before);
                }
                metrics.kernel_dropped.set(dropped);
            }
        }
    }
    let now = now_ns();
    table.close_all(now, &mut b.batch);
    if let Some(r) = rotator.as_mut() {
        r.close(now);
    }
    if !b.batch.is_empty() {
        // The last records wait for room: nothing else is left to keep moving.
        let batch = std::mem::take(&mut b.batch);
        let _ = b.tx.blocking_send(batch);
    }
    if let Ok(s) = opened.cap.stats() {
        tracing::info!(
            received = s.received,
            kernel_dropped = s.dropped,
            interface_dropped = s.if_dropped,
            "capture stopped"
        );
    }
    result
}
