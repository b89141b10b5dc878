//! Bounded tables for the limits: per key, what happened recently.
//!
//! Every table the limits keep per address or per account name has a cap
//! on its keys. When a new key arrives at the cap, the key touched longest
//! ago goes: an attacker who fills a table with random sources pushes out
//! only its own oldest entries, and a new offender is always counted (and
//! logged). Refusing new keys at the cap instead would let such a flood
//! blind the limits.
//!
//! [`Recent`] keeps the keys in the order they were last touched with a
//! lazy queue: each touch appends `(time, key)`, and an entry whose key was
//! touched again since is skipped (and dropped) when it reaches the front.
//! The queue is compacted when it grows past twice the cap, so every
//! operation is O(1) amortized.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// A map of at most `cap` keys, forgetting the least recently touched.
#[derive(Debug)]
pub(super) struct Recent<K, V> {
    cap: usize,
    map: HashMap<K, Slot<V>>,
    /// `(time, key)` per touch, oldest first; an entry is live while its
    /// key's slot was last touched at that time.
    order: VecDeque<(Instant, K)>,
    evicted: u64,
}

#[derive(Debug)]
struct Slot<V> {
    touched: Instant,
    value: V,
}

impl<K: Eq + Hash + Clone, V: Default> Recent<K, V> {
    pub(super) fn new(cap: usize) -> Self {
        Recent {
            cap: cap.max(1),
            map: HashMap::new(),
            order: VecDeque::new(),
            evicted: 0,
        }
    }

    pub(super) fn get(&self, key: &K) -> Option<&V> {
        self.map.get(key).map(|s| &s.value)
    }

    /// When `key` was last touched.
    pub(super) fn touched(&self, key: &K) -> Option<Instant> {
        self.map.get(key).map(|s| s.touched)
    }

    /// The value of `key` without touching it.
    pub(super) fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.map.get_mut(key).map(|s| &mut s.value)
    }

    /// The value of `key`, made (from `V::default()`) if missing, and
    /// marked as touched at `now`. At the cap, making a key first forgets
    /// the one touched longest ago.
    pub(super) fn touch(&mut self, key: K, now: Instant) -> &mut V {
        let queue = match self.map.get_mut(&key) {
            Some(slot) => {
                // Callers' clocks only go forward, but two of them may read
                // it in either order: never move a key back in time.
                let at = slot.touched.max(now);
                let moved = at != slot.touched;
                slot.touched = at;
                moved.then_some(at)
            }
            None => {
                if self.map.len() >= self.cap {
                    self.evict_oldest();
                }
                self.map.insert(
                    key.clone(),
                    Slot {
                        touched: now,
                        value: V::default(),
                    },
                );
                Some(now)
            }
        };
        if let Some(at) = queue {
            self.order.push_back((at, key.clone()));
            if self.order.len() > 2 * self.cap + 64 {
                self.compact();
            }
        }
        &mut self
            .map
            .get_mut(&key)
            .expect("the key was just inserted or found")
            .value
    }

    pub(super) fn remove(&mut self, key: &K) {
        // Its queue entry is skipped when it comes to the front.
        self.map.remove(key);
    }

    /// Forgets every key last touched at or before `cutoff`.
    pub(super) fn expire(&mut self, cutoff: Instant) {
        while let Some((t, _)) = self.order.front() {
            if *t > cutoff {
                break;
            }
            let Some((t, key)) = self.order.pop_front() else {
                break;
            };
            if self.map.get(&key).is_some_and(|s| s.touched == t) {
                self.map.remove(&key);
            }
        }
    }

    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    /// Keys forgotten to make room, ever.
    pub(super) fn evicted(&self) -> u64 {
        self.evicted
    }

    fn evict_oldest(&mut self) {
        while let Some((t, key)) = self.order.pop_front() {
            if self.map.get(&key).is_some_and(|s| s.touched == t) {
                self.map.remove(&key);
                self.evicted += 1;
                return;
            }
        }
        // Every slot has its queue entry, so this is not reached; stay
        // bounded anyway.
        if let Some(key) = self.map.keys().next().cloned() {
            self.map.remove(&key);
            self.evicted += 1;
        }
    }

    fn compact(&mut self) {
        let map = &self.map;
        self.order
            .retain(|(t, key)| map.get(key).is_some_and(|s| s.touched == *t));
    }
}

/// Time stamps per key over a sliding window, oldest first, at most
/// `limit` per key (callers pass the limit they check against) and at most
/// `cap` keys.
#[derive(Debug)]
pub(super) struct Windows<K> {
    span: Duration,
    table: Recent<K, VecDeque<Instant>>,
}

impl<K: Eq + Hash + Clone> Windows<K> {
    pub(super) fn new(span: Duration, cap: usize) -> Self {
        Windows {
            span,
            table: Recent::new(cap),
        }
    }

    /// How long until fewer than `limit` stamps of `key` are live; `None`
    /// if that is already so.
    pub(super) fn wait(&self, key: &K, limit: u32, now: Instant) -> Option<Duration> {
        let stamps = self.table.get(key)?;
        // Stamps are in time order, so the live ones are a suffix.
        let first_live = stamps.partition_point(|&t| now.saturating_duration_since(t) >= self.span);
        // A limit of 0 would refuse everything; treat it as 1.
        let limit = (limit as usize).max(1);
        if stamps.len() - first_live < limit {
            return None;
        }
        // Allowed again when the stamp that keeps the count at the limit
        // expires.
        let t = stamps[stamps.len() - limit];
        Some((t + self.span).saturating_duration_since(now))
    }

    pub(super) fn record(&mut self, key: K, now: Instant, limit: u32) {
        let stamps = self.table.touch(key, now);
        stamps.push_back(now);
        while stamps.len() > (limit as usize).max(1) {
            stamps.pop_front();
        }
    }

    /// Removes the stamp made at `at`, if it is still there (it may have
    /// expired and been pruned).
    pub(super) fn forget(&mut self, key: &K, at: Instant) {
        if let Some(stamps) = self.table.get_mut(key) {
            if let Some(i) = stamps.iter().rposition(|&t| t == at) {
                stamps.remove(i);
            }
            if stamps.is_empty() {
                self.table.remove(key);
            }
        }
    }

    pub(super) fn forget_latest(&mut self, key: &K) {
        if let Some(stamps) = self.table.get_mut(key) {
            stamps.pop_back();
            if stamps.is_empty() {
                self.table.remove(key);
            }
        }
    }

    /// Drops keys with no live stamp.
    pub(super) fn prune(&mut self, now: Instant) {
        if let Some(cutoff) = now.checked_sub(self.span) {
            self.table.expire(cutoff);
        }
    }

    pub(super) fn len(&self) -> usize {
        self.table.len()
    }

    pub(super) fn evicted(&self) -> u64 {
        self.table.evicted()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_touched_key_goes_at_the_cap() {
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        let mut r: Recent<u32, u32> = Recent::new(3);
        *r.touch(1, at(0)) += 1;
        *r.touch(2, at(1)) += 1;
        *r.touch(3, at(2)) += 1;
        // 1 is touched again: 2 is now the oldest.
        *r.touch(1, at(3)) += 1;
        *r.touch(4, at(4)) += 1;
        assert_eq!(r.len(), 3);
        assert_eq!(r.get(&2), None, "the least recently touched went");
        assert_eq!(r.get(&1), Some(&2));
        assert_eq!(r.get(&4), Some(&1));
        assert_eq!(r.evicted(), 1);
        r.expire(at(2));
        assert_eq!(r.get(&3), None, "touched at the cutoff");
        assert_eq!(r.get(&1), Some(&2), "touched after it stays");
    }

    #[test]
    fn a_flood_of_new_keys_cannot_keep_a_new_one_out() {
        let t0 = Instant::now();
        let mut r: Recent<u64, u32> = Recent::new(100);
        for i in 0..10_000u64 {
            r.touch(i, t0 + Duration::from_millis(i));
            assert!(r.len() <= 100);
            assert!(r.order.len() <= 2 * 100 + 64 + 1, "the queue stays bounded");
        }
        let later = t0 + Duration::from_secs(60);
        *r.touch(u64::MAX, later) = 7;
        assert_eq!(r.get(&u64::MAX), Some(&7));
        // It survives anything short of cap new keys after it.
        for i in 0..99u64 {
            r.touch(20_000 + i, later);
        }
        assert_eq!(r.get(&u64::MAX), Some(&7));
    }

    #[test]
    fn touching_one_key_many_times_at_once_stays_bounded() {
        let t0 = Instant::now();
        let mut r: Recent<u8, u32> = Recent::new(4);
        for _ in 0..100_000 {
            *r.touch(1, t0) += 1;
        }
        assert_eq!(r.order.len(), 1);
        // A clock read earlier does not move a key back.
        r.touch(1, t0 + Duration::from_secs(5));
        r.touch(1, t0 + Duration::from_secs(2));
        assert_eq!(r.touched(&1), Some(t0 + Duration::from_secs(5)));
    }

    #[test]
    fn windows_count_live_stamps_and_expire() {
        let t0 = Instant::now();
        let mut w: Windows<&str> = Windows::new(Duration::from_secs(60), 10);
        for i in 0..3 {
            w.record("a", t0 + Duration::from_secs(i), 3);
        }
        assert_eq!(
            w.wait(&"a", 3, t0 + Duration::from_secs(10)),
            Some(Duration::from_secs(50))
        );
        assert_eq!(w.wait(&"a", 4, t0), None);
        w.forget(&"a", t0 + Duration::from_secs(1));
        assert_eq!(w.wait(&"a", 3, t0 + Duration::from_secs(10)), None);
        w.prune(t0 + Duration::from_secs(62));
        assert_eq!(w.len(), 0);
    }
}
