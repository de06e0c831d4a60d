//! The C ABI on a microcontroller: `tests/embedded/run.sh` builds the bare-metal static library
//! (thumbv7em-none-eabihf, `--no-default-features`: no std, no allocator), links a C program
//! against it with arm-none-eabi-gcc and newlib, runs it on QEMU's MPS2 AN386 board (Cortex-M4F)
//! with semihosting, and proves by a link that no panic path is reachable in the library.
//!
//! Passes when the program exits 0 on the board and the proof links. Needs
//! `arm-none-eabi-gcc`, `qemu-system-arm` and the rustup target (`.ci/run` installs them);
//! without them it prints `SKIPPED` and passes, except under `CI=true`.

use std::path::Path;
use std::process::Command;

use tidegate_tests::skip::skip;

fn available(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn target_installed() -> bool {
    Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("thumbv7em-none-eabihf"))
}

#[test]
fn the_bare_metal_library_runs_on_a_cortex_m4_and_has_no_reachable_panic() {
    if !available("arm-none-eabi-gcc") || !available("qemu-system-arm") {
        skip(
            &["gcc-arm-none-eabi", "qemu-system-arm"],
            "needs arm-none-eabi-gcc and qemu-system-arm",
        );
        return;
    }
    if !target_installed() {
        skip(
            &["target:thumbv7em-none-eabihf"],
            "needs the thumbv7em-none-eabihf target",
        );
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("embedded/run.sh");
    let output = Command::new(&script)
        .output()
        .expect("run tests/embedded/run.sh");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "tests/embedded/run.sh failed");
    assert!(
        stdout.contains("all checks passed"),
        "the program ran to its end"
    );
    assert!(stdout.contains("no panic path is reachable"));
}
