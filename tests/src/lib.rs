//! Shared helpers for tidegate's whole-system tests, scenarios and benchmarks.

pub mod c_harness;
pub mod lab;
pub mod out_param;
pub mod workload;

/// The README's Rust code blocks, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
