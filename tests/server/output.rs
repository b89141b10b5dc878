//! What the server holds for readers, and for how long: the bound on the
//! unsent output of all connections together (`--max-total-output`), and
//! the byte rate of flood control (`--rate-bytes`) that keeps a few
//! senders from cutting off a reader on a slow link.

use std::io::{BufRead, BufReader, ErrorKind, Read};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

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
/// each sending `/who` a hundred thousand times (each answer ~600 bytes
/// here, 15 KB with 1,500 users online). Every one stays under its own
/// `--max-output` (64 MiB here), but each asks for more than the bound and
/// the kernel's buffers for its socket together (8 + 4 MiB), even the
/// last to send, who may find the other hogs gone and answers of 250 bytes
/// (25 MB), and all of them would hold ~600 MB. With `--max-total-output 8 MiB`, the ones holding the
/// most are cut off, the server's resident memory grows by a few times the
/// bound at most, users who asked for little keep their connections, and
/// the probe chats on.
#[test]
fn the_total_of_unsent_output_is_bounded() {
    const HOGS: usize = 12;
    const LIGHT: usize = 4;
    const HOG_WHOS: usize = 100_000;
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

/// A burst the readers keep up with is never cut off by the total bound:
/// twenty users send twenty 4,000-byte lines each at the same instant (the
/// server is stopped while they write), 1.6 MB for each of 22 readers, 35 MB
/// in all, through `--max-total-output 4 MiB`. Every reader reads (the
/// senders too), so the server paces the burst into slices small enough
/// for all of them together, and nobody is cut off.
#[test]
fn a_burst_that_readers_keep_up_with_is_not_cut_off_by_the_total_bound() {
    const SENDERS: usize = 20;
    let s = Server::start(&["--rate-bytes", "off", "--max-total-output", "4194304"]);
    let probe = Probe::start(s.addr);
    let mut senders = burst_senders(s.addr, &probe, SENDERS);
    let nobody = Arc::new(Mutex::new(None));
    let drains: Vec<_> = senders
        .iter()
        .map(|c| drain(c.writer_clone(), "", nobody.clone()))
        .collect();
    let (report, bursts) = send_bursts_at_once(&s, probe, &mut senders);
    let left: Vec<&String> = report
        .rx_heard
        .iter()
        .filter(|l| l.ends_with(" left"))
        .collect();
    println!(
        "probe heard {bursts} burst lines of {}; left: {left:?}",
        SENDERS * 20
    );
    assert!(left.is_empty(), "readers were cut off: {left:?}");
    assert_eq!(bursts, SENDERS * 20, "every burst line reached the reader");
    assert!(
        !s.output().contains("(--max-total-output)"),
        "{}",
        s.output()
    );
    for c in &senders {
        c.shutdown_write();
    }
    drop(senders);
    s.sigterm();
    for d in drains {
        let _ = d.join();
    }
}

// ------------------------------------------------------------ slow links

/// Reads at about `rate` bytes a second, in small pieces, until told to
/// stop or the connection ends; returns the bytes read.
fn paced_reader(
    mut stream: TcpStream,
    rate: usize,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<usize> {
    thread::spawn(move || {
        const TICK: Duration = Duration::from_millis(10);
        let per_tick = (rate / 100).max(1);
        let mut buf = vec![0u8; per_tick];
        let start = Instant::now();
        let mut total = 0;
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("read timeout");
        while !stop.load(Ordering::SeqCst) {
            let due = start + TICK * (total / per_tick) as u32;
            thread::sleep(due.saturating_duration_since(Instant::now()));
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => total += n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => break,
            }
        }
        total
    })
}

/// Reads and drops everything, so that a sender is never a slow consumer
/// itself; counts the `! slow down` warnings it gets, and notes when it
/// hears `gone` (the first time anyone does).
fn drain(
    stream: TcpStream,
    gone: &'static str,
    heard: Arc<Mutex<Option<Instant>>>,
) -> thread::JoinHandle<usize> {
    thread::spawn(move || {
        let mut warned = 0;
        let mut reader = BufReader::new(stream);
        let mut line = Vec::new();
        while let Ok(n) = reader.read_until(b'\n', &mut line) {
            if n == 0 {
                break;
            }
            if line.starts_with(SLOW_DOWN.as_bytes()) {
                warned += 1;
            } else if line.strip_suffix(b"\n") == Some(gone.as_bytes()) {
                heard.lock().unwrap().get_or_insert_with(Instant::now);
            }
            line.clear();
        }
        warned
    })
}

/// Sixteen users each send 4,000-byte lines at the full line rate (10 a
/// second: 640 KB/s together) to a reader on a 100 KB/s link (a small
/// receive window, reads paced). Without a byte rate the reader's backlog
/// grows by 540 KB a second and it is cut off as a slow consumer within
/// seconds (with `--max-output 64 KiB` here; the kernel's buffers hold a
/// few MB first). With the default `--rate-bytes 4096` the senders get
/// `! slow down` and together send 64 KiB/s, which the link carries: the
/// reader stays connected for the whole test.
#[test]
fn a_few_senders_do_not_cut_off_a_slow_link() {
    const SENDERS: usize = 16;
    const LINK: usize = 100_000;
    const RUN: Duration = Duration::from_secs(12);
    let s = Server::start(&["--max-output", "65536"]);
    let mut reader = small_window_client(s.addr, "mobile");
    reader.expect_welcome();
    reader.register_here("mobile", &pw("mobile"));
    let mut senders: Vec<Client> = (0..SENDERS)
        .map(|i| {
            let name = format!("sender{i:02}");
            let c = register(s.addr, &name, &pw(&name));
            reader.expect(&format!("* {name} joined"));
            c
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let link = paced_reader(reader.writer_clone(), LINK, stop.clone());
    // The server closes a slow consumer at once, but the few MB already in
    // its socket buffers still trickle to the reader; the others hear of
    // it at once.
    let left = Arc::new(Mutex::new(None));
    let drains: Vec<_> = senders
        .iter()
        .map(|c| drain(c.writer_clone(), "* mobile left", left.clone()))
        .collect();

    let line = format!("{}\n", "s".repeat(4000));
    let start = Instant::now();
    let mut tick = 0u32;
    while start.elapsed() < RUN && left.lock().unwrap().is_none() {
        for c in &mut senders {
            let _ = c.try_send_bytes(line.as_bytes());
        }
        tick += 1;
        let next = start + Duration::from_millis(100) * tick;
        thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    let cut = left.lock().unwrap().map(|at| at - start);
    stop.store(true, Ordering::SeqCst);
    let read = link.join().expect("reader thread");
    println!(
        "the reader read {} KB in {:?}; {}",
        read / 1000,
        start.elapsed(),
        match cut {
            Some(at) => format!("it was cut off after {at:?}"),
            None => "it is still connected".to_string(),
        }
    );
    assert!(
        cut.is_none(),
        "the reader on a {LINK} B/s link was cut off after {cut:?} ({read} bytes read)"
    );
    assert!(read > 100_000, "the reader got only {read} bytes");
    for c in &senders {
        c.shutdown_write();
    }
    drop(senders);
    s.sigterm();
    let warned: usize = drains.into_iter().map(|d| d.join().expect("drain")).sum();
    assert!(
        warned >= SENDERS,
        "only {warned} `! slow down` for {SENDERS} senders"
    );
}
