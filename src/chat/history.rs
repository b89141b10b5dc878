//! A room's recent history in memory: a ring of its newest messages, each
//! with the numbers the loop gave it.
//!
//! The ring is what makes catch-up exact without a disk read on the loop:
//! a message is numbered, put in the ring and handed to the store thread in
//! one step, so what a login is shown from the ring and what it then gets
//! live never overlap and never leave a gap. Older history is the store's
//! (`/history` past the ring), read off the loop. (Model: ergo's
//! `irc/history/history.go`, a ring per target.)

use std::collections::VecDeque;

use super::text::utc;
use crate::store::ops::Message;

/// Messages a room keeps in memory: more than `/history` may ask for (200)
/// and than catch-up shows (50), so both are served from here.
pub const RING: usize = 256;

/// One message as the ring keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Global id (the store's key).
    pub id: u64,
    /// Number in its room, from 1.
    pub n: u64,
    /// Unix seconds.
    pub at: i64,
    pub me: bool,
    pub sender: Box<str>,
    pub text: Box<str>,
}

impl Entry {
    pub fn from_message(m: &Message) -> Entry {
        Entry {
            id: m.id,
            n: m.n,
            at: m.at,
            me: m.me,
            sender: m.sender.as_str().into(),
            text: m.text.as_str().into(),
        }
    }

    /// The line as it was delivered: `alice: hi` or `* alice waves`,
    /// after `prefix` (`#rust ` in a room, empty in the lobby). LF included.
    pub fn line(&self, prefix: &str) -> Vec<u8> {
        format_line(prefix, &self.sender, self.me, &self.text)
    }

    /// The line as history: `~<time> ` and the line as delivered.
    pub fn history_line(&self, prefix: &str) -> Vec<u8> {
        let mut out = format!("~{} ", utc(self.at)).into_bytes();
        out.extend_from_slice(&self.line(prefix));
        out
    }
}

/// A public line as delivered: `<prefix><sender>: <text>` or
/// `<prefix>* <sender> <text>` for `/me`, with its LF.
pub fn format_line(prefix: &str, sender: &str, me: bool, text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(prefix.len() + sender.len() + text.len() + 4);
    out.extend_from_slice(prefix.as_bytes());
    if me {
        out.extend_from_slice(b"* ");
        out.extend_from_slice(sender.as_bytes());
        out.push(b' ');
    } else {
        out.extend_from_slice(sender.as_bytes());
        out.extend_from_slice(b": ");
    }
    out.extend_from_slice(text.as_bytes());
    out.push(b'\n');
    out
}

/// The newest [`RING`] messages of one room, oldest first.
#[derive(Debug, Default)]
pub struct Ring {
    entries: VecDeque<Entry>,
}

impl Ring {
    pub fn push(&mut self, entry: Entry) {
        if self.entries.len() == RING {
            self.entries.pop_front();
        }
        self.entries.push_back(entry);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The last `n` entries from `since` on (unix seconds: older ones have
    /// expired), oldest first.
    pub fn last(&self, n: usize, since: i64) -> impl Iterator<Item = &Entry> {
        let fresh = self.entries.iter().filter(move |e| e.at >= since).count();
        let skip = self.entries.len() - fresh.min(n);
        self.entries.iter().skip(skip)
    }

    /// Entries numbered above `seen`, the last `n` of them at most, from
    /// `since` on.
    pub fn after(&self, seen: u64, n: usize, since: i64) -> impl Iterator<Item = &Entry> {
        let newer = self
            .entries
            .iter()
            .filter(|e| e.n > seen && e.at >= since)
            .count();
        let skip = self.entries.len() - newer.min(n);
        self.entries
            .iter()
            .skip(skip)
            .filter(move |e| e.n > seen && e.at >= since)
    }

    /// Forgets everything (the room was deleted).
    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u64, at: i64) -> Entry {
        Entry {
            id: n + 1000,
            n,
            at,
            me: n.is_multiple_of(2),
            sender: "alice".into(),
            text: format!("m{n}").into(),
        }
    }

    #[test]
    fn the_ring_keeps_the_newest_and_answers_last_and_after() {
        let mut ring = Ring::default();
        for n in 1..=(RING as u64 + 10) {
            ring.push(entry(n, n as i64));
        }
        assert_eq!(ring.len(), RING);
        let last: Vec<u64> = ring.last(3, 0).map(|e| e.n).collect();
        assert_eq!(last, [RING as u64 + 8, RING as u64 + 9, RING as u64 + 10]);
        let after: Vec<u64> = ring.after(RING as u64 + 7, 50, 0).map(|e| e.n).collect();
        assert_eq!(after, [RING as u64 + 8, RING as u64 + 9, RING as u64 + 10]);
        let capped: Vec<u64> = ring.after(0, 2, 0).map(|e| e.n).collect();
        assert_eq!(capped, [RING as u64 + 9, RING as u64 + 10]);
        // Expired entries are never shown.
        assert_eq!(ring.last(500, RING as i64 + 9).count(), 2);
        assert_eq!(ring.after(0, 500, RING as i64 + 10).count(), 1);
    }

    #[test]
    fn lines_are_as_delivered_and_history_adds_the_time() {
        let e = entry(3, 1_796_121_485);
        assert_eq!(e.line(""), b"alice: m3\n");
        assert_eq!(entry(4, 0).line("#rust "), b"#rust * alice m4\n");
        assert_eq!(
            e.history_line("#rust "),
            b"~2026-12-01T10:38:05Z #rust alice: m3\n"
        );
    }
}
