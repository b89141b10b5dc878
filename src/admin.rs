//! The work behind the admin subcommands (`neochat-server op add|remove|list`
//! and `users list|delete|reset-password`), on a database path, with the
//! server stopped or running.
//!
//! Each call opens the database, never creating it (a missing file is
//! [`ErrorKind::NoDatabase`]), brings an older schema up to date as the
//! server does, and waits up to [`BUSY_TIMEOUT`] for another program's
//! write lock (then [`ErrorKind::Busy`]). Every write is one immediate
//! transaction that also records it in `changes`: a running server reads
//! the new rows every few seconds and acts on them (an op change at once;
//! the connections of a deleted account, or of one whose password was
//! reset, are closed). WAL lets the server go on reading meanwhile.
//!
//! Names are matched without regard to case (the columns are `COLLATE
//! NOCASE`) and reported as registered.
//!
//! What it does not own: the flags, reading a password from the terminal,
//! printing (the binary); the tables (`store::schema`); acting on
//! `changes` (the server).

use std::fmt;
use std::io;
use std::ops::RangeInclusive;
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior};

use crate::chat::text;
use crate::session::MAX_PASSWORD;
use crate::store::ops::LOBBY;
use crate::store::writer::unix_now;
use crate::store::{self, Access};

/// How long a subcommand waits for another program's write lock (the
/// server's are a few milliseconds; an operator's open `sqlite3`
/// transaction may be forever) before it says the database is busy.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The shortest password, as at registration.
pub const MIN_PASSWORD: usize = 8;

/// The bcrypt costs `users reset-password --bcrypt-cost` takes, as the
/// server's `--bcrypt-cost`.
pub const BCRYPT_COSTS: RangeInclusive<u32> = 4..=31;

/// What went wrong, with the line to show the operator.
#[derive(Clone, Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// No file at the path: the subcommands never create a database.
    NoDatabase,
    /// No account of that name, in any case.
    NoSuchUser,
    /// `op remove` of an account that is not a server operator.
    NotOperator,
    /// A new password that could not be used (its length, its characters).
    BadPassword,
    /// A bcrypt cost outside [`BCRYPT_COSTS`].
    BadCost,
    /// Another program held the write lock past [`BUSY_TIMEOUT`].
    Busy,
    /// The database could not be opened, read, migrated or written.
    Database,
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
        }
    }

    fn no_such_user(typed: &str) -> Error {
        Error::new(ErrorKind::NoSuchUser, format!("no such user {typed}"))
    }

    /// The message with the database's path, where it needs one.
    fn at(self, db: &Path) -> Error {
        let message = match self.kind {
            ErrorKind::Busy => format!(
                "database {} is busy: another program has held its write lock \
                 for more than {} s; try again",
                db.display(),
                BUSY_TIMEOUT.as_secs()
            ),
            ErrorKind::Database => format!("database {}: {}", db.display(), self.message),
            _ => return self,
        };
        Error::new(self.kind, message)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Error {
        store::Error::from(e).into()
    }
}

impl From<store::Error> for Error {
    fn from(e: store::Error) -> Error {
        let kind = match e.kind() {
            store::ErrorKind::Busy => ErrorKind::Busy,
            _ => ErrorKind::Database,
        };
        Error::new(kind, e.to_string())
    }
}

/// What a subcommand did to an account, named as registered; its
/// [`Display`](fmt::Display) is the line the subcommand prints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub name: String,
    pub did: Did,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Did {
    OpAdded,
    /// `op add` of a server operator: nothing written.
    AlreadyOp,
    OpRemoved,
    Deleted,
    PasswordReset,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = &self.name;
        match self.did {
            Did::OpAdded => write!(f, "{name} is now a server operator"),
            Did::AlreadyOp => write!(f, "{name} is already a server operator"),
            Did::OpRemoved => write!(f, "{name} is no longer a server operator"),
            Did::Deleted => write!(f, "deleted {name}"),
            Did::PasswordReset => write!(f, "password of {name} reset"),
        }
    }
}

/// An account as `users list` shows it; its [`Display`](fmt::Display) is
/// the line: `<name>  <created>`, then ` op`, then ` banned until <time>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    /// Unix seconds.
    pub created_at: i64,
    /// A server operator.
    pub operator: bool,
    /// A server ban in force.
    pub ban: Option<Until>,
}

/// When a ban ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Until {
    Forever,
    /// Unix seconds.
    At(i64),
}

impl fmt::Display for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}  {}", self.name, minutes(self.created_at))?;
        if self.operator {
            f.write_str(" op")?;
        }
        match self.ban {
            None => Ok(()),
            Some(Until::Forever) => f.write_str(" banned until forever"),
            Some(Until::At(t)) => write!(f, " banned until {}", minutes(t)),
        }
    }
}

/// Unix seconds as the protocol writes a `<time>`: `2026-12-08T10:30Z`.
pub fn minutes(secs: i64) -> String {
    let full = text::utc(secs);
    match full.rsplit_once(':') {
        Some((to_minutes, _seconds)) => format!("{to_minutes}Z"),
        None => full,
    }
}

// ---------------------------------------------------------------- the calls

/// `op add`: makes the account a server operator. Already one: reported
/// as [`Did::AlreadyOp`], nothing written.
pub fn op_add(db: &Path, name: &str) -> Result<Report, Error> {
    with_db(db, |conn| {
        write(conn, |conn| {
            let name = registered(conn, name)?;
            if is_operator(conn, &name)? {
                return Ok(Report {
                    name,
                    did: Did::AlreadyOp,
                });
            }
            conn.execute(
                "INSERT INTO operators (room, account, by, at) VALUES (?1, ?2, NULL, ?3)",
                (LOBBY, &name, unix_now()),
            )?;
            record(conn, "op-add", &name)?;
            Ok(Report {
                name,
                did: Did::OpAdded,
            })
        })
    })
}

/// `op remove`: the account is no longer a server operator.
pub fn op_remove(db: &Path, name: &str) -> Result<Report, Error> {
    with_db(db, |conn| {
        write(conn, |conn| {
            let name = registered(conn, name)?;
            let removed = conn.execute(
                "DELETE FROM operators WHERE room = ?1 AND account = ?2",
                (LOBBY, &name),
            )?;
            if removed == 0 {
                return Err(Error::new(
                    ErrorKind::NotOperator,
                    format!("{name} is not a server operator"),
                ));
            }
            record(conn, "op-remove", &name)?;
            Ok(Report {
                name,
                did: Did::OpRemoved,
            })
        })
    })
}

/// `op list`: the server operators, as registered, sorted without regard
/// to case.
pub fn op_list(db: &Path) -> Result<Vec<String>, Error> {
    with_db(db, |conn| {
        let mut stmt = conn.prepare(
            "SELECT coalesce(u.name, o.account) AS shown
             FROM operators o LEFT JOIN users u ON u.name = o.account
             WHERE o.room = ?1
             ORDER BY shown COLLATE NOCASE",
        )?;
        let names = stmt.query_map([LOBBY], |r| r.get(0))?;
        Ok(names.collect::<Result<_, _>>()?)
    })
}

/// `users list`: every account, sorted without regard to case, with its
/// server role and server ban (an expired ban is none).
pub fn users_list(db: &Path) -> Result<Vec<Account>, Error> {
    with_db(db, |conn| {
        let mut stmt = conn.prepare(
            "SELECT u.name, u.created_at,
                    EXISTS (SELECT 1 FROM operators o WHERE o.room = ?1 AND o.account = u.name),
                    s.account IS NOT NULL, s.until
             FROM users u
             LEFT JOIN sanctions s ON s.room = ?1 AND s.kind = 'ban' AND s.account = u.name
                                  AND (s.until IS NULL OR s.until > ?2)
             ORDER BY u.name COLLATE NOCASE",
        )?;
        let rows = stmt.query_map((LOBBY, unix_now()), |r| {
            let banned: bool = r.get(3)?;
            let until: Option<i64> = r.get(4)?;
            Ok(Account {
                name: r.get(0)?,
                created_at: r.get(1)?,
                operator: r.get(2)?,
                ban: banned.then_some(until.map_or(Until::Forever, Until::At)),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    })
}

/// The account's name as registered: lets the binary say "no such user"
/// before it asks for a password.
pub fn user(db: &Path, name: &str) -> Result<String, Error> {
    with_db(db, |conn| registered(conn, name))
}

/// `users delete`: the account, its tokens, its memberships (the lobby's
/// too), its roles, the sanctions on it and the private messages waiting
/// for it go. Its name is retired: it can never be registered again. Rooms
/// it owns that still have members keep their owner's name. Rooms it
/// leaves empty are deleted by the server (a running one, which has them
/// in memory, when it reads the change; else at its next start:
/// `store::rooms::drop_empty`), never here, behind a running server's back.
pub fn users_delete(db: &Path, name: &str) -> Result<Report, Error> {
    with_db(db, |conn| {
        write(conn, |conn| {
            let name = registered(conn, name)?;
            delete_account(conn, &name)?;
            record(conn, "delete", &name)?;
            Ok(Report {
                name,
                did: Did::Deleted,
            })
        })
    })
}

/// Whether a new password can be used: 8-72 bytes (bcrypt reads no more,
/// and a password is never cut), and no character a line may not carry
/// (nobody could type it at the login prompt).
pub fn check_password(password: &str) -> Result<(), Error> {
    if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&password.len()) {
        return Err(Error::new(
            ErrorKind::BadPassword,
            format!("password must be {MIN_PASSWORD}-{MAX_PASSWORD} bytes"),
        ));
    }
    if password.contains(text::is_forbidden) {
        return Err(Error::new(
            ErrorKind::BadPassword,
            "password must not contain control characters (nobody could type it at login)",
        ));
    }
    Ok(())
}

/// `users reset-password`: hashes `password` at `cost`, makes it the
/// account's, and revokes every token of the account.
pub fn reset_password(db: &Path, name: &str, password: &str, cost: u32) -> Result<Report, Error> {
    check_password(password)?;
    if !BCRYPT_COSTS.contains(&cost) {
        return Err(Error::new(
            ErrorKind::BadCost,
            format!(
                "bcrypt cost must be {}-{}",
                BCRYPT_COSTS.start(),
                BCRYPT_COSTS.end()
            ),
        ));
    }
    with_db(db, |conn| {
        // Known before the (slow) hash, which runs without the write lock.
        registered(conn, name)?;
        let hash = bcrypt::hash(password, cost)
            .map_err(|e| Error::new(ErrorKind::Database, format!("bcrypt: {e}")))?;
        write(conn, |conn| {
            // Read again under the lock: it may have been deleted meanwhile.
            let name = registered(conn, name)?;
            conn.execute("UPDATE users SET hash = ?1 WHERE name = ?2", (&hash, &name))?;
            conn.execute("DELETE FROM tokens WHERE account = ?1", [&name])?;
            record(conn, "password", &name)?;
            Ok(Report {
                name,
                did: Did::PasswordReset,
            })
        })
    })
}

// ---------------------------------------------------------------- helpers

/// Opens the database, runs `f` on it, and puts the path into the errors
/// that need it.
fn with_db<T>(db: &Path, f: impl FnOnce(&mut Connection) -> Result<T, Error>) -> Result<T, Error> {
    open(db)
        .and_then(|mut conn| f(&mut conn))
        .map_err(|e| e.at(db))
}

/// Opens an existing database read-write (SQLite falls back to read-only
/// for a write-protected file: reads work, writes fail with its message),
/// in WAL and synchronous=FULL like the server, migrated to this build's
/// schema.
fn open(db: &Path) -> Result<Connection, Error> {
    if let Err(e) = std::fs::metadata(db)
        && e.kind() == io::ErrorKind::NotFound
    {
        return Err(Error::new(
            ErrorKind::NoDatabase,
            format!("no database at {}", db.display()),
        ));
    }
    // No SQLITE_OPEN_CREATE: a file removed since is not made again.
    let conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| Error::new(ErrorKind::Database, format!("cannot open it: {e}")))?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let access = if conn.is_readonly(rusqlite::MAIN_DB)? {
        Access::ReadOnly
    } else {
        wal(&conn)?;
        Access::ReadWrite
    };
    store::migrate(&conn, access, db)?;
    Ok(conn)
}

/// WAL (as the server leaves it: asked only if it is not, since changing
/// the mode needs the database to itself) and FULL durability.
fn wal(conn: &Connection) -> Result<(), Error> {
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get::<_, String>(0))?;
    }
    conn.execute_batch("PRAGMA synchronous=FULL")?;
    Ok(())
}

/// Runs `f` in one immediate transaction (the write lock taken at once, so
/// a busy database fails before anything is read), committed if `f`
/// succeeds and rolled back otherwise.
fn write<T>(
    conn: &mut Connection,
    f: impl FnOnce(&Connection) -> Result<T, Error>,
) -> Result<T, Error> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let value = f(&tx)?;
    tx.commit()?;
    Ok(value)
}

/// The account's name as registered, matched without regard to case.
fn registered(conn: &Connection, typed: &str) -> Result<String, Error> {
    conn.query_row("SELECT name FROM users WHERE name = ?1", [typed], |r| {
        r.get(0)
    })
    .optional()?
    .ok_or_else(|| Error::no_such_user(typed))
}

fn is_operator(conn: &Connection, name: &str) -> Result<bool, Error> {
    Ok(conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM operators WHERE room = ?1 AND account = ?2)",
        (LOBBY, name),
        |r| r.get(0),
    )?)
}

/// Tells a running server what changed (it reads `changes` every few
/// seconds).
fn record(conn: &Connection, kind: &str, account: &str) -> Result<(), Error> {
    conn.execute(
        "INSERT INTO changes (at, kind, account) VALUES (?1, ?2, ?3)",
        (unix_now(), kind, account),
    )?;
    Ok(())
}

/// Everything of `name` (as registered) goes; see [`users_delete`].
fn delete_account(conn: &Connection, name: &str) -> Result<(), Error> {
    for sql in [
        "DELETE FROM tokens WHERE account = ?1",
        "DELETE FROM members WHERE account = ?1",
        "DELETE FROM operators WHERE account = ?1",
        "DELETE FROM sanctions WHERE account = ?1",
        "DELETE FROM messages WHERE room IS NULL AND recipient = ?1 AND pending = 1",
        "DELETE FROM users WHERE name = ?1",
    ] {
        conn.execute(sql, [name])?;
    }
    conn.execute(
        "INSERT INTO retired (name, at) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
        (name, unix_now()),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests;
