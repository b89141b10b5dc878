//! What the server holds for readers: the bound on the unsent output of
//! all connections together (`--max-total-output`).

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::util::*;

/// A client whose receive buffer is tiny from the first byte, so that what
/// the server sends it and it does not read stays in the server.
fn small_window_client(addr: SocketAddr, label: &str) -> Client {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    socket.connect(&addr.into()).expect("connect");
    Client::from_stream(TcpStream::from(socket)).with_label(label)
}

/// The longest name there is (32 characters), so that `/who` is long.
fn long_name(prefix: &str, i: usize) -> String {
    let name = format!("{prefix}{i:02}_");
    format!("{name}{}", "x".repeat(32 - name.len()))
}

// ------------------------------------------------------------ total output

/// The attack that motivated `--max-total-output`: users that never read,
/// each sending `/who` thousands of times (each answer ~600 bytes here,
/// 15 KB with 1,500 users online). Every one stays under its own
/// `--max-output` (64 MiB here), but each asks for more than the bound and
/// the kernel's socket buffers together (23 MB), and all of them would
/// hold ~250 MB. With `--max-total-output 8 MiB`, the ones holding the
/// most are cut off, the server's resident memory grows by a few times the
/// bound at most, users who asked for little keep their connections, and
/// the probe chats on.
#[test]
fn the_total_of_unsent_output_is_bounded() {
    const HOGS: usize = 12;
    const LIGHT: usize = 4;
    const HOG_WHOS: usize = 40_000;
    const LIGHT_WHOS: usize = 20;
    const BOUND: usize = 8 << 20;
    let bound = BOUND.to_string();
    let s = Server::start(&[
        "--rate",
        "off",
        "--max-output",
        "67108864",
        "--max-total-output",
        &bound,
    ]);
    let probe = Probe::start(s.addr);
    let join = |prefix: &str, i: usize| {
        let name = long_name(prefix, i);
        let mut c = small_window_client(s.addr, &name);
        c.expect_welcome();
        c.register_here(&name, &pw(&name));
        probe.wait_heard(&format!("* {name} joined"));
        c
    };
    let mut hogs: Vec<Client> = (0..HOGS).map(|i| join("hog", i)).collect();
    let mut light: Vec<Client> = (0..LIGHT).map(|i| join("light", i)).collect();
    probe.wait_progress(2);
    let rss_before = s.peak_rss_kib();

    // From here on nobody but the probe reads, until the checks below.
    for c in &mut light {
        c.send(&"/who\n".repeat(LIGHT_WHOS));
    }
    for c in &mut hogs {
        // The server may cut it off while it is still sending.
        let _ = c.try_send_bytes("/who\n".repeat(HOG_WHOS).as_bytes());
    }
    probe.wait_progress(3);
    let rss_after = s.peak_rss_kib();
    let grew = rss_after.saturating_sub(rss_before) as usize * 1024;
    println!(
        "peak RSS {rss_before} KiB before the attack, {rss_after} KiB after: grew {} MiB",
        grew >> 20
    );
    assert!(
        grew < 6 * BOUND,
        "the server's peak RSS grew by {} MiB under a {} MiB bound",
        grew >> 20,
        BOUND >> 20
    );

    // Every hog was cut off before it got what it asked for.
    let online = HOGS + LIGHT + 2;
    let answer = format!("* online ({online}): ").len() + online * 34;
    for c in &mut hogs {
        let got = c.drain_until_closed(Duration::from_secs(30));
        assert!(
            got < HOG_WHOS * answer / 2,
            "{}: got {got} bytes of {} asked for: never cut off",
            c.label,
            HOG_WHOS * answer
        );
    }
    // Those who asked for little are still there, and got every answer.
    for c in &mut light {
        c.send("/who\n");
        let mut answers = 0;
        let last = loop {
            let line = c.line_past(&probe);
            if line.starts_with("* online (") {
                answers += 1;
                if answers == LIGHT_WHOS + 1 {
                    break line;
                }
            }
        };
        let names = parse_online(&last).unwrap_or_else(|| panic!("{last:?}"));
        assert_eq!(names.len(), LIGHT + 2, "{}: {names:?}", c.label);
    }
    let log = s.output();
    assert!(
        log.contains("(--max-total-output)"),
        "no warning about the total output bound in the log:\n{log}"
    );
    let report = probe.finish();
    for i in 0..HOGS {
        let left = format!("* {} left", long_name("hog", i));
        assert!(report.rx_heard.contains(&left), "the probe missed {left:?}");
    }
}
