//! Flow states, what ends a flow, the notifications the host drains, and per-flow errors.

use core::fmt;

use super::{AppId, DestinationKey, FlowId, Protocol};
use crate::{ErrorClass, Instant};

/// Where a flow is in its life.
///
/// ```text
/// on_new_flow -> Opening -> (on_connecting) -> Connecting -> on_connected -> Established
///                 |  any open state: eviction, idle or connect timeout -> Closing
///                 +- any state: on_closed (or on_connect_failed before established) -> Closed
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum FlowState {
    /// Admitted; the host has not yet started the remote connection (it may already read from
    /// the local flow).
    Opening = 0,
    /// The host started the remote connection ([`FlowGovernor::on_connecting`]).
    ///
    /// [`FlowGovernor::on_connecting`]: crate::FlowGovernor::on_connecting
    Connecting = 1,
    /// The remote connection is up; bytes are relayed both ways.
    Established = 2,
    /// The governor asked the host to close the flow (eviction or timeout); the slot stays
    /// taken until the host reports it closed, but the flow no longer counts against caps.
    Closing = 3,
    /// The flow is gone and its slot is free; its id is stale.
    Closed = 4,
}

impl FlowState {
    /// Whether the flow counts against the caps: opening, connecting or established.
    pub const fn is_open(self) -> bool {
        matches!(
            self,
            FlowState::Opening | FlowState::Connecting | FlowState::Established
        )
    }
}

/// Why the governor asks the host to close a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum CloseReason {
    /// Evicted to admit a flow of an app below its fair share (see [`Admission`]).
    ///
    /// [`Admission`]: crate::Admission
    Evicted = 0,
    /// Nothing was read or completed on the flow for the idle timeout.
    IdleTimeout = 1,
    /// The flow was still opening or connecting after the connect timeout.
    ConnectTimeout = 2,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CloseReason::Evicted => "evicted to admit a flow of an app below its fair share",
            CloseReason::IdleTimeout => "idle for longer than the idle timeout",
            CloseReason::ConnectTimeout => "still connecting after the connect timeout",
        })
    }
}

/// How a flow ended: exactly one per admitted flow, returned when its slot is freed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum FlowOutcome {
    /// The host closed the flow after bytes moved.
    Closed,
    /// The host closed the flow before any byte moved: a Happy Eyeballs loser, a port scan, a
    /// client that crashed. Counted on its own; it never held buffer budget.
    AlsoRan,
    /// The remote connection failed; the class says whether to back off.
    ConnectFailed(ErrorClass),
    /// The host closed the flow after the governor asked it to, for this reason.
    ClosedByGovernor(CloseReason),
}

/// Something the host must act on, drained with [`FlowGovernor::poll_notification`].
///
/// [`FlowGovernor::poll_notification`]: crate::FlowGovernor::poll_notification
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Notification {
    /// Close flow `id` (cancel its remote connection, close the local flow), then report it with
    /// [`FlowGovernor::on_closed`].
    ///
    /// [`FlowGovernor::on_closed`]: crate::FlowGovernor::on_closed
    Close {
        /// The flow to close.
        id: FlowId,
        /// Why.
        reason: CloseReason,
    },
    /// Reading from the local flow of `id` may restart: issue the next `readData`.
    ResumeReadLocal {
        /// The flow whose local side may be read again.
        id: FlowId,
    },
    /// Reading from the remote connection of `id` may restart: issue the next receive.
    ResumeReadRemote {
        /// The flow whose remote side may be read again.
        id: FlowId,
    },
}

/// A snapshot of one flow, from [`FlowGovernor::flow`].
///
/// [`FlowGovernor::flow`]: crate::FlowGovernor::flow
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FlowView {
    /// The flow's state; never [`FlowState::Closed`].
    pub state: FlowState,
    /// The app that opened it.
    pub app: AppId,
    /// Its destination.
    pub destination: DestinationKey,
    /// Its transport.
    pub protocol: Protocol,
    /// Bytes read from the local flow and not yet acknowledged by the remote send completion.
    pub outbound_pending: u64,
    /// Bytes read from the remote and not yet completed by `writeData` on the local flow.
    pub inbound_pending: u64,
    /// When the flow was admitted.
    pub admitted_at: Instant,
    /// The last time bytes were read or completed on it (or it was admitted or connected).
    pub last_active: Instant,
}

/// Why a call about one flow was refused; a refused call changes nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum FlowError {
    /// The id was never issued by this governor: index out of range or a generation the slot
    /// has not reached (a forged or corrupted id).
    UnknownFlow,
    /// The flow this id named has closed; its slot may already hold another flow. Late
    /// completion handlers of a closed flow get this and should be ignored.
    StaleFlow,
    /// The call does not fit the flow's state (connected twice, connect failure after
    /// establishment).
    InvalidState {
        /// The flow's current state.
        state: FlowState,
    },
    /// A completion reports more bytes than are pending in that direction.
    ExceedsPending {
        /// Bytes pending in that direction.
        pending: u64,
    },
}

impl fmt::Display for FlowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlowError::UnknownFlow => f.write_str("unknown flow id"),
            FlowError::StaleFlow => f.write_str("flow already closed"),
            FlowError::InvalidState { state } => {
                write!(f, "call not valid for a flow in state {state:?}")
            }
            FlowError::ExceedsPending { pending } => {
                write!(f, "completion larger than the {pending} bytes pending")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_states_count_against_caps() {
        assert!(FlowState::Opening.is_open());
        assert!(FlowState::Connecting.is_open());
        assert!(FlowState::Established.is_open());
        assert!(!FlowState::Closing.is_open());
        assert!(!FlowState::Closed.is_open());
    }

    #[test]
    fn errors_and_reasons_display() {
        let text = std::format!("{}", FlowError::ExceedsPending { pending: 12 });
        assert!(text.contains("12"));
        assert!(!std::format!("{}", CloseReason::IdleTimeout).is_empty());
    }
}
