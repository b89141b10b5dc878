//! The server as another host sees it. Every address in 127.0.0.0/8 is
//! loopback, so a client "from elsewhere" runs in a network namespace of its
//! own, joined to this one by a veth pair: its packets arrive from a
//! private address that is not loopback, as a remote user's would. Needs
//! root and iproute2 (CI has both); without root the tests say so and pass
//! nothing.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::util::*;

/// A network namespace with one veth pair: this side `host`, the
/// namespace's side `peer`, in a /30 of 10.213.0.0/16. Removed on drop.
struct Remote {
    ns: String,
    veth: String,
    host: String,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[track_caller]
fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `ip` (install iproute2): {e}"));
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Remote {
    /// `None` when not root (the namespace cannot be made).
    fn new() -> Option<Remote> {
        if !is_root() {
            eprintln!("not root: skipping the remote-host tests (CI runs them as root)");
            return None;
        }
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let id = std::process::id() % 1000;
        let ns = format!("nct{id}x{n}");
        let veth = format!("nct{id}v{n}");
        let peer_if = format!("nct{id}p{n}");
        let block = (std::process::id() % 250) as u8;
        let base = 4 * (n % 60) as u8;
        let host = format!("10.213.{block}.{}", base + 1);
        let peer = format!("10.213.{block}.{}", base + 2);
        let remote = Remote {
            ns: ns.clone(),
            veth: veth.clone(),
            host: host.clone(),
        };
        ip(&["netns", "add", &ns]);
        ip(&[
            "link", "add", &veth, "type", "veth", "peer", "name", &peer_if,
        ]);
        ip(&["link", "set", &peer_if, "netns", &ns]);
        ip(&["addr", "add", &format!("{host}/30"), "dev", &veth]);
        ip(&["link", "set", &veth, "up"]);
        ip(&[
            "netns",
            "exec",
            &ns,
            "ip",
            "addr",
            "add",
            &format!("{peer}/30"),
            "dev",
            &peer_if,
        ]);
        ip(&["netns", "exec", &ns, "ip", "link", "set", &peer_if, "up"]);
        ip(&["netns", "exec", &ns, "ip", "link", "set", "lo", "up"]);
        Some(remote)
    }

    /// Runs a Python client inside the namespace: it connects to `port` on
    /// this side, sends `send`, and prints everything it receives until the
    /// server closes (or 5 s pass). With `tls`, it speaks TLS first (no
    /// certificate check: the test is about the transport).
    #[track_caller]
    fn talk(&self, port: u16, send: &[u8], tls: bool) -> String {
        let code = r#"
import socket, ssl, sys, time
host, port, tls, data = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", bytes.fromhex(sys.argv[4])
s = socket.create_connection((host, port), timeout=5)
if tls:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    s = ctx.wrap_socket(s)
if data:
    s.sendall(data)
got = b""
end = time.time() + 5
try:
    while time.time() < end:
        b = s.recv(65536)
        if not b:
            break
        got += b
        if b"? choice" in got:
            break
except (socket.timeout, ssl.SSLError, ConnectionResetError):
    pass
sys.stdout.write(got.decode("utf-8", "replace"))
"#;
        let hex: String = send.iter().map(|b| format!("{b:02x}")).collect();
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns, "python3", "-c", code, &self.host])
            .arg(port.to_string())
            .arg(if tls { "1" } else { "0" })
            .arg(hex)
            .output()
            .expect("run python3 in the namespace");
        assert!(
            out.status.success(),
            "client failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A server listening on this side of the pair.
    #[track_caller]
    fn server(&self, extra: &[&str]) -> Server {
        let listen = format!("{}:0", self.host);
        let mut args = vec!["--listen", listen.as_str()];
        args.extend_from_slice(extra);
        Server::start(&args)
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.veth])
            .status();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

#[test]
fn plain_text_from_another_host_is_told_to_use_tls() {
    let Some(remote) = Remote::new() else { return };
    let s = remote.server(&[]);
    let port = s.addr.port();
    // A line client, silent or speaking: one line, then the close.
    for send in [&b""[..], b"L\nalice\n"] {
        assert_eq!(
            remote.talk(port, send, false),
            "! this server needs TLS: use neochat, or ncat --ssl HOST PORT\n"
        );
    }
    // Plain HTTP is sent to the same URL over https.
    let got = remote.talk(
        port,
        b"GET /ws?x=1 HTTP/1.1\r\nHost: chat.example.org:59000\r\n\r\n",
        false,
    );
    assert!(got.starts_with("HTTP/1.1 301 "), "{got}");
    assert!(
        got.contains("\r\nLocation: https://chat.example.org:59000/ws?x=1\r\n"),
        "{got}"
    );
    // Over TLS the same host is welcome.
    let got = remote.talk(port, b"", true);
    assert!(
        got.starts_with("* welcome to NeoChat (0 online)\n"),
        "{got:?}"
    );
}

#[test]
fn plaintext_any_serves_everybody() {
    let Some(remote) = Remote::new() else { return };
    let s = remote.server(&["--plaintext", "any"]);
    let got = remote.talk(s.addr.port(), b"", false);
    assert!(
        got.starts_with("* welcome to NeoChat (0 online)\n"),
        "{got:?}"
    );
    let got = remote.talk(s.addr.port(), b"GET /healthz HTTP/1.1\r\n\r\n", false);
    assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
}

#[test]
fn a_remote_address_is_limited_like_any_other() {
    let Some(remote) = Remote::new() else { return };
    // The namespace's address is not exempt (only loopback is, by default).
    let s = remote.server(&["--max-per-ip", "1"]);
    let port = s.addr.port();
    // One connection held open from the namespace, then a second one.
    let code = r#"
import socket, ssl, sys, time
host, port = sys.argv[1], int(sys.argv[2])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
a = ctx.wrap_socket(socket.create_connection((host, port), timeout=5))
first = a.recv(100)
b = socket.create_connection((host, port), timeout=5)
got = b""
while True:
    x = b.recv(100)
    if not x:
        break
    got += x
sys.stdout.write(first.decode() + "|" + got.decode())
"#;
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &remote.ns,
            "python3",
            "-c",
            code,
            &remote.host,
        ])
        .arg(port.to_string())
        .output()
        .expect("run python3 in the namespace");
    let text = String::from_utf8_lossy(&out.stdout);
    let (first, second) = text
        .split_once('|')
        .unwrap_or_else(|| panic!("{text:?} {out:?}"));
    assert!(first.starts_with("* welcome"), "{first:?}");
    assert_eq!(second, "! too many connections from your address\n");
    // The limit was logged with the remote address.
    wait_for_log(&s, "10.213.");
}
