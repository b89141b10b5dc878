//! `neochat`: the terminal client of NeoChat.
//!
//! A simple blocking client. The main thread follows the server's login
//! prompts (`? choice`, `? username`, `? password`) and asks the person in
//! plain words, reading the password without echo; once logged in, a reader
//! thread prints what the server sends while the main thread reads the
//! keyboard (rustyline, so an incoming line never destroys the line being
//! typed) and sends each line. Without a terminal, `--user` with
//! `--password-file` or `NEOCHAT_PASSWORD` logs in by itself and stdin is
//! piped to the chat.
//!
//! Modules (in `src/bin/neochat/`): `display` (sanitizing, line kinds,
//! colours, time: pure), `wire` (bounded line reading, error phrases,
//! address check), `term` (terminal mode, hidden password, screen width),
//! `prompt` (login questions), `chat` (the reader thread and the screen
//! around rustyline).

// The modules live in `src/bin/neochat/`, beside this file.
#[path = "neochat/chat.rs"]
mod chat;
#[path = "neochat/display.rs"]
mod display;
#[path = "neochat/prompt.rs"]
mod prompt;
#[path = "neochat/term.rs"]
mod term;
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

use display::{Input, Line, Style, classify, classify_input, clock, logged_in_as, sanitize};

const ABOUT: &str = "The NeoChat terminal client: log in, chat, send private messages.";

const AFTER_HELP: &str = "\
Interactive use: run `neochat` and answer the questions; the password is never shown.
In the chat, type a line to say it to everybody, or a command:
  /msg USER TEXT   private message     /me ACTION   action
  /who             who is online       /help        server's help
  /quit or Ctrl-D  leave               //text       say a line starting with '/'

Scripts and bots (no terminal): give --user and the password in a file or in
NEOCHAT_PASSWORD; every line of stdin is then sent, and the client quits at
the end of stdin:
  printf 'hello\\n' | NEOCHAT_PASSWORD=... neochat --user bot
Passwords are never taken from the command line.

Environment: NEOCHAT_PASSWORD (with --user), NO_COLOR (no colours).
Exit status: 0 after /quit or end of input, 1 when the connection fails or
the server closes it, 2 for bad arguments, 130 after Ctrl-C.";

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

    let auto = match auto_login(&args, stdin_tty) {
        Ok(auto) => auto,
        Err(msg) => {
            eprintln!("neochat: {msg}");
            return ExitCode::from(2);
        }
    };

    let stream = match connect(&args.server) {
        Ok(stream) => stream,
        Err(e) => {
            eprintln!(
                "neochat: cannot connect to {}: {}",
                args.server,
                wire::describe(&e)
            );
            return ExitCode::FAILURE;
        }
    };
    let _ = stream.set_nodelay(true);
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(e) => {
            eprintln!("neochat: {}", wire::describe(&e));
            return ExitCode::FAILURE;
        }
    };
    let mut reader = BufReader::new(stream);

    let saved = Arc::new(term::SavedMode::capture());
    let mut editor = if stdin_tty {
        let config = Config::builder().auto_add_history(true).build();
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

    let mut session = Session { style, last: None };
    let name = session.login(&mut reader, &mut writer, auto.as_ref(), editor.as_mut());
    match editor {
        Some(editor) => session.chat_interactive(reader, writer, editor, &name, stdout_tty, saved),
        None => session.chat_piped(reader, writer, saved),
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
/// a usage problem (exit 2).
fn auto_login(args: &Args, stdin_tty: bool) -> Result<Option<Auto>, String> {
    let Some(user) = &args.user else {
        if !stdin_tty {
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
        None if !term::has_tty() => {
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

/// Sends one line to the server.
fn send(writer: &mut TcpStream, line: &[u8]) -> io::Result<()> {
    let mut bytes = Vec::with_capacity(line.len() + 1);
    bytes.extend_from_slice(line);
    bytes.push(b'\n');
    writer.write_all(&bytes)
}

/// Tells why the connection ended and exits 1.
fn disconnected(last: Option<&str>) -> ! {
    match last {
        Some(line) => eprintln!("neochat: the server closed the connection: {line}"),
        None => eprintln!("neochat: the server closed the connection"),
    }
    std::process::exit(1)
}

/// State shared by the login and the chat.
struct Session {
    style: Style,
    /// The last `!` or `*` line: why the server closed, when it does.
    last: Option<String>,
}

impl Session {
    fn show(&mut self, line: &str) {
        if matches!(classify(line), Line::Error(_) | Line::Notice(_)) {
            self.last = Some(line.to_owned());
        }
        say(&self.style.incoming(&clock(SystemTime::now()), line));
    }

    /// Follows the server's prompts until logged in; returns the name.
    /// Exits on end of input, or on a login error when answering by itself.
    fn login(
        &mut self,
        reader: &mut BufReader<TcpStream>,
        writer: &mut TcpStream,
        auto: Option<&Auto>,
        mut editor: Option<&mut DefaultEditor>,
    ) -> String {
        let mut buf = Vec::new();
        let mut registering = auto.is_some_and(|a| a.register);
        loop {
            match wire::read_line(reader, &mut buf, wire::MAX_LINE) {
                Ok(true) => {}
                Ok(false) | Err(_) => disconnected(self.last.as_deref()),
            }
            let line = sanitize(&buf);
            let answer = match classify(&line) {
                Line::Prompt { field, hint } => match (field, auto, editor.as_deref_mut()) {
                    ("choice", Some(a), _) => if a.register { "R" } else { "L" }.to_owned(),
                    ("username", Some(a), _) => a.user.clone(),
                    (
                        "password",
                        Some(Auto {
                            password: Some(pw), ..
                        }),
                        _,
                    ) => pw.clone(),
                    ("password", _, _) => prompt::ask_password(registering),
                    ("choice", None, Some(ed)) => {
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
                    ("username", None, Some(ed)) => prompt::ask(ed, "Username: "),
                    (_, None, Some(ed)) => prompt::ask(ed, &format!("{} {hint}: ", field)),
                    _ => {
                        eprintln!("neochat: the server asked something unexpected: {line}");
                        std::process::exit(1);
                    }
                },
                Line::Notice(text) => {
                    let name = logged_in_as(text).map(str::to_owned);
                    self.show(&line);
                    match name {
                        Some(name) => return name,
                        None => continue,
                    }
                }
                Line::Error(text) => {
                    self.show(&line);
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
            if send(writer, answer.as_bytes()).is_err() {
                // The reason, if any, is the next thing read.
                continue;
            }
        }
    }

    /// Logged in, with a terminal: a reader thread prints above the line
    /// being edited, and the main thread sends what is typed.
    fn chat_interactive(
        self,
        reader: BufReader<TcpStream>,
        mut writer: TcpStream,
        mut editor: DefaultEditor,
        name: &str,
        stdout_tty: bool,
        saved: Arc<term::SavedMode>,
    ) -> ExitCode {
        let style = self.style;
        let printer: chat::Printer = match editor.create_external_printer() {
            Ok(p) => chat::Printer::Editor(Box::new(p)),
            Err(_) => chat::Printer::Stdout,
        };
        let quitting = Arc::new(AtomicBool::new(false));
        let lock = Arc::new(Mutex::new(()));
        let done = chat::spawn_reader(self, reader, printer, quitting.clone(), lock.clone(), saved);

        say("Type a message and press Enter; /help lists commands, /quit or Ctrl-D leaves.");
        let code = loop {
            match editor.readline("> ") {
                Ok(line) => {
                    let input = classify_input(&line);
                    if input == Input::Quit {
                        quitting.store(true, Ordering::SeqCst);
                    }
                    if input != Input::Blank {
                        // A failed send means the server is gone: the reader
                        // thread says why and exits.
                        let _ = send(&mut writer, line.as_bytes());
                    }
                    if stdout_tty {
                        let echo = style.echo(&clock(SystemTime::now()), name, &line);
                        chat::redraw_typed(&lock, &line, echo.as_deref(), input == Input::Blank);
                    }
                    if input == Input::Quit {
                        break ExitCode::SUCCESS;
                    }
                }
                Err(ReadlineError::Eof) => break ExitCode::SUCCESS,
                Err(ReadlineError::Interrupted) => break ExitCode::from(130),
                Err(e) => {
                    eprintln!("neochat: cannot read the keyboard: {e}");
                    break ExitCode::FAILURE;
                }
            }
        };
        if !quitting.swap(true, Ordering::SeqCst) {
            let _ = send(&mut writer, b"/quit");
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
        reader: BufReader<TcpStream>,
        mut writer: TcpStream,
        saved: Arc<term::SavedMode>,
    ) -> ExitCode {
        let quitting = Arc::new(AtomicBool::new(false));
        let lock = Arc::new(Mutex::new(()));
        let done = chat::spawn_reader(
            self,
            reader,
            chat::Printer::Stdout,
            quitting.clone(),
            lock,
            saved,
        );
        let mut stdin = io::stdin().lock();
        let mut buf = Vec::new();
        while let Ok(true) = wire::read_line(&mut stdin, &mut buf, 1 << 20) {
            let quit = classify_input(&String::from_utf8_lossy(&buf)) == Input::Quit;
            if quit {
                quitting.store(true, Ordering::SeqCst);
            }
            if send(&mut writer, &buf).is_err() || quit {
                break;
            }
        }
        if !quitting.swap(true, Ordering::SeqCst) {
            let _ = send(&mut writer, b"/quit");
        }
        let _ = done.recv_timeout(Duration::from_secs(3));
        ExitCode::SUCCESS
    }
}
