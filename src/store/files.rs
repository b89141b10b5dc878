//! The `files` table: one row per upload (who, what name, how big, what
//! type, where it was announced, when), pointing at its bytes in the
//! `files/` directory by hash (see `crate::files`). Quotas are summed from
//! here at start; rows older than the history are deleted here, and the
//! bytes no row points at any more are removed after the commit.

use rusqlite::{Connection, OptionalExtension};

use super::Error;
use super::ops::FileRow;
use crate::files::Sha;

/// Records an upload.
pub(crate) fn insert(conn: &Connection, row: &FileRow) -> Result<(), Error> {
    conn.prepare_cached(
        "INSERT INTO files (id, sha, owner, name, size, mime, inline, room, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute((
        &row.id,
        &row.sha[..],
        &row.owner,
        &row.name,
        i64::try_from(row.size).unwrap_or(i64::MAX),
        &row.mime,
        row.inline,
        &row.room,
        row.created_at,
    ))?;
    Ok(())
}

/// The file with this id, if there is one.
pub(crate) fn find(conn: &Connection, id: &str) -> Result<Option<FileRow>, Error> {
    let row = conn
        .prepare_cached(
            "SELECT id, sha, owner, name, size, mime, inline, room, created_at
             FROM files WHERE id = ?1",
        )?
        .query_row([id], |r| {
            let sha: Vec<u8> = r.get(1)?;
            let size: i64 = r.get(4)?;
            Ok((
                FileRow {
                    id: r.get(0)?,
                    sha: [0; 32],
                    owner: r.get(2)?,
                    name: r.get(3)?,
                    size: u64::try_from(size).unwrap_or(0),
                    mime: r.get(5)?,
                    inline: r.get(6)?,
                    room: r.get(7)?,
                    created_at: r.get(8)?,
                },
                sha,
            ))
        })
        .optional()?;
    Ok(row.and_then(|(mut row, sha)| {
        // A row whose hash is not 32 bytes was not written by us: as if
        // there were none.
        row.sha = sha.try_into().ok()?;
        Some(row)
    }))
}

/// Bytes stored per owner (as registered), for the quotas.
pub(crate) fn usage(conn: &Connection) -> Result<Vec<(String, u64)>, Error> {
    let mut stmt = conn.prepare("SELECT owner, sum(size) FROM files GROUP BY owner")?;
    let rows = stmt.query_map([], |r| {
        let size: i64 = r.get(1)?;
        Ok((r.get::<_, String>(0)?, u64::try_from(size).unwrap_or(0)))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Of `stored` (hashes in the `files/` directory), those no row points
/// at: bytes an upload left behind when the server stopped, or its row
/// could not be written, between storing them and recording them.
pub(crate) fn unreferenced(conn: &Connection, stored: &[Sha]) -> Result<Vec<Sha>, Error> {
    let mut used = conn.prepare_cached("SELECT 1 FROM files WHERE sha = ?1 LIMIT 1")?;
    let mut orphans = Vec::new();
    for sha in stored {
        if used.query_row([&sha[..]], |_| Ok(())).optional()?.is_none() {
            orphans.push(*sha);
        }
    }
    Ok(orphans)
}

/// What expiring a batch of files freed.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Expired {
    /// Per row deleted: its owner and size (the quotas shrink by it).
    pub(crate) freed: Vec<(String, u64)>,
    /// Hashes no row points at any more: their bytes can go.
    pub(crate) orphans: Vec<Sha>,
}

/// Deletes up to `batch` files created before `cutoff`.
pub(crate) fn expire(conn: &Connection, cutoff: i64, batch: usize) -> Result<Expired, Error> {
    let batch = i64::try_from(batch).unwrap_or(i64::MAX);
    let mut stmt = conn.prepare_cached(
        "DELETE FROM files WHERE id IN
             (SELECT id FROM files WHERE created_at < ?1 ORDER BY created_at LIMIT ?2)
         RETURNING owner, size, sha",
    )?;
    let rows = stmt.query_map((cutoff, batch), |r| {
        let size: i64 = r.get(1)?;
        Ok((
            r.get::<_, String>(0)?,
            u64::try_from(size).unwrap_or(0),
            r.get::<_, Vec<u8>>(2)?,
        ))
    })?;
    let mut expired = Expired::default();
    let mut hashes: Vec<Sha> = Vec::new();
    for row in rows {
        let (owner, size, sha) = row?;
        expired.freed.push((owner, size));
        if let Ok(sha) = Sha::try_from(sha)
            && !hashes.contains(&sha)
        {
            hashes.push(sha);
        }
    }
    drop(stmt);
    expired.orphans = unreferenced(conn, &hashes)?;
    Ok(expired)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Access, migrate};
    use std::path::Path;

    fn db() -> Connection {
        let conn = Connection::open_in_memory().expect("memory");
        migrate(&conn, Access::ReadWrite, Path::new(":memory:")).expect("schema");
        conn
    }

    fn row(id: &str, sha: u8, owner: &str, size: u64, at: i64) -> FileRow {
        FileRow {
            id: id.into(),
            sha: [sha; 32],
            owner: owner.into(),
            name: format!("{id}.bin"),
            size,
            mime: "application/octet-stream".into(),
            inline: false,
            room: "lobby".into(),
            created_at: at,
        }
    }

    #[test]
    fn files_are_found_by_id_and_summed_by_owner() {
        let conn = db();
        insert(&conn, &row("a", 1, "Alice", 10, 100)).unwrap();
        insert(&conn, &row("b", 2, "alice", 5, 100)).unwrap();
        insert(&conn, &row("c", 2, "Bob", 7, 100)).unwrap();
        assert_eq!(
            find(&conn, "b").unwrap(),
            Some(row("b", 2, "alice", 5, 100))
        );
        assert_eq!(find(&conn, "B").unwrap(), None, "ids are exact");
        assert_eq!(find(&conn, "zzz").unwrap(), None);
        let mut usage = usage(&conn).unwrap();
        usage.sort();
        assert_eq!(usage, [("Alice".to_owned(), 15), ("Bob".to_owned(), 7)]);
    }

    #[test]
    fn expiry_frees_quota_and_names_only_bytes_nobody_points_at() {
        let conn = db();
        insert(&conn, &row("old1", 1, "alice", 10, 100)).unwrap();
        insert(&conn, &row("old2", 2, "bob", 20, 100)).unwrap();
        insert(&conn, &row("new", 2, "carol", 20, 900)).unwrap();
        let expired = expire(&conn, 500, 10).unwrap();
        let mut freed = expired.freed.clone();
        freed.sort();
        assert_eq!(freed, [("alice".to_owned(), 10), ("bob".to_owned(), 20)]);
        // Hash 2 is still carol's.
        assert_eq!(expired.orphans, [[1u8; 32]]);
        assert_eq!(find(&conn, "old1").unwrap(), None);
        assert!(find(&conn, "new").unwrap().is_some());
        assert_eq!(expire(&conn, 500, 10).unwrap(), Expired::default());
    }
}
