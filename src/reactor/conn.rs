//! A connection as the reactor holds it (socket, transport, session,
//! output, closing state, what the limits counted), and [`Conns`], the slab
//! of them with the one serial-checked lookup: a late event, auth result or
//! timer for a closed connection must never reach the stranger who got its
//! slot.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use mio::Interest;
use mio::net::TcpStream;
use slab::Slab;

use super::files::Transfer;
use super::outbox::Outbox;
use crate::chat::session::{ConnId, Session};
use crate::limits::Admission;
use crate::transport::Transport;

/// How a connection is closing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Closing {
    /// Write what is queued first (`/quit`, login timeout, end of input).
    AfterFlush,
    /// Everything is written and our side shut down; reading and dropping
    /// input until the peer closes too. Closing a socket with unread input
    /// sends a reset, which can destroy our last lines still in flight, so
    /// we linger like a web server does.
    Draining,
    /// Drop it now (socket error, output limit passed).
    Now,
}

pub(super) struct Conn {
    pub(super) stream: TcpStream,
    pub(super) id: ConnId,
    /// The client's address: the TCP peer, or the one a trusted proxy named.
    pub(super) peer: SocketAddr,
    pub(super) transport: Transport,
    pub(super) session: Session,
    pub(super) out: Outbox,
    pub(super) interest: Interest,
    pub(super) closing: Option<Closing>,
    /// Why it is closing, for the log.
    pub(super) reason: &'static str,
    /// Already on the `dirty` list.
    pub(super) dirty: bool,
    /// Already on the `lazy` list (output that may wait a turn or two).
    pub(super) lazy: bool,
    /// On the `held_out` list of backlog output: what a login's answer or
    /// an HTTP exchange made, written in the next turn's backlog slice.
    pub(super) held_out: bool,
    /// Not chatting yet, or its welcome not written yet: output made for
    /// it by backlog work is held (see `Server::hold_output`).
    pub(super) entering: bool,
    /// Already on the `again` list (read next turn without an event).
    pub(super) again: bool,
    /// Set to abandon this connection's auth job, if one is out.
    pub(super) job: Option<Arc<AtomicBool>>,
    /// On the `paced` list: its input waits for the pacer.
    pub(super) paced: bool,
    /// On the `deferred` list: not chatting yet, its input waits for a
    /// turn with room for it (see `Server::read_or_defer`).
    pub(super) deferred: bool,
    /// Reading stopped because the transport's own output piled up; the
    /// flush that drains it reads again.
    pub(super) input_paused: bool,
    /// What the limits counted for this connection.
    pub(super) admission: Admission,
    /// The job out, for the limits to count its result.
    pub(super) attempt: Option<Attempt>,
    /// A file upload or download under way on this (HTTP) connection.
    pub(super) transfer: Option<Box<Transfer>>,
}

impl Conn {
    /// Whether to read the socket: not while the session waits for a
    /// password check (its input stays in the kernel, bounded), nor after
    /// the end of input.
    pub(super) fn wants_bytes(&self) -> bool {
        !self.transport.eof()
            && !self.transport.input_paused()
            && self.transport.reading()
            && self.takes_input()
    }

    /// Whether input the transport holds is handed on now: not while the
    /// session waits for an answer, nor while an upload's last chunk waits
    /// for room in the files thread's queue.
    pub(super) fn takes_input(&self) -> bool {
        (!self.transport.is_chat() || self.session.wants_input()) && !self.transfer_blocked()
    }

    /// Nothing is left to write, at any layer.
    pub(super) fn all_written(&self) -> bool {
        self.out.is_empty() && !self.transport.has_pending()
    }

    /// Bytes not yet taken by the socket, at every layer: the session's
    /// lines and what the transport encoded (TLS records, WebSocket frames,
    /// HTTP answers).
    pub(super) fn unsent(&self) -> usize {
        self.out.pending() + self.transport.unsent()
    }
}

/// An auth job in flight, as the limits see it.
pub(super) enum Attempt {
    /// A login for this name (as typed), started then.
    Login(String, Instant),
    /// A registration of this name (as typed).
    Register(String),
}

/// The connections, by slab key.
pub(super) struct Conns {
    slab: Slab<Conn>,
}

impl Conns {
    pub(super) fn with_capacity(n: usize) -> Conns {
        Conns {
            slab: Slab::with_capacity(n),
        }
    }

    /// Connection `id`, if its slot still holds it.
    pub(super) fn get(&self, id: ConnId) -> Option<&Conn> {
        self.slab.get(id.key).filter(|c| c.id == id)
    }

    /// Connection `id`, if its slot still holds it.
    pub(super) fn get_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.slab.get_mut(id.key).filter(|c| c.id == id)
    }

    /// Whatever holds slot `key` now (for a mio event, whose token is the
    /// key: the socket registered there is this connection's own).
    pub(super) fn at(&self, key: usize) -> Option<&Conn> {
        self.slab.get(key)
    }

    pub(super) fn at_mut(&mut self, key: usize) -> Option<&mut Conn> {
        self.slab.get_mut(key)
    }

    pub(super) fn len(&self) -> usize {
        self.slab.len()
    }

    /// One past the highest key a connection can have now.
    pub(super) fn slots(&self) -> usize {
        self.slab.capacity()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }

    pub(super) fn iter_mut(&mut self) -> slab::IterMut<'_, Conn> {
        self.slab.iter_mut()
    }

    /// The key the next connection will get.
    pub(super) fn vacant_key(&self) -> usize {
        self.slab.vacant_key()
    }

    pub(super) fn vacant_entry(&mut self) -> slab::VacantEntry<'_, Conn> {
        self.slab.vacant_entry()
    }

    /// Takes connection `id` out, if its slot still holds it.
    pub(super) fn remove(&mut self, id: ConnId) -> Option<Conn> {
        self.get(id)?;
        Some(self.slab.remove(id.key))
    }
}
