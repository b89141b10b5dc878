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

use std::collections::{BTreeMap, HashMap};

use slab::Slab;

use super::history::{Entry, Ring, format_line};
use super::session::{Action, ConnId};
use crate::store::ops::{AccountState, LOBBY, Message, Op, RoomRow, Snapshot};

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
}

impl Default for HubConfig {
    fn default() -> Self {
        let config = crate::reactor::Config::default();
        config.hub
    }
}

/// A room's place in the hub.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomId(usize);

/// The lobby, always there.
pub const LOBBY_ID: RoomId = RoomId(0);

/// A set of connections with O(1) insert, remove and iteration.
#[derive(Debug, Default)]
struct ConnSet {
    list: Vec<ConnId>,
    at: HashMap<ConnId, usize>,
}

impl ConnSet {
    fn insert(&mut self, id: ConnId) {
        if let std::collections::hash_map::Entry::Vacant(slot) = self.at.entry(id) {
            slot.insert(self.list.len());
            self.list.push(id);
        }
    }

    fn remove(&mut self, id: ConnId) {
        let Some(i) = self.at.remove(&id) else {
            return;
        };
        self.list.swap_remove(i);
        if let Some(moved) = self.list.get(i) {
            self.at.insert(*moved, i);
        }
    }
}

/// One room (the lobby too).
#[derive(Debug)]
pub struct Room {
    /// Lowercase, without `#`; [`LOBBY`] for the lobby.
    name: String,
    owner: Option<String>,
    /// The topic and who set it.
    topic: Option<(String, String)>,
    /// Accounts that are members, online or not (unused for the lobby).
    members: u64,
    /// Online members, by folded name, as registered.
    online: BTreeMap<String, String>,
    conns: ConnSet,
    ring: Ring,
    /// The number of the newest message (never goes back).
    count: u64,
}

impl Room {
    fn new(name: &str, owner: Option<String>) -> Room {
        Room {
            name: name.to_owned(),
            owner,
            topic: None,
            members: 0,
            online: BTreeMap::new(),
            conns: ConnSet::default(),
            ring: Ring::default(),
            count: 0,
        }
    }

    fn from_row(row: &RoomRow) -> Room {
        let mut room = Room::new(&row.name, row.owner.clone());
        room.topic = row.topic.clone();
        room.members = row.members;
        room.count = row.count;
        for m in &row.recent {
            room.ring.push(Entry::from_message(m));
        }
        room
    }

    fn is_lobby(&self) -> bool {
        self.name == LOBBY
    }

    /// What its lines start with: nothing in the lobby, `#name ` elsewhere.
    fn prefix(&self) -> String {
        if self.is_lobby() {
            String::new()
        } else {
            format!("#{} ", self.name)
        }
    }

    /// `#name` (`#lobby` for the lobby).
    pub fn tag(&self) -> String {
        format!("#{}", self.name)
    }

    /// `[#room ]* online (N): a, b, ...`, at most `cap` names.
    fn online_line(&self, cap: usize) -> Vec<u8> {
        let mut line = format!("{}* online ({}): ", self.prefix(), self.online.len());
        for (i, shown) in self.online.values().take(cap).enumerate() {
            if i > 0 {
                line.push_str(", ");
            }
            line.push_str(shown);
        }
        if self.online.len() > cap {
            line.push_str(&format!(" and {} more", self.online.len() - cap));
        }
        line.push('\n');
        line.into_bytes()
    }

    fn topic_line(&self) -> Option<Vec<u8>> {
        let (topic, by) = self.topic.as_ref()?;
        Some(format!("{}* topic: {topic} (set by {by})\n", self.prefix()).into_bytes())
    }
}

/// An account with at least one Chatting connection.
#[derive(Debug)]
struct Account {
    shown: String,
    /// Its connections, oldest first, each with its current room.
    conns: Vec<(ConnId, RoomId)>,
    /// The rooms it is a member of (not the lobby).
    rooms: Vec<RoomId>,
}

/// A private message buffered for an account whose state is being read.
#[derive(Debug)]
struct Held {
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
    config: HubConfig,
    online: HashMap<String, Account>,
    /// Accounts whose state the store is reading for a login, by folded
    /// name: private messages that arrive meanwhile wait here.
    loading: HashMap<String, (usize, Vec<Held>)>,
    rooms: Slab<Room>,
    by_name: BTreeMap<String, RoomId>,
    /// Every account: folded name to name as registered.
    directory: HashMap<Box<str>, Box<str>>,
    last_id: u64,
}

fn fold(name: &str) -> String {
    name.to_ascii_lowercase()
}

impl Hub {
    /// An empty server: the lobby, no rooms, no accounts.
    pub fn new(config: HubConfig) -> Hub {
        Hub::from_snapshot(config, &Snapshot::default())
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
        Hub {
            config,
            online: HashMap::new(),
            loading: HashMap::new(),
            rooms,
            by_name,
            directory,
            last_id: snapshot.last_id,
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
    fn quiet(&self, room: RoomId) -> bool {
        let online = self.rooms.get(room.0).map_or(0, |r| r.online.len());
        self.config.quiet_presence.is_some_and(|q| online > q)
    }

    /// Seconds since the epoch before which history has expired.
    fn since(&self, wall: i64) -> i64 {
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
        if first {
            let state = loaded.as_ref();
            let rooms: Vec<RoomId> = state
                .map(|s| {
                    s.rooms
                        .iter()
                        .filter_map(|(name, _)| self.by_name.get(name).copied())
                        .collect()
                })
                .unwrap_or_default();
            for &r in std::iter::once(&LOBBY_ID).chain(&rooms) {
                if let Some(room) = self.rooms.get_mut(r.0) {
                    room.online.insert(key.clone(), shown.to_owned());
                }
            }
            self.online.insert(
                key.clone(),
                Account {
                    shown: shown.to_owned(),
                    conns: Vec::new(),
                    rooms,
                },
            );
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
            out.push(Action::Kick(
                old,
                b"! logged in from another connection\n".to_vec(),
            ));
        }
        for &r in std::iter::once(&LOBBY_ID).chain(&rooms) {
            if let Some(room) = self.rooms.get_mut(r.0) {
                room.conns.insert(id);
            }
        }

        let seen_of = |room: &Room| -> Option<u64> {
            let state = loaded.as_ref()?;
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
        let mut named: Vec<RoomId> = rooms;
        named.sort_by(|a, b| self.rooms[a.0].name.cmp(&self.rooms[b.0].name));
        for r in named {
            let room = &self.rooms[r.0];
            out.push(Action::Send(room.online_line(ONLINE_LINE_NAMES)));
            if let Some(topic) = room.topic_line() {
                out.push(Action::Send(topic));
            }
            let seen = seen_of(room);
            self.catch_up(r, seen, wall, out);
        }
        if let Some(state) = &loaded {
            if state.offline_older > 0 {
                out.push(Action::Send(
                    format!(
                        "* {} older private messages; /history @<user> shows them\n",
                        state.offline_older
                    )
                    .into_bytes(),
                ));
            }
            for m in &state.offline {
                let mut line = format!("~{} ", super::text::utc(m.at)).into_bytes();
                line.extend_from_slice(&private_line(&m.sender, &m.text));
                out.push(Action::Send(line));
            }
        }
        let mut delivered = loaded
            .as_ref()
            .and_then(|s| s.offline.iter().map(|m| m.id).max());
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
        if first && !self.quiet(LOBBY_ID) {
            out.push(Action::ToRoom {
                room: LOBBY_ID,
                except: Some(id),
                line: format!("* {shown} joined\n").into_bytes(),
            });
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
    fn catch_up(&self, room: RoomId, seen: Option<u64>, wall: i64, out: &mut Vec<Action>) {
        if !self.config.history {
            return;
        }
        let room = &self.rooms[room.0];
        let prefix = room.prefix();
        let since = self.since(wall);
        match seen {
            None => {
                for e in room.ring.last(FIRST_LOOK, since) {
                    out.push(Action::Send(e.history_line(&prefix)));
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
                    out.push(Action::Send(e.history_line(&prefix)));
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
            out.push(Action::ToRoom {
                room: LOBBY_ID,
                except: Some(id),
                line: format!("* {} left\n", account.shown).into_bytes(),
            });
        }
    }

    // ---- talking ----

    /// A public line (or `/me`) from connection `id` of `shown` to `room`.
    pub fn say(
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
        let prefix = r.prefix();
        out.push(Action::ToRoom {
            room,
            except: Some(id),
            line: format_line(&prefix, shown, me, text),
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

    // ---- rooms ----

    /// Makes `room` current for connection `id`.
    pub fn set_current(&mut self, shown: &str, id: ConnId, room: RoomId) {
        if let Some(account) = self.online.get_mut(&fold(shown))
            && let Some(slot) = account.conns.iter_mut().find(|(c, _)| *c == id)
        {
            slot.1 = room;
        }
    }

    /// `/join #name` (checked, lowercase, not the lobby) by connection `id`.
    pub fn join(
        &mut self,
        id: ConnId,
        shown: &str,
        name: &str,
        wall: i64,
        out: &mut Vec<Action>,
    ) -> Result<RoomId, String> {
        let key = fold(shown);
        let mut created = false;
        let room = match self.by_name.get(name) {
            Some(&r) => {
                if self.is_member(shown, r) {
                    self.set_current(shown, id, r);
                    return Ok(r);
                }
                r
            }
            None => {
                if self.by_name.len() >= self.config.max_rooms {
                    return Err(format!(
                        "! too many rooms (max {}): join an existing one",
                        self.config.max_rooms
                    ));
                }
                let owned = self
                    .by_name
                    .values()
                    .filter(|r| {
                        self.rooms[r.0]
                            .owner
                            .as_deref()
                            .is_some_and(|o| fold(o) == key)
                    })
                    .count();
                if owned >= self.config.max_owned {
                    return Err(format!(
                        "! you own too many rooms (max {})",
                        self.config.max_owned
                    ));
                }
                let r = RoomId(self.rooms.insert(Room::new(name, Some(shown.to_owned()))));
                self.by_name.insert(name.to_owned(), r);
                out.push(Action::Store(Op::CreateRoom {
                    name: name.to_owned(),
                    owner: shown.to_owned(),
                    at: wall,
                }));
                created = true;
                r
            }
        };
        let Some(account) = self.online.get_mut(&key) else {
            return Err("! you are not online".to_owned());
        };
        account.rooms.push(room);
        let conns: Vec<ConnId> = account.conns.iter().map(|(c, _)| *c).collect();
        let quiet = self.quiet(room);
        let r = &mut self.rooms[room.0];
        r.members += 1;
        r.online.insert(key, shown.to_owned());
        for c in &conns {
            r.conns.insert(*c);
        }
        let count = r.count;
        let name = r.name.clone();
        out.push(Action::Send(r.online_line(usize::MAX)));
        if let Some(topic) = r.topic_line() {
            out.push(Action::Send(topic));
        }
        self.catch_up(room, None, wall, out);
        // A new room's owner is stored as its member with it.
        if !created {
            out.push(Action::Store(Op::Join {
                room: name.clone(),
                account: shown.to_owned(),
                seen: count,
            }));
        }
        if !quiet {
            out.push(Action::ToRoom {
                room,
                except: Some(id),
                line: format!("#{name} * {shown} joined\n").into_bytes(),
            });
        }
        self.set_current(shown, id, room);
        Ok(room)
    }

    /// `/part` of `room` (not the lobby) by the account of `shown`.
    pub fn part(
        &mut self,
        id: ConnId,
        shown: &str,
        room: RoomId,
        out: &mut Vec<Action>,
    ) -> Result<(), String> {
        let key = fold(shown);
        let tag = self.rooms.get(room.0).map(Room::tag).unwrap_or_default();
        let Some(account) = self.online.get_mut(&key) else {
            return Err("! you are not online".to_owned());
        };
        let Some(pos) = account.rooms.iter().position(|r| *r == room) else {
            return Err(format!("! you are not in {tag}"));
        };
        account.rooms.swap_remove(pos);
        let conns: Vec<ConnId> = account.conns.iter().map(|(c, _)| *c).collect();
        // The lobby becomes current for the connection that left, and for
        // the account's others that were in the room.
        for slot in &mut account.conns {
            if slot.1 == room || slot.0 == id {
                slot.1 = LOBBY_ID;
            }
        }
        let quiet = self.quiet(room);
        let r = &mut self.rooms[room.0];
        r.online.remove(&key);
        for c in &conns {
            r.conns.remove(*c);
        }
        r.members = r.members.saturating_sub(1);
        let bye = format!("{tag} * bye\n").into_bytes();
        out.push(Action::Send(bye.clone()));
        for c in conns.iter().filter(|c| **c != id) {
            out.push(Action::SendTo(*c, bye.clone()));
        }
        let name = r.name.clone();
        if r.members == 0 {
            self.by_name.remove(&name);
            self.rooms.remove(room.0);
            out.push(Action::Store(Op::DeleteRoom { name }));
            return Ok(());
        }
        out.push(Action::Store(Op::Part {
            room: name,
            account: shown.to_owned(),
        }));
        if !quiet {
            out.push(Action::ToRoom {
                room,
                except: Some(id),
                line: format!("{tag} * {shown} left\n").into_bytes(),
            });
        }
        Ok(())
    }

    /// `* rooms (N): #lobby (12 online), #rust (3 online, 40 members)`.
    pub fn rooms_line(&self) -> Vec<u8> {
        let lobby = &self.rooms[LOBBY_ID.0];
        let mut line = format!(
            "* rooms ({}): #lobby ({} online)",
            self.by_name.len() + 1,
            lobby.online.len()
        );
        for r in self.by_name.values() {
            let room = &self.rooms[r.0];
            line.push_str(&format!(
                ", #{} ({} online, {} members)",
                room.name,
                room.online.len(),
                room.members
            ));
        }
        line.push('\n');
        line.into_bytes()
    }

    /// `/who` of a room: every online member.
    pub fn who_line(&self, room: RoomId) -> Vec<u8> {
        self.rooms
            .get(room.0)
            .map_or_else(Vec::new, |r| r.online_line(usize::MAX))
    }

    /// The topic line, or that there is none.
    pub fn topic_of(&self, room: RoomId) -> Vec<u8> {
        let Some(r) = self.rooms.get(room.0) else {
            return Vec::new();
        };
        r.topic_line()
            .unwrap_or_else(|| format!("{}* no topic\n", r.prefix()).into_bytes())
    }

    /// Whether `shown` may set `room`'s topic (its owner; the lobby has
    /// none: server operators come with moderation).
    pub fn may_set_topic(&self, room: RoomId, shown: &str) -> bool {
        r_owner_is(self, room, shown)
    }

    /// Sets `room`'s topic, told to the whole room.
    pub fn set_topic(&mut self, room: RoomId, shown: &str, text: &str, out: &mut Vec<Action>) {
        let Some(r) = self.rooms.get_mut(room.0) else {
            return;
        };
        r.topic = Some((text.to_owned(), shown.to_owned()));
        let line = r.topic_line().expect("just set");
        out.push(Action::ToRoom {
            room,
            except: None,
            line,
        });
        out.push(Action::Store(Op::Topic {
            room: r.name.clone(),
            topic: Some(text.to_owned()),
            by: shown.to_owned(),
        }));
    }

    /// The last `n` messages of `room` from the ring, if it holds them all
    /// (or all the room ever had).
    pub fn recent(&self, room: RoomId, n: usize, wall: i64) -> Option<Vec<Vec<u8>>> {
        let r = self.rooms.get(room.0)?;
        let complete = r.ring.len() as u64 >= r.count;
        if n > r.ring.len() && !complete {
            return None;
        }
        let prefix = r.prefix();
        Some(
            r.ring
                .last(n, self.since(wall))
                .map(|e| e.history_line(&prefix))
                .collect(),
        )
    }
}

/// Whether `shown` owns `room`.
fn r_owner_is(hub: &Hub, room: RoomId, shown: &str) -> bool {
    hub.rooms
        .get(room.0)
        .and_then(|r| r.owner.as_deref())
        .is_some_and(|o| o.eq_ignore_ascii_case(shown))
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
