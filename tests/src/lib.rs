//! Shared helpers for tidegate's whole-system tests, scenarios and benchmarks.

pub mod c_harness;
pub mod lab;
#[cfg(target_os = "linux")]
pub mod real_traffic;

/// The README's Rust code blocks, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
