//! `neochat`: the terminal client of NeoChat.
//!
//! A simple blocking client. It connects over TLS to any host that is not
//! this machine (`localhost`, 127.0.0.0/8, `::1` get plain TCP), or as
//! `--tls` / `--plain` say. A certificate the system's authorities vouch
//! for is accepted as usual; any other is handled like an SSH host key: the
//! first time, the person is shown its fingerprint and asked, and the
//! answer is remembered in `known_servers`; a remembered server showing
//! another certificate is refused loudly. All of that happens after the
//! handshake and before anything is sent to the server.
//!
//! Then the main thread follows the server's login prompts (`? choice`,
//! `? username`, `? password`, `? token`; any other field is refused) and
//! asks the person in plain words, reading the password without echo;
//! login answers never enter the line history. Once logged in, a reader
//! thread prints what the server sends while the main thread reads the
//! keyboard (rustyline, so an incoming line never destroys the line being
//! typed) and sends each line; `/passwd` is asked for hidden, never typed
//! into the chat line. Without a terminal, `--user` with
//! `--password-file` or `NEOCHAT_PASSWORD` logs in by itself and stdin is
//! piped to the chat.
//!
//! Login tokens: `--remember` logs in as usual, then asks the server
//! `/token` and keeps the answer (never shown) in a file only the user can
//! read; later runs log in with `T` and that token, asking no password,
//! and fall back to the password when the server refuses it (the file is
//! then deleted). `--forget` logs in with the token, sends `/logout`
//! (which revokes it) and deletes the file; `/logout` and `/logout all`
//! typed in the chat delete the file they revoke.
//!
//! The prompt shows the current room (`> ` in the lobby, `#rust> ` in a
//! room), followed from the server's answers to `/join` and `/part`; lines
//! of other rooms are marked `[#room]`, history lines carry the time they
//! were delivered.
//!
//! Files: `/send PATH` and `/get N|URL [DIR]` are the client's own
//! commands, never sent as typed. `/send` asks the server `/upload <name>
//! <bytes>`; the reader thread hands the slot's URL (`* upload <url>`, not
//! shown) to the upload thread `/send` started, which `PUT`s the file
//! from disk over a new connection and says `* sent NAME`; the server's
//! `[file] ...` announcement in the room is the message. Announcements
//! are shown with a number instead of their URL (`bob: [file] a.pdf (1.2
//! MiB) /get 3`), and `/get 3` downloads the file in a thread of its own
//! into the current directory (or DIR), never over another file (`a
//! (1).pdf`), through a `.part` file that is removed if it is cut short.
//! Transfers connect to the chat server (or, when a URL names the chat
//! server's host, to its port there), over TLS when the chat does,
//! trusting the chat connection's certificate without asking again; over
//! 4 MiB they show their progress. The client waits for running transfers
//! before it leaves (Ctrl-C abandons them).
//!
//! Modules (in `src/bin/neochat/`): `display` (sanitizing, line kinds,
//! colours, time: pure), `rooms` (room names, history times, the current
//! room), `wire` (bounded line reading, error phrases, address checks),
//! `tls` (handshake, certificate verifier), `known` (the
//! pin file, fingerprints), `trust` (the trust decision and its questions),
//! `tokens` (the kept login tokens), `conn` (plain or TLS stream split
//! for the reader thread and the writer), `term` (terminal mode, hidden password, screen width), `prompt`
//! (login questions), `chat` (the reader thread and the screen around
//! rustyline), `files` (file names, URLs, announcements and their numbers,
//! progress: pure), `transfer` (the `/send` and `/get` threads and their
//! connections).

// The modules live in `src/bin/neochat/`, beside this file.
#[path = "neochat/chat.rs"]
mod chat;
#[path = "neochat/conn.rs"]
mod conn;
#[path = "neochat/display.rs"]
mod display;
#[path = "neochat/files.rs"]
mod files;
#[path = "neochat/known.rs"]
mod known;
#[path = "neochat/prompt.rs"]
mod prompt;
#[path = "neochat/rooms.rs"]
mod rooms;
#[path = "neochat/term.rs"]
mod term;
#[path = "neochat/tls.rs"]
mod tls;
#[path = "neochat/tokens.rs"]
mod tokens;
#[path = "neochat/transfer.rs"]
mod transfer;
#[path = "neochat/trust.rs"]
mod trust;
#[path = "neochat/wire.rs"]
mod wire;

use std::io::{self, BufReader, IsTerminal, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use clap::{CommandFactory, Parser};
use rustyline::error::ReadlineError;
use rustyline::{Config, DefaultEditor};

use conn::{Conn, Reader, Writer};
use display::{Input, Line, Style, classify, classify_input, clock, logged_in_as, sanitize};
use known::Fingerprint;

/// How long the prompt waits for the server's answer to `/join` or `/part`.
const ANSWER_WAIT: Duration = Duration::from_secs(1);

/// How long the prompt waits for the end of `/passwd` (the server checks
/// one password and hashes another).
const PASSWD_WAIT: Duration = Duration::from_secs(10);

/// How long `--forget` waits for any one line from the server.
const FORGET_WAIT: Duration = Duration::from_secs(15);

const ABOUT: &str = "The NeoChat terminal client: log in, chat, send private messages.";

const AFTER_HELP: &str = "\
Interactive use: run `neochat` and answer the questions; the password is never shown.
In the chat, type a line to say it to everybody in the current room, or a command:
  /msg USER TEXT   private message     /me ACTION   action
  /who [#ROOM]     who is online       /help        server's help
  /join #ROOM      join a room and talk there (/join #lobby: back to the lobby)
  /part [#ROOM]    leave a room        /to #ROOM TEXT  say TEXT in another room
  /rooms           list the rooms      /topic [#ROOM] [TEXT]  show or set a topic
  /history [#ROOM|@USER] [N]   the last N messages (default 20)
  /quit or Ctrl-D  leave               //text       say a line starting with '/'
  /passwd          change your password (the client asks for both, hidden)
  /token           a login token for scripts (shown: keep it secret)
  /logout [all]    leave and revoke this login's token (all: every token)
  /send PATH       share a file in the current room (at most 25 MiB by default)
  /get N [DIR]     download the file shown with `/get N` into DIR (default: the
                   current directory; never over another file: `name (1).ext`);
                   /get URL [DIR] takes a file's URL instead
The prompt shows the current room (`#rust> `; `> ` is the lobby). Lines of
another room start with [#room]; history lines with the UTC date and time they
were delivered (`12-01 10:38`).

Files: a file someone shares shows as `bob: [file] report.pdf (1.2 MiB) /get 3`;
type `/get 3` to download it. Transfers run beside the chat, over a connection
of their own to the same server (over TLS when the chat is, trusting the same
certificate), with their progress shown over 4 MiB; the client waits for them
before it leaves. Without a terminal their words go to stderr.

Staying logged in: `neochat --remember HOST:PORT` logs in as usual, then keeps
a login token from the server (valid 30 days, unless revoked) in
$XDG_CONFIG_HOME/neochat/tokens/USER@HOST:PORT (else ~/.config/neochat/...),
readable by you only. From then on `neochat HOST:PORT` (a script too) logs in
with it and asks no password (with tokens of several accounts kept, give --user
NAME); a token the server refuses is deleted, and the password asked as usual.
`neochat --forget HOST:PORT` revokes the token on the server and deletes it;
so do /logout (this login's token) and /logout all (every token) in the chat.

Scripts and bots (no terminal): give --user and the password in a file or in
NEOCHAT_PASSWORD; every line of stdin is then sent, and the client quits at
the end of stdin:
  printf 'hello\\n' | NEOCHAT_PASSWORD=... neochat --user bot
Passwords are never taken from the command line.

Encryption: TLS is used for every server but this machine (localhost,
127.0.0.0/8, ::1), which gets plain TCP unless --tls is given; --plain turns
TLS off. A certificate from an authority this system trusts is accepted. Any
other (self-signed, say) is shown by its fingerprint the first time, and if
you trust it, it is remembered in $XDG_CONFIG_HOME/neochat/known_servers
(else ~/.config/neochat/known_servers) as `HOST:PORT SHA256:...`. If a
remembered server later shows another certificate, the client refuses and
sends nothing. Scripts cannot be asked: give --fingerprint SHA256:... (from
the server's operator: `neochat-server fingerprint`).

Environment: NEOCHAT_PASSWORD (with --user), NO_COLOR (no colours),
XDG_CONFIG_HOME and HOME (where known_servers and tokens are), SSL_CERT_FILE
and SSL_CERT_DIR (other certificate authorities than the system's).
Exit status: 0 after /quit or end of input, 1 when the connection fails, the
server closes it or its certificate is not trusted, 2 for bad arguments,
130 after Ctrl-C.";

#[derive(Parser, Debug)]
#[command(name = "neochat", version, about = ABOUT, after_help = AFTER_HELP)]
struct Args {
    /// Server to connect to
    #[arg(
        value_name = "HOST:PORT",
        default_value = "127.0.0.1:59000",
        value_parser = wire::parse_addr
    )]
    server: String,

    /// Log in as NAME without asking (and, without a terminal, pipe stdin
    /// to the chat)
    #[arg(long, value_name = "NAME")]
    user: Option<String>,

    /// Read the password from the first line of PATH (with --user)
    #[arg(long, value_name = "PATH", requires = "user")]
    password_file: Option<PathBuf>,

    /// Create the account --user instead of logging in to it
    #[arg(long, requires = "user")]
    register: bool,

    /// Log in as usual, then keep a login token for this server and
    /// account (readable by you only), so that the next runs log in
    /// without asking the password
    #[arg(long)]
    remember: bool,

    /// Revoke the login token kept for this server (with --user, that
    /// account's) and delete it
    #[arg(long, conflicts_with_all = ["remember", "register", "password_file"])]
    forget: bool,

    /// Use TLS, even to this machine (TLS is the default for other hosts)
    #[arg(long, conflicts_with = "plain")]
    tls: bool,

    /// Use plain TCP, even to another machine: nothing is encrypted
    #[arg(long)]
    plain: bool,

    /// Accept only the certificate with this fingerprint, as
    /// `neochat-server fingerprint` prints it (implies --tls); lets a script
    /// trust a self-signed server the first time
    #[arg(
        long,
        value_name = "SHA256:...",
        value_parser = known::parse_fingerprint,
        conflicts_with = "plain"
    )]
    fingerprint: Option<Fingerprint>,
}

/// Login answers given up front with `--user`.
struct Auto {
    register: bool,
    user: String,
    /// From `--password-file` or `NEOCHAT_PASSWORD`; `None` asks on the
    /// terminal.
    password: Option<String>,
}

fn main() -> ExitCode {
    let args = parse_args();
    term::init_time_zone();
    let stdin_tty = io::stdin().is_terminal();
    let stdout_tty = io::stdout().is_terminal();
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let style = Style {
        color: stdout_tty && !no_color,
    };

    // The token kept for this server, unless the password is wanted.
    let key = known::server_key(&args.server);
    let token_dir = tokens::default_dir();
    let stored = if args.remember || args.register {
        None
    } else {
        match kept_token(
            token_dir.as_deref(),
            &key,
            args.user.as_deref(),
            args.forget,
        ) {
            Ok(stored) => stored,
            Err(code) => return ExitCode::from(code),
        }
    };
    if args.forget && stored.is_none() {
        match &args.user {
            Some(user) => say(&format!(
                "neochat: no login token is kept for {user} at {key}; nothing to forget"
            )),
            None => say(&format!(
                "neochat: no login token is kept for {key}; nothing to forget"
            )),
        }
        return ExitCode::SUCCESS;
    }

    let auto = match auto_login(&args, stdin_tty, stored.is_some()) {
        Ok(_) if args.forget => None,
        Ok(auto) => auto,
        Err(msg) => {
            eprintln!("neochat: {msg}");
            return ExitCode::from(2);
        }
    };

    let saved = Arc::new(term::SavedMode::capture());
    let mut editor = if stdin_tty {
        // History by hand: only chat lines go in it, never a login answer.
        let config = Config::builder().auto_add_history(false).build();
        match DefaultEditor::with_config(config) {
            Ok(editor) => Some(editor),
            Err(e) => {
                eprintln!("neochat: cannot set up the terminal: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };

    // A login with its password given up front is a script: nobody is
    // there to answer a question about the certificate.
    let scripted = auto.as_ref().is_some_and(|a| a.password.is_some());
    let asker = if scripted { None } else { editor.as_mut() };
    if args.forget
        && let Some(stored) = stored
    {
        return forget(&args, &key, stored, style, asker);
    }
    let conn = match open(&args, asker) {
        Ok(conn) => conn,
        Err(code) => return ExitCode::from(code),
    };
    // File transfers go where the chat went, as the chat went.
    let origin = transfer::Origin {
        server: args.server.clone(),
        tls: matches!(conn, Conn::Tls(..)),
        chat_cert: conn.fingerprint(),
    };
    let (reader, writer) = match conn.split() {
        Ok(halves) => halves,
        Err(e) => {
            eprintln!("neochat: {}", wire::describe(&e));
            return ExitCode::FAILURE;
        }
    };
    let mut reader = BufReader::new(reader);

    let mut session = Session {
        style,
        last: None,
        rooms: Arc::new(rooms::Rooms::default()),
        quiet: false,
    };
    let mut token = stored.map(|stored| {
        eprintln!(
            "neochat: logging in as {} with the login token kept in {}",
            stored.user,
            stored.path.display()
        );
        TokenTry {
            stored,
            state: TryState::Unsent,
            fallback: true,
        }
    });
    let entered = session.login(
        &mut reader,
        &writer,
        auto.as_ref(),
        editor.as_mut(),
        &mut token,
    );
    let Entered::As(name) = entered else {
        // Only a login without fallback (`--forget`) gives up on a token.
        return ExitCode::FAILURE;
    };
    let used = token
        .filter(|t| t.state == TryState::Sent)
        .map(|t| t.stored.path);
    let keep = Arc::new(tokens::Keep::new(token_dir, &key, &name, used));
    if args.remember {
        keep.want();
        // A failed send means the server is gone: the reader thread says so.
        let _ = writer.send_line(b"/token");
    }
    match editor {
        Some(editor) => {
            session.chat_interactive(reader, writer, editor, stdout_tty, saved, keep, origin)
        }
        None => session.chat_piped(reader, writer, saved, keep, origin),
    }
}

/// The login token kept for `server` (a `known::server_key`) and `user`,
/// if any; warnings about the store are printed. With several accounts'
/// tokens and no `--user`, none is used (`--forget` must be told which:
/// `Err(2)`).
fn kept_token(
    dir: Option<&std::path::Path>,
    server: &str,
    user: Option<&str>,
    forget: bool,
) -> Result<Option<tokens::Stored>, u8> {
    let Some(dir) = dir else {
        return Ok(None);
    };
    let (found, warnings) = match tokens::find(dir, server, user) {
        Ok(found) => found,
        Err(e) => {
            eprintln!(
                "neochat: warning: cannot read {}: {}; no kept login token is used",
                dir.display(),
                wire::describe(&e)
            );
            return Ok(None);
        }
    };
    for w in warnings {
        eprintln!("neochat: warning: {w}");
    }
    match found {
        tokens::Found::Nothing => Ok(None),
        tokens::Found::One(stored) => {
            if tokens::readable_by_others(&stored.path) {
                eprintln!(
                    "neochat: warning: {} can be read by other users; \
                     `chmod 600` it, or `neochat --forget` the token",
                    stored.path.display()
                );
            }
            Ok(Some(stored))
        }
        tokens::Found::Several(names) => {
            let names = names.join(", ");
            if forget {
                eprintln!(
                    "neochat: login tokens are kept for {names} at {server}; \
                     say which to forget with --user NAME"
                );
                return Err(2);
            }
            eprintln!(
                "neochat: login tokens are kept for {names} at {server}; \
                 give --user NAME to log in with one"
            );
            Ok(None)
        }
    }
}

/// `--forget`: logs in with the kept token, sends `/logout` (the server
/// revokes the token this connection logged in with) and deletes the
/// file, saying what was done. A token the server no longer takes is just
/// deleted. When the server cannot be reached the file is kept, so that
/// the token can still be revoked later.
fn forget(
    args: &Args,
    server: &str,
    stored: tokens::Stored,
    style: Style,
    asker: Option<&mut DefaultEditor>,
) -> ExitCode {
    let path = stored.path.clone();
    let user = stored.user.clone();
    let still_kept = || {
        eprintln!(
            "neochat: the token is still kept in {}, so that it can be revoked when \
             the server answers; run --forget again then (deleting the file forgets \
             it here only)",
            path.display()
        );
    };
    let conn = match open(args, asker) {
        Ok(conn) => conn,
        Err(code) => {
            still_kept();
            return ExitCode::from(code);
        }
    };
    // A server that stops answering must not hold the client for ever.
    let halves = conn
        .set_read_timeout(Some(FORGET_WAIT))
        .and_then(|()| conn.split());
    let (reader, writer) = match halves {
        Ok(halves) => halves,
        Err(e) => {
            eprintln!("neochat: {}", wire::describe(&e));
            still_kept();
            return ExitCode::FAILURE;
        }
    };
    let mut reader = BufReader::new(reader);
    let mut session = Session {
        style,
        last: None,
        rooms: Arc::new(rooms::Rooms::default()),
        quiet: true,
    };
    let mut token = Some(TokenTry {
        stored,
        state: TryState::Unsent,
        fallback: false,
    });
    let deleted = |done: &str| {
        tokens::remove_saying(&path, done).unwrap_or_else(|| format!("neochat: {done}"))
    };
    match session.login(&mut reader, &writer, None, None, &mut token) {
        Entered::As(_) => {}
        Entered::TokenRefused => {
            say(&deleted(&format!(
                "the server no longer takes the login token of {user} at {server} \
                 (expired or revoked)"
            )));
            return ExitCode::SUCCESS;
        }
        Entered::NoTokens => {
            say(&deleted(&format!(
                "{server} does not take login tokens, so there is nothing to revoke"
            )));
            return ExitCode::SUCCESS;
        }
    }
    if writer.send_line(b"/logout").is_err() {
        // The reason, if any, is the next thing read.
    }
    let mut buf = Vec::new();
    let answer = loop {
        match wire::read_line(&mut reader, &mut buf, wire::MAX_LINE) {
            Ok(true) => {}
            Ok(false) | Err(_) => break None,
        }
        let line = sanitize(&buf);
        match classify(&line) {
            Line::Notice("bye") => break Some(Ok(())),
            Line::Error(_) => break Some(Err(line)),
            _ => {}
        }
    };
    match answer {
        Some(Ok(())) => {
            say(&deleted(&format!(
                "the server revoked the login token of {user} at {server}"
            )));
            ExitCode::SUCCESS
        }
        Some(Err(line)) => {
            let _ = writer.send_line(b"/quit");
            say(&deleted(&format!(
                "the server did not confirm that it revoked the token ({line})"
            )));
            ExitCode::FAILURE
        }
        None => {
            say(&deleted(
                "the connection ended before the server confirmed that it revoked the token",
            ));
            ExitCode::FAILURE
        }
    }
}

/// Parses the command line; on a usage error prints it with the usage line
/// (clap leaves that out for a bad value) and exits 2.
fn parse_args() -> Args {
    match Args::try_parse() {
        Ok(args) => args,
        // --help and --version: print to stdout, exit 0.
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            let text = e.render().to_string();
            eprint!("{text}");
            if !text.contains("Usage:") {
                eprintln!("\n{}", Args::command().render_usage());
            }
            std::process::exit(2);
        }
    }
}

/// Checks the `--user` options and reads the password source. An error is
/// a usage problem (exit 2). With a kept token (`token`), nothing has to be
/// asked, so neither a terminal nor a password is needed.
fn auto_login(args: &Args, stdin_tty: bool, token: bool) -> Result<Option<Auto>, String> {
    let Some(user) = &args.user else {
        if !stdin_tty && !token {
            return Err(
                "standard input is not a terminal, so the client cannot ask for a \
                 name and password; use --user NAME with --password-file PATH or \
                 NEOCHAT_PASSWORD in the environment (and --register to sign up)"
                    .into(),
            );
        }
        return Ok(None);
    };
    if user.trim().is_empty() || user.chars().any(display::is_unsafe) {
        return Err(format!("invalid --user {user:?}"));
    }
    let password = if let Some(path) = &args.password_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {}", path.display(), wire::describe(&e)))?;
        let first = text.split('\n').next().unwrap_or("");
        Some(first.strip_suffix('\r').unwrap_or(first).to_owned())
    } else {
        match std::env::var("NEOCHAT_PASSWORD") {
            Ok(pw) => Some(pw),
            Err(std::env::VarError::NotPresent) => None,
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err("NEOCHAT_PASSWORD is not valid UTF-8".into());
            }
        }
    };
    match &password {
        Some(pw) if pw.is_empty() => return Err("the password is empty".into()),
        Some(pw) if pw.chars().any(display::is_unsafe) => {
            return Err("the password contains control characters".into());
        }
        None if !token && !term::has_tty() => {
            return Err(
                "no terminal to ask the password on; use --password-file PATH or \
                 NEOCHAT_PASSWORD in the environment"
                    .into(),
            );
        }
        _ => {}
    }
    Ok(Some(Auto {
        register: args.register,
        user: user.trim().to_owned(),
        password,
    }))
}

/// Connects as the flags and the host say, and over TLS settles whether to
/// trust the server, before anything is sent. The error is the exit code;
/// the reason is already printed.
fn open(args: &Args, asker: Option<&mut DefaultEditor>) -> Result<Conn, u8> {
    let host = wire::host(&args.server);
    let local = wire::is_loopback(host);
    let use_tls = !args.plain && (args.tls || args.fingerprint.is_some() || !local);
    if !use_tls && !local {
        eprintln!(
            "neochat: warning: --plain: nothing is encrypted; your password crosses \
             the network as it is"
        );
    }
    // Set up before connecting, so the ClientHello follows the connection
    // at once.
    let prepared = if use_tls {
        let prepared = tls::prepare(host, &[]).map_err(|why| {
            eprintln!("neochat: TLS with {} failed: {why}", args.server);
            1
        })?;
        Some(prepared)
    } else {
        None
    };
    let sock = connect(&args.server).map_err(|e| {
        eprintln!(
            "neochat: cannot connect to {}: {}",
            args.server,
            wire::describe(&e)
        );
        1
    })?;
    let Some(prepared) = prepared else {
        return Ok(Conn::Plain(sock));
    };
    let done = tls::handshake(prepared, sock).map_err(|why| {
        eprintln!("neochat: TLS with {} failed: {why}", args.server);
        1
    })?;
    trust::check(&args.server, &done.seen, args.fingerprint, asker)?;
    Ok(Conn::Tls(Box::new(done.tls), done.sock))
}

fn connect(server: &str) -> io::Result<TcpStream> {
    let mut last = None;
    for addr in server.to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(10)) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address found")))
}

/// Writes one line to stdout; a closed stdout is not worth a panic.
fn say(text: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

/// The connection failed while reading: a TLS error is said as such, and
/// anything else is the server closing.
fn lost(e: &io::Error, last: Option<&str>) -> ! {
    if matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    ) {
        eprintln!("neochat: the server stopped answering");
        std::process::exit(1)
    }
    match tls::tls_error(e) {
        Some(tls) => {
            eprintln!("neochat: TLS error: {tls}");
            std::process::exit(1)
        }
        None => disconnected(last),
    }
}

/// Tells why the connection ended and exits 1.
fn disconnected(last: Option<&str>) -> ! {
    match last {
        Some(line) => eprintln!("neochat: the server closed the connection: {line}"),
        None => eprintln!("neochat: the server closed the connection"),
    }
    std::process::exit(1)
}

/// The fields a server may prompt for (`? <field> [<hint>]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    Choice,
    Username,
    Password,
    Token,
}

impl Field {
    fn of(field: &str) -> Option<Field> {
        match field {
            "choice" => Some(Field::Choice),
            "username" => Some(Field::Username),
            "password" => Some(Field::Password),
            "token" => Some(Field::Token),
            _ => None,
        }
    }
}

/// State shared by the login and the chat.
struct Session {
    style: Style,
    /// The last `!` or `*` line: why the server closed, when it does.
    last: Option<String>,
    /// The current room, followed by the reader thread, read by the main
    /// thread for the prompt and the echo of typed lines.
    rooms: Arc<rooms::Rooms>,
    /// Show nothing the server sends (`--forget` only says what it did).
    quiet: bool,
}

/// A kept token tried at login: `T` at the choice prompt, then the token.
struct TokenTry {
    stored: tokens::Stored,
    state: TryState,
    /// When the server refuses it, delete it and log in with the password;
    /// else `login` returns.
    fallback: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TryState {
    Unsent,
    /// `T` sent.
    Chosen,
    /// The token sent.
    Sent,
}

/// How the login ended (only `As` when a refused token falls back).
enum Entered {
    /// Logged in as this name.
    As(String),
    /// `! invalid or expired token`.
    TokenRefused,
    /// The server did not take `T`: it knows no tokens.
    NoTokens,
}

impl Session {
    fn show(&mut self, line: &str) {
        if matches!(classify(line), Line::Error(_) | Line::Notice(_)) {
            self.last = Some(line.to_owned());
        }
        if self.quiet {
            return;
        }
        let here = self.rooms.current();
        say(&self
            .style
            .incoming(&clock(SystemTime::now()), here.as_deref(), line));
    }

    /// Follows the server's prompts until logged in; returns the name.
    /// With a kept `token`, tries it first; refused, it is deleted and the
    /// login goes on with the password (or returns, without fallback).
    /// Exits on end of input, on a prompt for a field it does not know, or
    /// on a login error when answering by itself.
    fn login(
        &mut self,
        reader: &mut BufReader<Reader>,
        writer: &Writer,
        auto: Option<&Auto>,
        mut editor: Option<&mut DefaultEditor>,
        token: &mut Option<TokenTry>,
    ) -> Entered {
        let mut buf = Vec::new();
        let mut registering = auto.is_some_and(|a| a.register);
        // Whether a password can be had if the token is refused.
        let can_ask =
            editor.is_some() || auto.is_some_and(|a| a.password.is_some() || term::has_tty());
        loop {
            match wire::read_line(reader, &mut buf, wire::MAX_LINE) {
                Ok(true) => {}
                Ok(false) => disconnected(self.last.as_deref()),
                Err(e) => lost(&e, self.last.as_deref()),
            }
            let line = sanitize(&buf);
            let (field, hint) = match classify(&line) {
                Line::Prompt { field, hint } => (field, hint),
                Line::Notice(text) => {
                    let name = logged_in_as(text).map(str::to_owned);
                    self.show(&line);
                    match name {
                        Some(name) => return Entered::As(name),
                        None => continue,
                    }
                }
                Line::Error(text) => {
                    self.show(&line);
                    if let Some(t) = token.as_ref() {
                        let refused =
                            t.state == TryState::Sent && text == "invalid or expired token";
                        // A server without tokens answers `T` as a bad choice.
                        let unknown = t.state == TryState::Chosen;
                        if refused || unknown {
                            if !t.fallback {
                                return match refused {
                                    true => Entered::TokenRefused,
                                    false => Entered::NoTokens,
                                };
                            }
                            if refused {
                                let done = "the server refused the kept login token \
                                            (expired or revoked)";
                                let note = tokens::remove_saying(&t.stored.path, done)
                                    .unwrap_or_else(|| format!("neochat: {done}"));
                                eprintln!("{note}");
                            } else {
                                eprintln!(
                                    "neochat: the server does not take login tokens; \
                                     logging in with the password"
                                );
                            }
                            *token = None;
                            if !can_ask {
                                eprintln!(
                                    "neochat: no terminal to ask the password on; log in \
                                     with --user NAME and --password-file PATH or \
                                     NEOCHAT_PASSWORD (--remember keeps a new token)"
                                );
                                std::process::exit(1);
                            }
                            continue;
                        }
                    }
                    if auto.is_some() {
                        eprintln!("neochat: login failed: {text}");
                        std::process::exit(1);
                    }
                    continue;
                }
                _ => {
                    self.show(&line);
                    continue;
                }
            };
            if let Some(t) = token.as_mut() {
                let answer = match (Field::of(field), t.state) {
                    (Some(Field::Choice), TryState::Unsent) => Some((TryState::Chosen, "T")),
                    (Some(Field::Token), TryState::Chosen) => {
                        Some((TryState::Sent, t.stored.token.as_str()))
                    }
                    _ => None,
                };
                if let Some((state, answer)) = answer {
                    t.state = state;
                    // The reason of a failed send is the next thing read.
                    let _ = writer.send_line(answer.as_bytes());
                    continue;
                }
            }
            let answer = match (Field::of(field), auto, editor.as_deref_mut()) {
                (None, _, _) => {
                    // Never guess what an unknown field wants: a server asking
                    // `? confirm Re-enter your password` must get nothing.
                    eprintln!(
                        "neochat: the server asked for an unknown field `{field}` \
                         ({line}); not answering it"
                    );
                    std::process::exit(1);
                }
                (Some(Field::Choice), Some(a), _) => if a.register { "R" } else { "L" }.to_owned(),
                (Some(Field::Username), Some(a), _) => a.user.clone(),
                (
                    Some(Field::Password),
                    Some(Auto {
                        password: Some(pw), ..
                    }),
                    _,
                ) => pw.clone(),
                (Some(Field::Password), _, _) => prompt::ask_password(registering || hint == "new"),
                (Some(Field::Choice), None, Some(ed)) => {
                    let question = if hint.is_empty() {
                        "Sign up (R) or Login (L)"
                    } else {
                        hint
                    };
                    let answer = prompt::ask(ed, &format!("{question}? "));
                    let choice = answer.trim().to_ascii_lowercase();
                    registering = choice == "r" || choice == "register";
                    answer
                }
                (Some(Field::Username), None, Some(ed)) => prompt::ask(ed, "Username: "),
                (Some(Field::Token), None, Some(_)) => prompt::ask_secret("Token: "),
                _ => {
                    eprintln!("neochat: the server asked something unexpected: {line}");
                    std::process::exit(1);
                }
            };
            if writer.send_line(answer.as_bytes()).is_err() {
                // The reason, if any, is the next thing read.
                continue;
            }
        }
    }

    /// Logged in, with a terminal: a reader thread prints above the line
    /// being edited, and the main thread sends what is typed.
    #[allow(clippy::too_many_arguments)]
    fn chat_interactive(
        self,
        reader: BufReader<Reader>,
        writer: Writer,
        mut editor: DefaultEditor,
        stdout_tty: bool,
        saved: Arc<term::SavedMode>,
        keep: Arc<tokens::Keep>,
        origin: transfer::Origin,
    ) -> ExitCode {
        let style = self.style;
        let rooms = self.rooms.clone();
        let printer: chat::Printer = match editor.create_external_printer() {
            Ok(p) => chat::Printer::Editor(Box::new(p)),
            Err(_) => chat::Printer::Stdout,
        };
        let quitting = Arc::new(AtomicBool::new(false));
        let lock = Arc::new(Mutex::new(()));
        let screen = Arc::new(chat::Screen::new(printer, lock.clone()));
        let files = Arc::new(transfer::Files::new(origin, Some(style), screen.clone()));
        let passwd = Arc::new(chat::Passwd::default());
        let done = chat::spawn_reader(
            self,
            reader,
            chat::Answers {
                writer: writer.clone(),
                passwd: passwd.clone(),
                keep: keep.clone(),
                files: files.clone(),
            },
            screen,
            quitting.clone(),
            saved,
        );

        say("Type a message and press Enter; /help lists commands, /quit or Ctrl-D leaves.");
        // A `/quit` typed while transfers run is sent once they end.
        let mut quit_held = false;
        let code = loop {
            let prompt = rooms.prompt();
            match editor.readline(&prompt) {
                Ok(line) => {
                    if let Some(local) = files::local_command(&line) {
                        // The client's own: never sent as typed, and the
                        // line stays on the screen as typed.
                        let _ = editor.add_history_entry(line.as_str());
                        match local {
                            files::Local::Send(arg) => files.send(arg, &writer),
                            files::Local::Get(arg) => files.get(arg),
                        }
                        continue;
                    }
                    let input = classify_input(&line);
                    let leaving = matches!(input, Input::Quit | Input::Logout { .. });
                    if leaving {
                        quitting.store(true, Ordering::SeqCst);
                    }
                    quit_held = input == Input::Quit && files.busy() > 0;
                    if let Input::Logout { all } = input
                        && let Some(note) = keep.logging_out(all)
                    {
                        eprintln!("{note}");
                    }
                    if input == Input::Passwd {
                        if !line.trim().eq_ignore_ascii_case("/passwd") {
                            // Whatever was typed after it may be a password:
                            // off the screen, and never sent.
                            if stdout_tty {
                                chat::redraw_typed(&lock, &prompt, &line, None, true);
                            }
                            say(
                                "neochat: /passwd takes nothing after it; the client asks for both passwords, hidden",
                            );
                        }
                        // The passwords are asked here, hidden, and given to
                        // the server's questions by the reader thread.
                        let current = prompt::ask_secret("Current password: ");
                        let new = prompt::choose_password("New password (8-72 bytes): ");
                        passwd.prepare(current, new);
                        let _ = writer.send_line(b"/passwd");
                        let _ = editor.add_history_entry("/passwd");
                        // Nothing typed meanwhile may reach the server as an
                        // answer to its questions.
                        passwd.wait(PASSWD_WAIT);
                    } else if quit_held {
                        let _ = editor.add_history_entry(line.as_str());
                    } else if input != Input::Blank {
                        // Noted before sending, so the answer cannot come
                        // first.
                        rooms.typed(&line);
                        // A failed send means the server is gone: the reader
                        // thread says why and exits.
                        let _ = writer.send_line(line.as_bytes());
                        // Only what is typed in the chat is worth recalling.
                        let _ = editor.add_history_entry(line.as_str());
                        if line.trim().eq_ignore_ascii_case("/help") {
                            say("neochat: and the client's own: /send PATH shares a file, \
                                 /get N [DIR] downloads the file shown with /get N");
                        }
                    }
                    if stdout_tty {
                        let here = rooms.current();
                        let now = clock(SystemTime::now());
                        let echo = style.echo(&now, keep.user(), here.as_deref(), &line);
                        let blank = input == Input::Blank;
                        chat::redraw_typed(&lock, &prompt, &line, echo.as_deref(), blank);
                    }
                    // After `/join` or `/part`, the next prompt should show
                    // the room the server put us in; a server that does not
                    // answer within a second leaves it as it was.
                    rooms.wait_answer(ANSWER_WAIT);
                    if leaving {
                        break ExitCode::SUCCESS;
                    }
                }
                Err(ReadlineError::Eof) => break ExitCode::SUCCESS,
                Err(ReadlineError::Interrupted) => {
                    files.abandon();
                    break ExitCode::from(130);
                }
                Err(e) => {
                    eprintln!("neochat: cannot read the keyboard: {e}");
                    break ExitCode::FAILURE;
                }
            }
        };
        // Running transfers end first (the chat goes on meanwhile), unless
        // Ctrl-C abandons them.
        let code = match code == ExitCode::SUCCESS && !files.wait_all(true) {
            true => {
                files.abandon();
                ExitCode::from(130)
            }
            false => code,
        };
        if quit_held {
            let _ = writer.send_line(b"/quit");
        }
        if !quitting.swap(true, Ordering::SeqCst) {
            let _ = writer.send_line(b"/quit");
        }
        // Show `* bye` and whatever came before it, but never hang on a
        // server that does not close.
        let _ = done.recv_timeout(Duration::from_secs(3));
        code
    }

    /// Logged in, stdin not a terminal: send every line of stdin, then
    /// `/quit`, and print what arrives meanwhile.
    fn chat_piped(
        self,
        reader: BufReader<Reader>,
        writer: Writer,
        saved: Arc<term::SavedMode>,
        keep: Arc<tokens::Keep>,
        origin: transfer::Origin,
    ) -> ExitCode {
        let quitting = Arc::new(AtomicBool::new(false));
        let lock = Arc::new(Mutex::new(()));
        let rooms = self.rooms.clone();
        let screen = Arc::new(chat::Screen::new(chat::Printer::Stdout, lock));
        let files = Arc::new(transfer::Files::new(origin, None, screen.clone()));
        let done = chat::spawn_reader(
            self,
            reader,
            chat::Answers {
                writer: writer.clone(),
                passwd: Arc::new(chat::Passwd::default()),
                keep: keep.clone(),
                files: files.clone(),
            },
            screen,
            quitting.clone(),
            saved,
        );
        let mut stdin = io::stdin().lock();
        let mut buf = Vec::new();
        let mut code = ExitCode::SUCCESS;
        while let Ok(true) = wire::read_line(&mut stdin, &mut buf, 1 << 20) {
            let text = String::from_utf8_lossy(&buf);
            if let Some(local) = files::local_command(&text) {
                match local {
                    files::Local::Send(arg) => files.send(arg, &writer),
                    files::Local::Get(arg) => files.get(arg),
                }
                continue;
            }
            let input = classify_input(&text);
            if input == Input::Quit && files.busy() > 0 {
                // Sent below, once the transfers end.
                break;
            }
            let leaving = matches!(input, Input::Quit | Input::Logout { .. });
            if leaving {
                quitting.store(true, Ordering::SeqCst);
            }
            if let Input::Logout { all } = input
                && let Some(note) = keep.logging_out(all)
            {
                eprintln!("{note}");
            }
            rooms.typed(&text);
            if writer.send_line(&buf).is_err() || leaving {
                break;
            }
        }
        // The end of the input does not cut a transfer short.
        if !files.wait_all(false) {
            files.abandon();
            code = ExitCode::from(130);
        }
        if !quitting.swap(true, Ordering::SeqCst) {
            let _ = writer.send_line(b"/quit");
        }
        let _ = done.recv_timeout(Duration::from_secs(3));
        code
    }
}
