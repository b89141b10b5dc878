//! What the event loop asks of the store thread, and what it answers: the
//! one seam between the chat (on the loop) and SQLite (off it).
//!
//! Every [`Op`] goes down one channel to the one store thread, which
//! carries them out in the order they were sent, committing whatever is
//! waiting in one transaction (group commit: one fsync for a batch). Reads
//! that must see every earlier write ([`Op::Load`], [`Op::History`]) go
//! down the same channel, so they are answered after every write the loop
//! sent before them: a login never misses a private message stored a
//! moment earlier, and `/history` never misses a line still in the queue.
//! Answers come back as [`Answer`]s, after which the thread wakes the loop.
//!
//! Names here are as the chat uses them: accounts as registered (matched
//! without regard to case), rooms in lowercase without their `#`, the lobby
//! as [`LOBBY`].

use crate::chat::session::ConnId;

/// The lobby's name in the tables (no room can be called `lobby`: `#lobby`
/// always means the lobby).
pub const LOBBY: &str = "lobby";

/// One stored message: a public line in a room (the lobby too), a `/me`,
/// or a private message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Global, assigned by the loop, strictly increasing in the order sent.
    pub id: u64,
    /// The room (or [`LOBBY`]); `None` for a private message.
    pub room: Option<String>,
    /// The message's number in its room, from 1, assigned by the loop;
    /// 0 for a private message.
    pub n: u64,
    /// As registered.
    pub sender: String,
    /// A private message's recipient, as registered.
    pub recipient: Option<String>,
    /// Unix time, seconds, UTC.
    pub at: i64,
    /// A `/me` action.
    pub me: bool,
    pub text: String,
}

/// What an account had when its last connection closed, read at login.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccountState {
    /// The lobby message number the account had seen; `None` if it has
    /// never been online.
    pub lobby_seen: Option<u64>,
    /// Rooms it is a member of (sorted by name), each with the message
    /// number it had seen there.
    pub rooms: Vec<(String, u64)>,
    /// Private messages received while it was offline, the newest 200 at
    /// most, oldest first ([`Op::Delivered`] marks them handed over).
    pub offline: Vec<Message>,
    /// How many older offline messages there were besides `offline`.
    pub offline_older: u64,
    /// Who sent those older ones, and how many each: most first, then by
    /// name.
    pub older_by: Vec<(String, u64)>,
}

/// Whose history [`Op::History`] reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HistoryOf {
    /// A room (or [`LOBBY`]).
    Room(String),
    /// The private conversation between the asking account and this one.
    Private(String),
}

/// What the loop asks the store thread to do, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Op {
    /// Store a message. `pending`: a private message for an offline
    /// recipient, to hand over at its next [`Op::Load`].
    Message { message: Message, pending: bool },
    /// A new room and its owner (who also becomes its first member).
    CreateRoom {
        name: String,
        owner: String,
        at: i64,
    },
    /// A room with no members left: delete it, its members and its
    /// messages.
    DeleteRoom { name: String },
    /// Set (or with `None` clear) a room's topic.
    Topic {
        room: String,
        topic: Option<String>,
        by: String,
    },
    /// `account` became a member of `room`, having seen up to message `seen`.
    Join {
        room: String,
        account: String,
        seen: u64,
    },
    /// `account` left `room`.
    Part { room: String, account: String },
    /// The account's last connection closed: what it had seen, per room
    /// (the lobby included, as [`LOBBY`]).
    Seen {
        account: String,
        seen: Vec<(String, u64)>,
    },
    /// Read `account`'s [`AccountState`] and answer [`Reply::Loaded`].
    Load { conn: ConnId, account: String },
    /// The account's offline private messages up to id `up_to` were
    /// handed to a connection that entered Chatting: no longer pending.
    /// ([`Op::Load`] reads them without changing them, so a login that
    /// fails halfway loses nothing.)
    Delivered { account: String, up_to: u64 },
    /// Read up to `limit` messages, newest last, and answer
    /// [`Reply::History`]. `before`: only messages with an id below it
    /// (those the loop already has in memory are not read again).
    History {
        conn: ConnId,
        account: String,
        of: HistoryOf,
        limit: usize,
        before: Option<u64>,
    },
    /// Store a new login token of `account`, and answer
    /// [`Reply::TokenStored`] once it is (the user is shown the token only
    /// then).
    CreateToken {
        conn: ConnId,
        account: String,
        hash: TokenHash,
        created_at: i64,
        expires_at: i64,
    },
    /// Whose token is this (if it is valid at `now`)? Answers
    /// [`Reply::TokenAccount`].
    CheckToken {
        conn: ConnId,
        hash: TokenHash,
        now: i64,
    },
    /// Revoke one token (`/logout`); with `conn`, answer
    /// [`Reply::Revoked`] once it is gone for good.
    RevokeToken {
        conn: Option<ConnId>,
        hash: TokenHash,
    },
    /// Revoke every token of the account (`/logout all`, `/passwd`), as
    /// [`Op::RevokeToken`].
    RevokeTokens {
        conn: Option<ConnId>,
        account: String,
    },
    /// Make (`on`) or unmake `account` an operator of `room`.
    Operator {
        room: String,
        account: String,
        on: bool,
        by: String,
        at: i64,
    },
    /// Store a ban or a mute (replacing one of the same kind).
    Sanction { row: SanctionRow, at: i64 },
    /// End a ban or a mute.
    Lift {
        room: String,
        account: String,
        kind: SanctionKind,
    },
    /// An operator deleted the account: remove whatever the loop wrote for
    /// it since (cursors, memberships, tokens), as the deletion did.
    Forget { account: String },
    /// Record an upload whose bytes are stored, and answer
    /// [`Reply::FileRecorded`] once it is (it is announced only then).
    RecordFile { conn: ConnId, row: FileRow },
    /// Read the file with this id and answer [`Reply::File`].
    FindFile { conn: ConnId, id: String },
}

impl Op {
    /// The connection waiting for this op's answer, if one is.
    pub fn asker(&self) -> Option<ConnId> {
        match self {
            Op::Load { conn, .. }
            | Op::History { conn, .. }
            | Op::CreateToken { conn, .. }
            | Op::CheckToken { conn, .. }
            | Op::RecordFile { conn, .. }
            | Op::FindFile { conn, .. } => Some(*conn),
            Op::RevokeToken { conn, .. } | Op::RevokeTokens { conn, .. } => *conn,
            _ => None,
        }
    }

    /// For an op somebody waits for, who, and the answer they get if it
    /// cannot be carried out (the error is made only then: most ops are
    /// messages, which nobody waits for).
    pub fn failed_reply(&self, e: impl FnOnce() -> super::Error) -> Option<(ConnId, Reply)> {
        self.asker()?;
        let e = e();
        Some(match self {
            Op::Load { conn, .. } => (*conn, Reply::Loaded(Err(e))),
            Op::History { conn, .. } => (*conn, Reply::History(Err(e))),
            Op::CreateToken { conn, .. } => (*conn, Reply::TokenStored(Err(e))),
            Op::CheckToken { conn, .. } => (*conn, Reply::TokenAccount(Err(e))),
            Op::RecordFile { conn, .. } => (*conn, Reply::FileRecorded(Err(e))),
            Op::FindFile { conn, .. } => (*conn, Reply::File(Err(e))),
            Op::RevokeToken {
                conn: Some(conn), ..
            }
            | Op::RevokeTokens {
                conn: Some(conn), ..
            } => (*conn, Reply::Revoked(Err(e))),
            _ => return None,
        })
    }
}

/// A ban or a mute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SanctionKind {
    Ban,
    Mute,
}

impl SanctionKind {
    /// As stored in `sanctions.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            SanctionKind::Ban => "ban",
            SanctionKind::Mute => "mute",
        }
    }
}

/// A ban or mute of one account in one room (the lobby: server-wide).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SanctionRow {
    pub room: String,
    /// As registered.
    pub account: String,
    pub kind: SanctionKind,
    /// Unix seconds it ends at; `None` for ever.
    pub until: Option<i64>,
    pub reason: String,
    pub by: String,
}

/// The SHA-256 of a login token: all the store ever keeps of it.
pub type TokenHash = [u8; 32];

/// What an operator changed with `neochat-server op|users ...` while the
/// server ran, read from the `changes` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Made a server operator.
    OpAdded(String),
    OpRemoved(String),
    /// The account was deleted (and its name retired).
    Deleted(String),
    /// Its password was reset (and its tokens revoked).
    PasswordReset(String),
    /// Files older than the history were deleted: each owner's quota
    /// shrinks by these sizes.
    FilesExpired(Vec<(String, u64)>),
}

/// An answer of the store thread to the connection that asked.
#[derive(Debug)]
pub struct Answer {
    pub conn: ConnId,
    pub reply: Reply,
}

#[derive(Debug)]
pub enum Reply {
    Loaded(Result<AccountState, super::Error>),
    History(Result<Vec<Message>, super::Error>),
    TokenStored(Result<(), super::Error>),
    /// The revocation is committed (an error if it could not be).
    Revoked(Result<(), super::Error>),
    /// The account a token logs in (as registered), `None` if the token
    /// is unknown, revoked or expired.
    TokenAccount(Result<Option<String>, super::Error>),
    /// Not looked up: the address failed too many logins lately (made by
    /// the loop, never by the store thread).
    TokenThrottled {
        retry_secs: u64,
    },
    /// The upload is recorded (or could not be).
    FileRecorded(Result<(), super::Error>),
    /// The file asked for, `None` if there is no such file.
    File(Result<Option<FileRow>, super::Error>),
}

/// An uploaded file as recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileRow {
    /// The unguessable part of its URL.
    pub id: String,
    /// The hash its bytes are stored under.
    pub sha: crate::files::Sha,
    /// Who uploaded it, as registered.
    pub owner: String,
    pub name: String,
    pub size: u64,
    /// Detected from its bytes.
    pub mime: String,
    /// Shown in the browser rather than downloaded (plain images only).
    pub inline: bool,
    /// The room it was announced in ([`LOBBY`] for the lobby).
    pub room: String,
    pub created_at: i64,
}

/// What the loop needs at start, read once before it accepts anybody.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The highest message id stored (0 if none): the loop goes on from it.
    pub last_id: u64,
    /// The lobby first, then every room sorted by name.
    pub rooms: Vec<RoomRow>,
    /// Every account name, as registered.
    pub accounts: Vec<String>,
    /// Server operators, as registered.
    pub server_ops: Vec<String>,
    /// Bans and mutes that have not ended.
    pub sanctions: Vec<SanctionRow>,
    /// The newest row of `changes` (what the admin subcommands did): the
    /// store thread reports those after it.
    pub last_change: i64,
    /// Bytes of files stored per owner (as registered), for the quotas.
    pub file_usage: Vec<(String, u64)>,
}

/// A room as stored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoomRow {
    /// [`LOBBY`] for the lobby.
    pub name: String,
    /// `None` for the lobby.
    pub owner: Option<String>,
    /// The topic and who set it.
    pub topic: Option<(String, String)>,
    /// The highest message number the room ever had (kept when old
    /// messages expire, so numbers never go back).
    pub count: u64,
    /// The accounts that are members, as registered (none for the lobby:
    /// everyone is).
    pub members: Vec<String>,
    /// Its operators (besides the owner), as registered.
    pub ops: Vec<String>,
    /// The newest messages, oldest first, at most the ring's size.
    pub recent: Vec<Message>,
}
