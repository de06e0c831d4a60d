//! Restarts of a running tunnel (netbirdio/ios-client #223, #207, #167; getlantern/lantern
//! #8938; partout-io/tunnelkit #175): path changes that pile up restarts, and restarts that
//! fail and leave the tunnel up but dead.
//!
//! `path-change-storm`: the tunnel runs on Wi-Fi; the device moves to a second Wi-Fi network and,
//! while the restart there is still connecting (a restart takes [`RESTART_US`]), the path flaps
//! ten times in two seconds between the first Wi-Fi and cellular, ending on cellular.
//!
//! `failed-restart`: the device joins a network behind a captive portal. Every attempt to
//! restart the tunnel there fails after [`FAILED_ATTEMPT_US`] (the handshake gets no answer).
//! Variant "first fails": the link needs a moment, and only the first attempt fails.
//!
//! `up_but_dead_seconds` counts the time the tunnel is up (not stopped or cancelled) but carries
//! no traffic: its connection is on a path that is gone, or is being restarted. Each run lasts
//! [`RUN_US`] after the first change.

use std::collections::VecDeque;

use tidegate_core::{
    CancelCause, DEFAULT_PATH_DEBOUNCE_MICROS, DEFAULT_RESTART_ATTEMPTS_MAX, Instant, Lifecycle,
    LifecycleConfig, LifecycleEffect, LifecycleState, PathFingerprint, RestartId, TaskSlot,
};

use super::{Host, Row};

const STORM_ID: &str = "path-change-storm";
const STORM_SCENARIO: &str = "ten path changes in two seconds during a slow restart";
const FAILED_ID: &str = "failed-restart";
const FAILED_SCENARIO: &str = "a restart that fails (captive portal)";
const SEEDS: &str = "001";

/// A restart attempt that succeeds takes 4 s: the transport connects and handshakes on a busy
/// new network.
pub(super) const RESTART_US: u64 = 4_000_000;
/// A restart attempt that fails gives up after 5 s without an answer.
pub(super) const FAILED_ATTEMPT_US: u64 = 5_000_000;
/// Each run lasts ten minutes after the first path change (netbird's black holes lasted up to
/// 13 minutes, until the user noticed).
pub(super) const RUN_US: u64 = 600_000_000;

const WIFI: PathFingerprint = PathFingerprint(0x11);
const HOTEL_WIFI: PathFingerprint = PathFingerprint(0x22);
const CELLULAR: PathFingerprint = PathFingerprint(0x33);
const PORTAL: PathFingerprint = PathFingerprint(0x44);

/// The path reports of the storm, in microseconds from the first change: to the hotel's Wi-Fi at
/// 0, then ten changes from 1.5 s to 3.3 s alternating between the old Wi-Fi, at the edge of its
/// range, and cellular, ending on cellular.
fn storm_script() -> Vec<(u64, PathFingerprint)> {
    let mut script = vec![(0, HOTEL_WIFI)];
    for i in 0..10u64 {
        let path = if i % 2 == 0 { WIFI } else { CELLULAR };
        script.push((1_500_000 + i * 200_000, path));
    }
    script
}

/// How an attempt on `path` (its `attempt`-th on that path) ends: after how long, and whether it
/// succeeded.
type Outcome = fn(PathFingerprint, u16) -> (u64, bool);

/// One scenario, run by each host.
#[derive(Clone, Copy)]
struct Case<'s> {
    id: &'static str,
    scenario: &'static str,
    variant: Option<&'static str>,
    /// Path reports, in microseconds from the first change.
    script: &'s [(u64, PathFingerprint)],
    outcome: Outcome,
}

impl Case<'_> {
    fn row(&self, host: Host) -> Row {
        let mut row = Row::new(self.id, self.scenario, SEEDS, host);
        row.variant = self.variant;
        row
    }
}

fn always_succeeds(_: PathFingerprint, _: u16) -> (u64, bool) {
    (RESTART_US, true)
}

fn portal_never_clears(path: PathFingerprint, _: u16) -> (u64, bool) {
    if path == PORTAL {
        (FAILED_ATTEMPT_US, false)
    } else {
        (RESTART_US, true)
    }
}

fn first_attempt_fails(_: PathFingerprint, attempt: u16) -> (u64, bool) {
    if attempt == 1 {
        (FAILED_ATTEMPT_US, false)
    } else {
        (RESTART_US, true)
    }
}

/// The naive host and tidegate through the storm.
pub(super) fn path_change_storm() -> [Row; 2] {
    let script = storm_script();
    let case = Case {
        id: STORM_ID,
        scenario: STORM_SCENARIO,
        variant: None,
        script: &script,
        outcome: always_succeeds,
    };
    [naive(&case), tidegate(&case)]
}

/// The naive host and tidegate on a network where restarts fail: always, or only the first.
pub(super) fn failed_restart() -> [Row; 4] {
    let script = [(0, PORTAL)];
    let never = Case {
        id: FAILED_ID,
        scenario: FAILED_SCENARIO,
        variant: None,
        script: &script,
        outcome: portal_never_clears,
    };
    let first = Case {
        variant: Some("first fails"),
        outcome: first_attempt_fails,
        ..never
    };
    [
        naive(&never),
        tidegate(&never),
        naive(&first),
        tidegate(&first),
    ]
}

/// Where the tunnel's traffic stands, for the up-but-dead clock.
struct Link {
    /// The path the network is on now.
    actual: PathFingerprint,
    /// The path the tunnel's connection works on, if it has one.
    tunnel: Option<PathFingerprint>,
    /// Up (not stopped or cancelled).
    up: bool,
    /// Since when the tunnel has been up but dead, while it is.
    dead_since: Option<u64>,
    dead_total: u64,
}

impl Link {
    fn new() -> Self {
        Link {
            actual: WIFI,
            tunnel: Some(WIFI),
            up: true,
            dead_since: None,
            dead_total: 0,
        }
    }

    /// Re-evaluate at `now` after something changed.
    fn update(&mut self, now: u64) {
        let dead = self.up && self.tunnel != Some(self.actual);
        match (dead, self.dead_since) {
            (true, None) => self.dead_since = Some(now),
            (false, Some(since)) => {
                self.dead_total += now - since;
                self.dead_since = None;
            }
            _ => {}
        }
    }

    fn finish(&mut self, end: u64) -> f64 {
        if let Some(since) = self.dead_since.take() {
            self.dead_total += end - since;
        }
        self.dead_total as f64 / 1e6
    }
}

/// A naive provider: every path report restarts the tunnel at once; restarts run one after
/// another on its serial queue (a tunnel has one session at a time), each to its end, none
/// abandoned; a failed restart is logged and not retried, and the tunnel stays up.
fn naive(case: &Case<'_>) -> Row {
    let mut row = case.row(Host::Naive);
    let outcome = case.outcome;
    let mut link = Link::new();
    let mut reports: VecDeque<(u64, PathFingerprint)> = case.script.iter().copied().collect();
    let mut queue: VecDeque<PathFingerprint> = VecDeque::new();
    // The restart running: (ends at, path, succeeds).
    let mut running: Option<(u64, PathFingerprint, bool)> = None;
    let mut restarts = 0u64;
    let mut failed = 0u64;
    let mut now = 0u64;
    loop {
        if running.is_none()
            && let Some(path) = queue.pop_front()
        {
            let (duration, ok) = outcome(path, 1);
            restarts += 1;
            // Restarting drops the current connection.
            link.tunnel = None;
            link.update(now);
            running = Some((now + duration, path, ok));
        }
        let next_report = reports.front().map(|(at, _)| *at);
        let next_end = running.map(|(at, _, _)| at);
        let Some(next) = [next_report, next_end].into_iter().flatten().min() else {
            break;
        };
        if next > RUN_US {
            break;
        }
        now = next;
        if next_end == Some(now)
            && let Some((_, path, ok)) = running.take()
        {
            if ok {
                link.tunnel = Some(path);
            } else {
                failed += 1;
            }
            link.update(now);
        }
        while reports.front().is_some_and(|(at, _)| *at == now) {
            if let Some((_, path)) = reports.pop_front() {
                link.actual = path;
                link.update(now);
                queue.push_back(path);
            }
        }
    }
    let dead = link.finish(RUN_US);
    row.restarts_run = Some(restarts);
    row.up_but_dead_seconds = Some(dead);
    row.outcome = if failed > 0 {
        format!(
            "{restarts} restart, failed and not retried: up but dead {dead:.1} s, to the end \
             of the run"
        )
    } else {
        format!("{restarts} restarts, one per report, one after another: up but dead {dead:.1} s")
    };
    row
}

/// A provider driven by [`Lifecycle`], with its default restart settings.
fn tidegate(case: &Case<'_>) -> Row {
    let mut row = case.row(Host::Tidegate);
    let outcome = case.outcome;
    // The lab's clock starts one minute before the first change, with the tunnel up on Wi-Fi.
    const EPOCH: u64 = 60_000_000;
    let at = |micros: u64| Instant::from_micros(EPOCH + micros);
    let mut machine = Lifecycle::new(LifecycleConfig::DEFAULT, vec![TaskSlot::EMPTY; 4])
        .expect("the default configuration is valid");
    let _ = machine.on_path_change(Instant::from_micros(0), WIFI);
    let generation = machine
        .on_start(Instant::from_micros(0), None)
        .expect("a new machine starts");
    while machine.poll_effect(Instant::from_micros(0)).is_some() {}
    machine
        .on_tunnel_started(Instant::from_micros(1), generation)
        .expect("the start is current");

    let mut link = Link::new();
    let mut reports: VecDeque<(u64, PathFingerprint)> = case.script.iter().copied().collect();
    // The attempt running: (ends at, id, path, succeeds).
    let mut running: Option<(u64, RestartId, PathFingerprint, bool)> = None;
    let mut cancelled: Option<(u64, CancelCause)> = None;
    let mut now = 0u64;
    let mut steps = 0u32;
    while cancelled.is_none() && steps < 100_000 {
        steps += 1;
        // Carry out what the machine asks.
        while let Some(effect) = machine.poll_effect(at(now)) {
            match effect {
                LifecycleEffect::RestartTunnel {
                    restart,
                    path,
                    attempt,
                    ..
                } => {
                    assert!(running.is_none(), "one restart at a time");
                    let (duration, ok) = outcome(path, attempt);
                    link.tunnel = None;
                    link.update(now);
                    running = Some((now + duration, restart, path, ok));
                }
                LifecycleEffect::AbandonRestart { restart, .. } => {
                    assert_eq!(running.map(|r| r.1), Some(restart));
                    running = None;
                }
                LifecycleEffect::TearDown { generation } => machine
                    .on_torn_down(at(now), generation)
                    .expect("the teardown is current"),
                LifecycleEffect::CancelWithError { cause, .. } => {
                    cancelled = Some((now, cause));
                    link.up = false;
                    link.update(now);
                }
                other => panic!("unexpected effect {other:?}"),
            }
        }
        if cancelled.is_some() {
            break;
        }
        let next_report = reports.front().map(|(at, _)| *at);
        let next_end = running.map(|r| r.0);
        let next_timer = machine
            .poll_timeout()
            .map(|t| t.as_micros().saturating_sub(EPOCH));
        let Some(next) = [next_report, next_end, next_timer]
            .into_iter()
            .flatten()
            .min()
        else {
            break;
        };
        if next > RUN_US {
            break;
        }
        now = next;
        machine.handle_timeout(at(now));
        if next_end == Some(now)
            && let Some((_, restart, path, ok)) = running.take()
        {
            if ok {
                machine
                    .on_restart_done(at(now), generation, restart)
                    .expect("the attempt is current");
                link.tunnel = Some(path);
            } else {
                machine
                    .on_restart_failed(at(now), generation, restart)
                    .expect("the attempt is current");
            }
            link.update(now);
        }
        while reports.front().is_some_and(|(at, _)| *at == now) {
            if let Some((_, path)) = reports.pop_front() {
                link.actual = path;
                link.update(now);
                let _ = machine.on_path_change(at(now), path);
            }
        }
    }
    let dead = link.finish(cancelled.map_or(RUN_US, |(at, _)| at));
    let stats = machine.stats();
    row.restarts_run = Some(stats.restarts_run);
    row.up_but_dead_seconds = Some(dead);
    row.outcome = match cancelled {
        Some((at, CancelCause::RestartsExhausted)) => format!(
            "{} attempts failed ({} s debounce, back-off 1, 2, 4 s), cancelled at {:.1} s: the \
             system shows the VPN down instead of a dead tunnel",
            stats.restarts_failed,
            DEFAULT_PATH_DEBOUNCE_MICROS / 1_000_000,
            at as f64 / 1e6
        ),
        Some((_, cause)) => format!("cancelled: {cause:?}"),
        None => {
            assert_eq!(machine.state(), LifecycleState::Running, "{row:?}");
            format!(
                "{} restarts ({} abandoned, {} failed and retried): up but dead {dead:.1} s, \
                 then up on the latest path",
                stats.restarts_run, stats.restarts_abandoned, stats.restarts_failed
            )
        }
    };
    assert!(
        stats.restarts_failed < u64::from(DEFAULT_RESTART_ATTEMPTS_MAX) || cancelled.is_some(),
        "every attempt failed yet the session is up: {row:?}"
    );
    row
}
