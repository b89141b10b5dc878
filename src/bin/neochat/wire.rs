//! The client's side of the socket: bounded line reading, and turning
//! connection errors into one readable phrase. No terminal here.

use std::io::{self, BufRead, ErrorKind};

/// The longest server line kept; the rest of a longer one is dropped, so a
/// misbehaving server cannot make the client hold unbounded memory.
pub const MAX_LINE: usize = 64 * 1024;

/// Reads one LF-terminated line into `buf` (cleared first), without the LF
/// and one CR before it, keeping at most `max` bytes of it. An unterminated
/// last line counts as a line. Returns `Ok(false)` at end of input when
/// nothing was read.
pub fn read_line(r: &mut impl BufRead, buf: &mut Vec<u8>, max: usize) -> io::Result<bool> {
    buf.clear();
    let mut any = false;
    loop {
        let chunk = match r.fill_buf() {
            Ok(chunk) => chunk,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            break;
        }
        any = true;
        let (line, used, done) = match memchr::memchr(b'\n', chunk) {
            Some(i) => (&chunk[..i], i + 1, true),
            None => (chunk, chunk.len(), false),
        };
        let room = max.saturating_sub(buf.len());
        buf.extend_from_slice(&line[..line.len().min(room)]);
        r.consume(used);
        if done {
            break;
        }
    }
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(any)
}

/// A connection error as a short lowercase phrase: `connection refused`,
/// not `Connection refused (os error 111)`.
pub fn describe(e: &io::Error) -> String {
    let text = match e.kind() {
        ErrorKind::ConnectionRefused => return "connection refused".into(),
        ErrorKind::TimedOut => return "timed out".into(),
        _ => e.to_string(),
    };
    let text = match text.rfind(" (os error ") {
        Some(i) if text.ends_with(')') => &text[..i],
        _ => &text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => "unknown error".into(),
    }
}

/// Checks that `s` looks like `HOST:PORT` (`[::1]:59000` for IPv6); name
/// resolution happens when connecting.
pub fn parse_addr(s: &str) -> Result<String, String> {
    let bad = || format!("expected HOST:PORT (like 127.0.0.1:59000), got `{s}`");
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(bad());
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(bad());
    }
    // The host goes into the pin file, one server per line.
    if host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad());
    }
    Ok(s.to_owned())
}

/// The host part of an address checked by [`parse_addr`], brackets kept
/// (`[::1]`).
pub fn host(addr: &str) -> &str {
    addr.rsplit_once(':').map_or(addr, |(host, _)| host)
}

/// Whether `host` (as typed) names this machine: `localhost`, an address
/// in 127.0.0.0/8, or `::1` (plain or IPv4-mapped). Decided from the text,
/// not from name resolution, so what a name resolves to never turns TLS
/// off.
pub fn is_loopback(host: &str) -> bool {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if bare.eq_ignore_ascii_case("localhost") || bare.eq_ignore_ascii_case("localhost.") {
        return true;
    }
    match bare.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) => ip.is_loopback(),
        Ok(std::net::IpAddr::V6(ip)) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufReader, Cursor, Read};

    /// Hands out its data a few bytes at a time, like a slow socket.
    struct Trickle<'a>(&'a [u8], usize);

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.0.len().min(self.1).min(out.len());
            out[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    fn lines(data: &[u8], step: usize, max: usize) -> Vec<Vec<u8>> {
        let mut r = BufReader::with_capacity(4, Trickle(data, step));
        let mut buf = Vec::new();
        let mut out = Vec::new();
        while read_line(&mut r, &mut buf, max).unwrap() {
            out.push(buf.clone());
        }
        out
    }

    #[test]
    fn lines_split_anywhere() {
        let data = b"* welcome\r\n? choice x\n\nbob: hi\nlast";
        let want: Vec<Vec<u8>> = vec![
            b"* welcome".to_vec(),
            b"? choice x".to_vec(),
            b"".to_vec(),
            b"bob: hi".to_vec(),
            b"last".to_vec(),
        ];
        for step in 1..=data.len() {
            assert_eq!(lines(data, step, 100), want, "step {step}");
        }
        assert!(lines(b"", 1, 100).is_empty());
    }

    #[test]
    fn long_lines_are_cut_not_kept() {
        let mut data = vec![b'x'; 50];
        data.extend_from_slice(b"\nnext\n");
        assert_eq!(lines(&data, 7, 10), vec![vec![b'x'; 10], b"next".to_vec()]);
    }

    #[test]
    fn cursor_reader() {
        let mut r = Cursor::new(b"a\nb".to_vec());
        let mut buf = Vec::new();
        assert!(read_line(&mut r, &mut buf, MAX_LINE).unwrap());
        assert_eq!(buf, b"a");
        assert!(read_line(&mut r, &mut buf, MAX_LINE).unwrap());
        assert_eq!(buf, b"b");
        assert!(!read_line(&mut r, &mut buf, MAX_LINE).unwrap());
    }

    #[test]
    fn errors_read_well() {
        let refused = io::Error::from(ErrorKind::ConnectionRefused);
        assert_eq!(describe(&refused), "connection refused");
        assert_eq!(
            describe(&io::Error::from_raw_os_error(libc::ENETUNREACH)),
            "network is unreachable"
        );
        assert_eq!(describe(&io::Error::other("Weird thing")), "weird thing");
    }

    #[test]
    fn addresses() {
        for ok in [
            "127.0.0.1:59000",
            "localhost:1",
            "[::1]:59000",
            "chat.example.org:0",
        ] {
            assert_eq!(parse_addr(ok).as_deref(), Ok(ok));
        }
        for bad in [
            "127.0.0.1",
            ":59000",
            "host:",
            "host:99999",
            "host:x",
            "::1:59000",
            "",
            "two words:1",
            "tab\there:1",
        ] {
            assert!(parse_addr(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn loopback_hosts_are_told_from_the_text() {
        assert_eq!(host("[::1]:59000"), "[::1]");
        assert_eq!(host("chat.example.org:1"), "chat.example.org");
        for local in [
            "localhost",
            "LocalHost",
            "127.0.0.1",
            "127.9.8.7",
            "[::1]",
            "[::ffff:127.0.0.1]",
        ] {
            assert!(is_loopback(local), "{local}");
        }
        for remote in [
            "0.0.0.0",
            "10.0.0.1",
            "128.0.0.1",
            "[::2]",
            "[::]",
            "localhost.example.org",
            "mylocalhost",
            "chat.example.org",
            "127.0.0.1.nip.io",
        ] {
            assert!(!is_loopback(remote), "{remote}");
        }
    }
}
