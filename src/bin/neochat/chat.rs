//! The chat phase's plumbing: the thread that prints what the server sends
//! (and answers the server's `/passwd` questions with the passwords the
//! main thread asked for hidden, hands the server's lines to
//! `tokens::Keep`, which keeps the token `--remember` asked for without
//! showing it, and tells `rooms::Rooms` what the server said, so the
//! prompt follows the current room, and hands `transfer::Files` the
//! answers to `/send`'s `/upload` and the file announcements to number),
//! and keeping rustyline's screen tidy around it ([`Screen`]: drawing
//! messages, the reader thread's and the transfers', above the line being
//! typed; rewriting one's own lines; leaving cleanly when the server goes
//! away).

use std::io::{self, BufReader, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, mpsc};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use rustyline::ExternalPrinter;

use crate::conn::{Reader, Writer};
use crate::display::{Line, classify, clock, sanitize};
use crate::tokens::Keep;
use crate::transfer::Files;
use crate::{Session, say, term, tls, wire};

/// Answers to the server's `/passwd` questions (`? password current`,
/// `? password new`), read hidden on the terminal before `/passwd` is sent,
/// so that no password is ever typed into the chat line, shown, or kept in
/// its history. Each answer is given once.
#[derive(Default)]
struct Secrets {
    current: Option<String>,
    new: Option<String>,
    /// `/passwd` was sent and the server has not said how it ended.
    waiting: bool,
}

/// The `/passwd` exchange, shared by the main thread (which asks the
/// passwords and waits for the end) and the reader thread (which answers
/// the server's questions).
#[derive(Default)]
pub struct Passwd {
    secrets: Mutex<Secrets>,
    ended: Condvar,
}

impl Passwd {
    fn lock(&self) -> MutexGuard<'_, Secrets> {
        self.secrets.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Holds the two answers until the server asks for them; call before
    /// sending `/passwd`.
    pub fn prepare(&self, current: String, new: String) {
        *self.lock() = Secrets {
            current: Some(current),
            new: Some(new),
            waiting: true,
        };
    }

    /// Waits until the server said how `/passwd` ended (changed, or an
    /// error), for at most `limit`: until then a line typed ahead could be
    /// taken by the server as a password, and a password as a chat line.
    pub fn wait(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let mut s = self.lock();
        while s.waiting {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            s = match self.ended.wait_timeout(s, left) {
                Ok((s, _)) => s,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    /// Takes the prepared answer to a prompt seen during the chat, if any.
    fn take(&self, field: &str, hint: &str) -> Option<String> {
        let mut s = self.lock();
        match (field, hint) {
            ("password", "current") => s.current.take(),
            ("password", "new") => s.new.take(),
            _ => None,
        }
    }

    /// Follows the end of the exchange: `* password changed`, or any error
    /// while it lasts (a wrong current password, a refused new one, a
    /// server without `/passwd`). The answers not given yet are dropped.
    fn heard(&self, line: &Line<'_>) {
        let mut s = self.lock();
        let ended = match line {
            Line::Notice(text) => *text == "password changed",
            Line::Error(_) => true,
            _ => false,
        };
        if ended && s.waiting {
            *s = Secrets::default();
            self.ended.notify_all();
        }
    }
}

/// What the reader thread needs to answer the server's questions and to
/// look after the kept login token.
pub struct Answers {
    pub writer: Writer,
    pub passwd: Arc<Passwd>,
    pub keep: Arc<Keep>,
    /// The transfers: `/send` waits for its `* upload`, announcements get
    /// their number.
    pub files: Arc<Files>,
}

/// Where the reader thread prints.
pub enum Printer {
    /// Above the line being edited; rustyline redraws it.
    Editor(Box<dyn ExternalPrinter + Send>),
    Stdout,
}

/// The screen, shared by every thread that shows something while the
/// main thread edits a line: the reader thread and the transfers. `lock`
/// is taken around every print (and by the main thread while it rewrites
/// the line just typed), then the printer.
pub struct Screen {
    lock: Arc<Mutex<()>>,
    printer: Mutex<Printer>,
}

impl Screen {
    pub fn new(printer: Printer, lock: Arc<Mutex<()>>) -> Screen {
        Screen {
            lock,
            printer: Mutex::new(printer),
        }
    }

    fn printer(&self) -> MutexGuard<'_, Printer> {
        self.printer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A chat line: above the line being edited, or on stdout.
    pub fn show(&self, shown: &str) {
        let _guard = self.lock.lock();
        match &mut *self.printer() {
            // Outside readline the printer writes the text as it is,
            // so the line needs its own newline.
            Printer::Editor(p) => {
                if p.print(format!("{shown}\n")).is_err() {
                    say(shown);
                }
            }
            Printer::Stdout => say(shown),
        }
    }

    /// The client's own words: above the line being edited, or on stderr
    /// (a script's stdout is the chat).
    pub fn note(&self, note: &str) {
        let _guard = self.lock.lock();
        note_to(&mut self.printer(), note);
    }
}

/// Starts the thread that prints what the server sends, and answers the
/// `/passwd` questions from `answers`. When the server closes, it signals
/// the returned channel if the user is leaving, and otherwise puts the
/// terminal back, says why and exits 1.
pub fn spawn_reader(
    mut session: Session,
    mut reader: BufReader<Reader>,
    answers: Answers,
    screen: Arc<Screen>,
    quitting: Arc<AtomicBool>,
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
            // Said after the line it is about.
            let heard = answers.keep.heard(&classify(&line));
            if heard.hide {
                // The token the client asked for itself: never shown, and
                // never the "last word" repeated when the server closes.
                if let Some(note) = &heard.note {
                    screen.note(note);
                }
                continue;
            }
            // The answer to a `/send`'s `/upload` goes to its upload (a
            // slot's URL is not shown); a file announcement gets its
            // number.
            let Some(line) = answers.files.heard(line) else {
                continue;
            };
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
                    if let Some(answer) = answers.passwd.take(field, hint) {
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
                    answers.passwd.heard(&classify(&line));
                    session.last = Some(line);
                }
                Line::Notice(_) => {
                    answers.passwd.heard(&classify(&line));
                    session.last = Some(line);
                }
                _ => {}
            }
            screen.show(&shown);
            if let Some(note) = &heard.note {
                screen.note(note);
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
        // Downloads cut short by the exit leave no `.part` file.
        answers.files.abandon();
        let _guard = screen.lock.lock();
        if let Printer::Editor(p) = &mut *screen.printer() {
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

/// Tells the user something of the client's own while the reader thread
/// runs: above the line being edited, or on stderr (a script's stdout is
/// the chat).
fn note_to(printer: &mut Printer, note: &str) {
    match printer {
        Printer::Editor(p) => {
            if p.print(format!("{note}\n")).is_err() {
                eprintln!("{note}");
            }
        }
        Printer::Stdout => eprintln!("{note}"),
    }
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
