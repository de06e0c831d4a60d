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
