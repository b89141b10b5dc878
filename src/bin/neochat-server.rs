//! `neochat-server`: parses flags, sets up logging, runs the library's
//! server; `neochat-server fingerprint` prints the TLS certificate's
//! fingerprint for clients to check; `neochat-server op ...` and `users
//! ...` are the operator's commands on the database (the work is
//! `neochat::admin`; here, the flags, the password prompt and the output).

use std::fmt::Display;
use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use neochat::Server;
use neochat::admin;
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
    /// Grant, take back or list the server operators (the server may be
    /// running: it takes the change within seconds)
    Op {
        #[command(flatten)]
        db: Db,
        #[command(subcommand)]
        action: OpAction,
    },
    /// List accounts, delete one, or reset its password (the server may be
    /// running: it closes the account's connections within seconds)
    Users {
        #[command(flatten)]
        db: Db,
        #[command(subcommand)]
        action: UsersAction,
    },
}

/// The database the admin subcommands work on.
#[derive(clap::Args, Debug)]
struct Db {
    /// The server's database (must exist: it is never created here)
    #[arg(long, value_name = "PATH", default_value = "neochat.db", global = true)]
    db: PathBuf,
}

#[derive(Subcommand, Debug)]
enum OpAction {
    /// Make an account a server operator
    Add { name: String },
    /// Make a server operator an ordinary account again
    Remove { name: String },
    /// Print the server operators, one a line
    List,
}

#[derive(Subcommand, Debug)]
enum UsersAction {
    /// Print every account: name, creation time, ` op`, ` banned until <time>`
    List,
    /// Delete an account and everything of it; its name can never be
    /// registered again
    Delete { name: String },
    /// Set a new password (asked twice on the terminal, or one line from
    /// stdin) and revoke every token of the account
    ResetPassword {
        name: String,
        /// bcrypt cost of the new hash, 4 to 31
        #[arg(long, value_name = "N", default_value_t = 12,
              value_parser = clap::value_parser!(u32).range(4..=31))]
        bcrypt_cost: u32,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match args.command {
        Some(Command::Fingerprint { db, tls_cert }) => fingerprint(&db, tls_cert),
        Some(Command::Op { db, action }) => op(&db.db, action),
        Some(Command::Users { db, action }) => users(&db.db, action),
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

fn op(db: &Path, action: OpAction) -> ExitCode {
    match action {
        OpAction::Add { name } => report(admin::op_add(db, &name).map(|r| [r])),
        OpAction::Remove { name } => report(admin::op_remove(db, &name).map(|r| [r])),
        OpAction::List => report(admin::op_list(db)),
    }
}

fn users(db: &Path, action: UsersAction) -> ExitCode {
    match action {
        UsersAction::List => report(admin::users_list(db)),
        UsersAction::Delete { name } => report(admin::users_delete(db, &name).map(|r| [r])),
        UsersAction::ResetPassword { name, bcrypt_cost } => reset_password(db, &name, bcrypt_cost),
    }
}

fn reset_password(db: &Path, name: &str, cost: u32) -> ExitCode {
    // An unknown name (or a missing database) is told before the password
    // is asked for.
    let shown = match admin::user(db, name) {
        Ok(shown) => shown,
        Err(e) => return fail(e),
    };
    let password = match new_password(&shown) {
        Ok(password) => password,
        Err(e) => return fail(e),
    };
    report(admin::reset_password(db, name, &password, cost).map(|r| [r]))
}

/// Prints each item on its own line, or the error; the exit code.
fn report<T: Display, E: Display>(result: Result<impl IntoIterator<Item = T>, E>) -> ExitCode {
    let lines = match result {
        Ok(lines) => lines,
        Err(e) => return fail(e),
    };
    let mut out = io::stdout().lock();
    for line in lines {
        if let Err(e) = writeln!(out, "{line}") {
            return fail(format!("cannot write the output: {e}"));
        }
    }
    match out.flush() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(format!("cannot write the output: {e}")),
    }
}

fn fail(e: impl Display) -> ExitCode {
    eprintln!("neochat-server: {e}");
    ExitCode::FAILURE
}

/// The new password: asked twice, hidden, on the terminal; else one line
/// of stdin (a script's pipe), without its LF or CRLF.
fn new_password(name: &str) -> Result<String, String> {
    if !io::stdin().is_terminal() {
        return password_from_stdin();
    }
    let first = hidden(&format!("new password for {name}: "))?;
    admin::check_password(&first).map_err(|e| e.to_string())?;
    let again = hidden("again: ")?;
    if first != again {
        return Err("the passwords do not match: nothing changed".to_owned());
    }
    Ok(first)
}

/// Reads a password from the terminal without echo. rpassword answers
/// Ctrl-C by raising SIGINT with the terminal still in its raw mode, which
/// would kill the process and leave the terminal so; ignored meanwhile,
/// the interrupt comes back as an error after the terminal is restored.
fn hidden(prompt: &str) -> Result<String, String> {
    // SAFETY: plain syscalls on our own signal disposition.
    let old = unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
    let result = rpassword::prompt_password(prompt);
    // SAFETY: as above, putting back what was there.
    unsafe { libc::signal(libc::SIGINT, old) };
    result.map_err(|e| match e.kind() {
        io::ErrorKind::Interrupted => "interrupted: nothing changed".to_owned(),
        io::ErrorKind::UnexpectedEof => "no password typed: nothing changed".to_owned(),
        _ => format!("cannot read the password from the terminal: {e}"),
    })
}

/// One line of stdin, at most a few KiB read (a password is 72 bytes at
/// most: a longer line is refused whole, never cut).
fn password_from_stdin() -> Result<String, String> {
    let mut line = Vec::new();
    io::stdin()
        .lock()
        .take(4096)
        .read_until(b'\n', &mut line)
        .map_err(|e| format!("cannot read the password from stdin: {e}"))?;
    if line.is_empty() {
        return Err("no password on stdin".to_owned());
    }
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    }
    String::from_utf8(line).map_err(|_| "the password on stdin is not valid UTF-8".to_owned())
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
