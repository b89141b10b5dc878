//! Every setting of the server and its default, in one place: the flags
//! (`clap` reads them) and the [`Config`] built from them. The binary only
//! parses; tests and benchmarks start from `Config::default()`, which is
//! the flags' defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::chat::hub::HubConfig;
use crate::chat::uploads::FileLimits;
use crate::limits::LimitConfig;

/// Rooms one account may own (the protocol's figure, not a flag).
pub const MAX_OWNED_ROOMS: usize = 10;
use crate::reactor::Config;
use crate::transport::tls::CertSource;

/// The server's settings as flags: every setting and its default, once.
#[derive(clap::Args, Debug, Clone)]
pub struct Flags {
    /// Address to listen on, IPv4 or IPv6 (`[::1]:59000`); port 0 picks a free
    /// one. May be given several times; every port serves every kind of client
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:59000")]
    pub listen: Vec<SocketAddr>,
    /// SQLite database file holding the accounts (created if missing)
    #[arg(long, value_name = "PATH", default_value = "neochat.db")]
    pub db: PathBuf,
    /// Days messages are kept (1 to 36500), or `forever`
    #[arg(long, value_name = "N|forever", default_value = "90", value_parser = parse_days)]
    pub history_days: Days,
    /// bcrypt cost for new passwords, 4 to 31
    #[arg(long, value_name = "N", default_value_t = 12,
          value_parser = clap::value_parser!(u32).range(4..=31))]
    pub bcrypt_cost: u32,
    /// Lines per second per user while chatting (burst twice that), or `off`
    #[arg(long, value_name = "N|off", default_value = "10", value_parser = parse_rate)]
    pub rate: Rate,
    /// Bytes per second of lines per user while chatting (burst four
    /// seconds' worth, and at least one --max-line), or `off`; `--rate off`
    /// turns this off too
    #[arg(long, value_name = "N|off", default_value = "4096", value_parser = parse_rate_bytes)]
    pub rate_bytes: Rate,
    /// Seconds a connection may take to log in (at most a day)
    #[arg(long, value_name = "SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub login_timeout: u64,
    /// Most connections at once, logged in or not (at most 1,000,000)
    #[arg(long, value_name = "N", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_clients: u64,
    /// Unsent output (bytes) after which a connection that does not read is cut off
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20,
          value_parser = clap::value_parser!(u64).range(64..=1 << 40))]
    pub max_output: u64,
    /// Unsent output (bytes) of all connections together past which the
    /// connections with the most unsent output are cut off
    #[arg(long, value_name = "BYTES", default_value_t = 256 << 20,
          value_parser = clap::value_parser!(u64).range(64..=1 << 40))]
    pub max_total_output: u64,
    /// Longest line accepted, in bytes (LF and one CR before it not counted)
    #[arg(long, value_name = "BYTES", default_value_t = 4096,
          value_parser = clap::value_parser!(u64).range(16..=1_048_576))]
    pub max_line: u64,
    /// Threads for password hashing and the database (default: number of CPUs)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=256))]
    pub workers: Option<u64>,
    /// Threads for TLS handshakes and bulk encryption, off the event loop;
    /// 0 does it on the loop (default: half the CPUs, at least 1)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(0..=64))]
    pub tls_workers: Option<u64>,
    /// Most connections at once from one IPv4 address or IPv6 /64, or `off`
    #[arg(long, value_name = "N|off", default_value = "16", value_parser = parse_limit)]
    pub max_per_ip: Limit,
    /// Most connections not yet logged in, server-wide, or `off`; one
    /// address holds at most a quarter of them (and no more than
    /// --max-per-ip), and a newcomer from an address holding none takes the
    /// place of the oldest of the address holding the most
    #[arg(long, value_name = "N|off", default_value = "50", value_parser = parse_limit)]
    pub max_pending_logins: Limit,
    /// Failed logins per account, and failed logins and taken names per
    /// address, in a minute before further attempts are refused without a
    /// password check, or `off`
    #[arg(long, value_name = "N|off", default_value = "5", value_parser = parse_limit)]
    pub login_attempts: Limit,
    /// Registrations per address in ten minutes, or `off`
    #[arg(long, value_name = "N|off", default_value = "5", value_parser = parse_limit)]
    pub registrations_per_ip: Limit,
    /// Password checks that may wait for a worker, or `off`
    #[arg(long, value_name = "N|off", default_value = "1024", value_parser = parse_limit)]
    pub max_auth_queue: Limit,
    /// Addresses (CIDR blocks, comma-separated), or `none`, that skip every
    /// per-address limit: connections per address, the pending-login pool
    /// and its share, failed logins and taken names per address,
    /// registrations per address. Never the per-account limit, the
    /// connection cap, flood control or the output limits
    #[arg(long, value_name = "CIDR,...|none", default_value = "127.0.0.0/8,::1",
          value_parser = parse_exempt)]
    pub exempt: Exempt,
    /// TLS on the same port (`on`), or `off` (a TLS client is then closed at once)
    #[arg(long, value_name = "on|off", default_value = "on", value_parser = parse_on_off,
          action = clap::ArgAction::Set)]
    pub tls: bool,
    /// The certificate chain (PEM) to serve, with --tls-key; without them a
    /// self-signed certificate is made beside the database on first start
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Another name (DNS name or address) for the self-signed certificate,
    /// besides localhost, the loopback addresses and the host name; may be
    /// given several times
    #[arg(long, value_name = "NAME")]
    pub tls_name: Vec<String>,
    /// Where plain text (no TLS) is served: `local` (loopback peers only) or `any`
    #[arg(long, value_name = "local|any", default_value = "local", value_parser = parse_plaintext,
          action = clap::ArgAction::Set)]
    pub plaintext: bool,
    /// Reverse proxies (CIDR blocks, comma-separated) whose PROXY protocol
    /// headers and X-Forwarded-For name the real client, or `none`
    #[arg(long, value_name = "CIDR,...|none", default_value = "none", value_parser = parse_exempt)]
    pub proxy_from: Exempt,
    /// A WebSocket Origin allowed besides the server's own
    /// (`https://chat.example.org`); may be given several times
    #[arg(long, value_name = "ORIGIN")]
    pub allowed_origin: Vec<String>,
    /// Store every message (`on`), so that users see what they missed and
    /// `/history` works; `off` stores none (offline private messages
    /// included) and shows none
    #[arg(long, value_name = "on|off", default_value = "on", value_parser = parse_on_off,
          action = clap::ArgAction::Set)]
    pub history: bool,
    /// Most rooms at once, the lobby not counted (1 to 100000)
    #[arg(long, value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub max_rooms: u64,
    /// Past this many users online in a room (the lobby too), nobody is
    /// told who joined or left it; `off` always tells
    #[arg(long, value_name = "N|off", default_value = "500", value_parser = parse_limit)]
    pub quiet_presence: Limit,
    /// Connections one account may have online at once; one more takes over
    /// the oldest (1 to 100)
    #[arg(long, value_name = "N", default_value_t = 4,
          value_parser = clap::value_parser!(u64).range(1..=100))]
    pub sessions_per_account: u64,
    /// Days a token from `/token` logs its account in (1 to 3650)
    #[arg(long, value_name = "N", default_value_t = 30,
          value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub token_days: u32,
    /// Largest file `/upload` takes, in bytes (a K, M or G suffix counts
    /// in 1024s: `25M`)
    #[arg(long, value_name = "BYTES", default_value = "25M", value_parser = parse_bytes)]
    pub max_file: u64,
    /// Bytes of files one account may have stored
    #[arg(long, value_name = "BYTES", default_value = "200M", value_parser = parse_bytes)]
    pub file_quota: u64,
    /// Bytes of files all accounts together may have stored
    #[arg(long, value_name = "BYTES", default_value = "5G", value_parser = parse_bytes)]
    pub files_max_total: u64,
    /// The server's address as users reach it (`https://chat.example.org`),
    /// for the URLs of uploads; without it, the address each client
    /// connected to
    #[arg(long, value_name = "URL", value_parser = parse_public_url)]
    pub public_url: Option<String>,
}

/// Bytes, plain or with a suffix K, M, G or T (powers of 1024).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (digits, shift) = match t.as_bytes().last().map(u8::to_ascii_uppercase) {
        Some(b'K') => (&t[..t.len() - 1], 10),
        Some(b'M') => (&t[..t.len() - 1], 20),
        Some(b'G') => (&t[..t.len() - 1], 30),
        Some(b'T') => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    digits
        .parse::<u64>()
        .ok()
        .filter(|_| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|n| n.checked_mul(1u64 << shift))
        .ok_or_else(|| format!("expected a number of bytes (e.g. 1000, 64K, 25M, 5G), got `{s}`"))
}

/// `https://host[:port]` (or `http://`), without a path; a trailing `/`
/// is dropped.
fn parse_public_url(s: &str) -> Result<String, String> {
    let url = s.trim().trim_end_matches('/');
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    match rest {
        Some(host)
            if !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b)) =>
        {
            Ok(url.to_owned())
        }
        _ => Err(format!("expected https://HOST[:PORT] (no path), got `{s}`")),
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Limit(Option<u32>);

/// A number of days, or `forever` (`None`).
#[derive(Clone, Copy, Debug)]
pub struct Days(Option<u32>);

fn parse_days(s: &str) -> Result<Days, String> {
    if s.eq_ignore_ascii_case("forever") {
        return Ok(Days(None));
    }
    match s.parse::<u32>() {
        Ok(n) if (1..=36_500).contains(&n) => Ok(Days(Some(n))),
        _ => Err(format!(
            "expected a number of days from 1 to 36500 or `forever`, got `{s}`"
        )),
    }
}

/// A limit: 1 to 1,000,000, or `off`.
fn parse_limit(s: &str) -> Result<Limit, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(Limit(None));
    }
    match s.parse::<u32>() {
        Ok(n) if (1..=1_000_000).contains(&n) => Ok(Limit(Some(n))),
        _ => Err(format!(
            "expected a number from 1 to 1000000 or `off`, got `{s}`"
        )),
    }
}

#[derive(Clone, Debug)]
pub struct Exempt(Vec<crate::limits::Cidr>);

fn parse_exempt(s: &str) -> Result<Exempt, String> {
    crate::limits::parse_exempt(s).map(Exempt)
}

#[derive(Clone, Copy, Debug)]
pub struct Rate(Option<u32>);

fn parse_rate(s: &str) -> Result<Rate, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(Rate(None));
    }
    match s.parse::<u32>() {
        Ok(n) if n >= 1 => Ok(Rate(Some(n))),
        _ => Err(format!(
            "expected a number of lines per second (1 or more) or `off`, got `{s}`"
        )),
    }
}

fn parse_rate_bytes(s: &str) -> Result<Rate, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(Rate(None));
    }
    match s.parse::<u32>() {
        Ok(n) if n >= 1 => Ok(Rate(Some(n))),
        _ => Err(format!(
            "expected a number of bytes per second (1 or more) or `off`, got `{s}`"
        )),
    }
}

fn parse_on_off(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("expected `on` or `off`, got `{s}`")),
    }
}

/// `--plaintext`: true for `any`.
fn parse_plaintext(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "local" => Ok(false),
        "any" => Ok(true),
        _ => Err(format!("expected `local` or `any`, got `{s}`")),
    }
}

/// Only for reading the defaults.
#[derive(clap::Parser)]
struct DefaultsOnly {
    #[command(flatten)]
    flags: Flags,
}

impl Default for Flags {
    fn default() -> Flags {
        use clap::Parser;
        DefaultsOnly::try_parse_from(["neochat-server"])
            .expect("the flags' defaults parse")
            .flags
    }
}

impl Flags {
    /// The configuration these flags describe.
    pub fn to_config(&self) -> Config {
        let tls = match (self.tls, &self.tls_cert, &self.tls_key) {
            (false, _, _) => None,
            (true, Some(cert), Some(key)) => Some(CertSource::Files {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => Some(CertSource::SelfSigned {
                names: self.tls_name.clone(),
            }),
        };
        Config {
            listen: self.listen.clone(),
            db: self.db.clone(),
            history_days: self.history_days.0,
            bcrypt_cost: self.bcrypt_cost,
            rate: self.rate.0,
            rate_bytes: self.rate_bytes.0,
            login_timeout: Duration::from_secs(self.login_timeout),
            max_clients: usize::try_from(self.max_clients).unwrap_or(usize::MAX),
            max_output: usize::try_from(self.max_output).unwrap_or(usize::MAX),
            max_total_output: usize::try_from(self.max_total_output).unwrap_or(usize::MAX),
            max_line: usize::try_from(self.max_line).unwrap_or(usize::MAX),
            workers: self.workers.map_or_else(
                || std::thread::available_parallelism().map_or(2, |n| n.get()),
                |n| n as usize,
            ),
            tls_workers: self.tls_workers.map_or_else(
                || std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)),
                |n| n as usize,
            ),
            max_auth_queue: self.max_auth_queue.0.map(|n| n as usize),
            limits: LimitConfig {
                max_per_ip: self.max_per_ip.0,
                max_pending_logins: self.max_pending_logins.0.map(|n| n as usize),
                login_attempts: self.login_attempts.0,
                registrations_per_ip: self.registrations_per_ip.0,
                exempt: self.exempt.0.clone(),
            },
            tls,
            plaintext_any: self.plaintext,
            proxy_from: self.proxy_from.0.clone(),
            allowed_origins: self.allowed_origin.clone(),
            hub: HubConfig {
                history: self.history,
                history_days: self.history_days.0,
                max_rooms: usize::try_from(self.max_rooms).unwrap_or(usize::MAX),
                max_owned: MAX_OWNED_ROOMS,
                quiet_presence: self.quiet_presence.0.map(|n| n as usize),
                sessions_per_account: self.sessions_per_account as usize,
                token_days: self.token_days,
                files: FileLimits {
                    max_file: self.max_file,
                    quota: self.file_quota,
                    max_total: self.files_max_total,
                },
            },
            public_url: self.public_url.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_take_suffixes() {
        assert_eq!(parse_bytes("1000"), Ok(1000));
        assert_eq!(parse_bytes("25M"), Ok(25 << 20));
        assert_eq!(parse_bytes("5g"), Ok(5 << 30));
        assert_eq!(parse_bytes("64K"), Ok(64 << 10));
        for bad in [
            "",
            "M",
            "-1",
            "1.5M",
            "99999999999999999999",
            "16777216T",
            "1 M",
        ] {
            assert!(parse_bytes(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            parse_public_url("https://chat.example.org/"),
            Ok("https://chat.example.org".to_owned())
        );
        assert!(parse_public_url("https://x/files").is_err());
        assert!(parse_public_url("ftp://x").is_err());
    }

    #[test]
    fn history_days_take_a_number_or_forever() {
        assert_eq!(Flags::default().to_config().history_days, Some(90));
        assert_eq!(parse_days("7").map(|d| d.0), Ok(Some(7)));
        assert_eq!(parse_days("FOREVER").map(|d| d.0), Ok(None));
        for bad in ["0", "-1", "36501", "off", ""] {
            assert!(parse_days(bad).is_err(), "{bad:?}");
        }
    }
}
