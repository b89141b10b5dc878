//! The PROXY protocol header (HAProxy's v1 text and v2 binary forms) that a
//! trusted reverse proxy puts before a connection's own bytes, naming the
//! real client. Pure parsing; whether the peer may send one is the
//! caller's decision (`--proxy-from`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

const V1_PREFIX: &[u8] = b"PROXY ";
/// The longest v1 header, CRLF included (the specification's figure).
const V1_MAX: usize = 107;
const V2_SIG: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// A v2 header's address block may carry TLVs; more than this is refused.
const V2_MAX_BODY: usize = 1024;

/// What the first bytes of a trusted peer's stream hold.
#[derive(Debug, PartialEq, Eq)]
pub enum Proxied {
    /// No PROXY header: the stream starts with the client's own bytes.
    Absent,
    /// Could be a header; wait for more bytes.
    NeedMore,
    /// A header of `len` bytes; `Some` client address, or `None` for a
    /// header that names none (`UNKNOWN`, `LOCAL`, a Unix socket): the
    /// connection is the proxy's own.
    Header {
        len: usize,
        client: Option<SocketAddr>,
    },
    /// Starts like a header but is not a valid one.
    Invalid,
}

/// Parses a PROXY header at the start of `bytes`.
pub fn parse(bytes: &[u8]) -> Proxied {
    if bytes.is_empty() {
        return Proxied::NeedMore;
    }
    let v1_len = bytes.len().min(V1_PREFIX.len());
    if bytes[..v1_len] == V1_PREFIX[..v1_len] {
        return if bytes.len() < V1_PREFIX.len() {
            Proxied::NeedMore
        } else {
            parse_v1(bytes)
        };
    }
    let v2_len = bytes.len().min(V2_SIG.len());
    if bytes[..v2_len] == V2_SIG[..v2_len] {
        return if bytes.len() < V2_SIG.len() {
            Proxied::NeedMore
        } else {
            parse_v2(bytes)
        };
    }
    Proxied::Absent
}

fn parse_v1(bytes: &[u8]) -> Proxied {
    let window = &bytes[..bytes.len().min(V1_MAX)];
    // A header ends with CRLF: a bare LF first means a line of text.
    if let Some(lf) = memchr::memchr(b'\n', window)
        && (lf == 0 || window[lf - 1] != b'\r')
    {
        return Proxied::Invalid;
    }
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        return if bytes.len() >= V1_MAX {
            Proxied::Invalid
        } else {
            Proxied::NeedMore
        };
    };
    let Ok(text) = std::str::from_utf8(&bytes[..end]) else {
        return Proxied::Invalid;
    };
    let len = end + 2;
    let parts: Vec<&str> = text.split(' ').collect();
    match parts.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Proxied::Header { len, client: None },
        ["PROXY", family @ ("TCP4" | "TCP6"), src, dst, sport, dport] => {
            let (Ok(src), Ok(_dst), Ok(sport), Ok(_dport)) = (
                src.parse::<IpAddr>(),
                dst.parse::<IpAddr>(),
                sport.parse::<u16>(),
                dport.parse::<u16>(),
            ) else {
                return Proxied::Invalid;
            };
            if (*family == "TCP4") != src.is_ipv4() {
                return Proxied::Invalid;
            }
            Proxied::Header {
                len,
                client: Some(SocketAddr::new(src, sport)),
            }
        }
        _ => Proxied::Invalid,
    }
}

fn parse_v2(bytes: &[u8]) -> Proxied {
    if bytes.len() < 16 {
        return Proxied::NeedMore;
    }
    let ver_cmd = bytes[12];
    let family = bytes[13];
    let body = u16::from_be_bytes([bytes[14], bytes[15]]) as usize;
    if ver_cmd >> 4 != 2 || body > V2_MAX_BODY {
        return Proxied::Invalid;
    }
    let len = 16 + body;
    if bytes.len() < len {
        return Proxied::NeedMore;
    }
    let addr = &bytes[16..len];
    let client = match (ver_cmd & 0x0f, family) {
        // LOCAL: the proxy's own connection (health checks).
        (0, _) => None,
        // PROXY over TCP or UDP, IPv4.
        (1, 0x11 | 0x12) if addr.len() >= 12 => {
            let ip = Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]);
            Some(SocketAddr::new(
                ip.into(),
                u16::from_be_bytes([addr[8], addr[9]]),
            ))
        }
        (1, 0x21 | 0x22) if addr.len() >= 36 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&addr[..16]);
            Some(SocketAddr::new(
                Ipv6Addr::from(octets).into(),
                u16::from_be_bytes([addr[32], addr[33]]),
            ))
        }
        // UNSPEC or Unix sockets: no address to use.
        (1, 0x00 | 0x31 | 0x32) => None,
        _ => return Proxied::Invalid,
    };
    Proxied::Header { len, client }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(family: u8, addr: &[u8]) -> Vec<u8> {
        let mut h = V2_SIG.to_vec();
        h.push(0x21);
        h.push(family);
        h.extend_from_slice(&(addr.len() as u16).to_be_bytes());
        h.extend_from_slice(addr);
        h
    }

    #[test]
    fn v1_headers() {
        let h = b"PROXY TCP4 203.0.113.9 127.0.0.1 5555 59000\r\nL\n";
        assert_eq!(
            parse(h),
            Proxied::Header {
                len: h.len() - 2,
                client: Some("203.0.113.9:5555".parse().expect("addr"))
            }
        );
        assert_eq!(
            parse(b"PROXY TCP6 2001:db8::1 ::1 1 2\r\n"),
            Proxied::Header {
                len: 32,
                client: Some("[2001:db8::1]:1".parse().expect("addr"))
            }
        );
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n"),
            Proxied::Header {
                len: 15,
                client: None
            }
        );
        assert_eq!(parse(b"PRO"), Proxied::NeedMore);
        assert_eq!(parse(b"PROXY TCP4 1.2.3.4"), Proxied::NeedMore);
        assert_eq!(parse(b"PROXY TCP4 1.2.3.4 x 1 2\r\n"), Proxied::Invalid);
        assert_eq!(parse(b"PROXY TCP4 ::1 ::1 1 2\r\n"), Proxied::Invalid);
        assert_eq!(parse(&[b'P'; 200]), Proxied::Absent);
        let mut endless = b"PROXY ".to_vec();
        endless.extend_from_slice(&[b'x'; 200]);
        assert_eq!(parse(&endless), Proxied::Invalid);
        assert_eq!(parse(b"L\n"), Proxied::Absent);
        assert_eq!(parse(b"PROXY is what I typed\n"), Proxied::Invalid);
        assert_eq!(parse(b"\x16\x03\x01"), Proxied::Absent);
    }

    #[test]
    fn v2_headers() {
        let mut addr = vec![198, 51, 100, 7, 127, 0, 0, 1];
        addr.extend_from_slice(&4242u16.to_be_bytes());
        addr.extend_from_slice(&59000u16.to_be_bytes());
        let h = v2(0x11, &addr);
        assert_eq!(
            parse(&h),
            Proxied::Header {
                len: 28,
                client: Some("198.51.100.7:4242".parse().expect("addr"))
            }
        );
        for cut in 0..h.len() {
            assert_eq!(parse(&h[..cut]), Proxied::NeedMore, "cut {cut}");
        }
        let mut local = h.clone();
        local[12] = 0x20;
        assert!(matches!(
            parse(&local),
            Proxied::Header { client: None, .. }
        ));
        let mut bad = h;
        bad[12] = 0x31;
        assert_eq!(parse(&bad), Proxied::Invalid);
        let mut addr6 = vec![0x20, 0x01, 0x0d, 0xb8];
        addr6.extend_from_slice(&[0; 12]);
        addr6.extend_from_slice(&[0; 16]);
        addr6.extend_from_slice(&7u16.to_be_bytes());
        addr6.extend_from_slice(&8u16.to_be_bytes());
        assert_eq!(
            parse(&v2(0x21, &addr6)),
            Proxied::Header {
                len: 52,
                client: Some("[2001:db8::]:7".parse().expect("addr"))
            }
        );
    }
}
