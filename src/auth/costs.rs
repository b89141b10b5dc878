//! The bcrypt costs of the stored hashes, and the one an unknown name is
//! checked at.
//!
//! bcrypt's work doubles with each step of the cost, and a check takes as
//! long as the cost in the hash it checks against. When `--bcrypt-cost`
//! changes, the accounts keep their old hashes (until their next login
//! re-hashes them), so a dummy hash at the new cost would make an unknown
//! name answer many times faster or slower than a known one. Unknown names
//! are therefore checked at the cost most of the accounts have.
//!
//! The counts are read from the table once at start (one `GROUP BY`) and
//! then kept by the store thread, the only one that stores hashes, as it
//! commits registrations and re-hashes; it publishes the chosen cost in an
//! atomic the workers read without a lock. Pure: no SQLite here but
//! [`load`].

use std::collections::BTreeMap;
use std::fmt;

use rusqlite::Connection;

/// The cost of a bcrypt hash, from its `$2?$NN$` prefix (`2a`, `2b`, `2x`
/// or `2y`, two digits, 4 to 31); `None` for anything else. Only the prefix
/// is read, so a prefix alone will do.
pub fn hash_cost(hash: &str) -> Option<u32> {
    let b = hash.as_bytes();
    if b.len() < 7 || &b[..2] != b"$2" || !b"abxy".contains(&b[2]) || b[3] != b'$' || b[6] != b'$' {
        return None;
    }
    if !b[4].is_ascii_digit() || !b[5].is_ascii_digit() {
        return None;
    }
    let cost = u32::from(b[4] - b'0') * 10 + u32::from(b[5] - b'0');
    (4..=31).contains(&cost).then_some(cost)
}

/// How many stored hashes there are of each cost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Costs {
    counts: BTreeMap<u32, u64>,
    /// `--bcrypt-cost`: the answer for an empty table, and the first choice
    /// among costs equally common.
    configured: u32,
}

impl Costs {
    pub fn new(configured: u32) -> Costs {
        Costs {
            counts: BTreeMap::new(),
            configured,
        }
    }

    /// `n` more hashes of `cost`.
    pub fn add(&mut self, cost: u32, n: u64) {
        if n > 0 {
            *self.counts.entry(cost).or_insert(0) += n;
        }
    }

    /// One hash went from cost `from` to cost `to` (a re-hash).
    pub fn moved(&mut self, from: u32, to: u32) {
        if let Some(count) = self.counts.get_mut(&from) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.counts.remove(&from);
            }
        }
        self.add(to, 1);
    }

    /// The hashes counted.
    pub fn accounts(&self) -> u64 {
        self.counts.values().sum()
    }

    /// Hashes of another cost than the configured one.
    pub fn stale(&self) -> u64 {
        self.accounts() - self.counts.get(&self.configured).copied().unwrap_or(0)
    }

    /// The cost to check unknown names at: the most common one; among
    /// costs equally common the configured one (where every account is
    /// headed), else the highest; the configured one when there are no
    /// accounts.
    pub fn most_common(&self) -> u32 {
        let Some(top) = self.counts.values().copied().max() else {
            return self.configured;
        };
        if self.counts.get(&self.configured) == Some(&top) {
            return self.configured;
        }
        // BTreeMap iterates in ascending order: the last is the highest.
        self.counts
            .iter()
            .rev()
            .find(|&(_, &n)| n == top)
            .map_or(self.configured, |(&cost, _)| cost)
    }

    /// Why [`Costs::most_common`] is what it is, for the log: `Why(self)`.
    pub fn why(&self) -> Why<'_> {
        Why(self)
    }
}

/// Why unknown names are checked at the cost they are, in words:
/// "the most common among 12 accounts".
pub struct Why<'a>(&'a Costs);

impl fmt::Display for Why<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let costs = self.0;
        let n = costs.accounts();
        if n == 0 {
            return write!(f, "--bcrypt-cost: there are no accounts yet");
        }
        let plural = if n == 1 { "" } else { "s" };
        let chosen = costs.most_common();
        let top = costs.counts.get(&chosen).copied().unwrap_or(0);
        let tied = costs.counts.values().filter(|&&c| c == top).count();
        if tied > 1 {
            write!(
                f,
                "the most common among {n} account{plural}, tied with another cost"
            )
        } else {
            write!(f, "the most common among {n} account{plural}")
        }
    }
}

/// Counts the hashes in the `users` table by cost. Hashes that are not
/// bcrypt (no such account can log in) are left out.
pub fn load(conn: &Connection, configured: u32) -> Result<Costs, crate::store::Error> {
    let mut costs = Costs::new(configured);
    for (cost, n) in crate::store::accounts::count_by_cost(conn)? {
        costs.add(cost, n);
    }
    Ok(costs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_cost_reads_the_prefix() {
        let real = bcrypt::hash("password-1", 5).unwrap();
        assert_eq!(hash_cost(&real), Some(5));
        for (hash, cost) in [
            ("$2b$04$", Some(4)),
            ("$2a$12$abc", Some(12)),
            ("$2y$31$", Some(31)),
            ("$2x$10$", Some(10)),
            ("$2b$03$", None),
            ("$2b$32$", None),
            ("$2c$10$", None),
            ("$2b$1a$", None),
            ("$2b$10", None),
            ("$1$10$abc", None),
            ("", None),
            ("$2b$١٢$", None),
        ] {
            assert_eq!(hash_cost(hash), cost, "{hash:?}");
        }
    }

    #[test]
    fn the_most_common_cost_wins() {
        let mut costs = Costs::new(6);
        assert_eq!(costs.most_common(), 6, "empty: the configured cost");
        costs.add(4, 3);
        costs.add(6, 1);
        assert_eq!(costs.most_common(), 4);
        assert_eq!(costs.stale(), 3);
        costs.moved(4, 6);
        // 4: 2, 6: 2. A tie goes to the configured cost.
        assert_eq!(costs.most_common(), 6);
        costs.moved(4, 6);
        costs.moved(4, 6);
        assert_eq!(costs.most_common(), 6);
        assert_eq!(costs.accounts(), 4);
        assert_eq!(costs.stale(), 0);
        // Nothing of cost 4 is left to move: the count stays right anyway.
        costs.moved(4, 6);
        assert_eq!(costs.accounts(), 5);
    }

    #[test]
    fn a_tie_without_the_configured_cost_goes_to_the_highest() {
        let mut costs = Costs::new(12);
        costs.add(5, 2);
        costs.add(8, 2);
        costs.add(12, 1);
        assert_eq!(costs.most_common(), 8);
        assert_eq!(
            costs.why().to_string(),
            "the most common among 5 accounts, tied with another cost"
        );
    }

    #[test]
    fn why_says_where_the_cost_comes_from() {
        let mut costs = Costs::new(12);
        assert_eq!(
            costs.why().to_string(),
            "--bcrypt-cost: there are no accounts yet"
        );
        costs.add(4, 1);
        assert_eq!(costs.why().to_string(), "the most common among 1 account");
        costs.add(4, 11);
        costs.add(12, 3);
        assert_eq!(costs.why().to_string(), "the most common among 15 accounts");
    }

    #[test]
    fn load_counts_the_table_by_cost() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE users (name TEXT, hash TEXT, created_at INTEGER);
             INSERT INTO users VALUES
                 ('a', '$2b$04$xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx', 0),
                 ('b', '$2b$04$yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy', 0),
                 ('c', '$2a$04$zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz', 0),
                 ('d', '$2b$10$zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz', 0),
                 ('e', 'not a hash', 0);",
        )
        .unwrap();
        let costs = load(&conn, 10).unwrap();
        assert_eq!(costs.accounts(), 4);
        assert_eq!(costs.most_common(), 4);
        assert_eq!(costs.stale(), 3);
    }
}
