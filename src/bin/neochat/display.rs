//! What the client shows: pure functions from bytes and lines to text.
//!
//! Owns making network text safe for a terminal ([`sanitize`]), reading a
//! server line's kind ([`classify`]), and formatting lines with a time stamp
//! and optional colour ([`Style::incoming`], [`Style::echo`]). No I/O here:
//! the time of day is passed in as text, and colour is a flag, so every rule
//! is a unit test at the bottom of this file.

use std::fmt::Write as _;

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
    /// `name: text`
    Public { from: &'a str, text: &'a str },
    /// Anything else (never sent by a correct server).
    Other(&'a str),
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Reads what kind of line the server sent.
pub fn classify(line: &str) -> Line<'_> {
    let rest_of = |prefix: char| {
        line.strip_prefix(prefix)
            .map(|r| r.strip_prefix(' ').unwrap_or(r))
    };
    if let Some(rest) = rest_of('?') {
        let (field, hint) = rest.split_once(' ').unwrap_or((rest, ""));
        return Line::Prompt { field, hint };
    }
    if let Some(rest) = rest_of('!') {
        return Line::Error(rest);
    }
    if let Some(rest) = rest_of('*') {
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
    /// `/quit`, in any case, with anything after it.
    Quit,
    /// `/passwd`, in any case (anything after it is never sent): the
    /// client asks the passwords itself, hidden.
    Passwd,
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
        "me" if !args.trim_matches(is_blank).is_empty() => Input::Me(args),
        "msg" => match args.find(is_blank) {
            Some(i) if !args[i..].trim_matches(is_blank).is_empty() => Input::Msg {
                to: &args[..i],
                text: args[i..].trim_start_matches(is_blank),
            },
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

    /// One sanitized server line as shown: `HH:MM ` and the line, coloured
    /// by kind. With colour off the line itself is unchanged.
    pub fn incoming(&self, time: &str, line: &str) -> String {
        let mut out = self.stamp(time);
        match classify(line) {
            Line::Public { from, text } => {
                self.name(&mut out, "", from);
                out.push_str(": ");
                out.push_str(text);
            }
            Line::Private { from, text } => {
                self.name(&mut out, "@", from);
                self.paint(&mut out, BOLD, &format!(": {text}"));
            }
            Line::Notice(_) | Line::Prompt { .. } => self.paint(&mut out, DIM, line),
            Line::Error(_) => self.paint(&mut out, RED, line),
            Line::Other(_) => out.push_str(line),
        }
        out
    }

    /// What to show for a line the user `me` just sent (the server echoes
    /// nothing back), or `None` to leave the typed line as it is.
    pub fn echo(&self, time: &str, me: &str, typed: &str) -> Option<String> {
        let typed = sanitize(typed.as_bytes());
        let mut out = self.stamp(time);
        match classify_input(&typed) {
            Input::Say(text) => {
                self.name(&mut out, "", me);
                out.push_str(": ");
                out.push_str(text);
            }
            Input::Me(action) => self.paint(&mut out, DIM, &format!("* {me} {action}")),
            Input::Msg { to, text } => {
                let sgr = format!("{REVERSE}{BOLD}");
                self.paint(&mut out, &sgr, &format!("-> @{to}:"));
                self.paint(&mut out, BOLD, &format!(" {text}"));
            }
            Input::Blank | Input::Quit | Input::Passwd | Input::Command => return None,
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
            assert_eq!(plain.incoming("12:34", line), format!("12:34 {line}"));
        }
    }

    #[test]
    fn colour_style_marks_each_kind() {
        let c = Style { color: true };
        let bob = format!("\x1b[1;{}m", name_color("bob"));
        assert_eq!(
            c.incoming("09:05", "bob: hi"),
            format!("\x1b[2m09:05\x1b[0m {bob}bob\x1b[0m: hi")
        );
        assert_eq!(
            c.incoming("09:05", "@bob: psst"),
            format!("\x1b[2m09:05\x1b[0m {bob}@bob\x1b[0m\x1b[1m: psst\x1b[0m")
        );
        assert!(
            c.incoming("09:05", "* bob left")
                .ends_with("\x1b[2m* bob left\x1b[0m")
        );
        assert!(
            c.incoming("09:05", "! nope")
                .ends_with("\x1b[31m! nope\x1b[0m")
        );
    }

    #[test]
    fn echo_of_own_lines() {
        let plain = Style { color: false };
        assert_eq!(
            plain.echo("10:00", "alice", "hi all").as_deref(),
            Some("10:00 alice: hi all")
        );
        assert_eq!(
            plain.echo("10:00", "alice", "//x").as_deref(),
            Some("10:00 alice: /x")
        );
        assert_eq!(
            plain.echo("10:00", "alice", "/me waves").as_deref(),
            Some("10:00 * alice waves")
        );
        assert_eq!(
            plain.echo("10:00", "alice", "/msg bob yo").as_deref(),
            Some("10:00 -> @bob: yo")
        );
        assert_eq!(plain.echo("10:00", "alice", "/who"), None);
        assert_eq!(plain.echo("10:00", "alice", "/quit"), None);
        assert_eq!(plain.echo("10:00", "alice", "  "), None);
        assert_eq!(
            plain.echo("10:00", "alice", "a\x1bb").as_deref(),
            Some("10:00 alice: a\u{FFFD}b")
        );
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
