//! A TLS stream over the connection's own buffers, with rustls's
//! unbuffered API: the raw bytes received wait in a buffer of ours (freed
//! as soon as no partial record is left), records to send go into an
//! [`Outbox`] of ours (freed when written), and plaintext goes straight
//! into the framing's input. An idle TLS connection therefore holds only
//! rustls's state and keys, never its default 4 KiB of read buffer plus
//! output queues: that is what keeps it within the 8 KiB per idle
//! connection NeoChat promises.
//!
//! The calling order follows rustls's `process_tls_records` contract: each
//! state is handled, then the bytes it consumed are discarded, before the
//! next call.

use std::sync::Arc;

use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};

use super::lines::InBuf;
use crate::reactor::outbox::{KEEP_CAPACITY, Outbox};

/// Plaintext encrypted per record batch.
const ENCRYPT_CHUNK: usize = 16 * 1024;
/// Encrypted bytes staged before encrypting more: the session's own output
/// limit stays the bound that matters.
const OUTGOING_HIGH: usize = 64 * 1024;
/// Per-record overhead allowance (header, tag, content type, padding).
const RECORD_OVERHEAD: usize = 64;

pub struct TlsStream {
    conn: Box<UnbufferedServerConnection>,
    /// Raw bytes received and not yet processed: at most a partial record
    /// between calls.
    incoming: Vec<u8>,
    /// TLS records waiting for the socket.
    outgoing: Outbox,
    /// The handshake finished: application data flows.
    open: bool,
    /// The peer sent close_notify, or the connection is closed.
    peer_closed: bool,
    close_notify_queued: bool,
    /// A fatal error happened: rustls must not be called again (it
    /// asserts), only the alert already fetched is written.
    failed: bool,
}

impl TlsStream {
    pub fn new(config: Arc<rustls::ServerConfig>) -> Result<TlsStream, rustls::Error> {
        Ok(TlsStream {
            conn: Box::new(UnbufferedServerConnection::new(config)?),
            incoming: Vec::new(),
            outgoing: Outbox::default(),
            open: false,
            peer_closed: false,
            close_notify_queued: false,
            failed: false,
        })
    }

    pub fn is_handshaking(&self) -> bool {
        !self.open
    }

    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.conn.alpn_protocol()
    }

    /// A fatal error happened: nothing more is opened or sealed.
    pub fn is_failed(&self) -> bool {
        self.failed
    }

    pub fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// TLS records are waiting for the socket.
    pub fn wants_write(&self) -> bool {
        !self.outgoing.is_empty()
    }

    /// Bytes of TLS records waiting for the socket.
    pub fn outgoing_len(&self) -> usize {
        self.outgoing.pending()
    }

    /// The records waiting for the socket.
    pub fn outgoing(&mut self) -> &mut Outbox {
        &mut self.outgoing
    }

    /// Raw bytes from the socket: plaintext goes to `plain`, handshake
    /// answers to the outgoing records. On an error the alert, if rustls
    /// made one, is queued; nothing more should be read.
    pub fn receive(&mut self, data: &[u8], plain: &mut InBuf) -> Result<(), rustls::Error> {
        self.incoming.extend_from_slice(data);
        self.receive_held(plain)
    }

    /// [`TlsStream::receive`] for bytes in a vector of their own (a
    /// worker's job): taken as the buffer itself when none is held.
    pub fn receive_vec(&mut self, data: Vec<u8>, plain: &mut InBuf) -> Result<(), rustls::Error> {
        if self.incoming.is_empty() {
            self.incoming = data;
        } else {
            self.incoming.extend_from_slice(&data);
        }
        self.receive_held(plain)
    }

    fn receive_held(&mut self, plain: &mut InBuf) -> Result<(), rustls::Error> {
        let result = self.drive(plain, None, false, OUTGOING_HIGH, KEEP_CAPACITY);
        if self.incoming.is_empty() {
            self.incoming = Vec::new();
        } else if self.incoming.capacity() > (2 * self.incoming.len()).max(4096) {
            // A partial record left at the end of a large read.
            self.incoming.shrink_to_fit();
        }
        result
    }

    /// Encrypts what `out` holds, as far as the outgoing records have room
    /// (nothing before the handshake is done); with `finish`, ends with a
    /// close_notify once `out` is empty. `out` keeps an allocation of up
    /// to `keep` bytes once it is all taken ([`Outbox::consume_keeping`]).
    pub fn send(
        &mut self,
        out: &mut Outbox,
        finish: bool,
        keep: usize,
    ) -> Result<(), rustls::Error> {
        let mut none = InBuf::default();
        self.drive(&mut none, Some(out), finish, OUTGOING_HIGH, keep)
    }

    /// Encrypts all of `out`, however much that is (a worker's bulk job:
    /// what it is handed is already bounded).
    pub fn send_all(&mut self, out: &mut Outbox, keep: usize) -> Result<(), rustls::Error> {
        let mut none = InBuf::default();
        self.drive(&mut none, Some(out), false, usize::MAX, keep)
    }

    fn drive(
        &mut self,
        plain: &mut InBuf,
        mut out: Option<&mut Outbox>,
        finish: bool,
        high: usize,
        keep: usize,
    ) -> Result<(), rustls::Error> {
        if self.failed {
            // Whatever is still offered is dropped: the connection is over.
            if let Some(out) = out {
                let n = out.pending();
                out.consume(n);
            }
            return Ok(());
        }
        let mut failure = None;
        // Bytes of `incoming` done with: removed once, at the end (removing
        // each record's as it goes moves the rest of a big read every time).
        let mut done = 0;
        // Every turn consumes input or produces output; the bound is a
        // guard, far above what 64 KiB of input can take.
        for _ in 0..4096 {
            let UnbufferedStatus { mut discard, state } =
                self.conn.process_tls_records(&mut self.incoming[done..]);
            let mut stop = false;
            match state {
                Err(e) => {
                    failure = Some(e);
                    stop = true;
                }
                Ok(ConnectionState::ReadTraffic(mut records)) => {
                    while let Some(record) = records.next_record() {
                        match record {
                            Ok(record) => {
                                discard += record.discard;
                                plain.push(record.payload);
                            }
                            Err(e) => {
                                failure = Some(e);
                                stop = true;
                                break;
                            }
                        }
                    }
                }
                Ok(ConnectionState::ReadEarlyData(mut records)) => {
                    // Early data is off (max_early_data_size 0); drop any.
                    while let Some(Ok(record)) = records.next_record() {
                        discard += record.discard;
                    }
                }
                Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                    let mut room = 4096;
                    loop {
                        match self.outgoing.append_with(room, |buf| encode.encode(buf)) {
                            Ok(_) => break,
                            Err(EncodeError::InsufficientSize(need)) => {
                                room = need.required_size;
                            }
                            Err(e) => {
                                log::debug!("TLS encode: {e}");
                                stop = true;
                                break;
                            }
                        }
                    }
                }
                // Our records wait in `outgoing`; the socket write comes
                // with the next flush.
                Ok(ConnectionState::TransmitTlsData(transmit)) => transmit.done(),
                Ok(ConnectionState::BlockedHandshake) => stop = true,
                Ok(ConnectionState::WriteTraffic(mut write)) => {
                    self.open = true;
                    stop = true;
                    if let Some(out) = out.as_deref_mut() {
                        while !out.is_empty() && self.outgoing.pending() < high {
                            let chunk = &out.unsent()[..out.pending().min(ENCRYPT_CHUNK)];
                            let n = chunk.len();
                            let mut room = n + RECORD_OVERHEAD;
                            loop {
                                match self
                                    .outgoing
                                    .append_with(room, |buf| write.encrypt(chunk, buf))
                                {
                                    Ok(_) => break,
                                    Err(EncryptError::InsufficientSize(need)) => {
                                        room = need.required_size;
                                    }
                                    Err(e) => {
                                        log::debug!("TLS encrypt: {e}");
                                        return Err(rustls::Error::General(e.to_string()));
                                    }
                                }
                            }
                            out.consume_keeping(n, keep);
                        }
                        if finish && out.is_empty() && !self.close_notify_queued {
                            self.close_notify_queued = true;
                            let _ = self
                                .outgoing
                                .append_with(RECORD_OVERHEAD, |buf| write.queue_close_notify(buf));
                        }
                    }
                }
                Ok(ConnectionState::PeerClosed | ConnectionState::Closed) => {
                    self.peer_closed = true;
                    stop = true;
                }
                Ok(_) => stop = true,
            }
            done = (done + discard).min(self.incoming.len());
            if stop {
                break;
            }
        }
        if done > 0 {
            self.incoming.drain(..done);
        }
        match failure {
            Some(e) => {
                self.collect_alert();
                Err(e)
            }
            None => Ok(()),
        }
    }

    /// After a fatal error rustls may have queued an alert (for some errors,
    /// found while deframing, it does not: then the close says it). The bad
    /// input must
    /// not be deframed again (rustls asserts on it), so records are fetched
    /// only while rustls has some queued: then `process_tls_records` hands
    /// them out before it looks at any input.
    fn collect_alert(&mut self) {
        self.incoming = Vec::new();
        self.peer_closed = true;
        self.failed = true;
        for _ in 0..8 {
            if !self.conn.wants_write() {
                return;
            }
            let UnbufferedStatus { state, .. } = self.conn.process_tls_records(&mut []);
            match state {
                Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                    let mut room = 256;
                    while let Err(EncodeError::InsufficientSize(need)) =
                        self.outgoing.append_with(room, |buf| encode.encode(buf))
                    {
                        room = need.required_size;
                    }
                }
                _ => return,
            }
        }
    }
}
