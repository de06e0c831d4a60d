//! What the proxy engine tells the host ([`ProxyEvent`]) and why it refuses a call
//! ([`ProxyError`], [`ProxyConfigError`]).

use core::fmt;
use core::net::SocketAddr;

use crate::budget::BudgetConfigError;
use crate::error_class::ErrorClass;
use crate::eyeballs::{AttemptError, EyeballsConfigError, RaceFailure, ResolveError};
use crate::flow::{CloseReason, FlowError, FlowId, FlowState, PolicyError};

/// A side of a flow whose reads the engine paces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum Side {
    /// The local flow (the app's socket, an `NEAppProxyFlow`): bytes toward the remote.
    Local = 0,
    /// The remote connection: bytes toward the app.
    Remote = 1,
}

/// Something the host must do, drained with [`ProxyEngine::poll_event`]. Every event is
/// already accounted for when it comes out: the flow table and the budget are updated.
///
/// An attempt is named by its flow and its index in the flow's race (below
/// [`DEFAULT_MAX_CANDIDATES`]); the host keeps one socket per started attempt.
///
/// [`ProxyEngine::poll_event`]: crate::ProxyEngine::poll_event
/// [`DEFAULT_MAX_CANDIDATES`]: crate::DEFAULT_MAX_CANDIDATES
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProxyEvent {
    /// Close flow `id` (its local flow and its remote connection, if any), then report it with
    /// [`ProxyEngine::on_closed`]. Its race, if one is still running, has been aborted: its
    /// attempts come out as [`ProxyEvent::CancelAttempt`].
    ///
    /// [`ProxyEngine::on_closed`]: crate::ProxyEngine::on_closed
    CloseFlow {
        /// The flow to close.
        id: FlowId,
        /// Why: evicted for a fairer table, idle, or connecting too long.
        reason: CloseReason,
    },
    /// Reading `side` of flow `id` may restart (it was paused by a watermark).
    ResumeRead {
        /// The flow.
        id: FlowId,
        /// The side to read again.
        side: Side,
    },
    /// Open a non-blocking socket and start connecting it to `addr`; report the outcome with
    /// [`ProxyEngine::on_attempt_connected`] or [`ProxyEngine::on_attempt_failed`]. The budget
    /// counts the attempt; the flow is connecting.
    ///
    /// [`ProxyEngine::on_attempt_connected`]: crate::ProxyEngine::on_attempt_connected
    /// [`ProxyEngine::on_attempt_failed`]: crate::ProxyEngine::on_attempt_failed
    StartAttempt {
        /// The flow the attempt connects.
        id: FlowId,
        /// The attempt's index in the flow's race.
        attempt: usize,
        /// Where to connect.
        addr: SocketAddr,
    },
    /// Close the socket of attempt `attempt`: it lost to another attempt, timed out, was traded
    /// for the next candidate under budget pressure, belongs to a flow that is no longer open,
    /// or connected for such a flow. Its budget is already released. A report about it after
    /// this is refused, harmlessly.
    CancelAttempt {
        /// The flow the attempt was for; it may already be closed.
        id: FlowId,
        /// The attempt's index in the flow's race.
        attempt: usize,
    },
    /// Attempt `attempt` won: its socket is flow `id`'s remote connection. The flow is
    /// established and the budget counts the connection open until the flow is reported
    /// closed.
    Established {
        /// The flow.
        id: FlowId,
        /// The winning attempt.
        attempt: usize,
    },
    /// Flow `id`'s race failed: the flow is closed with outcome
    /// [`FlowOutcome::ConnectFailed`]`(class)` and its id is stale. Close the local flow (an
    /// app proxy fails it with an error of `class`); do not report it closed.
    ///
    /// [`FlowOutcome::ConnectFailed`]: crate::FlowOutcome::ConnectFailed
    ConnectFailed {
        /// The flow, now closed.
        id: FlowId,
        /// Why the race failed.
        reason: RaceFailure,
        /// The class of the failure ([`RaceFailure::error_class`]).
        class: ErrorClass,
    },
}

// `SocketAddr` has no `defmt::Format`: the address is logged through its `Display`.
#[cfg(feature = "defmt")]
impl defmt::Format for ProxyEvent {
    fn format(&self, f: defmt::Formatter<'_>) {
        match self {
            ProxyEvent::CloseFlow { id, reason } => {
                defmt::write!(f, "CloseFlow {{ id: {}, reason: {} }}", id.to_raw(), reason)
            }
            ProxyEvent::ResumeRead { id, side } => {
                defmt::write!(f, "ResumeRead {{ id: {}, side: {} }}", id.to_raw(), side)
            }
            ProxyEvent::StartAttempt { id, attempt, addr } => defmt::write!(
                f,
                "StartAttempt {{ id: {}, attempt: {}, addr: {} }}",
                id.to_raw(),
                attempt,
                defmt::Display2Format(addr)
            ),
            ProxyEvent::CancelAttempt { id, attempt } => defmt::write!(
                f,
                "CancelAttempt {{ id: {}, attempt: {} }}",
                id.to_raw(),
                attempt
            ),
            ProxyEvent::Established { id, attempt } => defmt::write!(
                f,
                "Established {{ id: {}, attempt: {} }}",
                id.to_raw(),
                attempt
            ),
            ProxyEvent::ConnectFailed { id, reason, class } => defmt::write!(
                f,
                "ConnectFailed {{ id: {}, reason: {}, class: {} }}",
                id.to_raw(),
                reason,
                class
            ),
        }
    }
}

/// Why the engine refused a call; a refused call changes nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ProxyError {
    /// The flow id is unknown or stale, the call does not fit the flow's state, or a byte
    /// count does not fit the flow's accounting.
    Flow(FlowError),
    /// Every race slot is in use. Races of closed flows free theirs once their cancellations
    /// are drained: drain [`ProxyEngine::poll_event`] and retry, or fail the flow.
    ///
    /// [`ProxyEngine::poll_event`]: crate::ProxyEngine::poll_event
    NoRaceSlot,
    /// The flow has no race: an attempt report for a flow connected by the host, or for a race
    /// that has ended (its [`ProxyEvent::CancelAttempt`] closes the socket).
    NoRace,
    /// The flow is connected by a race: the host's own connect reports
    /// ([`ProxyEngine::on_connecting`] and the like) do not apply to it.
    ///
    /// [`ProxyEngine::on_connecting`]: crate::ProxyEngine::on_connecting
    RaceRunning,
    /// The race refused a DNS input (it is over, or an address is of the wrong family).
    Resolve(ResolveError),
    /// The race refused an attempt report (never started, or no longer in flight).
    Attempt(AttemptError),
}

impl From<FlowError> for ProxyError {
    fn from(error: FlowError) -> Self {
        ProxyError::Flow(error)
    }
}

impl core::error::Error for ProxyError {}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyError::Flow(error) => fmt::Display::fmt(error, f),
            ProxyError::NoRaceSlot => f.write_str("every race slot is in use"),
            ProxyError::NoRace => f.write_str("the flow has no race running"),
            ProxyError::RaceRunning => f.write_str("the flow is connected by a race"),
            ProxyError::Resolve(error) => fmt::Display::fmt(error, f),
            ProxyError::Attempt(error) => fmt::Display::fmt(error, f),
        }
    }
}

/// Why a [`ProxyConfig`](crate::ProxyConfig) cannot build an engine; nothing is built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ProxyConfigError {
    /// The flow policy, against the flow slots given.
    Flows(PolicyError),
    /// The connection budget's configuration.
    Budget(BudgetConfigError),
    /// The races' configuration.
    Race(EyeballsConfigError),
    /// No race slot, or more than `u32::MAX - 1`.
    RaceSlots,
}

impl core::error::Error for ProxyConfigError {}

impl fmt::Display for ProxyConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyConfigError::Flows(error) => write!(f, "flow policy: {error}"),
            ProxyConfigError::Budget(error) => write!(f, "connection budget: {error}"),
            ProxyConfigError::Race(error) => write!(f, "race configuration: {error}"),
            ProxyConfigError::RaceSlots => {
                f.write_str("race slots must number from 1 to u32::MAX - 1")
            }
        }
    }
}

/// Whether a flow in `state` may still be connected: opening or connecting.
pub(crate) const fn connectable(state: FlowState) -> bool {
    matches!(state, FlowState::Opening | FlowState::Connecting)
}
