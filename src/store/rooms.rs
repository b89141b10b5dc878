//! The `rooms` and `members` tables: creating and deleting rooms, topics,
//! joining and leaving, the cursors of what each account has seen in each
//! room (the lobby's rows say an account was ever online), and the
//! start-up [`Snapshot`] of every room.
//!
//! Plain queries on a connection (or the batch's transaction); messages
//! are in `messages`, the thread that runs these in `writer`.

use rusqlite::Connection;

use super::ops::{LOBBY, RoomRow, Snapshot};
use super::{Error, accounts, messages, moderation};

/// A new room, with its owner as its first member (having seen nothing).
/// A room of that name still stored (which the loop believes deleted)
/// becomes the new one: owner and topic replaced, its count kept so that
/// numbers never go back.
pub(crate) fn create(conn: &Connection, name: &str, owner: &str, at: i64) -> Result<(), Error> {
    if name == LOBBY {
        return Err(Error::new(
            super::ErrorKind::Database,
            "the lobby cannot be created",
        ));
    }
    conn.prepare_cached(
        "INSERT INTO rooms (name, owner, created_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (name) DO UPDATE SET
             owner = excluded.owner, topic = NULL, topic_by = NULL,
             created_at = excluded.created_at",
    )?
    .execute((name, owner, at))?;
    join(conn, name, owner, 0, at)
}

/// Deletes a room, its members and its messages (never the lobby).
pub(crate) fn delete(conn: &Connection, name: &str) -> Result<(), Error> {
    if name == LOBBY {
        return Err(Error::new(
            super::ErrorKind::Database,
            "the lobby cannot be deleted",
        ));
    }
    messages::delete_room(conn, name)?;
    moderation::delete_room(conn, name)?;
    conn.prepare_cached("DELETE FROM members WHERE room = ?1")?
        .execute([name])?;
    conn.prepare_cached("DELETE FROM rooms WHERE name = ?1")?
        .execute([name])?;
    Ok(())
}

/// Deletes every room (not the lobby) with no member left, with its
/// messages, operators and sanctions: what `neochat-server users delete`
/// leaves to the server. How many.
pub(crate) fn drop_empty(conn: &Connection) -> Result<usize, Error> {
    let empty: Vec<String> = conn
        .prepare(
            "SELECT name FROM rooms WHERE name <> ?1
             AND NOT EXISTS (SELECT 1 FROM members WHERE members.room = rooms.name)",
        )?
        .query_map([LOBBY], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for room in &empty {
        delete(conn, room)?;
    }
    Ok(empty.len())
}

/// Sets (or with `None` clears) a room's topic.
pub(crate) fn topic(
    conn: &Connection,
    room: &str,
    topic: Option<&str>,
    by: &str,
) -> Result<(), Error> {
    conn.prepare_cached("UPDATE rooms SET topic = ?1, topic_by = ?2 WHERE name = ?3")?
        .execute((topic, topic.map(|_| by), room))?;
    Ok(())
}

/// `account` is a member of `room`, having seen up to message `seen`
/// (already a member: only the cursor changes).
pub(crate) fn join(
    conn: &Connection,
    room: &str,
    account: &str,
    seen: u64,
    at: i64,
) -> Result<(), Error> {
    conn.prepare_cached(
        "INSERT INTO members (room, account, seen, joined_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (room, account) DO UPDATE SET seen = excluded.seen",
    )?
    .execute((room, account, seen, at))?;
    Ok(())
}

/// `account` left `room` (nobody leaves the lobby: ignored).
pub(crate) fn part(conn: &Connection, room: &str, account: &str) -> Result<(), Error> {
    if room != LOBBY {
        conn.prepare_cached("DELETE FROM members WHERE room = ?1 AND account = ?2")?
            .execute((room, account))?;
    }
    Ok(())
}

/// What `account` had seen when its last connection closed: the lobby's
/// cursor is always stored (the account has now been online); another
/// room's only while the account is still a member.
pub(crate) fn seen(
    conn: &Connection,
    account: &str,
    seen: &[(String, u64)],
    at: i64,
) -> Result<(), Error> {
    for (room, n) in seen {
        if room == LOBBY {
            join(conn, LOBBY, account, *n, at)?;
        } else {
            conn.prepare_cached("UPDATE members SET seen = ?1 WHERE room = ?2 AND account = ?3")?
                .execute((n, room, account))?;
        }
    }
    Ok(())
}

/// Everything the loop needs at start: the last message id, the lobby
/// then every room by name with its newest `ring` messages, every account.
/// Read in one transaction, so it is one moment's state.
pub(crate) fn snapshot(conn: &Connection, ring: usize) -> Result<Snapshot, Error> {
    conn.execute_batch("BEGIN")?;
    let result = read_snapshot(conn, ring);
    // Only reads: nothing to keep or lose.
    let _ = conn.execute_batch("COMMIT");
    result
}

fn read_snapshot(conn: &Connection, ring: usize) -> Result<Snapshot, Error> {
    let mut rooms = conn
        .prepare(
            "SELECT name, owner, topic, topic_by, count
             FROM rooms ORDER BY name <> ?1, name",
        )?
        .query_map([LOBBY], |r| {
            let topic: Option<String> = r.get(2)?;
            let by: Option<String> = r.get(3)?;
            Ok(RoomRow {
                owner: r.get(1)?,
                topic: topic.map(|t| (t, by.unwrap_or_default())),
                count: r.get(4)?,
                name: r.get(0)?,
                ..RoomRow::default()
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    // A database whose lobby row went missing (deleted by hand): the loop
    // still has a lobby, counted from what is stored.
    if rooms.first().is_none_or(|r| r.name != LOBBY) {
        let count: Option<u64> = conn.query_row(
            "SELECT max(n) FROM messages WHERE room = ?1",
            [LOBBY],
            |r| r.get(0),
        )?;
        rooms.insert(
            0,
            RoomRow {
                name: LOBBY.to_owned(),
                count: count.unwrap_or(0),
                ..RoomRow::default()
            },
        );
    }
    let mut members = conn.prepare(
        "SELECT coalesce(users.name, members.account) FROM members
         LEFT JOIN users ON users.name = members.account
         WHERE members.room = ?1",
    )?;
    for room in &mut rooms {
        room.recent = messages::recent(conn, &room.name, ring)?;
        if room.name != LOBBY {
            room.members = members
                .query_map([&room.name], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            room.ops = moderation::room_ops(conn, &room.name)?;
        }
    }
    Ok(Snapshot {
        last_id: messages::last_id(conn)?,
        rooms,
        accounts: accounts::names(conn)?,
        server_ops: moderation::server_ops(conn)?,
        sanctions: moderation::sanctions(conn, super::writer::unix_now())?,
        last_change: moderation::last_change(conn)?,
        file_usage: super::files::usage(conn)?,
    })
}
