//! WebSocket framing over a connection's own buffers: tungstenite's
//! `WebSocketContext` reads frames from the bytes received (an [`InBuf`])
//! and writes frames into the bytes to send, never touching the socket.
//! One text message is one protocol line, both ways.
//!
//! tungstenite's defaults suit a trusted peer, not a server: here messages
//! are bounded (`max_message_size`), its read buffer is small, and its
//! write buffer cannot grow because our "stream" never blocks.

use std::io::{self, Read, Write};

use tungstenite::Message;
use tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig, WebSocketContext};

use super::lines::InBuf;
use crate::reactor::outbox::Outbox;

/// A frame as the session sees it.
#[derive(Debug, PartialEq, Eq)]
pub enum WsFrame {
    /// One text message: one line.
    Line(String),
    /// A text message longer than the line limit (but within the message
    /// limit): answered like an over-long line.
    TooLong,
    /// The peer closed, or broke the protocol (a close frame with the
    /// reason is queued): no more input.
    End,
}

pub struct WebSocket {
    ctx: WebSocketContext,
    ended: bool,
}

/// The connection's buffers as tungstenite's stream: reads take from what
/// was received and report `WouldBlock` when it runs out; writes append to
/// the output and never block.
struct Mem<'a> {
    input: &'a mut InBuf,
    output: &'a mut Outbox,
}

impl Read for Mem<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let bytes = self.input.bytes();
        if bytes.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = bytes.len().min(buf.len());
        buf[..n].copy_from_slice(&bytes[..n]);
        self.input.consume(n);
        Ok(n)
    }
}

impl Write for Mem<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.push_always(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl WebSocket {
    /// A server-side WebSocket whose messages may be at most `max_message`
    /// bytes (over it: close code 1009).
    pub fn new(max_message: usize) -> WebSocket {
        let config = WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(0)
            .max_write_buffer_size(1 << 20)
            .max_message_size(Some(max_message))
            .max_frame_size(Some(max_message));
        WebSocket {
            ctx: WebSocketContext::new(Role::Server, Some(config)),
            ended: false,
        }
    }

    /// The next message from `input`, or `None` until more bytes arrive.
    /// Control frames are answered into `output` on the way.
    pub fn next(
        &mut self,
        input: &mut InBuf,
        output: &mut Outbox,
        max_line: usize,
    ) -> Option<WsFrame> {
        if self.ended {
            return None;
        }
        let mut mem = Mem { input, output };
        loop {
            let result = self.ctx.read(&mut mem);
            // Pongs and close replies queued by `read` go out now.
            let _ = self.ctx.flush(&mut mem);
            let code = match result {
                Ok(Message::Text(text)) => {
                    if text.len() > max_line {
                        return Some(WsFrame::TooLong);
                    }
                    return Some(WsFrame::Line(text.as_str().to_owned()));
                }
                Ok(Message::Binary(_)) => CloseCode::Unsupported,
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => continue,
                Ok(Message::Close(_)) => {
                    self.ended = true;
                    return Some(WsFrame::End);
                }
                Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(WsError::Capacity(CapacityError::MessageTooLong { .. })) => CloseCode::Size,
                Err(WsError::Capacity(_)) => CloseCode::Size,
                Err(WsError::Utf8(_)) => CloseCode::Invalid,
                Err(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)) => {
                    self.ended = true;
                    return Some(WsFrame::End);
                }
                Err(WsError::Protocol(_)) => CloseCode::Protocol,
                Err(_) => {
                    self.ended = true;
                    return Some(WsFrame::End);
                }
            };
            self.close(code, &mut mem);
            self.ended = true;
            return Some(WsFrame::End);
        }
    }

    fn close(&mut self, code: CloseCode, mem: &mut Mem<'_>) {
        let frame = CloseFrame {
            code,
            reason: "".into(),
        };
        let _ = self.ctx.close(mem, Some(frame));
        let _ = self.ctx.flush(mem);
    }

    /// Frames one line (without its LF) as a text message into `output`.
    pub fn send_line(&mut self, line: &[u8], input: &mut InBuf, output: &mut Outbox) {
        let text = String::from_utf8_lossy(line).into_owned();
        let mut mem = Mem { input, output };
        if self.ctx.write(&mut mem, Message::text(text)).is_ok() {
            let _ = self.ctx.flush(&mut mem);
        }
    }

    /// Queues a ping: browsers and proxies drop idle connections, and a
    /// vanished peer is found out.
    pub fn ping(&mut self, input: &mut InBuf, output: &mut Outbox) {
        let mut mem = Mem { input, output };
        if self
            .ctx
            .write(&mut mem, Message::Ping(Vec::new().into()))
            .is_ok()
        {
            let _ = self.ctx.flush(&mut mem);
        }
    }

    /// Queues a normal close (the server is closing the connection).
    pub fn close_normally(&mut self, input: &mut InBuf, output: &mut Outbox) {
        let mut mem = Mem { input, output };
        self.close(CloseCode::Normal, &mut mem);
    }
}
