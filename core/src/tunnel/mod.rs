//! `PacketTunnel`: the memory governor of a packet tunnel provider, documented on the type.

mod batch;
mod config;
mod limits;
mod stats;

pub use batch::BatchPush;
pub use config::{CeilingTooSmall, ConfigError, DropPolicy, TunnelConfig};
pub use limits::TunnelLimits;
pub use stats::{DirectionStats, TunnelStats};

use core::fmt;

use self::stats::{DirectionCounters, count};
use crate::aqm::{Aqm, Codel, CodelParams, Dropped};
use crate::bql::Bql;
use crate::fmt::{log_debug, log_trace};
use crate::fq::{FlowQueue, FlowQueues, FlowSettings};
use crate::memory::Pressure;
use crate::ring::{CompleteError, InFlight, PacketRing, PushError, Released, RingLevels, Slot};
use crate::time::{Clock, Instant};

/// The storage a [`PacketTunnel`] runs in, handed over at creation. Lengths must equal the
/// configuration's sizes. Named fields keep the two rings from being swapped by mistake.
///
/// The queue tables are used in flow-queue mode ([`Aqm::FqCodel`]) and must be empty otherwise
/// (`[FlowQueue; 0]`, the default type, or an empty slice).
#[derive(Debug)]
pub struct TunnelStorage<B, S, F = [FlowQueue; 0]> {
    /// `config.outbound_bytes` bytes.
    pub outbound_arena: B,
    /// `config.outbound_packets` slots.
    pub outbound_slots: S,
    /// `config.inbound_bytes` bytes.
    pub inbound_arena: B,
    /// `config.inbound_packets` slots.
    pub inbound_slots: S,
    /// `config.aqm.flow_queues()` queues.
    pub outbound_queues: F,
    /// `config.aqm.flow_queues()` queues.
    pub inbound_queues: F,
}

/// Why a packet was refused. The tunnel is unchanged apart from the counter of that reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
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
#[non_exhaustive]
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
    /// The ring was full and the packet was dropped. In flow-queue mode this happens only while
    /// every inbound cell is in flight.
    DroppedNewest,
    /// Flow-queue mode: the packet was queued after dropping from the head of the fattest flow
    /// queue (the one holding the most cells), which may be the packet's own.
    QueuedAfterDroppingFromFattest {
        /// Packets dropped.
        packets: usize,
        /// Bytes dropped.
        bytes: usize,
    },
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
/// out bytes stay valid and in place until they are completed. The batch calls
/// ([`PacketTunnel::on_outbound_batch`], [`PacketTunnel::poll_outbound_batch`],
/// [`PacketTunnel::poll_inbound_batch`]) do the same for a whole batch in one call, with the same
/// results, and cost less per packet.
///
/// ## Flow-queue mode
///
/// With [`Aqm::FqCodel`] each direction hashes packets by flow into queues served fairly (see
/// the `fq` module): one flow's flood no longer takes the link and the latency from the others.
/// Reading then pauses only when no room can be made, i.e. every outbound cell is in flight:
/// while any cell holds a queued packet, an arriving packet is queued after dropping from the
/// fattest queue, because pausing would only move the flood into the kernel's TUN queue, a FIFO
/// nobody manages, and with it the isolation. The resume edge is reported exactly once, on the
/// completion that frees a cell. Packets keep their order within a flow, not across flows.
///
/// `B` stores bytes, `S` slots and `F` flow queues (only in flow-queue mode), as for
/// [`PacketRing`]: arrays on an embedded target, boxed slices on a host with an allocator.
pub struct PacketTunnel<B, S, F = [FlowQueue; 0]> {
    config: TunnelConfig,
    /// The limits in force: the configuration's, shrunk under memory pressure.
    limits: TunnelLimits,
    clock: Clock,
    outbound: Queue<B, S, F>,
    inbound: Queue<B, S, F>,
    /// FIFO mode with CoDel: its parameters and one state per ring.
    codel: Option<(CodelParams, Codel, Codel)>,
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
    /// The byte queue limit on what the host has sent below the tunnel.
    bql: Bql,
    /// Hand-outs the byte queue limit held back.
    limit_holds: u64,
}

/// One direction's queue: a FIFO ring, or flow queues.
enum Queue<B, S, F> {
    Fifo(PacketRing<B, S>),
    Flows(FlowQueues<B, S, F>),
}

impl<B, S, F> PacketTunnel<B, S, F>
where
    B: AsRef<[u8]> + AsMut<[u8]>,
    S: AsRef<[Slot]> + AsMut<[Slot]>,
    F: AsRef<[FlowQueue]> + AsMut<[FlowQueue]>,
{
    /// A tunnel with `config`, running in `storage`, whose lengths must match the config.
    pub fn new(config: TunnelConfig, storage: TunnelStorage<B, S, F>) -> Result<Self, ConfigError> {
        config.validate()?;
        let queues = config.aqm.flow_queues();
        let lengths = [
            (storage.outbound_queues.as_ref().len(), queues),
            (storage.inbound_queues.as_ref().len(), queues),
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
        let queue = |arena, slots, queues| match config.aqm {
            Aqm::FqCodel {
                target_micros,
                interval_micros,
                quantum_bytes,
                hash_seed,
                ..
            } => {
                let settings = FlowSettings {
                    cell_size: config.cell_bytes() as usize,
                    max_packet: config.max_packet_len as usize,
                    quantum: quantum_bytes,
                    seed: hash_seed,
                    codel: CodelParams::new(target_micros, interval_micros),
                };
                FlowQueues::new(arena, slots, queues, settings)
                    .map(Queue::Flows)
                    .ok_or(ConfigError::StorageMismatch)
            }
            Aqm::Off | Aqm::Codel { .. } => {
                PacketRing::with_packet_align(arena, slots, config.packet_align as usize)
                    .map(Queue::Fifo)
                    .map_err(|_| ConfigError::ZeroCapacity)
            }
        };
        Ok(PacketTunnel {
            config,
            limits: TunnelLimits::of(&config, Pressure::Normal),
            clock: Clock::default(),
            outbound: queue(
                storage.outbound_arena,
                storage.outbound_slots,
                storage.outbound_queues,
            )?,
            inbound: queue(
                storage.inbound_arena,
                storage.inbound_slots,
                storage.inbound_queues,
            )?,
            codel: match config.aqm {
                Aqm::Codel {
                    target_micros,
                    interval_micros,
                } => Some((
                    CodelParams::new(target_micros, interval_micros),
                    Codel::IDLE,
                    Codel::IDLE,
                )),
                Aqm::Off | Aqm::FqCodel { .. } => None,
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
            bql: Bql::new(config.byte_queue_limit),
            limit_holds: 0,
        })
    }

    /// Bytes of storage a tunnel with `config` needs (both arenas, both slot arrays and, in
    /// flow-queue mode, both queue tables). The engine holds nothing else apart from its own
    /// fixed-size struct.
    pub const fn footprint(config: &TunnelConfig) -> usize {
        config.storage_bytes()
    }

    /// The configuration the tunnel was built with.
    pub fn config(&self) -> &TunnelConfig {
        &self.config
    }

    /// Whether the host should read more outbound packets now (call `readPackets`).
    ///
    /// FIFO mode: `false` from the moment held bytes or packets reach a high watermark until a
    /// completion brings both down to their low watermarks; that completion reports
    /// `resume_reading`. Flow-queue mode: `false` only while every outbound cell is in flight
    /// (from the hand-out that took the last one to the completion that frees one).
    ///
    /// Either way, a valid packet pushed while this is `true` is never refused for room (in FIFO
    /// mode the configuration reserves the headroom above the high watermarks for it; in
    /// flow-queue mode room is made by dropping from the fattest queue).
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
    #[inline]
    pub fn on_outbound_packet(&mut self, now: Instant, packet: &[u8]) -> Result<(), PacketError> {
        self.push_outbound_with(now, packet.len(), |dst| copy_packet(dst, packet))
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
    ///
    /// With a [`ByteQueueLimit`](crate::ByteQueueLimit), nothing is handed out while the bytes
    /// sent below the tunnel (completed, and not yet reported transmitted) reach the limit; the
    /// packets wait in the queue, where queue management acts on them. Report progress below
    /// with [`PacketTunnel::on_outbound_transmitted`] or
    /// [`PacketTunnel::on_outbound_queued_below`], then drain this again.
    #[must_use = "the packet handed out is in flight: send it, then complete it"]
    #[inline]
    pub fn poll_outbound(&mut self, now: Instant) -> Option<&[u8]> {
        let now = self.clock.observe(now);
        if self.bql.is_reached() && !self.outbound.is_queue_empty() {
            self.bql.note_held();
            self.limit_holds = self.limit_holds.saturating_add(1);
            return None;
        }
        let max_packet = self.config.max_packet_len as usize;
        match &mut self.outbound {
            Queue::Fifo(ring) => {
                if let Some((params, codel, _)) = self.codel.as_mut() {
                    let mut dropped = codel.before_handout(params, now, ring, max_packet);
                    // Paused, or at the high watermark: the ring is pressed, and a persistent
                    // queue here would otherwise move into the kernel's queue (see `aqm`).
                    let pressed = self.paused_since.is_some()
                        || self
                            .limits
                            .at_high_watermark((ring.bytes_used(), ring.slots_used()));
                    if codel.is_dropping() && pressed && !self.overload {
                        self.overload = true;
                        self.overloads = self.overloads.saturating_add(1);
                        log_debug!("outbound: overload, dropping stale packets instead of pausing");
                    }
                    if self.overload && pressed {
                        dropped.merge(Codel::drop_stale(params, now, ring));
                    }
                    self.outbound_counters.count_aqm_drops(dropped);
                }
                handout(now, ring.handout_stamped(), &mut self.outbound_counters)
            }
            Queue::Flows(flows) => {
                // Handing out the last cell that is not in flight leaves no room to make: pause.
                let takes_last = flows.levels().packets_in_flight + 1 >= flows.cell_limit();
                let (dropped, packet) = flows.handout(now);
                self.outbound_counters.count_aqm_drops(dropped);
                if packet.is_some() && takes_last && self.paused_since.is_none() {
                    self.paused_since = Some(now);
                    self.pauses = self.pauses.saturating_add(1);
                    log_debug!("outbound: every cell in flight, pause reading");
                }
                handout(now, packet, &mut self.outbound_counters)
            }
        }
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
        self.bql.sent(released.bytes);
        let resume_reading = match &self.outbound {
            Queue::Fifo(_) => self.settle_at_low_watermarks(now),
            Queue::Flows(flows) if flows.can_take() => self.resume(now),
            Queue::Flows(_) => false,
        };
        Ok(OutboundCompletion {
            released,
            resume_reading,
        })
    }

    /// The layer below the tunnel (the socket, the driver) reports `bytes` of completed
    /// outbound packets transmitted: a send completion. Feeds the byte queue limit (see
    /// [`ByteQueueLimit`](crate::ByteQueueLimit)); without one it only records `now`. Reports
    /// beyond what was sent count as what was sent. Drain
    /// [`PacketTunnel::poll_outbound`] afterwards: the limit may have opened.
    pub fn on_outbound_transmitted(&mut self, now: Instant, bytes: u64) {
        let now = self.clock.observe(now);
        self.bql.transmitted(now, bytes);
    }

    /// The layer below the tunnel reports `bytes` still queued in it: `SIOCOUTQ` on Linux,
    /// `SO_NWRITE` on Darwin, read after the sends. Bytes it holds beyond what the tunnel sent
    /// (another sender's, or its own accounting: Linux counts a UDP socket's buffers at their
    /// true size) are not counted as the tunnel's. Otherwise as
    /// [`PacketTunnel::on_outbound_transmitted`].
    pub fn on_outbound_queued_below(&mut self, now: Instant, bytes: u64) {
        let now = self.clock.observe(now);
        self.bql.queued_below(now, bytes);
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
        let ring = match &mut self.inbound {
            Queue::Fifo(ring) => ring,
            Queue::Flows(flows) => {
                return Ok(
                    match flows.push_with(now, len, |d| copy_packet(d, packet)) {
                        Ok(dropped) => {
                            self.inbound_counters.accepted(
                                len,
                                flows.packets_held(),
                                flows.bytes_used(),
                            );
                            self.inbound_counters.count_overflow_drops(dropped);
                            match dropped {
                                Dropped { packets: 0, .. } => InboundDisposition::Queued,
                                Dropped { packets, bytes } => {
                                    InboundDisposition::QueuedAfterDroppingFromFattest {
                                        packets: packets as usize,
                                        bytes: bytes as usize,
                                    }
                                }
                            }
                        }
                        Err(_) => {
                            count(&mut self.dropped_newest.0, &mut self.dropped_newest.1, len);
                            InboundDisposition::DroppedNewest
                        }
                    },
                );
            }
        };
        let mut dropped = (0usize, 0usize);
        // Under memory pressure the ring holds less than it could: a packet beyond the limits
        // is handled as one that does not fit.
        let limits = self.limits;
        let fits = |ring: &PacketRing<B, S>| {
            ring.fits(len)
                && (limits.pressure == Pressure::Normal
                    || limits.inbound_fits((ring.bytes_used(), ring.slots_used()), len))
        };
        // Dropping queued packets frees arena only when nothing handed out sits before them.
        if self.config.inbound_drop_policy == DropPolicy::DropOldest
            && ring.levels().packets_in_flight == 0
            && ring.levels().bytes_dropped_pending == 0
        {
            while !fits(ring) {
                let Some(old) = ring.drop_queued_front() else {
                    break;
                };
                dropped = (dropped.0.saturating_add(1), dropped.1.saturating_add(old));
                count(&mut self.dropped_oldest.0, &mut self.dropped_oldest.1, old);
            }
        }
        if !fits(ring) {
            // The limits never fall below one maximum-size packet, so once the oldest are
            // dropped the packet fits: dropping them and then this one too would lose data the
            // disposition does not report.
            debug_assert_eq!(
                dropped.0, 0,
                "dropped the oldest for a packet that cannot fit"
            );
            count(&mut self.dropped_newest.0, &mut self.dropped_newest.1, len);
            return Ok(InboundDisposition::DroppedNewest);
        }
        match ring.push(now, packet) {
            Ok(()) => {
                self.inbound_counters
                    .accepted(len, ring.packets_held(), ring.bytes_used());
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
        let max_packet = self.config.max_packet_len as usize;
        // Inbound never pauses (it drops when full), so it has no overload state.
        match &mut self.inbound {
            Queue::Fifo(ring) => {
                if let Some((params, _, codel)) = self.codel.as_mut() {
                    let dropped = codel.before_handout(params, now, ring, max_packet);
                    self.inbound_counters.count_aqm_drops(dropped);
                }
                handout(now, ring.handout_stamped(), &mut self.inbound_counters)
            }
            Queue::Flows(flows) => {
                let (dropped, packet) = flows.handout(now);
                self.inbound_counters.count_aqm_drops(dropped);
                handout(now, packet, &mut self.inbound_counters)
            }
        }
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
            outbound_queue_limit_bytes: u64::from(self.bql.limit()),
            outbound_bytes_below: u64::from(self.bql.below()),
            outbound_limit_holds: self.limit_holds,
            outbound_limit_grows: self.bql.grows,
            outbound_limit_shrinks: self.bql.shrinks,
        }
    }

    /// Apply memory pressure `level` (from [`MemoryGovernor::poll_pressure`]): the limits
    /// shrink by [`Pressure::scale`] (see [`TunnelLimits`]) or grow back, never above the
    /// configuration. Returns `true` on the resume edge: the limits grew enough that reading,
    /// paused, must start again. Shrinking may pause reading at once
    /// ([`PacketTunnel::can_read_outbound`] turns `false`); packets already queued stay.
    ///
    /// [`MemoryGovernor::poll_pressure`]: crate::MemoryGovernor::poll_pressure
    #[must_use = "true is the resume edge: the host must start reading outbound packets again"]
    pub fn on_pressure(&mut self, now: Instant, level: Pressure) -> bool {
        let now = self.clock.observe(now);
        self.limits = TunnelLimits::of(&self.config, level);
        let cells = (
            self.limits.outbound_packets as usize,
            self.limits.inbound_packets as usize,
        );
        if let Queue::Flows(flows) = &mut self.inbound {
            flows.set_cell_limit(cells.1);
        }
        match &mut self.outbound {
            Queue::Fifo(_) => {
                let held = self.outbound_held();
                self.update_pause(now, held);
                self.settle_at_low_watermarks(now)
            }
            Queue::Flows(flows) => {
                flows.set_cell_limit(cells.0);
                if flows.can_take() {
                    self.resume(now)
                } else {
                    if self.paused_since.is_none() {
                        self.paused_since = Some(now);
                        self.pauses = self.pauses.saturating_add(1);
                    }
                    false
                }
            }
        }
    }

    /// The limits the tunnel applies now.
    pub fn limits(&self) -> TunnelLimits {
        self.limits
    }

    #[inline]
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
        let pushed = match &mut self.outbound {
            Queue::Fifo(ring) => ring.push_with(stamp, len, write).map(|()| {
                // The levels are read once and serve the statistics and the pause check.
                let held = (ring.bytes_used(), ring.slots_used());
                self.outbound_counters
                    .accepted(len, ring.packets_held(), held.0);
                Some(held)
            }),
            Queue::Flows(flows) => flows.push_with(stamp, len, write).map(|dropped| {
                self.outbound_counters
                    .accepted(len, flows.packets_held(), flows.bytes_used());
                self.outbound_counters.count_overflow_drops(dropped);
                None
            }),
        };
        match pushed {
            Ok(fifo_held) => {
                self.clock.observe(stamp);
                if let Some(held) = fifo_held {
                    self.update_pause(stamp, held);
                }
                Ok(())
            }
            Err(PushError::Full) => {
                self.refuse_for_room(len);
                Err(PacketError::NoRoom)
            }
            Err(PushError::Empty) => {
                debug_assert!(false, "check_len refuses empty packets first");
                Err(PacketError::Empty)
            }
        }
    }

    /// Count a valid outbound packet of `len` bytes refused for want of room.
    fn refuse_for_room(&mut self, len: usize) {
        debug_assert!(
            self.paused_since.is_some(),
            "a valid packet pushed while reading was allowed must fit"
        );
        count(&mut self.refused_packets, &mut self.refused_bytes, len);
    }

    /// Arena bytes (alignment padding included) and slots the outbound ring holds,
    /// dropped-pending ones included: both are what runs out, so both are what the watermarks
    /// compare.
    fn outbound_held(&self) -> (usize, usize) {
        (self.outbound.bytes_used(), self.outbound.slots_used())
    }

    /// Pause reading once a high watermark is reached, in overload too: the headroom above the
    /// high watermarks is what guarantees that a packet pushed while reading was allowed fits.
    #[inline]
    fn update_pause(&mut self, now: Instant, (bytes, packets): (usize, usize)) {
        if self.paused_since.is_none() && self.limits.at_high_watermark((bytes, packets)) {
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
        if !self.limits.at_low_watermarks((bytes, packets)) {
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
        self.resume(now)
    }

    /// End a pause, if reading is paused; `true` on that edge.
    fn resume(&mut self, now: Instant) -> bool {
        let Some(since) = self.paused_since.take() else {
            return false;
        };
        self.paused_micros = self.paused_micros.saturating_add(now.micros_since(since));
        log_debug!(
            "outbound: resume reading at {} bytes, {} packets",
            self.outbound.bytes_used(),
            self.outbound.slots_used()
        );
        true
    }
}

impl<B, S, F> fmt::Debug for PacketTunnel<B, S, F>
where
    B: AsRef<[u8]>,
    S: AsRef<[Slot]>,
    F: AsRef<[FlowQueue]>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PacketTunnel")
            .field("config", &self.config)
            .field("paused", &self.paused_since.is_some())
            .finish_non_exhaustive()
    }
}

impl<B, S, F> Queue<B, S, F>
where
    B: AsRef<[u8]> + AsMut<[u8]>,
    S: AsRef<[Slot]> + AsMut<[Slot]>,
    F: AsRef<[FlowQueue]> + AsMut<[FlowQueue]>,
{
    fn levels(&self) -> RingLevels {
        match self {
            Queue::Fifo(ring) => ring.levels(),
            Queue::Flows(flows) => flows.levels(),
        }
    }

    fn is_queue_empty(&self) -> bool {
        match self {
            Queue::Fifo(ring) => ring.is_queue_empty(),
            Queue::Flows(flows) => flows.levels().packets_queued == 0,
        }
    }

    /// Arena bytes taken, alignment padding (FIFO) or whole cells (flow queues) included.
    fn bytes_used(&self) -> usize {
        match self {
            Queue::Fifo(ring) => ring.bytes_used(),
            Queue::Flows(flows) => flows.bytes_used(),
        }
    }

    /// Slots (FIFO) or cells (flow queues) in use.
    fn slots_used(&self) -> usize {
        match self {
            Queue::Fifo(ring) => ring.slots_used(),
            Queue::Flows(flows) => flows.cells_used(),
        }
    }

    fn in_flight(&self) -> InFlight<'_> {
        match self {
            Queue::Fifo(ring) => ring.in_flight(),
            Queue::Flows(flows) => flows.in_flight(),
        }
    }

    fn complete(&mut self, count: usize) -> Result<Released, CompleteError> {
        match self {
            Queue::Fifo(ring) => ring.complete(count),
            Queue::Flows(flows) => flows.complete(count),
        }
    }
}

/// Pass on a packet handed out, recording how long it waited.
fn handout<'p>(
    now: Instant,
    packet: Option<(Instant, &'p [u8])>,
    counters: &mut DirectionCounters,
) -> Option<&'p [u8]> {
    let (enqueued_at, packet) = packet?;
    counters.last_sojourn_micros = now.micros_since(enqueued_at);
    Some(packet)
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

/// Copy a packet into the space a queue made for it, exactly as long. Not `copy_from_slice`
/// alone: its length check stays in the code wherever the optimiser cannot relate the two
/// lengths through a queue's generic `write`, and it is a panic path the bare-metal library
/// must not have (`tests/embedded/run.sh` proves there is none).
#[inline(always)]
fn copy_packet(dst: &mut [u8], packet: &[u8]) {
    debug_assert_eq!(
        dst.len(),
        packet.len(),
        "the queue made room for the packet"
    );
    let len = dst.len().min(packet.len());
    if let (Some(dst), Some(packet)) = (dst.get_mut(..len), packet.get(..len)) {
        dst.copy_from_slice(packet);
    }
}
#[cfg(test)]
mod tests;
