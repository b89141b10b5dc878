//! Deciding whether to go on with a server after the TLS handshake, before
//! anything is sent to it: the SSH-style trust on first use for
//! certificates no certificate authority vouches for.
//!
//! Owns the rule ([`decide`], pure, unit-tested below), the question asked
//! on the terminal the first time, and the loud refusal when a pinned
//! server shows another certificate. A file transfer's own connection is
//! decided by [`for_transfer`] ([`transfer_decision`]): the certificate the
//! chat connection was trusted with is taken again without a question. The pin file is `known.rs`'s; the
//! handshake that produced the [`Seen`] is `tls.rs`'s.

use rustyline::DefaultEditor;
use rustyline::error::ReadlineError;

use crate::known::{self, Fingerprint, Known, Pin};
use crate::say;
use crate::tls::Seen;

/// What to do with the server.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Go on; with `pin`, remember the fingerprint first.
    Accept {
        pin: bool,
    },
    /// Unknown: ask the person.
    Ask,
    Refuse(Refusal),
}

#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `--fingerprint` names another certificate.
    NotTheFlag(Fingerprint),
    /// Pinned, and the certificate is not the pinned one.
    Changed,
    /// Unknown, and nobody to ask.
    Unknown,
}

/// The rule. `--fingerprint`, when given, must match whatever else holds.
/// A certificate the system's authorities vouch for is accepted as usual
/// (a pin does not override them). Otherwise a pin must match; a server
/// with no pin is accepted (and pinned) if `--fingerprint` matched, asked
/// about if someone can answer, and refused if not.
pub fn decide(seen: &Seen, flag: Option<Fingerprint>, pins: &[&Pin], can_ask: bool) -> Decision {
    let got = seen.fingerprint;
    if let Some(wanted) = flag.filter(|&w| w != got) {
        return Decision::Refuse(Refusal::NotTheFlag(wanted));
    }
    if seen.untrusted.is_none() {
        return Decision::Accept { pin: false };
    }
    if !pins.is_empty() {
        return match pins.iter().any(|p| p.fingerprint == got) {
            true => Decision::Accept { pin: false },
            false => Decision::Refuse(Refusal::Changed),
        };
    }
    match (flag, can_ask) {
        (Some(_), _) => Decision::Accept { pin: true },
        (None, true) => Decision::Ask,
        (None, false) => Decision::Refuse(Refusal::Unknown),
    }
}

/// Decides for `server` (as typed) and says why on refusal. `Ok` means go
/// on; `Err` means exit 1 (130 for Ctrl-C) with nothing sent.
pub fn check(
    server: &str,
    seen: &Seen,
    flag: Option<Fingerprint>,
    editor: Option<&mut DefaultEditor>,
) -> Result<(), u8> {
    let key = known::server_key(server);
    // The pins matter only for a certificate the authorities do not vouch
    // for; a broken pin file must not stop the others.
    let store = match seen.untrusted {
        Some(_) => open_store()?,
        None => None,
    };
    let pins: Vec<&Pin> = store
        .as_ref()
        .map(|k| k.pins_for(&key).collect())
        .unwrap_or_default();
    let why = seen.untrusted.as_deref().unwrap_or("");
    let got = seen.fingerprint;
    let pin = match (decide(seen, flag, &pins, editor.is_some()), editor) {
        (Decision::Accept { pin }, _) => pin,
        (Decision::Ask, Some(editor)) => ask(editor, server, why, got)?,
        // `decide` asks only when there is an editor to ask with.
        (Decision::Ask, None) => return Err(1),
        (Decision::Refuse(Refusal::NotTheFlag(wanted)), _) => {
            eprintln!(
                "neochat: the certificate of {server} is not the one --fingerprint names:\n  \
                 expected: {wanted} (--fingerprint)\n  \
                 got:      {got}\n\
                 neochat: refusing to go on; nothing was sent to the server"
            );
            return Err(1);
        }
        (Decision::Refuse(Refusal::Changed), _) => {
            changed(server, &pins, got, store.as_ref());
            return Err(1);
        }
        (Decision::Refuse(Refusal::Unknown), _) => {
            eprintln!(
                "neochat: the certificate of {server} is not trusted: {why}\n\
                 neochat: its fingerprint is {got}\n\
                 neochat: nothing was sent to the server. Without a person at a terminal \
                 to ask (the login is scripted), an unknown certificate is refused; if the \
                 server's operator confirms that fingerprint (`neochat-server fingerprint` \
                 prints it), connect with --fingerprint {got}"
            );
            return Err(1);
        }
    };
    if pin {
        match store {
            Some(mut store) => match store.add(&key, got) {
                // On stderr: a script's stdout is the chat.
                Ok(()) => eprintln!(
                    "neochat: remembered {key} in {} (fingerprint {got})",
                    store.path().display()
                ),
                Err(e) => eprintln!(
                    "neochat: warning: cannot save the fingerprint in {}: {}; \
                     you will be asked again next time",
                    store.path().display(),
                    crate::wire::describe(&e)
                ),
            },
            None => eprintln!(
                "neochat: warning: neither XDG_CONFIG_HOME nor HOME is set, so the \
                 fingerprint cannot be remembered"
            ),
        }
    }
    Ok(())
}

/// The rule for a file transfer's own connection, which never asks: the
/// certificate the chat connection showed (`chat`, already trusted by the
/// person, a pin or `--fingerprint`) is accepted again; any other only if
/// [`decide`] accepts it without asking (the authorities vouch for it, or
/// it is pinned for the address connected to).
pub fn transfer_decision(
    seen: &Seen,
    chat: Option<Fingerprint>,
    pins: &[&Pin],
) -> Result<(), Refusal> {
    if chat == Some(seen.fingerprint) {
        return Ok(());
    }
    match decide(seen, None, pins, false) {
        Decision::Accept { .. } => Ok(()),
        Decision::Refuse(why) => Err(why),
        Decision::Ask => Err(Refusal::Unknown),
    }
}

/// [`transfer_decision`] for a transfer's connection to `server`
/// (`HOST:PORT`), with the pins of `known_servers`; the error is a phrase
/// for the user. Nothing is asked and nothing is pinned.
pub fn for_transfer(server: &str, seen: &Seen, chat: Option<Fingerprint>) -> Result<(), String> {
    let key = known::server_key(server);
    let store = match (seen.untrusted.is_some(), chat == Some(seen.fingerprint)) {
        (true, false) => known::default_path().and_then(|p| known::load(&p).ok().map(|(k, _)| k)),
        _ => None,
    };
    let pins: Vec<&Pin> = store
        .as_ref()
        .map(|k| k.pins_for(&key).collect())
        .unwrap_or_default();
    let got = seen.fingerprint;
    let why = seen.untrusted.as_deref().unwrap_or("");
    match transfer_decision(seen, chat, &pins) {
        Ok(()) => Ok(()),
        Err(Refusal::Changed) => Err(format!(
            "the certificate of {key} ({got}) is not the one trusted for it in known_servers"
        )),
        Err(_) => Err(format!(
            "the certificate of {key} ({got}) is not the chat server's, and is not \
             trusted: {why}"
        )),
    }
}

/// The pin file, read; `Ok(None)` when there is no place for one. An
/// unreadable file refuses: without it a changed certificate would look
/// merely unknown.
fn open_store() -> Result<Option<Known>, u8> {
    let Some(path) = known::default_path() else {
        return Ok(None);
    };
    match known::load(&path) {
        Ok((store, warnings)) => {
            for w in warnings {
                eprintln!("neochat: warning: {w}");
            }
            Ok(Some(store))
        }
        Err(e) => {
            eprintln!(
                "neochat: cannot read {}: {}; refusing to go on without the \
                 trusted fingerprints (nothing was sent to the server)",
                path.display(),
                crate::wire::describe(&e)
            );
            Err(1)
        }
    }
}

/// The first connection to an unknown server: show the fingerprint and ask.
/// `Ok(true)`: trusted, pin it.
fn ask(editor: &mut DefaultEditor, server: &str, why: &str, got: Fingerprint) -> Result<bool, u8> {
    say(&format!(
        "The certificate of {server} is not vouched for by a certificate authority: {why}.\n\
         Its fingerprint is {got}\n\
         Make sure it is the server's: its operator can show it with \
         `neochat-server fingerprint`."
    ));
    loop {
        match editor.readline(&format!("Trust it and remember it for {server}? (yes/no) ")) {
            Ok(answer) => {
                let answer = answer.trim();
                match answer.to_ascii_lowercase().as_str() {
                    "yes" | "y" => return Ok(true),
                    "no" | "n" => break,
                    _ => {}
                }
                // Pasting the fingerprint the operator gave works too.
                match known::parse_fingerprint(answer) {
                    Ok(fp) if fp == got => return Ok(true),
                    Ok(_) => {
                        eprintln!("neochat: that is not the server's fingerprint");
                        break;
                    }
                    Err(_) => say("Please answer yes or no."),
                }
            }
            Err(ReadlineError::Interrupted) => return Err(130),
            Err(ReadlineError::Eof) => break,
            Err(e) => {
                eprintln!("neochat: cannot read the keyboard: {e}");
                return Err(1);
            }
        }
    }
    eprintln!("neochat: not trusted; nothing was sent to the server");
    Err(1)
}

/// The loud refusal, in the words OpenSSH uses for a changed host key.
fn changed(server: &str, pins: &[&Pin], got: Fingerprint, store: Option<&Known>) {
    let path = store
        .map(|s| s.path().display().to_string())
        .unwrap_or_default();
    let expected: Vec<String> = pins
        .iter()
        .map(|p| format!("  expected: {} ({path} line {})", p.fingerprint, p.line))
        .collect();
    let lines: Vec<String> = pins.iter().map(|p| p.line.to_string()).collect();
    eprintln!(
        "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n\
         @    WARNING: SERVER IDENTIFICATION HAS CHANGED!          @\n\
         @@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n\
         IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!\n\
         Someone could be eavesdropping on you right now (man-in-the-middle attack)!\n\
         It is also possible that the server's certificate has just been replaced.\n\
         The certificate of {server} is not the one you trusted:\n\
         {}\n  \
         got:      {got}\n\
         Nothing was sent to the server (not your password either).\n\
         If its operator confirms the new fingerprint, remove line {} from {path}\n\
         and connect again.\n\
         neochat: refusing {server}: its certificate has changed",
        expected.join("\n"),
        lines.join(", ")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(n: u8, trusted: bool) -> Seen {
        Seen {
            fingerprint: Fingerprint([n; 32]),
            untrusted: (!trusted).then(|| "self-signed".to_owned()),
        }
    }

    fn pin(n: u8) -> Pin {
        Pin {
            server: "h:1".into(),
            fingerprint: Fingerprint([n; 32]),
            line: 1,
        }
    }

    #[test]
    fn transfers_take_the_chats_certificate_again() {
        let chat = Some(Fingerprint([1; 32]));
        let (p1, p2) = (pin(1), pin(2));
        // The chat's certificate, trusted or not, pinned or not: no question.
        assert_eq!(transfer_decision(&seen(1, false), chat, &[]), Ok(()));
        assert_eq!(transfer_decision(&seen(1, false), chat, &[&p2]), Ok(()));
        assert_eq!(transfer_decision(&seen(1, true), chat, &[]), Ok(()));
        // Another one: as a script would be, without --fingerprint.
        assert_eq!(transfer_decision(&seen(2, true), chat, &[]), Ok(()));
        assert_eq!(transfer_decision(&seen(2, false), chat, &[&p2]), Ok(()));
        assert_eq!(
            transfer_decision(&seen(2, false), chat, &[]),
            Err(Refusal::Unknown)
        );
        assert_eq!(
            transfer_decision(&seen(2, false), chat, &[&p1]),
            Err(Refusal::Changed)
        );
        // A chat without TLS trusts no certificate of its own.
        assert_eq!(
            transfer_decision(&seen(1, false), None, &[]),
            Err(Refusal::Unknown)
        );
    }

    #[test]
    fn the_rule() {
        use Decision::*;
        let fp = |n| Some(Fingerprint([n; 32]));
        let (p1, p2) = (pin(1), pin(2));
        // Authorities vouch: accepted, never pinned; the flag still counts.
        assert_eq!(
            decide(&seen(1, true), None, &[], false),
            Accept { pin: false }
        );
        assert_eq!(
            decide(&seen(1, true), None, &[&p2], false),
            Accept { pin: false }
        );
        assert_eq!(
            decide(&seen(1, true), fp(2), &[], true),
            Refuse(Refusal::NotTheFlag(Fingerprint([2; 32])))
        );
        // Pinned: silent when it matches (any of several), loud when not,
        // whatever the flag says.
        assert_eq!(
            decide(&seen(1, false), None, &[&p1], false),
            Accept { pin: false }
        );
        assert_eq!(
            decide(&seen(1, false), None, &[&p2, &p1], true),
            Accept { pin: false }
        );
        assert_eq!(
            decide(&seen(1, false), None, &[&p2], true),
            Refuse(Refusal::Changed)
        );
        assert_eq!(
            decide(&seen(1, false), fp(1), &[&p2], true),
            Refuse(Refusal::Changed)
        );
        // Unknown: the flag pins, a person is asked, a script is refused.
        assert_eq!(
            decide(&seen(1, false), fp(1), &[], false),
            Accept { pin: true }
        );
        assert_eq!(decide(&seen(1, false), None, &[], true), Ask);
        assert_eq!(
            decide(&seen(1, false), None, &[], false),
            Refuse(Refusal::Unknown)
        );
        assert_eq!(
            decide(&seen(1, false), fp(3), &[], true),
            Refuse(Refusal::NotTheFlag(Fingerprint([3; 32])))
        );
    }
}
