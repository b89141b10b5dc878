//! HTTP/1.1 on the chat port: a bounded request-head parser (httparse),
//! the routes of the web side (`/`, `/healthz`, `/ws`), and the responses,
//! each with the security headers every answer carries.
//!
//! One request per connection: every answer says `Connection: close`, and
//! no body is read (no route takes one yet), so a client cannot make the
//! server hold more than one bounded head. Pure: bytes in, bytes out.

use std::net::IpAddr;

use super::web;

/// Longest request head accepted (request line and headers).
pub const MAX_HEAD: usize = 8 * 1024;
const MAX_HEADERS: usize = 64;

/// What a request head says, as far as the routes care.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub host: Option<String>,
    pub origin: Option<String>,
    /// `Upgrade: websocket` and `Connection: upgrade` both present.
    pub websocket: bool,
    pub ws_key: Option<String>,
    pub ws_version: Option<String>,
    /// A body follows (`Content-Length` above 0, or chunked).
    pub has_body: bool,
    /// `Content-Length`, if given (and a number).
    pub content_length: Option<u64>,
    /// `Transfer-Encoding` given (a body of unknown length).
    pub chunked: bool,
    /// `Expect: 100-continue`.
    pub expect_continue: bool,
    /// The `Range` header, as given.
    pub range: Option<String>,
    /// `If-None-Match`, as given (a cached copy of the web client).
    pub if_none_match: Option<String>,
    /// The rightmost address of `X-Forwarded-For`, the one the proxy added.
    pub forwarded_for: Option<IpAddr>,
}

/// The result of looking at the bytes received so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Head {
    NeedMore,
    /// A complete head of `len` bytes.
    Complete {
        len: usize,
        request: Box<Request>,
    },
    /// An answer to send before closing (400, 431).
    Refuse(Vec<u8>),
}

/// Parses a request head from the start of `bytes` (received over TLS when
/// `tls`, for the headers of a refusal).
pub fn parse_head(bytes: &[u8], tls: bool) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let window = &bytes[..bytes.len().min(MAX_HEAD)];
    match req.parse(window) {
        Ok(httparse::Status::Partial) if bytes.len() >= MAX_HEAD => {
            Head::Refuse(error(431, "Request Header Fields Too Large", tls))
        }
        Ok(httparse::Status::Partial) => Head::NeedMore,
        Err(httparse::Error::TooManyHeaders) => {
            Head::Refuse(error(431, "Request Header Fields Too Large", tls))
        }
        Err(_) => Head::Refuse(error(400, "Bad Request", tls)),
        Ok(httparse::Status::Complete(len)) => {
            let mut request = Request {
                method: req.method.unwrap_or_default().to_owned(),
                path: req.path.unwrap_or_default().to_owned(),
                ..Request::default()
            };
            let mut upgrade = false;
            let mut connection_upgrade = false;
            let mut lengths = 0;
            for h in req.headers.iter() {
                let Ok(value) = std::str::from_utf8(h.value) else {
                    continue;
                };
                let value = value.trim();
                let name = h.name.to_ascii_lowercase();
                match name.as_str() {
                    "host" => request.host = Some(value.to_owned()),
                    "origin" => request.origin = Some(value.to_owned()),
                    "upgrade" => upgrade |= value.eq_ignore_ascii_case("websocket"),
                    "connection" => {
                        connection_upgrade |= value
                            .split(',')
                            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
                    }
                    "sec-websocket-key" => request.ws_key = Some(value.to_owned()),
                    "sec-websocket-version" => request.ws_version = Some(value.to_owned()),
                    "content-length" => {
                        request.has_body |= value != "0";
                        lengths += 1;
                        request.content_length = value
                            .parse::<u64>()
                            .ok()
                            .filter(|_| value.bytes().all(|b| b.is_ascii_digit()));
                    }
                    "transfer-encoding" => {
                        request.has_body = true;
                        request.chunked = true;
                    }
                    "expect" => {
                        request.expect_continue |= value.eq_ignore_ascii_case("100-continue");
                    }
                    "range" => request.range = Some(value.to_owned()),
                    "if-none-match" => request.if_none_match = Some(value.to_owned()),
                    // The last header's last address is the one our
                    // proxy added; anything before it the client may have
                    // written. One that does not parse names nobody (the
                    // connection keeps the proxy's address), never an
                    // earlier one.
                    "x-forwarded-for" => {
                        request.forwarded_for = value.rsplit(',').next().and_then(parse_forwarded);
                    }
                    _ => {}
                }
            }
            request.websocket = upgrade && connection_upgrade;
            // More than one length: none to trust.
            if lengths > 1 {
                request.content_length = None;
            }
            Head::Complete {
                len,
                request: Box::new(request),
            }
        }
    }
}

/// An address as proxies write it in `X-Forwarded-For`: `203.0.113.7`,
/// `2001:db8::1`, or with a port, `203.0.113.7:5555`, `[2001:db8::1]:80`.
fn parse_forwarded(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    text.parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
}

/// How the connection the request came on looks.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub tls: bool,
    /// Plain HTTP is served here (loopback, or `--plaintext any`).
    pub plaintext_ok: bool,
    /// Origins allowed besides the server's own (`--allowed-origin`).
    pub allowed_origins: &'a [String],
}

/// What to do with a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// Send this and close.
    Respond(Vec<u8>),
    /// Send this `101 Switching Protocols` and speak WebSocket.
    Upgrade(Vec<u8>),
    /// A request for the files routes: the reactor answers it.
    Files(FileRequest),
}

/// A request of the files routes, as far as HTTP can tell.
#[derive(Debug, PartialEq, Eq)]
pub enum FileRequest {
    /// `PUT /files/<slot>` with a body of `length` bytes (`None`: no
    /// length to trust, chunked or several: `411`, the slot used up).
    Put {
        slot: String,
        length: Option<u64>,
        expect_continue: bool,
    },
    /// `GET` (or `HEAD`) `/files/<id>/<name>`, the name percent-decoded.
    Get {
        id: String,
        name: String,
        head: bool,
        range: Option<String>,
    },
}

/// The page's Content-Security-Policy: nothing from elsewhere, no inline
/// script, no framing.
pub const PAGE_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
form-action 'self'";

/// Routes a request.
pub fn route(request: &Request, ctx: Context<'_>) -> Reply {
    if !ctx.tls && !ctx.plaintext_ok {
        // Passwords must not cross the network in clear: send the browser
        // to the same URL over TLS.
        return Reply::Respond(match &request.host {
            Some(host) if valid_host(host) => {
                // Only an origin-form target (`/path?query`) is kept: an
                // absolute or `@host` form would change where it points.
                let path = if request.path.starts_with('/') && !request.path.starts_with("//") {
                    request.path.as_str()
                } else {
                    "/"
                };
                let location = format!("https://{host}{path}");
                respond(
                    301,
                    "Moved Permanently",
                    &[("Location", &location)],
                    "text/plain; charset=utf-8",
                    b"use https\n",
                    ctx.tls,
                )
            }
            _ => error(400, "Bad Request", ctx.tls),
        });
    }
    let get = request.method == "GET" || request.method == "HEAD";
    let path = request.path.split('?').next().unwrap_or_default();
    if let Some(rest) = path.strip_prefix("/files/") {
        return files(request, rest, get, ctx);
    }
    if request.has_body {
        return Reply::Respond(error(413, "Content Too Large", ctx.tls));
    }
    let mut reply = match (get, path) {
        (true, "/healthz") => respond(
            200,
            "OK",
            &[],
            "text/plain; charset=utf-8",
            b"ok\n",
            ctx.tls,
        ),
        (true, path) if let Some(asset) = web::find(path) => web::serve(asset, request, ctx.tls),
        (true, "/ws") if request.method == "GET" => return websocket(request, ctx),
        (false, path) if matches!(path, "/healthz" | "/ws") || web::find(path).is_some() => {
            respond(
                405,
                "Method Not Allowed",
                &[("Allow", "GET, HEAD")],
                "text/plain; charset=utf-8",
                b"method not allowed\n",
                ctx.tls,
            )
        }
        _ => error(404, "Not Found", ctx.tls),
    };
    if request.method == "HEAD"
        && let Some(end) = reply.windows(4).position(|w| w == b"\r\n\r\n")
    {
        reply.truncate(end + 4);
    }
    Reply::Respond(reply)
}

/// `/files/...`: a `PUT` to a slot, or a `GET` of a stored file. What
/// is not one of those is a 404 (or 405), answered here.
fn files(request: &Request, rest: &str, get: bool, ctx: Context<'_>) -> Reply {
    let mut parts = rest.split('/');
    let (first, second, more) = (parts.next(), parts.next(), parts.next());
    match (request.method.as_str(), first, second, more) {
        ("PUT", Some(slot), None, None) if !slot.is_empty() => Reply::Files(FileRequest::Put {
            slot: slot.to_owned(),
            length: request.content_length.filter(|_| !request.chunked),
            expect_continue: request.expect_continue,
        }),
        (_, Some(id), Some(name), None) if get && !request.has_body => match url_decode(name) {
            Some(name) => Reply::Files(FileRequest::Get {
                id: id.to_owned(),
                name,
                head: request.method == "HEAD",
                range: request.range.clone(),
            }),
            None => Reply::Respond(error(404, "Not Found", ctx.tls)),
        },
        ("PUT", ..) | ("GET" | "HEAD", ..) => Reply::Respond(error(404, "Not Found", ctx.tls)),
        _ => Reply::Respond(respond(
            405,
            "Method Not Allowed",
            &[("Allow", "GET, HEAD, PUT")],
            "text/plain; charset=utf-8",
            b"method not allowed\n",
            ctx.tls,
        )),
    }
}

/// A file name as it goes into a URL: UTF-8, with everything but ASCII
/// letters, digits and `-._~` written `%XX`.
pub fn url_encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A path segment with its `%XX` decoded, if that is UTF-8 (and every `%`
/// starts an escape).
pub fn url_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            // Two hex digits: `from_str_radix` alone would take `%+1`.
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn websocket(request: &Request, ctx: Context<'_>) -> Reply {
    let (Some(key), true) = (&request.ws_key, request.websocket) else {
        return Reply::Respond(respond(
            426,
            "Upgrade Required",
            &[("Upgrade", "websocket")],
            "text/plain; charset=utf-8",
            b"this is a WebSocket endpoint\n",
            ctx.tls,
        ));
    };
    if request.ws_version.as_deref() != Some("13") {
        return Reply::Respond(respond(
            426,
            "Upgrade Required",
            &[("Sec-WebSocket-Version", "13")],
            "text/plain; charset=utf-8",
            b"WebSocket version 13 only\n",
            ctx.tls,
        ));
    }
    if let Some(origin) = &request.origin
        && !origin_allowed(origin, request.host.as_deref(), ctx)
    {
        return Reply::Respond(error(403, "Forbidden", ctx.tls));
    }
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut head = String::from("HTTP/1.1 101 Switching Protocols\r\n");
    head.push_str("Upgrade: websocket\r\nConnection: Upgrade\r\n");
    head.push_str(&format!("Sec-WebSocket-Accept: {accept}\r\n"));
    push_security_headers(&mut head, ctx.tls);
    head.push_str("\r\n");
    Reply::Upgrade(head.into_bytes())
}

/// A browser's `Origin` must be the page's own (scheme and `Host`), or one
/// the operator allowed: otherwise any web page could open a chat
/// connection in its visitor's name (cross-site WebSocket hijacking).
pub fn origin_allowed(origin: &str, host: Option<&str>, ctx: Context<'_>) -> bool {
    if ctx
        .allowed_origins
        .iter()
        .any(|o| o.trim_end_matches('/').eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let scheme = if ctx.tls { "https://" } else { "http://" };
    let (Some(host), Some(rest)) = (host, origin.get(..scheme.len())) else {
        return false;
    };
    rest.eq_ignore_ascii_case(scheme) && origin[scheme.len()..].eq_ignore_ascii_case(host)
}

/// A `Host` fit to go into a `Location` header: no spaces, slashes or
/// control characters.
fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b))
}

fn push_security_headers(head: &mut String, tls: bool) {
    head.push_str("X-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\n");
    if tls {
        head.push_str("Strict-Transport-Security: max-age=31536000\r\n");
    }
}

/// The head of a response whose body the caller sends (a download): the
/// status, `headers`, `Connection: close` and the security headers.
pub fn head(status: u16, reason: &str, headers: &[(&str, &str)], tls: bool) -> Vec<u8> {
    let mut head = format!("HTTP/1.1 {status} {reason}\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("Connection: close\r\n");
    push_security_headers(&mut head, tls);
    head.push_str("\r\n");
    head.into_bytes()
}

/// A complete response that closes the connection.
pub fn respond(
    status: u16,
    reason: &str,
    extra: &[(&str, &str)],
    content_type: &str,
    body: &[u8],
    tls: bool,
) -> Vec<u8> {
    let mut all = vec![("Cache-Control", "no-store")];
    all.extend_from_slice(extra);
    respond_with(status, reason, &all, content_type, body, tls)
}

/// A complete response that closes the connection, with exactly the
/// headers `extra` besides the framing and security ones.
pub fn respond_with(
    status: u16,
    reason: &str,
    extra: &[(&str, &str)],
    content_type: &str,
    body: &[u8],
    tls: bool,
) -> Vec<u8> {
    let mut head = format!("HTTP/1.1 {status} {reason}\r\n");
    head.push_str(&format!(
        "Content-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    ));
    for (name, value) in extra {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    push_security_headers(&mut head, tls);
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    out
}

/// A short error response (`404 not found`).
pub fn error(status: u16, reason: &str, tls: bool) -> Vec<u8> {
    let body = format!("{}\n", reason.to_ascii_lowercase());
    respond(
        status,
        reason,
        &[],
        "text/plain; charset=utf-8",
        body.as_bytes(),
        tls,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const CTX: Context<'static> = Context {
        tls: true,
        plaintext_ok: true,
        allowed_origins: &[],
    };

    fn request(text: &str) -> Request {
        match parse_head(text.as_bytes(), true) {
            Head::Complete { request, len } => {
                assert_eq!(len, text.len());
                *request
            }
            other => panic!("{other:?}"),
        }
    }

    fn status(reply: &Reply) -> String {
        let bytes = match reply {
            Reply::Respond(b) | Reply::Upgrade(b) => b,
            Reply::Files(f) => return format!("{f:?}"),
        };
        String::from_utf8_lossy(&bytes[..12]).into_owned()
    }

    #[test]
    fn heads_are_bounded() {
        assert_eq!(
            parse_head(b"GET / HTTP/1.1\r\nHost: x\r\n", true),
            Head::NeedMore
        );
        let mut big = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_HEAD));
        assert!(
            matches!(parse_head(&big, true), Head::Refuse(r) if r.starts_with(b"HTTP/1.1 431"))
        );
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..100 {
            many.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert!(
            matches!(parse_head(&many, true), Head::Refuse(r) if r.starts_with(b"HTTP/1.1 431"))
        );
        assert!(
            matches!(parse_head(b"GET / HTTP/1.1\r\nbad header\r\n\r\n", true), Head::Refuse(r) if r.starts_with(b"HTTP/1.1 400"))
        );
    }

    #[test]
    fn routes_and_headers() {
        let healthz = route(&request("GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"), CTX);
        let Reply::Respond(bytes) = &healthz else {
            panic!()
        };
        let text = String::from_utf8_lossy(bytes);
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\nok\n"), "{text}");
        for h in [
            "X-Content-Type-Options: nosniff",
            "Referrer-Policy: no-referrer",
            "Strict-Transport-Security",
        ] {
            assert!(text.contains(h), "{h} in {text}");
        }
        let plain = Context { tls: false, ..CTX };
        let Reply::Respond(bytes) = route(&request("GET /healthz HTTP/1.1\r\n\r\n"), plain) else {
            panic!()
        };
        assert!(!String::from_utf8_lossy(&bytes).contains("Strict-Transport-Security"));
        assert_eq!(
            status(&route(&request("GET /nope HTTP/1.1\r\n\r\n"), CTX)),
            "HTTP/1.1 404"
        );
        assert_eq!(
            status(&route(
                &request("POST /ws HTTP/1.1\r\nContent-Length: 5\r\n\r\n"),
                CTX
            )),
            "HTTP/1.1 413"
        );
        assert_eq!(
            status(&route(&request("POST /healthz HTTP/1.1\r\n\r\n"), CTX)),
            "HTTP/1.1 405"
        );
        let page = route(&request("GET / HTTP/1.1\r\n\r\n"), CTX);
        let Reply::Respond(bytes) = page else {
            panic!()
        };
        assert!(
            String::from_utf8_lossy(&bytes).contains("Content-Security-Policy: default-src 'self'")
        );
    }

    #[test]
    fn plain_http_from_afar_is_sent_to_https() {
        let far = Context {
            tls: false,
            plaintext_ok: false,
            ..CTX
        };
        let Reply::Respond(bytes) = route(
            &request("GET /ws?x=1 HTTP/1.1\r\nHost: chat.example.org:59000\r\n\r\n"),
            far,
        ) else {
            panic!()
        };
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.starts_with("HTTP/1.1 301"), "{text}");
        assert!(
            text.contains("Location: https://chat.example.org:59000/ws?x=1\r\n"),
            "{text}"
        );
        assert_eq!(
            status(&route(&request("GET / HTTP/1.1\r\nHost: a b\r\n\r\n"), far)),
            "HTTP/1.1 400"
        );
    }

    #[test]
    fn websocket_upgrades_check_the_origin() {
        let upgrade = "GET /ws HTTP/1.1\r\nHost: localhost:59000\r\nUpgrade: websocket\r\n\
                       Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                       Sec-WebSocket-Version: 13\r\n";
        let ok = route(
            &request(&format!("{upgrade}Origin: https://localhost:59000\r\n\r\n")),
            CTX,
        );
        let Reply::Upgrade(bytes) = ok else {
            panic!("{ok:?}")
        };
        assert!(
            String::from_utf8_lossy(&bytes)
                .contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n")
        );
        assert!(matches!(
            route(&request(&format!("{upgrade}\r\n")), CTX),
            Reply::Upgrade(_)
        ));
        for origin in ["https://evil.example", "http://localhost:59000", "null"] {
            let r = route(&request(&format!("{upgrade}Origin: {origin}\r\n\r\n")), CTX);
            assert_eq!(status(&r), "HTTP/1.1 403", "{origin}");
        }
        let allowed = ["https://app.example.org".to_owned()];
        let ctx = Context {
            allowed_origins: &allowed,
            ..CTX
        };
        let r = route(
            &request(&format!("{upgrade}Origin: https://app.example.org\r\n\r\n")),
            ctx,
        );
        assert!(matches!(r, Reply::Upgrade(_)));
        assert_eq!(
            status(&route(&request("GET /ws HTTP/1.1\r\n\r\n"), CTX)),
            "HTTP/1.1 426"
        );
    }

    #[test]
    fn the_files_routes() {
        let put = route(
            &request(
                "PUT /files/abc HTTP/1.1\r\nContent-Length: 12\r\nExpect: 100-continue\r\n\r\n",
            ),
            CTX,
        );
        assert_eq!(
            put,
            Reply::Files(FileRequest::Put {
                slot: "abc".into(),
                length: Some(12),
                expect_continue: true
            })
        );
        for head in [
            "PUT /files/abc HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "PUT /files/abc HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            "PUT /files/abc HTTP/1.1\r\n\r\n",
            "PUT /files/abc HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
            "PUT /files/abc HTTP/1.1\r\nContent-Length: 6\r\nContent-Length: 9\r\nContent-Length: 5\r\n\r\n",
        ] {
            let Reply::Files(FileRequest::Put { length, .. }) = route(&request(head), CTX) else {
                panic!("{head}");
            };
            assert_eq!(length, None, "{head}");
        }
        let get = route(
            &request("GET /files/id1/na%20me%C3%A9.txt?x HTTP/1.1\r\nRange: bytes=1-2\r\n\r\n"),
            CTX,
        );
        assert_eq!(
            get,
            Reply::Files(FileRequest::Get {
                id: "id1".into(),
                name: "na meé.txt".into(),
                head: false,
                range: Some("bytes=1-2".into())
            })
        );
        for path in [
            "/files/",
            "/files/a/b/c",
            "/files/a/%zz",
            "/files/a/%C3",
            "/files/a/%",
            "/files/a/%+1",
        ] {
            let r = route(&request(&format!("GET {path} HTTP/1.1\r\n\r\n")), CTX);
            assert_eq!(status(&r), "HTTP/1.1 404", "{path}");
        }
        assert_eq!(
            status(&route(&request("DELETE /files/a/b HTTP/1.1\r\n\r\n"), CTX)),
            "HTTP/1.1 405"
        );
        assert_eq!(url_encode("a b/é.txt"), "a%20b%2F%C3%A9.txt");
        assert_eq!(url_decode(&url_encode("x y%z")).as_deref(), Some("x y%z"));
    }

    #[test]
    fn forwarded_for_takes_the_address_the_proxy_added() {
        let r = request("GET / HTTP/1.1\r\nX-Forwarded-For: 10.0.0.1, 203.0.113.5\r\n\r\n");
        assert_eq!(r.forwarded_for, Some("203.0.113.5".parse().expect("ip")));
    }
}
