//! Moderation: who may do what (server operators, room owners, room
//! operators), bans and mutes, the commands that give and end them, and
//! what the admin subcommands changed while the server ran.
//!
//! Roles and sanctions live in the hub (loaded from the store's snapshot,
//! changed here, each change handed to the store thread), so a login, a
//! `/join` and every line check them without a read. In a room, an act on
//! someone needs a higher [`Rank`] than theirs there; server-wide acts
//! (the lobby) are for server operators only, on anybody who is not one.
//! Every act is logged at info (target `neochat::moderation`).

use super::commands::{Call, Then};
use super::hub::{Hub, LOBBY_ID, RoomId, fold};
use super::rooms::Sanction;
use super::session::{Action, ConnId, Ctx};
use super::text::{first_word, is_blank, room_name, until_text};
use crate::store::ops::{Change, LOBBY, Op, SanctionKind, SanctionRow};

/// Who someone is in a room, lowest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rank {
    Member,
    Operator,
    Owner,
    Server,
}

/// The longest duration a ban or mute may have (longer: for ever).
const MAX_DURATION: i64 = 365 * 86_400;
const NO_REASON: &str = "no reason given";

/// A duration as typed (`30m`, `2h`, `7d`) in seconds. `None`: the word is
/// not meant as one (it starts the reason); `Some(Err)`: it looks like a
/// number but is not a valid duration.
pub fn duration(word: &str) -> Option<Result<i64, String>> {
    let digits = word.trim_start_matches(['-', '+']);
    if !digits.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let bad = || {
        Err(format!(
            "! invalid duration {word}: use 30m, 2h or 7d (at most 365d); none means forever"
        ))
    };
    if digits.len() != word.len() {
        return Some(bad());
    }
    let split = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    let (n, unit) = digits.split_at(split);
    let per = match unit {
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Some(bad()),
    };
    match n.parse::<i64>().ok().and_then(|n| n.checked_mul(per)) {
        Some(secs) if (1..=MAX_DURATION).contains(&secs) => Some(Ok(secs)),
        _ => Some(bad()),
    }
}

/// When a sanction of `secs` given at `wall` ends: the next whole minute
/// at or after, so that the time shown is never before it ends.
pub fn ends_at(wall: i64, secs: i64) -> i64 {
    (wall + secs).div_euclid(60) * 60 + if (wall + secs) % 60 == 0 { 0 } else { 60 }
}

impl Hub {
    pub fn is_server_op(&self, name: &str) -> bool {
        self.server_ops.contains(&fold(name))
    }

    /// What `name` is in `room` (the lobby: server operator or member).
    pub fn rank(&self, room: RoomId, name: &str) -> Rank {
        let key = fold(name);
        if self.server_ops.contains(&key) {
            return Rank::Server;
        }
        let Some(r) = self.rooms.get(room.0).filter(|_| room != LOBBY_ID) else {
            return Rank::Member;
        };
        if super::rooms::r_owner_is(self, room, name) {
            Rank::Owner
        } else if r.ops.contains(&key) {
            Rank::Operator
        } else {
            Rank::Member
        }
    }

    /// The highest rank `name` has in any room: what `/help` shows them.
    pub fn best_rank(&self, name: &str) -> Rank {
        if self.is_server_op(name) {
            return Rank::Server;
        }
        self.by_name
            .values()
            .map(|r| self.rank(*r, name))
            .max()
            .unwrap_or(Rank::Member)
    }

    /// A ban or mute of `name` in `room` that holds at `wall`.
    pub fn sanction(
        &self,
        room: RoomId,
        name: &str,
        kind: SanctionKind,
        wall: i64,
    ) -> Option<&Sanction> {
        let sanctions = &self.rooms.get(room.0)?.sanctions;
        // Every line asks (for its room and the lobby): without sanctions
        // there, nothing to fold or look up.
        if sanctions.is_empty() {
            return None;
        }
        sanctions.get(&(fold(name), kind)).filter(|s| s.holds(wall))
    }

    /// Why a login of `name` is refused, if it is: a server ban (`!
    /// banned until <time>: <reason>`), or the account was deleted (by
    /// the admin subcommands) meanwhile.
    pub fn barred(&self, name: &str, wall: i64) -> Option<String> {
        if self.account(name).is_none() {
            return Some("! account deleted by an operator".to_owned());
        }
        let s = self.sanction(LOBBY_ID, name, SanctionKind::Ban, wall)?;
        Some(format!(
            "! banned until {}: {}",
            until_text(s.until),
            s.reason
        ))
    }

    /// Why `/join` of `room` is refused to a banned user.
    pub fn room_ban_line(&self, room: RoomId, name: &str, wall: i64) -> Option<String> {
        let s = self.sanction(room, name, SanctionKind::Ban, wall)?;
        let tag = self.rooms.get(room.0)?.tag();
        Some(format!(
            "! you are banned from {tag} until {}",
            until_text(s.until)
        ))
    }

    /// The refusal of a muted user's line to `room` (a server mute covers
    /// every room).
    pub fn muted_line(&self, room: RoomId, name: &str, wall: i64) -> Option<Vec<u8>> {
        if let Some(s) = self.sanction(LOBBY_ID, name, SanctionKind::Mute, wall) {
            return Some(format!("! you are muted until {}\n", until_text(s.until)).into_bytes());
        }
        let s = self.sanction(room, name, SanctionKind::Mute, wall)?;
        let tag = self.rooms.get(room.0)?.tag();
        Some(
            format!(
                "{tag} ! you are muted in {tag} until {}\n",
                until_text(s.until)
            )
            .into_bytes(),
        )
    }

    /// The connections of `name` online, oldest first.
    pub(super) fn conns_of(&self, name: &str) -> Vec<ConnId> {
        self.online
            .get(&fold(name))
            .map(|a| a.conns.iter().map(|(c, _)| *c).collect())
            .unwrap_or_default()
    }

    /// Closes every connection of `shown` but `except` with `line`, the
    /// account staying online on `except` (or, with none, going offline:
    /// told in the lobby unless `silent`).
    pub(super) fn close_conns(
        &mut self,
        shown: &str,
        except: Option<ConnId>,
        line: &[u8],
        silent: bool,
        out: &mut Vec<Action>,
    ) {
        for c in self.conns_of(shown) {
            if Some(c) == except {
                continue;
            }
            self.leave(c, shown, silent, out);
            out.push(Action::Kick(c, line.to_vec()));
        }
    }

    /// Takes `shown` out of `room` (online or not): its connections there
    /// get `line`, the lobby becomes current where the room was, and the
    /// room is deleted if nobody is left. True if it was a member.
    pub(super) fn remove_member(
        &mut self,
        room: RoomId,
        shown: &str,
        line: Option<&[u8]>,
        out: &mut Vec<Action>,
    ) -> bool {
        let key = fold(shown);
        let Some(r) = self.rooms.get_mut(room.0).filter(|_| room != LOBBY_ID) else {
            return false;
        };
        if !r.members.remove(&key) {
            return false;
        }
        r.online.remove(&key);
        let mut conns = Vec::new();
        if let Some(account) = self.online.get_mut(&key) {
            account.rooms.retain(|x| *x != room);
            for slot in &mut account.conns {
                if slot.1 == room {
                    slot.1 = LOBBY_ID;
                }
                conns.push(slot.0);
            }
        }
        let r = &mut self.rooms[room.0];
        for c in &conns {
            r.conns.remove(*c);
        }
        if let Some(line) = line {
            for c in conns {
                out.push(Action::SendTo(c, line.to_vec()));
            }
        }
        let name = r.name.clone();
        if r.members.is_empty() {
            self.by_name.remove(&name);
            self.rooms.remove(room.0);
            out.push(Action::Store(Op::DeleteRoom { name }));
        } else {
            out.push(Action::Store(Op::Part {
                room: name,
                account: shown.to_owned(),
            }));
        }
        true
    }

    /// Makes (`on`) or unmakes `shown` an operator of `room`, stored; false
    /// if it already was (or was not).
    fn set_room_op(
        &mut self,
        room: RoomId,
        shown: &str,
        on: bool,
        by: &str,
        wall: i64,
        out: &mut Vec<Action>,
    ) -> bool {
        let Some(r) = self.rooms.get_mut(room.0) else {
            return false;
        };
        let key = fold(shown);
        let changed = if on {
            r.ops.insert(key)
        } else {
            r.ops.remove(&key)
        };
        if changed {
            out.push(Action::Store(Op::Operator {
                room: r.name.clone(),
                account: shown.to_owned(),
                on,
                by: by.to_owned(),
                at: wall,
            }));
        }
        changed
    }

    /// Records a ban or mute, replacing one of its kind.
    fn set_sanction(&mut self, room: RoomId, row: SanctionRow, wall: i64, out: &mut Vec<Action>) {
        let Some(r) = self.rooms.get_mut(room.0) else {
            return;
        };
        let sanction = Sanction {
            until: row.until,
            reason: row.reason.clone(),
            by: row.by.clone(),
        };
        r.sanctions.insert((fold(&row.account), row.kind), sanction);
        out.push(Action::Store(Op::Sanction { row, at: wall }));
    }

    /// Ends a ban or mute; false if none held.
    fn lift(
        &mut self,
        room: RoomId,
        shown: &str,
        kind: SanctionKind,
        wall: i64,
        out: &mut Vec<Action>,
    ) -> bool {
        let Some(r) = self.rooms.get_mut(room.0) else {
            return false;
        };
        let held = r
            .sanctions
            .remove(&(fold(shown), kind))
            .is_some_and(|s| s.holds(wall));
        out.push(Action::Store(Op::Lift {
            room: r.name.clone(),
            account: shown.to_owned(),
            kind,
        }));
        held
    }

    /// What an operator changed with the admin subcommands while the
    /// server ran. Pushes no [`Action::Send`]: there is no connection of
    /// its own.
    pub fn apply_change(&mut self, change: Change, out: &mut Vec<Action>) {
        match change {
            Change::FilesExpired(freed) => {
                for (owner, size) in freed {
                    self.uploads.freed(&owner, size);
                }
            }
            Change::OpAdded(name) => {
                log::info!(target: "neochat::moderation", "server operator added user={name} by=command-line");
                self.server_ops.insert(fold(&name));
            }
            Change::OpRemoved(name) => {
                log::info!(target: "neochat::moderation", "server operator removed user={name} by=command-line");
                self.server_ops.remove(&fold(&name));
            }
            Change::PasswordReset(name) => {
                log::info!(target: "neochat::moderation", "password reset user={name} by=command-line");
                let shown = self.account(&name).unwrap_or(&name).to_owned();
                let line = b"! password reset by an operator; log in again\n";
                self.close_conns(&shown, None, line, false, out);
                // A `/token` made between the reset and now is revoked too.
                out.push(Action::Store(Op::RevokeTokens {
                    conn: None,
                    account: shown,
                }));
            }
            Change::Deleted(name) => {
                log::info!(target: "neochat::moderation", "account deleted user={name} by=command-line");
                let shown = self.account(&name).unwrap_or(&name).to_owned();
                self.close_conns(
                    &shown,
                    None,
                    b"! account deleted by an operator\n",
                    false,
                    out,
                );
                let key = fold(&shown);
                let rooms: Vec<RoomId> = self.by_name.values().copied().collect();
                for room in rooms {
                    self.remove_member(room, &shown, None, out);
                    if let Some(r) = self.rooms.get_mut(room.0) {
                        r.ops.remove(&key);
                        r.sanctions.retain(|(k, _), _| *k != key);
                    }
                }
                self.rooms[LOBBY_ID.0]
                    .sanctions
                    .retain(|(k, _), _| *k != key);
                self.server_ops.remove(&key);
                self.directory.remove(key.as_str());
                out.push(Action::Store(Op::Forget { account: shown }));
            }
        }
    }
}

/// A moderation command's room and the rest of its arguments: the first
/// argument when it starts with `#`, else the current room.
fn target_room<'a>(call: &Call<'a>, ctx: &Ctx<'_>) -> Result<(RoomId, &'a str), String> {
    let (first, rest) = first_word(call.args);
    if !first.starts_with('#') {
        return Ok((ctx.hub.current(call.user, call.conn), call.args));
    }
    let name = room_name(first).ok_or_else(|| super::commands::BAD_ROOM.to_owned())?;
    let room = ctx
        .hub
        .find_room(&name)
        .ok_or_else(|| format!("! no such room #{name}"))?;
    Ok((room, rest))
}

/// The room's tag (`#rust`, `#lobby`).
fn tag(ctx: &Ctx<'_>, room: RoomId) -> String {
    ctx.hub.room(room).map(|r| r.tag()).unwrap_or_default()
}

/// A moderation act about to happen: checked room, actor and target.
struct Act {
    room: RoomId,
    /// `#rust`; the lobby's acts carry no prefix.
    tag: String,
    lobby: bool,
    /// The target, as registered.
    target: String,
    /// What follows the target.
    rest: String,
}

impl Act {
    /// `#room ` or nothing, before a line about the room.
    fn prefix(&self) -> String {
        if self.lobby {
            String::new()
        } else {
            format!("{} ", self.tag)
        }
    }
}

/// Checks a moderation command (`/kick [#room] <user> ...`) in the order
/// the errors are told: role, usage, target account, oneself, rank.
fn check(call: &Call<'_>, ctx: &Ctx<'_>, usage: &str) -> Result<Act, String> {
    let (room, args) = target_room(call, ctx)?;
    let lobby = room == LOBBY_ID;
    let tag = tag(ctx, room);
    let actor = ctx.hub.rank(room, call.user);
    if lobby && actor < Rank::Server {
        return Err("! only server operators can do that".to_owned());
    }
    if actor < Rank::Operator {
        return Err(format!("! you are not an operator of {tag}"));
    }
    let (typed, rest) = first_word(args);
    if typed.is_empty() {
        return Err(format!("! usage: {usage}"));
    }
    let Some(target) = ctx.hub.account(typed).map(str::to_owned) else {
        return Err(format!("! no such user {typed}"));
    };
    if fold(&target) == fold(call.user) {
        return Err("! you cannot do that to yourself".to_owned());
    }
    if ctx.hub.rank(room, &target) >= actor {
        return Err(if lobby {
            format!("! {target} is a server operator")
        } else {
            format!("! {target} is an operator of {tag}")
        });
    }
    Ok(Act {
        room,
        tag,
        lobby,
        target,
        rest: rest.trim_matches(is_blank).to_owned(),
    })
}

/// Runs `f` on a checked act, or tells the user why not.
fn with_act(
    call: &Call<'_>,
    ctx: &mut Ctx<'_>,
    usage: &str,
    f: impl FnOnce(Act, &Call<'_>, &mut Ctx<'_>),
) -> Then {
    match check(call, ctx, usage) {
        Ok(act) => f(act, call, ctx),
        Err(line) => ctx.send(&line),
    }
    Then::Stay
}

/// Splits an optional duration off `rest`: (seconds, what follows).
fn split_duration(rest: &str) -> Result<(Option<i64>, &str), String> {
    let (word, after) = first_word(rest);
    match duration(word) {
        None => Ok((None, rest)),
        Some(Ok(secs)) => Ok((Some(secs), after)),
        Some(Err(line)) => Err(line),
    }
}

fn reason_of(text: &str) -> String {
    let text = text.trim_matches(is_blank);
    if text.is_empty() {
        NO_REASON.to_owned()
    } else {
        text.to_owned()
    }
}

/// Sends `line` to the room (but the actor's connection) and to the actor,
/// who may not be a member.
fn tell_room_and_actor(ctx: &mut Ctx<'_>, room: RoomId, conn: ConnId, line: String) {
    let mut bytes = line.into_bytes();
    bytes.push(b'\n');
    if ctx.hub.room(room).is_some() {
        ctx.actions.push(Action::ToRoom {
            room,
            except: Some(conn),
            line: bytes.clone(),
        });
    }
    ctx.actions.push(Action::Send(bytes));
}

fn log_act(what: &str, by: &str, act: &Act, detail: &str) {
    log::info!(
        target: "neochat::moderation",
        "{what} by={by} user={} room={}{detail}",
        act.target,
        act.tag
    );
}

pub(super) fn kick(call: &Call<'_>, ctx: &mut Ctx<'_>) -> Then {
    with_act(
        call,
        ctx,
        "/kick [#room] <user> [reason]",
        |act, call, ctx| {
            let reason = reason_of(&act.rest);
            if act.lobby {
                if !ctx.hub.is_online(&act.target) {
                    ctx.send(&format!("! {} is not online", act.target));
                    return;
                }
                let line = format!("! kicked by {}: {reason}\n", call.user);
                ctx.hub
                    .close_conns(&act.target, None, line.as_bytes(), true, ctx.actions);
            } else {
                let line = format!(
                    "{} ! you were kicked from {} by {}: {reason}\n",
                    act.tag, act.tag, call.user
                );
                if !ctx
                    .hub
                    .remove_member(act.room, &act.target, Some(line.as_bytes()), ctx.actions)
                {
                    ctx.send(&format!("! {} is not in {}", act.target, act.tag));
                    return;
                }
            }
            log_act("kick", call.user, &act, &format!(" reason={reason:?}"));
            let notice = format!(
                "{}* {} was kicked by {}: {reason}",
                act.prefix(),
                act.target,
                call.user
            );
            tell_room_and_actor(ctx, act.room, call.conn, notice);
        },
    )
}

/// `/ban` and `/mute`'s common step: the duration and reason after the
/// target, the sanction recorded and logged. Returns when it ends (as
/// shown) and the reason, or `None` after telling the user the duration is
/// bad.
fn impose(
    act: &Act,
    call: &Call<'_>,
    ctx: &mut Ctx<'_>,
    kind: SanctionKind,
) -> Option<(String, String)> {
    let (secs, reason) = match split_duration(&act.rest) {
        Ok(split) => split,
        Err(line) => {
            ctx.send(&line);
            return None;
        }
    };
    let reason = reason_of(reason);
    let until = secs.map(|s| ends_at(ctx.wall, s));
    let when = until_text(until);
    let room = ctx
        .hub
        .room(act.room)
        .map_or_else(|| LOBBY.to_owned(), |r| r.name.clone());
    let row = SanctionRow {
        room,
        account: act.target.clone(),
        kind,
        until,
        reason: reason.clone(),
        by: call.user.to_owned(),
    };
    ctx.hub.set_sanction(act.room, row, ctx.wall, ctx.actions);
    log_act(
        kind.as_str(),
        call.user,
        act,
        &format!(" until={when} reason={reason:?}"),
    );
    Some((when, reason))
}

pub(super) fn ban(call: &Call<'_>, ctx: &mut Ctx<'_>) -> Then {
    with_act(
        call,
        ctx,
        "/ban [#room] <user> [duration] [reason]",
        |act, call, ctx| {
            let Some((when, reason)) = impose(&act, call, ctx, SanctionKind::Ban) else {
                return;
            };
            // Someone not there is banned all the same; only the operator
            // is told.
            let present = if act.lobby {
                let online = ctx.hub.is_online(&act.target);
                let line = format!("! banned until {when}: {reason}\n");
                ctx.hub
                    .close_conns(&act.target, None, line.as_bytes(), true, ctx.actions);
                online
            } else {
                let line = format!(
                    "{} ! you were banned from {} by {} until {when}: {reason}\n",
                    act.tag, act.tag, call.user
                );
                // A banned operator operates no more.
                ctx.hub.set_room_op(
                    act.room,
                    &act.target,
                    false,
                    call.user,
                    ctx.wall,
                    ctx.actions,
                );
                ctx.hub
                    .remove_member(act.room, &act.target, Some(line.as_bytes()), ctx.actions)
            };
            let notice = format!(
                "{}* {} was banned by {} until {when}: {reason}",
                act.prefix(),
                act.target,
                call.user
            );
            if present {
                tell_room_and_actor(ctx, act.room, call.conn, notice);
            } else {
                ctx.send(&notice);
            }
        },
    )
}

pub(super) fn mute(call: &Call<'_>, ctx: &mut Ctx<'_>) -> Then {
    with_act(
        call,
        ctx,
        "/mute [#room] <user> [duration]",
        |act, call, ctx| {
            let Some((when, _)) = impose(&act, call, ctx, SanctionKind::Mute) else {
                return;
            };
            let told = if act.lobby {
                format!("! you are muted until {when}\n")
            } else {
                format!("{} ! you are muted in {} until {when}\n", act.tag, act.tag)
            };
            for c in ctx.hub.conns_of(&act.target) {
                ctx.actions
                    .push(Action::SendTo(c, told.clone().into_bytes()));
            }
            ctx.send(&format!(
                "{}* {} is muted until {when}",
                act.prefix(),
                act.target
            ));
        },
    )
}

/// `/unban` and `/unmute`.
fn lift(call: &Call<'_>, ctx: &mut Ctx<'_>, kind: SanctionKind) -> Then {
    let (usage, word, done) = match kind {
        SanctionKind::Ban => ("/unban [#room] <user>", "banned", "unban"),
        SanctionKind::Mute => ("/unmute [#room] <user>", "muted", "unmute"),
    };
    with_act(call, ctx, usage, |act, call, ctx| {
        if !ctx
            .hub
            .lift(act.room, &act.target, kind, ctx.wall, ctx.actions)
        {
            let place = if act.lobby {
                String::new()
            } else {
                format!(" in {}", act.tag)
            };
            ctx.send(&format!("! {} is not {word}{place}", act.target));
            return;
        }
        log_act(done, call.user, &act, "");
        let line = format!("{}* {} is no longer {word}", act.prefix(), act.target);
        if kind == SanctionKind::Mute {
            let mut bytes = line.clone().into_bytes();
            bytes.push(b'\n');
            for c in ctx.hub.conns_of(&act.target) {
                ctx.actions.push(Action::SendTo(c, bytes.clone()));
            }
        }
        ctx.send(&line);
    })
}

pub(super) fn unban(call: &Call<'_>, ctx: &mut Ctx<'_>) -> Then {
    lift(call, ctx, SanctionKind::Ban)
}

pub(super) fn unmute(call: &Call<'_>, ctx: &mut Ctx<'_>) -> Then {
    lift(call, ctx, SanctionKind::Mute)
}

/// `/op` and `/deop`: the owner (or a server operator) names a room's
/// operators.
fn set_op(call: &Call<'_>, ctx: &mut Ctx<'_>, on: bool) -> Then {
    let usage = if on {
        "! usage: /op #room <user>"
    } else {
        "! usage: /deop #room <user>"
    };
    let (typed_room, rest) = first_word(call.args);
    let (typed, extra) = first_word(rest);
    if !typed_room.starts_with('#') || typed.is_empty() || !extra.is_empty() {
        ctx.send(usage);
        return Then::Stay;
    }
    let Some(name) = room_name(typed_room) else {
        ctx.send(super::commands::BAD_ROOM);
        return Then::Stay;
    };
    if name == LOBBY {
        ctx.send(
            "! server operators are named from the command line: neochat-server op add <name>",
        );
        return Then::Stay;
    }
    let Some(room) = ctx.hub.find_room(&name) else {
        ctx.send(&format!("! no such room #{name}"));
        return Then::Stay;
    };
    let tag = format!("#{name}");
    if ctx.hub.rank(room, call.user) < Rank::Owner {
        ctx.send(&format!("! only the owner of {tag} can do that"));
        return Then::Stay;
    }
    let Some(target) = ctx.hub.account(typed).map(str::to_owned) else {
        ctx.send(&format!("! no such user {typed}"));
        return Then::Stay;
    };
    if super::rooms::r_owner_is(ctx.hub, room, &target) {
        ctx.send(&format!("! {target} owns {tag}"));
        return Then::Stay;
    }
    if fold(&target) == fold(call.user) {
        ctx.send("! you cannot do that to yourself");
        return Then::Stay;
    }
    if !ctx
        .hub
        .set_room_op(room, &target, on, call.user, ctx.wall, ctx.actions)
    {
        ctx.send(&if on {
            format!("! {target} is already an operator of {tag}")
        } else {
            format!("! {target} is not an operator of {tag}")
        });
        return Then::Stay;
    }
    log::info!(
        target: "neochat::moderation",
        "{} by={} user={target} room={tag}",
        if on { "op" } else { "deop" },
        call.user
    );
    let line = if on {
        format!(
            "{tag} * {target} is now an operator of {tag} (by {})",
            call.user
        )
    } else {
        format!(
            "{tag} * {target} is no longer an operator of {tag} (by {})",
            call.user
        )
    };
    tell_room_and_actor(ctx, room, call.conn, line);
    Then::Stay
}

pub(super) fn op(call: &Call<'_>, ctx: &mut Ctx<'_>) -> Then {
    set_op(call, ctx, true)
}

pub(super) fn deop(call: &Call<'_>, ctx: &mut Ctx<'_>) -> Then {
    set_op(call, ctx, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_minutes_hours_or_days_up_to_a_year() {
        assert_eq!(duration("30m"), Some(Ok(1_800)));
        assert_eq!(duration("2h"), Some(Ok(7_200)));
        assert_eq!(duration("7d"), Some(Ok(604_800)));
        assert_eq!(duration("365d"), Some(Ok(MAX_DURATION)));
        for bad in [
            "-5m",
            "+5m",
            "0m",
            "366d",
            "99999d",
            "5",
            "5x",
            "5mm",
            "99999999999999999999d",
        ] {
            assert!(matches!(duration(bad), Some(Err(_))), "{bad}");
        }
        for reason in ["spam", "", "m5", "-", "--flood"] {
            assert_eq!(duration(reason), None, "{reason}");
        }
    }

    #[test]
    fn a_sanction_ends_on_the_next_whole_minute() {
        assert_eq!(ends_at(600, 60), 660);
        assert_eq!(ends_at(601, 60), 720);
        assert_eq!(ends_at(659, 60), 720);
    }
}
