//! The `users` table: the account queries (find by name, insert, replace a
//! hash, count the hashes by cost, list the names), and the account writes
//! the store thread carries out for the auth pool: registrations and
//! re-hashed passwords, answered on the pool's [`Done`] channel.
//!
//! What it does not own: bcrypt and the workers (`auth`), the batching
//! and the transaction around these writes (`writer`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::Sender;

use rusqlite::{Connection, OptionalExtension};

use super::Error;
use crate::auth::Done;
use crate::auth::costs::{Costs, hash_cost};
use crate::session::{AuthOutcome, ConnId};

/// The account's registered name and hash, matched without regard to case.
pub(crate) fn find(conn: &Connection, name: &str) -> Result<Option<(String, String)>, Error> {
    Ok(conn
        .query_row(
            "SELECT name, hash FROM users WHERE name = ?1",
            [name],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?)
}

/// Stores a new account; false when the name is taken (in any case), or
/// was retired (an operator deleted its account: `neochat-server users
/// delete`).
pub(crate) fn insert(
    conn: &Connection,
    name: &str,
    hash: &str,
    created_at: i64,
) -> Result<bool, Error> {
    let mut insert = conn.prepare_cached(
        "INSERT INTO users (name, hash, created_at)
         SELECT ?1, ?2, ?3 WHERE NOT EXISTS (SELECT 1 FROM retired WHERE name = ?1)
         ON CONFLICT (name) DO NOTHING",
    )?;
    Ok(insert.execute((name, hash, created_at))? == 1)
}

/// Replaces `old` by `new` as the hash of `name`; false when the stored
/// hash is not `old` any more (changed by another login's re-hash, or by
/// hand), which is then left alone.
pub(crate) fn update_hash(
    conn: &Connection,
    name: &str,
    old: &str,
    new: &str,
) -> Result<bool, Error> {
    let mut update =
        conn.prepare_cached("UPDATE users SET hash = ?1 WHERE name = ?2 AND hash = ?3")?;
    Ok(update.execute((new, name, old))? == 1)
}

/// How many stored hashes there are of each bcrypt cost (hashes that are
/// not bcrypt's are not counted).
pub(crate) fn count_by_cost(conn: &Connection) -> Result<Vec<(u32, u64)>, Error> {
    let mut stmt = conn.prepare("SELECT substr(hash, 1, 7), count(*) FROM users GROUP BY 1")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    let mut counts = Vec::new();
    for row in rows {
        let (prefix, n) = row?;
        if let Some(cost) = hash_cost(&prefix) {
            counts.push((cost, u64::try_from(n).unwrap_or(0)));
        }
    }
    Ok(counts)
}

/// Every account name, as registered, sorted without regard to case.
pub(crate) fn names(conn: &Connection) -> Result<Vec<String>, Error> {
    let mut stmt = conn.prepare("SELECT name FROM users ORDER BY name")?;
    let names = stmt.query_map([], |r| r.get(0))?;
    Ok(names.collect::<Result<_, _>>()?)
}

/// An account write, from an auth worker.
pub(crate) enum Write {
    Register(NewAccount),
    Rehash(Rehash),
    Password(PasswordChange),
}

/// `/passwd`: the current password matched `old`; `new` replaces it if
/// it is still the stored hash, and every token of the account is revoked.
pub(crate) struct PasswordChange {
    /// Who asked: the store thread answers them.
    pub conn: ConnId,
    /// As registered.
    pub name: String,
    pub old: String,
    pub new: String,
    /// Set when the user has gone: nothing is changed.
    pub cancel: Arc<AtomicBool>,
}

/// A password hashed again at the configured cost, after a login. Nobody
/// waits for it.
pub(crate) struct Rehash {
    pub name: String,
    /// The hash that matched: replaced only if it is still the stored one.
    pub old: String,
    pub new: String,
}

/// A new account to store.
pub(crate) struct NewAccount {
    /// Who asked: the store thread answers them.
    pub conn: ConnId,
    pub name: String,
    pub hash: String,
    pub created_at: i64,
    /// Set when the user has gone: the account is not stored.
    pub cancel: Arc<AtomicBool>,
    /// Tests make the write panic inside its transaction.
    #[cfg(test)]
    pub panic: bool,
}

/// What became of a [`Write`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stored {
    Inserted,
    Taken,
    Cancelled,
    /// Nothing was stored (the error is logged once, by the writer).
    Failed,
    /// A re-hash replaced the old hash.
    Rehashed,
    /// A `/passwd` replaced the old hash (and revoked the tokens).
    PasswordChanged,
    /// A re-hash found the old hash gone (another login re-hashed it, or
    /// the account was changed or deleted meanwhile): nothing to do.
    Superseded,
}

/// Carries out one write inside the batch's transaction.
pub(crate) fn apply(conn: &Connection, write: &Write) -> Result<Stored, Error> {
    let account = match write {
        Write::Register(account) => account,
        Write::Rehash(r) => {
            return Ok(if update_hash(conn, &r.name, &r.old, &r.new)? {
                Stored::Rehashed
            } else {
                Stored::Superseded
            });
        }
        Write::Password(p) => {
            if p.cancel.load(Ordering::Relaxed) {
                return Ok(Stored::Cancelled);
            }
            if !update_hash(conn, &p.name, &p.old, &p.new)? {
                return Ok(Stored::Superseded);
            }
            super::moderation::revoke_tokens(conn, &p.name)?;
            return Ok(Stored::PasswordChanged);
        }
    };
    // The user gave up (or timed out) while we hashed: store nothing, or
    // they would find the name taken without ever being told it is theirs.
    if account.cancel.load(Ordering::Relaxed) {
        return Ok(Stored::Cancelled);
    }
    let inserted = insert(conn, &account.name, &account.hash, account.created_at)?;
    #[cfg(test)]
    if account.panic {
        panic!("fault injected by a test inside the write transaction");
    }
    Ok(if inserted {
        Stored::Inserted
    } else {
        Stored::Taken
    })
}

/// What the auth pool gives the store thread, once, before its first
/// write: where registrations are answered, and the count of hashes by
/// cost that only the store thread changes from then on (it publishes the
/// most common cost in `unknown_cost`, the cost workers check unknown
/// names at).
pub(crate) struct AuthLink {
    pub done: Sender<Done>,
    pub wake: Arc<dyn Fn() + Send + Sync>,
    pub costs: Costs,
    pub unknown_cost: Arc<AtomicU32>,
}

impl AuthLink {
    /// Counts what became of a committed (or failed) write, and the answer
    /// for the connection that registered, if it was a registration.
    pub fn settle(&mut self, write: Write, stored: Stored) -> Option<Done> {
        let account = match write {
            Write::Register(account) => account,
            Write::Rehash(rehash) => {
                self.rehashed(&rehash, stored);
                return None;
            }
            Write::Password(change) => {
                let outcome = if stored == Stored::PasswordChanged {
                    if let (Some(from), Some(to)) = (hash_cost(&change.old), hash_cost(&change.new))
                    {
                        self.costs.moved(from, to);
                    }
                    AuthOutcome::PasswordChanged
                } else {
                    AuthOutcome::Unavailable
                };
                return Some(Done {
                    conn: change.conn,
                    outcome,
                    known_account: true,
                });
            }
        };
        let outcome = match stored {
            Stored::Inserted => {
                if let Some(cost) = hash_cost(&account.hash) {
                    self.costs.add(cost, 1);
                }
                AuthOutcome::Registered(account.name)
            }
            // Another connection registered the name meanwhile.
            Stored::Taken => AuthOutcome::NameTaken,
            Stored::Cancelled
            | Stored::Failed
            | Stored::Rehashed
            | Stored::Superseded
            | Stored::PasswordChanged => AuthOutcome::Unavailable,
        };
        Some(Done {
            conn: account.conn,
            outcome,
            known_account: false,
        })
    }

    /// Counts (or logs) what became of a re-hash.
    fn rehashed(&mut self, rehash: &Rehash, stored: Stored) {
        let (from, to) = (hash_cost(&rehash.old), hash_cost(&rehash.new));
        match stored {
            Stored::Rehashed => {
                if let (Some(from), Some(to)) = (from, to) {
                    self.costs.moved(from, to);
                }
                log::info!(
                    "password of {} re-hashed from bcrypt cost {} to {}",
                    rehash.name,
                    from.map_or_else(|| "?".to_owned(), |c| c.to_string()),
                    to.map_or_else(|| "?".to_owned(), |c| c.to_string()),
                );
            }
            Stored::Superseded => {
                log::debug!(
                    "password of {} changed meanwhile: not re-hashed",
                    rehash.name
                );
            }
            // The batch failed: logged once already. The old hash stays,
            // and the next login tries again.
            _ => crate::warn_every!(
                crate::log_every::PERIOD,
                "password of {} not re-hashed (the old hash stays)",
                rehash.name
            ),
        }
    }

    /// Tells the workers the cost to check unknown names at, if it changed.
    pub fn publish_unknown_cost(&self) {
        let cost = self.costs.most_common();
        if self.unknown_cost.swap(cost, Ordering::Relaxed) != cost {
            log::info!(
                "unknown names are now checked at bcrypt cost {cost} ({})",
                self.costs.why()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users() -> Connection {
        let conn = Connection::open_in_memory().expect("in-memory database");
        super::super::schema::migrate(
            &conn,
            super::super::Access::ReadWrite,
            std::path::Path::new(":memory:"),
        )
        .expect("migrates");
        conn
    }

    #[test]
    fn the_queries_match_names_without_regard_to_case() {
        let conn = users();
        assert!(insert(&conn, "Alice", "$2b$04$a", 1).unwrap());
        assert!(!insert(&conn, "ALICE", "$2b$05$b", 2).unwrap(), "taken");
        assert!(insert(&conn, "bob", "$2b$05$c", 3).unwrap());
        assert_eq!(
            find(&conn, "alice").unwrap(),
            Some(("Alice".into(), "$2b$04$a".into()))
        );
        assert_eq!(find(&conn, "carol").unwrap(), None);
        assert!(!update_hash(&conn, "alice", "$2b$04$x", "$2b$06$y").unwrap());
        assert!(update_hash(&conn, "alice", "$2b$04$a", "$2b$06$y").unwrap());
        let mut counts = count_by_cost(&conn).unwrap();
        counts.sort();
        assert_eq!(counts, [(5, 1), (6, 1)]);
        assert_eq!(names(&conn).unwrap(), ["Alice", "bob"]);
    }
}
