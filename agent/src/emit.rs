//! The writer side of the records queue: names both ends, writes one JSON line per record to
//! stdout, and batches the same lines to `--collector` when set. A slow collector loses
//! batches (counted), never stalls the capture.

use std::io::Write;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use tokio::sync::mpsc;

use crate::control::HttpClient;
use crate::metrics::{Drop, Metrics};
use crate::names::Names;
use crate::record::{write_line, Record};

/// Lines per collector batch, and the longest a line waits for its batch.
const BATCH_LINES: usize = 512;
const BATCH_AGE: Duration = Duration::from_secs(1);

pub struct Collector {
    tx: mpsc::Sender<Vec<u8>>,
    task: tokio::task::JoinHandle<()>,
    buf: Vec<u8>,
    lines: usize,
    since: Instant,
    metrics: Metrics,
}

impl Collector {
    /// Starts the task that POSTs batches to `url`.
    pub fn start(url: String, client: HttpClient<Full<Bytes>>, metrics: Metrics) -> Collector {
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(8);
        let m = metrics.clone();
        let task = tokio::spawn(async move {
            let mut failing = false;
            while let Some(batch) = rx.recv().await {
                let req = hyper::Request::post(&url)
                    .header(hyper::header::CONTENT_TYPE, "application/x-ndjson")
                    .body(Full::new(Bytes::from(batch)));
                let Ok(req) = req else {
                    tracing::error!(%url, "invalid collector URL; not sending");
                    return;
                };
                let sent = tokio::time::timeout(Duration::from_secs(5), client.request(req)).await;
                let ok = matches!(&sent, Ok(Ok(r)) if r.status().is_success());
                if !ok {
                    m.drop(Drop::collector, 1);
                    if !failing {
                        tracing::warn!(%url, "collector did not take a batch; batches are dropped until it does");
                    }
                } else if failing {
                    tracing::info!(%url, "collector takes batches again");
                }
                failing = !ok;
            }
        });
        Collector {
            tx,
            task,
            buf: Vec::new(),
            lines: 0,
            since: Instant::now(),
            metrics,
        }
    }

    fn push(&mut self, line: &[u8]) {
        if self.lines == 0 {
            self.since = Instant::now();
        }
        self.buf.extend_from_slice(line);
        self.lines += 1;
        if self.lines >= BATCH_LINES {
            self.send();
        }
    }

    fn send(&mut self) {
        if self.lines == 0 {
            return;
        }
        let batch = std::mem::take(&mut self.buf);
        self.lines = 0;
        if self.tx.try_send(batch).is_err() {
            self.metrics.drop(Drop::collector, 1);
        }
    }

    /// Sends what is left and waits (a bounded time) for the last batch to be delivered.
    async fn finish(mut self) {
        self.send();
        drop(self.tx);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }

    fn tick(&mut self) {
        if self.lines > 0 && self.since.elapsed() >= BATCH_AGE {
            self.send();
        }
    }
}

/// Drains the queue until the capture side closes it.
pub async fn run(
    mut rx: mpsc::Receiver<Vec<Record>>,
    mut names: Names,
    mut out: impl Write,
    mut collector: Option<Collector>,
    metrics: Metrics,
) {
    let mut buf = Vec::with_capacity(64 << 10);
    let mut line = Vec::with_capacity(512);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        let batch = tokio::select! {
            b = rx.recv() => b,
            _ = tick.tick() => {
                if let Some(c) = collector.as_mut() { c.tick(); }
                continue;
            }
        };
        let Some(batch) = batch else { break };
        for record in &batch {
            let [a, b] = record.ips();
            let na = names.name(a).await;
            let nb = names.name(b).await;
            line.clear();
            write_line(record, [na.as_deref(), nb.as_deref()], &mut line);
            buf.extend_from_slice(&line);
            if let Some(c) = collector.as_mut() {
                c.push(&line);
            }
        }
        metrics.records.inc_by(batch.len() as u64);
        if rx.is_empty() || buf.len() >= 32 << 10 {
            // stdout is a pipe to the container runtime: a blocking write, off the async threads.
            let w = tokio::task::block_in_place(|| out.write_all(&buf).and_then(|()| out.flush()));
            if let Err(e) = w {
                tracing::error!(error = %e, "cannot write to stdout");
            }
            buf.clear();
        }
    }
    let _ = out.write_all(&buf);
    let _ = out.flush();
    if let Some(c) = collector {
        c.finish().await;
    }
}
