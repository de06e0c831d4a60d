//! The lab's scenarios assert, for every problem, the invariant tidegate exists for on the
//! tidegate host, and that the naive host really shows the problem (so a scenario that stopped
//! stressing anything would fail too).
//!
//! Debug builds run the lab at [`Scale::Quick`] (fewer also-ran flows and connects); the
//! invariants are the same at both scales.

use std::sync::OnceLock;

use tidegate_core::{
    DEFAULT_HOUSEKEEPING_DEADLINE_MICROS, DEFAULT_PATH_DEBOUNCE_MICROS,
    DEFAULT_RESTART_ATTEMPTS_MAX, DEFAULT_RESTART_BACKOFF_MAX_MICROS,
    DEFAULT_RESTART_DEADLINE_MICROS, DEFAULT_TEARDOWN_DEADLINE_MICROS, FlowPolicy,
};
use tidegate_tests::lab::{self, APP_PROXY_LIMIT, Host, Row, STOP_TEARDOWN_US, Scale};

const SCENARIOS: [&str; 15] = [
    "tunnel-outbound-flood",
    "tunnel-inbound-burst",
    "flood-beside-tcp",
    "app-proxy-stalled-reader",
    "flow-flood",
    "also-ran-storm",
    "slow-stop-restart",
    "hung-teardown",
    "path-change-storm",
    "failed-restart",
    "ipv6-black-hole",
    "ipv6-black-hole-burst",
    "dns-burst",
    "udp-session-storm",
    "memory-pressure",
];

fn rows() -> &'static [Row] {
    static ROWS: OnceLock<Vec<Row>> = OnceLock::new();
    ROWS.get_or_init(|| lab::run_all(Scale::for_this_build()))
}

fn tidegate(id: &str) -> &'static Row {
    let mut matching = rows()
        .iter()
        .filter(|r| r.id == id && r.host == Host::Tidegate && r.variant.is_none());
    let row = matching.next().expect("a tidegate row");
    assert!(matching.next().is_none(), "one tidegate row per scenario");
    row
}

fn naive(id: &str) -> Vec<&'static Row> {
    let naive: Vec<&Row> = rows()
        .iter()
        .filter(|r| r.id == id && r.host == Host::Naive)
        .collect();
    assert!(!naive.is_empty(), "{id} has a naive row");
    naive
}

/// Memory: the tidegate host stays under the ceiling it was built with, which is itself under
/// the platform's limit, and is never killed.
/// One app's burst of DNS queries: the naive proxy buffers every query in flight and is killed;
/// the tidegate proxy holds the app to its share of the DNS budget, refuses the rest at once,
/// and every other app's query is answered.
#[test]
fn a_dns_burst_from_one_app_leaves_the_others_their_lookups() {
    let row = tidegate("dns-burst");
    assert_bounded(row);
    assert_eq!(row.admitted_percent, Some(100.0), "{row:?}");
    assert!(row.connects_refused.is_some_and(|r| r > 1_000), "{row:?}");
    assert_eq!(row.hung_connections, Some(0), "{row:?}");
    for row in naive("dns-burst") {
        assert_killed(row);
        assert!(row.admitted_percent.is_some_and(|p| p < 100.0), "{row:?}");
    }
}

/// A storm of abandoned UDP sessions: the naive proxy keeps each until the general idle
/// timeout and is killed; the tidegate proxy holds UDP to its cap, idles the sessions out after
/// a minute and admits every one of the browser's TCP flows, none of them evicted.
#[test]
fn a_udp_session_storm_stops_at_its_cap_and_leaves_tcp_alone() {
    let row = tidegate("udp-session-storm");
    assert_bounded(row);
    assert_eq!(row.admitted_percent, Some(100.0), "{row:?}");
    assert_eq!(row.established_evicted, Some(0), "{row:?}");
    assert!(row.connects_refused.is_some_and(|r| r > 0), "{row:?}");
    assert_eq!(row.hung_connections, Some(0), "{row:?}");
    for row in naive("udp-session-storm") {
        assert_killed(row);
    }
}

/// The host's own allocations kill the process with fixed ceilings alone; with the governor
/// it survives below the critical threshold and keeps the link busy.
#[test]
fn the_memory_governor_keeps_the_process_alive_through_the_hosts_surges() {
    let row = tidegate("memory-pressure");
    let limit = row.platform_limit.expect("the limit is named");
    assert_eq!(row.killed_at_seconds, None, "{row:?}");
    let critical = limit / 1000 * 700;
    assert!(
        row.memory_high_water.is_some_and(|peak| peak < critical),
        "{row:?}"
    );
    assert!(row.throughput_percent.is_some_and(|t| t > 99.0), "{row:?}");
    let fixed = rows()
        .iter()
        .find(|r| r.id == "memory-pressure" && r.variant == Some("fixed-ceilings"))
        .expect("the fixed-ceilings row");
    assert!(fixed.killed_at_seconds.is_some(), "{fixed:?}");
    assert!(fixed.memory_high_water.is_some_and(|peak| peak > limit));
    for row in naive("memory-pressure") {
        assert!(row.killed_at_seconds.is_some(), "{row:?}");
        assert!(row.killed_at_seconds <= fixed.killed_at_seconds, "{row:?}");
    }
}

fn assert_bounded(row: &Row) {
    let ceiling = row.ceiling.expect("tidegate rows report their ceiling");
    let limit = row.platform_limit.expect("memory scenarios name the limit");
    let peak = row
        .memory_high_water
        .expect("memory scenarios report the peak");
    assert!(peak <= ceiling, "{row:?}");
    assert!(ceiling < limit, "{row:?}");
    assert_eq!(row.killed_at_seconds, None, "{row:?}");
}

fn assert_killed(row: &Row) {
    let limit = row.platform_limit.expect("memory scenarios name the limit");
    assert!(row.killed_at_seconds.is_some_and(|at| at > 0.0), "{row:?}");
    assert!(
        row.memory_high_water.is_some_and(|peak| peak > limit),
        "{row:?}"
    );
    assert_eq!(row.ceiling, None, "{row:?}");
}

#[test]
fn every_scenario_runs_with_both_hosts() {
    let ids: Vec<&str> = rows().iter().map(|r| r.id).collect();
    for id in SCENARIOS {
        assert!(
            rows()
                .iter()
                .any(|r| r.id == id && r.host == Host::Tidegate),
            "{id} has a tidegate row"
        );
        naive(id);
    }
    assert!(ids.iter().all(|id| SCENARIOS.contains(id)), "{ids:?}");
}

#[test]
fn packet_tunnel_stays_under_its_ceiling_and_keeps_the_link_busy() {
    for id in ["tunnel-outbound-flood", "tunnel-inbound-burst"] {
        let row = tidegate(id);
        assert_bounded(row);
        assert!(row.throughput_percent.is_some_and(|t| t >= 99.0), "{row:?}");
        for naive in naive(id) {
            assert_killed(naive);
            assert!(
                naive.throughput_percent.is_some_and(|t| t < 60.0),
                "{naive:?}"
            );
        }
    }
}

/// Flow queueing: beside an unresponsive flood at twice the link rate, the TCP flow keeps at
/// least 40% of the link (fair share is half) and a ping's median round trip stays within 5 ms,
/// within the ceiling; FIFO with CoDel does neither, and the naive host dies.
#[test]
fn flow_queues_keep_tcp_its_share_and_ping_its_latency_beside_a_flood() {
    let fq = tidegate("flood-beside-tcp");
    assert_bounded(fq);
    let share = fq.tcp_share_percent.expect("TCP share");
    let ping = fq.ping_median_ms.expect("ping median");
    assert!(share >= 40.0, "{fq:?}");
    assert!(ping <= 5.0, "{fq:?}");
    let fifo = rows()
        .iter()
        .find(|r| r.id == "flood-beside-tcp" && r.variant == Some("fifo-codel"))
        .expect("a FIFO + CoDel row");
    assert_bounded(fifo);
    assert!(
        fifo.tcp_share_percent.expect("TCP share") < share / 4.0,
        "{fifo:?}"
    );
    assert!(
        fifo.ping_median_ms.expect("ping median") > 4.0 * ping,
        "{fifo:?}"
    );
    for row in naive("flood-beside-tcp") {
        assert_killed(row);
    }
}

#[test]
fn app_proxy_pauses_only_the_app_that_stopped_reading() {
    let row = tidegate("app-proxy-stalled-reader");
    assert_bounded(row);
    assert_eq!(row.platform_limit, Some(APP_PROXY_LIMIT));
    // The apps that keep reading get the link: had their flows been paused too (a global pause),
    // they would have lost most of it.
    assert!(row.throughput_percent.is_some_and(|t| t >= 99.0), "{row:?}");
    // Only the stalled app's 32 flows hold data, and they stop at its app watermark (2 MiB),
    // each over by at most the read in flight: far below the global watermark.
    let app_high = FlowPolicy::APPLE_DEFAULT.app_high_watermark;
    assert!(
        row.memory_high_water
            .is_some_and(|peak| peak > app_high && peak < app_high + 512 * 1024),
        "{row:?}"
    );
    assert!(row.outcome.contains("12 of 12 others never"), "{row:?}");
    assert_eq!(row.drops, Some(0), "an app proxy may not drop");
    // Without the app watermark the 32 stalled flows, each under the per-flow watermark,
    // reach the global one, which then pauses every other app for good.
    let unfair = rows()
        .iter()
        .find(|r| r.id == "app-proxy-stalled-reader" && r.variant == Some("no app watermark"))
        .expect("the scenario runs tidegate without the app watermark too");
    assert_eq!(unfair.host, Host::Tidegate);
    assert_bounded(unfair);
    assert!(
        unfair.outcome.contains("paused all 12 others"),
        "{unfair:?}"
    );
    assert!(
        unfair.throughput_percent.is_some_and(|t| t < 10.0),
        "{unfair:?}"
    );
    for naive in naive("app-proxy-stalled-reader") {
        assert_killed(naive);
        assert!(
            naive.throughput_percent.is_some_and(|t| t < 50.0),
            "{naive:?}"
        );
    }
}

#[test]
fn a_flood_of_twice_the_flow_limit_never_refuses_the_well_behaved_app() {
    let row = tidegate("flow-flood");
    assert_eq!(row.admitted_percent, Some(100.0), "{row:?}");
    assert_eq!(row.hung_connections, Some(0), "{row:?}");
    for naive in naive("flow-flood") {
        assert!(
            naive.admitted_percent.is_some_and(|a| a < 50.0),
            "{naive:?}"
        );
        // At least the flood's second 512 hang in the naive host.
        assert!(
            naive.hung_connections.is_some_and(|h| h >= 512),
            "{naive:?}"
        );
    }
}

#[test]
fn an_also_ran_storm_costs_no_memory_evicts_nothing_and_leaks_no_slot() {
    let row = tidegate("also-ran-storm");
    assert_bounded(row);
    assert_eq!(row.hung_connections, Some(0), "{row:?}");
    assert_eq!(row.connects_refused, Some(0), "{row:?}");
    assert_eq!(row.established_evicted, Some(0), "{row:?}");
    assert_eq!(row.slots_leaked, Some(0), "{row:?}");
    // Memory is the table and the established flows' pending bytes, nothing per also-ran.
    assert!(
        row.memory_high_water.is_some_and(|peak| peak < 1024 * 1024),
        "{row:?}"
    );
    for naive in naive("also-ran-storm") {
        assert_killed(naive);
        assert!(naive.slots_leaked.is_some_and(|s| s > 0), "{naive:?}");
    }
}

#[test]
fn a_slow_stop_completes_within_teardown_and_deadline_and_loses_no_task() {
    let bound = (STOP_TEARDOWN_US + DEFAULT_HOUSEKEEPING_DEADLINE_MICROS) as f64 / 1e6;
    let row = tidegate("slow-stop-restart");
    let latency = row.stop_latency_seconds.expect("stop latency");
    assert!(latency <= bound + 1e-9, "{row:?}");
    assert_eq!(row.tasks_lost, Some(0), "{row:?}");
    // One naive host makes the restart wait for all 30 s, the other loses the housekeeping.
    let naive = naive("slow-stop-restart");
    assert_eq!(naive.len(), 2);
    assert!(
        naive
            .iter()
            .any(|r| r.stop_latency_seconds.is_some_and(|s| s >= 30.0) && r.tasks_lost == Some(0)),
        "{naive:?}"
    );
    assert!(
        naive
            .iter()
            .any(|r| r.stop_latency_seconds.is_some_and(|s| s <= bound)
                && r.tasks_lost.is_some_and(|lost| lost > 0)),
        "{naive:?}"
    );
}

/// A teardown that never completes: the naive host's stop never ends; tidegate's gives way at
/// the teardown deadline, runs housekeeping and completes with nothing lost.
#[test]
fn a_hung_teardown_gives_way_at_its_deadline_and_the_stop_completes() {
    let bound =
        (DEFAULT_TEARDOWN_DEADLINE_MICROS + DEFAULT_HOUSEKEEPING_DEADLINE_MICROS) as f64 / 1e6;
    let row = tidegate("hung-teardown");
    let latency = row.stop_latency_seconds.expect("the stop completes");
    assert!(
        latency >= DEFAULT_TEARDOWN_DEADLINE_MICROS as f64 / 1e6 && latency <= bound + 1e-9,
        "{row:?}"
    );
    assert_eq!(row.tasks_lost, Some(0), "{row:?}");
    let naive = naive("hung-teardown");
    assert_eq!(naive.len(), 1);
    assert_eq!(naive[0].stop_latency_seconds, None, "{naive:?}");
}

/// Ten path changes in two seconds during a slow restart: the naive host runs a restart per
/// report; tidegate runs one for the path that held (and abandons the one whose path went), and
/// the tunnel carries traffic again sooner.
#[test]
fn a_storm_of_path_changes_runs_one_restart_for_the_path_that_holds() {
    let row = tidegate("path-change-storm");
    let naive = naive("path-change-storm");
    assert_eq!(naive.len(), 1);
    let restarts = row.restarts_run.expect("restarts counted");
    // The restart already running when the storm began, and one for the path that held.
    assert!(restarts <= 2, "{row:?}");
    assert!(
        naive[0].restarts_run.expect("restarts counted") >= 10,
        "{naive:?}"
    );
    let dead = row.up_but_dead_seconds.expect("measured");
    assert!(
        dead < naive[0].up_but_dead_seconds.expect("measured"),
        "{row:?} {naive:?}"
    );
}

/// A restart that keeps failing: the naive host leaves the tunnel up but dead for the whole run;
/// tidegate cancels once its attempts are used up, within the documented bound.
#[test]
fn a_restart_that_keeps_failing_ends_in_a_cancel_not_a_dead_tunnel() {
    let row = tidegate("failed-restart");
    assert_eq!(
        row.restarts_run,
        Some(u64::from(DEFAULT_RESTART_ATTEMPTS_MAX)),
        "{row:?}"
    );
    // Debounce, every attempt at its deadline at worst, and every back-off at its cap.
    let attempts = u64::from(DEFAULT_RESTART_ATTEMPTS_MAX);
    let bound = DEFAULT_PATH_DEBOUNCE_MICROS
        + attempts * DEFAULT_RESTART_DEADLINE_MICROS
        + (attempts - 1) * DEFAULT_RESTART_BACKOFF_MAX_MICROS;
    let dead = row.up_but_dead_seconds.expect("measured");
    assert!(dead <= bound as f64 / 1e6, "{row:?}");
    let retried = rows()
        .iter()
        .find(|r| r.id == "failed-restart" && r.host == Host::Tidegate && r.variant.is_some())
        .expect("the first-fails row");
    assert_eq!(retried.restarts_run, Some(2), "{retried:?}");
    for naive in naive("failed-restart") {
        let dead = naive.up_but_dead_seconds.expect("measured");
        assert!(
            dead >= 10.0 * 60.0,
            "the naive host shows the problem: {naive:?}"
        );
    }
    assert!(
        retried.up_but_dead_seconds.expect("measured") < 60.0,
        "{retried:?}"
    );
}

/// The Happy Eyeballs bug found by an independent host: at default settings, 64 or more
/// concurrent races to IPv6-black-holed servers waited for budget behind their own IPv6 attempts
/// until the OS's 75 s connect timeout. Each must now be up over IPv4 within 2 s or refused no
/// later than its 1 s budget wait.
#[test]
fn a_burst_of_connects_into_an_ipv6_black_hole_leaves_nothing_hanging() {
    let rows: Vec<_> = rows()
        .iter()
        .filter(|r| r.id == "ipv6-black-hole-burst")
        .cloned()
        .collect();
    let tidegate: Vec<_> = rows.iter().filter(|r| r.host == Host::Tidegate).collect();
    assert!(tidegate.len() >= 2, "{rows:?}");
    for row in tidegate {
        assert_eq!(row.hung_connections, Some(0), "{row:?}");
        assert_eq!(row.beyond_budget, Some(0), "{row:?}");
        assert!(row.max_connect_seconds.is_some_and(|m| m <= 2.0), "{row:?}");
        assert!(
            row.slowest_refusal_seconds.is_some_and(|s| s <= 1.0 + 0.3),
            "refused within the budget wait after the attempt fell due: {row:?}"
        );
    }
    for row in rows.iter().filter(|r| r.host == Host::Naive) {
        assert!(row.hung_connections.is_some_and(|h| h > 0), "{row:?}");
    }
}

#[test]
fn an_ipv6_black_hole_under_a_tight_budget_leaves_nothing_hanging() {
    let row = tidegate("ipv6-black-hole");
    assert_eq!(row.hung_connections, Some(0), "{row:?}");
    assert_eq!(row.beyond_budget, Some(0), "{row:?}");
    // IPv4 starts 250 ms after the black-holed IPv6 attempt and answers in 20 ms.
    let median = row.median_connect_seconds.expect("connections were made");
    assert!((0.25..=0.3).contains(&median), "{row:?}");
    assert!(row.max_connect_seconds.is_some_and(|m| m < 2.0), "{row:?}");
    // The budget is tight: some connects are refused (at once), not all.
    assert!(row.connects_refused.is_some_and(|r| r > 0), "{row:?}");
    for naive in naive("ipv6-black-hole") {
        assert!(naive.hung_connections.is_some_and(|h| h > 0), "{naive:?}");
        assert!(
            naive.median_connect_seconds.is_some_and(|m| m >= 75.0),
            "{naive:?}"
        );
        assert!(naive.connects_refused.is_some_and(|r| r > 0), "{naive:?}");
    }
}

#[test]
fn the_lab_is_deterministic_and_prints_every_row_and_field() {
    let again = lab::run_all(Scale::for_this_build());
    assert_eq!(
        rows(),
        &again[..],
        "virtual time: the same figures on every run"
    );
    let table = lab::table(rows());
    let json = lab::json(rows());
    for row in rows() {
        assert!(table.contains(row.scenario), "{table}");
        assert!(table.contains(&row.outcome), "{table}");
        assert!(json.contains(&format!("\"id\":\"{}\"", row.id)), "{json}");
    }
    for field in [
        "id",
        "scenario",
        "seeds",
        "host",
        "variant",
        "platform_limit",
        "ceiling",
        "memory_high_water",
        "throughput_percent",
        "drops",
        "admitted_percent",
        "stop_latency_seconds",
        "hung_connections",
        "killed_at_seconds",
        "tasks_lost",
        "median_connect_seconds",
        "max_connect_seconds",
        "slowest_refusal_seconds",
        "connects_refused",
        "beyond_budget",
        "established_evicted",
        "slots_leaked",
        "outcome",
    ] {
        assert_eq!(
            json.matches(&format!("\"{field}\":")).count(),
            rows().len(),
            "{field}"
        );
    }
}

/// docs/lab.md shows the sizing helper's report for 100 Mbit/s at 80 ms; it must be the report
/// the helper prints today, down to the engine's struct size.
#[test]
fn the_lab_doc_shows_the_current_sizing_report() {
    const COMMAND: &str = "$ cargo run --release -p tidegate-tests --bin tidegate-lab -- size --rate-mbit 100 --rtt-ms 80\n";
    let readme = include_str!("../../docs/lab.md");
    let start = readme
        .find(COMMAND)
        .expect("the README shows the sizing command")
        + COMMAND.len();
    let shown = &readme[start..start + readme[start..].find("```").expect("the block ends")];
    let sizing = lab::sizing::recommend(lab::sizing::SizingInput::new(100.0, 80.0)).unwrap();
    let report = lab::sizing::report(&sizing);
    assert_eq!(
        shown.trim_end(),
        report.trim_end(),
        "update the sizing block of docs/lab.md"
    );
}
