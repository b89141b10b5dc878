//! How much of the loop goes to connections that are not chatting yet.
//!
//! Accepting a connection, reading a login, handing over a password check
//! or a token's look-up, and entering a session into the chat are the
//! *backlog*: work that people already chatting must not wait behind. One
//! login is cheap, but 10,000 arriving at once (every client reconnecting
//! after a restart, with a token) would otherwise keep the loop busy for a
//! second, and everybody's lines with it.
//!
//! So the backlog has a budget of loop time: it accrues at [`SHARE`] of
//! the wall clock, up to [`BURST`], and each turn's backlog work (at most
//! a [`SLICE`]: first writing the output the last slice made, then new
//! work) is paid from it. While the budget
//! is spent, backlog work waits (the kernel holds new connections in the
//! listen queue, and the loop holds logins read) and the people chatting
//! have the loop. A quiet server never waits: one login costs far less than
//! the burst. In a storm the logins still go through at thousands a second
//! (10,000 token logins in about 3 s on 2 cores), and a line waits at
//! most one slice (BENCHMARKS.md, "Token logins").

use std::time::{Duration, Instant};

/// The most loop time given to backlog work in one turn. One unit of work
/// (a login read, a store answer, an accept, a write) takes 5-50 us; the
/// last one started may run past the slice. The output a slice made is
/// written in the next one, first ([`Work::Write`]): on loopback a write
/// costs more than the login that made it (20-40 us: it delivers the bytes
/// to the client in the same call), and written at the end of the turn, it
/// made every chat line read meanwhile wait for all of it. A slice of
/// 100 us made turns of 0.5-1 ms; at 30 us the chat pair's p99 in a storm
/// of 10,000 token logins was about half (BENCHMARKS.md, "A pair that
/// stands for clients on other machines"), the storm a third longer.
pub(super) const SLICE: Duration = Duration::from_micros(30);
/// The share of the loop's time the backlog may take, sustained.
pub(super) const SHARE: f64 = 0.25;
/// The most backlog time saved up while there was none: a quiet server's
/// login is never made to wait.
pub(super) const BURST: Duration = Duration::from_millis(2);
/// Units of each kind of backlog work an open turn allows even past its
/// slice, so that one kind (a flood of logins that never finish) cannot
/// take every slice from the others (password checks done, the store's
/// answers, new connections).
pub(super) const MIN_EACH: u32 = 1;

/// The kinds of backlog work, each with its share of a slice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Work {
    Accept = 0,
    Read = 1,
    Auth = 2,
    Store = 3,
    /// Writing the output the previous turn's backlog work made (a
    /// login's welcome, an HTTP answer).
    Write = 4,
}

pub(super) struct Backlog {
    /// Loop time the backlog may still use; it accrues at [`SHARE`] of the
    /// wall clock up to [`BURST`], and a slice spends what it took. Below
    /// zero after a long slice: the debt is paid before the next.
    credit: f64,
    /// When `credit` was last brought up to date.
    last: Instant,
    /// This turn may work on the backlog.
    open: bool,
    /// When this turn's slice began, once it has.
    began: Option<Instant>,
    /// Units of each kind of work this turn.
    done: [u32; 5],
}

impl Backlog {
    pub(super) fn new(now: Instant) -> Backlog {
        Backlog {
            credit: BURST.as_secs_f64(),
            last: now,
            open: false,
            began: None,
            done: [0; 5],
        }
    }

    fn accrue(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.credit = (self.credit + dt * SHARE).min(BURST.as_secs_f64());
        self.last = now;
    }

    /// A turn begins.
    pub(super) fn begin(&mut self, now: Instant) {
        self.accrue(now);
        self.open = self.credit > 0.0;
        self.began = None;
        self.done = [0; 5];
    }

    /// Whether one more unit of backlog work of this kind, at hand, fits in
    /// this turn. The first unit of a turn starts its slice: the work done
    /// before (the people chatting) does not count against it. A unit that
    /// turns out not to be there is handed back with [`Backlog::unused`].
    pub(super) fn may(&mut self, work: Work) -> bool {
        self.may_at(work, Instant::now())
    }

    fn may_at(&mut self, work: Work, now: Instant) -> bool {
        if !self.open {
            return false;
        }
        let done = &mut self.done[work as usize];
        let fits = match self.began {
            None => {
                self.began = Some(now);
                true
            }
            Some(began) => *done < MIN_EACH || now.duration_since(began) < SLICE,
        };
        *done += u32::from(fits);
        fits
    }

    /// The unit [`Backlog::may`] allowed was not there (nothing waited):
    /// a turn with no backlog work is not charged for.
    pub(super) fn unused(&mut self, work: Work) {
        let done = &mut self.done[work as usize];
        *done = done.saturating_sub(1);
        if self.done.iter().all(|&d| d == 0) {
            self.began = None;
        }
    }

    /// No backlog work for a while: its credit is whole again.
    pub(super) fn is_idle(&self) -> bool {
        self.credit >= BURST.as_secs_f64()
    }

    /// When the waiting backlog may be worked on again.
    pub(super) fn opens_at(&self) -> Instant {
        if self.credit > 0.0 {
            self.last
        } else {
            self.last + Duration::from_secs_f64(-self.credit / SHARE + 1e-6)
        }
    }

    /// Backlog work done elsewhere on the loop's behalf (a login's TLS
    /// handshake on a TLS worker) is paid for like the loop's own: logins
    /// take the same share of the machine wherever their work runs.
    pub(super) fn charge(&mut self, cpu: Duration) {
        self.credit -= cpu.as_secs_f64();
    }

    /// The turn ended at `now`, its output written: the slice and the
    /// output it made are paid for.
    pub(super) fn end(&mut self, now: Instant) {
        self.accrue(now);
        if let Some(began) = self.began {
            self.credit -= now.saturating_duration_since(began).as_secs_f64();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: Duration = Duration::from_micros(1);

    #[test]
    fn work_done_for_the_backlog_on_another_thread_is_paid_from_the_same_share() {
        let t0 = Instant::now();
        let mut b = Backlog::new(t0);
        b.begin(t0);
        assert!(b.may_at(Work::Read, t0));
        b.end(t0 + 10 * US);
        // A TLS worker spent 4 ms on handshakes the loop shipped.
        b.charge(Duration::from_millis(4));
        b.begin(t0 + 20 * US);
        assert!(!b.may_at(Work::Read, t0 + 20 * US), "paid for first");
        // 2 ms of it came from the saved-up burst; the other 2 ms are a
        // debt, paid back at a quarter of the wall clock in about 8 ms.
        let at = b.opens_at();
        let waited = at - t0;
        assert!(
            waited > Duration::from_millis(7) && waited < Duration::from_millis(9),
            "{waited:?}"
        );
        b.begin(at);
        assert!(b.may_at(Work::Read, at));
    }

    #[test]
    fn a_quiet_server_never_waits() {
        let t0 = Instant::now();
        let mut b = Backlog::new(t0);
        for i in 0..100u32 {
            // A login every 10 ms, 200 us of loop each.
            let t = t0 + 10_000 * i * US;
            b.begin(t);
            assert!(b.may_at(Work::Read, t), "login {i} waited");
            b.end(t + 200 * US);
            assert!(b.opens_at() <= t + 200 * US);
        }
    }

    #[test]
    fn a_slice_ends_after_its_time_but_each_kind_gets_its_few() {
        let t0 = Instant::now();
        let mut b = Backlog::new(t0);
        b.begin(t0);
        for i in 0..10 {
            assert!(b.may_at(Work::Read, t0 + i * US));
        }
        assert!(!b.may_at(Work::Read, t0 + SLICE));
        // Reads took the slice; the others still get MIN_EACH each.
        for work in [Work::Auth, Work::Store, Work::Accept, Work::Write] {
            for _ in 0..MIN_EACH {
                assert!(b.may_at(work, t0 + SLICE), "{work:?}");
            }
            assert!(!b.may_at(work, t0 + SLICE), "{work:?}");
        }
    }

    #[test]
    fn a_turn_without_backlog_work_is_not_charged() {
        // A chat turn every 1 ms, 400 us of output; each turn looks for
        // answers and finds none.
        let t0 = Instant::now();
        let mut b = Backlog::new(t0);
        let mut t = t0;
        for _ in 0..1000 {
            b.begin(t);
            assert!(b.may_at(Work::Auth, t));
            b.unused(Work::Auth);
            assert!(b.may_at(Work::Store, t));
            b.unused(Work::Store);
            t += 400 * US;
            b.end(t);
            assert!(b.is_idle());
            t += 600 * US;
        }
    }

    #[test]
    fn a_storm_gets_its_share_of_the_loop_and_no_more() {
        let t0 = Instant::now();
        let mut b = Backlog::new(t0);
        let mut t = t0;
        let mut spent = Duration::ZERO;
        // Always more to do: each turn works a slice, then the loop waits
        // for the budget (or serves the chat, 30 us a turn).
        while t < t0 + Duration::from_secs(1) {
            b.begin(t);
            if b.may_at(Work::Read, t) {
                let took = SLICE + 60 * US;
                spent += took;
                t += took;
            } else {
                t = t.max(b.opens_at()).max(t + 30 * US);
            }
            b.end(t);
        }
        let share = spent.as_secs_f64();
        assert!(
            share > SHARE * 0.9 && share < SHARE * 1.1 + BURST.as_secs_f64(),
            "backlog took {share:.3} s of 1 s"
        );
    }

    #[test]
    fn a_long_turn_is_paid_back_before_the_next_slice() {
        let t0 = Instant::now();
        let mut b = Backlog::new(t0);
        b.begin(t0);
        assert!(b.may_at(Work::Read, t0));
        let end = t0 + Duration::from_millis(10);
        b.end(end);
        b.begin(end + Duration::from_millis(1));
        assert!(!b.may_at(Work::Read, end + Duration::from_millis(1)));
        assert!(!b.is_idle());
        // 10 ms spent, 2 ms saved: 8 ms at a quarter of the clock.
        let open = b.opens_at();
        assert!(open >= end + Duration::from_millis(31), "{:?}", open - end);
        assert!(open <= end + Duration::from_millis(33), "{:?}", open - end);
        b.begin(open);
        assert!(b.may_at(Work::Read, open));
    }
}
