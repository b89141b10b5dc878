//! Rooms and history as the client sees them: the form of a room name, the
//! time stamp of a history line, and which room is current.
//!
//! The current room is followed from the server's answers only, never from
//! what was typed alone: a `/join` that the server refuses must not move
//! the prompt. [`Tracker`] is the pure state (typed lines and server lines
//! in, current room out), unit-tested below; [`Rooms`] shares it between
//! the reader thread (which hears the answers) and the main thread (which
//! draws the prompt and waits briefly for the answer to a `/join` or
//! `/part`, so the next prompt already shows where plain lines go).
//! Parsing and formatting the lines themselves is `display.rs`'s.

use std::fmt;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::display::Line;

/// Longest room name after the `#` (PROTOCOL.md, Rooms).
pub const MAX_ROOM: usize = 32;

/// The room that carries no prefix on the wire.
pub const LOBBY: &str = "lobby";

/// A room name without its `#`: 1 to 32 of `a-z 0-9 _ - .`. Upper case is
/// accepted too (the server shows names in lower case; the client compares
/// them without regard to case).
pub fn is_room_name(name: &str) -> bool {
    (1..=MAX_ROOM).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// `#name` or `name` as typed in a command, in lower case, if it is a room
/// name (`lobby` included).
pub fn typed_room(word: &str) -> Option<String> {
    let name = word.strip_prefix('#').unwrap_or(word);
    is_room_name(name).then(|| name.to_ascii_lowercase())
}

/// Whether `room` (a name from a line, any case) is `here`, the current
/// room (`None`: the lobby).
pub fn is_here(room: &str, here: Option<&str>) -> bool {
    match here {
        Some(here) => room.eq_ignore_ascii_case(here),
        None => room.eq_ignore_ascii_case(LOBBY),
    }
}

/// When a history line was delivered, as shown: `MM-DD HH:MM`, in UTC like
/// the server's `2026-12-01T10:38:05Z` (no local time: the same line reads
/// the same everywhere).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    month: u8,
    day: u8,
    hour: u8,
    minute: u8,
}

impl Stamp {
    /// Reads `YYYY-MM-DDTHH:MM:SSZ` (a fraction of a second before the `Z`
    /// is allowed); anything else is `None`.
    pub fn parse(text: &str) -> Option<Stamp> {
        let b = text.as_bytes();
        if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' {
            return None;
        }
        if b[13] != b':' || b[16] != b':' || b[b.len() - 1] != b'Z' {
            return None;
        }
        let tail = &b[19..b.len() - 1];
        let fraction_ok = tail.is_empty()
            || (tail[0] == b'.' && tail.len() > 1 && tail[1..].iter().all(u8::is_ascii_digit));
        let num = |at: usize, len: usize| -> Option<u16> {
            let digits = b.get(at..at + len)?;
            digits.iter().try_fold(0u16, |n, &d| {
                d.is_ascii_digit().then(|| n * 10 + u16::from(d - b'0'))
            })
        };
        num(0, 4)?;
        let (month, day) = (num(5, 2)?, num(8, 2)?);
        let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
        let ok = fraction_ok
            && (1..=12).contains(&month)
            && (1..=31).contains(&day)
            && hour < 24
            && minute < 60
            && second <= 60;
        if !ok {
            return None;
        }
        // Each figure is at most two digits here, so it fits a u8.
        let byte = |n: u16| u8::try_from(n).ok();
        Some(Stamp {
            month: byte(month)?,
            day: byte(day)?,
            hour: byte(hour)?,
            minute: byte(minute)?,
        })
    }
}

impl fmt::Display for Stamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:02}-{:02} {:02}:{:02}",
            self.month, self.day, self.hour, self.minute
        )
    }
}

/// Which room is current, from what the user typed and what the server
/// answered.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tracker {
    /// The current room, lower case; `None` is the lobby.
    current: Option<String>,
    /// The room of a `/join` the server has not answered yet: its
    /// `#room * online (N): ...` makes it current. The same line also comes
    /// at login and for `/who #room`, so without a pending join it changes
    /// nothing.
    joining: Option<String>,
    /// A `/join` or `/part` was sent and the server has not answered.
    awaiting: bool,
    /// A `/part` was sent and the server has not answered: its `bye`
    /// makes the lobby current, whichever room was left.
    parting: bool,
}

impl Tracker {
    /// The current room (`None`: the lobby).
    pub fn current(&self) -> Option<&str> {
        self.current.as_deref()
    }

    /// The prompt: `> ` in the lobby, `#rust> ` in a room.
    pub fn prompt(&self) -> String {
        match &self.current {
            Some(room) => format!("#{room}> "),
            None => "> ".to_owned(),
        }
    }

    /// Whether an answer to a `/join` or `/part` is still to come.
    pub fn awaiting(&self) -> bool {
        self.awaiting
    }

    /// Notes a line the user sent: `/join #room` and `/part` expect an
    /// answer. Nothing changes until it comes.
    pub fn typed(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix('/') else {
            return;
        };
        let mut words = rest.split([' ', '\t']).filter(|w| !w.is_empty());
        let command = words.next().unwrap_or("").to_ascii_lowercase();
        match command.as_str() {
            "join" => {
                self.joining = words.next().and_then(typed_room);
                self.awaiting = true;
            }
            "part" => {
                self.awaiting = true;
                self.parting = true;
            }
            _ => {}
        }
    }

    /// Follows a server line (as [`crate::display::classify`] read it).
    /// Returns whether the current room changed.
    pub fn heard(&mut self, line: &Line<'_>) -> bool {
        let before = self.current.clone();
        match line {
            // Only `/join` says this, whether the user was a member or not.
            Line::Notice(text) => {
                if let Some(room) = text
                    .strip_prefix("talking in #")
                    .map(str::trim_end)
                    .filter(|r| is_room_name(r))
                {
                    self.set_current(room);
                    self.answered();
                }
            }
            Line::Room { room, line } => match &**line {
                Line::Notice(text) if text.starts_with("online (") => {
                    let asked = self
                        .joining
                        .as_deref()
                        .is_some_and(|j| room.eq_ignore_ascii_case(j));
                    if asked {
                        self.set_current(room);
                        self.answered();
                    }
                }
                // `/part`'s answer makes the lobby current; the same line
                // on another connection of the account (which did not ask)
                // only leaves the room if it was current there.
                Line::Notice(text) if text.trim_end() == "bye" => {
                    if self.parting {
                        self.current = None;
                    } else {
                        self.leave(room);
                    }
                    self.answered();
                }
                // Kicked or banned from the room: no longer a member.
                Line::Error(text) if text.starts_with("you were kicked from ") => {
                    self.leave(room);
                }
                Line::Error(_) => self.answered(),
                _ => {}
            },
            // A refused `/join` or `/part` (or any error meanwhile: the
            // answer is not coming).
            Line::Error(_) => self.answered(),
            _ => {}
        }
        self.current != before
    }

    fn set_current(&mut self, room: &str) {
        self.current = (!room.eq_ignore_ascii_case(LOBBY)).then(|| room.to_ascii_lowercase());
    }

    fn leave(&mut self, room: &str) {
        if is_here(room, self.current()) {
            self.current = None;
        }
    }

    fn answered(&mut self) {
        self.joining = None;
        self.awaiting = false;
        self.parting = false;
    }
}

/// A [`Tracker`] shared by the reader thread and the main thread.
#[derive(Default)]
pub struct Rooms {
    state: Mutex<Tracker>,
    answered: Condvar,
}

impl Rooms {
    fn lock(&self) -> MutexGuard<'_, Tracker> {
        // Nothing can leave the tracker half-changed: a panic elsewhere
        // while holding it does not make it wrong.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current room (`None`: the lobby).
    pub fn current(&self) -> Option<String> {
        self.lock().current().map(str::to_owned)
    }

    pub fn prompt(&self) -> String {
        self.lock().prompt()
    }

    /// See [`Tracker::typed`].
    pub fn typed(&self, line: &str) {
        self.lock().typed(line);
    }

    /// See [`Tracker::heard`]; wakes [`Rooms::wait_answer`].
    pub fn heard(&self, line: &Line<'_>) {
        let mut state = self.lock();
        state.heard(line);
        if !state.awaiting() {
            self.answered.notify_all();
        }
    }

    /// Waits until the server answered the last `/join` or `/part`, for at
    /// most `limit` (a slow or silent server only leaves the prompt stale).
    pub fn wait_answer(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let mut state = self.lock();
        while state.awaiting() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            state = match self.answered.wait_timeout(state, left) {
                Ok((state, _)) => state,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::display::classify;

    fn hear(t: &mut Tracker, line: &str) -> bool {
        t.heard(&classify(line))
    }

    #[test]
    fn room_names() {
        assert!(is_room_name("rust"));
        assert!(is_room_name("a.b-c_9"));
        assert!(is_room_name("Rust"));
        assert!(is_room_name(&"x".repeat(32)));
        assert!(!is_room_name(&"x".repeat(33)));
        assert!(!is_room_name(""));
        assert!(!is_room_name("ru st"));
        assert!(!is_room_name("#rust"));
        assert!(!is_room_name("rüst"));
        assert_eq!(typed_room("#Rust").as_deref(), Some("rust"));
        assert_eq!(typed_room("rust").as_deref(), Some("rust"));
        assert_eq!(typed_room("#"), None);
        assert_eq!(typed_room("#a\u{FFFD}"), None);
        assert!(is_here("LOBBY", None));
        assert!(is_here("Rust", Some("rust")));
        assert!(!is_here("rust", None));
        assert!(!is_here("lobby", Some("rust")));
    }

    #[test]
    fn history_stamps() {
        let s = Stamp::parse("2026-12-01T10:38:05Z").unwrap();
        assert_eq!(s.to_string(), "12-01 10:38");
        assert_eq!(
            Stamp::parse("2026-01-09T00:00:60.250Z")
                .unwrap()
                .to_string(),
            "01-09 00:00"
        );
        for bad in [
            "",
            "Z",
            "2026-12-01",
            "2026-12-01T10:38:05",
            "2026-12-01 10:38:05Z",
            "2026-13-01T10:38:05Z",
            "2026-00-01T10:38:05Z",
            "2026-12-32T10:38:05Z",
            "2026-12-01T24:00:00Z",
            "2026-12-01T10:60:00Z",
            "2026-12-01T10:38:61Z",
            "2026-12-01T10:38:05.Z",
            "2026-12-01T10:38:05xZ",
            "2026-12-01T1a:38:05Z",
            "+026-12-01T10:38:05Z",
            "2026-12-01T10:38:05Z\u{FFFD}",
            "２026-12-01T10:38:05Z",
        ] {
            assert_eq!(Stamp::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn join_follows_the_servers_answer() {
        let mut t = Tracker::default();
        assert_eq!(t.prompt(), "> ");
        t.typed("/join #Rust");
        assert!(t.awaiting());
        assert_eq!(t.current(), None, "nothing moves before the answer");
        assert!(hear(&mut t, "#rust * online (2): alice, bob"));
        assert_eq!(t.current(), Some("rust"));
        assert!(!t.awaiting());
        assert_eq!(t.prompt(), "#rust> ");
        // Its history and other lines change nothing.
        assert!(!hear(&mut t, "~2026-12-01T10:38:05Z #rust bob: hi"));
        assert!(!hear(&mut t, "#go * online (3): a, b, c"));
        assert!(!hear(&mut t, "bob: hi"));
        assert_eq!(t.current(), Some("rust"));

        // Already a member: `* talking in`, any case.
        t.typed("/JOIN go");
        assert!(hear(&mut t, "* talking in #Go"));
        assert_eq!(t.current(), Some("go"));
        t.typed("/join #lobby");
        assert!(hear(&mut t, "* talking in #lobby"));
        assert_eq!(t.current(), None);
        assert_eq!(t.prompt(), "> ");
        // Even unasked, `* talking in` is the server's word.
        assert!(hear(&mut t, "* talking in #rust"));
        assert_eq!(t.current(), Some("rust"));
    }

    #[test]
    fn online_lines_without_a_join_change_nothing() {
        let mut t = Tracker::default();
        // At login, for every room the account is a member of.
        assert!(!hear(&mut t, "#rust * online (2): alice, bob"));
        assert!(!hear(&mut t, "#rust * topic: all things rust"));
        assert_eq!(t.current(), None);
        // The answer to another room's join does not count either.
        t.typed("/join #go");
        assert!(!hear(&mut t, "#rust * online (2): alice, bob"));
        assert!(t.awaiting());
        assert!(hear(&mut t, "#go * online (1): alice"));
        assert_eq!(t.current(), Some("go"));
    }

    #[test]
    fn refused_joins_and_parts() {
        let mut t = Tracker::default();
        t.typed("/join #rust");
        assert!(!hear(&mut t, "! you are banned from #rust until forever"));
        assert!(!t.awaiting());
        // The refusal ended the join: a later online line is not its answer.
        assert!(!hear(&mut t, "#rust * online (2): alice, bob"));
        assert_eq!(t.current(), None);
        t.typed("/join");
        assert!(t.awaiting());
        assert!(!hear(&mut t, "! usage: /join #room"));
        assert!(!t.awaiting());
        t.typed("/part #lobby");
        assert!(!hear(&mut t, "! you cannot leave the lobby"));
        assert!(!t.awaiting());
        assert_eq!(t.current(), None);
    }

    #[test]
    fn part_and_kick_fall_back_to_the_lobby() {
        let mut t = Tracker::default();
        t.typed("/join #rust");
        hear(&mut t, "#rust * online (1): alice");
        // Another connection of the account left a room that is not
        // current here: the current one stays.
        assert!(!hear(&mut t, "#go * bye"));
        assert_eq!(t.current(), Some("rust"));
        // Leaving any room makes the lobby current, as the server does.
        t.typed("/part #go");
        assert!(hear(&mut t, "#go * bye"));
        assert!(!t.awaiting());
        assert_eq!(t.current(), None);
        hear(&mut t, "* talking in #rust");
        t.typed("/part");
        assert!(hear(&mut t, "#RUST * bye"));
        assert_eq!(t.current(), None);
        // Kicked from the current room, unasked.
        hear(&mut t, "* talking in #go");
        assert!(!hear(&mut t, "#rust ! you were kicked from #rust by op: x"));
        assert_eq!(t.current(), Some("go"));
        assert!(hear(&mut t, "#go ! you were kicked from #go by op: spam"));
        assert_eq!(t.current(), None);
        // A muted notice is not a kick.
        hear(&mut t, "* talking in #go");
        assert!(!hear(&mut t, "#go ! you are muted in #go until 10:30"));
        assert_eq!(t.current(), Some("go"));
    }

    #[test]
    fn hostile_lines_never_move_the_prompt_anywhere_strange() {
        let mut t = Tracker::default();
        let long = "x".repeat(10_000);
        for line in [
            format!("* talking in #{long}"),
            "* talking in #ru st".to_owned(),
            "* talking in #ru\u{FFFD}st".to_owned(),
            "* talking in #".to_owned(),
            "* talking in rust".to_owned(),
            "#rust".to_owned(),
            "#rust*bye".to_owned(),
            format!("#{long} * bye"),
            "~2026-12-01T10:38:05Z * talking in #evil".to_owned(),
            "~bad #rust * bye".to_owned(),
            "bob: * talking in #evil".to_owned(),
        ] {
            assert!(!hear(&mut t, &line), "{line:?}");
            assert_eq!(t.current(), None, "{line:?}");
        }
        t.typed(&format!("/join #{long}"));
        assert!(!hear(&mut t, &format!("#{long} * online (1): a")));
        assert_eq!(t.current(), None);
        assert!(t.prompt().len() <= MAX_ROOM + 3);
    }

    #[test]
    fn other_typed_lines_expect_nothing() {
        let mut t = Tracker::default();
        for line in ["hello", "//join #rust", "/joinx #rust", "/to #rust hi", ""] {
            t.typed(line);
            assert!(!t.awaiting(), "{line:?}");
        }
    }

    #[test]
    fn waiting_for_an_answer_is_bounded() {
        let rooms = Rooms::default();
        rooms.wait_answer(Duration::from_secs(5)); // nothing asked: at once
        rooms.typed("/join #rust");
        let start = Instant::now();
        rooms.wait_answer(Duration::from_millis(50));
        assert!(start.elapsed() >= Duration::from_millis(50));
        let rooms = std::sync::Arc::new(rooms);
        let reader = rooms.clone();
        let t = std::thread::spawn(move || {
            reader.heard(&classify("#rust * online (1): alice"));
        });
        rooms.wait_answer(Duration::from_secs(10));
        t.join().unwrap();
        assert_eq!(rooms.current().as_deref(), Some("rust"));
        assert_eq!(rooms.prompt(), "#rust> ");
    }
}
