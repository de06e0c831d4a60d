//! Shared helpers for tidegate's whole-system tests, scenarios and benchmarks.

pub mod c_harness;
