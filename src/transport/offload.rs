//! TLS work that may leave the event loop: a handshake flight (a key
//! exchange and a signature, a few hundred microseconds of CPU), a bulk
//! read (an upload's records) or a bulk write (a download's piece, the web
//! page). The transport hands the connection's whole TLS state to a
//! worker with the bytes to open or seal ([`Transport::take_crypto`]) and
//! takes it back with what came of it ([`Transport::crypto_done`]); the
//! reactor only carries the job. A chat line is opened and sealed where it
//! is, on the loop: that costs less than the round trip.
//!
//! While the state is away, raw bytes from the socket wait here (at most
//! [`RAW_HIGH`], then reading pauses), the end of input waits behind them,
//! output waits in the framing's buffers, and the connection counts as
//! having output pending, so nothing closes it before its records are
//! written. The worker seals everything it is handed, so output made
//! meanwhile is sealed after it, in order.
//!
//! Nothing here runs a thread: [`Crypto::run`] is plain computation, and a
//! transport never offloads unless [`Transport::set_offload`] said so.

use super::Transport;
use super::lines::InBuf;
use super::tls_stream::TlsStream;
use crate::reactor::outbox::Outbox;

/// Raw bytes at least this big are opened by a worker.
const OPEN_BULK: usize = 16 * 1024;
/// Output waiting for TLS at least this big is sealed by a worker.
const SEAL_BULK: usize = 32 * 1024;
/// Raw bytes held while the state is away before reading pauses: one
/// 64 KiB read. With at most one more read past it, a job's buffers stay
/// under the allocator's mmap threshold (128 KiB, `reactor`), so they are
/// reused from the heap instead of being mapped, faulted in and unmapped
/// for every job (a third of a worker's time in an upload, measured).
const RAW_HIGH: usize = 64 * 1024;

/// A transport's part in offloading.
#[derive(Default)]
pub(super) struct State {
    enabled: bool,
    /// The TLS state is with a worker.
    pub(super) away: bool,
    /// Raw bytes waiting for the next job.
    raw: Vec<u8>,
    /// The socket reached end of input behind `raw`.
    pub(super) eof_after: bool,
    /// Output bytes that went with the job (records made and plaintext to
    /// seal), so that limits still see them.
    pub(super) away_unsent: usize,
}

impl State {
    /// Input is waiting for a worker: whatever comes next queues behind.
    pub(super) fn holds_input(&self) -> bool {
        self.away || !self.raw.is_empty()
    }

    pub(super) fn input_full(&self) -> bool {
        self.raw.len() >= RAW_HIGH
    }

    /// Whether `wire` bytes of output waiting for `tls` go to a worker.
    pub(super) fn seals(&self, tls: &TlsStream, wire: usize) -> bool {
        self.enabled
            && wire >= SEAL_BULK
            && !tls.is_handshaking()
            && !tls.is_failed()
            && tls.outgoing_len() < SEAL_BULK
    }
}

/// A connection's TLS state and the work for it.
pub struct Crypto {
    tls: TlsStream,
    /// Records to open.
    raw: Vec<u8>,
    /// Plaintext to seal, all of it.
    seal: Outbox,
    /// The allocation `seal` keeps once sealed, to come back with the
    /// job (a bulk sender's `wire`, see `Transport::set_bulk`).
    keep: usize,
}

/// What came of a [`Crypto`] job.
pub struct CryptoDone {
    tls: TlsStream,
    plain: Vec<u8>,
    error: Option<rustls::Error>,
    /// The sealed buffer, empty, with what it kept of its allocation.
    sealed: Outbox,
}

impl Crypto {
    /// Opens, then seals. The result goes back to the transport it came
    /// from, whatever happened.
    pub fn run(mut self) -> CryptoDone {
        let mut plain = InBuf::default();
        let mut error = None;
        if !self.raw.is_empty() {
            let raw = std::mem::take(&mut self.raw);
            // Plaintext is never longer than its records.
            plain.reserve(raw.len());
            if let Err(e) = self.tls.receive_vec(raw, &mut plain) {
                error = Some(e);
            }
        }
        if error.is_none()
            && !self.seal.is_empty()
            && let Err(e) = self.tls.send_all(&mut self.seal, self.keep)
        {
            error = Some(e);
        }
        CryptoDone {
            tls: self.tls,
            plain: plain.take_vec(),
            error,
            sealed: self.seal,
        }
    }

    /// Bytes of work in the job.
    pub fn len(&self) -> usize {
        self.raw.len() + self.seal.pending()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Transport {
    /// Lets this connection's bulk TLS work go to workers.
    pub fn set_offload(&mut self, on: bool) {
        self.offload.enabled = on;
    }

    /// Keeps `data` (raw bytes) for a worker instead of opening it here;
    /// false if it is opened here.
    pub(super) fn offload_open(&mut self, data: &[u8]) -> bool {
        if !self.offload.enabled {
            return false;
        }
        let handshaking = self.tls.as_ref().is_some_and(TlsStream::is_handshaking);
        let failed = self.tls.as_ref().is_some_and(TlsStream::is_failed);
        if failed || !(self.offload.holds_input() || handshaking || data.len() >= OPEN_BULK) {
            return false;
        }
        self.offload.raw.extend_from_slice(data);
        true
    }

    /// TLS work for a worker, if any is waiting: the TLS state leaves with
    /// it, until [`Transport::crypto_done`]. Records to open go only with
    /// `open`: after the framing has taken what the last job brought (a
    /// framing that waits for the handshake's end needs the state here to
    /// see it), not from a flush.
    pub fn take_crypto(&mut self, open: bool) -> Option<Box<Crypto>> {
        if !self.offload.enabled || self.offload.away {
            return None;
        }
        let tls = self.tls.as_ref()?;
        let open = open && !self.offload.raw.is_empty();
        let seal = self.offload.seals(tls, self.wire.pending());
        if !open && !seal {
            return None;
        }
        let tls = self.tls.take()?;
        let raw = if open {
            std::mem::take(&mut self.offload.raw)
        } else {
            Vec::new()
        };
        let seal = if seal {
            std::mem::take(&mut self.wire)
        } else {
            Outbox::default()
        };
        self.offload.away = true;
        self.offload.away_unsent = tls.outgoing_len() + seal.pending();
        let keep = self.keep();
        Some(Box::new(Crypto {
            tls,
            raw,
            seal,
            keep,
        }))
    }

    /// A worker's job is back: plaintext goes to the framing, records wait
    /// for the next flush.
    pub fn crypto_done(&mut self, done: CryptoDone) {
        self.offload.away = false;
        self.offload.away_unsent = 0;
        self.input.push_vec(done.plain);
        if done.tls.peer_closed() {
            self.eof = true;
        }
        self.tls = Some(done.tls);
        // A bulk sender's buffer comes back for the next piece, unless
        // output queued meanwhile has one already or a failure left bytes
        // in it.
        if self.bulk
            && self.wire.is_empty()
            && done.sealed.is_empty()
            && done.sealed.capacity() > self.wire.capacity()
        {
            self.wire = done.sealed;
        }
        if let Some(e) = done.error {
            log::debug!("TLS error: {e}");
            self.offload.raw = Vec::new();
            self.fail_tls();
        }
        if self.offload.eof_after && self.offload.raw.is_empty() {
            self.offload.eof_after = false;
            self.eof = true;
        }
    }

    /// The TLS state is with a worker.
    pub fn crypto_away(&self) -> bool {
        self.offload.away
    }
}
