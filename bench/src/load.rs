//! Load loops: closed (`--concurrency` threads back to back) or open (Poisson
//! arrivals at `--rate`, latency from the intended send time so a stalled
//! server can't hide behind coordinated omission). Bounded by `--duration`.

use crate::client::{self, ClientOpts, Conn, Fail};
use hdrhistogram::Histogram;
use rustls::pki_types::ServerName;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Full,
    Resume,
    KeepAlive,
}

pub struct Plan {
    pub mode: Mode,
    pub addr: SocketAddr,
    pub sni: ServerName<'static>,
    pub client: ClientOpts,
    pub concurrency: usize,
    pub rate: Option<f64>,
    pub threads: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub request: Vec<u8>,
}

#[derive(Default)]
pub struct Tally {
    pub ops: u64,
    pub resumed: u64,
    pub errors: BTreeMap<Fail, u64>,
    pub hist: Option<Histogram<u64>>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            hist: Histogram::new_with_bounds(1, 60_000_000, 3).ok(),
            ..Default::default()
        }
    }
    fn merge(&mut self, o: Tally) {
        self.ops += o.ops;
        self.resumed += o.resumed;
        for (k, v) in o.errors {
            *self.errors.entry(k).or_default() += v;
        }
        if let (Some(a), Some(b)) = (&mut self.hist, &o.hist) {
            let _ = a.add(b);
        }
    }
    fn record(&mut self, took: Duration, r: Result<bool, Fail>) {
        match r {
            Ok(resumed) => {
                self.ops += 1;
                self.resumed += resumed as u64;
                if let Some(h) = &mut self.hist {
                    h.saturating_record((took.as_micros() as u64).max(1));
                }
            }
            Err(f) => *self.errors.entry(f).or_default() += 1,
        }
    }
}

/// Per-thread client state: its own config (and session store), a kept connection.
struct Worker {
    cfg: Arc<rustls::ClientConfig>,
    conn: Option<Conn>,
    buf: Vec<u8>,
}

impl Worker {
    fn new(p: &Plan) -> anyhow::Result<Worker> {
        let cfg = client::config(&p.client, p.mode == Mode::Resume)?;
        let w = Worker {
            cfg,
            conn: None,
            buf: Vec::new(),
        };
        if p.mode == Mode::Resume {
            // Prime the session store with one full handshake.
            client::handshake(p.addr, &p.sni, &w.cfg)
                .map_err(|f| anyhow::anyhow!("priming handshake failed: {}", f.name()))?;
        }
        Ok(w)
    }

    /// One operation; `Ok(true)` when the handshake resumed.
    fn op(&mut self, p: &Plan) -> Result<bool, Fail> {
        match p.mode {
            Mode::Full => client::handshake(p.addr, &p.sni, &self.cfg).map(|(_, r)| r),
            Mode::Resume => {
                let (_, resumed) = client::handshake(p.addr, &p.sni, &self.cfg)?;
                if resumed {
                    Ok(true)
                } else {
                    Err(Fail::NotResumed)
                }
            }
            Mode::KeepAlive => {
                if self.conn.is_none() {
                    self.buf.clear();
                    self.conn = Some(client::handshake(p.addr, &p.sni, &self.cfg)?.0);
                }
                let c = self.conn.as_mut().ok_or(Fail::Io)?;
                let r = client::request(c, &p.request, &mut self.buf);
                if r.is_err() {
                    self.conn = None;
                }
                r.map(|_| false)
            }
        }
    }
}

/// The measured window: whether we are in it, and hooks at its edges.
pub struct Window {
    pub measuring: AtomicBool,
    pub stop: AtomicBool,
}

/// Runs the plan; `on_start`/`on_end` are called at the measured window's edges.
pub fn run(
    p: Arc<Plan>,
    on_start: impl FnOnce(),
    on_end: impl FnOnce(),
) -> anyhow::Result<(Tally, Duration)> {
    let win = Arc::new(Window {
        measuring: AtomicBool::new(false),
        stop: AtomicBool::new(false),
    });
    let n = if p.rate.is_some() {
        p.threads
    } else {
        p.concurrency
    };
    let jobs: Option<Arc<Mutex<mpsc::Receiver<Instant>>>>;
    let mut dispatcher = None;
    if let Some(rate) = p.rate {
        let (tx, rx) = mpsc::channel::<Instant>();
        jobs = Some(Arc::new(Mutex::new(rx)));
        let total = p.warmup + p.duration;
        dispatcher = Some(std::thread::spawn(move || {
            let start = Instant::now();
            let mut next = start;
            let mut seed: u64 = 0x9e37_79b9_7f4a_7c15 ^ (start.elapsed().as_nanos() as u64 | 1);
            while next.duration_since(start) < total {
                // Exponential inter-arrival times (xorshift uniform → -ln(u)/rate).
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let u = ((seed >> 11) as f64 + 1.0) / ((1u64 << 53) as f64 + 1.0);
                next += Duration::from_secs_f64(-u.ln() / rate);
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                }
                if tx.send(next).is_err() {
                    break;
                }
            }
        }));
    } else {
        jobs = None;
    }
    let mut handles = Vec::new();
    for _ in 0..n {
        let (p, win, jobs) = (p.clone(), win.clone(), jobs.clone());
        handles.push(std::thread::spawn(move || -> anyhow::Result<Tally> {
            let mut w = Worker::new(&p)?;
            let mut t = Tally::new();
            while !win.stop.load(Ordering::Relaxed) {
                let intended = match &jobs {
                    None => Instant::now(),
                    Some(rx) => {
                        let next = rx
                            .lock()
                            .map_err(|_| anyhow::anyhow!("job queue poisoned"))?
                            .recv_timeout(Duration::from_millis(100));
                        match next {
                            Ok(i) => i,
                            Err(mpsc::RecvTimeoutError::Timeout) => continue,
                            Err(mpsc::RecvTimeoutError::Disconnected) => break,
                        }
                    }
                };
                let r = w.op(&p);
                if win.measuring.load(Ordering::Relaxed) {
                    t.record(intended.elapsed(), r);
                }
            }
            Ok(t)
        }));
    }
    std::thread::sleep(p.warmup);
    on_start();
    let started = Instant::now();
    win.measuring.store(true, Ordering::SeqCst);
    std::thread::sleep(p.duration);
    win.measuring.store(false, Ordering::SeqCst);
    let elapsed = started.elapsed();
    on_end();
    win.stop.store(true, Ordering::SeqCst);
    let mut total = Tally::new();
    for h in handles {
        total.merge(
            h.join()
                .map_err(|_| anyhow::anyhow!("load thread panicked"))??,
        );
    }
    if let Some(d) = dispatcher {
        let _ = d.join();
    }
    Ok((total, elapsed))
}

/// Opens `count` connections with one request each and keeps them open.
pub fn hold(p: &Plan, count: usize) -> anyhow::Result<(Vec<Conn>, BTreeMap<Fail, u64>)> {
    let per = count.div_ceil(p.threads.max(1));
    let mut handles = Vec::new();
    for i in 0..p.threads.max(1) {
        let todo = per.min(count.saturating_sub(i * per));
        let (addr, sni, req) = (p.addr, p.sni.clone(), p.request.clone());
        let cfg = client::config(&p.client, false)?;
        handles.push(std::thread::spawn(move || {
            let mut conns = Vec::new();
            let mut errors: BTreeMap<Fail, u64> = BTreeMap::new();
            for _ in 0..todo {
                let r = client::handshake(addr, &sni, &cfg).and_then(|(mut c, _)| {
                    client::request(&mut c, &req, &mut Vec::new())?;
                    Ok(c)
                });
                match r {
                    Ok(c) => conns.push(c),
                    Err(f) => *errors.entry(f).or_default() += 1,
                }
            }
            (conns, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = BTreeMap::new();
    for h in handles {
        let (c, e) = h
            .join()
            .map_err(|_| anyhow::anyhow!("hold thread panicked"))?;
        all.extend(c);
        for (k, v) in e {
            *errors.entry(k).or_default() += v;
        }
    }
    Ok((all, errors))
}
