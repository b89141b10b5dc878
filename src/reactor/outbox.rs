//! A connection's unsent output: a byte buffer with a write cursor.
//!
//! Owns the bound (a consumer that stops reading is refused, not buffered
//! without limit) and the memory policy: an idle connection keeps no large
//! allocation, and a buffer that grew for a backlog shrinks back as the
//! backlog drains, so its allocation stays within a small factor of what
//! is unsent. Knows nothing about sockets beyond `std::io::Write`.

use std::io::{self, Write};

/// Largest allocation kept for reuse once everything is written: enough for
/// a busy connection's turn of chat lines, not for a one-off `/who` of
/// thousands of names, which is freed at once.
pub const KEEP_CAPACITY: usize = 16 * 1024;
/// Largest allocation a bulk sender (a download) keeps from piece to piece
/// (the `_keeping` methods): its pieces are far above the allocator's mmap
/// threshold, and a buffer freed as each is written was mapped again for
/// the next, faulted in page by page and unmapped, with a TLB shootdown
/// on every other core, several times per 256 KiB sent.
pub const BULK_KEEP: usize = 1024 * 1024;
/// Written bytes at the front are dropped once they pass this size.
const COMPACT_AT: usize = 64 * 1024;
/// A buffer above [`KEEP_CAPACITY`] whose unsent bytes fill at most this
/// fraction of it (1/4) is moved to an allocation twice their size. The
/// bytes copied are at most those written since the buffer last grew, so
/// this costs at most about one copy per byte sent.
const SPARSE: usize = 4;

#[derive(Debug, Default)]
pub struct Outbox {
    buf: Vec<u8>,
    /// Bytes before this index are already written.
    pos: usize,
}

/// What [`Outbox::write_to`] achieved.
#[derive(Debug, PartialEq, Eq)]
pub enum Flushed {
    /// Everything is written.
    All,
    /// The socket would block with bytes left.
    Partly,
}

impl Outbox {
    /// Bytes not yet written.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.pending() == 0
    }

    /// Appends `bytes` unless more than `limit` is already unsent; says
    /// whether it did. The buffer can pass the limit by one line, so that a
    /// single long line (a `/who` of thousands) never looks like a consumer
    /// that stopped reading.
    pub fn push(&mut self, bytes: &[u8], limit: usize) -> bool {
        if self.pending() > limit {
            return false;
        }
        self.push_always(bytes);
        true
    }

    /// Appends regardless of the limit (the one shutdown line).
    pub fn push_always(&mut self, bytes: &[u8]) {
        if self.pos >= COMPACT_AT && self.pos * 2 >= self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The bytes not yet written.
    pub fn unsent(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Marks `n` unsent bytes as written (handed to a TLS or WebSocket
    /// layer that copies them).
    pub fn consume(&mut self, n: usize) {
        self.consume_keeping(n, KEEP_CAPACITY);
    }

    /// [`Outbox::consume`], keeping an allocation of up to `keep` bytes.
    pub fn consume_keeping(&mut self, n: usize, keep: usize) {
        self.pos = (self.pos + n).min(self.buf.len());
        if self.pos == self.buf.len() {
            self.emptied(keep);
        } else {
            self.shrink_if_sparse(keep);
        }
    }

    /// Everything is written: keeps an allocation of up to `keep` bytes
    /// for the next output (no malloc per write), frees a bigger one.
    fn emptied(&mut self, keep: usize) {
        self.pos = 0;
        if self.buf.capacity() > keep {
            self.buf = Vec::new();
        } else {
            self.buf.clear();
        }
    }

    /// A backlog has mostly drained: hands the allocation back instead of
    /// keeping it at its high-water mark until the last byte is written.
    fn shrink_if_sparse(&mut self, keep: usize) {
        let cap = self.buf.capacity();
        if cap > keep && self.pending() * SPARSE <= cap {
            let mut fresh = Vec::with_capacity((self.pending() * 2).max(KEEP_CAPACITY));
            fresh.extend_from_slice(&self.buf[self.pos..]);
            self.buf = fresh;
            self.pos = 0;
        }
    }

    /// Appends what `fill` writes into `room` fresh bytes at the end (it
    /// returns how many it used): an encoder writes straight into the
    /// buffer, with no copy.
    pub fn append_with<E>(
        &mut self,
        room: usize,
        fill: impl FnOnce(&mut [u8]) -> Result<usize, E>,
    ) -> Result<usize, E> {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        let start = self.buf.len();
        self.buf.resize(start + room, 0);
        let result = fill(&mut self.buf[start..]);
        let used = *result.as_ref().unwrap_or(&0);
        self.buf.truncate(start + used.min(room));
        result
    }

    /// Frees the buffer: the connection is going away.
    pub fn discard(&mut self) {
        *self = Outbox::default();
    }

    /// Writes until done or the writer would block. Short writes advance the
    /// cursor; `Interrupted` is retried; any other error is returned.
    pub fn write_to(&mut self, w: &mut impl Write) -> io::Result<Flushed> {
        self.write_keeping(w, KEEP_CAPACITY)
    }

    /// [`Outbox::write_to`], keeping an allocation of up to `keep` bytes.
    pub fn write_keeping(&mut self, w: &mut impl Write, keep: usize) -> io::Result<Flushed> {
        while self.pos < self.buf.len() {
            match w.write(&self.buf[self.pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.shrink_if_sparse(keep);
                    return Ok(Flushed::Partly);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        // A modest allocation is kept: a busy connection reuses it next
        // turn. The reactor `release`s idle ones.
        self.emptied(keep);
        Ok(Flushed::All)
    }

    /// Frees the buffer if nothing is pending, so that an idle connection
    /// holds no output memory; says whether there was anything to free.
    pub fn release(&mut self) -> bool {
        if self.is_empty() && self.buf.capacity() > 0 {
            self.buf = Vec::new();
            self.pos = 0;
            return true;
        }
        false
    }

    /// Bytes allocated for this buffer.
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Accepts at most `room` bytes per call, then blocks after `calls`.
    struct Trickle {
        got: Vec<u8>,
        room: usize,
        calls: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if self.calls == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.calls -= 1;
            let n = b.len().min(self.room);
            self.got.extend_from_slice(&b[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn short_writes_advance_and_resume_in_order() {
        let mut out = Outbox::default();
        assert!(out.push(b"hello ", 100));
        assert!(out.push(b"world\n", 100));
        let mut w = Trickle {
            got: Vec::new(),
            room: 4,
            calls: 2,
        };
        assert_eq!(out.write_to(&mut w).unwrap(), Flushed::Partly);
        assert_eq!(out.pending(), 4);
        w.calls = 10;
        assert_eq!(out.write_to(&mut w).unwrap(), Flushed::All);
        assert_eq!(w.got, b"hello world\n");
        assert!(out.is_empty());
    }

    #[test]
    fn refuses_past_the_limit_but_shutdown_line_always_fits() {
        let mut out = Outbox::default();
        assert!(out.push(&[b'w'; 100], 16), "one line may pass the limit");
        let mut out = Outbox::default();
        assert!(out.push(&[b'x'; 10], 16));
        assert!(out.push(&[b'y'; 7], 16));
        assert!(!out.push(b"z", 16));
        assert_eq!(out.pending(), 17);
        out.push_always(b"bye\n");
        assert_eq!(out.pending(), 21);
    }

    #[test]
    fn release_frees_only_an_empty_buffer() {
        let mut out = Outbox::default();
        out.push(&vec![b'z'; 10_000], 1 << 20);
        assert!(!out.release(), "pending bytes are kept");
        let mut w = Trickle {
            got: Vec::new(),
            room: usize::MAX,
            calls: 1,
        };
        out.write_to(&mut w).unwrap();
        assert!(out.capacity() >= 10_000, "kept for reuse until released");
        assert!(out.release());
        assert_eq!(out.capacity(), 0);
        assert!(!out.release());
    }

    #[test]
    fn a_large_buffer_is_freed_as_soon_as_it_is_written() {
        let mut out = Outbox::default();
        out.push(&vec![b'z'; 100_000], 1 << 20);
        let mut w = Trickle {
            got: Vec::new(),
            room: usize::MAX,
            calls: 1,
        };
        out.write_to(&mut w).unwrap();
        assert_eq!(out.capacity(), 0);
    }

    #[test]
    fn a_bulk_sender_keeps_what_it_asks_for_and_no_more() {
        let mut w = Trickle {
            got: Vec::new(),
            room: usize::MAX,
            calls: usize::MAX,
        };
        let mut out = Outbox::default();
        out.push(&vec![b'z'; 300_000], 1 << 20);
        out.write_keeping(&mut w, BULK_KEEP).unwrap();
        let cap = out.capacity();
        assert!(cap >= 300_000, "kept for the next piece");
        out.push(&vec![b'y'; 300_000], 1 << 20);
        assert_eq!(out.capacity(), cap, "the same allocation again");
        // A quarter left: `consume` would move it to a smaller buffer.
        out.consume_keeping(250_000, BULK_KEEP);
        assert_eq!(out.capacity(), cap, "not shrunk while it is kept");
        out.consume_keeping(50_000, BULK_KEEP);
        assert_eq!(out.capacity(), cap);
        // More than it keeps is freed once written, as always.
        out.push(&vec![b'x'; 2 * BULK_KEEP], 4 * BULK_KEEP);
        out.write_keeping(&mut w, BULK_KEEP).unwrap();
        assert_eq!(out.capacity(), 0);
        assert_eq!(w.got.len(), 300_000 + 2 * BULK_KEEP);
    }

    #[test]
    fn a_drained_backlog_gives_its_allocation_back() {
        let mut out = Outbox::default();
        for _ in 0..100 {
            out.push(&[b'q'; 10_000], 1 << 20);
        }
        let high = out.capacity();
        assert!(high >= 1_000_000);
        // A reader that takes 100 KB per turn: the allocation follows the
        // backlog down instead of staying at its high-water mark.
        let mut w = Trickle {
            got: Vec::new(),
            room: 100_000,
            calls: 1,
        };
        let mut turns = 0;
        while out.pending() > 0 {
            w.calls = 1;
            out.write_to(&mut w).unwrap();
            assert!(
                out.capacity() <= (4 * out.pending()).max(KEEP_CAPACITY),
                "{} bytes held for {} unsent",
                out.capacity(),
                out.pending()
            );
            turns += 1;
        }
        assert_eq!(turns, 10);
        assert_eq!(w.got.len(), 1_000_000);
        assert!(w.got.iter().all(|&b| b == b'q'));
        // The same through `consume` (TLS and WebSocket take bytes so).
        let mut out = Outbox::default();
        out.push(&vec![b'r'; 1_000_000], 1 << 20);
        out.consume(900_000);
        assert_eq!(out.unsent(), &[b'r'; 100_000][..]);
        assert!(out.capacity() <= 200_000, "{}", out.capacity());
    }

    #[test]
    fn written_front_is_compacted() {
        let mut out = Outbox::default();
        out.push(&vec![b'a'; 70_000], 1 << 20);
        let mut w = Trickle {
            got: Vec::new(),
            room: 69_000,
            calls: 1,
        };
        assert_eq!(out.write_to(&mut w).unwrap(), Flushed::Partly);
        out.push(b"tail", 1 << 20);
        assert_eq!(out.pos, 0);
        assert_eq!(out.pending(), 1_004);
    }
}
