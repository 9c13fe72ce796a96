//! Rate limit for per-event warnings, so a flood of bad clients can't flood the log.

use std::time::{Duration, Instant};

pub struct LogLimit {
    per_sec: u32,
    window: Instant,
    used: u32,
    suppressed: u64,
}

impl LogLimit {
    pub fn new(per_sec: u32) -> Self {
        LogLimit {
            per_sec,
            window: Instant::now(),
            used: 0,
            suppressed: 0,
        }
    }

    /// `Some(n)` when this event may be logged, `n` being how many were dropped
    /// since the last logged one; `None` when it must be dropped.
    pub fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        if now.duration_since(self.window) >= Duration::from_secs(1) {
            self.window = now;
            self.used = 0;
        }
        if self.used < self.per_sec {
            self.used += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}
