//! Active queue management: CoDel (RFC 8289) on a [`PacketRing`].
//!
//! A memory ceiling bounds how much a ring holds, but a full FIFO is still a standing queue:
//! every packet waits behind a ceiling's worth of others. CoDel watches each packet's sojourn
//! time (from the `now` it was pushed to the `now` it is handed out). When the sojourn has stayed
//! above `target` for a whole `interval`, it drops packets from the head at a rate that grows
//! with the square root of the number of drops, until the sojourn falls below `target` again.
//! Responsive senders (TCP) back off on those drops and the queue stays short.
//!
//! Drops happen only at hand-out time, from the head, and never take the queue below one
//! maximum-size packet, so the host always gets a packet to send after CoDel dropped some.
//!
//! ## Overload
//!
//! CoDel's control law raises the drop rate slowly, which suits responsive senders but cannot
//! keep up with an unresponsive flood at twice the link rate. On the outbound ring that matters
//! more than the memory: the ring reaches its high watermark, reading pauses, and while it is
//! paused the queue builds in the kernel's queue in front of the provider (the utun or TUN
//! queue), where nothing can drop from it. So the tunnel enters an *overload* state when CoDel
//! is dropping while the ring is pressed (reading paused, or the ring at its high watermark): a
//! persistent queue, not a burst. In overload, whenever the ring is pressed, every queued packet
//! that has waited longer than the target is dropped at hand-out ([`Codel::drop_stale`]), so the
//! ring drains within one hand-out and the pause, and with it the kernel's queue, stays short.
//! The completion that brings the ring back down to its low watermarks ends the overload (and,
//! when reading was paused, resumes it: both happen on the same completion).
//!
//! Reading still pauses at the high watermark in overload, exactly as without it: the headroom
//! above the high watermarks is what guarantees that a packet read while reading was allowed
//! fits, so that guarantee holds in every state. A FIFO cannot keep one flood from taking the
//! link from every other flow; that takes flow queueing.

use core::fmt;

use crate::ring::{PacketRing, Slot};
use crate::time::Instant;

/// The active queue management a tunnel applies to both of its rings.
///
/// With CoDel (RFC 8289), a ring drops packets from its head, at hand-out time, once they have
/// waited longer than `target` for a whole `interval`, so the standing queue, and with it the
/// latency through the tunnel, stays short; responsive senders back off on those drops. Under an
/// unresponsive flood the outbound ring enters *overload* (reported in
/// [`TunnelStats::outbound_overloaded`](crate::TunnelStats::outbound_overloaded)): while the ring
/// is pressed, every packet older than the target is dropped at hand-out, so a pause (which moves
/// the queue into the kernel's utun/TUN queue, out of reach) stays short, until a completion
/// brings the ring back to its low watermarks. The memory ceiling holds either way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Aqm {
    /// No AQM: packets leave in order unless the ring is full (the ceiling alone).
    #[default]
    Off,
    /// Flow queueing with CoDel per queue (the FQ-CoDel class, RFC 8290): packets are hashed by
    /// flow into `flow_queues` queues per direction, served by deficit round robin (new flows
    /// first), each with its own CoDel; when every cell is taken, the arriving packet is queued
    /// after dropping from the head of the fattest queue. Each ring is cut into cells of one
    /// packet each (see [`TunnelConfig`](crate::TunnelConfig)). Order is kept within a flow, not
    /// across flows.
    FqCodel {
        /// As for [`Aqm::Codel`], per queue.
        target_micros: u32,
        /// As for [`Aqm::Codel`], per queue.
        interval_micros: u32,
        /// Flow queues per direction: 1 to [`MAX_FLOW_QUEUES`](crate::MAX_FLOW_QUEUES). More
        /// queues make two flows sharing one (a hash collision) rarer; each costs 64 bytes.
        flow_queues: u32,
        /// Bytes a queue may send per round of deficit round robin: at least
        /// [`MIN_FLOW_QUANTUM`](crate::MIN_FLOW_QUANTUM). The MTU is the usual choice.
        quantum_bytes: u32,
        /// Random bytes keying the flow hash, so that no sender can aim at another flow's queue.
        /// Fill them from the platform's random source at start (`SecRandomCopyBytes`,
        /// `getrandom`).
        hash_seed: [u8; 16],
    },
    /// CoDel with the given target and interval.
    Codel {
        /// Acceptable standing sojourn time, in microseconds (RFC 8289 default: 5 ms).
        target_micros: u32,
        /// Time the sojourn must stay above `target` before dropping starts, in microseconds;
        /// on the order of the worst-case round-trip time (RFC 8289 default: 100 ms).
        interval_micros: u32,
    },
}

impl Aqm {
    /// RFC 8289's default target: 5 ms.
    pub const CODEL_DEFAULT_TARGET_MICROS: u32 = 5_000;
    /// RFC 8289's default interval: 100 ms.
    pub const CODEL_DEFAULT_INTERVAL_MICROS: u32 = 100_000;
    /// CoDel with RFC 8289's defaults: target 5 ms, interval 100 ms.
    pub const CODEL_DEFAULT: Aqm = Aqm::Codel {
        target_micros: Aqm::CODEL_DEFAULT_TARGET_MICROS,
        interval_micros: Aqm::CODEL_DEFAULT_INTERVAL_MICROS,
    };

    /// The default number of flow queues per direction, as in Linux's fq_codel.
    pub const FQ_DEFAULT_FLOW_QUEUES: u32 = 1024;
    /// The default deficit-round-robin quantum: one full-size IP packet on most links.
    pub const FQ_DEFAULT_QUANTUM_BYTES: u32 = 1500;

    /// Flow queueing with RFC 8289's CoDel defaults per queue, `flow_queues` queues per direction,
    /// a quantum of [`Aqm::FQ_DEFAULT_QUANTUM_BYTES`], and the hash keyed by `hash_seed`.
    pub const fn fq_codel(flow_queues: u32, hash_seed: [u8; 16]) -> Aqm {
        Aqm::FqCodel {
            target_micros: Aqm::CODEL_DEFAULT_TARGET_MICROS,
            interval_micros: Aqm::CODEL_DEFAULT_INTERVAL_MICROS,
            flow_queues,
            quantum_bytes: Aqm::FQ_DEFAULT_QUANTUM_BYTES,
            hash_seed,
        }
    }

    /// Check the parameters: CoDel needs `0 < target < interval`; flow queueing also needs 1 to
    /// [`MAX_FLOW_QUEUES`](crate::MAX_FLOW_QUEUES) queues and a quantum of at least
    /// [`MIN_FLOW_QUANTUM`](crate::MIN_FLOW_QUANTUM).
    pub const fn is_valid(&self) -> bool {
        match *self {
            Aqm::Off => true,
            Aqm::Codel {
                target_micros,
                interval_micros,
            } => target_micros > 0 && target_micros < interval_micros,
            Aqm::FqCodel {
                target_micros,
                interval_micros,
                flow_queues,
                quantum_bytes,
                ..
            } => {
                target_micros > 0
                    && target_micros < interval_micros
                    && flow_queues > 0
                    && flow_queues <= crate::fq::MAX_FLOW_QUEUES
                    && quantum_bytes >= crate::fq::MIN_FLOW_QUANTUM
            }
        }
    }

    /// The flow queues per direction: 0 unless flow queueing is on.
    pub const fn flow_queues(&self) -> u32 {
        match *self {
            Aqm::FqCodel { flow_queues, .. } => flow_queues,
            _ => 0,
        }
    }
}

impl fmt::Display for Aqm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Aqm::Off => f.write_str("off"),
            Aqm::Codel {
                target_micros,
                interval_micros,
            } => {
                write!(
                    f,
                    "codel(target {target_micros}us, interval {interval_micros}us)"
                )
            }
            Aqm::FqCodel {
                target_micros,
                interval_micros,
                flow_queues,
                quantum_bytes,
                ..
            } => write!(
                f,
                "fq-codel({flow_queues} queues, quantum {quantum_bytes}B, target \
                 {target_micros}us, interval {interval_micros}us)"
            ),
        }
    }
}

/// Packets and bytes one hand-out dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Dropped {
    pub(crate) packets: u64,
    pub(crate) bytes: u64,
}

impl Dropped {
    pub(crate) fn add(&mut self, len: usize) {
        self.packets = self.packets.saturating_add(1);
        self.bytes = self.bytes.saturating_add(len as u64);
    }

    pub(crate) fn merge(&mut self, other: Dropped) {
        self.packets = self.packets.saturating_add(other.packets);
        self.bytes = self.bytes.saturating_add(other.bytes);
    }
}

/// A FIFO CoDel can watch and drop from: a whole [`PacketRing`], or one flow queue.
pub(crate) trait CodelQueue {
    /// When the head packet was queued and its length, or `None` if nothing is queued.
    fn head(&self) -> Option<(Instant, usize)>;
    /// Packets queued.
    fn packets_queued(&self) -> usize;
    /// Payload bytes queued.
    fn bytes_queued(&self) -> usize;
    /// Drop the head packet and return its length.
    fn drop_head(&mut self) -> Option<usize>;
}

impl<B, S> CodelQueue for PacketRing<B, S>
where
    B: AsRef<[u8]> + AsMut<[u8]>,
    S: AsRef<[Slot]> + AsMut<[Slot]>,
{
    fn head(&self) -> Option<(Instant, usize)> {
        self.queued_front_enqueued_at().zip(self.queued_front_len())
    }
    fn packets_queued(&self) -> usize {
        self.levels().packets_queued
    }
    fn bytes_queued(&self) -> usize {
        self.levels().bytes_queued
    }
    fn drop_head(&mut self) -> Option<usize> {
        self.drop_queued_front()
    }
}

/// CoDel's two parameters, shared by every queue it watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CodelParams {
    target: u64,
    interval: u64,
}

impl CodelParams {
    pub(crate) const fn new(target_micros: u32, interval_micros: u32) -> Self {
        CodelParams {
            target: target_micros as u64,
            interval: interval_micros as u64,
        }
    }
}

/// CoDel's state for one queue (RFC 8289, section 5): 32 bytes, so a tunnel can keep one per
/// flow queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Codel {
    /// When the sojourn will have been above target for a whole interval; [`Instant::MAX`] while
    /// below.
    first_above: Instant,
    /// When the next drop is due while dropping.
    drop_next: Instant,
    /// Drops in the current dropping state; sets the drop rate.
    count: u32,
    /// `count` when the previous dropping state ended.
    last_count: u32,
    dropping: bool,
}

impl Default for Codel {
    fn default() -> Self {
        Codel::IDLE
    }
}

impl Codel {
    /// A queue that has never been above target.
    pub(crate) const IDLE: Codel = Codel {
        first_above: Instant::MAX,
        drop_next: Instant::ZERO,
        count: 0,
        last_count: 0,
        dropping: false,
    };

    /// Drop every queued packet that has waited longer than the target, keeping the last one.
    /// The tunnel calls this in overload (see the module docs).
    pub(crate) fn drop_stale(
        params: &CodelParams,
        now: Instant,
        queue: &mut impl CodelQueue,
    ) -> Dropped {
        let mut dropped = Dropped::default();
        while queue.packets_queued() > 1
            && queue
                .head()
                .is_some_and(|(at, _)| now.micros_since(at) > params.target)
        {
            drop_head(queue, &mut dropped);
        }
        dropped
    }

    /// Whether CoDel is in its dropping state: the queue has stayed above target for an interval.
    pub(crate) fn is_dropping(&self) -> bool {
        self.dropping
    }

    /// Drop packets from the head of `queue` as CoDel decides (RFC 8289), before the head is
    /// handed out. Leaves at least one packet queued if there was one.
    pub(crate) fn before_handout(
        &mut self,
        params: &CodelParams,
        now: Instant,
        queue: &mut impl CodelQueue,
        max_packet: usize,
    ) -> Dropped {
        let mut dropped = Dropped::default();
        let mut ok_to_drop = self.ok_to_drop(params, now, queue, max_packet);
        if queue.packets_queued() == 0 {
            self.dropping = false;
            return dropped;
        }
        if self.dropping {
            if !ok_to_drop {
                self.dropping = false;
            }
            while self.dropping && now >= self.drop_next {
                drop_head(queue, &mut dropped);
                self.count = self.count.saturating_add(1);
                ok_to_drop = self.ok_to_drop(params, now, queue, max_packet);
                if ok_to_drop {
                    self.drop_next = self.control_law(params, self.drop_next);
                } else {
                    self.dropping = false;
                }
            }
        } else if ok_to_drop {
            drop_head(queue, &mut dropped);
            self.ok_to_drop(params, now, queue, max_packet);
            self.dropping = true;
            // Resume near the previous drop rate if dropping stopped only a moment ago.
            let delta = self.count.saturating_sub(self.last_count);
            let recent = now.micros_since(self.drop_next) < params.interval.saturating_mul(16);
            self.count = if delta > 1 && recent { delta } else { 1 };
            self.drop_next = self.control_law(params, now);
            self.last_count = self.count;
        }
        dropped
    }

    /// Whether the head packet has been above target for an interval (RFC 8289 `dodequeue`).
    fn ok_to_drop(
        &mut self,
        params: &CodelParams,
        now: Instant,
        queue: &impl CodelQueue,
        max_packet: usize,
    ) -> bool {
        let Some((enqueued_at, head_len)) = queue.head() else {
            self.first_above = Instant::MAX;
            return false;
        };
        let sojourn = now.micros_since(enqueued_at);
        let left_behind = queue.bytes_queued().saturating_sub(head_len);
        if sojourn < params.target || left_behind <= max_packet {
            self.first_above = Instant::MAX;
            return false;
        }
        if self.first_above == Instant::MAX {
            self.first_above = now.saturating_add_micros(params.interval);
            // An interval that saturates the clock never ends; keep the sentinel unambiguous.
            if self.first_above == Instant::MAX {
                self.first_above = Instant::from_micros(u64::MAX - 1);
            }
            false
        } else {
            now >= self.first_above
        }
    }

    /// `t + interval / sqrt(count)`, in integers: `interval * 2^16 / isqrt(count * 2^32)`.
    fn control_law(&self, params: &CodelParams, t: Instant) -> Instant {
        let root = (u64::from(self.count.max(1)) << 32).isqrt();
        let step = params
            .interval
            .saturating_mul(1 << 16)
            .checked_div(root)
            .unwrap_or(params.interval);
        t.saturating_add_micros(step)
    }
}

fn drop_head(queue: &mut impl CodelQueue, dropped: &mut Dropped) {
    if let Some(len) = queue.drop_head() {
        dropped.add(len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> PacketRing<Vec<u8>, Vec<Slot>> {
        PacketRing::new(vec![0; 1 << 20], vec![Slot::EMPTY; 4096]).unwrap()
    }

    fn ms(millis: u64) -> Instant {
        Instant::from_millis(millis)
    }

    #[test]
    fn control_law_spaces_drops_by_interval_over_sqrt_count() {
        let params = CodelParams::new(5_000, 100_000);
        let mut codel = Codel::IDLE;
        for (count, step) in [(1, 100_000), (4, 50_000), (16, 25_000), (100, 10_000)] {
            codel.count = count;
            assert_eq!(
                codel.control_law(&params, Instant::ZERO).as_micros(),
                step,
                "count {count}"
            );
        }
        codel.count = u32::MAX;
        assert!(
            codel.control_law(&params, Instant::MAX) == Instant::MAX,
            "saturates, never wraps"
        );
    }

    #[test]
    fn no_drop_before_a_whole_interval_above_target() {
        let p = CodelParams::new(5_000, 100_000);
        let mut codel = Codel::IDLE;
        let mut r = ring();
        for _ in 0..10 {
            r.push(ms(0), &[0; 1000]).unwrap();
        }
        // Sojourn 50 ms, above target: the first look only arms the interval.
        assert_eq!(
            codel.before_handout(&p, ms(50), &mut r, 1500),
            Dropped::default()
        );
        assert_eq!(
            codel.before_handout(&p, ms(149), &mut r, 1500),
            Dropped::default()
        );
        let dropped = codel.before_handout(&p, ms(150), &mut r, 1500);
        assert_eq!(
            dropped,
            Dropped {
                packets: 1,
                bytes: 1000
            },
            "an interval later: drop one"
        );
        assert!(codel.dropping);
    }

    #[test]
    fn never_drops_the_last_packet_worth() {
        let p = CodelParams::new(5_000, 100_000);
        let mut codel = Codel::IDLE;
        let mut r = ring();
        r.push(ms(0), &[0; 1400]).unwrap();
        r.push(ms(0), &[0; 1400]).unwrap();
        for t in [10, 200, 400, 800] {
            assert_eq!(
                codel.before_handout(&p, ms(t), &mut r, 1500),
                Dropped::default()
            );
        }
        assert_eq!(r.levels().packets_queued, 2);
    }

    #[test]
    // Slow under Miri (an exhaustive loop of safe arithmetic); the normal run covers it.
    #[cfg_attr(miri, ignore = "slow under Miri")]
    fn a_short_queue_below_target_is_left_alone() {
        let p = CodelParams::new(5_000, 100_000);
        let mut codel = Codel::IDLE;
        let mut r = ring();
        for i in 0..1_000u64 {
            r.push(Instant::from_micros(i * 1_000), &[0; 500]).unwrap();
            r.push(Instant::from_micros(i * 1_000), &[0; 500]).unwrap();
            // Handed out 4 ms after arrival: below the 5 ms target.
            let now = Instant::from_micros(i * 1_000 + 4_000);
            assert_eq!(
                codel.before_handout(&p, now, &mut r, 1500),
                Dropped::default()
            );
            r.handout().unwrap();
            r.handout().unwrap();
            r.complete(2).unwrap();
        }
    }

    #[test]
    fn drop_stale_keeps_only_fresh_packets_and_the_last_one() {
        let p = CodelParams::new(5_000, 100_000);
        let mut r = ring();
        for i in 0..100 {
            r.push(ms(i), &[0; 1000]).unwrap();
        }
        // At 100 ms, packets pushed before 95 ms are older than the 5 ms target.
        assert_eq!(Codel::drop_stale(&p, ms(100), &mut r).packets, 95);
        assert_eq!(r.levels().packets_queued, 5);
        assert_eq!(
            Codel::drop_stale(&p, ms(10_000), &mut r).packets,
            4,
            "never the last packet"
        );
        assert_eq!(r.levels().packets_queued, 1);
    }

    #[test]
    fn validity() {
        assert!(Aqm::Off.is_valid());
        assert!(Aqm::CODEL_DEFAULT.is_valid());
        assert!(
            !Aqm::Codel {
                target_micros: 0,
                interval_micros: 10
            }
            .is_valid()
        );
        assert!(
            !Aqm::Codel {
                target_micros: 10,
                interval_micros: 10
            }
            .is_valid()
        );
    }
}
