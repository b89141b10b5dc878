//! The commands of the Chatting state, as a table: name, usage, help line
//! and handler. `/help` is made from the table, so a command cannot be
//! added without its help. (Model: mini-redis's `src/cmd/`, ergo's
//! `irc/commands.go`.) Each row names the least role that may use it, and
//! `/help` shows a user only the rows they may use.

use super::hub::{LOBBY_ID, RoomId, Sent};
use super::moderation::{self, Rank};
use super::session::{Action, ConnId, Ctx};
use super::text::{first_word, is_blank, room_name};
use crate::store::ops::{HistoryOf, Op};

/// What a handler asks of its session afterwards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Then {
    Stay,
    /// A read went to the store: take no more input until it is answered.
    Wait,
    /// Say goodbye and close (the session does it: it owns its state).
    Quit,
    /// `/token`: this token's hash went to the store; show the token once
    /// it is stored (input waits meanwhile).
    Token(String),
    /// `/passwd`: the session asks for the passwords.
    Passwd,
    /// `/logout [all]`: the session knows its token.
    Logout {
        all: bool,
    },
}

/// One chat command.
pub struct Command {
    /// Lowercase; matched without regard to case.
    pub name: &'static str,
    /// As `/help` shows it.
    pub usage: &'static str,
    pub help: &'static str,
    /// The least rank, in some room, that may use it (shown in `/help`
    /// only from there; the command checks the room itself).
    pub role: Rank,
    pub run: fn(&Call<'_>, &mut Ctx<'_>) -> Then,
}

/// A command as typed by a Chatting user.
pub struct Call<'a> {
    /// Who sent it (the name as registered).
    pub user: &'a str,
    /// The connection it came from.
    pub conn: ConnId,
    /// Everything after the command and its blanks.
    pub args: &'a str,
}

pub const COMMANDS: &[Command] = &[
    Command {
        name: "msg",
        usage: "/msg <user> <text>",
        help: "send <text> to <user> only",
        role: Rank::Member,
        run: msg,
    },
    Command {
        name: "me",
        usage: "/me <action>",
        help: "show '* <you> <action>' to the room",
        role: Rank::Member,
        run: me,
    },
    Command {
        name: "join",
        usage: "/join #room",
        help: "join (or create) #room and talk there",
        role: Rank::Member,
        run: join,
    },
    Command {
        name: "part",
        usage: "/part [#room]",
        help: "leave #room (default: the current one)",
        role: Rank::Member,
        run: part,
    },
    Command {
        name: "to",
        usage: "/to #room <text>",
        help: "say <text> in #room without switching to it",
        role: Rank::Member,
        run: to,
    },
    Command {
        name: "rooms",
        usage: "/rooms",
        help: "list the rooms",
        role: Rank::Member,
        run: rooms,
    },
    Command {
        name: "topic",
        usage: "/topic [#room] [text]",
        help: "show or set a room's topic",
        role: Rank::Member,
        run: topic,
    },
    Command {
        name: "history",
        usage: "/history [#room|@user] [N]",
        help: "show the last N messages (default 20, at most 200)",
        role: Rank::Member,
        run: history,
    },
    Command {
        name: "who",
        usage: "/who [#room]",
        help: "list who is online (in the room)",
        role: Rank::Member,
        run: who,
    },
    Command {
        name: "upload",
        usage: "/upload <filename> <bytes>",
        help: "get a one-time URL to upload a file to this room",
        role: Rank::Member,
        run: super::uploads::upload,
    },
    Command {
        name: "token",
        usage: "/token",
        help: "get a token that logs you in without your password",
        role: Rank::Member,
        run: token,
    },
    Command {
        name: "passwd",
        usage: "/passwd",
        help: "change your password (and log out your other sessions)",
        role: Rank::Member,
        run: passwd,
    },
    Command {
        name: "logout",
        usage: "/logout [all]",
        help: "forget this session's token and quit (all: every token)",
        role: Rank::Member,
        run: logout,
    },
    Command {
        name: "kick",
        usage: "/kick [#room] <user> [reason]",
        help: "remove <user> from the room (the lobby: the server)",
        role: Rank::Operator,
        run: moderation::kick,
    },
    Command {
        name: "ban",
        usage: "/ban [#room] <user> [30m|2h|7d] [reason]",
        help: "kick <user> and keep them out (for ever without a duration)",
        role: Rank::Operator,
        run: moderation::ban,
    },
    Command {
        name: "unban",
        usage: "/unban [#room] <user>",
        help: "end a ban",
        role: Rank::Operator,
        run: moderation::unban,
    },
    Command {
        name: "mute",
        usage: "/mute [#room] <user> [30m|2h|7d]",
        help: "refuse <user>'s lines in the room (the lobby: everywhere)",
        role: Rank::Operator,
        run: moderation::mute,
    },
    Command {
        name: "unmute",
        usage: "/unmute [#room] <user>",
        help: "end a mute",
        role: Rank::Operator,
        run: moderation::unmute,
    },
    Command {
        name: "op",
        usage: "/op #room <user>",
        help: "make <user> an operator of your room",
        role: Rank::Owner,
        run: moderation::op,
    },
    Command {
        name: "deop",
        usage: "/deop #room <user>",
        help: "end <user>'s role of operator of your room",
        role: Rank::Owner,
        run: moderation::deop,
    },
    Command {
        name: "help",
        usage: "/help",
        help: "show this help",
        role: Rank::Member,
        run: help,
    },
    Command {
        name: "quit",
        usage: "/quit",
        help: "leave the chat",
        role: Rank::Member,
        run: quit,
    },
];

/// `/history` without a count.
pub const HISTORY_DEFAULT: usize = 20;
/// The most `/history` shows at once.
pub const HISTORY_MAX: usize = 200;

/// The command named `name` (any case).
pub fn find(name: &str) -> Option<&'static Command> {
    COMMANDS.iter().find(|c| c.name.eq_ignore_ascii_case(name))
}

/// The `/help` answer for a user whose best rank in any room is `rank`,
/// one line per entry, columns as the protocol shows.
pub fn help_lines(rank: Rank) -> Vec<String> {
    let row = |usage: &str, help: &str| format!("*   {usage:<28}{help}");
    let mut lines = vec![
        "* commands:".to_owned(),
        row("<text>", "say <text> in the current room"),
    ];
    lines.extend(
        COMMANDS
            .iter()
            .filter(|c| c.role <= rank)
            .map(|c| row(c.usage, c.help)),
    );
    lines.push(row("//text", "say a line that starts with '/'"));
    lines
}

fn msg(call: &Call<'_>, ctx: &mut Ctx<'_>) -> Then {
    let (to, text) = first_word(call.args);
    if to.is_empty() || text.trim_matches(is_blank).is_empty() {
        ctx.send("! usage: /msg <user> <text>");
        return Then::Stay;
    }
    // A server mute covers private messages too.
    if let Some(line) = ctx.hub.muted_line(LOBBY_ID, call.user, ctx.wall) {
        ctx.actions.push(Action::Send(line));
        return Then::Stay;
    }
    match ctx
        .hub
        .private(call.conn, call.user, to, text, ctx.wall, ctx.actions)
    {
        Sent::Delivered => {}
        Sent::Stored(name) => {
            ctx.send(&format!(
                "* {name} is offline; they will get it when they log in"
            ));
        }
        Sent::NotOnline => ctx.send(&format!("! {to} is not online")),
        Sent::NoSuchUser => ctx.send(&format!("! no such user {to}")),
    }
    Then::Stay
}

fn me(call: &Call<'_>, ctx: &mut Ctx<'_>) -> Then {
    if call.args.trim_matches(is_blank).is_empty() {
        ctx.send("! usage: /me <action>");
    } else {
        let room = ctx.hub.current(call.user, call.conn);
        ctx.hub.say(
            (call.conn, call.user),
            room,
            true,
            call.args,
            ctx.wall,
            ctx.actions,
        );
    }
    Then::Stay
}

/// The room named by `typed` (`#rust`, `#lobby`), or the line that says
/// why there is none.
fn named_room(typed: &str, ctx: &Ctx<'_>) -> Result<RoomId, String> {
    let Some(name) = room_name(typed) else {
        return Err(BAD_ROOM.to_owned());
    };
    ctx.hub
        .find_room(&name)
        .ok_or_else(|| format!("! no such room #{name}"))
}

pub(super) const BAD_ROOM: &str =
    "! invalid room name: '#' and 1-32 letters, digits, '_', '-' or '.'";

/// A room the user is a member of (or the lobby), by name.
fn own_room(typed: &str, call: &Call<'_>, ctx: &Ctx<'_>) -> Result<RoomId, String> {
    let Some(name) = room_name(typed) else {
        return Err(BAD_ROOM.to_owned());
    };
    ctx.hub
        .find_room(&name)
        .filter(|r| ctx.hub.is_member(call.user, *r))
        .ok_or_else(|| format!("! you are not in #{name}"))
}

fn join(call: &Call<'_>, ctx: &mut Ctx<'_>) -> Then {
    let (typed, rest) = first_word(call.args);
    if typed.is_empty() || !rest.is_empty() {
        ctx.send("! usage: /join #room");
        return Then::Stay;
    }
    let Some(name) = room_name(typed) else {
        ctx.send(BAD_ROOM);
        return Then::Stay;
    };
    let already = ctx
        .hub
        .find_room(&name)
        .filter(|r| ctx.hub.is_member(call.user, *r));
    if let Some(room) = already {
        ctx.hub.set_current(call.user, call.conn, room);
        ctx.send(&format!("* talking in #{name}"));
        return Then::Stay;
    }
    if let Err(line) = ctx
        .hub
        .join(call.conn, call.user, &name, ctx.wall, ctx.actions)
    {
        ctx.send(&line);
    }
    Then::Stay
}

fn part(call: &Call<'_>, ctx: &mut Ctx<'_>) -> Then {
    let (typed, rest) = first_word(call.args);
    if !rest.is_empty() {
        ctx.send("! usage: /part [#room]");
        return Then::Stay;
    }
    let room = if typed.is_empty() {
        ctx.hub.current(call.user, call.conn)
    } else {
        match own_room(typed, call, ctx) {
            Ok(room) => room,
            Err(line) => {
                ctx.send(&line);
                return Then::Stay;
            }
        }
    };
    if room == LOBBY_ID {
        ctx.send("! you cannot leave the lobby");
        return Then::Stay;
    }
    if let Err(line) = ctx.hub.part(call.conn, call.user, room, ctx.actions) {
        ctx.send(&line);
    }
    Then::Stay
}

fn to(call: &Call<'_>, ctx: &mut Ctx<'_>) -> Then {
    let (typed, text) = first_word(call.args);
    if typed.is_empty() || text.trim_matches(is_blank).is_empty() {
        ctx.send("! usage: /to #room <text>");
        return Then::Stay;
    }
    match own_room(typed, call, ctx) {
        Ok(room) => ctx.hub.say(
            (call.conn, call.user),
            room,
            false,
            text,
            ctx.wall,
            ctx.actions,
        ),
        Err(line) => ctx.send(&line),
    }
    Then::Stay
}

fn rooms(_: &Call<'_>, ctx: &mut Ctx<'_>) -> Then {
    ctx.actions.push(Action::Send(ctx.hub.rooms_line()));
    Then::Stay
}

fn topic(call: &Call<'_>, ctx: &mut Ctx<'_>) -> Then {
    let (first, rest) = first_word(call.args);
    let (room, text) = if first.starts_with('#') {
        match named_room(first, ctx) {
            Ok(room) => (room, rest),
            Err(line) => {
                ctx.send(&line);
                return Then::Stay;
            }
        }
    } else {
        (ctx.hub.current(call.user, call.conn), call.args)
    };
    let text = text.trim_matches(is_blank);
    if text.is_empty() {
        ctx.actions.push(Action::Send(ctx.hub.topic_of(room)));
        return Then::Stay;
    }
    if room == LOBBY_ID && !ctx.hub.is_server_op(call.user) {
        ctx.send("! only server operators can do that");
    } else if !ctx.hub.may_set_topic(room, call.user) {
        let tag = ctx.hub.room(room).map(|r| r.tag()).unwrap_or_default();
        ctx.send(&format!("! you are not an operator of {tag}"));
    } else if !ctx.hub.is_member(call.user, room) && !ctx.hub.is_server_op(call.user) {
        let tag = ctx.hub.room(room).map(|r| r.tag()).unwrap_or_default();
        ctx.send(&format!("! you are not in {tag}"));
    } else {
        ctx.hub.set_topic(room, call.user, text, ctx.actions);
    }
    Then::Stay
}

const HISTORY_USAGE: &str = "! usage: /history [#room|@user] [N] (N from 1 to 200)";

fn history(call: &Call<'_>, ctx: &mut Ctx<'_>) -> Then {
    let (first, rest) = first_word(call.args);
    let (target, count) = if first.starts_with(['#', '@']) {
        (Some(first), rest)
    } else {
        (None, call.args)
    };
    let count = count.trim_matches(is_blank);
    let n = if count.is_empty() {
        HISTORY_DEFAULT
    } else if count.bytes().all(|b| b.is_ascii_digit()) {
        // Past the most, the most: `/history 100000` shows 200.
        match count.parse::<u64>() {
            Ok(0) => {
                ctx.send(HISTORY_USAGE);
                return Then::Stay;
            }
            Ok(n) => (n.min(HISTORY_MAX as u64)) as usize,
            Err(_) => HISTORY_MAX,
        }
    } else {
        ctx.send(HISTORY_USAGE);
        return Then::Stay;
    };
    if !ctx.hub.config().history {
        ctx.send("! history is off on this server");
        return Then::Stay;
    }
    let of = match target {
        Some(user) if user.starts_with('@') => {
            let user = &user[1..];
            let Some(shown) = ctx.hub.account(user).map(str::to_owned) else {
                ctx.send(&format!("! no such user {user}"));
                return Then::Stay;
            };
            HistoryOf::Private(shown)
        }
        Some(typed) => match own_room(typed, call, ctx) {
            Ok(room) => return room_history(call, room, n, ctx),
            Err(line) => {
                ctx.send(&line);
                return Then::Stay;
            }
        },
        None => {
            let room = ctx.hub.current(call.user, call.conn);
            return room_history(call, room, n, ctx);
        }
    };
    ctx.actions.push(Action::Store(Op::History {
        conn: call.conn,
        account: call.user.to_owned(),
        of,
        limit: n,
        before: None,
    }));
    Then::Wait
}

/// A room's last `n` messages: from the ring when it holds them, else
/// read by the store thread (which has every message sent before).
fn room_history(call: &Call<'_>, room: RoomId, n: usize, ctx: &mut Ctx<'_>) -> Then {
    if let Some(lines) = ctx.hub.recent(room, n, ctx.wall) {
        for line in lines {
            ctx.actions.push(Action::Send(line));
        }
        ctx.send("* end of history");
        return Then::Stay;
    }
    let name = ctx
        .hub
        .room(room)
        .map(|r| r.tag()[1..].to_owned())
        .unwrap_or_default();
    ctx.actions.push(Action::Store(Op::History {
        conn: call.conn,
        account: call.user.to_owned(),
        of: HistoryOf::Room(name),
        limit: n,
        before: None,
    }));
    Then::Wait
}

fn who(call: &Call<'_>, ctx: &mut Ctx<'_>) -> Then {
    let (typed, _) = first_word(call.args);
    let room = if typed.is_empty() {
        ctx.hub.current(call.user, call.conn)
    } else {
        match named_room(typed, ctx) {
            Ok(room) => room,
            Err(line) => {
                ctx.send(&line);
                return Then::Stay;
            }
        }
    };
    ctx.actions.push(Action::Send(ctx.hub.who_line(room)));
    Then::Stay
}

fn help(call: &Call<'_>, ctx: &mut Ctx<'_>) -> Then {
    for line in help_lines(ctx.hub.best_rank(call.user)) {
        ctx.send(&line);
    }
    Then::Stay
}

fn token(call: &Call<'_>, ctx: &mut Ctx<'_>) -> Then {
    if !call.args.trim_matches(is_blank).is_empty() {
        ctx.send("! usage: /token");
        return Then::Stay;
    }
    let Some((token, hash)) = super::token::new_token() else {
        ctx.send("! service temporarily unavailable, try again");
        return Then::Stay;
    };
    let days = i64::from(ctx.hub.config().token_days);
    ctx.actions.push(Action::Store(Op::CreateToken {
        conn: call.conn,
        account: call.user.to_owned(),
        hash,
        created_at: ctx.wall,
        expires_at: ctx.wall.saturating_add(days * 86_400),
    }));
    Then::Token(token)
}

fn passwd(call: &Call<'_>, ctx: &mut Ctx<'_>) -> Then {
    if !call.args.trim_matches(is_blank).is_empty() {
        ctx.send("! usage: /passwd");
        return Then::Stay;
    }
    Then::Passwd
}

fn logout(call: &Call<'_>, ctx: &mut Ctx<'_>) -> Then {
    match call.args.trim_matches(is_blank) {
        "" => Then::Logout { all: false },
        a if a.eq_ignore_ascii_case("all") => Then::Logout { all: true },
        _ => {
            ctx.send("! usage: /logout [all]");
            Then::Stay
        }
    }
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
            help_lines(Rank::Member),
            [
                "* commands:",
                "*   <text>                      say <text> in the current room",
                "*   /msg <user> <text>          send <text> to <user> only",
                "*   /me <action>                show '* <you> <action>' to the room",
                "*   /join #room                 join (or create) #room and talk there",
                "*   /part [#room]               leave #room (default: the current one)",
                "*   /to #room <text>            say <text> in #room without switching to it",
                "*   /rooms                      list the rooms",
                "*   /topic [#room] [text]       show or set a room's topic",
                "*   /history [#room|@user] [N]  show the last N messages (default 20, at most 200)",
                "*   /who [#room]                list who is online (in the room)",
                "*   /upload <filename> <bytes>  get a one-time URL to upload a file to this room",
                "*   /token                      get a token that logs you in without your password",
                "*   /passwd                     change your password (and log out your other sessions)",
                "*   /logout [all]               forget this session's token and quit (all: every token)",
                "*   /help                       show this help",
                "*   /quit                       leave the chat",
                "*   //text                      say a line that starts with '/'",
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
