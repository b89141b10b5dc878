//! `neochat-server`: parses flags, sets up logging, runs the library's
//! server; `neochat-server fingerprint` prints the TLS certificate's
//! fingerprint for clients to check.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use neochat::Server;
use neochat::config::Flags;
use neochat::transport::tls;

/// A real-time chat server. One port serves every client: the `neochat`
/// terminal client, `ncat --ssl HOST PORT` (or plain `nc` on loopback),
/// browsers over HTTPS and WebSocket.
#[derive(Parser, Debug)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Args {
    #[command(flatten)]
    flags: Flags,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the SHA-256 fingerprint of the server's TLS certificate (the
    /// self-signed one beside the database, or --tls-cert)
    Fingerprint {
        /// The server's database (the certificate is kept beside it)
        #[arg(long, value_name = "PATH", default_value = "neochat.db")]
        db: PathBuf,
        /// The operator's certificate file, instead of the self-signed one
        #[arg(long, value_name = "PEM")]
        tls_cert: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match args.command {
        Some(Command::Fingerprint { db, tls_cert }) => fingerprint(&db, tls_cert),
        None => serve(&args.flags),
    }
}

fn fingerprint(db: &std::path::Path, tls_cert: Option<PathBuf>) -> ExitCode {
    let path = tls_cert.unwrap_or_else(|| tls::self_signed_paths(db).0);
    match tls::file_fingerprint(&path) {
        Ok(fp) => {
            println!("{fp}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("neochat-server: {e} (the server makes its certificate on first start)");
            ExitCode::FAILURE
        }
    }
}

fn serve(flags: &Flags) -> ExitCode {
    let config = flags.to_config();
    match neochat::reactor::raise_fd_limit() {
        Ok(n) if (n as usize) < config.max_clients.saturating_add(64) => log::warn!(
            "open-file limit is {n}: fewer than --max-clients {} connections will fit",
            config.max_clients
        ),
        Ok(n) => log::debug!("open-file limit {n}"),
        Err(e) => log::warn!("cannot raise the open-file limit: {e}"),
    }

    let mut server = match Server::bind(config) {
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
    if let Some(fp) = server.fingerprint() {
        eprintln!("TLS certificate fingerprint {fp}");
    }
    // Scripts and tests wait for these exact lines, one per listener.
    for addr in server.local_addrs() {
        eprintln!("listening on {addr}");
    }
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("neochat-server: event loop failed: {e}");
            ExitCode::FAILURE
        }
    }
}
