//! The connection to the server as two blocking halves, plain TCP or TLS:
//! a [`Reader`] for the reader thread (wrapped in a `BufReader` for
//! `wire::read_line`) and a [`Writer`] for whoever sends lines.
//!
//! Over TLS both halves share one `rustls::ClientConnection` behind a
//! mutex, each with its own clone of the socket. The reader blocks on the
//! socket *outside* the lock, then locks to hand rustls the bytes and take
//! the plaintext out. The writer locks to encrypt a line, and writes the
//! records to the socket after letting go of the TLS state, under a second
//! lock that keeps records in order. So a writer blocked on a full socket
//! never stops the reader from draining what the server sends. The
//! handshake and the trust decision happen before this (`tls.rs`,
//! `trust.rs`); nothing here knows about lines.

use std::io::{self, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rustls::ClientConnection;

/// Bytes read from the socket at a time.
const RAW_CHUNK: usize = 16 * 1024;

/// A connected, trusted stream, before being split.
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<ClientConnection>, TcpStream),
}

/// The TLS state both halves share.
struct Shared {
    tls: Mutex<ClientConnection>,
    /// The socket the records are written to; holding it keeps them in
    /// order. Always taken before `tls`, never while holding it.
    out: Mutex<TcpStream>,
}

impl Conn {
    /// Bounds every later read on the socket (both halves share it): a read
    /// that waits longer fails with `WouldBlock` or `TimedOut`.
    pub fn set_read_timeout(&self, limit: Option<Duration>) -> io::Result<()> {
        match self {
            Conn::Plain(sock) | Conn::Tls(_, sock) => sock.set_read_timeout(limit),
        }
    }

    /// Over TLS, the fingerprint of the certificate the server showed
    /// (trusted by then): a file transfer's connection is trusted with it.
    pub fn fingerprint(&self) -> Option<crate::known::Fingerprint> {
        match self {
            Conn::Plain(_) => None,
            Conn::Tls(tls, _) => tls
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|leaf| crate::known::Fingerprint::of_der(leaf.as_ref())),
        }
    }

    /// Splits the stream into its reading and writing halves.
    pub fn split(self) -> io::Result<(Reader, Writer)> {
        match self {
            Conn::Plain(sock) => {
                let _ = sock.set_nodelay(true);
                let out = sock.try_clone()?;
                Ok((
                    Reader(ReadHalf::Plain(sock)),
                    Writer(Arc::new(WriteHalf::Plain(Mutex::new(out)))),
                ))
            }
            Conn::Tls(tls, sock) => {
                let _ = sock.set_nodelay(true);
                let out = sock.try_clone()?;
                let shared = Arc::new(Shared {
                    tls: Mutex::new(*tls),
                    out: Mutex::new(out),
                });
                Ok((
                    Reader(ReadHalf::Tls {
                        shared: shared.clone(),
                        sock,
                        raw: vec![0; RAW_CHUNK],
                        start: 0,
                        end: 0,
                        eof: false,
                    }),
                    Writer(Arc::new(WriteHalf::Tls(shared))),
                ))
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> io::Result<MutexGuard<'_, T>> {
    // A thread that panicked mid-operation may have left the TLS state half
    // updated: the connection is over.
    m.lock()
        .map_err(|_| io::Error::other("connection state lost"))
}

/// The reading half: plaintext from the server.
pub struct Reader(ReadHalf);

enum ReadHalf {
    Plain(TcpStream),
    Tls {
        shared: Arc<Shared>,
        sock: TcpStream,
        /// Raw bytes read from the socket; `start..end` not yet given to
        /// rustls.
        raw: Vec<u8>,
        start: usize,
        end: usize,
        eof: bool,
    },
}

impl Read for Reader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        match &mut self.0 {
            ReadHalf::Plain(sock) => sock.read(out),
            ReadHalf::Tls {
                shared,
                sock,
                raw,
                start,
                end,
                eof,
            } => loop {
                // 1. Plaintext rustls already has.
                let mut tls = lock(&shared.tls)?;
                match tls.reader().read(out) {
                    Ok(n) => return Ok(n),
                    // The peer closed without close_notify: the end, as over
                    // plain TCP (a chat line cut short is shown as what it is).
                    Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(0),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
                if *eof {
                    return Ok(0);
                }
                // 2. Raw bytes read before: to rustls, then back to 1. Only
                //    when no plaintext is waiting, so rustls's plaintext
                //    buffer never fills up.
                if *start < *end {
                    let mut pending = &raw[*start..*end];
                    let n = tls.read_tls(&mut pending)?;
                    *start += n;
                    let processed = tls.process_new_packets();
                    let wants_write = tls.wants_write();
                    drop(tls);
                    if wants_write {
                        // An alert, or a key update rustls owes the server.
                        flush(shared)?;
                    }
                    if let Err(e) = processed {
                        return Err(io::Error::new(ErrorKind::InvalidData, e));
                    }
                    continue;
                }
                // 3. Wait for the server, without holding the TLS state.
                drop(tls);
                let n = loop {
                    match sock.read(raw) {
                        Ok(n) => break n,
                        Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e),
                    }
                };
                (*start, *end) = (0, n);
                if n == 0 {
                    *eof = true;
                    let mut tls = lock(&shared.tls)?;
                    // Tells rustls the stream ended; the next round returns
                    // what is left, then the end.
                    tls.read_tls(&mut io::empty())?;
                    tls.process_new_packets()
                        .map_err(|e| io::Error::new(ErrorKind::InvalidData, e))?;
                }
            },
        }
    }
}

/// Writes the TLS records rustls has queued, in order.
fn flush(shared: &Shared) -> io::Result<()> {
    let mut out = lock(&shared.out)?;
    let records = take_records(&mut *lock(&shared.tls)?)?;
    out.write_all(&records)
}

fn take_records(tls: &mut ClientConnection) -> io::Result<Vec<u8>> {
    let mut records = Vec::new();
    while tls.wants_write() {
        tls.write_tls(&mut records)?;
    }
    Ok(records)
}

/// The writing half; clones share the connection.
#[derive(Clone)]
pub struct Writer(Arc<WriteHalf>);

enum WriteHalf {
    Plain(Mutex<TcpStream>),
    Tls(Arc<Shared>),
}

impl Writer {
    /// Sends one line, adding its LF; the whole line goes out before
    /// another thread's.
    pub fn send_line(&self, line: &[u8]) -> io::Result<()> {
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line);
        bytes.push(b'\n');
        match &*self.0 {
            WriteHalf::Plain(sock) => lock(sock)?.write_all(&bytes),
            WriteHalf::Tls(shared) => {
                let mut out = lock(&shared.out)?;
                let mut rest = &bytes[..];
                loop {
                    // rustls takes at most its buffer limit at a time; the
                    // records go out before the next part is taken.
                    let (n, records) = {
                        let mut tls = lock(&shared.tls)?;
                        let n = tls.writer().write(rest)?;
                        (n, take_records(&mut tls)?)
                    };
                    rest = &rest[n..];
                    if records.is_empty() && n == 0 {
                        // rustls takes nothing more: the connection is closing.
                        return Err(ErrorKind::WriteZero.into());
                    }
                    out.write_all(&records)?;
                    if rest.is_empty() {
                        return Ok(());
                    }
                }
            }
        }
    }
}
