//! The HDR interval log (hdrhistogram's V2 log format, as Java's
//! HistogramLogWriter writes it): every `interval`, each listener's handshake
//! latency for that interval, full and resumed, appended to a file. Timestamps
//! are seconds since the epoch, so the logs of several hosts (or of a process
//! and its upgrade successor) merge exactly offline.

use super::{merge, Detail, Registry};
use crate::tls::Kind;
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// A tag as the format allows it (no `,`, space or line break): `listener/kind`.
fn tag(listener: &str, kind: Kind) -> String {
    let clean: String = listener
        .chars()
        .map(|c| {
            if matches!(c, ',' | ' ' | '\r' | '\n') || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    format!("{clean}/{}", kind.label())
}

/// Starts the writer thread. Each batch of lines goes out in one append, so
/// two processes sharing the file (an upgrade) never interleave inside one.
pub fn spawn(path: PathBuf, interval: Duration, reg: Arc<Registry>) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&path)?;
    std::thread::Builder::new().name("mtlsgate-hdrlog".into()).spawn(move || {
        let mut serializer = V2DeflateSerializer::new();
        let mut last: HashMap<String, Histogram<u64>> = HashMap::new();
        let mut header = Vec::new();
        let start = SystemTime::now();
        let built = IntervalLogWriterBuilder::new()
            .add_comment(&format!("mtlsgate {} pid {}: handshake latency (us, accept to complete), tag = listener/kind", env!("CARGO_PKG_VERSION"), std::process::id()))
            .with_start_time(start)
            .begin_log_with(&mut header, &mut serializer)
            .map(drop);
        if built.is_err() || file.write_all(&header).is_err() {
            tracing::warn!(path = %path.display(), "cannot write the HDR log header");
        }
        let mut from = start;
        loop {
            std::thread::sleep(interval);
            let now = SystemTime::now();
            let snap = reg.collect(Duration::from_secs(1), Detail::Full);
            let (names, merged) = merge(&snap);
            let mut out = Vec::new();
            let mut serializer = V2DeflateSerializer::new();
            let Ok(mut w) = IntervalLogWriterBuilder::new().begin_log_with(&mut out, &mut serializer) else {
                continue;
            };
            let at = from.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
            let took = now.duration_since(from).unwrap_or_default();
            for (n, s) in names.iter().zip(&merged) {
                for kind in [Kind::Full, Kind::Resumed] {
                    let Some(total) = s.completed(kind).total.hdr else { continue };
                    let t = tag(n, kind);
                    // Cumulative per worker; the interval is the difference.
                    let mut delta = (*total).clone();
                    if let Some(prev) = last.get(&t) {
                        if delta.subtract(prev).is_err() {
                            delta = (*total).clone(); // a worker restarted its counts
                        }
                    }
                    if delta.is_empty() {
                        last.insert(t, *total);
                        continue;
                    }
                    if let Err(e) = w.write_histogram(&delta, at, took, Tag::new(&t)) {
                        tracing::warn!(error = %e, "cannot encode an HDR interval");
                    }
                    last.insert(t, *total);
                }
            }
            drop(w);
            if !out.is_empty() {
                if let Err(e) = file.write_all(&out) {
                    tracing::warn!(path = %path.display(), error = %e, "cannot write the HDR log");
                }
            }
            from = now;
        }
    })?;
    Ok(())
}
