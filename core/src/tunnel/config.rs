//! The packet tunnel's configuration: capacities, watermarks and drop policy, fixed at creation.

use core::fmt;
use core::mem::size_of;

use crate::aqm::Aqm;
use crate::bql::ByteQueueLimit;
use crate::fq::FlowQueue;
use crate::ring::{DEFAULT_PACKET_ALIGN, MAX_ARENA_BYTES, MAX_PACKET_ALIGN, Slot};

/// What [`PacketTunnel::on_inbound_packet`](super::PacketTunnel::on_inbound_packet) does when
/// the inbound ring has no room for a new packet.
///
/// Inbound packets go to `writePackets`, which has no flow control, so the tunnel may drop IP
/// packets: TCP recovers, and the memory ceiling holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum DropPolicy {
    /// Drop the packet that just arrived and keep what is queued (tail drop). Cheapest; keeps
    /// older data flowing, which suits bulk transfers.
    #[default]
    DropNewest = 0,
    /// Drop queued packets from the front until the new one fits. Fresher data wins, which suits
    /// interactive and real-time traffic. Falls back to dropping the new packet while packets are
    /// handed out, since dropping queued ones then frees no memory.
    DropOldest = 1,
}

impl DropPolicy {
    /// The policy with numeric value `value`, or `None` for an unknown value.
    pub const fn from_u8(value: u8) -> Option<DropPolicy> {
        match value {
            0 => Some(DropPolicy::DropNewest),
            1 => Some(DropPolicy::DropOldest),
            _ => None,
        }
    }
}

/// Capacities and policy of a [`PacketTunnel`](super::PacketTunnel), fixed at creation.
///
/// "Outbound" is apps → tunnel (`readPackets`), "inbound" is tunnel → apps (`writePackets`).
/// Sizes are arena bytes: packet payload plus the alignment padding in front of each packet
/// (at most `packet_align - 1` bytes); each packet also takes one 16-byte slot.
///
/// With [`Aqm::FqCodel`] each ring is cut into cells of [`TunnelConfig::cell_bytes`] (the
/// largest packet rounded up to `packet_align`), one per packet: a ring's bytes must then be
/// exactly its packets times the cell size, and the outbound watermarks are not used (reading
/// pauses only when every outbound cell is in flight; see
/// [`PacketTunnel::can_read_outbound`](super::PacketTunnel::can_read_outbound)). The inbound
/// drop policy is not used either: a full ring drops from the fattest flow queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TunnelConfig {
    /// Byte arena of the outbound ring: the most outbound bytes held, queued or in flight.
    pub outbound_bytes: u32,
    /// Slots of the outbound ring: the most outbound packets held.
    pub outbound_packets: u32,
    /// Byte arena of the inbound ring.
    pub inbound_bytes: u32,
    /// Slots of the inbound ring.
    pub inbound_packets: u32,
    /// The largest packet accepted in either direction; set it to the tunnel's MTU.
    pub max_packet_len: u32,
    /// Outbound reading pauses when this many arena bytes are held (packets queued and in
    /// flight, with their alignment padding).
    pub outbound_high_watermark_bytes: u32,
    /// Paused outbound reading resumes when held bytes fall to this level (and packets to theirs).
    pub outbound_low_watermark_bytes: u32,
    /// Outbound reading pauses when this many packets are held.
    pub outbound_high_watermark_packets: u32,
    /// Paused outbound reading resumes when held packets fall to this level (and bytes to theirs).
    pub outbound_low_watermark_packets: u32,
    /// What to drop when the inbound ring is full.
    pub inbound_drop_policy: DropPolicy,
    /// Active queue management for both rings: off (the ceiling alone), or CoDel to keep the
    /// standing queue, and so the latency through the tunnel, short.
    pub aqm: Aqm,
    /// Packets start at addresses that are multiples of this power of two (up to 4096) when the
    /// padding fits, so copies in and out run at full speed; see [`PacketRing`]'s "Alignment"
    /// section. 64 (a cache line) by default; 1 packs packets back to back.
    ///
    /// [`PacketRing`]: crate::PacketRing
    pub packet_align: u32,
    /// A cap on the outbound bytes the host has sent down and the layer below has not yet
    /// transmitted, so the standing queue stays in the tunnel, where queue management acts on
    /// it, instead of in a socket buffer the host cannot size (see [`ByteQueueLimit`]). Off by
    /// default.
    pub byte_queue_limit: ByteQueueLimit,
}

impl TunnelConfig {
    /// Defaults for an iOS or macOS packet tunnel provider (killed at 50 MiB).
    ///
    /// 1 MiB per direction holds the bandwidth-delay product of a 100 Mbit/s path at 80 ms, and
    /// the whole engine stays near 2 MiB: a small share of the 50 MiB limit, which also has to
    /// hold the Swift runtime, crypto state and the provider's own buffers. 2048 slots per
    /// direction cover an average packet of 512 bytes. Reading pauses at three quarters full and
    /// resumes at half, so a read batch that arrives after the pause still fits (256 KiB of
    /// headroom is 170 full-size packets) and the host does not flap between the two states.
    /// `max_packet_len` is 1500: set it to the MTU in `NEPacketTunnelNetworkSettings`. AQM is
    /// off, so packets leave in order unless a ring is full; [`Aqm::CODEL_DEFAULT`] keeps the
    /// queueing delay near 5 ms under load. Packets start on 64-byte cache lines.
    pub const DEFAULT: TunnelConfig = TunnelConfig {
        outbound_bytes: 1 << 20,
        outbound_packets: 2048,
        inbound_bytes: 1 << 20,
        inbound_packets: 2048,
        max_packet_len: 1500,
        outbound_high_watermark_bytes: 3 << 18,
        outbound_low_watermark_bytes: 1 << 19,
        outbound_high_watermark_packets: 1536,
        outbound_low_watermark_packets: 1024,
        inbound_drop_policy: DropPolicy::DropNewest,
        aqm: Aqm::Off,
        packet_align: DEFAULT_PACKET_ALIGN as u32,
        byte_queue_limit: ByteQueueLimit::Off,
    };

    /// Check the configuration. [`PacketTunnel::new`](super::PacketTunnel::new) calls this.
    ///
    /// Beyond non-zero sizes it requires `low < high` for both watermarks, room for two
    /// maximum-size packets above the byte high watermark (packets are stored contiguously, so
    /// that headroom is what guarantees a packet read while reading was allowed always fits;
    /// alignment padding never takes it away, see [`PacketRing`](crate::PacketRing)), and a
    /// power-of-two `packet_align` up to 4096.
    ///
    /// In flow-queue mode the watermark rules are replaced by one: each ring's bytes are its
    /// packets times [`TunnelConfig::cell_bytes`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        use ConfigError as E;
        if !self.aqm.is_valid() {
            return Err(E::InvalidAqm);
        }
        if self.max_packet_len == 0 {
            return Err(E::ZeroMaxPacketLen);
        }
        if !self.byte_queue_limit.is_valid(self.max_packet_len) {
            return Err(E::InvalidByteQueueLimit);
        }
        for (bytes, packets) in [
            (self.outbound_bytes, self.outbound_packets),
            (self.inbound_bytes, self.inbound_packets),
        ] {
            if bytes == 0 || packets == 0 {
                return Err(E::ZeroCapacity);
            }
            if bytes as usize > MAX_ARENA_BYTES {
                return Err(E::RingTooLarge { bytes });
            }
        }
        if self.max_packet_len > self.inbound_bytes {
            return Err(E::InboundSmallerThanPacket);
        }
        if !self.packet_align.is_power_of_two() || self.packet_align as usize > MAX_PACKET_ALIGN {
            return Err(E::BadPacketAlign {
                align: self.packet_align,
            });
        }
        if self.aqm.flow_queues() > 0 {
            let cell = u64::from(self.cell_bytes());
            for (bytes, packets) in [
                (self.outbound_bytes, self.outbound_packets),
                (self.inbound_bytes, self.inbound_packets),
            ] {
                if u64::from(bytes) != u64::from(packets) * cell {
                    return Err(E::ArenaNotWholeCells {
                        cell_bytes: self.cell_bytes(),
                    });
                }
            }
            return Ok(());
        }
        if self.outbound_low_watermark_bytes >= self.outbound_high_watermark_bytes
            || self.outbound_low_watermark_packets >= self.outbound_high_watermark_packets
        {
            return Err(E::WatermarksOutOfOrder);
        }
        let headroom = u64::from(self.max_packet_len).saturating_mul(2);
        let needed = u64::from(self.outbound_high_watermark_bytes).saturating_add(headroom);
        if needed > u64::from(self.outbound_bytes) {
            return Err(E::NoHeadroomAboveHighWatermark {
                required_outbound_bytes: needed,
            });
        }
        if self.outbound_high_watermark_packets >= self.outbound_packets {
            return Err(E::NoSlotAboveHighWatermark);
        }
        Ok(())
    }

    /// A valid configuration whose whole memory stays within `ceiling_bytes`, for packets of
    /// up to `max_packet_len` bytes and the queue management `aqm`; or, when no configuration
    /// fits, [`CeilingTooSmall`] with the smallest ceiling that would.
    ///
    /// The rule, so a host can predict it: [`TunnelConfig::CEILING_OVERHEAD`] bytes are set
    /// aside for the engine itself (the C handle and its alignment included); the rest is split
    /// evenly between the two directions, since a tunnel carries bulk both ways. Each direction
    /// gives one 33rd to 16-byte slots (one slot per 512 arena bytes, the default's ratio: an
    /// average packet of 512 bytes), at least 4 slots, and the rest to the arena, up to
    /// [`MAX_ARENA_BYTES`] (a larger ceiling is not used up). Outbound reading pauses at three quarters of the arena and of the slots,
    /// lowered where needed to keep two maximum-size packets of room above it, and resumes at two
    /// thirds of that (half the slots). Inbound drops the newest packet when full; packets start
    /// on 64-byte lines. The footprint of the result is at most `ceiling_bytes`.
    pub fn for_ceiling(
        ceiling_bytes: u64,
        max_packet_len: u32,
        aqm: Aqm,
    ) -> Result<TunnelConfig, CeilingTooSmall> {
        match Self::derive(ceiling_bytes, max_packet_len, aqm) {
            Some(config) if config.validate().is_ok() => Ok(config),
            _ => Err(CeilingTooSmall {
                min_ceiling_bytes: Self::min_ceiling(max_packet_len, aqm),
            }),
        }
    }

    /// The smallest ceiling [`TunnelConfig::for_ceiling`] accepts for these packets and AQM, or
    /// `None` if none does (`max_packet_len` 0 or larger than a ring can hold, an invalid AQM).
    pub fn min_ceiling(max_packet_len: u32, aqm: Aqm) -> Option<u64> {
        let fits = |ceiling: u64| {
            Self::derive(ceiling, max_packet_len, aqm).is_some_and(|c| c.validate().is_ok())
        };
        // Past two full arenas a larger ceiling changes nothing, so this bounds the search.
        let mut high = Self::CEILING_OVERHEAD + 2 * (MAX_ARENA_BYTES as u64 + 16 * (1 << 24));
        if !fits(high) {
            return None;
        }
        let mut low = Self::CEILING_OVERHEAD;
        // Invariant: `fits(high)`, and every ceiling up to `low` does not fit.
        while high - low > 1 {
            let mid = low + (high - low) / 2;
            if fits(mid) {
                high = mid;
            } else {
                low = mid;
            }
        }
        Some(high)
    }

    /// Bytes of a ceiling [`TunnelConfig::for_ceiling`] sets aside for the engine itself: its
    /// struct, or the C handle, and the alignment padding of its block.
    pub const CEILING_OVERHEAD: u64 = 4096;

    fn derive(ceiling_bytes: u64, max_packet_len: u32, aqm: Aqm) -> Option<TunnelConfig> {
        // Every quantity below grows with the ceiling (never shrinks), so once a ceiling fits,
        // every larger one does too: `min_ceiling` relies on it, and a test checks it.
        const BYTES_PER_SLOT: u64 = 512;
        let slot = size_of::<Slot>() as u64;
        let per_direction = ceiling_bytes.checked_sub(Self::CEILING_OVERHEAD)? / 2;
        if aqm.flow_queues() > 0 {
            return Self::derive_cells(per_direction, max_packet_len, aqm);
        }
        // Of each `BYTES_PER_SLOT + slot` bytes, `slot` go to slots and the rest to the arena.
        let slot_share = per_direction.div_ceil(BYTES_PER_SLOT / slot + 1);
        let packets = (slot_share / slot).clamp(4, 1 << 24);
        let bytes = (per_direction - slot_share)
            .min(per_direction.checked_sub(packets * slot)?)
            .min(MAX_ARENA_BYTES as u64);
        let headroom = 2 * u64::from(max_packet_len);
        let high_bytes = (bytes * 3 / 4).min(bytes.checked_sub(headroom)?);
        let low_bytes = high_bytes * 2 / 3;
        let high_packets = packets * 3 / 4;
        let low_packets = packets / 2;
        let bytes = u32::try_from(bytes).ok()?;
        let packets = u32::try_from(packets).ok()?;
        Some(TunnelConfig {
            outbound_bytes: bytes,
            outbound_packets: packets,
            inbound_bytes: bytes,
            inbound_packets: packets,
            max_packet_len,
            outbound_high_watermark_bytes: u32::try_from(high_bytes).ok()?,
            outbound_low_watermark_bytes: u32::try_from(low_bytes).ok()?,
            outbound_high_watermark_packets: u32::try_from(high_packets).ok()?,
            outbound_low_watermark_packets: u32::try_from(low_packets).ok()?,
            inbound_drop_policy: DropPolicy::DropNewest,
            aqm,
            packet_align: DEFAULT_PACKET_ALIGN as u32,
            byte_queue_limit: ByteQueueLimit::Off,
        })
    }

    /// Flow-queue mode: each direction holds its queue table, and as many cells (a cell and its
    /// 16-byte descriptor each) as the rest allows, at least 4.
    fn derive_cells(per_direction: u64, max_packet_len: u32, aqm: Aqm) -> Option<TunnelConfig> {
        let mut config = TunnelConfig {
            max_packet_len,
            aqm,
            packet_align: DEFAULT_PACKET_ALIGN as u32,
            inbound_drop_policy: DropPolicy::DropNewest,
            ..TunnelConfig::DEFAULT
        };
        let cell = u64::from(config.cell_bytes());
        let table = u64::from(aqm.flow_queues()) * size_of::<FlowQueue>() as u64;
        let cells = (per_direction.checked_sub(table)? / (cell + size_of::<Slot>() as u64))
            .min((MAX_ARENA_BYTES as u64).checked_div(cell)?);
        if cells < 4 {
            return None;
        }
        let bytes = u32::try_from(cells * cell).ok()?;
        let packets = u32::try_from(cells).ok()?;
        // Not used in this mode, but kept valid for a host that switches the mode off.
        let high_bytes = (u64::from(bytes) * 3 / 4).min(u64::from(bytes).saturating_sub(2 * cell));
        config.outbound_bytes = bytes;
        config.outbound_packets = packets;
        config.inbound_bytes = bytes;
        config.inbound_packets = packets;
        config.outbound_high_watermark_bytes = u32::try_from(high_bytes).ok()?;
        config.outbound_low_watermark_bytes = u32::try_from(high_bytes * 2 / 3).ok()?;
        config.outbound_high_watermark_packets = packets * 3 / 4;
        config.outbound_low_watermark_packets = packets / 2;
        Some(config)
    }

    /// Bytes of storage a tunnel with this configuration holds: both arenas, both slot arrays
    /// and, in flow-queue mode, both queue tables. This is the engine's whole memory apart from
    /// its fixed-size struct.
    pub const fn storage_bytes(&self) -> usize {
        let slots = self.outbound_packets as usize + self.inbound_packets as usize;
        let queues = 2 * self.aqm.flow_queues() as usize;
        self.outbound_bytes as usize
            + self.inbound_bytes as usize
            + slots * size_of::<Slot>()
            + queues * size_of::<FlowQueue>()
    }

    /// Arena bytes of one cell in flow-queue mode: `max_packet_len` rounded up to `packet_align`
    /// (saturating at `u32::MAX`, which no valid ring reaches).
    pub const fn cell_bytes(&self) -> u32 {
        let align = if self.packet_align == 0 {
            1
        } else {
            self.packet_align
        };
        match self.max_packet_len.checked_next_multiple_of(align) {
            Some(cell) => cell,
            None => u32::MAX,
        }
    }
}

impl Default for TunnelConfig {
    fn default() -> Self {
        TunnelConfig::DEFAULT
    }
}

/// No configuration fits the ceiling given to [`TunnelConfig::for_ceiling`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct CeilingTooSmall {
    /// The smallest ceiling that works for the same packets and AQM, or `None` if none does.
    pub min_ceiling_bytes: Option<u64>,
}

/// Why a [`TunnelConfig`] or the storage handed in with it was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ConfigError {
    /// A ring has zero bytes or zero slots.
    ZeroCapacity,
    /// `max_packet_len` is zero.
    ZeroMaxPacketLen,
    /// A ring's byte size exceeds [`MAX_ARENA_BYTES`].
    RingTooLarge {
        /// The size asked for.
        bytes: u32,
    },
    /// The inbound ring cannot hold even one packet of `max_packet_len`.
    InboundSmallerThanPacket,
    /// A low watermark is not below its high watermark.
    WatermarksOutOfOrder,
    /// The outbound ring has less than two maximum-size packets of room above the byte high
    /// watermark.
    NoHeadroomAboveHighWatermark {
        /// The smallest `outbound_bytes` that gives the headroom.
        required_outbound_bytes: u64,
    },
    /// The packet high watermark leaves no free outbound slot above it.
    NoSlotAboveHighWatermark,
    /// CoDel's target is zero or not below its interval.
    InvalidAqm,
    /// `packet_align` is not a power of two up to 4096.
    BadPacketAlign {
        /// The alignment asked for.
        align: u32,
    },
    /// The storage handed in does not have the lengths the configuration names.
    StorageMismatch,
    /// Flow-queue mode: a ring's bytes are not its packets times the cell size.
    ArenaNotWholeCells {
        /// Bytes of one cell: `max_packet_len` rounded up to `packet_align`.
        cell_bytes: u32,
    },
    /// The byte queue limit's minimum is below `max_packet_len` or above its maximum, its
    /// maximum above [`MAX_BYTE_QUEUE_LIMIT`](crate::MAX_BYTE_QUEUE_LIMIT), or its hold time zero.
    InvalidByteQueueLimit,
}

impl core::error::Error for ConfigError {}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::ZeroCapacity => f.write_str("a ring has zero bytes or zero slots"),
            ConfigError::ZeroMaxPacketLen => f.write_str("max_packet_len is zero"),
            ConfigError::RingTooLarge { bytes } => {
                write!(
                    f,
                    "ring of {bytes} bytes exceeds the maximum of {MAX_ARENA_BYTES}"
                )
            }
            ConfigError::InboundSmallerThanPacket => {
                f.write_str("inbound ring is smaller than max_packet_len")
            }
            ConfigError::WatermarksOutOfOrder => {
                f.write_str("a low watermark is not below its high watermark")
            }
            ConfigError::NoHeadroomAboveHighWatermark {
                required_outbound_bytes,
            } => write!(
                f,
                "outbound ring needs room for two max-size packets above the high watermark \
                 (at least {required_outbound_bytes} bytes)"
            ),
            ConfigError::NoSlotAboveHighWatermark => {
                f.write_str("outbound packet high watermark leaves no free slot above it")
            }
            ConfigError::InvalidAqm => f.write_str("CoDel needs 0 < target < interval"),
            ConfigError::BadPacketAlign { align } => write!(
                f,
                "packet_align {align} is not a power of two up to {MAX_PACKET_ALIGN}"
            ),
            ConfigError::StorageMismatch => {
                f.write_str("storage lengths differ from the configuration")
            }
            ConfigError::ArenaNotWholeCells { cell_bytes } => write!(
                f,
                "with flow queues, each ring's bytes must be its packets times the {cell_bytes}-byte cell"
            ),
            ConfigError::InvalidByteQueueLimit => f.write_str(
                "byte queue limit needs max_packet_len <= min <= max <= 1 GiB and a hold time",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::Slot;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(crate::proptest_config::default_cases())]

        /// A configuration for a ceiling is valid and stays within it (the engine's own struct
        /// included); the smallest ceiling reported is the smallest that works, and every larger
        /// one works too.
        #[test]
        fn config_for_a_ceiling_fits_it_and_the_minimum_is_exact(
            max_packet_len in 1u32..=65_535,
            codel in any::<bool>(),
            extra in 0u64..(64 << 20),
        ) {
            let aqm = if codel { Aqm::CODEL_DEFAULT } else { Aqm::Off };
            let min = TunnelConfig::min_ceiling(max_packet_len, aqm).expect("some ceiling fits");
            let below = TunnelConfig::for_ceiling(min - 1, max_packet_len, aqm);
            prop_assert_eq!(below, Err(CeilingTooSmall { min_ceiling_bytes: Some(min) }));
            for ceiling in [min, min + extra] {
                let config = TunnelConfig::for_ceiling(ceiling, max_packet_len, aqm).unwrap();
                prop_assert_eq!(config.validate(), Ok(()));
                prop_assert_eq!(config.max_packet_len, max_packet_len);
                prop_assert_eq!(config.aqm, aqm);
                let engine = size_of::<crate::PacketTunnel<&mut [u8], &mut [Slot]>>() as u64;
                prop_assert!(engine <= TunnelConfig::CEILING_OVERHEAD);
                let footprint = config.storage_bytes() as u64 + TunnelConfig::CEILING_OVERHEAD;
                prop_assert!(footprint <= ceiling, "{footprint} > {ceiling}");
            }
        }
    }

    #[test]
    fn a_ceiling_no_config_can_meet_says_so() {
        assert_eq!(TunnelConfig::min_ceiling(0, Aqm::Off), None);
        let bad_aqm = Aqm::Codel {
            target_micros: 0,
            interval_micros: 1,
        };
        assert_eq!(TunnelConfig::min_ceiling(1500, bad_aqm), None);
        assert_eq!(
            TunnelConfig::for_ceiling(u64::MAX, 0, Aqm::Off),
            Err(CeilingTooSmall {
                min_ceiling_bytes: None
            })
        );
        // The default tunnel's ceiling gives a configuration close to the default.
        let config = TunnelConfig::for_ceiling(2_166_784 + 4096, 1500, Aqm::Off).unwrap();
        assert_eq!(config.outbound_bytes, config.inbound_bytes);
        assert!(config.outbound_bytes >= 1_040_000 && config.outbound_packets >= 2000);
    }

    #[test]
    fn default_is_valid_and_its_footprint_is_exact() {
        TunnelConfig::DEFAULT.validate().unwrap();
        assert_eq!(
            TunnelConfig::DEFAULT.storage_bytes(),
            2 * (1 << 20) + 4096 * 16
        );
    }

    #[test]
    fn each_rule_has_its_own_error() {
        let ok = TunnelConfig::DEFAULT;
        let check = |edit: fn(&mut TunnelConfig), want: ConfigError| {
            let mut c = ok;
            edit(&mut c);
            assert_eq!(c.validate(), Err(want), "{c:?}");
        };
        check(|c| c.max_packet_len = 0, ConfigError::ZeroMaxPacketLen);
        check(|c| c.inbound_packets = 0, ConfigError::ZeroCapacity);
        check(|c| c.outbound_bytes = 0, ConfigError::ZeroCapacity);
        check(
            |c| c.inbound_bytes = u32::MAX,
            ConfigError::RingTooLarge { bytes: u32::MAX },
        );
        check(
            |c| c.inbound_bytes = 1000,
            ConfigError::InboundSmallerThanPacket,
        );
        check(
            |c| c.outbound_low_watermark_bytes = c.outbound_high_watermark_bytes,
            ConfigError::WatermarksOutOfOrder,
        );
        check(
            |c| c.outbound_low_watermark_packets = 2000,
            ConfigError::WatermarksOutOfOrder,
        );
        check(
            |c| c.outbound_high_watermark_bytes = (1 << 20) - 2999,
            ConfigError::NoHeadroomAboveHighWatermark {
                required_outbound_bytes: (1 << 20) + 1,
            },
        );
        check(
            |c| c.outbound_high_watermark_packets = 2048,
            ConfigError::NoSlotAboveHighWatermark,
        );
        check(
            |c| {
                c.aqm = Aqm::Codel {
                    target_micros: 5,
                    interval_micros: 5,
                }
            },
            ConfigError::InvalidAqm,
        );
        for align in [0, 3, 96, 8192] {
            let mut c = ok;
            c.packet_align = align;
            assert_eq!(c.validate(), Err(ConfigError::BadPacketAlign { align }));
        }
        for align in [1, 2, 64, 4096] {
            let mut c = ok;
            c.packet_align = align;
            assert_eq!(c.validate(), Ok(()));
        }
    }

    #[test]
    fn drop_policy_round_trips() {
        for p in [DropPolicy::DropNewest, DropPolicy::DropOldest] {
            assert_eq!(DropPolicy::from_u8(p as u8), Some(p));
        }
        assert_eq!(DropPolicy::from_u8(2), None);
    }
}
