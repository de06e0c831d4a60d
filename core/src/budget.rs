//! The connection budget: how many connection attempts and open connections the host may have.
//!
//! Every connection a host opens through BSD sockets costs a file descriptor (a GUI process on
//! macOS starts with `RLIMIT_NOFILE` = 256) and an NECP flow (trouble starts around 500 active
//! flows, with hard-to-explain `ENOSPC`; Network framework caps a process at 512 flows). Past
//! those limits connections do not fail cleanly: they hang in "waiting". [`ConnectionBudget`]
//! keeps the host below the limits and refuses early, with a [`BudgetRefusal`] that says which
//! limit was hit, instead of letting a connection hang.
//!
//! One budget is shared by every Happy Eyeballs race and every flow of the process.
//!
//! ## What is counted
//!
//! - **Attempts in flight**: connects started and not yet connected, failed or cancelled. They
//!   are capped by [`BudgetConfig::max_attempts_in_flight`] so that a burst of new flows cannot
//!   turn into a storm of SYNs and half-open descriptors.
//! - **Descriptors in use**: attempts in flight plus open connections. Each holds a descriptor
//!   and a flow, so both count against the connection limit: the smaller of
//!   [`BudgetConfig::max_open_connections`] and the descriptor limit minus a reserve for the
//!   host's own files (see [`ConnectionBudget::set_fd_limit`]).
//!
//! ## Back-off after resource errors
//!
//! When the OS reports that it ran out of a resource ([`ErrorClass::ResourceExhausted`], the one
//! list of such errnos: `EMFILE`, `ENFILE`, `ENOSPC`, `ENOMEM`, `ENOBUFS`, `EADDRNOTAVAIL`, `EAGAIN`), the real limit is lower than the budget
//! thought. The budget then lowers its effective limits (multiplicative decrease, additive
//! increase, as TCP does for its window):
//!
//! 1. On a resource error both effective limits are halved, but never below
//!    [`BudgetConfig::backoff_floor`] (or the configured limit, if that is smaller). Errors that
//!    arrive within a quarter of [`BudgetConfig::recovery_interval_micros`] of the last halving
//!    (250 ms by default) belong to the same burst (many attempts failing together) and do not
//!    halve again.
//! 2. Every resource error restarts the recovery clock.
//! 3. After each full recovery interval without a resource error, each effective limit grows
//!    by one eighth of its configured value (at least 1) until it is back at the configured
//!    value. From the floor, the budget is fully recovered after at most eight quiet intervals.
//!
//! Connections already open when the limit drops are not touched: the budget only refuses new
//! ones until usage falls below the lowered limit.
//!
//! ## Drain contract
//!
//! The budget has no output queue. Its only timer is the recovery step: when
//! [`ConnectionBudget::poll_timeout`] passes, call [`ConnectionBudget::handle_timeout`]; after
//! that (and after any call that releases budget) poll the races that were waiting for budget.

use core::fmt;

use crate::error_class::ErrorClass;
use crate::fmt::{log_debug, log_warn};
use crate::memory::Pressure;
use crate::time::{Clock, Instant};

/// Limits and back-off parameters of a [`ConnectionBudget`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct BudgetConfig {
    /// Most connection attempts in flight at once, across every race and flow. Default 64: a
    /// quarter of the GUI default descriptor limit, so a burst of new flows cannot take most
    /// descriptors with half-open sockets, yet enough for dozens of concurrent races.
    pub max_attempts_in_flight: u32,
    /// Most descriptors in use by connections (attempts in flight plus open connections).
    /// Default 400: below the ~500 active flows where NECP starts failing with `ENOSPC` and
    /// below Network framework's 512 flows per process, with room for the host's other flows.
    pub max_open_connections: u32,
    /// The process's descriptor limit (`RLIMIT_NOFILE`, soft value). Default 256, the default of
    /// a macOS GUI process; give the real value with [`ConnectionBudget::set_fd_limit`].
    pub fd_limit: u64,
    /// Descriptors kept back for the host itself (stdio, kqueue, the tunnel, logs, files).
    /// Default 32. At most half of `fd_limit` ([`ConnectionBudget::new`] refuses more); when
    /// [`ConnectionBudget::set_fd_limit`] later lowers the limit, at most half of the new limit
    /// is kept back.
    pub fd_reserve: u64,
    /// The lowest value back-off may push each effective limit to. Default 8, so a host under
    /// pressure still makes progress.
    pub backoff_floor: u32,
    /// Quiet time after the last resource error before each recovery step, in microseconds.
    /// Default 1 s.
    pub recovery_interval_micros: u64,
}

impl BudgetConfig {
    /// Default [`BudgetConfig::max_attempts_in_flight`].
    pub const DEFAULT_MAX_ATTEMPTS_IN_FLIGHT: u32 = 64;
    /// Default [`BudgetConfig::max_open_connections`].
    pub const DEFAULT_MAX_OPEN_CONNECTIONS: u32 = 400;
    /// Default [`BudgetConfig::fd_limit`]: the macOS GUI default `RLIMIT_NOFILE`.
    pub const DEFAULT_FD_LIMIT: u64 = 256;
    /// Default [`BudgetConfig::fd_reserve`].
    pub const DEFAULT_FD_RESERVE: u64 = 32;
    /// Default [`BudgetConfig::backoff_floor`].
    pub const DEFAULT_BACKOFF_FLOOR: u32 = 8;
    /// Default [`BudgetConfig::recovery_interval_micros`]: 1 s.
    pub const DEFAULT_RECOVERY_INTERVAL_MICROS: u64 = 1_000_000;
}

impl BudgetConfig {
    /// Check the configuration: [`ConnectionBudget::new`] refuses what this refuses.
    pub const fn validate(&self) -> Result<(), BudgetConfigError> {
        if self.max_attempts_in_flight == 0
            || self.max_open_connections == 0
            || self.fd_limit == 0
            || self.backoff_floor == 0
        {
            return Err(BudgetConfigError::ZeroLimit);
        }
        if self.fd_reserve > self.fd_limit / 2 {
            return Err(BudgetConfigError::ReserveAboveHalf);
        }
        if self.recovery_interval_micros == 0 {
            return Err(BudgetConfigError::ZeroRecoveryInterval);
        }
        Ok(())
    }

    /// The documented defaults. Build a configuration as
    /// `BudgetConfig { field: value, ..BudgetConfig::DEFAULT }`, so that a field added later
    /// keeps its default without breaking the caller.
    pub const DEFAULT: BudgetConfig = BudgetConfig {
        max_attempts_in_flight: Self::DEFAULT_MAX_ATTEMPTS_IN_FLIGHT,
        max_open_connections: Self::DEFAULT_MAX_OPEN_CONNECTIONS,
        fd_limit: Self::DEFAULT_FD_LIMIT,
        fd_reserve: Self::DEFAULT_FD_RESERVE,
        backoff_floor: Self::DEFAULT_BACKOFF_FLOOR,
        recovery_interval_micros: Self::DEFAULT_RECOVERY_INTERVAL_MICROS,
    };
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Why a [`BudgetConfig`] was rejected by [`ConnectionBudget::new`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum BudgetConfigError {
    /// `max_attempts_in_flight`, `max_open_connections`, `fd_limit` or `backoff_floor` is zero:
    /// nothing could ever connect (for the floor: once backed off).
    ZeroLimit,
    /// `fd_reserve` is more than half of `fd_limit`.
    ReserveAboveHalf,
    /// `recovery_interval_micros` is zero: back-off would recover in no time at all.
    ZeroRecoveryInterval,
}

impl fmt::Display for BudgetConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BudgetConfigError::ZeroLimit => "connection budget limits must be at least 1",
            BudgetConfigError::ReserveAboveHalf => {
                "connection budget fd_reserve must be at most half of fd_limit"
            }
            BudgetConfigError::ZeroRecoveryInterval => {
                "connection budget recovery interval must not be zero"
            }
        })
    }
}

/// Why the budget refused a new attempt or connection. The refusal is immediate: nothing is
/// counted and nothing waits inside the budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum BudgetRefusal {
    /// As many connection attempts as allowed are already in flight.
    AttemptsInFlight {
        /// Attempts in flight now.
        in_flight: u32,
        /// The effective limit.
        limit: u32,
        /// Whether the limit is lowered below its configured value after resource errors.
        backing_off: bool,
    },
    /// As many descriptors as allowed are in use by attempts and open connections.
    Connections {
        /// Attempts in flight plus open connections now.
        in_use: u32,
        /// The effective limit.
        limit: u32,
        /// Whether the limit is lowered below its configured value after resource errors.
        backing_off: bool,
    },
}

impl fmt::Display for BudgetRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (what, count, limit, backing_off) = match *self {
            BudgetRefusal::AttemptsInFlight {
                in_flight,
                limit,
                backing_off,
            } => (
                "connection attempts in flight",
                in_flight,
                limit,
                backing_off,
            ),
            BudgetRefusal::Connections {
                in_use,
                limit,
                backing_off,
            } => ("connections open or connecting", in_use, limit, backing_off),
        };
        write!(f, "no connection budget: {count} {what}, limit {limit}")?;
        if backing_off {
            f.write_str(" (lowered after resource errors)")?;
        }
        Ok(())
    }
}

/// A release that the budget had nothing to release for: the host reported more endings than
/// starts. The counters are left unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum BudgetError {
    /// No attempt is in flight, so none can connect, fail or be cancelled.
    NoAttemptInFlight,
    /// No connection is open, so none can close.
    NoOpenConnection,
}

impl fmt::Display for BudgetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BudgetError::NoAttemptInFlight => "no connection attempt is in flight",
            BudgetError::NoOpenConnection => "no connection is open",
        })
    }
}

/// Counters a host can export to see how the budget behaves. They saturate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct BudgetStats {
    /// Attempts the budget allowed to start.
    pub attempts_started: u64,
    /// Attempt requests refused.
    pub attempts_refused: u64,
    /// Non-raced connection requests ([`ConnectionBudget::try_open_connection`]) refused.
    pub connections_refused: u64,
    /// Resource-exhausted errors reported.
    pub resource_errors: u64,
    /// Times the effective limits were halved.
    pub backoffs: u64,
    /// Releases reported with nothing to release (a host bookkeeping bug).
    pub unbalanced_releases: u64,
}

/// Connection budget shared by every race and every flow of the process.
///
/// Not safe for concurrent use (it holds no lock); moving it between threads is fine.
#[derive(Clone, Debug)]
pub struct ConnectionBudget {
    config: BudgetConfig,
    clock: Clock,
    attempts_in_flight: u32,
    open_connections: u32,
    attempt_limit: u32,
    connection_limit: u32,
    last_decrease: Option<Instant>,
    recovery_due: Option<Instant>,
    /// Memory pressure: attempts are limited to the back-off limit scaled by it.
    pressure: Pressure,
    stats: BudgetStats,
}

impl ConnectionBudget {
    /// A budget with `config`'s limits, nothing in use and no back-off.
    pub fn new(config: BudgetConfig) -> Result<Self, BudgetConfigError> {
        config.validate()?;
        let mut budget = ConnectionBudget {
            config,
            clock: Clock::default(),
            attempts_in_flight: 0,
            open_connections: 0,
            attempt_limit: 0,
            connection_limit: 0,
            last_decrease: None,
            recovery_due: None,
            pressure: Pressure::Normal,
            stats: BudgetStats::default(),
        };
        budget.attempt_limit = budget.attempt_ceiling();
        budget.connection_limit = budget.connection_ceiling();
        Ok(budget)
    }

    /// Tell the budget the process's real descriptor limit (`getrlimit(RLIMIT_NOFILE)`, soft
    /// value; `RLIM_INFINITY` is fine). The connection limit becomes the smaller of
    /// `max_open_connections` and `rlimit_nofile` minus the reserve (at most half of it).
    /// A back-off in progress keeps its lowered limits if they are lower.
    ///
    /// A limit of zero is refused with [`BudgetConfigError::ZeroLimit`], changing nothing: no
    /// connection could ever open.
    pub fn set_fd_limit(&mut self, rlimit_nofile: u64) -> Result<(), BudgetConfigError> {
        if rlimit_nofile == 0 {
            return Err(BudgetConfigError::ZeroLimit);
        }
        let was_backing_off = self.is_backing_off();
        self.config.fd_limit = rlimit_nofile;
        let attempt_ceiling = self.attempt_ceiling();
        let connection_ceiling = self.connection_ceiling();
        if was_backing_off {
            self.attempt_limit = self.attempt_limit.min(attempt_ceiling);
            self.connection_limit = self.connection_limit.min(connection_ceiling);
        } else {
            self.attempt_limit = attempt_ceiling;
            self.connection_limit = connection_ceiling;
        }
        if !self.is_backing_off() {
            self.recovery_due = None;
        }
        log_debug!(
            "budget: fd limit {}, connection limit {}",
            rlimit_nofile,
            self.connection_limit
        );
        Ok(())
    }

    /// Whether [`ConnectionBudget::try_start_attempt`] would succeed now.
    pub fn can_start_attempt(&self) -> bool {
        self.attempt_refusal().is_none()
    }

    /// Why [`ConnectionBudget::try_start_attempt`] would refuse now, or `None` if it would
    /// succeed: which limit is reached, with the counts. Recovery steps due since the last call
    /// that took `now` are not applied; call [`ConnectionBudget::handle_timeout`] first.
    pub fn refusal(&self) -> Option<BudgetRefusal> {
        self.attempt_refusal()
    }

    /// Count a new connection attempt, or refuse it at once if an attempt limit or the
    /// connection limit is reached. On success the host must later report exactly one of
    /// [`on_attempt_connected`](Self::on_attempt_connected),
    /// [`on_attempt_failed`](Self::on_attempt_failed) or
    /// [`on_attempt_cancelled`](Self::on_attempt_cancelled).
    pub fn try_start_attempt(&mut self, now: Instant) -> Result<(), BudgetRefusal> {
        self.advance(now);
        if let Some(refusal) = self.attempt_refusal() {
            self.stats.attempts_refused = self.stats.attempts_refused.saturating_add(1);
            return Err(refusal);
        }
        self.attempts_in_flight = self.attempts_in_flight.saturating_add(1);
        self.stats.attempts_started = self.stats.attempts_started.saturating_add(1);
        Ok(())
    }

    /// An attempt connected: it stops counting as an attempt and counts as an open connection
    /// until [`on_connection_closed`](Self::on_connection_closed).
    pub fn on_attempt_connected(&mut self, now: Instant) -> Result<(), BudgetError> {
        self.advance(now);
        self.end_attempt()?;
        self.open_connections = self.open_connections.saturating_add(1);
        Ok(())
    }

    /// An attempt failed with `class`. Its budget is released; a
    /// [`ErrorClass::ResourceExhausted`] failure also lowers the effective limits (see the
    /// module documentation).
    pub fn on_attempt_failed(
        &mut self,
        now: Instant,
        class: ErrorClass,
    ) -> Result<(), BudgetError> {
        self.advance(now);
        self.end_attempt()?;
        if class.is_resource_exhausted() {
            self.back_off(now);
        }
        Ok(())
    }

    /// An attempt was cancelled (a race loser, or the race was aborted); its budget is released.
    pub fn on_attempt_cancelled(&mut self, now: Instant) -> Result<(), BudgetError> {
        self.advance(now);
        self.end_attempt()
    }

    /// Count a connection that did not go through an attempt (an accepted socket, a connection
    /// adopted from elsewhere), or refuse it at once if the connection limit is reached.
    pub fn try_open_connection(&mut self, now: Instant) -> Result<(), BudgetRefusal> {
        self.advance(now);
        if let Some(refusal) = self.connection_refusal() {
            self.stats.connections_refused = self.stats.connections_refused.saturating_add(1);
            return Err(refusal);
        }
        self.open_connections = self.open_connections.saturating_add(1);
        Ok(())
    }

    /// An open connection closed; its budget is released.
    pub fn on_connection_closed(&mut self, now: Instant) -> Result<(), BudgetError> {
        self.advance(now);
        if self.open_connections == 0 {
            self.stats.unbalanced_releases = self.stats.unbalanced_releases.saturating_add(1);
            log_warn!("budget: connection closed but none is open");
            return Err(BudgetError::NoOpenConnection);
        }
        self.open_connections -= 1;
        Ok(())
    }

    /// The OS reported a resource shortage outside an attempt (`accept` or `socket` failing with
    /// `EMFILE`, a flow refused with `ENOSPC`): lower the effective limits as for a failed
    /// attempt.
    pub fn on_resource_error(&mut self, now: Instant) {
        self.advance(now);
        self.back_off(now);
    }

    /// Apply memory pressure `level`: the attempt limit becomes the back-off limit scaled by
    /// [`Pressure::scale`] (half when elevated, a quarter when critical, at least 1), so fewer
    /// connections are set up at once while memory is short. Attempts already in flight are not
    /// touched. The limit grows back when pressure falls.
    pub fn on_pressure(&mut self, now: Instant, level: Pressure) {
        self.advance(now);
        self.pressure = level;
    }

    /// When the next recovery step is due, or `None` when the budget is not backing off.
    #[must_use = "arm a timer for this instant"]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.recovery_due
    }

    /// Apply the recovery steps due at `now`. Idempotent.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
    }

    /// Attempts in flight now.
    pub fn attempts_in_flight(&self) -> u32 {
        self.attempts_in_flight
    }

    /// Connections open now (not counting attempts in flight).
    pub fn open_connections(&self) -> u32 {
        self.open_connections
    }

    /// The effective limit on attempts in flight (lowered while backing off, and under memory
    /// pressure).
    pub fn attempt_limit(&self) -> u32 {
        self.pressure.scale_u32(self.attempt_limit)
    }

    /// The effective limit on attempts in flight plus open connections (lowered while backing
    /// off).
    pub fn connection_limit(&self) -> u32 {
        self.connection_limit
    }

    /// Whether an effective limit is below its configured value after resource errors.
    pub fn is_backing_off(&self) -> bool {
        self.attempt_limit < self.attempt_ceiling()
            || self.connection_limit < self.connection_ceiling()
    }

    /// The configuration in force (with the descriptor limit given by `set_fd_limit`).
    pub fn config(&self) -> &BudgetConfig {
        &self.config
    }

    /// Counters since the budget was built.
    pub fn stats(&self) -> BudgetStats {
        self.stats
    }

    /// The configured attempt limit (no back-off).
    fn attempt_ceiling(&self) -> u32 {
        self.config.max_attempts_in_flight
    }

    /// The configured connection limit: `max_open_connections` capped by the descriptors left
    /// after the host's reserve, which is never more than half the descriptor limit.
    fn connection_ceiling(&self) -> u32 {
        let fd_limit = self.config.fd_limit;
        let reserve = self.config.fd_reserve.min(fd_limit / 2);
        let usable = u32::try_from(fd_limit - reserve).unwrap_or(u32::MAX);
        self.config.max_open_connections.min(usable)
    }

    fn in_use(&self) -> u32 {
        self.attempts_in_flight
            .saturating_add(self.open_connections)
    }

    fn attempt_refusal(&self) -> Option<BudgetRefusal> {
        let backing_off = self.is_backing_off();
        let limit = self.attempt_limit();
        if self.attempts_in_flight >= limit {
            return Some(BudgetRefusal::AttemptsInFlight {
                in_flight: self.attempts_in_flight,
                limit,
                backing_off,
            });
        }
        self.connection_refusal()
    }

    fn connection_refusal(&self) -> Option<BudgetRefusal> {
        if self.in_use() >= self.connection_limit {
            return Some(BudgetRefusal::Connections {
                in_use: self.in_use(),
                limit: self.connection_limit,
                backing_off: self.is_backing_off(),
            });
        }
        None
    }

    fn end_attempt(&mut self) -> Result<(), BudgetError> {
        if self.attempts_in_flight == 0 {
            self.stats.unbalanced_releases = self.stats.unbalanced_releases.saturating_add(1);
            log_warn!("budget: attempt ended but none is in flight");
            return Err(BudgetError::NoAttemptInFlight);
        }
        self.attempts_in_flight -= 1;
        Ok(())
    }

    /// Observe `now` and apply every recovery step due by then, in O(1).
    fn advance(&mut self, now: Instant) {
        let now = self.clock.observe(now);
        let Some(due) = self.recovery_due else {
            return;
        };
        if now < due {
            return;
        }
        let interval = self.config.recovery_interval_micros;
        // The configuration refuses a zero interval; were it 0, every step would be due.
        debug_assert!(interval > 0, "validated non-zero");
        let steps = now
            .micros_since(due)
            .checked_div(interval)
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let attempt_ceiling = self.attempt_ceiling();
        let connection_ceiling = self.connection_ceiling();
        self.attempt_limit = grow(self.attempt_limit, attempt_ceiling, steps);
        self.connection_limit = grow(self.connection_limit, connection_ceiling, steps);
        if self.is_backing_off() {
            self.recovery_due = Some(due.saturating_add_micros(steps.saturating_mul(interval)));
        } else {
            self.recovery_due = None;
            log_debug!("budget: recovered from back-off");
        }
    }

    /// Halve the effective limits (once per burst) and restart the recovery clock.
    fn back_off(&mut self, now: Instant) {
        let now = self.clock.observe(now);
        self.stats.resource_errors = self.stats.resource_errors.saturating_add(1);
        let interval = self.config.recovery_interval_micros;
        let same_burst = self
            .last_decrease
            .is_some_and(|last| now.micros_since(last) < interval / 4);
        if !same_burst {
            let floor = self.config.backoff_floor;
            self.attempt_limit = halve(self.attempt_limit, floor.min(self.attempt_ceiling()));
            self.connection_limit =
                halve(self.connection_limit, floor.min(self.connection_ceiling()));
            self.last_decrease = Some(now);
            self.stats.backoffs = self.stats.backoffs.saturating_add(1);
            log_warn!(
                "budget: resource exhausted, limits lowered to {} attempts, {} connections",
                self.attempt_limit,
                self.connection_limit
            );
        }
        self.recovery_due = if self.is_backing_off() {
            Some(now.saturating_add_micros(interval))
        } else {
            None
        };
    }
}

/// `limit` halved, but not below `floor` (and never raised by the halving).
fn halve(limit: u32, floor: u32) -> u32 {
    (limit / 2).max(floor).min(limit)
}

/// `limit` after `steps` recovery steps of one eighth of `ceiling` (at least 1), capped at
/// `ceiling`.
fn grow(limit: u32, ceiling: u32, steps: u64) -> u32 {
    let step = u64::from((ceiling / 8).max(1));
    let grown = u64::from(limit).saturating_add(step.saturating_mul(steps));
    u32::try_from(grown.min(u64::from(ceiling))).unwrap_or(ceiling)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(millis: u64) -> Instant {
        Instant::from_millis(millis)
    }

    #[test]
    fn memory_pressure_starts_fewer_attempts_and_relief_restores_them() {
        let mut b = small(8, 100);
        b.on_pressure(ms(0), Pressure::Critical);
        assert_eq!(b.attempt_limit(), 2);
        b.try_start_attempt(ms(1)).unwrap();
        b.try_start_attempt(ms(1)).unwrap();
        assert_eq!(
            b.try_start_attempt(ms(1)),
            Err(BudgetRefusal::AttemptsInFlight {
                in_flight: 2,
                limit: 2,
                backing_off: false
            })
        );
        b.on_pressure(ms(2), Pressure::Elevated);
        assert_eq!(b.attempt_limit(), 4);
        b.try_start_attempt(ms(3)).unwrap();
        b.on_pressure(ms(4), Pressure::Normal);
        assert_eq!(b.attempt_limit(), 8);
        // Under back-off and pressure both, the smaller limit is scaled.
        b.on_resource_error(ms(5));
        b.on_pressure(ms(6), Pressure::Critical);
        assert_eq!(b.attempt_limit(), 1);
    }

    fn small(attempts: u32, open: u32) -> ConnectionBudget {
        ConnectionBudget::new(BudgetConfig {
            max_attempts_in_flight: attempts,
            max_open_connections: open,
            fd_limit: 10_000,
            backoff_floor: 1,
            ..BudgetConfig::default()
        })
        .unwrap()
    }

    #[test]
    fn defaults_stay_below_platform_limits() {
        let budget = ConnectionBudget::new(BudgetConfig::default()).unwrap();
        assert_eq!(budget.attempt_limit(), 64);
        // 256 descriptors minus 32 reserved for the host.
        assert_eq!(budget.connection_limit(), 224);
        assert!(!budget.is_backing_off());
        assert_eq!(budget.poll_timeout(), None);
    }

    #[test]
    fn fd_limit_sets_connection_limit_with_reserve() {
        let mut budget = ConnectionBudget::new(BudgetConfig::default()).unwrap();
        budget.set_fd_limit(10_240).unwrap();
        assert_eq!(
            budget.connection_limit(),
            400,
            "capped by max_open_connections"
        );
        budget.set_fd_limit(300).unwrap();
        assert_eq!(budget.connection_limit(), 268);
        budget.set_fd_limit(20).unwrap();
        assert_eq!(budget.connection_limit(), 10, "reserve is at most half");
        budget.set_fd_limit(u64::MAX).unwrap();
        assert_eq!(budget.connection_limit(), 400);
        assert_eq!(budget.set_fd_limit(0), Err(BudgetConfigError::ZeroLimit));
        assert_eq!(
            budget.connection_limit(),
            400,
            "a refused limit changes nothing"
        );
        assert!(budget.try_start_attempt(ms(0)).is_ok());
    }

    #[test]
    fn a_config_that_can_never_work_is_refused_not_clamped() {
        let good = BudgetConfig::default();
        for (bad, error) in [
            (
                BudgetConfig {
                    fd_limit: 0,
                    fd_reserve: 0,
                    ..good
                },
                BudgetConfigError::ZeroLimit,
            ),
            (
                BudgetConfig {
                    backoff_floor: 0,
                    ..good
                },
                BudgetConfigError::ZeroLimit,
            ),
            (
                BudgetConfig {
                    fd_limit: 64,
                    fd_reserve: 33,
                    ..good
                },
                BudgetConfigError::ReserveAboveHalf,
            ),
        ] {
            assert_eq!(ConnectionBudget::new(bad).err(), Some(error), "{bad:?}");
        }
        let half = BudgetConfig {
            fd_limit: 64,
            fd_reserve: 32,
            ..good
        };
        assert_eq!(ConnectionBudget::new(half).unwrap().connection_limit(), 32);
    }

    #[test]
    fn config_errors() {
        let zero = BudgetConfig {
            max_attempts_in_flight: 0,
            ..BudgetConfig::default()
        };
        assert_eq!(
            ConnectionBudget::new(zero).unwrap_err(),
            BudgetConfigError::ZeroLimit
        );
        let zero_interval = BudgetConfig {
            recovery_interval_micros: 0,
            ..BudgetConfig::default()
        };
        assert_eq!(
            ConnectionBudget::new(zero_interval).unwrap_err(),
            BudgetConfigError::ZeroRecoveryInterval
        );
    }

    #[test]
    fn refuses_at_once_past_attempt_limit() {
        let mut budget = small(2, 10);
        budget.try_start_attempt(ms(0)).unwrap();
        budget.try_start_attempt(ms(0)).unwrap();
        assert!(!budget.can_start_attempt());
        let refusal = budget.try_start_attempt(ms(0)).unwrap_err();
        assert_eq!(
            refusal,
            BudgetRefusal::AttemptsInFlight {
                in_flight: 2,
                limit: 2,
                backing_off: false
            }
        );
        assert_eq!(
            refusal.to_string(),
            "no connection budget: 2 connection attempts in flight, limit 2"
        );
        assert_eq!(budget.attempts_in_flight(), 2);
        assert_eq!(budget.stats().attempts_refused, 1);
    }

    #[test]
    fn attempts_and_connections_share_the_connection_limit() {
        let mut budget = small(10, 3);
        budget.try_start_attempt(ms(0)).unwrap();
        budget.on_attempt_connected(ms(1)).unwrap();
        budget.try_open_connection(ms(1)).unwrap();
        budget.try_start_attempt(ms(1)).unwrap();
        assert_eq!(
            budget.try_start_attempt(ms(1)),
            Err(BudgetRefusal::Connections {
                in_use: 3,
                limit: 3,
                backing_off: false
            })
        );
        assert!(budget.try_open_connection(ms(1)).is_err());
        budget.on_attempt_cancelled(ms(2)).unwrap();
        budget.on_connection_closed(ms(2)).unwrap();
        assert_eq!(budget.open_connections(), 1);
        assert_eq!(budget.attempts_in_flight(), 0);
    }

    #[test]
    fn unbalanced_release_changes_nothing() {
        let mut budget = small(2, 2);
        assert_eq!(
            budget.on_attempt_cancelled(ms(0)),
            Err(BudgetError::NoAttemptInFlight)
        );
        assert_eq!(
            budget.on_attempt_failed(ms(0), ErrorClass::ResourceExhausted),
            Err(BudgetError::NoAttemptInFlight)
        );
        assert!(!budget.is_backing_off(), "a rejected call changes nothing");
        assert_eq!(
            budget.on_connection_closed(ms(0)),
            Err(BudgetError::NoOpenConnection)
        );
        assert_eq!(budget.stats().unbalanced_releases, 3);
    }

    #[test]
    fn resource_error_halves_once_per_burst_and_recovers_step_by_step() {
        let mut budget = ConnectionBudget::new(BudgetConfig {
            max_attempts_in_flight: 64,
            max_open_connections: 400,
            fd_limit: 256,
            ..BudgetConfig::default()
        })
        .unwrap();
        for _ in 0..3 {
            budget.try_start_attempt(ms(0)).unwrap();
        }
        budget
            .on_attempt_failed(ms(10), ErrorClass::ResourceExhausted)
            .unwrap();
        assert_eq!(budget.attempt_limit(), 32);
        assert_eq!(budget.connection_limit(), 112);
        // Same burst: no second halving, but the recovery clock restarts.
        budget
            .on_attempt_failed(ms(200), ErrorClass::ResourceExhausted)
            .unwrap();
        assert_eq!(budget.connection_limit(), 112);
        assert_eq!(budget.poll_timeout(), Some(ms(1_200)));
        // A new burst halves again.
        budget.on_resource_error(ms(1_100));
        assert_eq!(budget.attempt_limit(), 16);
        assert_eq!(budget.connection_limit(), 56);
        assert_eq!(budget.stats().backoffs, 2);
        assert_eq!(budget.stats().resource_errors, 3);
        // Recovery: +1/8 of the configured value per quiet second.
        budget.handle_timeout(ms(2_099));
        assert_eq!(budget.connection_limit(), 56);
        budget.handle_timeout(ms(2_100));
        assert_eq!(budget.attempt_limit(), 24);
        assert_eq!(budget.connection_limit(), 84);
        budget.handle_timeout(ms(2_100));
        assert_eq!(
            budget.connection_limit(),
            84,
            "handle_timeout is idempotent"
        );
        assert_eq!(budget.poll_timeout(), Some(ms(3_100)));
        budget.handle_timeout(ms(4_100));
        assert_eq!(budget.connection_limit(), 140);
        budget.handle_timeout(ms(60_000));
        assert_eq!(budget.attempt_limit(), 64);
        assert_eq!(budget.connection_limit(), 224);
        assert!(!budget.is_backing_off());
        assert_eq!(budget.poll_timeout(), None);
    }

    #[test]
    fn backoff_stops_at_floor() {
        let mut budget = ConnectionBudget::new(BudgetConfig::default()).unwrap();
        for step in 0..20 {
            budget.on_resource_error(ms(step * 500));
        }
        assert_eq!(budget.attempt_limit(), 8);
        assert_eq!(budget.connection_limit(), 8);
        let mut tiny = small(2, 3);
        tiny.on_resource_error(ms(0));
        tiny.on_resource_error(ms(5_000));
        assert_eq!(tiny.attempt_limit(), 1);
        assert_eq!(tiny.connection_limit(), 1);
    }

    #[test]
    fn other_failures_do_not_back_off() {
        for class in ErrorClass::ALL {
            let mut budget = small(4, 4);
            budget.try_start_attempt(ms(0)).unwrap();
            budget.on_attempt_failed(ms(0), class).unwrap();
            assert_eq!(budget.is_backing_off(), class.is_resource_exhausted());
        }
    }

    #[test]
    fn time_going_backwards_is_clamped() {
        let mut budget = small(4, 4);
        budget.on_resource_error(ms(5_000));
        budget.handle_timeout(ms(1));
        assert_eq!(budget.attempt_limit(), 2);
        budget.handle_timeout(ms(6_000));
        assert_eq!(budget.attempt_limit(), 3);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Start,
        Connect,
        Fail(bool),
        Cancel,
        Open,
        Close,
        ResourceError,
        Wait(u64),
        FdLimit(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => Just(Op::Start),
            2 => Just(Op::Connect),
            2 => any::<bool>().prop_map(Op::Fail),
            1 => Just(Op::Cancel),
            1 => Just(Op::Open),
            2 => Just(Op::Close),
            1 => Just(Op::ResourceError),
            2 => (0u64..3_000_000).prop_map(Op::Wait),
            1 => (0u64..600).prop_map(Op::FdLimit),
        ]
    }

    /// A plain model of the counters: what must be true whatever the back-off does.
    #[derive(Default)]
    struct Model {
        attempts: u32,
        open: u32,
    }

    proptest! {

        #![proptest_config(crate::proptest_config::default_cases())]

        #[test]
        fn counters_match_model_and_never_exceed_limits(
            attempts in 1u32..20,
            open in 1u32..40,
            ops in proptest::collection::vec(op(), 0..crate::proptest_config::ops(200)),
        ) {
            let mut budget = small(attempts, open);
            let mut model = Model::default();
            let mut now = 0u64;
            for op in ops {
                let t = Instant::from_micros(now);
                match op {
                    Op::Start => {
                        let limits = (budget.attempt_limit(), budget.connection_limit());
                        let room = model.attempts < limits.0
                            && model.attempts + model.open < limits.1;
                        let result = budget.try_start_attempt(t);
                        // Started exactly when both limits had room (no time passed).
                        prop_assert_eq!(result.is_ok(), room);
                        if result.is_ok() {
                            model.attempts += 1;
                        }
                    }
                    Op::Connect | Op::Fail(_) | Op::Cancel => {
                        let result = match op {
                            Op::Connect => budget.on_attempt_connected(t),
                            Op::Fail(resource) => budget.on_attempt_failed(
                                t,
                                if resource { ErrorClass::ResourceExhausted } else { ErrorClass::Refused },
                            ),
                            _ => budget.on_attempt_cancelled(t),
                        };
                        prop_assert_eq!(result.is_ok(), model.attempts > 0);
                        if result.is_ok() {
                            model.attempts -= 1;
                            if matches!(op, Op::Connect) {
                                model.open += 1;
                            }
                        }
                    }
                    Op::Open => {
                        if budget.try_open_connection(t).is_ok() {
                            model.open += 1;
                        } else {
                            prop_assert!(model.attempts + model.open >= budget.connection_limit());
                        }
                    }
                    Op::Close => {
                        let result = budget.on_connection_closed(t);
                        prop_assert_eq!(result.is_ok(), model.open > 0);
                        if result.is_ok() {
                            model.open -= 1;
                        }
                    }
                    Op::ResourceError => budget.on_resource_error(t),
                    Op::Wait(micros) => {
                        now += micros;
                        budget.handle_timeout(Instant::from_micros(now));
                    }
                    Op::FdLimit(limit) => {
                        let limits = (budget.attempt_limit(), budget.connection_limit());
                        let refused = budget.set_fd_limit(limit).is_err();
                        prop_assert_eq!(refused, limit == 0);
                        if refused {
                            let after = (budget.attempt_limit(), budget.connection_limit());
                            prop_assert_eq!(after, limits, "a refused fd limit changes nothing");
                        }
                    }
                }
                prop_assert_eq!(budget.attempts_in_flight(), model.attempts);
                prop_assert_eq!(budget.open_connections(), model.open);
                prop_assert!(budget.attempt_limit() <= attempts);
                prop_assert!(budget.connection_limit() <= open);
                prop_assert_eq!(budget.poll_timeout().is_some(), budget.is_backing_off());
            }
            // Quiet time always brings the limits back to the configured values.
            budget.handle_timeout(Instant::from_micros(now + 20_000_000));
            prop_assert!(!budget.is_backing_off());
        }
    }
}
