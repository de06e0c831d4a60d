//! Builds the real static library and compiles C programs in `tests/c/` against it.
//!
//! Each program runs three ways where the machine allows: its release build as is, a build with
//! AddressSanitizer and UndefinedBehaviorSanitizer, and the release build under valgrind's
//! memcheck with every leak kind an error, so a program passes only with zero memory errors and
//! zero bytes left allocated at exit. (The Rust standard library makes no one-time allocation
//! on the paths these programs take, so no suppression file is needed; if one ever does, it
//! belongs in a documented suppression, not in a looser leak setting.)
//!
//! The library is built by a nested `cargo build -p tidegate-ffi --release` into its own target
//! directory (`target/c-abi`), so it is exactly what a C or Swift host links, and the outer
//! test build's lock is never contended.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// How a C program is compiled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Build {
    /// `-O2`, strict warnings as errors.
    Release,
    /// As `Release`, plus `-fsanitize=address,undefined` and `-fno-sanitize-recover`.
    Sanitized,
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Build `libtidegate.a` once per process and return the directory holding it.
pub fn static_lib_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = workspace_root();
        let target = root.join("target").join("c-abi");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let status = Command::new(cargo)
            .current_dir(&root)
            .args([
                "build",
                "--quiet",
                "--release",
                "-p",
                "tidegate-ffi",
                "--target-dir",
            ])
            .arg(&target)
            .status()
            .expect("run cargo to build the static library");
        assert!(status.success(), "building libtidegate.a failed");
        let dir = target.join("release");
        assert!(
            dir.join("libtidegate.a").exists(),
            "libtidegate.a missing in {dir:?}"
        );
        dir
    })
}

/// The C compiler: `$CC`, or `cc`.
pub fn c_compiler() -> String {
    std::env::var("CC").unwrap_or_else(|_| "cc".to_owned())
}

/// Whether the C compiler can build and run a program with ASan and UBSan.
pub fn sanitizers_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        let dir = scratch_dir("probe");
        let source = dir.join("probe.c");
        let binary = dir.join("probe");
        std::fs::write(&source, "int main(void) { return 0; }\n").expect("write probe");
        let built = Command::new(c_compiler())
            .args(["-fsanitize=address,undefined", "-o"])
            .arg(&binary)
            .arg(&source)
            .status()
            .is_ok_and(|s| s.success());
        built && Command::new(&binary).status().is_ok_and(|s| s.success())
    })
}

/// Whether valgrind is installed and runs.
pub fn valgrind_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        Command::new("valgrind")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// Run a compiled C program under valgrind memcheck: any memory error, and any byte still
/// allocated at exit (definitely, indirectly or possibly lost, or still reachable), fails it.
pub fn run_under_valgrind(binary: &Path) -> Output {
    let output = Command::new("valgrind")
        .args([
            "--quiet",
            "--error-exitcode=97",
            "--leak-check=full",
            "--show-leak-kinds=all",
            "--errors-for-leak-kinds=all",
            "--track-origins=yes",
        ])
        .arg(binary)
        .output()
        .expect("run valgrind");
    assert!(
        output.status.success(),
        "{} failed under valgrind ({}):\nstderr:\n{}",
        binary.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Compile `tests/c/<name>.c` against `include/` and the static library; return the binary.
pub fn compile(name: &str, build: Build) -> PathBuf {
    let root = workspace_root();
    let lib_dir = static_lib_dir();
    let suffix = match build {
        Build::Release => "release",
        Build::Sanitized => "sanitized",
    };
    let binary = scratch_dir("bin").join(format!("{name}-{suffix}"));
    let mut cc = Command::new(c_compiler());
    cc.args([
        "-std=c11",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-pedantic",
        "-O2",
        "-g",
    ])
    .arg("-I")
    .arg(root.join("include"))
    .arg(root.join("tests").join("c").join(format!("{name}.c")));
    if build == Build::Sanitized {
        cc.args(["-fsanitize=address,undefined", "-fno-sanitize-recover=all"]);
    }
    cc.arg("-o").arg(&binary).arg("-L").arg(lib_dir);
    cc.args(["-ltidegate", "-lpthread", "-ldl", "-lm", "-lgcc_s"]);
    let output = cc.output().expect("run the C compiler");
    assert!(
        output.status.success(),
        "compiling tests/c/{name}.c failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    binary
}

/// Run a compiled C program; panic with its output unless it exits 0.
pub fn run(binary: &Path) -> Output {
    let output = Command::new(binary).output().expect("run the C program");
    assert!(
        output.status.success(),
        "{} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        binary.display(),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Compile and run `tests/c/<name>.c`, plainly and, where available, under ASan and UBSan and
/// under valgrind memcheck. Returns the plain run's standard output.
pub fn compile_and_run(name: &str) -> String {
    let release = compile(name, Build::Release);
    let output = run(&release);
    if valgrind_available() {
        run_under_valgrind(&release);
    } else {
        crate::skip::skip(
            &["valgrind"],
            &format!("valgrind is not installed; the memcheck run of {name} is skipped"),
        );
    }
    if sanitizers_available() {
        run(&compile(name, Build::Sanitized));
    } else {
        crate::skip::skip(
            &[],
            &format!(
                "{} cannot build with -fsanitize; the sanitized run of {name} is skipped",
                c_compiler()
            ),
        );
    }
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn scratch_dir(kind: &str) -> PathBuf {
    let dir = workspace_root().join("target").join("c-abi").join(kind);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}
