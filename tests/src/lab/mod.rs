//! The scenario lab: deterministic, virtual-time simulations of the problems in the forum seeds,
//! each run twice (or more), by a naive host and by a host driven by tidegate.
//!
//! Nothing here reads a clock or sleeps: time is a counter advanced in fixed ticks or from event
//! to event, so every run prints the same figures on every machine.
//!
//! Each scenario fills the [`Row`] columns that apply to it and leaves the others `None` (`-` in
//! the table, `null` in the JSON). [`Scale::Quick`] shrinks the longest scenarios (fewer also-ran
//! flows, fewer connects) so debug-build tests stay fast; the invariants hold at both scales.

mod app_proxy;
mod classes;
mod eyeballs;
mod fairness;
mod flood;
mod lifecycle;
mod memory;
mod restart;
pub mod sizing;
mod storm;
mod tunnel;

use std::fmt::Write as _;

pub use lifecycle::{KILL_AFTER_COMPLETION_US, STOP_TEARDOWN_US};

/// How much work the longest scenarios do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scale {
    /// The figures the README shows: 100,000 also-ran flows, 1,000 connects.
    Full,
    /// A smaller run for debug-build tests: 20,000 also-ran flows, 300 connects.
    Quick,
}

impl Scale {
    /// [`Scale::Full`] in an optimised build, [`Scale::Quick`] in a debug build.
    pub const fn for_this_build() -> Scale {
        if cfg!(debug_assertions) {
            Scale::Quick
        } else {
            Scale::Full
        }
    }
}

/// Which host ran a scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Host {
    /// A host doing what a first implementation does: unbounded buffering, a first-come flow
    /// cap, housekeeping before the stop completion, connects with no budget.
    Naive,
    /// A host driven by tidegate's engines.
    Tidegate,
}

impl Host {
    /// `"naive"` or `"tidegate"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Host::Naive => "naive",
            Host::Tidegate => "tidegate",
        }
    }
}

/// One scenario run by one host. Every figure is `None` where it does not apply.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// A stable key for the scenario, for tests and machines (`"app-proxy-stalled-reader"`).
    pub id: &'static str,
    /// Which problem is simulated, for people.
    pub scenario: &'static str,
    /// The forum seeds (in `shared/seeds/`) the scenario comes from, such as `"000"`.
    pub seeds: &'static str,
    /// Which host ran it.
    pub host: Host,
    /// Which naive strategy, when a scenario compares more than one (`None` otherwise).
    pub variant: Option<&'static str>,
    /// The memory limit the platform enforces for this kind of provider, in bytes.
    pub platform_limit: Option<u64>,
    /// The most memory the host can ever hold by construction (`None` for an unbounded host).
    pub ceiling: Option<u64>,
    /// The most bytes the host held at once.
    pub memory_high_water: Option<u64>,
    /// Bytes delivered as a percentage of what the bottleneck could carry.
    pub throughput_percent: Option<f64>,
    /// Packets dropped or refused, by anyone (kernel queue, host policy).
    pub drops: Option<u64>,
    /// Share of the well-behaved app's flows that were admitted, in percent.
    pub admitted_percent: Option<f64>,
    /// Time from the stop request to the stop completion, in seconds: the user's restart waits
    /// this long.
    pub stop_latency_seconds: Option<f64>,
    /// Connections left hanging: neither connected nor failed within [`HUNG_AFTER_SECONDS`], or
    /// stuck in "waiting" past the flow limit.
    pub hung_connections: Option<u64>,
    /// Virtual seconds after which the platform killed the provider, if it did.
    pub killed_at_seconds: Option<f64>,
    /// Housekeeping tasks that never ran to completion in any session.
    pub tasks_lost: Option<u64>,
    /// Median time from a connect request to a usable connection, in seconds.
    pub median_connect_seconds: Option<f64>,
    /// Longest time from a connect request to a usable connection, in seconds.
    pub max_connect_seconds: Option<f64>,
    /// Longest time from a connect request to its refusal, in seconds.
    pub slowest_refusal_seconds: Option<f64>,
    /// Connect requests refused at once (budget) or failed for want of a descriptor.
    pub connects_refused: Option<u64>,
    /// Times the host had more attempts or descriptors in use than its budget allows.
    pub beyond_budget: Option<u64>,
    /// Goodput of the TCP flow sharing the link with a flood, in percent of the link.
    pub tcp_share_percent: Option<f64>,
    /// Median round trip of a ping sharing the link with the traffic, in milliseconds.
    pub ping_median_ms: Option<f64>,
    /// Established flows closed to make room for others.
    pub established_evicted: Option<u64>,
    /// Flow slots still held by flows that had already closed when the run ended.
    pub slots_leaked: Option<u64>,
    /// Restart attempts of a running tunnel.
    pub restarts_run: Option<u64>,
    /// Seconds the tunnel was up (not stopped or cancelled) but carried no traffic: its
    /// connection on a path that is gone, or being restarted.
    pub up_but_dead_seconds: Option<f64>,
    /// What happened, in a few words.
    pub outcome: String,
}

/// After this long without connecting or failing, a connection counts as hung: the app has
/// long given up waiting, but the descriptor and the flow are still taken.
pub const HUNG_AFTER_SECONDS: f64 = 10.0;

impl Row {
    /// A row for `host` with no figure filled in yet.
    fn new(id: &'static str, scenario: &'static str, seeds: &'static str, host: Host) -> Row {
        Row {
            id,
            scenario,
            seeds,
            host,
            variant: None,
            platform_limit: None,
            ceiling: None,
            memory_high_water: None,
            throughput_percent: None,
            drops: None,
            admitted_percent: None,
            stop_latency_seconds: None,
            hung_connections: None,
            killed_at_seconds: None,
            tasks_lost: None,
            median_connect_seconds: None,
            max_connect_seconds: None,
            slowest_refusal_seconds: None,
            connects_refused: None,
            beyond_budget: None,
            tcp_share_percent: None,
            ping_median_ms: None,
            established_evicted: None,
            slots_leaked: None,
            restarts_run: None,
            up_but_dead_seconds: None,
            outcome: String::new(),
        }
    }

    /// The host column: `naive`, `naive, <variant>` or `tidegate`.
    pub fn host_label(&self) -> String {
        match self.variant {
            Some(variant) => format!("{}, {variant}", self.host.as_str()),
            None => self.host.as_str().to_owned(),
        }
    }
}

/// Run every scenario with every host at the given scale.
pub fn run_all(scale: Scale) -> Vec<Row> {
    let mut rows = Vec::new();
    rows.extend(tunnel::outbound_flood());
    rows.extend(fairness::flood_beside_tcp());
    rows.extend(tunnel::inbound_burst());
    rows.extend(app_proxy::stalled_reader());
    rows.extend(flood::flood_beside_well_behaved_app());
    rows.extend(storm::also_ran_storm(scale));
    rows.extend(lifecycle::slow_stop_then_restart());
    rows.extend(lifecycle::hung_teardown());
    rows.extend(restart::path_change_storm());
    rows.extend(restart::failed_restart());
    rows.extend(eyeballs::ipv6_black_hole(scale));
    rows.extend(eyeballs::ipv6_black_hole_burst());
    rows.extend(classes::dns_burst());
    rows.extend(classes::udp_session_storm());
    rows.extend(memory::memory_pressure());
    rows
}

/// The rows as a table a person can read at a glance: one heading per scenario, one line per
/// host, `-` where a column does not apply.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    let header = format!(
        "{:<28} {:>9} {:>9} {:>7} {:>7} {:>8} {:>7} {:>5}  {}",
        "host", "ceiling", "mem peak", "thruput", "drops", "admitted", "stop", "hung", "outcome"
    );
    let _ = writeln!(out, "{header}");
    let _ = writeln!(out, "{}", "-".repeat(header.len() + 40));
    let mut previous: Option<&str> = None;
    for row in rows {
        if previous != Some(row.id) {
            if previous.is_some() {
                out.push('\n');
            }
            let seed = if row.seeds.contains(',') {
                "seeds"
            } else {
                "seed"
            };
            let _ = writeln!(out, "{} ({seed} {})", row.scenario, row.seeds);
            previous = Some(row.id);
        }
        let ceiling = match (row.ceiling, row.memory_high_water) {
            (Some(ceiling), _) => mib(ceiling),
            (None, Some(_)) => "none".to_owned(),
            (None, None) => "-".to_owned(),
        };
        let _ = writeln!(
            out,
            "  {:<26} {:>9} {:>9} {:>7} {:>7} {:>8} {:>7} {:>5}  {}",
            row.host_label(),
            ceiling,
            or_dash(row.memory_high_water, mib),
            or_dash(row.throughput_percent, |p| format!("{p:.1}%")),
            or_dash(row.drops, |d| d.to_string()),
            or_dash(row.admitted_percent, |p| format!("{p:.1}%")),
            or_dash(row.stop_latency_seconds, seconds),
            or_dash(row.hung_connections, |h| h.to_string()),
            row.outcome
        );
    }
    out
}

/// The rows as a JSON array, for machines: every field of [`Row`], `null` where it does not
/// apply, sizes in bytes and times in seconds.
pub fn json(rows: &[Row]) -> String {
    let items: Vec<String> = rows
        .iter()
        .map(|r| {
            let fields = [
                ("id", json_string(r.id)),
                ("scenario", json_string(r.scenario)),
                ("seeds", json_string(r.seeds)),
                ("host", json_string(r.host.as_str())),
                ("variant", json_opt(r.variant, json_string)),
                ("platform_limit", json_opt(r.platform_limit, u64_json)),
                ("ceiling", json_opt(r.ceiling, u64_json)),
                ("memory_high_water", json_opt(r.memory_high_water, u64_json)),
                (
                    "throughput_percent",
                    json_opt(r.throughput_percent, f64_json),
                ),
                ("drops", json_opt(r.drops, u64_json)),
                ("admitted_percent", json_opt(r.admitted_percent, f64_json)),
                (
                    "stop_latency_seconds",
                    json_opt(r.stop_latency_seconds, f64_json),
                ),
                ("hung_connections", json_opt(r.hung_connections, u64_json)),
                ("killed_at_seconds", json_opt(r.killed_at_seconds, f64_json)),
                ("tasks_lost", json_opt(r.tasks_lost, u64_json)),
                (
                    "median_connect_seconds",
                    json_opt(r.median_connect_seconds, f64_json),
                ),
                (
                    "max_connect_seconds",
                    json_opt(r.max_connect_seconds, f64_json),
                ),
                (
                    "slowest_refusal_seconds",
                    json_opt(r.slowest_refusal_seconds, f64_json),
                ),
                ("connects_refused", json_opt(r.connects_refused, u64_json)),
                ("beyond_budget", json_opt(r.beyond_budget, u64_json)),
                (
                    "established_evicted",
                    json_opt(r.established_evicted, u64_json),
                ),
                ("slots_leaked", json_opt(r.slots_leaked, u64_json)),
                ("tcp_share_percent", json_opt(r.tcp_share_percent, f64_json)),
                ("ping_median_ms", json_opt(r.ping_median_ms, f64_json)),
                ("restarts_run", json_opt(r.restarts_run, u64_json)),
                (
                    "up_but_dead_seconds",
                    json_opt(r.up_but_dead_seconds, f64_json),
                ),
                ("outcome", json_string(&r.outcome)),
            ];
            let body: Vec<String> = fields
                .iter()
                .map(|(name, value)| format!("\"{name}\":{value}"))
                .collect();
            format!("{{{}}}", body.join(","))
        })
        .collect();
    format!("[{}]", items.join(","))
}

/// `bytes` in MiB with two decimals.
pub fn mib(bytes: u64) -> String {
    format!("{:.2} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn seconds(value: f64) -> String {
    format!("{value:.2} s")
}

fn or_dash<T>(value: Option<T>, show: impl FnOnce(T) -> String) -> String {
    value.map_or_else(|| "-".to_owned(), show)
}

fn json_opt<T>(value: Option<T>, show: impl FnOnce(T) -> String) -> String {
    value.map_or_else(|| "null".to_owned(), show)
}

fn u64_json(value: u64) -> String {
    value.to_string()
}

fn f64_json(value: f64) -> String {
    format!("{value:.6}")
}

fn json_string(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `part` as a percentage of `whole` (0 when `whole` is 0).
fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// An app proxy provider is killed above this much memory (iOS and macOS).
pub const APP_PROXY_LIMIT: u64 = 15 * 1024 * 1024;

/// The most a proxy host driven by a flow governor with `policy` over the default 512 slots can
/// hold in relay buffers and table: the table itself, the global high watermark, and one receive
/// of at most `receive` bytes per open flow (issued before the watermark was crossed).
fn proxy_ceiling(policy: &tidegate_core::FlowPolicy, open_flows: u64, receive: u64) -> u64 {
    let table = tidegate_core::flow_governor_footprint(tidegate_core::DEFAULT_FLOW_SLOTS) as u64;
    table + policy.global_high_watermark + open_flows * receive
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }

    #[test]
    fn absent_figures_print_as_dash_and_null() {
        let mut row = Row::new("x", "a scenario", "000", Host::Tidegate);
        row.hung_connections = Some(0);
        row.outcome = "ok".to_owned();
        let table = table(std::slice::from_ref(&row));
        assert!(table.contains("a scenario (seed 000)"), "{table}");
        let line = table.lines().last().unwrap_or_default();
        // Ceiling, memory, throughput, drops, admission and stop latency do not apply.
        assert_eq!(
            line.split_whitespace().filter(|t| *t == "-").count(),
            6,
            "{line}"
        );
        let json = json(&[row]);
        assert!(json.contains("\"hung_connections\":0"), "{json}");
        assert!(json.contains("\"ceiling\":null"), "{json}");
        assert!(json.contains("\"variant\":null"), "{json}");
    }
}
