//! C ABI of the connection budget: `TidegateBudget`.

use core::ffi::c_void;
use std::cell::Cell;

use tidegate_core::{
    BudgetConfig, BudgetConfigError, BudgetError, BudgetRefusal, BudgetStats, ConnectionBudget,
    Instant, classify_errno,
};

use crate::boundary::{Handle, call, call_mut, write_out};
use crate::place::{self, Memory};
use crate::status::TidegateStatus;

/// The connection budget shared by every race and every flow of the process: at most
/// `max_attempts_in_flight` connects in flight, at most `connection_limit` descriptors in use by
/// attempts and open connections, lowered for a while after resource errors (the errnos of
/// `TIDEGATE_ERROR_CLASS_RESOURCE_EXHAUSTED`; `tidegate_errno_class` tells them) and recovered
/// step by step.
///
/// Back-off rule: a resource error halves both limits (not below `backoff_floor`; errors within
/// a quarter of `recovery_interval_us` of the last halving count as the same burst); after
/// each quiet `recovery_interval_us` both grow by one eighth of their configured value.
///
/// Thread safety: not safe for concurrent use. Calls on one handle must not overlap (use one
/// serial dispatch queue, or a lock of your own); moving the handle between threads is fine.
pub struct TidegateBudget {
    poison: Cell<bool>,
    memory: Memory,
    pub(crate) engine: ConnectionBudget,
}

impl Handle for TidegateBudget {
    fn poison(&self) -> &Cell<bool> {
        &self.poison
    }
    fn memory(&self) -> Memory {
        self.memory
    }
}

/// Configuration of a `TidegateBudget`. Start from `tidegate_budget_config_default()`; creating
/// a budget refuses what it cannot honour (a zero limit, a reserve above half the descriptors).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TidegateBudgetConfig {
    /// Most connection attempts in flight at once (default 64; not 0).
    pub max_attempts_in_flight: u32,
    /// Most descriptors in use by attempts plus open connections (default 400, below the ~500
    /// active flows where NECP starts failing and Network framework's 512 flows per process;
    /// not 0).
    pub max_open_connections: u32,
    /// The process's `RLIMIT_NOFILE` soft limit (default 256, the macOS GUI default; not 0); see
    /// also `tidegate_budget_set_fd_limit`.
    pub fd_limit: u64,
    /// Descriptors kept for the host itself (default 32; at most half of `fd_limit`).
    pub fd_reserve: u32,
    /// The lowest value back-off pushes each limit to (default 8; not 0).
    pub backoff_floor: u32,
    /// Quiet time before each recovery step, in microseconds (default 1 s; not 0).
    pub recovery_interval_us: u64,
}

/// The budget's limits and usage now, from `tidegate_budget_levels`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TidegateBudgetLevels {
    /// Connection attempts in flight.
    pub attempts_in_flight: u32,
    /// Open connections (not counting attempts).
    pub open_connections: u32,
    /// Effective limit on attempts in flight (lowered while backing off).
    pub attempt_limit: u32,
    /// Effective limit on attempts plus open connections (lowered while backing off).
    pub connection_limit: u32,
    /// Whether a limit is lowered after resource errors.
    pub backing_off: bool,
    /// Always 0: keeps the struct free of padding, so every byte is written.
    pub reserved: [u8; 7],
}

/// A snapshot of a budget's counters, from `tidegate_budget_stats`. Counters saturate.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TidegateBudgetStats {
    /// Attempts the budget allowed to start.
    pub attempts_started: u64,
    /// Attempt requests refused.
    pub attempts_refused: u64,
    /// Connection requests outside an attempt (`tidegate_budget_try_open_connection`) refused.
    pub connections_refused: u64,
    /// Resource-exhausted errors reported.
    pub resource_errors: u64,
    /// Times the effective limits were halved.
    pub backoffs: u64,
    /// Releases reported with nothing to release (a host bookkeeping bug).
    pub unbalanced_releases: u64,
}

impl From<BudgetStats> for TidegateBudgetStats {
    fn from(s: BudgetStats) -> Self {
        TidegateBudgetStats {
            attempts_started: s.attempts_started,
            attempts_refused: s.attempts_refused,
            connections_refused: s.connections_refused,
            resource_errors: s.resource_errors,
            backoffs: s.backoffs,
            unbalanced_releases: s.unbalanced_releases,
        }
    }
}

/// The default configuration: 64 attempts in flight, 400 connections, `RLIMIT_NOFILE` 256 with 32
/// descriptors reserved (so 224 connections until `tidegate_budget_set_fd_limit`), back-off floor
/// 8, recovery step every second.
#[unsafe(no_mangle)]
pub extern "C" fn tidegate_budget_config_default() -> TidegateBudgetConfig {
    TidegateBudgetConfig::from(BudgetConfig::default())
}

/// Writes to `*out_size` and `*out_align` the size and alignment of the memory a budget with
/// `config` lives in, in one block. That is all the memory it ever uses:
/// `tidegate_budget_new` allocates exactly this block, and `tidegate_budget_init` places it in a
/// block of yours.
///
/// Returns a `TIDEGATE_STATUS_CONFIG_*` status if the configuration is invalid.
///
/// # Safety
/// `config` must be NULL or point to a valid `TidegateBudgetConfig`; `out_size` and `out_align` must be
/// NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_budget_footprint(
    config: *const TidegateBudgetConfig,
    out_size: *mut usize,
    out_align: *mut usize,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe { place::footprint::<TidegateBudget>(config, out_size, out_align) }
}

/// Creates a budget with `config`, in memory it allocates, and writes its handle to
/// `*out_budget`. The one allocation is `tidegate_budget_footprint(config)` bytes; nothing is
/// allocated afterwards. Free the handle with `tidegate_budget_free`.
///
/// Returns a `TIDEGATE_STATUS_CONFIG_*` status for an invalid configuration, or
/// `TIDEGATE_STATUS_OUT_OF_MEMORY` if the allocation fails.
///
/// # Safety
/// `config` must be NULL or point to a valid `TidegateBudgetConfig`; `out_budget` must be NULL or valid for
/// writing a pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_budget_new(
    config: *const TidegateBudgetConfig,
    out_budget: *mut *mut TidegateBudget,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe { place::new(config, 0, out_budget) }
}

/// Creates a budget with `config`, in the `len` bytes at `memory`, and writes its
/// handle (`memory` itself) to `*out_budget`: for hosts that place engines in memory of their own.
///
/// `memory` must hold the size `tidegate_budget_footprint` gives and start on its alignment, or
/// the call returns `TIDEGATE_STATUS_BUFFER_TOO_SMALL` or `TIDEGATE_STATUS_MISALIGNED`. Nothing
/// else is ever used. Call `tidegate_budget_free` when done: it ends the handle and leaves the
/// memory to you.
///
/// # Safety
/// `config` must be NULL or point to a valid `TidegateBudgetConfig`; `memory` must be NULL or valid for
/// reading and writing `len` bytes, used by nothing else until the handle is freed; `out_budget`
/// must be NULL or valid for writing a pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_budget_init(
    config: *const TidegateBudgetConfig,
    memory: *mut c_void,
    len: usize,
    out_budget: *mut *mut TidegateBudget,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe { place::init(config, 0, memory, len, out_budget) }
}

/// Frees a budget: ends it and releases its memory (memory given to `tidegate_budget_init` goes
/// back to the caller). `NULL` is a no-op. Works on a poisoned handle too. Free every race that uses
/// the budget first.
///
/// # Safety
/// `budget` must be NULL or a handle from `tidegate_budget_new` or `tidegate_budget_init` that was
/// not freed yet, with no other call on it running.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_budget_free(budget: *mut TidegateBudget) {
    // SAFETY: forwarded caller contract.
    unsafe { place::free(budget) }
}

impl place::Placed for TidegateBudget {
    type CConfig = TidegateBudgetConfig;
    type Config = BudgetConfig;
    /// A budget has no storage beyond its handle.
    type Storage = ();

    fn check(config: &TidegateBudgetConfig) -> Result<BudgetConfig, TidegateStatus> {
        let config = BudgetConfig::from(*config);
        config.validate().map_err(status_of_budget_config)?;
        Ok(config)
    }

    fn walk(_: &BudgetConfig, _: &mut place::Carver) -> Result<(), TidegateStatus> {
        Ok(())
    }

    fn build(config: BudgetConfig, _: u64, (): (), memory: Memory) -> Result<Self, TidegateStatus> {
        let engine = ConnectionBudget::new(config).map_err(status_of_budget_config)?;
        Ok(TidegateBudget {
            poison: Cell::new(false),
            memory,
            engine,
        })
    }
}

pub(crate) fn status_of_budget_config(error: BudgetConfigError) -> TidegateStatus {
    match error {
        BudgetConfigError::ZeroLimit => TidegateStatus::ConfigBudgetZeroLimit,
        BudgetConfigError::ReserveAboveHalf => TidegateStatus::ConfigBudgetReserveTooLarge,
        BudgetConfigError::ZeroRecoveryInterval => TidegateStatus::ConfigBudgetZeroRecoveryInterval,
    }
}

/// Gives the budget the process's real descriptor limit (`getrlimit(RLIMIT_NOFILE)`, soft
/// value; `RLIM_INFINITY` is fine). The connection limit becomes the smaller of
/// `max_open_connections` and `rlimit_nofile` minus the reserve (at most half of it). Returns
/// `TIDEGATE_STATUS_INVALID_ARGUMENT` for 0, changing nothing.
///
/// # Safety
/// `budget` must be NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_budget_set_fd_limit(
    budget: *mut TidegateBudget,
    rlimit_nofile: u64,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(budget, |b| {
            b.engine
                .set_fd_limit(rlimit_nofile)
                .map_err(|_| TidegateStatus::InvalidArgument)
        })
    }
}

/// Writes to `*out_can_start` whether `tidegate_budget_try_start_attempt` would succeed now.
///
/// # Safety
/// `budget` must be NULL or a live handle; `out_can_start` must be NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_budget_can_start_attempt(
    budget: *const TidegateBudget,
    out_can_start: *mut bool,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call(budget, |b| {
            write_out(out_can_start, b.engine.can_start_attempt())
        })
    }
}

/// Counts a connection attempt made outside a race (a single connect), or refuses it at once
/// with `TIDEGATE_STATUS_NO_BUDGET_ATTEMPTS` or `TIDEGATE_STATUS_NO_BUDGET_CONNECTIONS`, counting
/// nothing. On success report exactly one of `tidegate_budget_on_attempt_connected`,
/// `_on_attempt_failed` or `_on_attempt_cancelled` later. Races do this themselves.
///
/// # Safety
/// `budget` must be NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_budget_try_start_attempt(
    budget: *mut TidegateBudget,
    now_us: u64,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(budget, |b| {
            b.engine
                .try_start_attempt(Instant::from_micros(now_us))
                .map_err(status_of_refusal)
        })
    }
}

/// An attempt started with `tidegate_budget_try_start_attempt` connected: it now counts as an
/// open connection. Returns `TIDEGATE_STATUS_BUDGET_NO_ATTEMPT_IN_FLIGHT` if none is counted.
///
/// # Safety
/// `budget` must be NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_budget_on_attempt_connected(
    budget: *mut TidegateBudget,
    now_us: u64,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(budget, |b| {
            b.engine
                .on_attempt_connected(Instant::from_micros(now_us))
                .map_err(status_of_budget_error)
        })
    }
}

/// An attempt started with `tidegate_budget_try_start_attempt` failed with `errno_value` (the
/// `errno` of `connect`, `socket` or `SO_ERROR`); a resource error (the errnos of
/// `TIDEGATE_ERROR_CLASS_RESOURCE_EXHAUSTED`) makes the budget back off.
///
/// # Safety
/// `budget` must be NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_budget_on_attempt_failed(
    budget: *mut TidegateBudget,
    now_us: u64,
    errno_value: i32,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(budget, |b| {
            b.engine
                .on_attempt_failed(Instant::from_micros(now_us), classify_errno(errno_value))
                .map_err(status_of_budget_error)
        })
    }
}

/// An attempt started with `tidegate_budget_try_start_attempt` was abandoned by the host.
///
/// # Safety
/// `budget` must be NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_budget_on_attempt_cancelled(
    budget: *mut TidegateBudget,
    now_us: u64,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(budget, |b| {
            b.engine
                .on_attempt_cancelled(Instant::from_micros(now_us))
                .map_err(status_of_budget_error)
        })
    }
}

/// Counts a connection that did not go through an attempt (an accepted socket), or refuses it
/// at once with `TIDEGATE_STATUS_NO_BUDGET_CONNECTIONS`.
///
/// # Safety
/// `budget` must be NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_budget_try_open_connection(
    budget: *mut TidegateBudget,
    now_us: u64,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(budget, |b| {
            b.engine
                .try_open_connection(Instant::from_micros(now_us))
                .map_err(status_of_refusal)
        })
    }
}

/// An open connection closed (a race's winner, or one counted by
/// `tidegate_budget_try_open_connection`). Returns `TIDEGATE_STATUS_BUDGET_NO_OPEN_CONNECTION`
/// if none is counted. Poll races waiting for budget afterwards.
///
/// # Safety
/// `budget` must be NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_budget_on_connection_closed(
    budget: *mut TidegateBudget,
    now_us: u64,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(budget, |b| {
            b.engine
                .on_connection_closed(Instant::from_micros(now_us))
                .map_err(status_of_budget_error)
        })
    }
}

/// The OS reported a resource shortage outside an attempt (`accept` failing with `EMFILE`, a
/// flow refused with `ENOSPC`): the budget backs off as for a failed attempt.
///
/// # Safety
/// `budget` must be NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_budget_on_resource_error(
    budget: *mut TidegateBudget,
    now_us: u64,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(budget, |b| {
            b.engine.on_resource_error(Instant::from_micros(now_us));
            Ok(())
        })
    }
}

/// Writes to `*out_deadline_us` when the next recovery step is due, or `UINT64_MAX` when the
/// budget is not backing off.
///
/// # Safety
/// `budget` must be NULL or a live handle; `out_deadline_us` must be NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_budget_poll_timeout(
    budget: *const TidegateBudget,
    out_deadline_us: *mut u64,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call(budget, |b| {
            let deadline = b.engine.poll_timeout().unwrap_or(Instant::MAX);
            write_out(out_deadline_us, deadline.as_micros())
        })
    }
}

/// Applies the recovery steps due at `now_us`. Idempotent. Poll races waiting for budget
/// afterwards.
///
/// # Safety
/// `budget` must be NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_budget_handle_timeout(
    budget: *mut TidegateBudget,
    now_us: u64,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(budget, |b| {
            b.engine.handle_timeout(Instant::from_micros(now_us));
            Ok(())
        })
    }
}

/// Writes the budget's limits and usage now to `*out_levels`.
///
/// # Safety
/// `budget` must be NULL or a live handle; `out_levels` must be NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_budget_levels(
    budget: *const TidegateBudget,
    out_levels: *mut TidegateBudgetLevels,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call(budget, |b| {
            let e = &b.engine;
            let levels = TidegateBudgetLevels {
                attempts_in_flight: e.attempts_in_flight(),
                open_connections: e.open_connections(),
                attempt_limit: e.attempt_limit(),
                connection_limit: e.connection_limit(),
                backing_off: e.is_backing_off(),
                reserved: [0; 7],
            };
            write_out(out_levels, levels)
        })
    }
}

/// Writes a snapshot of the budget's counters to `*out_stats`.
///
/// # Safety
/// `budget` must be NULL or a live handle; `out_stats` must be NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_budget_stats(
    budget: *const TidegateBudget,
    out_stats: *mut TidegateBudgetStats,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe { call(budget, |b| write_out(out_stats, b.engine.stats().into())) }
}

pub(crate) fn status_of_refusal(refusal: BudgetRefusal) -> TidegateStatus {
    match refusal {
        BudgetRefusal::AttemptsInFlight { .. } => TidegateStatus::NoBudgetAttempts,
        BudgetRefusal::Connections { .. } => TidegateStatus::NoBudgetConnections,
    }
}

pub(crate) fn status_of_budget_error(error: BudgetError) -> TidegateStatus {
    match error {
        BudgetError::NoAttemptInFlight => TidegateStatus::BudgetNoAttemptInFlight,
        BudgetError::NoOpenConnection => TidegateStatus::BudgetNoOpenConnection,
    }
}

impl From<BudgetConfig> for TidegateBudgetConfig {
    fn from(c: BudgetConfig) -> Self {
        TidegateBudgetConfig {
            max_attempts_in_flight: c.max_attempts_in_flight,
            max_open_connections: c.max_open_connections,
            fd_limit: c.fd_limit,
            fd_reserve: u32::try_from(c.fd_reserve).unwrap_or(u32::MAX),
            backoff_floor: c.backoff_floor,
            recovery_interval_us: c.recovery_interval_micros,
        }
    }
}

impl From<TidegateBudgetConfig> for BudgetConfig {
    fn from(c: TidegateBudgetConfig) -> Self {
        BudgetConfig {
            max_attempts_in_flight: c.max_attempts_in_flight,
            max_open_connections: c.max_open_connections,
            fd_limit: c.fd_limit,
            fd_reserve: u64::from(c.fd_reserve),
            backoff_floor: c.backoff_floor,
            recovery_interval_micros: c.recovery_interval_us,
        }
    }
}

/// Force a panic inside the boundary of `budget` alone (not during a race call), to test that
/// the panic is caught and the handle poisoned. Not part of the C API.
///
/// # Safety
/// As for any mutating call: `budget` must be NULL or a live handle.
#[doc(hidden)]
#[cfg(any(test, feature = "testing"))]
pub unsafe fn testing_panic_inside_budget_only(budget: *mut TidegateBudget) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(budget, |_| -> Result<(), TidegateStatus> {
            panic!("forced panic for testing the C boundary")
        })
    }
}
