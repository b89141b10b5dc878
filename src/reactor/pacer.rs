//! The broadcast pacer: one token bucket for how fast every reader's output
//! may grow (see the reactor's module documentation).

use std::time::{Duration, Instant};

/// A token bucket of bytes: how much every reader's output may still grow.
/// It may go below zero by one read's worth of lines (a read is handled
/// whole); reading resumes once it is above zero again.
pub(super) struct Pacer {
    tokens: f64,
    capacity: f64,
    rate: f64,
    last: Instant,
}

impl Pacer {
    pub(super) fn new(capacity: usize, rate: f64) -> Pacer {
        Pacer {
            tokens: capacity as f64,
            capacity: capacity as f64,
            rate,
            last: Instant::now(),
        }
    }

    pub(super) fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
    }

    pub(super) fn spend(&mut self, bytes: usize) {
        self.tokens -= bytes as f64;
    }

    pub(super) fn has_room(&self) -> bool {
        self.tokens > 0.0
    }

    /// Held connections are let go only once a real share of the room is
    /// back (a quarter), not for every byte of refill: each then gets a
    /// useful read, and the loop sleeps in between.
    pub(super) fn may_resume(&self) -> bool {
        self.tokens >= self.capacity / 4.0
    }

    pub(super) fn resume_at(&self, now: Instant) -> Instant {
        let missing = self.capacity / 4.0 - self.tokens;
        if missing <= 0.0 {
            return now;
        }
        now + Duration::from_secs_f64(missing / self.rate)
    }
}
