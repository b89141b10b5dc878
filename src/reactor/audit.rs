//! The audit trail: one line at the default level (info) for every login,
//! failed login and registration, with the account name and the client's
//! address (the one a trusted proxy named, if any). Never a password or a
//! token.
//!
//! The lines have the log target `neochat::audit` and a fixed form that
//! fail2ban-style tools can match (the README has a filter):
//!
//! ```text
//! login ok from=203.0.113.7 port=50122 user=alice
//! login failed from=203.0.113.7 port=50122 user=alice reason=wrong-password
//! login failed from=203.0.113.7 port=50122 user=- reason=unknown-user
//! register ok from=203.0.113.7 port=50122 user=alice
//! register failed from=203.0.113.7 port=50122 user=alice reason=name-taken
//! ```
//!
//! The address comes before anything the client chose. A name that matches
//! no account is not logged at all (`user=-`): people type their password
//! at the name prompt, and it must not end up in the log. Any other name is
//! an account's, so it has the account-name form; one that somehow did not
//! would be shown quoted, with control characters escaped and cut to 64
//! characters, so it could neither forge a field nor start a new line.

use std::borrow::Cow;
use std::net::SocketAddr;

use crate::chat::text::valid_name;

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Event {
    LoggedIn,
    LoginFailed {
        known_account: bool,
    },
    Registered,
    NameTaken,
    /// A login with a token (`T`).
    TokenLogin,
    /// A token that logs nobody in (the name is unknown: `user=-`).
    TokenFailed,
    PasswordChanged,
}

pub(super) fn record(event: Event, peer: SocketAddr, name: &str) {
    if event == Event::TokenFailed {
        log::info!(
            target: "neochat::audit",
            "login failed from={} port={} user=- reason=bad-token",
            peer.ip(),
            peer.port()
        );
        return;
    }
    if event
        == (Event::LoginFailed {
            known_account: false,
        })
    {
        log::info!(
            target: "neochat::audit",
            "login failed from={} port={} user=- reason=unknown-user",
            peer.ip(),
            peer.port()
        );
        return;
    }
    let (what, reason) = match event {
        Event::LoggedIn => ("login ok", ""),
        Event::LoginFailed {
            known_account: true,
        } => ("login failed", " reason=wrong-password"),
        Event::LoginFailed {
            known_account: false,
        } => ("login failed", " reason=unknown-user"),
        Event::Registered => ("register ok", ""),
        Event::NameTaken => ("register failed", " reason=name-taken"),
        Event::TokenLogin => ("login ok", " method=token"),
        Event::PasswordChanged => ("password changed", ""),
        Event::TokenFailed => ("login failed", " reason=bad-token"),
    };
    log::info!(
        target: "neochat::audit",
        "{what} from={} port={} user={}{reason}",
        peer.ip(),
        peer.port(),
        shown(name)
    );
}

/// `name` as the log shows it: as is when it is a valid account name, else
/// quoted and escaped.
fn shown(name: &str) -> Cow<'_, str> {
    if valid_name(name) {
        return Cow::Borrowed(name);
    }
    let mut out = String::from("\"");
    for c in name.chars().take(64) {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() || c.is_whitespace() && c != ' ' => {
                out.extend(c.escape_default());
            }
            c => out.push(c),
        }
    }
    if name.chars().nth(64).is_some() {
        out.push_str("...");
    }
    out.push('"');
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_names_are_shown_as_they_are_anything_else_quoted_and_escaped() {
        assert_eq!(shown("alice.b-2_"), "alice.b-2_");
        assert_eq!(shown("a b"), "\"a b\"");
        assert_eq!(
            shown("x from=1.2.3.4\nlogin ok"),
            "\"x from=1.2.3.4\\nlogin ok\""
        );
        assert_eq!(shown("\"\\\u{1b}[2J"), "\"\\\"\\\\\\u{1b}[2J\"");
        assert_eq!(shown(""), "\"\"");
        let long = "é".repeat(100);
        assert_eq!(shown(&long), format!("\"{}...\"", "é".repeat(64)));
        assert!(!shown("\u{2028}").contains('\u{2028}'));
    }
}
