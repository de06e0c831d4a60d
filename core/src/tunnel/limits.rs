//! The limits a tunnel applies: its configuration, shrunk under memory pressure.

use super::config::TunnelConfig;
use crate::memory::Pressure;

/// The limits a [`PacketTunnel`](crate::PacketTunnel) applies now: the configured ones at
/// [`Pressure::Normal`], shrunk by [`Pressure::scale`] above it, never above what was allocated.
///
/// - FIFO mode: reading pauses at the outbound high watermarks and resumes at the low ones;
///   inbound packets are dropped by policy once they would take the ring past `inbound_bytes` or
///   `inbound_packets`.
/// - Flow-queue mode: each direction uses at most `outbound_packets` / `inbound_packets` cells;
///   a packet beyond them is queued after dropping from the fattest queue, and outbound reading
///   pauses while that many cells are in flight. The watermarks are not used.
///
/// What shrinking saves is what has not been touched yet: arena pages written once stay dirty
/// (see the sizing section of the README).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TunnelLimits {
    /// The level the limits were shrunk for.
    pub pressure: Pressure,
    /// Outbound bytes held at which reading pauses (FIFO mode).
    pub outbound_high_watermark_bytes: u32,
    /// Outbound bytes held at which reading resumes (FIFO mode).
    pub outbound_low_watermark_bytes: u32,
    /// Outbound packets held at which reading pauses (FIFO mode).
    pub outbound_high_watermark_packets: u32,
    /// Outbound packets held at which reading resumes (FIFO mode).
    pub outbound_low_watermark_packets: u32,
    /// Outbound cells in use at most (flow-queue mode).
    pub outbound_packets: u32,
    /// Inbound arena bytes in use at most (FIFO mode); never below one maximum-size packet,
    /// so a packet that fits the empty ring fits its limits too.
    pub inbound_bytes: u32,
    /// Inbound packets (FIFO mode) or cells (flow-queue mode) in use at most.
    pub inbound_packets: u32,
}

impl TunnelLimits {
    /// The limits of `config` at `pressure`.
    ///
    /// Each low watermark stays below its high one, as the configuration requires, so a pause
    /// always has a level to resume at. The inbound byte limit stays at or above
    /// `max_packet_len` (the configuration requires the arena to hold one), so dropping the
    /// oldest packets always makes room for a new one.
    pub(crate) const fn of(config: &TunnelConfig, pressure: Pressure) -> TunnelLimits {
        let high_bytes = pressure.scale_u32(config.outbound_high_watermark_bytes);
        let high_packets = pressure.scale_u32(config.outbound_high_watermark_packets);
        let low_bytes = pressure.scale_u32(config.outbound_low_watermark_bytes);
        let low_packets = pressure.scale_u32(config.outbound_low_watermark_packets);
        TunnelLimits {
            pressure,
            outbound_high_watermark_bytes: high_bytes,
            outbound_low_watermark_bytes: below(low_bytes, high_bytes),
            outbound_high_watermark_packets: high_packets,
            outbound_low_watermark_packets: below(low_packets, high_packets),
            outbound_packets: pressure.scale_u32(config.outbound_packets),
            inbound_bytes: at_least(
                pressure.scale_u32(config.inbound_bytes),
                config.max_packet_len,
            ),
            inbound_packets: pressure.scale_u32(config.inbound_packets),
        }
    }

    /// Whether `held` outbound arena bytes and slots reach either high watermark.
    pub(crate) fn at_high_watermark(&self, (bytes, packets): (usize, usize)) -> bool {
        bytes >= self.outbound_high_watermark_bytes as usize
            || packets >= self.outbound_high_watermark_packets as usize
    }

    /// Whether `held` outbound arena bytes and slots are down to both low watermarks.
    pub(crate) fn at_low_watermarks(&self, (bytes, packets): (usize, usize)) -> bool {
        bytes <= self.outbound_low_watermark_bytes as usize
            && packets <= self.outbound_low_watermark_packets as usize
    }

    /// Whether an inbound packet of `len` bytes stays within the inbound limits of a FIFO ring
    /// holding `held` arena bytes and slots (alignment padding aside).
    pub(crate) fn inbound_fits(&self, (bytes, packets): (usize, usize), len: usize) -> bool {
        bytes.saturating_add(len) <= self.inbound_bytes as usize
            && packets < self.inbound_packets as usize
    }
}

/// `low`, lowered below `high` if scaling made them meet (`high` is at least 1).
const fn below(low: u32, high: u32) -> u32 {
    if low < high {
        low
    } else {
        high.saturating_sub(1)
    }
}

/// `limit`, raised to `floor` if it fell below it.
const fn at_least(limit: u32, floor: u32) -> u32 {
    if limit < floor { floor } else { limit }
}
