//! Counters a packet tunnel keeps: levels, high-water marks, drops by reason, refusals, pauses.
//!
//! Every counter saturates at `u64::MAX` instead of wrapping.

use crate::ring::RingLevels;

/// Counters for one direction of a [`PacketTunnel`](super::PacketTunnel).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct DirectionStats {
    /// Packets waiting to be handed out now.
    pub packets_queued: u64,
    /// Bytes waiting to be handed out now.
    pub bytes_queued: u64,
    /// Packets handed out and not yet completed now.
    pub packets_in_flight: u64,
    /// Bytes handed out and not yet completed now.
    pub bytes_in_flight: u64,
    /// The most arena bytes ever taken at once: see `arena_bytes_used`.
    pub bytes_high_water: u64,
    /// The most packets ever held at once (queued and in flight).
    pub packets_high_water: u64,
    /// Packets accepted into the ring.
    pub packets_accepted: u64,
    /// Bytes accepted into the ring.
    pub bytes_accepted: u64,
    /// Packets the host completed after they were handed out.
    pub packets_completed: u64,
    /// Bytes the host completed after they were handed out.
    pub bytes_completed: u64,
    /// Zero-length packets refused.
    pub empty_packets: u64,
    /// Packets longer than `max_packet_len` refused.
    pub oversized_packets: u64,
    /// Packets CoDel dropped at the head of the queue because they waited too long.
    pub aqm_dropped_packets: u64,
    /// Bytes of those packets.
    pub aqm_dropped_bytes: u64,
    /// Flow-queue mode only: packets dropped from the head of the fattest flow queue to make
    /// room for an arriving packet when every cell was taken.
    pub overflow_dropped_packets: u64,
    /// Bytes of those packets.
    pub overflow_dropped_bytes: u64,
    /// Microseconds the most recently handed-out packet waited in the queue (its sojourn time).
    pub last_sojourn_micros: u64,
    /// Arena bytes taken now: packets queued, in flight and dropped but not yet reclaimed, plus
    /// the alignment padding in front of each. At most the ring's byte size; the outbound
    /// watermarks compare this.
    pub arena_bytes_used: u64,
}

/// Counters of a [`PacketTunnel`](super::PacketTunnel). Take a snapshot with
/// [`PacketTunnel::stats`](super::PacketTunnel::stats).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TunnelStats {
    /// Apps → tunnel.
    pub outbound: DirectionStats,
    /// Tunnel → apps.
    pub inbound: DirectionStats,
    /// Outbound packets refused because the ring had no room; each was left with the caller.
    pub outbound_refused_packets: u64,
    /// Bytes of the refused outbound packets.
    pub outbound_refused_bytes: u64,
    /// Times outbound reading paused at a high watermark.
    pub outbound_pauses: u64,
    /// Microseconds outbound reading has spent paused, including a pause still going on (up to
    /// the latest `now` the tunnel saw).
    pub outbound_paused_micros: u64,
    /// Whether outbound reading is paused now.
    pub outbound_paused: bool,
    /// Whether the outbound ring is in CoDel overload now. In overload, while the ring
    /// is pressed, every packet older than CoDel's target is dropped at hand-out; the completion
    /// that brings the ring down to its low watermarks ends it. See the `aqm` module.
    pub outbound_overloaded: bool,
    /// Times the outbound ring entered CoDel overload.
    pub outbound_overloads: u64,
    /// Inbound packets dropped on arrival because the ring was full (drop-newest, or drop-oldest
    /// while packets were in flight).
    pub inbound_dropped_newest_packets: u64,
    /// Bytes of those packets.
    pub inbound_dropped_newest_bytes: u64,
    /// Queued inbound packets dropped to make room for newer ones (drop-oldest).
    pub inbound_dropped_oldest_packets: u64,
    /// Bytes of those packets.
    pub inbound_dropped_oldest_bytes: u64,
    /// The byte queue limit now, or 0 without one (see
    /// [`ByteQueueLimit`](crate::ByteQueueLimit)).
    pub outbound_queue_limit_bytes: u64,
    /// Outbound bytes completed (sent below the tunnel) and not yet reported transmitted by the
    /// layer below; 0 without a byte queue limit.
    pub outbound_bytes_below: u64,
    /// Calls to `poll_outbound` that found packets queued and handed none out because the bytes
    /// below had reached the limit.
    pub outbound_limit_holds: u64,
    /// Times the limit grew: the layer below ran dry while a packet waited on the limit.
    pub outbound_limit_grows: u64,
    /// Times the limit shrank: a queue stood below the tunnel for a whole hold time.
    pub outbound_limit_shrinks: u64,
}

/// The running counters of one direction; levels come from the ring when a snapshot is taken.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct DirectionCounters {
    pub(crate) bytes_high_water: u64,
    pub(crate) packets_high_water: u64,
    pub(crate) packets_accepted: u64,
    pub(crate) bytes_accepted: u64,
    pub(crate) packets_completed: u64,
    pub(crate) bytes_completed: u64,
    pub(crate) empty_packets: u64,
    pub(crate) oversized_packets: u64,
    pub(crate) aqm_dropped_packets: u64,
    pub(crate) aqm_dropped_bytes: u64,
    pub(crate) overflow_dropped_packets: u64,
    pub(crate) overflow_dropped_bytes: u64,
    pub(crate) last_sojourn_micros: u64,
}

impl DirectionCounters {
    /// Count an accepted packet and raise the high-water marks to the ring's new levels, where
    /// `arena_bytes` is what the ring's packets take with their padding.
    /// `packets_held` counts the packets queued and in flight.
    #[inline]
    pub(crate) fn accepted(&mut self, len: usize, packets_held: usize, arena_bytes: usize) {
        self.accepted_batch(1, len, packets_held, arena_bytes);
    }

    /// Count `packets` accepted together, `bytes` in all, after which the ring held
    /// `packets_held` packets in `arena_bytes`: its highest levels since the first of them.
    #[inline]
    pub(crate) fn accepted_batch(
        &mut self,
        packets: usize,
        bytes: usize,
        packets_held: usize,
        arena_bytes: usize,
    ) {
        self.packets_accepted = self.packets_accepted.saturating_add(packets as u64);
        self.bytes_accepted = self.bytes_accepted.saturating_add(bytes as u64);
        self.bytes_high_water = self.bytes_high_water.max(arena_bytes as u64);
        self.packets_high_water = self.packets_high_water.max(packets_held as u64);
    }

    /// Count packets CoDel dropped.
    pub(crate) fn count_aqm_drops(&mut self, dropped: crate::aqm::Dropped) {
        self.aqm_dropped_packets = self.aqm_dropped_packets.saturating_add(dropped.packets);
        self.aqm_dropped_bytes = self.aqm_dropped_bytes.saturating_add(dropped.bytes);
    }

    /// Count packets dropped from the fattest flow queue.
    pub(crate) fn count_overflow_drops(&mut self, dropped: crate::aqm::Dropped) {
        self.overflow_dropped_packets = self
            .overflow_dropped_packets
            .saturating_add(dropped.packets);
        self.overflow_dropped_bytes = self.overflow_dropped_bytes.saturating_add(dropped.bytes);
    }

    pub(crate) fn completed(&mut self, packets: usize, bytes: usize) {
        self.packets_completed = self.packets_completed.saturating_add(packets as u64);
        self.bytes_completed = self.bytes_completed.saturating_add(bytes as u64);
    }

    pub(crate) fn snapshot(&self, levels: &RingLevels, arena_bytes: usize) -> DirectionStats {
        DirectionStats {
            packets_queued: levels.packets_queued as u64,
            bytes_queued: levels.bytes_queued as u64,
            packets_in_flight: levels.packets_in_flight as u64,
            bytes_in_flight: levels.bytes_in_flight as u64,
            bytes_high_water: self.bytes_high_water,
            packets_high_water: self.packets_high_water,
            packets_accepted: self.packets_accepted,
            bytes_accepted: self.bytes_accepted,
            packets_completed: self.packets_completed,
            bytes_completed: self.bytes_completed,
            empty_packets: self.empty_packets,
            oversized_packets: self.oversized_packets,
            aqm_dropped_packets: self.aqm_dropped_packets,
            aqm_dropped_bytes: self.aqm_dropped_bytes,
            overflow_dropped_packets: self.overflow_dropped_packets,
            overflow_dropped_bytes: self.overflow_dropped_bytes,
            last_sojourn_micros: self.last_sojourn_micros,
            arena_bytes_used: arena_bytes as u64,
        }
    }
}

/// Add one event of `len` bytes to a packet and a byte counter, saturating.
pub(crate) fn count(packets: &mut u64, bytes: &mut u64, len: usize) {
    *packets = packets.saturating_add(1);
    *bytes = bytes.saturating_add(len as u64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_saturate_near_their_maximum() {
        let mut c = DirectionCounters {
            packets_accepted: u64::MAX - 1,
            bytes_accepted: u64::MAX - 10,
            packets_completed: u64::MAX,
            ..DirectionCounters::default()
        };
        c.accepted(100, 1, 100);
        c.accepted(100, 1, 100);
        c.completed(5, 5);
        assert_eq!(c.packets_accepted, u64::MAX);
        assert_eq!(c.bytes_accepted, u64::MAX);
        assert_eq!(c.packets_completed, u64::MAX);
        assert_eq!(c.bytes_high_water, 100);

        let (mut packets, mut bytes) = (u64::MAX, u64::MAX - 1);
        count(&mut packets, &mut bytes, 7);
        assert_eq!((packets, bytes), (u64::MAX, u64::MAX));
    }
}
