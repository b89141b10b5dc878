//! The transport layer, between the reactor's sockets and the chat
//! session: a connection is a byte stream (plain or TLS) with a framing on
//! top (lines, WebSocket messages or HTTP requests), and the session sees
//! only lines.
//!
//! The reactor owns the socket: it reads bytes and hands them to
//! [`Transport::receive`], pulls [`Input`]s with [`Transport::next_input`]
//! while the session wants input, and writes with [`Transport::flush`],
//! which takes the session's output (protocol lines, LF-terminated) from
//! its [`Outbox`] and encodes it for the wire: as is, as WebSocket frames,
//! and through TLS. Nothing here blocks, reads the clock or touches mio.
//!
//! On one port the first bytes decide (`sniff`): a PROXY header from a
//! trusted proxy first (`proxy`), then a TLS record, an HTTP request line
//! (`http`), binary junk (closed at once), or the line protocol (`lines`),
//! which also begins when a client says nothing for 0.3 s. Inside TLS the
//! same detection runs again, except that ALPN `http/1.1` means HTTP at
//! once. `GET /ws` upgrades to WebSocket (`websocket`). A download's
//! `Range` header is read by `range`.

pub mod http;
pub mod lines;
pub mod offload;
pub mod proxy;
pub mod range;
pub mod sniff;
pub mod tls;
pub mod tls_stream;
pub mod web;
pub mod websocket;

use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::reactor::outbox::{BULK_KEEP, Flushed, KEEP_CAPACITY, Outbox};
use lines::{Framed, InBuf, Lines};
use sniff::Sniffed;
use tls_stream::TlsStream;
use websocket::{WebSocket, WsFrame};

/// How long a client may stay silent before it is taken for a person at
/// netcat and greeted.
pub const SNIFF_WAIT: Duration = Duration::from_millis(300);
/// How long a request head may take to arrive.
pub const HTTP_HEAD_WAIT: Duration = Duration::from_secs(10);
/// Bytes of encoded output (WebSocket frames, HTTP answers) staged before
/// the session's own buffer is framed further: the session's output limit
/// stays the bound that matters.
const WIRE_HIGH: usize = 64 * 1024;

/// Bytes received and not yet framed past which reading pauses.
const INPUT_HIGH: usize = 256 * 1024;

/// How long an upload's body may send nothing before it is given up.
pub const BODY_IDLE: Duration = Duration::from_secs(30);

/// The answer a plain-text line client from another host gets.
pub const NEEDS_TLS: &[u8] = b"! this server needs TLS: use neochat, or ncat --ssl HOST PORT\n";

/// What every transport of a server shares.
#[derive(Clone)]
pub struct Settings {
    /// The TLS configuration for new connections (`None`: `--tls off`).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// `--plaintext any`: plain text served to every address.
    pub plaintext_any: bool,
    /// `--allowed-origin`: WebSocket origins besides the server's own.
    pub allowed_origins: Vec<String>,
    pub max_line: usize,
}

/// What the transport has for the session, or for the reactor.
#[derive(Debug, PartialEq, Eq)]
pub enum Input<'a> {
    /// The line protocol begins (over TCP, TLS or WebSocket): greet.
    Start,
    Line(&'a [u8]),
    /// A line over the limit was dropped.
    TooLong,
    /// The peer finished sending; every line was handed out.
    End,
    /// A trusted proxy named the real client.
    Client(SocketAddr),
    /// Call again at this time, even if nothing arrives.
    Deadline(Instant),
    /// Close the connection once what is queued (an HTTP answer, a TLS
    /// alert, a refusal) is written; the reason is for the log.
    Close(&'static str),
    /// A request of the files routes: the reactor answers it (with
    /// [`Transport::respond`], [`Transport::begin_body`] or
    /// [`Transport::push_raw`]); nothing more is read meanwhile.
    File(Box<http::FileRequest>),
    /// The next piece of an upload's body.
    Body(Vec<u8>),
    /// The body is complete; nothing more is read.
    BodyDone,
}

/// What [`Transport::step`] found.
enum Step {
    Ready(Input<'static>),
    Line(std::ops::Range<usize>),
    WsLine,
}

enum Framing {
    /// The first bytes have not been seen (at the TCP level, or inside TLS
    /// after a handshake without ALPN).
    Sniff,
    /// TLS handshake under way.
    Handshake,
    Lines(Lines),
    /// Waiting for a request head.
    Http,
    /// A request head was parsed; the client address it named has been
    /// handed out, the answer comes next.
    Route(Box<http::Request>),
    Ws(Box<WsState>),
    /// A files request waits for the reactor: nothing is read.
    Held,
    /// An upload's body: `left` bytes to come; the last arrived at `since`.
    Body {
        left: u64,
        since: Instant,
    },
    /// Nothing more is read.
    Done,
    /// TLS failed: the connection closes after the alert.
    Failed,
}

struct WsState {
    ws: WebSocket,
    /// The message handed out last (lines borrow from here).
    line: String,
    close_sent: bool,
}

/// One connection's transport. See the module documentation.
pub struct Transport {
    /// `None` on a plain connection, and while the stream is with a worker
    /// (`offload.away`).
    tls: Option<TlsStream>,
    /// TLS work handed to worker threads (see [`offload`]).
    offload: offload::State,
    framing: Framing,
    input: InBuf,
    /// Encoded bytes for the stream below (HTTP answers, WebSocket frames).
    wire: Outbox,
    /// The TCP peer is on loopback.
    local: bool,
    /// A PROXY header may come first (the peer is in `--proxy-from`); set
    /// until the first bytes have been looked at.
    proxy_expected: bool,
    /// The peer is a trusted proxy (for `X-Forwarded-For`).
    proxy_trusted: bool,
    eof: bool,
    deadline: Option<Instant>,
    /// The reactor was handed `deadline` (as [`Input::Deadline`]).
    deadline_told: bool,
    /// The connection is closing: end the stream cleanly after the output.
    finishing: bool,
    /// The reactor streams a big response here (a download): `wire` and
    /// the TLS records keep their allocations from piece to piece
    /// ([`BULK_KEEP`]).
    bulk: bool,
}

impl Transport {
    /// A freshly accepted connection.
    pub fn new(local: bool, proxy_trusted: bool) -> Transport {
        Transport {
            tls: None,
            offload: offload::State::default(),
            framing: Framing::Sniff,
            input: InBuf::default(),
            wire: Outbox::default(),
            local,
            proxy_expected: proxy_trusted,
            proxy_trusted,
            eof: false,
            deadline: None,
            deadline_told: false,
            finishing: false,
            bulk: false,
        }
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some() || self.offload.away
    }

    pub fn is_websocket(&self) -> bool {
        matches!(self.framing, Framing::Ws(_))
    }

    /// Speaking the line protocol (over any stream or WebSocket).
    pub fn is_chat(&self) -> bool {
        matches!(self.framing, Framing::Lines(_) | Framing::Ws(_))
    }

    /// Raw bytes from the socket.
    pub fn receive(&mut self, data: &[u8]) {
        if self.is_tls() {
            self.feed_tls(data);
        } else {
            self.input.push(data);
        }
    }

    /// The socket reached end of input.
    pub fn receive_eof(&mut self) {
        if self.offload.holds_input() {
            // Records still being opened come first.
            self.offload.eof_after = true;
        } else {
            self.eof = true;
        }
    }

    pub fn eof(&self) -> bool {
        self.eof || self.offload.eof_after
    }

    fn feed_tls(&mut self, data: &[u8]) {
        if self.offload_open(data) {
            return;
        }
        let Some(tls) = &mut self.tls else {
            return;
        };
        let result = tls.receive(data, &mut self.input);
        if tls.peer_closed() {
            self.eof = true;
        }
        if let Err(e) = result {
            log::debug!("TLS error: {e}");
            self.fail_tls();
        }
    }

    /// A fatal TLS error: rustls queued the alert; nothing more is read.
    fn fail_tls(&mut self) {
        self.framing = Framing::Failed;
        self.eof = true;
    }

    /// The next thing for the session or the reactor, or `None` until more
    /// bytes arrive (or a deadline passes).
    pub fn next_input(&mut self, now: Instant, settings: &Settings) -> Option<Input<'_>> {
        let Some(step) = self.step(now, settings) else {
            // Every whole frame is out: the buffer gives back what a large
            // read left behind.
            self.input.settle();
            // Waiting: make sure the reactor calls back at the deadline.
            let over = matches!(self.framing, Framing::Done | Framing::Failed);
            return match self.deadline {
                Some(at) if !self.deadline_told && now < at && !over => {
                    self.deadline_told = true;
                    Some(Input::Deadline(at))
                }
                _ => None,
            };
        };
        match step {
            Step::Ready(input) => Some(input),
            Step::Line(range) => Some(Input::Line(self.input.slice(range))),
            Step::WsLine => match &self.framing {
                Framing::Ws(state) => Some(Input::Line(state.line.as_bytes())),
                _ => None,
            },
        }
    }

    /// Runs the state machine to the next input; lines are handed back by
    /// position so that the borrow of `self` ends here.
    fn step(&mut self, now: Instant, settings: &Settings) -> Option<Step> {
        use Step::Ready;
        loop {
            match &mut self.framing {
                Framing::Sniff => {
                    if self.proxy_expected && !self.is_tls() {
                        match proxy::parse(self.input.bytes()) {
                            // A trusted proxy sends its header at once; a
                            // client of its own that stays silent is greeted
                            // like anybody else.
                            proxy::Proxied::NeedMore
                                if !self.eof && !self.wait_over(now, SNIFF_WAIT) =>
                            {
                                return None;
                            }
                            proxy::Proxied::Header { len, client } => {
                                self.input.consume(len);
                                self.proxy_expected = false;
                                // Every byte after the header is the
                                // client's own, an X-Forwarded-For too: a
                                // TCP proxy passes it on unread.
                                self.proxy_trusted = false;
                                if let Some(client) = client {
                                    return Some(Ready(Input::Client(client)));
                                }
                                continue;
                            }
                            proxy::Proxied::Invalid => {
                                self.framing = Framing::Done;
                                return Some(Ready(Input::Close("bad PROXY header")));
                            }
                            _ => self.proxy_expected = false,
                        }
                    }
                    if self.input.is_empty() && self.eof {
                        self.framing = Framing::Done;
                        return Some(Ready(Input::Close("closed before speaking")));
                    }
                    // A PROXY header from a peer that may not send one (or a
                    // second one): a proxy missing from `--proxy-from`, or
                    // a client claiming another address. Not honoured, and
                    // not taken for chat either.
                    if !self.proxy_expected && !self.is_tls() {
                        match proxy::parse(self.input.bytes()) {
                            // Only a real header: text that merely starts
                            // with `PROXY ` is a line like any other.
                            proxy::Proxied::Header { .. } => {
                                self.framing = Framing::Done;
                                return Some(Ready(Input::Close(
                                    "PROXY header from an address not in --proxy-from",
                                )));
                            }
                            proxy::Proxied::NeedMore
                                if !self.eof && !self.wait_over(now, SNIFF_WAIT) =>
                            {
                                return None;
                            }
                            _ => {}
                        }
                    }
                    match sniff::sniff(self.input.bytes(), !self.is_tls()) {
                        Sniffed::Tls => {
                            let Some(config) = &settings.tls else {
                                self.framing = Framing::Done;
                                return Some(Ready(Input::Close("TLS handshake with TLS off")));
                            };
                            let tls = match TlsStream::new(config.clone()) {
                                Ok(tls) => tls,
                                Err(e) => {
                                    log::warn!("cannot start a TLS connection: {e}");
                                    self.framing = Framing::Done;
                                    return Some(Ready(Input::Close("TLS set-up failed")));
                                }
                            };
                            self.tls = Some(tls);
                            self.framing = Framing::Handshake;
                            self.set_deadline(None);
                            let raw = self.input.take_all();
                            self.feed_tls(&raw);
                        }
                        Sniffed::Http => self.begin_http(now),
                        Sniffed::Junk => {
                            self.framing = Framing::Done;
                            return Some(Ready(Input::Close("binary junk")));
                        }
                        Sniffed::Lines => return Some(Ready(self.begin_lines(settings))),
                        Sniffed::NeedMore => {
                            // Bytes still with a TLS worker are not silence:
                            // decide when they are back.
                            let waited = self.wait_over(now, SNIFF_WAIT);
                            if self.eof || (waited && !self.offload.holds_input()) {
                                return Some(Ready(self.begin_lines(settings)));
                            }
                            return None;
                        }
                    }
                }
                Framing::Handshake => {
                    let tls = self.tls.as_ref()?;
                    if tls.is_handshaking() {
                        if self.eof {
                            self.framing = Framing::Done;
                            return Some(Ready(Input::Close("closed during the TLS handshake")));
                        }
                        return None;
                    }
                    if tls.alpn_protocol() == Some(tls::ALPN_HTTP) {
                        self.begin_http(now);
                    } else {
                        self.framing = Framing::Sniff;
                        self.set_deadline(None);
                    }
                }
                Framing::Lines(lines) => {
                    if self.eof {
                        lines.set_eof();
                    }
                    return Some(match lines.next_at(&mut self.input, settings.max_line)? {
                        Framed::Line(range) => Step::Line(range),
                        Framed::TooLong => Ready(Input::TooLong),
                        Framed::End => Ready(Input::End),
                    });
                }
                Framing::Http => match http::parse_head(self.input.bytes(), self.is_tls()) {
                    http::Head::NeedMore => {
                        if self.eof {
                            self.framing = Framing::Done;
                            return Some(Ready(Input::Close("HTTP request cut short")));
                        }
                        if self.deadline.is_some_and(|d| now >= d) && !self.offload.holds_input() {
                            let tls = self.is_tls();
                            self.wire
                                .push_always(&http::error(408, "Request Timeout", tls));
                            self.framing = Framing::Done;
                            return Some(Ready(Input::Close("HTTP request head too slow")));
                        }
                        return None;
                    }
                    http::Head::Refuse(answer) => {
                        self.wire.push_always(&answer);
                        self.framing = Framing::Done;
                        return Some(Ready(Input::Close("bad HTTP request")));
                    }
                    http::Head::Complete { len, request } => {
                        self.input.consume(len);
                        let client = request.forwarded_for.filter(|_| self.proxy_trusted);
                        self.framing = Framing::Route(request);
                        if let Some(ip) = client {
                            return Some(Ready(Input::Client(SocketAddr::new(ip, 0))));
                        }
                    }
                },
                Framing::Route(request) => {
                    let ctx = http::Context {
                        tls: self.tls.is_some() || self.offload.away,
                        plaintext_ok: self.local || settings.plaintext_any,
                        allowed_origins: &settings.allowed_origins,
                    };
                    log::debug!("HTTP {} {}", request.method, request.path);
                    match http::route(request, ctx) {
                        http::Reply::Respond(answer) => {
                            self.wire.push_always(&answer);
                            self.framing = Framing::Done;
                            return Some(Ready(Input::Close("HTTP request answered")));
                        }
                        http::Reply::Files(request) => {
                            self.framing = Framing::Held;
                            self.set_deadline(None);
                            return Some(Ready(Input::File(Box::new(request))));
                        }
                        http::Reply::Upgrade(answer) => {
                            self.wire.push_always(&answer);
                            // Bounded so that an over-long message is an
                            // error line, and a huge one a close (1009).
                            let max_message = (settings.max_line * 4).max(64 * 1024);
                            self.framing = Framing::Ws(Box::new(WsState {
                                ws: WebSocket::new(max_message),
                                line: String::new(),
                                close_sent: false,
                            }));
                            self.set_deadline(None);
                            return Some(Ready(Input::Start));
                        }
                    }
                }
                Framing::Ws(state) => {
                    // Pongs and close replies are output too: while the peer
                    // does not read them, its pings are not read either.
                    if self.wire.pending() >= WIRE_HIGH {
                        return None;
                    }
                    let frame =
                        state
                            .ws
                            .next(&mut self.input, &mut self.wire, settings.max_line)?;
                    return Some(match frame {
                        WsFrame::Line(line) => {
                            state.line = line;
                            Step::WsLine
                        }
                        WsFrame::TooLong => Ready(Input::TooLong),
                        WsFrame::End => {
                            state.close_sent = true;
                            Ready(Input::End)
                        }
                    });
                }
                Framing::Body { left, since } => {
                    if !self.input.is_empty() && *left > 0 {
                        let n = usize::try_from(*left)
                            .unwrap_or(usize::MAX)
                            .min(self.input.len());
                        let chunk = if n == self.input.len() {
                            // All of it: the buffer itself (no copy).
                            self.input.take_vec()
                        } else {
                            let chunk = self.input.bytes()[..n].to_vec();
                            self.input.consume(n);
                            chunk
                        };
                        *left -= n as u64;
                        *since = now;
                        return Some(Ready(Input::Body(chunk)));
                    }
                    if *left == 0 {
                        self.framing = Framing::Held;
                        self.set_deadline(None);
                        return Some(Ready(Input::BodyDone));
                    }
                    if self.eof {
                        self.framing = Framing::Done;
                        return Some(Ready(Input::Close("upload cut short")));
                    }
                    // Idle: one deadline per BODY_IDLE, moved on while
                    // bytes keep coming.
                    let due = *since + BODY_IDLE;
                    if now >= due && !self.offload.holds_input() {
                        let tls = self.is_tls();
                        self.wire
                            .push_always(&http::error(408, "Request Timeout", tls));
                        self.framing = Framing::Done;
                        return Some(Ready(Input::Close("upload stalled")));
                    }
                    if self.deadline.is_none_or(|d| d <= now) {
                        self.set_deadline(Some(due));
                    }
                    return None;
                }
                Framing::Held | Framing::Done => return None,
                Framing::Failed => {
                    self.framing = Framing::Done;
                    return Some(Ready(Input::Close("TLS error")));
                }
            }
        }
    }

    /// Whether a wait of `wait` (started now if none is running) is over.
    fn wait_over(&mut self, now: Instant, wait: Duration) -> bool {
        match self.deadline {
            Some(at) => now >= at,
            None => {
                self.set_deadline(Some(now + wait));
                false
            }
        }
    }

    fn set_deadline(&mut self, at: Option<Instant>) {
        self.deadline = at;
        self.deadline_told = false;
    }

    fn begin_http(&mut self, now: Instant) {
        self.framing = Framing::Http;
        self.set_deadline(Some(now + HTTP_HEAD_WAIT));
    }

    fn begin_lines(&mut self, settings: &Settings) -> Input<'static> {
        self.set_deadline(None);
        if !self.is_tls() && !self.local && !settings.plaintext_any {
            self.wire.push_always(NEEDS_TLS);
            self.framing = Framing::Done;
            return Input::Close("plain text from another host");
        }
        // A partial line costs at most the limit (and a CR) of memory.
        self.input.set_limit(settings.max_line + 1);
        self.framing = Framing::Lines(Lines::new());
        Input::Start
    }

    /// Answers a files request with `answer` (a whole response) and reads
    /// no more.
    pub fn respond(&mut self, answer: &[u8]) {
        self.wire.push_always(answer);
        self.framing = Framing::Done;
    }

    /// An upload of `length` bytes may send its body (`continue`: the
    /// client waits to be told so).
    pub fn begin_body(&mut self, length: u64, expect_continue: bool, now: Instant) {
        if expect_continue {
            self.wire.push_always(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        self.framing = Framing::Body {
            left: length,
            since: now,
        };
        self.set_deadline(None);
    }

    /// Bytes of a response made by the reactor (a download's head and
    /// body), queued as they are; nothing more is read.
    pub fn push_raw(&mut self, bytes: &[u8]) {
        self.wire.push_always(bytes);
        if !matches!(self.framing, Framing::Done) {
            self.framing = Framing::Held;
        }
    }

    /// The reactor streams a big response on this connection (a download)
    /// with [`Transport::push_raw`]: while `on`, its buffers are kept from
    /// one piece to the next instead of being freed as each is written, up
    /// to [`BULK_KEEP`] each.
    pub fn set_bulk(&mut self, on: bool) {
        self.bulk = on;
    }

    /// The allocation an output buffer keeps once it is all written.
    fn keep(&self) -> usize {
        if self.bulk { BULK_KEEP } else { KEEP_CAPACITY }
    }

    /// Whether the socket is read at all: not while a files request waits
    /// for the reactor's answer.
    pub fn reading(&self) -> bool {
        !matches!(self.framing, Framing::Held)
    }

    /// The deadline the transport waits for, if any (a new one after
    /// [`Input::Deadline`]; the 10 s HTTP wait is handed out this way too).
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// A limit refused the client a trusted proxy named: queues `line` (a
    /// protocol error line) in the form this client reads, an HTTP answer
    /// (`429`) for an HTTP client, the line itself otherwise, and reads no
    /// more.
    pub fn refuse(&mut self, line: &[u8]) {
        let http = matches!(self.framing, Framing::Http | Framing::Route(_));
        if http {
            let answer = http::respond(
                429,
                "Too Many Requests",
                &[],
                "text/plain; charset=utf-8",
                line,
                self.is_tls(),
            );
            self.wire.push_always(&answer);
        } else {
            self.wire.push_always(line);
        }
        self.framing = Framing::Done;
    }

    /// The connection is closing: after the queued output, end the stream
    /// cleanly (a WebSocket close frame, a TLS close_notify).
    pub fn finish(&mut self) {
        self.finishing = true;
    }

    /// Output the transport made itself (WebSocket pongs, HTTP answers, TLS
    /// records) piles up unread: read no more input until it drains, so a
    /// peer that floods pings and never reads is held back by TCP, not by
    /// our memory.
    pub fn input_paused(&self) -> bool {
        self.wire.pending() >= WIRE_HIGH
            || self
                .tls
                .as_ref()
                .is_some_and(|t| t.outgoing_len() >= 2 * WIRE_HIGH)
            || self.offload.input_full()
            // Plaintext the framing has not taken (a worker's, while the
            // framing waits for its state to come back).
            || self.input.len() >= INPUT_HIGH
    }

    /// Bytes encoded for the socket and not yet taken by it (WebSocket
    /// frames, HTTP answers, TLS records).
    pub fn unsent(&self) -> usize {
        self.wire.pending()
            + self.tls.as_ref().map_or(0, TlsStream::outgoing_len)
            + self.offload.away_unsent
    }

    /// Whether anything is queued below the session's own output.
    pub fn has_pending(&self) -> bool {
        !self.wire.is_empty()
            || self.tls.as_ref().is_some_and(TlsStream::wants_write)
            || self.offload.away
    }

    /// Queues a WebSocket ping (nothing for other framings).
    pub fn ping(&mut self) {
        if let Framing::Ws(state) = &mut self.framing
            && !state.close_sent
        {
            state.ws.ping(&mut self.input, &mut self.wire);
        }
    }

    /// Writes `out` (the session's lines) and everything queued below it
    /// to `sock`, until done or the socket would block.
    pub fn flush(&mut self, sock: &mut impl Write, out: &mut Outbox) -> io::Result<Flushed> {
        let keep = self.keep();
        loop {
            let ws = self.encode_ws(out);
            if self.offload.away {
                // The worker's return brings the records and a flush.
                return Ok(Flushed::All);
            }
            match &mut self.tls {
                None => {
                    if self.wire.write_keeping(sock, keep)? == Flushed::Partly {
                        return Ok(Flushed::Partly);
                    }
                    if !ws && out.write_to(sock)? == Flushed::Partly {
                        return Ok(Flushed::Partly);
                    }
                    if out.is_empty() {
                        return Ok(Flushed::All);
                    }
                }
                Some(tls) => {
                    // Records already made go first: until the socket has
                    // taken them, nothing more is encrypted.
                    if tls.outgoing().write_keeping(sock, keep)? == Flushed::Partly {
                        return Ok(Flushed::Partly);
                    }
                    let before = (self.wire.pending(), out.pending());
                    // HTTP answers and WebSocket frames first, then the
                    // session's lines; close_notify after the last byte.
                    if self.offload.seals(tls, self.wire.pending()) {
                        // A bulk answer is encrypted by a worker
                        // (`take_crypto`); its return flushes again.
                        return Ok(Flushed::All);
                    }
                    let tls_error = |e: rustls::Error| io::Error::other(e.to_string());
                    // (For WebSocket the close frame is in `wire` once `out` is empty.)
                    let last = self.finishing && out.is_empty();
                    tls.send(&mut self.wire, last, keep).map_err(tls_error)?;
                    if !ws && self.wire.is_empty() {
                        tls.send(out, self.finishing, KEEP_CAPACITY)
                            .map_err(tls_error)?;
                    }
                    if tls.wants_write() {
                        // New records: write them (the socket may take them,
                        // and an edge-triggered socket that could take more
                        // would never say so again).
                        continue;
                    }
                    if self.wire.is_empty() && out.is_empty() {
                        return Ok(Flushed::All);
                    }
                    if before == (self.wire.pending(), out.pending()) {
                        // Nothing taken: the handshake is not done yet.
                        return Ok(Flushed::Partly);
                    }
                }
            }
        }
    }

    /// Frames the session's lines as WebSocket messages into `wire`, as far
    /// as it has room; true on a WebSocket connection.
    fn encode_ws(&mut self, out: &mut Outbox) -> bool {
        let Framing::Ws(state) = &mut self.framing else {
            return false;
        };
        while !out.is_empty() && self.wire.pending() < WIRE_HIGH {
            let unsent = out.unsent();
            let (line, used) = match memchr::memchr(b'\n', unsent) {
                Some(i) => (&unsent[..i], i + 1),
                None => (unsent, unsent.len()),
            };
            if !state.close_sent {
                state.ws.send_line(line, &mut self.input, &mut self.wire);
            }
            out.consume(used);
        }
        if self.finishing && out.is_empty() && !state.close_sent {
            state.close_sent = true;
            state.ws.close_normally(&mut self.input, &mut self.wire);
        }
        true
    }

    /// Frees idle buffers; true if anything was freed. A bulk sender's
    /// are not idle between pieces.
    pub fn release(&mut self) -> bool {
        let a = self.input.release();
        if self.bulk {
            return a;
        }
        let b = self.wire.release();
        let c = self.tls.as_mut().is_some_and(|t| t.outgoing().release());
        a || b || c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn settings(tls: Option<Arc<rustls::ServerConfig>>) -> Settings {
        Settings {
            tls,
            plaintext_any: false,
            allowed_origins: Vec::new(),
            max_line: 64,
        }
    }

    /// Everything the transport hands out for `bytes` fed in pieces cut at
    /// `cuts`, as text; lines are pulled as soon as they are there.
    fn inputs(t: &mut Transport, s: &Settings, now: Instant, bytes: &[u8]) -> Vec<String> {
        t.receive(bytes);
        let mut out = Vec::new();
        while let Some(input) = t.next_input(now, s) {
            out.push(match input {
                Input::Line(l) => format!("line {}", String::from_utf8_lossy(l)),
                Input::Deadline(_) => "deadline".into(),
                other => format!("{other:?}"),
            });
        }
        out
    }

    #[test]
    fn the_line_protocol_is_recognised_however_the_bytes_are_split() {
        let s = settings(None);
        let now = Instant::now();
        let whole = b"L\r\nalice\npw word\n";
        let mut expect = Vec::new();
        let mut t = Transport::new(true, false);
        expect.extend(inputs(&mut t, &s, now, whole));
        assert_eq!(expect, ["Start", "line L", "line alice", "line pw word"]);
        for cut in 1..whole.len() {
            let mut t = Transport::new(true, false);
            let mut got = inputs(&mut t, &s, now, &whole[..cut]);
            got.extend(inputs(&mut t, &s, now, &whole[cut..]));
            got.retain(|x| x != "deadline");
            assert_eq!(got, expect, "cut at {cut}");
        }
    }

    #[test]
    fn a_silent_client_is_greeted_after_the_wait_and_junk_is_closed() {
        let s = settings(None);
        let now = Instant::now();
        let mut t = Transport::new(true, false);
        assert_eq!(inputs(&mut t, &s, now, b""), ["deadline"]);
        assert!(t.next_input(now + SNIFF_WAIT / 2, &s).is_none());
        assert_eq!(t.next_input(now + SNIFF_WAIT, &s), Some(Input::Start));
        let mut t = Transport::new(true, false);
        assert_eq!(
            inputs(&mut t, &s, now, b"\0\0\0"),
            ["Close(\"binary junk\")"]
        );
        assert!(!t.has_pending(), "no reply to junk");
    }

    #[test]
    fn plain_text_from_another_host_is_refused_with_one_line() {
        let s = settings(None);
        let mut t = Transport::new(false, false);
        let got = inputs(&mut t, &s, Instant::now(), b"L\n");
        assert_eq!(got, ["Close(\"plain text from another host\")"]);
        let mut wire = Vec::new();
        let mut out = Outbox::default();
        t.flush(&mut wire, &mut out).expect("flush");
        assert_eq!(wire, NEEDS_TLS);
        let any = Settings {
            plaintext_any: true,
            ..settings(None)
        };
        let mut t = Transport::new(false, false);
        assert_eq!(
            inputs(&mut t, &any, Instant::now(), b"L\n"),
            ["Start", "line L"]
        );
    }

    #[test]
    fn a_proxy_header_is_read_only_from_a_trusted_peer() {
        let s = settings(None);
        let header = b"PROXY TCP4 203.0.113.9 127.0.0.1 5555 59000\r\nL\n";
        let mut t = Transport::new(true, true);
        assert_eq!(
            inputs(&mut t, &s, Instant::now(), header),
            ["Client(203.0.113.9:5555)", "Start", "line L"]
        );
        // From anyone else it is not honoured, nor taken for chat.
        let mut t = Transport::new(true, false);
        assert_eq!(
            inputs(&mut t, &s, Instant::now(), header),
            ["Close(\"PROXY header from an address not in --proxy-from\")"]
        );
        // But a line that merely starts like one, after the greeting, is chat.
        let mut t = Transport::new(true, false);
        assert_eq!(
            inputs(&mut t, &s, Instant::now(), b"PRIVMSG x\n"),
            ["Start", "line PRIVMSG x"]
        );
    }

    #[test]
    fn an_http_request_is_answered_and_closed() {
        let s = settings(None);
        let mut t = Transport::new(true, false);
        let got = inputs(
            &mut t,
            &s,
            Instant::now(),
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        );
        assert_eq!(got, ["Close(\"HTTP request answered\")"]);
        let mut wire = Vec::new();
        t.flush(&mut wire, &mut Outbox::default()).expect("flush");
        assert!(wire.starts_with(b"HTTP/1.1 200 OK\r\n"));
        assert!(wire.ends_with(b"\r\n\r\nok\n"));
    }

    // ---- TLS, with an in-memory rustls client ----

    fn server_config() -> Arc<rustls::ServerConfig> {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(made.signing_key.serialize_der().into());
        let mut config = rustls::ServerConfig::builder_with_provider(tls::provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![made.cert.der().clone()], key)
            .expect("config");
        config.alpn_protocols = vec![tls::ALPN_HTTP.to_vec()];
        CERT.with(|c| *c.borrow_mut() = Some(made.cert.der().clone()));
        Arc::new(config)
    }

    thread_local! {
        static CERT: std::cell::RefCell<Option<rustls::pki_types::CertificateDer<'static>>> =
            const { std::cell::RefCell::new(None) };
    }

    fn client(alpn: bool) -> rustls::ClientConnection {
        let mut roots = rustls::RootCertStore::empty();
        let cert = CERT
            .with(|c| c.borrow().clone())
            .expect("server made first");
        roots.add(cert).expect("root");
        let mut config = rustls::ClientConfig::builder_with_provider(tls::provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        if alpn {
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
        }
        rustls::ClientConnection::new(Arc::new(config), "localhost".try_into().expect("name"))
            .expect("client")
    }

    /// Runs the jobs the transport hands out, as a worker would, and
    /// returns what it handed out after each.
    fn work(t: &mut Transport, s: &Settings, now: Instant) -> Vec<String> {
        let mut seen = Vec::new();
        while let Some(job) = t.take_crypto(true) {
            assert!(t.crypto_away() && t.has_pending(), "away until done");
            t.crypto_done(job.run());
            seen.extend(inputs(t, s, now, &[]));
        }
        seen
    }

    /// A server transport over TLS (its TLS work on "workers" when
    /// `offload`) and a client (offering http/1.1 when `alpn`), past the
    /// handshake.
    fn handshaken(
        alpn: bool,
        offload: bool,
    ) -> (
        Settings,
        Instant,
        Transport,
        rustls::ClientConnection,
        Outbox,
    ) {
        let s = settings(Some(server_config()));
        let now = Instant::now();
        let mut t = Transport::new(true, false);
        t.set_offload(offload);
        let mut c = client(alpn);
        let mut out = Outbox::default();
        exchange(&mut t, &mut c, &s, &mut out, now);
        (s, now, t, c, out)
    }

    /// Moves bytes both ways until neither side has anything to say,
    /// running any job the transport hands out (with `set_offload`) as a
    /// worker would between the steps; returns what the transport handed
    /// out and the plaintext the client read.
    fn exchange(
        t: &mut Transport,
        c: &mut rustls::ClientConnection,
        s: &Settings,
        out: &mut Outbox,
        now: Instant,
    ) -> (Vec<String>, Vec<u8>) {
        let mut seen = Vec::new();
        let mut plain = Vec::new();
        for _ in 0..20 {
            let mut to_server = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut to_server).expect("client writes");
            }
            seen.extend(inputs(t, s, now, &to_server));
            seen.extend(work(t, s, now));
            let mut to_client = Vec::new();
            t.flush(&mut to_client, out).expect("server writes");
            if t.take_crypto(true)
                .map(|job| t.crypto_done(job.run()))
                .is_some()
            {
                t.flush(&mut to_client, out).expect("server writes");
            }
            let mut rd = &to_client[..];
            let mut buf = [0u8; 16384];
            while !rd.is_empty() {
                if c.read_tls(&mut rd).expect("client reads") == 0 {
                    break;
                }
                c.process_new_packets().expect("client accepts");
                while let Ok(n) = std::io::Read::read(&mut c.reader(), &mut buf) {
                    if n == 0 {
                        break;
                    }
                    plain.extend_from_slice(&buf[..n]);
                }
            }
            if to_server.is_empty() && to_client.is_empty() {
                break;
            }
        }
        (seen, plain)
    }

    #[test]
    fn tls_carries_the_line_protocol_and_ends_with_close_notify() {
        let config = server_config();
        let s = settings(Some(config));
        let now = Instant::now();
        let mut t = Transport::new(true, false);
        let mut c = client(false);
        std::io::Write::write_all(&mut c.writer(), b"L\nalice\n").expect("queue");
        let mut out = Outbox::default();
        let (seen, _) = exchange(&mut t, &mut c, &s, &mut out, now);
        assert_eq!(seen, ["Start", "line L", "line alice"], "inside TLS, lines");
        assert!(t.is_tls());
        out.push_always(b"* bye\n");
        t.finish();
        let (_, plain) = exchange(&mut t, &mut c, &s, &mut out, now);
        assert_eq!(plain, b"* bye\n");
        let mut buf = [0u8; 16];
        assert_eq!(
            std::io::Read::read(&mut c.reader(), &mut buf).expect("clean close"),
            0,
            "close_notify after the last line"
        );
    }

    #[test]
    fn alpn_http_means_http_at_once() {
        let s = settings(Some(server_config()));
        let now = Instant::now();
        let mut t = Transport::new(true, false);
        let mut c = client(true);
        let mut out = Outbox::default();
        let (seen, _) = exchange(&mut t, &mut c, &s, &mut out, now);
        // No deadline inside TLS: the request may come much later.
        // The client spoke first, so no 0.3 s wait; inside TLS only the
        // 10 s limit on the request head, however long the browser waits.
        assert_eq!(seen, ["deadline"]);
        assert_eq!(t.deadline(), Some(now + HTTP_HEAD_WAIT));
        let later = now + Duration::from_secs(5);
        assert!(
            t.next_input(later, &s).is_none(),
            "still waiting for the request"
        );
        std::io::Write::write_all(&mut c.writer(), b"GET /healthz HTTP/1.1\r\n\r\n").expect("q");
        let (seen, plain) = exchange(&mut t, &mut c, &s, &mut out, later);
        assert_eq!(seen, ["Close(\"HTTP request answered\")"]);
        assert!(plain.starts_with(b"HTTP/1.1 200 OK\r\n"), "{plain:?}");
        assert!(String::from_utf8_lossy(&plain).contains("Strict-Transport-Security"));
    }

    /// A socket that takes at most `room` bytes, then would block.
    struct Sink {
        room: usize,
        got: usize,
    }

    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.room == 0 {
                return Err(std::io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            self.got += n;
            Ok(n)
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_flush_over_tls_goes_on_while_the_socket_takes_more() {
        let (_, _, mut t, _, mut out) = handshaken(true, false);
        assert!(t.is_tls());
        t.push_raw(&vec![7u8; 1 << 20]);
        // A socket that is full: the records made wait for it.
        let mut full = Sink { room: 0, got: 0 };
        assert_eq!(
            t.flush(&mut full, &mut out).expect("flush"),
            Flushed::Partly
        );
        // Once it has room for everything, one flush writes everything:
        // edge-triggered, no second event would come for the rest.
        let mut open = Sink {
            room: usize::MAX,
            got: 0,
        };
        assert_eq!(t.flush(&mut open, &mut out).expect("flush"), Flushed::All);
        assert!(open.got > 1 << 20, "all of it, as records");
        assert!(!t.has_pending());
    }

    // ---- TLS work on workers (`offload`), the worker run in place by `exchange` ----

    #[test]
    fn with_offload_the_handshake_goes_to_a_worker_and_chat_lines_stay_here() {
        let s = settings(Some(server_config()));
        let now = Instant::now();
        let mut t = Transport::new(true, false);
        t.set_offload(true);
        let mut c = client(false);
        let mut hello = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut hello).expect("client writes");
        }
        assert!(inputs(&mut t, &s, now, &hello).is_empty());
        assert!(t.is_tls());
        let job = t.take_crypto(true).expect("the ClientHello is a worker's");
        assert!(t.crypto_away());
        // While it is away, nothing is written, and nothing counts as done.
        let mut wire = Vec::new();
        let mut out = Outbox::default();
        t.flush(&mut wire, &mut out).expect("flush");
        assert!(wire.is_empty() && t.has_pending());
        assert!(t.take_crypto(true).is_none(), "one job at a time");
        t.crypto_done(job.run());
        assert!(!t.crypto_away());
        std::io::Write::write_all(&mut c.writer(), b"L\nalice\n").expect("queue");
        // The server's flight was not written yet: exchange goes on from it.
        let (seen, _) = exchange(&mut t, &mut c, &s, &mut out, now);
        assert_eq!(seen, ["Start", "line L", "line alice"]);
        // A chat line after the handshake is opened in place.
        std::io::Write::write_all(&mut c.writer(), b"hello\n").expect("queue");
        let mut rec = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut rec).expect("client writes");
        }
        assert_eq!(inputs(&mut t, &s, now, &rec), ["line hello"]);
        assert!(t.take_crypto(true).is_none());
        out.push_always(b"* bye\n");
        t.finish();
        let (_, plain) = exchange(&mut t, &mut c, &s, &mut out, now);
        assert_eq!(plain, b"* bye\n");
        let mut buf = [0u8; 16];
        assert_eq!(
            std::io::Read::read(&mut c.reader(), &mut buf).expect("clean close"),
            0,
            "close_notify after the last line"
        );
    }

    #[test]
    fn a_bulk_sender_keeps_its_buffers_from_piece_to_piece() {
        for offload in [true, false] {
            let (s, now, mut t, mut c, mut out) = handshaken(true, offload);
            let piece = 256 * 1024;
            let kept = |t: &mut Transport| {
                let records = t.tls.as_mut().map_or(0, |tls| tls.outgoing().capacity());
                (t.wire.capacity(), records)
            };
            t.set_bulk(true);
            for n in 0..3u8 {
                t.push_raw(&vec![n; piece]);
                let (_, plain) = exchange(&mut t, &mut c, &s, &mut out, now);
                assert!(plain == vec![n; piece], "piece {n} (offload {offload})");
                assert!(!t.has_pending());
                t.release();
                let (wire, records) = kept(&mut t);
                // (On the loop, records are made 64 KiB at a time.)
                assert!(
                    wire >= piece && records > KEEP_CAPACITY,
                    "piece {n} (offload {offload}): {wire} and {records} bytes kept"
                );
            }
            // Once the download ends, its last bytes drain as any output
            // does, freed as they are written.
            t.set_bulk(false);
            t.push_raw(&vec![9; piece]);
            let (_, plain) = exchange(&mut t, &mut c, &s, &mut out, now);
            assert!(plain == vec![9; piece]);
            assert_eq!(kept(&mut t), (0, 0), "offload {offload}");
        }
    }

    #[test]
    fn with_offload_a_bulk_answer_is_sealed_away_and_later_output_follows_it() {
        let (s, now, mut t, mut c, mut out) = handshaken(true, true);
        t.push_raw(&vec![b'a'; 100 * 1024]);
        let mut wire = Vec::new();
        assert_eq!(t.flush(&mut wire, &mut out).expect("flush"), Flushed::All);
        assert!(wire.is_empty(), "sealed by a worker, not here");
        assert!(t.unsent() >= 100 * 1024, "limits still count it");
        let job = t.take_crypto(true).expect("a bulk seal");
        assert_eq!(job.len(), 100 * 1024);
        // Made while the state is away: must come after.
        t.push_raw(b"bbbb");
        t.flush(&mut wire, &mut out).expect("flush");
        assert!(wire.is_empty());
        t.crypto_done(job.run());
        let (_, plain) = exchange(&mut t, &mut c, &s, &mut out, now);
        assert_eq!(plain.len(), 100 * 1024 + 4);
        assert!(plain[..100 * 1024].iter().all(|&b| b == b'a'));
        assert_eq!(&plain[100 * 1024..], b"bbbb");
        assert!(!t.has_pending());
    }

    #[test]
    fn with_offload_an_upload_s_end_waits_behind_records_still_away() {
        let (s, now, mut t, mut c, mut out) = handshaken(true, true);
        let body = vec![b'x'; 64 * 1024];
        let head = format!(
            "PUT /files/abc HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        std::io::Write::write_all(&mut c.writer(), head.as_bytes()).expect("queue");
        let (seen, _) = exchange(&mut t, &mut c, &s, &mut out, now);
        assert_eq!(seen.len(), 1);
        assert!(seen[0].starts_with("File("), "{seen:?}");
        t.begin_body(body.len() as u64, false, now);
        std::io::Write::write_all(&mut c.writer(), &body).expect("queue");
        let mut records = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut records).expect("client writes");
        }
        // The body's records, then the end of input, arrive before the
        // worker has opened them: the body is whole all the same.
        let early = inputs(&mut t, &s, now, &records);
        assert!(early.iter().all(|i| i == "deadline"), "{early:?}");
        let job = t.take_crypto(true).expect("bulk records are a worker's");
        t.receive_eof();
        assert!(t.eof(), "no more reading");
        assert!(
            t.next_input(now, &s).is_none(),
            "nothing before the records"
        );
        t.crypto_done(job.run());
        let got = inputs(&mut t, &s, now, &[]);
        let bytes: usize = got
            .iter()
            .filter_map(|g| g.strip_prefix("Body(["))
            .map(|g| g.matches(',').count() + 1)
            .sum();
        assert_eq!(bytes, body.len(), "{:?}", &got.last());
        assert_eq!(got.last().map(String::as_str), Some("BodyDone"));
    }

    #[test]
    fn bytes_still_with_a_worker_are_not_silence_when_the_wait_ends() {
        // No ALPN: after the handshake the first bytes decide, within 0.3 s.
        let (s, now, mut t, mut c, _) = handshaken(false, true);
        assert!(t.next_input(now, &s).is_none(), "the 0.3 s wait begins");
        let head = "PUT /files/abc HTTP/1.1\r\nContent-Length: 20000\r\n\r\n";
        std::io::Write::write_all(&mut c.writer(), head.as_bytes()).expect("queue");
        std::io::Write::write_all(&mut c.writer(), &[b'x'; 20_000]).expect("queue");
        let mut records = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut records).expect("client writes");
        }
        let soon = now + Duration::from_millis(100);
        assert!(inputs(&mut t, &s, soon, &records).is_empty());
        // Not from a flush: a flush sends only output to seal.
        assert!(t.take_crypto(false).is_none());
        let job = t.take_crypto(true).expect("bulk records are a worker's");
        // The worker is slow: the wait is over before the bytes are back.
        let late = now + Duration::from_millis(400);
        assert!(
            t.next_input(late, &s).is_none(),
            "not greeted as a line client"
        );
        t.crypto_done(job.run());
        let got = inputs(&mut t, &s, late, &[]);
        assert!(
            got.first().is_some_and(|g| g.starts_with("File(")),
            "{got:?}"
        );
    }

    #[test]
    fn plaintext_the_framing_has_not_taken_pauses_reading_at_a_bound() {
        let (s, now, mut t, mut c, mut out) = handshaken(true, true);
        // A files request: the framing holds until the reactor answers,
        // and the body's bytes pile up meanwhile.
        let head = "PUT /files/abc HTTP/1.1\r\nContent-Length: 1000000\r\n\r\n";
        std::io::Write::write_all(&mut c.writer(), head.as_bytes()).expect("queue");
        let (seen, _) = exchange(&mut t, &mut c, &s, &mut out, now);
        assert!(seen[0].starts_with("File("), "{seen:?}");
        let mut fed = 0;
        while !t.input_paused() {
            assert!(fed < 1 << 20, "reading never paused");
            std::io::Write::write_all(&mut c.writer(), &[b'x'; 32 * 1024]).expect("queue");
            let mut records = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut records).expect("client writes");
            }
            t.receive(&records);
            if let Some(job) = t.take_crypto(true) {
                t.crypto_done(job.run());
            }
            fed += 32 * 1024;
        }
        assert!(fed <= INPUT_HIGH + 64 * 1024, "paused after {fed}");
    }

    #[test]
    fn garbage_inside_a_handshake_gets_an_alert_and_a_close() {
        let s = settings(Some(server_config()));
        let mut t = Transport::new(true, false);
        let mut hello = vec![0x16, 0x03, 0x01, 0x00, 0x30];
        hello.extend(std::iter::repeat_n(0xab, 0x30));
        let got = inputs(&mut t, &s, Instant::now(), &hello);
        assert_eq!(got, ["Close(\"TLS error\")"]);
        let mut wire = Vec::new();
        t.flush(&mut wire, &mut Outbox::default()).expect("flush");
        assert!(
            wire.is_empty() || wire[0] == 0x15,
            "an alert record or nothing: {wire:?}"
        );
        // Nothing more is read or answered.
        assert!(inputs(&mut t, &s, Instant::now(), &hello).is_empty());
    }

    #[test]
    fn with_tls_off_a_client_hello_is_closed_at_once() {
        let s = settings(None);
        let mut t = Transport::new(true, false);
        let got = inputs(&mut t, &s, Instant::now(), &[0x16, 0x03, 0x01, 0x00, 0x05]);
        assert_eq!(got, ["Close(\"TLS handshake with TLS off\")"]);
        assert!(!t.has_pending());
    }
}
