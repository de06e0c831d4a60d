//! What the proxy engine ([`crate::ProxyEngine`]) needs from the governor beyond its public
//! calls: which race connects a flow, and which flows hold a connection the engine's budget
//! counts open.

use super::table::NIL;
use super::{Admission, FlowError, FlowGovernor, FlowId, FlowInfo, FlowSlot, FlowState};
use crate::{BudgetRefusal, Instant};

impl<S: AsRef<[FlowSlot]> + AsMut<[FlowSlot]>> FlowGovernor<S> {
    /// Admit under a budget's current `refusal`; an evicted flow is reported as a close
    /// notification, so the engine's one output queue carries every close.
    pub(crate) fn admit_under_budget(
        &mut self,
        now: Instant,
        info: FlowInfo,
        refusal: Option<BudgetRefusal>,
    ) -> Admission {
        let now = self.clock.observe(now);
        self.admit_and_count(now, info, refusal, true)
    }

    /// The state of flow `id` and its race slot, if it has one. Changes nothing.
    pub(crate) fn race_of(&self, id: FlowId) -> Result<(FlowState, Option<u32>), FlowError> {
        let index = self.resolve(id)?;
        let flow = self.flow_record(index).ok_or(FlowError::UnknownFlow)?;
        Ok((flow.state, (flow.race != NIL).then_some(flow.race)))
    }

    /// Record that race slot `race` connects flow `id` (or, with `None`, that none does).
    pub(crate) fn set_race(&mut self, id: FlowId, race: Option<u32>) {
        let Ok(index) = self.resolve(id) else {
            debug_assert!(false, "a race is attached to or detached from a live flow");
            return;
        };
        if let Some(flow) = self.flow_mut(index) {
            flow.race = race.unwrap_or(NIL);
        }
    }

    /// A race won for flow `id`: establish the flow, holding the connection the budget now
    /// counts open, so that its release is owed when the slot is freed.
    pub(crate) fn establish_holding_connection(
        &mut self,
        now: Instant,
        id: FlowId,
    ) -> Result<(), FlowError> {
        self.on_connected(now, id)?;
        let index = self.resolve(id)?;
        if let Some(flow) = self.flow_mut(index) {
            flow.holds_connection = true;
        }
        self.connections_held = self.connections_held.saturating_add(1);
        Ok(())
    }

    /// The connection closes owed to the budget since the last call: flows that held a
    /// connection and whose slots were freed. Resets the count.
    pub(crate) fn take_connection_releases(&mut self) -> u32 {
        core::mem::take(&mut self.connection_releases_owed)
    }

    /// Flows holding a connection the budget counts open.
    pub(crate) const fn connections_held(&self) -> u32 {
        self.connections_held
    }

    /// Count `attempts` also-ran attempts (losers of a race another attempt won).
    pub(crate) fn count_also_ran_attempts(&mut self, attempts: u32) {
        let counters = &mut self.counters;
        counters.also_ran_attempts = counters
            .also_ran_attempts
            .saturating_add(u64::from(attempts));
    }
}
