//! The bad-input matrix: every function the C header exports, against every bad input that
//! applies to it (NULL handles, NULL out-parameters, NULL data with a length, zero and oversized
//! lengths, unknown enum integers, invalid configurations, stale and forged ids and generations,
//! double completions, completions of more than is in flight or pending, clocks going backwards,
//! calls in the wrong state).
//!
//! Each bad call must return its documented status and change nothing: a snapshot of every
//! observable (stats, levels, states, deadlines) taken before and after is equal, except for the
//! counters the documentation promises for refused input (the tunnel's empty and oversized packet
//! counters, the budget's refusal and unbalanced-release counters, the lifecycle's refused and
//! stale report counters and rejected journals). Out-parameters of a failing call are checked
//! byte for byte to be untouched (see `tidegate_tests::out_param`). Beyond the snapshot, every
//! refused call is made on one of two identical engines, and both are then drained of their
//! outputs (packets, actions, notifications, effects): the two streams must be the same, so a
//! change the stats do not show is caught too.
//!
//! Bad calls are made at the engine's latest time or earlier: an input's `now` is time passing
//! (timers due by then apply, refused or not), so a later `now` is not a bad input.
//!
//! `every_exported_function_has_a_matrix_entry` reads `include/tidegate.h` and fails if a
//! function there has no entry in [`MATRIX`] (or an entry names a function that is gone).

#![allow(clippy::undocumented_unsafe_blocks)] // every case calls the C ABI with pointers it owns

use std::collections::BTreeSet;
use std::ffi::CStr;
use std::fmt::Debug;
use std::ptr::{null, null_mut};

use tidegate::*;
use tidegate_tests::out_param::Out;

/// The latest time every fixture has seen, in microseconds.
const NOW: u64 = 10_000_000;
/// A time before [`NOW`]: a clock going backwards.
const EARLIER: u64 = 1_000;

/// One entry per exported function: its C name and the case that runs its bad inputs.
macro_rules! matrix {
    ($($case:ident),* $(,)?) => {
        &[$((concat!("tidegate_", stringify!($case)), $case as fn())),*]
    };
}

const MATRIX: &[(&str, fn())] = matrix![
    status_str,
    version,
    // Packet tunnel.
    tunnel_config_default,
    tunnel_config_for_ceiling,
    tunnel_min_ceiling,
    tunnel_footprint,
    tunnel_new,
    tunnel_init,
    tunnel_free,
    tunnel_can_read_outbound,
    tunnel_on_outbound_packet,
    tunnel_on_outbound_batch,
    tunnel_poll_outbound,
    tunnel_complete_outbound,
    tunnel_on_outbound_transmitted,
    tunnel_on_outbound_queued_below,
    tunnel_on_inbound_packet,
    tunnel_poll_inbound,
    tunnel_complete_inbound,
    tunnel_stats,
    tunnel_on_pressure,
    tunnel_limits,
    // Flow keys and errno classes, for proxy hosts.
    flow_key,
    black_box_capture_lifecycle,
    black_box_capture_tunnel,
    black_box_capture_proxy,
    black_box_capture_memory,
    black_box_encode,
    black_box_decode,
    errno_class,
    // Proxy engine.
    proxy_config_default,
    proxy_footprint,
    proxy_new,
    proxy_init,
    proxy_free,
    proxy_on_new_flow,
    proxy_on_connecting,
    proxy_on_connected,
    proxy_on_connect_failed,
    proxy_on_closed,
    proxy_on_bytes,
    proxy_can_read,
    proxy_on_resolved,
    proxy_on_resolution_failed,
    proxy_on_resolution_done,
    proxy_on_attempt_connected,
    proxy_on_attempt_failed,
    proxy_poll_events,
    proxy_poll_timeout,
    proxy_handle_timeout,
    proxy_flow,
    proxy_app_state,
    proxy_stats,
    proxy_set_max_connecting,
    proxy_set_fd_limit,
    proxy_on_resource_error,
    proxy_try_open_connection,
    proxy_on_connection_closed,
    proxy_on_pressure,
    // Memory governor.
    memory_config_packet_tunnel,
    memory_config_app_proxy,
    memory_footprint,
    memory_new,
    memory_init,
    memory_free,
    memory_on_headroom,
    memory_on_footprint,
    memory_reserve,
    memory_release,
    memory_poll_pressure,
    memory_poll_timeout,
    memory_handle_timeout,
    memory_stats,
    // Lifecycle.
    lifecycle_config_default,
    lifecycle_footprint,
    lifecycle_new,
    lifecycle_init,
    lifecycle_free,
    lifecycle_on_start,
    lifecycle_on_tunnel_started,
    lifecycle_on_stop,
    lifecycle_on_cancel,
    lifecycle_on_torn_down,
    lifecycle_register_task,
    lifecycle_on_task_done,
    lifecycle_on_task_failed,
    lifecycle_on_journal_persisted,
    lifecycle_on_path_change,
    lifecycle_on_wake,
    lifecycle_on_restart_done,
    lifecycle_on_restart_failed,
    lifecycle_write_journal,
    lifecycle_journal_len,
    lifecycle_poll_effect,
    lifecycle_poll_timeout,
    lifecycle_handle_timeout,
    lifecycle_state,
    lifecycle_stats,
];

/// Functions only the bare-metal library has (`TIDEGATE_NO_STD`), which this host build cannot
/// call; `tests/embedded/main.c` calls them on the microcontroller.
const BARE_METAL_ONLY: [&str; 1] = ["tidegate_set_panic_hook"];

#[test]
fn every_exported_function_has_a_matrix_entry() {
    let header = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../include/tidegate.h"),
    )
    .expect("read include/tidegate.h");
    let exported = exported_functions(&header);
    assert!(exported.len() >= 60, "the header parse found {exported:?}");
    let covered: BTreeSet<&str> = MATRIX.iter().map(|(name, _)| *name).collect();
    assert_eq!(covered.len(), MATRIX.len(), "one entry per function");
    let missing: Vec<_> = exported
        .iter()
        .filter(|n| !covered.contains(n.as_str()) && !BARE_METAL_ONLY.contains(&n.as_str()))
        .collect();
    let gone: Vec<_> = covered.iter().filter(|n| !exported.contains(**n)).collect();
    assert!(
        missing.is_empty(),
        "exported functions without a bad-input matrix entry: {missing:?}"
    );
    assert!(
        gone.is_empty(),
        "matrix entries for functions not in the header: {gone:?}"
    );
}

#[test]
fn every_function_refuses_every_bad_input_and_changes_nothing() {
    let mut failed = Vec::new();
    for (name, case) in MATRIX {
        if std::panic::catch_unwind(case).is_err() {
            failed.push(*name);
        }
    }
    assert!(failed.is_empty(), "bad-input cases failed for: {failed:?}");
}

/// The names of the functions `header` declares: `tidegate_*` followed by `(` on a line that is
/// not part of a comment.
fn exported_functions(header: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut in_comment = false;
    for line in header.lines() {
        let line = line.trim();
        if in_comment {
            in_comment = !line.contains("*/");
            continue;
        }
        if line.starts_with("/*") {
            in_comment = !line.contains("*/");
            continue;
        }
        if line.starts_with("//") || line.starts_with('#') {
            continue;
        }
        let Some(at) = line.find("tidegate_") else {
            continue;
        };
        let rest = &line[at..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if rest[end..].starts_with('(') {
            names.insert(rest[..end].to_owned());
        }
    }
    names
}

// ---- the checking machinery --------------------------------------------------------------------

/// An engine in a known state, built the same way every time.
trait Fixture {
    /// Everything observable without changing the engine.
    type Snapshot: PartialEq + Debug + Clone;
    fn snapshot(&self) -> Self::Snapshot;
    /// Take every output the engine has for the host at its latest time, recording it.
    fn drain(&mut self) -> Vec<String>;
}

/// `call` on a fresh fixture returns `expected` and changes nothing but what `counted` applies
/// to the snapshot (the documented counters of refused input): the snapshot after equals the one
/// before, and draining it gives the same outputs as draining an identical fixture left alone.
#[track_caller]
fn refused<F: Fixture>(
    make: impl Fn() -> F,
    expected: TidegateStatus,
    counted: impl Fn(&mut F::Snapshot),
    call: impl FnOnce(&mut F) -> TidegateStatus,
) {
    let mut subject = make();
    let mut twin = make();
    let before = subject.snapshot();
    assert_eq!(before, twin.snapshot(), "fixtures are deterministic");
    assert_eq!(call(&mut subject), expected);
    let mut want = before;
    counted(&mut want);
    assert_eq!(
        subject.snapshot(),
        want,
        "the refused call changed the engine"
    );
    assert_eq!(
        subject.drain(),
        twin.drain(),
        "the refused call changed what the engine does next"
    );
    let mut want = twin.snapshot();
    counted(&mut want);
    assert_eq!(subject.snapshot(), want);
}

/// As [`refused`], for a call that changes nothing at all.
#[track_caller]
fn unchanged<F: Fixture>(
    make: impl Fn() -> F,
    expected: TidegateStatus,
    call: impl FnOnce(&mut F) -> TidegateStatus,
) {
    refused(make, expected, |_| {}, call);
}

/// `subject` and `reference` on two identical fixtures return the same status and leave them in
/// the same state, with the same outputs to come (for a `now` in the past, treated as the latest).
#[track_caller]
fn same_as<F: Fixture>(
    make: impl Fn() -> F,
    subject: impl FnOnce(&mut F) -> TidegateStatus,
    reference: impl FnOnce(&mut F) -> TidegateStatus,
) {
    let mut a = make();
    let mut b = make();
    assert_eq!(subject(&mut a), reference(&mut b));
    assert_eq!(a.snapshot(), b.snapshot());
    assert_eq!(a.drain(), b.drain());
    assert_eq!(a.snapshot(), b.snapshot());
}

/// Run `call` with a fresh out-parameter and check the call left it untouched.
#[track_caller]
fn untouched<T>(call: impl FnOnce(*mut T) -> TidegateStatus) -> TidegateStatus {
    let mut out = Out::<T>::new();
    let status = call(out.ptr());
    assert!(
        out.untouched(),
        "the failing call ({status:?}) wrote its out-parameter"
    );
    status
}

/// Run `call` with a fresh out-parameter, check it succeeded, and return what it wrote.
#[track_caller]
fn written<T: Copy>(call: impl FnOnce(*mut T) -> TidegateStatus) -> T {
    let mut out = Out::<T>::new();
    assert_eq!(call(out.ptr()), TidegateStatus::Ok);
    // SAFETY: the call succeeded, so it wrote a valid `T`.
    unsafe { out.value() }
}

/// A NULL handle: `NULL_ARGUMENT`, out-parameter untouched.
#[track_caller]
fn null_handle<T>(call: impl FnOnce(*mut T) -> TidegateStatus) {
    assert_eq!(untouched(call), TidegateStatus::NullArgument);
}

/// A call that checks a configuration: a NULL configuration or out-parameter is
/// `NULL_ARGUMENT` with the out-parameter untouched, and each bad configuration gets its status
/// with the out-parameter untouched, or `NULL_ARGUMENT` with a NULL out-parameter (checked first).
#[track_caller]
fn configs_refused<C: Debug, T>(
    good: &C,
    bad: impl IntoIterator<Item = (C, TidegateStatus)>,
    call: impl Fn(*const C, *mut T) -> TidegateStatus,
) {
    assert_eq!(
        untouched(|out| call(null(), out)),
        TidegateStatus::NullArgument
    );
    assert_eq!(call(good, null_mut()), TidegateStatus::NullArgument);
    for (bad, status) in bad {
        assert_eq!(untouched(|out| call(&bad, out)), status, "{bad:?}");
        assert_eq!(
            call(&bad, null_mut()),
            TidegateStatus::NullArgument,
            "{bad:?}"
        );
    }
}

use TidegateStatus as S;

/// An `_init` function: bad configurations are refused as `_new` refuses them; then NULL memory
/// (`NULL_ARGUMENT`), memory one byte short (`BUFFER_TOO_SMALL`) and memory one byte past the
/// alignment (`MISALIGNED`) are refused with the memory and the out-parameter untouched, and
/// memory of the footprint's size and alignment holds an engine whose handle is the memory.
#[track_caller]
fn init_refuses<C: Debug, H>(
    good: &C,
    bad: impl IntoIterator<Item = (C, TidegateStatus)>,
    footprint: impl Fn(*const C, *mut usize, *mut usize) -> TidegateStatus,
    init: impl Fn(*const C, *mut std::ffi::c_void, usize, *mut *mut H) -> TidegateStatus,
    free: unsafe extern "C" fn(*mut H),
) {
    let (mut size, mut align) = (0, 0);
    assert_eq!(footprint(good, &mut size, &mut align), S::Ok);
    assert!(size > 0 && align.is_power_of_two());
    let mut buffer = vec![0xAA_u8; size + 2 * align];
    let start = buffer.as_ptr().align_offset(align);
    let aligned = buffer[start..].as_mut_ptr().cast::<std::ffi::c_void>();
    configs_refused(good, bad, |config, out| init(config, aligned, size, out));
    let cases: [(*mut std::ffi::c_void, usize, TidegateStatus); 3] = [
        (null_mut(), size, S::NullArgument),
        (aligned, size - 1, S::BufferTooSmall),
        // SAFETY: one byte into the buffer, which has `2 * align` bytes to spare.
        (unsafe { aligned.byte_add(1) }, size, S::Misaligned),
    ];
    for (memory, len, status) in cases {
        if status == S::Misaligned && align == 1 {
            continue;
        }
        assert_eq!(untouched(|out| init(good, memory, len, out)), status);
        assert!(
            buffer.iter().all(|&b| b == 0xAA),
            "a refused _init wrote the memory ({status:?})"
        );
    }
    assert_eq!(
        init(good, aligned, size, null_mut()),
        S::NullArgument,
        "the out-pointer is checked first"
    );
    let handle = written(|out| init(good, aligned, size, out));
    assert_eq!(handle.cast::<std::ffi::c_void>(), aligned);
    // SAFETY: a live handle placed in `buffer`, freed once; `buffer` outlives it.
    unsafe { free(handle) };
}

// ---- status and version ------------------------------------------------------------------------

fn status_str() {
    for &status in TidegateStatus::ALL {
        // SAFETY: tidegate_status_str returns a static NUL-terminated string.
        let message = unsafe { CStr::from_ptr(tidegate_status_str(status as u32)) };
        assert_ne!(message.to_str().unwrap(), "unknown status");
    }
    // Values between, past and far past the known codes.
    for unknown in [7, 9, 21, 29, 34, 59, 84, 99, 139, 9999, u32::MAX] {
        let message = tidegate_status_str(unknown);
        assert!(!message.is_null());
        // SAFETY: never NULL, static and NUL-terminated.
        let message = unsafe { CStr::from_ptr(message) };
        assert_eq!(
            message.to_str().unwrap(),
            "unknown status",
            "code {unknown}"
        );
    }
}

fn version() {
    // No input applies; the string is static, NUL-terminated and stable.
    let first = tidegate_version();
    assert_eq!(first, tidegate_version());
    // SAFETY: static and NUL-terminated.
    let version = unsafe { CStr::from_ptr(first) };
    assert_eq!(version.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
}

// ---- packet tunnel -----------------------------------------------------------------------------

struct Tunnel(*mut TidegateTunnel);

impl Drop for Tunnel {
    fn drop(&mut self) {
        unsafe { tidegate_tunnel_free(self.0) }
    }
}

fn tunnel_config() -> TidegateTunnelConfig {
    TidegateTunnelConfig {
        outbound_bytes: 8192,
        outbound_packets: 16,
        inbound_bytes: 4096,
        inbound_packets: 8,
        max_packet_len: 1000,
        outbound_high_watermark_bytes: 4096,
        outbound_low_watermark_bytes: 2048,
        outbound_high_watermark_packets: 12,
        outbound_low_watermark_packets: 4,
        ..tidegate_tunnel_config_default()
    }
}

const PACKET: [u8; 1001] = {
    let mut packet = [0u8; 1001];
    let mut i = 0;
    while i < packet.len() {
        packet[i] = i as u8;
        i += 1;
    }
    packet
};

impl Tunnel {
    /// A tunnel with nothing in it.
    fn empty() -> Tunnel {
        let mut handle = null_mut();
        assert_eq!(
            unsafe { tidegate_tunnel_new(&tunnel_config(), &mut handle) },
            S::Ok
        );
        Tunnel(handle)
    }

    /// Reading paused (six 700-byte packets outbound, two of them in flight), three inbound
    /// packets, one in flight; latest time [`NOW`].
    fn busy() -> Tunnel {
        let t = Tunnel::empty();
        unsafe {
            for i in 0..6u64 {
                let packet = PACKET[i as usize..].as_ptr();
                let status = tidegate_tunnel_on_outbound_packet(t.0, NOW - 1000 + i, packet, 700);
                assert_eq!(status, S::Ok);
            }
            let mut views = [TidegatePacketView {
                data: null(),
                len: 0,
            }; 2];
            let mut count = 0;
            tidegate_tunnel_poll_outbound(t.0, NOW - 500, views.as_mut_ptr(), 2, &mut count);
            assert_eq!(count, 2);
            for i in 0..3u64 {
                let mut disposition = TidegateInboundDisposition::DroppedNewest;
                let packet = PACKET[10 + i as usize..].as_ptr();
                tidegate_tunnel_on_inbound_packet(t.0, NOW - 400, packet, 500, &mut disposition);
                assert_eq!(disposition, TidegateInboundDisposition::Queued);
            }
            tidegate_tunnel_poll_inbound(t.0, NOW, views.as_mut_ptr(), 1, &mut count);
            assert_eq!(count, 1);
        }
        assert!(!t.snapshot().1, "reading is paused");
        t
    }

    /// As [`Tunnel::busy`], with the outbound ring filled until a packet had no room.
    fn full() -> Tunnel {
        let t = Tunnel::busy();
        let status = loop {
            let status =
                unsafe { tidegate_tunnel_on_outbound_packet(t.0, NOW, PACKET.as_ptr(), 1000) };
            if status != S::Ok {
                break status;
            }
        };
        assert_eq!(status, S::NoRoom);
        t
    }
}

impl Fixture for Tunnel {
    type Snapshot = (TidegateTunnelStats, bool, TidegateTunnelLimits);

    fn snapshot(&self) -> Self::Snapshot {
        unsafe {
            let stats = written(|out| tidegate_tunnel_stats(self.0, out));
            let can_read = written(|out| tidegate_tunnel_can_read_outbound(self.0, out));
            let limits = written(|out| tidegate_tunnel_limits(self.0, out));
            (stats, can_read, limits)
        }
    }

    fn drain(&mut self) -> Vec<String> {
        let mut log = Vec::new();
        unsafe {
            type Poll = unsafe extern "C" fn(
                *mut TidegateTunnel,
                u64,
                *mut TidegatePacketView,
                usize,
                *mut usize,
            ) -> TidegateStatus;
            for (direction, poll) in [
                ("out", tidegate_tunnel_poll_outbound as Poll),
                ("in", tidegate_tunnel_poll_inbound as Poll),
            ] {
                let mut views = [TidegatePacketView {
                    data: null(),
                    len: 0,
                }; 4];
                loop {
                    let mut count = 0;
                    assert_eq!(poll(self.0, NOW, views.as_mut_ptr(), 4, &mut count), S::Ok);
                    if count == 0 {
                        break;
                    }
                    for view in &views[..count] {
                        let bytes = std::slice::from_raw_parts(view.data, view.len);
                        log.push(format!("{direction} {} bytes from {}", view.len, bytes[0]));
                    }
                }
            }
            // Complete everything in flight, oldest first.
            let (stats, _, _) = self.snapshot();
            let mut resume = false;
            let outbound = stats.outbound.packets_in_flight as usize;
            let inbound = stats.inbound.packets_in_flight as usize;
            assert_eq!(
                tidegate_tunnel_complete_outbound(self.0, NOW, outbound, &mut resume),
                S::Ok
            );
            assert_eq!(
                tidegate_tunnel_complete_inbound(self.0, NOW, inbound),
                S::Ok
            );
            log.push(format!(
                "completed {outbound} out, {inbound} in, resume {resume}"
            ));
        }
        log
    }
}

/// Configurations `tidegate_tunnel_new` and `_footprint` refuse, with the status for each.
/// A valid flow-queue configuration: `tunnel_config()`'s sizes in whole 1024-byte cells.
fn fq_good() -> TidegateTunnelConfig {
    let good = tunnel_config();
    let fq = TidegateTunnelConfig {
        aqm: TidegateAqm::FqCodel as u32,
        flow_queues: 8,
        outbound_bytes: good.outbound_packets * 1024,
        inbound_bytes: good.inbound_packets * 1024,
        ..good
    };
    let mut size = 0;
    // SAFETY: valid pointers to locals.
    let status = unsafe { tidegate_tunnel_footprint(&fq, &mut size, &mut 0) };
    assert_eq!(status, S::Ok, "the flow-queue base case is valid");
    fq
}

fn bad_tunnel_configs() -> Vec<(TidegateTunnelConfig, TidegateStatus)> {
    let good = tunnel_config();
    let codel = TidegateAqm::Codel as u32;
    vec![
        (
            TidegateTunnelConfig {
                outbound_bytes: 0,
                ..good
            },
            S::ConfigZeroCapacity,
        ),
        (
            TidegateTunnelConfig {
                inbound_packets: 0,
                ..good
            },
            S::ConfigZeroCapacity,
        ),
        (
            TidegateTunnelConfig {
                max_packet_len: 0,
                ..good
            },
            S::ConfigZeroMaxPacketLen,
        ),
        (
            TidegateTunnelConfig {
                inbound_bytes: u32::MAX,
                ..good
            },
            S::ConfigRingTooLarge,
        ),
        (
            TidegateTunnelConfig {
                inbound_bytes: 999,
                ..good
            },
            S::ConfigInboundSmallerThanPacket,
        ),
        (
            TidegateTunnelConfig {
                outbound_low_watermark_bytes: 4096,
                ..good
            },
            S::ConfigWatermarksOutOfOrder,
        ),
        (
            TidegateTunnelConfig {
                outbound_low_watermark_packets: 13,
                ..good
            },
            S::ConfigWatermarksOutOfOrder,
        ),
        (
            TidegateTunnelConfig {
                outbound_high_watermark_bytes: 6193,
                ..good
            },
            S::ConfigNoHeadroom,
        ),
        (
            TidegateTunnelConfig {
                outbound_high_watermark_packets: 16,
                ..good
            },
            S::ConfigNoSlotHeadroom,
        ),
        (
            TidegateTunnelConfig {
                inbound_drop_policy: 2,
                ..good
            },
            S::ConfigUnknownDropPolicy,
        ),
        (
            TidegateTunnelConfig {
                inbound_drop_policy: u32::MAX,
                ..good
            },
            S::ConfigUnknownDropPolicy,
        ),
        // 256 would read as 0 if the value were truncated to a byte.
        (
            TidegateTunnelConfig {
                inbound_drop_policy: 256,
                ..good
            },
            S::ConfigUnknownDropPolicy,
        ),
        (TidegateTunnelConfig { aqm: 3, ..good }, S::ConfigUnknownAqm),
        // Flow queues only with FQ-CoDel, and FQ-CoDel's own rules.
        (
            TidegateTunnelConfig {
                flow_queues: 8,
                ..good
            },
            S::ConfigInvalidAqm,
        ),
        (
            TidegateTunnelConfig {
                flow_queues: 0,
                ..fq_good()
            },
            S::ConfigInvalidAqm,
        ),
        (
            TidegateTunnelConfig {
                flow_queues: 65_537,
                ..fq_good()
            },
            S::ConfigInvalidAqm,
        ),
        (
            TidegateTunnelConfig {
                flow_quantum_bytes: 255,
                ..fq_good()
            },
            S::ConfigInvalidAqm,
        ),
        (
            TidegateTunnelConfig {
                outbound_bytes: 16 * 1024 - 1,
                ..fq_good()
            },
            S::ConfigArenaNotWholeCells,
        ),
        (
            TidegateTunnelConfig {
                inbound_packets: 9,
                ..fq_good()
            },
            S::ConfigArenaNotWholeCells,
        ),
        (
            TidegateTunnelConfig {
                aqm: u32::MAX,
                ..good
            },
            S::ConfigUnknownAqm,
        ),
        (
            TidegateTunnelConfig {
                queue_limit_max_bytes: 64 * 1024,
                queue_limit_min_bytes: 999,
                ..good
            },
            S::ConfigInvalidQueueLimit,
        ),
        (
            TidegateTunnelConfig {
                queue_limit_max_bytes: 2000,
                queue_limit_min_bytes: 3000,
                ..good
            },
            S::ConfigInvalidQueueLimit,
        ),
        (
            TidegateTunnelConfig {
                queue_limit_max_bytes: (1 << 30) + 1,
                ..good
            },
            S::ConfigInvalidQueueLimit,
        ),
        (
            TidegateTunnelConfig {
                queue_limit_max_bytes: 64 * 1024,
                queue_limit_hold_us: 0,
                ..good
            },
            S::ConfigZeroDuration,
        ),
        (
            TidegateTunnelConfig {
                aqm: codel,
                aqm_target_us: 0,
                ..good
            },
            S::ConfigInvalidAqm,
        ),
        (
            TidegateTunnelConfig {
                aqm: codel,
                aqm_target_us: 5000,
                aqm_interval_us: 5000,
                ..good
            },
            S::ConfigInvalidAqm,
        ),
        (
            TidegateTunnelConfig {
                packet_align: 0,
                ..good
            },
            S::ConfigBadPacketAlign,
        ),
        (
            TidegateTunnelConfig {
                packet_align: 96,
                ..good
            },
            S::ConfigBadPacketAlign,
        ),
        (
            TidegateTunnelConfig {
                packet_align: 8192,
                ..good
            },
            S::ConfigBadPacketAlign,
        ),
    ]
}

fn tunnel_config_default() {
    // No input applies: the default is valid and the same on every call.
    let config = tidegate_tunnel_config_default();
    assert_eq!(config, tidegate_tunnel_config_default());
    unsafe { written(|out| tidegate_tunnel_footprint(&config, out, &mut 0)) };
}

/// The C footprint of `config`, which the sizing calls promise stays within the ceiling.
fn c_footprint(config: &TidegateTunnelConfig) -> usize {
    unsafe { written(|out| tidegate_tunnel_footprint(config, out, &mut 0)) }
}

fn tunnel_config_for_ceiling() {
    unsafe {
        let ceiling = 64 * 1024;
        assert_eq!(
            tidegate_tunnel_config_for_ceiling(ceiling, 1500, 0, null_mut()),
            S::NullArgument
        );
        let bad = [
            (1500, 1500, 0, S::CeilingTooSmall),
            (0, 1500, 0, S::CeilingTooSmall),
            (ceiling, 0, 0, S::ConfigZeroMaxPacketLen),
            (ceiling, 1500, 3, S::ConfigUnknownAqm),
            // Flow queues: 1024 queues of 64 bytes per direction do not fit 64 KiB.
            (ceiling, 1500, 2, S::CeilingTooSmall),
            (ceiling, 1500, u32::MAX, S::ConfigUnknownAqm),
            (u64::MAX, u32::MAX, 0, S::CeilingTooSmall),
        ];
        for (ceiling, mtu, aqm, status) in bad {
            let got = untouched(|out| tidegate_tunnel_config_for_ceiling(ceiling, mtu, aqm, out));
            assert_eq!(got, status, "{ceiling} {mtu} {aqm}");
        }
        // What it gives builds a tunnel whose whole memory is within the ceiling.
        let cases = [
            (ceiling, 1500, 0),
            (50 << 20, 9000, 1),
            (u64::MAX, 1280, 1),
            (4 << 20, 1500, 2),
            (u64::MAX, 1280, 2),
        ];
        for (ceiling, mtu, aqm) in cases {
            let config = written(|out| tidegate_tunnel_config_for_ceiling(ceiling, mtu, aqm, out));
            assert!(c_footprint(&config) as u64 <= ceiling, "{config:?}");
            assert_eq!((config.max_packet_len, config.aqm), (mtu, aqm));
            let mut handle = null_mut();
            assert_eq!(tidegate_tunnel_new(&config, &mut handle), S::Ok);
            drop(Tunnel(handle));
        }
    }
}

fn tunnel_min_ceiling() {
    unsafe {
        assert_eq!(
            tidegate_tunnel_min_ceiling(1500, 0, null_mut()),
            S::NullArgument
        );
        for (mtu, aqm, status) in [
            (0, 0, S::ConfigZeroMaxPacketLen),
            (1500, 7, S::ConfigUnknownAqm),
            (u32::MAX, 0, S::ConfigRingTooLarge),
        ] {
            assert_eq!(
                untouched(|out| tidegate_tunnel_min_ceiling(mtu, aqm, out)),
                status
            );
        }
        for mtu in [1, 576, 1500, 9000, 65_535] {
            let min = written(|out| tidegate_tunnel_min_ceiling(mtu, 1, out));
            let config = written(|out| tidegate_tunnel_config_for_ceiling(min, mtu, 1, out));
            assert!(c_footprint(&config) as u64 <= min);
            assert_eq!(
                untouched(|out| tidegate_tunnel_config_for_ceiling(min - 1, mtu, 1, out)),
                S::CeilingTooSmall
            );
        }
    }
}

fn tunnel_footprint() {
    configs_refused(
        &tunnel_config(),
        bad_tunnel_configs(),
        |config, out| unsafe { tidegate_tunnel_footprint(config, out, &mut 0) },
    );
}

fn tunnel_new() {
    configs_refused(
        &tunnel_config(),
        bad_tunnel_configs(),
        |config, out| unsafe { tidegate_tunnel_new(config, out) },
    );
}

fn tunnel_init() {
    init_refuses(
        &tunnel_config(),
        bad_tunnel_configs(),
        |config, size, align| unsafe { tidegate_tunnel_footprint(config, size, align) },
        |config, memory, len, out| unsafe { tidegate_tunnel_init(config, memory, len, out) },
        tidegate_tunnel_free,
    );
}

fn tunnel_free() {
    // NULL is a no-op; a poisoned handle is freed in panic_boundary.rs.
    unsafe { tidegate_tunnel_free(null_mut()) };
}

fn tunnel_can_read_outbound() {
    unsafe {
        null_handle(|out| tidegate_tunnel_can_read_outbound(null(), out));
        unchanged(Tunnel::busy, S::NullArgument, |t| {
            tidegate_tunnel_can_read_outbound(t.0, null_mut())
        });
    }
}

/// The stats change a refused packet makes: its reason's counter, nothing else.
fn counted_outbound(
    field: fn(&mut TidegateTunnelStats) -> &mut u64,
) -> impl Fn(&mut (TidegateTunnelStats, bool, TidegateTunnelLimits)) {
    move |(stats, _, _)| *field(stats) += 1
}

fn tunnel_on_outbound_packet() {
    unsafe {
        let data = PACKET.as_ptr();
        assert_eq!(
            tidegate_tunnel_on_outbound_packet(null_mut(), NOW, data, 1),
            S::NullArgument
        );
        for now in [NOW, EARLIER] {
            unchanged(Tunnel::busy, S::NullArgument, |t| {
                tidegate_tunnel_on_outbound_packet(t.0, now, null(), 5)
            });
            let empty = counted_outbound(|s| &mut s.outbound.empty_packets);
            refused(Tunnel::busy, S::PacketEmpty, &empty, |t| {
                tidegate_tunnel_on_outbound_packet(t.0, now, null(), 0)
            });
            refused(Tunnel::busy, S::PacketEmpty, &empty, |t| {
                tidegate_tunnel_on_outbound_packet(t.0, now, data, 0)
            });
            let oversized = counted_outbound(|s| &mut s.outbound.oversized_packets);
            refused(Tunnel::busy, S::PacketTooLong, oversized, |t| {
                tidegate_tunnel_on_outbound_packet(t.0, now, data, 1001)
            });
            let no_room =
                |(stats, _, _): &mut (TidegateTunnelStats, bool, TidegateTunnelLimits)| {
                    stats.outbound_refused_packets += 1;
                    stats.outbound_refused_bytes += 1000;
                };
            refused(Tunnel::full, S::NoRoom, no_room, |t| {
                tidegate_tunnel_on_outbound_packet(t.0, now, data, 1000)
            });
        }
        // A packet at an earlier time is queued as if at the latest time.
        same_as(
            Tunnel::busy,
            |t| tidegate_tunnel_on_outbound_packet(t.0, EARLIER, data, 100),
            |t| tidegate_tunnel_on_outbound_packet(t.0, NOW, data, 100),
        );
    }
}

fn tunnel_on_outbound_batch() {
    unsafe {
        let view = |offset: usize, len: usize| TidegatePacketView {
            data: PACKET[offset..].as_ptr(),
            len,
        };
        let (mut accepted, mut stopped) = (0, S::Ok);
        let good = [view(0, 100), view(1, 200)];
        assert_eq!(
            tidegate_tunnel_on_outbound_batch(
                null_mut(),
                NOW,
                good.as_ptr(),
                2,
                &mut accepted,
                &mut stopped
            ),
            S::NullArgument
        );
        for now in [NOW, EARLIER] {
            unchanged(Tunnel::busy, S::NullArgument, |t| {
                tidegate_tunnel_on_outbound_batch(
                    t.0,
                    now,
                    good.as_ptr(),
                    2,
                    null_mut(),
                    &mut stopped,
                )
            });
            unchanged(Tunnel::busy, S::NullArgument, |t| {
                tidegate_tunnel_on_outbound_batch(
                    t.0,
                    now,
                    good.as_ptr(),
                    2,
                    &mut accepted,
                    null_mut(),
                )
            });
            unchanged(Tunnel::busy, S::NullArgument, |t| {
                tidegate_tunnel_on_outbound_batch(t.0, now, null(), 2, &mut accepted, &mut stopped)
            });
            // A bad view anywhere in the batch queues nothing, not even the packets before it.
            let holed = [
                view(0, 100),
                TidegatePacketView {
                    data: null(),
                    len: 5,
                },
            ];
            unchanged(Tunnel::busy, S::NullArgument, |t| {
                tidegate_tunnel_on_outbound_batch(
                    t.0,
                    now,
                    holed.as_ptr(),
                    2,
                    &mut accepted,
                    &mut stopped,
                )
            });
            let endless = [TidegatePacketView {
                data: PACKET.as_ptr(),
                len: usize::MAX,
            }];
            unchanged(Tunnel::busy, S::InvalidArgument, |t| {
                tidegate_tunnel_on_outbound_batch(
                    t.0,
                    now,
                    endless.as_ptr(),
                    1,
                    &mut accepted,
                    &mut stopped,
                )
            });
            unchanged(Tunnel::busy, S::InvalidArgument, |t| {
                tidegate_tunnel_on_outbound_batch(
                    t.0,
                    now,
                    good.as_ptr(),
                    usize::MAX,
                    &mut accepted,
                    &mut stopped,
                )
            });
        }
        // An empty batch queues nothing and stops at nothing.
        unchanged(Tunnel::busy, S::Ok, |t| {
            tidegate_tunnel_on_outbound_batch(t.0, NOW, null(), 0, &mut accepted, &mut stopped)
        });
        assert_eq!((accepted, stopped), (0, S::Ok));
        // The batch stops at its first refused packet: the prefix is queued exactly as one call
        // per packet would queue it, and the refused packet counts once.
        let batch = [view(0, 100), view(1, 200), view(2, 0), view(3, 300)];
        same_as(
            Tunnel::busy,
            |t| {
                let s = tidegate_tunnel_on_outbound_batch(
                    t.0,
                    NOW,
                    batch.as_ptr(),
                    4,
                    &mut accepted,
                    &mut stopped,
                );
                assert_eq!((s, accepted, stopped), (S::Ok, 2, S::PacketEmpty));
                s
            },
            |t| {
                assert_eq!(
                    tidegate_tunnel_on_outbound_packet(t.0, NOW, PACKET.as_ptr(), 100),
                    S::Ok
                );
                assert_eq!(
                    tidegate_tunnel_on_outbound_packet(t.0, NOW, PACKET[1..].as_ptr(), 200),
                    S::Ok
                );
                assert_eq!(
                    tidegate_tunnel_on_outbound_packet(t.0, NOW, PACKET.as_ptr(), 0),
                    S::PacketEmpty
                );
                S::Ok
            },
        );
        let too_long = [view(0, 100), view(0, 1001)];
        let t = Tunnel::busy();
        assert_eq!(
            tidegate_tunnel_on_outbound_batch(
                t.0,
                NOW,
                too_long.as_ptr(),
                2,
                &mut accepted,
                &mut stopped
            ),
            S::Ok
        );
        assert_eq!((accepted, stopped), (1, S::PacketTooLong));
        // A full ring takes none of the batch and says so.
        let good = [view(0, 1000), view(1, 1000)];
        let t = Tunnel::full();
        assert_eq!(
            tidegate_tunnel_on_outbound_batch(
                t.0,
                NOW,
                good.as_ptr(),
                2,
                &mut accepted,
                &mut stopped
            ),
            S::Ok
        );
        assert_eq!((accepted, stopped), (0, S::NoRoom));
    }
}

/// Polling a direction: NULL handle, NULL count, NULL views with a capacity, capacity 0.
unsafe fn tunnel_poll(
    poll: unsafe extern "C" fn(
        *mut TidegateTunnel,
        u64,
        *mut TidegatePacketView,
        usize,
        *mut usize,
    ) -> TidegateStatus,
) {
    unsafe {
        let mut views = [TidegatePacketView {
            data: null(),
            len: 0,
        }; 4];
        null_handle(|out| poll(null_mut(), NOW, views.as_mut_ptr(), 4, out));
        for now in [NOW, EARLIER] {
            unchanged(Tunnel::busy, S::NullArgument, |t| {
                let mut views = Out::<[TidegatePacketView; 4]>::new();
                let status = poll(t.0, now, views.ptr().cast(), 4, null_mut());
                assert!(views.untouched());
                status
            });
            unchanged(Tunnel::busy, S::NullArgument, |t| {
                untouched(|out| poll(t.0, now, null_mut(), 3, out))
            });
            unchanged(Tunnel::busy, S::Ok, |t| {
                let count = written(|out| poll(t.0, now, null_mut(), 0, out));
                assert_eq!(count, 0);
                S::Ok
            });
            unchanged(Tunnel::busy, S::Ok, |t| {
                let mut views = Out::<[TidegatePacketView; 4]>::new();
                let count = written(|out| poll(t.0, now, views.ptr().cast(), 0, out));
                assert_eq!(count, 0);
                assert!(views.untouched(), "capacity 0 writes no view");
                S::Ok
            });
        }
        // Polling at an earlier time hands out what polling at the latest time does.
        let mut other = views;
        same_as(
            Tunnel::busy,
            |t| poll(t.0, EARLIER, views.as_mut_ptr(), 4, &mut 0),
            |t| poll(t.0, NOW, other.as_mut_ptr(), 4, &mut 0),
        );
    }
}

fn tunnel_poll_outbound() {
    unsafe { tunnel_poll(tidegate_tunnel_poll_outbound) }
}

fn tunnel_poll_inbound() {
    unsafe { tunnel_poll(tidegate_tunnel_poll_inbound) }
}

fn tunnel_complete_outbound() {
    unsafe {
        null_handle(|out| tidegate_tunnel_complete_outbound(null_mut(), NOW, 1, out));
        let completed_twice = || {
            let t = Tunnel::busy();
            assert_eq!(
                tidegate_tunnel_complete_outbound(t.0, NOW, 2, &mut false),
                S::Ok
            );
            t
        };
        for now in [NOW, EARLIER] {
            unchanged(Tunnel::busy, S::NullArgument, |t| {
                tidegate_tunnel_complete_outbound(t.0, now, 1, null_mut())
            });
            for count in [3, 6, usize::MAX] {
                unchanged(Tunnel::busy, S::NotInFlight, |t| {
                    untouched(|out| tidegate_tunnel_complete_outbound(t.0, now, count, out))
                });
            }
            unchanged(completed_twice, S::NotInFlight, |t| {
                untouched(|out| tidegate_tunnel_complete_outbound(t.0, now, 1, out))
            });
            unchanged(Tunnel::empty, S::NotInFlight, |t| {
                untouched(|out| tidegate_tunnel_complete_outbound(t.0, now, 1, out))
            });
            unchanged(Tunnel::busy, S::Ok, |t| {
                let resume = written(|out| tidegate_tunnel_complete_outbound(t.0, now, 0, out));
                assert!(!resume);
                S::Ok
            });
        }
        same_as(
            Tunnel::busy,
            |t| tidegate_tunnel_complete_outbound(t.0, EARLIER, 2, &mut false),
            |t| tidegate_tunnel_complete_outbound(t.0, NOW, 2, &mut false),
        );
    }
}

fn tunnel_on_outbound_transmitted() {
    unsafe {
        assert_eq!(
            tidegate_tunnel_on_outbound_transmitted(null_mut(), NOW, 1),
            S::NullArgument
        );
        // Any byte count is a valid report; a `now` in the past counts as the latest.
        same_as(
            Tunnel::busy,
            |t| tidegate_tunnel_on_outbound_transmitted(t.0, EARLIER, u64::MAX),
            |t| tidegate_tunnel_on_outbound_transmitted(t.0, NOW, u64::MAX),
        );
    }
}

fn tunnel_on_outbound_queued_below() {
    unsafe {
        assert_eq!(
            tidegate_tunnel_on_outbound_queued_below(null_mut(), NOW, 1),
            S::NullArgument
        );
        same_as(
            Tunnel::busy,
            |t| tidegate_tunnel_on_outbound_queued_below(t.0, EARLIER, u64::MAX),
            |t| tidegate_tunnel_on_outbound_queued_below(t.0, NOW, u64::MAX),
        );
    }
}

fn tunnel_on_inbound_packet() {
    unsafe {
        let data = PACKET.as_ptr();
        null_handle(|out| tidegate_tunnel_on_inbound_packet(null_mut(), NOW, data, 1, out));
        for now in [NOW, EARLIER] {
            unchanged(Tunnel::busy, S::NullArgument, |t| {
                tidegate_tunnel_on_inbound_packet(t.0, now, data, 10, null_mut())
            });
            unchanged(Tunnel::busy, S::NullArgument, |t| {
                tidegate_tunnel_on_inbound_packet(t.0, now, data, 0, null_mut())
            });
            unchanged(Tunnel::busy, S::NullArgument, |t| {
                untouched(|out| tidegate_tunnel_on_inbound_packet(t.0, now, null(), 5, out))
            });
            let empty = |(stats, _, _): &mut (TidegateTunnelStats, bool, TidegateTunnelLimits)| {
                stats.inbound.empty_packets += 1
            };
            refused(Tunnel::busy, S::PacketEmpty, empty, |t| {
                untouched(|out| tidegate_tunnel_on_inbound_packet(t.0, now, null(), 0, out))
            });
            refused(Tunnel::busy, S::PacketEmpty, empty, |t| {
                untouched(|out| tidegate_tunnel_on_inbound_packet(t.0, now, data, 0, out))
            });
            let oversized =
                |(stats, _, _): &mut (TidegateTunnelStats, bool, TidegateTunnelLimits)| {
                    stats.inbound.oversized_packets += 1
                };
            refused(Tunnel::busy, S::PacketTooLong, oversized, |t| {
                untouched(|out| tidegate_tunnel_on_inbound_packet(t.0, now, data, 1001, out))
            });
        }
        same_as(
            Tunnel::busy,
            |t| {
                tidegate_tunnel_on_inbound_packet(
                    t.0,
                    EARLIER,
                    data,
                    100,
                    &mut TidegateInboundDisposition::Queued,
                )
            },
            |t| {
                tidegate_tunnel_on_inbound_packet(
                    t.0,
                    NOW,
                    data,
                    100,
                    &mut TidegateInboundDisposition::Queued,
                )
            },
        );
    }
}

fn tunnel_complete_inbound() {
    unsafe {
        assert_eq!(
            tidegate_tunnel_complete_inbound(null_mut(), NOW, 1),
            S::NullArgument
        );
        let completed_twice = || {
            let t = Tunnel::busy();
            assert_eq!(tidegate_tunnel_complete_inbound(t.0, NOW, 1), S::Ok);
            t
        };
        for now in [NOW, EARLIER] {
            for count in [2, usize::MAX] {
                unchanged(Tunnel::busy, S::NotInFlight, |t| {
                    tidegate_tunnel_complete_inbound(t.0, now, count)
                });
            }
            unchanged(completed_twice, S::NotInFlight, |t| {
                tidegate_tunnel_complete_inbound(t.0, now, 1)
            });
            unchanged(Tunnel::empty, S::NotInFlight, |t| {
                tidegate_tunnel_complete_inbound(t.0, now, 1)
            });
            unchanged(Tunnel::busy, S::Ok, |t| {
                tidegate_tunnel_complete_inbound(t.0, now, 0)
            });
        }
        same_as(
            Tunnel::busy,
            |t| tidegate_tunnel_complete_inbound(t.0, EARLIER, 1),
            |t| tidegate_tunnel_complete_inbound(t.0, NOW, 1),
        );
    }
}

fn tunnel_stats() {
    unsafe {
        null_handle(|out| tidegate_tunnel_stats(null(), out));
        unchanged(Tunnel::busy, S::NullArgument, |t| {
            tidegate_tunnel_stats(t.0, null_mut())
        });
    }
}

// ---- flow, budget and race types (the proxy engine's parts) ------------------------------------

fn errno_class() {
    // Every value has a class; the seven resource errors (Linux numbers here) are one class.
    for errno in [24, 23, 28, 12, 105, 99, 11] {
        assert_eq!(
            tidegate_errno_class(errno),
            TidegateErrorClass::ResourceExhausted,
            "errno {errno}"
        );
    }
    assert_eq!(tidegate_errno_class(111), TidegateErrorClass::Refused);
    for errno in [0, -1, i32::MIN, i32::MAX, 4096] {
        assert_eq!(
            tidegate_errno_class(errno),
            TidegateErrorClass::Other,
            "errno {errno}"
        );
    }
}

const TCP: u32 = TidegateFlowProtocol::Tcp as u32;
const STREAM: u32 = TidegateFlowClass::Stream as u32;

fn flow_policy() -> TidegateFlowPolicy {
    TidegateFlowPolicy {
        slots: 16,
        max_flows: 8,
        max_flows_per_app: 8,
        max_flows_per_destination: 8,
        max_connecting: 6,
        max_datagram_flows: 4,
        idle_timeout_us: 1_000_000,
        connect_timeout_us: 60_000_000,
        flow_high_watermark_bytes: 1000,
        flow_low_watermark_bytes: 500,
        global_high_watermark_bytes: 4000,
        global_low_watermark_bytes: 2000,
        hash_seed: 7,
        app_high_watermark_bytes: 3000,
        app_low_watermark_bytes: 1500,
        max_dns_in_flight: 4,
        max_dns_in_flight_per_app: 2,
        app_admission_burst: 64,
        app_admission_rate_per_second: 1_000,
        datagram_idle_timeout_us: 1_000_000,
        datagram_max_lifetime_us: u64::MAX,
        dns_idle_timeout_us: 1_000_000,
        max_paused_us: 60_000_000,
    }
}

/// Flow ids a governor holding the live flow `live` never issued: zero, all ones, a slot never
/// used, a slot past the table, generation 0 and a future generation of `live`'s slot.
fn forged_flow_ids(live: u64) -> [u64; 6] {
    let index = live & 0xFFFF_FFFF;
    let generation = live >> 32;
    [
        0,
        u64::MAX,
        (1 << 32) | 15,
        (1 << 32) | 1000,
        index,
        ((generation + 1) << 32) | index,
    ]
}

fn bad_flow_policies() -> Vec<(TidegateFlowPolicy, TidegateStatus)> {
    let good = flow_policy();
    vec![
        (
            TidegateFlowPolicy {
                max_flows: 0,
                ..good
            },
            S::ConfigFlowZeroCap,
        ),
        (
            TidegateFlowPolicy {
                max_flows_per_app: 0,
                ..good
            },
            S::ConfigFlowZeroCap,
        ),
        (
            TidegateFlowPolicy {
                max_flows_per_destination: 0,
                ..good
            },
            S::ConfigFlowZeroCap,
        ),
        (
            TidegateFlowPolicy {
                max_connecting: 0,
                ..good
            },
            S::ConfigFlowZeroCap,
        ),
        (
            TidegateFlowPolicy { slots: 0, ..good },
            S::ConfigFlowTooFewSlots,
        ),
        (
            TidegateFlowPolicy { slots: 8, ..good },
            S::ConfigFlowTooFewSlots,
        ),
        (
            TidegateFlowPolicy {
                slots: u32::MAX,
                ..good
            },
            S::ConfigFlowTooManySlots,
        ),
        (
            TidegateFlowPolicy {
                flow_low_watermark_bytes: 1000,
                ..good
            },
            S::ConfigWatermarksOutOfOrder,
        ),
        (
            TidegateFlowPolicy {
                global_low_watermark_bytes: u64::MAX,
                ..good
            },
            S::ConfigWatermarksOutOfOrder,
        ),
        (
            TidegateFlowPolicy {
                app_low_watermark_bytes: 3000,
                ..good
            },
            S::ConfigWatermarksOutOfOrder,
        ),
        (
            TidegateFlowPolicy {
                idle_timeout_us: 0,
                ..good
            },
            S::ConfigZeroDuration,
        ),
        (
            TidegateFlowPolicy {
                connect_timeout_us: 0,
                ..good
            },
            S::ConfigZeroDuration,
        ),
        (
            TidegateFlowPolicy {
                max_datagram_flows: 0,
                ..good
            },
            S::ConfigFlowZeroCap,
        ),
        (
            TidegateFlowPolicy {
                max_dns_in_flight: 0,
                ..good
            },
            S::ConfigFlowZeroCap,
        ),
        (
            TidegateFlowPolicy {
                max_dns_in_flight_per_app: 0,
                ..good
            },
            S::ConfigFlowZeroCap,
        ),
        (
            TidegateFlowPolicy {
                app_admission_burst: 0,
                ..good
            },
            S::ConfigFlowZeroCap,
        ),
        (
            TidegateFlowPolicy {
                app_admission_rate_per_second: 0,
                ..good
            },
            S::ConfigFlowZeroCap,
        ),
        (
            TidegateFlowPolicy {
                datagram_idle_timeout_us: 0,
                ..good
            },
            S::ConfigZeroDuration,
        ),
        (
            TidegateFlowPolicy {
                datagram_max_lifetime_us: 0,
                ..good
            },
            S::ConfigZeroDuration,
        ),
        (
            TidegateFlowPolicy {
                dns_idle_timeout_us: 0,
                ..good
            },
            S::ConfigZeroDuration,
        ),
        (
            TidegateFlowPolicy {
                max_paused_us: 0,
                ..good
            },
            S::ConfigZeroDuration,
        ),
    ]
}

// ---- black box ---------------------------------------------------------------------------------

/// A record as a host fills it before capturing: numbered, timed, with a figure of another
/// engine set so a capture can be seen to leave it alone.
fn black_box_record() -> TidegateBlackBoxRecord {
    TidegateBlackBoxRecord {
        sequence: 5,
        written_at_us: NOW,
        restarts_run: 77,
        flows_open: 99,
        outbound_pauses: 55,
        pressure: 2,
        ..TidegateBlackBoxRecord::default()
    }
}

/// A capture: a NULL record or handle, or a record with unknown flags or a reserved field set,
/// is refused and changes neither the record nor the engine; a good one fills only the
/// engine's own figures. `own` says which of the marker figures the engine overwrites.
///
/// `capture(record, Some(fixture))` captures from the fixture's handle, `capture(record, None)`
/// from a NULL handle.
fn black_box_capture<F: Fixture>(
    make: impl Fn() -> F,
    capture: impl Fn(*mut TidegateBlackBoxRecord, Option<&F>) -> TidegateStatus,
    own: fn(&TidegateBlackBoxRecord) -> u64,
) {
    {
        let mut record = black_box_record();
        assert_eq!(capture(&mut record, None), S::NullArgument);
        assert_eq!(record, black_box_record());
        unchanged(&make, S::NullArgument, |f| capture(null_mut(), Some(f)));
        for bad in [
            TidegateBlackBoxRecord {
                flags: 2,
                ..black_box_record()
            },
            TidegateBlackBoxRecord {
                flags: u32::MAX,
                ..black_box_record()
            },
            TidegateBlackBoxRecord {
                reserved: 1,
                ..black_box_record()
            },
        ] {
            let mut record = bad;
            unchanged(&make, S::InvalidArgument, |f| capture(&mut record, Some(f)));
            assert_eq!(record, bad);
        }
        let f = make();
        let mut record = black_box_record();
        assert_eq!(capture(&mut record, Some(&f)), S::Ok);
        let before = black_box_record();
        assert_eq!((record.sequence, record.written_at_us), (5, NOW));
        // Exactly one of the marker figures belongs to this engine.
        let markers = |r: &TidegateBlackBoxRecord| {
            [r.restarts_run, r.flows_open, r.outbound_pauses, r.pressure]
        };
        let changed = markers(&record)
            .iter()
            .zip(markers(&before))
            .filter(|(a, b)| *a != b)
            .count();
        assert_eq!(changed, 1, "{record:?}");
        assert_ne!(
            own(&record),
            own(&before),
            "the engine's own figure was taken"
        );
    }
}

fn black_box_capture_lifecycle() {
    black_box_capture(
        Life::running,
        |record, l| unsafe {
            tidegate_black_box_capture_lifecycle(record, l.map_or(null(), |l| l.handle))
        },
        |r| r.restarts_run,
    );
}

fn black_box_capture_tunnel() {
    black_box_capture(
        Tunnel::busy,
        |record, t| unsafe { tidegate_black_box_capture_tunnel(record, t.map_or(null(), |t| t.0)) },
        |r| r.outbound_pauses,
    );
}

fn black_box_capture_proxy() {
    black_box_capture(
        Proxy::new,
        |record, p| unsafe {
            tidegate_black_box_capture_proxy(record, p.map_or(null(), |p| p.handle))
        },
        |r| r.flows_open,
    );
}

fn black_box_capture_memory() {
    black_box_capture(
        Mem::elevated,
        |record, m| unsafe {
            tidegate_black_box_capture_memory(record, m.map_or(null(), |m| m.handle))
        },
        |r| r.pressure,
    );
}

fn black_box_encode() {
    unsafe {
        let record = black_box_record();
        let mut slot = Out::<[u8; TIDEGATE_BLACK_BOX_SLOT_LEN]>::new();
        let len = TIDEGATE_BLACK_BOX_SLOT_LEN;
        assert_eq!(
            untouched(|out| tidegate_black_box_encode(null(), slot.ptr().cast(), len, out)),
            S::NullArgument
        );
        assert_eq!(
            tidegate_black_box_encode(&record, slot.ptr().cast(), len, null_mut()),
            S::NullArgument
        );
        assert_eq!(
            untouched(|out| tidegate_black_box_encode(&record, null_mut(), len, out)),
            S::NullArgument
        );
        assert!(slot.untouched());
        let bad_records = [
            (
                TidegateBlackBoxRecord {
                    sequence: 0,
                    ..record
                },
                S::InvalidArgument,
            ),
            (
                TidegateBlackBoxRecord { flags: 4, ..record },
                S::InvalidArgument,
            ),
            (
                TidegateBlackBoxRecord {
                    reserved: 9,
                    ..record
                },
                S::InvalidArgument,
            ),
        ];
        for (bad, status) in bad_records {
            assert_eq!(
                untouched(|out| tidegate_black_box_encode(&bad, slot.ptr().cast(), len, out)),
                status
            );
        }
        for short in [0, 1, len - 1] {
            assert_eq!(
                untouched(|out| tidegate_black_box_encode(&record, slot.ptr().cast(), short, out)),
                S::BufferTooSmall
            );
        }
        for huge in [usize::MAX, isize::MAX as usize + 1] {
            assert_eq!(
                untouched(|out| tidegate_black_box_encode(&record, slot.ptr().cast(), huge, out)),
                S::InvalidArgument
            );
        }
        assert!(slot.untouched(), "a refused encode writes nothing");
        let offset = written(|out| tidegate_black_box_encode(&record, slot.ptr().cast(), len, out));
        assert_eq!(
            offset, TIDEGATE_BLACK_BOX_SLOT_LEN,
            "sequence 5 goes to slot 1"
        );
    }
}

fn black_box_decode() {
    unsafe {
        let mut file = [0u8; TIDEGATE_BLACK_BOX_LEN];
        let record = black_box_record();
        let mut offset = 0;
        let status = tidegate_black_box_encode(
            &record,
            file.as_mut_ptr().add(TIDEGATE_BLACK_BOX_SLOT_LEN),
            TIDEGATE_BLACK_BOX_SLOT_LEN,
            &mut offset,
        );
        assert_eq!((status, offset), (S::Ok, TIDEGATE_BLACK_BOX_SLOT_LEN));
        assert_eq!(
            tidegate_black_box_decode(file.as_ptr(), file.len(), null_mut()),
            S::NullArgument
        );
        assert_eq!(
            untouched(|out| tidegate_black_box_decode(null(), 5, out)),
            S::NullArgument
        );
        for huge in [usize::MAX, isize::MAX as usize + 1] {
            assert_eq!(
                untouched(|out| tidegate_black_box_decode(file.as_ptr(), huge, out)),
                S::InvalidArgument
            );
        }
        // No file, a short one, garbage, and a flipped bit: nothing intact.
        let mut flipped = file;
        flipped[TIDEGATE_BLACK_BOX_SLOT_LEN + 40] ^= 0x10;
        for (data, len) in [
            (null(), 0),
            (file.as_ptr(), 100),
            (
                [0xffu8; TIDEGATE_BLACK_BOX_LEN].as_ptr(),
                TIDEGATE_BLACK_BOX_LEN,
            ),
            (flipped.as_ptr(), flipped.len()),
        ] {
            assert_eq!(
                untouched(|out| tidegate_black_box_decode(data, len, out)),
                S::BlackBoxEmpty
            );
        }
        let read = written(|out| tidegate_black_box_decode(file.as_ptr(), file.len(), out));
        assert_eq!(read, record);
    }
}

fn flow_key() {
    unsafe {
        let data = b"com.example.app";
        assert_eq!(
            untouched(|out| tidegate_flow_key(null(), 5, out)),
            S::NullArgument
        );
        assert_eq!(
            tidegate_flow_key(data.as_ptr(), data.len(), null_mut()),
            S::NullArgument
        );
        assert_eq!(tidegate_flow_key(null(), 0, null_mut()), S::NullArgument);
        // A length no buffer can have is refused before any slice is formed (it crashed).
        for len in [usize::MAX, isize::MAX as usize + 1] {
            assert_eq!(
                untouched(|out| tidegate_flow_key(data.as_ptr(), len, out)),
                S::InvalidArgument
            );
        }
        // Zero length, with or without a pointer, is the key of no bytes.
        let empty = written(|out| tidegate_flow_key(null(), 0, out));
        assert_eq!(
            written(|out| tidegate_flow_key(data.as_ptr(), 0, out)),
            empty
        );
        assert_ne!(
            written(|out| tidegate_flow_key(data.as_ptr(), data.len(), out)),
            empty
        );
    }
}

/// Every budget configuration that can never work, with its status: each is refused, none is
/// clamped.
fn bad_budget_configs() -> Vec<(TidegateBudgetConfig, TidegateStatus)> {
    let good = proxy_config().budget;
    vec![
        (
            TidegateBudgetConfig {
                max_attempts_in_flight: 0,
                ..good
            },
            S::ConfigBudgetZeroLimit,
        ),
        (
            TidegateBudgetConfig {
                max_open_connections: 0,
                ..good
            },
            S::ConfigBudgetZeroLimit,
        ),
        (
            TidegateBudgetConfig {
                fd_limit: 0,
                fd_reserve: 0,
                ..good
            },
            S::ConfigBudgetZeroLimit,
        ),
        (
            TidegateBudgetConfig {
                backoff_floor: 0,
                ..good
            },
            S::ConfigBudgetZeroLimit,
        ),
        (
            TidegateBudgetConfig {
                fd_limit: 10,
                fd_reserve: 6,
                ..good
            },
            S::ConfigBudgetReserveTooLarge,
        ),
        (
            TidegateBudgetConfig {
                fd_limit: 10,
                fd_reserve: u32::MAX,
                ..good
            },
            S::ConfigBudgetReserveTooLarge,
        ),
        (
            TidegateBudgetConfig {
                recovery_interval_us: 0,
                ..good
            },
            S::ConfigBudgetZeroRecoveryInterval,
        ),
    ]
}

/// Race configurations outside their documented ranges: each is refused, none is clamped.
fn bad_eyeballs_configs() -> Vec<(TidegateEyeballsConfig, TidegateStatus)> {
    let good = proxy_config().race;
    let mut bad: Vec<_> = [0, 5, 46, 260, u32::MAX]
        .map(|family| {
            let config = TidegateEyeballsConfig {
                preferred_family: family,
                ..good
            };
            (config, S::ConfigUnknownAddressFamily)
        })
        .to_vec();
    for config in [
        TidegateEyeballsConfig {
            first_address_family_count: 0,
            ..good
        },
        TidegateEyeballsConfig {
            first_address_family_count: 256,
            ..good
        },
        TidegateEyeballsConfig {
            first_address_family_count: u32::MAX,
            ..good
        },
        TidegateEyeballsConfig {
            resolution_delay_us: 2_000_001,
            ..good
        },
        TidegateEyeballsConfig {
            resolution_delay_us: u64::MAX,
            ..good
        },
        TidegateEyeballsConfig {
            connection_attempt_delay_us: 0,
            ..good
        },
        TidegateEyeballsConfig {
            connection_attempt_delay_us: 9_999,
            ..good
        },
        TidegateEyeballsConfig {
            connection_attempt_delay_us: 2_000_001,
            ..good
        },
    ] {
        bad.push((config, S::ConfigEyeballsOutOfRange));
    }
    bad
}

// ---- lifecycle ---------------------------------------------------------------------------------

/// A function building a lifecycle fixture.
type MakeLife = fn() -> Life;

struct Life {
    handle: *mut TidegateLifecycle,
    /// The journal a stop persisted (for [`Life::stopped`]).
    journal: Vec<u8>,
}

impl Drop for Life {
    fn drop(&mut self) {
        unsafe { tidegate_lifecycle_free(self.handle) }
    }
}

const TASK_CAPACITY: u32 = 4;
const DEADLINE: u64 = 250_000;

impl Life {
    fn idle() -> Life {
        let config = TidegateLifecycleConfig {
            task_capacity: TASK_CAPACITY,
            ..tidegate_lifecycle_config_default()
        };
        let mut handle = null_mut();
        assert_eq!(
            unsafe { tidegate_lifecycle_new(&config, &mut handle) },
            S::Ok
        );
        Life {
            handle,
            journal: Vec::new(),
        }
    }

    fn expect(&mut self, kind: TidegateLifecycleEffectKind) -> TidegateLifecycleEffect {
        let effect: TidegateLifecycleEffect =
            unsafe { written(|out| tidegate_lifecycle_poll_effect(self.handle, NOW, out)) };
        assert_eq!(effect.kind, kind);
        effect
    }

    /// Generation 1 is starting; its `START_TUNNEL` was handed out.
    fn starting() -> Life {
        let mut l = Life::idle();
        let generation = unsafe {
            written(|out| tidegate_lifecycle_on_start(l.handle, NOW - 10_000, null(), 0, out))
        };
        assert_eq!(generation, 1);
        l.expect(TidegateLifecycleEffectKind::StartTunnel);
        l
    }

    /// Running, with tasks 1 and 2 registered.
    fn running() -> Life {
        let mut l = Life::starting();
        unsafe {
            assert_eq!(
                tidegate_lifecycle_on_tunnel_started(l.handle, NOW - 5_000, 1),
                S::Ok
            );
            for payload in [&b"one"[..], &b"two"[..]] {
                let mut id = 0;
                let status = tidegate_lifecycle_register_task(
                    l.handle,
                    NOW,
                    7,
                    payload.as_ptr(),
                    payload.len(),
                    &mut id,
                );
                assert_eq!(status, S::Ok);
            }
        }
        l.expect(TidegateLifecycleEffectKind::None);
        l
    }

    /// Running with the task queue full.
    fn queue_full() -> Life {
        let l = Life::running();
        for _ in 2..TASK_CAPACITY {
            let status =
                unsafe { tidegate_lifecycle_register_task(l.handle, NOW, 7, null(), 0, &mut 0) };
            assert_eq!(status, S::Ok);
        }
        l
    }

    /// Stopping: `TEAR_DOWN` handed out.
    fn tearing_down() -> Life {
        let mut l = Life::running();
        let outcome = unsafe { written(|out| tidegate_lifecycle_on_stop(l.handle, NOW, out)) };
        assert_eq!(outcome, TidegateStopOutcome::Stopping);
        l.expect(TidegateLifecycleEffectKind::TearDown);
        l
    }

    /// Housekeeping until `NOW + DEADLINE`: task 1 running, task 2 pending.
    fn housekeeping() -> Life {
        let mut l = Life::tearing_down();
        assert_eq!(
            unsafe { tidegate_lifecycle_on_torn_down(l.handle, NOW, 1) },
            S::Ok
        );
        let effect = l.expect(TidegateLifecycleEffectKind::RunTask);
        assert_eq!(effect.task_id, 1);
        l.expect(TidegateLifecycleEffectKind::None);
        l
    }

    /// The deadline passed: both tasks sealed into a journal, `PERSIST_JOURNAL` handed out.
    /// Latest time `NOW + DEADLINE`.
    fn persisting() -> Life {
        let mut l = Life::housekeeping();
        assert_eq!(
            unsafe { tidegate_lifecycle_handle_timeout(l.handle, NOW + DEADLINE) },
            S::Ok
        );
        l.expect(TidegateLifecycleEffectKind::PersistJournal);
        l
    }

    /// Stopped after persisting the journal, which [`Life::journal`] holds.
    fn stopped() -> Life {
        let mut l = Life::persisting();
        unsafe {
            let len = written(|out| tidegate_lifecycle_journal_len(l.handle, out));
            l.journal = vec![0; len];
            let written_len = written(|out| {
                tidegate_lifecycle_write_journal(l.handle, l.journal.as_mut_ptr(), len, out)
            });
            assert_eq!(written_len, len);
            assert_eq!(
                tidegate_lifecycle_on_journal_persisted(l.handle, NOW, 1),
                S::Ok
            );
        }
        l.expect(TidegateLifecycleEffectKind::CompleteStop);
        l
    }

    /// Running on path 1 with restart 1 (on path 2) in flight, then abandoned for restart 2
    /// (path 3), which is in flight. Latest time `NOW + 2 s`.
    fn reasserting() -> Life {
        let mut l = Life::running();
        let debounce = tidegate_lifecycle_config_default().path_debounce_us;
        unsafe {
            for (at, path) in [(NOW, 1), (NOW, 2)] {
                let _: bool =
                    written(|out| tidegate_lifecycle_on_path_change(l.handle, at, path, out));
            }
            assert_eq!(
                tidegate_lifecycle_handle_timeout(l.handle, NOW + debounce),
                S::Ok
            );
            let first = l.expect(TidegateLifecycleEffectKind::RestartTunnel);
            assert_eq!((first.restart_id, first.path), (1, 2));
            let _: bool =
                written(|out| tidegate_lifecycle_on_path_change(l.handle, NOW + debounce, 3, out));
            assert_eq!(
                tidegate_lifecycle_handle_timeout(l.handle, NOW + 2 * debounce),
                S::Ok
            );
        }
        assert_eq!(
            l.expect(TidegateLifecycleEffectKind::AbandonRestart)
                .restart_id,
            1
        );
        let second = l.expect(TidegateLifecycleEffectKind::RestartTunnel);
        assert_eq!((second.restart_id, second.path), (2, 3));
        l.expect(TidegateLifecycleEffectKind::None);
        l
    }

    /// A second session starting (generation 2) without the journal: reports naming
    /// generation 1 are stale.
    fn restarted() -> Life {
        let l = Life::stopped();
        let generation =
            unsafe { written(|out| tidegate_lifecycle_on_start(l.handle, NOW, null(), 0, out)) };
        assert_eq!(generation, 2);
        l
    }
}

type LifeSnapshot = (
    TidegateLifecycleStats,
    TidegateLifecycleState,
    u64,
    u64,
    Result<usize, TidegateStatus>,
);

impl Fixture for Life {
    type Snapshot = LifeSnapshot;

    fn snapshot(&self) -> LifeSnapshot {
        unsafe {
            let mut generation = 0;
            let state = written(|out| tidegate_lifecycle_state(self.handle, out, &mut generation));
            let mut journal_len = Out::<usize>::new();
            let journal_len = match tidegate_lifecycle_journal_len(self.handle, journal_len.ptr()) {
                S::Ok => Ok(journal_len.value()),
                status => {
                    assert!(journal_len.untouched());
                    Err(status)
                }
            };
            (
                written(|out| tidegate_lifecycle_stats(self.handle, out)),
                state,
                generation,
                written(|out| tidegate_lifecycle_poll_timeout(self.handle, out)),
                journal_len,
            )
        }
    }

    fn drain(&mut self) -> Vec<String> {
        let mut log = Vec::new();
        loop {
            let effect: TidegateLifecycleEffect =
                unsafe { written(|out| tidegate_lifecycle_poll_effect(self.handle, NOW, out)) };
            if effect.kind == TidegateLifecycleEffectKind::None {
                return log;
            }
            log.push(format!("{effect:?}"));
        }
    }
}

/// A report refused because it names another session: counted as stale and as refused.
fn stale(snapshot: &mut LifeSnapshot) {
    snapshot.0.stale_reports += 1;
    snapshot.0.reports_refused += 1;
}

/// A report refused for another reason: counted as refused.
fn refused_report(snapshot: &mut LifeSnapshot) {
    snapshot.0.reports_refused += 1;
}

fn rejected_journal(snapshot: &mut LifeSnapshot) {
    snapshot.0.journals_rejected += 1;
}

/// The lifecycle fixtures with a stop in progress.
const STOPPING: [MakeLife; 3] = [Life::tearing_down, Life::housekeeping, Life::persisting];

/// CRC-32C, to forge journals whose checksum matches.
fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Journals `tidegate_lifecycle_on_start` refuses, with the status for each and whether the
/// refusal counts as a rejected journal.
fn bad_journals() -> Vec<(&'static str, Vec<u8>, TidegateStatus, bool)> {
    let good = Life::stopped().journal.clone();
    let mut bad = Vec::new();
    bad.push((
        "truncated",
        good[..good.len() - 1].to_vec(),
        S::JournalTruncated,
        true,
    ));
    bad.push((
        "too short for a header",
        good[..5].to_vec(),
        S::JournalTruncated,
        true,
    ));
    let mut magic = good.clone();
    magic[0] ^= 0x20;
    bad.push(("bad magic", magic, S::JournalNotAJournal, true));
    let mut version = good.clone();
    version[4] = 2;
    bad.push(("version 2", version, S::JournalUnsupportedVersion, true));
    let mut longer = good.clone();
    longer.push(0);
    bad.push(("a byte too many", longer, S::JournalLengthMismatch, true));
    let mut flipped = good.clone();
    flipped[12] ^= 1;
    bad.push(("a bit flipped", flipped, S::JournalChecksumMismatch, true));
    // A task whose payload length is past the maximum, under a matching checksum.
    let mut malformed = Vec::new();
    malformed.extend_from_slice(b"TGJL\x01");
    let len = 4 + 1 + 4 + 8 + 2 + 4 + 1 + 40 + 4;
    malformed.extend_from_slice(&(len as u32).to_le_bytes());
    malformed.extend_from_slice(&1u64.to_le_bytes());
    malformed.extend_from_slice(&1u16.to_le_bytes());
    malformed.extend_from_slice(&7u32.to_le_bytes());
    malformed.push(40);
    malformed.extend_from_slice(&[0; 40]);
    let crc = crc32c(&malformed);
    malformed.extend_from_slice(&crc.to_le_bytes());
    bad.push(("payload too long", malformed, S::JournalMalformed, true));
    let task = tidegate_core::JournalTask {
        kind: 1,
        payload: tidegate_core::TaskPayload::EMPTY,
    };
    let mut too_large = vec![0; 256];
    let tasks = std::iter::repeat_n(task, TASK_CAPACITY as usize + 1);
    let len = tidegate_core::encode_journal(1, tasks, &mut too_large).unwrap();
    too_large.truncate(len);
    bad.push((
        "more tasks than the queue",
        too_large,
        S::JournalTooLarge,
        true,
    ));
    let mut last = vec![0; 64];
    let len = tidegate_core::encode_journal(u64::MAX, std::iter::empty(), &mut last).unwrap();
    last.truncate(len);
    bad.push((
        "the last generation",
        last,
        S::LifecycleGenerationExhausted,
        false,
    ));
    bad
}

fn lifecycle_config_default() {
    let config = tidegate_lifecycle_config_default();
    assert_eq!(config, tidegate_lifecycle_config_default());
    unsafe { written(|out| tidegate_lifecycle_footprint(&config, out, &mut 0)) };
}

/// Lifecycle configurations that cannot work, with their status: each is refused, none clamped.
fn bad_lifecycle_configs() -> Vec<(TidegateLifecycleConfig, TidegateStatus)> {
    let good = tidegate_lifecycle_config_default();
    let mut bad: Vec<_> = [TIDEGATE_LIFECYCLE_TASK_CAPACITY_MAX + 1, u32::MAX]
        .map(|task_capacity| {
            let config = TidegateLifecycleConfig {
                task_capacity,
                ..good
            };
            (config, S::ConfigTaskCapacityTooLarge)
        })
        .to_vec();
    bad.extend([
        (
            TidegateLifecycleConfig {
                task_capacity: 0,
                ..good
            },
            S::ConfigZeroCapacity,
        ),
        (
            TidegateLifecycleConfig {
                tasks_in_flight_max: 0,
                ..good
            },
            S::ConfigZeroCapacity,
        ),
        (
            TidegateLifecycleConfig {
                tasks_in_flight_max: 65_536,
                ..good
            },
            S::InvalidArgument,
        ),
        (
            TidegateLifecycleConfig {
                housekeeping_deadline_us: 0,
                ..good
            },
            S::ConfigZeroDuration,
        ),
        (
            TidegateLifecycleConfig {
                start_deadline_us: 0,
                ..good
            },
            S::ConfigZeroDuration,
        ),
        (
            TidegateLifecycleConfig {
                teardown_deadline_us: 0,
                ..good
            },
            S::ConfigZeroDuration,
        ),
        (
            TidegateLifecycleConfig {
                persist_deadline_us: 0,
                ..good
            },
            S::ConfigZeroDuration,
        ),
        (
            TidegateLifecycleConfig {
                restart_deadline_us: 0,
                ..good
            },
            S::ConfigZeroDuration,
        ),
        (
            TidegateLifecycleConfig {
                restart_backoff_us: 0,
                restart_backoff_max_us: 0,
                ..good
            },
            S::ConfigZeroDuration,
        ),
        (
            TidegateLifecycleConfig {
                restart_backoff_max_us: good.restart_backoff_us - 1,
                ..good
            },
            S::ConfigRestart,
        ),
        (
            TidegateLifecycleConfig {
                restart_attempts_max: 0,
                ..good
            },
            S::ConfigRestart,
        ),
        (
            TidegateLifecycleConfig {
                restart_attempts_max: 65_536,
                ..good
            },
            S::InvalidArgument,
        ),
        (
            TidegateLifecycleConfig {
                reserved: 1,
                ..good
            },
            S::InvalidArgument,
        ),
    ]);
    bad
}

fn lifecycle_footprint() {
    configs_refused(
        &tidegate_lifecycle_config_default(),
        bad_lifecycle_configs(),
        |config, out| unsafe { tidegate_lifecycle_footprint(config, out, &mut 0) },
    );
}

fn lifecycle_new() {
    unsafe {
        configs_refused(
            &tidegate_lifecycle_config_default(),
            bad_lifecycle_configs(),
            |config, out| tidegate_lifecycle_new(config, out),
        );
        // The edges are accepted: one task slot, one or 65535 tasks in flight, the shortest
        // deadline and one that never comes.
        for odd in [
            TidegateLifecycleConfig {
                task_capacity: 1,
                tasks_in_flight_max: 1,
                housekeeping_deadline_us: 1,
                start_deadline_us: 1,
                teardown_deadline_us: 1,
                persist_deadline_us: 1,
                path_debounce_us: 0,
                restart_deadline_us: 1,
                restart_backoff_us: 1,
                restart_backoff_max_us: 1,
                wake_restart_after_us: 0,
                restart_attempts_max: 1,
                reserved: 0,
            },
            TidegateLifecycleConfig {
                task_capacity: TIDEGATE_LIFECYCLE_TASK_CAPACITY_MAX,
                tasks_in_flight_max: 65_535,
                housekeeping_deadline_us: u64::MAX,
                start_deadline_us: u64::MAX,
                teardown_deadline_us: u64::MAX,
                persist_deadline_us: u64::MAX,
                path_debounce_us: u64::MAX,
                restart_deadline_us: u64::MAX,
                restart_backoff_us: u64::MAX,
                restart_backoff_max_us: u64::MAX,
                wake_restart_after_us: u64::MAX,
                restart_attempts_max: 65_535,
                reserved: 0,
            },
        ] {
            let mut handle = null_mut();
            assert_eq!(tidegate_lifecycle_new(&odd, &mut handle), S::Ok);
            let l = Life {
                handle,
                journal: Vec::new(),
            };
            assert_eq!(
                tidegate_lifecycle_on_start(l.handle, NOW, null(), 0, &mut 0),
                S::Ok
            );
            assert_eq!(
                tidegate_lifecycle_register_task(l.handle, NOW, 1, null(), 0, &mut 0),
                S::Ok
            );
        }
    }
}

fn lifecycle_init() {
    init_refuses(
        &tidegate_lifecycle_config_default(),
        bad_lifecycle_configs(),
        |config, size, align| unsafe { tidegate_lifecycle_footprint(config, size, align) },
        |config, memory, len, out| unsafe { tidegate_lifecycle_init(config, memory, len, out) },
        tidegate_lifecycle_free,
    );
}

fn lifecycle_free() {
    unsafe { tidegate_lifecycle_free(null_mut()) };
}

fn lifecycle_on_start() {
    unsafe {
        null_handle(|out| tidegate_lifecycle_on_start(null_mut(), NOW, null(), 0, out));
        let good = Life::stopped().journal.clone();
        for now in [NOW, EARLIER] {
            unchanged(Life::stopped, S::NullArgument, |l| {
                tidegate_lifecycle_on_start(l.handle, now, good.as_ptr(), good.len(), null_mut())
            });
            unchanged(Life::stopped, S::NullArgument, |l| {
                untouched(|out| tidegate_lifecycle_on_start(l.handle, now, null(), 10, out))
            });
            // A pointer with no bytes is a journal of zero bytes: truncated.
            refused(Life::stopped, S::JournalTruncated, rejected_journal, |l| {
                untouched(|out| tidegate_lifecycle_on_start(l.handle, now, good.as_ptr(), 0, out))
            });
            for (what, journal, status, counted) in bad_journals() {
                for make in [Life::idle as MakeLife, Life::stopped] {
                    let count = |s: &mut LifeSnapshot| {
                        if counted {
                            rejected_journal(s)
                        }
                    };
                    refused(make, status, count, |l| {
                        untouched(|out| {
                            tidegate_lifecycle_on_start(
                                l.handle,
                                now,
                                journal.as_ptr(),
                                journal.len(),
                                out,
                            )
                        })
                    });
                    let _ = what;
                }
            }
            // Starts refused in the wrong state, with or without a journal (good or bad).
            for (make, status) in [
                (Life::starting as MakeLife, S::LifecycleAlreadyActive),
                (Life::running, S::LifecycleAlreadyActive),
                (Life::tearing_down, S::LifecycleStopInProgress),
                (Life::housekeeping, S::LifecycleStopInProgress),
                (Life::persisting, S::LifecycleStopInProgress),
            ] {
                unchanged(make, status, |l| {
                    untouched(|out| tidegate_lifecycle_on_start(l.handle, now, null(), 0, out))
                });
                unchanged(make, status, |l| {
                    untouched(|out| {
                        tidegate_lifecycle_on_start(l.handle, now, good.as_ptr(), good.len(), out)
                    })
                });
                unchanged(make, status, |l| {
                    untouched(|out| {
                        tidegate_lifecycle_on_start(l.handle, now, good.as_ptr(), 3, out)
                    })
                });
            }
        }
        same_as(
            Life::stopped,
            |l| tidegate_lifecycle_on_start(l.handle, EARLIER, good.as_ptr(), good.len(), &mut 0),
            |l| {
                tidegate_lifecycle_on_start(
                    l.handle,
                    NOW + DEADLINE,
                    good.as_ptr(),
                    good.len(),
                    &mut 0,
                )
            },
        );
    }
}

/// A report naming a generation: an earlier generation is stale, one never issued (0, or above
/// the current one) is unknown; the current one in a state that does not expect the report is
/// unexpected. Each is counted and changes nothing else.
unsafe fn lifecycle_report(
    report: impl Fn(*mut TidegateLifecycle, u64, u64) -> TidegateStatus,
    unexpected: &[(MakeLife, u64)],
) {
    assert_eq!(report(null_mut(), NOW, 1), S::NullArgument);
    for now in [NOW, EARLIER] {
        for make in [
            Life::starting as MakeLife,
            Life::running,
            Life::tearing_down,
            Life::housekeeping,
            Life::persisting,
            Life::stopped,
        ] {
            for generation in [0, 2, u64::MAX] {
                refused(make, S::ReportUnknownGeneration, refused_report, |l| {
                    report(l.handle, now, generation)
                });
            }
        }
        refused(
            Life::idle,
            S::ReportUnknownGeneration,
            refused_report,
            |l| report(l.handle, now, 1),
        );
        refused(Life::restarted, S::ReportStaleGeneration, stale, |l| {
            report(l.handle, now, 1)
        });
        for &(make, generation) in unexpected {
            refused(make, S::ReportUnexpected, refused_report, |l| {
                report(l.handle, now, generation)
            });
        }
    }
}

fn lifecycle_on_tunnel_started() {
    unsafe {
        lifecycle_report(
            |l, now, generation| tidegate_lifecycle_on_tunnel_started(l, now, generation),
            &[
                (Life::idle, 0),
                (Life::running, 1),
                (Life::tearing_down, 1),
                (Life::housekeeping, 1),
                (Life::persisting, 1),
                (Life::stopped, 1),
            ],
        );
        // A stop during the start abandons it: the late report is refused.
        let abandoned = || {
            let l = Life::starting();
            let outcome = written(|out| tidegate_lifecycle_on_stop(l.handle, NOW, out));
            assert_eq!(outcome, TidegateStopOutcome::StartAbandoned);
            l
        };
        refused(abandoned, S::ReportUnexpected, refused_report, |l| {
            tidegate_lifecycle_on_tunnel_started(l.handle, NOW, 1)
        });
        same_as(
            Life::starting,
            |l| tidegate_lifecycle_on_tunnel_started(l.handle, EARLIER, 1),
            |l| tidegate_lifecycle_on_tunnel_started(l.handle, NOW, 1),
        );
    }
}

fn lifecycle_on_stop() {
    unsafe {
        null_handle(|out| tidegate_lifecycle_on_stop(null_mut(), NOW, out));
        for now in [NOW, EARLIER] {
            for make in [Life::starting as MakeLife, Life::running] {
                unchanged(make, S::NullArgument, |l| {
                    tidegate_lifecycle_on_stop(l.handle, now, null_mut())
                });
            }
            for make in [Life::idle as MakeLife, Life::stopped] {
                unchanged(make, S::LifecycleNotActive, |l| {
                    untouched(|out| tidegate_lifecycle_on_stop(l.handle, now, out))
                });
            }
            for make in STOPPING {
                unchanged(make, S::LifecycleAlreadyStopping, |l| {
                    untouched(|out| tidegate_lifecycle_on_stop(l.handle, now, out))
                });
            }
        }
        same_as(
            Life::running,
            |l| tidegate_lifecycle_on_stop(l.handle, EARLIER, &mut TidegateStopOutcome::Stopping),
            |l| tidegate_lifecycle_on_stop(l.handle, NOW, &mut TidegateStopOutcome::Stopping),
        );
    }
}

fn lifecycle_on_cancel() {
    unsafe {
        assert_eq!(
            tidegate_lifecycle_on_cancel(null_mut(), NOW, 1),
            S::NullArgument
        );
        for now in [NOW, EARLIER] {
            for code in [0, u32::MAX] {
                for make in [Life::idle as MakeLife, Life::stopped] {
                    unchanged(make, S::LifecycleNotActive, |l| {
                        tidegate_lifecycle_on_cancel(l.handle, now, code)
                    });
                }
                for make in STOPPING {
                    unchanged(make, S::LifecycleAlreadyStopping, |l| {
                        tidegate_lifecycle_on_cancel(l.handle, now, code)
                    });
                }
            }
        }
        same_as(
            Life::running,
            |l| tidegate_lifecycle_on_cancel(l.handle, EARLIER, u32::MAX),
            |l| tidegate_lifecycle_on_cancel(l.handle, NOW, u32::MAX),
        );
    }
}

fn lifecycle_on_torn_down() {
    unsafe {
        lifecycle_report(
            |l, now, generation| tidegate_lifecycle_on_torn_down(l, now, generation),
            &[
                (Life::idle, 0),
                (Life::starting, 1),
                (Life::running, 1),
                (Life::housekeeping, 1),
                (Life::persisting, 1),
                (Life::stopped, 1),
            ],
        );
        same_as(
            Life::tearing_down,
            |l| tidegate_lifecycle_on_torn_down(l.handle, EARLIER, 1),
            |l| tidegate_lifecycle_on_torn_down(l.handle, NOW, 1),
        );
    }
}

fn lifecycle_register_task() {
    unsafe {
        let payload = [0x5Au8; 33];
        null_handle(|out| {
            tidegate_lifecycle_register_task(null_mut(), NOW, 1, payload.as_ptr(), 3, out)
        });
        for now in [NOW, EARLIER] {
            unchanged(Life::running, S::NullArgument, |l| {
                tidegate_lifecycle_register_task(l.handle, now, 1, payload.as_ptr(), 3, null_mut())
            });
            unchanged(Life::running, S::NullArgument, |l| {
                untouched(|out| tidegate_lifecycle_register_task(l.handle, now, 1, null(), 3, out))
            });
            unchanged(Life::running, S::TaskPayloadTooLong, |l| {
                untouched(|out| {
                    tidegate_lifecycle_register_task(l.handle, now, 1, payload.as_ptr(), 33, out)
                })
            });
            unchanged(Life::running, S::InvalidArgument, |l| {
                untouched(|out| {
                    tidegate_lifecycle_register_task(
                        l.handle,
                        now,
                        1,
                        payload.as_ptr(),
                        usize::MAX,
                        out,
                    )
                })
            });
            unchanged(Life::queue_full, S::TaskQueueFull, |l| {
                untouched(|out| {
                    tidegate_lifecycle_register_task(l.handle, now, 1, payload.as_ptr(), 3, out)
                })
            });
            for make in [Life::idle as MakeLife, Life::stopped] {
                unchanged(make, S::LifecycleNotActive, |l| {
                    untouched(|out| {
                        tidegate_lifecycle_register_task(l.handle, now, 1, payload.as_ptr(), 3, out)
                    })
                });
            }
            unchanged(Life::persisting, S::LifecycleHousekeepingOver, |l| {
                untouched(|out| {
                    tidegate_lifecycle_register_task(l.handle, now, 1, payload.as_ptr(), 3, out)
                })
            });
        }
        // Zero bytes, with or without a pointer, and the largest payload are accepted.
        for (data, len) in [(null(), 0), (payload.as_ptr(), 0), (payload.as_ptr(), 32)] {
            let l = Life::running();
            written(|out| {
                tidegate_lifecycle_register_task(l.handle, NOW, u32::MAX, data, len, out)
            });
        }
        same_as(
            Life::running,
            |l| tidegate_lifecycle_register_task(l.handle, EARLIER, 1, payload.as_ptr(), 3, &mut 0),
            |l| tidegate_lifecycle_register_task(l.handle, NOW, 1, payload.as_ptr(), 3, &mut 0),
        );
    }
}

/// A task report: stale generations, unknown and forged tasks, tasks not running, carried over
/// or already ended (a double completion).
unsafe fn lifecycle_task_report(
    report: unsafe extern "C" fn(*mut TidegateLifecycle, u64, u64, u64) -> TidegateStatus,
) {
    unsafe {
        assert_eq!(report(null_mut(), NOW, 1, 1), S::NullArgument);
        let ended = || {
            let l = Life::housekeeping();
            assert_eq!(report(l.handle, NOW, 1, 1), S::Ok);
            l
        };
        for now in [NOW, EARLIER] {
            for generation in [0, 2, u64::MAX] {
                refused(
                    Life::housekeeping,
                    S::ReportUnknownGeneration,
                    refused_report,
                    |l| report(l.handle, now, generation, 1),
                );
            }
            for task in [0, 3, 999, u64::MAX] {
                refused(
                    Life::housekeeping,
                    S::ReportUnknownTask,
                    refused_report,
                    |l| report(l.handle, now, 1, task),
                );
            }
            refused(Life::idle, S::ReportUnknownTask, refused_report, |l| {
                report(l.handle, now, 0, 1)
            });
            refused(
                Life::housekeeping,
                S::ReportTaskNotRunning,
                refused_report,
                |l| report(l.handle, now, 1, 2),
            );
            refused(
                Life::running,
                S::ReportTaskNotRunning,
                refused_report,
                |l| report(l.handle, now, 1, 1),
            );
            refused(ended, S::ReportTaskAlreadyEnded, refused_report, |l| {
                report(l.handle, now, 1, 1)
            });
            for task in [1, 2] {
                refused(
                    Life::persisting,
                    S::ReportTaskCarriedOver,
                    refused_report,
                    |l| report(l.handle, now, 1, task),
                );
            }
            refused(
                Life::stopped,
                S::ReportTaskAlreadyEnded,
                refused_report,
                |l| report(l.handle, now, 1, 1),
            );
        }
        same_as(
            Life::housekeeping,
            |l| report(l.handle, EARLIER, 1, 1),
            |l| report(l.handle, NOW, 1, 1),
        );
    }
}

fn lifecycle_on_task_done() {
    unsafe { lifecycle_task_report(tidegate_lifecycle_on_task_done) }
}

fn lifecycle_on_task_failed() {
    unsafe { lifecycle_task_report(tidegate_lifecycle_on_task_failed) }
}

fn lifecycle_on_journal_persisted() {
    unsafe {
        let persisted = || {
            let l = Life::persisting();
            assert_eq!(
                tidegate_lifecycle_on_journal_persisted(l.handle, NOW, 1),
                S::Ok
            );
            l
        };
        lifecycle_report(
            |l, now, generation| tidegate_lifecycle_on_journal_persisted(l, now, generation),
            &[
                (Life::idle, 0),
                (Life::starting, 1),
                (Life::running, 1),
                (Life::tearing_down, 1),
                (Life::housekeeping, 1),
                (persisted, 1),
                (Life::stopped, 1),
            ],
        );
        same_as(
            Life::persisting,
            |l| tidegate_lifecycle_on_journal_persisted(l.handle, EARLIER, 1),
            |l| tidegate_lifecycle_on_journal_persisted(l.handle, NOW + DEADLINE, 1),
        );
    }
}

fn lifecycle_on_path_change() {
    unsafe {
        null_handle(|out| tidegate_lifecycle_on_path_change(null_mut(), NOW, 1, out));
        for make in [Life::idle as MakeLife, Life::running, Life::reasserting] {
            unchanged(make, S::NullArgument, |l| {
                tidegate_lifecycle_on_path_change(l.handle, NOW, 9, null_mut())
            });
        }
        // Never refused for its value: the same path, no path and the largest fingerprint.
        for path in [0, 3, u64::MAX] {
            let l = Life::reasserting();
            let _: bool =
                written(|out| tidegate_lifecycle_on_path_change(l.handle, NOW, path, out));
        }
        // The path in use, reported again, changes nothing.
        same_as(
            Life::running,
            |l| {
                let mut scheduled = true;
                let status = tidegate_lifecycle_on_path_change(l.handle, NOW, 1, &mut scheduled);
                assert!(!scheduled);
                status
            },
            |_| S::Ok,
        );
    }
}

fn lifecycle_on_wake() {
    unsafe {
        null_handle(|out| tidegate_lifecycle_on_wake(null_mut(), NOW, 1, out));
        for make in [Life::idle as MakeLife, Life::running, Life::tearing_down] {
            unchanged(make, S::NullArgument, |l| {
                tidegate_lifecycle_on_wake(l.handle, NOW, u64::MAX, null_mut())
            });
        }
        for slept in [0, 1, u64::MAX] {
            let l = Life::idle();
            let scheduled: bool =
                written(|out| tidegate_lifecycle_on_wake(l.handle, NOW, slept, out));
            assert!(!scheduled, "no session: nothing to restart");
        }
    }
}

/// A restart report: stale generations, attempts abandoned or never announced.
unsafe fn lifecycle_restart_report(
    report: unsafe extern "C" fn(*mut TidegateLifecycle, u64, u64, u64) -> TidegateStatus,
) {
    unsafe {
        assert_eq!(report(null_mut(), NOW, 1, 2), S::NullArgument);
        for now in [NOW, EARLIER] {
            for generation in [0, 2, u64::MAX] {
                refused(
                    Life::reasserting,
                    S::ReportUnknownGeneration,
                    refused_report,
                    |l| report(l.handle, now, generation, 2),
                );
            }
            // Restart 1 was abandoned: its late report is stale.
            refused(Life::reasserting, S::ReportStaleRestart, stale, |l| {
                report(l.handle, now, 1, 1)
            });
            for restart in [0, 3, u64::MAX] {
                refused(
                    Life::reasserting,
                    S::ReportUnknownRestart,
                    refused_report,
                    |l| report(l.handle, now, 1, restart),
                );
            }
            for make in [Life::idle as MakeLife, Life::running, Life::stopped] {
                refused(make, S::ReportUnknownRestart, refused_report, |l| {
                    report(l.handle, now, make_generation(l), 1)
                });
            }
            refused(Life::restarted, S::ReportStaleGeneration, stale, |l| {
                report(l.handle, now, 1, 1)
            });
        }
        same_as(
            Life::reasserting,
            |l| report(l.handle, EARLIER, 1, 2),
            |l| report(l.handle, NOW + 2_000_000, 1, 2),
        );
    }
}

/// The generation a fixture is in (0 before the first start).
fn make_generation(l: &Life) -> u64 {
    let mut generation = 0;
    let _: TidegateLifecycleState =
        unsafe { written(|out| tidegate_lifecycle_state(l.handle, out, &mut generation)) };
    generation
}

fn lifecycle_on_restart_done() {
    unsafe { lifecycle_restart_report(tidegate_lifecycle_on_restart_done) }
}

fn lifecycle_on_restart_failed() {
    unsafe { lifecycle_restart_report(tidegate_lifecycle_on_restart_failed) }
}

fn lifecycle_write_journal() {
    unsafe {
        let mut buf = Out::<[u8; 256]>::new();
        null_handle(|out| tidegate_lifecycle_write_journal(null(), buf.ptr().cast(), 256, out));
        let len = Life::stopped().journal.len();
        unchanged(Life::persisting, S::NullArgument, |l| {
            let mut buf = Out::<[u8; 256]>::new();
            let status =
                tidegate_lifecycle_write_journal(l.handle, buf.ptr().cast(), 256, null_mut());
            assert!(buf.untouched());
            status
        });
        unchanged(Life::persisting, S::NullArgument, |l| {
            untouched(|out| tidegate_lifecycle_write_journal(l.handle, null_mut(), 256, out))
        });
        // A buffer too small gets nothing, and the length out-parameter gets the size required
        // (the one documented exception to "written only on success").
        for size in [0, 1, len - 1] {
            unchanged(Life::persisting, S::BufferTooSmall, |l| {
                let mut buf = Out::<[u8; 256]>::new();
                let mut required = 7;
                let status = tidegate_lifecycle_write_journal(
                    l.handle,
                    buf.ptr().cast(),
                    size,
                    &mut required,
                );
                assert!(buf.untouched(), "nothing written into a buffer too small");
                assert_eq!(required, len, "the size required");
                status
            });
        }
        unchanged(Life::persisting, S::BufferTooSmall, |l| {
            let mut required = 7;
            let status = tidegate_lifecycle_write_journal(l.handle, null_mut(), 0, &mut required);
            assert_eq!(required, len, "a NULL, empty buffer asks for the size");
            status
        });
        unchanged(Life::persisting, S::InvalidArgument, |l| {
            let mut buf = Out::<[u8; 256]>::new();
            let status = untouched(|out| {
                tidegate_lifecycle_write_journal(l.handle, buf.ptr().cast(), usize::MAX, out)
            });
            assert!(buf.untouched());
            status
        });
        for make in [
            Life::idle as MakeLife,
            Life::running,
            Life::housekeeping,
            Life::stopped,
        ] {
            unchanged(make, S::JournalNone, |l| {
                let mut buf = Out::<[u8; 256]>::new();
                let status = untouched(|out| {
                    tidegate_lifecycle_write_journal(l.handle, buf.ptr().cast(), 256, out)
                });
                assert!(buf.untouched());
                status
            });
        }
    }
}

fn lifecycle_journal_len() {
    unsafe {
        null_handle(|out| tidegate_lifecycle_journal_len(null(), out));
        for make in [
            Life::idle as MakeLife,
            Life::running,
            Life::persisting,
            Life::stopped,
        ] {
            unchanged(make, S::NullArgument, |l| {
                tidegate_lifecycle_journal_len(l.handle, null_mut())
            });
        }
        for make in [
            Life::idle as MakeLife,
            Life::running,
            Life::housekeeping,
            Life::stopped,
        ] {
            unchanged(make, S::JournalNone, |l| {
                untouched(|out| tidegate_lifecycle_journal_len(l.handle, out))
            });
        }
    }
}

fn lifecycle_poll_effect() {
    unsafe {
        null_handle(|out| tidegate_lifecycle_poll_effect(null_mut(), NOW, out));
        // Effects waiting: a NULL out-parameter must not consume them.
        let start_due = || {
            let l = Life::idle();
            assert_eq!(
                tidegate_lifecycle_on_start(l.handle, NOW, null(), 0, &mut 0),
                S::Ok
            );
            l
        };
        let tear_down_due = || {
            let l = Life::running();
            assert_eq!(
                tidegate_lifecycle_on_stop(l.handle, NOW, &mut TidegateStopOutcome::Stopping),
                S::Ok
            );
            l
        };
        for make in [start_due as MakeLife, tear_down_due, Life::housekeeping] {
            for now in [NOW, EARLIER, NOW + DEADLINE] {
                unchanged(make, S::NullArgument, |l| {
                    tidegate_lifecycle_poll_effect(l.handle, now, null_mut())
                });
            }
        }
        same_as(
            tear_down_due,
            |l| tidegate_lifecycle_poll_effect(l.handle, EARLIER, Out::new().ptr()),
            |l| tidegate_lifecycle_poll_effect(l.handle, NOW, Out::new().ptr()),
        );
    }
}

fn lifecycle_poll_timeout() {
    unsafe {
        null_handle(|out| tidegate_lifecycle_poll_timeout(null(), out));
        unchanged(Life::housekeeping, S::NullArgument, |l| {
            tidegate_lifecycle_poll_timeout(l.handle, null_mut())
        });
    }
}

fn lifecycle_handle_timeout() {
    unsafe {
        assert_eq!(
            tidegate_lifecycle_handle_timeout(null_mut(), NOW),
            S::NullArgument
        );
        for make in [
            Life::idle as MakeLife,
            Life::running,
            Life::housekeeping,
            Life::persisting,
        ] {
            unchanged(make, S::Ok, |l| {
                tidegate_lifecycle_handle_timeout(l.handle, EARLIER)
            });
        }
        unchanged(Life::housekeeping, S::Ok, |l| {
            tidegate_lifecycle_handle_timeout(l.handle, NOW)
        });
    }
}

fn lifecycle_state() {
    unsafe {
        let mut generation = Out::<u64>::new();
        null_handle(|out| tidegate_lifecycle_state(null(), out, generation.ptr()));
        assert!(generation.untouched());
        unchanged(Life::running, S::NullArgument, |l| {
            untouched(|generation| tidegate_lifecycle_state(l.handle, null_mut(), generation))
        });
        unchanged(Life::running, S::NullArgument, |l| {
            untouched(|state| tidegate_lifecycle_state(l.handle, state, null_mut()))
        });
    }
}

fn lifecycle_stats() {
    unsafe {
        null_handle(|out| tidegate_lifecycle_stats(null(), out));
        unchanged(Life::running, S::NullArgument, |l| {
            tidegate_lifecycle_stats(l.handle, null_mut())
        });
    }
}

// ---- proxy engine -------------------------------------------------------------------------------

/// A proxy engine with flows in every state a call can meet, and their ids. Two race slots, both
/// taken, so a DNS answer for a third flow finds none.
struct Proxy {
    handle: *mut TidegateProxy,
    /// Established by a race (it holds a budget connection), 1500 bytes read locally (over its
    /// 1000-byte watermark).
    won: u64,
    /// Racing: one IPv6 attempt in flight.
    racing: u64,
    /// Racing: resolved, waiting for its Resolution Delay.
    resolving: u64,
    /// Opening, no race.
    opening: u64,
    /// Established by the host's system.
    system: u64,
    /// Closed by the host: a stale id.
    stale: u64,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        unsafe { tidegate_proxy_free(self.handle) }
    }
}

fn proxy_config() -> TidegateProxyConfig {
    TidegateProxyConfig {
        flows: flow_policy(),
        race_slots: 2,
        ..tidegate_proxy_config_default()
    }
}

fn ipv4(last: u8) -> TidegateSocketAddress {
    TidegateSocketAddress {
        ip: [192, 0, 2, last, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        port: 443,
        family: TidegateAddressFamily::Ipv4 as u8,
        reserved: 0,
        scope_id: 0,
    }
}

fn ipv6(last: u8) -> TidegateSocketAddress {
    let mut ip = [0; 16];
    ip[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
    ip[15] = last;
    TidegateSocketAddress {
        ip,
        port: 443,
        family: TidegateAddressFamily::Ipv6 as u8,
        reserved: 0,
        scope_id: 0,
    }
}

const V4: u32 = TidegateAddressFamily::Ipv4 as u32;
const V6: u32 = TidegateAddressFamily::Ipv6 as u32;

impl Proxy {
    fn new() -> Proxy {
        let start = NOW - 2_000_000;
        let mut handle = null_mut();
        assert_eq!(
            unsafe { tidegate_proxy_new(&proxy_config(), start, &mut handle) },
            S::Ok
        );
        unsafe {
            let admit = |destination: u64| {
                let admission: TidegateAdmission = written(|out| {
                    tidegate_proxy_on_new_flow(handle, start, 1, destination, TCP, STREAM, out)
                });
                assert_eq!(admission.decision, TidegateAdmissionDecision::Accepted);
                admission.flow
            };
            let (won, opening, system, stale) = (admit(1), admit(2), admit(3), admit(4));
            let added: usize =
                written(|out| tidegate_proxy_on_resolved(handle, start, won, V4, &ipv4(1), 1, out));
            assert_eq!(added, 1);
            assert_eq!(tidegate_proxy_on_resolution_done(handle, start, won), S::Ok);
            let mut p = Proxy {
                handle,
                won,
                racing: 0,
                resolving: 0,
                opening,
                system,
                stale,
            };
            proxy_events(handle);
            assert_eq!(
                tidegate_proxy_on_attempt_connected(handle, start, won, 0),
                S::Ok
            );
            let log = proxy_events(handle);
            assert_eq!(log.len(), 1, "established: {log:?}");
            let late = NOW - 100;
            let racing = admit(5);
            let resolving = admit(6);
            let _: usize = written(|out| {
                tidegate_proxy_on_resolved(handle, late, racing, V6, &ipv6(2), 1, out)
            });
            let _: usize = written(|out| {
                tidegate_proxy_on_resolved(handle, late, resolving, V4, &ipv4(3), 1, out)
            });
            assert_eq!(proxy_events(handle).len(), 1, "the IPv6 attempt starts");
            assert_eq!(tidegate_proxy_on_connecting(handle, start, system), S::Ok);
            assert_eq!(tidegate_proxy_on_connected(handle, start, system), S::Ok);
            let mut outcome = TidegateFlowOutcome::Closed;
            assert_eq!(
                tidegate_proxy_on_closed(handle, start, stale, &mut outcome),
                S::Ok
            );
            let mut can_read = true;
            assert_eq!(
                tidegate_proxy_on_bytes(handle, late, won, 0, 1500, &mut can_read),
                S::Ok
            );
            assert!(!can_read);
            p.racing = racing;
            p.resolving = resolving;
            p
        }
    }

    fn ids(&self) -> [u64; 6] {
        [
            self.won,
            self.racing,
            self.resolving,
            self.opening,
            self.system,
            self.stale,
        ]
    }

    fn forged(&self) -> [u64; 6] {
        forged_flow_ids(self.won)
    }
}

type ProxySnapshot = (
    TidegateProxyStats,
    u64,
    Vec<(TidegateStatus, Option<TidegateProxyFlow>, bool, bool)>,
);

impl Fixture for Proxy {
    type Snapshot = ProxySnapshot;

    fn snapshot(&self) -> ProxySnapshot {
        unsafe {
            let flows = self
                .ids()
                .iter()
                .map(|&flow| {
                    let mut view = Out::<TidegateProxyFlow>::new();
                    let status = tidegate_proxy_flow(self.handle, flow, view.ptr());
                    let view = (status == S::Ok).then(|| view.value());
                    (
                        status,
                        view,
                        written(|out| tidegate_proxy_can_read(self.handle, flow, 0, out)),
                        written(|out| tidegate_proxy_can_read(self.handle, flow, 1, out)),
                    )
                })
                .collect();
            (
                written(|out| tidegate_proxy_stats(self.handle, out)),
                written(|out| tidegate_proxy_poll_timeout(self.handle, out)),
                flows,
            )
        }
    }

    /// The events due now and at the next timer: a refused call that moved the clock would
    /// fire the races' timers early and show here.
    fn drain(&mut self) -> Vec<String> {
        let mut log = proxy_events(self.handle);
        unsafe {
            let deadline: u64 = written(|out| tidegate_proxy_poll_timeout(self.handle, out));
            if deadline != u64::MAX {
                assert_eq!(tidegate_proxy_handle_timeout(self.handle, NOW), S::Ok);
                log.push("timer at NOW".into());
                log.extend(proxy_events(self.handle));
            }
        }
        log
    }
}

/// Take every event `proxy` has, recording each.
fn proxy_events(proxy: *mut TidegateProxy) -> Vec<String> {
    let mut log = Vec::new();
    let mut batch = [Out::<TidegateProxyEvent>::new(), Out::new()];
    loop {
        let count: usize =
            unsafe { written(|out| tidegate_proxy_poll_events(proxy, batch[0].ptr(), 1, out)) };
        if count == 0 {
            return log;
        }
        log.push(format!("{:?}", unsafe { batch[0].value() }));
        let _ = &mut batch[1];
    }
}

fn bad_proxy_configs() -> Vec<(TidegateProxyConfig, TidegateStatus)> {
    let good = proxy_config();
    let mut bad: Vec<_> = bad_flow_policies()
        .into_iter()
        .map(|(flows, status)| (TidegateProxyConfig { flows, ..good }, status))
        .collect();
    bad.extend(
        bad_budget_configs()
            .into_iter()
            .map(|(budget, status)| (TidegateProxyConfig { budget, ..good }, status)),
    );
    bad.extend(
        bad_eyeballs_configs()
            .into_iter()
            .map(|(race, status)| (TidegateProxyConfig { race, ..good }, status)),
    );
    bad.push((
        TidegateProxyConfig {
            race_slots: 0,
            ..good
        },
        S::ConfigZeroCapacity,
    ));
    bad.push((
        TidegateProxyConfig {
            race_slots: u32::MAX,
            ..good
        },
        S::ConfigZeroCapacity,
    ));
    bad.push((
        TidegateProxyConfig {
            reserved: 1,
            ..good
        },
        S::InvalidArgument,
    ));
    bad
}

fn proxy_config_default() {
    let c = tidegate_proxy_config_default();
    assert_eq!(c, tidegate_proxy_config_default());
    assert_eq!(c.race_slots, 128);
    assert_eq!(c.reserved, 0);
    let _: usize = written(|out| unsafe { tidegate_proxy_footprint(&c, out, &mut 0) });
}

fn proxy_footprint() {
    configs_refused(&proxy_config(), bad_proxy_configs(), |config, out| unsafe {
        tidegate_proxy_footprint(config, out, &mut 0)
    });
}

fn proxy_new() {
    configs_refused(&proxy_config(), bad_proxy_configs(), |config, out| unsafe {
        tidegate_proxy_new(config, NOW, out)
    });
}

fn proxy_init() {
    init_refuses(
        &proxy_config(),
        bad_proxy_configs(),
        |config, size, align| unsafe { tidegate_proxy_footprint(config, size, align) },
        |config, memory, len, out| unsafe { tidegate_proxy_init(config, NOW, memory, len, out) },
        tidegate_proxy_free,
    );
}

fn proxy_free() {
    unsafe { tidegate_proxy_free(null_mut()) };
}

/// Times every per-flow call is tried at: now, a `now` earlier than one seen, and one far
/// later (a refused call must not move the clock there).
const PROXY_TIMES: [u64; 3] = [NOW, EARLIER, NOW + 60_000_000];

fn proxy_on_new_flow() {
    unsafe {
        null_handle(|out| tidegate_proxy_on_new_flow(null_mut(), NOW, 1, 1, TCP, STREAM, out));
        for now in PROXY_TIMES {
            unchanged(Proxy::new, S::NullArgument, |p| {
                tidegate_proxy_on_new_flow(p.handle, now, 1, 9, TCP, STREAM, null_mut())
            });
            for protocol in [2, 17, 256, u32::MAX] {
                unchanged(Proxy::new, S::InvalidArgument, |p| {
                    untouched(|out| {
                        tidegate_proxy_on_new_flow(p.handle, now, 1, 9, protocol, STREAM, out)
                    })
                });
            }
            for class in [3, 53, 256, u32::MAX] {
                unchanged(Proxy::new, S::InvalidArgument, |p| {
                    untouched(|out| {
                        tidegate_proxy_on_new_flow(p.handle, now, 1, 9, TCP, class, out)
                    })
                });
            }
        }
        // The budget has room: the flow is admitted.
        let p = Proxy::new();
        let answer: TidegateAdmission =
            written(|out| tidegate_proxy_on_new_flow(p.handle, NOW, 2, 9, TCP, STREAM, out));
        assert_eq!(answer.decision, TidegateAdmissionDecision::Accepted);
        same_as(
            Proxy::new,
            |p| tidegate_proxy_on_new_flow(p.handle, EARLIER, 2, 9, TCP, STREAM, Out::new().ptr()),
            |p| tidegate_proxy_on_new_flow(p.handle, NOW, 2, 9, TCP, STREAM, Out::new().ptr()),
        );
    }
}

/// Picks one flow of a [`Proxy`] fixture.
type PickFlow = fn(&Proxy) -> u64;

/// A report about one flow: NULL handle, forged ids and the stale id, each refused and changing
/// nothing; then each of `wrong` (a flow picked from the fixture, and the status it gets).
unsafe fn proxy_report(
    report: impl Fn(*mut TidegateProxy, u64, u64) -> TidegateStatus,
    wrong: &[(PickFlow, TidegateStatus)],
) {
    assert_eq!(report(null_mut(), NOW, 1), S::NullArgument);
    let p = Proxy::new();
    for now in PROXY_TIMES {
        for forged in p.forged() {
            unchanged(Proxy::new, S::UnknownFlow, |q| {
                report(q.handle, now, forged)
            });
        }
        unchanged(Proxy::new, S::StaleFlow, |q| report(q.handle, now, q.stale));
        for &(pick, status) in wrong {
            // A DNS input refused for want of a race slot is counted, and changes nothing else.
            let counted = |(stats, _, _): &mut ProxySnapshot| {
                if status == S::NoRaceSlot {
                    stats.races.no_slot += 1;
                }
            };
            refused(Proxy::new, status, counted, |q| {
                report(q.handle, now, pick(q))
            });
        }
    }
}

fn proxy_on_connecting() {
    unsafe {
        proxy_report(
            |p, now, flow| tidegate_proxy_on_connecting(p, now, flow),
            &[
                (|p| p.racing, S::RaceRunning),
                (|p| p.system, S::FlowInvalidState),
                (|p| p.won, S::FlowInvalidState),
            ],
        );
    }
}

fn proxy_on_connected() {
    unsafe {
        proxy_report(
            |p, now, flow| tidegate_proxy_on_connected(p, now, flow),
            &[
                (|p| p.racing, S::RaceRunning),
                (|p| p.resolving, S::RaceRunning),
                (|p| p.system, S::FlowInvalidState),
            ],
        );
    }
}

fn proxy_on_connect_failed() {
    unsafe {
        proxy_report(
            |p, now, flow| untouched(|out| tidegate_proxy_on_connect_failed(p, now, flow, 61, out)),
            &[
                (|p| p.racing, S::RaceRunning),
                (|p| p.system, S::FlowInvalidState),
            ],
        );
        unchanged(Proxy::new, S::NullArgument, |p| {
            tidegate_proxy_on_connect_failed(p.handle, NOW, p.opening, 61, null_mut())
        });
    }
}

fn proxy_on_closed() {
    unsafe {
        proxy_report(
            |p, now, flow| untouched(|out| tidegate_proxy_on_closed(p, now, flow, out)),
            &[],
        );
        unchanged(Proxy::new, S::NullArgument, |p| {
            tidegate_proxy_on_closed(p.handle, NOW, p.won, null_mut())
        });
    }
}

fn proxy_on_bytes() {
    unsafe {
        proxy_report(
            |p, now, flow| untouched(|out| tidegate_proxy_on_bytes(p, now, flow, 0, 10, out)),
            &[],
        );
        for now in PROXY_TIMES {
            unchanged(Proxy::new, S::NullArgument, |p| {
                tidegate_proxy_on_bytes(p.handle, now, p.won, 0, 10, null_mut())
            });
            for what in [4, 256, u32::MAX] {
                unchanged(Proxy::new, S::InvalidArgument, |p| {
                    untouched(|out| tidegate_proxy_on_bytes(p.handle, now, p.won, what, 10, out))
                });
            }
            // More completed than pending, each direction.
            for (what, bytes) in [(1, 1501), (3, 1)] {
                unchanged(Proxy::new, S::CompletionExceedsPending, |p| {
                    untouched(|out| tidegate_proxy_on_bytes(p.handle, now, p.won, what, bytes, out))
                });
            }
            // A read too large to count.
            unchanged(Proxy::new, S::InvalidArgument, |p| {
                untouched(|out| tidegate_proxy_on_bytes(p.handle, now, p.won, 0, u64::MAX, out))
            });
        }
    }
}

fn proxy_can_read() {
    unsafe {
        null_handle(|out| tidegate_proxy_can_read(null_mut(), 1, 0, out));
        unchanged(Proxy::new, S::NullArgument, |p| {
            tidegate_proxy_can_read(p.handle, p.won, 0, null_mut())
        });
        for side in [2, 256, u32::MAX] {
            unchanged(Proxy::new, S::InvalidArgument, |p| {
                untouched(|out| tidegate_proxy_can_read(p.handle, p.won, side, out))
            });
        }
        // Forged and stale ids name no open flow: not readable.
        let p = Proxy::new();
        for flow in p.forged().into_iter().chain([p.stale]) {
            assert!(!written(|out| tidegate_proxy_can_read(
                p.handle, flow, 0, out
            )));
        }
    }
}

fn proxy_on_resolved() {
    unsafe {
        let one = ipv4(7);
        proxy_report(
            |p, now, flow| {
                untouched(|out| tidegate_proxy_on_resolved(p, now, flow, V4, &one, 1, out))
            },
            &[
                (|p| p.won, S::FlowInvalidState),
                (|p| p.system, S::FlowInvalidState),
                // Both race slots are taken.
                (|p| p.opening, S::NoRaceSlot),
            ],
        );
        for now in PROXY_TIMES {
            unchanged(Proxy::new, S::NullArgument, |p| {
                tidegate_proxy_on_resolved(p.handle, now, p.racing, V4, &one, 1, null_mut())
            });
            unchanged(Proxy::new, S::NullArgument, |p| {
                untouched(|out| {
                    tidegate_proxy_on_resolved(p.handle, now, p.racing, V4, null(), 1, out)
                })
            });
            for family in [0, 5, 256, u32::MAX] {
                unchanged(Proxy::new, S::InvalidArgument, |p| {
                    untouched(|out| {
                        tidegate_proxy_on_resolved(p.handle, now, p.racing, family, &one, 1, out)
                    })
                });
            }
            // An IPv4 address in an AAAA answer, after a good one: nothing is fed.
            let mixed = [ipv6(9), ipv4(9)];
            unchanged(Proxy::new, S::AddressFamilyMismatch, |p| {
                untouched(|out| {
                    tidegate_proxy_on_resolved(p.handle, now, p.racing, V6, mixed.as_ptr(), 2, out)
                })
            });
            let mut unknown = ipv4(9);
            unknown.family = 5;
            unchanged(Proxy::new, S::InvalidArgument, |p| {
                untouched(|out| {
                    tidegate_proxy_on_resolved(p.handle, now, p.racing, V4, &unknown, 1, out)
                })
            });
            // A count whose bytes overflow the address space.
            unchanged(Proxy::new, S::InvalidArgument, |p| {
                untouched(|out| {
                    tidegate_proxy_on_resolved(p.handle, now, p.racing, V4, &one, usize::MAX, out)
                })
            });
        }
    }
}

fn proxy_on_resolution_failed() {
    unsafe {
        proxy_report(
            |p, now, flow| tidegate_proxy_on_resolution_failed(p, now, flow, V4),
            &[
                (|p| p.system, S::FlowInvalidState),
                (|p| p.opening, S::NoRaceSlot),
            ],
        );
        for family in [0, 5, u32::MAX] {
            unchanged(Proxy::new, S::InvalidArgument, |p| {
                tidegate_proxy_on_resolution_failed(p.handle, NOW, p.racing, family)
            });
        }
    }
}

fn proxy_on_resolution_done() {
    unsafe {
        proxy_report(
            |p, now, flow| tidegate_proxy_on_resolution_done(p, now, flow),
            &[
                (|p| p.won, S::FlowInvalidState),
                (|p| p.opening, S::NoRaceSlot),
            ],
        );
    }
}

fn proxy_on_attempt_connected() {
    unsafe {
        proxy_report(
            |p, now, flow| tidegate_proxy_on_attempt_connected(p, now, flow, 0),
            &[
                (|p| p.won, S::NoRace),
                (|p| p.opening, S::NoRace),
                (|p| p.system, S::NoRace),
                (|p| p.resolving, S::UnknownAttempt),
            ],
        );
        for attempt in [1, 16, u32::MAX] {
            unchanged(Proxy::new, S::UnknownAttempt, |p| {
                tidegate_proxy_on_attempt_connected(p.handle, NOW, p.racing, attempt)
            });
        }
    }
}

fn proxy_on_attempt_failed() {
    unsafe {
        proxy_report(
            |p, now, flow| tidegate_proxy_on_attempt_failed(p, now, flow, 0, 61),
            &[
                (|p| p.won, S::NoRace),
                (|p| p.opening, S::NoRace),
                (|p| p.resolving, S::UnknownAttempt),
            ],
        );
        for attempt in [1, 16, u32::MAX] {
            unchanged(Proxy::new, S::UnknownAttempt, |p| {
                tidegate_proxy_on_attempt_failed(p.handle, NOW, p.racing, attempt, 24)
            });
        }
    }
}

fn proxy_poll_events() {
    unsafe {
        null_handle(|out| tidegate_proxy_poll_events(null_mut(), null_mut(), 0, out));
        unchanged(Proxy::new, S::NullArgument, |p| {
            untouched(|out| tidegate_proxy_poll_events(p.handle, null_mut(), 4, out))
        });
        unchanged(Proxy::new, S::NullArgument, |p| {
            let mut batch = Out::<TidegateProxyEvent>::new();
            tidegate_proxy_poll_events(p.handle, batch.ptr(), 1, null_mut())
        });
    }
}

fn proxy_poll_timeout() {
    unsafe {
        null_handle(|out| tidegate_proxy_poll_timeout(null_mut(), out));
        unchanged(Proxy::new, S::NullArgument, |p| {
            tidegate_proxy_poll_timeout(p.handle, null_mut())
        });
    }
}

fn proxy_handle_timeout() {
    unsafe {
        assert_eq!(
            tidegate_proxy_handle_timeout(null_mut(), NOW),
            S::NullArgument
        );
        same_as(
            Proxy::new,
            |p| tidegate_proxy_handle_timeout(p.handle, EARLIER),
            |p| tidegate_proxy_handle_timeout(p.handle, NOW - 100),
        );
    }
}

fn proxy_flow() {
    unsafe {
        null_handle(|out| tidegate_proxy_flow(null_mut(), 1, out));
        unchanged(Proxy::new, S::NullArgument, |p| {
            tidegate_proxy_flow(p.handle, p.won, null_mut())
        });
        let p = Proxy::new();
        for flow in p.forged() {
            assert_eq!(
                untouched(|out| tidegate_proxy_flow(p.handle, flow, out)),
                S::UnknownFlow
            );
        }
        assert_eq!(
            untouched(|out| tidegate_proxy_flow(p.handle, p.stale, out)),
            S::StaleFlow
        );
    }
}

fn proxy_app_state() {
    unsafe {
        null_handle(|out| tidegate_proxy_app_state(null_mut(), 1, out));
        unchanged(Proxy::new, S::NullArgument, |p| {
            tidegate_proxy_app_state(p.handle, 1, null_mut())
        });
    }
}

fn proxy_stats() {
    unsafe {
        null_handle(|out| tidegate_proxy_stats(null_mut(), out));
        unchanged(Proxy::new, S::NullArgument, |p| {
            tidegate_proxy_stats(p.handle, null_mut())
        });
    }
}

fn proxy_set_max_connecting() {
    unsafe {
        assert_eq!(
            tidegate_proxy_set_max_connecting(null_mut(), 1),
            S::NullArgument
        );
        // 0 is a documented value: every new flow is refused, counted, no error.
        let p = Proxy::new();
        assert_eq!(tidegate_proxy_set_max_connecting(p.handle, 0), S::Ok);
        let answer: TidegateAdmission =
            written(|out| tidegate_proxy_on_new_flow(p.handle, NOW, 2, 9, TCP, STREAM, out));
        assert_eq!(answer.reject_reason, TidegateRejectReason::ConnectionBudget);
        assert_eq!(answer.budget_refusal, TidegateBudgetRefusal::None);
    }
}

fn proxy_set_fd_limit() {
    unsafe {
        assert_eq!(
            tidegate_proxy_set_fd_limit(null_mut(), 1024),
            S::NullArgument
        );
        unchanged(Proxy::new, S::ConfigBudgetZeroLimit, |p| {
            tidegate_proxy_set_fd_limit(p.handle, 0)
        });
    }
}

fn proxy_on_resource_error() {
    unsafe {
        assert_eq!(
            tidegate_proxy_on_resource_error(null_mut(), NOW),
            S::NullArgument
        );
    }
}

fn proxy_try_open_connection() {
    unsafe {
        assert_eq!(
            tidegate_proxy_try_open_connection(null_mut(), NOW),
            S::NullArgument
        );
        // At the connection limit: refused, counted as a refused connection, nothing opened.
        let make = || {
            let p = Proxy::new();
            while tidegate_proxy_try_open_connection(p.handle, NOW) == S::Ok {}
            p
        };
        refused(
            make,
            S::NoBudgetConnections,
            |(stats, _, _)| stats.budget.connections_refused += 1,
            |p| tidegate_proxy_try_open_connection(p.handle, NOW),
        );
    }
}

fn proxy_on_connection_closed() {
    unsafe {
        assert_eq!(
            tidegate_proxy_on_connection_closed(null_mut(), NOW),
            S::NullArgument
        );
        // The one open connection is the raced flow's, not the host's own.
        for now in PROXY_TIMES {
            unchanged(Proxy::new, S::BudgetNoOpenConnection, |p| {
                tidegate_proxy_on_connection_closed(p.handle, now)
            });
        }
    }
}

// ---- memory pressure in the engines -----------------------------------------------------------

/// Pressure levels C may not pass: the first value past the last, and the largest.
const UNKNOWN_LEVELS: [u32; 2] = [3, u32::MAX];

fn tunnel_on_pressure() {
    unsafe {
        null_handle(|out| tidegate_tunnel_on_pressure(null_mut(), NOW, 1, out));
        unchanged(Tunnel::busy, S::NullArgument, |t| {
            tidegate_tunnel_on_pressure(t.0, NOW, 1, null_mut())
        });
        for level in UNKNOWN_LEVELS {
            unchanged(Tunnel::busy, S::InvalidArgument, |t| {
                untouched(|out| tidegate_tunnel_on_pressure(t.0, NOW, level, out))
            });
        }
        same_as(
            Tunnel::busy,
            |t| tidegate_tunnel_on_pressure(t.0, EARLIER, 2, Out::new().ptr()),
            |t| tidegate_tunnel_on_pressure(t.0, NOW, 2, Out::new().ptr()),
        );
    }
}

fn tunnel_limits() {
    unsafe {
        null_handle(|out| tidegate_tunnel_limits(null(), out));
        unchanged(Tunnel::busy, S::NullArgument, |t| {
            tidegate_tunnel_limits(t.0, null_mut())
        });
    }
}

fn proxy_on_pressure() {
    unsafe {
        assert_eq!(
            tidegate_proxy_on_pressure(null_mut(), NOW, 1),
            S::NullArgument
        );
        for level in UNKNOWN_LEVELS {
            unchanged(Proxy::new, S::InvalidArgument, |p| {
                tidegate_proxy_on_pressure(p.handle, NOW, level)
            });
        }
    }
}

// ---- memory governor ----------------------------------------------------------------------------

/// A memory governor at elevated pressure (18 MiB of 30 MiB used: a preset for a 30 MiB limit),
/// holding one reservation (`held`) granted since the last report.
struct Mem {
    handle: *mut TidegateMemory,
    held: u64,
}

impl Drop for Mem {
    fn drop(&mut self) {
        unsafe { tidegate_memory_free(self.handle) }
    }
}

fn memory_config() -> TidegateMemoryConfig {
    TidegateMemoryConfig {
        limit_bytes: 30 << 20,
        max_reservations: 2,
        ..tidegate_memory_config_packet_tunnel()
    }
}

impl Mem {
    fn elevated() -> Mem {
        unsafe {
            let mut handle = null_mut();
            assert_eq!(tidegate_memory_new(&memory_config(), &mut handle), S::Ok);
            assert_eq!(tidegate_memory_on_footprint(handle, NOW, 17 << 20), S::Ok);
            let held = written(|out| tidegate_memory_reserve(handle, NOW, 1 << 20, out));
            Mem { handle, held }
        }
    }

    /// Both reservation slots taken.
    fn full() -> Mem {
        let m = Mem::elevated();
        unsafe { written(|out| tidegate_memory_reserve(m.handle, NOW, 1024, out)) };
        m
    }

    /// Critical, then calm since `NOW`: the level may fall at `NOW + 1 s`.
    fn calming() -> Mem {
        let m = Mem::elevated();
        unsafe {
            assert_eq!(tidegate_memory_on_footprint(m.handle, NOW, 25 << 20), S::Ok);
            assert_eq!(tidegate_memory_on_footprint(m.handle, NOW, 1 << 20), S::Ok);
        }
        m
    }
}

impl Fixture for Mem {
    type Snapshot = (TidegateMemoryStats, u64);

    fn snapshot(&self) -> Self::Snapshot {
        unsafe {
            (
                written(|out| tidegate_memory_stats(self.handle, out)),
                written(|out| tidegate_memory_poll_timeout(self.handle, out)),
            )
        }
    }

    fn drain(&mut self) -> Vec<String> {
        let mut log = Vec::new();
        loop {
            let (mut level, mut changed) = (TidegatePressure::Normal, false);
            let status =
                unsafe { tidegate_memory_poll_pressure(self.handle, &mut level, &mut changed) };
            assert_eq!(status, S::Ok);
            if !changed {
                return log;
            }
            log.push(format!("{level:?}"));
        }
    }
}

/// Memory configurations that cannot work, with their status: each is refused, none clamped.
fn bad_memory_configs() -> Vec<(TidegateMemoryConfig, TidegateStatus)> {
    let good = memory_config();
    let with = |edit: fn(&mut TidegateMemoryConfig)| {
        let mut config = good;
        edit(&mut config);
        config
    };
    vec![
        (with(|c| c.limit_bytes = 0), S::ConfigMemoryZeroLimit),
        (
            with(|c| c.max_reservations = 0),
            S::ConfigMemoryReservations,
        ),
        (
            with(|c| c.max_reservations = TIDEGATE_MEMORY_RESERVATIONS_MAX + 1),
            S::ConfigMemoryReservations,
        ),
        (with(|c| c.elevated_permille = 0), S::ConfigMemoryThresholds),
        (
            with(|c| c.elevated_permille = 700),
            S::ConfigMemoryThresholds,
        ),
        (
            with(|c| c.critical_permille = 1001),
            S::ConfigMemoryThresholds,
        ),
        (
            with(|c| c.critical_permille = 65_536 + 700),
            S::ConfigMemoryThresholds,
        ),
        (
            with(|c| c.hysteresis_permille = 0),
            S::ConfigMemoryHysteresis,
        ),
        (
            with(|c| c.hysteresis_permille = 500),
            S::ConfigMemoryHysteresis,
        ),
        (
            with(|c| c.hysteresis_permille = 65_536 + 100),
            S::ConfigMemoryHysteresis,
        ),
    ]
}

fn memory_config_packet_tunnel() {
    let config = tidegate_memory_config_packet_tunnel();
    assert_eq!(config.limit_bytes, 50 << 20);
    unsafe { written(|out| tidegate_memory_footprint(&config, out, &mut 0)) };
}

fn memory_config_app_proxy() {
    let config = tidegate_memory_config_app_proxy();
    assert_eq!(config.limit_bytes, 15 << 20);
    unsafe { written(|out| tidegate_memory_footprint(&config, out, &mut 0)) };
}

fn memory_footprint() {
    configs_refused(
        &memory_config(),
        bad_memory_configs(),
        |config, out| unsafe { tidegate_memory_footprint(config, out, &mut 0) },
    );
}

fn memory_new() {
    unsafe {
        configs_refused(&memory_config(), bad_memory_configs(), |config, out| {
            tidegate_memory_new(config, out)
        });
        // The edges are accepted: one reservation or the most, thresholds at 1 and 1000.
        for odd in [
            TidegateMemoryConfig {
                max_reservations: 1,
                elevated_permille: 2,
                hysteresis_permille: 1,
                critical_permille: 1000,
                limit_bytes: 1,
                calm_us: 0,
            },
            TidegateMemoryConfig {
                max_reservations: TIDEGATE_MEMORY_RESERVATIONS_MAX,
                ..memory_config()
            },
        ] {
            let mut handle = null_mut();
            assert_eq!(tidegate_memory_new(&odd, &mut handle), S::Ok);
            let m = Mem { handle, held: 0 };
            assert_eq!(tidegate_memory_on_headroom(m.handle, NOW, 0), S::Ok);
        }
    }
}

fn memory_init() {
    init_refuses(
        &memory_config(),
        bad_memory_configs(),
        |config, size, align| unsafe { tidegate_memory_footprint(config, size, align) },
        |config, memory, len, out| unsafe { tidegate_memory_init(config, memory, len, out) },
        tidegate_memory_free,
    );
}

fn memory_free() {
    unsafe { tidegate_memory_free(null_mut()) };
}

fn memory_on_headroom() {
    unsafe {
        assert_eq!(
            tidegate_memory_on_headroom(null_mut(), NOW, 1),
            S::NullArgument
        );
        same_as(
            Mem::elevated,
            |m| tidegate_memory_on_headroom(m.handle, EARLIER, 5 << 20),
            |m| tidegate_memory_on_headroom(m.handle, NOW, 5 << 20),
        );
    }
}

fn memory_on_footprint() {
    unsafe {
        assert_eq!(
            tidegate_memory_on_footprint(null_mut(), NOW, 1),
            S::NullArgument
        );
        same_as(
            Mem::elevated,
            |m| tidegate_memory_on_footprint(m.handle, EARLIER, 5 << 20),
            |m| tidegate_memory_on_footprint(m.handle, NOW, 5 << 20),
        );
    }
}

fn memory_reserve() {
    unsafe {
        null_handle(|out| tidegate_memory_reserve(null_mut(), NOW, 1, out));
        unchanged(Mem::elevated, S::NullArgument, |m| {
            tidegate_memory_reserve(m.handle, NOW, 1, null_mut())
        });
        unchanged(Mem::elevated, S::InvalidArgument, |m| {
            untouched(|out| tidegate_memory_reserve(m.handle, NOW, 0, out))
        });
        // 18 MiB projected; 3 MiB more reaches the critical threshold (21 MiB): refused and
        // counted, nothing else changes, not even the clock.
        for bytes in [3 << 20, u64::MAX] {
            refused(
                Mem::elevated,
                S::MemoryPressure,
                |snapshot| {
                    snapshot.0.reservations_refused += 1;
                    snapshot.0.refused_bytes = snapshot.0.refused_bytes.saturating_add(bytes);
                },
                |m| untouched(|out| tidegate_memory_reserve(m.handle, NOW + 5, bytes, out)),
            );
        }
        unchanged(Mem::full, S::NoReservationSlot, |m| {
            untouched(|out| tidegate_memory_reserve(m.handle, NOW, 1, out))
        });
        same_as(
            Mem::elevated,
            |m| tidegate_memory_reserve(m.handle, EARLIER, 1, Out::new().ptr()),
            |m| tidegate_memory_reserve(m.handle, NOW, 1, Out::new().ptr()),
        );
    }
}

fn memory_release() {
    unsafe {
        assert_eq!(tidegate_memory_release(null_mut(), NOW, 1), S::NullArgument);
        let make = Mem::elevated;
        let held = make().held;
        for forged in [0, u64::MAX, held + 1, held ^ (1 << 32), held + (2 << 32)] {
            unchanged(make, S::UnknownReservation, |m| {
                tidegate_memory_release(m.handle, NOW, forged)
            });
        }
        // Released twice: the second is refused.
        unchanged(
            || {
                let m = Mem::elevated();
                assert_eq!(tidegate_memory_release(m.handle, NOW, m.held), S::Ok);
                m
            },
            S::UnknownReservation,
            |m| tidegate_memory_release(m.handle, NOW, m.held),
        );
    }
}

fn memory_poll_pressure() {
    unsafe {
        let mut changed = Out::<bool>::new();
        null_handle(|out| tidegate_memory_poll_pressure(null_mut(), out, changed.ptr()));
        assert!(changed.untouched());
        // A NULL out-parameter neither reports nor consumes the change.
        unchanged(Mem::elevated, S::NullArgument, |m| {
            untouched(|changed| tidegate_memory_poll_pressure(m.handle, null_mut(), changed))
        });
        unchanged(Mem::elevated, S::NullArgument, |m| {
            untouched(|level| tidegate_memory_poll_pressure(m.handle, level, null_mut()))
        });
    }
}

fn memory_poll_timeout() {
    unsafe {
        null_handle(|out| tidegate_memory_poll_timeout(null(), out));
        unchanged(Mem::calming, S::NullArgument, |m| {
            tidegate_memory_poll_timeout(m.handle, null_mut())
        });
        assert_eq!(Mem::calming().snapshot().1, NOW + 1_000_000);
    }
}

fn memory_handle_timeout() {
    unsafe {
        assert_eq!(
            tidegate_memory_handle_timeout(null_mut(), NOW),
            S::NullArgument
        );
        unchanged(Mem::calming, S::Ok, |m| {
            tidegate_memory_handle_timeout(m.handle, EARLIER)
        });
    }
}

fn memory_stats() {
    unsafe {
        null_handle(|out| tidegate_memory_stats(null(), out));
        unchanged(Mem::elevated, S::NullArgument, |m| {
            tidegate_memory_stats(m.handle, null_mut())
        });
    }
}
