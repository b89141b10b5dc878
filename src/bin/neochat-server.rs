//! `neochat-server`: parses flags, sets up logging, runs the library's server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use neochat::limits::LimitConfig;
use neochat::{Config, Server};

/// A real-time chat server speaking a line protocol: use the `neochat`
/// client or plain `nc HOST PORT`.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Address to listen on, IPv4 or IPv6 (`[::1]:59000`); port 0 picks a free one
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:59000")]
    listen: SocketAddr,
    /// SQLite database file holding the accounts (created if missing)
    #[arg(long, value_name = "PATH", default_value = "neochat.db")]
    db: PathBuf,
    /// bcrypt cost for new passwords, 4 to 31
    #[arg(long, value_name = "N", default_value_t = 12,
          value_parser = clap::value_parser!(u32).range(4..=31))]
    bcrypt_cost: u32,
    /// Lines per second per user while chatting (burst twice that), or `off`
    #[arg(long, value_name = "N|off", default_value = "10", value_parser = parse_rate)]
    rate: Rate,
    /// Seconds a connection may take to log in (at most a day)
    #[arg(long, value_name = "SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    login_timeout: u64,
    /// Most connections at once, logged in or not (at most 1,000,000)
    #[arg(long, value_name = "N", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_clients: u64,
    /// Unsent output (bytes) after which a connection that does not read is cut off
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20,
          value_parser = clap::value_parser!(u64).range(64..=1 << 40))]
    max_output: u64,
    /// Longest line accepted, in bytes (LF and one CR before it not counted)
    #[arg(long, value_name = "BYTES", default_value_t = 4096,
          value_parser = clap::value_parser!(u64).range(16..=1_048_576))]
    max_line: u64,
    /// Threads for password hashing and the database (default: number of CPUs)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=256))]
    workers: Option<u64>,
    /// Most connections at once from one IPv4 address or IPv6 /64, or `off`
    #[arg(long, value_name = "N|off", default_value = "16", value_parser = parse_limit)]
    max_per_ip: Limit,
    /// Most connections not yet logged in, server-wide, or `off`
    #[arg(long, value_name = "N|off", default_value = "50", value_parser = parse_limit)]
    max_pending_logins: Limit,
    /// Failed logins per account, and per address, in a minute before
    /// further attempts are refused without a password check, or `off`
    #[arg(long, value_name = "N|off", default_value = "5", value_parser = parse_limit)]
    login_attempts: Limit,
    /// Registrations per address in ten minutes, or `off`
    #[arg(long, value_name = "N|off", default_value = "5", value_parser = parse_limit)]
    registrations_per_ip: Limit,
    /// Password checks that may wait for a worker, or `off`
    #[arg(long, value_name = "N|off", default_value = "1024", value_parser = parse_limit)]
    max_auth_queue: Limit,
    /// Addresses (CIDR blocks, comma-separated) that skip the per-address
    /// and pending-login limits, or `none`
    #[arg(long, value_name = "CIDR,...|none", default_value = "127.0.0.0/8,::1",
          value_parser = parse_exempt)]
    exempt: Exempt,
}

#[derive(Clone, Copy, Debug)]
struct Limit(Option<u32>);

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
struct Exempt(Vec<neochat::limits::Cidr>);

fn parse_exempt(s: &str) -> Result<Exempt, String> {
    neochat::limits::parse_exempt(s).map(Exempt)
}

#[derive(Clone, Copy, Debug)]
struct Rate(Option<u32>);

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

fn main() -> ExitCode {
    let args = Args::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();

    let defaults = Config::default();
    let config = Config {
        listen: args.listen,
        db: args.db,
        bcrypt_cost: args.bcrypt_cost,
        rate: args.rate.0,
        login_timeout: Duration::from_secs(args.login_timeout),
        max_clients: usize::try_from(args.max_clients).unwrap_or(usize::MAX),
        max_output: usize::try_from(args.max_output).unwrap_or(usize::MAX),
        max_line: usize::try_from(args.max_line).unwrap_or(usize::MAX),
        workers: args.workers.map_or(defaults.workers, |n| n as usize),
        max_auth_queue: args.max_auth_queue.0.map(|n| n as usize),
        limits: LimitConfig {
            max_per_ip: args.max_per_ip.0,
            max_pending_logins: args.max_pending_logins.0.map(|n| n as usize),
            login_attempts: args.login_attempts.0,
            registrations_per_ip: args.registrations_per_ip.0,
            exempt: args.exempt.0,
        },
    };

    match neochat::reactor::raise_fd_limit() {
        Ok(n) if (n as usize) < config.max_clients.saturating_add(64) => log::warn!(
            "open-file limit is {n}: fewer than --max-clients {} connections will fit",
            config.max_clients
        ),
        Ok(n) => log::debug!("open-file limit {n}"),
        Err(e) => log::warn!("cannot raise the open-file limit: {e}"),
    }

    let mut server = match Server::bind(config.clone()) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("neochat-server: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = server.handle_signals() {
        eprintln!("neochat-server: cannot install signal handlers: {e}");
        return ExitCode::FAILURE;
    }
    // Scripts and tests wait for this exact line.
    eprintln!("listening on {}", server.local_addr());
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("neochat-server: event loop failed: {e}");
            ExitCode::FAILURE
        }
    }
}
