//! Black-box tests of `neochat-server`: the real binary on `127.0.0.1:0`,
//! driven over real sockets, asserting the exact lines of
//! `shared/PROTOCOL.md`. One test binary (`cargo test --test server`), one
//! module per area; helpers live in `util`.

mod abuse;
mod accounts_v2;
mod admin;
mod attacks;
mod backlog_fairness;
mod chat;
mod crash;
mod files_v2;
mod framing;
mod handshake;
mod harness;
mod hostile;
mod lifecycle;
mod limits;
mod moderation_v2;
mod output;
mod remote;
mod review;
mod robustness;
mod rooms;
mod rooms_v2;
mod secrets;
mod strangers;
mod transport;
mod util;
mod web_v2;
mod wire;
