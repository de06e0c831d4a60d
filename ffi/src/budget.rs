//! C ABI of the connection budget: `TidegateBudget`.

use core::mem::size_of;
use std::cell::Cell;

use tidegate_core::{
    BudgetConfig, BudgetConfigError, BudgetError, BudgetRefusal, BudgetStats, ConnectionBudget,
    Instant, classify_errno,
};

use crate::boundary::{Handle, call, call_free, call_mut, require_non_null, write_out};
use crate::status::TidegateStatus;

/// The connection budget shared by every race and every flow of the process: at most
/// `max_attempts_in_flight` connects in flight, at most `connection_limit` descriptors in use by
/// attempts and open connections, lowered for a while after resource errors (`EMFILE`,
/// `ENOSPC`, `ENOMEM`, `ENOBUFS`) and recovered step by step.
///
/// Back-off rule: a resource error halves both limits (not below `backoff_floor`; errors within
/// a quarter of `recovery_interval_micros` of the last halving count as the same burst); after
/// each quiet `recovery_interval_micros` both grow by one eighth of their configured value.
///
/// Thread safety: not safe for concurrent use. Calls on one handle must not overlap (use one
/// serial dispatch queue, or a lock of your own); moving the handle between threads is fine.
pub struct TidegateBudget {
    poison: Cell<bool>,
    pub(crate) engine: ConnectionBudget,
}

impl Handle for TidegateBudget {
    fn poison(&self) -> &Cell<bool> {
        &self.poison
    }
}

/// Configuration of a `TidegateBudget`. Start from `tidegate_budget_config_default()`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TidegateBudgetConfig {
    /// Most connection attempts in flight at once (default 64).
    pub max_attempts_in_flight: u32,
    /// Most descriptors in use by attempts plus open connections (default 400, below the ~500
    /// active flows where NECP starts failing and Network framework's 512 flows per process).
    pub max_open_connections: u32,
    /// The process's `RLIMIT_NOFILE` soft limit (default 256, the macOS GUI default); see also
    /// `tidegate_budget_set_fd_limit`.
    pub fd_limit: u64,
    /// Descriptors kept for the host itself (default 32; never more than half of `fd_limit`).
    pub fd_reserve: u64,
    /// The lowest value back-off pushes each limit to (default 8).
    pub backoff_floor: u32,
    /// Quiet time before each recovery step, in microseconds (default 1 s).
    pub recovery_interval_micros: u64,
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
}

/// The default configuration: 64 attempts in flight, 400 connections, `RLIMIT_NOFILE` 256 with 32
/// descriptors reserved (so 224 connections until `tidegate_budget_set_fd_limit`), back-off floor
/// 8, recovery step every second.
#[unsafe(no_mangle)]
pub extern "C" fn tidegate_budget_config_default() -> TidegateBudgetConfig {
    TidegateBudgetConfig::from(BudgetConfig::default())
}

/// Creates a budget with `config` and writes its handle to `*out_budget`. The handle is the only
/// allocation (`sizeof` a few dozen bytes); nothing is allocated afterwards.
///
/// Returns `TIDEGATE_STATUS_CONFIG_BUDGET_ZERO_LIMIT` or
/// `TIDEGATE_STATUS_CONFIG_BUDGET_ZERO_RECOVERY_INTERVAL` for an invalid configuration.
///
/// # Safety
/// `config` must be NULL or point to a valid `TidegateBudgetConfig`; `out_budget` must be NULL or
/// valid for writing a pointer. Free the handle with `tidegate_budget_free`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_budget_new(
    config: *const TidegateBudgetConfig,
    out_budget: *mut *mut TidegateBudget,
) -> TidegateStatus {
    call_free(|| {
        // SAFETY: `config` is NULL or valid by the caller's contract.
        let config = unsafe { config.as_ref() }.ok_or(TidegateStatus::NullArgument)?;
        require_non_null([out_budget.cast_const().cast()])?;
        let engine = ConnectionBudget::new(BudgetConfig::from(*config)).map_err(|e| match e {
            BudgetConfigError::ZeroLimit => TidegateStatus::ConfigBudgetZeroLimit,
            BudgetConfigError::ZeroRecoveryInterval => {
                TidegateStatus::ConfigBudgetZeroRecoveryInterval
            }
        })?;
        let handle = Box::new(TidegateBudget {
            poison: Cell::new(false),
            engine,
        });
        // SAFETY: `out_budget` was checked non-NULL and is valid by the caller's contract.
        unsafe { write_out(out_budget, Box::into_raw(handle)) }
    })
}

/// Frees a budget. `NULL` is a no-op. Works on a poisoned handle too. Free every race that uses
/// the budget first.
///
/// # Safety
/// `budget` must be NULL or a handle from `tidegate_budget_new` that was not freed yet, with no
/// other call on it running.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_budget_free(budget: *mut TidegateBudget) {
    if budget.is_null() {
        return;
    }
    // SAFETY: a non-NULL `budget` came from `Box::into_raw` in `tidegate_budget_new` and is freed
    // once, by the caller's contract.
    let handle = unsafe { Box::from_raw(budget) };
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(handle)));
}

/// The bytes `tidegate_budget_new` allocates: the handle, nothing else.
#[unsafe(no_mangle)]
pub extern "C" fn tidegate_budget_footprint() -> usize {
    size_of::<TidegateBudget>()
}

/// Gives the budget the process's real descriptor limit (`getrlimit(RLIMIT_NOFILE)`, soft
/// value; `RLIM_INFINITY` is fine). The connection limit becomes the smaller of
/// `max_open_connections` and `rlimit_nofile` minus the reserve.
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
            b.engine.set_fd_limit(rlimit_nofile);
            Ok(())
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
/// `errno` of `connect`, `socket` or `SO_ERROR`); a resource error (`EMFILE`, `ENFILE`,
/// `ENOSPC`, `ENOMEM`, `ENOBUFS`, `EAGAIN`, `EADDRNOTAVAIL`) makes the budget back off.
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
    out_stats: *mut BudgetStats,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe { call(budget, |b| write_out(out_stats, b.engine.stats())) }
}

pub(crate) fn status_of_refusal(refusal: BudgetRefusal) -> TidegateStatus {
    match refusal {
        BudgetRefusal::AttemptsInFlight { .. } => TidegateStatus::NoBudgetAttempts,
        BudgetRefusal::Connections { .. } => TidegateStatus::NoBudgetConnections,
    }
}

fn status_of_budget_error(error: BudgetError) -> TidegateStatus {
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
            fd_reserve: c.fd_reserve,
            backoff_floor: c.backoff_floor,
            recovery_interval_micros: c.recovery_interval_micros,
        }
    }
}

impl From<TidegateBudgetConfig> for BudgetConfig {
    fn from(c: TidegateBudgetConfig) -> Self {
        BudgetConfig {
            max_attempts_in_flight: c.max_attempts_in_flight,
            max_open_connections: c.max_open_connections,
            fd_limit: c.fd_limit,
            fd_reserve: c.fd_reserve,
            backoff_floor: c.backoff_floor,
            recovery_interval_micros: c.recovery_interval_micros,
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
