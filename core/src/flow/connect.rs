//! Flows, races and the connection budget together: the glue a BSD-socket proxy uses to admit
//! flows under the shared [`ConnectionBudget`] and connect each one with a [`HappyEyeballs`]
//! race.
//!
//! The three engines stay independent (each usable alone, each sans-IO): the governor does not
//! own the budget, because every race and every other connection of the process shares it.
//! Instead [`FlowGovernor::with_budget`] borrows the budget for a few calls and returns a
//! [`FlowsWithBudget`] view whose methods keep the two consistent:
//!
//! - **Admission** ([`FlowsWithBudget::on_new_flow`]) asks the budget as well as the caps: a
//!   full attempt limit refuses at once with [`RejectReason::ConnectionBudget`]; a full
//!   connection limit is handled like a full table (an app below its fair share may evict a
//!   flow of the heaviest app, if that flow holds a budget connection the host's close gives
//!   back), otherwise it refuses with the same reason. [`FlowsWithBudget::budget_refusal`]
//!   names the limit. A resource error that made the budget back off is seen by the next
//!   admission at once, since the budget is asked each time, not copied.
//! - **Connect** ([`FlowsWithBudget::poll_race`]) drains the flow's race as
//!   [`HappyEyeballs::poll_action`] would and mirrors each action into the governor: the first
//!   attempt moves the flow to connecting; the winner establishes the flow and is counted as
//!   the flow's open connection; the losers are counted as also-ran attempts
//!   ([`FlowStats::also_ran_attempts`]); a failed race fails the flow with the failure's class
//!   ([`RaceFailure::error_class`]). A race whose flow is no longer open (evicted, timed out,
//!   closed) is aborted so it starts nothing more; a winner that arrives for such a flow is
//!   handed back for closing with its budget already released.
//! - **Close** ([`FlowsWithBudget::on_closed`]): when a flow holding a budget connection ends,
//!   by any path (the host's close, an eviction or a timeout the host carried out), the budget
//!   gets exactly one connection close. The release is recorded in the flow's slot when the
//!   slot is freed; if the host freed it through the governor alone
//!   ([`FlowGovernor::on_closed`], for example from a callback without the budget at hand), the
//!   close is owed and paid by the next call through the view, or by
//!   [`FlowsWithBudget::settle`].
//!
//! Nothing is counted twice: the budget counts attempts (through the race) and open
//! connections (through the race's winner, released through the flow); the governor counts
//! flows. Hosts that do not use a budget (Network framework hosts, which leave connects to the
//! system) keep calling the governor directly; its [`FlowPolicy::max_connecting`] hook still
//! bounds flows in flight.
//!
//! Invariants, with a host that opens connections only through flow races and drains after
//! every input (checked, through the proxy engine, by `tests/tests/proxy_engine_sim.rs`): attempts in flight never exceed
//! the budget's limit; every started attempt ends once (connected, failed or cancelled); every
//! admitted flow gets exactly one outcome; the budget's open connections equal
//! [`FlowStats::connections_held`], which equals the established flows plus the closing flows
//! that were established.
//!
//! [`FlowPolicy::max_connecting`]: crate::FlowPolicy::max_connecting
//! [`RejectReason::ConnectionBudget`]: crate::RejectReason::ConnectionBudget
//! [`FlowStats::also_ran_attempts`]: crate::FlowStats::also_ran_attempts
//! [`FlowStats::connections_held`]: crate::FlowStats::connections_held

use core::net::SocketAddr;

use super::{
    Admission, FlowError, FlowGovernor, FlowId, FlowInfo, FlowOutcome, FlowSlot, FlowState,
};
use crate::eyeballs::{Action, HappyEyeballs, RaceFailure};
use crate::fmt::{log_debug, log_warn};
use crate::{BudgetRefusal, ConnectionBudget, ErrorClass, Instant};

/// What the host must do for a flow's outbound connect, from [`FlowsWithBudget::poll_race`].
/// The governor and the budget are already updated when it is returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectAction {
    /// Open a socket and start connecting to `addr`; report its outcome to the race with index
    /// `index`. The attempt is counted by the budget; the flow is connecting.
    StartAttempt {
        /// The attempt's index in the race.
        index: usize,
        /// Where to connect.
        addr: SocketAddr,
    },
    /// Close attempt `index`'s socket: another attempt won (an also-ran attempt), it timed out,
    /// or the race was aborted because the flow is no longer open. Its budget is released.
    CancelAttempt {
        /// The attempt to close.
        index: usize,
    },
    /// Attempt `index` won: its socket is the flow's remote connection. The flow is
    /// established, and the budget counts the connection open until the flow is reported
    /// closed. The race is over; free it once it is drained ([`HappyEyeballs::is_finished`]).
    Established {
        /// The winning attempt.
        index: usize,
    },
    /// Attempt `index` won, but the flow was no longer open (the governor evicted or timed it
    /// out, or the host closed it): close the socket. Its budget is already released.
    DiscardWinner {
        /// The winning attempt.
        index: usize,
    },
    /// The race failed: the flow is closed in the governor with outcome
    /// [`FlowOutcome::ConnectFailed`]`(class)` and its slot is free. Close the local flow
    /// (an app proxy fails it with an error of `class`; a transparent proxy can only close it).
    Failed {
        /// Why the race failed.
        reason: RaceFailure,
        /// The class the flow's failure is counted under ([`RaceFailure::error_class`]).
        class: ErrorClass,
    },
}

/// A flow governor and the process's connection budget, borrowed together so that admission,
/// connects and closes keep both consistent. Made by [`FlowGovernor::with_budget`]; cheap to
/// make for each call or batch of calls. See the module documentation for the rules.
///
/// Drain contract: after any input, drain [`FlowGovernor::poll_notification`] and every
/// running race with [`FlowsWithBudget::poll_race`] until each returns `None`; when budget is
/// released (a flow closed, a race ended, the budget's timer), poll again the races that wait
/// for budget ([`HappyEyeballs::is_waiting_for_budget`]). Arm one timer for the earliest of
/// [`FlowsWithBudget::poll_timeout`] and the races' [`HappyEyeballs::poll_timeout`].
///
/// ```
/// use tidegate_core::{
///     AddressFamily, Admission, AppId, BudgetConfig, ConnectAction, ConnectionBudget,
///     DestinationKey, EyeballsConfig, FlowGovernor, FlowInfo, FlowPolicy, FlowSlot,
///     HappyEyeballs, Instant, Protocol, DEFAULT_FLOW_SLOTS,
/// };
///
/// let mut slots = [FlowSlot::EMPTY; DEFAULT_FLOW_SLOTS];
/// let mut governor = FlowGovernor::new(Instant::ZERO, &mut slots[..], FlowPolicy::default())
///     .map_err(|_| "policy")?;
/// let mut budget = ConnectionBudget::new(BudgetConfig::default()).map_err(|_| "budget")?;
/// let info = FlowInfo {
///     app: AppId::from_bytes(b"com.example.browser"),
///     destination: DestinationKey::from_bytes(b"example.com:443"),
///     protocol: Protocol::Tcp,
/// };
/// let now = Instant::from_millis(1);
/// let mut flows = governor.with_budget(&mut budget);
/// let Admission::Accepted { id } = flows.on_new_flow(now, info) else {
///     return Err("refused: pass the flow on or fail it");
/// };
/// let mut race = HappyEyeballs::<4>::new(EyeballsConfig::default(), now).unwrap();
/// let addr = "[2001:db8::1]:443".parse().map_err(|_| "addr")?;
/// race.on_resolved(now, AddressFamily::Ipv6, &[addr]).map_err(|_| "dns")?;
/// race.on_resolution_done(now).map_err(|_| "dns")?;
/// while let Some(step) = flows.poll_race(now, id, &mut race).map_err(|_| "flow")? {
///     if let ConnectAction::StartAttempt { index, .. } = step {
///         // Open a non-blocking socket to the address; here it connects at once.
///         race.on_attempt_connected(now, index).map_err(|_| "attempt")?;
///     }
/// }
/// assert_eq!(flows.budget().open_connections(), 1);
/// flows.on_closed(Instant::from_millis(2), id).map_err(|_| "close")?;
/// assert_eq!(flows.budget().open_connections(), 0);
/// # Ok::<(), &str>(())
/// ```
#[derive(Debug)]
pub struct FlowsWithBudget<'a, S> {
    governor: &'a mut FlowGovernor<S>,
    budget: &'a mut ConnectionBudget,
}

impl<S: AsRef<[FlowSlot]> + AsMut<[FlowSlot]>> FlowGovernor<S> {
    /// Borrow `budget` alongside the governor for calls that must keep both consistent: use it
    /// for admission, for every flow whose connect runs a race, and for closes. Always pass the
    /// same budget (the one every race of the process polls with).
    pub fn with_budget<'a>(
        &'a mut self,
        budget: &'a mut ConnectionBudget,
    ) -> FlowsWithBudget<'a, S> {
        FlowsWithBudget {
            governor: self,
            budget,
        }
    }
}

impl<S: AsRef<[FlowSlot]> + AsMut<[FlowSlot]>> FlowsWithBudget<'_, S> {
    /// Ask to admit a new flow, under the caps and the budget: as
    /// [`FlowGovernor::on_new_flow`], and refused with [`RejectReason::ConnectionBudget`] when
    /// the budget could not start one attempt now (see the module documentation for the
    /// eviction that a full connection limit allows). Applies the budget's due recovery steps
    /// first. O(1) plus any owed releases.
    ///
    /// Flows admitted in the same instant share the room the budget had; a race that then
    /// finds none waits at most [`EyeballsConfig::budget_wait_micros`] and fails with
    /// [`RaceFailure::NoBudget`], so no flow waits unbounded.
    ///
    /// [`EyeballsConfig::budget_wait_micros`]: crate::EyeballsConfig::budget_wait_micros
    /// [`RejectReason::ConnectionBudget`]: crate::RejectReason::ConnectionBudget
    pub fn on_new_flow(&mut self, now: Instant, info: FlowInfo) -> Admission {
        let now = self.governor.clock.observe(now);
        self.budget.handle_timeout(now);
        self.settle_at(now);
        let refusal = self.budget.refusal();
        self.governor.admit_and_count(now, info, refusal, false)
    }

    /// Why the budget would refuse an attempt now (the limit and counts), or `None` if it has
    /// room. After [`FlowsWithBudget::on_new_flow`] refused with
    /// [`RejectReason::ConnectionBudget`], `None` means the governor's own
    /// [`FlowPolicy::max_connecting`] refused (or, with `Some(Connections)`, no flow could be
    /// evicted to make room).
    ///
    /// [`FlowPolicy::max_connecting`]: crate::FlowPolicy::max_connecting
    /// [`RejectReason::ConnectionBudget`]: crate::RejectReason::ConnectionBudget
    pub fn budget_refusal(&self) -> Option<BudgetRefusal> {
        self.budget.refusal()
    }

    /// The next step of flow `id`'s outbound connect, run by `race` under the budget, or
    /// `Ok(None)` when there is nothing to do until the next input or timer. Poll the race only
    /// through this method (not [`HappyEyeballs::poll_action`]), so the governor sees its
    /// winner and losers. See [`ConnectAction`] for what each step did and asks of the host.
    ///
    /// The race's timers due at `now` are applied first ([`HappyEyeballs::handle_timeout`] is
    /// idempotent), so the host's timer only needs to call this. If flow `id` is no longer
    /// open (closing, or already reported closed), the race is
    /// aborted first: it starts nothing more and its attempts come out as
    /// [`ConnectAction::CancelAttempt`]. Keep polling until `Ok(None)` before freeing the race.
    ///
    /// # Errors
    ///
    /// [`FlowError::UnknownFlow`] for an id the governor never issued; nothing is done.
    pub fn poll_race<const N: usize>(
        &mut self,
        now: Instant,
        id: FlowId,
        race: &mut HappyEyeballs<N>,
    ) -> Result<Option<ConnectAction>, FlowError> {
        let state = self.governor.state(id)?;
        let now = self.governor.clock.observe(now);
        self.settle_at(now);
        race.handle_timeout(now);
        if !state.is_open() {
            race.on_abort(now);
        }
        let Some(action) = race.poll_action(self.budget) else {
            return Ok(None);
        };
        let step = match action {
            Action::StartAttempt { index, addr } => {
                if state == FlowState::Opening {
                    // Checked opening just above, so this cannot fail.
                    let _ = self.governor.on_connecting(now, id);
                }
                ConnectAction::StartAttempt { index, addr }
            }
            Action::CancelAttempt { index } => ConnectAction::CancelAttempt { index },
            Action::Connected { index } => {
                // Every loser was marked for cancellation when the winner connected, and the
                // race emits `Connected` once, so this counts each loser once.
                let losers = u64::from(race.stats().attempts_also_ran);
                let counters = &mut self.governor.counters;
                counters.also_ran_attempts = counters.also_ran_attempts.saturating_add(losers);
                self.on_winner(now, id, index)
            }
            Action::Failed { reason } => {
                let class = reason.error_class();
                // The race was not aborted, so the flow is open and the failure frees it.
                if self.governor.on_connect_failed(now, id, class).is_err() {
                    log_warn!("flow race failed for a flow that is no longer open");
                }
                ConnectAction::Failed { reason, class }
            }
        };
        Ok(Some(step))
    }

    /// The host closed flow `id`: as [`FlowGovernor::on_closed`], and if the flow's connection
    /// was counted by the budget, the budget gets its close now (exactly once, whichever path
    /// ended the flow).
    ///
    /// # Errors
    ///
    /// As [`FlowGovernor::on_closed`]; nothing changes (closes owed stay owed until the next
    /// call that succeeds).
    pub fn on_closed(&mut self, now: Instant, id: FlowId) -> Result<FlowOutcome, FlowError> {
        let outcome = self.governor.on_closed(now, id)?;
        let now = self.governor.clock.latest();
        self.settle_at(now);
        Ok(outcome)
    }

    /// Pay the budget the connection closes owed for flows released through the governor
    /// alone ([`FlowGovernor::on_closed`] on a flow holding a budget connection). Every other
    /// method of this view does it first; call it when nothing else is due. O(closes owed).
    pub fn settle(&mut self, now: Instant) {
        let now = self.governor.clock.observe(now);
        self.settle_at(now);
    }

    /// The earliest instant at which [`FlowsWithBudget::handle_timeout`] has work: a flow's
    /// connect or idle deadline or the budget's next recovery step. Races have their own.
    #[must_use = "arm a timer for this instant"]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.governor.poll_timeout(), self.budget.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Apply the governor's timeouts (flows to close, reported as notifications) and the
    /// budget's recovery steps due at `now`. Idempotent. Then drain notifications and poll the
    /// races of closed flows (they abort) and of flows waiting for budget.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.governor.handle_timeout(now);
        let now = self.governor.clock.latest();
        self.budget.handle_timeout(now);
        self.settle_at(now);
    }

    /// The governor, for the calls that do not involve the budget (relay accounting,
    /// notifications, stats).
    pub fn governor(&mut self) -> &mut FlowGovernor<S> {
        self.governor
    }

    /// The budget, read-only: its levels and stats. Change it through the races and this view.
    pub fn budget(&self) -> &ConnectionBudget {
        self.budget
    }

    /// The race of flow `id` connected via attempt `index` (the budget already counts it
    /// open): establish the flow and mark it as holding the connection, or give the connection
    /// back if the flow is no longer open.
    fn on_winner(&mut self, now: Instant, id: FlowId, index: usize) -> ConnectAction {
        let slot = self.governor.resolve(id).ok();
        match (slot, self.governor.on_connected(now, id)) {
            (Some(slot), Ok(())) => {
                if let Some(flow) = self.governor.flow_mut(slot) {
                    flow.holds_connection = true;
                }
                self.governor.connections_held = self.governor.connections_held.saturating_add(1);
                log_debug!("flow in slot {} established by attempt {}", slot, index);
                ConnectAction::Established { index }
            }
            _ => {
                if self.budget.on_connection_closed(now).is_err() {
                    self.budget_mismatch();
                }
                ConnectAction::DiscardWinner { index }
            }
        }
    }

    fn settle_at(&mut self, now: Instant) {
        while self.governor.connection_releases_owed > 0 {
            self.governor.connection_releases_owed -= 1;
            if self.budget.on_connection_closed(now).is_err() {
                self.budget_mismatch();
            }
        }
    }

    fn budget_mismatch(&mut self) {
        let counters = &mut self.governor.counters;
        counters.budget_mismatches = counters.budget_mismatches.saturating_add(1);
        log_warn!("flows: budget had no open connection to release; is it the races' budget?");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::tests::{info, small_policy};
    use crate::{
        AddressFamily, BudgetConfig, CloseReason, EyeballsConfig, FlowPolicy, Notification,
        RejectReason,
    };
    use std::vec::Vec;

    type Race = HappyEyeballs<4>;
    type Governor = FlowGovernor<[FlowSlot; 8]>;

    const MS: u64 = 1_000;

    fn ms(millis: u64) -> Instant {
        Instant::from_millis(millis)
    }

    fn policy() -> FlowPolicy {
        FlowPolicy {
            connect_timeout_micros: 5_000 * MS,
            idle_timeout_micros: 60_000 * MS,
            ..small_policy()
        }
    }

    fn governor() -> Governor {
        FlowGovernor::new(ms(0), [FlowSlot::EMPTY; 8], policy()).unwrap()
    }

    fn budget(attempts: u32, connections: u32) -> ConnectionBudget {
        ConnectionBudget::new(BudgetConfig {
            max_attempts_in_flight: attempts,
            max_open_connections: connections,
            fd_limit: 10_000,
            backoff_floor: 1,
            ..BudgetConfig::default()
        })
        .unwrap()
    }

    fn v6(last: u16) -> SocketAddr {
        SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, last], 443))
    }

    fn v4(last: u8) -> SocketAddr {
        SocketAddr::from(([198, 51, 100, last], 443))
    }

    /// A race at `at` that has both answers: one IPv6 and one IPv4 candidate.
    fn new_race(at: u64) -> Race {
        let mut race = Race::new(EyeballsConfig::default(), ms(at)).unwrap();
        race.on_resolved(ms(at), AddressFamily::Ipv6, &[v6(1)])
            .unwrap();
        race.on_resolved(ms(at), AddressFamily::Ipv4, &[v4(1)])
            .unwrap();
        race
    }

    fn admit(flows: &mut FlowsWithBudget<'_, [FlowSlot; 8]>, at: u64, app: u64) -> FlowId {
        match flows.on_new_flow(ms(at), info(app, 7)) {
            Admission::Accepted { id } => id,
            other => panic!("expected acceptance, got {other:?}"),
        }
    }

    fn drain(
        flows: &mut FlowsWithBudget<'_, [FlowSlot; 8]>,
        at: u64,
        id: FlowId,
        race: &mut Race,
    ) -> Vec<ConnectAction> {
        std::iter::from_fn(|| flows.poll_race(ms(at), id, race).unwrap()).collect()
    }

    /// Run a race for `id` to a win by the IPv6 attempt at `at`.
    fn establish(flows: &mut FlowsWithBudget<'_, [FlowSlot; 8]>, at: u64, id: FlowId) {
        let mut race = new_race(at);
        assert!(matches!(
            drain(flows, at, id, &mut race).as_slice(),
            [ConnectAction::StartAttempt { index: 0, .. }]
        ));
        race.on_attempt_connected(ms(at + 5), 0).unwrap();
        assert_eq!(
            drain(flows, at + 5, id, &mut race),
            [ConnectAction::Established { index: 0 }]
        );
        assert!(race.is_finished());
    }

    #[test]
    fn winner_establishes_the_flow_losers_are_also_ran_attempts_and_close_releases_once() {
        let mut governor = governor();
        let mut budget = budget(4, 4);
        let mut flows = governor.with_budget(&mut budget);
        let id = admit(&mut flows, 0, 1);
        let mut race = new_race(0);
        let start = drain(&mut flows, 0, id, &mut race);
        assert_eq!(
            start,
            [ConnectAction::StartAttempt {
                index: 0,
                addr: v6(1)
            }]
        );
        assert_eq!(flows.governor().state(id), Ok(FlowState::Connecting));
        // The IPv6 path is a black hole: IPv4 starts after the Connection Attempt Delay.
        assert_eq!(
            drain(&mut flows, 250, id, &mut race),
            [ConnectAction::StartAttempt {
                index: 1,
                addr: v4(1)
            }]
        );
        assert_eq!(flows.budget().attempts_in_flight(), 2);
        race.on_attempt_connected(ms(270), 1).unwrap();
        assert_eq!(
            drain(&mut flows, 270, id, &mut race),
            [
                ConnectAction::Established { index: 1 },
                ConnectAction::CancelAttempt { index: 0 }
            ]
        );
        assert!(race.is_finished());
        assert_eq!(flows.budget().attempts_in_flight(), 0);
        assert_eq!(flows.budget().open_connections(), 1);
        let stats = flows.governor().stats();
        assert_eq!(stats.flows.established, 1);
        assert_eq!(stats.also_ran_attempts, 1);
        assert_eq!(stats.also_ran, 0, "the flow itself is not an also-ran");
        assert_eq!(stats.connections_held, 1);

        assert_eq!(flows.on_closed(ms(300), id), Ok(FlowOutcome::AlsoRan));
        assert_eq!(flows.budget().open_connections(), 0);
        assert_eq!(flows.on_closed(ms(301), id), Err(FlowError::StaleFlow));
        assert_eq!(flows.budget().open_connections(), 0);
        let stats = flows.governor().stats();
        assert_eq!(stats.connections_held, 0);
        assert_eq!(stats.budget_mismatches, 0);
        assert_eq!(flows.budget().stats().unbalanced_releases, 0);
    }

    #[test]
    fn admission_refuses_at_once_when_the_budget_has_no_attempt_room() {
        let mut governor = governor();
        let mut budget = budget(1, 4);
        let mut flows = governor.with_budget(&mut budget);
        let first = admit(&mut flows, 0, 1);
        let mut first_race = new_race(0);
        assert_eq!(drain(&mut flows, 0, first, &mut first_race).len(), 1);
        assert_eq!(
            flows.on_new_flow(ms(1), info(2, 8)),
            Admission::Rejected(RejectReason::ConnectionBudget)
        );
        assert_eq!(
            flows.budget_refusal(),
            Some(BudgetRefusal::AttemptsInFlight {
                in_flight: 1,
                limit: 1,
                backing_off: false
            })
        );
        assert_eq!(flows.governor().stats().rejected.connection_budget, 1);
        assert_eq!(
            flows.governor().open_flows(),
            1,
            "a refusal changes nothing"
        );
        // The governor alone (a host without a budget) does not ask the budget.
        assert!(governor.on_new_flow(ms(1), info(2, 8)).id().is_some());
    }

    #[test]
    fn a_resource_error_lowers_the_budget_and_the_next_admission_sees_it() {
        let mut governor = governor();
        // Recovery slower than the race's budget wait, so the wait runs out first.
        let mut budget = ConnectionBudget::new(BudgetConfig {
            recovery_interval_micros: 10_000 * MS,
            ..*budget(4, 4).config()
        })
        .unwrap();
        let mut flows = governor.with_budget(&mut budget);
        for at in [0, 10] {
            let id = admit(&mut flows, at, 1);
            establish(&mut flows, at, id);
        }
        let third = admit(&mut flows, 20, 1);
        let mut race = new_race(20);
        assert_eq!(drain(&mut flows, 20, third, &mut race).len(), 1);
        race.on_attempt_failed(ms(21), 0, ErrorClass::ResourceExhausted)
            .unwrap();
        // The failure reaches the budget when the race is drained; the IPv4 attempt, due 10 ms
        // after the first, no longer fits under the halved limit (2 connections open of 2).
        assert!(drain(&mut flows, 21, third, &mut race).is_empty());
        assert!(flows.budget().is_backing_off());
        assert_eq!(flows.budget().connection_limit(), 2);
        let steps = drain(&mut flows, 30, third, &mut race);
        assert!(steps.is_empty(), "{steps:?}");
        assert!(race.is_waiting_for_budget());
        assert_eq!(
            flows.on_new_flow(ms(22), info(1, 9)),
            Admission::Rejected(RejectReason::ConnectionBudget)
        );
        assert!(matches!(
            flows.budget_refusal(),
            Some(BudgetRefusal::Connections {
                in_use: 2,
                limit: 2,
                backing_off: true
            })
        ));
        // The race gives up after its budget wait and fails the flow with a resource class.
        assert!(drain(&mut flows, 1_029, third, &mut race).is_empty());
        let steps = drain(&mut flows, 1_030, third, &mut race);
        assert!(matches!(
            steps.as_slice(),
            [ConnectAction::Failed {
                reason: RaceFailure::NoBudget { .. },
                class: ErrorClass::ResourceExhausted
            }]
        ));
        assert_eq!(flows.governor().state(third), Ok(FlowState::Closed));
        assert_eq!(
            flows
                .governor()
                .stats()
                .connect_failures_of(ErrorClass::ResourceExhausted),
            1
        );
        assert_eq!(
            flows.budget().stats().backoffs,
            1,
            "NoBudget is no OS error"
        );
    }

    #[test]
    fn a_failed_race_fails_the_flow_with_the_last_class() {
        let mut governor = governor();
        let mut budget = budget(4, 4);
        let mut flows = governor.with_budget(&mut budget);
        let id = admit(&mut flows, 0, 1);
        let mut race = new_race(0);
        drain(&mut flows, 0, id, &mut race);
        race.on_attempt_failed(ms(5), 0, ErrorClass::Unreachable)
            .unwrap();
        assert!(matches!(
            drain(&mut flows, 15, id, &mut race).as_slice(),
            [ConnectAction::StartAttempt { index: 1, .. }]
        ));
        race.on_attempt_failed(ms(20), 1, ErrorClass::Refused)
            .unwrap();
        assert_eq!(
            drain(&mut flows, 20, id, &mut race),
            [ConnectAction::Failed {
                reason: RaceFailure::AllAttemptsFailed {
                    last: ErrorClass::Refused
                },
                class: ErrorClass::Refused
            }]
        );
        assert!(race.is_finished());
        assert_eq!(flows.governor().state(id), Ok(FlowState::Closed));
        let stats = flows.governor().stats();
        assert_eq!(stats.connect_failures_of(ErrorClass::Refused), 1);
        assert_eq!(stats.also_ran_attempts, 0);
        assert_eq!(flows.budget().attempts_in_flight(), 0);
        assert_eq!(flows.budget().open_connections(), 0);
    }

    #[test]
    fn a_race_of_a_timed_out_flow_is_aborted_and_a_late_winner_handed_back() {
        let mut governor = governor();
        let mut budget = budget(4, 4);
        let mut flows = governor.with_budget(&mut budget);
        let id = admit(&mut flows, 0, 1);
        let mut race = new_race(0);
        drain(&mut flows, 0, id, &mut race);
        drain(&mut flows, 250, id, &mut race);
        flows.handle_timeout(ms(5_000));
        assert_eq!(
            flows.governor().poll_notification(),
            Some(Notification::Close {
                id,
                reason: CloseReason::ConnectTimeout
            })
        );
        // The winner's report raced with the timeout: it is handed back for closing.
        race.on_attempt_connected(ms(5_000), 1).unwrap();
        assert_eq!(
            drain(&mut flows, 5_000, id, &mut race),
            [
                ConnectAction::DiscardWinner { index: 1 },
                ConnectAction::CancelAttempt { index: 0 }
            ]
        );
        assert_eq!(flows.budget().open_connections(), 0);
        assert_eq!(flows.governor().stats().also_ran_attempts, 1);
        assert_eq!(
            flows.on_closed(ms(5_001), id),
            Ok(FlowOutcome::ClosedByGovernor(CloseReason::ConnectTimeout))
        );

        // A flow closed while its race still runs: the race is aborted, nothing new starts.
        let id = admit(&mut flows, 6_000, 1);
        let mut race = new_race(6_000);
        drain(&mut flows, 6_000, id, &mut race);
        assert_eq!(flows.on_closed(ms(6_001), id), Ok(FlowOutcome::AlsoRan));
        assert_eq!(
            drain(&mut flows, 6_300, id, &mut race),
            [ConnectAction::CancelAttempt { index: 0 }]
        );
        assert!(race.is_finished());
        assert_eq!(flows.budget().attempts_in_flight(), 0);
        assert_eq!(flows.budget().stats().unbalanced_releases, 0);
    }

    #[test]
    fn a_close_without_the_budget_is_owed_and_paid_once() {
        let mut governor = governor();
        let mut budget = budget(4, 4);
        let id = {
            let mut flows = governor.with_budget(&mut budget);
            let id = admit(&mut flows, 0, 1);
            establish(&mut flows, 0, id);
            id
        };
        governor.on_local_read(ms(10), id, 100).unwrap();
        governor.on_remote_sent(ms(10), id, 100).unwrap();
        assert_eq!(governor.on_closed(ms(11), id), Ok(FlowOutcome::Closed));
        assert_eq!(governor.stats().connections_held, 0);
        assert_eq!(budget.open_connections(), 1, "owed, not yet paid");
        let mut flows = governor.with_budget(&mut budget);
        flows.settle(ms(12));
        flows.settle(ms(13));
        assert_eq!(flows.budget().open_connections(), 0);
        assert_eq!(flows.governor().stats().budget_mismatches, 0);
    }

    #[test]
    fn a_refused_close_changes_nothing_and_leaves_a_close_owed_unpaid() {
        let mut governor = governor();
        let mut budget = budget(4, 4);
        let (owed, closed) = {
            let mut flows = governor.with_budget(&mut budget);
            let owed = admit(&mut flows, 0, 1);
            establish(&mut flows, 0, owed);
            let closed = admit(&mut flows, 10, 2);
            establish(&mut flows, 10, closed);
            assert_eq!(flows.on_closed(ms(20), closed), Ok(FlowOutcome::AlsoRan));
            (owed, closed)
        };
        assert_eq!(governor.on_closed(ms(21), owed), Ok(FlowOutcome::AlsoRan));
        assert_eq!(budget.open_connections(), 1, "owed, not yet paid");
        let mut flows = governor.with_budget(&mut budget);
        for (id, error) in [
            (owed, FlowError::StaleFlow),
            (closed, FlowError::StaleFlow),
            (FlowId::new(3, 9), FlowError::UnknownFlow),
        ] {
            assert_eq!(flows.on_closed(ms(22), id), Err(error));
            assert_eq!(flows.budget().open_connections(), 1, "still owed");
        }
        flows.settle(ms(23));
        assert_eq!(flows.budget().open_connections(), 0);
        assert_eq!(flows.budget().stats().unbalanced_releases, 0);
    }

    #[test]
    fn out_of_connections_a_polite_app_evicts_a_connected_flow_of_the_heaviest() {
        let mut governor = governor();
        let mut budget = budget(4, 3);
        let mut flows = governor.with_budget(&mut budget);
        let greedy: Vec<FlowId> = (0..3)
            .map(|step| {
                let id = admit(&mut flows, step * 10, 1);
                establish(&mut flows, step * 10, id);
                id
            })
            .collect();
        let answer = flows.on_new_flow(ms(100), info(2, 8));
        let Admission::AcceptedAfterEvicting { id, evicted } = answer else {
            panic!("expected an eviction, got {answer:?}");
        };
        assert_eq!(evicted, greedy[0], "least recently active first");
        // The greedy app cannot evict for itself: it is the heaviest.
        assert_eq!(
            flows.on_new_flow(ms(101), info(1, 8)),
            Admission::Rejected(RejectReason::ConnectionBudget)
        );
        // The host closes the evicted flow; its connection gives the polite flow room.
        assert_eq!(
            flows.on_closed(ms(102), evicted),
            Ok(FlowOutcome::ClosedByGovernor(CloseReason::Evicted))
        );
        assert_eq!(flows.budget().open_connections(), 2);
        establish(&mut flows, 103, id);
        assert_eq!(flows.budget().open_connections(), 3);
        assert_eq!(flows.governor().stats().connections_held, 3);
    }

    #[test]
    fn out_of_connections_a_victim_without_a_connection_frees_nothing() {
        let mut governor = governor();
        let mut budget = budget(4, 2);
        let mut flows = governor.with_budget(&mut budget);
        let first = admit(&mut flows, 0, 1);
        establish(&mut flows, 0, first);
        // Bytes pending make the established flow busy, so the idle racing flow is the victim.
        flows.governor().on_local_read(ms(5), first, 100).unwrap();
        // The heaviest app's other flow is still racing: it holds an attempt, no connection.
        let racing = admit(&mut flows, 10, 1);
        let mut race = new_race(10);
        drain(&mut flows, 10, racing, &mut race);
        assert_eq!(
            flows.on_new_flow(ms(20), info(2, 8)),
            Admission::Rejected(RejectReason::ConnectionBudget)
        );
        assert_eq!(flows.governor().state(racing), Ok(FlowState::Connecting));
        // Once the race has failed, the budget has room and the same request is admitted.
        race.on_attempt_failed(ms(21), 0, ErrorClass::Refused)
            .unwrap();
        drain(&mut flows, 21, racing, &mut race);
        race.on_attempt_failed(ms(22), 1, ErrorClass::Refused)
            .unwrap();
        assert!(matches!(
            drain(&mut flows, 22, racing, &mut race).as_slice(),
            [ConnectAction::Failed { .. }]
        ));
        assert!(flows.budget_refusal().is_none());
        assert!(matches!(
            flows.on_new_flow(ms(22), info(2, 8)),
            Admission::Accepted { .. }
        ));
    }

    #[test]
    fn an_unknown_flow_is_refused_and_the_race_untouched() {
        let mut governor = governor();
        let mut budget = budget(4, 4);
        let mut flows = governor.with_budget(&mut budget);
        let mut race = new_race(0);
        assert_eq!(
            flows.poll_race(ms(0), FlowId::new(3, 9), &mut race),
            Err(FlowError::UnknownFlow)
        );
        assert_eq!(race.stats().attempts_started, 0);
        assert_eq!(flows.budget().attempts_in_flight(), 0);
    }
}
