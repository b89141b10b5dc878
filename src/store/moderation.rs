//! The `tokens`, `operators`, `sanctions` and `changes` tables: login
//! tokens (only their SHA-256 is stored), room and server operators, bans
//! and mutes, and reading what the admin subcommands changed while the
//! server ran.
//!
//! Plain queries on a connection (or the batch's transaction); the thread
//! that runs them is `writer`, the subcommands that write `changes` are in
//! `admin`.

use rusqlite::{Connection, OptionalExtension};

use super::Error;
use super::ops::{Change, LOBBY, SanctionKind, SanctionRow, TokenHash};

/// Stores a token of `account`.
pub(crate) fn create_token(
    conn: &Connection,
    account: &str,
    hash: &TokenHash,
    created_at: i64,
    expires_at: i64,
) -> Result<(), Error> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO tokens (hash, account, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute((&hash[..], account, created_at, expires_at))?;
    Ok(())
}

/// A token's account, if the token is valid at `?2`.
pub(crate) const CHECK_TOKEN: &str =
    "SELECT users.name FROM tokens JOIN users ON users.name = tokens.account
     WHERE tokens.hash = ?1 AND tokens.expires_at > ?2";

/// The account (as registered) a token valid at `now` logs in. One read
/// of the primary key, and one of the account's row (a deleted account's
/// tokens are gone with it, but a token must never outlive its account).
pub(crate) fn check_token(
    conn: &Connection,
    hash: &TokenHash,
    now: i64,
) -> Result<Option<String>, Error> {
    Ok(conn
        .prepare_cached(CHECK_TOKEN)?
        .query_row((&hash[..], now), |r| r.get(0))
        .optional()?)
}

pub(crate) fn revoke_token(conn: &Connection, hash: &TokenHash) -> Result<(), Error> {
    conn.prepare_cached("DELETE FROM tokens WHERE hash = ?1")?
        .execute([&hash[..]])?;
    Ok(())
}

/// Revokes every token of the account; how many there were.
pub(crate) fn revoke_tokens(conn: &Connection, account: &str) -> Result<usize, Error> {
    Ok(conn
        .prepare_cached("DELETE FROM tokens WHERE account = ?1")?
        .execute([account])?)
}

/// Deletes tokens that expired before `now`.
pub(crate) fn expire_tokens(conn: &Connection, now: i64) -> Result<usize, Error> {
    Ok(conn
        .prepare_cached("DELETE FROM tokens WHERE expires_at <= ?1")?
        .execute([now])?)
}

/// Makes (`on`) or unmakes `account` an operator of `room`.
pub(crate) fn operator(
    conn: &Connection,
    room: &str,
    account: &str,
    on: bool,
    by: &str,
    at: i64,
) -> Result<(), Error> {
    if on {
        conn.prepare_cached(
            "INSERT OR REPLACE INTO operators (room, account, by, at) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute((room, account, by, at))?;
    } else {
        conn.prepare_cached("DELETE FROM operators WHERE room = ?1 AND account = ?2")?
            .execute((room, account))?;
    }
    Ok(())
}

/// Stores a ban or mute, replacing the one of its kind.
pub(crate) fn sanction(conn: &Connection, row: &SanctionRow, at: i64) -> Result<(), Error> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO sanctions (room, account, kind, until, reason, by, at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute((
        &row.room,
        &row.account,
        row.kind.as_str(),
        row.until,
        &row.reason,
        &row.by,
        at,
    ))?;
    Ok(())
}

pub(crate) fn lift(
    conn: &Connection,
    room: &str,
    account: &str,
    kind: SanctionKind,
) -> Result<(), Error> {
    conn.prepare_cached("DELETE FROM sanctions WHERE room = ?1 AND account = ?2 AND kind = ?3")?
        .execute((room, account, kind.as_str()))?;
    Ok(())
}

/// A deleted room's operators and sanctions go with it.
pub(crate) fn delete_room(conn: &Connection, room: &str) -> Result<(), Error> {
    conn.prepare_cached("DELETE FROM operators WHERE room = ?1")?
        .execute([room])?;
    conn.prepare_cached("DELETE FROM sanctions WHERE room = ?1")?
        .execute([room])?;
    Ok(())
}

/// Whatever the server may have written for a deleted account after the
/// deletion: its cursors and memberships, tokens, roles, sanctions.
pub(crate) fn forget(conn: &Connection, account: &str) -> Result<(), Error> {
    for sql in [
        "DELETE FROM members WHERE account = ?1",
        "DELETE FROM tokens WHERE account = ?1",
        "DELETE FROM operators WHERE account = ?1",
        "DELETE FROM sanctions WHERE account = ?1",
        "DELETE FROM messages WHERE room IS NULL AND recipient = ?1 AND pending = 1",
    ] {
        conn.prepare_cached(sql)?.execute([account])?;
    }
    Ok(())
}

/// Server operators, as registered.
pub(crate) fn server_ops(conn: &Connection) -> Result<Vec<String>, Error> {
    room_ops(conn, LOBBY)
}

/// A room's operators, as registered (the lobby's: server operators).
pub(crate) fn room_ops(conn: &Connection, room: &str) -> Result<Vec<String>, Error> {
    let mut stmt = conn.prepare_cached(
        "SELECT coalesce(users.name, operators.account) FROM operators
         LEFT JOIN users ON users.name = operators.account
         WHERE operators.room = ?1 ORDER BY operators.account",
    )?;
    let names = stmt.query_map([room], |r| r.get(0))?;
    Ok(names.collect::<Result<_, _>>()?)
}

/// Bans and mutes that have not ended at `now`.
pub(crate) fn sanctions(conn: &Connection, now: i64) -> Result<Vec<SanctionRow>, Error> {
    let mut stmt = conn.prepare(
        "SELECT room, account, kind, until, reason, by FROM sanctions
         WHERE until IS NULL OR until > ?1",
    )?;
    let rows = stmt.query_map([now], |r| {
        let kind: String = r.get(2)?;
        Ok(SanctionRow {
            room: r.get(0)?,
            account: r.get(1)?,
            kind: if kind == "mute" {
                SanctionKind::Mute
            } else {
                SanctionKind::Ban
            },
            until: r.get(3)?,
            reason: r.get(4)?,
            by: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The newest row of `changes` (0 if none).
pub(crate) fn last_change(conn: &Connection) -> Result<i64, Error> {
    Ok(conn.query_row("SELECT coalesce(max(id), 0) FROM changes", [], |r| r.get(0))?)
}

/// The changes after row `after`, oldest first, with the newest row's id.
pub(crate) fn changes_after(conn: &Connection, after: i64) -> Result<(Vec<Change>, i64), Error> {
    let mut stmt =
        conn.prepare_cached("SELECT id, kind, account FROM changes WHERE id > ?1 ORDER BY id")?;
    let rows = stmt.query_map([after], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    let mut last = after;
    let mut changes = Vec::new();
    for row in rows {
        let (id, kind, account) = row?;
        last = last.max(id);
        changes.push(match kind.as_str() {
            "op-add" => Change::OpAdded(account),
            "op-remove" => Change::OpRemoved(account),
            "delete" => Change::Deleted(account),
            "password" => Change::PasswordReset(account),
            other => {
                log::warn!("unknown change {other:?} of {account} in the database: ignored");
                continue;
            }
        });
    }
    Ok((changes, last))
}

/// Deletes rows of `changes` older than `before` (unix seconds) that were
/// reported already (ids up to `reported`), but never the newest: row ids
/// are not AUTOINCREMENT, so an empty table would number the next change
/// 1 again, below what the server has seen.
pub(crate) fn prune_changes(conn: &Connection, before: i64, reported: i64) -> Result<usize, Error> {
    Ok(conn
        .prepare_cached(
            "DELETE FROM changes WHERE at < ?1 AND id <= ?2
                 AND id < (SELECT max(id) FROM changes)",
        )?
        .execute([before, reported])?)
}
