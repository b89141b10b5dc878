//! The SQLite store: opening the database (its file modes, journal mode,
//! durability and read-only fallbacks), the errors it reports, its schema
//! ([`schema`], numbered migrations), the queries per table ([`accounts`],
//! [`rooms`], [`messages`]) and the one store thread that makes every
//! write ([`writer`], with its handle [`Store`]). What the loop asks of
//! the store, and what it answers, is [`ops`].
//!
//! Every connection to the database is opened here, on a worker thread or
//! at start: never on the event loop. The bcrypt pool (`auth`) reads
//! accounts on its own connections and hands its writes to the store
//! thread.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::owner_only;

pub(crate) mod accounts;
pub(crate) mod files;
pub(crate) mod messages;
pub(crate) mod moderation;
pub mod ops;
pub(crate) mod rooms;
pub mod schema;
pub mod writer;

pub use schema::SCHEMA_VERSION;
pub(crate) use schema::migrate;
pub use writer::{DEFAULT_RING, Refused, Retention, Store, StoreConfig};

#[cfg(test)]
pub(crate) mod tests;

/// How long a statement waits for another connection's lock before it gives
/// up with SQLITE_BUSY, and the user gets `! service temporarily
/// unavailable, try again`. Our own writes are one-row inserts that hold the
/// write lock for an fsync or two, so workers never wait anywhere near this
/// for each other; only something outside holding the lock for long (an
/// admin's open transaction, a VACUUM) does, and then waiting longer does
/// not help the person at the prompt, who has already waited for bcrypt.
/// Meanwhile a waiting worker serves nobody: with two workers, two stuck
/// registrations would hold up every login for the whole timeout. Hence 2 s,
/// not the 5 s this used to be.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(2);

/// What went wrong with the database.
#[derive(Clone, Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The database could not be opened, read or written.
    Database,
    /// The database was written by a newer NeoChat.
    SchemaTooNew,
    /// The database is read-only, and this build has to write to it first
    /// (its schema needs migrating).
    ReadOnly,
    /// A worker thread could not be started.
    Thread,
    /// Another connection held the lock this needed for longer than the
    /// busy timeout (SQLITE_BUSY).
    Busy,
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
        }
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
        let kind = if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) {
            ErrorKind::Busy
        } else {
            ErrorKind::Database
        };
        Error::new(kind, e.to_string())
    }
}

/// Makes the database and its `-wal` and `-shm` files owner-only: creates
/// the database mode 0600 before SQLite does (which would make it 0644, and
/// the `-wal` and `-shm` files like it), and tightens any of them an older
/// version or an operator left open to others (logged). Failing here stops
/// nothing: a database that cannot be created is SQLite's to report, with
/// its clearer message.
pub(crate) fn private_files(db: &Path) {
    let shown = db.as_os_str();
    // Names SQLite reads otherwise: an in-memory or temporary database, or
    // a `file:` URI.
    if shown.is_empty() || shown == ":memory:" || shown.as_encoded_bytes().starts_with(b"file:") {
        return;
    }
    match owner_only::create(db) {
        Ok(true) => log::info!("created database {} (mode 0600)", db.display()),
        Ok(false) => {}
        Err(e) => log::debug!("cannot create database {}: {e}", db.display()),
    }
    for (suffix, what) in [
        ("", "database"),
        ("-wal", "database write-ahead log"),
        ("-shm", "database shared-memory file"),
    ] {
        let mut path = db.as_os_str().to_owned();
        path.push(suffix);
        owner_only::tighten_logged(Path::new(&path), what);
    }
}

/// How the account store could be opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    /// Reads and writes: the normal case.
    ReadWrite,
    /// The file is write-protected, so SQLite opened it read-only. Logins
    /// work; registrations cannot.
    ReadOnly,
    /// Read-only, in a directory we cannot write either, with no `-wal`
    /// file: SQLite refuses to read a WAL database then (it must open the
    /// `-wal` file, and cannot create it), unless the database is opened as
    /// `immutable`, which takes no locks and assumes nobody else changes the
    /// file. With no `-wal` file, every commit is in the main file, so the
    /// snapshot is complete when we open it.
    Immutable,
}

/// Prepared statements kept per connection ([`Connection::prepare_cached`]):
/// room for every statement the store uses (about 40; rusqlite keeps 16).
const STATEMENT_CACHE: usize = 64;

/// Every statement is parsed and planned once per connection, not once per
/// use. The bundled SQLite is built with STAT4, which plans a statement
/// with a range on a bound value (`room <> ?2`, `expires_at > ?2`) for the
/// value bound: each new value re-prepared it, parser and planner, inside
/// `sqlite3_step`. That was most of the store thread's time in a storm of
/// token logins (about 80 us a login). With the query planner stability
/// guarantee a plan is made once and kept; our tables have no statistics
/// for STAT4 to use anyway.
fn plan_once(conn: &Connection) -> Result<(), Error> {
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(())
}

pub(crate) fn open(path: &Path) -> Result<(Connection, Access), Error> {
    let cannot = |e: rusqlite::Error| {
        let hint = if extended_code(&e) == Some(rusqlite::ffi::SQLITE_READONLY_DIRECTORY) {
            " (SQLite must create the -wal and -shm files next to it, and \
             cannot write to that directory)"
        } else {
            ""
        };
        Error::new(
            ErrorKind::Database,
            format!("cannot open database {}: {e}{hint}", path.display()),
        )
    };
    // Opened read-write, SQLite falls back to read-only by itself when the
    // file is write-protected.
    let conn = Connection::open(path).map_err(cannot)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    plan_once(&conn)?;
    if conn.is_readonly(rusqlite::MAIN_DB)? {
        // Nothing to set up on a database we cannot write; the first read
        // tells whether SQLite can read it at all.
        return match conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0)) {
            Ok(_) => Ok((conn, Access::ReadOnly)),
            Err(e) if extended_code(&e) == Some(rusqlite::ffi::SQLITE_READONLY_DIRECTORY) => {
                drop(conn);
                let conn = Connection::open_with_flags(
                    immutable_uri(path),
                    OpenFlags::SQLITE_OPEN_READ_ONLY
                        | OpenFlags::SQLITE_OPEN_URI
                        | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .map_err(cannot)?;
                plan_once(&conn)?;
                conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))
                    .map_err(cannot)?;
                Ok((conn, Access::Immutable))
            }
            Err(e) => Err(cannot(e)),
        };
    }
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .map_err(cannot)?;
    if !mode.eq_ignore_ascii_case("wal") {
        log::warn!("database journal mode is {mode}, not wal");
    }
    // FULL: an acknowledged registration survives a power loss, not only a
    // crash. Builds differ in what they accept, so read it back.
    conn.execute_batch("PRAGMA synchronous=FULL")?;
    let sync: i64 = conn.query_row("PRAGMA synchronous", [], |r| r.get(0))?;
    if sync < 2 {
        return Err(Error::new(
            ErrorKind::Database,
            format!("database refused synchronous=FULL (got {sync})"),
        ));
    }
    Ok((conn, Access::ReadWrite))
}

/// SQLite's extended result code of an error, if it came from SQLite.
pub(crate) fn extended_code(e: &rusqlite::Error) -> Option<std::ffi::c_int> {
    e.sqlite_error().map(|e| e.extended_code)
}

/// `file:PATH?immutable=1`, with every byte of the path that is not plainly
/// safe in a URI percent-encoded (`?`, `#` and `%` would change its meaning).
pub(crate) fn immutable_uri(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut uri = String::from("file:");
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-_.~".contains(&b) {
            uri.push(char::from(b));
        } else {
            uri.push_str(&format!("%{b:02X}"));
        }
    }
    uri.push_str("?immutable=1");
    uri
}
