//! Questions asked on the terminal during login: plain ones with
//! rustyline, the password with rpassword (never echoed). Ctrl-D leaves
//! (exit 0), Ctrl-C exits 130.

use std::io;

use rustyline::DefaultEditor;
use rustyline::error::ReadlineError;

use crate::{say, term, wire};

/// Asks a question on the terminal. Ctrl-D leaves (exit 0), Ctrl-C exits
/// 130.
pub fn ask(editor: &mut DefaultEditor, question: &str) -> String {
    match editor.readline(question) {
        Ok(answer) => answer,
        Err(ReadlineError::Eof) => std::process::exit(0),
        Err(ReadlineError::Interrupted) => std::process::exit(130),
        Err(e) => {
            eprintln!("neochat: cannot read the keyboard: {e}");
            std::process::exit(1)
        }
    }
}

/// Reads the password on the terminal without echo. When registering, asks
/// twice and checks the length first, so a typo never becomes the password.
pub fn ask_password(registering: bool) -> String {
    if !registering {
        return read_password("Password: ");
    }
    choose_password("Choose a password (8-72 bytes): ")
}

/// Reads a new password twice without echo, until both agree and its
/// length is one the server takes.
pub fn choose_password(prompt: &str) -> String {
    loop {
        let pw = read_password(prompt);
        if !(8..=72).contains(&pw.len()) {
            say("A password needs 8 to 72 bytes; try again.");
            continue;
        }
        if read_password("Type it again: ") == pw {
            return pw;
        }
        say("The two passwords differ; try again.");
    }
}

/// Reads a secret other than a password (a login token) without echo.
pub fn ask_secret(prompt: &str) -> String {
    read_password(prompt)
}

fn read_password(prompt: &str) -> String {
    match term::read_password(prompt) {
        Ok(pw) => pw,
        Err(e) if e.kind() == io::ErrorKind::Interrupted => std::process::exit(130),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => std::process::exit(0),
        Err(e) => {
            eprintln!("neochat: cannot read the password: {}", wire::describe(&e));
            std::process::exit(1)
        }
    }
}
