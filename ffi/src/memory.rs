//! C ABI of the memory governor: `TidegateMemory`, and the pressure levels every engine takes.

use core::cell::Cell;
use core::ffi::c_void;

use tidegate_core::{
    Instant, MemoryConfig, MemoryConfigError, MemoryGovernor, MemoryStats, Pressure, ReservationId,
    ReservationSlot, ReserveError,
};

use crate::black_box::{self, TidegateBlackBoxRecord};
use crate::boundary::{Handle, call, call_mut, require_non_null, write_out};
use crate::place::{self, Carver, Memory, Region};
use crate::status::TidegateStatus;

/// The memory governor of one process: it turns the headroom the platform reports into a
/// pressure level for every engine, and gates the host's own large allocations through
/// reservations it can refuse.
///
/// Feed it on every tick: `tidegate_memory_on_headroom` with `os_proc_available_memory()` on
/// iOS, or `tidegate_memory_on_footprint` with `phys_footprint` (macOS) or the resident set
/// (Linux). After every call, `tidegate_memory_poll_pressure`: when it reports a change, pass
/// the level to `tidegate_tunnel_on_pressure` and `tidegate_proxy_on_pressure`.
///
/// All its memory is one block of `tidegate_memory_footprint` bytes, allocated by
/// `tidegate_memory_new` or given to `tidegate_memory_init`; nothing is allocated afterwards.
///
/// Thread safety: not safe for concurrent use. Calls on one handle must not overlap; moving the
/// handle between threads is fine.
pub struct TidegateMemory {
    poison: Cell<bool>,
    #[cfg_attr(not(feature = "std"), allow(dead_code))]
    memory: Memory,
    engine: MemoryGovernor<Region<ReservationSlot>>,
}

impl Handle for TidegateMemory {
    fn poison(&self) -> &Cell<bool> {
        &self.poison
    }
    #[cfg(feature = "std")]
    fn memory(&self) -> Memory {
        self.memory
    }
}

/// A memory pressure level. Engines apply their configured limits at `NORMAL`, half of them at
/// `ELEVATED` and a quarter at `CRITICAL` (never below 1); at `CRITICAL` the governor refuses
/// every reservation and the proxy refuses new flows and evicts idle ones.
#[repr(u32)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TidegatePressure {
    /// Below the elevated threshold.
    #[default]
    Normal = 0,
    /// Past the elevated threshold.
    Elevated = 1,
    /// Past the critical threshold.
    Critical = 2,
}

impl From<Pressure> for TidegatePressure {
    fn from(level: Pressure) -> Self {
        match level {
            Pressure::Normal => TidegatePressure::Normal,
            Pressure::Elevated => TidegatePressure::Elevated,
            Pressure::Critical => TidegatePressure::Critical,
        }
    }
}

/// The pressure level named by a `TIDEGATE_PRESSURE_*` value from C.
pub(crate) fn pressure_from_c(level: u32) -> Result<Pressure, TidegateStatus> {
    match level {
        0 => Ok(Pressure::Normal),
        1 => Ok(Pressure::Elevated),
        2 => Ok(Pressure::Critical),
        _ => Err(TidegateStatus::InvalidArgument),
    }
}

/// Configuration of a `TidegateMemory`. Start from `tidegate_memory_config_packet_tunnel()` or
/// `tidegate_memory_config_app_proxy()`.
///
/// A level is entered as soon as the projected use reaches its threshold and left only once use
/// has stayed `hysteresis_permille` below it for `calm_us`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TidegateMemoryConfig {
    /// The memory limit the platform kills the process at, in bytes. Not 0.
    pub limit_bytes: u64,
    /// How long use must stay below a level's leaving threshold before the level is left, in
    /// microseconds; 0 leaves at the first report below it.
    pub calm_us: u64,
    /// Use, in thousandths of the limit, at which pressure becomes elevated: above 0, below
    /// `critical_permille`.
    pub elevated_permille: u32,
    /// Use, in thousandths of the limit, at which pressure becomes critical and reservations are
    /// refused: at most 1000.
    pub critical_permille: u32,
    /// How far below a threshold, in thousandths of the limit, use must fall to leave the
    /// level: above 0, below `elevated_permille`.
    pub hysteresis_permille: u32,
    /// Reservations outstanding at once: 1 to 65536.
    pub max_reservations: u32,
}

/// The most reservations a `TidegateMemory` holds at once.
pub const TIDEGATE_MEMORY_RESERVATIONS_MAX: u32 = 65_536;

/// A snapshot of a `TidegateMemory`. Counters saturate.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TidegateMemoryStats {
    /// Projected use: measured use plus the bytes reserved since the last report.
    pub projected_bytes: u64,
    /// Use as last measured (the larger of limit minus headroom and footprint); 0 if unknown.
    pub measured_bytes: u64,
    /// The last headroom reported; 0 if unknown.
    pub headroom_bytes: u64,
    /// Bytes of every outstanding reservation.
    pub reserved_bytes: u64,
    /// Bytes reserved since the last report (part of the projection).
    pub unmeasured_bytes: u64,
    /// The highest projected use seen.
    pub peak_projected_bytes: u64,
    /// Headroom and footprint reports received.
    pub reports: u64,
    /// Reservations granted.
    pub reservations_granted: u64,
    /// Reservations refused for pressure.
    pub reservations_refused: u64,
    /// Bytes of the reservations refused for pressure.
    pub refused_bytes: u64,
    /// Times pressure rose from normal.
    pub elevated_entries: u64,
    /// Times pressure rose to critical.
    pub critical_entries: u64,
    /// Microseconds at elevated pressure, the current stretch included.
    pub elevated_us: u64,
    /// Microseconds at critical pressure, the current stretch included.
    pub critical_us: u64,
    /// The level in force.
    pub pressure: TidegatePressure,
    /// Reservations outstanding.
    pub reservations: u32,
}

impl From<MemoryStats> for TidegateMemoryStats {
    fn from(s: MemoryStats) -> Self {
        TidegateMemoryStats {
            projected_bytes: s.projected_bytes,
            measured_bytes: s.measured_bytes,
            headroom_bytes: s.headroom_bytes,
            reserved_bytes: s.reserved_bytes,
            unmeasured_bytes: s.unmeasured_bytes,
            peak_projected_bytes: s.peak_projected_bytes,
            reports: s.reports,
            reservations_granted: s.reservations_granted,
            reservations_refused: s.reservations_refused,
            refused_bytes: s.refused_bytes,
            elevated_entries: s.elevated_entries,
            critical_entries: s.critical_entries,
            elevated_us: s.elevated_micros,
            critical_us: s.critical_micros,
            pressure: s.pressure.into(),
            reservations: s.reservations,
        }
    }
}

fn c_config(core: MemoryConfig) -> TidegateMemoryConfig {
    TidegateMemoryConfig {
        limit_bytes: core.limit_bytes,
        calm_us: core.calm_micros,
        elevated_permille: u32::from(core.elevated_permille),
        critical_permille: u32::from(core.critical_permille),
        hysteresis_permille: u32::from(core.hysteresis_permille),
        max_reservations: core.max_reservations,
    }
}

/// The preset for an iOS packet tunnel provider, killed at 50 MiB: elevated at 50 % (25 MiB),
/// critical at 70 % (35 MiB), each left 5 MiB lower after 1 s of calm; 64 reservations.
#[unsafe(no_mangle)]
pub extern "C" fn tidegate_memory_config_packet_tunnel() -> TidegateMemoryConfig {
    c_config(MemoryConfig::PACKET_TUNNEL)
}

/// The preset for an app proxy provider, killed at 15 MiB: elevated at 60 % (9 MiB), critical at
/// 80 % (12 MiB), each left 1.5 MiB lower after 1 s of calm; 64 reservations.
#[unsafe(no_mangle)]
pub extern "C" fn tidegate_memory_config_app_proxy() -> TidegateMemoryConfig {
    c_config(MemoryConfig::APP_PROXY)
}

/// Writes to `*out_size` and `*out_align` the size and alignment of the memory a governor with
/// `config` lives in, in one block: all the memory it ever uses.
///
/// Returns a `TIDEGATE_STATUS_CONFIG_*` status if the configuration is invalid.
///
/// # Safety
/// `config` must be NULL or point to a valid `TidegateMemoryConfig`; `out_size` and `out_align`
/// must be NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_memory_footprint(
    config: *const TidegateMemoryConfig,
    out_size: *mut usize,
    out_align: *mut usize,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe { place::footprint::<TidegateMemory>(config, out_size, out_align) }
}

/// Creates a governor with `config`, at normal pressure with nothing measured, in memory it
/// allocates (`tidegate_memory_footprint` bytes), and writes its handle to `*out_memory`. Free
/// it with `tidegate_memory_free`.
///
/// Returns a `TIDEGATE_STATUS_CONFIG_*` status for an invalid configuration, or
/// `TIDEGATE_STATUS_OUT_OF_MEMORY` if the allocation fails.
///
/// # Safety
/// `config` must be NULL or point to a valid `TidegateMemoryConfig`; `out_memory` must be NULL
/// or valid for writing a pointer.
#[cfg(feature = "std")]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_memory_new(
    config: *const TidegateMemoryConfig,
    out_memory: *mut *mut TidegateMemory,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe { place::new(config, 0, out_memory) }
}

/// Creates a governor with `config` in the `len` bytes at `memory`, and writes its handle
/// (`memory` itself) to `*out_memory`. `memory` must hold the size `tidegate_memory_footprint`
/// gives and start on its alignment, or the call returns `TIDEGATE_STATUS_BUFFER_TOO_SMALL` or
/// `TIDEGATE_STATUS_MISALIGNED`. `tidegate_memory_free` ends the handle and leaves the memory to
/// you.
///
/// # Safety
/// `config` must be NULL or point to a valid `TidegateMemoryConfig`; `memory` must be NULL or
/// valid for reading and writing `len` bytes, used by nothing else until the handle is freed;
/// `out_memory` must be NULL or valid for writing a pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_memory_init(
    config: *const TidegateMemoryConfig,
    memory: *mut c_void,
    len: usize,
    out_memory: *mut *mut TidegateMemory,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe { place::init(config, 0, memory, len, out_memory) }
}

/// Frees a governor (memory given to `tidegate_memory_init` goes back to the caller). `NULL` is
/// a no-op. Works on a poisoned handle too.
///
/// # Safety
/// `memory` must be NULL or a handle from `tidegate_memory_new` or `tidegate_memory_init` that
/// was not freed yet, with no other call on it running.
#[cfg(feature = "std")]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_memory_free(memory: *mut TidegateMemory) {
    // SAFETY: forwarded caller contract.
    unsafe { place::free(memory) }
}

/// Reports the headroom the platform gives, `available_bytes` (`os_proc_available_memory()` on
/// iOS); 0 means unknown (the platform does not limit the process or cannot say), never "no
/// room". Every reservation granted before counts as measured from now on. Poll the pressure
/// afterwards.
///
/// # Safety
/// `memory` must be NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_memory_on_headroom(
    memory: *mut TidegateMemory,
    now_us: u64,
    available_bytes: u64,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(memory, |m| {
            m.engine
                .on_headroom(Instant::from_micros(now_us), available_bytes);
            Ok(())
        })
    }
}

/// Reports the process's footprint, `footprint_bytes` (`phys_footprint` from `task_info` on
/// macOS, the resident set on Linux), compared with the configured limit; 0 means unknown. With
/// headroom reported too, the larger use counts. Otherwise as `tidegate_memory_on_headroom`.
///
/// # Safety
/// `memory` must be NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_memory_on_footprint(
    memory: *mut TidegateMemory,
    now_us: u64,
    footprint_bytes: u64,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(memory, |m| {
            m.engine
                .on_footprint(Instant::from_micros(now_us), footprint_bytes);
            Ok(())
        })
    }
}

/// Reserves `bytes` for an allocation the host is about to make (a TLS handshake's buffers, a
/// crypto batch, a relay pool) and writes the reservation's id (never 0) to
/// `*out_reservation`. Allocate only when this returns `TIDEGATE_STATUS_OK`, and call
/// `tidegate_memory_release` after freeing the memory. Reserve just before allocating: a
/// reservation counts in the projected use until the next report measures the allocation.
///
/// Returns `TIDEGATE_STATUS_MEMORY_PRESSURE` if the projected use with it would reach the
/// critical threshold, or pressure is critical: wait for the pressure to fall, or degrade (a
/// smaller batch, one handshake at a time), never allocate anyway.
/// `TIDEGATE_STATUS_NO_RESERVATION_SLOT` if `max_reservations` are outstanding;
/// `TIDEGATE_STATUS_INVALID_ARGUMENT` for 0 bytes. A refusal changes nothing but its counters.
///
/// # Safety
/// `memory` must be NULL or a live handle; `out_reservation` must be NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_memory_reserve(
    memory: *mut TidegateMemory,
    now_us: u64,
    bytes: u64,
    out_reservation: *mut u64,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(memory, |m| {
            require_non_null([out_reservation.cast_const().cast()])?;
            let id = m
                .engine
                .reserve(Instant::from_micros(now_us), bytes)
                .map_err(|error| match error {
                    ReserveError::Pressure { .. } => TidegateStatus::MemoryPressure,
                    ReserveError::NoSlot => TidegateStatus::NoReservationSlot,
                    // Zero bytes, and a refusal added to the core later.
                    _ => TidegateStatus::InvalidArgument,
                })?;
            write_out(out_reservation, id.to_raw())
        })
    }
}

/// Releases reservation `reservation` after its memory was freed. Returns
/// `TIDEGATE_STATUS_UNKNOWN_RESERVATION` for an id that is not outstanding (released already,
/// or never issued), changing nothing.
///
/// # Safety
/// `memory` must be NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_memory_release(
    memory: *mut TidegateMemory,
    now_us: u64,
    reservation: u64,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(memory, |m| {
            m.engine
                .release(
                    Instant::from_micros(now_us),
                    ReservationId::from_raw(reservation),
                )
                .map(drop)
                .map_err(|_| TidegateStatus::UnknownReservation)
        })
    }
}

/// Writes the level in force to `*out_level` and whether it changed since the last call to
/// `*out_changed`. On a change, pass the level to every engine (`tidegate_tunnel_on_pressure`,
/// `tidegate_proxy_on_pressure`). Call it after every input and timeout.
///
/// # Safety
/// `memory` must be NULL or a live handle; `out_level` and `out_changed` must be NULL or valid
/// for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_memory_poll_pressure(
    memory: *mut TidegateMemory,
    out_level: *mut TidegatePressure,
    out_changed: *mut bool,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(memory, |m| {
            require_non_null([
                out_level.cast_const().cast(),
                out_changed.cast_const().cast(),
            ])?;
            let changed = m.engine.poll_pressure().is_some();
            write_out(out_level, m.engine.pressure().into())?;
            write_out(out_changed, changed)
        })
    }
}

/// Writes to `*out_deadline_us` when `tidegate_memory_handle_timeout` must next be called: the
/// end of the calm period after which the level may fall, otherwise `UINT64_MAX` (never).
///
/// # Safety
/// `memory` must be NULL or a live handle; `out_deadline_us` must be NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_memory_poll_timeout(
    memory: *const TidegateMemory,
    out_deadline_us: *mut u64,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call(memory, |m| {
            let deadline = m.engine.poll_timeout().unwrap_or(Instant::MAX);
            write_out(out_deadline_us, deadline.as_micros())
        })
    }
}

/// Lowers the level if its calm period has passed by `now_us`. Idempotent. Poll the pressure
/// afterwards.
///
/// # Safety
/// `memory` must be NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_memory_handle_timeout(
    memory: *mut TidegateMemory,
    now_us: u64,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(memory, |m| {
            m.engine.handle_timeout(Instant::from_micros(now_us));
            Ok(())
        })
    }
}

/// Writes a snapshot of the governor's levels and counters to `*out_stats`.
///
/// # Safety
/// `memory` must be NULL or a live handle; `out_stats` must be NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_memory_stats(
    memory: *const TidegateMemory,
    out_stats: *mut TidegateMemoryStats,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe { call(memory, |m| write_out(out_stats, m.engine.stats().into())) }
}

/// Fills the memory (pressure level, projected and peak use, refusals, critical entries) figures of `*record` from `memory` (see `TidegateBlackBoxRecord`); the other
/// fields are left as they are. Refused with `TIDEGATE_STATUS_INVALID_ARGUMENT`, leaving
/// `*record` unchanged, if its `flags` or `reserved` are not valid.
///
/// # Safety
/// `record` must be NULL or valid for reading and writing; `memory` must be NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_black_box_capture_memory(
    record: *mut TidegateBlackBoxRecord,
    memory: *const TidegateMemory,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call(memory, |h| {
            black_box::capture(record, |r| r.capture_memory(&h.engine))
        })
    }
}

/// Force a panic inside the boundary of `memory`, to test that the panic is caught and the
/// handle poisoned. Not part of the C API.
///
/// # Safety
/// As for any mutating call: `memory` must be NULL or a live handle.
#[doc(hidden)]
#[cfg(any(test, feature = "testing"))]
pub unsafe fn testing_panic_inside_memory(memory: *mut TidegateMemory) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(memory, |_| -> Result<(), TidegateStatus> {
            panic!("forced panic for testing the C boundary")
        })
    }
}

impl place::Placed for TidegateMemory {
    type CConfig = TidegateMemoryConfig;
    type Config = MemoryConfig;
    type Storage = Region<ReservationSlot>;

    fn check(config: &TidegateMemoryConfig) -> Result<MemoryConfig, TidegateStatus> {
        let permille =
            |value: u32| u16::try_from(value).map_err(|_| TidegateStatus::ConfigMemoryThresholds);
        if config.max_reservations > TIDEGATE_MEMORY_RESERVATIONS_MAX {
            return Err(TidegateStatus::ConfigMemoryReservations);
        }
        let core = MemoryConfig {
            limit_bytes: config.limit_bytes,
            elevated_permille: permille(config.elevated_permille)?,
            critical_permille: permille(config.critical_permille)?,
            hysteresis_permille: u16::try_from(config.hysteresis_permille)
                .map_err(|_| TidegateStatus::ConfigMemoryHysteresis)?,
            calm_micros: config.calm_us,
            max_reservations: config.max_reservations,
        };
        core.validate().map_err(status_of_memory_config)?;
        Ok(core)
    }

    fn walk(
        config: &MemoryConfig,
        carver: &mut Carver,
    ) -> Result<Region<ReservationSlot>, TidegateStatus> {
        carver.array(config.max_reservations as usize, ReservationSlot::EMPTY)
    }

    fn build(
        config: MemoryConfig,
        _: u64,
        slots: Region<ReservationSlot>,
        memory: Memory,
    ) -> Result<Self, TidegateStatus> {
        let engine = MemoryGovernor::new(config, slots).map_err(status_of_memory_config)?;
        Ok(TidegateMemory {
            poison: Cell::new(false),
            memory,
            engine,
        })
    }
}

fn status_of_memory_config(error: MemoryConfigError) -> TidegateStatus {
    match error {
        MemoryConfigError::ZeroLimit => TidegateStatus::ConfigMemoryZeroLimit,
        MemoryConfigError::Reservations => TidegateStatus::ConfigMemoryReservations,
        MemoryConfigError::Thresholds => TidegateStatus::ConfigMemoryThresholds,
        MemoryConfigError::Hysteresis => TidegateStatus::ConfigMemoryHysteresis,
        // The storage is carved to match; a refusal added to the core later still refuses.
        _ => TidegateStatus::InvalidArgument,
    }
}
