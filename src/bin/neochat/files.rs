//! Files in the chat, the parts without sockets: `/send` and `/get` as
//! typed, the name a file is sent under ([`upload_name`]) and saved under
//! ([`save_name`], [`reserve`], [`finish`]: never overwriting, `name
//! (1).ext`), the file URLs the server hands out ([`Url`], and where to
//! connect for one: [`target`]), reading a file announcement
//! (`[file] <name> (<size>) <url>`, [`announcement`]) and showing it with a
//! short number instead of its URL ([`Catalog`], [`shorten_announcement`]),
//! sizes and progress lines ([`human_size`], [`Progress`]), HTTP response
//! heads ([`parse_head`]) and what a refusal means ([`put_failure`],
//! [`get_failure`]).
//!
//! The transfers themselves (connections, threads, the screen) are
//! `transfer.rs`'s. The only I/O here is creating and naming the file a
//! download is saved to, in [`reserve`] and [`finish`].

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::display::{Line, classify, is_unsafe, sanitize};
// The server's own rules, so that client and server cannot drift apart.
pub use neochat::chat::uploads::human_size;
use neochat::chat::uploads::is_id;
use neochat::transport::http::url_decode;

/// Longest name the server takes for a file, in characters.
pub const MAX_NAME: usize = 100;
/// Longest name a download is saved under, in bytes (file systems allow
/// 255, and ` (12).part` must still fit).
const MAX_SAVE_BYTES: usize = 200;
/// An extension longer than this is not kept when a name is cut.
const MAX_EXT: usize = 16;
/// Files larger than this show their progress.
pub const PROGRESS_OVER: u64 = 4 << 20;
/// Progress lines come at most this often.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);
/// How many file URLs get a number in one run; later ones are shown as
/// they came (a hostile server cannot make the list grow for ever).
const MAX_NUMBERED: usize = 100_000;
/// How many `name (N).ext` are tried before giving up.
const MAX_TRIES: usize = 1000;
/// Longest URL taken.
const MAX_URL: usize = 4096;
/// Longest HTTP response head read.
pub const MAX_HEAD: usize = 8 * 1024;

pub const SEND_USAGE: &str = "! usage: /send PATH (a file to share in the current room)";
pub const GET_USAGE: &str =
    "! usage: /get N [DIR] or /get URL [DIR] (N: the number shown after a file)";

/// A typed line the client carries out itself instead of sending it.
#[derive(Debug, PartialEq, Eq)]
pub enum Local<'a> {
    /// `/send PATH`: what follows the command, trimmed.
    Send(&'a str),
    /// `/get N|URL [DIR]`: what follows the command, trimmed.
    Get(&'a str),
}

fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// `/send ...` or `/get ...`, in any case; anything else is `None` (and
/// goes to the server as usual; `//send` is a message).
pub fn local_command(line: &str) -> Option<Local<'_>> {
    let rest = line.strip_prefix('/')?;
    let end = rest.find(is_blank).unwrap_or(rest.len());
    let (command, args) = (&rest[..end], rest[end..].trim_matches(is_blank));
    if command.eq_ignore_ascii_case("send") {
        Some(Local::Send(args))
    } else if command.eq_ignore_ascii_case("get") {
        Some(Local::Get(args))
    } else {
        None
    }
}

/// A path as typed: a leading `~/` is the home directory.
pub fn expand_home(typed: &str) -> PathBuf {
    match (typed.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) if !home.is_empty() => Path::new(&home).join(rest),
        _ => PathBuf::from(typed),
    }
}

/// `name` split before its extension (`report` and `.pdf`), if it has one:
/// a dot that is neither first nor last.
fn split_ext(name: &str) -> Option<(&str, &str)> {
    name.rfind('.')
        .filter(|&i| i > 0 && i + 1 < name.len())
        .map(|i| name.split_at(i))
}

/// `name` cut to at most `max` units (`unit` of each character: 1 for
/// characters, its UTF-8 length for bytes), keeping a short extension.
fn shorten(name: &str, max: usize, unit: fn(char) -> usize) -> String {
    let len = |s: &str| s.chars().map(unit).sum::<usize>();
    if len(name) <= max {
        return name.to_owned();
    }
    let (stem, ext) = match split_ext(name) {
        Some((stem, ext)) if ext.chars().count() <= MAX_EXT + 1 && len(ext) < max => (stem, ext),
        _ => (name, ""),
    };
    let mut room = max - len(ext);
    let mut out = String::new();
    for c in stem.chars() {
        if unit(c) > room {
            break;
        }
        room -= unit(c);
        out.push(c);
    }
    out.push_str(ext);
    out
}

/// The name a file at `path` is sent under: its base name, with spaces
/// (any blank), `/`, `\` and control characters made `_`, cut to
/// [`MAX_NAME`] characters (keeping a short extension); a name of dots only
/// becomes underscores. `None` when the path has no base name (`/`, `..`).
pub fn upload_name(path: &Path) -> Option<String> {
    let base = path.file_name()?.to_string_lossy();
    let cleaned: String = base
        .chars()
        .map(|c| {
            if c.is_whitespace() || c == '/' || c == '\\' || is_unsafe(c) {
                '_'
            } else {
                c
            }
        })
        .collect();
    let cleaned = if cleaned.chars().all(|c| c == '.') {
        cleaned.replace('.', "_")
    } else {
        cleaned
    };
    (!cleaned.is_empty()).then(|| shorten(&cleaned, MAX_NAME, |_| 1))
}

/// The name a download is saved under, from the (decoded) last segment of
/// its URL: `/`, `\` and control characters become `_`, and so does a
/// leading dot (no hidden files, no `.` or `..`); an empty name is
/// `download`; cut to 200 bytes, keeping a short extension.
pub fn save_name(raw: &str) -> String {
    let mut name: String = raw
        .chars()
        .map(|c| {
            if c == '/' || c == '\\' || is_unsafe(c) || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    if name.starts_with('.') {
        name.replace_range(..1, "_");
    }
    if name.trim().is_empty() {
        return "download".to_owned();
    }
    shorten(&name, MAX_SAVE_BYTES, char::len_utf8)
}

/// The `k`-th name tried for `name`: itself, then `name (1).ext`,
/// `name (2).ext`...
pub fn numbered(name: &str, k: usize) -> String {
    if k == 0 {
        return name.to_owned();
    }
    match split_ext(name) {
        Some((stem, ext)) => format!("{stem} ({k}){ext}"),
        None => format!("{name} ({k})"),
    }
}

/// A download being written: `<name>.part`, created new, for a name that
/// was free when it was made.
#[derive(Debug)]
pub struct Reserved {
    pub file: File,
    pub part: PathBuf,
    k: usize,
}

fn taken(path: &Path) -> bool {
    // A dangling symbolic link counts: writing there would follow it.
    fs::symlink_metadata(path).is_ok()
}

/// Creates the `.part` file of a download of `name` into `dir`: for the
/// first of [`numbered`]'s names that is free, with its `.part` free too,
/// `<that name>.part` is created with `create_new` (never opening a file
/// that exists, nor following a link).
pub fn reserve(dir: &Path, name: &str) -> io::Result<Reserved> {
    for k in 0..MAX_TRIES {
        let candidate = numbered(name, k);
        if taken(&dir.join(&candidate)) {
            continue;
        }
        let part = dir.join(format!("{candidate}.part"));
        match OpenOptions::new().write(true).create_new(true).open(&part) {
            Ok(file) => return Ok(Reserved { file, part, k }),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        ErrorKind::AlreadyExists,
        format!("{MAX_TRIES} files of that name are there already"),
    ))
}

/// Gives a complete download its name, never replacing a file: the name
/// reserved if it is still free, else the next free `name (N).ext`. A hard
/// link does it atomically; where the file system has none, a rename after
/// a check. Returns the path; on error the `.part` file is the caller's.
pub fn finish(dir: &Path, name: &str, reserved: Reserved) -> io::Result<PathBuf> {
    let Reserved { file, part, k } = reserved;
    drop(file);
    for k in k..k + MAX_TRIES {
        let target = dir.join(numbered(name, k));
        match fs::hard_link(&part, &target) {
            Ok(()) => {
                let _ = fs::remove_file(&part);
                return Ok(target);
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(_) => {
                if taken(&target) {
                    continue;
                }
                fs::rename(&part, &target)?;
                return Ok(target);
            }
        }
    }
    Err(io::Error::new(
        ErrorKind::AlreadyExists,
        format!("{MAX_TRIES} files of that name are there already"),
    ))
}

/// An `http://` or `https://` URL of the server's files routes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    /// `https`.
    pub https: bool,
    /// As written, brackets kept for IPv6 (`[::1]`).
    pub host: String,
    /// As written, or 443 / 80 by the scheme.
    pub port: u16,
    /// `host[:port]` as written: the `Host` header.
    pub authority: String,
    /// From the first `/` after the authority on.
    pub path: String,
}

impl Url {
    /// Reads a URL strictly: printable ASCII only, no user info, query or
    /// fragment, a path, a port that is a number.
    pub fn parse(text: &str) -> Option<Url> {
        if text.len() > MAX_URL || !text.bytes().all(|b| b.is_ascii_graphic()) {
            return None;
        }
        let lower = text.get(..8)?.to_ascii_lowercase();
        let (https, rest) = if lower.starts_with("https://") {
            (true, &text[8..])
        } else if lower.starts_with("http://") {
            (false, &text[7..])
        } else {
            return None;
        };
        let slash = rest.find('/')?;
        let (authority, path) = rest.split_at(slash);
        if authority.contains('@') || path.contains(['?', '#']) {
            return None;
        }
        let (host, port) = match authority.strip_prefix('[') {
            Some(inside) => {
                let (ip, after) = inside.split_once(']')?;
                ip.parse::<std::net::Ipv6Addr>().ok()?;
                (&authority[..ip.len() + 2], after.strip_prefix(':'))
            }
            None => {
                let (host, port) = match authority.split_once(':') {
                    Some((host, port)) => (host, Some(port)),
                    None => (authority, None),
                };
                if host.is_empty() || host.contains([':', '[', ']']) {
                    return None;
                }
                (host, port)
            }
        };
        let port = match port {
            None => {
                if authority.ends_with(']') || !authority.contains(':') {
                    if https { 443 } else { 80 }
                } else {
                    return None;
                }
            }
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p.parse().ok()?,
            Some(_) => return None,
        };
        Some(Url {
            https,
            host: host.to_owned(),
            port,
            authority: authority.to_owned(),
            path: path.to_owned(),
        })
    }

    /// The part of the path the chat server itself serves: from the last
    /// `/files/` on (a `--public-url` may put a prefix before it).
    pub fn files_path(&self) -> Option<&str> {
        self.path.rfind("/files/").map(|i| &self.path[i..])
    }

    /// A stored file's URL, `.../files/<id>/<name>`: the id and the name,
    /// decoded.
    pub fn file(&self) -> Option<(&str, String)> {
        let rest = self.files_path()?.strip_prefix("/files/")?;
        let (id, segment) = rest.split_once('/')?;
        if !is_id(id) || segment.is_empty() || segment.contains('/') {
            return None;
        }
        Some((id, url_decode(segment)?))
    }

    /// An upload slot's URL, `.../files/<slot>`: the slot.
    pub fn slot(&self) -> Option<&str> {
        let slot = self.files_path()?.strip_prefix("/files/")?;
        (!slot.is_empty() && !slot.contains('/')).then_some(slot)
    }
}

/// Where to connect for `url`, and the path to ask there, given `chat`,
/// the `HOST:PORT` the chat connection was made to: the URL's own host and
/// port when its host is the chat server's (written the same way, in any
/// case), with its whole path; else the chat server's address, with the
/// path from `/files/` on. So a file is only ever fetched from (or sent
/// to) the server one chats with, whatever a URL in a message says, and a
/// `--public-url` behind a proxy on the same host still works.
pub fn target(url: &Url, chat: &str) -> (String, String) {
    let chat_host = crate::wire::host(chat);
    if url.host.eq_ignore_ascii_case(chat_host) {
        return (format!("{}:{}", url.host, url.port), url.path.clone());
    }
    let path = url.files_path().unwrap_or(&url.path);
    (chat.to_owned(), path.to_owned())
}

/// A size as the server writes it: `512 B`, `1.5 KiB`, `25 MiB`.
fn is_size(text: &str) -> bool {
    let Some((number, unit)) = text.split_once(' ') else {
        return false;
    };
    let digits = |t: &str, most: usize| {
        (1..=most).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_digit())
    };
    // Below 1024 of each unit but the largest.
    let most = match unit {
        "B" => return digits(number, 4),
        "KiB" | "MiB" | "GiB" => 4,
        "TiB" => 8,
        _ => return false,
    };
    match number.split_once('.') {
        Some((whole, tenth)) => digits(whole, most) && digits(tenth, 1),
        None => digits(number, most),
    }
}

/// The parts of a file announcement's text.
#[derive(Debug, PartialEq, Eq)]
pub struct Announcement<'a> {
    pub name: &'a str,
    pub size: &'a str,
    pub url: &'a str,
}

/// Reads a message's text as a file announcement, strictly: `[file]
/// <name> (<size>) <url>`, the size as the server writes sizes, the URL a
/// stored file's (`.../files/<id>/<name>`) whose name is the one
/// announced (so a message cannot show one name and save another).
pub fn announcement(text: &str) -> Option<Announcement<'_>> {
    let rest = text.strip_prefix("[file] ")?;
    let (name, rest) = rest.split_once(' ')?;
    let (size, url) = rest.strip_prefix('(')?.split_once(") ")?;
    if name.is_empty() || !is_size(size) {
        return None;
    }
    let (_, named) = Url::parse(url)?.file()?;
    (named == name).then_some(Announcement { name, size, url })
}

/// The text of a message line (a lobby or room message, live or from
/// history), if it is one.
fn message_text<'a>(line: &Line<'a>) -> Option<&'a str> {
    match line {
        Line::Public { text, .. } => Some(*text),
        Line::Room { line, .. } | Line::History { line, .. } => message_text(line),
        _ => None,
    }
}

/// The file URLs seen in this run, numbered from 1 in the order they were
/// first seen; the same URL keeps its number.
#[derive(Debug, Default)]
pub struct Catalog {
    urls: Vec<String>,
    numbers: HashMap<String, usize>,
}

impl Catalog {
    /// The number of `url`, given now if it has none; `None` once
    /// [`MAX_NUMBERED`] URLs have one.
    pub fn number(&mut self, url: &str) -> Option<usize> {
        if let Some(&n) = self.numbers.get(url) {
            return Some(n);
        }
        if self.urls.len() >= MAX_NUMBERED {
            return None;
        }
        self.urls.push(url.to_owned());
        let n = self.urls.len();
        self.numbers.insert(url.to_owned(), n);
        Some(n)
    }

    /// The URL numbered `n`.
    pub fn url(&self, n: usize) -> Option<&str> {
        let i = n.checked_sub(1)?;
        self.urls.get(i).map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.urls.len()
    }
}

/// A (sanitized) server line as shown: a file announcement with its URL
/// replaced by `/get N`, numbered in `catalog`, its room prefix or history
/// time kept (`#rust bob: [file] a.pdf (1.2 MiB) /get 3`). `None`: not an
/// announcement, shown as it came.
pub fn shorten_announcement(line: &str, catalog: &mut Catalog) -> Option<String> {
    let parsed = classify(line);
    let a = announcement(message_text(&parsed)?)?;
    let kept = line.strip_suffix(a.url)?;
    let n = catalog.number(a.url)?;
    Some(format!("{kept}/get {n}"))
}

/// Which file `/get` is about.
#[derive(Debug, PartialEq, Eq)]
pub enum Which {
    /// The number shown after an announcement.
    Number(usize),
    Url(Url),
}

/// Reads `/get`'s arguments: a number or a file URL, then the directory to
/// save into (the rest of the line, spaces allowed), if any.
pub fn parse_get(args: &str) -> Result<(Which, Option<&str>), String> {
    let args = args.trim_matches(is_blank);
    if args.is_empty() {
        return Err(GET_USAGE.to_owned());
    }
    let end = args.find(is_blank).unwrap_or(args.len());
    let (first, dir) = (&args[..end], args[end..].trim_matches(is_blank));
    let dir = (!dir.is_empty()).then_some(dir);
    if first.bytes().all(|b| b.is_ascii_digit()) {
        return match first.parse::<usize>() {
            Ok(n) if n > 0 => Ok((Which::Number(n), dir)),
            _ => Err(format!("! there is no file {}", sanitize(first.as_bytes()))),
        };
    }
    match Url::parse(first).filter(|u| u.file().is_some()) {
        Some(url) => Ok((Which::Url(url), dir)),
        None => Err(format!(
            "! /get takes the number shown after a file or the file's URL \
             (.../files/ID/NAME), not {}",
            sanitize(first.as_bytes())
        )),
    }
}

/// The URL `/get` is about.
pub fn resolve(which: Which, catalog: &Catalog) -> Result<Url, String> {
    let n = match which {
        Which::Url(url) => return Ok(url),
        Which::Number(n) => n,
    };
    let url = catalog.url(n).ok_or_else(|| match catalog.len() {
        0 => format!("! there is no file {n}: no file has been shown yet"),
        1 => format!("! there is no file {n}: the only file shown so far is 1"),
        len => format!("! there is no file {n}: the files shown so far are 1 to {len}"),
    })?;
    Url::parse(url).ok_or_else(|| format!("! file {n} has no usable URL"))
}

fn percent(done: u64, total: u64) -> u64 {
    if total == 0 {
        return 100;
    }
    (u128::from(done.min(total)) * 100 / u128::from(total)) as u64
}

/// `* sending report.pdf: 45% (11.2 MiB of 25 MiB)`.
pub fn progress_line(verb: &str, name: &str, done: u64, total: u64) -> String {
    format!(
        "* {verb} {name}: {}% ({} of {})",
        percent(done, total),
        human_size(done),
        human_size(total)
    )
}

/// When to show how far a transfer is: for files over [`PROGRESS_OVER`],
/// a line each time another tenth is done, but never two within half a
/// second (the first half a second after the start); never at 100% (the
/// transfer's last line says it is done).
#[derive(Debug)]
pub struct Progress {
    verb: &'static str,
    name: String,
    total: u64,
    /// The last tenth shown (0: none).
    tenth: u64,
    last: Instant,
}

impl Progress {
    /// `None` for a file too small to show progress for.
    pub fn new(verb: &'static str, name: &str, total: u64, now: Instant) -> Option<Progress> {
        (total > PROGRESS_OVER).then(|| Progress {
            verb,
            name: name.to_owned(),
            total,
            tenth: 0,
            last: now,
        })
    }

    /// `done` bytes are through: the line to show now, if any.
    pub fn tick(&mut self, done: u64, now: Instant) -> Option<String> {
        let tenth = percent(done, self.total) / 10;
        if tenth <= self.tenth || tenth >= 10 {
            return None;
        }
        if now.saturating_duration_since(self.last) < PROGRESS_EVERY {
            return None;
        }
        self.tenth = tenth;
        self.last = now;
        Some(progress_line(self.verb, &self.name, done, self.total))
    }
}

/// An HTTP response head, as far as the transfers care.
#[derive(Debug, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    /// The reason phrase, sanitized.
    pub reason: String,
    /// `Content-Length`, when given once (or given the same each time).
    pub length: Option<u64>,
}

/// Reads a response head from the start of `bytes`: `Ok(None)` when more
/// is needed, else the head and its length in bytes. At most [`MAX_HEAD`]
/// bytes are looked at; a longer head, two different lengths or anything
/// that is not HTTP/1.x is an error (a phrase for the user).
pub fn parse_head(bytes: &[u8]) -> Result<Option<(Head, usize)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    let window = &bytes[..bytes.len().min(MAX_HEAD)];
    let len = match response.parse(window) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if bytes.len() >= MAX_HEAD => {
            return Err(format!(
                "the server's answer has a head over {} KiB",
                MAX_HEAD / 1024
            ));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("the server's answer is not HTTP ({e})")),
    };
    let status = response.code.unwrap_or(0);
    let mut length = None;
    for h in response.headers.iter() {
        if !h.name.eq_ignore_ascii_case("content-length") {
            continue;
        }
        let text = std::str::from_utf8(h.value).unwrap_or("").trim();
        let n = match text.parse::<u64>() {
            Ok(n) if text.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return Err("the server's answer has a bad Content-Length".to_owned()),
        };
        if length.is_some_and(|l| l != n) {
            return Err("the server's answer has two Content-Lengths".to_owned());
        }
        length = Some(n);
    }
    let reason = sanitize(response.reason.unwrap_or("").as_bytes());
    let reason = reason.chars().take(80).collect();
    Ok(Some((
        Head {
            status,
            reason,
            length,
        },
        len,
    )))
}

/// The first line of a short error body, sanitized, for a message.
pub fn body_text(body: &[u8]) -> String {
    let first = body.split(|&b| b == b'\n').next().unwrap_or(b"");
    let text = sanitize(first);
    text.trim().chars().take(200).collect()
}

/// Why an upload's `PUT` was refused, from the status (and, for a 400, the
/// server's words).
pub fn put_failure(head: &Head, body: &str) -> String {
    match head.status {
        400 if !body.is_empty() => format!("the server refused its size ({body})"),
        400 => "the server refused its size (400)".to_owned(),
        403 => "you may no longer post in that room (kicked, banned, muted, or the room is \
                gone)"
            .to_owned(),
        404 => "the upload slot is unknown, used or expired (it lasts 60 s)".to_owned(),
        411 => "the server wanted the length of the file (411)".to_owned(),
        413 => "the file is too large for the server (413)".to_owned(),
        500 => "the server could not store it (500)".to_owned(),
        503 => "the server is busy; try again later (503)".to_owned(),
        507 => "the server's disk is full (507)".to_owned(),
        _ => other_status(head),
    }
}

/// Why a download's `GET` was refused, from the status.
pub fn get_failure(head: &Head) -> String {
    match head.status {
        404 => "no such file (it may have expired, or the link is wrong)".to_owned(),
        403 => "the server does not allow it (403)".to_owned(),
        500 => "the server could not read it (500)".to_owned(),
        503 => "the server is busy; try again later (503)".to_owned(),
        _ => other_status(head),
    }
}

fn other_status(head: &Head) -> String {
    match head.reason.is_empty() {
        true => format!("the server answered {}", head.status),
        false => format!("the server answered {} {}", head.status, head.reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_commands() {
        assert_eq!(
            local_command("/send  a b.txt "),
            Some(Local::Send("a b.txt"))
        );
        assert_eq!(local_command("/SEND"), Some(Local::Send("")));
        assert_eq!(local_command("/get 3 /tmp"), Some(Local::Get("3 /tmp")));
        assert_eq!(local_command("/Get\t3"), Some(Local::Get("3")));
        for other in [
            "//send x",
            "/sender x",
            "send x",
            "/getx",
            "/upload a 1",
            "",
        ] {
            assert_eq!(local_command(other), None, "{other}");
        }
    }

    #[test]
    fn names_to_send() {
        let name = |p: &str| upload_name(Path::new(p));
        assert_eq!(name("/tmp/report.pdf").as_deref(), Some("report.pdf"));
        assert_eq!(
            name("my report v2.pdf").as_deref(),
            Some("my_report_v2.pdf")
        );
        assert_eq!(name("dir/a\\b.txt").as_deref(), Some("a_b.txt"));
        assert_eq!(name("tab\there\n.txt").as_deref(), Some("tab_here_.txt"));
        assert_eq!(name("esc\u{1b}[2J.txt").as_deref(), Some("esc_[2J.txt"));
        assert_eq!(name("bidi\u{202e}txt.exe").as_deref(), Some("bidi_txt.exe"));
        assert_eq!(name(".hidden").as_deref(), Some(".hidden"));
        assert_eq!(name("...").as_deref(), Some("___"));
        assert_eq!(name("héllo 日本.txt").as_deref(), Some("héllo_日本.txt"));
        assert_eq!(name("/"), None);
        assert_eq!(name(".."), None);
        // Cut to 100 characters, the extension kept.
        let long = format!("{}.pdf", "é".repeat(150));
        let cut = name(&long).unwrap();
        assert_eq!(cut.chars().count(), MAX_NAME);
        assert!(cut.ends_with("é.pdf"), "{cut}");
        let no_ext = "x".repeat(150);
        assert_eq!(name(&no_ext).unwrap(), "x".repeat(100));
        let long_ext = format!("a.{}", "e".repeat(120));
        assert_eq!(name(&long_ext).unwrap().chars().count(), MAX_NAME);
        assert!(name(&long_ext).unwrap().starts_with("a.e"));
    }

    #[test]
    fn names_to_save() {
        assert_eq!(save_name("report.pdf"), "report.pdf");
        assert_eq!(save_name("../../etc/passwd"), "_._.._etc_passwd");
        assert_eq!(save_name("a\\b"), "a_b");
        assert_eq!(save_name(".."), "_.");
        assert_eq!(save_name("."), "_");
        assert_eq!(save_name(".bashrc"), "_bashrc");
        assert_eq!(save_name("a\u{0}b\u{1b}c\u{9b}d\u{2066}e"), "a_b_c_d_e");
        assert_eq!(save_name(""), "download");
        assert_eq!(save_name("   "), "download");
        assert_eq!(save_name("my report.pdf"), "my report.pdf");
        let long = format!("{}.tar.gz", "日".repeat(100));
        let cut = save_name(&long);
        assert!(cut.len() <= MAX_SAVE_BYTES, "{}", cut.len());
        assert!(cut.ends_with("日.gz"), "{cut}");
    }

    #[test]
    fn numbered_names() {
        assert_eq!(numbered("report.pdf", 0), "report.pdf");
        assert_eq!(numbered("report.pdf", 1), "report (1).pdf");
        assert_eq!(numbered("a.tar.gz", 2), "a.tar (2).gz");
        assert_eq!(numbered("README", 3), "README (3)");
        assert_eq!(numbered("_bashrc", 1), "_bashrc (1)");
        assert_eq!(numbered("trailing.", 1), "trailing. (1)");
    }

    #[test]
    fn downloads_never_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let save = |bytes: &[u8]| {
            let mut r = reserve(d, "report.pdf").unwrap();
            assert!(r.part.to_str().unwrap().ends_with(".part"));
            io::Write::write_all(&mut r.file, bytes).unwrap();
            finish(d, "report.pdf", r).unwrap()
        };
        assert_eq!(save(b"one"), d.join("report.pdf"));
        assert_eq!(save(b"two"), d.join("report (1).pdf"));
        assert_eq!(save(b"three"), d.join("report (2).pdf"));
        assert_eq!(fs::read(d.join("report.pdf")).unwrap(), b"one");
        assert_eq!(fs::read(d.join("report (1).pdf")).unwrap(), b"two");
        assert_eq!(fs::read(d.join("report (2).pdf")).unwrap(), b"three");

        // A name taken while the download ran is not replaced either.
        let r = reserve(d, "late.txt").unwrap();
        assert_eq!(r.part, d.join("late.txt.part"));
        fs::write(d.join("late.txt"), b"theirs").unwrap();
        assert_eq!(finish(d, "late.txt", r).unwrap(), d.join("late (1).txt"));
        assert_eq!(fs::read(d.join("late.txt")).unwrap(), b"theirs");

        // A dangling link or a left-over .part counts as taken.
        std::os::unix::fs::symlink(d.join("nowhere"), d.join("link.txt")).unwrap();
        fs::write(d.join("x.part"), b"").unwrap();
        let r = reserve(d, "link.txt").unwrap();
        assert_eq!(r.part, d.join("link (1).txt.part"));
        assert_eq!(finish(d, "link.txt", r).unwrap(), d.join("link (1).txt"));
        assert!(!d.join("nowhere").exists());
        let r = reserve(d, "x").unwrap();
        assert_eq!(r.part, d.join("x (1).part"));

        // No .part is left of the finished ones.
        let parts: Vec<_> = fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".part"))
            .collect();
        assert_eq!(parts.len(), 2, "{parts:?}");
    }

    #[test]
    fn urls() {
        let u = Url::parse("https://chat.example.org:8443/files/abc").unwrap();
        assert_eq!(
            u,
            Url {
                https: true,
                host: "chat.example.org".into(),
                port: 8443,
                authority: "chat.example.org:8443".into(),
                path: "/files/abc".into(),
            }
        );
        assert_eq!(u.slot(), Some("abc"));
        assert_eq!(u.file(), None);
        let u = Url::parse("HTTP://[::1]/x/files/AAAAAAAAAAAAAAAAAAAAAA/r%C3%A9p%20x.pdf").unwrap();
        assert_eq!((u.https, u.host.as_str(), u.port), (false, "[::1]", 80));
        assert_eq!(
            u.files_path(),
            Some("/files/AAAAAAAAAAAAAAAAAAAAAA/r%C3%A9p%20x.pdf")
        );
        assert_eq!(
            u.file(),
            Some(("AAAAAAAAAAAAAAAAAAAAAA", "rép x.pdf".to_owned()))
        );
        assert_eq!(u.slot(), None);
        assert_eq!(Url::parse("https://h/files/s").unwrap().port, 443);
        for bad in [
            "",
            "ftp://h/files/x",
            "https://h",
            "https:///files/x",
            "https://h:/files/x",
            "https://h:99999/files/x",
            "https://h:8a/files/x",
            "https://u@h/files/x",
            "https://h/files/x?y",
            "https://h/files/x#y",
            "https://h/files/a b",
            "https://h/files/é",
            "https://[::1/files/x",
            "https://[nope]/files/x",
            "https://::1/files/x",
            "https://h/files/x\u{FFFD}",
        ] {
            assert_eq!(Url::parse(bad), None, "{bad}");
        }
        // Bad escapes and ids are no file.
        for bad in [
            "https://h/files/AAAAAAAAAAAAAAAAAAAAAA/%zz",
            "https://h/files/AAAAAAAAAAAAAAAAAAAAAA/%C3",
            "https://h/files/AAAAAAAAAAAAAAAAAAAAAA/",
            "https://h/files/AAAAAAAAAAAAAAAAAAAAAA/a/b",
            "https://h/files/short/a",
        ] {
            assert_eq!(Url::parse(bad).unwrap().file(), None, "{bad}");
        }
    }

    #[test]
    fn where_transfers_connect() {
        let url = |s: &str| Url::parse(s).unwrap();
        let file = "/files/AAAAAAAAAAAAAAAAAAAAAA/a.txt";
        // The server's own address: as it says.
        assert_eq!(
            target(
                &url(&format!("https://127.0.0.1:5000{file}")),
                "127.0.0.1:5000"
            ),
            ("127.0.0.1:5000".to_owned(), file.to_owned())
        );
        // A public URL on the same host (a proxy on 443): there, whole path.
        assert_eq!(
            target(
                &url(&format!("https://Chat.Example.org/chat{file}")),
                "chat.example.org:59000"
            ),
            ("Chat.Example.org:443".to_owned(), format!("/chat{file}"))
        );
        // Another host (or the same written otherwise): the chat server.
        assert_eq!(
            target(
                &url(&format!("https://127.0.0.1:5000{file}")),
                "localhost:5000"
            ),
            ("localhost:5000".to_owned(), file.to_owned())
        );
        assert_eq!(
            target(&url(&format!("https://evil.example/x{file}")), "[::1]:7"),
            ("[::1]:7".to_owned(), file.to_owned())
        );
        assert_eq!(
            target(&url(&format!("http://[::1]:7{file}")), "[::1]:7"),
            ("[::1]:7".to_owned(), file.to_owned())
        );
    }

    const URL: &str = "https://127.0.0.1:5000/files/AbCdEfGhIjKlMnOpQrStUv/report.pdf";

    #[test]
    fn announcements_are_read_strictly() {
        let text = format!("[file] report.pdf (1.2 MiB) {URL}");
        assert_eq!(
            announcement(&text),
            Some(Announcement {
                name: "report.pdf",
                size: "1.2 MiB",
                url: URL
            })
        );
        let encoded = "https://h/files/AbCdEfGhIjKlMnOpQrStUv/r%C3%A9sum%C3%A9.pdf";
        assert!(announcement(&format!("[file] résumé.pdf (512 B) {encoded}")).is_some());
        for size in ["0 B", "1023 B", "1 KiB", "25 MiB", "5 GiB", "1.5 KiB"] {
            let text = format!("[file] report.pdf ({size}) {URL}");
            assert!(announcement(&text).is_some(), "{size}");
        }
        for bad in [
            format!("[file] report.pdf (1.2 MiB) {URL} "),
            format!("[file] report.pdf (1.2 MiB)  {URL}"),
            format!("[file]  report.pdf (1.2 MiB) {URL}"),
            format!("[File] report.pdf (1.2 MiB) {URL}"),
            format!(" [file] report.pdf (1.2 MiB) {URL}"),
            format!("[file] report.pdf 1.2 MiB {URL}"),
            format!("[file] report.pdf (1.2 mb) {URL}"),
            format!("[file] report.pdf (1.25 MiB) {URL}"),
            format!("[file] report.pdf (12345 B) {URL}"),
            format!("[file] report.pdf () {URL}"),
            format!("[file] other.pdf (1.2 MiB) {URL}"),
            format!("[file] a b (1.2 MiB) {URL}"),
            "[file] report.pdf (1.2 MiB) https://h/download/report.pdf".to_owned(),
            "[file] report.pdf (1.2 MiB) https://h/files/slot".to_owned(),
            "[file] report.pdf (1.2 MiB)".to_owned(),
            "[file] report.pdf (1.2 MiB) https://h/files/AbCdEfGhIjKlMnOpQrStUv/report.pdf?x"
                .to_owned(),
            "[file] report.pdf (1.2 MiB) javascript:alert(1)/files/x/report.pdf".to_owned(),
        ] {
            assert_eq!(announcement(&bad), None, "{bad}");
        }
    }

    #[test]
    fn announcements_are_shown_with_a_number() {
        let mut c = Catalog::default();
        let mut show = |line: &str| shorten_announcement(line, &mut c);
        let other = "https://h:1/files/ZZZZZZZZZZZZZZZZZZZZZZ/b.txt";
        assert_eq!(
            show(&format!("bob: [file] report.pdf (1.2 MiB) {URL}")).as_deref(),
            Some("bob: [file] report.pdf (1.2 MiB) /get 1")
        );
        assert_eq!(
            show(&format!("#rust alice: [file] b.txt (5 B) {other}")).as_deref(),
            Some("#rust alice: [file] b.txt (5 B) /get 2")
        );
        // The same URL again (live, then in history): the same number.
        assert_eq!(
            show(&format!(
                "~2026-12-01T10:38:05Z #rust bob: [file] report.pdf (1.2 MiB) {URL}"
            ))
            .as_deref(),
            Some("~2026-12-01T10:38:05Z #rust bob: [file] report.pdf (1.2 MiB) /get 1")
        );
        assert_eq!(
            show(&format!(
                "~2026-12-01T10:38:05Z bob: [file] b.txt (5 B) {other}"
            ))
            .as_deref(),
            Some("~2026-12-01T10:38:05Z bob: [file] b.txt (5 B) /get 2")
        );
        // Not messages of a room or the lobby: shown as they came.
        for line in [
            format!("@bob: [file] report.pdf (1.2 MiB) {URL}"),
            format!("-> @bob: [file] report.pdf (1.2 MiB) {URL}"),
            format!("* [file] report.pdf (1.2 MiB) {URL}"),
            format!("! [file] report.pdf (1.2 MiB) {URL}"),
            format!("bob: see [file] report.pdf (1.2 MiB) {URL}"),
            format!("#rust #go bob: [file] report.pdf (1.2 MiB) {URL}"),
            format!("bob: [file] report.pdf (1.2 MiB) {URL}x"),
            "bob: hello".to_owned(),
        ] {
            assert_eq!(show(&line), None, "{line}");
        }
        assert_eq!(c.url(1), Some(URL));
        assert_eq!(c.url(2), Some(other));
        assert_eq!(c.url(0), None);
        assert_eq!(c.url(3), None);
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn sanitized_network_text_never_becomes_a_number() {
        // An escape in the URL reached us as U+FFFD: not a URL any more.
        let line = sanitize(format!("bob: [file] a (1 B) {URL}\x1b[2J").as_bytes());
        assert_eq!(shorten_announcement(&line, &mut Catalog::default()), None);
        let line = sanitize(b"bob: [file] a\x1b (1 B) https://h/files/AbCdEfGhIjKlMnOpQrStUv/a%1B");
        assert_eq!(shorten_announcement(&line, &mut Catalog::default()), None);
    }

    #[test]
    fn get_takes_a_number_or_a_url() {
        let mut c = Catalog::default();
        c.number(URL);
        assert_eq!(parse_get("1"), Ok((Which::Number(1), None)));
        assert_eq!(
            parse_get(" 12  /tmp/my dir "),
            Ok((Which::Number(12), Some("/tmp/my dir")))
        );
        let typed = format!("{URL} out");
        let (which, dir) = parse_get(&typed).unwrap();
        assert_eq!(dir, Some("out"));
        assert_eq!(
            resolve(which, &c).unwrap().path,
            "/files/AbCdEfGhIjKlMnOpQrStUv/report.pdf"
        );
        assert_eq!(
            resolve(Which::Number(1), &c).unwrap(),
            Url::parse(URL).unwrap()
        );
        assert_eq!(parse_get(""), Err(GET_USAGE.to_owned()));
        assert!(parse_get("0").is_err());
        assert!(parse_get("99999999999999999999999").is_err());
        assert!(parse_get("three").is_err());
        assert!(parse_get("https://h/files/slot").is_err());
        assert_eq!(
            resolve(Which::Number(2), &c),
            Err("! there is no file 2: the only file shown so far is 1".to_owned())
        );
        assert_eq!(
            resolve(Which::Number(1), &Catalog::default()),
            Err("! there is no file 1: no file has been shown yet".to_owned())
        );
        c.number("https://h/files/ZZZZZZZZZZZZZZZZZZZZZZ/b");
        assert_eq!(
            resolve(Which::Number(7), &c),
            Err("! there is no file 7: the files shown so far are 1 to 2".to_owned())
        );
        // What is typed back is never shown raw.
        let err = parse_get("\u{1b}[2J").unwrap_err();
        assert!(!err.chars().any(is_unsafe), "{err:?}");
    }

    #[test]
    fn sizes_read_as_the_server_writes_them() {
        // The format itself is the server's (`human_size`, tested there);
        // the parser takes every size it writes.
        for n in [
            0,
            1,
            999,
            1024,
            1536,
            1_048_575,
            5_000_000,
            25 << 20,
            5 << 30,
            u64::MAX,
        ] {
            assert!(is_size(&human_size(n)), "{n}");
        }
    }

    #[test]
    fn progress_lines() {
        assert_eq!(
            progress_line("sending", "report.pdf", 11_796_480, 25 << 20),
            "* sending report.pdf: 45% (11.3 MiB of 25 MiB)"
        );
        assert_eq!(
            progress_line("getting", "a", 0, 10 << 20),
            "* getting a: 0% (0 B of 10 MiB)"
        );
        assert_eq!(progress_line("x", "a", 5, 0), "* x a: 100% (5 B of 0 B)");

        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        assert!(Progress::new("sending", "a", PROGRESS_OVER, t0).is_none());
        let total = 100 << 20;
        let mut p = Progress::new("sending", "a", total, t0).unwrap();
        let at = |pct: u64| total / 100 * pct;
        // Another tenth, but too soon after the start.
        assert_eq!(p.tick(at(15), ms(100)), None);
        assert_eq!(
            p.tick(at(16), ms(600)).as_deref(),
            Some("* sending a: 16% (16 MiB of 100 MiB)")
        );
        // Time passes, but not another tenth.
        assert_eq!(p.tick(at(19), ms(5000)), None);
        assert!(p.tick(at(20), ms(5001)).is_some());
        // Two tenths at once: one line.
        assert!(p.tick(at(45), ms(5600)).is_some());
        assert_eq!(p.tick(at(55), ms(5700)), None, "within half a second");
        assert!(p.tick(at(55), ms(6100)).is_some());
        // Never 100%: the last line says it is done.
        assert_eq!(p.tick(total, ms(9000)), None);
    }

    #[test]
    fn response_heads() {
        let ok = b"HTTP/1.1 201 Created\r\nContent-Length: 5\r\nX: y\r\n\r\nhello";
        let (head, len) = parse_head(ok).unwrap().unwrap();
        assert_eq!(
            head,
            Head {
                status: 201,
                reason: "Created".into(),
                length: Some(5)
            }
        );
        assert_eq!(&ok[len..], b"hello");
        for cut in 0..len {
            assert_eq!(parse_head(&ok[..cut]), Ok(None), "{cut}");
        }
        let (head, _) = parse_head(b"HTTP/1.1 100 Continue\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((head.status, head.length), (100, None));
        let same = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\n";
        assert_eq!(parse_head(same).unwrap().unwrap().0.length, Some(3));
        let evil = b"HTTP/1.1 404 \x1b[2J\r\n\r\n";
        assert!(
            parse_head(evil).is_err() || {
                let reason = parse_head(evil).unwrap().unwrap().0.reason;
                !reason.chars().any(is_unsafe)
            }
        );
        for bad in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: -3\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 3x\r\n\r\n",
            b"SSH-2.0-OpenSSH\r\n\r\n",
        ] {
            assert!(
                parse_head(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let mut long = b"HTTP/1.1 200 OK\r\n".to_vec();
        while long.len() < MAX_HEAD {
            long.extend_from_slice(b"X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        assert!(parse_head(&long).is_err());
    }

    #[test]
    fn refusals_in_words() {
        let head = |status| Head {
            status,
            reason: "Whatever".into(),
            length: None,
        };
        assert_eq!(
            put_failure(&head(400), "this upload is 5 bytes, not 6"),
            "the server refused its size (this upload is 5 bytes, not 6)"
        );
        assert!(put_failure(&head(404), "").contains("expired"));
        assert!(put_failure(&head(507), "").contains("disk is full"));
        assert!(put_failure(&head(403), "").contains("no longer post"));
        assert_eq!(
            put_failure(&head(418), ""),
            "the server answered 418 Whatever"
        );
        assert!(get_failure(&head(404)).contains("no such file"));
        assert_eq!(body_text(b"first\nsecond"), "first");
        assert_eq!(body_text(b"a\x1bb\r\n"), "a\u{FFFD}b\u{FFFD}");
    }
}
