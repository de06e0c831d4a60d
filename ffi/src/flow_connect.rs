//! C ABI of flows, races and the connection budget together: admission under the budget, a
//! flow's connect run by a `TidegateEyeballs` race, and closes that give the budget its
//! connection back exactly once.
//!
//! Each function takes the governor, the budget and (for `poll_race`) the race, and runs inside
//! the boundary of each: a panic poisons every handle it went through.

use std::panic::resume_unwind;

use tidegate_core::{
    Admission, ConnectAction, ConnectionBudget, FlowGovernor, FlowId, FlowSlot, FlowsWithBudget,
    Instant, RejectReason,
};

use crate::boundary::{call_mut, require_non_null, write_out};
use crate::budget::TidegateBudget;
use crate::eyeballs::{
    TidegateBudgetRefusal, TidegateErrorClass, TidegateEyeballs, TidegateRaceFailure,
    TidegateSocketAddress, address_of, failure_of, index_of, refusal_of,
};
use crate::flow::{
    TidegateAdmission, TidegateFlowGovernor, TidegateFlowId, TidegateFlowOutcome, admission_of,
    flow_info_of, outcome_of, status_of_flow,
};
use crate::place::Region;
use crate::status::TidegateStatus;

/// What a step of a flow's connect asks of the host.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TidegateConnectActionKind {
    /// Nothing to do until the next input or timer.
    None = 0,
    /// Open a socket and connect it to `address`; report its outcome to the race with `index`
    /// (`tidegate_eyeballs_on_attempt_connected` / `_failed`). The flow is connecting.
    StartAttempt = 1,
    /// Close the socket of attempt `index`: a loser (counted as an also-ran attempt), a timed-out
    /// attempt, or an attempt of a race aborted because its flow is no longer open. Its budget
    /// is already released.
    CancelAttempt = 2,
    /// Attempt `index` won: its socket is the flow's remote connection. The flow is established
    /// and the budget counts the connection open until the flow is reported closed with
    /// `tidegate_flow_governor_on_closed_with_budget`.
    Established = 3,
    /// Attempt `index` won, but the flow was no longer open (evicted, timed out or closed):
    /// close the socket. Its budget is already released.
    DiscardWinner = 4,
    /// The race failed (`failure`, `error_class`, `budget_refusal`): the flow is closed in the
    /// governor as `CONNECT_FAILED` and its slot is free. Close the local flow; do not report it
    /// closed again.
    Failed = 5,
}

/// One step from `tidegate_flow_governor_poll_race`. Fields not named by `kind` are zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TidegateConnectAction {
    /// What to do.
    pub kind: TidegateConnectActionKind,
    /// The attempt, for `START_ATTEMPT`, `CANCEL_ATTEMPT`, `ESTABLISHED` and `DISCARD_WINNER`
    /// (below 16).
    pub index: u32,
    /// Where to connect, for `START_ATTEMPT`.
    pub address: TidegateSocketAddress,
    /// Why the race failed, for `FAILED`.
    pub failure: TidegateRaceFailure,
    /// For `FAILED`, the class the flow's failure is counted under: the last attempt's class
    /// (`ALL_ATTEMPTS_FAILED`), `UNREACHABLE` (`NO_ADDRESSES`) or `RESOURCE_EXHAUSTED`
    /// (`NO_BUDGET`). An app proxy fails the local flow with an error of this class.
    pub error_class: TidegateErrorClass,
    /// The budget limit, for `FAILED` with `TIDEGATE_RACE_FAILURE_NO_BUDGET`.
    pub budget_refusal: TidegateBudgetRefusal,
}

/// Asks to admit a new flow as `tidegate_flow_governor_on_new_flow` does, and also asks the
/// shared `budget`: the flow is refused with `TIDEGATE_REJECT_REASON_CONNECTION_BUDGET` when the
/// budget could not start one more connection attempt now. At the attempt limit the refusal is
/// immediate; at the connection limit an app below its fair share may still be admitted by
/// evicting a connected flow of the heaviest app (close it as the answer says: its connection
/// gives the new flow room). The budget is asked on every call, so limits lowered after a
/// resource error apply at once.
///
/// Writes the answer to `*out_admission` and, to `*out_budget_refusal`, which budget limit
/// refused the flow (`TIDEGATE_BUDGET_REFUSAL_NONE` unless the decision is `REJECTED` for
/// `CONNECTION_BUDGET` because of the budget; `NONE` with that reason means the governor's own
/// `max_connecting` refused). Returns `TIDEGATE_STATUS_INVALID_ARGUMENT` for an unknown protocol.
///
/// A panic inside poisons both handles.
///
/// # Safety
/// `governor` and `budget` must each be NULL or a live handle, with no other call on either
/// running; `out_admission` and `out_budget_refusal` must be NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_flow_governor_on_new_flow_with_budget(
    governor: *mut TidegateFlowGovernor,
    budget: *mut TidegateBudget,
    now_us: u64,
    app: u64,
    destination: u64,
    protocol: u32,
    out_admission: *mut TidegateAdmission,
    out_budget_refusal: *mut TidegateBudgetRefusal,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        with_budget(governor, budget, |flows| {
            require_non_null([
                out_admission.cast_const().cast(),
                out_budget_refusal.cast_const().cast(),
            ])?;
            let info = flow_info_of(app, destination, protocol)?;
            let answer = flows.on_new_flow(Instant::from_micros(now_us), info);
            let refusal = match (answer, flows.budget_refusal()) {
                (Admission::Rejected(RejectReason::ConnectionBudget), Some(refusal)) => {
                    refusal_of(refusal)
                }
                _ => TidegateBudgetRefusal::None,
            };
            write_out(out_admission, admission_of(answer))?;
            write_out(out_budget_refusal, refusal)
        })
    }
}

/// Writes the next step of `flow`'s outbound connect, run by `race` under `budget`, to
/// `*out_action` (`kind` `TIDEGATE_CONNECT_ACTION_KIND_NONE` when there is nothing to do). The
/// governor and the budget are already updated for the step: the first attempt makes the flow
/// connecting, the winner establishes it and counts as its open connection, losers are counted
/// as also-ran attempts in the governor's stats, and a failed race fails the flow.
///
/// Poll a flow's race only through this function (never `tidegate_eyeballs_poll_action`), with
/// the same budget every time, until it reports `NONE`. The race's timers due at `now_us` are
/// applied first, so a timer only needs to call this. If `flow` is no longer open (evicted,
/// timed out, closed), the race is aborted: it starts nothing more and its attempts come out as
/// `CANCEL_ATTEMPT`. Free the race once `tidegate_eyeballs_is_finished` says so.
///
/// Returns `TIDEGATE_STATUS_UNKNOWN_FLOW` for an id the governor never issued; nothing is done.
/// A panic inside poisons all three handles.
///
/// # Safety
/// `governor`, `budget` and `race` must each be NULL or a live handle, with no other call on any
/// of them running; `out_action` must be NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_flow_governor_poll_race(
    governor: *mut TidegateFlowGovernor,
    budget: *mut TidegateBudget,
    race: *mut TidegateEyeballs,
    now_us: u64,
    flow: TidegateFlowId,
    out_action: *mut TidegateConnectAction,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        with_budget(governor, budget, |flows| {
            require_non_null([out_action.cast_const().cast()])?;
            let status = call_mut(race, |r| {
                let step = flows
                    .poll_race(
                        Instant::from_micros(now_us),
                        FlowId::from_raw(flow),
                        &mut r.engine,
                    )
                    .map_err(status_of_flow)?;
                write_out(out_action, connect_action_of(step))
            });
            forward(status)
        })
    }
}

/// The host closed `flow`: as `tidegate_flow_governor_on_closed`, and if the flow's connection
/// is counted by `budget` (it was established by `tidegate_flow_governor_poll_race`), the budget
/// gets its close now, exactly once, whichever path ended the flow (the host's close, or an
/// eviction or timeout the host carried out). Also pays closes owed for flows closed with
/// `tidegate_flow_governor_on_closed`. Writes the flow's outcome to `*out_outcome`.
///
/// Returns `TIDEGATE_STATUS_UNKNOWN_FLOW` for an id the governor never issued and
/// `TIDEGATE_STATUS_STALE_FLOW` for a flow already closed; nothing changes (closes owed stay
/// owed). A panic inside poisons both handles.
///
/// # Safety
/// `governor` and `budget` must each be NULL or a live handle, with no other call on either
/// running; `out_outcome` must be NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_flow_governor_on_closed_with_budget(
    governor: *mut TidegateFlowGovernor,
    budget: *mut TidegateBudget,
    now_us: u64,
    flow: TidegateFlowId,
    out_outcome: *mut TidegateFlowOutcome,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        with_budget(governor, budget, |flows| {
            require_non_null([out_outcome.cast_const().cast()])?;
            let outcome = flows
                .on_closed(Instant::from_micros(now_us), FlowId::from_raw(flow))
                .map_err(status_of_flow)?;
            write_out(out_outcome, outcome_of(outcome))
        })
    }
}

/// Gives `budget` the connection closes owed for flows closed with
/// `tidegate_flow_governor_on_closed` (a callback that had no budget at hand) while their
/// connection was counted by the budget. The other `_with_budget` calls and `_poll_race` do it
/// first; call this when none of them is due.
///
/// # Safety
/// `governor` and `budget` must each be NULL or a live handle, with no other call on either
/// running.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_flow_governor_settle_budget(
    governor: *mut TidegateFlowGovernor,
    budget: *mut TidegateBudget,
    now_us: u64,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        with_budget(governor, budget, |flows| {
            flows.settle(Instant::from_micros(now_us));
            Ok(())
        })
    }
}

type Flows<'a> = FlowsWithBudget<'a, Region<FlowSlot>>;

/// Run `body` on the governor and the budget borrowed together, each inside the boundary: a
/// panic poisons both (and a handle `body` enters itself).
///
/// # Safety
/// `governor` and `budget` must each be NULL or a live handle, not used concurrently.
unsafe fn with_budget(
    governor: *mut TidegateFlowGovernor,
    budget: *mut TidegateBudget,
    body: impl FnOnce(&mut Flows<'_>) -> Result<(), TidegateStatus>,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(governor, |g| {
            let engine: &mut FlowGovernor<Region<FlowSlot>> = &mut g.engine;
            let status = call_mut(budget, |b| {
                let budget: &mut ConnectionBudget = &mut b.engine;
                body(&mut engine.with_budget(budget))
            });
            forward(status)
        })
    }
}

/// Pass an inner handle's status out through the outer handle's boundary: a panic (the inner
/// handle is poisoned) unwinds again so the outer handle is poisoned too.
fn forward(status: TidegateStatus) -> Result<(), TidegateStatus> {
    match status {
        TidegateStatus::Ok => Ok(()),
        TidegateStatus::Panic => resume_unwind(Box::new("panic inside an inner handle")),
        other => Err(other),
    }
}

fn connect_action_of(step: Option<ConnectAction>) -> TidegateConnectAction {
    let mut out = TidegateConnectAction {
        kind: TidegateConnectActionKind::None,
        index: 0,
        address: TidegateSocketAddress {
            ip: [0; 16],
            port: 0,
            family: 0,
            reserved: 0,
            scope_id: 0,
        },
        failure: TidegateRaceFailure::None,
        error_class: TidegateErrorClass::ResourceExhausted,
        budget_refusal: TidegateBudgetRefusal::None,
    };
    match step {
        None => {}
        Some(ConnectAction::StartAttempt { index, addr }) => {
            out.kind = TidegateConnectActionKind::StartAttempt;
            out.index = index_of(index);
            out.address = address_of(addr);
        }
        Some(ConnectAction::CancelAttempt { index }) => {
            out.kind = TidegateConnectActionKind::CancelAttempt;
            out.index = index_of(index);
        }
        Some(ConnectAction::Established { index }) => {
            out.kind = TidegateConnectActionKind::Established;
            out.index = index_of(index);
        }
        Some(ConnectAction::DiscardWinner { index }) => {
            out.kind = TidegateConnectActionKind::DiscardWinner;
            out.index = index_of(index);
        }
        Some(ConnectAction::Failed { reason, class }) => {
            out.kind = TidegateConnectActionKind::Failed;
            (out.failure, _, out.budget_refusal) = failure_of(reason);
            out.error_class = TidegateErrorClass::from(class);
        }
    }
    out
}

/// Force a panic inside the race's boundary during `tidegate_flow_governor_poll_race`, to test
/// that all three handles are poisoned. Not part of the C API.
///
/// # Safety
/// As for `tidegate_flow_governor_poll_race`: each handle must be NULL or live.
#[doc(hidden)]
#[cfg(any(test, feature = "testing"))]
pub unsafe fn testing_panic_inside_race(
    governor: *mut TidegateFlowGovernor,
    budget: *mut TidegateBudget,
    race: *mut TidegateEyeballs,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        with_budget(governor, budget, |_| {
            let status = call_mut(race, |_| -> Result<(), TidegateStatus> {
                panic!("forced panic for testing the C boundary")
            });
            forward(status)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::{
        tidegate_budget_config_default, tidegate_budget_free, tidegate_budget_new,
    };
    use crate::eyeballs::{
        tidegate_eyeballs_config_default, tidegate_eyeballs_free, tidegate_eyeballs_new,
    };
    use crate::flow::{
        TidegateAdmissionDecision, tidegate_flow_governor_free, tidegate_flow_governor_new,
        tidegate_flow_policy_default,
    };
    use std::ptr;

    #[test]
    fn unknown_flow_and_null_out_params_change_nothing_and_a_panic_poisons_all_three() {
        let policy = tidegate_flow_policy_default();
        let budget_config = tidegate_budget_config_default();
        let race_config = tidegate_eyeballs_config_default();
        let (mut governor, mut budget, mut race) =
            (ptr::null_mut(), ptr::null_mut(), ptr::null_mut());
        // SAFETY: valid pointers; every handle is freed at the end.
        unsafe {
            assert_eq!(
                tidegate_flow_governor_new(&policy, 0, &mut governor),
                TidegateStatus::Ok
            );
            assert_eq!(
                tidegate_budget_new(&budget_config, &mut budget),
                TidegateStatus::Ok
            );
            assert_eq!(
                tidegate_eyeballs_new(&race_config, 0, &mut race),
                TidegateStatus::Ok
            );
            let mut action = std::mem::MaybeUninit::uninit();
            assert_eq!(
                tidegate_flow_governor_poll_race(
                    governor,
                    budget,
                    race,
                    0,
                    77,
                    action.as_mut_ptr()
                ),
                TidegateStatus::UnknownFlow
            );
            let mut admission = std::mem::MaybeUninit::uninit();
            assert_eq!(
                tidegate_flow_governor_on_new_flow_with_budget(
                    governor,
                    budget,
                    1,
                    7,
                    9,
                    0,
                    admission.as_mut_ptr(),
                    ptr::null_mut()
                ),
                TidegateStatus::NullArgument
            );
            let mut refusal = TidegateBudgetRefusal::Connections;
            assert_eq!(
                tidegate_flow_governor_on_new_flow_with_budget(
                    governor,
                    budget,
                    1,
                    7,
                    9,
                    0,
                    admission.as_mut_ptr(),
                    &mut refusal
                ),
                TidegateStatus::Ok
            );
            assert_eq!(
                admission.assume_init().decision,
                TidegateAdmissionDecision::Accepted
            );
            assert_eq!(refusal, TidegateBudgetRefusal::None);
            assert_eq!(
                testing_panic_inside_race(governor, budget, race),
                TidegateStatus::Panic
            );
            assert_eq!(
                tidegate_flow_governor_settle_budget(governor, ptr::null_mut(), 2),
                TidegateStatus::Poisoned,
                "the governor is poisoned"
            );
            assert_eq!(
                crate::budget::tidegate_budget_handle_timeout(budget, 2),
                TidegateStatus::Poisoned
            );
            assert_eq!(
                crate::eyeballs::tidegate_eyeballs_on_abort(race, 2),
                TidegateStatus::Poisoned
            );
            tidegate_eyeballs_free(race);
            tidegate_budget_free(budget);
            tidegate_flow_governor_free(governor);
        }
    }
}
