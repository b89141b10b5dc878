//! The transports on the one port, from outside: TLS (the self-signed
//! certificate, the operator's, SIGHUP reloads, ALPN, stalled handshakes,
//! real `openssl s_client` and `ncat --ssl` processes), WebSocket (Origin
//! check, close codes, line limits), PROXY headers and `X-Forwarded-For`
//! from trusted proxies, the HTTP answers, several listeners, and a tour of
//! the line protocol over TLS and over WebSocket through the relays of
//! `wire`, expecting the very lines the plain tests expect.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tungstenite::Message;

use crate::util::*;
use crate::wire::*;

const PER_IP: &str = "! too many connections from your address";
const ALPN_HTTP: &[u8] = b"http/1.1";

/// The server's certificate fingerprint, from its start-up lines.
#[track_caller]
fn fp(s: &Server) -> String {
    logged_fingerprint(&s.output())
}

/// Whether the server process is still running.
fn alive(s: &mut Server) -> bool {
    s.wait_exit(Duration::from_millis(50)).is_none()
}

/// A PEM certificate and key made with rcgen for `localhost`, written to
/// `dir/<stem>.cert.pem` and `dir/<stem>.key.pem`; returns the paths and
/// the fingerprint.
fn make_cert(dir: &Path, stem: &str) -> (PathBuf, PathBuf, String) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
        .expect("rcgen makes a certificate");
    let cert = dir.join(format!("{stem}.cert.pem"));
    let key = dir.join(format!("{stem}.key.pem"));
    std::fs::write(&cert, made.cert.pem()).expect("write the certificate");
    std::fs::write(&key, made.signing_key.serialize_pem()).expect("write the key");
    (cert, key, fingerprint_of(made.cert.der()))
}

/// Registers `name` through a relay (TLS or WebSocket) at `relay`.
#[track_caller]
fn register_via(relay: SocketAddr, name: &str) -> Client {
    let mut c = Client::connect(relay).with_label(&format!("{name} (relayed)"));
    c.expect_welcome();
    c.register_here(name, &pw(name));
    c
}

/// A relayed user and a plain one chat both ways, privately too.
#[track_caller]
fn chat_both_ways(relayed: &mut Client, plain: &mut Client, rname: &str, pname: &str) {
    relayed.send(&format!("hello from {rname}\n"));
    plain.expect(&format!("{rname}: hello from {rname}"));
    plain.send(&format!("hello from {pname}\n"));
    relayed.expect(&format!("{pname}: hello from {pname}"));
    relayed.send(&format!("/msg {pname} psst\n"));
    plain.expect(&format!("@{rname}: psst"));
    plain.send(&format!("/msg {rname} psst back\n"));
    relayed.expect(&format!("@{pname}: psst back"));
    relayed.quiet();
    plain.quiet();
}

// ---------------------------------------------------------------- TLS

#[test]
fn tls_client_chats_with_a_plain_client() {
    let s = Server::start(&[]);
    let fp = fp(&s);
    let mut alice = register_via(tls_relay(s.addr, &fp), "alice");
    let mut bob = join(s.addr, "bob", &mut [&mut alice]);
    chat_both_ways(&mut alice, &mut bob, "alice", "bob");
    // And the other way round: the plain user was there first.
    let mut carol = register_via(tls_relay(s.addr, &fp), "carol");
    alice.expect("* carol joined");
    bob.expect("* carol joined");
    chat_both_ways(&mut carol, &mut bob, "carol", "bob");
    alice.expect("carol: hello from carol");
    alice.expect("bob: hello from bob");
    // Gone without /quit: the others are told.
    drop(carol);
    alice.expect("* carol left");
    bob.expect("* carol left");
    alice.quiet();
}

/// A line-oriented child process (openssl, ncat): its stdout as lines on a
/// channel, its stderr kept for failure messages; killed on drop.
struct LineChild {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    stderr: Arc<Mutex<String>>,
    label: String,
}

impl LineChild {
    #[track_caller]
    fn spawn(program: &str, args: &[&str]) -> LineChild {
        let label = format!("{program} {}", args.join(" "));
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {label}: {e}"));
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut stderr_pipe = child.stderr.take().expect("piped stderr");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let keep = stderr.clone();
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr_pipe.read(&mut buf) {
                if n == 0 {
                    return;
                }
                keep.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        LineChild {
            child,
            stdin,
            lines,
            stderr,
            label,
        }
    }

    #[track_caller]
    fn send(&mut self, text: &str) {
        if let Err(e) = self
            .stdin
            .write_all(text.as_bytes())
            .and_then(|()| self.stdin.flush())
        {
            panic!("{}: writing {text:?} failed: {e}", self.label);
        }
    }

    /// The next line on stdout that is not empty (openssl may print an empty
    /// line or session notes); it must be `want`.
    #[track_caller]
    fn expect(&mut self, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.trim().is_empty() => {}
                Ok(line) => {
                    assert_eq!(line.trim_end_matches('\r'), want, "{}", self.label);
                    return;
                }
                Err(e) => panic!(
                    "{}: expected {want:?}, got {e:?}; its stderr:\n{}",
                    self.label,
                    self.stderr.lock().unwrap()
                ),
            }
        }
    }
}

impl Drop for LineChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A person at a real TLS tool registers and chats with a plain user.
#[track_caller]
fn tool_chats(s: &Server, tool: &mut LineChild, name: &str) {
    tool.expect("* welcome to NeoChat (0 online)");
    tool.expect(CHOICE);
    tool.send("R\n");
    tool.expect(USERNAME);
    tool.send(&format!("{name}\n"));
    tool.expect(PASSWORD);
    tool.send(&format!("{}\n", pw(name)));
    tool.expect(&format!("* registered and logged in as {name}"));
    tool.expect(&format!("* online (1): {name}"));
    let mut bob = register(s.addr, "bob", &pw("bob"));
    tool.expect("* bob joined");
    tool.send("hello over real TLS\n");
    bob.expect(&format!("{name}: hello over real TLS"));
    bob.send(&format!("/msg {name} and back\n"));
    tool.expect("@bob: and back");
    tool.send("/quit\n");
    tool.expect("* bye");
    bob.expect(&format!("* {name} left"));
}

#[test]
fn openssl_s_client_registers_and_chats() {
    let s = Server::start(&[]);
    let target = s.addr.to_string();
    let mut openssl = LineChild::spawn("openssl", &["s_client", "-connect", &target, "-quiet"]);
    tool_chats(&s, &mut openssl, "ossl");
}

#[test]
fn ncat_ssl_registers_and_chats() {
    let found = Command::new("ncat")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if found.is_err() {
        println!("note: ncat is not installed; skipping the `ncat --ssl` test");
        return;
    }
    let s = Server::start(&[]);
    let port = s.addr.port().to_string();
    let mut ncat = LineChild::spawn("ncat", &["--ssl", "127.0.0.1", &port]);
    tool_chats(&s, &mut ncat, "ncat");
}

#[test]
fn self_signed_certificate_is_made_once_owner_only_and_reused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("chat.db");
    let cert = dir.path().join("chat.db.cert.pem");
    let key = dir.path().join("chat.db.key.pem");
    let first = Server::start_with_db(&db, &[]);
    let log = first.output();
    let fp1 = logged_fingerprint(&log);
    assert!(
        fp1.starts_with("SHA256:") && fp1.len() == "SHA256:".len() + 43 && !fp1.ends_with('='),
        "{fp1}"
    );
    let at_fp = log
        .find("TLS certificate fingerprint")
        .expect("fingerprint line");
    let at_listen = log.find("listening on").expect("listening line");
    assert!(at_fp < at_listen, "fingerprint after listening:\n{log}");
    for path in [&cert, &key] {
        let mode = std::fs::metadata(path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "mode of {}", path.display());
    }
    let der = CertificateDer::from_pem_file(&cert).expect("a PEM certificate beside the db");
    assert_eq!(
        fingerprint_of(&der),
        fp1,
        "the logged fingerprint is the file's"
    );
    let served = tls(first.addr, &fp1, None);
    assert_eq!(peer_fingerprint(&served), fp1);
    drop(served);
    // The pin is real: another fingerprint is refused, and the refusal
    // names what the server showed.
    let wrong = "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let refused = tls_connect(first.addr, wrong, None).expect_err("a wrong pin fails");
    assert!(refused.to_string().contains(&fp1), "{refused}");
    let pem = std::fs::read(&cert).expect("read the certificate");
    drop(first);

    let second = Server::start_with_db(&db, &[]);
    assert_eq!(fp(&second), fp1, "a restart reuses the certificate");
    assert_eq!(std::fs::read(&cert).expect("read again"), pem);
    let served = tls(second.addr, &fp1, None);
    assert_eq!(peer_fingerprint(&served), fp1);
    let db_arg = db.display().to_string();
    let (status, out) = run_binary(&["fingerprint", "--db", &db_arg], Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "{status:?} {out}");
    assert_eq!(out.trim(), fp1);
}

#[test]
fn operator_certificate_is_served() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key, want) = make_cert(dir.path(), "operator");
    let db = dir.path().join("chat.db");
    let (cert_arg, key_arg) = (cert.display().to_string(), key.display().to_string());
    let s = Server::start_with_db(&db, &["--tls-cert", &cert_arg, "--tls-key", &key_arg]);
    assert_eq!(fp(&s), want);
    let mut served = tls(s.addr, &want, None);
    assert_eq!(peer_fingerprint(&served), want);
    let mut pending = Vec::new();
    let lines = read_lines(&mut served, &mut pending, 2);
    assert_eq!(lines[1], CHOICE, "{lines:?}");
    assert!(
        !dir.path().join("chat.db.cert.pem").exists(),
        "no self-signed certificate is made when the operator gives one"
    );
    let db_arg = db.display().to_string();
    let (status, out) = run_binary(
        &["fingerprint", "--db", &db_arg, "--tls-cert", &cert_arg],
        Duration::from_secs(10),
    );
    assert!(status.is_some_and(|s| s.success()), "{status:?} {out}");
    assert_eq!(out.trim(), want);
}

#[test]
fn stalled_tls_handshake_is_closed_by_the_login_timeout() {
    let s = Server::start(&["--login-timeout", "2"]);
    let hello = client_hello();
    let mut tcp = tcp_connect(s.addr, None).expect("connect");
    tcp.write_all(&hello[..hello.len() / 2])
        .expect("half a ClientHello");
    // Held while the handshake could still finish...
    tcp.set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    let mut buf = [0u8; 64];
    match tcp.read(&mut buf) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("expected the half handshake to be held for a while, got {other:?}"),
    }
    // ...and closed by the login timeout (2 s here; 15 s allowed, well
    // short of the 60 s default), never with a plain-text line on a TLS
    // connection.
    let started = Instant::now();
    let got = read_until_closed(&mut tcp, Duration::from_secs(15));
    assert!(
        got.is_empty() || got[0] == 0x15,
        "not nothing, not a TLS alert: {:?}",
        String::from_utf8_lossy(&got)
    );
    println!("closed {:?} after the first second", started.elapsed());
}

#[test]
fn alpn_http_connection_left_idle_is_still_http() {
    let s = Server::start(&[]);
    let fp = fp(&s);
    let mut conn = tls(s.addr, &fp, Some(ALPN_HTTP));
    assert_eq!(conn.conn.alpn_protocol(), Some(ALPN_HTTP));
    // A browser's pre-opened connection: idle for a second. Nothing may
    // arrive meanwhile (no welcome line after 0.3 s).
    conn.sock
        .set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    let mut buf = [0u8; 256];
    match conn.read(&mut buf) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("expected silence on an idle HTTP connection, got {other:?}"),
    }
    conn.sock
        .set_read_timeout(Some(READ_TIMEOUT))
        .expect("timeout");
    let resp = http_exchange(
        &mut conn,
        &format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", s.addr),
    );
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.body, b"ok\n");
}

#[test]
fn tls_without_alpn_and_silent_gets_the_welcome() {
    let s = Server::start(&[]);
    let fp = fp(&s);
    let mut conn = tls(s.addr, &fp, None);
    assert_eq!(conn.conn.alpn_protocol(), None);
    let mut pending = Vec::new();
    let lines = read_lines(&mut conn, &mut pending, 2);
    assert_eq!(
        lines,
        [
            "* welcome to NeoChat (0 online)".to_string(),
            CHOICE.to_string()
        ]
    );
    // And it is the line protocol: an answer comes back over TLS.
    conn.write_all(b"R\n").expect("write");
    assert_eq!(read_lines(&mut conn, &mut pending, 1), [USERNAME]);
}

// ---------------------------------------------------------------- WebSocket

#[test]
fn websocket_client_chats_with_a_plain_client() {
    let s = Server::start(&[]);
    let fp = fp(&s);
    // ws:// on loopback, with the page's own origin.
    let origin = own_origin(s.addr, false);
    let mut alice = register_via(ws_relay(s.addr, None, Some(&origin)), "alice");
    let mut bob = join(s.addr, "bob", &mut [&mut alice]);
    chat_both_ways(&mut alice, &mut bob, "alice", "bob");
    // wss://, with the https origin.
    let origin = own_origin(s.addr, true);
    let mut carol = register_via(ws_relay(s.addr, Some(&fp), Some(&origin)), "carol");
    alice.expect("* carol joined");
    bob.expect("* carol joined");
    chat_both_ways(&mut carol, &mut bob, "carol", "bob");
    alice.expect("carol: hello from carol");
    alice.expect("bob: hello from bob");
    // WebSocket to WebSocket, too.
    carol.send("/msg alice over two sockets\n");
    alice.expect("@carol: over two sockets");
    // Gone without /quit (the relay sends a close frame): the others are
    // told.
    drop(carol);
    alice.expect("* carol left");
    bob.expect("* carol left");
    alice.quiet();
}

#[test]
fn bulk_output_reaches_tls_and_websocket_clients_in_order() {
    // Far more than rustls's and the WebSocket framing's 64 KiB buffers.
    let s = Server::start(&["--rate", "off"]);
    let fp = fp(&s);
    let mut tls_user = register_via(tls_relay(s.addr, &fp), "viatls");
    let mut ws_user = register_via(
        ws_relay(s.addr, Some(&fp), Some(&own_origin(s.addr, true))),
        "viaws",
    );
    tls_user.expect("* viaws joined");
    let mut bob = join(s.addr, "bob", &mut [&mut tls_user, &mut ws_user]);
    let filler = "f".repeat(200);
    let total = 3000;
    let writer = {
        let mut out = bob.writer_clone();
        let filler = filler.clone();
        thread::spawn(move || {
            for batch in 0..total / 100 {
                let text: String = (batch * 100..(batch + 1) * 100)
                    .map(|i| format!("{i} {filler}\n"))
                    .collect();
                out.write_all(text.as_bytes()).expect("bob's bulk write");
            }
        })
    };
    for i in 0..total {
        tls_user.expect(&format!("bob: {i} {filler}"));
    }
    for i in 0..total {
        ws_user.expect(&format!("bob: {i} {filler}"));
    }
    writer.join().expect("the writer thread");
    tls_user.quiet();
    ws_user.quiet();
    bob.quiet();
}

/// The status of a refused WebSocket handshake.
#[track_caller]
fn refused_status(
    result: Result<(Ws, tungstenite::handshake::client::Response), tungstenite::Error>,
) -> u16 {
    match result {
        Ok((_, resp)) => panic!("expected a refusal, got {resp:?}"),
        Err(tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
    }
}

/// The welcome and the choice prompt, as two text messages.
#[track_caller]
fn ws_expect_welcome(ws: &mut Ws) {
    let welcome = ws_text(ws);
    assert!(parse_welcome(&welcome).is_some(), "{welcome:?}");
    assert_eq!(ws_text(ws), CHOICE);
}

#[test]
fn websocket_origin_must_be_the_servers_own_or_allowed() {
    let allowed = "https://app.example.org";
    let s = Server::start(&["--allowed-origin", allowed]);
    let fp = fp(&s);
    for (tls, origin) in [
        (None, "https://evil.example".to_string()),
        (None, "null".to_string()),
        // The right host with the wrong scheme, both ways.
        (None, own_origin(s.addr, true)),
        (Some(fp.as_str()), own_origin(s.addr, false)),
        (Some(fp.as_str()), "https://evil.example".to_string()),
    ] {
        let status = refused_status(ws_connect(s.addr, tls, Some(&origin)));
        assert_eq!(status, 403, "origin {origin} (tls {})", tls.is_some());
    }
    // The operator's extra origin, over either transport.
    for tls in [None, Some(fp.as_str())] {
        let (mut ws, resp) = ws_connect(s.addr, tls, Some(allowed))
            .unwrap_or_else(|e| panic!("allowed origin refused (tls {}): {e}", tls.is_some()));
        assert_eq!(resp.status().as_u16(), 101);
        ws_expect_welcome(&mut ws);
    }
    // Not a browser (no Origin at all): allowed.
    let (mut ws, _) = ws_connect(s.addr, None, None).expect("no Origin is not a browser");
    ws_expect_welcome(&mut ws);
    // Without --allowed-origin the same origin is foreign.
    let plain = Server::start(&[]);
    assert_eq!(
        refused_status(ws_connect(plain.addr, None, Some(allowed))),
        403
    );
}

#[test]
fn websocket_message_over_the_limit_is_closed_with_1009() {
    // The limit is max(4 * max_line, 64 KiB): 64 KiB with the default line.
    let s = Server::start(&[]);
    let fp = fp(&s);
    for tls in [None, Some(fp.as_str())] {
        let mut ws = ws(s.addr, tls);
        ws_expect_welcome(&mut ws);
        ws.send(Message::text("x".repeat(64 * 1024 + 1)))
            .expect("send a big message");
        let (code, texts) = ws_close_code(&mut ws, Duration::from_secs(10));
        assert_eq!(
            code,
            Some(1009),
            "tls {}; messages {texts:?}",
            tls.is_some()
        );
        assert!(texts.is_empty(), "{texts:?}");
    }
    // At the limit it is only a line too long: answered, and kept.
    let mut ws = ws(s.addr, None);
    ws_expect_welcome(&mut ws);
    ws.send(Message::text("x".repeat(64 * 1024)))
        .expect("send a message at the limit");
    assert_eq!(ws_text(&mut ws), "! line too long (max 4096 bytes)");
    assert_eq!(ws_text(&mut ws), CHOICE);
}

#[test]
fn websocket_unmasked_frame_is_closed_with_1002() {
    let s = Server::start(&[]);
    let mut ws = ws(s.addr, None);
    ws_expect_welcome(&mut ws);
    // A text frame "R" without the mask a client must set, written under
    // tungstenite's feet.
    ws.get_mut()
        .write_all(&[0x81, 0x01, b'R'])
        .expect("write a raw frame");
    let (code, texts) = ws_close_code(&mut ws, Duration::from_secs(10));
    assert_eq!(code, Some(1002), "messages {texts:?}");
    assert!(
        texts.is_empty(),
        "the unmasked frame was taken as input: {texts:?}"
    );
}

#[test]
fn websocket_line_over_max_line_is_answered_and_kept() {
    let s = Server::start(&["--max-line", "100"]);
    let relay = ws_relay(s.addr, None, None);
    let mut alice = Client::connect(relay).with_label("alice (ws)");
    alice.expect_welcome();
    alice.send(&format!("{}\n", "R".repeat(101)));
    alice.expect("! line too long (max 100 bytes)");
    alice.expect(CHOICE);
    alice.register_here("alice", &pw("alice"));
    let mut bob = join(s.addr, "bob", &mut [&mut alice]);
    // Under the message limit (64 KiB) but over the line limit.
    alice.send(&format!("{}\n", "y".repeat(1000)));
    alice.expect("! line too long (max 100 bytes)");
    alice.send(&format!("{}\n", "z".repeat(100)));
    bob.expect(&format!("alice: {}", "z".repeat(100)));
    alice.send("still here\n");
    bob.expect("alice: still here");
    bob.quiet();
    alice.quiet();
}

// ---------------------------------------------------------------- SIGHUP

#[test]
fn sighup_reloads_the_certificate_for_new_connections() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key, old) = make_cert(dir.path(), "live");
    let (cert_arg, key_arg) = (cert.display().to_string(), key.display().to_string());
    let mut s = Server::start(&["--tls-cert", &cert_arg, "--tls-key", &key_arg]);
    assert_eq!(fp(&s), old);
    let mut alice = register_via(tls_relay(s.addr, &old), "alice");
    let mut bob = join(s.addr, "bob", &mut [&mut alice]);

    // The operator renews: new files in place, then SIGHUP.
    let (new_cert, new_key, new) = make_cert(dir.path(), "renewed");
    std::fs::rename(&new_key, &key).expect("replace the key");
    std::fs::rename(&new_cert, &cert).expect("replace the certificate");
    s.signal(libc::SIGHUP);
    wait_for_log(&s, &format!("SIGHUP: TLS certificate reloaded: {new}"));
    assert!(alive(&mut s), "SIGHUP stopped the server:\n{}", s.output());
    let fresh = tls(s.addr, &new, None);
    assert_eq!(peer_fingerprint(&fresh), new);
    drop(fresh);
    let stale = tls_connect(s.addr, &old, None).expect_err("the old certificate is gone");
    assert!(stale.to_string().contains(&new), "{stale}");
    // The connection made before keeps working, both ways.
    chat_both_ways(&mut alice, &mut bob, "alice", "bob");

    // A broken file, then a certificate whose key is not the one beside
    // it (renewed halfway): the server keeps the certificate it has, and
    // runs on.
    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nbroken\n").expect("break the file");
    s.signal(libc::SIGHUP);
    wait_for_log(&s, "SIGHUP: keeping the old certificate");
    assert!(
        alive(&mut s),
        "SIGHUP with a broken file stopped the server"
    );
    let (other_cert, _, other) = make_cert(dir.path(), "halfway");
    std::fs::rename(&other_cert, &cert).expect("replace the certificate only");
    s.signal(libc::SIGHUP);
    let why = wait_for_log_count(&s, "SIGHUP: keeping the old certificate", 2);
    assert!(why.contains("do not go together"), "{why}");
    assert!(
        alive(&mut s),
        "SIGHUP with a mismatched key stopped the server"
    );
    let kept = tls(s.addr, &new, None);
    assert_eq!(peer_fingerprint(&kept), new);
    assert!(
        tls_connect(s.addr, &other, None).is_err(),
        "the certificate without its key was served"
    );
    let mut carol = register_via(tls_relay(s.addr, &new), "carol");
    alice.expect("* carol joined");
    bob.expect("* carol joined");
    carol.send("after two reloads\n");
    alice.expect("carol: after two reloads");
    bob.expect("carol: after two reloads");
    assert!(alive(&mut s), "the server died:\n{}", s.output());
}

// ---------------------------------------------------------------- PROXY

/// A PROXY v1 header naming `client` (IPv4) as the source.
fn proxy_v1(client: SocketAddr, server: SocketAddr) -> Vec<u8> {
    format!(
        "PROXY TCP4 {} {} {} {}\r\n",
        client.ip(),
        server.ip(),
        client.port(),
        server.port()
    )
    .into_bytes()
}

/// A PROXY v2 header (PROXY command, TCP over IPv4) naming `client`.
fn proxy_v2(client: SocketAddr, server: SocketAddr) -> Vec<u8> {
    let (IpAddr::V4(src), IpAddr::V4(dst)) = (client.ip(), server.ip()) else {
        panic!("IPv4 addresses only here");
    };
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.push(0x21); // version 2, PROXY
    h.push(0x11); // AF_INET, STREAM
    h.extend_from_slice(&12u16.to_be_bytes());
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    h.extend_from_slice(&client.port().to_be_bytes());
    h.extend_from_slice(&server.port().to_be_bytes());
    h
}

/// A line client from `127.0.0.<host>` whose first bytes are `header`.
#[track_caller]
fn proxied_client(server: SocketAddr, host: u8, header: &[u8]) -> Client {
    let mut tcp = tcp_from(server, host);
    tcp.write_all(header).expect("send the PROXY header");
    Client::from_stream(tcp).with_label(&format!("via 127.0.0.{host}"))
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("a socket address")
}

#[test]
fn proxy_headers_from_a_trusted_proxy_name_the_client() {
    let s = Server::start_with_debug_log(&["--proxy-from", "127.0.0.2/32"]);
    let fp = fp(&s);
    let v1_client = addr("203.0.113.9:5555");
    let mut one = proxied_client(s.addr, 2, &proxy_v1(v1_client, s.addr));
    let one_peer = one.local_addr();
    one.expect_welcome();
    one.register_here("viaone", &pw("viaone"));
    let v2_client = addr("198.51.100.7:4242");
    let mut two = proxied_client(s.addr, 2, &proxy_v2(v2_client, s.addr));
    let two_peer = two.local_addr();
    two.expect_welcome();
    two.register_here("viatwo", &pw("viatwo"));
    one.expect("* viatwo joined");
    // A v2 header before a TLS handshake (a TLS-passing proxy).
    let v2_tls = addr("192.0.2.44:4444");
    let mut tcp = tcp_from(s.addr, 2);
    let three_peer = tcp.local_addr().expect("local address");
    tcp.write_all(&proxy_v2(v2_tls, s.addr)).expect("header");
    let tls = tls_over(tcp, &fp, None).expect("TLS after a PROXY header");
    let mut three = register_via(tls_relay_over(tls), "viatls");
    one.expect("* viatls joined");
    two.expect("* viatls joined");
    three.quit();
    one.expect("* viatls left");
    two.expect("* viatls left");
    one.quit();
    two.expect("* viaone left");
    two.quit();
    // Closed on our side too, so that the server is done with them.
    drop((one, two, three));
    let log = s.output();
    for (peer, client) in [
        (one_peer, v1_client),
        (two_peer, v2_client),
        (three_peer, v2_tls),
    ] {
        let lines = connection_log(&log, peer);
        let proxied = format!("{peer} is a proxy for {}", client.ip());
        assert!(
            lines.iter().any(|l| l.contains(&proxied)),
            "no {proxied:?} in {lines:#?}"
        );
        wait_for_log(&s, &format!("closed ({client})"));
    }
}

#[test]
fn proxied_addresses_count_for_the_per_address_limit() {
    let s = Server::start(&[
        "--proxy-from",
        "127.0.0.2/32",
        "--max-per-ip",
        "1",
        "--exempt",
        "none",
    ]);
    let c1 = addr("203.0.113.9:1000");
    let mut first = proxied_client(s.addr, 2, &proxy_v1(c1, s.addr));
    first.expect_welcome();
    // Another client through the same proxy: its own address, its own count.
    let mut other = proxied_client(s.addr, 2, &proxy_v2(addr("203.0.113.10:1000"), s.addr));
    other.expect_welcome();
    // The first client again (another port), in either header form.
    for header in [
        proxy_v1(addr("203.0.113.9:1001"), s.addr),
        proxy_v2(addr("203.0.113.9:1002"), s.addr),
    ] {
        let mut again = proxied_client(s.addr, 2, &header);
        again.expect(PER_IP);
        again.expect_closed();
    }
    // The first two are untouched.
    first.register_here("first", &pw("first"));
    other.register_here("other", &pw("other"));
    first.expect("* other joined");
}

#[test]
fn proxy_header_from_an_untrusted_peer_is_not_honoured() {
    // Not honoured, and not taken for chat either: closed with no reply, as
    // is a second header from the trusted proxy.
    let s = Server::start(&["--proxy-from", "127.0.0.2/32"]);
    let header = proxy_v1(addr("203.0.113.9:5555"), s.addr);
    for host in [1, 3] {
        let mut c = proxied_client(s.addr, host, &header);
        assert_eq!(
            c.drain_until_closed(Duration::from_secs(5)),
            0,
            "from 127.0.0.{host}"
        );
    }
    let mut twice = header.clone();
    twice.extend_from_slice(&header);
    let mut c = proxied_client(s.addr, 2, &twice);
    assert_eq!(
        c.drain_until_closed(Duration::from_secs(5)),
        0,
        "a second header"
    );
    // Nor on a server that trusts nobody (the default).
    let nobody = Server::start(&[]);
    let mut c = proxied_client(
        nobody.addr,
        2,
        &proxy_v1(addr("203.0.113.9:1"), nobody.addr),
    );
    assert_eq!(c.drain_until_closed(Duration::from_secs(5)), 0);
}

#[test]
fn a_silent_client_from_a_trusted_proxy_without_a_header_is_greeted() {
    // A header is optional ("may start with"): a proxy that does not send
    // one, or a person at netcat on the proxy's host, must still get the
    // welcome after 0.3 s like anybody else.
    let s = Server::start(&["--proxy-from", "127.0.0.2/32"]);
    let mut c = Client::from_stream(tcp_from(s.addr, 2)).with_label("silent via 127.0.0.2");
    c.expect_welcome();
    c.register_here("silent", &pw("silent"));
}

/// A WebSocket from `127.0.0.<host>` with `X-Forwarded-For: forwarded`.
fn ws_forwarded(
    server: SocketAddr,
    host: u8,
    forwarded: &str,
) -> (
    SocketAddr,
    Result<(Ws, tungstenite::handshake::client::Response), tungstenite::Error>,
) {
    let tcp = tcp_from(server, host);
    let local = tcp.local_addr().expect("local address");
    let mut request = ws_request(server, false, Some(&own_origin(server, false)));
    request.headers_mut().insert(
        "X-Forwarded-For",
        forwarded.parse().expect("a header value"),
    );
    (local, ws_over(Wire::Plain(tcp), request, None))
}

#[test]
fn x_forwarded_for_on_a_websocket_from_a_trusted_proxy_names_the_client() {
    let s = Server::start_with_debug_log(&[
        "--proxy-from",
        "127.0.0.2/32",
        "--max-per-ip",
        "1",
        "--exempt",
        "none",
    ]);
    // The address the proxy added is the rightmost one.
    let (peer, result) = ws_forwarded(s.addr, 2, "10.9.8.7, 203.0.113.77");
    let (ws, _) = result.expect("upgrade through the proxy");
    let mut alice = register_via(ws_relay_over(ws), "alice");
    let lines = connection_log(&s.output(), peer);
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&format!("{peer} is a proxy for 203.0.113.77"))),
        "{lines:#?}"
    );
    // Another client through the proxy is let in; the same one again is
    // over its limit of one.
    let (_, result) = ws_forwarded(s.addr, 2, "203.0.113.78");
    let (mut other, _) = result.expect("another forwarded client");
    ws_expect_welcome(&mut other);
    let refused = forwarded_request(s.addr, &upgrade_request(s.addr, "203.0.113.77"));
    assert!(
        !refused.starts_with(b"HTTP/1.1 101"),
        "a second connection for 203.0.113.77 was upgraded: {:?}",
        String::from_utf8_lossy(&refused)
    );
    // From an untrusted address the header names nobody.
    let (peer, result) = ws_forwarded(s.addr, 3, "203.0.113.99");
    let (mut ws, _) = result.expect("upgrade from an untrusted peer");
    ws_expect_welcome(&mut ws);
    alice.quiet();
    let lines = connection_log(&s.output(), peer);
    assert!(
        !lines.iter().any(|l| l.contains("is a proxy for")),
        "{lines:#?}"
    );
}

/// A WebSocket upgrade request for `/ws` naming `forwarded` as the client.
fn upgrade_request(server: SocketAddr, forwarded: &str) -> String {
    format!(
        "GET /ws HTTP/1.1\r\nHost: {server}\r\nOrigin: http://{server}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\nX-Forwarded-For: {forwarded}\r\n\r\n"
    )
}

/// Sends `request` from the trusted proxy (127.0.0.2) and returns every
/// byte of the answer, up to the close.
#[track_caller]
fn forwarded_request(server: SocketAddr, request: &str) -> Vec<u8> {
    let mut tcp = tcp_from(server, 2);
    tcp.write_all(request.as_bytes()).expect("send the request");
    read_until_closed(&mut tcp, Duration::from_secs(10))
}

#[test]
fn forwarded_http_client_over_the_limit_gets_an_http_answer() {
    let s = Server::start(&[
        "--proxy-from",
        "127.0.0.2/32",
        "--max-per-ip",
        "1",
        "--exempt",
        "none",
    ]);
    let (_, result) = ws_forwarded(s.addr, 2, "203.0.113.77");
    let (mut held, _) = result.expect("the first forwarded client is let in");
    ws_expect_welcome(&mut held);
    let healthz = format!(
        "GET /healthz HTTP/1.1\r\nHost: {}\r\nX-Forwarded-For: 203.0.113.77\r\n\r\n",
        s.addr
    );
    for request in [upgrade_request(s.addr, "203.0.113.77"), healthz] {
        let answer = forwarded_request(s.addr, &request);
        let text = String::from_utf8_lossy(&answer).into_owned();
        assert!(
            text.starts_with("HTTP/1.1 4") || text.starts_with("HTTP/1.1 5"),
            "not an HTTP refusal: {text:?}"
        );
        let resp = parse_response(&answer);
        assert_security_headers(&resp, false);
    }
}

// ---------------------------------------------------------------- HTTP

/// `request` over a fresh connection: plain, or TLS (with ALPN or without).
#[track_caller]
fn http(s: &Server, tls: Option<(&str, Option<&[u8]>)>, request: &str) -> HttpResponse {
    match tls {
        None => http_exchange(&mut tcp_connect(s.addr, None).expect("connect"), request),
        Some((fp, alpn)) => http_exchange(&mut self::tls(s.addr, fp, alpn), request),
    }
}

#[test]
fn http_answers_carry_the_security_headers() {
    let s = Server::start(&[]);
    let fp = fp(&s);
    let host = s.addr;
    for (tls, over) in [
        (None, "plain"),
        (Some((fp.as_str(), Some(ALPN_HTTP))), "TLS with ALPN"),
        (Some((fp.as_str(), None)), "TLS without ALPN"),
    ] {
        let is_tls = tls.is_some();
        let resp = http(
            &s,
            tls,
            &format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n"),
        );
        assert_eq!(resp.status, 200, "{over}: {resp:?}");
        assert_eq!(resp.body, b"ok\n", "{over}");
        assert_security_headers(&resp, is_tls);
        let resp = http(
            &s,
            tls,
            &format!("GET /nope HTTP/1.1\r\nHost: {host}\r\n\r\n"),
        );
        assert_eq!(resp.status, 404, "{over}: {resp:?}");
        assert_security_headers(&resp, is_tls);
        for request in [
            format!("POST /healthz HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5\r\n\r\nhello"),
            format!(
                "GET /healthz HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
            ),
        ] {
            let resp = http(&s, tls, &request);
            assert_eq!(resp.status, 413, "{over}: {request:?} {resp:?}");
            assert_security_headers(&resp, is_tls);
        }
    }
}

#[test]
fn an_oversized_request_head_is_refused_without_reading_it_all() {
    let s = Server::start(&[]);
    let mut head = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: ".to_vec();
    head.resize(1024 * 1024, b'a');
    // 16 KiB of the megabyte: the answer must come before the rest is sent.
    let mut tcp = tcp_connect(s.addr, None).expect("connect");
    tcp.write_all(&head[..16 * 1024]).expect("send the start");
    let resp = parse_response(&read_until_closed(&mut tcp, Duration::from_secs(10)));
    assert_eq!(resp.status, 431, "{resp:?}");
    assert_security_headers(&resp, false);
    // All of it at once: still 431 and a close, the writer free to fail.
    let mut tcp = tcp_connect(s.addr, None).expect("connect");
    let mut writer = tcp.try_clone().expect("clone");
    let sent = thread::spawn(move || writer.write_all(&head).is_ok());
    let resp = parse_response(&read_until_closed(&mut tcp, Duration::from_secs(10)));
    assert_eq!(resp.status, 431, "{resp:?}");
    let _ = sent.join();
    // The server is fine.
    register(s.addr, "after", &pw("after"));
}

#[test]
fn a_stalled_http_head_is_closed_within_the_http_limit() {
    let s = Server::start(&[]);
    let fp = fp(&s);
    let partial = "GET /healthz HTTP/1.1\r\nHost: localhost\r\n";
    let started = Instant::now();
    let mut plain = tcp_connect(s.addr, None).expect("connect");
    plain
        .write_all(partial.as_bytes())
        .expect("send half a head");
    let mut browser = tls(s.addr, &fp, Some(ALPN_HTTP));
    browser
        .write_all(partial.as_bytes())
        .expect("send half a head");
    browser.flush().expect("flush");
    // 10 s allowed; 25 s waited, well short of the 60 s login timeout.
    for (answer, over) in [
        (
            read_until_closed(&mut plain, Duration::from_secs(25)),
            "plain",
        ),
        (
            read_until_closed(&mut browser, Duration::from_secs(25)),
            "TLS",
        ),
    ] {
        println!("{over}: closed after {:?}", started.elapsed());
        assert!(
            answer.is_empty() || answer.starts_with(b"HTTP/1.1 408"),
            "{over}: {:?}",
            String::from_utf8_lossy(&answer)
        );
    }
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn tls_off_closes_a_client_hello_without_a_reply() {
    let s = Server::start(&["--tls", "off"]);
    assert!(
        logged_fingerprints(&s.output()).is_empty(),
        "a fingerprint with TLS off:\n{}",
        s.output()
    );
    let mut tcp = tcp_connect(s.addr, None).expect("connect");
    tcp.write_all(&client_hello()).expect("send a ClientHello");
    let started = Instant::now();
    let got = read_until_closed(&mut tcp, Duration::from_secs(5));
    assert!(got.is_empty(), "a reply: {got:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "not at once: {:?}",
        started.elapsed()
    );
    // Plain text still works.
    register(s.addr, "plain", &pw("plain"));
}

// ---------------------------------------------------------------- listeners

#[test]
fn every_listen_address_serves_logins() {
    let s = Server::start(&["--listen", "127.0.0.1:0", "--listen", "127.0.0.3:0"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let addrs: Vec<SocketAddr> = loop {
        let log = s.output();
        let addrs: Vec<SocketAddr> = log
            .lines()
            .filter_map(|l| l.split_once("listening on ").map(|(_, a)| addr(a.trim())))
            .collect();
        if addrs.len() >= 2 {
            break addrs;
        }
        assert!(Instant::now() < deadline, "two listeners expected:\n{log}");
        thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(addrs.len(), 2, "{addrs:?}");
    assert_eq!(addrs[0], s.addr);
    assert_eq!(addrs[1].ip(), IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)));
    create_account(addrs[0], "alice", &pw("alice"));
    let mut bob = register(addrs[1], "bob", &pw("bob"));
    let mut alice = login(addrs[1], "alice", &pw("alice"));
    bob.expect("* alice joined");
    let mut alice2 = Client::connect_welcomed(addrs[0]);
    alice2.login_fails("alice", "wrong-password");
    alice.send("hi from the second port\n");
    bob.expect("alice: hi from the second port");
    // TLS on the second port too.
    let fp = fp(&s);
    let mut carol = register_via(tls_relay(addrs[1], &fp), "carol");
    alice.expect("* carol joined");
    bob.expect("* carol joined");
    carol.send("tls on port two\n");
    bob.expect("carol: tls on port two");
}

// ---------------------------------------------------------------- tours

/// The line protocol through `relay()` (a fresh relayed connection each
/// call), against a plain user: the same lines the plain tests expect.
#[track_caller]
fn protocol_tour(s: &Server, relay: &dyn Fn() -> SocketAddr, over_tls: bool) {
    // Register; a bad choice and a bad name first.
    let mut alice = Client::connect(relay()).with_label("alice (relayed)");
    alice.expect_welcome();
    alice.send("X\n");
    alice.expect(BAD_CHOICE);
    alice.expect(CHOICE);
    alice.send("R\n");
    alice.expect(USERNAME);
    alice.send("-bad\n");
    alice.expect(BAD_NAME);
    alice.expect(USERNAME);
    alice.send("alice\n");
    alice.expect(PASSWORD);
    alice.send("short\n");
    alice.expect(BAD_PW);
    alice.expect(PASSWORD);
    alice.send(&format!("{}\n", pw("alice")));
    alice.expect("* registered and logged in as alice");
    alice.expect("* online (1): alice");
    let mut bob = join(s.addr, "bob", &mut [&mut alice]);

    // Chatting.
    alice.send("hello bob\n");
    bob.expect("alice: hello bob");
    alice.send("with crlf\r\n");
    if over_tls {
        bob.expect("alice: with crlf");
    } else {
        // One message is one line: dropping a CR before the LF is the line
        // framing's rule, so in a message ("with crlf\r") it is a lone CR.
        alice.expect(CONTROL);
    }
    alice.send("/who\n");
    alice.expect("* online (2): alice, bob");
    alice.send("/me waves\n");
    bob.expect("* alice waves");
    alice.send("/msg bob psst\n");
    bob.expect("@alice: psst");
    bob.send("/msg alice psst back\n");
    alice.expect("@bob: psst back");
    alice.send("//text\n");
    bob.expect("alice: /text");
    alice.send("/frob\n");
    alice.expect("! unknown command /frob; try /help");
    alice.send(&format!("{}\n", "x".repeat(4097)));
    alice.expect("! line too long (max 4096 bytes)");
    alice.send(&format!("{}\n", "y".repeat(4096)));
    bob.expect(&format!("alice: {}", "y".repeat(4096)));
    alice.send("bell\x07\n");
    alice.expect(CONTROL);
    if over_tls {
        // (A WebSocket text message cannot carry invalid UTF-8.)
        alice.send_bytes(b"bad \xff\n");
        alice.expect(BAD_UTF8);
    }
    alice.send("still fine\n");
    bob.expect("alice: still fine");
    alice.quiet();
    bob.quiet();

    // A wrong password, then the right one: the old connection is taken over.
    let mut again = Client::connect(relay()).with_label("alice again (relayed)");
    again.expect_welcome();
    again.login_fails("alice", "not-her-password");
    again.login_fails("nobody", "not-a-password");
    again.send("L\nALICE\n");
    again.expect(USERNAME);
    again.expect(PASSWORD);
    again.send(&format!("{}\n", pw("alice")));
    again.expect("* logged in as alice");
    again.expect("* online (2): alice, bob");
    alice.expect(TAKEN_OVER);
    alice.expect_closed();
    bob.quiet();
    again.send("back\n");
    bob.expect("alice: back");

    // /quit: bye, the close, and the left notice.
    again.send("/quit\nnot read\n");
    again.expect("* bye");
    again.expect_closed();
    bob.expect("* alice left");
    bob.send("/who\n");
    bob.expect("* online (1): bob");
}

#[test]
fn protocol_tour_over_tls() {
    // The tour ends with version 1's takeover: one connection per account.
    let s = Server::start(&["--sessions-per-account", "1"]);
    let fp = fp(&s);
    protocol_tour(&s, &|| tls_relay(s.addr, &fp), true);
}

#[test]
fn protocol_tour_over_websocket() {
    let one = ["--sessions-per-account", "1"];
    let s = Server::start(&one);
    protocol_tour(&s, &|| ws_relay(s.addr, None, None), false);
    let s = Server::start(&one);
    let fp = fp(&s);
    let origin = own_origin(s.addr, true);
    protocol_tour(&s, &|| ws_relay(s.addr, Some(&fp), Some(&origin)), false);
}
