//! File transfers: `/send` and `/get` carried out, each in a thread of its
//! own over a new connection to the server, so the chat goes on meanwhile.
//!
//! `/send PATH` checks the file, then asks the server `/upload <name>
//! <bytes>` on the chat connection. The answer comes to the reader thread,
//! which hands it over ([`Files::heard`]): the `/upload`s waiting for an
//! answer are a queue of channels, one per `/send`, in the order they were
//! sent (the server answers in order); a `* upload <url>` goes to the
//! first and is not shown; an error line (shown as usual) ends the first.
//! The upload thread then `PUT`s the file, read from disk a piece at a
//! time, and says `* sent NAME` or why not; the server's announcement in
//! the room is the message.
//!
//! `/get N|URL [DIR]` `GET`s the file into `DIR/<name>.part`, created new,
//! and renames it when it is complete, never over another file
//! (`files::reserve`, `files::finish`); cut short, the `.part` is removed,
//! also when the client exits meanwhile ([`Files::abandon`]).
//!
//! Where a transfer connects is `files::target`'s rule (the URL's host and
//! port when its host is the chat server's, else the chat server's
//! address). It uses TLS when the chat connection does, offering ALPN
//! `http/1.1`, and takes the certificate the chat connection was trusted
//! with again without asking (`trust::for_transfer`). Every connection has
//! a connect timeout, and a transfer that makes no progress for
//! [`STALL`] is given up. What the transfers say is drawn above the line
//! being typed like any incoming line, or, without a terminal, written to
//! stderr.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{self, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use rustls::{ClientConnection, StreamOwned};

use crate::chat::Screen;
use crate::conn::Writer;
use crate::display::{Line, Style, classify, clock, sanitize};
use crate::files::{self, Catalog, Head, Progress, Url};
use crate::known::Fingerprint;
use crate::{tls, trust, wire};

/// A transfer that moves no byte for this long is given up.
pub const STALL: Duration = Duration::from_secs(30);
/// How long `/send` waits for the server's answer to its `/upload`.
const ANSWER_WAIT: Duration = Duration::from_secs(20);
/// How long an upload waits for `100 Continue` before sending the body
/// anyway (a server or proxy that does not send it).
const CONTINUE_WAIT: Duration = Duration::from_secs(3);
/// Bytes read from disk or the socket at a time.
const CHUNK: usize = 64 * 1024;
/// The most of an error answer's body read, for its words.
const MAX_ERROR_BODY: u64 = 1024;

/// How the chat connection was made, which the transfers follow.
#[derive(Clone, Debug)]
pub struct Origin {
    /// `HOST:PORT` as the user gave it.
    pub server: String,
    /// The chat connection uses TLS.
    pub tls: bool,
    /// The fingerprint of the certificate it was trusted with.
    pub chat_cert: Option<Fingerprint>,
}

/// The answer to a `/send`'s `/upload`: the slot's URL, or `Err` when the
/// server refused (its line is shown as usual).
type Answer = Result<String, ()>;

/// Transfers running, and the `.part` files of the downloads among them.
#[derive(Default)]
struct Running {
    count: usize,
    parts: Vec<PathBuf>,
}

/// What the main thread, the reader thread and the transfers share.
pub struct Files {
    origin: Origin,
    /// With a terminal, lines are drawn with the time and colours of the
    /// chat; without one, written as they are.
    style: Option<Style>,
    screen: Arc<Screen>,
    /// One per `/upload` sent and not answered yet, oldest first.
    pending: Mutex<VecDeque<mpsc::Sender<Answer>>>,
    catalog: Mutex<Catalog>,
    running: Mutex<Running>,
    ended: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Each of these is whole after any single change: a panic elsewhere
    // does not make it wrong.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Counts a transfer as running while it lives (its thread's closure owns
/// it, so a panic or a failed spawn still ends it).
struct Busy(Arc<Files>);

impl Busy {
    fn new(files: &Arc<Files>) -> Busy {
        lock(&files.running).count += 1;
        Busy(files.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut running = lock(&self.0.running);
        running.count = running.count.saturating_sub(1);
        self.0.ended.notify_all();
    }
}

impl Files {
    pub fn new(origin: Origin, style: Option<Style>, screen: Arc<Screen>) -> Files {
        Files {
            origin,
            style,
            screen,
            pending: Mutex::new(VecDeque::new()),
            catalog: Mutex::new(Catalog::default()),
            running: Mutex::new(Running::default()),
            ended: Condvar::new(),
        }
    }

    /// Shows one of the client's own lines (`* ...` or `! ...`).
    fn tell(&self, line: &str) {
        match self.style {
            Some(style) => self
                .screen
                .note(&style.incoming(&clock(SystemTime::now()), None, line)),
            None => self.screen.note(line),
        }
    }

    /// How many transfers are running (or waiting for their slot).
    pub fn busy(&self) -> usize {
        lock(&self.running).count
    }

    /// A sanitized server line, seen by the reader thread: `None` when it
    /// is the answer to a `/send` (not shown), else the line to show (a
    /// file announcement with its number instead of its URL).
    pub fn heard(&self, line: String) -> Option<String> {
        match classify(&line) {
            Line::Notice(text) => {
                if let Some(url) = text.strip_prefix("upload ") {
                    let waiting = lock(&self.pending).pop_front();
                    if let Some(tx) = waiting {
                        // A `/send` that stopped waiting leaves its slot
                        // unused: it expires.
                        let _ = tx.send(Ok(url.trim().to_owned()));
                        return None;
                    }
                }
            }
            Line::Error(_) => self.refused(),
            Line::Room { line: inner, .. } if matches!(*inner, Line::Error(_)) => self.refused(),
            _ => {}
        }
        let shown = files::shorten_announcement(&line, &mut lock(&self.catalog));
        Some(shown.unwrap_or(line))
    }

    /// An error came while an `/upload` waits: that is its answer.
    fn refused(&self) {
        if let Some(tx) = lock(&self.pending).pop_front() {
            let _ = tx.send(Err(()));
        }
    }

    /// `/send PATH`, typed: checks the file, starts its upload thread and
    /// asks the server for a slot.
    pub fn send(self: &Arc<Self>, arg: &str, writer: &Writer) {
        if arg.is_empty() {
            return self.tell(files::SEND_USAGE);
        }
        let path = files::expand_home(arg);
        let shown = sanitize(path.to_string_lossy().as_bytes());
        let meta = match fs::metadata(&path) {
            Ok(meta) => meta,
            Err(e) => return self.tell(&format!("! cannot send {shown}: {}", wire::describe(&e))),
        };
        if !meta.is_file() {
            return self.tell(&format!("! cannot send {shown}: not a regular file"));
        }
        let Some(name) = files::upload_name(&path) else {
            return self.tell(&format!("! cannot send {shown}: it has no file name"));
        };
        let size = meta.len();
        let (tx, rx) = mpsc::channel();
        let busy = Busy::new(self);
        let files = self.clone();
        let thread_name = name.clone();
        let started = thread::Builder::new().name("upload".into()).spawn(move || {
            let _busy = busy;
            files.upload(&rx, &path, &thread_name, size);
        });
        if let Err(e) = started {
            return self.tell(&format!("! cannot send {name}: {e}"));
        }
        // Queued before asking, so the answer cannot come first.
        lock(&self.pending).push_back(tx);
        // A failed send means the server is gone: the reader thread says
        // so and exits.
        let _ = writer.send_line(format!("/upload {name} {size}").as_bytes());
    }

    /// The upload thread: waits for the slot, sends, and says how it went.
    fn upload(&self, answer: &mpsc::Receiver<Answer>, path: &Path, name: &str, size: u64) {
        let url = match answer.recv_timeout(ANSWER_WAIT) {
            Ok(Ok(url)) => url,
            // The server said why; that line is shown as usual.
            Ok(Err(())) | Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => {
                return self.tell(&format!(
                    "! could not send {name}: the server did not answer /upload within {} s",
                    ANSWER_WAIT.as_secs()
                ));
            }
        };
        match self.put(&url, path, name, size) {
            Ok(()) => self.tell(&format!("* sent {name}")),
            Err(why) => self.tell(&format!("! could not send {name}: {why}")),
        }
    }

    /// `PUT`s `size` bytes of the file at `path` to the slot `url`.
    fn put(&self, url: &str, path: &Path, name: &str, size: u64) -> Result<(), String> {
        let url = Url::parse(url)
            .filter(|u| u.slot().is_some())
            .ok_or("the server's answer to /upload is not an upload URL")?;
        let shown = sanitize(path.to_string_lossy().as_bytes());
        let mut file =
            File::open(path).map_err(|e| format!("cannot read {shown}: {}", wire::describe(&e)))?;
        let (mut stream, request_path) = self.connect(&url)?;
        let head = format!(
            "PUT {request_path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {size}\r\n\
             Content-Type: application/octet-stream\r\nExpect: 100-continue\r\n\
             User-Agent: neochat/{}\r\nConnection: close\r\n\r\n",
            url.authority,
            env!("CARGO_PKG_VERSION")
        );
        stream
            .write_all(head.as_bytes())
            .and_then(|()| stream.flush())
            .map_err(|e| broken(&e))?;

        // A refusal (an unknown slot, another size) comes before the body.
        let mut buf = Vec::new();
        stream.set_read_timeout(CONTINUE_WAIT)?;
        let early = match read_head(&mut stream, &mut buf) {
            Ok(head) => Some(head),
            Err(HeadError::Io(e)) if is_timeout(&e) && buf.is_empty() => None,
            Err(e) => return Err(e.to_string()),
        };
        stream.set_read_timeout(STALL)?;
        if let Some(head) = early
            && head.status != 100
        {
            return Err(refusal(&mut stream, &mut buf, &head));
        }

        let mut progress = Progress::new("sending", name, size, Instant::now());
        let mut chunk = vec![0; CHUNK];
        let mut sent = 0u64;
        while sent < size {
            let want = usize::try_from(size - sent).map_or(CHUNK, |left| left.min(CHUNK));
            let n = match file.read(&mut chunk[..want]) {
                Ok(0) => return Err(format!("{shown} got shorter while it was sent")),
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("cannot read {shown}: {}", wire::describe(&e))),
            };
            if let Err(e) = stream.write_all(&chunk[..n]) {
                // The server may have answered and closed: say what it said.
                stream.set_read_timeout(Duration::from_secs(1))?;
                return match read_head(&mut stream, &mut buf) {
                    Ok(head) if head.status != 100 => Err(refusal(&mut stream, &mut buf, &head)),
                    _ => Err(broken(&e)),
                };
            }
            sent += n as u64;
            if let Some(line) = progress.as_mut().and_then(|p| p.tick(sent, Instant::now())) {
                self.tell(&line);
            }
        }
        stream.flush().map_err(|e| broken(&e))?;
        let head = final_head(&mut stream, &mut buf)?;
        if head.status == 201 {
            return Ok(());
        }
        Err(refusal(&mut stream, &mut buf, &head))
    }

    /// `/get N|URL [DIR]`, typed: finds the file and the directory, and
    /// starts the download thread.
    pub fn get(self: &Arc<Self>, args: &str) {
        let (which, dir) = match files::parse_get(args) {
            Ok(parsed) => parsed,
            Err(line) => return self.tell(&line),
        };
        let url = match files::resolve(which, &lock(&self.catalog)) {
            Ok(url) => url,
            Err(line) => return self.tell(&line),
        };
        let Some((_, raw)) = url.file() else {
            return self.tell("! /get takes the URL of a file");
        };
        let name = files::save_name(&raw);
        let dir = dir.map_or_else(|| PathBuf::from("."), files::expand_home);
        let shown = sanitize(dir.to_string_lossy().as_bytes());
        match fs::metadata(&dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return self.tell(&format!("! cannot get {name}: {shown} is not a directory")),
            Err(e) => {
                return self.tell(&format!(
                    "! cannot get {name}: {shown}: {}",
                    wire::describe(&e)
                ));
            }
        }
        let busy = Busy::new(self);
        let files = self.clone();
        let thread_name = name.clone();
        let started = thread::Builder::new()
            .name("download".into())
            .spawn(move || {
                let _busy = busy;
                match files.download(&url, &dir, &thread_name) {
                    Ok((path, size)) => files.tell(&format!(
                        "* saved {} ({})",
                        sanitize(path.to_string_lossy().as_bytes()),
                        files::human_size(size)
                    )),
                    Err(why) => files.tell(&format!("! could not get {thread_name}: {why}")),
                }
            });
        if let Err(e) = started {
            self.tell(&format!("! cannot get {name}: {e}"));
        }
    }

    /// `GET`s `url` into `dir`, saved as `name` (or `name (N).ext`): the
    /// path and the size.
    fn download(&self, url: &Url, dir: &Path, name: &str) -> Result<(PathBuf, u64), String> {
        let (mut stream, request_path) = self.connect(url)?;
        let head = format!(
            "GET {request_path} HTTP/1.1\r\nHost: {}\r\nAccept-Encoding: identity\r\n\
             User-Agent: neochat/{}\r\nConnection: close\r\n\r\n",
            url.authority,
            env!("CARGO_PKG_VERSION")
        );
        stream
            .write_all(head.as_bytes())
            .and_then(|()| stream.flush())
            .map_err(|e| broken(&e))?;
        let mut buf = Vec::new();
        let head = final_head(&mut stream, &mut buf)?;
        if head.status != 200 {
            return Err(files::get_failure(&head));
        }
        let total = head
            .length
            .ok_or("the server did not say how big the file is")?;
        let shown_dir = sanitize(dir.to_string_lossy().as_bytes());
        let reserved = files::reserve(dir, name).map_err(|e| {
            format!(
                "cannot create a file in {shown_dir}: {}",
                wire::describe(&e)
            )
        })?;
        let part = reserved.part.clone();
        lock(&self.running).parts.push(part.clone());
        let done = self
            .receive(&mut stream, buf, &reserved.file, total, name)
            .and_then(|()| {
                files::finish(dir, name, reserved).map_err(|e| {
                    format!(
                        "cannot name the file in {shown_dir}: {}",
                        wire::describe(&e)
                    )
                })
            });
        lock(&self.running).parts.retain(|p| *p != part);
        match done {
            Ok(path) => Ok((path, total)),
            Err(why) => {
                // Whatever came stays nowhere.
                let _ = fs::remove_file(&part);
                Err(why)
            }
        }
    }

    /// Writes the body, `total` bytes (`first` of them read with the
    /// head), to `file`, and syncs it.
    fn receive(
        &self,
        stream: &mut Stream,
        first: Vec<u8>,
        file: &File,
        total: u64,
        name: &str,
    ) -> Result<(), String> {
        let write = |mut file: &File, bytes: &[u8]| {
            file.write_all(bytes)
                .map_err(|e| format!("cannot write the file: {}", wire::describe(&e)))
        };
        let mut progress = Progress::new("getting", name, total, Instant::now());
        let early = first
            .len()
            .min(usize::try_from(total).unwrap_or(usize::MAX));
        write(file, &first[..early])?;
        let mut got = early as u64;
        let mut chunk = vec![0; CHUNK];
        while got < total {
            let want = usize::try_from(total - got).map_or(CHUNK, |left| left.min(CHUNK));
            let n = match stream.read(&mut chunk[..want]) {
                Ok(0) => {
                    return Err(format!(
                        "the connection ended after {} of {}",
                        files::human_size(got),
                        files::human_size(total)
                    ));
                }
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(broken(&e)),
            };
            write(file, &chunk[..n])?;
            got += n as u64;
            if let Some(line) = progress.as_mut().and_then(|p| p.tick(got, Instant::now())) {
                self.tell(&line);
            }
        }
        let mut out = file;
        out.flush()
            .and_then(|()| out.sync_all())
            .map_err(|e| format!("cannot write the file: {}", wire::describe(&e)))
    }

    /// A new connection for `url` (see `files::target`), over TLS when the
    /// chat connection is, trusted as `trust::for_transfer` says; and the
    /// path to ask for there.
    fn connect(&self, url: &Url) -> Result<(Stream, String), String> {
        let (addr, path) = files::target(url, &self.origin.server);
        // Set up before connecting, so the ClientHello follows the
        // connection at once.
        let prepared = if self.origin.tls {
            let prepared = tls::prepare(wire::host(&addr), &[b"http/1.1"])
                .map_err(|why| format!("TLS with {addr} failed: {why}"))?;
            Some(prepared)
        } else {
            None
        };
        let sock = crate::connect(&addr)
            .map_err(|e| format!("cannot connect to {addr}: {}", wire::describe(&e)))?;
        let _ = sock.set_nodelay(true);
        let stream = if let Some(prepared) = prepared {
            let done = tls::handshake(prepared, sock)
                .map_err(|why| format!("TLS with {addr} failed: {why}"))?;
            trust::for_transfer(&addr, &done.seen, self.origin.chat_cert)?;
            Stream::Tls(Box::new(StreamOwned::new(done.tls, done.sock)))
        } else {
            Stream::Plain(sock)
        };
        stream.set_read_timeout(STALL)?;
        stream.set_write_timeout(STALL)?;
        Ok((stream, path))
    }

    /// Waits until no transfer runs; `false` when Ctrl-C came first (the
    /// caller abandons them). `say`: tell the person why the client does
    /// not leave at once.
    pub fn wait_all(&self, say: bool) -> bool {
        let busy = self.busy();
        if busy == 0 {
            return true;
        }
        if say {
            let what = if busy == 1 {
                "1 transfer".to_owned()
            } else {
                format!("{busy} transfers")
            };
            crate::say(&format!(
                "neochat: waiting for {what} to end before leaving (Ctrl-C abandons)"
            ));
        }
        let interrupted = Arc::new(AtomicBool::new(false));
        // Without the handler Ctrl-C still ends the client, only without
        // removing the `.part` files.
        let _ = signal_hook::flag::register(signal_hook::consts::SIGINT, interrupted.clone());
        let mut running = lock(&self.running);
        while running.count > 0 {
            if interrupted.load(Ordering::SeqCst) {
                return false;
            }
            running = match self.ended.wait_timeout(running, Duration::from_millis(100)) {
                Ok((running, _)) => running,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        true
    }

    /// The client exits with transfers running: the `.part` files of
    /// unfinished downloads are removed.
    pub fn abandon(&self) {
        let parts = std::mem::take(&mut lock(&self.running).parts);
        for part in parts {
            let _ = fs::remove_file(part);
        }
    }
}

/// A transfer's connection: plain TCP or TLS.
enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Stream {
    fn sock(&self) -> &TcpStream {
        match self {
            Stream::Plain(sock) => sock,
            Stream::Tls(tls) => tls.get_ref(),
        }
    }

    fn set_read_timeout(&self, limit: Duration) -> Result<(), String> {
        self.sock()
            .set_read_timeout(Some(limit))
            .map_err(|e| wire::describe(&e))
    }

    fn set_write_timeout(&self, limit: Duration) -> Result<(), String> {
        self.sock()
            .set_write_timeout(Some(limit))
            .map_err(|e| wire::describe(&e))
    }
}

impl Read for Stream {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(sock) => sock.read(out),
            Stream::Tls(tls) => match tls.read(out) {
                // Closed without close_notify: the end, as over TCP (a
                // body cut short is caught by its length).
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => Ok(0),
                other => other,
            },
        }
    }
}

impl Write for Stream {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(sock) => sock.write(bytes),
            Stream::Tls(tls) => tls.write(bytes),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(sock) => sock.flush(),
            Stream::Tls(tls) => tls.flush(),
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// A failed read or write on a transfer's connection, in words.
fn broken(e: &io::Error) -> String {
    if is_timeout(e) {
        return format!("nothing moved for {} s", STALL.as_secs());
    }
    match tls::tls_error(e) {
        Some(tls) => format!("TLS error: {tls}"),
        None => format!("the connection broke: {}", wire::describe(e)),
    }
}

enum HeadError {
    Io(io::Error),
    Closed,
    Bad(String),
}

impl std::fmt::Display for HeadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeadError::Io(e) => f.write_str(&broken(e)),
            HeadError::Closed => f.write_str("the server closed the connection without answering"),
            HeadError::Bad(why) => f.write_str(why),
        }
    }
}

/// Reads the next response head; `buf` holds what was read and not used
/// yet (before: the start of this head; after: the start of its body).
fn read_head(stream: &mut Stream, buf: &mut Vec<u8>) -> Result<Head, HeadError> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some((head, len)) = files::parse_head(buf).map_err(HeadError::Bad)? {
            buf.drain(..len);
            return Ok(head);
        }
        let room = files::MAX_HEAD
            .saturating_sub(buf.len())
            .clamp(1, chunk.len());
        match stream.read(&mut chunk[..room]) {
            Ok(0) => return Err(HeadError::Closed),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(HeadError::Io(e)),
        }
    }
}

/// The final response head, past any `1xx`.
fn final_head(stream: &mut Stream, buf: &mut Vec<u8>) -> Result<Head, String> {
    loop {
        let head = read_head(stream, buf).map_err(|e| e.to_string())?;
        if !(100..200).contains(&head.status) {
            return Ok(head);
        }
    }
}

/// Why an upload was refused: the status, and the first words of the
/// body (read up to [`MAX_ERROR_BODY`] bytes).
fn refusal(stream: &mut Stream, buf: &mut Vec<u8>, head: &Head) -> String {
    let want = head.length.unwrap_or(0).min(MAX_ERROR_BODY) as usize;
    let mut chunk = [0u8; 1024];
    while buf.len() < want {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    buf.truncate(want);
    files::put_failure(head, &files::body_text(buf))
}
