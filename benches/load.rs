//! The load benchmark: a real server on loopback, driven by the same
//! generator as `neochat-bench`.
//!
//! - fan-out at R=100 and R=1000 (one sender, 64-byte messages, closed loop):
//!   the server runs in this process, on its own thread;
//! - idle at 10,000 logged-in connections: the server runs as a child
//!   process (the `neochat-server` binary), because resident memory and file
//!   descriptors cannot be told apart within one process.
//!
//! Prints medians of `NEOCHAT_BENCH_RUNS` runs (default 3). Figures, not
//! assertions: this machine is shared and noisy.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use neochat::loadgen::{self, Common, FanoutOpts, IdleOpts, Target};
use neochat::{Config, Server};

fn scratch_dir() -> tempfile::TempDir {
    // tmpfs where there is one: these runs measure chat, not the disk.
    let shm = PathBuf::from("/dev/shm");
    if shm.is_dir()
        && let Ok(dir) = tempfile::tempdir_in(&shm)
    {
        return dir;
    }
    tempfile::tempdir().expect("temporary directory")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument picks scenarios.
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wanted = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    let runs: usize = std::env::var("NEOCHAT_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    if let Err(e) = neochat::reactor::raise_fd_limit() {
        eprintln!("cannot raise the open-file limit: {e}");
    }
    println!("load benchmark, medians of {runs} runs");
    println!(
        "{:<34} {:>16} {:>12} {:>12}",
        "scenario", "deliveries/s", "p50 us", "p99 us"
    );

    let dir = scratch_dir();
    let server = Server::bind(Config {
        listen: vec!["127.0.0.1:0".parse().expect("address")],
        db: dir.path().join("load.db"),
        bcrypt_cost: 4,
        rate: None,
        ..Config::default()
    })
    .expect("server starts");
    let addr = server.local_addr();
    let stop = server.shutdown_handle();
    let thread = std::thread::spawn(move || server.run());

    for receivers in [100, 1000] {
        let name = format!("fanout R={receivers}");
        if !wanted(&name) {
            continue;
        }
        let mut rates = Vec::new();
        let mut p50 = Vec::new();
        let mut p99 = Vec::new();
        for _ in 0..runs {
            let mut common = Common::new(Target::NeoChat(addr));
            common.progress = false;
            let opts = FanoutOpts {
                receivers,
                duration: Duration::from_secs(3),
                ..FanoutOpts::default()
            };
            let r = loadgen::fanout(&common, &opts).expect("fanout run");
            rates.push(r.deliveries_per_sec);
            p50.push(r.latency.p50_us);
            p99.push(r.latency.p99_us);
            // Let the server see everyone leave before the next run.
            std::thread::sleep(Duration::from_millis(500));
        }
        println!(
            "{:<34} {:>16.0} {:>12.0} {:>12.0}",
            name,
            median(rates),
            median(p50),
            median(p99)
        );
    }
    stop.shutdown();
    let _ = thread.join();

    if wanted("idle") {
        let per_conn: Vec<f64> = (0..runs).map(|_| idle_run(10_000)).collect();
        println!(
            "{:<34} {:>16} (100,000 would need {:.0} MB)",
            "idle K=10000, bytes/connection",
            format!("{:.0}", median(per_conn.clone())),
            median(per_conn) * 100_000.0 / 1e6
        );
    }
}

/// Starts the server binary, holds `k` idle logged-in connections, and
/// returns its resident bytes per connection.
fn idle_run(k: usize) -> f64 {
    let dir = scratch_dir();
    let mut child = Command::new(env!("CARGO_BIN_EXE_neochat-server"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--bcrypt-cost",
            "4",
            "--max-clients",
            "20000",
            // 10,000 joining at once means 50 million joined notices: give
            // the logins time.
            "--login-timeout",
            "600",
            "--db",
        ])
        .arg(dir.path().join("idle.db"))
        .env("RUST_LOG", "warn")
        .stderr(Stdio::piped())
        .spawn()
        .expect("server binary starts");
    let stderr = child.stderr.take().expect("piped stderr");
    let mut lines = BufReader::new(stderr).lines();
    let addr: SocketAddr = loop {
        let line = lines
            .next()
            .expect("server prints its address")
            .expect("stderr");
        if let Some(a) = line.strip_prefix("listening on ") {
            break a.parse().expect("address");
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let mut common = Common::new(Target::NeoChat(addr));
    common.progress = false;
    let r = loadgen::idle(
        &common,
        &IdleOpts {
            connections: k,
            pid: child.id(),
            settle: Duration::from_secs(2),
            ..IdleOpts::default()
        },
    )
    .expect("idle run");
    let _ = child.kill();
    let _ = child.wait();
    r.bytes_per_connection
}
