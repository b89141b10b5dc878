//! The `messages` table: storing a message, the login's read of offline
//! private messages (and marking them delivered, or pending again),
//! `/history` reads of a room or a private conversation, the newest
//! messages of a room for the start-up snapshot, and expiring old ones.
//!
//! Plain queries on a connection (or the batch's transaction): the store
//! thread (`writer`) decides when they run. Rooms and members are in
//! `rooms`.

use rusqlite::{Connection, Row};

use super::Error;
use super::ops::{AccountState, HistoryOf, Message};

/// The most offline private messages handed over at a login (PROTOCOL.md:
/// the newest 200; the rest are counted).
pub const OFFLINE_MAX: usize = 200;

/// The columns [`from_row`] reads, in its order.
const COLUMNS: &str = "id, room, n, sender, recipient, at, me, text";

fn from_row(r: &Row<'_>) -> rusqlite::Result<Message> {
    Ok(Message {
        id: r.get(0)?,
        room: r.get(1)?,
        n: r.get(2)?,
        sender: r.get(3)?,
        recipient: r.get(4)?,
        at: r.get(5)?,
        me: r.get(6)?,
        text: r.get(7)?,
    })
}

/// Stores a message, and raises its room's count to its number (counts
/// never go back, not even when old messages expire).
pub(crate) fn insert(conn: &Connection, m: &Message, pending: bool) -> Result<(), Error> {
    conn.prepare_cached(
        "INSERT INTO messages (id, room, n, sender, recipient, at, me, text, pending)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute((
        m.id,
        &m.room,
        m.n,
        &m.sender,
        &m.recipient,
        m.at,
        m.me,
        &m.text,
        pending,
    ))?;
    Ok(())
}

/// Raises `room`'s count to `n` (the store thread does it once per room
/// and batch, not once per message).
pub(crate) fn raise_count(conn: &Connection, room: &str, n: u64) -> Result<(), Error> {
    conn.prepare_cached("UPDATE rooms SET count = max(count, ?1) WHERE name = ?2")?
        .execute((n, room))?;
    Ok(())
}

/// The rooms (not the lobby) of an account, with its cursor in each.
pub(crate) const ROOMS_OF: &str =
    "SELECT room, seen FROM members WHERE account = ?1 AND room <> ?2 ORDER BY room";
/// How many private messages wait for an account.
pub(crate) const OFFLINE_COUNT: &str =
    "SELECT count(*) FROM messages WHERE pending = 1 AND recipient = ?1";

/// What `account` had when its last connection closed, and the private
/// messages waiting for it: the newest [`OFFLINE_MAX`], oldest first, the
/// rest counted. Nothing changes: the loop sends [`Op::Delivered`] once a
/// connection entered with them, so a login that fails halfway loses none.
///
/// [`Op::Delivered`]: super::ops::Op::Delivered
pub(crate) fn load(conn: &Connection, account: &str) -> Result<AccountState, Error> {
    let lobby_seen = {
        let mut stmt =
            conn.prepare_cached("SELECT seen FROM members WHERE room = ?1 AND account = ?2")?;
        let mut rows = stmt.query((super::ops::LOBBY, account))?;
        match rows.next()? {
            Some(row) => Some(row.get(0)?),
            None => None,
        }
    };
    let rooms = conn
        .prepare_cached(ROOMS_OF)?
        .query_map((account, super::ops::LOBBY), |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    let mut offline = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM messages WHERE pending = 1 AND recipient = ?1
             ORDER BY id DESC LIMIT ?2"
        ))?
        .query_map((account, OFFLINE_MAX as i64), from_row)?
        .collect::<Result<Vec<_>, _>>()?;
    offline.reverse();
    let waiting: u64 = conn
        .prepare_cached(OFFLINE_COUNT)?
        .query_row([account], |r| r.get(0))?;
    let older_by = match offline.first() {
        Some(oldest) if waiting > offline.len() as u64 => conn
            .prepare_cached(
                "SELECT sender, count(*) AS n FROM messages
                 WHERE pending = 1 AND recipient = ?1 AND id < ?2
                 GROUP BY sender ORDER BY n DESC, sender",
            )?
            .query_map((account, oldest.id), |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<Vec<_>, _>>()?,
        _ => Vec::new(),
    };
    Ok(AccountState {
        lobby_seen,
        rooms,
        offline_older: waiting.saturating_sub(offline.len() as u64),
        older_by,
        offline,
    })
}

/// The account's waiting private messages up to `up_to` were handed over.
pub(crate) fn delivered(conn: &Connection, account: &str, up_to: u64) -> Result<(), Error> {
    conn.prepare_cached(
        "UPDATE messages SET pending = 0 WHERE pending = 1 AND recipient = ?1 AND id <= ?2",
    )?
    .execute((account, up_to))?;
    Ok(())
}

/// Up to `limit` messages, oldest first, with an id below `before` (when
/// given): of a room, or of the private conversation between `account`
/// and the other, both ways.
pub(crate) fn history(
    conn: &Connection,
    account: &str,
    of: &HistoryOf,
    limit: usize,
    before: Option<u64>,
) -> Result<Vec<Message>, Error> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let before = before.map_or(i64::MAX, |b| i64::try_from(b).unwrap_or(i64::MAX));
    let mut found = match of {
        HistoryOf::Room(room) => conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM messages WHERE room = ?1 AND id < ?2
                 ORDER BY id DESC LIMIT ?3"
            ))?
            .query_map((room, before, limit), from_row)?
            .collect::<Result<Vec<_>, _>>()?,
        // Each way on its own reads the index newest first and stops at the
        // limit; then the newest `limit` of both.
        HistoryOf::Private(other) => conn
            .prepare_cached(&format!(
                "SELECT * FROM (
                     SELECT {COLUMNS} FROM messages
                     WHERE room IS NULL AND sender = ?1 AND recipient = ?2 AND id < ?3
                     ORDER BY id DESC LIMIT ?4)
                 UNION ALL
                 SELECT * FROM (
                     SELECT {COLUMNS} FROM messages
                     WHERE room IS NULL AND sender = ?2 AND recipient = ?1 AND id < ?3
                     ORDER BY id DESC LIMIT ?4)
                 ORDER BY id DESC LIMIT ?4"
            ))?
            .query_map((account, other, before, limit), from_row)?
            .collect::<Result<Vec<_>, _>>()?,
    };
    found.reverse();
    Ok(found)
}

/// The newest `limit` messages of a room, oldest first.
pub(crate) fn recent(conn: &Connection, room: &str, limit: usize) -> Result<Vec<Message>, Error> {
    history(conn, "", &HistoryOf::Room(room.to_owned()), limit, None)
}

/// The highest message id stored, 0 if none.
pub(crate) fn last_id(conn: &Connection) -> Result<u64, Error> {
    Ok(conn
        .query_row("SELECT max(id) FROM messages", [], |r| {
            r.get::<_, Option<u64>>(0)
        })?
        .unwrap_or(0))
}

/// Deletes those of the oldest `batch` messages (by id) that are older than
/// `cutoff` (Unix seconds); how many it deleted. Ids grow with time, so
/// the oldest are first: looking at only `batch` rows by the primary key
/// needs no index on the time (one less b-tree to update per message),
/// and costs nothing when nothing has expired.
pub(crate) fn expire(conn: &Connection, cutoff: i64, batch: usize) -> Result<usize, Error> {
    let batch = i64::try_from(batch).unwrap_or(i64::MAX);
    Ok(conn
        .prepare_cached(
            "DELETE FROM messages WHERE id IN
                 (SELECT id FROM (SELECT id, at FROM messages ORDER BY id LIMIT ?2)
                  WHERE at < ?1)",
        )?
        .execute((cutoff, batch))?)
}

/// Deletes every message of a room (the room is being deleted).
pub(crate) fn delete_room(conn: &Connection, room: &str) -> Result<(), Error> {
    conn.prepare_cached("DELETE FROM messages WHERE room = ?1")?
        .execute([room])?;
    Ok(())
}
