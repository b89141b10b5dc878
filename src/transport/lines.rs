//! The line protocol's framing: LF-terminated lines, one CR before the LF
//! dropped, a bound on line length that holds however long a line is, and
//! an unterminated last line that still counts at end of input.
//!
//! Check-then-parse: "no whole line yet" is a normal answer, and the
//! caller pulls one frame at a time, only while the session wants input,
//! so input that arrives during a password check waits here in order.

/// Bytes received and not yet framed. A cursor instead of draining from the
/// front, so taking a line costs nothing; the buffer is compacted when it
/// is empty.
///
/// Its memory follows what it holds: [`InBuf::settle`], called whenever
/// the framing waits for more bytes, gives back an allocation that a large
/// read left behind, and with a [limit](InBuf::set_limit) (the line
/// framing's `--max-line`, plus one byte for a CR) the buffer never grows
/// past that limit while a partial frame fits in it. A partial line
/// therefore costs at most about `--max-line` of memory, not the twice that
/// doubling a vector would give, however its bytes arrive.
#[derive(Debug, Default)]
pub struct InBuf {
    buf: Vec<u8>,
    pos: usize,
    /// The most a partial frame can hold before the framing drops it; 0
    /// for none.
    limit: usize,
}

/// Largest allocation an idle connection keeps for input.
const KEEP_CAPACITY: usize = 4096;
/// Smallest allocation made for input.
const MIN_CAPACITY: usize = 64;

impl InBuf {
    /// Caps the growth of a partial frame at `limit` bytes: the framing
    /// drops anything longer, so room beyond it would never be used.
    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit;
    }

    /// Room for `n` more bytes without growing.
    pub fn reserve(&mut self, n: usize) {
        self.buf.reserve_exact(n);
    }

    pub fn push(&mut self, data: &[u8]) {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 0 && self.pos >= self.buf.len() / 2 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let need = self.buf.len() + data.len();
        if need > self.buf.capacity() {
            // Doubling, as a vector grows, except that a partial frame
            // that fits the limit gets no room beyond it.
            let mut target = (self.buf.capacity() * 2).max(need).max(MIN_CAPACITY);
            if self.limit > 0 && need <= self.limit {
                target = target.min(self.limit);
            }
            self.buf.reserve_exact(target - self.buf.len());
        }
        self.buf.extend_from_slice(data);
    }

    /// The bytes not yet taken.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    pub fn len(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Marks `n` bytes as taken.
    pub fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.buf.len());
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
    }

    /// Bytes at a range handed out by [`Lines::next_at`].
    pub fn slice(&self, range: std::ops::Range<usize>) -> &[u8] {
        &self.buf[range]
    }

    /// Appends `data`, taking the vector itself when nothing is held (a
    /// worker's plaintext: no copy).
    pub fn push_vec(&mut self, data: Vec<u8>) {
        if self.pos == self.buf.len() && (self.limit == 0 || data.len() <= self.limit) {
            self.buf = data;
            self.pos = 0;
        } else {
            self.push(&data);
        }
    }

    /// Takes everything left, as a vector: the allocation itself when
    /// nothing was taken from it (no copy; the buffer is left empty).
    pub fn take_vec(&mut self) -> Vec<u8> {
        if self.pos == 0 {
            return std::mem::take(&mut self.buf);
        }
        self.take_all()
    }

    /// Takes everything left, as a vector of its own size.
    pub fn take_all(&mut self) -> Vec<u8> {
        let rest = self.buf.split_off(self.pos);
        self.buf.clear();
        self.pos = 0;
        rest
    }

    /// Every whole frame has been taken and the framing waits for more:
    /// frees a large allocation that is empty, and moves a partial frame
    /// out of one much larger than it (a 64 KiB read that ended in the
    /// middle of a line, say) into one of its own size. The bytes copied
    /// are never more than those received since the buffer last grew.
    pub fn settle(&mut self) {
        let cap = self.buf.capacity();
        if cap <= KEEP_CAPACITY {
            return;
        }
        let len = self.len();
        if len == 0 {
            self.buf = Vec::new();
            self.pos = 0;
        } else if cap > 2 * len || (self.limit > 0 && cap > self.limit) {
            self.buf = self.take_all();
        }
    }

    /// Frees the allocation of an empty buffer, or the room a partial
    /// frame does not use; true if it freed something.
    pub fn release(&mut self) -> bool {
        if self.is_empty() && self.buf.capacity() > 0 {
            self.buf = Vec::new();
            self.pos = 0;
            return true;
        }
        if self.buf.capacity() > KEEP_CAPACITY.max(self.len()) {
            // `split_off` allocates exactly what is left.
            self.buf = self.take_all();
            return true;
        }
        false
    }

    /// Bytes allocated for this buffer.
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }
}

/// One frame of the line protocol.
#[derive(Debug, PartialEq, Eq)]
pub enum LineFrame<'a> {
    /// A line without its LF and the one CR before it.
    Line(&'a [u8]),
    /// A line longer than the limit was dropped (reported once per line).
    TooLong,
    /// The peer finished sending and every line was handed out.
    End,
}

/// Line framing state over an [`InBuf`].
#[derive(Debug, Default)]
pub struct Lines {
    /// Inside an over-long line: drop bytes up to the next LF.
    discarding: bool,
    /// The peer finished sending.
    eof: bool,
    /// [`LineFrame::End`] was handed out.
    ended: bool,
}

impl Lines {
    pub fn new() -> Lines {
        Lines::default()
    }

    /// The peer closed its sending side.
    pub fn set_eof(&mut self) {
        self.eof = true;
    }

    /// The next frame, or `None` until more bytes (or the end) arrive. A
    /// line borrowed from `input` is consumed by this call.
    pub fn next<'a>(&mut self, input: &'a mut InBuf, max_line: usize) -> Option<LineFrame<'a>> {
        Some(match self.next_at(input, max_line)? {
            Framed::Line(range) => LineFrame::Line(input.slice(range)),
            Framed::TooLong => LineFrame::TooLong,
            Framed::End => LineFrame::End,
        })
    }

    /// Like [`Lines::next`], with the line given as a range of `input`
    /// (valid until `input` changes).
    pub fn next_at(&mut self, input: &mut InBuf, max_line: usize) -> Option<Framed> {
        loop {
            if self.ended {
                return None;
            }
            let bytes = input.bytes();
            let n = bytes.len();
            match memchr::memchr(b'\n', bytes) {
                Some(i) => {
                    if std::mem::take(&mut self.discarding) {
                        // Its error was reported when it overflowed.
                        input.consume(i + 1);
                        continue;
                    }
                    let start = input.pos;
                    input.pos += i + 1;
                    return Some(line_frame(&input.buf, start, i, max_line));
                }
                None if self.eof => {
                    if n == 0 || std::mem::take(&mut self.discarding) {
                        input.consume(n);
                        self.ended = true;
                        return Some(Framed::End);
                    }
                    let start = input.pos;
                    input.pos += n;
                    return Some(line_frame(&input.buf, start, n, max_line));
                }
                None => {
                    // One byte of slack for the CR of a CRLF.
                    if n > max_line + 1 {
                        input.consume(n);
                        if !std::mem::replace(&mut self.discarding, true) {
                            return Some(Framed::TooLong);
                        }
                    }
                    return None;
                }
            }
        }
    }
}

/// A frame with its line as a range of the input buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Framed {
    Line(std::ops::Range<usize>),
    TooLong,
    End,
}

/// The line at `buf[start..start + len]`, without one trailing CR.
fn line_frame(buf: &[u8], start: usize, len: usize, max_line: usize) -> Framed {
    let mut end = start + len;
    if len > 0 && buf[end - 1] == b'\r' {
        end -= 1;
    }
    if end - start > max_line {
        Framed::TooLong
    } else {
        Framed::Line(start..end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(chunks: &[&[u8]], eof: bool, max: usize) -> Vec<String> {
        let mut input = InBuf::default();
        let mut lines = Lines::new();
        let mut out = Vec::new();
        let take = |input: &mut InBuf, lines: &mut Lines, out: &mut Vec<String>| {
            while let Some(f) = lines.next(input, max) {
                out.push(match f {
                    LineFrame::Line(l) => String::from_utf8_lossy(l).into_owned(),
                    LineFrame::TooLong => "<too long>".into(),
                    LineFrame::End => "<end>".into(),
                });
            }
        };
        for c in chunks {
            input.push(c);
            take(&mut input, &mut lines, &mut out);
        }
        if eof {
            lines.set_eof();
            take(&mut input, &mut lines, &mut out);
        }
        out
    }

    #[test]
    fn lines_split_anywhere_frame_the_same() {
        let whole = b"a\r\nbb\n\nccc\r\n";
        let expect = frames(&[whole], true, 10);
        assert_eq!(expect, ["a", "bb", "", "ccc", "<end>"]);
        for cut in 0..whole.len() {
            let (x, y) = whole.split_at(cut);
            assert_eq!(frames(&[x, y], true, 10), expect, "cut at {cut}");
        }
    }

    #[test]
    fn an_over_long_line_is_reported_once_and_dropped_to_its_lf() {
        let long = vec![b'x'; 50];
        assert_eq!(
            frames(&[&long, &long, b"\nok\n"], false, 10),
            ["<too long>", "ok"]
        );
        // Exactly the limit, with a CR, fits.
        assert_eq!(frames(&[b"0123456789\r\n"], false, 10), ["0123456789"]);
        assert_eq!(frames(&[b"0123456789a\n"], false, 10), ["<too long>"]);
    }

    #[test]
    fn the_last_unterminated_line_counts_at_the_end() {
        assert_eq!(frames(&[b"a\nlast"], true, 10), ["a", "last", "<end>"]);
        assert_eq!(frames(&[b"a\nlast\r"], true, 10), ["a", "last", "<end>"]);
        let long = vec![b'x'; 50];
        assert_eq!(frames(&[&long], true, 10), ["<too long>", "<end>"]);
        assert_eq!(
            frames(&[b"0123456789ab"], true, 10),
            ["<too long>", "<end>"]
        );
    }

    /// A partial line costs about `--max-line` at rest, however its bytes
    /// come: one at a time, or at the end of a large read.
    #[test]
    fn a_partial_line_costs_about_the_line_limit() {
        const MAX: usize = 4096;
        let settle = |input: &mut InBuf, lines: &mut Lines| {
            while lines.next(input, MAX).is_some() {}
            input.settle();
        };
        // One byte at a time up to the limit (4096 and a CR).
        let mut input = InBuf::default();
        input.set_limit(MAX + 1);
        let mut lines = Lines::new();
        for _ in 0..MAX + 1 {
            input.push(b"z");
            settle(&mut input, &mut lines);
            assert!(input.capacity() <= MAX + 1, "{}", input.capacity());
        }
        assert_eq!(input.len(), MAX + 1);
        // One more byte: the line is over the limit and dropped.
        input.push(b"z");
        settle(&mut input, &mut lines);
        assert_eq!((input.len(), input.capacity()), (0, 0));

        // A 64 KiB read of whole lines ending in a long partial one.
        let mut input = InBuf::default();
        input.set_limit(MAX + 1);
        let mut lines = Lines::new();
        let mut read = b"short line\n".repeat(6000);
        read.truncate(65536 - 4000 - 1);
        read.extend_from_slice(b"\n");
        read.extend(std::iter::repeat_n(b'p', 3999));
        input.push(&read);
        settle(&mut input, &mut lines);
        assert_eq!(input.len(), 3999);
        assert!(input.capacity() <= MAX + 1, "{}", input.capacity());
        // The rest of that line, then an empty buffer keeps nothing.
        input.push(b"\n");
        assert_eq!(
            lines.next(&mut input, MAX),
            Some(LineFrame::Line(&[b'p'; 3999][..]))
        );
        settle(&mut input, &mut lines);
        assert_eq!(input.capacity(), 0);
    }

    /// Without a limit (WebSocket frames, an HTTP head) the buffer still
    /// gives back what a large read left behind.
    #[test]
    fn settle_without_a_limit_keeps_at_most_twice_the_rest() {
        let mut input = InBuf::default();
        input.push(&[b'w'; 65536]);
        input.consume(65536 - 100);
        input.settle();
        assert_eq!(input.bytes(), &[b'w'; 100][..]);
        assert!(input.capacity() <= KEEP_CAPACITY);
        let mut input = InBuf::default();
        for _ in 0..40_000 {
            input.push(b"t");
            input.settle();
            assert!(input.capacity() <= (2 * input.len()).max(KEEP_CAPACITY));
        }
    }

    #[test]
    fn the_buffer_holds_no_more_than_a_line() {
        let mut input = InBuf::default();
        let mut lines = Lines::new();
        for _ in 0..100 {
            input.push(&[b'y'; 1000]);
            while lines.next(&mut input, 4096).is_some() {}
            assert!(input.len() <= 4097 + 1000);
        }
        assert!(input.release() || input.is_empty());
    }
}
