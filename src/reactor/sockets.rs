//! The socket side of the reactor: accepting (with the per-address limits
//! and EMFILE handling), reading into the transport and pumping its input
//! to the session, writing through the transport, and closing in two
//! phases. Plus the listener and file-limit set-up.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use log::debug;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use std::cmp::Reverse;

use super::backlog::Work;
use super::conn::{Attempt, Closing, Conn};
use super::outbox::{Flushed, Outbox};
use super::{ACCEPT_RETRY, FULL_LINE, READS_PER_TURN, Server};
use crate::chat::session::{ConnId, Session};
use crate::limits::{Hit, Refusal, Source};
use crate::log_every::{Every, PERIOD as LOG_REPEATS_EVERY};
use crate::transport::{Input, Transport};

/// The throttles of the two accept lines (see `accept`).
static STALLED: Every = Every::new(LOG_REPEATS_EVERY);
static RESUMED: Every = Every::new(LOG_REPEATS_EVERY);

impl Server {
    // ---- accepting ----

    pub(super) fn accept(&mut self, which: usize, now: Instant) {
        while self.backlog.may(Work::Accept) {
            let Some(listener) = self.listeners.get(which) else {
                return;
            };
            match listener.accept() {
                Ok((stream, peer)) => {
                    // Said only after the pause was, and at most once a
                    // minute; a line held back is said at a later accept.
                    if self.accept_stall_logged
                        && let Some(left_out) = RESUMED.check()
                    {
                        self.accept_stall_logged = false;
                        log::info!(
                            "accepting connections again{}",
                            crate::log_every::suffix(left_out)
                        );
                    }
                    self.admit(stream, peer, now);
                }
                // Drained: the next connection brings a new event.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.backlog.unused(Work::Accept);
                    return;
                }
                // The peer gave up in the backlog, or a signal: go on.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) =>
                {
                    continue;
                }
                // EMFILE, ENFILE, ENOBUFS, ENOMEM...: pending connections
                // stay in the backlog and, edge-triggered, bring no new
                // event, so retry on a timer rather than wait forever.
                Err(e) => {
                    // Near the descriptor limit this flaps with every
                    // close: one line a minute says it goes on. A line
                    // held back is said at a later retry, so the last line
                    // logged never says "accepting again" for long while
                    // accepts are paused.
                    if !self.accept_stall_logged
                        && let Some(left_out) = STALLED.check()
                    {
                        self.accept_stall_logged = true;
                        log::warn!(
                            "accept failed ({e}); pausing accepts, {} connections open{}",
                            self.conns.len(),
                            crate::log_every::suffix(left_out)
                        );
                    }
                    self.accept_retry = Some(now + ACCEPT_RETRY);
                    return;
                }
            }
        }
        // More may wait: edge-triggered, no new event would say so.
        self.accept_more = true;
    }

    pub(super) fn admit(&mut self, mut stream: TcpStream, peer: SocketAddr, now: Instant) {
        if self.conns.len() >= self.config.max_clients {
            // Best effort: the line fits any fresh socket buffer. (A TLS
            // client cannot read it; it sees the connection close.)
            let _ = (&stream).write(FULL_LINE);
            self.warn_limit(Hit::ServerFull, Source::of(peer.ip()), now);
            return;
        }
        let id = ConnId {
            key: self.conns.vacant_key(),
            serial: self.next_serial,
        };
        let admission = match self.limits.admit(peer.ip(), id) {
            Ok(admitted) => {
                if let Some(victim) = admitted.evict {
                    self.evict(victim, now);
                }
                admitted.admission
            }
            Err(refusal) => {
                // Refused before any state is kept for it: one line, best
                // effort, and the socket is closed.
                let _ = (&stream).write(refusal.line());
                self.warn_limit(refusal.hit(), Source::of(peer.ip()), now);
                return;
            }
        };
        if let Err(e) = stream.set_nodelay(true) {
            debug!("{peer}: set_nodelay: {e}");
        }
        // A client that vanished without closing (a phone that lost its
        // network) is found out within about two minutes.
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(Duration::from_secs(60))
            .with_interval(Duration::from_secs(10))
            .with_retries(6);
        if let Err(e) = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive) {
            debug!("{peer}: keepalive: {e}");
        }
        let entry = self.conns.vacant_entry();
        debug_assert_eq!(entry.key(), id.key, "nothing was added since");
        self.next_serial += 1;
        if let Err(e) =
            self.poll
                .registry()
                .register(&mut stream, Token(id.key), Interest::READABLE)
        {
            crate::warn_every!(LOG_REPEATS_EVERY, "{peer}: cannot register connection: {e}");
            let mut admission = admission;
            self.limits.release(&mut admission);
            return;
        }
        self.ledger.open(id.key);
        let local = peer.ip().is_loopback() || is_mapped_loopback(peer.ip());
        let proxied = self.config.proxy_from.iter().any(|c| c.contains(peer.ip()));
        let offload = self.crypto.is_some();
        entry.insert(Conn {
            stream,
            id,
            peer,
            transport: {
                let mut transport = Transport::new(local, proxied);
                transport.set_offload(offload);
                transport
            },
            session: Session::new(id, now, &self.chat.config),
            out: Outbox::default(),
            interest: Interest::READABLE,
            closing: None,
            reason: "",
            dirty: false,
            lazy: false,
            held_out: false,
            entering: true,
            again: false,
            job: None,
            paced: false,
            deferred: false,
            input_paused: false,
            admission,
            attempt: None,
            transfer: None,
        });
        debug!("conn {}: open from {peer}", id.key);
        // The login deadline counts from accept: a half-done TLS handshake
        // or a silent client is held no longer than anybody else.
        if let Some(deadline) = now.checked_add(self.config.login_timeout) {
            self.login_deadlines.push_back((deadline, id));
        }
        // Entries of closed connections wait for their deadline; under a
        // fast connect/close churn, drop them before they pile up.
        if self.login_deadlines.len() > 2 * self.conns.len() + 1024 {
            let conns = &self.conns;
            self.login_deadlines
                .retain(|(_, id)| conns.get(*id).is_some());
        }
        // The client may have spoken already; if not, the transport sets
        // its 0.3 s deadline.
        self.read(id.key, now);
    }

    // ---- reading ----

    /// Reads and handles input until the socket is drained, the session
    /// wants no more, or the connection has had its share of this turn.
    /// Input the transport already holds (after a password check, or at a
    /// deadline) is handled first.
    pub(super) fn read(&mut self, key: usize, now: Instant) {
        for round in 0..READS_PER_TURN {
            let Some(conn) = self.conns.at_mut(key) else {
                return;
            };
            if conn.closing == Some(Closing::Draining) {
                self.drain_input(key);
                return;
            }
            if conn.closing.is_some() {
                return;
            }
            let id = conn.id;
            // An upload's body is read a quarter of a MiB a turn: a chat
            // line waits behind at most that much decrypting and copying.
            if round >= TRANSFER_READS && conn.transfer.is_some() {
                self.read_again(id);
                return;
            }
            // Only chatting users broadcast; logins are never held up.
            // While anyone is held, others queue behind them.
            let held =
                !(self.pacer.has_room() && self.paced.is_empty() && self.paced_back.is_empty());
            if held && conn.session.is_chatting() {
                // Readers' output is growing too fast: this input waits
                // until the turn's output is written and the pacer refills.
                if !conn.paced {
                    conn.paced = true;
                    if round == 0 {
                        self.paced.push(id);
                    } else {
                        self.paced_back.push(id);
                    }
                }
                return;
            }
            // The socket first, even when only a deadline brought us here:
            // a ClientHello already in the kernel must not be taken for a
            // silent client.
            let mut drained = !conn.wants_bytes();
            // Remember a pause for our own output, so that the flush that
            // ends it reads again (no new edge may come).
            conn.input_paused |= conn.transport.input_paused();
            if !drained {
                match conn.stream.read(&mut self.scratch) {
                    // The peer finished sending; a last partial line counts.
                    Ok(0) => conn.transport.receive_eof(),
                    Ok(n) => conn.transport.receive(&self.scratch[..n]),
                    // Drained: wait for the next edge.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => drained = true,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    // Reset and friends: nothing more can be said to it.
                    Err(e) => {
                        debug!("conn {key}: read error: {e}");
                        self.mark_closing(id, Closing::Now, "read error");
                        return;
                    }
                }
            }
            // Input the transport holds (after a password check, or at a
            // deadline) is handled even when nothing new arrived.
            self.pump(key, now);
            // Records to open (the framing has taken what came back last),
            // for a worker.
            self.ship_crypto(key, true);
            if drained {
                return;
            }
        }
        // Still readable: come back after the others had their turn.
        if let Some(id) = self.conns.at(key).map(|c| c.id) {
            self.read_again(id);
        }
    }

    /// Reads `id` in the next turn without waiting for an event; once,
    /// however often it is asked in a turn (a connection on the list twice
    /// would get twice its share, and then again each turn).
    pub(super) fn read_again(&mut self, id: ConnId) {
        if let Some(conn) = self.conns.get_mut(id)
            && !conn.again
        {
            conn.again = true;
            self.again.push(id);
        }
    }

    /// Hands what the transport has to the session (lines, while it wants
    /// them) or to the reactor (a deadline, a proxied address, a close),
    /// then carries out the session's actions, at least every
    /// [`PUMP_BATCH`] lines: a read of 64 KiB of `/who` is thousands of
    /// answers, which must meet the output limits as they are made, not
    /// all pile up first.
    pub(super) fn pump(&mut self, key: usize, now: Instant) {
        loop {
            let Some(conn) = self.conns.at_mut(key) else {
                return;
            };
            if conn.closing.is_some() {
                return;
            }
            let id = conn.id;
            let mut ctx = self.chat.ctx(now);
            let mut next = None;
            let mut batch = 0;
            while conn.takes_input() {
                if batch == PUMP_BATCH {
                    next = Some(Next::Batch);
                    break;
                }
                batch += 1;
                let Some(input) = conn.transport.next_input(now, &self.transport) else {
                    break;
                };
                match input {
                    Input::Start => conn.session.start(&mut ctx),
                    Input::Line(line) => conn.session.handle_line(line, &mut ctx),
                    Input::TooLong => conn.session.handle_too_long(&mut ctx),
                    Input::End => conn.session.handle_eof(&mut ctx),
                    Input::Deadline(at) => {
                        self.transport_deadlines.push(Reverse((at, id)));
                    }
                    Input::Client(addr) => {
                        next = Some(Next::Client(addr));
                        break;
                    }
                    Input::Close(reason) => {
                        next = Some(Next::Close(reason));
                        break;
                    }
                    Input::File(request) => {
                        next = Some(Next::File(request));
                        break;
                    }
                    Input::Body(bytes) => {
                        next = Some(Next::Body(bytes));
                        break;
                    }
                    Input::BodyDone => {
                        next = Some(Next::BodyDone);
                        break;
                    }
                }
            }
            // A TLS handshake answer, a pong or an HTTP answer: output that
            // did not come from the session.
            if conn.transport.has_pending() && !conn.dirty {
                conn.dirty = true;
                self.dirty.push(key);
            }
            self.apply(id);
            match next {
                None => return,
                // Carried out; the session's next lines come now.
                Some(Next::Batch) => {}
                Some(Next::Client(client)) => self.rehome(id, client, now),
                Some(Next::File(request)) => self.file_request(id, *request, now),
                Some(Next::Body(bytes)) => self.upload_body(id, bytes),
                Some(Next::BodyDone) => self.upload_done(id),
                Some(Next::Close(reason)) => {
                    debug!("conn {key}: {reason}");
                    self.mark_closing(id, Closing::AfterFlush, reason);
                    return;
                }
            }
        }
    }

    /// A trusted proxy named the real client: from now on the limits and
    /// the log see that address.
    pub(super) fn rehome(&mut self, id: ConnId, client: SocketAddr, now: Instant) {
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        let ip = match client.ip() {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        // The proxy's own address stops counting first: whatever happens
        // next, and so that a full pool cannot evict this very connection.
        self.limits.release(&mut conn.admission);
        let evict = match self.limits.admit(ip, id) {
            Ok(admitted) => {
                conn.admission = admitted.admission;
                debug!("conn {}: {} is a proxy for {ip}", id.key, conn.peer);
                conn.peer = SocketAddr::new(ip, client.port());
                admitted.evict
            }
            Err(refusal) => {
                conn.transport.refuse(refusal.line());
                if !conn.dirty {
                    conn.dirty = true;
                    self.dirty.push(id.key);
                }
                self.warn_limit(refusal.hit(), Source::of(ip), now);
                self.mark_closing(id, Closing::AfterFlush, "refused by a limit");
                return;
            }
        };
        if let Some(victim) = evict {
            self.evict(victim, now);
        }
    }

    /// The pending pool was full and a newcomer from another address took
    /// this connection's place: it is told the server is busy and closed.
    pub(super) fn evict(&mut self, victim: ConnId, now: Instant) {
        let Some(conn) = self.conns.get_mut(victim) else {
            return;
        };
        if conn.closing.is_some() {
            return;
        }
        let source = conn.admission.source;
        if conn.session.is_started() {
            self.queue(victim, Refusal::Busy.line());
            self.mark_closing(
                victim,
                Closing::AfterFlush,
                "evicted from the pending-login pool",
            );
        } else {
            // Nothing was said yet (a TLS handshake, or a silent client):
            // there is no form to answer it in.
            self.mark_closing(victim, Closing::Now, "evicted from the pending-login pool");
        }
        self.warn_limit(Hit::Evicted, source, now);
    }

    /// The socket reports an error (a reset, usually). A session that reads
    /// would find out from `read`; one paused for a password check would
    /// not, and would hold its slot until bcrypt is done.
    pub(super) fn on_socket_error(&mut self, key: usize) {
        if let Some(conn) = self.conns.at(key)
            && conn.closing.is_none()
            && !conn.session.wants_input()
        {
            let id = conn.id;
            self.mark_closing(id, Closing::Now, "connection error");
        }
    }

    // ---- writing ----

    /// Writes what `key` has queued; adjusts WRITABLE interest to match.
    pub(super) fn flush(&mut self, key: usize) {
        let Some(conn) = self.conns.at_mut(key) else {
            return;
        };
        // Written now: no longer held for the backlog's slice, and once a
        // chatting session's first output (its welcome) is out, what it
        // gets is never held again.
        conn.held_out = false;
        if conn.session.is_chatting() {
            conn.entering = false;
        }
        if conn.closing == Some(Closing::Now) {
            return;
        }
        let flushed = conn.transport.flush(&mut conn.stream, &mut conn.out);
        self.ledger.set(key, conn.unsent());
        let want = match flushed {
            Ok(Flushed::All) => Interest::READABLE,
            Ok(Flushed::Partly) => Interest::READABLE | Interest::WRITABLE,
            Err(e) => {
                debug!("conn {key}: write error: {e}");
                let id = conn.id;
                self.mark_closing(id, Closing::Now, "write error");
                return;
            }
        };
        if conn.closing == Some(Closing::AfterFlush) && conn.all_written() {
            self.doomed.push(conn.id);
        }
        let downloading = conn.transfer.is_some();
        // Reading stopped while its own answers piled up; input may be
        // waiting in the kernel with no new edge to announce it.
        if conn.input_paused && !conn.transport.input_paused() {
            conn.input_paused = false;
            if conn.closing.is_none() && !conn.again {
                conn.again = true;
                self.again.push(conn.id);
            }
        }
        if want != conn.interest {
            // `reregister` replaces the set, so pass all of it.
            match self
                .poll
                .registry()
                .reregister(&mut conn.stream, Token(key), want)
            {
                Ok(()) => conn.interest = want,
                Err(e) => {
                    debug!("conn {key}: reregister: {e}");
                    let id = conn.id;
                    self.mark_closing(id, Closing::Now, "reregister failed");
                }
            }
        }
        if downloading {
            self.feed(key);
        }
        // A bulk answer to seal, for a worker.
        self.ship_crypto(key, false);
    }

    // ---- closing ----

    /// Removes a connection marked closing, once it may go: at once, or
    /// when its output is written and the peer has closed its side (or the
    /// linger deadline passed).
    pub(super) fn reap(&mut self, id: ConnId, now: Instant) {
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        match conn.closing {
            Some(Closing::Now) => {}
            Some(Closing::AfterFlush) if conn.all_written() => {
                // Our last byte is queued in the kernel: send FIN after it,
                // then wait for the peer's FIN while dropping its input.
                if let Err(e) = conn.stream.shutdown(std::net::Shutdown::Write) {
                    debug!("conn {}: shutdown: {e}", id.key);
                }
                conn.closing = Some(Closing::Draining);
                self.drain_input(id.key);
                return;
            }
            _ => return,
        }
        let Some(mut conn) = self.conns.remove(id) else {
            return;
        };
        if let Some(transfer) = conn.transfer.take() {
            self.end_transfer(*transfer);
        }
        self.ledger.set(id.key, 0);
        self.limits.release(&mut conn.admission);
        if let Some(Attempt::Login(name, _)) = conn.attempt.take() {
            self.limits.login_abandoned(&name);
        }
        deregister(self.poll.registry(), &mut conn.stream);
        debug!("conn {}: closed ({}): {}", id.key, conn.peer, conn.reason);
        conn.session.handle_closed(&mut self.chat.ctx(now));
        self.apply(id);
        if self.accept_retry.is_some() {
            // A descriptor just came free.
            self.accept_retry = Some(now);
        }
    }

    /// Reads and drops whatever a closing peer still sends; once it has
    /// closed its side (or errs), the connection can go.
    pub(super) fn drain_input(&mut self, key: usize) {
        let Some(conn) = self.conns.at_mut(key) else {
            return;
        };
        for _ in 0..READS_PER_TURN {
            match conn.stream.read(&mut self.scratch) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        // Closed, failed, or still sending after a turn's worth: done.
        conn.closing = Some(Closing::Now);
        self.doomed.push(conn.id);
    }
}

/// Reads per turn of a connection uploading a file.
const TRANSFER_READS: usize = 4;

/// Lines handed to a session before its actions are carried out.
const PUMP_BATCH: usize = 64;

/// Why [`Server::pump`] stopped taking input before the transport ran dry.
enum Next {
    /// [`PUMP_BATCH`] inputs were handled.
    Batch,
    /// A trusted proxy named the real client.
    Client(SocketAddr),
    /// The transport closes the connection.
    Close(&'static str),
    /// A request of the files routes.
    File(Box<crate::transport::http::FileRequest>),
    /// A piece of an upload's body.
    Body(Vec<u8>),
    /// An upload's body is complete.
    BodyDone,
}

/// `::ffff:127.0.0.1` and the like: an IPv4 loopback peer on a dual-stack
/// socket.
pub(super) fn is_mapped_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
        IpAddr::V4(_) => false,
    }
}

pub(super) fn deregister(registry: &Registry, source: &mut impl mio::event::Source) {
    if let Err(e) = registry.deregister(source) {
        debug!("deregister: {e}");
    }
}

/// The listen backlog for a server of `max_clients`: room for every client
/// to connect at once. The kernel caps it at `net.core.somaxconn` (4,096
/// by default since Linux 5.4). Logins get a quarter of the loop
/// (`backlog.rs`), so during a storm new connections wait in this queue; a
/// queue that overflows drops the handshakes, and every client dropped
/// retries after
/// 1, 3, 7 s... (SYN retransmits), so 10,000 clients reconnecting at
/// once with a queue of 1,024 took one to three seconds longer, and the
/// retransmits arrived in bursts the kernel processed in one go.
pub(super) fn listen_backlog(max_clients: usize) -> i32 {
    i32::try_from(max_clients.saturating_add(64))
        .unwrap_or(i32::MAX)
        .max(1024)
}

/// A non-blocking listener with a real backlog (mio's own `bind` uses 128).
pub(super) fn listen(addr: SocketAddr, backlog: i32) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Grows this process's descriptor table, once, to hold `n` descriptors
/// (capped at the open-file limit). The kernel grows the table on demand,
/// doubling it, and in a process with several threads each growth waits
/// for an RCU grace period: 10-15 ms inside `accept`, with the loop
/// blocked, at 256, 512, ... 8,192 descriptors (`expand_files` in
/// `alloc_fd`). A login storm met all six of them on its way up, and they
/// were most of the chat's p99 during it (BENCHMARKS.md, "Token logins").
/// Made at start, the growth costs one grace period and nothing later;
/// the table never shrinks. 8 bytes a descriptor: 128 KiB for 16,384.
pub(super) fn reserve_descriptors(any: &impl std::os::fd::AsRawFd, n: usize) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return;
    }
    let top = (n as u64).min(lim.rlim_cur).min(1 << 20);
    let Ok(top) = libc::c_int::try_from(top) else {
        return;
    };
    if top < 2 {
        return;
    }
    // A duplicate of `any` at the lowest free number from `top - 1` up:
    // the table grows to hold it. F_DUPFD never replaces an open one.
    // SAFETY: duplicating a descriptor we own makes a new one, which is
    // closed at once and used by nothing else.
    let fd = unsafe { libc::fcntl(any.as_raw_fd(), libc::F_DUPFD_CLOEXEC, top - 1) };
    if fd >= 0 {
        // SAFETY: `fd` is the duplicate made above, owned by nobody else.
        unsafe { libc::close(fd) };
    } else {
        debug!(
            "could not reserve {top} descriptors: {}",
            io::Error::last_os_error()
        );
    }
}

/// Raises the soft limit on open files to the hard limit, so that
/// `--max-clients` can be reached. Returns the new soft limit.
pub fn raise_fd_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit; the call only reads it.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(io::Error::last_os_error());
        }
        lim = raised;
    }
    Ok(lim.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of this process's descriptor table, from the kernel.
    fn fd_table_size() -> usize {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("FDSize:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap()
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn the_descriptor_table_is_made_big_enough_at_once() {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `lim` is a valid, writable rlimit.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        let want = (lim.rlim_cur as usize).min(3000);
        let probe = std::fs::File::open("/proc/self/status").unwrap();
        reserve_descriptors(&probe, want);
        assert!(
            fd_table_size() >= want,
            "table {} < {want}",
            fd_table_size()
        );
        // Nothing was left open: the next descriptor is a low one.
        let next = std::fs::File::open("/proc/self/status").unwrap();
        use std::os::fd::AsRawFd;
        assert!((next.as_raw_fd() as usize) < want - 1);
    }
}
