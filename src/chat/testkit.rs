//! A world for the chat's unit tests: sessions routed the way the reactor
//! routes them, an account store, and the store thread played in memory
//! (it applies ops in order and answers loads and history reads), so that
//! every rule is a test without sockets or threads.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use super::hub::{Hub, HubConfig};
use super::session::{Action, AuthOutcome, AuthRequest, ConnId, Ctx, Session, SessionConfig};
use crate::store::ops::{AccountState, HistoryOf, LOBBY, Message, Op, Reply, TokenHash};
use crate::transport::lines::{InBuf, LineFrame, Lines};

/// The store thread, in memory: applies the ops in order, answers
/// loads and history reads.
#[derive(Default)]
pub(crate) struct FakeStore {
    /// account (folded) -> room -> seen; the lobby's row means "was online".
    pub seen: HashMap<String, BTreeMap<String, u64>>,
    pub messages: Vec<(Message, bool)>,
    pub ops: Vec<String>,
    /// Token hash -> (account as registered, expires at).
    pub tokens: HashMap<TokenHash, (String, i64)>,
}

impl FakeStore {
    pub(crate) fn apply(&mut self, op: Op) -> Option<(ConnId, Reply)> {
        self.ops.push(format!("{op:?}"));
        match op {
            Op::Message { message, pending } => self.messages.push((message, pending)),
            Op::CreateRoom { name, owner, .. } => {
                self.seen
                    .entry(owner.to_ascii_lowercase())
                    .or_default()
                    .insert(name, 0);
            }
            Op::DeleteRoom { name } => {
                for rooms in self.seen.values_mut() {
                    rooms.remove(&name);
                }
                self.messages
                    .retain(|(m, _)| m.room.as_deref() != Some(name.as_str()));
            }
            Op::Topic { .. }
            | Op::Operator { .. }
            | Op::Sanction { .. }
            | Op::Lift { .. }
            | Op::Forget { .. } => {}
            Op::RecordFile { conn, .. } => return Some((conn, Reply::FileRecorded(Ok(())))),
            Op::FindFile { conn, .. } => return Some((conn, Reply::File(Ok(None)))),
            Op::CreateToken {
                conn,
                account,
                hash,
                expires_at,
                ..
            } => {
                self.tokens.insert(hash, (account, expires_at));
                return Some((conn, Reply::TokenStored(Ok(()))));
            }
            Op::CheckToken { conn, hash, now } => {
                let found = self
                    .tokens
                    .get(&hash)
                    .filter(|(_, expires)| *expires > now)
                    .map(|(a, _)| a.clone());
                return Some((conn, Reply::TokenAccount(Ok(found))));
            }
            Op::RevokeToken { conn, hash } => {
                self.tokens.remove(&hash);
                return conn.map(|c| (c, Reply::Revoked(Ok(()))));
            }
            Op::RevokeTokens { conn, account } => {
                self.tokens
                    .retain(|_, (a, _)| !a.eq_ignore_ascii_case(&account));
                return conn.map(|c| (c, Reply::Revoked(Ok(()))));
            }
            Op::Join {
                room,
                account,
                seen,
            } => {
                self.seen
                    .entry(account.to_ascii_lowercase())
                    .or_default()
                    .insert(room, seen);
            }
            Op::Part { room, account } => {
                if let Some(rooms) = self.seen.get_mut(&account.to_ascii_lowercase()) {
                    rooms.remove(&room);
                }
            }
            Op::Seen { account, seen } => {
                let rooms = self.seen.entry(account.to_ascii_lowercase()).or_default();
                for (room, n) in seen {
                    if room == LOBBY || rooms.contains_key(&room) {
                        rooms.insert(room, n);
                    }
                }
            }
            Op::Load { conn, account } => {
                let key = account.to_ascii_lowercase();
                let rooms = self.seen.get(&key).cloned().unwrap_or_default();
                let mut pending: Vec<Message> = self
                    .messages
                    .iter()
                    .filter(|(m, p)| {
                        *p && m
                            .recipient
                            .as_deref()
                            .is_some_and(|r| r.eq_ignore_ascii_case(&account))
                    })
                    .map(|(m, _)| m.clone())
                    .collect();
                let older = pending.len().saturating_sub(200);
                let offline = pending.split_off(older);
                let mut by: BTreeMap<String, u64> = BTreeMap::new();
                for m in &pending {
                    *by.entry(m.sender.clone()).or_default() += 1;
                }
                let mut older_by: Vec<(String, u64)> = by.into_iter().collect();
                older_by.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                let state = AccountState {
                    lobby_seen: rooms.get(LOBBY).copied(),
                    rooms: rooms.into_iter().filter(|(r, _)| r != LOBBY).collect(),
                    offline,
                    offline_older: older as u64,
                    older_by,
                };
                return Some((conn, Reply::Loaded(Ok(state))));
            }
            Op::Delivered { account, up_to } => {
                for (m, p) in &mut self.messages {
                    if m.id <= up_to
                        && m.recipient
                            .as_deref()
                            .is_some_and(|r| r.eq_ignore_ascii_case(&account))
                    {
                        *p = false;
                    }
                }
            }
            Op::History {
                conn,
                account,
                of,
                limit,
                ..
            } => {
                let mut found: Vec<Message> = self
                    .messages
                    .iter()
                    .map(|(m, _)| m)
                    .filter(|m| match &of {
                        HistoryOf::Room(r) => m.room.as_deref() == Some(r.as_str()),
                        HistoryOf::Private(other) => {
                            let is = |a: &Option<String>, b: &str| {
                                a.as_deref().is_some_and(|a| a.eq_ignore_ascii_case(b))
                            };
                            m.room.is_none()
                                && ((m.sender.eq_ignore_ascii_case(&account)
                                    && is(&m.recipient, other))
                                    || (m.sender.eq_ignore_ascii_case(other)
                                        && is(&m.recipient, &account)))
                        }
                    })
                    .cloned()
                    .collect();
                let skip = found.len().saturating_sub(limit);
                found.drain(..skip);
                return Some((conn, Reply::History(Ok(found))));
            }
        }
        None
    }
}

pub(crate) fn hub_config() -> HubConfig {
    HubConfig {
        history: true,
        history_days: None,
        max_rooms: 1000,
        max_owned: 10,
        quiet_presence: Some(500),
        sessions_per_account: 4,
        token_days: 30,
        files: crate::chat::uploads::FileLimits::default(),
    }
}

/// Routes actions the way the reactor does, with a fake account store,
/// so that protocol rules can be checked without sockets or threads.
pub(crate) struct World {
    pub now: Instant,
    pub wall: i64,
    pub config: SessionConfig,
    pub hub: Hub,
    pub store: FakeStore,
    /// Store answers not yet handed back (see `settle`).
    pub replies: Vec<(ConnId, Reply)>,
    /// Hand store answers back at once (the default).
    pub eager: bool,
    pub sessions: Vec<Session>,
    /// Output per session, as text.
    pub out: Vec<String>,
    pub closed: Vec<bool>,
    /// Auth requests waiting for `answer`, per session.
    pub asked: Vec<Option<AuthRequest>>,
    pub accounts: HashMap<String, (String, String)>,
    /// Each session's line framing, as the transport runs it.
    pub framing: Vec<(InBuf, Lines)>,
}

impl World {
    pub(crate) fn new() -> World {
        World::with(SessionConfig {
            max_line: 4096,
            rate: None,
            rate_bytes: None,
        })
    }

    pub fn with(config: SessionConfig) -> World {
        World::with_hub(config, hub_config())
    }

    pub fn with_hub(config: SessionConfig, hub: HubConfig) -> World {
        World {
            now: Instant::now(),
            wall: 1_796_121_485,
            config,
            hub: Hub::new(hub),
            store: FakeStore::default(),
            replies: Vec::new(),
            eager: true,
            sessions: Vec::new(),
            out: Vec::new(),
            closed: Vec::new(),
            asked: Vec::new(),
            accounts: HashMap::new(),
            framing: Vec::new(),
        }
    }

    pub(crate) fn account(&mut self, name: &str, password: &str) {
        self.hub.registered(name);
        self.accounts.insert(
            name.to_ascii_lowercase(),
            (name.to_owned(), password.to_owned()),
        );
    }

    /// Runs `f` on session `i` and routes what it asked for.
    pub(crate) fn on(&mut self, i: usize, f: impl FnOnce(&mut Session, &mut Ctx<'_>)) {
        let mut actions = Vec::new();
        let mut ctx = Ctx {
            now: self.now,
            wall: self.wall,
            config: &self.config,
            hub: &mut self.hub,
            actions: &mut actions,
        };
        f(&mut self.sessions[i], &mut ctx);
        self.route(i, actions);
        if self.eager {
            self.settle();
        }
    }

    /// Hands every store answer back to its session.
    pub fn settle(&mut self) {
        while !self.replies.is_empty() {
            let (id, reply) = self.replies.remove(0);
            if self.closed[id.key] {
                continue;
            }
            self.on(id.key, |s, ctx| s.handle_store_reply(reply, ctx));
            self.pump(id.key);
        }
    }

    pub(crate) fn route(&mut self, from: usize, actions: Vec<Action>) {
        let text = |b: Vec<u8>| String::from_utf8(b).expect("server output is UTF-8");
        for action in actions {
            match action {
                Action::Send(b) => self.out[from].push_str(&text(b)),
                Action::ToRoom { room, except, line } | Action::Notice { room, except, line } => {
                    let line = text(line);
                    for id in self.hub.room_conns(room).to_vec() {
                        if Some(id) != except
                            && !self.closed[id.key]
                            && self.sessions[id.key].is_chatting()
                        {
                            self.out[id.key].push_str(&line);
                        }
                    }
                }
                Action::Store(op) => {
                    if let Some(reply) = self.store.apply(op) {
                        self.replies.push(reply);
                    }
                }
                Action::SendTo(id, b) => self.out[id.key].push_str(&text(b)),
                Action::Kick(id, b) => {
                    self.out[id.key].push_str(&text(b));
                    self.close(id.key);
                }
                Action::Auth(req) => {
                    assert!(self.asked[from].is_none(), "two auth jobs at once");
                    self.asked[from] = Some(req);
                }
                Action::Close(_) => self.close(from),
                Action::Upload { slot } => {
                    let line = format!("* upload https://chat.test/files/{slot}\n");
                    self.out[from].push_str(&line);
                }
            }
        }
    }

    pub(crate) fn close(&mut self, i: usize) {
        if !self.closed[i] {
            self.closed[i] = true;
            self.on(i, |s, ctx| s.handle_closed(ctx));
        }
    }

    pub(crate) fn connect(&mut self) -> usize {
        let i = self.sessions.len();
        let id = ConnId {
            key: i,
            serial: i as u64 + 100,
        };
        self.sessions.push(Session::new(id, self.now, &self.config));
        self.out.push(String::new());
        self.closed.push(false);
        self.asked.push(None);
        self.framing.push((InBuf::default(), Lines::new()));
        self.on(i, |s, ctx| s.start(ctx));
        i
    }

    pub(crate) fn send(&mut self, i: usize, bytes: &[u8]) {
        self.framing[i].0.push(bytes);
        self.pump(i);
    }

    /// The peer finished sending.
    pub(crate) fn eof(&mut self, i: usize) {
        self.framing[i].1.set_eof();
        self.pump(i);
    }

    /// Hands session `i` its buffered lines while it wants them, the
    /// way the reactor does.
    pub(crate) fn pump(&mut self, i: usize) {
        while !self.closed[i] && self.sessions[i].wants_input() {
            let (input, lines) = &mut self.framing[i];
            let frame = match lines.next(input, self.config.max_line) {
                None => return,
                Some(LineFrame::Line(l)) => Some(l.to_vec()),
                Some(LineFrame::TooLong) => None,
                Some(LineFrame::End) => {
                    self.on(i, |s, ctx| s.handle_eof(ctx));
                    return;
                }
            };
            match frame {
                Some(line) => self.on(i, |s, ctx| s.handle_line(&line, ctx)),
                None => self.on(i, |s, ctx| s.handle_too_long(ctx)),
            }
        }
    }

    /// Answers session `i`'s pending auth job from the fake store.
    pub(crate) fn answer(&mut self, i: usize) {
        let req = self.asked[i].take().expect("an auth job is pending");
        let outcome = match req {
            AuthRequest::Register { name, password } => {
                use std::collections::hash_map::Entry;
                match self.accounts.entry(name.to_ascii_lowercase()) {
                    Entry::Occupied(_) => AuthOutcome::NameTaken,
                    Entry::Vacant(slot) => {
                        slot.insert((name.clone(), password));
                        AuthOutcome::Registered(name)
                    }
                }
            }
            AuthRequest::Login { name, password } => {
                match self.accounts.get(&name.to_ascii_lowercase()) {
                    Some((shown, pw)) if *pw == password => AuthOutcome::LoggedIn(shown.clone()),
                    _ => AuthOutcome::WrongCredentials,
                }
            }
            AuthRequest::ChangePassword { name, current, new } => {
                match self.accounts.get_mut(&name.to_ascii_lowercase()) {
                    Some((shown, pw)) if *pw == current => {
                        *pw = new;
                        let shown = shown.clone();
                        self.store
                            .tokens
                            .retain(|_, (a, _)| !a.eq_ignore_ascii_case(&shown));
                        AuthOutcome::PasswordChanged
                    }
                    _ => AuthOutcome::WrongCredentials,
                }
            }
        };
        self.on(i, |s, ctx| s.handle_auth_result(outcome, ctx));
        // Input held during the check comes next.
        self.pump(i);
    }

    /// Output of session `i` since the last call.
    pub(crate) fn take(&mut self, i: usize) -> String {
        std::mem::take(&mut self.out[i])
    }

    /// Connects and registers `name`, discarding the handshake output.
    pub(crate) fn chatter(&mut self, name: &str) -> usize {
        let i = self.connect();
        self.send(i, format!("R\n{name}\npassword-{name}\n").as_bytes());
        self.answer(i);
        assert!(self.sessions[i].is_chatting(), "{}", self.out[i]);
        self.take(i);
        i
    }
}
