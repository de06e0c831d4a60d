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
fn flow_governor_admits_the_polite_app_shrugs_off_also_rans_and_pauses_slow_readers() {
    let stdout = compile_and_run("flow_governor");
    assert!(
        stdout.contains("flood: 224 of 224 polite flows admitted"),
        "{stdout}"
    );
    assert!(
        stdout.contains("storm: 100000 also-ran flows, 100 established kept"),
        "{stdout}"
    );
    assert!(stdout.contains("resumed once"), "{stdout}");
    assert!(stdout.contains("timeouts: 1 idle, 1 connect"), "{stdout}");
}
