//! Flow lifecycle: states and their transitions, what ends a flow, the notifications the host
//! drains, and per-flow errors.
//!
//! A flow's slot is freed only when the host reports the flow gone ([`FlowGovernor::on_closed`]
//! or [`FlowGovernor::on_connect_failed`]); a flow the governor wants closed waits in state
//! closing, out of the caps but in its slot, so the governor never forgets a connection the host
//! still holds.

use core::fmt;

use super::id::next_generation;
use super::table::{FlowRecord, LinkKind, NOTIFY_CLOSE, push_back, unlink};
use super::{
    AppId, DestinationKey, FlowClass, FlowGovernor, FlowId, FlowSlot, Protocol, accounting,
};
use crate::fmt::{log_debug, log_trace};
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
    /// The UDP flow reached [`FlowPolicy::datagram_max_lifetime_micros`].
    ///
    /// [`FlowPolicy::datagram_max_lifetime_micros`]: crate::FlowPolicy::datagram_max_lifetime_micros
    LifetimeExceeded = 3,
    /// A read of the flow stayed paused for [`FlowPolicy::max_paused_micros`]: its peer stopped
    /// draining what the flow holds.
    ///
    /// [`FlowPolicy::max_paused_micros`]: crate::FlowPolicy::max_paused_micros
    PausedTooLong = 4,
    /// Memory pressure is critical and the flow was idle: evicted in a batch of the least
    /// recently active (see [`FlowGovernor::on_pressure`](crate::FlowGovernor::on_pressure)).
    MemoryPressure = 5,
}

impl CloseReason {
    /// Every reason, in numeric order.
    pub const ALL: [CloseReason; 6] = [
        CloseReason::Evicted,
        CloseReason::IdleTimeout,
        CloseReason::ConnectTimeout,
        CloseReason::LifetimeExceeded,
        CloseReason::PausedTooLong,
        CloseReason::MemoryPressure,
    ];
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CloseReason::Evicted => "evicted to admit a flow of an app below its fair share",
            CloseReason::IdleTimeout => "idle for longer than the idle timeout",
            CloseReason::ConnectTimeout => "still connecting after the connect timeout",
            CloseReason::LifetimeExceeded => "UDP flow open for its maximum lifetime",
            CloseReason::PausedTooLong => "a read paused for longer than the maximum paused time",
            CloseReason::MemoryPressure => "idle while memory pressure is critical",
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
    /// Its class, as the host declared it.
    pub class: FlowClass,
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
#[non_exhaustive]
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
    /// A read reports more bytes than the pending counters can add (of the flow, or over all
    /// flows, in that direction): a corrupted length, such as a negative one cast to unsigned.
    /// Counting it would saturate a counter and lose track of the bytes pending.
    TooManyBytes {
        /// Bytes pending in that direction over all flows.
        pending: u64,
    },
}

impl core::error::Error for FlowError {}

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
            FlowError::TooManyBytes { pending } => {
                write!(
                    f,
                    "read too large to count on top of {pending} bytes pending"
                )
            }
        }
    }
}

impl<S: AsRef<[FlowSlot]> + AsMut<[FlowSlot]>> FlowGovernor<S> {
    /// The host started the remote connection of `id`: opening becomes connecting.
    ///
    /// # Errors
    ///
    /// [`FlowError::UnknownFlow`] or [`FlowError::StaleFlow`] for an id that names no open
    /// flow; [`FlowError::InvalidState`] unless the flow is opening.
    pub fn on_connecting(&mut self, now: Instant, id: FlowId) -> Result<(), FlowError> {
        let index = self.resolve(id)?;
        let state = self.flow_record(index).ok_or(FlowError::UnknownFlow)?.state;
        if state != FlowState::Opening {
            return Err(FlowError::InvalidState { state });
        }
        // Observed only once nothing can fail: a refused report leaves the clock where it was.
        self.clock.observe(now);
        let flow = self.flow_mut(index).ok_or(FlowError::UnknownFlow)?;
        flow.state = FlowState::Connecting;
        self.by_state.opening = self.by_state.opening.saturating_sub(1);
        self.by_state.connecting = self.by_state.connecting.saturating_add(1);
        Ok(())
    }

    /// The remote connection of `id` is up: the flow is established, its idle timer starts and
    /// it may read from the remote. Check [`FlowGovernor::can_read_local`] and
    /// [`FlowGovernor::can_read_remote`] before the first reads.
    ///
    /// # Errors
    ///
    /// [`FlowError::UnknownFlow`] or [`FlowError::StaleFlow`] for an id that names no open
    /// flow; [`FlowError::InvalidState`] unless the flow is opening or connecting (a flow the
    /// governor asked to close stays closing).
    pub fn on_connected(&mut self, now: Instant, id: FlowId) -> Result<(), FlowError> {
        let index = self.resolve(id)?;
        let state = self.flow_record(index).ok_or(FlowError::UnknownFlow)?.state;
        if !matches!(state, FlowState::Opening | FlowState::Connecting) {
            return Err(FlowError::InvalidState { state });
        }
        let now = self.clock.observe(now);
        match state {
            FlowState::Opening => {
                self.by_state.opening = self.by_state.opening.saturating_sub(1);
            }
            FlowState::Connecting => {
                self.by_state.connecting = self.by_state.connecting.saturating_sub(1);
            }
            _ => return Err(FlowError::InvalidState { state }),
        }
        self.by_state.established = self.by_state.established.saturating_add(1);
        let rows = self.slots.as_mut();
        unlink(rows, &mut self.connecting_timers, index, LinkKind::Timer);
        let Some(flow) = self.flow_mut(index) else {
            return Err(FlowError::UnknownFlow);
        };
        flow.state = FlowState::Established;
        let class = flow.class;
        let rows = self.slots.as_mut();
        if let Some(list) = self.established_timers.get_mut(class.index()) {
            push_back(rows, list, index, LinkKind::Timer);
        }
        self.touch(index, now);
        self.record_pause(index, accounting::Side::Outbound);
        self.record_pause(index, accounting::Side::Inbound);
        Ok(())
    }

    /// The remote connection of `id` failed with `class`; the host closes the local flow. The
    /// slot is freed at once. Returns the flow's outcome: [`FlowOutcome::ConnectFailed`], or
    /// [`FlowOutcome::ClosedByGovernor`] if the governor had already asked for the close.
    ///
    /// # Errors
    ///
    /// [`FlowError::UnknownFlow`] or [`FlowError::StaleFlow`] for an id that names no flow;
    /// [`FlowError::InvalidState`] for an established flow (report its end with
    /// [`FlowGovernor::on_closed`]).
    pub fn on_connect_failed(
        &mut self,
        now: Instant,
        id: FlowId,
        class: ErrorClass,
    ) -> Result<FlowOutcome, FlowError> {
        let index = self.resolve(id)?;
        let flow = self.flow_record(index).ok_or(FlowError::UnknownFlow)?;
        let outcome = match flow.state {
            FlowState::Opening | FlowState::Connecting => FlowOutcome::ConnectFailed(class),
            FlowState::Closing => {
                FlowOutcome::ClosedByGovernor(flow.close_reason.unwrap_or(CloseReason::Evicted))
            }
            state => return Err(FlowError::InvalidState { state }),
        };
        self.clock.observe(now);
        self.release(index, outcome);
        Ok(outcome)
    }

    /// The host closed flow `id` (either side ended, or the governor asked). The slot is freed
    /// at once and the id becomes stale; bytes still pending on the flow are released. Returns
    /// the flow's one terminal outcome: [`FlowOutcome::AlsoRan`] if no byte was ever read on it
    /// (O(1), never held buffer budget), [`FlowOutcome::ClosedByGovernor`] if the governor asked
    /// for the close, [`FlowOutcome::Closed`] otherwise.
    ///
    /// # Errors
    ///
    /// [`FlowError::UnknownFlow`] or [`FlowError::StaleFlow`] for an id that names no flow (a
    /// flow closed twice); nothing changes.
    pub fn on_closed(&mut self, now: Instant, id: FlowId) -> Result<FlowOutcome, FlowError> {
        let index = self.resolve(id)?;
        self.clock.observe(now);
        let flow = self.flow_record(index).ok_or(FlowError::UnknownFlow)?;
        let outcome = if flow.state == FlowState::Closing {
            FlowOutcome::ClosedByGovernor(flow.close_reason.unwrap_or(CloseReason::Evicted))
        } else if flow.moved_bytes {
            FlowOutcome::Closed
        } else {
            FlowOutcome::AlsoRan
        };
        self.release(index, outcome);
        Ok(outcome)
    }

    /// Move open flow `index` to closing for `reason`: it stops counting against caps and
    /// timers, its reads stop, and with `notify` a close notification is queued in its slot.
    pub(crate) fn begin_closing(&mut self, index: u32, reason: CloseReason, notify: bool) {
        let Some(state) = self.flow_record(index).map(|flow| flow.state) else {
            return;
        };
        if !state.is_open() {
            return;
        }
        self.detach_open(index);
        self.by_state.closing = self.by_state.closing.saturating_add(1);
        let rows = self.slots.as_mut();
        if let Some(flow) = rows.get(index as usize).map(|row| row.flow)
            && flow.in_wait
        {
            unlink(rows, &mut self.waiting_for_global, index, LinkKind::Wait);
        }
        let Some(flow) = self.flow_mut(index) else {
            return;
        };
        flow.state = FlowState::Closing;
        flow.close_reason = Some(reason);
        flow.in_wait = false;
        flow.outbound.paused = false;
        flow.inbound.paused = false;
        flow.notify = if notify { NOTIFY_CLOSE } else { 0 };
        let in_notify = flow.in_notify;
        let rows = self.slots.as_mut();
        if notify && !in_notify {
            push_back(rows, &mut self.notifications, index, LinkKind::Notify);
        } else if !notify && in_notify {
            unlink(rows, &mut self.notifications, index, LinkKind::Notify);
        }
        if let Some(flow) = self.flow_mut(index) {
            flow.in_notify = notify;
        }
        match reason {
            CloseReason::Evicted => {
                self.counters.evicted = self.counters.evicted.saturating_add(1);
            }
            CloseReason::IdleTimeout => {
                self.counters.idle_timeouts = self.counters.idle_timeouts.saturating_add(1);
            }
            CloseReason::ConnectTimeout => {
                self.counters.connect_timeouts = self.counters.connect_timeouts.saturating_add(1);
            }
            CloseReason::LifetimeExceeded => {
                self.counters.lifetime_closes = self.counters.lifetime_closes.saturating_add(1);
            }
            CloseReason::PausedTooLong => {
                self.counters.paused_closes = self.counters.paused_closes.saturating_add(1);
            }
            CloseReason::MemoryPressure => {
                self.counters.pressure_closes = self.counters.pressure_closes.saturating_add(1);
            }
        }
        log_debug!("closing slot {}: reason {}", index, reason as u8);
    }

    /// Take open flow `index` off its app's list and its timer list and out of the open counts.
    pub(crate) fn detach_open(&mut self, index: u32) {
        let Some(flow) = self.flow_record(index).copied() else {
            return;
        };
        let rows = self.slots.as_mut();
        if let Some(record) = rows.get(flow.app as usize).map(|row| row.app) {
            let mut list = if flow.in_busy {
                record.busy_flows
            } else {
                record.idle_flows
            };
            unlink(rows, &mut list, index, LinkKind::App);
            if let Some(record) = rows.get_mut(flow.app as usize).map(|row| &mut row.app) {
                if flow.in_busy {
                    record.busy_flows = list;
                } else {
                    record.idle_flows = list;
                }
            }
            self.set_app_open(flow.app, record.open.saturating_sub(1));
        }
        self.leave_timers(index, &flow);
        if flow.state.is_open() {
            self.count_class(flow.app, flow.class, false);
            if flow.class != FlowClass::Dns {
                self.give_back_token(flow.app);
            }
        }
        if let Some(record) = self.destination_mut(flow.destination) {
            record.open = record.open.saturating_sub(1);
        }
        let count = match flow.state {
            FlowState::Opening => &mut self.by_state.opening,
            FlowState::Connecting => &mut self.by_state.connecting,
            FlowState::Established => &mut self.by_state.established,
            FlowState::Closing => &mut self.by_state.closing,
            FlowState::Closed => return,
        };
        *count = count.saturating_sub(1);
        if let Some(flow) = self.flow_mut(index) {
            flow.in_busy = false;
        }
    }

    /// Free slot `index` with `outcome`: the flow leaves every list, its pending bytes are
    /// released, its app and destination records are freed if it was their last flow, and the
    /// slot's generation moves on so the old id is stale.
    pub(crate) fn release(&mut self, index: u32, outcome: FlowOutcome) {
        let Some(flow) = self.flow_record(index).copied() else {
            return;
        };
        match flow.state {
            FlowState::Closed => return,
            FlowState::Closing => {
                self.by_state.closing = self.by_state.closing.saturating_sub(1);
            }
            _ => self.detach_open(index),
        }
        let rows = self.slots.as_mut();
        if flow.in_notify {
            unlink(rows, &mut self.notifications, index, LinkKind::Notify);
        }
        if flow.in_wait {
            unlink(rows, &mut self.waiting_for_global, index, LinkKind::Wait);
        }
        debug_assert!(
            !self.flow_record(index).is_some_and(|flow| flow.in_paused),
            "a flow leaves the paused-timer list when it stops being open"
        );
        if flow.holds_connection {
            // The host closed the connection with the flow; the proxy engine gives it back to
            // its budget before the call returns (`take_connection_releases`).
            self.connections_held = self.connections_held.saturating_sub(1);
            self.connection_releases_owed = self.connection_releases_owed.saturating_add(1);
        }
        let (outbound, inbound) = (flow.outbound.pending, flow.inbound.pending);
        self.outbound_pending = self.outbound_pending.saturating_sub(u128::from(outbound));
        self.inbound_pending = self.inbound_pending.saturating_sub(u128::from(inbound));
        self.update_global();
        let pending = outbound.saturating_add(inbound);
        if pending > 0 {
            // The flow left its app's lists above, so only its siblings can be resumed here.
            self.release_app_bytes(flow.app, pending);
        }
        if let Some(record) = self.app_mut(flow.app) {
            record.references = record.references.saturating_sub(1);
            if record.references == 0 {
                self.remove_app(flow.app);
            }
        }
        if let Some(record) = self.destination_mut(flow.destination) {
            record.references = record.references.saturating_sub(1);
            if record.references == 0 {
                self.remove_destination(flow.destination);
            }
        }
        let rows = self.slots.as_mut();
        if let Some(row) = rows.get_mut(index as usize) {
            row.flow = FlowRecord {
                generation: next_generation(flow.generation),
                ..FlowRecord::EMPTY
            };
        }
        push_back(rows, &mut self.free_flows, index, LinkKind::App);
        self.counters.record_outcome(outcome);
        log_trace!("slot {} freed", index);
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
