//! The per-connection protocol state machine, with no I/O.
//!
//! A [`Session`] owns everything one connection means to the protocol: its
//! state (AwaitingChoice -> Credentials -> Chatting), the bytes of an
//! unfinished line, the flood-control bucket and the count of failed logins.
//! It never touches a socket, a thread or the system clock: the reactor feeds
//! it bytes, auth results and the current time, and it answers by pushing
//! [`Action`]s into a caller-owned vector. Every protocol rule is therefore a
//! plain unit test (see the bottom of this file).
//!
//! The only shared state a session sees is the [`Roster`] of online users,
//! which it reads for `/who` and `/msg` and updates when it enters or leaves
//! the room. Delivering what it asks for (broadcast, private message, closing
//! a taken-over connection) is the reactor's job.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Identifies one connection for its whole life: the slab key it occupies and
/// a serial that is never reused, so a late message for a closed connection
/// cannot reach the stranger who got its slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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
    /// turns flood control off.
    pub rate: Option<u32>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            max_line: 4096,
            rate: Some(10),
        }
    }
}

/// What a session asks its driver to do. Lines are complete, LF included.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Send bytes to this connection.
    Send(Vec<u8>),
    /// Send a line to every Chatting connection except this one.
    Broadcast(Vec<u8>),
    /// Send a line to one other connection (a private message).
    SendTo(ConnId, Vec<u8>),
    /// Send a last line to another connection and close it without a left
    /// notice: its account was taken over by this connection.
    Kick(ConnId, Vec<u8>),
    /// Check or create an account. The session reads no more input until
    /// [`Session::handle_auth_result`] is called.
    Auth(AuthRequest),
    /// Close this connection once its pending output is written.
    Close,
}

/// An account operation, carried out off the event loop by `auth.rs`.
#[derive(PartialEq, Eq)]
pub enum AuthRequest {
    Register { name: String, password: String },
    Login { name: String, password: String },
}

// Never print a password, not even in a debug log.
impl std::fmt::Debug for AuthRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthRequest::Register { name, .. } => write!(f, "Register({name:?})"),
            AuthRequest::Login { name, .. } => write!(f, "Login({name:?})"),
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
    /// Unknown user or wrong password: deliberately indistinguishable.
    WrongCredentials,
    /// The database or a worker failed; the user may try again.
    Unavailable,
}

/// Who is online: Chatting connections by case-folded name.
///
/// A `BTreeMap` keeps `/who` sorted by lowercase form for free, and the
/// entry's `ConnId` tells a leaving connection whether the name is still its
/// own (after a takeover it is not, and it leaves silently).
#[derive(Default, Debug)]
pub struct Roster {
    by_name: BTreeMap<String, (ConnId, String)>,
}

impl Roster {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of users online.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// The connection using `name` (any case), if online.
    pub fn lookup(&self, name: &str) -> Option<(ConnId, &str)> {
        self.by_name
            .get(&name.to_ascii_lowercase())
            .map(|(id, shown)| (*id, shown.as_str()))
    }

    /// `* online (N): a, b, c` with names sorted by lowercase form.
    pub fn who_line(&self) -> Vec<u8> {
        let mut line = format!("* online ({}): ", self.by_name.len());
        for (i, (_, shown)) in self.by_name.values().enumerate() {
            if i > 0 {
                line.push_str(", ");
            }
            line.push_str(shown);
        }
        line.push('\n');
        line.into_bytes()
    }

    /// Puts `name` online for `id`, returning the connection it replaces.
    fn enter(&mut self, name: &str, id: ConnId) -> Option<ConnId> {
        self.by_name
            .insert(name.to_ascii_lowercase(), (id, name.to_owned()))
            .map(|(old, _)| old)
    }

    /// Takes `name` offline if `id` still holds it; says whether it did.
    fn leave(&mut self, name: &str, id: ConnId) -> bool {
        let key = name.to_ascii_lowercase();
        match self.by_name.get(&key) {
            Some((holder, _)) if *holder == id => {
                self.by_name.remove(&key);
                true
            }
            _ => false,
        }
    }
}

/// Everything a session handler needs besides the session itself.
pub struct Ctx<'a> {
    pub now: Instant,
    pub config: &'a SessionConfig,
    pub roster: &'a mut Roster,
    pub actions: &'a mut Vec<Action>,
}

impl Ctx<'_> {
    fn send(&mut self, line: &str) {
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        self.actions.push(Action::Send(bytes));
    }
}

const CHOICE_PROMPT: &str = "? choice Sign up (R) or Login (L)";
const MAX_LOGIN_FAILURES: u8 = 3;
const MIN_PASSWORD: usize = 8;
/// bcrypt uses at most 72 bytes; longer passwords are refused, never cut.
pub const MAX_PASSWORD: usize = 72;
const MAX_NAME: usize = 32;
const SLOW_DOWN_EVERY: Duration = Duration::from_secs(1);

pub const HELP: &[&str] = &[
    "* commands:",
    "*   <text>              say <text> to everybody",
    "*   /msg <user> <text>  send <text> to <user> only",
    "*   /me <action>        show '* <you> <action>' to everybody",
    "*   /who                list who is online",
    "*   /help               show this help",
    "*   /quit               leave the chat",
    "*   //text              say a line that starts with '/'",
];

#[derive(Debug)]
enum State {
    AwaitingChoice,
    Username {
        register: bool,
    },
    Password {
        register: bool,
        name: String,
    },
    /// An auth job is out; input waits in `pending`.
    Authenticating,
    Chatting {
        name: String,
    },
    /// Nothing more is read or sent.
    Done,
}

/// Flood control: a token bucket refilled continuously.
#[derive(Debug)]
struct Bucket {
    tokens: f32,
    last: Instant,
}

/// One connection's protocol state. See the module documentation.
#[derive(Debug)]
pub struct Session {
    id: ConnId,
    state: State,
    /// Bytes received but not yet handled: the start of an unfinished line,
    /// or, while Authenticating, everything that arrived after the password.
    pending: Vec<u8>,
    /// Inside an over-long line: drop bytes up to the next LF.
    discarding: bool,
    /// The peer has finished sending.
    eof: bool,
    /// This session asked to be closed: it reads nothing more.
    closed: bool,
    failures: u8,
    bucket: Bucket,
    last_slow_down: Option<Instant>,
}

impl Session {
    /// A new connection: pushes the welcome line and the first prompt.
    pub fn new(id: ConnId, ctx: &mut Ctx<'_>) -> Session {
        let burst = ctx.config.rate.map_or(0.0, |r| 2.0 * r as f32);
        let session = Session {
            id,
            state: State::AwaitingChoice,
            pending: Vec::new(),
            discarding: false,
            eof: false,
            closed: false,
            failures: 0,
            bucket: Bucket {
                tokens: burst,
                last: ctx.now,
            },
            last_slow_down: None,
        };
        let welcome = format!("* welcome to NeoChat ({} online)", ctx.roster.len());
        ctx.send(&welcome);
        ctx.send(CHOICE_PROMPT);
        session
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

    pub fn is_chatting(&self) -> bool {
        matches!(self.state, State::Chatting { .. })
    }

    /// Whether the driver should read more bytes for this session. False
    /// while an auth job is out (input is kept, in order, for afterwards) and
    /// once the session is over.
    pub fn wants_input(&self) -> bool {
        !matches!(self.state, State::Authenticating | State::Done) && !self.eof && !self.closed
    }

    /// Bytes held for a line not yet complete (bounded by the line limit,
    /// except while Authenticating, when the driver has stopped reading).
    pub fn buffered(&self) -> usize {
        self.pending.len()
    }

    /// Feeds bytes from the peer.
    pub fn handle_bytes(&mut self, data: &[u8], ctx: &mut Ctx<'_>) {
        match self.state {
            State::Done => {}
            // Keep everything in order for after the answer.
            State::Authenticating => self.pending.extend_from_slice(data),
            _ if self.pending.is_empty() => self.consume(data, ctx),
            _ => {
                // Rare: the previous read ended mid-line. Join and rescan.
                let mut joined = std::mem::take(&mut self.pending);
                joined.extend_from_slice(data);
                self.consume(&joined, ctx);
                if self.pending.is_empty() {
                    // Keep the allocation for the next partial line, unless
                    // it is large: idle connections should cost little.
                    joined.clear();
                    if joined.capacity() <= 1024 {
                        self.pending = joined;
                    }
                }
            }
        }
    }

    /// The peer closed its sending side. A last unterminated line still
    /// counts; the connection then closes once its output is written.
    pub fn handle_eof(&mut self, ctx: &mut Ctx<'_>) {
        self.eof = true;
        self.finish_if_eof(ctx);
    }

    /// The answer to the [`Action::Auth`] this session asked for.
    pub fn handle_auth_result(&mut self, outcome: AuthOutcome, ctx: &mut Ctx<'_>) {
        if !matches!(self.state, State::Authenticating) {
            return;
        }
        match outcome {
            AuthOutcome::Registered(name) => {
                ctx.send(&format!("* registered and logged in as {name}"));
                self.enter_chat(name, ctx);
            }
            AuthOutcome::LoggedIn(name) => {
                ctx.send(&format!("* logged in as {name}"));
                self.enter_chat(name, ctx);
            }
            AuthOutcome::NameTaken => {
                ctx.send("! username taken");
                self.ask_choice(ctx);
            }
            AuthOutcome::Unavailable => {
                ctx.send("! service temporarily unavailable, try again");
                self.ask_choice(ctx);
            }
            AuthOutcome::WrongCredentials => {
                self.failures += 1;
                ctx.send("! wrong username or password");
                if self.failures >= MAX_LOGIN_FAILURES {
                    ctx.send("! too many failed attempts");
                    self.end(ctx);
                } else {
                    self.ask_choice(ctx);
                }
            }
        }
        // Whatever arrived while the password was checked comes next.
        if !self.closed {
            let held = std::mem::take(&mut self.pending);
            self.consume(&held, ctx);
            self.finish_if_eof(ctx);
        }
    }

    /// The login deadline passed. Chatting sessions are unaffected.
    pub fn handle_login_timeout(&mut self, ctx: &mut Ctx<'_>) {
        if matches!(self.state, State::Chatting { .. } | State::Done) {
            return;
        }
        ctx.send("! login timeout");
        self.end(ctx);
    }

    /// The connection is going away for any reason (the driver calls this
    /// exactly once, just before dropping the session). Others hear that the
    /// user left, unless the name now belongs to a newer connection.
    pub fn handle_closed(&mut self, ctx: &mut Ctx<'_>) {
        if let State::Chatting { name } = &self.state
            && ctx.roster.leave(name, self.id)
        {
            let line = format!("* {name} left\n");
            ctx.actions.push(Action::Broadcast(line.into_bytes()));
        }
        self.state = State::Done;
    }

    /// Leaves the room without telling anyone: the server is shutting down.
    pub fn handle_shutdown(&mut self, ctx: &mut Ctx<'_>) {
        if let State::Chatting { name } = &self.state {
            ctx.roster.leave(name, self.id);
        }
        self.state = State::Done;
    }

    fn end(&mut self, ctx: &mut Ctx<'_>) {
        ctx.actions.push(Action::Close);
        // Stay in the roster until the driver closes us: `handle_closed`
        // sends the left notice then.
        if !self.is_chatting() {
            self.state = State::Done;
        }
        self.pending = Vec::new();
        self.closed = true;
    }

    fn finish_if_eof(&mut self, ctx: &mut Ctx<'_>) {
        if !self.eof || self.closed || matches!(self.state, State::Authenticating | State::Done) {
            return;
        }
        if self.discarding {
            self.discarding = false;
            self.pending.clear();
            self.line_too_long(ctx);
        } else if !self.pending.is_empty() {
            let last = std::mem::take(&mut self.pending);
            self.handle_line(&last, ctx);
        }
        if !matches!(self.state, State::Authenticating | State::Done) {
            self.end(ctx);
        }
    }

    /// Splits `data` into lines and handles them until the data runs out or
    /// the session stops taking input; keeps what is left in `pending`.
    fn consume(&mut self, mut data: &[u8], ctx: &mut Ctx<'_>) {
        let max = ctx.config.max_line;
        while !data.is_empty() {
            // After `/quit` (and the like) nothing more is read.
            if self.closed || matches!(self.state, State::Done) {
                return;
            }
            if matches!(self.state, State::Authenticating) {
                self.pending.extend_from_slice(data);
                return;
            }
            match memchr::memchr(b'\n', data) {
                Some(i) => {
                    let (line, rest) = (&data[..i], &data[i + 1..]);
                    data = rest;
                    if self.discarding {
                        // The error was sent when the line overflowed.
                        self.discarding = false;
                        continue;
                    }
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    if line.len() > max {
                        self.line_too_long(ctx);
                    } else {
                        self.handle_line(line, ctx);
                    }
                }
                None => {
                    if !self.discarding {
                        // One byte of slack for the CR of a CRLF.
                        if data.len() > max + 1 {
                            self.discarding = true;
                            self.line_too_long(ctx);
                        } else {
                            self.pending.extend_from_slice(data);
                        }
                    }
                    return;
                }
            }
        }
    }

    fn line_too_long(&mut self, ctx: &mut Ctx<'_>) {
        ctx.send(&format!(
            "! line too long (max {} bytes)",
            ctx.config.max_line
        ));
        self.reprompt(ctx);
    }

    /// Before Chatting, a rejected line is followed by the prompt again.
    fn reprompt(&mut self, ctx: &mut Ctx<'_>) {
        match self.state {
            State::AwaitingChoice => ctx.send(CHOICE_PROMPT),
            State::Username { .. } => ctx.send("? username"),
            State::Password { .. } => ctx.send("? password"),
            _ => {}
        }
    }

    fn ask_choice(&mut self, ctx: &mut Ctx<'_>) {
        self.state = State::AwaitingChoice;
        ctx.send(CHOICE_PROMPT);
    }

    /// One complete line, LF and trailing CR already removed.
    fn handle_line(&mut self, raw: &[u8], ctx: &mut Ctx<'_>) {
        let Ok(line) = std::str::from_utf8(raw) else {
            ctx.send("! invalid utf-8");
            self.reprompt(ctx);
            return;
        };
        if line.chars().any(is_forbidden) {
            ctx.send("! control characters are not allowed");
            self.reprompt(ctx);
            return;
        }
        match std::mem::replace(&mut self.state, State::Done) {
            State::AwaitingChoice => {
                self.state = State::AwaitingChoice;
                let choice = line.trim_matches(is_blank).to_ascii_lowercase();
                let register = match choice.as_str() {
                    "r" | "register" => true,
                    "l" | "login" => false,
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
            State::Chatting { name } => {
                self.state = State::Chatting { name };
                self.chat_line(line, ctx);
            }
            state @ (State::Authenticating | State::Done) => self.state = state,
        }
    }

    fn enter_chat(&mut self, name: String, ctx: &mut Ctx<'_>) {
        let replaced = ctx.roster.enter(&name, self.id);
        if let Some(old) = replaced {
            let line = b"! logged in from another connection\n".to_vec();
            ctx.actions.push(Action::Kick(old, line));
        }
        ctx.actions.push(Action::Send(ctx.roster.who_line()));
        if replaced.is_none() {
            let joined = format!("* {name} joined\n");
            ctx.actions.push(Action::Broadcast(joined.into_bytes()));
        }
        self.state = State::Chatting { name };
    }

    /// Takes a flood-control token; false if the line must be dropped.
    fn take_token(&mut self, ctx: &mut Ctx<'_>) -> bool {
        let Some(rate) = ctx.config.rate else {
            return true;
        };
        let rate = rate as f32;
        let elapsed = ctx.now.saturating_duration_since(self.bucket.last);
        self.bucket.last = ctx.now;
        self.bucket.tokens = (self.bucket.tokens + elapsed.as_secs_f32() * rate).min(2.0 * rate);
        if self.bucket.tokens >= 1.0 {
            self.bucket.tokens -= 1.0;
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
                let end = rest.find(is_blank).unwrap_or(rest.len());
                (Some(&rest[..end]), rest[end..].trim_start_matches(is_blank))
            }
            _ => (None, ""),
        };
        let command = command.map(|c| (c, c.to_ascii_lowercase()));
        // `/quit` always works, even for a flooder: leaving is never dropped.
        let quitting = matches!(&command, Some((_, c)) if c == "quit");
        if !quitting && !self.take_token(ctx) {
            return;
        }
        let Some(name) = self.name().map(str::to_owned) else {
            return;
        };
        let Some((typed, command)) = command else {
            // `//text` says `/text`.
            let text = line.strip_prefix('/').unwrap_or(line);
            let mut out = Vec::with_capacity(name.len() + text.len() + 3);
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(text.as_bytes());
            out.push(b'\n');
            ctx.actions.push(Action::Broadcast(out));
            return;
        };
        match command.as_str() {
            "msg" => {
                let (to, text) = match args.find(is_blank) {
                    Some(i) => (&args[..i], args[i..].trim_start_matches(is_blank)),
                    None => (args, ""),
                };
                if to.is_empty() || text.trim_matches(is_blank).is_empty() {
                    ctx.send("! usage: /msg <user> <text>");
                } else if let Some((id, _)) = ctx.roster.lookup(to) {
                    let line = format!("@{name}: {text}\n");
                    ctx.actions.push(Action::SendTo(id, line.into_bytes()));
                } else {
                    ctx.send(&format!("! {to} is not online"));
                }
            }
            "me" => {
                if args.trim_matches(is_blank).is_empty() {
                    ctx.send("! usage: /me <action>");
                } else {
                    let line = format!("* {name} {args}\n");
                    ctx.actions.push(Action::Broadcast(line.into_bytes()));
                }
            }
            "who" => ctx.actions.push(Action::Send(ctx.roster.who_line())),
            "help" => {
                for line in HELP {
                    ctx.send(line);
                }
            }
            "quit" => {
                ctx.send("* bye");
                self.end(ctx);
            }
            _ => ctx.send(&format!("! unknown command /{typed}; try /help")),
        }
    }
}

fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// Characters no line may carry: C0 controls but TAB, DEL, C1 controls, and
/// the bidirectional overrides and isolates.
pub fn is_forbidden(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{8}'
        | '\u{a}'..='\u{1f}'
        | '\u{7f}'..='\u{9f}'
        | '\u{202a}'..='\u{202e}'
        | '\u{2066}'..='\u{2069}')
}

/// 1-32 of `A-Z a-z 0-9 _ - .`, starting with a letter or a digit.
pub fn valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_NAME
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}
