//! `include/tidegate.h` must be exactly what the pinned cbindgen generates from `ffi/`.
//!
//! Rewrite it after changing the C ABI with:
//!
//! ```text
//! TIDEGATE_BLESS=1 cargo test -p tidegate-tests --test header
//! ```

use std::path::Path;

#[test]
fn header_matches_the_ffi_crate() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let ffi = root.join("ffi");
    let config = cbindgen::Config::from_file(ffi.join("cbindgen.toml")).expect("ffi/cbindgen.toml");
    let bindings = cbindgen::Builder::new()
        .with_crate(&ffi)
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header");
    let mut generated = Vec::new();
    bindings.write(&mut generated);
    let generated = String::from_utf8(generated).expect("header is UTF-8");

    assert_every_name_is_prefixed(&generated);

    let path = root.join("include").join("tidegate.h");
    if std::env::var_os("TIDEGATE_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("write include/tidegate.h");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != generated {
        let first_difference = committed
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| committed.lines().count().min(generated.lines().count()));
        panic!(
            "include/tidegate.h is stale (first difference at line {}). Regenerate it with:\n  \
             TIDEGATE_BLESS=1 cargo test -p tidegate-tests --test header",
            first_difference + 1
        );
    }
}

/// Every type, enumerator, macro and function in the header carries the tidegate prefix, so the
/// C API has one naming scheme and no internal core type leaks into it.
fn assert_every_name_is_prefixed(header: &str) {
    let mut bad = Vec::new();
    for line in header.lines() {
        let line = line.trim();
        let name = if let Some(rest) = line.strip_prefix("typedef struct ") {
            rest.split([' ', ';', '{']).next()
        } else if let Some(rest) = line.strip_prefix("enum ") {
            rest.split([' ', ';', '{']).next()
        } else if let Some(rest) = line.strip_prefix("#define ") {
            rest.split([' ', '(']).next().filter(|n| *n != "TIDEGATE_H")
        } else if line.starts_with("TIDEGATE_") || line.starts_with("Tidegate") {
            None
        } else if line.starts_with('#') {
            // Preprocessor conditions name the header's own macros, checked where defined.
            None
        } else if line.contains('(') && !line.starts_with('*') && !line.starts_with("/*") {
            line.split('(')
                .next()
                .and_then(|head| head.split([' ', '*']).next_back())
        } else if line.ends_with(',') && line.contains(" = ") && !line.starts_with('*') {
            line.split(' ').next()
        } else {
            None
        };
        if let Some(name) = name.filter(|n| !n.is_empty()) {
            let ok = name.starts_with("Tidegate")
                || name.starts_with("tidegate_")
                || name.starts_with("TIDEGATE_");
            if !ok && !["defined", "if", "endif"].contains(&name) {
                bad.push(name.to_owned());
            }
        }
    }
    assert!(
        bad.is_empty(),
        "names without the tidegate prefix in the header: {bad:?}"
    );
}

/// The header states that it needs C99 or C++11: it must compile, warning-free and pedantic, as
/// C99, C11 and C++11, with every function and type used once.
#[test]
fn header_compiles_as_c99_c11_and_cpp11() {
    use std::process::Command;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = root.join("target").join("header-standards");
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let source = "#include \"tidegate.h\"\n\
        #if TIDEGATE_ABI_VERSION < 1\n#error no ABI version\n#endif\n\
        int main(void) {\n\
            TidegateTunnelConfig config = tidegate_tunnel_config_default();\n\
            size_t bytes = 0, align = 0;\n\
            TidegateStatus status = tidegate_tunnel_footprint(&config, &bytes, &align);\n\
            return tidegate_status_str(status)[0] == 0;\n\
        }\n";
    let include = root.join("include");
    let cases: [(&str, &str, &[&str]); 3] = [
        ("c99", "c", &["-std=c99"]),
        ("c11", "c", &["-std=c11"]),
        ("cpp11", "c++", &["-std=c++11"]),
    ];
    for (name, language, flags) in cases {
        let path = dir.join(format!("use_{name}.src"));
        std::fs::write(&path, source).expect("write the source");
        let compiler = if language == "c" { "cc" } else { "c++" };
        let output = Command::new(compiler)
            .args(["-x", language])
            .args(flags)
            .args([
                "-Wall",
                "-Wextra",
                "-Werror",
                "-pedantic",
                "-fsyntax-only",
                "-I",
            ])
            .arg(&include)
            .arg(&path)
            .output()
            .unwrap_or_else(|error| panic!("run {compiler}: {error}"));
        assert!(
            output.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// Out-structs are written whole: a host may `memcmp` two snapshots, and valgrind must see every
/// byte defined. So no struct in the header has padding, on a 64-bit host (x86-64, arm64 iOS)
/// or on the 32-bit embedded layout (thumbv7em): any gap is an explicit `reserved` field that
/// the library zeroes. clang computes each layout (`-Wpadded`), forced by a `sizeof` of every
/// struct the header defines.
#[test]
fn no_struct_in_the_header_has_padding_on_any_target() {
    use std::process::Command;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let include = root.join("include");
    let header = std::fs::read_to_string(include.join("tidegate.h")).expect("read the header");
    let structs: Vec<&str> = header
        .lines()
        .filter_map(|line| line.strip_prefix("typedef struct "))
        .filter_map(|rest| rest.strip_suffix(" {"))
        .collect();
    assert!(structs.len() > 20, "found only {structs:?} in the header");
    let mut source = String::from("#include \"tidegate.h\"\n");
    for (index, name) in structs.iter().enumerate() {
        source.push_str(&format!(
            "extern char tidegate_size_{index}[sizeof(struct {name})];\n"
        ));
    }
    let dir = root.join("target").join("header-padding");
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let path = dir.join("sizes.c");
    std::fs::write(&path, source).expect("write the source");
    for target in [
        "x86_64-unknown-linux-gnu",
        "aarch64-apple-ios",
        "thumbv7em-none-eabihf",
    ] {
        let output = match Command::new("clang")
            .arg(format!("--target={target}"))
            .args([
                "-ffreestanding",
                "-std=c99",
                "-Wpadded",
                "-Werror",
                "-fsyntax-only",
                "-I",
            ])
            .arg(&include)
            .arg(&path)
            .output()
        {
            Ok(output) => output,
            Err(error) => {
                tidegate_tests::skip::skip(&["clang"], &format!("cannot run clang: {error}"));
                return;
            }
        };
        assert!(
            output.status.success(),
            "{target}: structs with padding:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// The C ABI spells time one way (`_us`, microseconds) and carries no Rust doc syntax.
#[test]
fn header_spells_time_one_way_and_has_no_rust_doc_links() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let header = std::fs::read_to_string(root.join("include").join("tidegate.h")).expect("header");
    let offending: Vec<(usize, &str)> = header
        .lines()
        .enumerate()
        .filter(|(_, line)| {
            line.contains("_micros")
                || line.contains("_millis")
                || line.contains("_ms")
                || line.contains("[`")
                || line.contains("::")
                || line.contains("Option<")
        })
        .map(|(index, line)| (index + 1, line.trim()))
        .collect();
    assert!(offending.is_empty(), "lines of the header: {offending:#?}");
}
