//! Log lines for events that can repeat fast (a failing `accept`, a failing
//! disk): at most one line per period at each call site, and the next line
//! says how many were left out. An attack or a flapping resource must not
//! flood the log (or the disk under it), yet the operator still sees that it
//! goes on.
//!
//! ```
//! use std::time::Duration;
//! # let e = "EMFILE";
//! neochat::warn_every!(Duration::from_secs(60), "accept failed ({e})");
//! ```
//!
//! Safe from any thread: the loop and the workers share nothing but two
//! atomics per call site.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The period the server uses for its repeating warnings.
pub const PERIOD: Duration = Duration::from_secs(60);

/// The throttle of one call site.
#[derive(Debug)]
pub struct Every {
    period_ms: u64,
    /// Milliseconds since [`epoch`] before which nothing is logged.
    next_ms: AtomicU64,
    /// Lines left out since the last one logged.
    suppressed: AtomicU64,
}

impl Every {
    pub const fn new(period: Duration) -> Every {
        Every {
            period_ms: period.as_millis() as u64,
            next_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when a line may be logged now, `n` being how many were left
    /// out since the last; `None` (and one more left out) otherwise.
    pub fn check(&self) -> Option<u64> {
        self.check_at(elapsed_ms())
    }

    fn check_at(&self, now_ms: u64) -> Option<u64> {
        let next = self.next_ms.load(Ordering::Relaxed);
        if now_ms >= next
            && self
                .next_ms
                .compare_exchange(
                    next,
                    now_ms.saturating_add(self.period_ms),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

/// The suffix of a line after `n` were left out.
pub fn suffix(n: u64) -> String {
    match n {
        0 => String::new(),
        n => format!(" ({n} more like it since the last one, not logged)"),
    }
}

fn elapsed_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// `log::log!` at `level`, at most once per `period` at this call site.
#[macro_export]
macro_rules! log_every {
    ($level:expr, $period:expr, $($arg:tt)+) => {{
        static EVERY: $crate::log_every::Every = $crate::log_every::Every::new($period);
        if let Some(left_out) = EVERY.check() {
            log::log!(
                $level,
                "{}{}",
                format_args!($($arg)+),
                $crate::log_every::suffix(left_out)
            );
        }
    }};
}

/// `log::warn!`, at most once per `period` at this call site.
#[macro_export]
macro_rules! warn_every {
    ($period:expr, $($arg:tt)+) => {
        $crate::log_every!(log::Level::Warn, $period, $($arg)+)
    };
}

/// `log::error!`, at most once per `period` at this call site.
#[macro_export]
macro_rules! error_every {
    ($period:expr, $($arg:tt)+) => {
        $crate::log_every!(log::Level::Error, $period, $($arg)+)
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_period_and_a_count_of_the_rest() {
        let every = Every::new(Duration::from_secs(60));
        assert_eq!(every.check_at(0), Some(0));
        for t in 1..1000 {
            assert_eq!(every.check_at(t), None);
        }
        assert_eq!(every.check_at(59_999), None);
        assert_eq!(every.check_at(60_000), Some(1000));
        assert_eq!(every.check_at(60_001), None);
        assert_eq!(every.check_at(500_000), Some(1));
    }

    #[test]
    fn suffix_says_how_many_were_left_out() {
        assert_eq!(suffix(0), "");
        assert_eq!(
            suffix(46_846),
            " (46846 more like it since the last one, not logged)"
        );
    }
}
