//! A byte queue limit on what the host has handed below the tunnel (the idea of Linux BQL).
//!
//! Queue management only acts on packets it holds. Once the host has sent a packet down its
//! socket, it waits in the socket buffer and the driver queues below, which nobody manages, and
//! where a bulk flow's standing queue moves as soon as the socket takes more than the link
//! drains. A host that can shrink its socket buffer keeps that queue small; a Network Extension
//! cannot (`NWConnection` has no send buffer setting), and its bottleneck is usually further
//! down (Wi-Fi, cellular).
//!
//! So the tunnel can cap the bytes *below* it: bytes the host has completed (sent down) whose
//! transmission the layer below has not yet reported. While that reaches the limit,
//! [`PacketTunnel::poll_outbound`](crate::PacketTunnel::poll_outbound) hands nothing out, and the
//! queue stays in the tunnel, where CoDel or flow queueing act on it. The host reports progress
//! below in whichever form its platform gives: transmitted bytes (a send completion), or the
//! level of the queue below (`SIOCOUTQ` on Linux, `SO_NWRITE` on Darwin).
//!
//! The limit sizes itself from those reports, as BQL does:
//! - **Starved, grow.** A report that finds nothing left below while the limit held a packet
//!   back since the last report means the link went idle for want of data: the limit grows by
//!   the bytes that report saw transmitted (at most doubling per report).
//! - **Slack, shrink.** While the limit holds packets back, the bytes still below at each report
//!   are a standing queue the link did not need. If that never fell below some `s` over a whole
//!   hold time, the limit shrinks by `s / 2` (half, so a level reported in the platform's own
//!   accounting, which may count more than the payload, cannot shrink it below need).
//!
//! The limit stays within `[min_bytes, max_bytes]`. With `min_bytes == max_bytes` it is fixed.

use crate::time::Instant;

/// A byte queue limit for the tunnel's outbound side (see the module docs and
/// [`TunnelConfig::byte_queue_limit`](crate::TunnelConfig::byte_queue_limit)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ByteQueueLimit {
    /// No limit: every queued packet is handed out at once (size the socket buffer instead).
    #[default]
    Off,
    /// Cap the bytes below the tunnel, sized from the host's reports between the two bounds.
    Auto {
        /// The smallest limit, and the one it starts at: at least `max_packet_len`, so a
        /// packet can always be sent.
        min_bytes: u32,
        /// The largest limit (at most [`MAX_BYTE_QUEUE_LIMIT`]).
        max_bytes: u32,
        /// How long a standing queue below must last before the limit shrinks, in
        /// microseconds; not zero. See [`ByteQueueLimit::DEFAULT_HOLD_MICROS`].
        hold_micros: u32,
    },
}

/// The largest `max_bytes` of a [`ByteQueueLimit`]: 1 GiB.
pub const MAX_BYTE_QUEUE_LIMIT: u32 = 1 << 30;

impl ByteQueueLimit {
    /// The default hold time: 100 ms. Linux BQL holds for a second, but it learns of every
    /// completion from the driver's interrupt; a host that polls the socket's queue sees its own
    /// scheduling delays as the link running dry, grows the limit on them, and needs the shrink
    /// to catch up sooner; docs/real-traffic.md measures the result.
    pub const DEFAULT_HOLD_MICROS: u32 = 100_000;

    /// A self-sizing limit for packets of up to `max_packet_len` bytes: from two packets up to
    /// 1 MiB, the default hold time.
    pub const fn auto(max_packet_len: u32) -> ByteQueueLimit {
        ByteQueueLimit::Auto {
            min_bytes: max_packet_len.saturating_mul(2),
            max_bytes: 1 << 20,
            hold_micros: ByteQueueLimit::DEFAULT_HOLD_MICROS,
        }
    }

    /// Whether the bounds are usable for packets of up to `max_packet_len` bytes.
    pub(crate) const fn is_valid(&self, max_packet_len: u32) -> bool {
        match *self {
            ByteQueueLimit::Off => true,
            ByteQueueLimit::Auto {
                min_bytes,
                max_bytes,
                hold_micros,
            } => {
                min_bytes >= max_packet_len
                    && min_bytes > 0
                    && min_bytes <= max_bytes
                    && max_bytes <= MAX_BYTE_QUEUE_LIMIT
                    && hold_micros > 0
            }
        }
    }
}

/// The state of a [`ByteQueueLimit`]: 48 bytes inside the tunnel.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bql {
    min: u32,
    max: u32,
    hold_micros: u64,
    /// The limit now; 0 when off.
    limit: u32,
    /// Bytes handed below and not yet reported transmitted.
    below: u32,
    /// A hand-out was refused for the limit since the last report.
    held: bool,
    /// The fewest bytes below seen at a held report in this hold window.
    lowest_slack: u32,
    window_start: Option<Instant>,
    pub(crate) grows: u64,
    pub(crate) shrinks: u64,
}

impl Bql {
    pub(crate) const fn new(config: ByteQueueLimit) -> Bql {
        let (min, max, hold) = match config {
            ByteQueueLimit::Off => (0, 0, 0),
            ByteQueueLimit::Auto {
                min_bytes,
                max_bytes,
                hold_micros,
            } => (min_bytes, max_bytes, hold_micros as u64),
        };
        Bql {
            min,
            max,
            hold_micros: hold,
            limit: min,
            below: 0,
            held: false,
            lowest_slack: u32::MAX,
            window_start: None,
            grows: 0,
            shrinks: 0,
        }
    }

    fn is_on(&self) -> bool {
        self.limit != 0
    }

    /// The limit now (0 when off).
    pub(crate) fn limit(&self) -> u32 {
        self.limit
    }

    /// Bytes below now.
    pub(crate) fn below(&self) -> u32 {
        self.below
    }

    /// Whether the limit is on and reached: a packet may not be handed out now. Off, this is
    /// one compare.
    #[inline]
    pub(crate) fn is_reached(&self) -> bool {
        self.limit != 0 && self.below >= self.limit
    }

    /// Remember that a packet was held back by the limit since the last report.
    pub(crate) fn note_held(&mut self) {
        self.held = true;
    }

    /// Whether a packet may be handed out now; if not, remembers that one was held back.
    #[cfg(test)]
    fn admit(&mut self) -> bool {
        if self.is_reached() {
            self.note_held();
            return false;
        }
        true
    }

    /// The host completed (sent down) `bytes`.
    pub(crate) fn sent(&mut self, bytes: usize) {
        if self.is_on() {
            let bytes = u32::try_from(bytes).unwrap_or(u32::MAX);
            self.below = self.below.saturating_add(bytes);
        }
    }

    /// The layer below reported `bytes` transmitted.
    pub(crate) fn transmitted(&mut self, now: Instant, bytes: u64) {
        let done = u32::try_from(bytes).unwrap_or(u32::MAX).min(self.below);
        self.below = self.below.saturating_sub(done);
        self.adapt(now, done);
    }

    /// The layer below reported `level` bytes still queued in it. Bytes it holds that the
    /// tunnel never sent (another socket's, or its own accounting's overhead) are not counted.
    pub(crate) fn queued_below(&mut self, now: Instant, level: u64) {
        let level = u32::try_from(level).unwrap_or(u32::MAX);
        let done = self.below.saturating_sub(level);
        self.below = self.below.min(level);
        self.adapt(now, done);
    }

    fn adapt(&mut self, now: Instant, done: u32) {
        if !self.is_on() {
            return;
        }
        let held = core::mem::take(&mut self.held);
        if held && self.below == 0 {
            // The link ran dry while a packet waited on the limit: too small.
            let grown = self.limit.saturating_add(done.clamp(1, self.limit));
            self.limit = grown.min(self.max);
            self.grows = self.grows.saturating_add(1);
            self.restart_window(now);
            return;
        }
        if !held {
            return;
        }
        self.lowest_slack = self.lowest_slack.min(self.below);
        let start = *self.window_start.get_or_insert(now);
        if now.micros_since(start) >= self.hold_micros {
            let shrunk = self
                .limit
                .saturating_sub(self.lowest_slack / 2)
                .max(self.min);
            if shrunk < self.limit {
                self.limit = shrunk;
                self.shrinks = self.shrinks.saturating_add(1);
            }
            self.restart_window(now);
        }
    }

    fn restart_window(&mut self, now: Instant) {
        self.window_start = Some(now);
        self.lowest_slack = u32::MAX;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUTO: ByteQueueLimit = ByteQueueLimit::Auto {
        min_bytes: 3000,
        max_bytes: 100_000,
        hold_micros: 1000,
    };

    fn t(micros: u64) -> Instant {
        Instant::from_micros(micros)
    }

    #[test]
    fn off_admits_everything_and_counts_nothing() {
        let mut bql = Bql::new(ByteQueueLimit::Off);
        bql.sent(1 << 20);
        assert!(bql.admit());
        assert_eq!((bql.limit(), bql.below()), (0, 0));
    }

    #[test]
    fn the_limit_holds_once_reached() {
        let mut bql = Bql::new(AUTO);
        assert!(bql.admit());
        bql.sent(1500);
        assert!(bql.admit());
        bql.sent(1500);
        assert!(!bql.admit(), "3000 bytes below reach the 3000-byte limit");
        bql.transmitted(t(10), 1500);
        assert!(bql.admit());
        assert_eq!(bql.limit(), 3000, "something was still below: not starved");
    }

    #[test]
    fn a_link_that_ran_dry_while_held_grows_the_limit() {
        let mut bql = Bql::new(AUTO);
        bql.sent(3000);
        assert!(!bql.admit());
        bql.transmitted(t(10), 3000);
        assert_eq!(bql.limit(), 6000, "grew by what the report saw transmitted");
        assert_eq!(bql.grows, 1);
        // Running dry without anything held back is no sign the limit is short.
        bql.sent(1000);
        bql.transmitted(t(20), 1000);
        assert_eq!(bql.limit(), 6000);
    }

    #[test]
    fn growth_stops_at_the_maximum() {
        let mut bql = Bql::new(AUTO);
        for step in 0..40 {
            let limit = bql.limit() as usize;
            bql.sent(limit);
            assert!(!bql.admit());
            bql.transmitted(t(step), limit as u64);
        }
        assert_eq!(bql.limit(), 100_000);
    }

    #[test]
    fn a_standing_queue_below_for_a_hold_time_shrinks_the_limit() {
        let mut bql = Bql::new(ByteQueueLimit::Auto {
            min_bytes: 3000,
            max_bytes: 100_000,
            hold_micros: 1000,
        });
        // Grow to 48,000.
        for step in 0..4 {
            let limit = bql.limit() as usize;
            bql.sent(limit);
            assert!(!bql.admit());
            bql.transmitted(t(step), limit as u64);
        }
        assert_eq!(bql.limit(), 48_000);
        // Keep the limit full; the link drains 6,000 between reports, so 42,000 stay below.
        bql.sent(48_000);
        for micros in (100..=1200).step_by(100) {
            assert!(!bql.admit());
            bql.transmitted(t(micros), 6000);
            let refill = bql.limit().saturating_sub(bql.below());
            bql.sent(refill as usize);
        }
        // One hold time after the last growth (at 3 us) the limit lost half of the smallest
        // standing queue seen since: 48,000 - 42,000 / 2.
        assert_eq!(bql.limit(), 27_000);
        assert_eq!(bql.shrinks, 1);
    }

    #[test]
    fn shrinking_never_goes_below_the_minimum() {
        let mut bql = Bql::new(AUTO);
        bql.sent(3000);
        for micros in [0, 500, 1000, 1500, 2000, 2500] {
            assert!(!bql.admit());
            bql.transmitted(t(micros), 0);
        }
        assert_eq!(bql.limit(), 3000);
        assert_eq!(bql.shrinks, 0);
    }

    #[test]
    fn a_queue_level_counts_only_what_the_tunnel_sent() {
        let mut bql = Bql::new(AUTO);
        bql.sent(2000);
        // The socket reports more than the tunnel sent (its own accounting): nothing done.
        bql.queued_below(t(1), 5000);
        assert_eq!(bql.below(), 2000);
        bql.queued_below(t(2), 500);
        assert_eq!(bql.below(), 500);
        bql.queued_below(t(3), 0);
        assert_eq!(bql.below(), 0);
    }

    #[test]
    fn bounds_are_checked() {
        assert!(ByteQueueLimit::auto(1500).is_valid(1500));
        assert!(ByteQueueLimit::Off.is_valid(1500));
        let with = |min_bytes, max_bytes, hold_micros| ByteQueueLimit::Auto {
            min_bytes,
            max_bytes,
            hold_micros,
        };
        assert!(!with(1000, 5000, 1).is_valid(1500), "min below a packet");
        assert!(!with(3000, 2000, 1).is_valid(1500), "min above max");
        assert!(!with(3000, 5000, 0).is_valid(1500), "zero hold");
        assert!(!with(3000, MAX_BYTE_QUEUE_LIMIT + 1, 1).is_valid(1500));
        assert!(with(3000, 3000, 1).is_valid(1500), "fixed");
    }
}
