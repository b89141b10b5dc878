//! The per-connection protocol state machine, with no I/O.
//!
//! A [`Session`] owns everything one connection means to the protocol: its
//! state (AwaitingChoice -> Credentials -> Chatting), the flood-control
//! bucket and the count of failed logins. It sees only lines: framing, TLS
//! and WebSocket belong to `transport`, which hands it one line at a time
//! while [`Session::wants_input`] says so (so input that arrives during a
//! password check waits there, in order). It never touches a socket, a
//! thread or the system clock: the reactor feeds it lines, auth results and
//! the current time, and it answers by pushing [`Action`]s into a
//! caller-owned vector. Every protocol rule is therefore a plain unit test
//! (see the bottom of this file).
//!
//! Calling order: [`Session::new`], then [`Session::start`] once the
//! transport has decided the client speaks the line protocol; then any of
//! the `handle_*` methods; [`Session::handle_closed`] exactly once at the
//! end.
//!
//! Commands of the Chatting state are a table in [`super::commands`]; the
//! rules of text (forbidden characters, names) are in [`super::text`].
//!
//! The only shared state a session sees is the [`Hub`]: who is online,
//! the rooms and their history. Delivering what it asks for (a line to a
//! room, a private message, closing a taken-over connection) is the
//! reactor's job, and storing it the store thread's.

use std::time::{Duration, Instant};

use super::commands::{self, Call, Then};
use super::hub::{Hub, RoomId, stored_line};
use super::text::{first_word, is_blank};
pub use super::text::{is_forbidden, valid_name};
use super::token;
use crate::store::ops::{Op, Reply, TokenHash};

/// Identifies one connection for its whole life: the slab key it occupies and
/// a serial that is never reused, so a late message for a closed connection
/// cannot reach the stranger who got its slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    pub key: usize,
    pub serial: u64,
}

/// Protocol settings shared by every session.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// Longest accepted line in bytes, not counting LF and one CR before it.
    pub max_line: usize,
    /// Sustained lines per second while Chatting (burst twice that); `None`
    /// turns flood control off, the byte bucket included.
    pub rate: Option<u32>,
    /// Sustained bytes per second of lines while Chatting (burst
    /// [`SessionConfig::byte_burst`]); `None` turns this bucket off.
    pub rate_bytes: Option<u32>,
}

/// Seconds of `rate_bytes` the byte bucket holds when full.
const BYTE_BURST_SECS: f64 = 4.0;

impl SessionConfig {
    /// What the byte bucket holds when full: four seconds' worth, and never
    /// less than one line of the longest length, so that every line the
    /// framing lets through can pass the bucket too.
    pub fn byte_burst(&self) -> Option<f64> {
        let rate = self.rate_bytes?;
        Some((f64::from(rate) * BYTE_BURST_SECS).max(self.max_line as f64))
    }
}

impl Default for SessionConfig {
    /// The flags' defaults (see `config`).
    fn default() -> Self {
        let config = crate::reactor::Config::default();
        SessionConfig {
            max_line: config.max_line,
            rate: config.rate,
            rate_bytes: config.rate_bytes,
        }
    }
}

/// What a session asks its driver to do. Lines are complete, LF included.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Send bytes to this connection.
    Send(Vec<u8>),
    /// Send a line to every connection in a room (the lobby is every
    /// Chatting connection) but `except`.
    ToRoom {
        room: RoomId,
        except: Option<ConnId>,
        line: Vec<u8>,
    },
    /// Like [`Action::ToRoom`], for a line nobody is waiting on (who
    /// joined, who left): it may be written a little later, so that a storm
    /// of logins telling hundreds each never holds up the conversation.
    /// Order is kept: a connection's lines go out as they were queued.
    Notice {
        room: RoomId,
        except: Option<ConnId>,
        line: Vec<u8>,
    },
    /// Send a line to one other connection (a private message).
    SendTo(ConnId, Vec<u8>),
    /// Send a last line to another connection and close it without a left
    /// notice: its account was taken over by this connection.
    Kick(ConnId, Vec<u8>),
    /// Check or create an account. The session reads no more input until
    /// [`Session::handle_auth_result`] is called.
    Auth(AuthRequest),
    /// Hand this to the store thread. For [`Op::Load`] and
    /// [`Op::History`], the session reads no more input until
    /// [`Session::handle_store_reply`] is called.
    Store(Op),
    /// Close this connection once its pending output is written; the
    /// reason is for the log.
    Close(&'static str),
    /// `/upload` got this slot: tell the connection its URL (the driver
    /// knows the address the client reaches the server at).
    Upload { slot: String },
}

/// An account operation, carried out off the event loop by `auth.rs`.
#[derive(PartialEq, Eq)]
pub enum AuthRequest {
    Register {
        name: String,
        password: String,
    },
    Login {
        name: String,
        password: String,
    },
    /// `/passwd`: `current` must match before `new` replaces it (and every
    /// token of the account is revoked).
    ChangePassword {
        name: String,
        current: String,
        new: String,
    },
}

// Never print a password, not even in a debug log.
impl std::fmt::Debug for AuthRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthRequest::Register { name, .. } => write!(f, "Register({name:?})"),
            AuthRequest::Login { name, .. } => write!(f, "Login({name:?})"),
            AuthRequest::ChangePassword { name, .. } => write!(f, "ChangePassword({name:?})"),
        }
    }
}

/// The answer to an [`AuthRequest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthOutcome {
    /// The account was stored on disk under this (display) name.
    Registered(String),
    /// The password matched; the name as it was registered.
    LoggedIn(String),
    /// Registration found the name already in use.
    NameTaken,
    /// `/passwd`: the new hash is stored and the account's tokens revoked.
    PasswordChanged,
    /// Unknown user or wrong password: deliberately indistinguishable.
    WrongCredentials,
    /// The database or a worker failed; the user may try again.
    Unavailable,
    /// Refused without a job: the password-check queue is full.
    Busy,
    /// Refused without a bcrypt: too many failed logins for this account or
    /// from this address lately. Counts as a failure on this connection.
    TooManyAttempts { retry_secs: u64 },
    /// Refused without a job: this address registered too many accounts.
    TooManyRegistrations,
}

/// Everything a session handler needs besides the session itself.
pub struct Ctx<'a> {
    pub now: Instant,
    /// Unix seconds (for the times of messages).
    pub wall: i64,
    pub config: &'a SessionConfig,
    pub hub: &'a mut Hub,
    pub actions: &'a mut Vec<Action>,
}

impl Ctx<'_> {
    /// Queues `line` (without its LF) for this connection.
    pub fn send(&mut self, line: &str) {
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        self.actions.push(Action::Send(bytes));
    }
}

const CHOICE_PROMPT: &str = "? choice Sign up (R) or Login (L)";
const BAD_TOKEN: &str = "! invalid or expired token";
const MAX_LOGIN_FAILURES: u8 = 3;
const MIN_PASSWORD: usize = 8;
/// bcrypt uses at most 72 bytes; longer passwords are refused, never cut.
pub const MAX_PASSWORD: usize = 72;
const SLOW_DOWN_EVERY: Duration = Duration::from_secs(1);
/// Unreadable lines (invalid UTF-8, control characters, too long) in a row
/// a connection may send before it is Chatting. Each gets its error and the
/// prompt again, as the protocol says, but a binary stream (a port scanner,
/// a TLS or SSH client, `cat /dev/urandom`) is closed after this many
/// instead of being answered line by line until the login timeout. High
/// enough for any person, and for a test walking every forbidden character.
const MAX_JUNK_LINES: u16 = 100;

#[derive(Debug)]
enum State {
    /// Accepted, not greeted: the transport has not decided what the
    /// client speaks (or it speaks HTTP and never will be greeted).
    NotStarted,
    AwaitingChoice,
    Username {
        register: bool,
    },
    Password {
        register: bool,
        name: String,
    },
    /// An auth job is out; input waits in the transport.
    Authenticating,
    /// `T`: waiting for the token line.
    Token,
    /// The store thread is looking the token up.
    CheckingToken {
        hash: TokenHash,
    },
    /// The password matched; the store is reading the account's rooms,
    /// what it had seen and its offline messages.
    Loading {
        name: String,
    },
    Chatting {
        name: String,
    },
    /// Nothing more is read or sent.
    Done,
}

/// Where a `/passwd` is.
#[derive(PartialEq, Eq)]
enum Passwd {
    Off,
    /// `? password current` was sent.
    Current,
    /// `? password new` was sent.
    New {
        current: String,
    },
    /// The auth job is out; input waits.
    Checking,
}

/// A token waiting to be shown: never printed, not even in a debug log.
struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<secret>")
    }
}

// Never print a password, not even in a debug log.
impl std::fmt::Debug for Passwd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Passwd::Off => "Off",
            Passwd::Current => "Current",
            Passwd::New { .. } => "New",
            Passwd::Checking => "Checking",
        })
    }
}

/// Flood control: a token bucket refilled continuously.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn full(capacity: f64, now: Instant) -> Bucket {
        Bucket {
            tokens: capacity,
            last: now,
        }
    }

    /// Adds what `rate` a second gave since the last call, up to `capacity`.
    fn refill(&mut self, now: Instant, rate: f64, capacity: f64) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * rate).min(capacity);
    }
}

/// One connection's protocol state. See the module documentation.
#[derive(Debug)]
pub struct Session {
    id: ConnId,
    state: State,
    /// This session asked to be closed: it reads nothing more.
    closed: bool,
    failures: u8,
    /// Lines (`--rate`).
    bucket: Bucket,
    /// Bytes of lines (`--rate-bytes`).
    byte_bucket: Bucket,
    last_slow_down: Option<Instant>,
    /// Lines in a row discarded as unreadable (invalid UTF-8, control
    /// characters, too long) before Chatting: a binary stream is cut short.
    junk_lines: u16,
    /// A read of the store (`/history`, `/token`) is out, or a `/passwd`
    /// check: input waits until it is answered.
    waiting: bool,
    /// The token this connection logged in with (`/logout` revokes it).
    token: Option<TokenHash>,
    /// A token `/token` made, shown once the store has it.
    new_token: Option<Secret>,
    passwd: Passwd,
    /// A `/logout` (`Some(true)`: all) waits for its revocation.
    logout: Option<bool>,
}

impl Session {
    /// A new connection, silent until [`Session::start`].
    pub fn new(id: ConnId, now: Instant, config: &SessionConfig) -> Session {
        let burst = config.rate.map_or(0.0, |r| 2.0 * f64::from(r));
        Session {
            id,
            state: State::NotStarted,
            closed: false,
            failures: 0,
            bucket: Bucket::full(burst, now),
            byte_bucket: Bucket::full(config.byte_burst().unwrap_or(0.0), now),
            last_slow_down: None,
            junk_lines: 0,
            waiting: false,
            token: None,
            new_token: None,
            passwd: Passwd::Off,
            logout: None,
        }
    }

    /// The client speaks the line protocol: pushes the welcome line and the
    /// first prompt.
    pub fn start(&mut self, ctx: &mut Ctx<'_>) {
        if !matches!(self.state, State::NotStarted) {
            return;
        }
        self.state = State::AwaitingChoice;
        let welcome = format!("* welcome to NeoChat ({} online)", ctx.hub.len());
        ctx.send(&welcome);
        ctx.send(CHOICE_PROMPT);
    }

    pub fn id(&self) -> ConnId {
        self.id
    }

    /// The user's name once Chatting.
    pub fn name(&self) -> Option<&str> {
        match &self.state {
            State::Chatting { name } => Some(name),
            _ => None,
        }
    }

    /// Whether the welcome was sent: the client speaks lines now.
    pub fn is_started(&self) -> bool {
        !matches!(self.state, State::NotStarted)
    }

    pub fn is_chatting(&self) -> bool {
        matches!(self.state, State::Chatting { .. })
    }

    /// Whether the driver should hand this session more lines. False
    /// before it started, while an auth job is out (input waits, in order,
    /// for afterwards) and once the session is over.
    pub fn wants_input(&self) -> bool {
        !matches!(
            self.state,
            State::NotStarted
                | State::Authenticating
                | State::CheckingToken { .. }
                | State::Loading { .. }
                | State::Done
        ) && !self.closed
            && !self.waiting
    }

    /// Counts a line discarded as unreadable before Chatting; after too
    /// many, the peer is not a person at a terminal. True if the session
    /// ended.
    fn junk_line(&mut self, ctx: &mut Ctx<'_>) -> bool {
        if self.is_chatting() {
            return false;
        }
        self.junk_lines += 1;
        if self.junk_lines < MAX_JUNK_LINES {
            return false;
        }
        ctx.send("! too much invalid input");
        self.end("too much invalid input", ctx);
        true
    }

    /// The peer closed its sending side and every line it sent was
    /// handled: the connection closes once its output is written.
    pub fn handle_eof(&mut self, ctx: &mut Ctx<'_>) {
        if self.closed || matches!(self.state, State::Done) {
            return;
        }
        self.end("end of input", ctx);
    }

    /// The answer to the [`Action::Auth`] this session asked for.
    pub fn handle_auth_result(&mut self, outcome: AuthOutcome, ctx: &mut Ctx<'_>) {
        if self.passwd == Passwd::Checking && self.is_chatting() {
            self.passwd_result(outcome, ctx);
            return;
        }
        if !matches!(self.state, State::Authenticating) {
            return;
        }
        match outcome {
            AuthOutcome::Registered(name) => {
                ctx.hub.registered(&name);
                ctx.send(&format!("* registered and logged in as {name}"));
                self.enter_chat(name, None, ctx);
            }
            AuthOutcome::LoggedIn(name) => self.logged_in(name, ctx),
            AuthOutcome::PasswordChanged => self.ask_choice(ctx),
            AuthOutcome::NameTaken => {
                ctx.send("! username taken");
                self.ask_choice(ctx);
            }
            AuthOutcome::Unavailable => {
                ctx.send("! service temporarily unavailable, try again");
                self.ask_choice(ctx);
            }
            AuthOutcome::Busy => {
                ctx.send("! server busy, try again");
                self.ask_choice(ctx);
            }
            AuthOutcome::TooManyRegistrations => {
                ctx.send("! too many registrations, try again later");
                self.ask_choice(ctx);
            }
            AuthOutcome::WrongCredentials => {
                ctx.send("! wrong username or password");
                self.login_failed(ctx);
            }
            AuthOutcome::TooManyAttempts { retry_secs } => {
                ctx.send(&format!("! too many attempts, try again in {retry_secs} s"));
                self.login_failed(ctx);
            }
        }
    }

    /// The password or the token matched `name`: a banned account is
    /// refused; else the account's state is read (if it is not online
    /// already) and it enters.
    fn logged_in(&mut self, name: String, ctx: &mut Ctx<'_>) {
        if let Some(line) = ctx.hub.barred(&name, ctx.wall) {
            ctx.send(&line);
            self.end("banned", ctx);
            return;
        }
        if ctx.hub.needs_load(&name) {
            ctx.actions.push(Action::Store(Op::Load {
                conn: self.id,
                account: name.clone(),
            }));
            self.state = State::Loading { name };
        } else {
            ctx.send(&format!("* logged in as {name}"));
            self.enter_chat(name, None, ctx);
        }
    }

    /// The answer to `/passwd`'s check.
    fn passwd_result(&mut self, outcome: AuthOutcome, ctx: &mut Ctx<'_>) {
        self.passwd = Passwd::Off;
        self.waiting = false;
        let name = self.name().unwrap_or_default().to_owned();
        match outcome {
            AuthOutcome::PasswordChanged => {
                self.token = None;
                ctx.send("* password changed");
                let line = b"* password changed from another connection\n";
                ctx.hub
                    .close_conns(&name, Some(self.id), line, false, ctx.actions);
                // The change revoked every token; one a `/token` stored
                // since goes too.
                ctx.actions.push(Action::Store(Op::RevokeTokens {
                    conn: None,
                    account: name,
                }));
            }
            AuthOutcome::WrongCredentials => {
                ctx.send("! wrong password");
                self.passwd_failed(ctx);
            }
            AuthOutcome::TooManyAttempts { retry_secs } => {
                ctx.send(&format!("! too many attempts, try again in {retry_secs} s"));
                self.passwd_failed(ctx);
            }
            _ => ctx.send("! service temporarily unavailable, try again"),
        }
    }

    /// A wrong current password is a failed login: the third ends the
    /// connection.
    fn passwd_failed(&mut self, ctx: &mut Ctx<'_>) {
        self.failures += 1;
        if self.failures >= MAX_LOGIN_FAILURES {
            ctx.send("! too many failed attempts");
            self.end("too many failed logins", ctx);
        }
    }

    /// The answer to an [`Action::Store`] read this session asked for.
    pub fn handle_store_reply(&mut self, reply: Reply, ctx: &mut Ctx<'_>) {
        match (reply, std::mem::replace(&mut self.state, State::Done)) {
            (Reply::TokenAccount(found), State::CheckingToken { hash }) => match found {
                Ok(Some(name)) => {
                    self.token = Some(hash);
                    self.logged_in(name, ctx);
                }
                Ok(None) => {
                    ctx.send(BAD_TOKEN);
                    self.login_failed(ctx);
                }
                Err(e) => {
                    log::warn!("conn {}: checking a token: {e}", self.id.key);
                    ctx.send("! service temporarily unavailable, try again");
                    self.ask_choice(ctx);
                }
            },
            (Reply::Revoked(done), State::Chatting { name }) => {
                self.state = State::Chatting { name: name.clone() };
                self.waiting = false;
                let Some(all) = self.logout.take() else {
                    return;
                };
                if let Err(e) = done {
                    log::warn!("conn {}: revoking tokens: {e}", self.id.key);
                    ctx.send("! service temporarily unavailable, try again");
                    return;
                }
                if all {
                    let line = b"* logged out from another connection\n";
                    ctx.hub
                        .close_conns(&name, Some(self.id), line, false, ctx.actions);
                } else {
                    self.token = None;
                }
                ctx.send("* bye");
                self.end("logout", ctx);
            }
            (Reply::TokenThrottled { retry_secs }, State::CheckingToken { .. }) => {
                ctx.send(&format!("! too many attempts, try again in {retry_secs} s"));
                self.login_failed(ctx);
            }
            (Reply::TokenStored(stored), state @ State::Chatting { .. }) => {
                self.state = state;
                self.waiting = false;
                let Some(Secret(token)) = self.new_token.take() else {
                    return;
                };
                match stored {
                    Ok(()) => ctx.send(&format!("* token {token}")),
                    Err(e) => {
                        log::warn!("conn {}: storing a token: {e}", self.id.key);
                        ctx.send("! service temporarily unavailable, try again");
                    }
                }
            }
            (Reply::Loaded(loaded), State::Loading { name }) => match loaded {
                Ok(state) => {
                    // Banned (or deleted) while the state was read?
                    if let Some(line) = ctx.hub.barred(&name, ctx.wall) {
                        ctx.hub.load_abandoned(&name);
                        ctx.send(&line);
                        self.end("banned", ctx);
                        return;
                    }
                    ctx.send(&format!("* logged in as {name}"));
                    self.enter_chat(name, Some(state), ctx);
                }
                Err(e) => {
                    log::warn!("conn {}: reading the state of {name}: {e}", self.id.key);
                    ctx.hub.load_abandoned(&name);
                    ctx.send("! service temporarily unavailable, try again");
                    self.ask_choice(ctx);
                }
            },
            (Reply::History(found), state @ State::Chatting { .. }) => {
                self.state = state;
                if !self.waiting {
                    return;
                }
                self.waiting = false;
                let viewer = self.name().unwrap_or_default().to_owned();
                match found {
                    Ok(messages) => {
                        for m in &messages {
                            ctx.actions.push(Action::Send(stored_line(m, &viewer)));
                        }
                        ctx.send("* end of history");
                    }
                    Err(e) => {
                        log::warn!("conn {}: reading history: {e}", self.id.key);
                        ctx.send("! history is unavailable right now, try again");
                    }
                }
            }
            (_, state) => self.state = state,
        }
    }

    /// A login attempt failed (or was refused as one of too many): the
    /// third on this connection ends it.
    fn login_failed(&mut self, ctx: &mut Ctx<'_>) {
        self.failures += 1;
        if self.failures >= MAX_LOGIN_FAILURES {
            ctx.send("! too many failed attempts");
            self.end("too many failed logins", ctx);
        } else {
            self.ask_choice(ctx);
        }
    }

    /// The login deadline passed. Chatting sessions are unaffected.
    pub fn handle_login_timeout(&mut self, ctx: &mut Ctx<'_>) {
        match self.state {
            State::Chatting { .. } | State::Done => return,
            // Never greeted (a stalled TLS handshake, a silent HTTP client):
            // nothing to say, just close.
            State::NotStarted => {
                self.end("login timeout before speaking", ctx);
                return;
            }
            _ => {}
        }
        ctx.send("! login timeout");
        self.end("login timeout", ctx);
    }

    /// The connection is going away for any reason (the driver calls this
    /// exactly once, just before dropping the session). Others hear that the
    /// user left, unless the name now belongs to a newer connection.
    pub fn handle_closed(&mut self, ctx: &mut Ctx<'_>) {
        self.leave(false, ctx);
    }

    /// Goes offline without telling anyone: the server is shutting down.
    pub fn handle_shutdown(&mut self, ctx: &mut Ctx<'_>) {
        self.leave(true, ctx);
    }

    fn leave(&mut self, silent: bool, ctx: &mut Ctx<'_>) {
        match std::mem::replace(&mut self.state, State::Done) {
            State::Chatting { name } => ctx.hub.leave(self.id, &name, silent, ctx.actions),
            State::Loading { name } => ctx.hub.load_abandoned(&name),
            _ => {}
        }
    }

    fn end(&mut self, reason: &'static str, ctx: &mut Ctx<'_>) {
        ctx.actions.push(Action::Close(reason));
        // Leave the room now rather than when the last lines have drained:
        // from here on `/msg` and `/who` must not see this user.
        self.handle_closed(ctx);
        self.closed = true;
    }

    /// A line over `--max-line` was dropped by the framing.
    pub fn handle_too_long(&mut self, ctx: &mut Ctx<'_>) {
        if !self.wants_input() {
            return;
        }
        ctx.send(&format!(
            "! line too long (max {} bytes)",
            ctx.config.max_line
        ));
        if !self.junk_line(ctx) {
            self.reprompt(ctx);
        }
    }

    /// Before Chatting, a rejected line is followed by the prompt again.
    fn reprompt(&mut self, ctx: &mut Ctx<'_>) {
        match self.state {
            State::AwaitingChoice => ctx.send(CHOICE_PROMPT),
            State::Username { .. } => ctx.send("? username"),
            State::Password { .. } => ctx.send("? password"),
            State::Token => ctx.send("? token"),
            State::Chatting { .. } => match self.passwd {
                Passwd::Current => ctx.send("? password current"),
                Passwd::New { .. } => ctx.send("? password new"),
                _ => {}
            },
            _ => {}
        }
    }

    fn ask_choice(&mut self, ctx: &mut Ctx<'_>) {
        self.state = State::AwaitingChoice;
        ctx.send(CHOICE_PROMPT);
    }

    /// One complete line, LF and trailing CR already removed.
    pub fn handle_line(&mut self, raw: &[u8], ctx: &mut Ctx<'_>) {
        if !self.wants_input() {
            return;
        }
        let Ok(line) = std::str::from_utf8(raw) else {
            ctx.send("! invalid utf-8");
            if !self.junk_line(ctx) {
                self.reprompt(ctx);
            }
            return;
        };
        if line.chars().any(is_forbidden) {
            ctx.send("! control characters are not allowed");
            if !self.junk_line(ctx) {
                self.reprompt(ctx);
            }
            return;
        }
        // Only unreadable lines in a row count: a person who pastes some
        // garbage and then types something sensible starts afresh.
        self.junk_lines = 0;
        match std::mem::replace(&mut self.state, State::Done) {
            State::AwaitingChoice => {
                self.state = State::AwaitingChoice;
                let choice = line.trim_matches(is_blank).to_ascii_lowercase();
                let register = match choice.as_str() {
                    "r" | "register" => true,
                    "l" | "login" => false,
                    "t" | "token" => {
                        self.state = State::Token;
                        ctx.send("? token");
                        return;
                    }
                    _ => {
                        ctx.send("! please answer R or L");
                        ctx.send(CHOICE_PROMPT);
                        return;
                    }
                };
                self.state = State::Username { register };
                ctx.send("? username");
            }
            State::Username { register } => {
                let name = line.trim_matches(is_blank);
                if register && !valid_name(name) {
                    self.state = State::Username { register };
                    ctx.send("! invalid username: 1-32 letters, digits, '_', '-' or '.'");
                    ctx.send("? username");
                    return;
                }
                self.state = State::Password {
                    register,
                    name: name.to_owned(),
                };
                ctx.send("? password");
            }
            State::Password { register, name } => {
                let password = line.to_owned();
                if register && !(MIN_PASSWORD..=MAX_PASSWORD).contains(&password.len()) {
                    self.state = State::Password { register, name };
                    ctx.send("! password must be 8-72 bytes");
                    ctx.send("? password");
                    return;
                }
                self.state = State::Authenticating;
                let request = if register {
                    AuthRequest::Register { name, password }
                } else {
                    AuthRequest::Login { name, password }
                };
                ctx.actions.push(Action::Auth(request));
            }
            State::Token => match token::parse(line.trim_matches(is_blank)) {
                Some(hash) => {
                    self.state = State::CheckingToken { hash };
                    ctx.actions.push(Action::Store(Op::CheckToken {
                        conn: self.id,
                        hash,
                        now: ctx.wall,
                    }));
                }
                // Not of a token's form: nothing to look up.
                None => {
                    ctx.send(BAD_TOKEN);
                    self.login_failed(ctx);
                }
            },
            State::Chatting { name } => {
                let passwd = std::mem::replace(&mut self.passwd, Passwd::Off);
                self.state = State::Chatting { name };
                match passwd {
                    Passwd::Off => self.chat_line(line, ctx),
                    step => self.passwd_line(step, line, ctx),
                }
            }
            state @ (State::NotStarted
            | State::Authenticating
            | State::CheckingToken { .. }
            | State::Loading { .. }
            | State::Done) => self.state = state,
        }
    }

    /// A line answering one of `/passwd`'s prompts: never trimmed, never
    /// a command.
    fn passwd_line(&mut self, step: Passwd, line: &str, ctx: &mut Ctx<'_>) {
        let Some(name) = self.name().map(str::to_owned) else {
            return;
        };
        match step {
            Passwd::Current => {
                self.passwd = Passwd::New {
                    current: line.to_owned(),
                };
                ctx.send("? password new");
            }
            Passwd::New { current } => {
                if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&line.len()) {
                    self.passwd = Passwd::New { current };
                    ctx.send("! password must be 8-72 bytes");
                    ctx.send("? password new");
                    return;
                }
                self.passwd = Passwd::Checking;
                self.waiting = true;
                ctx.actions.push(Action::Auth(AuthRequest::ChangePassword {
                    name,
                    current,
                    new: line.to_owned(),
                }));
            }
            Passwd::Off | Passwd::Checking => {}
        }
    }

    fn enter_chat(
        &mut self,
        name: String,
        loaded: Option<crate::store::ops::AccountState>,
        ctx: &mut Ctx<'_>,
    ) {
        ctx.hub.enter(self.id, &name, loaded, ctx.wall, ctx.actions);
        self.state = State::Chatting { name };
    }

    /// Takes flood-control tokens for a line of `bytes` bytes (as
    /// received, without its LF): one from the line bucket and `bytes` from
    /// the byte bucket. False if the line must be dropped; then neither
    /// bucket is charged.
    fn take_token(&mut self, bytes: usize, ctx: &mut Ctx<'_>) -> bool {
        let Some(rate) = ctx.config.rate else {
            return true;
        };
        let rate = f64::from(rate);
        self.bucket.refill(ctx.now, rate, 2.0 * rate);
        let byte_limit = ctx.config.rate_bytes.zip(ctx.config.byte_burst());
        if let Some((rate_bytes, burst)) = byte_limit {
            self.byte_bucket
                .refill(ctx.now, f64::from(rate_bytes), burst);
        }
        let bytes = bytes as f64;
        let bytes_ok = byte_limit.is_none() || self.byte_bucket.tokens >= bytes;
        if self.bucket.tokens >= 1.0 && bytes_ok {
            self.bucket.tokens -= 1.0;
            if byte_limit.is_some() {
                self.byte_bucket.tokens -= bytes;
            }
            return true;
        }
        let due = self
            .last_slow_down
            .is_none_or(|t| ctx.now.saturating_duration_since(t) >= SLOW_DOWN_EVERY);
        if due {
            self.last_slow_down = Some(ctx.now);
            ctx.send("! slow down");
        }
        false
    }

    fn chat_line(&mut self, line: &str, ctx: &mut Ctx<'_>) {
        if line.trim_matches(is_blank).is_empty() {
            return;
        }
        let (command, args) = match line.strip_prefix('/') {
            Some(rest) if !rest.starts_with('/') => {
                let (command, args) = first_word(rest);
                (Some(command), args)
            }
            _ => (None, ""),
        };
        // `/quit` always works, even for a flooder: leaving is never dropped.
        let quitting = command.is_some_and(|c| c.eq_ignore_ascii_case("quit"));
        if !quitting && !self.take_token(line.len(), ctx) {
            return;
        }
        let Some(name) = self.name().map(str::to_owned) else {
            return;
        };
        let Some(typed) = command else {
            // `//text` says `/text`.
            let text = line.strip_prefix('/').unwrap_or(line);
            let room = ctx.hub.current(&name, self.id);
            ctx.hub
                .say((self.id, &name), room, false, text, ctx.wall, ctx.actions);
            return;
        };
        let Some(command) = commands::find(typed) else {
            ctx.send(&format!("! unknown command /{typed}; try /help"));
            return;
        };
        let call = Call {
            user: &name,
            conn: self.id,
            args,
        };
        match (command.run)(&call, ctx) {
            Then::Stay => {}
            Then::Wait => self.waiting = true,
            Then::Quit => self.end("quit", ctx),
            Then::Token(token) => {
                self.new_token = Some(Secret(token));
                self.waiting = true;
            }
            Then::Passwd => {
                self.passwd = Passwd::Current;
                ctx.send("? password current");
            }
            // The revocation must be on disk before the user is told
            // goodbye: input waits for the store's answer.
            Then::Logout { all } => {
                let conn = Some(self.id);
                let op = if all {
                    Op::RevokeTokens {
                        conn,
                        account: name.clone(),
                    }
                } else if let Some(hash) = self.token {
                    Op::RevokeToken { conn, hash }
                } else {
                    ctx.send("* bye");
                    self.end("logout", ctx);
                    return;
                };
                ctx.actions.push(Action::Store(op));
                self.logout = Some(all);
                self.waiting = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::hub::HubConfig;
    use crate::chat::testkit::{World, hub_config};

    const WELCOME0: &str = "* welcome to NeoChat (0 online)\n? choice Sign up (R) or Login (L)\n";
    const CHOICE: &str = "? choice Sign up (R) or Login (L)\n";

    #[test]
    fn greets_with_count_and_choice_prompt() {
        let mut w = World::new();
        let a = w.connect();
        assert_eq!(w.take(a), WELCOME0);
        w.chatter("alice");
        let b = w.connect();
        assert_eq!(
            w.take(b),
            "* welcome to NeoChat (1 online)\n? choice Sign up (R) or Login (L)\n"
        );
    }

    #[test]
    fn choice_accepts_letters_words_any_case_and_spaces() {
        for answer in [
            "R", "r", "  r  ", "register", "REGISTER", "L", "l", " login", "LogIn\t",
        ] {
            let mut w = World::new();
            let a = w.connect();
            w.take(a);
            w.send(a, format!("{answer}\n").as_bytes());
            assert_eq!(w.take(a), "? username\n", "answer {answer:?}");
        }
        for answer in ["", "x", "RL", "sign up", "r l"] {
            let mut w = World::new();
            let a = w.connect();
            w.take(a);
            w.send(a, format!("{answer}\n").as_bytes());
            assert_eq!(
                w.take(a),
                format!("! please answer R or L\n{CHOICE}"),
                "answer {answer:?}"
            );
        }
    }

    #[test]
    fn registration_checks_name_and_password_form() {
        let mut w = World::new();
        let a = w.connect();
        w.send(a, b"R\n");
        w.take(a);
        let bad_name = "! invalid username: 1-32 letters, digits, '_', '-' or '.'\n? username\n";
        let long = "a".repeat(33);
        for name in [
            "", "   ", "_alice", "-a", ".a", "al ice", "al!ce", "émile", &long,
        ] {
            w.send(a, format!("{name}\n").as_bytes());
            assert_eq!(w.take(a), bad_name, "name {name:?}");
        }
        w.send(a, format!("  {}  \n", "b".repeat(32)).as_bytes());
        assert_eq!(w.take(a), "? password\n");
        let bad_pw = "! password must be 8-72 bytes\n? password\n";
        for pw in ["", "1234567", &"p".repeat(73), &"é".repeat(37)] {
            w.send(a, format!("{pw}\n").as_bytes());
            assert_eq!(w.take(a), bad_pw, "password of {} bytes", pw.len());
            assert!(w.asked[a].is_none());
        }
        // Exactly 72 bytes passes, untrimmed, spaces and tabs included.
        let pw = format!(" \t{}", "q".repeat(70));
        w.send(a, format!("{pw}\n").as_bytes());
        assert_eq!(w.take(a), "");
        assert_eq!(
            w.asked[a],
            Some(AuthRequest::Register {
                name: "b".repeat(32),
                password: pw
            })
        );
    }

    #[test]
    fn names_of_every_allowed_kind_are_valid() {
        for name in ["a", "Z", "7", "a_b-c.d", "A1", &"x".repeat(32)] {
            assert!(valid_name(name), "{name}");
        }
    }

    #[test]
    fn login_does_not_check_form() {
        let mut w = World::new();
        let a = w.connect();
        w.send(a, b"L\n_weird name!\nshort\n");
        assert_eq!(
            w.asked[a],
            Some(AuthRequest::Login {
                name: "_weird name!".into(),
                password: "short".into()
            })
        );
        w.answer(a);
        assert!(
            w.take(a)
                .ends_with(&format!("! wrong username or password\n{CHOICE}"))
        );
    }

    #[test]
    fn register_then_chat_and_others_hear_of_it() {
        let mut w = World::new();
        let a = w.chatter("alice");
        let b = w.connect();
        w.take(b);
        w.send(b, b"R\nBob\nsecret-pw\n");
        assert_eq!(w.take(b), "? username\n? password\n");
        w.answer(b);
        assert_eq!(
            w.take(b),
            "* registered and logged in as Bob\n* online (2): alice, Bob\n"
        );
        assert_eq!(w.take(a), "* Bob joined\n");
        w.send(b, b"hello  there \n");
        assert_eq!(w.take(a), "Bob: hello  there \n");
        assert_eq!(w.take(b), "", "no echo to the sender");
    }

    #[test]
    fn name_taken_regardless_of_case_returns_to_choice() {
        let mut w = World::new();
        w.chatter("alice");
        let b = w.connect();
        w.take(b);
        w.send(b, b"R\nALICE\nsecret-pw\n");
        w.answer(b);
        assert_eq!(
            w.take(b),
            format!("? username\n? password\n! username taken\n{CHOICE}")
        );
        assert!(!w.sessions[b].is_chatting());
    }

    #[test]
    fn login_shows_registered_name_and_who_is_sorted_by_lowercase() {
        let mut w = World::new();
        w.chatter("carol");
        w.chatter("Bob");
        w.account("alice", "secret-pw");
        let a = w.connect();
        w.take(a);
        w.send(a, b"l\n  ALICE \nsecret-pw\n");
        w.answer(a);
        assert_eq!(
            w.take(a),
            "? username\n? password\n* logged in as alice\n* online (3): alice, Bob, carol\n"
        );
        w.send(a, b"/WHO\n");
        assert_eq!(w.take(a), "* online (3): alice, Bob, carol\n");
    }

    #[test]
    fn third_login_failure_closes() {
        let mut w = World::new();
        w.account("alice", "secret-pw");
        let a = w.connect();
        w.take(a);
        for attempt in 1..=3 {
            w.send(a, b"L\nalice\nwrong-pw\n");
            w.answer(a);
            let out = w.take(a);
            if attempt < 3 {
                assert_eq!(
                    out,
                    format!("? username\n? password\n! wrong username or password\n{CHOICE}")
                );
                assert!(!w.closed[a]);
            } else {
                assert_eq!(
                    out,
                    "? username\n? password\n! wrong username or password\n! too many failed attempts\n"
                );
                assert!(w.closed[a]);
            }
        }
        // Nothing more is read.
        w.send(a, b"L\n");
        assert_eq!(w.take(a), "");
    }

    #[test]
    fn unknown_user_fails_like_a_wrong_password() {
        let mut w = World::new();
        w.account("alice", "secret-pw");
        let a = w.connect();
        w.send(a, b"L\nnobody\nsecret-pw\n");
        w.answer(a);
        let unknown = w.take(a);
        let b = w.connect();
        w.send(b, b"L\nalice\nnot-it-pw\n");
        w.answer(b);
        assert_eq!(unknown, w.take(b));
    }

    #[test]
    fn input_during_the_check_is_held_and_handled_after_in_order() {
        let mut w = World::new();
        let b = w.chatter("bob");
        w.account("alice", "secret-pw");
        let a = w.connect();
        w.send(a, b"L\nalice\nsecret-pw\nhi\n/msg bob psst\n");
        assert!(!w.sessions[a].wants_input());
        assert_eq!(w.framing[a].0.len(), "hi\n/msg bob psst\n".len());
        w.send(a, b"more\n");
        assert_eq!(w.take(b), "");
        w.answer(a);
        assert!(w.sessions[a].wants_input());
        assert_eq!(
            w.take(b),
            "* alice joined\nalice: hi\n@alice: psst\nalice: more\n"
        );
    }

    #[test]
    fn pipelined_failure_goes_on_with_the_rest() {
        let mut w = World::new();
        w.account("alice", "secret-pw");
        let a = w.connect();
        w.take(a);
        w.send(a, b"L\nalice\nbad-pw-1\nL\nalice\nsecret-pw\n");
        w.answer(a);
        w.answer(a);
        assert!(w.sessions[a].is_chatting(), "{}", w.out[a]);
    }

    /// A whole conversation, as the server would see it from a client.
    fn script(w: &mut World, a: usize, chunks: &[&[u8]]) -> String {
        for chunk in chunks {
            w.send(a, chunk);
            while w.asked[a].is_some() {
                w.answer(a);
            }
        }
        w.eof(a);
        while w.asked[a].is_some() {
            w.answer(a);
        }
        w.take(a)
    }

    #[test]
    fn framing_does_not_depend_on_how_bytes_are_split() {
        let input: &[u8] = b"x\r\nR\r\n\xff\nbob\n\x1b[31m\n\
            secret-pw\nhello\r\n\n  \t \n//slash\n/me waves\n/msg bob hi\n/nope\n/who\n\
            a\rb\nthis line is too long\n/quit\nafter\n";
        let config = SessionConfig {
            max_line: 12,
            rate: None,
            rate_bytes: None,
        };
        let whole = {
            let mut w = World::with(config.clone());
            let a = w.connect();
            script(&mut w, a, &[input])
        };
        assert!(whole.contains("! please answer R or L\n"), "{whole}");
        assert!(whole.contains("! invalid utf-8\n? username\n"), "{whole}");
        assert!(
            whole.contains("! control characters are not allowed\n? password\n"),
            "{whole}"
        );
        assert!(
            whole.contains("! line too long (max 12 bytes)\n"),
            "{whole}"
        );
        assert!(whole.contains("* online (1): bob\n"), "{whole}");
        assert!(whole.contains("@bob: hi\n"), "{whole}");
        assert!(whole.ends_with("* bye\n"), "{whole}");
        for cut in 0..=input.len() {
            let mut w = World::with(config.clone());
            let a = w.connect();
            let split = script(&mut w, a, &[&input[..cut], &input[cut..]]);
            assert_eq!(split, whole, "split at {cut}");
        }
        let mut w = World::with(config);
        let a = w.connect();
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(script(&mut w, a, &bytes), whole, "one byte at a time");
    }

    #[test]
    fn many_lines_in_one_chunk_are_all_handled_in_order() {
        let mut w = World::new();
        let a = w.chatter("alice");
        let b = w.chatter("bob");
        w.take(a);
        let mut input = String::new();
        let mut expected = String::new();
        for n in 0..500 {
            input.push_str(&format!("message {n}\n"));
            expected.push_str(&format!("bob: message {n}\n"));
        }
        w.send(b, input.as_bytes());
        assert_eq!(w.take(a), expected);
    }

    #[test]
    fn crlf_and_the_line_limit() {
        let config = SessionConfig {
            max_line: 16,
            rate: None,
            rate_bytes: None,
        };
        let mut w = World::with(config);
        let a = w.chatter("alice");
        let b = w.chatter("bob");
        w.take(a);
        // 16 bytes plus CRLF is fine; the CR is dropped.
        w.send(b, b"0123456789abcdef\r\n");
        assert_eq!(w.take(a), "bob: 0123456789abcdef\n");
        // 17 bytes is not, whether the LF comes at once or later.
        w.send(b, b"0123456789abcdefg\n");
        assert_eq!(w.take(b), "! line too long (max 16 bytes)\n");
        w.send(b, b"0123456789abcdefgh");
        assert_eq!(w.take(b), "! line too long (max 16 bytes)\n");
        assert_eq!(w.framing[b].0.len(), 0);
        for _ in 0..100 {
            w.send(b, &[b'z'; 1000]);
            assert!(w.framing[b].0.len() <= 17);
        }
        w.send(b, b"zzz\nstill here\n");
        assert_eq!(w.take(b), "", "one error per long line");
        assert_eq!(w.take(a), "bob: still here\n");
        // A long line before Chatting is followed by the prompt again.
        let c = w.connect();
        w.take(c);
        w.send(c, &[b'R'; 40]);
        w.send(c, b"\n");
        assert_eq!(
            w.take(c),
            format!("! line too long (max 16 bytes)\n{CHOICE}")
        );
    }

    #[test]
    fn partial_line_is_bounded_by_the_limit() {
        let mut w = World::new();
        let a = w.chatter("alice");
        w.send(a, &vec![b'x'; 4097]);
        assert_eq!(w.framing[a].0.len(), 4097, "room for 4096 and a CR");
        w.send(a, b"y");
        assert_eq!(w.framing[a].0.len(), 0);
        assert_eq!(w.take(a), "! line too long (max 4096 bytes)\n");
    }

    #[test]
    fn forbidden_characters_are_refused_in_every_state() {
        let bad: &[&str] = &[
            "\u{0}",
            "\u{1b}[31m",
            "\u{7}",
            "a\rb",
            "\u{7f}",
            "\u{85}",
            "\u{9f}",
            "\u{202a}",
            "\u{202e}",
            "\u{2066}",
            "\u{2069}",
        ];
        let err = "! control characters are not allowed\n";
        for b in bad {
            let mut w = World::new();
            let other = w.chatter("other");
            let a = w.connect();
            w.take(a);
            w.take(other);
            w.send(a, format!("{b}\n").as_bytes());
            assert_eq!(w.take(a), format!("{err}{CHOICE}"), "{b:?}");
            w.send(a, format!("R\nx{b}\n").as_bytes());
            assert_eq!(w.take(a), format!("? username\n{err}? username\n"), "{b:?}");
            w.send(a, format!("alice\npassword{b}\n").as_bytes());
            assert_eq!(w.take(a), format!("? password\n{err}? password\n"), "{b:?}");
            w.send(a, b"password\n");
            w.answer(a);
            w.take(a);
            w.take(other);
            w.send(a, format!("hi {b} there\n").as_bytes());
            assert_eq!(w.take(a), err, "{b:?}");
            assert_eq!(w.take(other), "", "{b:?}");
        }
        for ok in [
            "\t",
            "tab\there",
            "é",
            "\u{a0}",
            "\u{200f}",
            "\u{2065}",
            "\u{206a}",
            "😀",
        ] {
            assert!(!ok.chars().any(is_forbidden), "{ok:?}");
        }
    }

    #[test]
    fn invalid_utf8_is_refused_and_the_connection_stays_usable() {
        let mut w = World::new();
        let a = w.chatter("alice");
        let b = w.chatter("bob");
        w.take(a);
        w.send(b, b"caf\xc3\n\xc0\xafx\nok\n");
        assert_eq!(w.take(b), "! invalid utf-8\n! invalid utf-8\n");
        assert_eq!(w.take(a), "bob: ok\n");
    }

    #[test]
    fn chat_commands() {
        let mut w = World::new();
        let a = w.chatter("alice");
        let b = w.chatter("Bob");
        let c = w.chatter("carol");
        w.take(a);
        w.take(b);
        // Empty and blank lines are ignored.
        w.send(a, b"\n   \n\t\n \t \n");
        assert_eq!((w.take(a), w.take(b)), (String::new(), String::new()));
        // `//` escapes a leading slash.
        w.send(a, b"//etc/passwd\n");
        assert_eq!(w.take(b), "alice: /etc/passwd\n");
        assert_eq!(w.take(c), "alice: /etc/passwd\n");
        // Private messages: any case, only the target, nothing back.
        w.send(a, b"/msg BOB hi  there\n");
        assert_eq!(w.take(b), "@alice: hi  there\n");
        assert_eq!((w.take(a), w.take(c)), (String::new(), String::new()));
        w.send(a, b"/MSG nobody hi\n/msg\n/msg bob\n/msg bob   \n");
        assert_eq!(
            w.take(a),
            "! no such user nobody\n! usage: /msg <user> <text>\n\
             ! usage: /msg <user> <text>\n! usage: /msg <user> <text>\n"
        );
        // /me
        w.send(a, b"/me waves at everyone\n");
        assert_eq!(w.take(b), "* alice waves at everyone\n");
        assert_eq!(w.take(c), "* alice waves at everyone\n");
        assert_eq!(w.take(a), "");
        w.send(a, b"/me\n");
        assert_eq!(w.take(a), "! usage: /me <action>\n");
        // /who, /help, unknown commands.
        w.send(a, b"/who\n");
        assert_eq!(w.take(a), "* online (3): alice, Bob, carol\n");
        w.send(a, b"/Help\n");
        let help = w.take(a);
        assert!(
            help.lines().count() >= 2 && help.lines().all(|l| l.starts_with("* ")),
            "{help}"
        );
        for cmd in ["msg", "me", "who", "help", "quit"] {
            assert!(help.contains(&format!("/{cmd}")), "{help}");
        }
        w.send(a, b"/frob x y\n/\n/whoami\n");
        assert_eq!(
            w.take(a),
            "! unknown command /frob; try /help\n! unknown command /; try /help\n\
             ! unknown command /whoami; try /help\n"
        );
        assert_eq!((w.take(b), w.take(c)), (String::new(), String::new()));
    }

    #[test]
    fn quit_says_bye_reads_nothing_more_and_others_hear_left() {
        let mut w = World::new();
        let a = w.chatter("alice");
        let b = w.chatter("bob");
        w.take(a);
        w.send(a, b"/QUIT now\nnot sent\n");
        assert_eq!(w.take(a), "* bye\n");
        assert!(w.closed[a]);
        assert_eq!(w.take(b), "* alice left\n");
        assert!(!w.sessions[a].wants_input());
        assert_eq!(w.hub.len(), 1);
    }

    #[test]
    fn disconnect_while_chatting_tells_the_others() {
        let mut w = World::new();
        let a = w.chatter("alice");
        let b = w.chatter("bob");
        w.close(a);
        assert_eq!(w.take(b), "* alice left\n");
        assert!(!w.hub.is_online("alice"));
    }

    #[test]
    fn closing_before_chatting_is_silent() {
        let mut w = World::new();
        let a = w.chatter("alice");
        w.take(a);
        let b = w.connect();
        w.send(b, b"R\nbob\n");
        w.close(b);
        assert_eq!(w.take(a), "");
    }

    #[test]
    fn takeover_kicks_the_old_connection_without_notices() {
        let mut w = World::with_hub(
            World::new().config,
            HubConfig {
                sessions_per_account: 1,
                ..hub_config()
            },
        );
        let old = w.chatter("alice");
        let b = w.chatter("bob");
        w.take(old);
        let new = w.connect();
        w.take(new);
        w.send(new, b"L\nALICE\npassword-alice\n");
        w.answer(new);
        assert_eq!(
            w.take(new),
            "? username\n? password\n* logged in as alice\n* online (2): alice, bob\n"
        );
        assert_eq!(w.take(old), "! logged in from another connection\n");
        assert!(w.closed[old]);
        assert_eq!(w.take(b), "", "no left or joined notices");
        assert!(w.hub.is_online("alice"));
        w.send(b, b"/msg alice still there?\n");
        assert_eq!(w.take(new), "@bob: still there?\n");
        assert_eq!(w.take(old), "");
    }

    #[test]
    fn login_timeout_only_before_chatting() {
        let mut w = World::new();
        let a = w.chatter("alice");
        let b = w.connect();
        w.take(b);
        w.send(b, b"R\n");
        w.take(b);
        w.on(b, |s, ctx| s.handle_login_timeout(ctx));
        assert_eq!(w.take(b), "! login timeout\n");
        assert!(w.closed[b]);
        w.on(a, |s, ctx| s.handle_login_timeout(ctx));
        assert_eq!(w.take(a), "");
        assert!(!w.closed[a]);
        // Also while a password check is out.
        w.account("carol", "password-c");
        let c = w.connect();
        w.send(c, b"L\ncarol\npassword-c\n");
        w.on(c, |s, ctx| s.handle_login_timeout(ctx));
        assert!(w.closed[c]);
    }

    #[test]
    fn last_unterminated_line_counts_at_end_of_input() {
        let mut w = World::new();
        let a = w.chatter("alice");
        let b = w.chatter("bob");
        w.take(a);
        w.send(b, b"first\nlast words");
        w.eof(b);
        assert_eq!(w.take(a), "bob: first\nbob: last words\n* bob left\n");
    }

    #[test]
    fn last_line_at_end_of_input_obeys_the_limit_once() {
        let config = SessionConfig {
            max_line: 16,
            rate: None,
            rate_bytes: None,
        };
        // Over-long and unterminated: one error, not two.
        let mut w = World::with(config.clone());
        let a = w.connect();
        w.take(a);
        w.send(a, &[b'x'; 40]);
        w.eof(a);
        assert_eq!(
            w.take(a),
            format!("! line too long (max 16 bytes)\n{CHOICE}")
        );
        // One byte over (the slack kept for a CR) is still too long.
        let mut w = World::with(config.clone());
        let a = w.chatter("alice");
        let b = w.chatter("bob");
        w.take(a);
        w.send(b, &[b'y'; 17]);
        w.eof(b);
        assert_eq!(w.take(b), "! line too long (max 16 bytes)\n");
        assert_eq!(w.take(a), "* bob left\n");
        // A CR before the end of input is dropped like the CR of a CRLF.
        let mut w = World::with(config);
        let a = w.chatter("alice");
        let b = w.chatter("bob");
        w.take(a);
        w.send(b, b"0123456789abcdef\r");
        w.eof(b);
        assert_eq!(w.take(a), "bob: 0123456789abcdef\n* bob left\n");
    }

    #[test]
    fn a_user_who_quit_is_gone_at_once() {
        let mut w = World::new();
        let a = w.chatter("alice");
        let b = w.chatter("bob");
        w.take(a);
        // Do not route bob's Close, as if his last lines were still queued.
        let mut actions = Vec::new();
        w.sessions[b].handle_line(
            b"/quit",
            &mut Ctx {
                now: w.now,
                wall: w.wall,
                config: &w.config,
                hub: &mut w.hub,
                actions: &mut actions,
            },
        );
        assert!(actions.contains(&Action::Notice {
            room: crate::chat::hub::LOBBY_ID,
            except: Some(w.sessions[b].id()),
            line: b"* bob left\n".to_vec()
        }));
        w.send(a, b"/msg bob hello?\n/who\n");
        assert_eq!(
            w.take(a),
            "* bob is offline; they will get it when they log in\n* online (1): alice\n"
        );
    }

    #[test]
    fn end_of_input_during_the_check_waits_for_the_answer() {
        let mut w = World::new();
        let b = w.chatter("bob");
        let a = w.connect();
        w.send(a, b"R\nalice\nsecret-pw\nhello");
        w.eof(a);
        assert!(!w.closed[a]);
        w.answer(a);
        assert_eq!(w.take(b), "* alice joined\nalice: hello\n* alice left\n");
        assert!(w.closed[a]);
    }

    #[test]
    fn shutdown_leaves_without_notices() {
        let mut w = World::new();
        let a = w.chatter("alice");
        let b = w.chatter("bob");
        w.take(a);
        w.on(b, |s, ctx| s.handle_shutdown(ctx));
        w.close(b);
        assert_eq!(w.take(a), "");
        assert_eq!(w.hub.len(), 1);
    }

    #[test]
    fn flood_control_burst_then_rate_and_one_warning_a_second() {
        let mut w = World::with(SessionConfig {
            max_line: 4096,
            rate: Some(10),
            rate_bytes: None,
        });
        let a = w.chatter("alice");
        let b = w.chatter("bob");
        w.take(a);
        let many: String = (0..30).map(|n| format!("m{n}\n")).collect();
        w.send(b, many.as_bytes());
        assert_eq!(w.take(a).lines().count(), 20, "burst of twice the rate");
        assert_eq!(w.take(b), "! slow down\n");
        // Still within the second: dropped, and no second warning.
        w.now += Duration::from_millis(50);
        w.send(b, b"dropped\n");
        assert_eq!((w.take(a), w.take(b)), (String::new(), String::new()));
        // 300 ms later three tokens are back (0.5 from before + 3).
        w.now += Duration::from_millis(300);
        w.send(b, b"1\n2\n3\n4\n");
        assert_eq!(w.take(a), "bob: 1\nbob: 2\nbob: 3\n");
        assert_eq!(w.take(b), "", "warned less than a second ago");
        w.now += Duration::from_secs(1);
        let flood: String = (0..25).map(|n| format!("n{n}\n")).collect();
        w.send(b, flood.as_bytes());
        assert_eq!(w.take(a).lines().count(), 10);
        assert_eq!(w.take(b), "! slow down\n");
        // /quit is never dropped.
        w.send(b, b"/quit\n");
        assert_eq!(w.take(b), "* bye\n");
    }

    /// The byte bucket: `rate_bytes` a second, four seconds' worth (and at
    /// least one longest line) at once; a line over it is dropped with the
    /// same `! slow down`, at most once a second, and charges neither
    /// bucket.
    #[test]
    fn flood_control_counts_bytes_too() {
        let mut w = World::with(SessionConfig {
            max_line: 100,
            rate: Some(10),
            rate_bytes: Some(50),
        });
        assert_eq!(w.config.byte_burst(), Some(200.0));
        let a = w.chatter("alice");
        let b = w.chatter("bob");
        w.take(a);
        let long = "x".repeat(60);
        let four = format!("{long}\n{long}\n{long}\n{long}\n");
        w.send(b, four.as_bytes());
        assert_eq!(
            w.take(a).lines().count(),
            3,
            "200 bytes hold three lines of 60"
        );
        assert_eq!(w.take(b), "! slow down\n");
        // The dropped line took no line token: 17 of the 20 are left, and
        // 20 bytes pay for 17 short lines.
        let short: String = (0..18).map(|_| "y\n").collect();
        w.send(b, short.as_bytes());
        assert_eq!(w.take(a).lines().count(), 17);
        assert_eq!(w.take(b), "", "warned less than a second ago");
        // Two seconds later 3 + 100 bytes are there (and 20 lines): one long
        // line passes, the next is dropped, and warned about again.
        w.now += Duration::from_secs(2);
        w.send(b, format!("{long}\n{long}\n").as_bytes());
        assert_eq!(w.take(a), format!("bob: {long}\n"));
        assert_eq!(w.take(b), "! slow down\n");
        // /quit is never dropped.
        w.send(b, b"/quit\n");
        assert_eq!(w.take(b), "* bye\n");
    }

    #[test]
    fn the_byte_burst_always_lets_one_longest_line_through() {
        let config = SessionConfig {
            max_line: 100,
            rate: Some(10),
            rate_bytes: Some(1),
        };
        assert_eq!(config.byte_burst(), Some(100.0));
        let mut w = World::with(config);
        let a = w.chatter("alice");
        let b = w.chatter("bob");
        w.take(a);
        let longest = "z".repeat(100);
        w.send(b, format!("{longest}\n{longest}\n").as_bytes());
        assert_eq!(w.take(a), format!("bob: {longest}\n"));
        assert_eq!(w.take(b), "! slow down\n");
        // After 100 s at 1 byte a second, the next one.
        w.now += Duration::from_secs(100);
        w.send(b, format!("{longest}\n").as_bytes());
        assert_eq!(w.take(a), format!("bob: {longest}\n"));
    }

    #[test]
    fn rate_off_turns_off_both_buckets_and_rate_bytes_off_only_its_own() {
        let lines = |config: SessionConfig, n: usize, len: usize| {
            let mut w = World::with(config);
            let a = w.chatter("alice");
            let b = w.chatter("bob");
            w.take(a);
            let text: String = (0..n).map(|_| format!("{}\n", "q".repeat(len))).collect();
            w.send(b, text.as_bytes());
            w.take(a).lines().count()
        };
        let config = |rate, rate_bytes| SessionConfig {
            max_line: 4096,
            rate,
            rate_bytes,
        };
        assert_eq!(lines(config(None, Some(10)), 50, 4000), 50);
        assert_eq!(lines(config(Some(10), None), 50, 4000), 20);
        assert_eq!(lines(config(Some(10), Some(4096)), 50, 4000), 4);
        // Ordinary chat never meets the default byte bucket.
        let defaults = SessionConfig::default();
        assert_eq!(
            (defaults.rate, defaults.rate_bytes, defaults.byte_burst()),
            (Some(10), Some(4096), Some(16384.0))
        );
        assert_eq!(lines(defaults, 20, 200), 20);
    }

    #[test]
    fn ordering_from_one_sender_is_kept() {
        let mut w = World::new();
        let a = w.chatter("alice");
        let b = w.chatter("bob");
        let c = w.chatter("carol");
        w.take(a);
        w.take(b);
        for n in 0..100 {
            w.send(a, format!("{n}\n").as_bytes());
        }
        let expected: String = (0..100).map(|n| format!("alice: {n}\n")).collect();
        assert_eq!(w.take(b), expected);
        assert_eq!(w.take(c), expected);
    }

    #[test]
    fn auth_request_debug_hides_the_password() {
        let req = AuthRequest::Login {
            name: "alice".into(),
            password: "hunter2-secret".into(),
        };
        assert!(!format!("{req:?}").contains("hunter2"));
    }

    /// Answers session `i`'s pending job with `outcome`, as the reactor
    /// does for a refusal made on the loop.
    fn answer_with(w: &mut World, i: usize, outcome: AuthOutcome) {
        w.asked[i].take().expect("an auth job is pending");
        w.on(i, |s, ctx| s.handle_auth_result(outcome, ctx));
        w.pump(i);
    }

    #[test]
    fn binary_junk_before_login_is_cut_short() {
        let mut w = World::new();
        let a = w.connect();
        w.take(a);
        let junk = "\x01\n".repeat(usize::from(MAX_JUNK_LINES) - 1);
        w.send(a, junk.as_bytes());
        assert!(!w.closed[a], "every line answered, connection kept");
        let out = w.take(a);
        assert_eq!(
            out.matches("! control characters are not allowed\n")
                .count(),
            usize::from(MAX_JUNK_LINES) - 1
        );
        w.send(a, b"\xff\xfe\n");
        assert_eq!(w.take(a), "! invalid utf-8\n! too much invalid input\n");
        assert!(w.closed[a]);
        // Only lines in a row count: a readable line starts afresh, at any
        // prompt.
        let mut w = World::new();
        let a = w.connect();
        w.send(a, junk.as_bytes());
        w.send(a, b"R\n");
        w.send(a, junk.as_bytes());
        w.send(a, b"alice\n");
        assert!(!w.closed[a]);
        assert!(
            w.take(a)
                .ends_with("! control characters are not allowed\n? username\n? password\n")
        );
        // Random bytes get there within a few kilobytes.
        let mut w = World::new();
        let a = w.connect();
        let mut x: u32 = 12345;
        let noise: Vec<u8> = (0..64 * 1024)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (x >> 16) as u8
            })
            .collect();
        w.send(a, &noise);
        assert!(w.closed[a]);
        assert!(w.take(a).ends_with("! too much invalid input\n"));
        // Once Chatting, bad lines are answered but never end the session.
        let b = w.chatter("bob");
        w.send(b, "\x01\n".repeat(300).as_bytes());
        assert!(!w.closed[b]);
    }

    #[test]
    fn refusals_made_without_a_job() {
        let mut w = World::new();
        let a = w.connect();
        w.take(a);
        w.send(a, b"L\nalice\npw\n");
        w.take(a);
        answer_with(&mut w, a, AuthOutcome::TooManyAttempts { retry_secs: 42 });
        assert_eq!(
            w.take(a),
            format!("! too many attempts, try again in 42 s\n{CHOICE}")
        );
        // A full queue is not the user's failure.
        for _ in 0..3 {
            w.send(a, b"L\nalice\npw\n");
            w.take(a);
            answer_with(&mut w, a, AuthOutcome::Busy);
            assert_eq!(w.take(a), format!("! server busy, try again\n{CHOICE}"));
        }
        w.send(a, b"R\nalice\npassword-1\n");
        w.take(a);
        answer_with(&mut w, a, AuthOutcome::TooManyRegistrations);
        assert_eq!(
            w.take(a),
            format!("! too many registrations, try again later\n{CHOICE}")
        );
        // A throttled attempt counts as a failed one: the third ends it.
        w.send(a, b"L\nalice\npw\n");
        w.answer(a);
        w.send(a, b"L\nalice\npw\n");
        w.take(a);
        answer_with(&mut w, a, AuthOutcome::TooManyAttempts { retry_secs: 1 });
        assert_eq!(
            w.take(a),
            "! too many attempts, try again in 1 s\n! too many failed attempts\n"
        );
        assert!(w.closed[a]);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Bytes that exercise every path: protocol words, commands, CR,
        /// LF, control and bidi characters, invalid UTF-8, long runs.
        fn hostile_bytes() -> impl Strategy<Value = Vec<u8>> {
            let piece = prop_oneof![
                Just(b"R\n".to_vec()),
                Just(b"L\n".to_vec()),
                Just(b"alice\n".to_vec()),
                Just(b"password-alice\n".to_vec()),
                Just(b"/msg alice hi\n".to_vec()),
                Just(b"/quit\n".to_vec()),
                Just(b"/who\n".to_vec()),
                Just(b"//x\n".to_vec()),
                Just(b"\r\n".to_vec()),
                Just(b"\r".to_vec()),
                Just("\u{202e}\u{1b}[2J\u{85}".as_bytes().to_vec()),
                Just(vec![0xff, 0xc3, b'\n']),
                prop::collection::vec(any::<u8>(), 0..40),
                (1usize..3000).prop_map(|n| vec![b'z'; n]),
            ];
            prop::collection::vec(piece, 0..30).prop_map(|v| v.concat())
        }

        /// Feeds `input` in the given chunks to a fresh session (with an
        /// account `alice` and a chatting `bob`), answering auth jobs, then
        /// ends the input. Returns what the session sent and what bob got.
        fn run(input: &[u8], cuts: &[usize]) -> (String, String, usize) {
            let mut w = World::with(SessionConfig {
                max_line: 512,
                rate: Some(10),
                rate_bytes: None,
            });
            w.account("alice", "password-alice");
            let bob = w.chatter("bob");
            let a = w.connect();
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
            cuts.sort_unstable();
            let mut at = 0;
            let mut most_buffered = 0;
            for cut in cuts.into_iter().chain([input.len()]) {
                w.send(a, &input[at..cut]);
                at = cut;
                while w.asked[a].is_some() {
                    w.answer(a);
                }
                if w.sessions[a].wants_input() {
                    most_buffered = most_buffered.max(w.framing[a].0.len());
                }
            }
            w.eof(a);
            while w.asked[a].is_some() {
                w.answer(a);
            }
            (w.take(a), w.take(bob), most_buffered)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(300))]

            /// Any byte stream, split anywhere, gives the output of the
            /// same bytes in one chunk; nothing panics; a session that is
            /// reading never holds more than one line (plus a CR).
            #[test]
            fn splitting_never_changes_the_outcome(
                input in hostile_bytes(),
                cuts in prop::collection::vec(any::<usize>(), 0..8),
            ) {
                let whole = run(&input, &[]);
                let split = run(&input, &cuts);
                prop_assert_eq!(&whole.0, &split.0);
                prop_assert_eq!(&whole.1, &split.1);
                prop_assert!(split.2 <= 513, "held {} bytes", split.2);
            }

            /// Whatever comes in, nothing the server sends carries a
            /// forbidden character, and every line is whole.
            #[test]
            fn output_is_always_clean(input in hostile_bytes()) {
                let (own, bob, _) = run(&input, &[]);
                for text in [own, bob] {
                    prop_assert!(text.is_empty() || text.ends_with('\n'));
                    for line in text.lines() {
                        prop_assert!(!line.chars().any(is_forbidden), "{:?}", line);
                    }
                }
            }
        }
    }
}
