//! The commands of the Chatting state, as a table: name, usage, help line
//! and handler. `/help` is made from the table, so a command cannot be
//! added without its help. (Model: mini-redis's `src/cmd/`, ergo's
//! `irc/commands.go`.) The rooms and moderation commands to come add rows
//! here, with the role they need.

use super::session::{Action, Ctx};
use super::text::{first_word, is_blank};

/// What a handler asks of its session afterwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Then {
    Stay,
    /// Say goodbye and close (the session does it: it owns its state).
    Quit,
}

/// One chat command.
pub struct Command {
    /// Lowercase; matched without regard to case.
    pub name: &'static str,
    /// As `/help` shows it.
    pub usage: &'static str,
    pub help: &'static str,
    pub run: fn(&Call<'_>, &mut Ctx<'_>) -> Then,
}

/// A command as typed by a Chatting user.
pub struct Call<'a> {
    /// Who sent it (the name as registered).
    pub user: &'a str,
    /// Everything after the command and its blanks.
    pub args: &'a str,
}

pub const COMMANDS: &[Command] = &[
    Command {
        name: "msg",
        usage: "/msg <user> <text>",
        help: "send <text> to <user> only",
        run: msg,
    },
    Command {
        name: "me",
        usage: "/me <action>",
        help: "show '* <you> <action>' to everybody",
        run: me,
    },
    Command {
        name: "who",
        usage: "/who",
        help: "list who is online",
        run: who,
    },
    Command {
        name: "help",
        usage: "/help",
        help: "show this help",
        run: help,
    },
    Command {
        name: "quit",
        usage: "/quit",
        help: "leave the chat",
        run: quit,
    },
];

/// The command named `name` (any case).
pub fn find(name: &str) -> Option<&'static Command> {
    COMMANDS.iter().find(|c| c.name.eq_ignore_ascii_case(name))
}

/// The `/help` answer, one line per entry, columns as the protocol shows.
pub fn help_lines() -> Vec<String> {
    let row = |usage: &str, help: &str| format!("*   {usage:<20}{help}");
    let mut lines = vec![
        "* commands:".to_owned(),
        row("<text>", "say <text> to everybody"),
    ];
    lines.extend(COMMANDS.iter().map(|c| row(c.usage, c.help)));
    lines.push(row("//text", "say a line that starts with '/'"));
    lines
}

fn msg(call: &Call<'_>, ctx: &mut Ctx<'_>) -> Then {
    let (to, text) = first_word(call.args);
    if to.is_empty() || text.trim_matches(is_blank).is_empty() {
        ctx.send("! usage: /msg <user> <text>");
    } else if let Some((id, _)) = ctx.roster.lookup(to) {
        let line = format!("@{}: {text}\n", call.user);
        ctx.actions.push(Action::SendTo(id, line.into_bytes()));
    } else {
        ctx.send(&format!("! {to} is not online"));
    }
    Then::Stay
}

fn me(call: &Call<'_>, ctx: &mut Ctx<'_>) -> Then {
    if call.args.trim_matches(is_blank).is_empty() {
        ctx.send("! usage: /me <action>");
    } else {
        let line = format!("* {} {}\n", call.user, call.args);
        ctx.actions.push(Action::Broadcast(line.into_bytes()));
    }
    Then::Stay
}

fn who(_: &Call<'_>, ctx: &mut Ctx<'_>) -> Then {
    ctx.actions.push(Action::Send(ctx.roster.who_line()));
    Then::Stay
}

fn help(_: &Call<'_>, ctx: &mut Ctx<'_>) -> Then {
    for line in help_lines() {
        ctx.send(&line);
    }
    Then::Stay
}

fn quit(_: &Call<'_>, ctx: &mut Ctx<'_>) -> Then {
    ctx.send("* bye");
    Then::Quit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_is_the_table_in_the_protocol_s_columns() {
        assert_eq!(
            help_lines(),
            [
                "* commands:",
                "*   <text>              say <text> to everybody",
                "*   /msg <user> <text>  send <text> to <user> only",
                "*   /me <action>        show '* <you> <action>' to everybody",
                "*   /who                list who is online",
                "*   /help               show this help",
                "*   /quit               leave the chat",
                "*   //text              say a line that starts with '/'",
            ]
        );
    }

    #[test]
    fn names_are_lowercase_unique_and_found_in_any_case() {
        for (i, c) in COMMANDS.iter().enumerate() {
            assert_eq!(c.name, c.name.to_ascii_lowercase());
            assert!(c.usage.starts_with(&format!("/{}", c.name)));
            assert!(COMMANDS[..i].iter().all(|d| d.name != c.name));
            assert_eq!(
                find(&c.name.to_ascii_uppercase()).map(|f| f.name),
                Some(c.name)
            );
        }
        assert!(find("frob").is_none());
        assert!(find("").is_none());
    }
}
