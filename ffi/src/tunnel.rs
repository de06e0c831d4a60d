//! C ABI of the packet tunnel engine: `TidegateTunnel`.

use core::mem::size_of;
use std::cell::Cell;

use tidegate_core::{
    Aqm, ConfigError, DropPolicy, InboundDisposition, Instant, PacketError, PacketTunnel, Slot,
    TunnelConfig, TunnelStats, TunnelStorage,
};

use crate::arena::{Arena, rebase};
use crate::boundary::{Handle, bytes, call, call_free, call_mut, require_non_null, write_out};
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
    engine: PacketTunnel<Arena, Box<[Slot]>>,
    /// Base pointers of the outbound and inbound arenas, copied before the arenas moved into the
    /// engine: views are rebased on them so they survive later writes (see `arena.rs`).
    bases: (*const u8, *const u8),
}

impl Handle for TidegateTunnel {
    fn poison(&self) -> &Cell<bool> {
        &self.poison
    }
}

/// Configuration of a `TidegateTunnel`. Start from `tidegate_tunnel_config_default()` and change
/// what you need; `tidegate_tunnel_new` checks it and names the first problem in its status.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TidegateTunnelConfig {
    /// Bytes of the outbound ring: the most outbound packet bytes held, queued or in flight,
    /// alignment padding included (see `packet_align`).
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
    /// padding).
    pub outbound_high_watermark_bytes: u32,
    /// Paused reading resumes when held bytes are at most this (and packets at most theirs).
    pub outbound_low_watermark_bytes: u32,
    /// Outbound reading pauses when this many packets are held.
    pub outbound_high_watermark_packets: u32,
    /// Paused reading resumes when held packets are at most this (and bytes at most theirs).
    pub outbound_low_watermark_packets: u32,
    /// What to drop when the inbound ring is full: a `TIDEGATE_DROP_POLICY_*` value.
    pub inbound_drop_policy: u32,
    /// Active queue management for both rings: a `TIDEGATE_AQM_*` value.
    pub aqm: u32,
    /// CoDel's target sojourn time in microseconds (used when `aqm` is CoDel; default 5000).
    pub aqm_target_us: u32,
    /// CoDel's interval in microseconds (used when `aqm` is CoDel; default 100000).
    pub aqm_interval_us: u32,
    /// Packets start at addresses that are multiples of this power of two (1 to 4096) whenever
    /// the padding fits, so copying them in and out runs at full memcpy speed. The padding, at
    /// most `packet_align - 1` bytes per packet, counts against the ring's bytes and the
    /// watermarks. Default 64 (a cache line); 1 packs packets back to back.
    pub packet_align: u32,
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
    /// The ring was full; the packet was dropped.
    DroppedNewest = 2,
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

/// Writes to `*out_bytes` the exact number of bytes `tidegate_tunnel_new` allocates for
/// `config`: both rings, their packet slots and the handle itself.
///
/// Returns a `TIDEGATE_STATUS_CONFIG_*` status if the configuration is invalid.
///
/// # Safety
/// `config` must be NULL or point to a valid `TidegateTunnelConfig`; `out_bytes` must be NULL or
/// valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_tunnel_footprint(
    config: *const TidegateTunnelConfig,
    out_bytes: *mut usize,
) -> TidegateStatus {
    call_free(|| {
        // SAFETY: `config` is NULL or valid by the caller's contract.
        let config = unsafe { config.as_ref() }.ok_or(TidegateStatus::NullArgument)?;
        require_non_null([out_bytes.cast_const().cast()])?;
        let config = TunnelConfig::try_from(*config)?;
        // SAFETY: `out_bytes` was checked non-NULL and is valid by the caller's contract.
        unsafe { write_out(out_bytes, footprint(&config)) }
    })
}

/// Creates a tunnel with `config` and writes its handle to `*out_tunnel`.
///
/// All memory the tunnel will ever use is allocated here, and touched once so that it is
/// resident from the start: exactly `tidegate_tunnel_footprint(config)` bytes.
///
/// Returns a `TIDEGATE_STATUS_CONFIG_*` status for an invalid configuration, or
/// `TIDEGATE_STATUS_OUT_OF_MEMORY` if the allocation fails.
///
/// # Safety
/// `config` must be NULL or point to a valid `TidegateTunnelConfig`; `out_tunnel` must be NULL or
/// valid for writing a pointer. Free the handle with `tidegate_tunnel_free`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_tunnel_new(
    config: *const TidegateTunnelConfig,
    out_tunnel: *mut *mut TidegateTunnel,
) -> TidegateStatus {
    call_free(|| {
        // SAFETY: `config` is NULL or valid by the caller's contract.
        let config = unsafe { config.as_ref() }.ok_or(TidegateStatus::NullArgument)?;
        require_non_null([out_tunnel.cast_const().cast()])?;
        let config = TunnelConfig::try_from(*config)?;
        let arena = |bytes: u32| {
            Arena::zeroed(bytes as usize, config.packet_align as usize)
                .map_err(|_| TidegateStatus::OutOfMemory)
        };
        let outbound_arena = arena(config.outbound_bytes)?;
        let inbound_arena = arena(config.inbound_bytes)?;
        let bases = (outbound_arena.base(), inbound_arena.base());
        let storage = TunnelStorage {
            outbound_arena,
            outbound_slots: filled(config.outbound_packets, Slot::EMPTY)?,
            inbound_arena,
            inbound_slots: filled(config.inbound_packets, Slot::EMPTY)?,
        };
        let engine = PacketTunnel::new(config, storage).map_err(status_of_config)?;
        let handle = Box::new(TidegateTunnel {
            poison: Cell::new(false),
            engine,
            bases,
        });
        // SAFETY: `out_tunnel` was checked non-NULL and is valid by the caller's contract.
        unsafe { write_out(out_tunnel, Box::into_raw(handle)) }
    })
}

/// Frees a tunnel and all its memory. `NULL` is a no-op. Works on a poisoned handle too.
///
/// Views handed out by this tunnel become invalid.
///
/// # Safety
/// `tunnel` must be NULL or a handle from `tidegate_tunnel_new` that was not freed yet, with no
/// other call on it running.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_tunnel_free(tunnel: *mut TidegateTunnel) {
    if tunnel.is_null() {
        return;
    }
    // SAFETY: a non-NULL `tunnel` came from `Box::into_raw` in `tidegate_tunnel_new` and is freed
    // once, by the caller's contract.
    let handle = unsafe { Box::from_raw(tunnel) };
    // Dropping boxed slices cannot panic, but a panic must never cross into C.
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(handle)));
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
            poll_batch(views, capacity, out_count, || {
                t.engine
                    .poll_outbound(Instant::from_micros(now_us))
                    .map(|packet| view_of(base, packet))
            })
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
            poll_batch(views, capacity, out_count, || {
                t.engine
                    .poll_inbound(Instant::from_micros(now_us))
                    .map(|packet| view_of(base, packet))
            })
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

/// Writes a snapshot of the tunnel's counters and levels to `*out_stats`.
///
/// # Safety
/// `tunnel` must be NULL or a live handle; `out_stats` must be NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_tunnel_stats(
    tunnel: *const TidegateTunnel,
    out_stats: *mut TunnelStats,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe { call(tunnel, |t| write_out(out_stats, t.engine.stats())) }
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

/// The bytes `tidegate_tunnel_new` allocates for `config`.
fn footprint(config: &TunnelConfig) -> usize {
    PacketTunnel::<Arena, Box<[Slot]>>::footprint(config)
        .saturating_add(size_of::<TidegateTunnel>())
}

/// A boxed slice of `len` copies of `value`, or `OutOfMemory` instead of aborting.
fn filled<T: Clone>(len: u32, value: T) -> Result<Box<[T]>, TidegateStatus> {
    let len = len as usize;
    let mut storage = Vec::new();
    storage
        .try_reserve_exact(len)
        .map_err(|_| TidegateStatus::OutOfMemory)?;
    storage.resize(len, value);
    Ok(storage.into_boxed_slice())
}

/// Fill `views` with up to `capacity` packets from `next` and write their number.
///
/// # Safety
/// `views` must be valid for writing `capacity` views (NULL only if `capacity` is 0); `out_count`
/// must be NULL or valid for writing.
unsafe fn poll_batch(
    views: *mut TidegatePacketView,
    capacity: usize,
    out_count: *mut usize,
    mut next: impl FnMut() -> Option<TidegatePacketView>,
) -> Result<(), TidegateStatus> {
    require_non_null([out_count.cast_const().cast()])?;
    if views.is_null() && capacity > 0 {
        return Err(TidegateStatus::NullArgument);
    }
    let mut count = 0;
    while count < capacity {
        let Some(view) = next() else { break };
        // SAFETY: `count < capacity` and `views` is valid for `capacity` writes.
        unsafe { views.add(count).write(view) };
        count += 1;
    }
    // SAFETY: `out_count` was checked non-NULL and is valid by the caller's contract.
    unsafe { write_out(out_count, count) }
}

impl From<TunnelConfig> for TidegateTunnelConfig {
    fn from(c: TunnelConfig) -> Self {
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
            _ => return Err(TidegateStatus::ConfigUnknownAqm),
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
    }
}

fn status_of_packet(error: PacketError) -> TidegateStatus {
    match error {
        PacketError::Empty => TidegateStatus::PacketEmpty,
        PacketError::TooLong { .. } => TidegateStatus::PacketTooLong,
        PacketError::NoRoom => TidegateStatus::NoRoom,
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
                tidegate_tunnel_footprint(&config, &mut bytes),
                TidegateStatus::ConfigZeroCapacity
            );
            assert_eq!(
                tidegate_tunnel_footprint(&config, std::ptr::null_mut()),
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
