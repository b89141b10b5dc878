//! What every session shares: who is online on which connections, the
//! rooms (the lobby among them) with their members and rings of history,
//! and the directory of accounts. No I/O: it answers with [`Action`]s, and
//! what must be stored goes out as [`Op`]s for the store thread.
//!
//! Fan-out is per room: each room keeps the connections of its online
//! members, so a line costs what the room has, not what the server has.
//! The lobby is room [`LOBBY_ID`]; every online connection is in it.
//!
//! An account is online while it has at least one Chatting connection (at
//! most `sessions_per_account`). Its first connection entering tells the
//! lobby `* <name> joined`; its last leaving, `* <name> left`; past
//! `quiet_presence` online, neither is told. What it had seen per room is
//! handed to the store when its last connection closes, and read back (by
//! the store thread, in order with every write) at its next login.

use std::collections::{BTreeMap, HashMap, HashSet};

use slab::Slab;

use super::history::{Entry, format_line};
pub use super::rooms::Room;
use super::session::{Action, ConnId};
use super::uploads::{FileLimits, Uploads};
use crate::store::ops::{AccountState, LOBBY, Message, Op, Snapshot};

/// Names shown in the online line a login gets; `/who` shows all.
pub const ONLINE_LINE_NAMES: usize = 100;
/// Missed messages shown per room at login.
pub const CATCH_UP: usize = 50;
/// Messages shown to a first login, a second connection, and at `/join`.
pub const FIRST_LOOK: usize = 10;
/// Offline private messages handed over at login.
pub const OFFLINE_SHOWN: usize = 200;

/// Settings of the shared state (from the flags).
#[derive(Clone, Debug)]
pub struct HubConfig {
    /// `--history off` is false: nothing stored, no catch-up.
    pub history: bool,
    /// Messages older than this many days are not shown (and the store
    /// deletes them); `None` keeps them.
    pub history_days: Option<u32>,
    pub max_rooms: usize,
    /// Rooms one account may own.
    pub max_owned: usize,
    /// Past this many online in a room, joined/left lines are not sent;
    /// `None` is off.
    pub quiet_presence: Option<usize>,
    pub sessions_per_account: usize,
    /// `--token-days`: how long a token from `/token` logs in.
    pub token_days: u32,
    /// `--max-file`, `--file-quota`, `--files-max-total`.
    pub files: FileLimits,
}

impl Default for HubConfig {
    fn default() -> Self {
        let config = crate::reactor::Config::default();
        config.hub
    }
}

/// A room's place in the hub.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomId(pub(super) usize);

/// The lobby, always there.
pub const LOBBY_ID: RoomId = RoomId(0);

/// An account with at least one Chatting connection.
#[derive(Debug)]
pub(super) struct Account {
    pub(super) shown: String,
    /// Its connections, oldest first, each with its current room.
    pub(super) conns: Vec<(ConnId, RoomId)>,
    /// The rooms it is a member of (not the lobby).
    pub(super) rooms: Vec<RoomId>,
}

/// A private message buffered for an account whose state is being read.
#[derive(Debug)]
pub(super) struct Held {
    id: Option<u64>,
    line: Vec<u8>,
}

/// What came of `/msg`.
#[derive(Debug, PartialEq, Eq)]
pub enum Sent {
    /// Delivered live.
    Delivered,
    /// Stored for the (offline) account, shown as registered.
    Stored(String),
    /// The account exists but is offline, and history is off.
    NotOnline,
    NoSuchUser,
}

/// The shared state; see the module documentation.
#[derive(Debug)]
pub struct Hub {
    pub(super) config: HubConfig,
    pub(super) online: HashMap<String, Account>,
    /// Accounts whose state the store is reading for a login, by folded
    /// name: private messages that arrive meanwhile wait here.
    pub(super) loading: HashMap<String, (usize, Vec<Held>)>,
    pub(super) rooms: Slab<Room>,
    pub(super) by_name: BTreeMap<String, RoomId>,
    /// Every account: folded name to name as registered.
    pub(super) directory: HashMap<Box<str>, Box<str>>,
    /// Server operators, by folded name.
    pub(super) server_ops: HashSet<String>,
    pub(super) last_id: u64,
    /// Upload slots and quotas.
    pub uploads: Uploads,
}

pub(super) fn fold(name: &str) -> String {
    name.to_ascii_lowercase()
}

impl Hub {
    /// An empty server: the lobby, no rooms, no accounts.
    pub fn new(config: HubConfig) -> Hub {
        Hub::from_snapshot(config, &Snapshot::default())
    }

    /// Makes room for `n` users online at once (in the lobby's set of
    /// connections too), so that a storm of logins never waits for the
    /// tables to grow: a hash table doubles by moving every entry, and at
    /// 7,168 users online that held the loop for milliseconds. Only what is
    /// used is resident.
    pub fn reserve(&mut self, n: usize) {
        self.online.reserve(n.saturating_sub(self.online.len()));
        if let Some(lobby) = self.rooms.get_mut(LOBBY_ID.0) {
            lobby.conns.reserve(n);
        }
    }

    /// The state the store had at start.
    pub fn from_snapshot(config: HubConfig, snapshot: &Snapshot) -> Hub {
        let mut rooms = Slab::new();
        let lobby = snapshot
            .rooms
            .iter()
            .find(|r| r.name == LOBBY)
            .map_or_else(|| Room::new(LOBBY, None), Room::from_row);
        rooms.insert(lobby);
        let mut by_name = BTreeMap::new();
        for row in snapshot.rooms.iter().filter(|r| r.name != LOBBY) {
            let id = RoomId(rooms.insert(Room::from_row(row)));
            by_name.insert(row.name.clone(), id);
        }
        let directory = snapshot
            .accounts
            .iter()
            .map(|a| (fold(a).into_boxed_str(), a.as_str().into()))
            .collect();
        for row in &snapshot.sanctions {
            let room = if row.room == LOBBY {
                Some(LOBBY_ID)
            } else {
                by_name.get(&row.room).copied()
            };
            if let Some(room) = room.and_then(|r| rooms.get_mut(r.0)) {
                let sanction = super::rooms::Sanction {
                    until: row.until,
                    reason: row.reason.clone(),
                    by: row.by.clone(),
                };
                room.sanctions
                    .insert((fold(&row.account), row.kind), sanction);
            }
        }
        Hub {
            online: HashMap::new(),
            loading: HashMap::new(),
            rooms,
            by_name,
            directory,
            server_ops: snapshot.server_ops.iter().map(|n| fold(n)).collect(),
            last_id: snapshot.last_id,
            uploads: Uploads::new(config.files, &snapshot.file_usage),
            config,
        }
    }

    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    /// Accounts online.
    pub fn len(&self) -> usize {
        self.online.len()
    }

    pub fn is_empty(&self) -> bool {
        self.online.is_empty()
    }

    /// Whether `name` (any case) has a Chatting connection.
    pub fn is_online(&self, name: &str) -> bool {
        self.online.contains_key(&fold(name))
    }

    /// The connections a line to `room` goes to.
    pub fn room_conns(&self, room: RoomId) -> &[ConnId] {
        self.rooms.get(room.0).map_or(&[], |r| &r.conns.list)
    }

    /// A room by its typed name (`#rust`, already checked); `#lobby` is
    /// the lobby.
    pub fn find_room(&self, name: &str) -> Option<RoomId> {
        if name == LOBBY {
            return Some(LOBBY_ID);
        }
        self.by_name.get(name).copied()
    }

    pub fn room(&self, id: RoomId) -> Option<&Room> {
        self.rooms.get(id.0)
    }

    /// The connection's current room.
    pub fn current(&self, name: &str, id: ConnId) -> RoomId {
        self.online
            .get(&fold(name))
            .and_then(|a| a.conns.iter().find(|(c, _)| *c == id))
            .map_or(LOBBY_ID, |(_, r)| *r)
    }

    /// Whether the account is a member of `room` (everybody is of the lobby).
    pub fn is_member(&self, name: &str, room: RoomId) -> bool {
        room == LOBBY_ID
            || self
                .online
                .get(&fold(name))
                .is_some_and(|a| a.rooms.contains(&room))
    }

    /// Whether `name` has an account.
    pub fn account(&self, name: &str) -> Option<&str> {
        self.directory.get(fold(name).as_str()).map(|s| &**s)
    }

    /// A new account was stored.
    pub fn registered(&mut self, name: &str) {
        self.directory
            .insert(fold(name).into_boxed_str(), name.into());
    }

    /// Lines to a room are told past this many online only if not quiet.
    pub(super) fn quiet(&self, room: RoomId) -> bool {
        let online = self.rooms.get(room.0).map_or(0, |r| r.online.len());
        self.config.quiet_presence.is_some_and(|q| online > q)
    }

    /// Seconds since the epoch before which history has expired.
    pub(super) fn since(&self, wall: i64) -> i64 {
        self.config
            .history_days
            .map_or(i64::MIN, |d| wall - i64::from(d) * 86_400)
    }

    // ---- logging in and out ----

    /// A connection of `name` passed its password check and its state must
    /// be read before it enters (true), or it can enter at once (false:
    /// the account is online already and its state is here).
    pub fn needs_load(&mut self, name: &str) -> bool {
        let key = fold(name);
        if self.online.contains_key(&key) {
            return false;
        }
        self.loading.entry(key).or_default().0 += 1;
        true
    }

    /// A connection that was loading `name`'s state gave up (closed, or the
    /// read failed).
    pub fn load_abandoned(&mut self, name: &str) {
        let key = fold(name);
        if let Some((n, _)) = self.loading.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.loading.remove(&key);
            }
        }
    }

    /// Connection `id` of `shown` enters Chatting: the protocol's
    /// "Entering Chatting", in its order. `loaded` is what the store read
    /// for a login of an account that was offline; `None` for a second
    /// connection, and for a new account.
    pub fn enter(
        &mut self,
        id: ConnId,
        shown: &str,
        loaded: Option<AccountState>,
        wall: i64,
        out: &mut Vec<Action>,
    ) {
        let key = fold(shown);
        let first = !self.online.contains_key(&key);
        let held = if loaded.is_some() {
            self.load_finished(&key)
        } else {
            Vec::new()
        };
        // Another connection entered while this one's state was read: the
        // account has seen the rest, and this one gets the last few.
        let loaded = if first { loaded } else { None };
        let rooms = self.attach(id, shown, loaded.as_ref(), out);
        self.greet(&rooms, loaded.as_ref(), wall, out);
        self.hand_over(shown, loaded.as_ref(), held, out);
        if first && !self.quiet(LOBBY_ID) {
            out.push(Action::Notice {
                room: LOBBY_ID,
                except: Some(id),
                line: format!("* {shown} joined\n").into_bytes(),
            });
        }
    }

    /// Puts connection `id` online (the account too, with the rooms
    /// `loaded` lists, if this is its first) and in its rooms' fan-out,
    /// taking over the oldest connections past the limit. Returns the
    /// account's rooms.
    fn attach(
        &mut self,
        id: ConnId,
        shown: &str,
        loaded: Option<&AccountState>,
        out: &mut Vec<Action>,
    ) -> Vec<RoomId> {
        let key = fold(shown);
        if !self.online.contains_key(&key) {
            // Only rooms that still count it a member: a kick or ban
            // while the state was read has removed it since.
            let rooms: Vec<RoomId> = loaded
                .map(|s| {
                    s.rooms
                        .iter()
                        .filter_map(|(name, _)| self.by_name.get(name).copied())
                        .filter(|r| self.rooms[r.0].members.contains(&key))
                        .collect()
                })
                .unwrap_or_default();
            for &r in std::iter::once(&LOBBY_ID).chain(&rooms) {
                if let Some(room) = self.rooms.get_mut(r.0) {
                    room.online.insert(key.clone(), shown.to_owned());
                }
            }
            let account = Account {
                shown: shown.to_owned(),
                conns: Vec::new(),
                rooms,
            };
            self.online.insert(key.clone(), account);
        }
        let limit = self.config.sessions_per_account.max(1);
        let account = self.online.get_mut(&key).expect("inserted above");
        let mut kicked = Vec::new();
        while account.conns.len() >= limit {
            kicked.push(account.conns.remove(0).0);
        }
        account.conns.push((id, LOBBY_ID));
        let rooms = account.rooms.clone();
        for old in kicked {
            self.detach(old, &rooms);
            let line = b"! logged in from another connection\n".to_vec();
            out.push(Action::Kick(old, line));
        }
        for &r in std::iter::once(&LOBBY_ID).chain(&rooms) {
            if let Some(room) = self.rooms.get_mut(r.0) {
                room.conns.insert(id);
            }
        }
        rooms
    }

    /// The online line, then the lobby's history, then each room's online
    /// line, topic and history, by name: from where `loaded` says the
    /// account stopped, or the last few without it.
    fn greet(
        &self,
        rooms: &[RoomId],
        loaded: Option<&AccountState>,
        wall: i64,
        out: &mut Vec<Action>,
    ) {
        let seen_of = |room: &Room| -> Option<u64> {
            let state = loaded?;
            if room.is_lobby() {
                state.lobby_seen
            } else {
                state
                    .rooms
                    .iter()
                    .find(|(n, _)| *n == room.name)
                    .map(|(_, s)| *s)
            }
        };
        let lobby = &self.rooms[LOBBY_ID.0];
        out.push(Action::Send(lobby.online_line(ONLINE_LINE_NAMES)));
        self.catch_up(LOBBY_ID, seen_of(lobby), wall, out);
        let mut named = rooms.to_vec();
        named.sort_by(|a, b| self.rooms[a.0].name.cmp(&self.rooms[b.0].name));
        for r in named {
            let room = &self.rooms[r.0];
            out.push(Action::Send(room.online_line(ONLINE_LINE_NAMES)));
            if let Some(topic) = room.topic_line() {
                out.push(Action::Send(topic));
            }
            self.catch_up(r, seen_of(room), wall, out);
        }
    }

    /// The private messages that waited for the account: those the store
    /// read (with a count of older ones per sender), then those that came
    /// while it was read; then the store is told they were handed over.
    fn hand_over(
        &self,
        shown: &str,
        loaded: Option<&AccountState>,
        held: Vec<Held>,
        out: &mut Vec<Action>,
    ) {
        let mut delivered = None;
        if let Some(state) = loaded {
            // One line per sender of the older ones, so that each names
            // the `/history @user` that shows them.
            for (from, n) in &state.older_by {
                let line = format!("* {n} older private messages; /history @{from} shows them\n");
                out.push(Action::Send(line.into_bytes()));
            }
            if state.older_by.is_empty() && state.offline_older > 0 {
                let line = format!(
                    "* {} older private messages; /history @<user> shows them\n",
                    state.offline_older
                );
                out.push(Action::Send(line.into_bytes()));
            }
            for m in &state.offline {
                let mut line = format!("~{} ", super::text::utc(m.at)).into_bytes();
                line.extend_from_slice(&private_line(&m.sender, &m.text));
                out.push(Action::Send(line));
            }
            delivered = state.offline.iter().map(|m| m.id).max();
        }
        for h in held {
            delivered = delivered.max(h.id);
            out.push(Action::Send(h.line));
        }
        if let Some(up_to) = delivered {
            out.push(Action::Store(Op::Delivered {
                account: shown.to_owned(),
                up_to,
            }));
        }
    }

    /// The held private messages of a finished load.
    fn load_finished(&mut self, key: &str) -> Vec<Held> {
        match self.loading.get_mut(key) {
            Some((n, held)) => {
                let held = std::mem::take(held);
                *n -= 1;
                if *n == 0 {
                    self.loading.remove(key);
                }
                held
            }
            None => Vec::new(),
        }
    }

    /// Missed history of `room` for a connection entering: everything
    /// after `seen` (at most [`CATCH_UP`], with a notice if there was
    /// more), or the last [`FIRST_LOOK`] if `seen` is unknown.
    pub(super) fn catch_up(
        &self,
        room: RoomId,
        seen: Option<u64>,
        wall: i64,
        out: &mut Vec<Action>,
    ) {
        if !self.config.history {
            return;
        }
        let room = &self.rooms[room.0];
        let prefix = room.prefix();
        let since = self.since(wall);
        match seen {
            None => {
                for e in room.ring.last(FIRST_LOOK, since) {
                    out.push(Action::Send(e.history_line(prefix)));
                }
            }
            Some(seen) => {
                let missed = room.count.saturating_sub(seen);
                if missed > CATCH_UP as u64 {
                    out.push(Action::Send(
                        format!(
                            "{prefix}* {missed} messages since you left; the last {CATCH_UP} \
                             follow (/history for more)\n"
                        )
                        .into_bytes(),
                    ));
                }
                for e in room.ring.after(seen, CATCH_UP, since) {
                    out.push(Action::Send(e.history_line(prefix)));
                }
            }
        }
    }

    /// Takes connection `id` out of the lobby's and `rooms`' fan-out.
    fn detach(&mut self, id: ConnId, rooms: &[RoomId]) {
        for &r in std::iter::once(&LOBBY_ID).chain(rooms) {
            if let Some(room) = self.rooms.get_mut(r.0) {
                room.conns.remove(id);
            }
        }
    }

    /// Connection `id` of `shown` stops Chatting. When it was the
    /// account's last, the account goes offline (told in the lobby unless
    /// `silent`) and what it had seen is stored.
    pub fn leave(&mut self, id: ConnId, shown: &str, silent: bool, out: &mut Vec<Action>) {
        let key = fold(shown);
        let Some(account) = self.online.get_mut(&key) else {
            return;
        };
        let Some(pos) = account.conns.iter().position(|(c, _)| *c == id) else {
            // Taken over earlier: it left the fan-out then.
            return;
        };
        account.conns.remove(pos);
        let rooms = account.rooms.clone();
        let last = account.conns.is_empty();
        self.detach(id, &rooms);
        if !last {
            return;
        }
        let quiet = self.quiet(LOBBY_ID);
        let account = self.online.remove(&key).expect("found above");
        let mut seen = Vec::with_capacity(rooms.len() + 1);
        for &r in std::iter::once(&LOBBY_ID).chain(&rooms) {
            if let Some(room) = self.rooms.get_mut(r.0) {
                room.online.remove(&key);
                seen.push((room.name.clone(), room.count));
            }
        }
        out.push(Action::Store(Op::Seen {
            account: account.shown.clone(),
            seen,
        }));
        if !silent && !quiet {
            out.push(Action::Notice {
                room: LOBBY_ID,
                except: Some(id),
                line: format!("* {} left\n", account.shown).into_bytes(),
            });
        }
    }

    // ---- talking ----

    /// A public line (or `/me`) from connection `id` of `shown` to `room`.
    /// A line that starts like a file's announcement (`[file] `) is
    /// refused: only the server posts those, so that nobody can show a
    /// link as somebody's upload.
    pub fn say(
        &mut self,
        (id, shown): (ConnId, &str),
        room: RoomId,
        me: bool,
        text: &str,
        wall: i64,
        out: &mut Vec<Action>,
    ) {
        if !me && text.starts_with(super::uploads::RESERVED) {
            out.push(Action::Send(super::uploads::RESERVED_LINE.to_vec()));
            return;
        }
        if let Some(line) = self.muted_line(room, shown, wall) {
            out.push(Action::Send(line));
            return;
        }
        self.post((id, shown), room, me, text, wall, out);
    }

    /// A finished upload's announcement, from `shown` to `room` (every
    /// member online gets it, the uploader's connections too).
    pub fn announce_file(
        &mut self,
        shown: &str,
        room: RoomId,
        text: &str,
        wall: i64,
        out: &mut Vec<Action>,
    ) {
        let nobody = ConnId {
            key: usize::MAX,
            serial: u64::MAX,
        };
        self.post((nobody, shown), room, false, text, wall, out);
    }

    fn post(
        &mut self,
        (id, shown): (ConnId, &str),
        room: RoomId,
        me: bool,
        text: &str,
        wall: i64,
        out: &mut Vec<Action>,
    ) {
        let history = self.config.history;
        let Some(r) = self.rooms.get_mut(room.0) else {
            return;
        };
        out.push(Action::ToRoom {
            room,
            except: Some(id),
            line: format_line(r.prefix(), shown, me, text),
        });
        if !history {
            return;
        }
        self.last_id += 1;
        r.count += 1;
        let message = Message {
            id: self.last_id,
            room: Some(r.name.clone()),
            n: r.count,
            sender: shown.to_owned(),
            recipient: None,
            at: wall,
            me,
            text: text.to_owned(),
        };
        r.ring.push(Entry::from_message(&message));
        out.push(Action::Store(Op::Message {
            message,
            pending: false,
        }));
    }

    /// A private message from connection `id` of `shown` to `to` (any
    /// case). The sender's other connections see it as `-> @<to>: text`.
    pub fn private(
        &mut self,
        id: ConnId,
        shown: &str,
        to: &str,
        text: &str,
        wall: i64,
        out: &mut Vec<Action>,
    ) -> Sent {
        let key = fold(to);
        let line = private_line(shown, text);
        // A note to oneself comes back, as in version 1; otherwise the
        // sending connection gets nothing.
        let to_self = key == fold(shown);
        let (recipient, sent) = if let Some(account) = self.online.get(&key) {
            for (c, _) in &account.conns {
                if *c != id || to_self {
                    out.push(Action::SendTo(*c, line.clone()));
                }
            }
            (account.shown.clone(), Sent::Delivered)
        } else if let Some(name) = self.directory.get(key.as_str()).map(|s| s.to_string()) {
            if !self.config.history && !self.loading.contains_key(&key) {
                return Sent::NotOnline;
            }
            (name.clone(), Sent::Stored(name))
        } else {
            return Sent::NoSuchUser;
        };
        let mut stored_id = None;
        if self.config.history {
            self.last_id += 1;
            stored_id = Some(self.last_id);
            out.push(Action::Store(Op::Message {
                message: Message {
                    id: self.last_id,
                    room: None,
                    n: 0,
                    sender: shown.to_owned(),
                    recipient: Some(recipient.clone()),
                    at: wall,
                    me: false,
                    text: text.to_owned(),
                },
                pending: sent != Sent::Delivered,
            }));
        }
        // Logging in right now: handed over as it enters.
        let sent = match (sent, self.loading.get_mut(&key)) {
            (Sent::Stored(_), Some((_, held))) => {
                held.push(Held {
                    id: stored_id,
                    line: line.clone(),
                });
                Sent::Delivered
            }
            (sent, _) => sent,
        };
        if let Some(account) = self.online.get(&fold(shown)) {
            let echo = format!("-> @{recipient}: {text}\n").into_bytes();
            for (c, _) in &account.conns {
                if *c != id && !to_self {
                    out.push(Action::SendTo(*c, echo.clone()));
                }
            }
        }
        sent
    }
}

/// `@<from>: <text>` with its LF.
pub fn private_line(from: &str, text: &str) -> Vec<u8> {
    format!("@{from}: {text}\n").into_bytes()
}

/// A stored message as a history line for `viewer`: `~<time> ` and the
/// line as it was delivered to them.
pub fn stored_line(m: &Message, viewer: &str) -> Vec<u8> {
    let mut line = format!("~{} ", super::text::utc(m.at)).into_bytes();
    match (&m.room, &m.recipient) {
        (Some(room), _) => {
            let prefix = if room == LOBBY {
                String::new()
            } else {
                format!("#{room} ")
            };
            line.extend_from_slice(&format_line(&prefix, &m.sender, m.me, &m.text));
        }
        (None, Some(to)) if m.sender.eq_ignore_ascii_case(viewer) => {
            line.extend_from_slice(format!("-> @{to}: {}\n", m.text).as_bytes());
        }
        (None, _) => line.extend_from_slice(&private_line(&m.sender, &m.text)),
    }
    line
}
