//! Uploads as the chat sees them: `/upload <filename> <bytes>` and the
//! one-time slots it hands out, the quotas (per account and for the
//! server), and the announcement a finished upload makes in its room. No
//! I/O: the reactor streams the bytes (through the files thread) and
//! records the file (through the store thread); this book says who may
//! upload what, and keeps the count.
//!
//! A slot reserves its size against both quotas from `/upload` until its
//! upload ends (stored: the size moves to what is stored; failed or
//! expired unused: the reservation goes). An account has at most
//! [`IN_FLIGHT`] slots and uploads at once, so asking a thousand times
//! holds three slots, not a thousand.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use ring::rand::{SecureRandom, SystemRandom};

use super::commands::{Call, Then};
use super::hub::{Hub, LOBBY_ID, RoomId, fold};
use super::session::{Action, Ctx};
use super::text::{first_word, is_blank, is_forbidden};
use crate::store::ops::LOBBY;

/// Slots and uploads one account may have at once.
pub const IN_FLIGHT: usize = 3;
/// How long a slot waits for its `PUT` to begin.
pub const SLOT_TTL: Duration = Duration::from_secs(60);
/// Longest file name, in characters.
pub const MAX_FILE_NAME: usize = 100;

pub const USAGE: &str = "! usage: /upload <filename> <bytes>";
pub const BAD_NAME: &str = "! invalid file name: 1 to 100 characters, no spaces, '/' or '\\'";
pub const QUOTA: &str = "! upload quota reached";
/// How a file's announcement starts: users' lines may not.
pub const RESERVED: &str = "[file] ";
pub const RESERVED_LINE: &[u8] =
    b"! a line may not start with \"[file] \": that is how uploads are announced\n";

/// The limits on files (`--max-file`, `--file-quota`, `--files-max-total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileLimits {
    pub max_file: u64,
    /// Bytes one account may have stored (and reserved).
    pub quota: u64,
    /// Bytes all accounts together may have stored (and reserved).
    pub max_total: u64,
}

impl Default for FileLimits {
    fn default() -> FileLimits {
        FileLimits {
            max_file: 25 << 20,
            quota: 200 << 20,
            max_total: 5 << 30,
        }
    }
}

/// A slot handed out by `/upload`, until its `PUT` begins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot {
    /// The uploader, as registered.
    pub owner: String,
    /// The room it was asked from (its name; [`LOBBY`] for the lobby).
    pub room: String,
    pub name: String,
    pub size: u64,
    /// Where the uploader reaches the server (`https://host:port`): the
    /// file's URL starts with it. Set by the driver after `/upload`.
    pub base: String,
    expires: Instant,
}

/// Why `/upload` handed out no slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refused {
    TooLarge,
    Quota,
    TooMany,
    /// The system had no randomness to give.
    NoRandom,
    /// Files cannot be stored here (a read-only database or directory).
    Off,
}

/// The book of slots and quotas; see the module documentation.
#[derive(Debug, Default)]
pub struct Uploads {
    limits: FileLimits,
    /// Bytes stored per account (folded name).
    stored: HashMap<String, u64>,
    stored_total: u64,
    /// Bytes reserved by slots and running uploads, per account and in all.
    reserved: HashMap<String, u64>,
    reserved_total: u64,
    /// Slots and running uploads per account.
    open: HashMap<String, usize>,
    slots: HashMap<String, Slot>,
    /// Nothing can be stored: every `/upload` is refused.
    off: bool,
}

impl Uploads {
    /// The book, with what is stored already (per owner, as the store
    /// summed it at start).
    pub fn new(limits: FileLimits, usage: &[(String, u64)]) -> Uploads {
        let mut book = Uploads {
            limits,
            ..Uploads::default()
        };
        for (owner, size) in usage {
            *book.stored.entry(fold(owner)).or_default() += size;
            book.stored_total = book.stored_total.saturating_add(*size);
        }
        book
    }

    pub fn limits(&self) -> FileLimits {
        self.limits
    }

    /// Refuses every upload from now on (files cannot be stored).
    pub fn disable(&mut self) {
        self.off = true;
    }

    /// A slot for `owner` to upload `size` bytes named `name` from `room`.
    pub fn ask(
        &mut self,
        owner: &str,
        room: &str,
        name: &str,
        size: u64,
        now: Instant,
    ) -> Result<String, Refused> {
        self.expire(now);
        if self.off {
            return Err(Refused::Off);
        }
        let key = fold(owner);
        if size > self.limits.max_file {
            return Err(Refused::TooLarge);
        }
        if self.open.get(&key).copied().unwrap_or(0) >= IN_FLIGHT {
            return Err(Refused::TooMany);
        }
        let mine = self.stored.get(&key).copied().unwrap_or(0)
            + self.reserved.get(&key).copied().unwrap_or(0);
        let all = self.stored_total + self.reserved_total;
        if mine.saturating_add(size) > self.limits.quota
            || all.saturating_add(size) > self.limits.max_total
        {
            return Err(Refused::Quota);
        }
        let slot = random_id().ok_or(Refused::NoRandom)?;
        *self.open.entry(key.clone()).or_default() += 1;
        *self.reserved.entry(key).or_default() += size;
        self.reserved_total += size;
        self.slots.insert(
            slot.clone(),
            Slot {
                owner: owner.to_owned(),
                room: room.to_owned(),
                name: name.to_owned(),
                size,
                base: String::new(),
                expires: now + SLOT_TTL,
            },
        );
        Ok(slot)
    }

    /// Says where the uploader of `slot` reaches the server.
    pub fn set_base(&mut self, slot: &str, base: String) {
        if let Some(s) = self.slots.get_mut(slot) {
            s.base = base;
        }
    }

    /// A `PUT` reached `slot`: it is used up (one time only), and its
    /// upload runs until [`Uploads::end`]. `None` for a slot that is
    /// unknown, used or expired.
    pub fn take(&mut self, slot: &str, now: Instant) -> Option<Slot> {
        self.expire(now);
        self.slots.remove(slot)
    }

    /// The upload of a taken slot ended; `stored`: its bytes are kept.
    pub fn end(&mut self, slot: &Slot, stored: bool) {
        self.release(&slot.owner, slot.size);
        if stored {
            *self.stored.entry(fold(&slot.owner)).or_default() += slot.size;
            self.stored_total = self.stored_total.saturating_add(slot.size);
        }
    }

    /// Stored files were deleted (they expired).
    pub fn freed(&mut self, owner: &str, size: u64) {
        let key = fold(owner);
        if let Some(s) = self.stored.get_mut(&key) {
            *s = s.saturating_sub(size);
            if *s == 0 {
                self.stored.remove(&key);
            }
        }
        self.stored_total = self.stored_total.saturating_sub(size);
    }

    /// Bytes `owner` has stored.
    pub fn stored_by(&self, owner: &str) -> u64 {
        self.stored.get(&fold(owner)).copied().unwrap_or(0)
    }

    /// Slots not used in time go, and their reservations with them.
    pub fn expire(&mut self, now: Instant) {
        if !self.slots.values().any(|s| s.expires <= now) {
            return;
        }
        let gone: Vec<Slot> = {
            let mut gone = Vec::new();
            self.slots.retain(|_, s| {
                let keep = s.expires > now;
                if !keep {
                    gone.push(s.clone());
                }
                keep
            });
            gone
        };
        for slot in gone {
            self.release(&slot.owner, slot.size);
        }
    }

    fn release(&mut self, owner: &str, size: u64) {
        let key = fold(owner);
        if let Some(n) = self.open.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.open.remove(&key);
            }
        }
        if let Some(r) = self.reserved.get_mut(&key) {
            *r = r.saturating_sub(size);
            if *r == 0 {
                self.reserved.remove(&key);
            }
        }
        self.reserved_total = self.reserved_total.saturating_sub(size);
    }

    /// Slots waiting for their `PUT`.
    pub fn slots(&self) -> usize {
        self.slots.len()
    }
}

/// 128 random bits as 22 characters of base64url: a slot, or a file's id.
pub fn random_id() -> Option<String> {
    let mut bytes = [0u8; 16];
    SystemRandom::new().fill(&mut bytes).ok()?;
    Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// Whether `id` has the form of [`random_id`]'s answers.
pub fn is_id(id: &str) -> bool {
    id.len() == 22
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A file name as `/upload` takes it: 1 to 100 characters, no blank, `/`,
/// `\` or control character, and not only dots (`.`, `..`).
pub fn valid_file_name(name: &str) -> bool {
    let n = name.chars().count();
    (1..=MAX_FILE_NAME).contains(&n)
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c == '/' || c == '\\' || is_forbidden(c) || invisible(c))
        && !name.chars().all(|c| c == '.')
}

/// Characters that show nothing, or turn the text around, in a name a
/// person reads before fetching it: zero-width spaces and joiners, the
/// directional marks, the byte-order mark.
fn invisible(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200f}' | '\u{061c}' | '\u{feff}' | '\u{2060}'..='\u{2064}')
}

/// A size as people read it: `512 B`, `1.2 MiB`, `25 MiB`, `5 GiB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    // Rounded as shown: 1,048,575 bytes is 1 MiB, not 1024 KiB.
    while (value * 10.0).round() >= 10240.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    let tenths = (value * 10.0).round() as u64;
    if tenths.is_multiple_of(10) {
        format!("{} {}", tenths / 10, UNITS[unit])
    } else {
        format!("{}.{} {}", tenths / 10, tenths % 10, UNITS[unit])
    }
}

/// The text of a file's announcement (the line is `<user>: <text>`).
pub fn announcement(name: &str, size: u64, url: &str) -> String {
    format!("{RESERVED}{name} ({}) {url}", human_size(size))
}

/// `/upload <filename> <bytes>`.
pub fn upload(call: &Call<'_>, ctx: &mut Ctx<'_>) -> Then {
    let (name, rest) = first_word(call.args);
    let size = rest.trim_matches(is_blank);
    let size = match (name.is_empty(), size) {
        (false, s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => s.parse::<u64>(),
        _ => {
            ctx.send(USAGE);
            return Then::Stay;
        }
    };
    if !valid_file_name(name) {
        ctx.send(BAD_NAME);
        return Then::Stay;
    }
    let room = ctx.hub.current(call.user, call.conn);
    if let Some(line) = ctx.hub.muted_line(room, call.user, ctx.wall) {
        ctx.actions.push(Action::Send(line));
        return Then::Stay;
    }
    let max = ctx.hub.uploads.limits().max_file;
    // Too many digits for a u64 is too large as well.
    let Ok(size) = size else {
        ctx.send(&format!("! file too large (max {})", human_size(max)));
        return Then::Stay;
    };
    let room_name = ctx.hub.room_key(room);
    match ctx
        .hub
        .uploads
        .ask(call.user, &room_name, name, size, ctx.now)
    {
        Ok(slot) => ctx.actions.push(Action::Upload { slot }),
        Err(Refused::TooLarge) => ctx.send(&format!("! file too large (max {})", human_size(max))),
        Err(Refused::Quota) => ctx.send(QUOTA),
        Err(Refused::TooMany) => {
            ctx.send(&format!("! too many uploads at once (at most {IN_FLIGHT})"))
        }
        Err(Refused::NoRandom) => ctx.send("! service temporarily unavailable, try again"),
        Err(Refused::Off) => ctx.send("! uploads are not available on this server"),
    }
    Then::Stay
}

impl Hub {
    /// The name a room is stored under ([`LOBBY`] for the lobby).
    pub fn room_key(&self, room: RoomId) -> String {
        if room == LOBBY_ID {
            return LOBBY.to_owned();
        }
        self.room(room)
            .map_or_else(|| LOBBY.to_owned(), |r| r.name.clone())
    }

    /// Where a finished upload of `owner`'s may be announced: the room it
    /// was asked from, if it still exists, `owner` is still a member, and
    /// not muted there. `None`: refused.
    pub fn file_room(&self, owner: &str, room: &str, wall: i64) -> Option<RoomId> {
        // Deleted, or banned from the server, since the slot was given.
        if self.barred(owner, wall).is_some() {
            return None;
        }
        let id = self.find_room(room)?;
        let r = self.room(id)?;
        let member = id == LOBBY_ID || r.members.contains(&fold(owner));
        let allowed = member
            && self.room_ban_line(id, owner, wall).is_none()
            && self.muted_line(id, owner, wall).is_none();
        allowed.then_some(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: FileLimits = FileLimits {
        max_file: 1000,
        quota: 2500,
        max_total: 4000,
    };

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1024), "1 KiB");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(25 << 20), "25 MiB");
        assert_eq!(human_size(1_258_291), "1.2 MiB");
        assert_eq!(human_size(5 << 30), "5 GiB");
        assert_eq!(human_size(1_048_575), "1 MiB");
        assert_eq!(human_size(1_048_000), "1023.4 KiB");
    }

    #[test]
    fn file_names() {
        for ok in [
            "a",
            "report.pdf",
            "x.tar.gz",
            "héllo.txt",
            &"a".repeat(100),
            ".hidden",
        ] {
            assert!(valid_file_name(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "...",
            "a b",
            "a/b",
            "a\\b",
            "../x",
            "a\u{1}",
            "a\tb",
            &"a".repeat(101),
            "a\u{202e}b",
        ] {
            assert!(!valid_file_name(bad), "{bad:?}");
        }
        assert!(is_id(&random_id().expect("random")));
    }

    #[test]
    fn slots_reserve_and_quotas_hold() {
        let now = Instant::now();
        let mut book = Uploads::new(LIMITS, &[("Alice".to_owned(), 1000)]);
        assert_eq!(
            book.ask("alice", LOBBY, "a", 1001, now),
            Err(Refused::TooLarge)
        );
        let a = book.ask("alice", LOBBY, "a", 1000, now).expect("fits");
        // 1000 stored + 1000 reserved + 1000 > 2500.
        assert_eq!(
            book.ask("ALICE", LOBBY, "b", 1000, now),
            Err(Refused::Quota)
        );
        let b = book
            .ask("alice", LOBBY, "b", 500, now)
            .expect("fits exactly");
        let slot = book.take(&a, now).expect("a slot");
        assert_eq!(book.take(&a, now), None, "one time only");
        book.end(&slot, true);
        assert_eq!(book.stored_by("alice"), 2000);
        // The server's total: 2000 stored + 500 reserved; bob may add 1500.
        assert_eq!(book.ask("bob", LOBBY, "c", 1000, now).map(|_| ()), Ok(()));
        assert_eq!(book.ask("bob", LOBBY, "d", 600, now), Err(Refused::Quota));
        // An unused slot expires and gives its reservation back.
        book.expire(now + SLOT_TTL);
        assert_eq!(book.take(&b, now + SLOT_TTL), None);
        assert_eq!(book.slots(), 0);
        assert_eq!(
            book.ask("bob", LOBBY, "d", 1000, now + SLOT_TTL)
                .map(|_| ()),
            Ok(())
        );
        book.freed("Alice", 2000);
        assert_eq!(book.stored_by("alice"), 0);
    }

    #[test]
    fn at_most_three_at_once() {
        let now = Instant::now();
        let mut book = Uploads::new(LIMITS, &[]);
        let slots: Vec<String> = (0..IN_FLIGHT)
            .map(|i| {
                book.ask("a", LOBBY, &format!("f{i}"), 1, now)
                    .expect("slot")
            })
            .collect();
        assert_eq!(book.ask("a", LOBBY, "g", 1, now), Err(Refused::TooMany));
        // A running upload still counts; one that ended does not.
        let taken = book.take(&slots[0], now).expect("slot");
        assert_eq!(book.ask("a", LOBBY, "g", 1, now), Err(Refused::TooMany));
        book.end(&taken, false);
        assert!(book.ask("a", LOBBY, "g", 1, now).is_ok());
        assert_eq!(book.stored_by("a"), 0, "a failed upload stores nothing");
    }
}

#[cfg(test)]
mod session_tests {
    use crate::chat::testkit::World;

    fn line(w: &mut World, i: usize, text: &str) -> String {
        w.send(i, format!("{text}\n").as_bytes());
        w.take(i)
    }

    #[test]
    fn upload_answers_a_slot_or_the_line_that_says_why_not() {
        let mut w = World::new();
        let a = w.chatter("alice");
        w.take(a);
        let out = line(&mut w, a, "/upload report.pdf 1000");
        let slot = out
            .strip_prefix("* upload https://chat.test/files/")
            .and_then(|s| s.strip_suffix('\n'))
            .unwrap_or_else(|| panic!("a slot, not {out:?}"));
        assert!(super::is_id(slot), "{slot}");
        for bad in [
            "/upload",
            "/upload x",
            "/upload x -5",
            "/upload x 12abc",
            "/upload x 1 2",
        ] {
            assert_eq!(line(&mut w, a, bad), format!("{}\n", super::USAGE), "{bad}");
        }
        for name in ["../x", "a\\b", "..", &"n".repeat(101)] {
            let out = line(&mut w, a, &format!("/upload {name} 5"));
            assert_eq!(out, format!("{}\n", super::BAD_NAME), "{name}");
        }
        assert_eq!(
            line(&mut w, a, &format!("/upload big {}", (25 << 20) + 1)),
            "! file too large (max 25 MiB)\n"
        );
        assert_eq!(
            line(&mut w, a, "/upload big 99999999999999999999999"),
            "! file too large (max 25 MiB)\n"
        );
        assert!(line(&mut w, a, "/upload two 1").starts_with("* upload "));
        assert!(line(&mut w, a, "/upload three 0").starts_with("* upload "));
        assert_eq!(
            line(&mut w, a, "/upload four 1"),
            "! too many uploads at once (at most 3)\n"
        );
        assert_eq!(
            line(
                &mut w,
                a,
                "[file] x.pdf (1 B) https://evil.example/files/x/x.pdf"
            ),
            String::from_utf8_lossy(super::RESERVED_LINE)
        );
        // Another account has its own three.
        let b = w.chatter("bob");
        w.take(b);
        assert!(line(&mut w, b, "/upload mine 1").starts_with("* upload "));
    }
}
