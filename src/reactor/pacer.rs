//! The broadcast pacer: one token bucket for how fast every reader's output
//! may grow (see the reactor's module documentation).
//!
//! Its room is also a share of `--max-total-output`: a turn's broadcasts
//! reach every reader before any of it is written, so with many readers
//! each may grow by less, and a burst that readers keep up with never
//! takes the total near its bound (where the readers holding the most
//! would be cut off).

use std::time::{Duration, Instant};

/// A token bucket of bytes: how much every reader's output may still grow.
/// It may go below zero by one read's worth of lines (a read is handled
/// whole); reading resumes once it is above zero again.
pub(super) struct Pacer {
    tokens: f64,
    capacity: f64,
    /// The room with few readers.
    most: f64,
    /// The room however many readers there are.
    least: f64,
    /// Bytes of output all readers together may gain at once.
    shared: f64,
    rate: f64,
    last: Instant,
}

impl Pacer {
    /// Room for `most` bytes per reader at once, or `shared` bytes for all
    /// readers together if that is less, but at least `least`; refilled at
    /// `rate` bytes a second.
    pub(super) fn new(most: usize, least: usize, shared: usize, rate: f64) -> Pacer {
        Pacer {
            tokens: most as f64,
            capacity: most as f64,
            most: most as f64,
            least: least as f64,
            shared: shared as f64,
            rate,
            last: Instant::now(),
        }
    }

    /// Sizes the room for `readers` readers (one division per broadcast).
    pub(super) fn set_readers(&mut self, readers: usize) {
        let room = (self.shared / readers.max(1) as f64)
            .min(self.most)
            .max(self.least);
        if room != self.capacity {
            self.capacity = room;
            self.tokens = self.tokens.min(room);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_readers_share_the_room() {
        let mut p = Pacer::new(256 << 10, 8256, 64 << 20, 1e9);
        p.set_readers(10);
        assert_eq!(p.capacity, (256 << 10) as f64, "few readers: the full room");
        p.set_readers(1000);
        assert_eq!(p.capacity, (64 << 20) as f64 / 1000.0);
        assert!(p.tokens <= p.capacity);
        p.set_readers(1_000_000);
        assert_eq!(p.capacity, 8256.0, "never less than two longest lines");
        p.set_readers(0);
        assert_eq!(p.capacity, (256 << 10) as f64);
    }
}
