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
        c.poisoned_out("tidegate_black_box_capture_tunnel", |out| {
            tidegate_black_box_capture_tunnel(out, t)
        });
        c.poisoned_out("tidegate_tunnel_on_pressure", |out| {
            tidegate_tunnel_on_pressure(t, 1, 1, out)
        });
        c.poisoned_out("tidegate_tunnel_limits", |out| {
            tidegate_tunnel_limits(t, out)
        });
        assert_eq!(testing_panic_inside(t), S::Poisoned);
        assert_eq!(testing_panic_inside_read_only(t), S::Poisoned);
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
            tidegate_proxy_on_new_flow(p, 1, 1, 1, 0, 0, out)
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
        c.poisoned_out("tidegate_black_box_capture_proxy", |out| {
            tidegate_black_box_capture_proxy(out, p)
        });
        c.poisoned(
            "tidegate_proxy_set_max_connecting",
            tidegate_proxy_set_max_connecting(p, 1),
        );
        c.poisoned(
            "tidegate_proxy_on_pressure",
            tidegate_proxy_on_pressure(p, 1, 1),
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
            tidegate_proxy_on_new_flow(proxy, 0, 1, 1, 0, 0, admission.ptr()),
            S::Ok
        );
        let flow = admission.value().flow;
        force_panic(|| testing_panic_inside_proxy(proxy));
        check_poisoned_proxy(proxy, flow);
        tidegate_proxy_free(proxy);
    }
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
        c.poisoned_out("tidegate_lifecycle_on_path_change", |out| {
            tidegate_lifecycle_on_path_change(l, 1, 7, out)
        });
        c.poisoned_out("tidegate_lifecycle_on_wake", |out| {
            tidegate_lifecycle_on_wake(l, 1, u64::MAX, out)
        });
        c.poisoned(
            "tidegate_lifecycle_on_restart_done",
            tidegate_lifecycle_on_restart_done(l, 1, 1, 1),
        );
        c.poisoned(
            "tidegate_lifecycle_on_restart_failed",
            tidegate_lifecycle_on_restart_failed(l, 1, 1, 1),
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
        c.poisoned_out("tidegate_black_box_capture_lifecycle", |out| {
            tidegate_black_box_capture_lifecycle(out, l)
        });
        c.poisoned_out("tidegate_lifecycle_stats", |out| {
            tidegate_lifecycle_stats(l, out)
        });
        assert_eq!(testing_panic_inside_lifecycle(l), S::Poisoned);
    }
    c
}

unsafe fn check_poisoned_memory(m: *mut TidegateMemory) -> Checked {
    let mut c = Checked::default();
    unsafe {
        c.poisoned(
            "tidegate_memory_on_headroom",
            tidegate_memory_on_headroom(m, 1, 1),
        );
        c.poisoned(
            "tidegate_memory_on_footprint",
            tidegate_memory_on_footprint(m, 1, 1),
        );
        c.poisoned_out("tidegate_memory_reserve", |out| {
            tidegate_memory_reserve(m, 1, 1, out)
        });
        c.poisoned("tidegate_memory_release", tidegate_memory_release(m, 1, 1));
        c.poisoned_out("tidegate_memory_poll_pressure", |level| {
            let mut changed = Out::<bool>::new();
            let status = tidegate_memory_poll_pressure(m, level, changed.ptr());
            assert!(changed.untouched());
            status
        });
        c.poisoned_out("tidegate_memory_poll_timeout", |out| {
            tidegate_memory_poll_timeout(m, out)
        });
        c.poisoned(
            "tidegate_memory_handle_timeout",
            tidegate_memory_handle_timeout(m, 1),
        );
        c.poisoned_out("tidegate_memory_stats", |out| tidegate_memory_stats(m, out));
        c.poisoned_out("tidegate_black_box_capture_memory", |out| {
            tidegate_black_box_capture_memory(out, m)
        });
        assert_eq!(testing_panic_inside_memory(m), S::Poisoned);
    }
    c
}

#[test]
fn a_panic_poisons_a_memory_governor_and_free_still_works() {
    let mut memory = null_mut();
    unsafe {
        assert_eq!(
            tidegate_memory_new(&tidegate_memory_config_packet_tunnel(), &mut memory),
            S::Ok
        );
        assert_eq!(tidegate_memory_on_headroom(memory, 0, 1 << 20), S::Ok);
        force_panic(|| testing_panic_inside_memory(memory));
        check_poisoned_memory(memory);
        tidegate_memory_free(memory);
    }
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
        assert_eq!(testing_panic_inside_proxy(null_mut()), S::NullArgument);
        assert_eq!(testing_panic_inside_lifecycle(null_mut()), S::NullArgument);
        assert_eq!(testing_panic_inside_memory(null_mut()), S::NullArgument);
    }
}

/// The handle types of the C API and the functions that take each (first parameter), from the
/// header; `_free` is left out (it is checked by every test above freeing a poisoned handle).
fn handle_functions(header: &str) -> Vec<(String, BTreeSet<String>)> {
    let handles = [
        "TidegateTunnel",
        "TidegateLifecycle",
        "TidegateProxy",
        "TidegateMemory",
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

        let mut memory = null_mut();
        tidegate_memory_new(&tidegate_memory_config_app_proxy(), &mut memory);
        force_panic(|| testing_panic_inside_memory(memory));
        checked.push(check_poisoned_memory(memory).0);
        tidegate_memory_free(memory);
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
