//! NeoChat: a real-time chat server on one thread, and its line protocol.
//!
//! The crate is a library with thin binaries on top (`src/bin/`). Modules:
//!
//! - [`chat`]: the protocol as a pure state machine, one session per
//!   connection (AwaitingChoice -> Credentials -> Chatting), plus the hub
//!   every session shares: who is online on which connections, the rooms
//!   with their members and rings of recent history, catch-up and offline
//!   messages. No sockets, threads or clock: lines and events in, actions
//!   (and ops for the store) out.
//! - [`transport`]: between sockets and sessions: what a client speaks
//!   (TLS, HTTP, WebSocket, lines, junk, from the first bytes), TLS through
//!   rustls, the framings, PROXY headers. Bytes in, lines out; no mio.
//! - [`reactor`]: the mio event loop. Owns the listener, the slab of
//!   connections, their buffers, timers and signals, and carries out what
//!   sessions ask for (send, broadcast, close).
//! - [`config`]: every setting, its flag and its default, once.
//! - [`outbox`]: a connection's bounded output buffer.
//! - [`limits`]: per-source abuse limits (connections per address, pending
//!   logins, failed logins, registrations), counted without I/O.
//! - [`store`]: the SQLite database: opening it, its file modes, errors,
//!   numbered schema migrations, the queries per table, and the one store
//!   thread that makes every write in group commits (`store::Store`).
//! - [`files`]: the bytes of uploaded files on disk (content-addressed,
//!   beside the database), the upload being written, and how a file is
//!   served (its type from its bytes).
//! - [`admin`]: the work of the admin subcommands (`neochat-server op ...`,
//!   `users ...`) on a database, with the server stopped or running.
//! - [`auth`]: the worker pool that runs bcrypt (and reads accounts) off the
//!   loop and wakes it with results; new accounts go to the store thread.
//! - [`log_every`]: log lines for events that can repeat fast, throttled
//!   per call site.
//! - [`owner_only`]: files only their owner may read (the database, the
//!   certificate's key), whatever the umask.
//! - [`loadgen`]: the load generator behind `neochat-bench` and the load
//!   benchmark; a client of the server like any other.
//!
//! The wire protocol is described in `docs/protocol.md`.

pub mod admin;
pub mod auth;
pub mod chat;
pub mod config;
pub mod files;
pub mod limits;
pub mod loadgen;
pub mod log_every;
pub mod owner_only;
pub use reactor::outbox;
pub mod reactor;
pub mod store;
pub mod transport;

/// The chat session, under its version-1 path.
pub use chat::session;

pub use reactor::{Config, Server, ShutdownHandle};
