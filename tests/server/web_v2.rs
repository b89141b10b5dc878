//! The web client as the server hands it out (issue 14): the page at `/`
//! over HTTPS with its strict Content-Security-Policy, the files it names
//! by versioned URL, caching (a year for a versioned file, revalidation
//! with `ETag` and `304` for the rest), `HEAD`, and what is not a file of
//! the page. What the page does in a browser is tested in `tests/browser`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::util::*;
use crate::wire::{
    HttpResponse, assert_security_headers, http_exchange, logged_fingerprint, read_until_closed,
    tls,
};

const ALPN_HTTP: &[u8] = b"http/1.1";

#[track_caller]
fn https(addr: SocketAddr, fp: &str, request: &str) -> HttpResponse {
    let mut stream = tls(addr, fp, Some(ALPN_HTTP));
    http_exchange(&mut stream, request)
}

#[track_caller]
fn get(addr: SocketAddr, fp: &str, path: &str, extra: &str) -> HttpResponse {
    https(
        addr,
        fp,
        &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}\r\n"),
    )
}

/// The file of `web/` the server must be serving, byte for byte.
fn source(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("web").join(name))
        .unwrap_or_else(|e| panic!("web/{name}: {e}"))
}

/// Every `"/<file>?v=<digest>"` the page names.
fn versioned_urls(page: &str) -> Vec<String> {
    page.split('"')
        .filter(|s| s.starts_with('/') && s.contains("?v="))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_page_and_its_files_come_over_https_with_a_strict_policy() {
    let server = Server::start(&[]);
    let fp = logged_fingerprint(&server.output());
    let page = get(server.addr, &fp, "/", "");
    assert_eq!(page.status, 200, "{page:?}");
    assert_security_headers(&page, true);
    assert_eq!(
        page.header("Content-Type"),
        Some("text/html; charset=utf-8")
    );
    let csp = page.header("Content-Security-Policy").expect("a CSP");
    for part in [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(part), "{part} not in {csp}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(page.header("Cache-Control"), Some("no-cache"));
    let html = String::from_utf8(page.body.clone()).expect("UTF-8 page");
    assert!(
        html.contains("<script type=\"module\" src=\"/app.js?v="),
        "{html}"
    );
    let urls = versioned_urls(&html);
    let mut total = page.body.len();
    for (file, kind) in [
        ("app.js", "text/javascript"),
        ("boot.js", "text/javascript"),
        ("style.css", "text/css"),
        ("manifest.webmanifest", "application/manifest+json"),
        ("icon.svg", "image/svg+xml"),
    ] {
        let url = urls
            .iter()
            .find(|u| u.starts_with(&format!("/{file}?v=")))
            .unwrap_or_else(|| panic!("the page does not name /{file}: {urls:?}"));
        let resp = get(server.addr, &fp, url, "");
        assert_eq!(resp.status, 200, "{url}: {resp:?}");
        assert_security_headers(&resp, true);
        assert!(
            resp.header("Content-Type")
                .is_some_and(|t| t.starts_with(kind)),
            "{url}: {resp:?}"
        );
        assert_eq!(
            resp.header("Cache-Control"),
            Some("public, max-age=31536000, immutable"),
            "{url}"
        );
        assert!(resp.body == source(file), "{url} is not web/{file}");
        if file != "manifest.webmanifest" && file != "icon.svg" {
            total += resp.body.len();
        }
    }
    // The budget: HTML, CSS and JavaScript at most 100 KB.
    assert!(total <= 100_000, "the page is {total} bytes");
}

#[test]
fn a_cached_copy_is_revalidated_with_304_and_stale_versions_are_not_kept() {
    let server = Server::start(&[]);
    let fp = logged_fingerprint(&server.output());
    let page = get(server.addr, &fp, "/", "");
    let etag = page.header("ETag").expect("an ETag").to_owned();
    let again = get(server.addr, &fp, "/", &format!("If-None-Match: {etag}\r\n"));
    assert_eq!(again.status, 304, "{again:?}");
    assert!(again.body.is_empty(), "{again:?}");
    assert_eq!(again.header("ETag"), Some(etag.as_str()));
    let other = get(server.addr, &fp, "/", "If-None-Match: \"0123\"\r\n");
    assert_eq!(other.status, 200, "{other:?}");
    // An old build's URL gets today's file, not to be kept for a year.
    let stale = get(server.addr, &fp, "/app.js?v=0000000000000000", "");
    assert_eq!(stale.status, 200, "{stale:?}");
    assert_eq!(stale.header("Cache-Control"), Some("no-cache"));
    assert!(stale.body == source("app.js"));
}

#[test]
fn head_post_and_paths_that_are_not_the_page() {
    let server = Server::start(&[]);
    let fp = logged_fingerprint(&server.output());
    let addr = server.addr;
    // HEAD: the head a GET would get, and no body (parsed here: the
    // shared parser holds a body to its Content-Length).
    let mut stream = tls(addr, &fp, Some(ALPN_HTTP));
    stream
        .write_all(format!("HEAD / HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .expect("send");
    let bytes = read_until_closed(&mut stream, Duration::from_secs(10));
    let text = String::from_utf8_lossy(&bytes);
    let full = get(addr, &fp, "/", "");
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\n"), "a body after HEAD: {text}");
    assert!(
        text.contains(&format!("Content-Length: {}\r\n", full.body.len())),
        "{text}"
    );
    let post = https(
        addr,
        &fp,
        &format!("POST /app.js HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n"),
    );
    assert_eq!(post.status, 405, "{post:?}");
    assert_security_headers(&post, true);
    for path in [
        "/index.html",
        "/web/app.js",
        "/app.jsx",
        "/../Cargo.toml",
        "/%2e%2e/Cargo.toml",
        "/app.js/",
    ] {
        let resp = get(addr, &fp, path, "");
        assert_eq!(resp.status, 404, "{path}: {resp:?}");
        assert_security_headers(&resp, true);
    }
}

#[test]
fn with_tls_off_the_page_is_served_over_plain_http_to_loopback() {
    let server = Server::start(&["--tls", "off"]);
    let mut tcp = std::net::TcpStream::connect(server.addr).expect("connect");
    let resp = http_exchange(
        &mut tcp,
        &format!("GET / HTTP/1.1\r\nHost: {}\r\n\r\n", server.addr),
    );
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_security_headers(&resp, false);
    // web/index.html, with `?v=` and a 16-digit digest after each name.
    let served = String::from_utf8(resp.body.clone()).expect("UTF-8");
    let named = versioned_urls(&served).len();
    assert!(named >= 4, "{served}");
    assert_eq!(source("index.html").len() + named * 19, served.len());
}
