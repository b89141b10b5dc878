//! Carrying out what sessions ask: sending, broadcasting (with the output
//! limits and the pacer), auth jobs through the limits, auth results back
//! into sessions, and marking connections closing.
//!
//! Two bounds hold output: `--max-output` per connection (a reader that
//! stopped is cut off) and `--max-total-output` for all of them together
//! (the connections holding the most are cut off first, like Redis's
//! `maxmemory-clients`). Every push adds to the [`Ledger`](super::ledger)
//! and every flush and close corrects it, so the total is always known
//! without a walk over the connections.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use log::{debug, warn};

use super::audit::{self, Event};
use super::backlog::Work;
use super::conn::{Attempt, Closing, Conn};
use super::{LINGER, Server};
use crate::auth::{Done, Job};
use crate::chat::hub::RoomId;
use crate::chat::session::{Action, AuthOutcome, AuthRequest, ConnId};
use crate::limits::{Hit, LoginAnswer, Source};
use crate::store::ops::{Answer, Op, Reply};

/// The connection of actions that come from no session (what the admin
/// subcommands changed): none, so an [`Action::Send`] would go nowhere.
pub(super) const NOBODY: ConnId = ConnId {
    key: usize::MAX,
    serial: u64::MAX,
};

impl Server {
    // ---- carrying out what sessions ask ----

    /// Carries out the actions a handler of `id`'s session pushed.
    pub(super) fn apply(&mut self, id: ConnId) {
        let mut actions = std::mem::take(&mut self.chat.actions);
        for action in actions.drain(..) {
            match action {
                Action::Send(line) => self.queue(id, &line),
                Action::ToRoom { room, except, line } => self.broadcast(room, except, &line),
                Action::Notice { room, except, line } => self.notify(room, except, &line),
                Action::Store(op) => self.store_op(op),
                Action::SendTo(to, line) => self.queue(to, &line),
                Action::Kick(to, line) => {
                    self.queue(to, &line);
                    self.mark_closing(to, Closing::AfterFlush, "closed by the server");
                }
                Action::Auth(request) => self.start_auth(id, request),
                Action::Close(reason) => self.mark_closing(id, Closing::AfterFlush, reason),
                Action::Upload { slot } => self.upload_slot(id, &slot),
            }
        }
        // Hand the (empty) allocation back for the next handler.
        self.chat.actions = actions;
    }

    /// Checks the limits for an account operation, then hands it to the
    /// workers; a refusal is answered on the loop, with no job.
    pub(super) fn start_auth(&mut self, id: ConnId, request: AuthRequest) {
        let now = Instant::now();
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        let admission = conn.admission;
        let (attempt, refusal) = match &request {
            AuthRequest::Login { name, .. } | AuthRequest::ChangePassword { name, .. } => {
                match self.limits.check_login(&admission, name, now) {
                    Ok(()) => {
                        self.limits.login_started(&admission, name, now);
                        (Attempt::Login(name.clone(), now), None)
                    }
                    Err(t) => {
                        let outcome = AuthOutcome::TooManyAttempts {
                            retry_secs: t.secs(),
                        };
                        (Attempt::Login(name.clone(), now), Some((t.hit, outcome)))
                    }
                }
            }
            AuthRequest::Register { name, .. } => {
                // An address that guessed (or probed names) too much may
                // not learn whether one more name is taken.
                if let Err(t) = self.limits.check_source(&admission, now) {
                    let outcome = AuthOutcome::TooManyAttempts {
                        retry_secs: t.secs(),
                    };
                    (Attempt::Register(name.clone()), Some((t.hit, outcome)))
                } else if self.limits.reserve_registration(&admission, now) {
                    (Attempt::Register(name.clone()), None)
                } else {
                    let outcome = AuthOutcome::TooManyRegistrations;
                    (
                        Attempt::Register(name.clone()),
                        Some((Hit::Registrations, outcome)),
                    )
                }
            }
        };
        if let Some((hit, outcome)) = refusal {
            self.warn_limit(hit, admission.source, now);
            self.local_results.push_back(Done {
                conn: id,
                outcome,
                known_account: false,
            });
            return;
        }
        let cancel = Arc::new(AtomicBool::new(false));
        conn.job = Some(cancel.clone());
        conn.attempt = Some(attempt);
        let job = Job {
            conn: id,
            request,
            cancel,
        };
        if self.auth.submit(job).is_err() {
            conn.job = None;
            match conn.attempt.take() {
                Some(Attempt::Register(_)) => self.limits.registration_failed(&admission),
                Some(Attempt::Login(name, started)) => {
                    self.limits.login_answered(
                        &admission,
                        &name,
                        LoginAnswer::NotChecked,
                        started,
                        now,
                    );
                }
                None => {}
            }
            self.warn_limit(Hit::AuthQueue, admission.source, now);
            self.local_results.push_back(Done {
                conn: id,
                outcome: AuthOutcome::Busy,
                known_account: false,
            });
            return;
        }
        // A newcomer must not evict it while the check runs.
        self.limits.set_checking(&admission, true);
    }

    /// Logs a limit hit at warn, at most once a minute per source and kind:
    /// an attack must not flood the log.
    pub(super) fn warn_limit(&mut self, hit: Hit, source: Source, now: Instant) {
        if self.limits.should_warn(hit, source, now) {
            warn!("{source}: {hit} (logged at most once a minute per address and limit)");
        } else {
            debug!("{source}: {hit}");
        }
    }

    /// Appends a line to one live connection's output.
    pub(super) fn queue(&mut self, id: ConnId, bytes: &[u8]) {
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        if conn.closing.is_some() {
            return;
        }
        match push_output(conn, bytes, self.config.max_output, &mut self.dirty) {
            Ok(Pushed::Appended) => self.ledger.add(id.key, bytes.len()),
            Ok(Pushed::AfterFlush) => self.ledger.set(id.key, conn.unsent()),
            Err(refused) => self.cut_off(id, refused),
        }
        if self.ledger.total() > self.config.max_total_output {
            self.shed_output();
        }
    }

    /// Appends one line to every connection in `room` but `except`: the
    /// bytes were formatted once by the session; this is only copies (and
    /// one addition each to the ledger), one per member online, whatever
    /// the size of the server.
    pub(super) fn broadcast(&mut self, room: RoomId, except: Option<ConnId>, bytes: &[u8]) {
        self.fan_out(room, except, bytes, false);
    }

    /// A line to a room that may be written in a later turn
    /// ([`Action::Notice`]): its readers go on the `lazy` list, written a
    /// slice at a time after the turn's other output.
    pub(super) fn notify(&mut self, room: RoomId, except: Option<ConnId>, bytes: &[u8]) {
        self.fan_out(room, except, bytes, true);
    }

    fn fan_out(&mut self, room: RoomId, except: Option<ConnId>, bytes: &[u8], lazy: bool) {
        let readers = self.chat.hub.room_conns(room);
        self.pacer.set_readers(readers.len());
        self.pacer.spend(bytes.len());
        let limit = self.config.max_output;
        // Rare, so no allocation unless someone is over the limit.
        let mut over = Vec::new();
        let ledger = &mut self.ledger;
        for &id in readers {
            if Some(id) == except {
                continue;
            }
            let Some(conn) = self.conns.get_mut(id) else {
                continue;
            };
            if conn.closing.is_some() || !conn.session.is_chatting() {
                continue;
            }
            let pushed = if lazy {
                push_lazily(conn, bytes, limit, &mut self.lazy)
            } else {
                push_output(conn, bytes, limit, &mut self.dirty)
            };
            match pushed {
                Ok(Pushed::Appended) => ledger.add(id.key, bytes.len()),
                Ok(Pushed::AfterFlush) => ledger.set(id.key, conn.unsent()),
                Err(refused) => over.push((conn.id, refused)),
            }
        }
        for (id, refused) in over {
            self.cut_off(id, refused);
        }
        // Checked once the line is everywhere: the total may pass the bound
        // by this one line per reader, as each reader's own limit may.
        if self.ledger.total() > self.config.max_total_output {
            self.shed_output();
        }
    }

    /// The unsent output of all connections passed `--max-total-output`:
    /// cuts off the connections holding the most until it is back under.
    ///
    /// The biggest holder is first handed what its socket takes now, as
    /// before a reader is cut off for its own limit: output is written at
    /// the end of a turn, so a reader that reads may hold a burst for a
    /// moment. If it took something it is spared for now, and the search
    /// starts again; if it still holds the most when found again in this
    /// pass, or took nothing (it stopped reading), it is cut off.
    ///
    /// Each step of the search reads one array ([`Ledger::largest`]), and
    /// runs only past the bound: in the common case of an attack, once per
    /// push that crosses it, freeing the biggest backlog there is.
    pub(super) fn shed_output(&mut self) {
        let bound = self.config.max_total_output;
        self.ledger.begin_pass();
        while self.ledger.total() > bound {
            let Some(key) = self.ledger.largest() else {
                return;
            };
            let before = self.ledger.held(key);
            if !self.ledger.mark(key) {
                self.flush(key);
                if self.ledger.held(key) < before {
                    continue;
                }
            }
            if let Some(conn) = self.conns.at(key) {
                let (id, source) = (conn.id, conn.admission.source);
                debug!(
                    "conn {key}: {before} bytes unsent, {} in all: cut off",
                    self.ledger.total()
                );
                self.warn_limit(Hit::TotalOutput, source, Instant::now());
                self.mark_closing(id, Closing::Now, "total output limit");
            }
            // Whatever happened above, this key no longer counts.
            self.ledger.set(key, 0);
        }
    }

    /// A consumer that stopped reading: drop it and its buffer at once.
    pub(super) fn cut_off(&mut self, id: ConnId, refused: Refused) {
        if refused == Refused::WriteFailed {
            debug!("conn {}: write error while making room", id.key);
            self.mark_closing(id, Closing::Now, "write error");
            return;
        }
        if let Some(conn) = self.conns.get(id) {
            let source = conn.admission.source;
            self.warn_limit(Hit::SlowConsumer, source, Instant::now());
        }
        self.mark_closing(id, Closing::Now, "slow consumer");
    }

    pub(super) fn mark_closing(&mut self, id: ConnId, how: Closing, reason: &'static str) {
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        if conn.closing == Some(Closing::Now) {
            return;
        }
        // A connection on its way out holds no place in the pending pool.
        self.limits.not_pending(&conn.admission);
        // Nobody will hear the answer: do not spend a bcrypt on it.
        if let Some(cancel) = conn.job.take() {
            cancel.store(true, Ordering::Relaxed);
        }
        if how == Closing::Now {
            conn.out.discard();
            // Its buffers go with it at the end of the turn.
            self.ledger.set(id.key, 0);
        } else if conn.closing.is_none() {
            conn.transport.finish();
            if !conn.dirty {
                conn.dirty = true;
                self.dirty.push(id.key);
            }
            self.linger_deadlines
                .push_back((Instant::now() + LINGER, id));
        }
        conn.closing = Some(how);
        conn.reason = reason;
        self.doomed.push(id);
    }

    /// Hands an op to the store thread (which never makes the loop wait).
    pub(super) fn store_op(&mut self, op: Op) {
        // A token check from an address over its failed logins is refused
        // without a read, as a password would be without a bcrypt.
        if let Op::CheckToken { conn, .. } = &op
            && let Some(admission) = self.conns.get(*conn).map(|c| c.admission)
        {
            let now = Instant::now();
            if let Err(t) = self.limits.check_source(&admission, now) {
                self.warn_limit(t.hit, admission.source, now);
                let reply = Reply::TokenThrottled {
                    retry_secs: t.secs(),
                };
                self.store_refused.push_back(Answer { conn: *conn, reply });
                return;
            }
        }
        let reader = op.failed_reply(|| {
            crate::store::Error::new(crate::store::ErrorKind::Database, "store busy")
        });
        if let Err(refused) = self.store.send(op) {
            crate::warn_every!(
                crate::log_every::PERIOD,
                "the store thread refused an op ({refused:?}): it is behind the disk, \
                 or stopped; a message is delivered but not stored"
            );
            // A read that will never be answered must not hang its
            // connection: it is answered here, with an error.
            if let Some((conn, reply)) = reader {
                self.store_refused.push_back(Answer { conn, reply });
            }
        }
    }

    /// Hands the store thread's answers to the sessions that asked.
    pub(super) fn drain_store(&mut self, now: Instant) {
        loop {
            if !self.backlog.may(Work::Store) {
                self.answers_left = true;
                break;
            }
            let Some(answer) = self
                .store
                .try_recv()
                .or_else(|| self.store_refused.pop_front())
            else {
                self.backlog.unused(Work::Store);
                break;
            };
            let id = answer.conn;
            // Files' answers go to the reactor's part, not to a session
            // (an upload is announced even if its client went away).
            let reply = match answer.reply {
                Reply::FileRecorded(result) => {
                    self.file_recorded(id, result);
                    continue;
                }
                Reply::File(result) => {
                    self.file_found(id, result);
                    continue;
                }
                other => other,
            };
            let Some(conn) = self.conns.get_mut(id).filter(|c| c.closing.is_none()) else {
                continue;
            };
            if let Reply::TokenAccount(Ok(found)) = &reply {
                match found {
                    Some(name) => audit::record(Event::TokenLogin, conn.peer, name),
                    None => {
                        audit::record(Event::TokenFailed, conn.peer, "");
                        self.limits.token_failed(&conn.admission, now);
                    }
                }
            }
            conn.session
                .handle_store_reply(reply, &mut self.chat.ctx(now));
            self.answered(id);
        }
        // What an operator changed with the admin subcommands.
        while let Some(change) = self.store.try_change() {
            self.chat.hub.apply_change(change, &mut self.chat.actions);
            self.apply(NOBODY);
        }
    }

    /// A session got the answer it waited for (a password check, a read of
    /// the store): once Chatting it holds no place in the pending pool; its
    /// actions are carried out; and its input, held meanwhile, is read.
    fn answered(&mut self, id: ConnId) {
        if let Some(conn) = self.conns.get(id)
            && conn.session.is_chatting()
        {
            self.limits.not_pending(&conn.admission);
        }
        self.apply(id);
        self.read_again(id);
    }

    pub(super) fn drain_results(&mut self, now: Instant) {
        loop {
            if !self.backlog.may(Work::Auth) {
                self.answers_left = true;
                break;
            }
            let Some(done) = self
                .local_results
                .pop_front()
                .or_else(|| self.auth.try_recv())
            else {
                self.backlog.unused(Work::Auth);
                break;
            };
            let id = done.conn;
            // A result for a connection that is gone (or whose slot holds a
            // newer one) must not log anybody in.
            let Some(conn) = self.conns.get_mut(id).filter(|c| c.closing.is_none()) else {
                continue;
            };
            conn.job = None;
            self.limits.set_checking(&conn.admission, false);
            let peer = conn.peer;
            match (conn.attempt.take(), &done.outcome) {
                (Some(Attempt::Login(name, started)), outcome) => {
                    let answer = match outcome {
                        AuthOutcome::LoggedIn(shown) => {
                            audit::record(Event::LoggedIn, peer, shown);
                            LoginAnswer::LoggedIn
                        }
                        AuthOutcome::PasswordChanged => {
                            audit::record(Event::PasswordChanged, peer, &name);
                            LoginAnswer::LoggedIn
                        }
                        AuthOutcome::WrongCredentials => {
                            let known_account = done.known_account;
                            audit::record(Event::LoginFailed { known_account }, peer, &name);
                            if known_account {
                                LoginAnswer::WrongPassword
                            } else {
                                LoginAnswer::UnknownAccount
                            }
                        }
                        _ => LoginAnswer::NotChecked,
                    };
                    self.limits
                        .login_answered(&conn.admission, &name, answer, started, now);
                }
                (Some(Attempt::Register(_)), AuthOutcome::Registered(shown)) => {
                    audit::record(Event::Registered, peer, shown);
                }
                (Some(Attempt::Register(name)), AuthOutcome::NameTaken) => {
                    audit::record(Event::NameTaken, peer, &name);
                    self.limits.name_taken(&conn.admission, now);
                }
                (Some(Attempt::Register(_)), _) => {
                    self.limits.registration_failed(&conn.admission);
                }
                (None, _) => {}
            }
            conn.session
                .handle_auth_result(done.outcome, &mut self.chat.ctx(now));
            self.answered(id);
        }
    }
}

/// Appends to a connection's output and puts it on the dirty list; refused
/// if that would pass the output limit.
///
/// The limit is on output the peer has not taken. Output is normally
/// written once at the end of a turn, so a burst within one turn (many
/// senders at once) could pass the limit for a reader that keeps up. So
/// before refusing, hand the socket what it takes now: a reader that is
/// reading has room in its socket buffers; one that stopped has none, and
/// is refused.
pub(super) fn push_output(
    conn: &mut Conn,
    bytes: &[u8],
    limit: usize,
    dirty: &mut Vec<usize>,
) -> Result<Pushed, Refused> {
    let pushed = append(conn, bytes, limit)?;
    if !conn.dirty {
        conn.dirty = true;
        dirty.push(conn.id.key);
    }
    Ok(pushed)
}

/// [`push_output`] for a line that may wait ([`Action::Notice`]): the
/// connection goes on the `lazy` list, unless it is written this turn
/// anyway.
fn push_lazily(
    conn: &mut Conn,
    bytes: &[u8],
    limit: usize,
    lazy: &mut VecDeque<usize>,
) -> Result<Pushed, Refused> {
    let pushed = append(conn, bytes, limit)?;
    if !conn.dirty && !conn.lazy {
        conn.lazy = true;
        lazy.push_back(conn.id.key);
    }
    Ok(pushed)
}

fn append(conn: &mut Conn, bytes: &[u8], limit: usize) -> Result<Pushed, Refused> {
    if conn.out.push(bytes, limit) {
        return Ok(Pushed::Appended);
    }
    if conn
        .transport
        .flush(&mut conn.stream, &mut conn.out)
        .is_err()
    {
        return Err(Refused::WriteFailed);
    }
    if !conn.out.push(bytes, limit) {
        return Err(Refused::OverLimit);
    }
    Ok(Pushed::AfterFlush)
}

/// How output was queued, for the ledger.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Pushed {
    /// The bytes were appended: the connection holds that many more.
    Appended,
    /// Some output was written first to make room: count again.
    AfterFlush,
}

/// Why output could not be queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Refused {
    /// More than `--max-output` unsent: a slow consumer.
    OverLimit,
    /// Writing to make room failed: the peer is gone.
    WriteFailed,
}
