//! Host-supplied time.
//!
//! The core never reads a clock. Every input that can depend on time takes `now`, an [`Instant`]
//! in microseconds from a monotonic clock the host picks (`mach_continuous_time`,
//! `CLOCK_MONOTONIC`, a hardware timer). [`Clock`] is the small guard each engine embeds so that a
//! `now` earlier than one already seen is clamped to the latest value instead of making time run
//! backwards.

use core::fmt;

/// A point in time: microseconds since an epoch the host chooses, on a monotonic clock.
///
/// Only differences between instants of the same clock mean anything.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Instant(u64);

impl Instant {
    /// The epoch of the host's clock.
    pub const ZERO: Instant = Instant(0);

    /// The latest representable instant; used as "never" by timers.
    pub const MAX: Instant = Instant(u64::MAX);

    /// An instant `micros` microseconds after the host's epoch.
    pub const fn from_micros(micros: u64) -> Self {
        Instant(micros)
    }

    /// An instant `millis` milliseconds after the host's epoch (saturating).
    pub const fn from_millis(millis: u64) -> Self {
        Instant(millis.saturating_mul(1_000))
    }

    /// Microseconds since the host's epoch.
    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// Microseconds from `earlier` to `self`, or 0 if `earlier` is later.
    pub const fn micros_since(self, earlier: Instant) -> u64 {
        self.0.saturating_sub(earlier.0)
    }

    /// This instant plus `micros`, saturating at [`Instant::MAX`].
    pub const fn saturating_add_micros(self, micros: u64) -> Instant {
        Instant(self.0.saturating_add(micros))
    }
}

impl fmt::Display for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}us", self.0)
    }
}

/// The latest `now` an engine has seen.
///
/// Hosts call engines from completion handlers on different queues and may read the clock before
/// taking a lock, so a `now` slightly older than the last one is normal. [`Clock::observe`] clamps
/// it: time seen by the engine never goes backwards, and nothing panics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Clock {
    latest: Instant,
}

impl Clock {
    /// A clock that has seen nothing later than `start`.
    pub const fn new(start: Instant) -> Self {
        Clock { latest: start }
    }

    /// Record `now` and return the time the engine should use: `now`, or the latest instant
    /// already seen if `now` is earlier.
    pub fn observe(&mut self, now: Instant) -> Instant {
        if now > self.latest {
            self.latest = now;
        }
        self.latest
    }

    /// The time the engine should use for `now` without recording it: what
    /// [`Clock::observe`] would return. A call that may still be refused reads the time with
    /// `peek` and records it with `observe` only once it has succeeded, so a refused call leaves
    /// the clock where it was.
    pub fn peek(&self, now: Instant) -> Instant {
        if now > self.latest { now } else { self.latest }
    }

    /// The latest instant observed.
    pub const fn latest(&self) -> Instant {
        self.latest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_clamps_time_going_backwards() {
        let mut clock = Clock::default();
        assert_eq!(
            clock.observe(Instant::from_micros(100)),
            Instant::from_micros(100)
        );
        assert_eq!(
            clock.observe(Instant::from_micros(40)),
            Instant::from_micros(100)
        );
        assert_eq!(clock.latest(), Instant::from_micros(100));
        assert_eq!(
            clock.observe(Instant::from_micros(101)),
            Instant::from_micros(101)
        );
    }

    #[test]
    fn peek_clamps_without_recording() {
        let clock = Clock::new(Instant::from_micros(100));
        assert_eq!(
            clock.peek(Instant::from_micros(40)),
            Instant::from_micros(100)
        );
        assert_eq!(
            clock.peek(Instant::from_micros(500)),
            Instant::from_micros(500)
        );
        assert_eq!(clock.latest(), Instant::from_micros(100));
    }

    #[test]
    fn arithmetic_saturates() {
        assert_eq!(
            Instant::from_micros(5).micros_since(Instant::from_micros(9)),
            0
        );
        assert_eq!(
            Instant::from_micros(9).micros_since(Instant::from_micros(5)),
            4
        );
        assert_eq!(Instant::MAX.saturating_add_micros(1), Instant::MAX);
        assert_eq!(Instant::from_millis(u64::MAX), Instant::MAX);
        assert_eq!(Instant::from_millis(3).as_micros(), 3_000);
    }
}
