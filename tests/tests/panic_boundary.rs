//! A panic inside a C call is caught at the boundary, for every handle type: the call returns
//! `TIDEGATE_STATUS_PANIC`, the handle is poisoned so every later call on it returns
//! `TIDEGATE_STATUS_POISONED` with its out-parameters untouched, and `_free` still releases it.
//!
//! The panics are forced through test-only paths of the ffi crate (`testing_panic_inside*`,
//! Rust functions the header does not export). `every_handle_function_is_checked_poisoned` reads
//! `include/tidegate.h` and fails if a function taking a handle is missing from the poisoned
//! checks below.

#![allow(clippy::undocumented_unsafe_blocks)] // every check calls the C ABI with pointers it owns

use std::collections::BTreeSet;
use std::ptr::{null, null_mut};
use std::sync::Mutex;

use tidegate::*;
use tidegate_tests::out_param::Out;

use TidegateStatus as S;

/// The panic hook is process-wide: tests that silence it take this lock.
static HOOK: Mutex<()> = Mutex::new(());

/// Run `force` with the expected panic kept out of the output; it must return `PANIC`.
fn force_panic(force: impl FnOnce() -> TidegateStatus) {
    let _guard = HOOK.lock().unwrap_or_else(|e| e.into_inner());
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let status = force();
    std::panic::set_hook(previous);
    assert_eq!(status, S::Panic);
}

/// The names of the functions checked on a poisoned handle, each checked as it is recorded.
#[derive(Default)]
struct Checked(BTreeSet<&'static str>);

impl Checked {
    /// `name` returned `POISONED` (the caller has checked its out-parameters).
    #[track_caller]
    fn poisoned(&mut self, name: &'static str, status: TidegateStatus) {
        assert_eq!(status, S::Poisoned, "{name} on a poisoned handle");
        self.0.insert(name);
    }

    /// `name` returned `POISONED` and left its out-parameter untouched.
    #[track_caller]
    fn poisoned_out<T>(&mut self, name: &'static str, call: impl FnOnce(*mut T) -> TidegateStatus) {
        let mut out = Out::<T>::new();
        let status = call(out.ptr());
        assert!(
            out.untouched(),
            "{name} wrote its out-parameter on a poisoned handle"
        );
        self.poisoned(name, status);
    }
}

/// Every call on a poisoned tunnel.
unsafe fn check_poisoned_tunnel(t: *mut TidegateTunnel) -> Checked {
    let mut c = Checked::default();
    let data = [1u8; 64];
    unsafe {
        c.poisoned_out("tidegate_tunnel_can_read_outbound", |out| {
            tidegate_tunnel_can_read_outbound(t, out)
        });
        c.poisoned(
            "tidegate_tunnel_on_outbound_packet",
            tidegate_tunnel_on_outbound_packet(t, 1, data.as_ptr(), 64),
        );
        c.poisoned_out("tidegate_tunnel_on_outbound_batch", |out| {
            let batch = [TidegatePacketView {
                data: data.as_ptr(),
                len: 64,
            }];
            let mut stopped = Out::<TidegateStatus>::new();
            let status =
                tidegate_tunnel_on_outbound_batch(t, 1, batch.as_ptr(), 1, out, stopped.ptr());
            assert!(stopped.untouched());
            status
        });
        c.poisoned_out("tidegate_tunnel_poll_outbound", |out| {
            let mut views = Out::<[TidegatePacketView; 4]>::new();
            let status = tidegate_tunnel_poll_outbound(t, 1, views.ptr().cast(), 4, out);
            assert!(views.untouched());
            status
        });
        c.poisoned_out("tidegate_tunnel_complete_outbound", |out| {
            tidegate_tunnel_complete_outbound(t, 1, 1, out)
        });
        c.poisoned(
            "tidegate_tunnel_on_outbound_transmitted",
            tidegate_tunnel_on_outbound_transmitted(t, 1, 1),
        );
        c.poisoned(
            "tidegate_tunnel_on_outbound_queued_below",
            tidegate_tunnel_on_outbound_queued_below(t, 1, 1),
        );
        c.poisoned_out("tidegate_tunnel_on_inbound_packet", |out| {
            tidegate_tunnel_on_inbound_packet(t, 1, data.as_ptr(), 64, out)
        });
        c.poisoned_out("tidegate_tunnel_poll_inbound", |out| {
            let mut views = Out::<[TidegatePacketView; 4]>::new();
            let status = tidegate_tunnel_poll_inbound(t, 1, views.ptr().cast(), 4, out);
            assert!(views.untouched());
            status
        });
        c.poisoned(
            "tidegate_tunnel_complete_inbound",
            tidegate_tunnel_complete_inbound(t, 1, 1),
        );
        c.poisoned_out("tidegate_tunnel_stats", |out| tidegate_tunnel_stats(t, out));
        assert_eq!(testing_panic_inside(t), S::Poisoned);
        assert_eq!(testing_panic_inside_read_only(t), S::Poisoned);
    }
    c
}

/// Every call on a poisoned budget (and a race call that uses it).
unsafe fn check_poisoned_budget(
    b: *mut TidegateBudget,
    healthy_race: *mut TidegateEyeballs,
) -> Checked {
    let mut c = Checked::default();
    unsafe {
        c.poisoned(
            "tidegate_budget_set_fd_limit",
            tidegate_budget_set_fd_limit(b, 1024),
        );
        c.poisoned_out("tidegate_budget_can_start_attempt", |out| {
            tidegate_budget_can_start_attempt(b, out)
        });
        c.poisoned(
            "tidegate_budget_try_start_attempt",
            tidegate_budget_try_start_attempt(b, 1),
        );
        c.poisoned(
            "tidegate_budget_on_attempt_connected",
            tidegate_budget_on_attempt_connected(b, 1),
        );
        c.poisoned(
            "tidegate_budget_on_attempt_failed",
            tidegate_budget_on_attempt_failed(b, 1, 24),
        );
        c.poisoned(
            "tidegate_budget_on_attempt_cancelled",
            tidegate_budget_on_attempt_cancelled(b, 1),
        );
        c.poisoned(
            "tidegate_budget_try_open_connection",
            tidegate_budget_try_open_connection(b, 1),
        );
        c.poisoned(
            "tidegate_budget_on_connection_closed",
            tidegate_budget_on_connection_closed(b, 1),
        );
        c.poisoned(
            "tidegate_budget_on_resource_error",
            tidegate_budget_on_resource_error(b, 1),
        );
        c.poisoned_out("tidegate_budget_poll_timeout", |out| {
            tidegate_budget_poll_timeout(b, out)
        });
        c.poisoned(
            "tidegate_budget_handle_timeout",
            tidegate_budget_handle_timeout(b, 1),
        );
        c.poisoned_out("tidegate_budget_levels", |out| {
            tidegate_budget_levels(b, out)
        });
        c.poisoned_out("tidegate_budget_stats", |out| tidegate_budget_stats(b, out));
        // A healthy race polled with the poisoned budget: refused, and the race stays healthy.
        c.poisoned_out("tidegate_eyeballs_poll_action", |out| {
            tidegate_eyeballs_poll_action(healthy_race, 0, b, out)
        });
        let mut finished = false;
        assert_eq!(
            tidegate_eyeballs_is_finished(healthy_race, &mut finished),
            S::Ok
        );
        assert_eq!(testing_panic_inside_budget_only(b), S::Poisoned);
    }
    c
}

/// Every call on a poisoned race (polled with a healthy budget).
unsafe fn check_poisoned_race(
    r: *mut TidegateEyeballs,
    healthy_budget: *mut TidegateBudget,
) -> Checked {
    let mut c = Checked::default();
    let addresses = [TidegateSocketAddress {
        ip: [0x20, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        port: 443,
        family: TidegateAddressFamily::Ipv6 as u8,
        reserved: 0,
        scope_id: 0,
    }];
    let ipv6 = TidegateAddressFamily::Ipv6 as u32;
    unsafe {
        c.poisoned_out("tidegate_eyeballs_on_resolved", |out| {
            tidegate_eyeballs_on_resolved(r, 1, ipv6, addresses.as_ptr(), 1, out)
        });
        c.poisoned(
            "tidegate_eyeballs_on_resolution_failed",
            tidegate_eyeballs_on_resolution_failed(r, 1, ipv6),
        );
        c.poisoned(
            "tidegate_eyeballs_on_resolution_done",
            tidegate_eyeballs_on_resolution_done(r, 1),
        );
        c.poisoned(
            "tidegate_eyeballs_on_attempt_connected",
            tidegate_eyeballs_on_attempt_connected(r, 1, 0),
        );
        c.poisoned(
            "tidegate_eyeballs_on_attempt_failed",
            tidegate_eyeballs_on_attempt_failed(r, 1, 0, 111),
        );
        c.poisoned(
            "tidegate_eyeballs_on_abort",
            tidegate_eyeballs_on_abort(r, 1),
        );
        c.poisoned_out("tidegate_eyeballs_poll_timeout", |out| {
            tidegate_eyeballs_poll_timeout(r, out)
        });
        c.poisoned(
            "tidegate_eyeballs_handle_timeout",
            tidegate_eyeballs_handle_timeout(r, 1),
        );
        c.poisoned_out("tidegate_eyeballs_poll_action", |out| {
            tidegate_eyeballs_poll_action(r, 0, healthy_budget, out)
        });
        c.poisoned_out("tidegate_eyeballs_status", |out| {
            tidegate_eyeballs_status(r, out)
        });
        c.poisoned_out("tidegate_eyeballs_is_finished", |out| {
            tidegate_eyeballs_is_finished(r, out)
        });
        c.poisoned_out("tidegate_eyeballs_is_waiting_for_budget", |out| {
            tidegate_eyeballs_is_waiting_for_budget(r, out)
        });
        c.poisoned_out("tidegate_eyeballs_stats", |out| {
            tidegate_eyeballs_stats(r, out)
        });
        assert_eq!(testing_panic_inside_eyeballs(r), S::Poisoned);
    }
    c
}

/// Every call on a poisoned flow governor; `flow` was admitted before the panic.
unsafe fn check_poisoned_governor(g: *mut TidegateFlowGovernor, flow: u64) -> Checked {
    let mut c = Checked::default();
    unsafe {
        c.poisoned_out("tidegate_flow_governor_on_new_flow", |out| {
            tidegate_flow_governor_on_new_flow(g, 1, 1, 1, 0, out)
        });
        c.poisoned(
            "tidegate_flow_governor_on_connecting",
            tidegate_flow_governor_on_connecting(g, 1, flow),
        );
        c.poisoned(
            "tidegate_flow_governor_on_connected",
            tidegate_flow_governor_on_connected(g, 1, flow),
        );
        c.poisoned_out("tidegate_flow_governor_on_connect_failed", |out| {
            tidegate_flow_governor_on_connect_failed(g, 1, flow, 111, out)
        });
        c.poisoned_out("tidegate_flow_governor_on_closed", |out| {
            tidegate_flow_governor_on_closed(g, 1, flow, out)
        });
        c.poisoned(
            "tidegate_flow_governor_on_local_read",
            tidegate_flow_governor_on_local_read(g, 1, flow, 10),
        );
        c.poisoned(
            "tidegate_flow_governor_on_remote_sent",
            tidegate_flow_governor_on_remote_sent(g, 1, flow, 10),
        );
        c.poisoned(
            "tidegate_flow_governor_on_remote_read",
            tidegate_flow_governor_on_remote_read(g, 1, flow, 10),
        );
        c.poisoned(
            "tidegate_flow_governor_on_local_written",
            tidegate_flow_governor_on_local_written(g, 1, flow, 10),
        );
        c.poisoned_out("tidegate_flow_governor_can_read_local", |out| {
            tidegate_flow_governor_can_read_local(g, flow, out)
        });
        c.poisoned_out("tidegate_flow_governor_can_read_remote", |out| {
            tidegate_flow_governor_can_read_remote(g, flow, out)
        });
        c.poisoned_out("tidegate_flow_governor_poll_notifications", |out| {
            let mut batch = Out::<[TidegateFlowNotification; 4]>::new();
            let status = tidegate_flow_governor_poll_notifications(g, batch.ptr().cast(), 4, out);
            assert!(batch.untouched());
            status
        });
        c.poisoned_out("tidegate_flow_governor_poll_timeout", |out| {
            tidegate_flow_governor_poll_timeout(g, out)
        });
        c.poisoned(
            "tidegate_flow_governor_handle_timeout",
            tidegate_flow_governor_handle_timeout(g, 1),
        );
        c.poisoned(
            "tidegate_flow_governor_set_connection_budget",
            tidegate_flow_governor_set_connection_budget(g, 1),
        );
        c.poisoned_out("tidegate_flow_governor_state", |out| {
            tidegate_flow_governor_state(g, flow, out)
        });
        c.poisoned_out("tidegate_flow_governor_app_state", |out| {
            tidegate_flow_governor_app_state(g, 1, out)
        });
        c.poisoned_out("tidegate_flow_governor_stats", |out| {
            tidegate_flow_governor_stats(g, out)
        });
        assert_eq!(testing_panic_inside_flow_governor(g), S::Poisoned);
    }
    c
}

/// Every call on a poisoned proxy engine.
unsafe fn check_poisoned_proxy(p: *mut TidegateProxy, flow: u64) -> Checked {
    let mut c = Checked::default();
    let address = TidegateSocketAddress {
        ip: [192, 0, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        port: 443,
        family: TidegateAddressFamily::Ipv4 as u8,
        reserved: 0,
        scope_id: 0,
    };
    unsafe {
        c.poisoned_out("tidegate_proxy_on_new_flow", |out| {
            tidegate_proxy_on_new_flow(p, 1, 1, 1, 0, out)
        });
        c.poisoned(
            "tidegate_proxy_on_connecting",
            tidegate_proxy_on_connecting(p, 1, flow),
        );
        c.poisoned(
            "tidegate_proxy_on_connected",
            tidegate_proxy_on_connected(p, 1, flow),
        );
        c.poisoned_out("tidegate_proxy_on_connect_failed", |out| {
            tidegate_proxy_on_connect_failed(p, 1, flow, 111, out)
        });
        c.poisoned_out("tidegate_proxy_on_closed", |out| {
            tidegate_proxy_on_closed(p, 1, flow, out)
        });
        c.poisoned_out("tidegate_proxy_on_bytes", |out| {
            tidegate_proxy_on_bytes(p, 1, flow, 0, 10, out)
        });
        c.poisoned_out("tidegate_proxy_can_read", |out| {
            tidegate_proxy_can_read(p, flow, 0, out)
        });
        c.poisoned_out("tidegate_proxy_on_resolved", |out| {
            tidegate_proxy_on_resolved(p, 1, flow, 4, &address, 1, out)
        });
        c.poisoned(
            "tidegate_proxy_on_resolution_failed",
            tidegate_proxy_on_resolution_failed(p, 1, flow, 6),
        );
        c.poisoned(
            "tidegate_proxy_on_resolution_done",
            tidegate_proxy_on_resolution_done(p, 1, flow),
        );
        c.poisoned(
            "tidegate_proxy_on_attempt_connected",
            tidegate_proxy_on_attempt_connected(p, 1, flow, 0),
        );
        c.poisoned(
            "tidegate_proxy_on_attempt_failed",
            tidegate_proxy_on_attempt_failed(p, 1, flow, 0, 111),
        );
        c.poisoned_out("tidegate_proxy_poll_events", |out| {
            let mut batch = Out::<[TidegateProxyEvent; 4]>::new();
            let status = tidegate_proxy_poll_events(p, batch.ptr().cast(), 4, out);
            assert!(batch.untouched());
            status
        });
        c.poisoned_out("tidegate_proxy_poll_timeout", |out| {
            tidegate_proxy_poll_timeout(p, out)
        });
        c.poisoned(
            "tidegate_proxy_handle_timeout",
            tidegate_proxy_handle_timeout(p, 1),
        );
        c.poisoned_out("tidegate_proxy_flow", |out| {
            tidegate_proxy_flow(p, flow, out)
        });
        c.poisoned_out("tidegate_proxy_app_state", |out| {
            tidegate_proxy_app_state(p, 1, out)
        });
        c.poisoned_out("tidegate_proxy_stats", |out| tidegate_proxy_stats(p, out));
        c.poisoned(
            "tidegate_proxy_set_max_connecting",
            tidegate_proxy_set_max_connecting(p, 1),
        );
        c.poisoned(
            "tidegate_proxy_set_fd_limit",
            tidegate_proxy_set_fd_limit(p, 1024),
        );
        c.poisoned(
            "tidegate_proxy_on_resource_error",
            tidegate_proxy_on_resource_error(p, 1),
        );
        c.poisoned(
            "tidegate_proxy_try_open_connection",
            tidegate_proxy_try_open_connection(p, 1),
        );
        c.poisoned(
            "tidegate_proxy_on_connection_closed",
            tidegate_proxy_on_connection_closed(p, 1),
        );
        assert_eq!(testing_panic_inside_proxy(p), S::Poisoned);
    }
    c
}

#[test]
fn a_panic_poisons_a_proxy_engine_and_free_still_works() {
    let config = tidegate_proxy_config_default();
    let mut proxy = null_mut();
    unsafe {
        assert_eq!(tidegate_proxy_new(&config, 0, &mut proxy), S::Ok);
        let mut admission = Out::<TidegateAdmission>::new();
        assert_eq!(
            tidegate_proxy_on_new_flow(proxy, 0, 1, 1, 0, admission.ptr()),
            S::Ok
        );
        let flow = admission.value().flow;
        force_panic(|| testing_panic_inside_proxy(proxy));
        check_poisoned_proxy(proxy, flow);
        tidegate_proxy_free(proxy);
    }
}

/// Every call that takes a governor and a budget (and a race), with `g` or `b` poisoned (the
/// other handles healthy or poisoned): refused, out-parameters untouched.
unsafe fn check_poisoned_with_budget(
    g: *mut TidegateFlowGovernor,
    b: *mut TidegateBudget,
    r: *mut TidegateEyeballs,
    flow: u64,
) -> Checked {
    let mut c = Checked::default();
    unsafe {
        c.poisoned_out("tidegate_flow_governor_on_new_flow_with_budget", |out| {
            let mut refusal = Out::<TidegateBudgetRefusal>::new();
            let status = tidegate_flow_governor_on_new_flow_with_budget(
                g,
                b,
                1,
                1,
                1,
                0,
                out,
                refusal.ptr(),
            );
            assert!(refusal.untouched());
            status
        });
        c.poisoned_out("tidegate_flow_governor_poll_race", |out| {
            tidegate_flow_governor_poll_race(g, b, r, 1, flow, out)
        });
        c.poisoned_out("tidegate_flow_governor_on_closed_with_budget", |out| {
            tidegate_flow_governor_on_closed_with_budget(g, b, 1, flow, out)
        });
        c.poisoned(
            "tidegate_flow_governor_settle_budget",
            tidegate_flow_governor_settle_budget(g, b, 1),
        );
    }
    c
}

/// The one call through a governor and a budget that takes a race, with `r` poisoned.
unsafe fn check_poisoned_race_polled_by_governor(
    g: *mut TidegateFlowGovernor,
    b: *mut TidegateBudget,
    r: *mut TidegateEyeballs,
    flow: u64,
) -> Checked {
    let mut c = Checked::default();
    unsafe {
        c.poisoned_out("tidegate_flow_governor_poll_race", |out| {
            tidegate_flow_governor_poll_race(g, b, r, 1, flow, out)
        });
    }
    c
}

/// Every call on a poisoned lifecycle (running generation 1 before the panic).
unsafe fn check_poisoned_lifecycle(l: *mut TidegateLifecycle) -> Checked {
    let mut c = Checked::default();
    unsafe {
        c.poisoned_out("tidegate_lifecycle_on_start", |out| {
            tidegate_lifecycle_on_start(l, 1, null(), 0, out)
        });
        c.poisoned(
            "tidegate_lifecycle_on_tunnel_started",
            tidegate_lifecycle_on_tunnel_started(l, 1, 1),
        );
        c.poisoned_out("tidegate_lifecycle_on_stop", |out| {
            tidegate_lifecycle_on_stop(l, 1, out)
        });
        c.poisoned(
            "tidegate_lifecycle_on_cancel",
            tidegate_lifecycle_on_cancel(l, 1, 5),
        );
        c.poisoned(
            "tidegate_lifecycle_on_torn_down",
            tidegate_lifecycle_on_torn_down(l, 1, 1),
        );
        c.poisoned_out("tidegate_lifecycle_register_task", |out| {
            tidegate_lifecycle_register_task(l, 1, 1, null(), 0, out)
        });
        c.poisoned(
            "tidegate_lifecycle_on_task_done",
            tidegate_lifecycle_on_task_done(l, 1, 1, 1),
        );
        c.poisoned(
            "tidegate_lifecycle_on_task_failed",
            tidegate_lifecycle_on_task_failed(l, 1, 1, 1),
        );
        c.poisoned(
            "tidegate_lifecycle_on_journal_persisted",
            tidegate_lifecycle_on_journal_persisted(l, 1, 1),
        );
        c.poisoned_out("tidegate_lifecycle_write_journal", |out| {
            let mut buf = Out::<[u8; 128]>::new();
            let status = tidegate_lifecycle_write_journal(l, buf.ptr().cast(), 128, out);
            assert!(buf.untouched());
            status
        });
        c.poisoned_out("tidegate_lifecycle_journal_len", |out| {
            tidegate_lifecycle_journal_len(l, out)
        });
        c.poisoned_out("tidegate_lifecycle_poll_effect", |out| {
            tidegate_lifecycle_poll_effect(l, 1, out)
        });
        c.poisoned_out("tidegate_lifecycle_poll_timeout", |out| {
            tidegate_lifecycle_poll_timeout(l, out)
        });
        c.poisoned(
            "tidegate_lifecycle_handle_timeout",
            tidegate_lifecycle_handle_timeout(l, 1),
        );
        c.poisoned_out("tidegate_lifecycle_state", |state| {
            let mut generation = Out::<u64>::new();
            let status = tidegate_lifecycle_state(l, state, generation.ptr());
            assert!(generation.untouched());
            status
        });
        c.poisoned_out("tidegate_lifecycle_stats", |out| {
            tidegate_lifecycle_stats(l, out)
        });
        assert_eq!(testing_panic_inside_lifecycle(l), S::Poisoned);
    }
    c
}

#[test]
fn a_panic_poisons_a_tunnel_and_free_still_works() {
    let config = tidegate_tunnel_config_default();
    let mut tunnel = null_mut();
    unsafe {
        assert_eq!(tidegate_tunnel_new(&config, &mut tunnel), S::Ok);
        assert_eq!(
            tidegate_tunnel_on_outbound_packet(tunnel, 0, [1u8].as_ptr(), 1),
            S::Ok
        );
        force_panic(|| testing_panic_inside(tunnel));
        check_poisoned_tunnel(tunnel);
        tidegate_tunnel_free(tunnel);
    }
}

#[test]
fn a_panic_in_a_read_only_call_poisons_the_tunnel_too() {
    let config = tidegate_tunnel_config_default();
    let mut tunnel = null_mut();
    unsafe {
        assert_eq!(tidegate_tunnel_new(&config, &mut tunnel), S::Ok);
        force_panic(|| testing_panic_inside_read_only(tunnel));
        check_poisoned_tunnel(tunnel);
        tidegate_tunnel_free(tunnel);
    }
}

#[test]
fn a_panic_without_a_handle_returns_the_panic_status() {
    force_panic(testing_panic_without_handle);
    // Nothing was poisoned: calls without a handle go on working.
    let config = tidegate_tunnel_config_default();
    let mut bytes = 0;
    assert_eq!(
        unsafe { tidegate_tunnel_footprint(&config, &mut bytes, &mut 0) },
        S::Ok
    );
}

#[test]
fn a_panic_poisons_a_budget_alone_and_free_still_works() {
    let mut budget = null_mut();
    let mut race = null_mut();
    let mut other_budget = null_mut();
    unsafe {
        assert_eq!(
            tidegate_budget_new(&tidegate_budget_config_default(), &mut budget),
            S::Ok
        );
        assert_eq!(
            tidegate_budget_new(&tidegate_budget_config_default(), &mut other_budget),
            S::Ok
        );
        assert_eq!(
            tidegate_eyeballs_new(&tidegate_eyeballs_config_default(), 0, &mut race),
            S::Ok
        );
        assert_eq!(tidegate_budget_try_start_attempt(budget, 0), S::Ok);
        force_panic(|| testing_panic_inside_budget_only(budget));
        check_poisoned_budget(budget, race);
        // The race was not poisoned by the budget's refusal.
        let mut action = Out::<TidegateEyeballsAction>::new();
        assert_eq!(
            tidegate_eyeballs_poll_action(race, 0, other_budget, action.ptr()),
            S::Ok
        );
        tidegate_budget_free(budget);
        tidegate_eyeballs_free(race);
        tidegate_budget_free(other_budget);
    }
}

#[test]
fn a_panic_poisons_a_race_alone_and_free_still_works() {
    let mut budget = null_mut();
    let mut race = null_mut();
    unsafe {
        assert_eq!(
            tidegate_budget_new(&tidegate_budget_config_default(), &mut budget),
            S::Ok
        );
        assert_eq!(
            tidegate_eyeballs_new(&tidegate_eyeballs_config_default(), 0, &mut race),
            S::Ok
        );
        force_panic(|| testing_panic_inside_eyeballs(race));
        check_poisoned_race(race, budget);
        // The budget stays healthy: it was not part of the panicking call.
        let mut levels = Out::<TidegateBudgetLevels>::new();
        assert_eq!(tidegate_budget_levels(budget, levels.ptr()), S::Ok);
        assert_eq!(levels.value().attempts_in_flight, 0);
        tidegate_eyeballs_free(race);
        tidegate_budget_free(budget);
    }
}

#[test]
fn a_panic_inside_the_budget_during_a_race_call_poisons_both_handles() {
    let mut budget = null_mut();
    let mut race = null_mut();
    let mut healthy_budget = null_mut();
    let mut healthy_race = null_mut();
    unsafe {
        assert_eq!(
            tidegate_budget_new(&tidegate_budget_config_default(), &mut budget),
            S::Ok
        );
        assert_eq!(
            tidegate_budget_new(&tidegate_budget_config_default(), &mut healthy_budget),
            S::Ok
        );
        assert_eq!(
            tidegate_eyeballs_new(&tidegate_eyeballs_config_default(), 0, &mut race),
            S::Ok
        );
        assert_eq!(
            tidegate_eyeballs_new(&tidegate_eyeballs_config_default(), 0, &mut healthy_race),
            S::Ok
        );
        force_panic(|| testing_panic_inside_budget(race, budget));
        check_poisoned_race(race, healthy_budget);
        check_poisoned_budget(budget, healthy_race);
        tidegate_eyeballs_free(race);
        tidegate_budget_free(budget);
        tidegate_eyeballs_free(healthy_race);
        tidegate_budget_free(healthy_budget);
    }
}

#[test]
fn a_panic_poisons_a_flow_governor_and_free_still_works() {
    let policy = tidegate_flow_policy_default();
    let mut governor = null_mut();
    unsafe {
        assert_eq!(tidegate_flow_governor_new(&policy, 0, &mut governor), S::Ok);
        let mut admission = Out::<TidegateAdmission>::new();
        assert_eq!(
            tidegate_flow_governor_on_new_flow(governor, 0, 1, 1, 0, admission.ptr()),
            S::Ok
        );
        let flow = admission.value().flow;
        force_panic(|| testing_panic_inside_flow_governor(governor));
        check_poisoned_governor(governor, flow);
        tidegate_flow_governor_free(governor);
    }
}

/// A governor, a budget and a race, with one flow admitted under the budget and its race given
/// an address: a poll of the race that went through would start an attempt.
struct Trio {
    governor: *mut TidegateFlowGovernor,
    budget: *mut TidegateBudget,
    race: *mut TidegateEyeballs,
    flow: u64,
}

impl Trio {
    fn new() -> Trio {
        let (mut governor, mut budget, mut race) = (null_mut(), null_mut(), null_mut());
        unsafe {
            let policy = tidegate_flow_policy_default();
            assert_eq!(tidegate_flow_governor_new(&policy, 0, &mut governor), S::Ok);
            let config = tidegate_budget_config_default();
            assert_eq!(tidegate_budget_new(&config, &mut budget), S::Ok);
            let config = tidegate_eyeballs_config_default();
            assert_eq!(tidegate_eyeballs_new(&config, 0, &mut race), S::Ok);
            let mut admission = Out::<TidegateAdmission>::new();
            let mut refusal = Out::<TidegateBudgetRefusal>::new();
            assert_eq!(
                tidegate_flow_governor_on_new_flow_with_budget(
                    governor,
                    budget,
                    0,
                    1,
                    1,
                    0,
                    admission.ptr(),
                    refusal.ptr()
                ),
                S::Ok
            );
            let flow = admission.value().flow;
            let address = TidegateSocketAddress {
                ip: [0x20, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                port: 443,
                family: TidegateAddressFamily::Ipv6 as u8,
                reserved: 0,
                scope_id: 0,
            };
            let mut added = 0;
            let ipv6 = TidegateAddressFamily::Ipv6 as u32;
            assert_eq!(
                tidegate_eyeballs_on_resolved(race, 0, ipv6, &address, 1, &mut added),
                S::Ok
            );
            Trio {
                governor,
                budget,
                race,
                flow,
            }
        }
    }

    /// What each handle shows, for the handles that are healthy (`None` for a poisoned one).
    fn view(
        &self,
    ) -> (
        Option<TidegateFlowStats>,
        Option<TidegateBudgetStats>,
        Option<TidegateEyeballsStats>,
    ) {
        unsafe {
            let mut flows = Out::<TidegateFlowStats>::new();
            let mut budget = Out::<TidegateBudgetStats>::new();
            let mut race = Out::<TidegateEyeballsStats>::new();
            (
                (tidegate_flow_governor_stats(self.governor, flows.ptr()) == S::Ok)
                    .then(|| flows.value()),
                (tidegate_budget_stats(self.budget, budget.ptr()) == S::Ok).then(|| budget.value()),
                (tidegate_eyeballs_stats(self.race, race.ptr()) == S::Ok).then(|| race.value()),
            )
        }
    }
}

impl Drop for Trio {
    fn drop(&mut self) {
        unsafe {
            tidegate_eyeballs_free(self.race);
            tidegate_budget_free(self.budget);
            tidegate_flow_governor_free(self.governor);
        }
    }
}

#[test]
fn a_panic_inside_a_flow_race_poisons_all_three_handles() {
    let t = Trio::new();
    let healthy = Trio::new();
    unsafe {
        force_panic(|| testing_panic_inside_race(t.governor, t.budget, t.race));
        check_poisoned_with_budget(t.governor, t.budget, t.race, t.flow);
        check_poisoned_race_polled_by_governor(healthy.governor, healthy.budget, t.race, t.flow);
        check_poisoned_governor(t.governor, t.flow);
        check_poisoned_budget(t.budget, healthy.race);
        check_poisoned_race(t.race, healthy.budget);
    }
    assert_eq!(t.view(), (None, None, None));
}

#[test]
fn one_poisoned_handle_refuses_the_flow_calls_and_the_healthy_ones_are_unchanged() {
    type Force = unsafe fn(&Trio) -> TidegateStatus;
    let poison: [(&str, Force); 3] = [
        ("governor", |t| unsafe {
            testing_panic_inside_flow_governor(t.governor)
        }),
        ("budget", |t| unsafe {
            testing_panic_inside_budget_only(t.budget)
        }),
        ("race", |t| unsafe { testing_panic_inside_eyeballs(t.race) }),
    ];
    for (which, force) in poison {
        let t = Trio::new();
        let (flows, budget, race) = t.view();
        force_panic(|| unsafe { force(&t) });
        unsafe {
            if which == "race" {
                check_poisoned_race_polled_by_governor(t.governor, t.budget, t.race, t.flow);
            } else {
                check_poisoned_with_budget(t.governor, t.budget, t.race, t.flow);
            }
        }
        let expected = match which {
            "governor" => (None, budget, race),
            "budget" => (flows, None, race),
            _ => (flows, budget, None),
        };
        assert_eq!(t.view(), expected, "with the {which} poisoned");
        // The healthy handles still work: the governor knows the flow, the budget has room.
        unsafe {
            if which != "governor" {
                let mut state = Out::<TidegateFlowState>::new();
                assert_eq!(
                    tidegate_flow_governor_state(t.governor, t.flow, state.ptr()),
                    S::Ok
                );
                assert_eq!(state.value(), TidegateFlowState::Opening, "{which}");
            }
            if which != "budget" {
                let mut can = Out::<bool>::new();
                assert_eq!(
                    tidegate_budget_can_start_attempt(t.budget, can.ptr()),
                    S::Ok
                );
                assert!(can.value(), "{which}");
            }
        }
    }
}

#[test]
fn a_panic_poisons_a_lifecycle_and_free_still_works() {
    let config = tidegate_lifecycle_config_default();
    let mut lifecycle = null_mut();
    unsafe {
        assert_eq!(tidegate_lifecycle_new(&config, &mut lifecycle), S::Ok);
        let mut generation = 0;
        assert_eq!(
            tidegate_lifecycle_on_start(lifecycle, 0, null(), 0, &mut generation),
            S::Ok
        );
        force_panic(|| testing_panic_inside_lifecycle(lifecycle));
        check_poisoned_lifecycle(lifecycle);
        tidegate_lifecycle_free(lifecycle);
    }
}

#[test]
fn null_handles_are_not_poisoned_but_refused() {
    unsafe {
        assert_eq!(testing_panic_inside(null_mut()), S::NullArgument);
        assert_eq!(testing_panic_inside_read_only(null()), S::NullArgument);
        assert_eq!(
            testing_panic_inside_budget_only(null_mut()),
            S::NullArgument
        );
        assert_eq!(testing_panic_inside_eyeballs(null_mut()), S::NullArgument);
        assert_eq!(
            testing_panic_inside_flow_governor(null_mut()),
            S::NullArgument
        );
        assert_eq!(testing_panic_inside_lifecycle(null_mut()), S::NullArgument);
    }
}

/// The handle types of the C API and the functions that take each (first parameter), from the
/// header; `_free` is left out (it is checked by every test above freeing a poisoned handle).
fn handle_functions(header: &str) -> Vec<(String, BTreeSet<String>)> {
    let handles = [
        "TidegateTunnel",
        "TidegateBudget",
        "TidegateEyeballs",
        "TidegateFlowGovernor",
        "TidegateLifecycle",
        "TidegateProxy",
    ];
    let mut by_handle: Vec<(String, BTreeSet<String>)> = handles
        .iter()
        .map(|h| (h.to_string(), BTreeSet::new()))
        .collect();
    for line in header.lines() {
        if line.starts_with(' ') || line.starts_with('*') || line.starts_with('/') {
            continue;
        }
        let Some(at) = line.find("tidegate_") else {
            continue;
        };
        let Some(open) = line[at..].find('(') else {
            continue;
        };
        let name = &line[at..at + open];
        let first = line[at + open + 1..].split([',', ')']).next().unwrap_or("");
        let ty = first
            .trim_start_matches("const ")
            .trim_start_matches("struct ")
            .split([' ', '*'])
            .next()
            .unwrap_or("");
        if name.ends_with("_free") {
            continue;
        }
        if let Some((_, names)) = by_handle.iter_mut().find(|(h, _)| h == ty) {
            names.insert(name.to_owned());
        }
    }
    by_handle
}

#[test]
fn every_handle_function_is_checked_poisoned() {
    let header = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../include/tidegate.h"),
    )
    .expect("read include/tidegate.h");
    let mut checked: Vec<BTreeSet<&str>> = Vec::new();
    unsafe {
        let mut tunnel = null_mut();
        assert_eq!(
            tidegate_tunnel_new(&tidegate_tunnel_config_default(), &mut tunnel),
            S::Ok
        );
        force_panic(|| testing_panic_inside(tunnel));
        checked.push(check_poisoned_tunnel(tunnel).0);
        tidegate_tunnel_free(tunnel);

        let mut budget = null_mut();
        let mut race = null_mut();
        let mut healthy_budget = null_mut();
        let mut healthy_race = null_mut();
        tidegate_budget_new(&tidegate_budget_config_default(), &mut budget);
        tidegate_budget_new(&tidegate_budget_config_default(), &mut healthy_budget);
        tidegate_eyeballs_new(&tidegate_eyeballs_config_default(), 0, &mut race);
        tidegate_eyeballs_new(&tidegate_eyeballs_config_default(), 0, &mut healthy_race);
        force_panic(|| testing_panic_inside_budget(race, budget));
        checked.push(check_poisoned_budget(budget, healthy_race).0);
        checked.push(check_poisoned_race(race, healthy_budget).0);
        for race in [race, healthy_race] {
            tidegate_eyeballs_free(race);
        }
        for budget in [budget, healthy_budget] {
            tidegate_budget_free(budget);
        }

        let mut governor = null_mut();
        tidegate_flow_governor_new(&tidegate_flow_policy_default(), 0, &mut governor);
        force_panic(|| testing_panic_inside_flow_governor(governor));
        checked.push(check_poisoned_governor(governor, 1).0);
        let healthy = Trio::new();
        checked.push(check_poisoned_with_budget(governor, healthy.budget, healthy.race, 1).0);
        tidegate_flow_governor_free(governor);

        let mut proxy = null_mut();
        tidegate_proxy_new(&tidegate_proxy_config_default(), 0, &mut proxy);
        force_panic(|| testing_panic_inside_proxy(proxy));
        checked.push(check_poisoned_proxy(proxy, 1).0);
        tidegate_proxy_free(proxy);

        let mut lifecycle = null_mut();
        tidegate_lifecycle_new(&tidegate_lifecycle_config_default(), &mut lifecycle);
        force_panic(|| testing_panic_inside_lifecycle(lifecycle));
        checked.push(check_poisoned_lifecycle(lifecycle).0);
        tidegate_lifecycle_free(lifecycle);
    }
    let all_checked: BTreeSet<&str> = checked.iter().flatten().copied().collect();
    for (handle, functions) in handle_functions(&header) {
        assert!(
            functions.len() >= 8,
            "the header parse found {functions:?} for {handle}"
        );
        let missing: Vec<_> = functions
            .iter()
            .filter(|f| !all_checked.contains(f.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "{handle} functions not checked on a poisoned handle: {missing:?}"
        );
    }
}
