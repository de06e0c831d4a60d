//! Proptest settings shared by the unit tests.
//!
//! Miri (`cargo +nightly miri test`) interprets every instruction and runs these tests roughly a
//! thousand times slower, so under `cfg(miri)` each property runs a handful of cases: enough to
//! drive every code path through the interpreter's checks, while the normal test run keeps its
//! full case counts (and `PROPTEST_CASES` still applies to the properties that use the default).

use proptest::test_runner::Config;

/// Cases each property runs under Miri.
const MIRI_CASES: u32 = 2;

/// The longest operation sequence a property generates under Miri.
const MIRI_OPS: usize = 24;

/// The length bound `normal` of a generated operation sequence, or [`MIRI_OPS`] under Miri.
pub(crate) const fn ops(normal: usize) -> usize {
    if cfg!(miri) && normal > MIRI_OPS {
        MIRI_OPS
    } else {
        normal
    }
}

/// A configuration running `cases` cases, or [`MIRI_CASES`] under Miri. Under Miri failures are
/// not persisted either: the regression files live on disk, which Miri's isolation forbids.
pub(crate) fn with_cases(cases: u32) -> Config {
    if cfg!(miri) {
        Config {
            cases: MIRI_CASES,
            failure_persistence: None,
            ..Config::default()
        }
    } else {
        Config {
            cases,
            ..Config::default()
        }
    }
}

/// The default configuration (256 cases, or `PROPTEST_CASES`), or [`MIRI_CASES`] under Miri.
pub(crate) fn default_cases() -> Config {
    with_cases(Config::default().cases)
}
