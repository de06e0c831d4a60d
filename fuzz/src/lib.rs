//! Helpers shared by the fuzz targets in `fuzz_targets/`.
//!
//! Every target decodes its input with `arbitrary` into a small configuration and a bounded
//! sequence of operations, runs them against an engine (or the C ABI) and checks invariants
//! after each step: a target fails on a wrong answer, not only on a crash.

use arbitrary::Arbitrary;

/// The most operations a target runs per input, so one input stays fast.
pub const MAX_OPS: usize = 512;

/// A host clock that may jump forward or run backwards, as a buggy host's clock might.
#[derive(Clone, Copy, Debug, Arbitrary)]
pub enum Tick {
    /// Time stands still.
    Same,
    /// Time moves forward by this many microseconds.
    Forward(u16),
    /// Time moves forward by this many milliseconds (timers fire).
    ForwardMillis(u16),
    /// The host's clock runs backwards by this many microseconds (the engines clamp it).
    Backward(u16),
}

/// The host's view of time: the `now` it passes, and the latest value it ever passed.
#[derive(Clone, Copy, Debug, Default)]
pub struct HostClock {
    /// What the host passes as `now` next.
    pub now: u64,
    /// The largest `now` passed so far: what the engine's clamped clock reads.
    pub latest: u64,
    /// The smallest `now` passed so far.
    pub earliest: u64,
}

impl HostClock {
    /// A clock starting at `start` microseconds.
    pub fn new(start: u64) -> Self {
        HostClock {
            now: start,
            latest: start,
            earliest: start,
        }
    }

    /// Apply `tick` and return the new `now`.
    pub fn tick(&mut self, tick: Tick) -> u64 {
        self.now = match tick {
            Tick::Same => self.now,
            Tick::Forward(us) => self.now.saturating_add(u64::from(us)),
            Tick::ForwardMillis(ms) => self.now.saturating_add(u64::from(ms) * 1_000),
            Tick::Backward(us) => self.now.saturating_sub(u64::from(us)),
        };
        self.latest = self.latest.max(self.now);
        self.earliest = self.earliest.min(self.now);
        self.now
    }

    /// The longest span any engine can have measured: from the earliest `now` to the latest.
    pub fn span(&self) -> u64 {
        self.latest - self.earliest
    }
}

/// A packet of `len` bytes whose content identifies it: a 4-byte sequence number, repeated.
pub fn stamped_packet(seq: u32, len: usize) -> Vec<u8> {
    seq.to_le_bytes()
        .iter()
        .copied()
        .cycle()
        .take(len)
        .collect()
}
