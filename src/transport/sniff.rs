//! Telling what a client speaks from its first bytes, before anything is
//! sent to it: a TLS record, an HTTP/1.x request line, binary junk, or the
//! line protocol. Pure functions over a byte prefix; the caller supplies
//! the bytes seen so far and the 0.3 s deadline for clients that wait.

/// What the first bytes of a stream say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sniffed {
    /// A TLS handshake record header (`16 03`).
    Tls,
    /// A complete HTTP/1.x request line.
    Http,
    /// Text that is not an HTTP request line: the line protocol.
    Lines,
    /// A NUL or bytes that are not UTF-8 before the first LF.
    Junk,
    /// Not enough bytes to tell yet.
    NeedMore,
}

const TLS_HANDSHAKE: u8 = 0x16;
const TLS_MAJOR: u8 = 0x03;
/// Longest method name we wait for (`OPTIONS`, `CONNECT`, WebDAV's
/// `PROPPATCH`...).
const MAX_METHOD: usize = 20;
/// Longest request line we wait for before calling it text.
const MAX_REQUEST_LINE: usize = 8192;

/// Classifies the first bytes of a connection. `tls_allowed` is false inside
/// TLS (a second handshake there is junk).
pub fn sniff(bytes: &[u8], tls_allowed: bool) -> Sniffed {
    match bytes {
        [] => return Sniffed::NeedMore,
        [TLS_HANDSHAKE] if tls_allowed => return Sniffed::NeedMore,
        [TLS_HANDSHAKE, TLS_MAJOR, ..] if tls_allowed => return Sniffed::Tls,
        _ => {}
    }
    let line_end = memchr::memchr(b'\n', bytes);
    let head = &bytes[..line_end.unwrap_or(bytes.len())];
    if is_junk(head, line_end.is_some()) {
        return Sniffed::Junk;
    }
    let head = head.strip_suffix(b"\r").unwrap_or(head);
    match http_prefix(head) {
        Prefix::Complete if line_end.is_some() => Sniffed::Http,
        Prefix::Complete | Prefix::Partial
            if line_end.is_none() && head.len() < MAX_REQUEST_LINE =>
        {
            Sniffed::NeedMore
        }
        _ => Sniffed::Lines,
    }
}

/// A NUL, or bytes that cannot be UTF-8, in the text of a first line. An
/// incomplete sequence at the end of an unfinished line may still become
/// valid, so it is not junk yet.
pub fn is_junk(head: &[u8], complete: bool) -> bool {
    if memchr::memchr(0, head).is_some() {
        return true;
    }
    match std::str::from_utf8(head) {
        Ok(_) => false,
        Err(e) => complete || e.error_len().is_some(),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Prefix {
    /// `METHOD SP target SP HTTP/digit...`
    Complete,
    /// Could still become one.
    Partial,
    No,
}

/// How far `line` (no LF) matches `METHOD SP target SP HTTP/digit`.
fn http_prefix(line: &[u8]) -> Prefix {
    let mut parts = line.splitn(3, |&b| b == b' ');
    let method = parts.next().unwrap_or_default();
    if method.len() > MAX_METHOD || !method.iter().all(u8::is_ascii_uppercase) {
        return Prefix::No;
    }
    let Some(target) = parts.next() else {
        return Prefix::Partial;
    };
    if method.is_empty() {
        return Prefix::No;
    }
    let Some(version) = parts.next() else {
        return Prefix::Partial;
    };
    if target.is_empty() {
        return Prefix::No;
    }
    const V: &[u8] = b"HTTP/";
    if version.len() <= V.len() {
        return if V.starts_with(version) {
            Prefix::Partial
        } else {
            Prefix::No
        };
    }
    if version.starts_with(V) && version[V.len()].is_ascii_digit() && !version.contains(&b' ') {
        Prefix::Complete
    } else {
        Prefix::No
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_records_are_recognised_from_two_bytes() {
        assert_eq!(sniff(b"\x16", true), Sniffed::NeedMore);
        assert_eq!(sniff(b"\x16\x03\x01\x02\x00", true), Sniffed::Tls);
        // Inside TLS, or with TLS off, it is junk like any control byte
        // that is not text... 0x16 is valid UTF-8, so only what follows
        // decides; a NUL soon makes it junk.
        assert_eq!(sniff(b"\x16\x03\x01\x02\x00", false), Sniffed::Junk);
    }

    #[test]
    fn http_request_lines_wait_for_their_end() {
        for prefix in [
            "G",
            "GET",
            "GET ",
            "GET /",
            "GET /ws ",
            "GET /ws HTTP/",
            "GET /ws HTTP/1.1",
        ] {
            assert_eq!(
                sniff(prefix.as_bytes(), true),
                Sniffed::NeedMore,
                "{prefix}"
            );
        }
        assert_eq!(sniff(b"GET /ws HTTP/1.1\r\n", true), Sniffed::Http);
        assert_eq!(sniff(b"PRI * HTTP/2.0\r\n", true), Sniffed::Http);
        assert_eq!(sniff(b"HEAD / HTTP/1.0\nHost: x\n", true), Sniffed::Http);
    }

    #[test]
    fn text_is_the_line_protocol_as_soon_as_it_cannot_be_http() {
        for text in [
            "L\n",
            "R\n",
            "r",
            "alice",
            "GET\n",
            "GET / FTP/1\n",
            "get / HTTP/1.1\n",
            "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
        ] {
            assert_eq!(sniff(text.as_bytes(), true), Sniffed::Lines, "{text:?}");
        }
    }

    #[test]
    fn binary_junk_is_recognised_before_the_first_lf() {
        assert_eq!(sniff(b"\0", true), Sniffed::Junk);
        assert_eq!(sniff(&[0u8; 512], true), Sniffed::Junk);
        assert_eq!(sniff(b"ab\xff", true), Sniffed::Junk);
        assert_eq!(sniff(b"GE\0", true), Sniffed::Junk);
        // An unfinished UTF-8 sequence may still complete.
        assert_eq!(sniff("é".as_bytes().split_at(1).0, true), Sniffed::Lines);
        // After the first LF, bytes are the line protocol's business.
        assert_eq!(sniff(b"L\n\0\0", true), Sniffed::Lines);
    }
}
