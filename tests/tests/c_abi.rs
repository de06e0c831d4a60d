//! C programs in `tests/c/`, compiled against `include/tidegate.h` and the real static library
//! with `-std=c11 -Wall -Wextra -Werror -pedantic`, and again under ASan and UBSan when the
//! compiler supports them. Each program checks its own invariants and reports through its exit
//! code.

use tidegate_tests::c_harness::compile_and_run;

#[test]
fn tunnel_flood_keeps_the_ceiling_and_delivers_every_packet_in_order() {
    let stdout = compile_and_run("tunnel_flood");
    assert!(
        stdout.contains("outbound: 20000 packets in order"),
        "{stdout}"
    );
    assert!(stdout.contains("inbound: 5000 offered"), "{stdout}");
}

#[test]
fn tunnel_flow_queues_keep_a_sparse_flow_ahead_of_a_flood() {
    let stdout = compile_and_run("tunnel_fq");
    assert!(
        stdout.contains("outbound: 400 of 400 sparse packets, each within"),
        "{stdout}"
    );
    assert!(
        stdout.contains("inbound: 200 of 200 sparse packets delivered"),
        "{stdout}"
    );
}

#[test]
fn the_byte_queue_limit_keeps_the_link_busy_with_a_short_queue_below() {
    let stdout = compile_and_run("tunnel_queue_limit");
    assert!(
        stdout.contains("with the limit: link idle 0 ticks"),
        "{stdout}"
    );
}

#[test]
fn lifecycle_stop_and_restart_resume_carried_over_tasks_through_the_header() {
    let stdout = compile_and_run("lifecycle_restart");
    assert!(
        stdout.contains("stop: 280000 us, 2 tasks done, 8 carried over"),
        "{stdout}"
    );
    assert!(
        stdout.contains("restart: 8 carried-over tasks resumed in order, journal discarded"),
        "{stdout}"
    );
}

/// A provider killed mid-write by SIGKILL leaves a black box the next launch reads: the torn slot
/// skipped, the last record without the clean-stop flag; a clean stop then says so.
#[test]
fn a_killed_provider_is_told_from_a_clean_stop_by_its_black_box() {
    let stdout = compile_and_run("black_box");
    assert!(
        stdout.contains("killed session found: record 5, state 2, pressure 2"),
        "{stdout}"
    );
    assert!(stdout.contains("clean stop found: record 6"), "{stdout}");
}

#[test]
fn a_proxy_host_loop_from_the_header_alone_races_relays_and_refuses_bad_input() {
    let stdout = compile_and_run("proxy_host");
    for line in [
        "black hole: IPv4 started at 250 ms and won at 270 ms, IPv6 cancelled",
        "admission: refused at once, attempts in flight",
        "refused: one failure, class REFUSED, flow already closed",
        "relay: paused at the flow watermark, resumed by one event",
        "system connect: no race, no budget; a raced flow refuses it; a close aborts the race",
        "close: the connection went back to the budget once",
        "bad input: 11 calls refused, nothing changed",
        "back-off: EMFILE halved the limits, the next flow was refused at once, quiet time restored them",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in {stdout}");
    }
}

#[test]
fn proxy_flows_admit_the_polite_app_shrug_off_also_rans_and_pause_slow_readers() {
    let stdout = compile_and_run("proxy_flows");
    assert!(
        stdout.contains("flood: 224 of 224 polite flows admitted"),
        "{stdout}"
    );
    assert!(
        stdout.contains("storm: 100000 also-ran flows, 100 established kept"),
        "{stdout}"
    );
    assert!(stdout.contains("resumed once"), "{stdout}");
    assert!(
        stdout.contains(
            "stalled app: paused after 11 flows, the other app read on, resumed once after 6"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("timeouts: 1 idle, 1 connect"), "{stdout}");
}

#[test]
fn the_shipped_library_has_no_test_only_entry_points() {
    let library = tidegate_tests::c_harness::static_lib_dir().join("libtidegate.a");
    let bytes = std::fs::read(&library).expect("read libtidegate.a");
    let found = bytes
        .windows(b"testing_panic".len())
        .any(|window| window == b"testing_panic");
    assert!(!found, "{library:?} contains a testing_panic symbol");
    assert!(
        bytes
            .windows(b"tidegate_tunnel_new".len())
            .any(|window| window == b"tidegate_tunnel_new"),
        "the scan reads the library's symbols"
    );
}

/// The README's C quick start as written, and the Swift quick start's call sequence mirrored
/// call for call (no Swift toolchain here), driven to the end through pauses and resumes.
#[test]
fn the_readme_quick_starts_run_to_the_end() {
    let stdout = compile_and_run("quickstart");
    assert!(stdout.contains("C quick start: ok"), "{stdout}");
    assert!(
        stdout.contains("Swift quick start: 5000 packets sent in order"),
        "{stdout}"
    );
}

/// Every engine placed in caller memory through `_footprint` and `_init`, refusals leaving the
/// memory unwritten; every out-struct written whole (0xAA and 0x55 fills give equal bytes).
#[test]
fn engines_live_in_caller_memory_and_out_structs_are_written_whole() {
    let stdout = compile_and_run("abi_bytes");
    assert!(
        stdout.contains("placement: 3 engines placed in caller memory"),
        "{stdout}"
    );
    assert!(
        stdout.contains("out-structs: every byte written"),
        "{stdout}"
    );
}

#[test]
fn memory_pressure_reaches_the_tunnel_and_the_proxy_and_relief_restores_them() {
    let stdout = compile_and_run("memory_pressure");
    for line in [
        "pressure: normal, elevated at 30 MiB used, critical at 37; 2 reservations refused",
        "proxy: 1 idle flow evicted, 1 new flow refused, limits quartered",
        "relief: normal after 1000 ms of calm; reading resumed; flows admitted again",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in {stdout}");
    }
}
