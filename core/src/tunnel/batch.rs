//! The tunnel's batch calls: a `readPacketObjects` array pushed with one call, and a batch
//! handed out with one call, each with the results of one call per packet and, in FIFO mode
//! without AQM, the bookkeeping done once per batch.

use super::stats::DirectionCounters;
use super::{PacketError, PacketTunnel, Queue, check_len, copy_packet};
use crate::fq::FlowQueue;
use crate::ring::{PacketRing, Slot};
use crate::time::Instant;

/// What [`PacketTunnel::on_outbound_batch`] did with a batch: the first `accepted` packets are
/// queued; if `stopped_by` is set, the packet at index `accepted` was refused for that reason and
/// it and the packets after it were not looked at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "the packets after the accepted prefix are still the caller's"]
pub struct BatchPush {
    /// Packets queued, from the start of the batch.
    pub accepted: usize,
    /// Why the packet at index `accepted` was refused, or `None` if the whole batch was queued.
    pub stopped_by: Option<PacketError>,
}

/// Which of the tunnel's two directions.
#[derive(Clone, Copy)]
enum Direction {
    Outbound,
    Inbound,
}

impl<B, S, F> PacketTunnel<B, S, F>
where
    B: AsRef<[u8]> + AsMut<[u8]>,
    S: AsRef<[Slot]> + AsMut<[Slot]>,
    F: AsRef<[FlowQueue]> + AsMut<[FlowQueue]>,
{
    /// Queue a batch of outbound packets (a `readPacketObjects` array), in order, stopping at the
    /// first packet the tunnel cannot take. The packets before it are queued; it and the rest stay
    /// with the caller, and the returned [`BatchPush`] says how many were taken and why the
    /// batch stopped. Each packet is handled exactly as [`PacketTunnel::on_outbound_packet`]
    /// would handle it, so a refused packet changes nothing but its counter.
    pub fn on_outbound_batch<'p>(
        &mut self,
        now: Instant,
        packets: impl IntoIterator<Item = &'p [u8]>,
    ) -> BatchPush {
        let stamp = self.clock.peek(now);
        let Queue::Fifo(ring) = &mut self.outbound else {
            return self.push_each(now, packets);
        };
        // FIFO: the clock, the statistics and the pause check once for the whole batch. Pushes
        // only add to the ring, so its levels after the batch are its highest during it, and
        // they are what each push would have compared with the high watermarks; a refusal
        // settles them first, as a single push refused there would find them.
        let max = self.config.max_packet_len;
        let (mut accepted, mut bytes, mut stopped_by, mut refused_len) = (0, 0, None, 0);
        for packet in packets {
            let len = packet.len();
            if let Err(error) = check_len(len, max, &mut self.outbound_counters) {
                stopped_by = Some(error);
                break;
            }
            if ring
                .push_with(stamp, len, |dst| copy_packet(dst, packet))
                .is_err()
            {
                stopped_by = Some(PacketError::NoRoom);
                refused_len = len;
                break;
            }
            accepted += 1;
            bytes += len;
        }
        if accepted > 0 {
            let held = (ring.bytes_used(), ring.slots_used());
            self.outbound_counters
                .accepted_batch(accepted, bytes, ring.packets_held(), held.0);
            self.clock.observe(stamp);
            self.update_pause(stamp, held);
        }
        if let Some(PacketError::NoRoom) = stopped_by {
            self.refuse_for_room(refused_len);
        }
        BatchPush {
            accepted,
            stopped_by,
        }
    }

    /// [`PacketTunnel::on_outbound_batch`] one packet at a time.
    fn push_each<'p>(
        &mut self,
        now: Instant,
        packets: impl IntoIterator<Item = &'p [u8]>,
    ) -> BatchPush {
        let mut accepted = 0;
        for packet in packets {
            if let Err(error) = self.on_outbound_packet(now, packet) {
                return BatchPush {
                    accepted,
                    stopped_by: Some(error),
                };
            }
            accepted += 1;
        }
        BatchPush {
            accepted,
            stopped_by: None,
        }
    }

    /// Hand out up to `max` outbound packets, calling `each` with every one, oldest first, and
    /// return how many: the batch a host sends before one
    /// [`PacketTunnel::complete_outbound`].
    ///
    /// The tunnel ends exactly as after calling [`PacketTunnel::poll_outbound`] with this `now`
    /// until `max` packets were handed out or it returned `None`; with a FIFO ring and AQM off
    /// it reads the clock and checks the byte queue limit once for the batch instead of once
    /// per packet (hand-outs do not move the limit).
    pub fn poll_outbound_batch(
        &mut self,
        now: Instant,
        max: usize,
        each: impl FnMut(&[u8]),
    ) -> usize {
        if let (Queue::Fifo(ring), None) = (&mut self.outbound, &self.codel) {
            if max == 0 {
                return 0;
            }
            let now = self.clock.observe(now);
            if self.bql.is_reached() && !ring.is_queue_empty() {
                self.bql.note_held();
                self.limit_holds = self.limit_holds.saturating_add(1);
                return 0;
            }
            return handout_batch(now, ring, max, &mut self.outbound_counters, each);
        }
        self.poll_each(now, max, Direction::Outbound, each)
    }

    /// Hand out up to `max` inbound packets, calling `each` with every one, oldest first, and
    /// return how many: the batch for one `writePackets` call.
    ///
    /// The tunnel ends exactly as after calling [`PacketTunnel::poll_inbound`] with this `now`
    /// until `max` packets were handed out or it returned `None`; with a FIFO ring and AQM off
    /// it reads the clock once for the batch.
    pub fn poll_inbound_batch(
        &mut self,
        now: Instant,
        max: usize,
        each: impl FnMut(&[u8]),
    ) -> usize {
        if let (Queue::Fifo(ring), None) = (&mut self.inbound, &self.codel) {
            if max == 0 {
                return 0;
            }
            let now = self.clock.observe(now);
            return handout_batch(now, ring, max, &mut self.inbound_counters, each);
        }
        self.poll_each(now, max, Direction::Inbound, each)
    }

    /// A batch hand-out one `poll_*` call at a time.
    fn poll_each(
        &mut self,
        now: Instant,
        max: usize,
        direction: Direction,
        mut each: impl FnMut(&[u8]),
    ) -> usize {
        let mut handed = 0;
        while handed < max {
            let packet = match direction {
                Direction::Outbound => self.poll_outbound(now),
                Direction::Inbound => self.poll_inbound(now),
            };
            let Some(packet) = packet else {
                break;
            };
            each(packet);
            handed += 1;
        }
        handed
    }
}

/// Hand out up to `max` packets of a FIFO ring without AQM to `each`, recording how long the
/// last one waited (what a hand-out at a time would leave in `last_sojourn_micros`).
#[inline]
fn handout_batch<B, S>(
    now: Instant,
    ring: &mut PacketRing<B, S>,
    max: usize,
    counters: &mut DirectionCounters,
    each: impl FnMut(&[u8]),
) -> usize
where
    B: AsRef<[u8]> + AsMut<[u8]>,
    S: AsRef<[Slot]> + AsMut<[Slot]>,
{
    let (handed, last_enqueued_at) = ring.handout_batch(max, each);
    if let Some(enqueued_at) = last_enqueued_at {
        counters.last_sojourn_micros = now.micros_since(enqueued_at);
    }
    handed
}
