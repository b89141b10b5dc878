//! The database schema and its migrations, numbered by `PRAGMA
//! user_version`.
//!
//! [`MIGRATIONS`] is the whole history of the schema: step N takes a
//! database from version N-1 to N, and a step, once released, never
//! changes (a database out there was made by it). To change the tables,
//! append a step. A fresh database runs every step; an older one runs the
//! steps it lacks, all in one immediate transaction, so a crash or a second
//! server starting at the same time leaves either the old version or the
//! new one, never half of it. A database newer than this build is refused.

use std::path::Path;

use rusqlite::Connection;

use super::{Access, Error, ErrorKind};

/// Every step of the schema, in order; see the module documentation.
pub const MIGRATIONS: &[&str] = &[
    // 1: accounts (version 1 of NeoChat).
    "CREATE TABLE IF NOT EXISTS users (
         id         INTEGER PRIMARY KEY,
         name       TEXT NOT NULL UNIQUE COLLATE NOCASE,
         hash       TEXT NOT NULL,
         created_at INTEGER NOT NULL
     );",
    // 2: rooms, their members (the lobby's rows are every account's lobby
    // cursor: no row, never online) and messages (public lines, `/me`,
    // private messages, those waiting for an offline recipient pending).
    // Names are matched without regard to case, as accounts are.
    "CREATE TABLE rooms (
         name       TEXT PRIMARY KEY,
         owner      TEXT COLLATE NOCASE,
         topic      TEXT,
         topic_by   TEXT,
         count      INTEGER NOT NULL DEFAULT 0,
         created_at INTEGER NOT NULL
     );
     INSERT INTO rooms (name, owner, created_at) VALUES ('lobby', NULL, unixepoch());
     CREATE TABLE members (
         room      TEXT NOT NULL,
         account   TEXT NOT NULL COLLATE NOCASE,
         seen      INTEGER NOT NULL,
         joined_at INTEGER,
         PRIMARY KEY (room, account)
     ) WITHOUT ROWID;
     CREATE INDEX members_by_account ON members (account, room);
     CREATE TABLE messages (
         id        INTEGER PRIMARY KEY,
         room      TEXT,
         n         INTEGER NOT NULL,
         sender    TEXT NOT NULL COLLATE NOCASE,
         recipient TEXT COLLATE NOCASE,
         at        INTEGER NOT NULL,
         me        INTEGER NOT NULL,
         text      TEXT NOT NULL,
         pending   INTEGER NOT NULL DEFAULT 0
     );
     CREATE INDEX messages_by_room ON messages (room, id) WHERE room IS NOT NULL;
     CREATE INDEX messages_private ON messages (sender, recipient, id) WHERE room IS NULL;
     CREATE INDEX messages_pending ON messages (recipient, id) WHERE pending = 1;",
    // 3: accounts and moderation. `tokens` holds only the SHA-256 of each
    // login token. `operators` are room operators, with the lobby's rows
    // the server operators. `sanctions` are bans and mutes, per room (the
    // lobby's: server-wide), `until` NULL for ever. `retired` names were
    // deleted and can never be registered again. `changes` is written by
    // the admin subcommands (`neochat-server op|users ...`), which may run
    // while the server does: the server reads what is new every few
    // seconds and acts on it.
    "CREATE TABLE tokens (
         hash       BLOB PRIMARY KEY,
         account    TEXT NOT NULL COLLATE NOCASE,
         created_at INTEGER NOT NULL,
         expires_at INTEGER NOT NULL
     ) WITHOUT ROWID;
     CREATE INDEX tokens_by_account ON tokens (account);
     CREATE TABLE operators (
         room    TEXT NOT NULL,
         account TEXT NOT NULL COLLATE NOCASE,
         by      TEXT,
         at      INTEGER NOT NULL,
         PRIMARY KEY (room, account)
     ) WITHOUT ROWID;
     CREATE TABLE sanctions (
         room    TEXT NOT NULL,
         account TEXT NOT NULL COLLATE NOCASE,
         kind    TEXT NOT NULL CHECK (kind IN ('ban', 'mute')),
         until   INTEGER,
         reason  TEXT NOT NULL DEFAULT '',
         by      TEXT NOT NULL,
         at      INTEGER NOT NULL,
         PRIMARY KEY (room, account, kind)
     ) WITHOUT ROWID;
     CREATE TABLE retired (
         name TEXT PRIMARY KEY COLLATE NOCASE,
         at   INTEGER NOT NULL
     ) WITHOUT ROWID;
     CREATE TABLE changes (
         id      INTEGER PRIMARY KEY,
         at      INTEGER NOT NULL,
         kind    TEXT NOT NULL,
         account TEXT NOT NULL
     );",
    // 4: uploaded files. `id` is the unguessable part of the file's URL;
    // `sha` names its bytes in the `files/` directory (the same bytes
    // uploaded twice are kept once, with two rows); `mime` and `inline` are
    // what was detected from the bytes. Rows expire with the history.
    "CREATE TABLE files (
         id         TEXT PRIMARY KEY,
         sha        BLOB NOT NULL,
         owner      TEXT NOT NULL COLLATE NOCASE,
         name       TEXT NOT NULL,
         size       INTEGER NOT NULL,
         mime       TEXT NOT NULL,
         inline     INTEGER NOT NULL,
         room       TEXT NOT NULL,
         created_at INTEGER NOT NULL
     ) WITHOUT ROWID;
     CREATE INDEX files_by_sha ON files (sha);
     CREATE INDEX files_by_age ON files (created_at);",
];

/// The schema this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The version a database says it has.
pub fn version(conn: &Connection) -> Result<i64, Error> {
    Ok(conn.query_row("PRAGMA user_version", [], |r| r.get(0))?)
}

/// Brings the schema to [`SCHEMA_VERSION`], in one immediate transaction.
/// A read-only database must already be there: it is used as it is, or
/// refused with a message that says why.
pub(crate) fn migrate(conn: &Connection, access: Access, path: &Path) -> Result<(), Error> {
    let found = version(conn)?;
    check(found)?;
    if found == SCHEMA_VERSION {
        return Ok(());
    }
    if access != Access::ReadWrite {
        return Err(Error::new(
            ErrorKind::ReadOnly,
            format!(
                "database {} is read-only and needs migrating from schema version \
                 {found} to {SCHEMA_VERSION}: start once with write access to it \
                 and its directory",
                path.display()
            ),
        ));
    }
    run(conn, MIGRATIONS)
}

/// Applies the `steps` a database lacks in one immediate transaction
/// (`Connection::transaction_with_behavior` wants `&mut`; the steps are
/// plain SQL, so the transaction is run by hand).
fn run(conn: &Connection, steps: &[&str]) -> Result<(), Error> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let result = apply(conn, steps);
    match result {
        Ok(()) => conn.execute_batch("COMMIT")?,
        Err(_) => {
            // The error that matters is the step's; a failed rollback
            // leaves SQLite to roll back when the connection closes.
            let _ = conn.execute_batch("ROLLBACK");
        }
    }
    result
}

/// The steps the database lacks, read again under the write lock: another
/// server may have migrated it since it was first read.
fn apply(conn: &Connection, steps: &[&str]) -> Result<(), Error> {
    let target = steps.len() as i64;
    let found = version(conn)?;
    if found > target {
        return check(found);
    }
    let from = usize::try_from(found).unwrap_or(0);
    for (i, step) in steps.iter().enumerate().skip(from) {
        conn.execute_batch(step)
            .map_err(|e| Error::new(ErrorKind::Database, format!("schema step {}: {e}", i + 1)))?;
    }
    conn.execute_batch(&format!("PRAGMA user_version = {target}"))?;
    if found > 0 && found < target {
        log::info!("database schema migrated from version {found} to {target}");
    }
    Ok(())
}

fn check(found: i64) -> Result<(), Error> {
    if found > SCHEMA_VERSION {
        return Err(Error::new(
            ErrorKind::SchemaTooNew,
            format!(
                "database schema version {found} is newer than this server's ({SCHEMA_VERSION})"
            ),
        ));
    }
    if found < 0 {
        return Err(Error::new(
            ErrorKind::Database,
            format!("database schema version {found} is not one NeoChat writes"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What version 1 of NeoChat wrote, frozen: a database from it must
    /// migrate to today's schema with its accounts intact.
    const VERSION_1: &str = "CREATE TABLE users (
             id         INTEGER PRIMARY KEY,
             name       TEXT NOT NULL UNIQUE COLLATE NOCASE,
             hash       TEXT NOT NULL,
             created_at INTEGER NOT NULL
         );
         INSERT INTO users (name, hash, created_at) VALUES ('Alice', '$2b$04$x', 1);
         PRAGMA user_version = 1;";

    fn memory() -> Connection {
        Connection::open_in_memory().expect("in-memory database")
    }

    #[test]
    fn a_fresh_database_gets_every_step() {
        let conn = memory();
        migrate(&conn, Access::ReadWrite, Path::new(":memory:")).expect("migrates");
        assert_eq!(version(&conn).expect("version"), SCHEMA_VERSION);
        // Running it again changes nothing.
        migrate(&conn, Access::ReadWrite, Path::new(":memory:")).expect("again");
        assert_eq!(version(&conn).expect("version"), SCHEMA_VERSION);
    }

    #[test]
    fn a_version_1_database_keeps_its_accounts() {
        let conn = memory();
        conn.execute_batch(VERSION_1).expect("version 1");
        migrate(&conn, Access::ReadWrite, Path::new(":memory:")).expect("migrates");
        assert_eq!(version(&conn).expect("version"), SCHEMA_VERSION);
        let name: String = conn
            .query_row("SELECT name FROM users WHERE name = 'alice'", [], |r| {
                r.get(0)
            })
            .expect("the account survived, still without regard to case");
        assert_eq!(name, "Alice");
        // Step 2 made the lobby's row, and nothing else.
        let rooms: Vec<(String, Option<String>, i64)> = conn
            .prepare("SELECT name, owner, count FROM rooms")
            .and_then(|mut s| {
                s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect()
            })
            .expect("rooms");
        assert_eq!(rooms, [("lobby".to_owned(), None, 0)]);
        for table in ["members", "messages"] {
            let n: i64 = conn
                .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
                .expect(table);
            assert_eq!(n, 0, "{table}");
        }
    }

    #[test]
    fn a_newer_or_corrupt_version_is_refused_and_left_alone() {
        for v in [SCHEMA_VERSION + 1, -1] {
            let conn = memory();
            conn.execute_batch(&format!("PRAGMA user_version = {v}"))
                .expect("set version");
            let err =
                migrate(&conn, Access::ReadWrite, Path::new(":memory:")).expect_err("refused");
            let want = if v > 0 {
                ErrorKind::SchemaTooNew
            } else {
                ErrorKind::Database
            };
            assert_eq!(err.kind(), want, "{err}");
            assert_eq!(version(&conn).expect("version"), v, "untouched");
        }
    }

    #[test]
    fn a_failing_step_rolls_every_step_back() {
        let conn = memory();
        conn.execute_batch(VERSION_1).expect("version 1");
        let steps = [
            MIGRATIONS[0],
            "CREATE TABLE rooms (name TEXT);",
            "SELECT * FROM nowhere;",
        ];
        let err = run(&conn, &steps).expect_err("step 3 fails");
        assert!(err.to_string().contains("schema step 3"), "{err}");
        assert_eq!(version(&conn).expect("version"), 1, "still version 1");
        assert!(
            conn.prepare("SELECT * FROM rooms").is_err(),
            "step 2 was rolled back"
        );
        // And without the failing step, both apply.
        run(&conn, &steps[..2]).expect("steps 1 and 2");
        assert_eq!(version(&conn).expect("version"), 2);
        conn.prepare("SELECT * FROM rooms").expect("step 2 applied");
    }
}
