//! Per-source abuse limits, with no I/O.
//!
//! The reactor asks [`Limits`] before it admits a connection and before it
//! hands a password to a worker; this module only counts. What it guards:
//!
//! - concurrent connections per address (`--max-per-ip`);
//! - connections not yet Chatting, server-wide (`--max-pending-logins`), the
//!   way OpenSSH's MaxStartups keeps unauthenticated peers from crowding out
//!   everyone else;
//! - failed logins per account and per address over a minute
//!   (`--login-attempts`): past the limit, attempts are refused before any
//!   bcrypt runs, so guessing costs the server nothing;
//! - registrations per address over ten minutes (`--registrations-per-ip`).
//!
//! Addresses in the exempt list (`--exempt`, loopback by default) skip the
//! per-address and pending-login limits, never the per-account one: an
//! account is guarded whoever is guessing.
//!
//! An IPv6 "address" here is its /64 prefix: a single host is routinely
//! handed a whole /64, and counting each of its 2^64 addresses apart would
//! make every per-address limit void (ergo and fail2ban-style tools do the
//! same). IPv4-mapped IPv6 addresses count as the IPv4 address.
//!
//! Memory: the per-address connection counts hold only addresses with open
//! connections. Every entry of the attempt tables stands for a bcrypt that
//! ran (a failure) or a registration accepted, so they grow no faster than
//! the workers can hash, and expired entries are pruned every second.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::time::{Duration, Instant};

/// Failed logins are counted over this long.
pub const LOGIN_WINDOW: Duration = Duration::from_secs(60);
/// Registrations per address are counted over this long.
pub const REGISTRATION_WINDOW: Duration = Duration::from_secs(600);
/// A limit hit is logged at most this often per source and kind.
pub const WARN_EVERY: Duration = Duration::from_secs(60);
/// Sources remembered for log throttling; past that, new ones go unlogged
/// until old entries expire (an attack from many addresses must not grow
/// memory through the log throttle either).
const MAX_WARNED: usize = 4096;

/// Where a connection comes from, as the limits count it: an IPv4 address,
/// or an IPv6 /64.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Source(IpAddr);

impl Source {
    pub fn of(ip: IpAddr) -> Source {
        match ip {
            IpAddr::V4(v4) => Source(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source(IpAddr::V4(v4)),
                None => {
                    let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                    Source(IpAddr::V6(Ipv6Addr::from(prefix)))
                }
            },
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => write!(f, "{v4}"),
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

/// An address block, `10.0.0.0/8` or `::1` (a single address).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    len: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_eq(u32::from(net).into(), u32::from(ip).into(), self.len, 32)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(u128::from(net), u128::from(ip), self.len, 128)
            }
            _ => false,
        }
    }
}

fn prefix_eq(a: u128, b: u128, len: u8, bits: u8) -> bool {
    if len == 0 {
        return true;
    }
    let shift = u32::from(bits - len);
    (a >> shift) == (b >> shift)
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("'{s}' is not an address or CIDR block"))?;
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => bits,
            Some(l) => match l.parse::<u8>() {
                Ok(n) if n <= bits => n,
                _ => return Err(format!("'{s}': prefix length must be 0 to {bits}")),
            },
        };
        Ok(Cidr { addr, len })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// Parses `--exempt`: comma-separated blocks, or `none`.
pub fn parse_exempt(s: &str) -> Result<Vec<Cidr>, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("none") {
        return Ok(Vec::new());
    }
    s.split(',')
        .map(|part| part.trim().parse())
        .collect::<Result<Vec<_>, _>>()
}

/// The default exempt list: loopback, where local bots and load tools run.
pub fn default_exempt() -> Vec<Cidr> {
    vec![
        Cidr {
            addr: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)),
            len: 8,
        },
        Cidr {
            addr: IpAddr::V6(Ipv6Addr::LOCALHOST),
            len: 128,
        },
    ]
}

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

/// Which limit was hit (for the log, and its throttle).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Hit {
    PerIp,
    PendingLogins,
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
            Hit::AccountAttempts => "too many failed logins for one account (--login-attempts)",
            Hit::SourceAttempts => "too many failed logins from one address (--login-attempts)",
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
    PerIp,
    Busy,
}

impl Refusal {
    /// The line the refused peer gets before the close.
    pub fn line(self) -> &'static [u8] {
        match self {
            Refusal::PerIp => b"! too many connections from your address\n",
            Refusal::Busy => b"! server busy, try again\n",
        }
    }

    pub fn hit(self) -> Hit {
        match self {
            Refusal::PerIp => Hit::PerIp,
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
    counted_ip: bool,
    counted_pending: bool,
}

/// Time stamps per key, oldest first (callers stamp with a clock that only
/// goes forward), at most `cap` of them.
#[derive(Debug)]
struct Windows<K> {
    span: Duration,
    map: HashMap<K, VecDeque<Instant>>,
}

impl<K: Eq + Hash> Windows<K> {
    fn new(span: Duration) -> Self {
        Windows {
            span,
            map: HashMap::new(),
        }
    }

    /// How long until fewer than `limit` stamps of `key` are live; `None`
    /// if that is already so.
    fn wait(&self, key: &K, limit: u32, now: Instant) -> Option<Duration> {
        let stamps = self.map.get(key)?;
        // Stamps are in time order, so the live ones are a suffix.
        let first_live = stamps.partition_point(|&t| now.saturating_duration_since(t) >= self.span);
        // A limit of 0 would refuse everything; treat it as 1.
        let limit = (limit as usize).max(1);
        if stamps.len() - first_live < limit {
            return None;
        }
        // Allowed again when the stamp that keeps the count at the limit
        // expires.
        let t = stamps[stamps.len() - limit];
        Some((t + self.span).saturating_duration_since(now))
    }

    fn record(&mut self, key: K, now: Instant, cap: u32) {
        let stamps = self.map.entry(key).or_default();
        stamps.push_back(now);
        while stamps.len() > cap as usize {
            stamps.pop_front();
        }
    }

    /// Removes the stamp made at `at`, if it is still there (it may have
    /// expired and been pruned).
    fn forget(&mut self, key: &K, at: Instant) {
        if let Some(stamps) = self.map.get_mut(key) {
            if let Some(i) = stamps.iter().rposition(|&t| t == at) {
                stamps.remove(i);
            }
            if stamps.is_empty() {
                self.map.remove(key);
            }
        }
    }

    fn forget_latest(&mut self, key: &K) {
        if let Some(stamps) = self.map.get_mut(key) {
            stamps.pop_back();
            if stamps.is_empty() {
                self.map.remove(key);
            }
        }
    }

    fn prune(&mut self, now: Instant) {
        let span = self.span;
        self.map.retain(|_, stamps| {
            while stamps
                .front()
                .is_some_and(|&t| now.saturating_duration_since(t) >= span)
            {
                stamps.pop_front();
            }
            !stamps.is_empty()
        });
    }

    fn len(&self) -> usize {
        self.map.len()
    }
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
    pending: usize,
    account_failures: Windows<String>,
    /// Checks running per account for connections outside the exempt
    /// list: counted against the limit while they run, so a burst sent at
    /// once from many addresses cannot all slip under it.
    account_in_flight: HashMap<String, u32>,
    source_failures: Windows<Source>,
    registrations: Windows<Source>,
    warned: HashMap<(Hit, Source), Instant>,
}

impl Limits {
    pub fn new(config: LimitConfig) -> Limits {
        Limits {
            config,
            per_ip: HashMap::new(),
            pending: 0,
            account_failures: Windows::new(LOGIN_WINDOW),
            account_in_flight: HashMap::new(),
            source_failures: Windows::new(LOGIN_WINDOW),
            registrations: Windows::new(REGISTRATION_WINDOW),
            warned: HashMap::new(),
        }
    }

    pub fn is_exempt(&self, ip: IpAddr) -> bool {
        self.config.exempt.iter().any(|c| c.contains(ip))
    }

    /// A new connection from `ip`: counts it, or says why it is refused.
    pub fn admit(&mut self, ip: IpAddr) -> Result<Admission, Refusal> {
        let source = Source::of(ip);
        let exempt = self.is_exempt(ip);
        let mut adm = Admission {
            source,
            exempt,
            counted_ip: false,
            counted_pending: false,
        };
        if exempt {
            return Ok(adm);
        }
        if let Some(max) = self.config.max_per_ip
            && self.per_ip.get(&source).copied().unwrap_or(0) >= max
        {
            return Err(Refusal::PerIp);
        }
        if let Some(max) = self.config.max_pending_logins
            && self.pending >= max
        {
            return Err(Refusal::Busy);
        }
        if self.config.max_per_ip.is_some() {
            *self.per_ip.entry(source).or_insert(0) += 1;
            adm.counted_ip = true;
        }
        if self.config.max_pending_logins.is_some() {
            self.pending += 1;
            adm.counted_pending = true;
        }
        Ok(adm)
    }

    /// The connection logged in: it no longer counts as pending.
    pub fn chatting(&mut self, adm: &mut Admission) {
        if adm.counted_pending {
            adm.counted_pending = false;
            self.pending = self.pending.saturating_sub(1);
        }
    }

    /// The connection is gone.
    pub fn release(&mut self, adm: &mut Admission) {
        self.chatting(adm);
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
        let by_source = if adm.exempt {
            None
        } else {
            self.source_failures
                .wait(&adm.source, limit, now)
                .map(|wait| Throttled {
                    hit: Hit::SourceAttempts,
                    wait,
                })
        };
        match (by_account, by_source) {
            (Some(a), Some(s)) => Err(if a.wait >= s.wait { a } else { s }),
            (Some(t), None) | (None, Some(t)) => Err(t),
            (None, None) => Ok(()),
        }
    }

    /// A password check for `name` is about to run. From outside the exempt
    /// list, it counts for the account as running until answered or
    /// abandoned (an exempt client's checks count only once answered, as
    /// failures). For the address it
    /// counts as a failure from now on, unless the answer says otherwise:
    /// a check abandoned by a reset still cost a bcrypt, and must not be a
    /// way to make the server hash for free.
    pub fn login_started(&mut self, adm: &Admission, name: &str, now: Instant) {
        let Some(limit) = self.config.login_attempts else {
            return;
        };
        if !adm.exempt {
            *self.account_in_flight.entry(account_key(name)).or_insert(0) += 1;
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
        if !adm.exempt {
            self.finish_check(&key);
        }
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
    pub fn login_abandoned(&mut self, adm: &Admission, name: &str) {
        if self.config.login_attempts.is_some() && !adm.exempt {
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

    pub fn registration_failed(&mut self, adm: &Admission) {
        if self.config.registrations_per_ip.is_some() && !adm.exempt {
            self.registrations.forget_latest(&adm.source);
        }
    }

    /// Whether a hit of `hit` from `source` should be logged now: at most
    /// once per [`WARN_EVERY`] for each pair.
    pub fn should_warn(&mut self, hit: Hit, source: Source, now: Instant) -> bool {
        if let Some(last) = self.warned.get_mut(&(hit, source)) {
            if now.saturating_duration_since(*last) < WARN_EVERY {
                return false;
            }
            *last = now;
            return true;
        }
        if self.warned.len() >= MAX_WARNED {
            return false;
        }
        self.warned.insert((hit, source), now);
        true
    }

    /// Drops expired entries.
    pub fn prune(&mut self, now: Instant) {
        self.account_failures.prune(now);
        self.source_failures.prune(now);
        self.registrations.prune(now);
        self.warned
            .retain(|_, t| now.saturating_duration_since(*t) < WARN_EVERY);
    }

    /// Entries held in the attempt tables (for tests and the log).
    pub fn tracked(&self) -> usize {
        self.account_failures.len() + self.source_failures.len() + self.registrations.len()
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

    fn strict() -> LimitConfig {
        LimitConfig {
            exempt: Vec::new(),
            ..LimitConfig::default()
        }
    }

    #[test]
    fn cidr_parsing_and_matching() {
        let blocks = parse_exempt("127.0.0.0/8, ::1,10.1.2.3").expect("parses");
        assert_eq!(blocks.len(), 3);
        assert!(blocks[0].contains(ip("127.9.8.7")));
        assert!(!blocks[0].contains(ip("128.0.0.1")));
        assert!(blocks[0].contains(ip("::ffff:127.0.0.2")), "v4-mapped");
        assert!(blocks[1].contains(ip("::1")));
        assert!(!blocks[1].contains(ip("::2")));
        assert!(blocks[2].contains(ip("10.1.2.3")));
        assert!(!blocks[2].contains(ip("10.1.2.4")));
        assert!(parse_exempt("none").expect("none").is_empty());
        assert!(parse_exempt("0.0.0.0/0").expect("all")[0].contains(ip("8.8.8.8")));
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "example.com",
            "10.0.0.0/x",
            "1.2.3.4,",
        ] {
            assert!(parse_exempt(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn ipv6_counts_by_64_and_mapped_v4_as_v4() {
        assert_eq!(
            Source::of(ip("2001:db8:1:2:aaaa::1")),
            Source::of(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            Source::of(ip("2001:db8:1:2::1")),
            Source::of(ip("2001:db8:1:3::1"))
        );
        assert_eq!(
            Source::of(ip("::ffff:10.0.0.1")),
            Source::of(ip("10.0.0.1"))
        );
        assert_eq!(Source::of(ip("2001:db8::7")).to_string(), "2001:db8::/64");
    }

    #[test]
    fn per_ip_limit_counts_open_connections() {
        let mut limits = Limits::new(LimitConfig {
            max_per_ip: Some(2),
            max_pending_logins: None,
            ..strict()
        });
        let mut a = limits.admit(ip("10.0.0.1")).expect("first");
        let mut b = limits.admit(ip("10.0.0.1")).expect("second");
        assert_eq!(limits.admit(ip("10.0.0.1")).err(), Some(Refusal::PerIp));
        // Another address is not affected.
        let mut c = limits.admit(ip("10.0.0.2")).expect("other address");
        limits.release(&mut a);
        let mut d = limits.admit(ip("10.0.0.1")).expect("slot freed");
        // Releasing twice does not free a slot twice.
        limits.release(&mut a);
        assert_eq!(limits.admit(ip("10.0.0.1")).err(), Some(Refusal::PerIp));
        for adm in [&mut b, &mut c, &mut d] {
            limits.release(adm);
        }
        assert!(limits.per_ip.is_empty(), "no entry left behind");
    }

    #[test]
    fn pending_limit_counts_only_connections_not_chatting() {
        let mut limits = Limits::new(LimitConfig {
            max_per_ip: None,
            max_pending_logins: Some(2),
            ..strict()
        });
        let mut a = limits.admit(ip("10.0.0.1")).expect("a");
        let mut b = limits.admit(ip("10.0.0.2")).expect("b");
        assert_eq!(limits.admit(ip("10.0.0.3")).err(), Some(Refusal::Busy));
        limits.chatting(&mut a);
        let mut c = limits.admit(ip("10.0.0.3")).expect("a logged in");
        limits.release(&mut a);
        assert_eq!(
            limits.pending(),
            2,
            "a chatting connection leaving frees nothing"
        );
        limits.release(&mut b);
        limits.release(&mut c);
        assert_eq!(limits.pending(), 0);
    }

    #[test]
    fn exempt_addresses_skip_per_ip_and_pending_limits() {
        let mut limits = Limits::new(LimitConfig {
            max_per_ip: Some(1),
            max_pending_logins: Some(1),
            ..LimitConfig::default()
        });
        for _ in 0..10 {
            let adm = limits.admit(ip("127.0.0.1")).expect("loopback is exempt");
            assert!(adm.exempt);
        }
        assert_eq!(limits.pending(), 0, "exempt connections are not counted");
        limits.admit(ip("192.0.2.1")).expect("one from outside");
        assert_eq!(limits.admit(ip("192.0.2.1")).err(), Some(Refusal::PerIp));
        assert_eq!(limits.admit(ip("192.0.2.2")).err(), Some(Refusal::Busy));
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
            .map(|_| limits.admit(ip("10.0.0.1")).expect("no limit"))
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
        let attacker = limits.admit(ip("10.0.0.1")).expect("attacker");
        let owner = limits.admit(ip("10.0.0.2")).expect("owner");
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
        let a = limits.admit(ip("10.0.0.1")).expect("a");
        let b = limits.admit(ip("10.0.0.2")).expect("b");
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
        let local = limits.admit(ip("127.0.0.1")).expect("local");
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
        let a = limits.admit(ip("10.0.0.1")).expect("a");
        // Three sent at once (from several addresses): the fourth is
        // refused before any answer.
        let others: Vec<Admission> = (2..5)
            .map(|i| limits.admit(ip(&format!("10.0.1.{i}"))).expect("other"))
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
        limits.login_abandoned(&others[2], "alice");
        assert!(limits.account_in_flight.is_empty());
        let c = &others[2];
        for _ in 0..2 {
            limits.login_started(c, "x", now);
            limits.login_abandoned(c, "x");
        }
        assert_eq!(
            limits.check_login(c, "bob", now).map_err(|t| t.hit),
            Err(Hit::SourceAttempts)
        );
        // An unknown name stays counted for the address only.
        let b = limits.admit(ip("10.0.0.2")).expect("b");
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
        let a = limits.admit(ip("10.0.0.1")).expect("a");
        assert!(limits.reserve_registration(&a, t0));
        assert!(limits.reserve_registration(&a, t0));
        assert!(!limits.reserve_registration(&a, t0));
        // One of them found the name taken: its reservation comes back.
        limits.registration_failed(&a);
        assert!(limits.reserve_registration(&a, t0));
        assert!(!limits.reserve_registration(&a, t0 + Duration::from_secs(599)));
        assert!(limits.reserve_registration(&a, t0 + REGISTRATION_WINDOW));
        let other = limits.admit(ip("10.0.0.2")).expect("other");
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
        assert!(limits.warned.is_empty());
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
}
