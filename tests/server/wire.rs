//! Test-side clients for the server's other transports: TLS (rustls, with
//! the server's certificate pinned by fingerprint) and WebSocket
//! (tungstenite, over TCP or TLS), and relays that let the line
//! [`Client`](crate::util::Client) speak through them unchanged.
//!
//! A relay listens on `127.0.0.1:0` for one plain TCP connection (a test's
//! `Client`), and forwards between it and the server: bytes as they are
//! over TLS, one text message per line over WebSocket (the LF removed on
//! the way in, added on the way out). When one side closes, the relay
//! closes the other. Every wait is bounded: sockets carry read timeouts,
//! and the relay thread gives up after [`RELAY_PATIENCE`] without a client.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine as _;
use neochat::transport::tls::Signatures;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme};
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::HandshakeError;
use tungstenite::handshake::client::{Request, Response};
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Message, WebSocket};

use crate::util::READ_TIMEOUT;

/// A blocking TLS client connection.
pub type TlsStream = rustls::StreamOwned<ClientConnection, TcpStream>;
/// A blocking WebSocket client, over TCP or TLS.
pub type Ws = WebSocket<Wire>;

/// How long a relay waits for its client, and for the far side to finish
/// after one side closed.
pub const RELAY_PATIENCE: Duration = Duration::from_secs(30);
/// How long a relay's read of the server may wait once poll said there is
/// data (a TLS record or WebSocket frame may still be arriving).
const RELAY_TICK: Duration = Duration::from_millis(20);

// ---------------------------------------------------------------- TLS

/// `SHA256:` + unpadded standard base64 of the SHA-256 of a DER
/// certificate, as the server logs it (computed here independently).
pub fn fingerprint_of(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest.as_ref())
    )
}

/// The fingerprint the server printed at start
/// (`TLS certificate fingerprint SHA256:...`): the first such line of `log`.
#[track_caller]
pub fn logged_fingerprint(log: &str) -> String {
    logged_fingerprints(log)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no `TLS certificate fingerprint` line in the log:\n{log}"))
}

/// Every fingerprint printed at start in `log`, in order (one per start).
pub fn logged_fingerprints(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| l.split_once("TLS certificate fingerprint ").map(|(_, r)| r))
        .map(|fp| fp.trim().to_string())
        .collect()
}

/// Accepts exactly one certificate, named by its fingerprint; the
/// handshake's signatures are still checked (with the provider's
/// algorithms), so the server must hold the certificate's key.
#[derive(Debug)]
struct Pinned {
    fingerprint: String,
    signatures: Signatures,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let seen = fingerprint_of(end_entity);
        if seen == self.fingerprint {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the server presented certificate {seen}, not the pinned {}",
                self.fingerprint
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.signatures.schemes()
    }
}

/// A client configuration that trusts only the certificate `fingerprint`,
/// offering `alpn` (if any) as its only ALPN protocol.
pub fn client_config(fingerprint: &str, alpn: Option<&[u8]>) -> Arc<ClientConfig> {
    let provider = neochat::transport::tls::provider();
    let verifier = Pinned {
        fingerprint: fingerprint.to_string(),
        signatures: Signatures::new(provider.clone()),
    };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = alpn.map(|p| vec![p.to_vec()]).unwrap_or_default();
    Arc::new(config)
}

/// A TCP connection to `server` (from `from`, if given, as a bound source
/// address), with the harness's read timeout and a write timeout.
pub fn tcp_connect(server: SocketAddr, from: Option<IpAddr>) -> io::Result<TcpStream> {
    let stream = match from {
        None => TcpStream::connect(server)?,
        Some(ip) => {
            use socket2::{Domain, Socket, Type};
            let socket = Socket::new(Domain::for_address(server), Type::STREAM, None)?;
            socket.bind(&SocketAddr::new(ip, 0).into())?;
            socket.connect(&server.into())?;
            socket.into()
        }
    };
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    stream.set_write_timeout(Some(Duration::from_secs(20)))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Runs a TLS client handshake over `tcp` to its end (bounded by the
/// socket's read timeout). The error says why: a refused certificate, an
/// alert, a close.
pub fn tls_over(tcp: TcpStream, fingerprint: &str, alpn: Option<&[u8]>) -> io::Result<TlsStream> {
    let name = ServerName::try_from("localhost").expect("a valid DNS name");
    let conn =
        ClientConnection::new(client_config(fingerprint, alpn), name).map_err(io::Error::other)?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    Ok(tls)
}

/// Connects to `server` over TLS, pinning `fingerprint`; the handshake is
/// done when this returns.
pub fn tls_connect(
    server: SocketAddr,
    fingerprint: &str,
    alpn: Option<&[u8]>,
) -> io::Result<TlsStream> {
    tls_over(tcp_connect(server, None)?, fingerprint, alpn)
}

/// Like [`tls_connect`], panicking with the reason on failure.
#[track_caller]
pub fn tls(server: SocketAddr, fingerprint: &str, alpn: Option<&[u8]>) -> TlsStream {
    tls_connect(server, fingerprint, alpn)
        .unwrap_or_else(|e| panic!("TLS connection to {server} (pinning {fingerprint}): {e}"))
}

/// The fingerprint of the certificate a TLS connection was shown.
pub fn peer_fingerprint(tls: &TlsStream) -> String {
    let certs = tls
        .conn
        .peer_certificates()
        .expect("a finished handshake has the server's certificates");
    fingerprint_of(&certs[0])
}

/// The bytes of a ClientHello, as rustls would send it first (for tests that
/// send part of one).
pub fn client_hello() -> Vec<u8> {
    let name = ServerName::try_from("localhost").expect("a valid DNS name");
    let mut conn = ClientConnection::new(client_config("SHA256:none", None), name)
        .expect("a client connection");
    let mut hello = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut hello).expect("write to a Vec");
    }
    hello
}

// ---------------------------------------------------------------- reading

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// Whether `e` means the peer is gone (closed without close_notify, reset).
pub fn is_gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::UnexpectedEof
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::BrokenPipe
    )
}

/// Everything `stream` yields until the peer closes (EOF, close_notify or
/// reset). Panics if it is still open after `limit`.
#[track_caller]
pub fn read_until_closed(stream: &mut impl Read, limit: Duration) -> Vec<u8> {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        assert!(
            Instant::now() < deadline,
            "still open after {limit:?}; got {:?}",
            String::from_utf8_lossy(&got)
        );
        match stream.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if is_gone(&e) => return got,
            Err(e) if is_timeout(&e) || e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("read failed: {e}; got {:?}", String::from_utf8_lossy(&got)),
        }
    }
}

/// Reads lines (without LF) from `stream` until `want` more have arrived;
/// `pending` keeps bytes of an unfinished line between calls.
#[track_caller]
pub fn read_lines(stream: &mut impl Read, pending: &mut Vec<u8>, want: usize) -> Vec<String> {
    let deadline = Instant::now() + READ_TIMEOUT;
    let mut lines = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        while let Some(i) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=i).collect();
            lines.push(String::from_utf8_lossy(&line[..i]).into_owned());
            if lines.len() == want {
                return lines;
            }
        }
        assert!(
            Instant::now() < deadline,
            "wanted {want} lines within {READ_TIMEOUT:?}, got {lines:?} and {:?}",
            String::from_utf8_lossy(pending)
        );
        match stream.read(&mut buf) {
            Ok(0) => panic!("closed after {lines:?}"),
            Ok(n) => pending.extend_from_slice(&buf[..n]),
            Err(e) if is_timeout(&e) || e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("read failed: {e} after {lines:?}"),
        }
    }
}

// ---------------------------------------------------------------- HTTP

/// An HTTP response, parsed.
pub struct HttpResponse {
    pub status: u16,
    /// The reason phrase of the status line (`OK`, `Continue`).
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The value of header `name` (any case), if present once or more.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The headers `(name, value)` of a parsed head, owned.
    pub fn headers_of(parsed: &httparse::Response<'_, '_>) -> Vec<(String, String)> {
        parsed
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_string(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect()
    }
}

/// The head, and at most 200 bytes of the body (a failing test on a file
/// download must not print megabytes).
impl std::fmt::Debug for HttpResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = &self.body[..self.body.len().min(200)];
        write!(
            f,
            "{} {:?} {:?} body ({} bytes) {:?}",
            self.status,
            self.reason,
            self.headers,
            self.body.len(),
            String::from_utf8_lossy(shown)
        )
    }
}

/// Every answer's security headers; HSTS exactly when over TLS; and the
/// close that every answer announces.
#[track_caller]
pub fn assert_security_headers(resp: &HttpResponse, tls: bool) {
    assert_eq!(
        resp.header("X-Content-Type-Options"),
        Some("nosniff"),
        "{resp:?}"
    );
    assert_eq!(
        resp.header("Referrer-Policy"),
        Some("no-referrer"),
        "{resp:?}"
    );
    let hsts = resp.header("Strict-Transport-Security");
    if tls {
        assert!(
            hsts.is_some_and(|v| v.contains("max-age=")),
            "no HSTS over TLS: {resp:?}"
        );
    } else {
        assert_eq!(hsts, None, "HSTS over plain HTTP: {resp:?}");
    }
    assert_eq!(resp.header("Connection"), Some("close"), "{resp:?}");
}

/// Parses one complete HTTP response (head and `Content-Length` body).
#[track_caller]
pub fn parse_response(bytes: &[u8]) -> HttpResponse {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        other => panic!(
            "not a complete HTTP response ({other:?}): {:?}",
            String::from_utf8_lossy(bytes)
        ),
    };
    let response = HttpResponse {
        status: resp.code.expect("a complete response has a status"),
        reason: resp.reason.unwrap_or_default().to_owned(),
        headers: HttpResponse::headers_of(&resp),
        body: bytes[len..].to_vec(),
    };
    if let Some(n) = response.header("Content-Length") {
        let n: usize = n.parse().expect("a numeric Content-Length");
        assert_eq!(
            response.body.len(),
            n,
            "body length against Content-Length in {response:?}"
        );
    }
    response
}

/// Sends `request` on `stream` and reads the answer until the server
/// closes the connection.
#[track_caller]
pub fn http_exchange(stream: &mut (impl Read + Write), request: &str) -> HttpResponse {
    stream
        .write_all(request.as_bytes())
        .unwrap_or_else(|e| panic!("sending {request:?}: {e}"));
    stream.flush().expect("flush");
    parse_response(&read_until_closed(stream, Duration::from_secs(10)))
}

// ---------------------------------------------------------------- WebSocket

/// The stream under a WebSocket: plain TCP or TLS.
pub enum Wire {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

impl Wire {
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Wire::Plain(s) => s,
            Wire::Tls(t) => &t.sock,
        }
    }
}

impl Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Wire::Plain(s) => s.read(buf),
            Wire::Tls(t) => t.read(buf),
        }
    }
}

impl Write for Wire {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Wire::Plain(s) => s.write(buf),
            Wire::Tls(t) => t.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Wire::Plain(s) => s.flush(),
            Wire::Tls(t) => t.flush(),
        }
    }
}

/// A WebSocket upgrade request for `/ws` on `server` (`wss://` when `tls`),
/// with `Origin: origin` if given; add headers before use.
pub fn ws_request(server: SocketAddr, tls: bool, origin: Option<&str>) -> Request {
    let scheme = if tls { "wss" } else { "ws" };
    let mut request = format!("{scheme}://{server}/ws")
        .into_client_request()
        .expect("a valid WebSocket URL");
    if let Some(origin) = origin {
        request.headers_mut().insert(
            "Origin",
            origin.parse().expect("an Origin fit for a header"),
        );
    }
    request
}

/// The origin a browser would send for a page served by `server`.
pub fn own_origin(server: SocketAddr, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{server}")
}

/// Runs the WebSocket handshake with `request` over `wire`.
pub fn ws_over(
    wire: Wire,
    request: Request,
    config: Option<WebSocketConfig>,
) -> Result<(Ws, Response), tungstenite::Error> {
    match tungstenite::client::client_with_config(request, wire, config) {
        Ok(done) => Ok(done),
        Err(HandshakeError::Failure(e)) => Err(e),
        // Only a read timeout interrupts a blocking handshake.
        Err(HandshakeError::Interrupted(_)) => Err(tungstenite::Error::Io(io::Error::new(
            ErrorKind::TimedOut,
            "the WebSocket handshake did not finish in time",
        ))),
    }
}

/// Opens `/ws` on `server`: over TLS pinning `tls` if given, else plain;
/// with `Origin: origin` if given.
pub fn ws_connect(
    server: SocketAddr,
    tls: Option<&str>,
    origin: Option<&str>,
) -> Result<(Ws, Response), tungstenite::Error> {
    let tcp = tcp_connect(server, None)?;
    let wire = match tls {
        None => Wire::Plain(tcp),
        Some(fp) => Wire::Tls(Box::new(tls_over(tcp, fp, None)?)),
    };
    ws_over(wire, ws_request(server, tls.is_some(), origin), None)
}

/// Like [`ws_connect`] with the page's own origin, panicking on failure.
#[track_caller]
pub fn ws(server: SocketAddr, tls: Option<&str>) -> Ws {
    let origin = own_origin(server, tls.is_some());
    match ws_connect(server, tls, Some(&origin)) {
        Ok((ws, _)) => ws,
        Err(e) => panic!("WebSocket to {server} (tls {tls:?}): {e}"),
    }
}

/// The next text message, skipping pings and pongs; panics on anything
/// else or after the read timeout.
#[track_caller]
pub fn ws_text(ws: &mut Ws) -> String {
    let deadline = Instant::now() + READ_TIMEOUT;
    loop {
        assert!(
            Instant::now() < deadline,
            "no WebSocket message within {READ_TIMEOUT:?}"
        );
        match ws.read() {
            Ok(Message::Text(t)) => return t.as_str().to_string(),
            Ok(Message::Ping(_) | Message::Pong(_)) => {}
            Ok(other) => panic!("expected a text message, got {other:?}"),
            Err(tungstenite::Error::Io(e)) if is_timeout(&e) => {}
            Err(e) => panic!("expected a text message, got error {e}"),
        }
    }
}

/// Reads until the server's close frame; returns its code (`None` for a
/// close frame without one). Text messages before it are returned too.
/// Panics if the connection ends without a close frame or stays open past
/// `limit`.
#[track_caller]
pub fn ws_close_code(ws: &mut Ws, limit: Duration) -> (Option<u16>, Vec<String>) {
    let deadline = Instant::now() + limit;
    let mut texts = Vec::new();
    loop {
        assert!(
            Instant::now() < deadline,
            "no close frame within {limit:?}; messages {texts:?}"
        );
        match ws.read() {
            Ok(Message::Close(frame)) => return (frame.map(|f| u16::from(f.code)), texts),
            Ok(Message::Text(t)) => texts.push(t.as_str().to_string()),
            Ok(_) => {}
            Err(tungstenite::Error::Io(e)) if is_timeout(&e) => {}
            Err(e) => panic!("expected a close frame, got error {e}; messages {texts:?}"),
        }
    }
}

// ---------------------------------------------------------------- relays

/// A local listener for the relay's one client.
fn relay_listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a relay listener");
    let addr = listener.local_addr().expect("relay listener address");
    (listener, addr)
}

/// Waits up to [`RELAY_PATIENCE`] for the relay's client.
fn accept_client(listener: &TcpListener) -> Option<TcpStream> {
    listener
        .set_nonblocking(true)
        .expect("non-blocking listener");
    let deadline = Instant::now() + RELAY_PATIENCE;
    while Instant::now() < deadline {
        match listener.accept() {
            Ok((client, _)) => {
                client.set_nonblocking(false).expect("blocking client");
                client
                    .set_write_timeout(Some(Duration::from_secs(20)))
                    .expect("write timeout");
                client.set_nodelay(true).expect("nodelay");
                return Some(client);
            }
            Err(e) if is_timeout(&e) => thread::sleep(Duration::from_millis(5)),
            Err(e) => {
                eprintln!("relay: accept failed: {e}");
                return None;
            }
        }
    }
    eprintln!("relay: no client came within {RELAY_PATIENCE:?}");
    None
}

/// Which of the two descriptors are readable (or closed, or failed) within
/// `timeout`.
fn poll2(a: RawFd, b: RawFd, timeout: Duration) -> (bool, bool) {
    let mut fds = [
        libc::pollfd {
            fd: a,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: b,
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: `fds` is a valid array of two pollfd for the whole call.
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
    if rc <= 0 {
        return (false, false);
    }
    let ready = |p: &libc::pollfd| p.revents != 0;
    (ready(&fds[0]), ready(&fds[1]))
}

/// A relay from a local plain connection to `server` over TLS (pinning
/// `fingerprint`, no ALPN): the handshake is done before this returns
/// (panicking with the reason if it fails); then `Client::connect` on the
/// returned address talks to the server through it.
#[track_caller]
pub fn tls_relay(server: SocketAddr, fingerprint: &str) -> SocketAddr {
    tls_relay_over(tls(server, fingerprint, None))
}

/// A relay for an established TLS connection.
pub fn tls_relay_over(tls: TlsStream) -> SocketAddr {
    let (listener, addr) = relay_listener();
    thread::spawn(move || {
        let Some(client) = accept_client(&listener) else {
            return;
        };
        if let Err(e) = relay_tls(client, tls) {
            eprintln!("relay (TLS): {e}");
        }
    });
    addr
}

fn relay_tls(mut client: TcpStream, tls: TlsStream) -> io::Result<()> {
    let rustls::StreamOwned {
        conn: mut tls,
        sock: mut server,
    } = tls;
    let mut buf = vec![0u8; 64 * 1024];
    // Set once the client closed its side: the server gets close_notify,
    // and what it still says is relayed for a while.
    let mut client_done: Option<Instant> = None;
    loop {
        if client_done.is_some_and(|t| t.elapsed() > RELAY_PATIENCE) {
            break;
        }
        // Once the client is done, poll only the server (a closed socket is
        // always readable).
        let client_fd = if client_done.is_some() {
            -1
        } else {
            client.as_raw_fd()
        };
        let (from_client, from_server) =
            poll2(client_fd, server.as_raw_fd(), Duration::from_millis(200));
        if from_client && client_done.is_none() {
            match client.read(&mut buf) {
                Ok(0) | Err(_) => {
                    client_done = Some(Instant::now());
                    tls.send_close_notify();
                }
                Ok(n) => tls.writer().write_all(&buf[..n])?,
            }
            while tls.wants_write() {
                tls.write_tls(&mut server)?;
            }
        }
        let mut closed = false;
        if from_server {
            match tls.read_tls(&mut server) {
                Ok(0) | Err(_) => closed = true,
                Ok(_) => {}
            }
            if tls.process_new_packets().is_err() {
                closed = true;
            }
        }
        // Plaintext rustls holds, from this read or an earlier one (the
        // handshake may have read some).
        loop {
            match tls.reader().read(&mut buf) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(k) => {
                    if client.write_all(&buf[..k]).is_err() {
                        closed = true;
                        break;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        while tls.wants_write() {
            if tls.write_tls(&mut server).is_err() {
                break;
            }
        }
        if closed {
            break;
        }
    }
    let _ = client.shutdown(Shutdown::Both);
    let _ = server.shutdown(Shutdown::Both);
    Ok(())
}

/// A relay from a local plain connection to `server`'s `/ws` (over TLS
/// pinning `tls` if given), sending `Origin: origin` if given. The
/// handshake is done before this returns (panicking with the reason if it
/// fails).
#[track_caller]
pub fn ws_relay(server: SocketAddr, tls: Option<&str>, origin: Option<&str>) -> SocketAddr {
    match ws_connect(server, tls, origin) {
        Ok((ws, _)) => ws_relay_over(ws),
        Err(e) => panic!("WebSocket to {server} (tls {tls:?}, origin {origin:?}): {e}"),
    }
}

/// A relay for an established WebSocket.
pub fn ws_relay_over(ws: Ws) -> SocketAddr {
    let (listener, addr) = relay_listener();
    thread::spawn(move || {
        let Some(client) = accept_client(&listener) else {
            return;
        };
        if let Err(e) = relay_ws(client, ws) {
            eprintln!("relay (WebSocket): {e}");
        }
    });
    addr
}

fn relay_ws(mut client: TcpStream, mut ws: Ws) -> Result<(), tungstenite::Error> {
    let server_fd = ws.get_ref().tcp().as_raw_fd();
    // Reads of the server wait only a moment: they come after poll, to
    // drain what tungstenite and rustls buffered.
    ws.get_ref().tcp().set_read_timeout(Some(RELAY_TICK))?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut line = Vec::new();
    let mut client_done: Option<Instant> = None;
    // The handshake may have read messages already (tungstenite keeps them).
    let mut first = true;
    let result = loop {
        if client_done.is_some_and(|t| t.elapsed() > RELAY_PATIENCE) {
            break Ok(());
        }
        let client_fd = if client_done.is_some() {
            -1
        } else {
            client.as_raw_fd()
        };
        let (from_client, from_server) = poll2(client_fd, server_fd, Duration::from_millis(200));
        if from_client && client_done.is_none() {
            match client.read(&mut buf) {
                Ok(0) | Err(_) => {
                    client_done = Some(Instant::now());
                    // An unterminated last line is a line.
                    if !line.is_empty() {
                        send_line(&mut ws, std::mem::take(&mut line))?;
                    }
                    ws.close(None)?;
                }
                Ok(n) => {
                    line.extend_from_slice(&buf[..n]);
                    while let Some(i) = line.iter().position(|&b| b == b'\n') {
                        let rest = line.split_off(i + 1);
                        line.pop();
                        send_line(&mut ws, std::mem::replace(&mut line, rest))?;
                    }
                }
            }
        }
        if from_server || std::mem::take(&mut first) {
            let mut closed = false;
            loop {
                match ws.read() {
                    Ok(Message::Text(t)) => {
                        let mut bytes = t.as_str().as_bytes().to_vec();
                        bytes.push(b'\n');
                        if client.write_all(&bytes).is_err() {
                            closed = true;
                            break;
                        }
                    }
                    Ok(Message::Close(_)) => {
                        closed = true;
                        break;
                    }
                    Ok(Message::Binary(b)) => {
                        eprintln!("relay (WebSocket): unexpected binary message {b:?}");
                        closed = true;
                        break;
                    }
                    Ok(_) => {}
                    Err(tungstenite::Error::Io(e)) if is_timeout(&e) => break,
                    Err(tungstenite::Error::ConnectionClosed) => {
                        closed = true;
                        break;
                    }
                    Err(e) => {
                        eprintln!("relay (WebSocket): {e}");
                        closed = true;
                        break;
                    }
                }
            }
            if closed {
                break Ok(());
            }
        }
    };
    let _ = client.shutdown(Shutdown::Both);
    let _ = ws.get_ref().tcp().shutdown(Shutdown::Both);
    result
}

/// One line from the client as one text message; a line that is not UTF-8
/// cannot be one, and ends the relay.
fn send_line(ws: &mut Ws, line: Vec<u8>) -> Result<(), tungstenite::Error> {
    let text = String::from_utf8(line).map_err(|e| {
        tungstenite::Error::Io(io::Error::new(
            ErrorKind::InvalidData,
            format!(
                "a line that is not UTF-8 cannot be a text message: {:?}",
                String::from_utf8_lossy(e.as_bytes())
            ),
        ))
    })?;
    ws.send(Message::text(text))
}
