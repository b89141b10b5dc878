//! The login tokens kept by `--remember`: one file per server and
//! account, `<config>/neochat/tokens/<user>@<HOST:PORT>` (the directory of
//! `known_servers`, see `known.rs`), holding the token and a newline.
//!
//! Owns the files' place and names, reading one without ever failing on a
//! bad file (a warning instead), writing one so that it is never readable
//! by anybody else, not even for a moment (a temporary file created with
//! mode 0600, synced, then renamed; the directory 0700), and deleting one.
//! It also owns [`Keep`], what the chat needs to know about the token of
//! this connection: the reader thread stores the answer to the `/token` the
//! client sent itself (never shown), and a line that revokes the account's
//! tokens deletes the kept one. The token itself is never printed or
//! logged: messages name the file, not its content.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::display::Line;
use crate::known;

/// Where the tokens live: `tokens` beside `known_servers`. `None` when
/// neither XDG_CONFIG_HOME nor HOME is usable.
pub fn default_dir() -> Option<PathBuf> {
    Some(known::config_dir()?.join("tokens"))
}

/// Whether `token` looks like a token: 16 to 256 URL-safe characters
/// (`A-Z a-z 0-9 - _ . ~`). The server's are 32; anything with a space, a
/// control character or a `/` is refused before it reaches a file name's
/// neighbour or the wire.
pub fn is_token(token: &str) -> bool {
    (16..=256).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'))
}

/// An account name as the server allows it (1 to 32 of `A-Z a-z 0-9 _ - .`,
/// starting with a letter or a digit), so that it can be part of a file
/// name. Names are the same in any case: files use the lowercase form.
fn is_user(user: &str) -> bool {
    (1..=32).contains(&user.len())
        && user.starts_with(|c: char| c.is_ascii_alphanumeric())
        && user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// The file name for `user` at `server` (a `known::server_key`), or `None`
/// when either cannot be part of a file name.
fn file_name(server: &str, user: &str) -> Option<String> {
    let server_ok = !server.is_empty()
        && !server.starts_with('.')
        && !server.contains('/')
        && !server.chars().any(char::is_control);
    (server_ok && is_user(user)).then(|| format!("{}@{server}", user.to_ascii_lowercase()))
}

/// A token found on disk.
#[derive(Debug)]
pub struct Stored {
    pub path: PathBuf,
    /// The account, in lowercase.
    pub user: String,
    pub token: String,
}

/// What is kept for one server.
#[derive(Debug)]
pub enum Found {
    Nothing,
    One(Stored),
    /// Tokens of several accounts, and no `--user` to choose: their names.
    Several(Vec<String>),
}

/// Looks in `dir` for the token of `user` (any case) at `server`, or with
/// no `user`, for the one account that has a token there. A file that is
/// not a token is skipped with a warning (in the returned list); fails
/// only when the directory exists and cannot be read.
pub fn find(dir: &Path, server: &str, user: Option<&str>) -> io::Result<(Found, Vec<String>)> {
    let mut warnings = Vec::new();
    let mut users = match user {
        Some(user) => match file_name(server, user) {
            Some(_) => vec![user.to_ascii_lowercase()],
            None => return Ok((Found::Nothing, warnings)),
        },
        None => accounts(dir, server)?,
    };
    users.sort();
    let mut found = Vec::new();
    for user in users {
        let Some(name) = file_name(server, &user) else {
            continue;
        };
        let path = dir.join(name);
        match read(&path) {
            Ok(Some(token)) => found.push(Stored { path, user, token }),
            Ok(None) => {}
            Err(why) => warnings.push(why),
        }
    }
    if found.len() > 1 {
        let names = found.into_iter().map(|s| s.user).collect();
        return Ok((Found::Several(names), warnings));
    }
    Ok((found.pop().map_or(Found::Nothing, Found::One), warnings))
}

/// The accounts with a file for `server` in `dir`.
fn accounts(dir: &Path, server: &str) -> io::Result<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let suffix = format!("@{server}");
    let mut users = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(user) = name.to_str().and_then(|n| n.strip_suffix(&suffix)) else {
            continue;
        };
        if is_user(user) && user == user.to_ascii_lowercase() {
            users.push(user.to_owned());
        }
    }
    Ok(users)
}

/// Reads one token file. `Ok(None)`: there is none. `Err` is a warning
/// for the user (the file is there but unusable; it is left alone).
fn read(path: &Path) -> Result<Option<String>, String> {
    let text = match fs::read(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(format!(
                "cannot read {}: {}; not using it",
                path.display(),
                crate::wire::describe(&e)
            ));
        }
    };
    let token = std::str::from_utf8(&text).map(str::trim).unwrap_or("");
    if !is_token(token) {
        return Err(format!(
            "{} does not hold a login token; not using it",
            path.display()
        ));
    }
    Ok(Some(token.to_owned()))
}

/// Whether `path` can be read by others than its owner (someone loosened
/// it by hand): worth a warning, as OpenSSH gives for a private key.
pub fn readable_by_others(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0)
}

/// Keeps `token` for `user` at `server` in `dir`, replacing the one kept
/// before; returns the file. The directory is created 0700 (and made so if
/// it was looser); the file is written as a temporary file created 0600,
/// synced, then renamed over the old one, so no other user can ever read
/// it and a crash leaves the old file or the new one, never half of one.
pub fn save(dir: &Path, server: &str, user: &str, token: &str) -> io::Result<PathBuf> {
    let name = file_name(server, user)
        .ok_or_else(|| io::Error::other(format!("`{user}` cannot be kept as a file name")))?;
    if !is_token(token) {
        return Err(io::Error::other("the server's answer is not a token"));
    }
    DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let mode = fs::metadata(dir)?.permissions().mode();
    if mode & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    let path = dir.join(&name);
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let written =
        write_new(&tmp, format!("{token}\n").as_bytes()).and_then(|()| fs::rename(&tmp, &path));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(path)
}

/// Writes `text` to a new file of mode 0600 and syncs it. A leftover file
/// of a crashed run with the same name is replaced; `create_new` never
/// follows a symlink planted there.
fn write_new(path: &Path, text: &[u8]) -> io::Result<()> {
    let _ = fs::remove_file(path);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text)?;
    file.sync_all()
}

/// Deletes a token file; `Ok(false)` when there was none.
pub fn remove(path: &Path) -> io::Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Deletes a token file and says so in a sentence for the user: `done`
/// tells what happened (`the server refused it`), and the sentence ends
/// with what became of the file. `None` when there was no file.
pub fn remove_saying(path: &Path, done: &str) -> Option<String> {
    match remove(path) {
        Ok(true) => Some(format!("neochat: {done}; deleted {}", path.display())),
        Ok(false) => None,
        Err(e) => Some(format!(
            "neochat: {done}, but {} cannot be deleted: {}",
            path.display(),
            crate::wire::describe(&e)
        )),
    }
}

/// What the chat knows about the token of this connection.
pub struct Keep {
    /// Where tokens are kept; `None` without XDG_CONFIG_HOME and HOME.
    dir: Option<PathBuf>,
    /// The server, as a `known::server_key`.
    server: String,
    /// The account, as the server named it at login.
    user: String,
    /// The file of the token this connection logged in with, if it did.
    used: Option<PathBuf>,
    /// `--remember` sent `/token`: its answer is kept, not shown.
    wanted: AtomicBool,
}

/// What to do with a line from the server, after [`Keep::heard`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Heard {
    /// Do not show the line (nor keep it as the server's last word).
    pub hide: bool,
    /// Something to tell the user.
    pub note: Option<String>,
}

impl Keep {
    pub fn new(dir: Option<PathBuf>, server: &str, user: &str, used: Option<PathBuf>) -> Keep {
        Keep {
            dir,
            server: server.to_owned(),
            user: user.to_owned(),
            used,
            wanted: AtomicBool::new(false),
        }
    }

    /// The account, as the server named it at login.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Notes that the client sent `/token` itself (`--remember`).
    pub fn want(&self) {
        self.wanted.store(true, Ordering::SeqCst);
    }

    /// The file a token of this account at this server is kept in.
    fn path(&self) -> Option<PathBuf> {
        Some(
            self.dir
                .as_ref()?
                .join(file_name(&self.server, &self.user)?),
        )
    }

    /// Looks at a line from the server: keeps the token the client asked
    /// for (and hides that line), and deletes the kept token when the
    /// server says the account's tokens were revoked.
    pub fn heard(&self, line: &Line<'_>) -> Heard {
        match *line {
            Line::Notice(text) => {
                if let Some(token) = text.strip_prefix("token ")
                    && self.wanted.swap(false, Ordering::SeqCst)
                {
                    return Heard {
                        hide: true,
                        note: Some(self.keep(token.trim())),
                    };
                }
                if revokes_tokens(text) {
                    return self.revoked();
                }
                Heard::default()
            }
            Line::Error(text) => {
                if text.starts_with("unknown command /token") && self.wanted.load(Ordering::SeqCst)
                {
                    self.wanted.store(false, Ordering::SeqCst);
                    return Heard {
                        hide: false,
                        note: Some(
                            "neochat: this server gives no login tokens; nothing was remembered"
                                .to_owned(),
                        ),
                    };
                }
                if revokes_tokens(text) {
                    return self.revoked();
                }
                Heard::default()
            }
            _ => Heard::default(),
        }
    }

    fn keep(&self, token: &str) -> String {
        let Some(dir) = &self.dir else {
            return "neochat: warning: neither XDG_CONFIG_HOME nor HOME is set, so the \
                    login cannot be remembered"
                .to_owned();
        };
        match save(dir, &self.server, &self.user, token) {
            Ok(path) => format!(
                "neochat: remembered the login of {} at {} in {} (readable by you \
                 only); `neochat --forget {}` revokes it",
                self.user,
                self.server,
                path.display(),
                self.server
            ),
            Err(e) => format!(
                "neochat: warning: cannot remember the login in {}: {}",
                dir.display(),
                crate::wire::describe(&e)
            ),
        }
    }

    /// The server revoked every token of the account.
    fn revoked(&self) -> Heard {
        let note = self
            .path()
            .and_then(|p| remove_saying(&p, "the server revoked the account's login tokens"));
        Heard { hide: false, note }
    }

    /// The user typed `/logout` (`all`: `/logout all`): the token this
    /// connection logged in with is revoked, and with `all` every token of
    /// the account. Deletes the kept file it revokes; returns what to say.
    pub fn logging_out(&self, all: bool) -> Option<String> {
        let path = match (all, &self.used) {
            (false, Some(used)) => used.clone(),
            (false, None) => return None,
            (true, _) => self.used.clone().or_else(|| self.path())?,
        };
        remove_saying(&path, "logging out revokes the kept login token")
    }
}

/// Whether a line from the server (without its `*`/`!`) says that every
/// token of the account is gone: a changed or reset password, `/logout
/// all` elsewhere, the account deleted.
fn revokes_tokens(text: &str) -> bool {
    matches!(
        text,
        "password changed"
            | "password changed from another connection"
            | "logged out from another connection"
            | "password reset by an operator; log in again"
            | "account deleted by an operator"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "abcdefghijABCDEFGHIJ0123456789-_";

    #[test]
    fn tokens_and_names() {
        assert!(is_token(TOKEN));
        for bad in [
            "",
            "short",
            "has space in it 1234",
            "a/b/c/d/e/f/g/h/i/j",
            "é".repeat(20).as_str(),
        ] {
            assert!(!is_token(bad), "{bad:?}");
        }
        assert_eq!(
            file_name("127.0.0.1:59000", "Alice").as_deref(),
            Some("alice@127.0.0.1:59000")
        );
        assert_eq!(file_name("[::1]:1", "a.b").as_deref(), Some("a.b@[::1]:1"));
        assert_eq!(file_name("h:1", "../x"), None);
        assert_eq!(file_name("h:1", ".x"), None);
        assert_eq!(file_name("../h:1", "x"), None);
        assert_eq!(file_name("a/b:1", "x"), None);
        assert_eq!(file_name("h:1", &"x".repeat(33)), None);
    }

    #[test]
    fn save_find_remove() {
        let home = tempfile::tempdir().unwrap();
        let dir = home.path().join("neochat").join("tokens");
        let (found, warnings) = find(&dir, "h:1", None).unwrap();
        assert!(matches!(found, Found::Nothing), "{found:?}");
        assert!(warnings.is_empty());

        let path = save(&dir, "h:1", "Alice", TOKEN).unwrap();
        assert_eq!(path, dir.join("alice@h:1"));
        assert_eq!(fs::read_to_string(&path).unwrap(), format!("{TOKEN}\n"));
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir), 0o700);
        assert!(!readable_by_others(&path));

        let (found, _) = find(&dir, "h:1", None).unwrap();
        let Found::One(stored) = found else {
            panic!("{found:?}")
        };
        assert_eq!(
            (stored.user.as_str(), stored.token.as_str()),
            ("alice", TOKEN)
        );
        let (found, _) = find(&dir, "h:1", Some("ALICE")).unwrap();
        assert!(matches!(found, Found::One(_)), "{found:?}");
        let (found, _) = find(&dir, "h:1", Some("bob")).unwrap();
        assert!(matches!(found, Found::Nothing), "{found:?}");
        let (found, _) = find(&dir, "other:1", None).unwrap();
        assert!(matches!(found, Found::Nothing), "{found:?}");

        // A second account: the user must choose. A broken file is a
        // warning, and a looser directory is made 0700 again.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        save(&dir, "h:1", "bob", TOKEN).unwrap();
        assert_eq!(mode(&dir), 0o700);
        fs::write(dir.join("carol@h:1"), "not a token\n").unwrap();
        let (found, warnings) = find(&dir, "h:1", None).unwrap();
        let Found::Several(names) = found else {
            panic!("{found:?}")
        };
        assert_eq!(names, ["alice", "bob"]);
        assert_eq!(warnings.len(), 1, "{warnings:?}");

        assert!(remove(&path).unwrap());
        assert!(!remove(&path).unwrap());
        // No temporary file is left behind.
        let mut left: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["bob@h:1", "carol@h:1"]);
        assert!(save(&dir, "h:1", "x", "bad token").is_err());
    }

    #[test]
    fn keep_stores_the_wanted_token_and_forgets_revoked_ones() {
        let home = tempfile::tempdir().unwrap();
        let dir = home.path().join("tokens");
        let keep = Keep::new(Some(dir.clone()), "h:1", "Alice", None);
        let token_line = format!("token {TOKEN}");
        // Not asked for: shown like any line.
        assert_eq!(keep.heard(&Line::Notice(&token_line)), Heard::default());
        keep.want();
        let heard = keep.heard(&Line::Notice(&token_line));
        assert!(heard.hide);
        let note = heard.note.unwrap();
        assert!(!note.contains(TOKEN), "{note}");
        assert_eq!(
            fs::read_to_string(dir.join("alice@h:1")).unwrap().trim(),
            TOKEN
        );
        // Once only.
        assert!(!keep.heard(&Line::Notice(&token_line)).hide);
        // This connection did not log in with it: /logout keeps it,
        // /logout all does not.
        assert_eq!(keep.logging_out(false), None);
        assert!(keep.logging_out(true).is_some());
        assert!(!dir.join("alice@h:1").exists());

        save(&dir, "h:1", "alice", TOKEN).unwrap();
        let heard = keep.heard(&Line::Notice("password changed"));
        assert!(!heard.hide && heard.note.is_some(), "{heard:?}");
        assert!(!dir.join("alice@h:1").exists());
        assert_eq!(
            keep.heard(&Line::Notice("password changed")),
            Heard::default()
        );
    }
}
