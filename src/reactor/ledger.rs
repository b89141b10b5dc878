//! The running total of unsent output over all connections, for
//! `--max-total-output`: what each connection holds (its own output and
//! what its transport has encoded: TLS records, WebSocket frames), by slab
//! key, and the sum.
//!
//! Owns only the counting. The reactor updates it where output grows (a
//! push: one addition on the broadcast path) and shrinks (a flush, a close)
//! and decides whom to cut off; this file knows nothing of connections.
//!
//! The counts live in one array of their own rather than in the
//! connections, so that the one search it does, for the connection holding
//! the most, reads 8 bytes per connection (80 KB for 10,000) instead of
//! walking the slab. That search runs only when the total passes the
//! bound, and each time it finds the connection holding the most, which is
//! at least the average, so cutting it off frees at least
//! `total / connections` bytes.

/// Unsent output per connection and in all.
#[derive(Debug, Default)]
pub(super) struct Ledger {
    /// Bytes each slab key held when last counted.
    held: Vec<usize>,
    /// The pass (see [`Ledger::begin_pass`]) in which each key was last
    /// marked.
    marks: Vec<u32>,
    pass: u32,
    total: usize,
}

impl Ledger {
    /// Makes room for slab key `key` (a new connection holds nothing).
    pub(super) fn open(&mut self, key: usize) {
        if key >= self.held.len() {
            self.held.resize(key + 1, 0);
            self.marks.resize(key + 1, 0);
        }
    }

    /// `key` was given `n` more unsent bytes.
    #[inline]
    pub(super) fn add(&mut self, key: usize, n: usize) {
        if let Some(held) = self.held.get_mut(key) {
            *held += n;
            self.total += n;
        }
    }

    /// `key` holds `bytes` unsent bytes now.
    #[inline]
    pub(super) fn set(&mut self, key: usize, bytes: usize) {
        if let Some(held) = self.held.get_mut(key) {
            self.total = self.total.saturating_sub(*held) + bytes;
            *held = bytes;
        }
    }

    pub(super) fn total(&self) -> usize {
        self.total
    }

    pub(super) fn held(&self, key: usize) -> usize {
        self.held.get(key).copied().unwrap_or(0)
    }

    /// The key holding the most unsent output, if any holds some.
    pub(super) fn largest(&self) -> Option<usize> {
        let (key, &most) = self
            .held
            .iter()
            .enumerate()
            .max_by_key(|&(_, held)| *held)?;
        (most > 0).then_some(key)
    }

    /// Starts a pass of marks: keys marked before are unmarked.
    pub(super) fn begin_pass(&mut self) {
        self.pass = self.pass.wrapping_add(1);
        if self.pass == 0 {
            // Wrapped: old marks could collide with new passes.
            self.marks.fill(0);
            self.pass = 1;
        }
    }

    /// Marks `key` in this pass; true if it was marked already.
    pub(super) fn mark(&mut self, key: usize) -> bool {
        match self.marks.get_mut(key) {
            Some(mark) if *mark == self.pass => true,
            Some(mark) => {
                *mark = self.pass;
                false
            }
            None => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_total_follows_every_change() {
        let mut l = Ledger::default();
        for key in 0..4 {
            l.open(key);
        }
        l.add(0, 100);
        l.add(2, 50);
        l.add(2, 25);
        assert_eq!(l.total(), 175);
        l.set(0, 10);
        assert_eq!((l.total(), l.held(0), l.held(2)), (85, 10, 75));
        assert_eq!(l.largest(), Some(2));
        l.set(2, 0);
        assert_eq!(l.largest(), Some(0));
        l.set(0, 0);
        assert_eq!((l.total(), l.largest()), (0, None));
        // A key never opened is ignored, not a panic.
        l.add(99, 5);
        l.set(99, 5);
        assert_eq!(l.total(), 0);
    }

    #[test]
    fn marks_last_one_pass() {
        let mut l = Ledger::default();
        l.open(3);
        l.begin_pass();
        assert!(!l.mark(3));
        assert!(l.mark(3));
        l.begin_pass();
        assert!(!l.mark(3));
        assert!(l.mark(7), "a key never opened counts as marked");
        l.pass = u32::MAX;
        l.begin_pass();
        assert!(!l.mark(3), "marks are cleared when the pass number wraps");
    }
}
