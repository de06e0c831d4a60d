//! What a test does when it cannot run here: SKIPPED outside CI, a failure under `CI=true`.
//!
//! CI installs every tool its tests need (`.ci/run`), so under `CI=true` a test that cannot run
//! is a broken check, not a fact of the machine, and fails. The one exception is a tool whose
//! installation itself failed (a registry down): `.ci/run` names it loudly and exports the list
//! in `TIDEGATE_CI_MISSING` (space-separated tool names), and a test that needs only tools on that
//! list may print SKIPPED. Outside CI a test prints SKIPPED with its reason and passes.

/// Whether this is a CI run (`CI=true`).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| value == "true")
}

/// The tools `.ci/run` could not install, from `TIDEGATE_CI_MISSING`.
pub fn ci_missing_tools() -> Vec<String> {
    std::env::var("TIDEGATE_CI_MISSING")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Report that a check cannot run for `reason`, which the tools `needs` would fix. Outside CI
/// this prints `SKIPPED: <reason>`; under `CI=true` it panics unless every tool in `needs` is one
/// `.ci/run` failed to install (and `needs` is not empty).
///
/// # Panics
///
/// Under `CI=true`, when the check should have been able to run.
pub fn skip(needs: &[&str], reason: &str) {
    if !in_ci() {
        eprintln!("SKIPPED: {reason}");
        return;
    }
    let missing = ci_missing_tools();
    if !needs.is_empty() && needs.iter().all(|tool| missing.iter().any(|m| m == tool)) {
        eprintln!(
            "SKIPPED (CI could not install {}): {reason}",
            needs.join(", ")
        );
        return;
    }
    panic!("under CI=true this check must run, but: {reason} (needs: {needs:?})");
}
