//! The chat phase's plumbing: the thread that prints what the server sends
//! (and answers the server's `/passwd` questions with the passwords the
//! main thread asked for hidden, and tells `rooms::Rooms` what the server
//! said, so the prompt follows the current room), and keeping rustyline's
//! screen tidy around it (drawing messages above the line being typed,
//! rewriting one's own lines, leaving cleanly when the server goes away).

use std::io::{self, BufReader, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use rustyline::ExternalPrinter;

use crate::conn::{Reader, Writer};
use crate::display::{Line, classify, clock, sanitize};
use crate::{Session, say, term, tls, wire};

/// Answers to the server's `/passwd` questions (`? password current`,
/// `? password new`), read hidden on the terminal before `/passwd` is sent,
/// so that no password is ever typed into the chat line, shown, or kept in
/// its history. Each answer is given once.
#[derive(Default)]
pub struct Secrets {
    pub current: Option<String>,
    pub new: Option<String>,
}

/// What the reader thread needs to answer the `/passwd` questions.
pub struct Answers {
    pub writer: Writer,
    pub secrets: Arc<Mutex<Secrets>>,
}

/// Takes the prepared answer to a prompt seen during the chat, if any.
fn prepared(secrets: &Mutex<Secrets>, field: &str, hint: &str) -> Option<String> {
    let mut s = secrets.lock().ok()?;
    match (field, hint) {
        ("password", "current") => s.current.take(),
        ("password", "new") => s.new.take(),
        _ => None,
    }
}

/// Where the reader thread prints.
pub enum Printer {
    /// Above the line being edited; rustyline redraws it.
    Editor(Box<dyn ExternalPrinter + Send>),
    Stdout,
}

/// Starts the thread that prints what the server sends, and answers the
/// `/passwd` questions from `secrets`. When the server closes, it signals
/// the returned channel if the user is leaving, and otherwise puts the
/// terminal back, says why and exits 1.
pub fn spawn_reader(
    mut session: Session,
    mut reader: BufReader<Reader>,
    answers: Answers,
    mut printer: Printer,
    quitting: Arc<AtomicBool>,
    lock: Arc<Mutex<()>>,
    saved: Arc<term::SavedMode>,
) -> mpsc::Receiver<()> {
    let (done_tx, done_rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = Vec::new();
        let failed = loop {
            match wire::read_line(&mut reader, &mut buf, wire::MAX_LINE) {
                Ok(true) => {}
                Ok(false) => break None,
                Err(e) => break Some(e),
            }
            let line = sanitize(&buf);
            // Follow the current room first: the answer to a `/join` is
            // already shown as a line of the room one is in.
            session.rooms.heard(&classify(&line));
            let here = session.rooms.current();
            let mut shown =
                session
                    .style
                    .incoming(&clock(SystemTime::now()), here.as_deref(), &line);
            match classify(&line) {
                Line::Prompt { field, hint } => {
                    if let Some(answer) = prepared(&answers.secrets, field, hint) {
                        // A failed send means the server is gone: the next
                        // read says so.
                        let _ = answers.writer.send_line(answer.as_bytes());
                        continue;
                    }
                    shown.push_str(
                        "\nneochat: the server asks a question the client did not expect; \
                         do not type a password in the chat line (/passwd asks for it hidden)",
                    );
                }
                Line::Error(_) => {
                    // A refused current password: the new one is not wanted.
                    if let Ok(mut s) = answers.secrets.lock()
                        && s.current.is_none()
                    {
                        s.new = None;
                    }
                    session.last = Some(line);
                }
                Line::Notice(_) => session.last = Some(line),
                _ => {}
            }
            let _guard = lock.lock();
            match &mut printer {
                // Outside readline the printer writes the text as it is,
                // so the line needs its own newline.
                Printer::Editor(p) => {
                    if p.print(format!("{shown}\n")).is_err() {
                        say(&shown);
                    }
                }
                Printer::Stdout => say(&shown),
            }
        };
        if quitting.load(Ordering::SeqCst) {
            let _ = done_tx.send(());
            return;
        }
        // Why it ended: a TLS error is said as such (one line), anything
        // else is the server closing, with its last word if it had one.
        let why = match (failed.as_ref().and_then(tls::tls_error), &session.last) {
            (Some(tls), _) => format!("neochat: TLS error: {tls}"),
            (None, Some(line)) => format!("neochat: the server closed the connection: {line}"),
            (None, None) => "neochat: the server closed the connection".to_owned(),
        };
        let _guard = lock.lock();
        if let Printer::Editor(p) = &mut printer {
            // The main thread is still in readline, with the terminal raw.
            // Say why through rustyline, so the words land after the lines
            // it may still be drawing, then take the terminal back.
            if p.print(format!("{why}\n")).is_ok() {
                drain_printer(p.as_mut());
                saved.restore();
                // Clear the prompt rustyline redrew under the message.
                print!("\r\x1b[K");
                let _ = io::stdout().flush();
                std::process::exit(1);
            }
        }
        saved.restore();
        eprint!("\r\n");
        eprintln!("{why}");
        std::process::exit(1);
    });
    done_rx
}

/// Returns once rustyline has finished drawing every message handed to
/// `printer` before this call.
///
/// Its queue holds one message, and the editor draws each message before
/// taking the next. So once two more have been queued, everything before
/// them has been drawn. The two are invisible: cursor up, and the newline
/// rustyline adds brings it back.
fn drain_printer(printer: &mut (dyn ExternalPrinter + Send)) {
    for _ in 0..2 {
        let _ = printer.print("\x1b[1A".to_owned());
    }
}

/// Replaces the line just typed (still on screen after its `prompt`, `> `
/// or `#room> `) by how it reads in the chat, `HH:MM alice: hello`, so
/// one's own lines look like everybody else's. Lines without an echo
/// (commands) stay as typed.
pub fn redraw_typed(lock: &Mutex<()>, prompt: &str, typed: &str, echo: Option<&str>, blank: bool) {
    if echo.is_none() && !blank {
        return;
    }
    let Some(cols) = term::columns() else { return };
    let width = unicode_width::UnicodeWidthStr::width(prompt)
        + unicode_width::UnicodeWidthStr::width(typed);
    let rows = term::rows_used(width, cols);
    // The reader thread prints under the same lock, so nothing lands
    // between moving up and rewriting. Do not wait long for it: rustyline
    // may hold a message of the reader thread until the next prompt.
    let _guard = lock_briefly(lock);
    let mut out = io::stdout().lock();
    let _ = write!(out, "\x1b[{rows}A\r\x1b[J");
    if let Some(echo) = echo {
        let _ = writeln!(out, "{echo}");
    }
    let _ = out.flush();
}

fn lock_briefly(lock: &Mutex<()>) -> Option<MutexGuard<'_, ()>> {
    let deadline = Instant::now() + Duration::from_millis(200);
    loop {
        if let Ok(guard) = lock.try_lock() {
            return Some(guard);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(1));
    }
}
