//! The scenario lab: deterministic, virtual-time simulations of the problems in the forum seeds,
//! each run twice, by a naive host and by a host driven by tidegate.
//!
//! Nothing here reads a clock or sleeps: time is a counter advanced in fixed ticks, so every run
//! prints the same figures on every machine.

mod tunnel;

use std::fmt::Write as _;

/// One scenario run by one host.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// Which problem is simulated.
    pub scenario: &'static str,
    /// `"naive"` or `"tidegate"`.
    pub host: &'static str,
    /// The memory limit the platform enforces for this kind of provider, in bytes.
    pub platform_limit: u64,
    /// The ceiling the host set for itself (`None` for an unbounded host).
    pub ceiling: Option<u64>,
    /// The most bytes the host held at once.
    pub memory_high_water: u64,
    /// Bytes delivered as a percentage of what the bottleneck could carry.
    pub throughput_percent: f64,
    /// Packets dropped or refused, by anyone (kernel queue, host policy).
    pub drops: u64,
    /// Virtual seconds after which the platform killed the provider, if it did.
    pub killed_at_seconds: Option<f64>,
}

/// Run every scenario with both hosts.
pub fn run_all() -> Vec<Row> {
    let mut rows = Vec::new();
    rows.extend(tunnel::outbound_flood());
    rows.extend(tunnel::inbound_burst());
    rows
}

/// The rows as a table a person can read at a glance.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<32} {:<9} {:>10} {:>12} {:>10} {:>9} {:>16}",
        "scenario", "host", "ceiling", "memory peak", "throughput", "drops", "outcome"
    );
    let _ = writeln!(out, "{}", "-".repeat(104));
    for row in rows {
        let ceiling = row.ceiling.map_or_else(|| "none".to_owned(), mib);
        let outcome = match row.killed_at_seconds {
            Some(at) => format!("killed at {at:.2} s"),
            None => format!("ok (< {})", mib(row.platform_limit)),
        };
        let _ = writeln!(
            out,
            "{:<32} {:<9} {:>10} {:>12} {:>9.1}% {:>9} {:>16}",
            row.scenario,
            row.host,
            ceiling,
            mib(row.memory_high_water),
            row.throughput_percent,
            row.drops,
            outcome
        );
    }
    out
}

/// The rows as a JSON array, for machines.
pub fn json(rows: &[Row]) -> String {
    let items: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "{{\"scenario\":\"{}\",\"host\":\"{}\",\"platform_limit\":{},\"ceiling\":{},\
                 \"memory_high_water\":{},\"throughput_percent\":{:.3},\"drops\":{},\
                 \"killed_at_seconds\":{}}}",
                r.scenario,
                r.host,
                r.platform_limit,
                r.ceiling
                    .map_or_else(|| "null".to_owned(), |c| c.to_string()),
                r.memory_high_water,
                r.throughput_percent,
                r.drops,
                r.killed_at_seconds
                    .map_or_else(|| "null".to_owned(), |s| format!("{s:.3}")),
            )
        })
        .collect();
    format!("[{}]", items.join(","))
}

fn mib(bytes: u64) -> String {
    format!("{:.2} MiB", bytes as f64 / (1024.0 * 1024.0))
}
