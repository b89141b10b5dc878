//! Logins get a share of the loop (src/reactor/backlog.rs), split by
//! kind: connections that never finish logging in, however many and
//! however busy, must not hold back the other kinds (a password check's
//! answer, a chatting user's read of the store, new connections).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::util::*;

/// The attack stops by itself after this: answers that only came then
/// were held back by it.
const CAP: Duration = Duration::from_secs(20);

/// Pre-login connections that keep answering the choice prompt with
/// garbage (unlimited: "! please answer R or L" each time). Each is read in
/// the backlog slice, ahead of the auth results and the store's answers.
fn start_attack(
    addr: std::net::SocketAddr,
    n: usize,
) -> (Arc<AtomicBool>, thread::JoinHandle<(u64, bool)>) {
    let stop = Arc::new(AtomicBool::new(false));
    let mut socks = Vec::new();
    for _ in 0..n {
        let mut c = Client::connect_welcomed(addr);
        c.send("x\n");
        c.expect("! please answer R or L");
        c.expect(CHOICE);
        let s = c.into_stream();
        s.set_nonblocking(true).unwrap();
        socks.push(s);
    }
    let flag = stop.clone();
    let h = thread::spawn(move || {
        let mut sent = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        let began = Instant::now();
        while !flag.load(Ordering::Relaxed) {
            if began.elapsed() > CAP {
                flag.store(true, Ordering::Relaxed);
                return (sent, true);
            }
            for s in &mut socks {
                let _ = (&*s).write(b"x\n");
                sent += 1;
                while let Ok(n) = (&*s).read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                }
            }
            thread::sleep(Duration::from_micros(200));
        }
        let _: Vec<TcpStream> = socks;
        (sent, false)
    });
    (stop, h)
}

/// Time from sending `line` on `s` to receiving the line `want`.
fn round_trip(s: TcpStream, line: &str, want: &str) -> Duration {
    use std::io::BufRead;
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let t = Instant::now();
    (&s).write_all(line.as_bytes()).unwrap();
    let mut r = std::io::BufReader::new(s);
    let mut got = String::new();
    loop {
        got.clear();
        r.read_line(&mut got).expect("an answer within 60 s");
        if got.trim_end() == want {
            return t.elapsed();
        }
    }
}

#[test]
fn connections_that_never_log_in_hold_back_no_answer_nor_login() {
    let s = Server::start(&[]);
    let alice = register(s.addr, "alice", &pw("alice")).into_stream();
    create_account(s.addr, "bob", &pw("bob"));
    let (stop, attack) = start_attack(s.addr, 40);
    thread::sleep(Duration::from_millis(300));
    // A chatting user's read of the store, and a password login (an auth
    // worker's answer), while the attack goes on.
    let hist = thread::spawn(move || round_trip(alice, "/history @alice\n", "* end of history"));
    let login = thread::spawn({
        let addr = s.addr;
        move || {
            let bob = TcpStream::connect(addr).unwrap();
            let line = format!("L\nbob\n{}\n", pw("bob"));
            round_trip(bob, &line, "* logged in as bob")
        }
    });
    let t_hist = hist.join().unwrap();
    let t_login = login.join().unwrap();
    eprintln!("during the attack: /history in {t_hist:?}, login in {t_login:?}");
    stop.store(true, Ordering::Relaxed);
    let (sent, capped) = attack.join().unwrap();
    assert!(
        !capped,
        "answered only once the attack stopped by itself ({CAP:?}): /history after \
         {t_hist:?}, login after {t_login:?}, {sent} garbage lines"
    );
    assert!(sent > 0);
}

/// The kernel's listen queue for `addr`, as `ss` reports it (Send-Q of a
/// listening socket is its backlog).
fn listen_queue(addr: std::net::SocketAddr) -> u64 {
    let out = std::process::Command::new("ss")
        .args(["-ltnH", &format!("sport = :{}", addr.port())])
        .output()
        .expect("run ss (iproute2)");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains(&format!(":{}", addr.port())))
        .unwrap_or_else(|| panic!("ss shows no listener on {addr}: {text:?}"));
    line.split_whitespace()
        .nth(2)
        .and_then(|q| q.parse().ok())
        .unwrap_or_else(|| panic!("no Send-Q in {line:?}"))
}

/// New connections wait in the kernel's queue while logins have had their
/// share of the loop, so the queue has room for every client the server
/// takes (up to the kernel's cap, `net.core.somaxconn`): with the 1,024 it
/// had, 10,000 clients reconnecting at once lost thousands of handshakes,
/// and each of those clients waited 1 or 3 s more for its SYN to be sent
/// again.
#[test]
fn the_listen_queue_has_room_for_every_client_at_once() {
    let somaxconn: u64 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .expect("read somaxconn")
        .trim()
        .parse()
        .expect("somaxconn is a number");
    for (max_clients, wanted) in [("3000", 3064u64), ("10000", 10_064)] {
        let server = Server::start(&["--max-clients", max_clients]);
        assert_eq!(
            listen_queue(server.addr),
            wanted.min(somaxconn),
            "--max-clients {max_clients}, somaxconn {somaxconn}"
        );
    }
    // A small server still queues a burst of 1,024.
    let server = Server::start(&["--max-clients", "10"]);
    assert_eq!(listen_queue(server.addr), 1024.min(somaxconn));
}
