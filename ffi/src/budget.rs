//! C types of the proxy engine's connection budget: its configuration and counters.

use tidegate_core::{BudgetConfig, BudgetConfigError, BudgetError, BudgetRefusal, BudgetStats};

use crate::status::TidegateStatus;

/// Configuration of the connection budget (the `budget` field of `TidegateProxyConfig`);
/// `tidegate_proxy_new` refuses what it cannot honour (a zero limit, a reserve above half the
/// descriptors).
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
    /// also `tidegate_proxy_set_fd_limit`.
    pub fd_limit: u64,
    /// Descriptors kept for the host itself (default 32; at most half of `fd_limit`).
    pub fd_reserve: u32,
    /// The lowest value back-off pushes each limit to (default 8; not 0).
    pub backoff_floor: u32,
    /// Quiet time before each recovery step, in microseconds (default 1 s; not 0).
    pub recovery_interval_us: u64,
}

/// A snapshot of the budget's counters (the `budget` field of `TidegateProxyStats`). Counters
/// saturate.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TidegateBudgetStats {
    /// Attempts the budget allowed to start.
    pub attempts_started: u64,
    /// Attempt requests refused.
    pub attempts_refused: u64,
    /// Connection requests outside an attempt (`tidegate_proxy_try_open_connection`) refused.
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

pub(crate) fn status_of_budget_config(error: BudgetConfigError) -> TidegateStatus {
    match error {
        BudgetConfigError::ZeroLimit => TidegateStatus::ConfigBudgetZeroLimit,
        BudgetConfigError::ReserveAboveHalf => TidegateStatus::ConfigBudgetReserveTooLarge,
        BudgetConfigError::ZeroRecoveryInterval => TidegateStatus::ConfigBudgetZeroRecoveryInterval,
        // A refusal added to the core later still refuses, with the generic status.
        _ => TidegateStatus::InvalidArgument,
    }
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
        // A refusal added to the core later still refuses, with the generic status.
        _ => TidegateStatus::InvalidArgument,
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
