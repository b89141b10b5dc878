//! Per-source abuse limits, with no I/O.
//!
//! The reactor asks [`Limits`] before it admits a connection and before it
//! hands a password to a worker; this module only counts. What it guards:
//!
//! - concurrent connections per address (`--max-per-ip`);
//! - connections not yet Chatting, server-wide (`--max-pending-logins`), the
//!   way OpenSSH's MaxStartups keeps unauthenticated peers from crowding out
//!   everyone else. The pool is shared: one address holds at most a quarter
//!   of it (and never more than `--max-per-ip`), and when it is full a
//!   newcomer from an address holding none evicts the oldest pending
//!   connection of the address holding the most. A few addresses opening
//!   idle sockets cannot lock everybody else out;
//! - failed logins per account and per address over a minute
//!   (`--login-attempts`): past the limit, attempts are refused before any
//!   bcrypt runs, so guessing costs the server nothing. A registration that
//!   finds its name taken counts as a failed login for its address, so
//!   names cannot be probed faster than passwords;
//! - registrations per address over ten minutes (`--registrations-per-ip`).
//!
//! Addresses in the exempt list (`--exempt`, loopback by default) skip
//! everything counted per address (connections, their share of the pending
//! pool, failed logins and taken names, registrations), never the
//! per-account limit: an account is guarded whoever is guessing, and a check
//! in flight counts against its account from the moment it starts.
//!
//! An IPv6 "address" here is its /64 prefix: a single host is routinely
//! handed a whole /64, and counting each of its 2^64 addresses apart would
//! make every per-address limit void (ergo and fail2ban-style tools do the
//! same). IPv4-mapped IPv6 addresses count as the IPv4 address.
//!
//! Memory: the per-address connection counts hold only addresses with open
//! connections, the pending pool only pending ones. The attempt tables and
//! the log throttle are bounded ([`table`]): past their cap they forget the
//! key touched longest ago, so a flood of random sources can neither grow
//! memory nor blind the limits to a new offender. Expired entries are pruned
//! every second.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::chat::session::ConnId;

mod address;
mod table;

pub use address::{Cidr, Source, default_exempt, parse_exempt};
use table::{Recent, Windows};

/// Failed logins are counted over this long.
pub const LOGIN_WINDOW: Duration = Duration::from_secs(60);
/// Registrations per address are counted over this long.
pub const REGISTRATION_WINDOW: Duration = Duration::from_secs(600);
/// A limit hit is logged at most this often per source and kind.
pub const WARN_EVERY: Duration = Duration::from_secs(60);
/// Keys each attempt table holds at most (addresses, or account names):
/// a few MiB at worst.
pub const MAX_TRACKED: usize = 16_384;
/// (limit, source) pairs remembered for log throttling.
const MAX_WARNED: usize = 4096;

/// Every limit; `None` is `off`.
#[derive(Clone, Debug)]
pub struct LimitConfig {
    pub max_per_ip: Option<u32>,
    pub max_pending_logins: Option<usize>,
    pub login_attempts: Option<u32>,
    pub registrations_per_ip: Option<u32>,
    pub exempt: Vec<Cidr>,
}

impl Default for LimitConfig {
    fn default() -> Self {
        LimitConfig {
            max_per_ip: Some(16),
            max_pending_logins: Some(50),
            login_attempts: Some(5),
            registrations_per_ip: Some(5),
            exempt: default_exempt(),
        }
    }
}

impl LimitConfig {
    /// Pending connections one address may hold: a quarter of the pool, at
    /// most `--max-per-ip`, at least one.
    pub fn pending_share(&self) -> Option<usize> {
        let pool = self.max_pending_logins?;
        let quarter = (pool / 4).max(1);
        Some(match self.max_per_ip {
            Some(per_ip) => quarter.min(per_ip as usize).max(1),
            None => quarter,
        })
    }
}

/// Which limit was hit (for the log, and its throttle).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Hit {
    PerIp,
    PendingLogins,
    PendingShare,
    Evicted,
    AccountAttempts,
    SourceAttempts,
    Registrations,
    AuthQueue,
    ServerFull,
    SlowConsumer,
    TotalOutput,
}

impl fmt::Display for Hit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Hit::PerIp => "too many connections from one address (--max-per-ip)",
            Hit::PendingLogins => "too many connections not logged in (--max-pending-logins)",
            Hit::PendingShare => {
                "one address holds its share of connections not logged in (--max-pending-logins / 4)"
            }
            Hit::Evicted => {
                "oldest connection not logged in closed to make room for another address (--max-pending-logins)"
            }
            Hit::AccountAttempts => "too many failed logins for one account (--login-attempts)",
            Hit::SourceAttempts => {
                "too many failed logins or taken names from one address (--login-attempts)"
            }
            Hit::Registrations => {
                "too many registrations from one address (--registrations-per-ip)"
            }
            Hit::AuthQueue => "password-check queue full (--max-auth-queue)",
            Hit::ServerFull => "server full (--max-clients)",
            Hit::SlowConsumer => "output not read, slow consumer cut off (--max-output)",
            Hit::TotalOutput => {
                "unsent output of all connections over the bound, the connection holding \
                 the most cut off (--max-total-output)"
            }
        })
    }
}

/// A connection refused at accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `--max-per-ip` connections from this address are open.
    PerIp,
    /// This address holds its share of the pending pool.
    PendingShare,
    /// The pending pool is full, and this address already holds some of it.
    Busy,
}

impl Refusal {
    /// The line the refused peer gets before the close.
    pub fn line(self) -> &'static [u8] {
        match self {
            Refusal::PerIp | Refusal::PendingShare => b"! too many connections from your address\n",
            Refusal::Busy => b"! server busy, try again\n",
        }
    }

    pub fn hit(self) -> Hit {
        match self {
            Refusal::PerIp => Hit::PerIp,
            Refusal::PendingShare => Hit::PendingShare,
            Refusal::Busy => Hit::PendingLogins,
        }
    }
}

/// What the limits counted for one open connection; give it back with
/// [`Limits::release`] when the connection goes.
#[derive(Clone, Copy, Debug)]
pub struct Admission {
    pub source: Source,
    pub exempt: bool,
    /// The connection, as the pending pool knows it.
    id: ConnId,
    counted_ip: bool,
}

/// A place in the pending pool.
#[derive(Clone, Copy, Debug)]
struct Pending {
    id: ConnId,
    /// Its password check is running: not to be evicted.
    checking: bool,
}

/// A connection let in.
#[derive(Debug)]
pub struct Admitted {
    pub admission: Admission,
    /// The pool was full: this pending connection (of the address holding
    /// the most) no longer counts and is to be closed.
    pub evict: Option<ConnId>,
}

/// How a password check ended, for the failure counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoginAnswer {
    LoggedIn,
    /// The account exists; the password was wrong.
    WrongPassword,
    /// No such account.
    UnknownAccount,
    /// The store failed: nothing was learnt either way.
    NotChecked,
}

/// A login refused before any bcrypt: try again after `wait`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Throttled {
    pub hit: Hit,
    pub wait: Duration,
}

impl Throttled {
    /// Whole seconds to tell the user, rounded up, at least 1.
    pub fn secs(&self) -> u64 {
        let secs = self.wait.as_secs() + u64::from(self.wait.subsec_nanos() > 0);
        secs.max(1)
    }
}

/// All counters. See the module documentation.
#[derive(Debug)]
pub struct Limits {
    config: LimitConfig,
    per_ip: HashMap<Source, u32>,
    /// Pending connections per address, oldest first (only addresses with
    /// some; at most `--max-pending-logins` in all).
    pending_by_source: HashMap<Source, VecDeque<Pending>>,
    pending: usize,
    account_failures: Windows<String>,
    /// Checks running per account: counted against the limit while they
    /// run, so a burst sent at once cannot all slip under it.
    account_in_flight: HashMap<String, u32>,
    source_failures: Windows<Source>,
    registrations: Windows<Source>,
    /// When each (limit, source) pair was last logged.
    warned: Recent<(Hit, Source), ()>,
}

impl Limits {
    pub fn new(config: LimitConfig) -> Limits {
        Limits::with_cap(config, MAX_TRACKED)
    }

    /// With `cap` keys per attempt table (tests use small ones).
    pub fn with_cap(config: LimitConfig, cap: usize) -> Limits {
        Limits {
            config,
            per_ip: HashMap::new(),
            pending_by_source: HashMap::new(),
            pending: 0,
            account_failures: Windows::new(LOGIN_WINDOW, cap),
            account_in_flight: HashMap::new(),
            source_failures: Windows::new(LOGIN_WINDOW, cap),
            registrations: Windows::new(REGISTRATION_WINDOW, cap),
            warned: Recent::new(MAX_WARNED.min(cap)),
        }
    }

    pub fn is_exempt(&self, ip: IpAddr) -> bool {
        self.config.exempt.iter().any(|c| c.contains(ip))
    }

    /// A new connection `id` from `ip`: counts it, or says why it is
    /// refused. When the pending pool is full and `ip` holds none of it,
    /// the oldest pending connection of the address holding the most is
    /// given up to make room ([`Admitted::evict`]).
    pub fn admit(&mut self, ip: IpAddr, id: ConnId) -> Result<Admitted, Refusal> {
        let source = Source::of(ip);
        let exempt = self.is_exempt(ip);
        let mut admission = Admission {
            source,
            exempt,
            id,
            counted_ip: false,
        };
        if exempt {
            return Ok(Admitted {
                admission,
                evict: None,
            });
        }
        if let Some(max) = self.config.max_per_ip
            && self.per_ip.get(&source).copied().unwrap_or(0) >= max
        {
            return Err(Refusal::PerIp);
        }
        let mut evict = None;
        if let (Some(pool), Some(share)) =
            (self.config.max_pending_logins, self.config.pending_share())
        {
            let held = self.pending_by_source.get(&source).map_or(0, VecDeque::len);
            if held >= share {
                return Err(Refusal::PendingShare);
            }
            if self.pending >= pool {
                if held > 0 {
                    return Err(Refusal::Busy);
                }
                evict = self.evict_one();
                if evict.is_none() {
                    return Err(Refusal::Busy);
                }
            }
            self.pending_by_source
                .entry(source)
                .or_default()
                .push_back(Pending {
                    id,
                    checking: false,
                });
            self.pending += 1;
        }
        if self.config.max_per_ip.is_some() {
            *self.per_ip.entry(source).or_insert(0) += 1;
            admission.counted_ip = true;
        }
        Ok(Admitted { admission, evict })
    }

    /// Takes the oldest pending connection of the address holding the most
    /// (on a tie, the one whose oldest is oldest) out of the pool. A
    /// connection whose password check is running is passed over: it leaves
    /// the pool within a bcrypt anyway, and closing it would waste the
    /// check and, worse, charge its address a failed login it never made.
    fn evict_one(&mut self) -> Option<ConnId> {
        let (&source, _) = self
            .pending_by_source
            .iter()
            .filter_map(|(s, held)| {
                let oldest = held.iter().find(|p| !p.checking)?;
                Some((s, (held.len(), std::cmp::Reverse(oldest.id.serial))))
            })
            .max_by_key(|(_, rank)| *rank)?;
        let held = self.pending_by_source.get_mut(&source)?;
        let i = held.iter().position(|p| !p.checking)?;
        let victim = held.remove(i)?;
        if held.is_empty() {
            self.pending_by_source.remove(&source);
        }
        self.pending = self.pending.saturating_sub(1);
        Some(victim.id)
    }

    /// The connection logged in, or is closing: it no longer holds a place
    /// in the pending pool. (Harmless if it held none, or was evicted.)
    pub fn not_pending(&mut self, adm: &Admission) {
        let Some(held) = self.pending_by_source.get_mut(&adm.source) else {
            return;
        };
        if let Some(i) = held.iter().position(|p| p.id == adm.id) {
            held.remove(i);
            self.pending = self.pending.saturating_sub(1);
        }
        if held.is_empty() {
            self.pending_by_source.remove(&adm.source);
        }
    }

    /// A password check (login or registration) for this connection is
    /// running (`true`) or was answered (`false`): while it runs, the
    /// connection is not evicted from the pending pool.
    pub fn set_checking(&mut self, adm: &Admission, checking: bool) {
        if let Some(p) = self
            .pending_by_source
            .get_mut(&adm.source)
            .and_then(|held| held.iter_mut().find(|p| p.id == adm.id))
        {
            p.checking = checking;
        }
    }

    /// The connection is gone.
    pub fn release(&mut self, adm: &mut Admission) {
        self.not_pending(adm);
        if adm.counted_ip {
            adm.counted_ip = false;
            if let Some(n) = self.per_ip.get_mut(&adm.source) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.per_ip.remove(&adm.source);
                }
            }
        }
    }

    /// Connections not yet Chatting that count against the pending limit.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// May this connection try the password of `name` now?
    pub fn check_login(&self, adm: &Admission, name: &str, now: Instant) -> Result<(), Throttled> {
        let Some(limit) = self.config.login_attempts else {
            return Ok(());
        };
        let key = account_key(name);
        let running = self.account_in_flight.get(&key).copied().unwrap_or(0);
        let by_account = if running >= limit {
            // The checks running now will be answered within seconds.
            Some(Duration::from_secs(1))
        } else {
            self.account_failures.wait(&key, limit - running, now)
        }
        .map(|wait| Throttled {
            hit: Hit::AccountAttempts,
            wait,
        });
        match (by_account, self.check_source(adm, now)) {
            (Some(a), Err(s)) => Err(if a.wait >= s.wait { a } else { s }),
            (Some(t), Ok(())) | (None, Err(t)) => Err(t),
            (None, Ok(())) => Ok(()),
        }
    }

    /// Whether this connection's address is over its failed logins (and
    /// taken names): it may then neither log in nor register for a while.
    pub fn check_source(&self, adm: &Admission, now: Instant) -> Result<(), Throttled> {
        let Some(limit) = self.config.login_attempts else {
            return Ok(());
        };
        if adm.exempt {
            return Ok(());
        }
        match self.source_failures.wait(&adm.source, limit, now) {
            Some(wait) => Err(Throttled {
                hit: Hit::SourceAttempts,
                wait,
            }),
            None => Ok(()),
        }
    }

    /// A password check for `name` is about to run. It counts for the
    /// account as running until answered or abandoned, whoever asked. For
    /// the address (outside the exempt list) it counts as a failure from
    /// now on, unless the answer says otherwise: a check abandoned by a
    /// reset still cost a bcrypt, and must not be a way to make the server
    /// hash for free.
    pub fn login_started(&mut self, adm: &Admission, name: &str, now: Instant) {
        let Some(limit) = self.config.login_attempts else {
            return;
        };
        *self.account_in_flight.entry(account_key(name)).or_insert(0) += 1;
        if !adm.exempt {
            self.source_failures.record(adm.source, now, limit);
        }
    }

    /// The check started by [`Limits::login_started`] at `started` was
    /// answered.
    pub fn login_answered(
        &mut self,
        adm: &Admission,
        name: &str,
        answer: LoginAnswer,
        started: Instant,
        now: Instant,
    ) {
        let Some(limit) = self.config.login_attempts else {
            return;
        };
        let key = account_key(name);
        self.finish_check(&key);
        match answer {
            LoginAnswer::WrongPassword => self.account_failures.record(key, now, limit),
            // Guessing at a name nobody holds wins nothing: it counts for
            // the address only.
            LoginAnswer::UnknownAccount => {}
            LoginAnswer::LoggedIn | LoginAnswer::NotChecked => {
                if !adm.exempt {
                    self.source_failures.forget(&adm.source, started);
                }
            }
        }
    }

    /// The connection went away before its check was answered: it counts
    /// for its address (see [`Limits::login_started`]), not the account.
    pub fn login_abandoned(&mut self, name: &str) {
        if self.config.login_attempts.is_some() {
            self.finish_check(&account_key(name));
        }
    }

    fn finish_check(&mut self, key: &str) {
        if let Some(n) = self.account_in_flight.get_mut(key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.account_in_flight.remove(key);
            }
        }
    }

    /// A whole failed login at once (started and answered).
    pub fn login_failed(&mut self, adm: &Admission, name: &str, known: bool, now: Instant) {
        self.login_started(adm, name, now);
        let answer = if known {
            LoginAnswer::WrongPassword
        } else {
            LoginAnswer::UnknownAccount
        };
        self.login_answered(adm, name, answer, now, now);
    }

    /// Takes one registration from this source's allowance; false if it is
    /// spent. Give it back with [`Limits::registration_failed`] if no
    /// account was made.
    pub fn reserve_registration(&mut self, adm: &Admission, now: Instant) -> bool {
        let Some(limit) = self.config.registrations_per_ip else {
            return true;
        };
        if adm.exempt {
            return true;
        }
        if self.registrations.wait(&adm.source, limit, now).is_some() {
            return false;
        }
        self.registrations.record(adm.source, now, limit);
        true
    }

    /// No account was made: the reservation comes back.
    pub fn registration_failed(&mut self, adm: &Admission) {
        if self.config.registrations_per_ip.is_some() && !adm.exempt {
            self.registrations.forget_latest(&adm.source);
        }
    }

    /// The name asked for was taken: the reservation comes back, and the
    /// address is charged a failed login, so that probing which names
    /// exist is throttled like guessing passwords.
    pub fn name_taken(&mut self, adm: &Admission, now: Instant) {
        self.registration_failed(adm);
        if let Some(limit) = self.config.login_attempts
            && !adm.exempt
        {
            self.source_failures.record(adm.source, now, limit);
        }
    }

    /// A token logged nobody in: the address is charged a failed login,
    /// as for an unknown name (a token names no account).
    pub fn token_failed(&mut self, adm: &Admission, now: Instant) {
        if let Some(limit) = self.config.login_attempts
            && !adm.exempt
        {
            self.source_failures.record(adm.source, now, limit);
        }
    }

    /// Whether a hit of `hit` from `source` should be logged now: at most
    /// once per [`WARN_EVERY`] for each pair. At the cap the pair logged
    /// longest ago is forgotten, so a new source is always logged.
    pub fn should_warn(&mut self, hit: Hit, source: Source, now: Instant) -> bool {
        if let Some(last) = self.warned.touched(&(hit, source))
            && now.saturating_duration_since(last) < WARN_EVERY
        {
            return false;
        }
        self.warned.touch((hit, source), now);
        true
    }

    /// Drops expired entries.
    pub fn prune(&mut self, now: Instant) {
        self.account_failures.prune(now);
        self.source_failures.prune(now);
        self.registrations.prune(now);
        if let Some(cutoff) = now.checked_sub(WARN_EVERY) {
            self.warned.expire(cutoff);
        }
    }

    /// Entries held in the attempt tables (for tests and the log).
    pub fn tracked(&self) -> usize {
        self.account_failures.len() + self.source_failures.len() + self.registrations.len()
    }

    /// Entries the attempt tables forgot to make room, ever: non-zero means
    /// something sent failures from more than [`MAX_TRACKED`] sources.
    pub fn evicted(&self) -> u64 {
        self.account_failures.evicted()
            + self.source_failures.evicted()
            + self.registrations.evicted()
    }
}

/// Account names match without regard to (ASCII) case, as in the database.
fn account_key(name: &str) -> String {
    name.trim_matches([' ', '\t']).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    /// Admits a connection from `addr` with a fresh id; an eviction must
    /// not happen (tests of eviction call `Limits::admit` themselves).
    fn admit(limits: &mut Limits, addr: &str) -> Result<Admission, Refusal> {
        let admitted = limits.admit(ip(addr), next_id())?;
        assert_eq!(admitted.evict, None, "unexpected eviction");
        Ok(admitted.admission)
    }

    fn next_id() -> ConnId {
        use std::sync::atomic::{AtomicU64, Ordering};
        static SERIAL: AtomicU64 = AtomicU64::new(1);
        let serial = SERIAL.fetch_add(1, Ordering::Relaxed);
        ConnId {
            key: serial as usize,
            serial,
        }
    }

    fn strict() -> LimitConfig {
        LimitConfig {
            exempt: Vec::new(),
            ..LimitConfig::default()
        }
    }

    #[test]
    fn per_ip_limit_counts_open_connections() {
        let mut limits = Limits::new(LimitConfig {
            max_per_ip: Some(2),
            max_pending_logins: None,
            ..strict()
        });
        let mut a = admit(&mut limits, "10.0.0.1").expect("first");
        let mut b = admit(&mut limits, "10.0.0.1").expect("second");
        assert_eq!(admit(&mut limits, "10.0.0.1").err(), Some(Refusal::PerIp));
        // Another address is not affected.
        let mut c = admit(&mut limits, "10.0.0.2").expect("other address");
        limits.release(&mut a);
        let mut d = admit(&mut limits, "10.0.0.1").expect("slot freed");
        // Releasing twice does not free a slot twice.
        limits.release(&mut a);
        assert_eq!(admit(&mut limits, "10.0.0.1").err(), Some(Refusal::PerIp));
        for adm in [&mut b, &mut c, &mut d] {
            limits.release(adm);
        }
        assert!(limits.per_ip.is_empty(), "no entry left behind");
    }

    #[test]
    fn pending_limit_counts_only_connections_not_chatting() {
        let mut limits = Limits::new(LimitConfig {
            max_per_ip: None,
            max_pending_logins: Some(8),
            ..strict()
        });
        // A share is a quarter of the pool: 2 each.
        let mut a = admit(&mut limits, "10.0.0.1").expect("a");
        let mut b = admit(&mut limits, "10.0.0.1").expect("b");
        assert_eq!(
            admit(&mut limits, "10.0.0.1").err(),
            Some(Refusal::PendingShare)
        );
        limits.not_pending(&a);
        let mut c = admit(&mut limits, "10.0.0.1").expect("a logged in");
        limits.release(&mut a);
        assert_eq!(
            limits.pending(),
            2,
            "a chatting connection leaving frees nothing"
        );
        limits.release(&mut b);
        limits.release(&mut c);
        assert_eq!(limits.pending(), 0);
        assert!(limits.pending_by_source.is_empty());
    }

    #[test]
    fn the_pending_share_is_a_quarter_at_most_per_ip_at_least_one() {
        let share = |pool, per_ip| {
            LimitConfig {
                max_pending_logins: pool,
                max_per_ip: per_ip,
                ..strict()
            }
            .pending_share()
        };
        assert_eq!(share(Some(50), Some(16)), Some(12));
        assert_eq!(share(Some(200), Some(16)), Some(16));
        assert_eq!(share(Some(200), None), Some(50));
        assert_eq!(share(Some(2), Some(16)), Some(1));
        assert_eq!(share(None, Some(16)), None);
    }

    #[test]
    fn a_full_pool_gives_a_newcomer_the_oldest_place_of_the_biggest_holder() {
        let mut limits = Limits::new(LimitConfig {
            max_per_ip: None,
            max_pending_logins: Some(8),
            ..strict()
        });
        // Four addresses fill the pool, two each; the third holds its
        // places longest.
        let mut held = Vec::new();
        for addr in ["10.0.0.3", "10.0.0.1", "10.0.0.2", "10.0.0.4"] {
            for _ in 0..2 {
                let id = next_id();
                let got = limits.admit(ip(addr), id).expect("room");
                assert_eq!(got.evict, None);
                held.push((addr, id, got.admission));
            }
        }
        assert_eq!(limits.pending(), 8);
        // One of the holders asks for more: the pool is full.
        assert_eq!(
            admit(&mut limits, "10.0.0.1").err(),
            Some(Refusal::PendingShare)
        );
        // A fifth address gets in, in place of the oldest of the biggest
        // (all hold two: the oldest overall, 10.0.0.3's first).
        let fifth = limits.admit(ip("10.0.0.5"), next_id()).expect("newcomer");
        assert_eq!(fifth.evict, Some(held[0].1));
        assert_eq!(limits.pending(), 8);
        // Now 10.0.0.3 holds one, the others two: 10.0.0.1's oldest is next.
        let sixth = limits.admit(ip("10.0.0.6"), next_id()).expect("newcomer");
        assert_eq!(sixth.evict, Some(held[2].1));
        // An address already holding a place waits.
        assert_eq!(admit(&mut limits, "10.0.0.5").err(), Some(Refusal::Busy));
        // The evicted connections going away frees nothing twice.
        let mut gone = held[0].2;
        limits.release(&mut gone);
        let mut gone = held[2].2;
        limits.release(&mut gone);
        assert_eq!(limits.pending(), 8);
        let total: usize = limits.pending_by_source.values().map(VecDeque::len).sum();
        assert_eq!(total, 8);
    }

    #[test]
    fn a_connection_whose_check_runs_is_not_evicted() {
        let mut limits = Limits::new(LimitConfig {
            max_per_ip: None,
            max_pending_logins: Some(4),
            ..strict()
        });
        let held: Vec<Admission> = (1..=4)
            .map(|i| admit(&mut limits, &format!("10.0.0.{i}")).expect("room"))
            .collect();
        // The oldest is checking a password: the next oldest goes.
        limits.set_checking(&held[0], true);
        let got = limits.admit(ip("10.0.0.5"), next_id()).expect("newcomer");
        assert_eq!(got.evict, Some(held[1].id));
        // Its answer makes it evictable again.
        limits.set_checking(&held[0], false);
        let got = limits.admit(ip("10.0.0.6"), next_id()).expect("newcomer");
        assert_eq!(got.evict, Some(held[0].id));
        // Nobody evictable: the newcomer waits.
        let mut limits = Limits::new(LimitConfig {
            max_per_ip: None,
            max_pending_logins: Some(4),
            ..strict()
        });
        for i in 1..=4 {
            let adm = admit(&mut limits, &format!("10.0.0.{i}")).expect("room");
            limits.set_checking(&adm, true);
        }
        assert_eq!(
            limits.admit(ip("10.0.0.5"), next_id()).err(),
            Some(Refusal::Busy)
        );
        assert_eq!(limits.pending(), 4);
    }

    #[test]
    fn exempt_addresses_skip_per_ip_and_pending_limits() {
        let mut limits = Limits::new(LimitConfig {
            max_per_ip: Some(1),
            max_pending_logins: Some(1),
            ..LimitConfig::default()
        });
        for _ in 0..10 {
            let adm = admit(&mut limits, "127.0.0.1").expect("loopback is exempt");
            assert!(adm.exempt);
        }
        assert_eq!(limits.pending(), 0, "exempt connections are not counted");
        admit(&mut limits, "192.0.2.1").expect("one from outside");
        assert_eq!(admit(&mut limits, "192.0.2.1").err(), Some(Refusal::PerIp));
        let other = limits.admit(ip("192.0.2.2"), next_id()).expect("evicts");
        assert!(other.evict.is_some());
    }

    #[test]
    fn off_disables_each_limit() {
        let mut limits = Limits::new(LimitConfig {
            max_per_ip: None,
            max_pending_logins: None,
            login_attempts: None,
            registrations_per_ip: None,
            exempt: Vec::new(),
        });
        let now = Instant::now();
        let adm = (0..100)
            .map(|_| admit(&mut limits, "10.0.0.1").expect("no limit"))
            .last()
            .expect("admitted");
        for _ in 0..100 {
            limits.login_failed(&adm, "alice", true, now);
            assert!(limits.reserve_registration(&adm, now));
        }
        assert_eq!(limits.check_login(&adm, "alice", now), Ok(()));
        assert_eq!(limits.tracked(), 0);
    }

    #[test]
    fn login_failures_throttle_account_and_source() {
        let mut limits = Limits::new(LimitConfig {
            login_attempts: Some(3),
            ..strict()
        });
        let t0 = Instant::now();
        let attacker = admit(&mut limits, "10.0.0.1").expect("attacker");
        let owner = admit(&mut limits, "10.0.0.2").expect("owner");
        for i in 0..3 {
            assert_eq!(limits.check_login(&attacker, "Alice", t0), Ok(()));
            limits.login_failed(&attacker, "alice", true, t0 + Duration::from_secs(i));
        }
        let now = t0 + Duration::from_secs(10);
        let t = limits
            .check_login(&attacker, "ALICE", now)
            .expect_err("account throttled, any case");
        // The first failure (t0) expires at t0 + 60 s: 50 s from now.
        assert_eq!(t.secs(), 50);
        // The owner from elsewhere is slowed down too (see the README).
        let t = limits.check_login(&owner, "alice", now).expect_err("owner");
        assert_eq!(t.hit, Hit::AccountAttempts);
        // The attacker's address is throttled for other accounts as well.
        let t = limits
            .check_login(&attacker, "bob", now)
            .expect_err("source");
        assert_eq!(t.hit, Hit::SourceAttempts);
        assert_eq!(limits.check_login(&owner, "bob", now), Ok(()));
        // A minute after the first failure, one attempt is allowed again.
        let later = t0 + LOGIN_WINDOW;
        assert_eq!(limits.check_login(&owner, "alice", later), Ok(()));
        limits.prune(t0 + LOGIN_WINDOW + Duration::from_secs(3));
        assert_eq!(limits.tracked(), 0, "everything expired");
    }

    #[test]
    fn unknown_names_are_counted_per_source_only() {
        let mut limits = Limits::new(strict());
        let now = Instant::now();
        let a = admit(&mut limits, "10.0.0.1").expect("a");
        let b = admit(&mut limits, "10.0.0.2").expect("b");
        for _ in 0..5 {
            limits.login_failed(&a, "ghost", false, now);
        }
        assert!(limits.check_login(&a, "ghost", now).is_err());
        assert_eq!(limits.check_login(&b, "ghost", now), Ok(()));
    }

    #[test]
    fn exempt_sources_still_hit_the_account_limit() {
        let mut limits = Limits::new(LimitConfig::default());
        let now = Instant::now();
        let local = admit(&mut limits, "127.0.0.1").expect("local");
        for _ in 0..5 {
            limits.login_failed(&local, "alice", true, now);
            limits.login_failed(&local, "ghost", false, now);
        }
        let t = limits
            .check_login(&local, "alice", now)
            .expect_err("account");
        assert_eq!(t.hit, Hit::AccountAttempts);
        assert_eq!(
            limits.check_login(&local, "bob", now),
            Ok(()),
            "no per-source count"
        );
    }

    #[test]
    fn checks_in_flight_count_until_answered() {
        let mut limits = Limits::new(LimitConfig {
            login_attempts: Some(3),
            ..strict()
        });
        let now = Instant::now();
        let a = admit(&mut limits, "10.0.0.1").expect("a");
        // Three sent at once (from several addresses): the fourth is
        // refused before any answer.
        let others: Vec<Admission> = (2..5)
            .map(|i| admit(&mut limits, &format!("10.0.1.{i}")).expect("other"))
            .collect();
        for o in &others {
            assert_eq!(limits.check_login(o, "alice", now), Ok(()));
            limits.login_started(o, "alice", now);
        }
        let t = limits
            .check_login(&a, "alice", now)
            .expect_err("three running");
        assert_eq!((t.hit, t.secs()), (Hit::AccountAttempts, 1));
        // Answers that are not failures give everything back.
        limits.login_answered(&others[0], "alice", LoginAnswer::LoggedIn, now, now);
        limits.login_answered(&others[1], "alice", LoginAnswer::NotChecked, now, now);
        assert_eq!(limits.check_login(&a, "alice", now), Ok(()));
        assert_eq!(limits.check_login(&others[0], "bob", now), Ok(()));
        // An abandoned check frees the account, but still counts for its
        // address.
        limits.login_abandoned("alice");
        assert!(limits.account_in_flight.is_empty());
        let c = &others[2];
        for _ in 0..2 {
            limits.login_started(c, "x", now);
            limits.login_abandoned("x");
        }
        assert_eq!(
            limits.check_login(c, "bob", now).map_err(|t| t.hit),
            Err(Hit::SourceAttempts)
        );
        // An unknown name stays counted for the address only.
        let b = admit(&mut limits, "10.0.0.2").expect("b");
        for _ in 0..3 {
            limits.login_started(&b, "ghost", now);
            limits.login_answered(&b, "ghost", LoginAnswer::UnknownAccount, now, now);
        }
        assert_eq!(
            limits.check_login(&b, "ghost", now).map_err(|t| t.hit),
            Err(Hit::SourceAttempts)
        );
        assert_eq!(limits.check_login(&a, "ghost", now), Ok(()));
    }

    #[test]
    fn registrations_are_reserved_and_given_back() {
        let mut limits = Limits::new(LimitConfig {
            registrations_per_ip: Some(2),
            ..strict()
        });
        let t0 = Instant::now();
        let a = admit(&mut limits, "10.0.0.1").expect("a");
        assert!(limits.reserve_registration(&a, t0));
        assert!(limits.reserve_registration(&a, t0));
        assert!(!limits.reserve_registration(&a, t0));
        // One of them found the name taken: its reservation comes back.
        limits.registration_failed(&a);
        assert!(limits.reserve_registration(&a, t0));
        assert!(!limits.reserve_registration(&a, t0 + Duration::from_secs(599)));
        assert!(limits.reserve_registration(&a, t0 + REGISTRATION_WINDOW));
        let other = admit(&mut limits, "10.0.0.2").expect("other");
        assert!(limits.reserve_registration(&other, t0));
    }

    #[test]
    fn warnings_are_throttled_per_source_and_kind() {
        let mut limits = Limits::new(strict());
        let t0 = Instant::now();
        let s1 = Source::of(ip("10.0.0.1"));
        let s2 = Source::of(ip("10.0.0.2"));
        assert!(limits.should_warn(Hit::PerIp, s1, t0));
        assert!(!limits.should_warn(Hit::PerIp, s1, t0 + Duration::from_secs(59)));
        assert!(limits.should_warn(Hit::PendingLogins, s1, t0));
        assert!(limits.should_warn(Hit::PerIp, s2, t0));
        assert!(limits.should_warn(Hit::PerIp, s1, t0 + WARN_EVERY));
        limits.prune(t0 + 3 * WARN_EVERY);
        assert!(limits.warned.len() == 0);
    }

    #[test]
    fn throttle_seconds_round_up() {
        let t = |ms| Throttled {
            hit: Hit::AccountAttempts,
            wait: Duration::from_millis(ms),
        };
        assert_eq!(t(0).secs(), 1);
        assert_eq!(t(1).secs(), 1);
        assert_eq!(t(1000).secs(), 1);
        assert_eq!(t(1001).secs(), 2);
        assert_eq!(t(59_999).secs(), 60);
    }

    #[test]
    fn exempt_checks_in_flight_count_for_the_account() {
        let mut limits = Limits::new(LimitConfig {
            login_attempts: Some(3),
            ..LimitConfig::default()
        });
        let now = Instant::now();
        let local = admit(&mut limits, "127.0.0.1").expect("local");
        for _ in 0..3 {
            assert_eq!(limits.check_login(&local, "alice", now), Ok(()));
            limits.login_started(&local, "alice", now);
        }
        let t = limits
            .check_login(&local, "alice", now)
            .expect_err("three running, exempt or not");
        assert_eq!(t.hit, Hit::AccountAttempts);
        limits.login_answered(&local, "alice", LoginAnswer::WrongPassword, now, now);
        limits.login_abandoned("alice");
        limits.login_answered(&local, "alice", LoginAnswer::LoggedIn, now, now);
        assert!(limits.account_in_flight.is_empty());
        // Exempt: nothing was counted for the address.
        assert_eq!(limits.check_login(&local, "bob", now), Ok(()));
        assert_eq!(limits.source_failures.len(), 0);
    }

    #[test]
    fn taken_names_count_as_failed_logins_for_the_address() {
        let mut limits = Limits::new(LimitConfig {
            login_attempts: Some(3),
            registrations_per_ip: Some(5),
            ..strict()
        });
        let now = Instant::now();
        let prober = admit(&mut limits, "10.0.0.1").expect("prober");
        for _ in 0..3 {
            assert_eq!(limits.check_source(&prober, now), Ok(()));
            assert!(limits.reserve_registration(&prober, now));
            limits.name_taken(&prober, now);
        }
        let t = limits
            .check_source(&prober, now)
            .expect_err("probing throttled");
        assert_eq!(t.hit, Hit::SourceAttempts);
        assert_eq!(
            limits
                .check_login(&prober, "anyone", now)
                .map_err(|t| t.hit),
            Err(Hit::SourceAttempts),
            "and logging in too"
        );
        // The registrations were given back.
        assert_eq!(limits.registrations.len(), 0);
        // Exempt addresses are not counted.
        let mut limits = Limits::new(LimitConfig {
            login_attempts: Some(3),
            ..LimitConfig::default()
        });
        let local = admit(&mut limits, "127.0.0.1").expect("local");
        for _ in 0..10 {
            limits.name_taken(&local, now);
        }
        assert_eq!(limits.check_source(&local, now), Ok(()));
    }

    #[test]
    fn a_table_full_of_random_sources_still_throttles_and_logs_a_new_offender() {
        let cap = 64;
        let mut limits = Limits::with_cap(
            LimitConfig {
                login_attempts: Some(3),
                max_per_ip: None,
                max_pending_logins: None,
                ..strict()
            },
            cap,
        );
        let t0 = Instant::now();
        // Ten times the cap of sources, each failing once and hitting a
        // limit once (for the log throttle).
        for i in 0..10 * cap as u32 {
            let addr = std::net::Ipv4Addr::from(0x0a00_0000 + i).to_string();
            let a = admit(&mut limits, &addr).expect("admitted");
            limits.login_failed(&a, "ghost", false, t0);
            assert!(limits.should_warn(Hit::SourceAttempts, a.source, t0));
        }
        assert!(limits.tracked() <= cap, "bounded: {}", limits.tracked());
        assert!(limits.warned.len() <= cap);
        assert!(limits.evicted() > 0);
        // A new offender is counted, throttled and logged.
        let t1 = t0 + Duration::from_secs(1);
        let offender = admit(&mut limits, "192.0.2.66").expect("offender");
        for _ in 0..3 {
            assert_eq!(limits.check_login(&offender, "alice", t1), Ok(()));
            limits.login_failed(&offender, "nobody", false, t1);
        }
        assert_eq!(
            limits
                .check_login(&offender, "alice", t1)
                .map_err(|t| t.hit),
            Err(Hit::SourceAttempts)
        );
        assert!(limits.should_warn(Hit::SourceAttempts, offender.source, t1));
        assert!(!limits.should_warn(Hit::SourceAttempts, offender.source, t1));
    }
}
