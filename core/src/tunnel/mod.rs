//! `PacketTunnel`: the memory governor of a packet tunnel provider, documented on the type.

mod config;
mod stats;

pub use config::{CeilingTooSmall, ConfigError, DropPolicy, TunnelConfig};
pub use stats::{DirectionStats, TunnelStats};

use core::fmt;

use self::stats::{DirectionCounters, count};
use crate::aqm::{Aqm, Codel};
use crate::fmt::{log_debug, log_trace};
use crate::ring::{CompleteError, InFlight, PacketRing, PushError, Released, Slot};
use crate::time::{Clock, Instant};

/// The storage a [`PacketTunnel`] runs in, handed over at creation. Lengths must equal the
/// configuration's sizes. Named fields keep the two rings from being swapped by mistake.
#[derive(Debug)]
pub struct TunnelStorage<B, S> {
    /// `config.outbound_bytes` bytes.
    pub outbound_arena: B,
    /// `config.outbound_packets` slots.
    pub outbound_slots: S,
    /// `config.inbound_bytes` bytes.
    pub inbound_arena: B,
    /// `config.inbound_packets` slots.
    pub inbound_slots: S,
}

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

/// Why a packet was refused. The tunnel is unchanged apart from the counter of that reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum PacketError {
    /// The packet has no bytes.
    Empty,
    /// The packet is longer than the configured `max_packet_len`.
    TooLong {
        /// The packet's length.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// Outbound only: the ring has no room for the packet now. The packet stays with the caller
    /// (drop it, or hold it and retry after a completion). Inbound packets are dropped by policy
    /// instead and never get this error.
    NoRoom,
}

impl core::error::Error for PacketError {}

impl fmt::Display for PacketError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PacketError::Empty => f.write_str("packet is empty"),
            PacketError::TooLong { len, max } => {
                write!(f, "packet of {len} bytes exceeds max_packet_len {max}")
            }
            PacketError::NoRoom => f.write_str("outbound ring has no room for the packet"),
        }
    }
}

/// What [`PacketTunnel::on_inbound_packet`] did with a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum InboundDisposition {
    /// The packet was queued.
    Queued,
    /// The packet was queued after dropping the oldest queued packets to make room.
    QueuedAfterDroppingOldest {
        /// Packets dropped.
        packets: usize,
        /// Bytes dropped.
        bytes: usize,
    },
    /// The ring was full and the packet was dropped.
    DroppedNewest,
}

/// What one [`PacketTunnel::complete_outbound`] call released.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[must_use = "resume_reading is an edge reported once: the host must start reading again on it"]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct OutboundCompletion {
    /// Packets and bytes freed.
    pub released: Released,
    /// `true` exactly once per pause: the held bytes and packets fell to the low watermarks, so
    /// the host must start reading outbound packets again (call `readPackets`).
    pub resume_reading: bool,
}

/// The packet tunnel engine: the memory governor of a packet tunnel provider.
///
/// Two [`PacketRing`]s with a ceiling fixed at creation:
///
/// - **Outbound** (apps → tunnel). The OS has flow control here: the host reads packets
///   (`readPackets`) only while [`PacketTunnel::can_read_outbound`] is true. Reading pauses at a
///   high watermark and resumes at a low one (hysteresis, so the host does not flap), and the
///   completion that crosses the low watermark returns `resume_reading = true` exactly once, so
///   the host knows to call `readPackets` again. A packet that arrives with no room is refused and
///   stays with the caller; nothing is lost silently.
/// - **Inbound** (tunnel → apps). `writePackets` has no flow control, so the tunnel drops IP
///   packets by [`DropPolicy`] when the ring is full, says which on every call, and counts drops
///   by reason.
///
/// ## Drain contract
///
/// After any input, call [`PacketTunnel::poll_outbound`] (and [`PacketTunnel::poll_inbound`])
/// until it returns `None`, send or write what it hands out, and report each finished batch with
/// [`PacketTunnel::complete_outbound`] / [`PacketTunnel::complete_inbound`], oldest first. Handed
/// out bytes stay valid and in place until they are completed.
///
/// `B` stores bytes and `S` slots, as for [`PacketRing`]: arrays on an embedded target, boxed
/// slices on a host with an allocator.
pub struct PacketTunnel<B, S> {
    config: TunnelConfig,
    clock: Clock,
    outbound: PacketRing<B, S>,
    inbound: PacketRing<B, S>,
    /// One CoDel state per ring when AQM is on.
    codel: Option<(Codel, Codel)>,
    /// The outbound ring is in overload (see the `aqm` module): CoDel was dropping while the ring
    /// was pressed, and no completion has brought it back down to its low watermarks since.
    overload: bool,
    /// Times the outbound ring entered overload.
    overloads: u64,
    /// When outbound reading paused, while it is paused.
    paused_since: Option<Instant>,
    paused_micros: u64,
    pauses: u64,
    outbound_counters: DirectionCounters,
    inbound_counters: DirectionCounters,
    refused_packets: u64,
    refused_bytes: u64,
    dropped_newest: (u64, u64),
    dropped_oldest: (u64, u64),
}

impl<B, S> PacketTunnel<B, S>
where
    B: AsRef<[u8]> + AsMut<[u8]>,
    S: AsRef<[Slot]> + AsMut<[Slot]>,
{
    /// A tunnel with `config`, running in `storage`, whose lengths must match the config.
    pub fn new(config: TunnelConfig, storage: TunnelStorage<B, S>) -> Result<Self, ConfigError> {
        config.validate()?;
        let lengths = [
            (storage.outbound_arena.as_ref().len(), config.outbound_bytes),
            (
                storage.outbound_slots.as_ref().len(),
                config.outbound_packets,
            ),
            (storage.inbound_arena.as_ref().len(), config.inbound_bytes),
            (storage.inbound_slots.as_ref().len(), config.inbound_packets),
        ];
        if lengths.iter().any(|&(have, want)| have != want as usize) {
            return Err(ConfigError::StorageMismatch);
        }
        let ring = |arena, slots| {
            PacketRing::with_packet_align(arena, slots, config.packet_align as usize)
                .map_err(|_| ConfigError::ZeroCapacity)
        };
        Ok(PacketTunnel {
            config,
            clock: Clock::default(),
            outbound: ring(storage.outbound_arena, storage.outbound_slots)?,
            inbound: ring(storage.inbound_arena, storage.inbound_slots)?,
            codel: match config.aqm {
                Aqm::Off => None,
                Aqm::Codel {
                    target_micros,
                    interval_micros,
                } => Some((
                    Codel::new(target_micros, interval_micros),
                    Codel::new(target_micros, interval_micros),
                )),
            },
            overload: false,
            overloads: 0,
            paused_since: None,
            paused_micros: 0,
            pauses: 0,
            outbound_counters: DirectionCounters::default(),
            inbound_counters: DirectionCounters::default(),
            refused_packets: 0,
            refused_bytes: 0,
            dropped_newest: (0, 0),
            dropped_oldest: (0, 0),
        })
    }

    /// Bytes of storage a tunnel with `config` needs (both arenas and both slot arrays). The
    /// engine holds nothing else apart from its own fixed-size struct.
    pub const fn footprint(config: &TunnelConfig) -> usize {
        config.storage_bytes()
    }

    /// The configuration the tunnel was built with.
    pub fn config(&self) -> &TunnelConfig {
        &self.config
    }

    /// Whether the host should read more outbound packets now (call `readPackets`).
    ///
    /// `false` from the moment held bytes or packets reach a high watermark until a completion
    /// brings both down to their low watermarks; that completion reports `resume_reading`. A
    /// valid packet pushed while this is `true` always fits (the configuration reserves the
    /// headroom above the high watermarks for it).
    pub fn can_read_outbound(&self) -> bool {
        self.paused_since.is_none()
    }

    /// Queue an outbound packet (apps → tunnel), copying it into the ring.
    ///
    /// Packets read in a batch that was allowed by [`PacketTunnel::can_read_outbound`] are
    /// accepted while there is room, even past the high watermark: the headroom above it exists
    /// for exactly that batch. Without room the packet is refused with [`PacketError::NoRoom`]
    /// and stays with the caller; a packet pushed while [`PacketTunnel::can_read_outbound`] was
    /// `true` is never refused for room.
    ///
    /// A refused packet changes nothing but its counter (`empty_packets`, `oversized_packets` or
    /// `outbound_refused_packets`): not even the tunnel's clock sees its `now`.
    pub fn on_outbound_packet(&mut self, now: Instant, packet: &[u8]) -> Result<(), PacketError> {
        self.push_outbound_with(now, packet.len(), |dst| dst.copy_from_slice(packet))
    }

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

    /// Queue an outbound packet gathered from a [`bytes::Buf`] (for example a chain of
    /// buffers), copying it into the ring once without flattening it first.
    ///
    /// On success `buf` is fully consumed; on error it is left untouched with the caller.
    #[cfg(feature = "bytes")]
    pub fn on_outbound_buf<T: bytes::Buf>(
        &mut self,
        now: Instant,
        buf: &mut T,
    ) -> Result<(), PacketError> {
        let len = buf.remaining();
        self.push_outbound_with(now, len, |dst| buf.copy_to_slice(dst))
    }

    /// Hand out the next outbound packet to send down the tunnel, or `None` if none is queued.
    ///
    /// The bytes stay in place and counted until [`PacketTunnel::complete_outbound`] releases
    /// them; [`PacketTunnel::outbound_in_flight`] lists every packet handed out so far.
    ///
    /// With AQM on, packets that waited too long may be dropped from the head first (counted in
    /// `aqm_dropped_packets`); a packet is still handed out whenever one was queued. While the
    /// ring is at its high watermark and CoDel is dropping, every queued packet older than the
    /// target is dropped, so a persistent overload empties the ring (see the `aqm` module); the
    /// completion that brings the ring down to its low watermarks ends the overload.
    #[must_use = "the packet handed out is in flight: send it, then complete it"]
    pub fn poll_outbound(&mut self, now: Instant) -> Option<&[u8]> {
        let now = self.clock.observe(now);
        if let Some((codel, _)) = self.codel.as_mut() {
            let mut dropped =
                codel.before_handout(now, &mut self.outbound, self.config.max_packet_len as usize);
            // Paused, or at the high watermark: the ring is pressed, and a persistent queue here
            // would otherwise move into the kernel's queue (see the `aqm` module).
            let pressed =
                self.paused_since.is_some() || at_high_watermark(&self.outbound, &self.config);
            if codel.is_dropping() && pressed && !self.overload {
                self.overload = true;
                self.overloads = self.overloads.saturating_add(1);
                log_debug!("outbound: overload, dropping stale packets instead of pausing");
            }
            if self.overload && pressed {
                let stale = codel.drop_stale(now, &mut self.outbound);
                dropped.packets = dropped.packets.saturating_add(stale.packets);
                dropped.bytes = dropped.bytes.saturating_add(stale.bytes);
            }
            self.outbound_counters.count_aqm_drops(dropped);
        }
        handout(now, &mut self.outbound, &mut self.outbound_counters)
    }

    /// The outbound packets handed out and not yet completed, oldest first.
    pub fn outbound_in_flight(&self) -> InFlight<'_> {
        self.outbound.in_flight()
    }

    /// Release the `count` oldest outbound packets in flight: their tunnel send completed.
    ///
    /// Fails without changing anything if fewer than `count` are in flight.
    pub fn complete_outbound(
        &mut self,
        now: Instant,
        count: usize,
    ) -> Result<OutboundCompletion, CompleteError> {
        let released = self.outbound.complete(count)?;
        let now = self.clock.observe(now);
        self.outbound_counters
            .completed(released.packets, released.bytes);
        let resume_reading = self.settle_at_low_watermarks(now);
        Ok(OutboundCompletion {
            released,
            resume_reading,
        })
    }

    /// Queue an inbound packet (tunnel → apps), or drop by policy when the ring is full.
    ///
    /// Dropping is what a packet tunnel is allowed to do here: `writePackets` has no flow
    /// control. Empty and oversized packets are refused with an error and counted, and change
    /// nothing else (not even the tunnel's clock).
    pub fn on_inbound_packet(
        &mut self,
        now: Instant,
        packet: &[u8],
    ) -> Result<InboundDisposition, PacketError> {
        let len = packet.len();
        check_len(len, self.config.max_packet_len, &mut self.inbound_counters)?;
        let now = self.clock.observe(now);
        let mut dropped = (0usize, 0usize);
        // Dropping queued packets frees arena only when nothing handed out sits before them.
        if self.config.inbound_drop_policy == DropPolicy::DropOldest
            && self.inbound.levels().packets_in_flight == 0
            && self.inbound.levels().bytes_dropped_pending == 0
        {
            while !self.inbound.fits(len) {
                let Some(old) = self.inbound.drop_queued_front() else {
                    break;
                };
                dropped = (dropped.0.saturating_add(1), dropped.1.saturating_add(old));
                count(&mut self.dropped_oldest.0, &mut self.dropped_oldest.1, old);
            }
        }
        match self.inbound.push(now, packet) {
            Ok(()) => {
                self.inbound_counters.accepted(
                    len,
                    &self.inbound.levels(),
                    self.inbound.bytes_used(),
                );
                Ok(match dropped {
                    (0, _) => InboundDisposition::Queued,
                    (packets, bytes) => {
                        log_trace!("inbound: dropped {} oldest packets", packets);
                        InboundDisposition::QueuedAfterDroppingOldest { packets, bytes }
                    }
                })
            }
            Err(PushError::Full) => {
                count(&mut self.dropped_newest.0, &mut self.dropped_newest.1, len);
                Ok(InboundDisposition::DroppedNewest)
            }
            Err(PushError::Empty) => Err(PacketError::Empty),
        }
    }

    /// Hand out the next inbound packet to write to the apps, or `None` if none is queued.
    ///
    /// For `writePackets`, hand out a batch, copy it into the call, then complete the batch.
    ///
    /// With AQM on, packets that waited too long may be dropped from the head first.
    #[must_use = "the packet handed out is in flight: write it, then complete it"]
    pub fn poll_inbound(&mut self, now: Instant) -> Option<&[u8]> {
        let now = self.clock.observe(now);
        // Inbound never pauses (it drops by policy when full), so it has no overload state.
        if let Some((_, codel)) = self.codel.as_mut() {
            let dropped =
                codel.before_handout(now, &mut self.inbound, self.config.max_packet_len as usize);
            self.inbound_counters.count_aqm_drops(dropped);
        }
        handout(now, &mut self.inbound, &mut self.inbound_counters)
    }

    /// The inbound packets handed out and not yet completed, oldest first.
    pub fn inbound_in_flight(&self) -> InFlight<'_> {
        self.inbound.in_flight()
    }

    /// Release the `count` oldest inbound packets in flight: they were written to the apps.
    ///
    /// Fails without changing anything if fewer than `count` are in flight.
    pub fn complete_inbound(
        &mut self,
        now: Instant,
        count: usize,
    ) -> Result<Released, CompleteError> {
        let released = self.inbound.complete(count)?;
        self.clock.observe(now);
        self.inbound_counters
            .completed(released.packets, released.bytes);
        Ok(released)
    }

    /// A snapshot of every counter and level.
    pub fn stats(&self) -> TunnelStats {
        let ongoing = self
            .paused_since
            .map_or(0, |since| self.clock.latest().micros_since(since));
        TunnelStats {
            outbound: self
                .outbound_counters
                .snapshot(&self.outbound.levels(), self.outbound.bytes_used()),
            inbound: self
                .inbound_counters
                .snapshot(&self.inbound.levels(), self.inbound.bytes_used()),
            outbound_refused_packets: self.refused_packets,
            outbound_refused_bytes: self.refused_bytes,
            outbound_pauses: self.pauses,
            outbound_paused_micros: self.paused_micros.saturating_add(ongoing),
            outbound_paused: self.paused_since.is_some(),
            outbound_overloaded: self.overload,
            outbound_overloads: self.overloads,
            inbound_dropped_newest_packets: self.dropped_newest.0,
            inbound_dropped_newest_bytes: self.dropped_newest.1,
            inbound_dropped_oldest_packets: self.dropped_oldest.0,
            inbound_dropped_oldest_bytes: self.dropped_oldest.1,
        }
    }

    fn push_outbound_with(
        &mut self,
        now: Instant,
        len: usize,
        write: impl FnOnce(&mut [u8]),
    ) -> Result<(), PacketError> {
        check_len(len, self.config.max_packet_len, &mut self.outbound_counters)?;
        // The packet's stamp is the time it would be queued at; the clock records it only once
        // the packet is accepted, so a refusal leaves the tunnel as it was.
        let stamp = self.clock.peek(now);
        match self.outbound.push_with(stamp, len, write) {
            Ok(()) => {
                self.clock.observe(stamp);
                self.outbound_counters.accepted(
                    len,
                    &self.outbound.levels(),
                    self.outbound.bytes_used(),
                );
                self.update_pause(stamp);
                Ok(())
            }
            Err(PushError::Full) => {
                debug_assert!(
                    self.paused_since.is_some(),
                    "a valid packet pushed while reading was allowed must fit"
                );
                count(&mut self.refused_packets, &mut self.refused_bytes, len);
                Err(PacketError::NoRoom)
            }
            Err(PushError::Empty) => {
                debug_assert!(false, "check_len refuses empty packets first");
                Err(PacketError::Empty)
            }
        }
    }

    /// Arena bytes (alignment padding included) and slots the outbound ring holds,
    /// dropped-pending ones included: both are what runs out, so both are what the watermarks
    /// compare.
    fn outbound_held(&self) -> (usize, usize) {
        (self.outbound.bytes_used(), self.outbound.slots_used())
    }

    /// Pause reading once a high watermark is reached, in overload too: the headroom above the
    /// high watermarks is what guarantees that a packet pushed while reading was allowed fits.
    fn update_pause(&mut self, now: Instant) {
        if self.paused_since.is_none() && at_high_watermark(&self.outbound, &self.config) {
            let (bytes, packets) = self.outbound_held();
            self.paused_since = Some(now);
            self.pauses = self.pauses.saturating_add(1);
            log_debug!(
                "outbound: pause reading at {} bytes, {} packets",
                bytes,
                packets
            );
        }
    }

    /// Once both levels are down to their low watermarks, leave overload and resume reading;
    /// `true` on the resume edge.
    fn settle_at_low_watermarks(&mut self, now: Instant) -> bool {
        // Most completions happen while reading runs and the ring is calm: nothing to settle,
        // and no level to read.
        if self.paused_since.is_none() && !self.overload {
            return false;
        }
        let (bytes, packets) = self.outbound_held();
        if bytes > self.config.outbound_low_watermark_bytes as usize
            || packets > self.config.outbound_low_watermark_packets as usize
        {
            return false;
        }
        if self.overload {
            self.overload = false;
            log_debug!(
                "outbound: overload over at {} bytes, {} packets",
                bytes,
                packets
            );
        }
        let Some(since) = self.paused_since.take() else {
            return false;
        };
        self.paused_micros = self.paused_micros.saturating_add(now.micros_since(since));
        log_debug!(
            "outbound: resume reading at {} bytes, {} packets",
            bytes,
            packets
        );
        true
    }
}

impl<B, S> fmt::Debug for PacketTunnel<B, S>
where
    B: AsRef<[u8]>,
    S: AsRef<[Slot]>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PacketTunnel")
            .field("config", &self.config)
            .field("outbound", &self.outbound)
            .field("inbound", &self.inbound)
            .field("paused", &self.paused_since.is_some())
            .finish_non_exhaustive()
    }
}

/// Hand out the head of `ring`, recording how long it waited.
fn handout<'r, B, S>(
    now: Instant,
    ring: &'r mut PacketRing<B, S>,
    counters: &mut DirectionCounters,
) -> Option<&'r [u8]>
where
    B: AsRef<[u8]> + AsMut<[u8]>,
    S: AsRef<[Slot]> + AsMut<[Slot]>,
{
    let (enqueued_at, packet) = ring.handout_stamped()?;
    counters.last_sojourn_micros = now.micros_since(enqueued_at);
    Some(packet)
}

/// Whether the outbound ring holds bytes or packets at or above their high watermark.
fn at_high_watermark<B, S>(ring: &PacketRing<B, S>, config: &TunnelConfig) -> bool
where
    B: AsRef<[u8]> + AsMut<[u8]>,
    S: AsRef<[Slot]> + AsMut<[Slot]>,
{
    ring.bytes_used() >= config.outbound_high_watermark_bytes as usize
        || ring.slots_used() >= config.outbound_high_watermark_packets as usize
}

/// Refuse empty and oversized packets, counting each under its own reason.
fn check_len(len: usize, max: u32, counters: &mut DirectionCounters) -> Result<(), PacketError> {
    let max = max as usize;
    if len == 0 {
        counters.empty_packets = counters.empty_packets.saturating_add(1);
        return Err(PacketError::Empty);
    }
    if len > max {
        counters.oversized_packets = counters.oversized_packets.saturating_add(1);
        return Err(PacketError::TooLong { len, max });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
