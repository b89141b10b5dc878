//! The TLS workers: threads that open and seal records for the loop, so
//! that a handshake's key exchange or a transfer's megabytes never hold a
//! turn (see `transport::offload` for what goes and when).
//!
//! A connection has at most one job out at a time, so the queue is bounded
//! by the number of connections; each job carries that connection's TLS
//! state and is answered on one channel, then the loop is woken through
//! the one `mio::Waker`, like the auth workers. The threads run at nice 10:
//! on a small machine this work must wait for the chat, never the chat for
//! it. A job that panics (a bug in the TLS library) loses its state: its
//! connection is closed, the worker goes on.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use log::warn;

use super::conn::Closing;
use crate::session::ConnId;
use crate::transport::offload::{Crypto, CryptoDone};

/// A job: the connection, the work, and whether its CPU time is the
/// backlog's (decided when it is shipped).
type Job = (ConnId, Box<Crypto>, bool);
/// A job's answer (`None` if it panicked), the CPU time it took, and the
/// job's backlog flag.
pub(super) type Answer = (ConnId, Option<CryptoDone>, Duration, bool);

pub(super) struct Pool {
    jobs: Option<Sender<Job>>,
    answers: Receiver<Answer>,
    threads: Vec<JoinHandle<()>>,
}

impl Pool {
    /// Starts `n` workers (at least one).
    pub(super) fn start(n: usize, wake: Arc<dyn Fn() + Send + Sync>) -> std::io::Result<Pool> {
        let (jobs, rx) = crossbeam_channel::unbounded::<Job>();
        let (tx, answers) = crossbeam_channel::unbounded();
        let mut threads = Vec::new();
        for i in 0..n.max(1) {
            let rx = rx.clone();
            let tx: Sender<Answer> = tx.clone();
            let wake = wake.clone();
            let thread = std::thread::Builder::new()
                .name(format!("tls-{i}"))
                .spawn(move || {
                    crate::files::below_the_loop();
                    let clock = crate::auth::CpuClock::current();
                    let cpu = || clock.and_then(|c| c.read()).unwrap_or_default();
                    for (id, job, backlog) in rx {
                        let began = cpu();
                        let done = catch_unwind(AssertUnwindSafe(|| job.run())).ok();
                        if done.is_none() {
                            warn!("conn {}: a TLS job panicked; closing it", id.key);
                        }
                        if tx
                            .send((id, done, cpu().saturating_sub(began), backlog))
                            .is_err()
                        {
                            return;
                        }
                        wake();
                    }
                })?;
            threads.push(thread);
        }
        Ok(Pool {
            jobs: Some(jobs),
            answers,
            threads,
        })
    }

    /// Queues a job; gives it back if the workers are gone.
    fn submit(&self, id: ConnId, job: Box<Crypto>, backlog: bool) -> Result<(), Box<Crypto>> {
        match &self.jobs {
            Some(jobs) => jobs.send((id, job, backlog)).map_err(|e| e.into_inner().1),
            None => Err(job),
        }
    }

    pub(super) fn try_recv(&self) -> Option<Answer> {
        self.answers.try_recv().ok()
    }
}

impl Drop for Pool {
    /// The workers finish the jobs they hold and stop.
    fn drop(&mut self) {
        self.jobs = None;
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl super::Server {
    /// Hands `key`'s waiting TLS work, if any, to a worker: records to
    /// open only with `open` (from a read, after the framing took what came
    /// back; see `Transport::take_crypto`), output to seal always.
    pub(super) fn ship_crypto(&mut self, key: usize, open: bool) {
        let Some(pool) = &self.crypto else {
            return;
        };
        let Some(conn) = self.conns.at_mut(key) else {
            return;
        };
        if conn.closing == Some(Closing::Now) {
            return;
        }
        let Some(job) = conn.transport.take_crypto(open) else {
            return;
        };
        // A login's handshake, the page for a visitor: backlog work, paid
        // from the backlog's share (`backlog`), so that a storm of them is
        // paced as when it ran on the loop. A transfer's bulk and a
        // chatting user's records are not.
        let backlog = !conn.session.is_chatting() && conn.transfer.is_none();
        let id = conn.id;
        if let Err(job) = pool.submit(id, job, backlog) {
            // The workers are gone: the work is done here, and what it
            // brought is taken next turn.
            conn.transport.crypto_done(job.run());
            if !conn.dirty {
                conn.dirty = true;
                self.dirty.push(key);
            }
            self.read_again(id);
        }
    }

    /// Takes back what the workers finished: records go out with the next
    /// flush, plaintext to the framing and the session (now, or in the
    /// backlog's slice for a connection not chatting yet), and the socket is
    /// read again (reading paused while the state was away, and no new edge
    /// may come).
    pub(super) fn drain_crypto(&mut self, now: Instant) {
        while let Some((id, done, cpu, backlog)) = self.crypto.as_ref().and_then(Pool::try_recv) {
            if backlog {
                self.backlog.charge(cpu);
            }
            let Some(conn) = self.conns.get_mut(id) else {
                continue;
            };
            let Some(done) = done else {
                self.mark_closing(id, Closing::Now, "TLS job failed");
                continue;
            };
            conn.transport.crypto_done(done);
            if backlog {
                // A handshake's flight or an HTTP answer: written in the
                // backlog's next slice, like a login's welcome.
                self.hold(id);
            } else if !conn.dirty {
                conn.dirty = true;
                self.dirty.push(id.key);
            }
            // The framing takes what came back before the next job goes:
            // raw bytes read meanwhile wait for that read, which ships
            // them (a framing that found the state away must see it back).
            self.read_or_defer(id.key, now);
        }
    }
}
