//! The web client in a real browser: each test runs one scenario of
//! `tests/browser/scenarios.py` (headless Chromium driven by Playwright,
//! against this build's `neochat-server`, with line clients beside it).
//!
//! Needs `python3`, Playwright for Python and Debian's `/usr/bin/chromium`;
//! without them every test fails and says what to install. The scenarios run
//! one at a time (a browser each on a 2-core machine), each killed after
//! 120 s (the script stops itself at 100 s with a traceback).
//!
//! A scenario fails on any console error, page error or dialog. Checks the
//! rest of a scenario does not depend on are "soft": all of them run, and
//! the scenario fails at its end listing every one that failed. To check
//! that a scenario can fail, serve a broken app.js:
//! `NEOCHAT_MUTATE='[["old", "new"]]' python3 tests/browser/scenarios.py NAME`.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(120);
const INSTALL: &str = "install them (Debian): `apt-get install chromium python3-pip`, \
     then `pip install --break-system-packages playwright` \
     (never `playwright install`: the tests use /usr/bin/chromium)";

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Fails (never skips) when the browser tooling is missing.
fn require_tools() {
    let python = Command::new("python3")
        .args(["-c", "import playwright.sync_api"])
        .stdin(Stdio::null())
        .output();
    match python {
        Err(e) => panic!("the browser tests need python3 ({e}); {INSTALL}"),
        Ok(out) if !out.status.success() => panic!(
            "the browser tests need Playwright for Python (`import playwright.sync_api` failed: {}); {INSTALL}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Ok(_) => {}
    }
    if !Path::new("/usr/bin/chromium").exists() {
        panic!("the browser tests need Chromium at /usr/bin/chromium; {INSTALL}");
    }
}

fn scenario(name: &str) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    require_tools();
    let started = Instant::now();
    let mut child = Command::new("python3")
        .arg("tests/browser/scenarios.py")
        .arg(name)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("NEOCHAT_SERVER", env!("CARGO_BIN_EXE_neochat-server"))
        .env(
            "NEOCHAT_ARTIFACTS",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser"),
        )
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout kills the server and the
        // browser it started too.
        .process_group(0)
        .spawn()
        .expect("spawn python3");
    let pid = child.id() as libc::pid_t;
    let mut out_pipe = child.stdout.take().unwrap();
    let mut err_pipe = child.stderr.take().unwrap();
    let out = thread::spawn(move || {
        let mut s = String::new();
        let _ = out_pipe.read_to_string(&mut s);
        s
    });
    let err = thread::spawn(move || {
        let mut s = String::new();
        let _ = err_pipe.read_to_string(&mut s);
        s
    });
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for python3") {
            break status;
        }
        if started.elapsed() > TIMEOUT && !timed_out {
            timed_out = true;
            // SIGTERM first (the script then tears down and reports), then
            // SIGKILL for whatever is left of the group.
            unsafe { libc::kill(-pid, libc::SIGTERM) };
            let grace = Instant::now();
            while grace.elapsed() < Duration::from_secs(5) {
                if child.try_wait().expect("wait").is_some() {
                    break;
                }
                thread::sleep(Duration::from_millis(50));
            }
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
        thread::sleep(Duration::from_millis(50));
    };
    // Whatever the script left behind in its group (a stray browser).
    unsafe { libc::kill(-pid, libc::SIGKILL) };
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    let report = format!(
        "---- scenario {name}: {status} after {:.1} s ----\n{out}\n---- stderr ----\n{err}",
        started.elapsed().as_secs_f64()
    );
    println!("{report}");
    assert!(
        !timed_out,
        "scenario {name} timed out after {TIMEOUT:?}\n{report}"
    );
    assert!(
        status.success(),
        "scenario {name} failed ({status})\n{report}"
    );
}

/// Every scenario the script has is one of the tests here, and back.
#[test]
fn every_scenario_is_a_test() {
    require_tools();
    let out = Command::new("python3")
        .args(["tests/browser/scenarios.py", "--list"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut listed: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    listed.sort();
    let source = include_str!("main.rs");
    let mut tests: Vec<String> = source
        .lines()
        .filter_map(|l| {
            l.trim()
                .strip_prefix("scenario(\"")?
                .strip_suffix("\");")
                .map(str::to_owned)
        })
        .collect();
    tests.sort();
    assert_eq!(
        listed, tests,
        "scenarios.py --list and the tests in main.rs differ"
    );
}

#[test]
fn harness_selftest() {
    scenario("harness_selftest");
}

#[test]
fn signup_and_login() {
    scenario("signup_and_login");
}

#[test]
fn chat_with_line_client() {
    scenario("chat_with_line_client");
}

#[test]
fn private_message() {
    scenario("private_message");
}

#[test]
fn rooms() {
    scenario("rooms");
}

#[test]
fn catch_up_after_reconnect() {
    scenario("catch_up_after_reconnect");
}

#[test]
fn reload_after_restart() {
    scenario("reload_after_restart");
}

#[test]
fn logout() {
    scenario("logout");
}

#[test]
fn upload_and_download() {
    scenario("upload_and_download");
}

#[test]
fn html_injection() {
    scenario("html_injection");
}

#[test]
fn phone_viewport() {
    scenario("phone_viewport");
}

#[test]
fn logout_after_password_login() {
    scenario("logout_after_password_login");
}

#[test]
fn catch_up_same_page() {
    scenario("catch_up_same_page");
}

#[test]
fn stale_token() {
    scenario("stale_token");
}

#[test]
fn long_log() {
    scenario("long_log");
}

#[test]
fn notifications() {
    scenario("notifications");
}

#[test]
fn drag_and_drop_upload() {
    scenario("drag_and_drop_upload");
}

#[test]
fn keyboard_only() {
    scenario("keyboard_only");
}

#[test]
fn zoom_200() {
    scenario("zoom_200");
}

#[test]
fn server_closes_mid_login() {
    scenario("server_closes_mid_login");
}

#[test]
fn draft_survives_reconnect() {
    scenario("draft_survives_reconnect");
}

#[test]
fn name_spoofing() {
    scenario("name_spoofing");
}

#[test]
fn takeover() {
    scenario("takeover");
}
