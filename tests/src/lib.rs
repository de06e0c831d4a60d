//! Shared helpers for tidegate's whole-system tests, scenarios and benchmarks.

pub mod c_harness;
pub mod lab;
pub mod order_check;
pub mod out_param;
#[cfg(target_os = "linux")]
pub mod real_traffic;
#[cfg(target_os = "linux")]
pub mod relay;
pub mod skip;
pub mod storage;
pub mod workload;

/// The README's Rust code blocks, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
