//! C ABI of the packet tunnel engine: `TidegateTunnel`.

use core::cell::Cell;
use core::ffi::c_void;

use tidegate_core::{
    Aqm, ByteQueueLimit, CeilingTooSmall, ConfigError, DirectionStats, DropPolicy, FlowQueue,
    InboundDisposition, Instant, PacketError, PacketTunnel, Slot, TunnelConfig, TunnelLimits,
    TunnelStats, TunnelStorage,
};

use crate::black_box::{self, TidegateBlackBoxRecord};
use crate::boundary::{
    Handle, bytes, call, call_free, call_mut, require_non_null, slice_len_fits, write_out,
};
use crate::place::{self, Carver, Memory, Region, rebase};
use crate::status::TidegateStatus;

/// A packet tunnel engine: two fixed rings that bound the memory of a packet tunnel provider.
///
/// Outbound is apps → tunnel (`readPackets`), inbound is tunnel → apps (`writePackets`). All its
/// memory is allocated by `tidegate_tunnel_new` and equals `tidegate_tunnel_footprint`; nothing is
/// allocated afterwards.
///
/// Thread safety: not safe for concurrent use. Calls on one handle must not overlap (use one
/// serial dispatch queue, or a lock of your own); moving the handle between threads is fine.
pub struct TidegateTunnel {
    poison: Cell<bool>,
    #[cfg_attr(not(feature = "std"), allow(dead_code))]
    memory: Memory,
    engine: PacketTunnel<Region<u8>, Region<Slot>, Region<FlowQueue>>,
    /// Base pointers of the outbound and inbound arenas, copied before the arenas moved into the
    /// engine: views are rebased on them so they survive later writes (see `place.rs`).
    bases: (*const u8, *const u8),
}

impl Handle for TidegateTunnel {
    fn poison(&self) -> &Cell<bool> {
        &self.poison
    }
    #[cfg(feature = "std")]
    fn memory(&self) -> Memory {
        self.memory
    }
}

/// Configuration of a `TidegateTunnel`. Start from `tidegate_tunnel_config_default()` and change
/// what you need; `tidegate_tunnel_new` checks it and names the first problem in its status.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TidegateTunnelConfig {
    /// Bytes of the outbound ring: the most outbound packet bytes held, queued or in flight,
    /// alignment padding included (see `packet_align`). With `TIDEGATE_AQM_FQ_CODEL`, exactly
    /// `outbound_packets` times the cell size (`max_packet_len` rounded up to `packet_align`).
    pub outbound_bytes: u32,
    /// Packets the outbound ring can hold.
    pub outbound_packets: u32,
    /// Bytes of the inbound ring.
    pub inbound_bytes: u32,
    /// Packets the inbound ring can hold.
    pub inbound_packets: u32,
    /// The largest packet accepted in either direction; set it to the tunnel MTU.
    pub max_packet_len: u32,
    /// Outbound reading pauses when this many ring bytes are held (packets and their alignment
    /// padding). This and the three other watermarks are not used with `TIDEGATE_AQM_FQ_CODEL`,
    /// where reading pauses only while every outbound cell is in flight.
    pub outbound_high_watermark_bytes: u32,
    /// Paused reading resumes when held bytes are at most this (and packets at most theirs).
    pub outbound_low_watermark_bytes: u32,
    /// Outbound reading pauses when this many packets are held.
    pub outbound_high_watermark_packets: u32,
    /// Paused reading resumes when held packets are at most this (and bytes at most theirs).
    pub outbound_low_watermark_packets: u32,
    /// What to drop when the inbound ring is full: a `TIDEGATE_DROP_POLICY_*` value. Not used
    /// with `TIDEGATE_AQM_FQ_CODEL`, which drops from the fattest flow queue.
    pub inbound_drop_policy: u32,
    /// Active queue management for both rings: a `TIDEGATE_AQM_*` value.
    pub aqm: u32,
    /// CoDel's target sojourn time in microseconds (used when `aqm` is CoDel or FQ-CoDel, per
    /// queue; default 5000). Not 0 and below `aqm_interval_us` (refused with
    /// `TIDEGATE_STATUS_CONFIG_INVALID_AQM`).
    pub aqm_target_us: u32,
    /// CoDel's interval in microseconds (used when `aqm` is CoDel or FQ-CoDel; default 100000);
    /// above `aqm_target_us`. Ignored when `aqm` is off.
    pub aqm_interval_us: u32,
    /// Packets start at addresses that are multiples of this power of two (1 to 4096) whenever
    /// the padding fits, so copying them in and out runs at full memcpy speed. The padding, at
    /// most `packet_align - 1` bytes per packet, counts against the ring's bytes and the
    /// watermarks. Default 64 (a cache line); 1 packs packets back to back.
    pub packet_align: u32,
    /// Flow queues per direction with `TIDEGATE_AQM_FQ_CODEL`: 1 to 65536, 64 bytes each (default
    /// 1024); must be 0 otherwise (refused with `TIDEGATE_STATUS_CONFIG_INVALID_AQM`). Two flows
    /// whose hashes pick the same queue share it; more queues make that rarer.
    pub flow_queues: u32,
    /// Bytes a flow queue may send per round of deficit round robin with
    /// `TIDEGATE_AQM_FQ_CODEL`: at least 256 (default 1500, one full-size packet). Ignored
    /// otherwise.
    pub flow_quantum_bytes: u32,
    /// Random bytes keying the flow hash with `TIDEGATE_AQM_FQ_CODEL`, so that no sender can
    /// choose addresses or ports that land in another flow's queue. Fill them at start from the
    /// platform's random source (`SecRandomCopyBytes`, `getrandom`); the default is all zeros,
    /// which an attacker can predict. Ignored otherwise.
    pub flow_hash_seed: [u8; 16],
    /// The byte queue limit: the most outbound bytes the host may have sent down (completed)
    /// that the layer below has not yet reported transmitted, through
    /// `tidegate_tunnel_on_outbound_transmitted` or `tidegate_tunnel_on_outbound_queued_below`.
    /// While they reach the limit, `tidegate_tunnel_poll_outbound` hands nothing out and the
    /// packets wait in the tunnel, where queue management acts on them, instead of in a socket
    /// buffer the host cannot size (`NWConnection`). 0 (the default) turns the limit off. The
    /// limit sizes itself between `queue_limit_min_bytes` and this: it grows when the layer below
    /// ran dry while a packet waited on the limit, and shrinks by half the smallest queue that
    /// stood below for a whole `queue_limit_hold_us`. At most 1 GiB.
    pub queue_limit_max_bytes: u32,
    /// The smallest byte queue limit, and the one it starts at: at least `max_packet_len` and at
    /// most `queue_limit_max_bytes` (default 3000, two full-size packets). Equal to the maximum,
    /// the limit is fixed. Ignored when the limit is off.
    pub queue_limit_min_bytes: u32,
    /// How long a queue must stand below the tunnel before the limit shrinks, in microseconds
    /// (default 100000: shorter than Linux BQL's second, because a host that polls the socket's
    /// queue sees its own scheduling delays as the link running dry). 0 is refused with
    /// `TIDEGATE_STATUS_CONFIG_ZERO_DURATION` when the limit is on; ignored when it is off.
    pub queue_limit_hold_us: u32,
}

/// Active queue management (the `aqm` config field).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TidegateAqm {
    /// No AQM: the memory ceiling alone. Packets leave in order unless a ring is full.
    Off = 0,
    /// CoDel (RFC 8289): drop from the head when packets have waited more than `aqm_target_us`
    /// for a whole `aqm_interval_us`, keeping the queueing delay through the tunnel short.
    Codel = 1,
    /// Flow queueing with CoDel per queue (the class of Linux's fq_codel, RFC 8290): packets are
    /// hashed by 5-tuple (IPv4 and IPv6; fragments by address pair) into `flow_queues` queues per
    /// direction, served by deficit round robin with new flows first, each queue with its own
    /// CoDel. A full ring drops from the head of the fattest queue instead of refusing, so one
    /// flow's flood cannot take the link or the latency from the others. Each ring is cut into
    /// cells of one packet each; order is kept within a flow, not across flows. Outbound reading
    /// pauses only while every cell is in flight (see `tidegate_tunnel_can_read_outbound`).
    FqCodel = 2,
}

/// What to drop when the inbound ring is full (the `inbound_drop_policy` config field).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TidegateDropPolicy {
    /// Drop the packet that just arrived (tail drop); suits bulk traffic.
    DropNewest = 0,
    /// Drop the oldest queued packets to make room; suits interactive traffic. While packets are
    /// handed out and not completed, the new packet is dropped instead.
    DropOldest = 1,
}

/// What `tidegate_tunnel_on_inbound_packet` did with a packet.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TidegateInboundDisposition {
    /// The packet was queued.
    Queued = 0,
    /// The packet was queued after dropping the oldest queued packets.
    QueuedAfterDroppingOldest = 1,
    /// The ring was full; the packet was dropped. With flow queues, only while every inbound
    /// cell is in flight.
    DroppedNewest = 2,
    /// With flow queues: the packet was queued after dropping from the head of the fattest flow
    /// queue (possibly the packet's own).
    QueuedAfterDroppingFromFattest = 3,
}

/// A view of one packet inside a ring: `len` bytes at `data`.
///
/// Views returned by the poll functions stay valid, and their bytes unchanged, until the packet is
/// completed or the tunnel freed; other calls on the tunnel do not move them. Do not write through
/// `data`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TidegatePacketView {
    /// First byte of the packet: a multiple of the configuration's `packet_align` whenever the
    /// padding fitted in the ring (it is not guaranteed; a ring near full packs packets).
    pub data: *const u8,
    /// Length of the packet in bytes (never 0).
    pub len: usize,
}

/// Counters of one direction of a tunnel (in `TidegateTunnelStats`). Counters saturate.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TidegateDirectionStats {
    /// Packets waiting to be handed out now.
    pub packets_queued: u64,
    /// Bytes waiting to be handed out now.
    pub bytes_queued: u64,
    /// Packets handed out and not yet completed now.
    pub packets_in_flight: u64,
    /// Bytes handed out and not yet completed now.
    pub bytes_in_flight: u64,
    /// The most ring bytes ever taken at once: see `arena_bytes_used`.
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
    /// With flow queues: packets dropped from the head of the fattest flow queue to make room
    /// for an arriving packet when every cell was taken.
    pub overflow_dropped_packets: u64,
    /// Bytes of those packets.
    pub overflow_dropped_bytes: u64,
    /// Microseconds the most recently handed-out packet waited in the queue (its sojourn time).
    pub last_sojourn_us: u64,
    /// Ring bytes taken now: packets queued, in flight and dropped but not yet reclaimed, plus
    /// the alignment padding in front of each. At most the ring's byte size; the outbound
    /// watermarks compare this.
    pub arena_bytes_used: u64,
}

/// Counters and levels of a tunnel, from `tidegate_tunnel_stats`. Counters saturate.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TidegateTunnelStats {
    /// Apps → tunnel.
    pub outbound: TidegateDirectionStats,
    /// Tunnel → apps.
    pub inbound: TidegateDirectionStats,
    /// Outbound packets refused because the ring had no room; each was left with the caller.
    pub outbound_refused_packets: u64,
    /// Bytes of the refused outbound packets.
    pub outbound_refused_bytes: u64,
    /// Times outbound reading paused at a high watermark.
    pub outbound_pauses: u64,
    /// Microseconds outbound reading has spent paused, including a pause still going on (up to
    /// the latest `now_us` the tunnel saw).
    pub outbound_paused_us: u64,
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
    /// The byte queue limit now (`queue_limit_max_bytes`), or 0 when it is off.
    pub outbound_queue_limit_bytes: u64,
    /// Outbound bytes completed (sent down) and not yet reported transmitted by the layer below;
    /// 0 when the limit is off.
    pub outbound_bytes_below: u64,
    /// Polls that found packets queued and handed none out because the bytes below had reached
    /// the limit.
    pub outbound_limit_holds: u64,
    /// Times the limit grew: the layer below ran dry while a packet waited on the limit.
    pub outbound_limit_grows: u64,
    /// Times the limit shrank: a queue stood below the tunnel for a whole hold time.
    pub outbound_limit_shrinks: u64,
    /// Whether outbound reading is paused now.
    pub outbound_paused: bool,
    /// Whether the outbound ring is in CoDel overload now: while the ring is pressed, every
    /// packet older than CoDel's target is dropped at hand-out; the completion that brings the
    /// ring down to its low watermarks ends it.
    pub outbound_overloaded: bool,
    /// Always 0: keeps the struct free of padding, so every byte is written.
    pub reserved: [u8; 6],
}

impl From<DirectionStats> for TidegateDirectionStats {
    fn from(s: DirectionStats) -> Self {
        TidegateDirectionStats {
            packets_queued: s.packets_queued,
            bytes_queued: s.bytes_queued,
            packets_in_flight: s.packets_in_flight,
            bytes_in_flight: s.bytes_in_flight,
            bytes_high_water: s.bytes_high_water,
            packets_high_water: s.packets_high_water,
            packets_accepted: s.packets_accepted,
            bytes_accepted: s.bytes_accepted,
            packets_completed: s.packets_completed,
            bytes_completed: s.bytes_completed,
            empty_packets: s.empty_packets,
            oversized_packets: s.oversized_packets,
            aqm_dropped_packets: s.aqm_dropped_packets,
            aqm_dropped_bytes: s.aqm_dropped_bytes,
            overflow_dropped_packets: s.overflow_dropped_packets,
            overflow_dropped_bytes: s.overflow_dropped_bytes,
            last_sojourn_us: s.last_sojourn_micros,
            arena_bytes_used: s.arena_bytes_used,
        }
    }
}

impl From<TunnelStats> for TidegateTunnelStats {
    fn from(s: TunnelStats) -> Self {
        TidegateTunnelStats {
            outbound: s.outbound.into(),
            inbound: s.inbound.into(),
            outbound_refused_packets: s.outbound_refused_packets,
            outbound_refused_bytes: s.outbound_refused_bytes,
            outbound_pauses: s.outbound_pauses,
            outbound_paused_us: s.outbound_paused_micros,
            outbound_overloads: s.outbound_overloads,
            inbound_dropped_newest_packets: s.inbound_dropped_newest_packets,
            inbound_dropped_newest_bytes: s.inbound_dropped_newest_bytes,
            inbound_dropped_oldest_packets: s.inbound_dropped_oldest_packets,
            inbound_dropped_oldest_bytes: s.inbound_dropped_oldest_bytes,
            outbound_queue_limit_bytes: s.outbound_queue_limit_bytes,
            outbound_bytes_below: s.outbound_bytes_below,
            outbound_limit_holds: s.outbound_limit_holds,
            outbound_limit_grows: s.outbound_limit_grows,
            outbound_limit_shrinks: s.outbound_limit_shrinks,
            outbound_paused: s.outbound_paused,
            outbound_overloaded: s.outbound_overloaded,
            reserved: [0; 6],
        }
    }
}

/// The default configuration, for an iOS or macOS packet tunnel provider (killed at 50 MiB).
///
/// 1 MiB and 2048 packets per direction; packets up to 1500 bytes (set `max_packet_len` to your
/// tunnel MTU); outbound reading pauses at 768 KiB or 1536 packets and resumes at 512 KiB and
/// 1024 packets; inbound drops the newest packet when full; AQM off, with CoDel's parameters
/// preset to 5 ms and 100 ms so that setting `aqm` to `TIDEGATE_AQM_CODEL` is enough; packets
/// start on 64-byte cache lines. Footprint: about 2.06 MiB.
#[unsafe(no_mangle)]
pub extern "C" fn tidegate_tunnel_config_default() -> TidegateTunnelConfig {
    TidegateTunnelConfig::from(TunnelConfig::DEFAULT)
}

/// Writes to `*out_config` a valid configuration whose whole memory (what
/// `tidegate_tunnel_footprint` reports) is at most `ceiling_bytes`, for packets of up to
/// `max_packet_len` bytes (the tunnel MTU) and `aqm` (a `TIDEGATE_AQM_*` value; CoDel gets its
/// default 5 ms / 100 ms).
///
/// The rule: 4096 bytes are set aside for the handle; the rest is split evenly between the two
/// directions; each direction gives one 33rd to packet slots (one slot per 512 ring bytes) and the
/// rest to its ring, up to the largest ring a tunnel can hold (a larger ceiling is not used up).
/// Reading pauses at three quarters of the ring and of the slots (lowered where needed to keep two
/// maximum-size packets of room above it) and resumes at two thirds of that level and half the
/// slots. Inbound drops the newest packet when full; packets start on 64-byte lines.
///
/// With `TIDEGATE_AQM_FQ_CODEL`, each direction holds 1024 flow queues (64 KiB) and as many cells
/// (a 64-byte-aligned cell of `max_packet_len` and a 16-byte slot each) as the rest allows, at
/// least 4; the quantum is 1500 bytes and the hash seed all zeros: fill `flow_hash_seed` with
/// random bytes before creating the tunnel. Changing the seed or the quantum, or lowering
/// `flow_queues`, keeps the footprint within the ceiling.
///
/// Returns `TIDEGATE_STATUS_CEILING_TOO_SMALL` when no configuration fits (ask
/// `tidegate_tunnel_min_ceiling` for the smallest ceiling that does),
/// `TIDEGATE_STATUS_CONFIG_ZERO_MAX_PACKET_LEN` for a zero `max_packet_len`, or
/// `TIDEGATE_STATUS_CONFIG_UNKNOWN_AQM`.
///
/// # Safety
/// `out_config` must be NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_tunnel_config_for_ceiling(
    ceiling_bytes: u64,
    max_packet_len: u32,
    aqm: u32,
    out_config: *mut TidegateTunnelConfig,
) -> TidegateStatus {
    call_free(|| {
        require_non_null([out_config.cast_const().cast()])?;
        let aqm = sizing_aqm(max_packet_len, aqm)?;
        let config = TunnelConfig::for_ceiling(ceiling_bytes, max_packet_len, aqm)
            .map_err(|_: CeilingTooSmall| TidegateStatus::CeilingTooSmall)?;
        // SAFETY: checked non-NULL above and valid by the caller's contract.
        unsafe { write_out(out_config, TidegateTunnelConfig::from(config)) }
    })
}

/// Writes to `*out_ceiling_bytes` the smallest ceiling `tidegate_tunnel_config_for_ceiling`
/// accepts for `max_packet_len` and `aqm`. Same errors as that function, except that a
/// `max_packet_len` larger than any ring can hold gives `TIDEGATE_STATUS_CONFIG_RING_TOO_LARGE`.
///
/// # Safety
/// `out_ceiling_bytes` must be NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_tunnel_min_ceiling(
    max_packet_len: u32,
    aqm: u32,
    out_ceiling_bytes: *mut u64,
) -> TidegateStatus {
    call_free(|| {
        require_non_null([out_ceiling_bytes.cast_const().cast()])?;
        let aqm = sizing_aqm(max_packet_len, aqm)?;
        let min = TunnelConfig::min_ceiling(max_packet_len, aqm)
            .ok_or(TidegateStatus::ConfigRingTooLarge)?;
        // SAFETY: checked non-NULL above and valid by the caller's contract.
        unsafe { write_out(out_ceiling_bytes, min) }
    })
}

/// The AQM a sizing call asks for, after the checks every sizing call shares.
fn sizing_aqm(max_packet_len: u32, aqm: u32) -> Result<Aqm, TidegateStatus> {
    if max_packet_len == 0 {
        return Err(TidegateStatus::ConfigZeroMaxPacketLen);
    }
    match aqm {
        0 => Ok(Aqm::Off),
        1 => Ok(Aqm::CODEL_DEFAULT),
        2 => Ok(Aqm::fq_codel(Aqm::FQ_DEFAULT_FLOW_QUEUES, [0; 16])),
        _ => Err(TidegateStatus::ConfigUnknownAqm),
    }
}

/// Writes to `*out_size` and `*out_align` the size and alignment of the memory a tunnel with
/// `config` lives in: the handle, both rings and their packet slots, in one block. That is all the
/// memory the tunnel ever uses: `tidegate_tunnel_new` allocates exactly this block, and
/// `tidegate_tunnel_init` places the tunnel in a block of yours.
///
/// Returns a `TIDEGATE_STATUS_CONFIG_*` status if the configuration is invalid.
///
/// # Safety
/// `config` must be NULL or point to a valid `TidegateTunnelConfig`; `out_size` and `out_align`
/// must be NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_tunnel_footprint(
    config: *const TidegateTunnelConfig,
    out_size: *mut usize,
    out_align: *mut usize,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe { place::footprint::<TidegateTunnel>(config, out_size, out_align) }
}

/// Creates a tunnel with `config` in memory it allocates, and writes its handle to `*out_tunnel`.
///
/// The one allocation is `tidegate_tunnel_footprint(config)` bytes, all touched here so that it is
/// resident from the start; nothing is allocated afterwards. Free the handle with
/// `tidegate_tunnel_free`.
///
/// Returns a `TIDEGATE_STATUS_CONFIG_*` status for an invalid configuration, or
/// `TIDEGATE_STATUS_OUT_OF_MEMORY` if the allocation fails.
///
/// # Safety
/// `config` must be NULL or point to a valid `TidegateTunnelConfig`; `out_tunnel` must be NULL or
/// valid for writing a pointer.
#[cfg(feature = "std")]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_tunnel_new(
    config: *const TidegateTunnelConfig,
    out_tunnel: *mut *mut TidegateTunnel,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe { place::new(config, 0, out_tunnel) }
}

/// Creates a tunnel with `config` in the `len` bytes at `memory`, and writes its handle to
/// `*out_tunnel`: for hosts that place engines in memory of their own (a static buffer, a pool).
/// The handle is `memory` itself.
///
/// `memory` must hold the size `tidegate_tunnel_footprint` gives and start on its alignment, or
/// the call returns `TIDEGATE_STATUS_BUFFER_TOO_SMALL` or `TIDEGATE_STATUS_MISALIGNED`. Every
/// byte of it is written here; nothing else is ever used. Call `tidegate_tunnel_free` when done:
/// it ends the tunnel and leaves the memory to you.
///
/// # Safety
/// `config` must be NULL or point to a valid `TidegateTunnelConfig`; `memory` must be NULL or
/// valid for reading and writing `len` bytes, and used by nothing else until the tunnel is
/// freed; `out_tunnel` must be NULL or valid for writing a pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_tunnel_init(
    config: *const TidegateTunnelConfig,
    memory: *mut c_void,
    len: usize,
    out_tunnel: *mut *mut TidegateTunnel,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe { place::init(config, 0, memory, len, out_tunnel) }
}

/// Frees a tunnel: ends it and releases its memory (memory given to `tidegate_tunnel_init` goes
/// back to the caller). `NULL` is a no-op. Works on a poisoned handle too.
///
/// Views handed out by this tunnel become invalid.
///
/// # Safety
/// `tunnel` must be NULL or a handle from `tidegate_tunnel_new` or `tidegate_tunnel_init` that
/// was not freed yet, with no other call on it running.
#[cfg(feature = "std")]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_tunnel_free(tunnel: *mut TidegateTunnel) {
    // SAFETY: forwarded caller contract.
    unsafe { place::free(tunnel) }
}

/// Writes to `*out_can_read` whether the host should read more outbound packets now (call
/// `readPackets`).
///
/// `false` from the moment the held bytes or packets reach a high watermark until a completion
/// brings both down to the low watermarks; that completion sets `*out_resume_reading`.
///
/// # Safety
/// `tunnel` must be NULL or a live handle; `out_can_read` must be NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_tunnel_can_read_outbound(
    tunnel: *const TidegateTunnel,
    out_can_read: *mut bool,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call(tunnel, |t| {
            write_out(out_can_read, t.engine.can_read_outbound())
        })
    }
}

/// Queues a copy of one outbound packet (apps → tunnel): `len` bytes at `data`.
///
/// Packets of a read batch are accepted while there is room, even after reading paused. Returns
/// `TIDEGATE_STATUS_NO_ROOM` when the ring is full: the packet was not copied and stays with the
/// caller (drop it, or keep it and retry after a completion). `TIDEGATE_STATUS_PACKET_EMPTY` and
/// `TIDEGATE_STATUS_PACKET_TOO_LONG` refuse bad packets; each reason is counted in the stats.
///
/// # Safety
/// `tunnel` must be NULL or a live handle; `data` must be valid for reading `len` bytes (it may be
/// NULL only if `len` is 0).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_tunnel_on_outbound_packet(
    tunnel: *mut TidegateTunnel,
    now_us: u64,
    data: *const u8,
    len: usize,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(tunnel, |t| {
            let packet = bytes(data, len)?;
            let now = Instant::from_micros(now_us);
            t.engine
                .on_outbound_packet(now, packet)
                .map_err(status_of_packet)
        })
    }
}

/// Queues copies of a batch of outbound packets (a `readPacketObjects` array), `packets[0..count]`
/// in order, stopping at the first packet the tunnel cannot take.
///
/// Writes to `*out_accepted` how many packets from the start of the batch were queued, and to
/// `*out_stopped` why the packet at that index was refused (`TIDEGATE_STATUS_NO_ROOM`,
/// `_PACKET_EMPTY` or `_PACKET_TOO_LONG`), or `TIDEGATE_STATUS_OK` if the whole batch was queued.
/// The refused packet and those after it stay with the caller (keep them for after a completion,
/// or drop them). Each packet is handled exactly as by `tidegate_tunnel_on_outbound_packet`; the
/// call itself returns `TIDEGATE_STATUS_OK` unless an argument is bad, in which case nothing is
/// queued.
///
/// # Safety
/// `tunnel` must be NULL or a live handle; `packets` must be valid for reading `count` views (NULL
/// only if `count` is 0), each valid for reading `len` bytes at `data` (NULL only if `len` is 0);
/// `out_accepted` and `out_stopped` must be NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_tunnel_on_outbound_batch(
    tunnel: *mut TidegateTunnel,
    now_us: u64,
    packets: *const TidegatePacketView,
    count: usize,
    out_accepted: *mut usize,
    out_stopped: *mut TidegateStatus,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(tunnel, |t| {
            require_non_null([
                out_accepted.cast_const().cast(),
                out_stopped.cast_const().cast(),
            ])?;
            let views: &[TidegatePacketView] = if packets.is_null() {
                if count > 0 {
                    return Err(TidegateStatus::NullArgument);
                }
                &[]
            } else {
                slice_len_fits::<TidegatePacketView>(count)?;
                // SAFETY: non-NULL and valid for `count` views by the caller's contract, which
                // span at most `isize::MAX` bytes.
                core::slice::from_raw_parts(packets, count)
            };
            // Check every view before queuing any, so a bad argument queues nothing.
            for view in views {
                bytes(view.data, view.len)?;
            }
            let packets = views.iter().map(|view| {
                // SAFETY: valid for `len` bytes by the caller's contract, checked above.
                let packet = bytes(view.data, view.len);
                debug_assert!(packet.is_ok(), "every view was checked before the batch");
                packet.unwrap_or_default()
            });
            let batch = t
                .engine
                .on_outbound_batch(Instant::from_micros(now_us), packets);
            let stopped = batch
                .stopped_by
                .map_or(TidegateStatus::Ok, status_of_packet);
            write_out(out_accepted, batch.accepted)?;
            write_out(out_stopped, stopped)
        })
    }
}

/// Hands out up to `capacity` queued outbound packets to send down the tunnel, writing a view of
/// each to `views[0..]` and their number to `*out_count` (0 when nothing is queued).
///
/// The packets move to "in flight": their bytes stay valid and counted until
/// `tidegate_tunnel_complete_outbound` releases them, oldest first. Call this until it returns a
/// count of 0 after every input.
///
/// # Safety
/// `tunnel` must be NULL or a live handle; `views` must be valid for writing `capacity` views (it
/// may be NULL only if `capacity` is 0); `out_count` must be NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_tunnel_poll_outbound(
    tunnel: *mut TidegateTunnel,
    now_us: u64,
    views: *mut TidegatePacketView,
    capacity: usize,
    out_count: *mut usize,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(tunnel, |t| {
            let base = t.bases.0;
            let mut sink = ViewSink::new(views, capacity, out_count)?;
            t.engine
                .poll_outbound_batch(Instant::from_micros(now_us), capacity, |packet| {
                    sink.push(view_of(base, packet));
                });
            sink.finish()
        })
    }
}

/// Releases the `count` oldest outbound packets in flight, once their tunnel send completed.
///
/// Writes to `*out_resume_reading` whether reading must resume now: `true` exactly once per
/// pause, on the completion that brings the tunnel down to its low watermarks. When it is `true`,
/// call `readPackets` again (the classic bug is never doing so). Returns
/// `TIDEGATE_STATUS_NOT_IN_FLIGHT`, completing nothing, if fewer than `count` are in flight.
///
/// # Safety
/// `tunnel` must be NULL or a live handle; `out_resume_reading` must be NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_tunnel_complete_outbound(
    tunnel: *mut TidegateTunnel,
    now_us: u64,
    count: usize,
    out_resume_reading: *mut bool,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(tunnel, |t| {
            require_non_null([out_resume_reading.cast_const().cast()])?;
            let done = t
                .engine
                .complete_outbound(Instant::from_micros(now_us), count)
                .map_err(|_| TidegateStatus::NotInFlight)?;
            write_out(out_resume_reading, done.resume_reading)
        })
    }
}

/// Reports that the layer below the tunnel (the socket, `NWConnection`) transmitted `bytes` of
/// the outbound packets the host completed: call it from a send completion. Feeds the byte
/// queue limit (`queue_limit_max_bytes`); more bytes than were sent count as all of them, and
/// without a limit only `now_us` is recorded. Afterwards, drain `tidegate_tunnel_poll_outbound`
/// again: the limit may have let packets go.
///
/// # Safety
/// `tunnel` must be NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_tunnel_on_outbound_transmitted(
    tunnel: *mut TidegateTunnel,
    now_us: u64,
    bytes: u64,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(tunnel, |t| {
            t.engine
                .on_outbound_transmitted(Instant::from_micros(now_us), bytes);
            Ok(())
        })
    }
}

/// Reports that `bytes` are still queued in the layer below the tunnel: the socket's unsent
/// bytes, read after the sends (`ioctl(fd, SIOCOUTQ)` on Linux, `getsockopt(SO_NWRITE)` on
/// Darwin). What the tunnel sent and is no longer there counts as transmitted; bytes beyond
/// what it sent (another sender's, or the platform's accounting: Linux counts a UDP socket's
/// buffers at their true size) are not counted as the tunnel's. Otherwise as
/// `tidegate_tunnel_on_outbound_transmitted`.
///
/// # Safety
/// `tunnel` must be NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_tunnel_on_outbound_queued_below(
    tunnel: *mut TidegateTunnel,
    now_us: u64,
    bytes: u64,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(tunnel, |t| {
            t.engine
                .on_outbound_queued_below(Instant::from_micros(now_us), bytes);
            Ok(())
        })
    }
}

/// Queues a copy of one inbound packet (tunnel → apps), or drops a packet by the configured
/// policy when the ring is full, and writes what happened to `*out_disposition` (a
/// `TIDEGATE_INBOUND_DISPOSITION_*` value). Dropping is not an error: `writePackets` has no flow
/// control, and IP allows drops. Empty and oversized packets get their own status.
///
/// # Safety
/// `tunnel` must be NULL or a live handle; `data` must be valid for reading `len` bytes (NULL only
/// if `len` is 0); `out_disposition` must be NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_tunnel_on_inbound_packet(
    tunnel: *mut TidegateTunnel,
    now_us: u64,
    data: *const u8,
    len: usize,
    out_disposition: *mut TidegateInboundDisposition,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(tunnel, |t| {
            require_non_null([out_disposition.cast_const().cast()])?;
            let packet = bytes(data, len)?;
            let now = Instant::from_micros(now_us);
            let disposition = match t.engine.on_inbound_packet(now, packet) {
                Ok(InboundDisposition::Queued) => TidegateInboundDisposition::Queued,
                Ok(InboundDisposition::QueuedAfterDroppingOldest { .. }) => {
                    TidegateInboundDisposition::QueuedAfterDroppingOldest
                }
                Ok(InboundDisposition::DroppedNewest) => TidegateInboundDisposition::DroppedNewest,
                Ok(InboundDisposition::QueuedAfterDroppingFromFattest { .. }) => {
                    TidegateInboundDisposition::QueuedAfterDroppingFromFattest
                }
                Ok(other) => {
                    debug_assert!(false, "a disposition the C ABI does not know: {other:?}");
                    return Err(TidegateStatus::InvalidArgument);
                }
                Err(error) => return Err(status_of_packet(error)),
            };
            write_out(out_disposition, disposition)
        })
    }
}

/// Hands out up to `capacity` queued inbound packets to write to the apps (`writePackets`),
/// writing a view of each to `views[0..]` and their number to `*out_count`.
///
/// Copy them into your write call, then release them with `tidegate_tunnel_complete_inbound`.
///
/// # Safety
/// As for `tidegate_tunnel_poll_outbound`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_tunnel_poll_inbound(
    tunnel: *mut TidegateTunnel,
    now_us: u64,
    views: *mut TidegatePacketView,
    capacity: usize,
    out_count: *mut usize,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(tunnel, |t| {
            let base = t.bases.1;
            let mut sink = ViewSink::new(views, capacity, out_count)?;
            t.engine
                .poll_inbound_batch(Instant::from_micros(now_us), capacity, |packet| {
                    sink.push(view_of(base, packet));
                });
            sink.finish()
        })
    }
}

/// Releases the `count` oldest inbound packets in flight, once they were written to the apps.
/// Returns `TIDEGATE_STATUS_NOT_IN_FLIGHT`, completing nothing, if fewer are in flight.
///
/// # Safety
/// `tunnel` must be NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_tunnel_complete_inbound(
    tunnel: *mut TidegateTunnel,
    now_us: u64,
    count: usize,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(tunnel, |t| {
            t.engine
                .complete_inbound(Instant::from_micros(now_us), count)
                .map(drop)
                .map_err(|_| TidegateStatus::NotInFlight)
        })
    }
}

/// The limits a tunnel applies now: its configuration's, scaled under memory pressure (half at
/// `ELEVATED`, a quarter at `CRITICAL`, never below 1, never above what was allocated).
///
/// FIFO modes: reading pauses at the outbound high watermarks and resumes at the low ones;
/// inbound packets beyond `inbound_bytes` or `inbound_packets` are dropped by the drop policy.
/// Flow-queue mode: each direction uses at most `outbound_packets` / `inbound_packets` cells,
/// dropping from the fattest flow beyond them, and reading pauses while that many outbound
/// cells are in flight; the watermarks are not used. Shrinking saves only memory not touched
/// yet: arena pages written once stay resident.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TidegateTunnelLimits {
    /// The level the limits are scaled for.
    pub pressure: crate::memory::TidegatePressure,
    /// Outbound bytes held at which reading pauses (FIFO modes).
    pub outbound_high_watermark_bytes: u32,
    /// Outbound bytes held at which reading resumes (FIFO modes).
    pub outbound_low_watermark_bytes: u32,
    /// Outbound packets held at which reading pauses (FIFO modes).
    pub outbound_high_watermark_packets: u32,
    /// Outbound packets held at which reading resumes (FIFO modes).
    pub outbound_low_watermark_packets: u32,
    /// Outbound cells in use at most (flow-queue mode).
    pub outbound_packets: u32,
    /// Inbound arena bytes in use at most (FIFO modes); never below `max_packet_len`, so a
    /// packet that fits the empty ring fits its limits too.
    pub inbound_bytes: u32,
    /// Inbound packets (FIFO modes) or cells (flow-queue mode) in use at most.
    pub inbound_packets: u32,
}

impl From<TunnelLimits> for TidegateTunnelLimits {
    fn from(l: TunnelLimits) -> Self {
        TidegateTunnelLimits {
            pressure: l.pressure.into(),
            outbound_high_watermark_bytes: l.outbound_high_watermark_bytes,
            outbound_low_watermark_bytes: l.outbound_low_watermark_bytes,
            outbound_high_watermark_packets: l.outbound_high_watermark_packets,
            outbound_low_watermark_packets: l.outbound_low_watermark_packets,
            outbound_packets: l.outbound_packets,
            inbound_bytes: l.inbound_bytes,
            inbound_packets: l.inbound_packets,
        }
    }
}

/// Applies memory pressure `level` (a `TIDEGATE_PRESSURE_*` value, from
/// `tidegate_memory_poll_pressure`): the tunnel's limits shrink or grow back (see
/// `TidegateTunnelLimits`). Shrinking may pause reading at once
/// (`tidegate_tunnel_can_read_outbound` turns false); packets already queued stay. Writes to
/// `*out_resume_reading` whether reading must resume now: `true` when growing limits end a
/// pause, exactly as a completion reports it.
///
/// Returns `TIDEGATE_STATUS_INVALID_ARGUMENT` for an unknown level, changing nothing.
///
/// # Safety
/// `tunnel` must be NULL or a live handle; `out_resume_reading` must be NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_tunnel_on_pressure(
    tunnel: *mut TidegateTunnel,
    now_us: u64,
    level: u32,
    out_resume_reading: *mut bool,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(tunnel, |t| {
            require_non_null([out_resume_reading.cast_const().cast()])?;
            let level = crate::memory::pressure_from_c(level)?;
            let resume = t.engine.on_pressure(Instant::from_micros(now_us), level);
            write_out(out_resume_reading, resume)
        })
    }
}

/// Writes the limits the tunnel applies now to `*out_limits`.
///
/// # Safety
/// `tunnel` must be NULL or a live handle; `out_limits` must be NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_tunnel_limits(
    tunnel: *const TidegateTunnel,
    out_limits: *mut TidegateTunnelLimits,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe { call(tunnel, |t| write_out(out_limits, t.engine.limits().into())) }
}

/// Writes a snapshot of the tunnel's counters and levels to `*out_stats`.
///
/// # Safety
/// `tunnel` must be NULL or a live handle; `out_stats` must be NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_tunnel_stats(
    tunnel: *const TidegateTunnel,
    out_stats: *mut TidegateTunnelStats,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe { call(tunnel, |t| write_out(out_stats, t.engine.stats().into())) }
}

/// Fills the packet tunnel (ring levels and high-water marks, drops, refusals, pauses) figures of `*record` from `tunnel` (see `TidegateBlackBoxRecord`); the other
/// fields are left as they are. Refused with `TIDEGATE_STATUS_INVALID_ARGUMENT`, leaving
/// `*record` unchanged, if its `flags` or `reserved` are not valid.
///
/// # Safety
/// `record` must be NULL or valid for reading and writing; `tunnel` must be NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_black_box_capture_tunnel(
    record: *mut TidegateBlackBoxRecord,
    tunnel: *const TidegateTunnel,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call(tunnel, |h| {
            black_box::capture(record, |r| r.capture_tunnel(&h.engine.stats()))
        })
    }
}

/// Force a panic inside the boundary of `tunnel`, to test that the panic is caught and the handle
/// poisoned. Not part of the C API.
///
/// # Safety
/// As for any mutating call: `tunnel` must be NULL or a live handle.
#[doc(hidden)]
#[cfg(any(test, feature = "testing"))]
pub unsafe fn testing_panic_inside(tunnel: *mut TidegateTunnel) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(tunnel, |_| -> Result<(), TidegateStatus> {
            panic!("forced panic for testing the C boundary")
        })
    }
}

/// Force a panic inside the boundary of a read-only call on `tunnel` (the path of
/// `tidegate_tunnel_stats` and `_can_read_outbound`), to test that the panic is caught and the
/// handle poisoned through a `const` handle too. Not part of the C API.
///
/// # Safety
/// As for any read-only call: `tunnel` must be NULL or a live handle.
#[doc(hidden)]
#[cfg(any(test, feature = "testing"))]
pub unsafe fn testing_panic_inside_read_only(tunnel: *const TidegateTunnel) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call(tunnel, |_| -> Result<(), TidegateStatus> {
            panic!("forced panic for testing the C boundary")
        })
    }
}

/// Force a panic inside the boundary of a call that takes no handle (the path of the `_new` and
/// `_footprint` functions), to test that it returns `TIDEGATE_STATUS_PANIC` instead of unwinding
/// into C. Not part of the C API.
#[doc(hidden)]
#[cfg(any(test, feature = "testing"))]
pub fn testing_panic_without_handle() -> TidegateStatus {
    call_free(|| -> Result<(), TidegateStatus> {
        panic!("forced panic for testing the C boundary")
    })
}

/// A view of a packet handed out by the ring whose arena starts at `base`; the bytes stay in
/// place until it is completed. The pointer carries the arena's provenance, not the slice's.
fn view_of(base: *const u8, packet: &[u8]) -> TidegatePacketView {
    TidegatePacketView {
        data: rebase(base, packet.as_ptr()),
        len: packet.len(),
    }
}

impl place::Placed for TidegateTunnel {
    type CConfig = TidegateTunnelConfig;
    type Config = TunnelConfig;
    /// Both arenas on the packet alignment, the slots, and the flow queues (none in FIFO mode).
    type Storage = TunnelStorage<Region<u8>, Region<Slot>, Region<FlowQueue>>;

    fn check(config: &TidegateTunnelConfig) -> Result<TunnelConfig, TidegateStatus> {
        TunnelConfig::try_from(*config)
    }

    fn walk(config: &TunnelConfig, carver: &mut Carver) -> Result<Self::Storage, TidegateStatus> {
        let align = config.packet_align as usize;
        Ok(TunnelStorage {
            outbound_arena: carver.bytes(config.outbound_bytes as usize, align)?,
            outbound_slots: carver.array(config.outbound_packets as usize, Slot::EMPTY)?,
            inbound_arena: carver.bytes(config.inbound_bytes as usize, align)?,
            inbound_slots: carver.array(config.inbound_packets as usize, Slot::EMPTY)?,
            outbound_queues: carver.array(config.aqm.flow_queues() as usize, FlowQueue::EMPTY)?,
            inbound_queues: carver.array(config.aqm.flow_queues() as usize, FlowQueue::EMPTY)?,
        })
    }

    fn build(
        config: TunnelConfig,
        _: u64,
        storage: Self::Storage,
        memory: Memory,
    ) -> Result<Self, TidegateStatus> {
        let bases = (storage.outbound_arena.base(), storage.inbound_arena.base());
        let engine = PacketTunnel::new(config, storage).map_err(status_of_config)?;
        Ok(TidegateTunnel {
            poison: Cell::new(false),
            memory,
            engine,
            bases,
        })
    }
}

/// Where a batch hand-out writes its packet views: the caller's array of `capacity` views, and
/// the count written at the end.
struct ViewSink {
    views: *mut TidegatePacketView,
    capacity: usize,
    written: usize,
    out_count: *mut usize,
}

impl ViewSink {
    /// Checks the arguments: `out_count` not NULL, `views` not NULL unless `capacity` is 0.
    ///
    /// # Safety
    /// `views` must be valid for writing `capacity` views (NULL only if `capacity` is 0);
    /// `out_count` must be NULL or valid for writing.
    unsafe fn new(
        views: *mut TidegatePacketView,
        capacity: usize,
        out_count: *mut usize,
    ) -> Result<Self, TidegateStatus> {
        require_non_null([out_count.cast_const().cast()])?;
        if views.is_null() && capacity > 0 {
            return Err(TidegateStatus::NullArgument);
        }
        Ok(ViewSink {
            views,
            capacity,
            written: 0,
            out_count,
        })
    }

    /// Writes the next view; one beyond `capacity` (the engine hands out at most that many) is
    /// not written.
    fn push(&mut self, view: TidegatePacketView) {
        debug_assert!(self.written < self.capacity, "at most `capacity` hand-outs");
        if self.written < self.capacity {
            // SAFETY: `written < capacity`, and `views` is valid for `capacity` writes by the
            // contract of `ViewSink::new`.
            unsafe { self.views.add(self.written).write(view) };
            self.written += 1;
        }
    }

    /// Writes the number of views written to `*out_count`.
    fn finish(self) -> Result<(), TidegateStatus> {
        // SAFETY: `out_count` was checked non-NULL and is valid by the contract of `new`.
        unsafe { write_out(self.out_count, self.written) }
    }
}

impl From<TunnelConfig> for TidegateTunnelConfig {
    fn from(c: TunnelConfig) -> Self {
        let (mut flow_queues, mut flow_quantum_bytes, mut flow_hash_seed) =
            (0, Aqm::FQ_DEFAULT_QUANTUM_BYTES, [0; 16]);
        let (queue_limit_max_bytes, queue_limit_min_bytes, queue_limit_hold_us) =
            match c.byte_queue_limit {
                ByteQueueLimit::Off => (
                    0,
                    c.max_packet_len.saturating_mul(2),
                    ByteQueueLimit::DEFAULT_HOLD_MICROS,
                ),
                ByteQueueLimit::Auto {
                    min_bytes,
                    max_bytes,
                    hold_micros,
                } => (max_bytes, min_bytes, hold_micros),
            };
        let (aqm, target_micros, interval_micros) = match c.aqm {
            Aqm::Off => (
                TidegateAqm::Off,
                Aqm::CODEL_DEFAULT_TARGET_MICROS,
                Aqm::CODEL_DEFAULT_INTERVAL_MICROS,
            ),
            Aqm::Codel {
                target_micros,
                interval_micros,
            } => (TidegateAqm::Codel, target_micros, interval_micros),
            Aqm::FqCodel {
                target_micros,
                interval_micros,
                flow_queues: queues,
                quantum_bytes,
                hash_seed,
            } => {
                (flow_queues, flow_quantum_bytes, flow_hash_seed) =
                    (queues, quantum_bytes, hash_seed);
                (TidegateAqm::FqCodel, target_micros, interval_micros)
            }
        };
        TidegateTunnelConfig {
            outbound_bytes: c.outbound_bytes,
            outbound_packets: c.outbound_packets,
            inbound_bytes: c.inbound_bytes,
            inbound_packets: c.inbound_packets,
            max_packet_len: c.max_packet_len,
            outbound_high_watermark_bytes: c.outbound_high_watermark_bytes,
            outbound_low_watermark_bytes: c.outbound_low_watermark_bytes,
            outbound_high_watermark_packets: c.outbound_high_watermark_packets,
            outbound_low_watermark_packets: c.outbound_low_watermark_packets,
            inbound_drop_policy: c.inbound_drop_policy as u32,
            aqm: aqm as u32,
            aqm_target_us: target_micros,
            aqm_interval_us: interval_micros,
            packet_align: c.packet_align,
            flow_queues,
            flow_quantum_bytes,
            flow_hash_seed,
            queue_limit_max_bytes,
            queue_limit_min_bytes,
            queue_limit_hold_us,
        }
    }
}

impl TryFrom<TidegateTunnelConfig> for TunnelConfig {
    type Error = TidegateStatus;

    fn try_from(c: TidegateTunnelConfig) -> Result<Self, TidegateStatus> {
        let policy = u8::try_from(c.inbound_drop_policy)
            .ok()
            .and_then(DropPolicy::from_u8)
            .ok_or(TidegateStatus::ConfigUnknownDropPolicy)?;
        let aqm = match c.aqm {
            0 => Aqm::Off,
            1 => Aqm::Codel {
                target_micros: c.aqm_target_us,
                interval_micros: c.aqm_interval_us,
            },
            2 => Aqm::FqCodel {
                target_micros: c.aqm_target_us,
                interval_micros: c.aqm_interval_us,
                flow_queues: c.flow_queues,
                quantum_bytes: c.flow_quantum_bytes,
                hash_seed: c.flow_hash_seed,
            },
            _ => return Err(TidegateStatus::ConfigUnknownAqm),
        };
        if c.aqm != 2 && c.flow_queues != 0 {
            return Err(TidegateStatus::ConfigInvalidAqm);
        }
        let byte_queue_limit = match c.queue_limit_max_bytes {
            0 => ByteQueueLimit::Off,
            _ if c.queue_limit_hold_us == 0 => return Err(TidegateStatus::ConfigZeroDuration),
            max_bytes => ByteQueueLimit::Auto {
                min_bytes: c.queue_limit_min_bytes,
                max_bytes,
                hold_micros: c.queue_limit_hold_us,
            },
        };
        let config = TunnelConfig {
            outbound_bytes: c.outbound_bytes,
            outbound_packets: c.outbound_packets,
            inbound_bytes: c.inbound_bytes,
            inbound_packets: c.inbound_packets,
            max_packet_len: c.max_packet_len,
            outbound_high_watermark_bytes: c.outbound_high_watermark_bytes,
            outbound_low_watermark_bytes: c.outbound_low_watermark_bytes,
            outbound_high_watermark_packets: c.outbound_high_watermark_packets,
            outbound_low_watermark_packets: c.outbound_low_watermark_packets,
            inbound_drop_policy: policy,
            aqm,
            packet_align: c.packet_align,
            byte_queue_limit,
        };
        config.validate().map_err(status_of_config)?;
        Ok(config)
    }
}

fn status_of_config(error: ConfigError) -> TidegateStatus {
    match error {
        ConfigError::ZeroCapacity | ConfigError::StorageMismatch => {
            TidegateStatus::ConfigZeroCapacity
        }
        ConfigError::ZeroMaxPacketLen => TidegateStatus::ConfigZeroMaxPacketLen,
        ConfigError::RingTooLarge { .. } => TidegateStatus::ConfigRingTooLarge,
        ConfigError::InboundSmallerThanPacket => TidegateStatus::ConfigInboundSmallerThanPacket,
        ConfigError::WatermarksOutOfOrder => TidegateStatus::ConfigWatermarksOutOfOrder,
        ConfigError::NoHeadroomAboveHighWatermark { .. } => TidegateStatus::ConfigNoHeadroom,
        ConfigError::NoSlotAboveHighWatermark => TidegateStatus::ConfigNoSlotHeadroom,
        ConfigError::InvalidAqm => TidegateStatus::ConfigInvalidAqm,
        ConfigError::BadPacketAlign { .. } => TidegateStatus::ConfigBadPacketAlign,
        ConfigError::ArenaNotWholeCells { .. } => TidegateStatus::ConfigArenaNotWholeCells,
        ConfigError::InvalidByteQueueLimit => TidegateStatus::ConfigInvalidQueueLimit,
        // A refusal added to the core later still refuses, with the generic status.
        _ => TidegateStatus::InvalidArgument,
    }
}

fn status_of_packet(error: PacketError) -> TidegateStatus {
    match error {
        PacketError::Empty => TidegateStatus::PacketEmpty,
        PacketError::TooLong { .. } => TidegateStatus::PacketTooLong,
        PacketError::NoRoom => TidegateStatus::NoRoom,
        // A refusal added to the core later still refuses, with the generic status.
        _ => TidegateStatus::InvalidArgument,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_null_out_pointer_is_reported_before_an_invalid_config() {
        let config = TidegateTunnelConfig {
            outbound_bytes: 0,
            ..tidegate_tunnel_config_default()
        };
        let mut bytes = 0;
        // SAFETY: a valid config and a valid or NULL out-pointer.
        unsafe {
            assert_eq!(
                tidegate_tunnel_footprint(&config, &mut bytes, &mut 0),
                TidegateStatus::ConfigZeroCapacity
            );
            assert_eq!(
                tidegate_tunnel_footprint(&config, std::ptr::null_mut(), &mut 0),
                TidegateStatus::NullArgument
            );
            assert_eq!(
                tidegate_tunnel_new(&config, std::ptr::null_mut()),
                TidegateStatus::NullArgument
            );
        }
        assert_eq!(bytes, 0);
    }

    fn small_config() -> TidegateTunnelConfig {
        TidegateTunnelConfig {
            outbound_bytes: 256,
            outbound_packets: 8,
            inbound_bytes: 256,
            inbound_packets: 8,
            max_packet_len: 32,
            outbound_high_watermark_bytes: 128,
            outbound_low_watermark_bytes: 64,
            outbound_high_watermark_packets: 6,
            outbound_low_watermark_packets: 3,
            ..tidegate_tunnel_config_default()
        }
    }

    /// A view handed to C stays readable, with its bytes unchanged, while later calls push into
    /// and hand out from the same arena. Under Miri this checks that the view's pointer keeps
    /// its provenance across those calls (no aliasing violation).
    #[test]
    fn views_stay_valid_across_later_calls() {
        let mut tunnel = std::ptr::null_mut();
        // SAFETY: valid config and out-pointer; the handle is freed at the end.
        unsafe {
            assert_eq!(
                tidegate_tunnel_new(&small_config(), &mut tunnel),
                TidegateStatus::Ok
            );
            let first = [7u8; 20];
            assert_eq!(
                tidegate_tunnel_on_outbound_packet(tunnel, 1, first.as_ptr(), first.len()),
                TidegateStatus::Ok
            );
            let mut views = [TidegatePacketView {
                data: std::ptr::null(),
                len: 0,
            }; 4];
            let mut count = 0;
            assert_eq!(
                tidegate_tunnel_poll_outbound(tunnel, 2, views.as_mut_ptr(), 4, &mut count),
                TidegateStatus::Ok
            );
            assert_eq!(count, 1);
            let held = views[0];
            for round in 0..4u8 {
                let packet = [round; 24];
                let status =
                    tidegate_tunnel_on_outbound_packet(tunnel, 3, packet.as_ptr(), packet.len());
                assert_eq!(status, TidegateStatus::Ok);
                let mut stats = std::mem::MaybeUninit::uninit();
                assert_eq!(
                    tidegate_tunnel_stats(tunnel, stats.as_mut_ptr()),
                    TidegateStatus::Ok
                );
                // The view handed out before these calls still reads the first packet.
                let bytes = std::slice::from_raw_parts(held.data, held.len);
                assert_eq!(bytes, &first[..]);
            }
            assert_eq!(
                tidegate_tunnel_poll_outbound(tunnel, 4, views.as_mut_ptr(), 4, &mut count),
                TidegateStatus::Ok
            );
            assert_eq!(count, 4);
            let bytes = std::slice::from_raw_parts(held.data, held.len);
            assert_eq!(bytes, &first[..]);
            for (round, view) in views.iter().enumerate() {
                let bytes = std::slice::from_raw_parts(view.data, view.len);
                assert!(bytes.iter().all(|&b| usize::from(b) == round));
            }
            let mut resume = false;
            assert_eq!(
                tidegate_tunnel_complete_outbound(tunnel, 5, 5, &mut resume),
                TidegateStatus::Ok
            );
            tidegate_tunnel_free(tunnel);
        }
    }
}
