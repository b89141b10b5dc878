//! What the client shows: pure functions from bytes and lines to text.
//!
//! Owns making network text safe for a terminal ([`sanitize`]), reading a
//! server line's kind ([`classify`], room lines `#room ...` and history
//! lines `~time ...` included), and formatting lines with a time stamp and
//! optional colour ([`Style::incoming`], [`Style::echo`]). No I/O here: the
//! time of day and the current room are passed in, and colour is a flag,
//! so every rule is a unit test at the bottom of this file. Which room is
//! current, and the grammar of room names and history times, are
//! `rooms.rs`'s.

use std::fmt::Write as _;

use crate::rooms::{self, LOBBY, Stamp, is_here, is_room_name};

/// What replaces a character that must not reach the terminal.
pub const REPLACEMENT: char = '\u{FFFD}';

/// True for characters a terminal would act on instead of showing: C0
/// controls except TAB, DEL, C1 controls, and the bidirectional overrides
/// and isolates that can make text read backwards.
pub fn is_unsafe(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{8}' | '\u{A}'..='\u{1F}' | '\u{7F}'..='\u{9F}'
        | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Turns bytes from the network into text that is safe to print: invalid
/// UTF-8 is decoded lossily, and every unsafe character (see [`is_unsafe`])
/// becomes U+FFFD. Whatever a server sends, the result cannot move the
/// cursor, recolour the terminal or reorder the line.
pub fn sanitize(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .map(|c| if is_unsafe(c) { REPLACEMENT } else { c })
        .collect()
}

/// The kind of a server line, per the protocol's first character.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// `? field hint`
    Prompt { field: &'a str, hint: &'a str },
    /// `! text`
    Error(&'a str),
    /// `* text`
    Notice(&'a str),
    /// `@name: text`
    Private { from: &'a str, text: &'a str },
    /// `name: text` (in the lobby, or inside a room line)
    Public { from: &'a str, text: &'a str },
    /// `-> @name: text`: a private message this account sent from another
    /// connection (or, in history, from any).
    Sent { to: &'a str, text: &'a str },
    /// `#room line`: a line of a room (`name: text`, `* ...` or `! ...`;
    /// anything else inside is `Other`). `room` is as sent, without `#`.
    Room { room: &'a str, line: Box<Line<'a>> },
    /// `~time line`: history, `line` as it was delivered at `at` (a room
    /// line, a private or sent message, a lobby message or a notice).
    History { at: Stamp, line: Box<Line<'a>> },
    /// Anything else (never sent by a correct server), and a `#` or `~`
    /// line that is not well formed.
    Other(&'a str),
}

/// An account name as it starts a line: a name never starts with one of
/// `?!*@#~-`, only with a letter or a digit.
fn is_name(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// `line` without its first character `prefix` and one space after it.
fn rest_of(line: &str, prefix: char) -> Option<&str> {
    line.strip_prefix(prefix)
        .map(|r| r.strip_prefix(' ').unwrap_or(r))
}

/// Reads what kind of line the server sent.
pub fn classify(line: &str) -> Line<'_> {
    if let Some(rest) = rest_of(line, '?') {
        let (field, hint) = rest.split_once(' ').unwrap_or((rest, ""));
        return Line::Prompt { field, hint };
    }
    if let Some(rest) = line.strip_prefix('~') {
        // History nests once: its line is never a prompt nor history again.
        let parsed = rest.split_once(' ').and_then(|(time, inner)| {
            Some(Line::History {
                at: Stamp::parse(time)?,
                line: Box::new(delivered(inner)),
            })
        });
        return parsed.unwrap_or(Line::Other(line));
    }
    delivered(line)
}

/// A line as delivered live: a room line, a sent message, or a plain one.
fn delivered(line: &str) -> Line<'_> {
    if let Some(rest) = line.strip_prefix('#') {
        // A room line nests once: its line is never a room, private or
        // history line again.
        return match rest.split_once(' ') {
            Some((room, inner)) if is_room_name(room) => Line::Room {
                room,
                line: Box::new(match plain(inner) {
                    Line::Private { .. } => Line::Other(inner),
                    other => other,
                }),
            },
            _ => Line::Other(line),
        };
    }
    if let Some(rest) = line.strip_prefix("-> @") {
        return match rest.split_once(": ") {
            Some((to, text)) if is_name(to) => Line::Sent { to, text },
            _ => Line::Other(line),
        };
    }
    plain(line)
}

/// The lines of version 1 but prompts: errors, notices, messages.
fn plain(line: &str) -> Line<'_> {
    if let Some(rest) = rest_of(line, '!') {
        return Line::Error(rest);
    }
    if let Some(rest) = rest_of(line, '*') {
        return Line::Notice(rest);
    }
    if let Some(rest) = line.strip_prefix('@') {
        return match rest.split_once(": ") {
            Some((from, text)) if is_name(from) => Line::Private { from, text },
            _ => Line::Other(line),
        };
    }
    match line.split_once(": ") {
        Some((from, text)) if is_name(from) => Line::Public { from, text },
        _ => Line::Other(line),
    }
}

/// The name of the account a login notice confirms, if `notice` is one:
/// `logged in as NAME` or `registered and logged in as NAME`.
pub fn logged_in_as(notice: &str) -> Option<&str> {
    notice
        .strip_prefix("logged in as ")
        .or_else(|| notice.strip_prefix("registered and logged in as "))
        .map(str::trim)
        .filter(|n| is_name(n))
}

/// What a typed line is, as far as the client cares.
#[derive(Debug, PartialEq, Eq)]
pub enum Input<'a> {
    /// Empty or only spaces and tabs: not worth sending.
    Blank,
    /// A message to everybody (`//text` already reduced to `/text`).
    Say(&'a str),
    /// `/me action`
    Me(&'a str),
    /// `/msg user text`
    Msg { to: &'a str, text: &'a str },
    /// `/to #room text` (the room as typed)
    To { room: &'a str, text: &'a str },
    /// `/quit`, in any case, with anything after it.
    Quit,
    /// `/passwd`, in any case (anything after it is never sent): the
    /// client asks the passwords itself, hidden.
    Passwd,
    /// `/logout` (`all: false`) or `/logout all`, in any case: the server
    /// says `* bye` and closes. With anything else after it, a `Command`
    /// (the server answers with its usage).
    Logout { all: bool },
    /// Any other slash command, sent as typed.
    Command,
}

fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// Reads a typed line the way the server will (PROTOCOL.md, Chatting).
pub fn classify_input(line: &str) -> Input<'_> {
    if line.trim_matches(is_blank).is_empty() {
        return Input::Blank;
    }
    let Some(rest) = line.strip_prefix('/') else {
        return Input::Say(line);
    };
    if rest.starts_with('/') {
        return Input::Say(rest);
    }
    let end = rest.find(is_blank).unwrap_or(rest.len());
    let (command, args) = (&rest[..end], rest[end..].trim_start_matches(is_blank));
    match command.to_ascii_lowercase().as_str() {
        "quit" => Input::Quit,
        "passwd" => Input::Passwd,
        "logout" => match args.trim_matches(is_blank) {
            "" => Input::Logout { all: false },
            a if a.eq_ignore_ascii_case("all") => Input::Logout { all: true },
            _ => Input::Command,
        },
        "me" if !args.trim_matches(is_blank).is_empty() => Input::Me(args),
        "msg" | "to" => match args.find(is_blank) {
            Some(i) if !args[i..].trim_matches(is_blank).is_empty() => {
                let (to, text) = (&args[..i], args[i..].trim_start_matches(is_blank));
                if command.eq_ignore_ascii_case("to") {
                    Input::To { room: to, text }
                } else {
                    Input::Msg { to, text }
                }
            }
            _ => Input::Command,
        },
        _ => Input::Command,
    }
}

const RESET: &str = "\x1b[0m";
const DIM: &str = "\x1b[2m";
const BOLD: &str = "\x1b[1m";
const RED: &str = "\x1b[31m";
const REVERSE: &str = "\x1b[7m";

/// Foreground colours for names: red is kept for errors.
const NAME_COLORS: [u8; 10] = [32, 33, 34, 35, 36, 92, 93, 94, 95, 96];

/// The SGR colour code of a name: the same for a name in any case, on every
/// run and every machine (FNV-1a, not std's randomly seeded hasher).
pub fn name_color(name: &str) -> u8 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        hash ^= u32::from(b.to_ascii_lowercase());
        hash = hash.wrapping_mul(0x0100_0193);
    }
    NAME_COLORS[(hash % NAME_COLORS.len() as u32) as usize]
}

/// How lines are shown: with colour or plain.
#[derive(Clone, Copy, Debug)]
pub struct Style {
    pub color: bool,
}

impl Style {
    fn paint(&self, out: &mut String, sgr: &str, text: &str) {
        if self.color {
            let _ = write!(out, "{sgr}{text}{RESET}");
        } else {
            out.push_str(text);
        }
    }

    fn name(&self, out: &mut String, prefix: &str, name: &str) {
        let sgr = format!("\x1b[1;{}m", name_color(name));
        self.paint(out, &sgr, &format!("{prefix}{name}"));
    }

    fn stamp(&self, time: &str) -> String {
        let mut out = String::new();
        self.paint(&mut out, DIM, time);
        out.push(' ');
        out
    }

    /// `[#room] ` before a line of a room that is not the current one.
    fn marker(&self, out: &mut String, room: &str) {
        let sgr = format!("\x1b[{}m", name_color(room));
        self.paint(out, &sgr, &format!("[#{}]", room.to_ascii_lowercase()));
        out.push(' ');
    }

    /// `-> @name: text`, as one's own private message reads.
    fn sent(&self, out: &mut String, to: &str, text: &str) {
        let sgr = format!("{REVERSE}{BOLD}");
        self.paint(out, &sgr, &format!("-> @{to}:"));
        self.paint(out, BOLD, &format!(" {text}"));
    }

    /// A line without its time stamp. `raw` is the line as received when
    /// it is at the top (shown unchanged); nested lines are rebuilt from
    /// their parts. `here` is the current room (`None`: the lobby); lobby
    /// messages get `[#lobby]` while another room is current.
    fn body(&self, out: &mut String, line: &Line<'_>, raw: Option<&str>, here: Option<&str>) {
        let whole = |prefix: &str, text: &str| {
            raw.map_or_else(|| format!("{prefix} {text}"), str::to_owned)
        };
        match line {
            Line::Public { from, text } => {
                if here.is_some() {
                    self.marker(out, LOBBY);
                }
                self.name(out, "", from);
                out.push_str(": ");
                out.push_str(text);
            }
            Line::Private { from, text } => {
                self.name(out, "@", from);
                self.paint(out, BOLD, &format!(": {text}"));
            }
            Line::Sent { to, text } => self.sent(out, to, text),
            Line::Room { room, line } => {
                if !is_here(room, here) {
                    self.marker(out, room);
                }
                match &**line {
                    // Inside, a message is the room's, never the lobby's.
                    Line::Public { from, text } => {
                        self.name(out, "", from);
                        out.push_str(": ");
                        out.push_str(text);
                    }
                    // Notices, errors and the rest: no room in them.
                    inner => self.body(out, inner, None, None),
                }
            }
            Line::History { at, line } => {
                // Dimmed as a whole, with the stored time instead of now.
                let mut inner = String::new();
                Style { color: false }.body(&mut inner, line, None, here);
                self.paint(out, DIM, &format!("{at} {inner}"));
            }
            Line::Notice(text) => self.paint(out, DIM, &whole("*", text)),
            Line::Prompt { field, hint } => {
                let text = format!("{field} {hint}");
                self.paint(out, DIM, &whole("?", text.trim_end()));
            }
            Line::Error(text) => self.paint(out, RED, &whole("!", text)),
            Line::Other(text) => out.push_str(raw.unwrap_or(text)),
        }
    }

    /// One sanitized server line as shown: `HH:MM ` and the line, coloured
    /// by kind; `here` is the current room (`None`: the lobby). A line of
    /// another room starts with `[#room]`; a history line shows the time
    /// it was delivered (`MM-DD HH:MM`, UTC) instead, dimmed as a whole.
    /// With colour off, a lobby line seen in the lobby is unchanged.
    pub fn incoming(&self, time: &str, here: Option<&str>, line: &str) -> String {
        let parsed = classify(line);
        let mut out = String::new();
        if !matches!(parsed, Line::History { .. }) {
            out = self.stamp(time);
        }
        self.body(&mut out, &parsed, Some(line), here);
        out
    }

    /// What to show for a line the user `me` just sent in room `here`
    /// (the server echoes nothing back), or `None` to leave the typed line
    /// as it is.
    pub fn echo(&self, time: &str, me: &str, here: Option<&str>, typed: &str) -> Option<String> {
        let typed = sanitize(typed.as_bytes());
        let mut out = self.stamp(time);
        match classify_input(&typed) {
            Input::Say(text) => {
                self.name(&mut out, "", me);
                out.push_str(": ");
                out.push_str(text);
            }
            Input::Me(action) => self.paint(&mut out, DIM, &format!("* {me} {action}")),
            Input::Msg { to, text } => self.sent(&mut out, to, text),
            Input::To { room, text } => {
                let room = rooms::typed_room(room)?;
                if !is_here(&room, here) {
                    self.marker(&mut out, &room);
                }
                self.name(&mut out, "", me);
                out.push_str(": ");
                out.push_str(text);
            }
            Input::Blank | Input::Quit | Input::Passwd | Input::Logout { .. } | Input::Command => {
                return None;
            }
        }
        Some(out)
    }
}

/// The local time of day as `HH:MM`, or UTC if the local time zone cannot
/// be read.
pub fn clock(now: std::time::SystemTime) -> String {
    let secs = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let t = libc::time_t::try_from(secs).unwrap_or(0);
    let mut tm = std::mem::MaybeUninit::<libc::tm>::uninit();
    // SAFETY: localtime_r writes only into `tm` and returns null on failure.
    let local = unsafe { libc::localtime_r(&t, tm.as_mut_ptr()) };
    if local.is_null() {
        let day = secs % 86_400;
        format!("{:02}:{:02}", day / 3600, day % 3600 / 60)
    } else {
        // SAFETY: localtime_r succeeded, so it filled `tm`.
        let tm = unsafe { tm.assume_init() };
        format!("{:02}:{:02}", tm.tm_hour, tm.tm_min)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_replaces_terminal_controls() {
        assert_eq!(sanitize(b"plain text"), "plain text");
        assert_eq!(sanitize(b"tab\tkept"), "tab\tkept");
        assert_eq!(sanitize(b"\x1b[2J evil"), "\u{FFFD}[2J evil");
        assert_eq!(
            sanitize(b"bell\x07 cr\r nul\0 del\x7f"),
            "bell\u{FFFD} cr\u{FFFD} nul\u{FFFD} del\u{FFFD}"
        );
        assert_eq!(sanitize(b"new\nline"), "new\u{FFFD}line");
        // C1 CSI (U+009B), encoded as UTF-8.
        assert_eq!(sanitize("x\u{9b}31m".as_bytes()), "x\u{FFFD}31m");
        for c in ['\u{202A}', '\u{202E}', '\u{2066}', '\u{2069}'] {
            assert_eq!(sanitize(format!("a{c}b").as_bytes()), "a\u{FFFD}b");
        }
        // Neighbours of the bidi ranges are ordinary text.
        assert_eq!(
            sanitize("a\u{2029}\u{202F}\u{2065}\u{206A}b".as_bytes()),
            "a\u{2029}\u{202F}\u{2065}\u{206A}b"
        );
        assert_eq!(sanitize("ü 日本 🎉".as_bytes()), "ü 日本 🎉");
    }

    #[test]
    fn sanitize_decodes_invalid_utf8_lossily() {
        assert_eq!(sanitize(b"ok \xff\xfe end"), "ok \u{FFFD}\u{FFFD} end");
        // A lone C1 byte is not UTF-8 either.
        assert_eq!(sanitize(b"\x9b2J"), "\u{FFFD}2J");
        for b in 0..=255u8 {
            assert!(!sanitize(&[b]).chars().any(is_unsafe), "byte {b:#x}");
        }
    }

    #[test]
    fn classify_reads_the_first_character() {
        assert_eq!(
            classify("? choice Sign up (R) or Login (L)"),
            Line::Prompt {
                field: "choice",
                hint: "Sign up (R) or Login (L)"
            }
        );
        assert_eq!(
            classify("? username"),
            Line::Prompt {
                field: "username",
                hint: ""
            }
        );
        assert_eq!(classify("! slow down"), Line::Error("slow down"));
        assert_eq!(classify("* bob joined"), Line::Notice("bob joined"));
        assert_eq!(
            classify("@bob: psst: hi"),
            Line::Private {
                from: "bob",
                text: "psst: hi"
            }
        );
        assert_eq!(
            classify("bob: a: b"),
            Line::Public {
                from: "bob",
                text: "a: b"
            }
        );
        assert_eq!(
            classify("b.o-b_1: "),
            Line::Public {
                from: "b.o-b_1",
                text: ""
            }
        );
        assert_eq!(classify("no colon"), Line::Other("no colon"));
        assert_eq!(classify("two words: x"), Line::Other("two words: x"));
        assert_eq!(classify("@: x"), Line::Other("@: x"));
        assert_eq!(classify(""), Line::Other(""));
    }

    #[test]
    fn login_notices() {
        assert_eq!(logged_in_as("logged in as Alice"), Some("Alice"));
        assert_eq!(logged_in_as("registered and logged in as bob"), Some("bob"));
        assert_eq!(logged_in_as("welcome to NeoChat (1 online)"), None);
        assert_eq!(logged_in_as("logged in as "), None);
    }

    #[test]
    fn classify_input_follows_the_server() {
        assert_eq!(classify_input(""), Input::Blank);
        assert_eq!(classify_input(" \t "), Input::Blank);
        assert_eq!(classify_input("hello"), Input::Say("hello"));
        assert_eq!(classify_input(" /who"), Input::Say(" /who"));
        assert_eq!(classify_input("//etc"), Input::Say("/etc"));
        assert_eq!(classify_input("/quit"), Input::Quit);
        assert_eq!(classify_input("/QUIT now"), Input::Quit);
        assert_eq!(classify_input("/quitter"), Input::Command);
        assert_eq!(classify_input("/passwd"), Input::Passwd);
        assert_eq!(classify_input("/PASSWD oops-a-password"), Input::Passwd);
        assert_eq!(classify_input("/passwdx"), Input::Command);
        assert_eq!(classify_input("/logout"), Input::Logout { all: false });
        assert_eq!(classify_input("/LOGOUT  "), Input::Logout { all: false });
        assert_eq!(classify_input("/logout all"), Input::Logout { all: true });
        assert_eq!(classify_input("/logout ALL "), Input::Logout { all: true });
        assert_eq!(classify_input("/logout x"), Input::Command);
        assert_eq!(classify_input("/logoutall"), Input::Command);
        assert_eq!(classify_input("/who"), Input::Command);
        assert_eq!(classify_input("/me waves"), Input::Me("waves"));
        assert_eq!(classify_input("/me"), Input::Command);
        assert_eq!(
            classify_input("/msg bob  hi there"),
            Input::Msg {
                to: "bob",
                text: "hi there"
            }
        );
        assert_eq!(
            classify_input("/MSG\tbob\thi"),
            Input::Msg {
                to: "bob",
                text: "hi"
            }
        );
        assert_eq!(classify_input("/msg bob"), Input::Command);
        assert_eq!(classify_input("/msg bob   "), Input::Command);
    }

    #[test]
    fn name_colors_are_stable() {
        assert_eq!(name_color("alice"), name_color("ALICE"));
        assert!(NAME_COLORS.contains(&name_color("bob")));
        assert!(!NAME_COLORS.contains(&31));
        // Not everybody gets the same colour.
        let names = ["alice", "bob", "carol", "dave", "erin", "frank"];
        let first = name_color(names[0]);
        assert!(names.iter().any(|n| name_color(n) != first));
    }

    #[test]
    fn plain_style_shows_lines_unchanged() {
        let plain = Style { color: false };
        for line in [
            "bob: hi",
            "@bob: psst",
            "* bob joined",
            "! slow down",
            "weird",
            "? username",
        ] {
            assert_eq!(plain.incoming("12:34", None, line), format!("12:34 {line}"));
        }
    }

    #[test]
    fn colour_style_marks_each_kind() {
        let c = Style { color: true };
        let bob = format!("\x1b[1;{}m", name_color("bob"));
        assert_eq!(
            c.incoming("09:05", None, "bob: hi"),
            format!("\x1b[2m09:05\x1b[0m {bob}bob\x1b[0m: hi")
        );
        assert_eq!(
            c.incoming("09:05", None, "@bob: psst"),
            format!("\x1b[2m09:05\x1b[0m {bob}@bob\x1b[0m\x1b[1m: psst\x1b[0m")
        );
        assert!(
            c.incoming("09:05", None, "* bob left")
                .ends_with("\x1b[2m* bob left\x1b[0m")
        );
        assert!(
            c.incoming("09:05", None, "! nope")
                .ends_with("\x1b[31m! nope\x1b[0m")
        );
    }

    #[test]
    fn echo_of_own_lines() {
        let plain = Style { color: false };
        assert_eq!(
            plain.echo("10:00", "alice", None, "hi all").as_deref(),
            Some("10:00 alice: hi all")
        );
        assert_eq!(
            plain.echo("10:00", "alice", None, "//x").as_deref(),
            Some("10:00 alice: /x")
        );
        assert_eq!(
            plain.echo("10:00", "alice", None, "/me waves").as_deref(),
            Some("10:00 * alice waves")
        );
        assert_eq!(
            plain.echo("10:00", "alice", None, "/msg bob yo").as_deref(),
            Some("10:00 -> @bob: yo")
        );
        assert_eq!(plain.echo("10:00", "alice", None, "/who"), None);
        assert_eq!(plain.echo("10:00", "alice", None, "/quit"), None);
        assert_eq!(plain.echo("10:00", "alice", None, "  "), None);
        assert_eq!(
            plain.echo("10:00", "alice", None, "a\x1bb").as_deref(),
            Some("10:00 alice: a\u{FFFD}b")
        );
    }

    fn room<'a>(room: &'a str, line: Line<'a>) -> Line<'a> {
        Line::Room {
            room,
            line: Box::new(line),
        }
    }

    fn history<'a>(time: &str, line: Line<'a>) -> Line<'a> {
        Line::History {
            at: Stamp::parse(time).unwrap(),
            line: Box::new(line),
        }
    }

    #[test]
    fn classify_reads_room_sent_and_history_lines() {
        let hi = || Line::Public {
            from: "alice",
            text: "hi",
        };
        assert_eq!(classify("#rust alice: hi"), room("rust", hi()));
        assert_eq!(
            classify("#rust * bob joined"),
            room("rust", Line::Notice("bob joined"))
        );
        assert_eq!(
            classify("#rust ! you are muted in #rust until 10:30"),
            room("rust", Line::Error("you are muted in #rust until 10:30"))
        );
        assert_eq!(
            classify("-> @bob: see: you"),
            Line::Sent {
                to: "bob",
                text: "see: you"
            }
        );
        let t = "2026-12-01T10:38:05Z";
        assert_eq!(
            classify(&format!("~{t} #rust alice: hi")),
            history(t, room("rust", hi()))
        );
        assert_eq!(
            classify(&format!("~{t} @bob: psst")),
            history(
                t,
                Line::Private {
                    from: "bob",
                    text: "psst"
                }
            )
        );
        assert_eq!(
            classify(&format!("~{t} -> @bob: ok")),
            history(
                t,
                Line::Sent {
                    to: "bob",
                    text: "ok"
                }
            )
        );
        assert_eq!(classify(&format!("~{t} alice: hi")), history(t, hi()));
        assert_eq!(
            classify(&format!("~{t} * bob waves")),
            history(t, Line::Notice("bob waves"))
        );
    }

    #[test]
    fn classify_refuses_malformed_room_and_history_lines() {
        let long = format!("#{} alice: hi", "r".repeat(33));
        let t = "2026-12-01T10:38:05Z";
        for line in [
            "#rust",
            "#rust:hi",
            "# alice: hi",
            "#ru\u{FFFD}st alice: hi",
            long.as_str(),
            "~2026-12-01 alice: hi",
            "~yesterday alice: hi",
            "~2026-12-01T10:38:05Z",
            "~",
            "-> @: x",
            "-> bob: x",
            "->@bob: x",
            "-> @bob x",
        ] {
            assert_eq!(classify(line), Line::Other(line), "{line:?}");
        }
        // Nesting goes one level deep each, in one order only.
        assert_eq!(
            classify("#rust #go alice: hi"),
            room("rust", Line::Other("#go alice: hi"))
        );
        assert_eq!(
            classify("#rust @bob: psst"),
            room("rust", Line::Other("@bob: psst"))
        );
        assert_eq!(
            classify("#rust ~2026-12-01T10:38:05Z alice: hi"),
            room("rust", Line::Other("~2026-12-01T10:38:05Z alice: hi"))
        );
        let twice = format!("~{t} alice: hi");
        assert_eq!(
            classify(&format!("~{t} {twice}")),
            history(t, Line::Other(&twice))
        );
        assert_eq!(
            classify(&format!("~{t} ? password")),
            history(t, Line::Other("? password"))
        );
        // A name never starts with `-`, `#` or `~`.
        assert_eq!(classify("-bob: hi"), Line::Other("-bob: hi"));
        assert_eq!(classify("~bob: hi"), Line::Other("~bob: hi"));
    }

    #[test]
    fn room_lines_are_marked_unless_current() {
        let plain = Style { color: false };
        let show = |here: Option<&str>, line: &str| plain.incoming("10:40", here, line);
        assert_eq!(show(None, "#rust alice: hi"), "10:40 [#rust] alice: hi");
        assert_eq!(
            show(None, "#rust * bob joined"),
            "10:40 [#rust] * bob joined"
        );
        assert_eq!(
            show(None, "#rust ! you are muted in #rust until 10:30"),
            "10:40 [#rust] ! you are muted in #rust until 10:30"
        );
        assert_eq!(
            show(Some("go"), "#rust alice: hi"),
            "10:40 [#rust] alice: hi"
        );
        // The current room reads like the lobby did.
        assert_eq!(show(Some("rust"), "#rust alice: hi"), "10:40 alice: hi");
        assert_eq!(
            show(Some("rust"), "#RUST * bob joined"),
            "10:40 * bob joined"
        );
        // The lobby, seen from a room, is marked; its notices are replies
        // and presence, and stay as they are.
        assert_eq!(show(Some("rust"), "bob: hi"), "10:40 [#lobby] bob: hi");
        assert_eq!(show(Some("rust"), "* bob left"), "10:40 * bob left");
        assert_eq!(show(Some("rust"), "@bob: psst"), "10:40 @bob: psst");
        assert_eq!(
            show(Some("rust"), "#lobby bob: hi"),
            "10:40 [#lobby] bob: hi"
        );
        assert_eq!(show(None, "#lobby bob: hi"), "10:40 bob: hi");
        // Room names are shown in lower case.
        assert_eq!(show(None, "#Rust alice: hi"), "10:40 [#rust] alice: hi");
    }

    #[test]
    fn history_lines_show_when_they_were_delivered() {
        let plain = Style { color: false };
        let show = |here: Option<&str>, line: &str| plain.incoming("10:40", here, line);
        let t = "~2026-12-01T10:38:05Z";
        assert_eq!(
            show(None, &format!("{t} #rust alice: hi")),
            "12-01 10:38 [#rust] alice: hi"
        );
        assert_eq!(
            show(Some("rust"), &format!("{t} #rust alice: hi")),
            "12-01 10:38 alice: hi"
        );
        assert_eq!(show(None, &format!("{t} bob: hi")), "12-01 10:38 bob: hi");
        assert_eq!(
            show(Some("go"), &format!("{t} bob: hi")),
            "12-01 10:38 [#lobby] bob: hi"
        );
        assert_eq!(
            show(None, &format!("{t} @bob: psst")),
            "12-01 10:38 @bob: psst"
        );
        assert_eq!(
            show(None, &format!("{t} -> @bob: ok")),
            "12-01 10:38 -> @bob: ok"
        );
        assert_eq!(
            show(None, &format!("{t} * bob waves")),
            "12-01 10:38 * bob waves"
        );
        // A malformed time: the line as it came, with the time of day.
        assert_eq!(show(None, "~soon bob: hi"), "10:40 ~soon bob: hi");
        assert_eq!(
            show(None, "~2026-12-01T10:38:05 bob: hi"),
            "10:40 ~2026-12-01T10:38:05 bob: hi"
        );

        let c = Style { color: true };
        assert_eq!(
            c.incoming("10:40", None, &format!("{t} #rust alice: hi")),
            "\x1b[2m12-01 10:38 [#rust] alice: hi\x1b[0m"
        );
        assert_eq!(
            c.incoming("10:40", None, &format!("{t} -> @bob: ok")),
            "\x1b[2m12-01 10:38 -> @bob: ok\x1b[0m"
        );
    }

    #[test]
    fn sent_messages_read_like_ones_own() {
        let plain = Style { color: false };
        assert_eq!(
            plain.incoming("10:40", None, "-> @bob: ok"),
            "10:40 -> @bob: ok"
        );
        let c = Style { color: true };
        for style in [plain, c] {
            assert_eq!(
                style.incoming("10:40", None, "-> @bob: ok"),
                style.echo("10:40", "alice", None, "/msg bob ok").unwrap()
            );
        }
        assert_eq!(
            c.incoming("10:40", None, "-> @bob: ok"),
            "\x1b[2m10:40\x1b[0m \x1b[7m\x1b[1m-> @bob:\x1b[0m\x1b[1m ok\x1b[0m"
        );
    }

    #[test]
    fn colour_marks_rooms_with_their_own_colour() {
        let c = Style { color: true };
        let alice = format!("\x1b[1;{}m", name_color("alice"));
        let rust = format!("\x1b[{}m", name_color("rust"));
        assert_eq!(
            c.incoming("09:05", None, "#rust alice: hi"),
            format!("\x1b[2m09:05\x1b[0m {rust}[#rust]\x1b[0m {alice}alice\x1b[0m: hi")
        );
        assert_eq!(
            c.incoming("09:05", Some("rust"), "#rust alice: hi"),
            format!("\x1b[2m09:05\x1b[0m {alice}alice\x1b[0m: hi")
        );
        assert_eq!(
            c.incoming("09:05", None, "#rust ! you are muted"),
            format!("\x1b[2m09:05\x1b[0m {rust}[#rust]\x1b[0m \x1b[31m! you are muted\x1b[0m")
        );
    }

    #[test]
    fn the_new_notices_are_shown_as_they_came() {
        let plain = Style { color: false };
        let c = Style { color: true };
        for line in [
            "* 123 messages since you left; the last 50 follow (/history for more)",
            "* 57 older private messages; /history @bob shows them",
            "* bob is offline; they will get it when they log in",
            "* talking in #rust",
            "* end of history",
            "* rooms (2): #lobby (12 online), #rust (3 online, 40 members)",
        ] {
            assert_eq!(plain.incoming("10:40", None, line), format!("10:40 {line}"));
            assert_eq!(
                plain.incoming("10:40", Some("rust"), line),
                format!("10:40 {line}")
            );
            assert_eq!(
                c.incoming("10:40", Some("rust"), line),
                format!("\x1b[2m10:40\x1b[0m \x1b[2m{line}\x1b[0m")
            );
            assert_eq!(logged_in_as(line.trim_start_matches("* ")), None);
        }
    }

    #[test]
    fn echo_of_lines_in_rooms() {
        let plain = Style { color: false };
        let echo = |here: Option<&str>, typed: &str| plain.echo("10:00", "alice", here, typed);
        assert_eq!(echo(Some("rust"), "hi").as_deref(), Some("10:00 alice: hi"));
        assert_eq!(
            echo(Some("rust"), "/me waves").as_deref(),
            Some("10:00 * alice waves")
        );
        assert_eq!(
            echo(None, "/to #rust hi").as_deref(),
            Some("10:00 [#rust] alice: hi")
        );
        assert_eq!(
            echo(Some("rust"), "/TO #Rust hi").as_deref(),
            Some("10:00 alice: hi")
        );
        assert_eq!(
            echo(Some("rust"), "/to #lobby hi").as_deref(),
            Some("10:00 [#lobby] alice: hi")
        );
        assert_eq!(
            echo(None, "/to #lobby hi").as_deref(),
            Some("10:00 alice: hi")
        );
        // What the server will refuse gets no echo.
        assert_eq!(echo(None, "/to #no\x1bpe hi"), None);
        assert_eq!(echo(None, "/to #rust"), None);
        for command in ["/join #rust", "/part", "/rooms", "/topic x", "/history 5"] {
            assert_eq!(echo(Some("rust"), command), None, "{command}");
        }
        assert_eq!(
            classify_input("/to #rust  a b"),
            Input::To {
                room: "#rust",
                text: "a b"
            }
        );
        assert_eq!(classify_input("/to #rust "), Input::Command);
    }

    /// Takes out the SGR sequences this file writes (`ESC [ digits;... m`),
    /// failing on any other escape.
    fn without_our_sgr(shown: &str) -> String {
        let mut out = String::new();
        let mut rest = shown;
        while let Some(i) = rest.find('\x1b') {
            out.push_str(&rest[..i]);
            let seq = &rest[i + 1..];
            let end = seq.find('m').expect("an SGR sequence");
            assert!(seq.starts_with('['), "{shown:?}");
            assert!(
                seq[1..end].chars().all(|c| c.is_ascii_digit() || c == ';'),
                "{shown:?}"
            );
            rest = &seq[end + 1..];
        }
        out.push_str(rest);
        out
    }

    #[test]
    fn hostile_room_and_history_lines_are_shown_safely() {
        let long_room = format!("#{} alice: hi", "r".repeat(100_000));
        let long_text = format!("#rust alice: {}", "x".repeat(100_000));
        let hostile: Vec<Vec<u8>> = vec![
            b"#rust alice: \x1b[2Jgone".to_vec(),
            b"#ru\x1bst alice: hi".to_vec(),
            b"#rust\x07 * bell".to_vec(),
            b"#rust \x1b]0;title\x07".to_vec(),
            "#rust alice: \u{202E}desrever".as_bytes().to_vec(),
            b"~2026-12-01T10:38:05Z #rust alice: \xc2\x9b31m".to_vec(),
            b"~2026-12-01T10:38:05Z\x1b[31m bob: hi".to_vec(),
            b"~2026-12-\xff1T10:38:05Z bob: hi".to_vec(),
            b"~\r\n bob: hi".to_vec(),
            b"#".to_vec(),
            b"#rust".to_vec(),
            b"# ".to_vec(),
            b"~ ".to_vec(),
            b"-> @".to_vec(),
            b"-> @bob:".to_vec(),
            long_room.into_bytes(),
            long_text.into_bytes(),
            "~2026-12-01T10:38:05Z #é日本 alice: hi".as_bytes().to_vec(),
        ];
        for bytes in &hostile {
            let line = sanitize(bytes);
            for here in [None, Some("rust")] {
                let plain = Style { color: false }.incoming("10:40", here, &line);
                assert!(!plain.chars().any(is_unsafe), "{plain:?}");
                let c = Style { color: true }.incoming("10:40", here, &line);
                let text = without_our_sgr(&c);
                assert!(!text.chars().any(is_unsafe), "{c:?}");
                // Colour never adds or loses text.
                assert_eq!(text, plain);
            }
        }
    }

    #[test]
    fn every_prefix_of_a_nested_line_is_safe() {
        // Cut anywhere, a history room line is still some kind of line.
        let line = "~2026-12-01T10:38:05Z #rust alice: hi: there";
        for end in 0..=line.len() {
            let cut = &line[..end];
            let _ = classify(cut);
            let shown = Style { color: false }.incoming("10:40", Some("rust"), cut);
            assert!(!shown.chars().any(is_unsafe));
        }
    }

    #[test]
    fn clock_is_hh_mm() {
        let t = clock(std::time::SystemTime::now());
        assert_eq!(t.len(), 5, "{t}");
        let (h, m) = t.split_once(':').unwrap();
        assert!(
            h.parse::<u8>().unwrap() < 24 && m.parse::<u8>().unwrap() < 60,
            "{t}"
        );
    }
}
