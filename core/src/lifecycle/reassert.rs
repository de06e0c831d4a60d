//! Restarts of a running tunnel: path changes, debounce, one restart at a time, retries with
//! back-off, and the wake after a long sleep.
//!
//! This is the part of the lifecycle that runs while the session is up. It owns no effects of its
//! own: [`Reassert`] records what is owed (a restart to announce, an attempt to abandon) and the
//! machine hands those out through its one effect queue, in order.
//!
//! Why these rules: field reports of tunnels that restarted on every Wi-Fi or cellular change
//! show restarts piling up (one per change, running at once), restarts left running for a path
//! already gone, and tunnels left up but dead after the first restart failed (netbirdio/ios-client
//! #223: 15 failed restarts, 6 tunnels black-holed for up to 13 minutes). So a change must hold
//! for the debounce before anything runs; one attempt runs at a time and it is for the latest
//! path; a failed attempt is retried a bounded number of times with back-off, then the session is
//! cancelled with an error rather than left up.

use core::fmt;

use crate::time::Instant;

use super::{LifecycleConfig, LifecycleStats};

/// A fingerprint of the network path, computed by the host from what identifies the path for its
/// tunnel (for example a hash of the interface type, the interface name and the local
/// addresses). Only equality matters: a report with the fingerprint of the path already in use
/// restarts nothing. [`PathFingerprint::NONE`] (0) means there is no usable path.
///
/// The fingerprint is an opaque number chosen by the host; it must not be an address or a name
/// (it ends up in stats and, through the host, in logs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PathFingerprint(pub u64);

impl PathFingerprint {
    /// No usable path (`NWPath.status` is `.unsatisfied`): nothing can be restarted until a path
    /// appears, so the session waits, reasserting, without using up its attempts.
    pub const NONE: PathFingerprint = PathFingerprint(0);
}

/// The id of one restart attempt, unique for the life of one machine and increasing in the order
/// attempts were announced. Reports echo it, so a report for an attempt that was abandoned, or
/// that belongs to an earlier attempt, is recognised and refused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct RestartId(pub u64);

impl fmt::Display for RestartId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "restart {}", self.0)
    }
}

/// What a path report did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum PathReport {
    /// The fingerprint is the one last reported: nothing changed, and a debounce in progress
    /// keeps its end.
    Unchanged,
    /// The path was recorded without scheduling a restart: the tunnel is not up yet (it comes up
    /// on the latest path reported), this is the first report of the session (the path the
    /// tunnel is on), or no session is starting or running.
    Recorded,
    /// A change: if the path still holds after the debounce, the tunnel restarts on it. A later
    /// different report starts the debounce again.
    Scheduled {
        /// When the debounce ends.
        settles_at: Instant,
    },
}

/// What a timer or report asks of the machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Carry on.
    Continue,
    /// Every attempt for the path failed: cancel the session.
    Exhausted,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Restart {
    /// Not reasserting: the tunnel is up on `established`.
    Idle,
    /// Reasserting, with nothing to restart on: no usable path, or a back-off ended while a
    /// newer path was still settling. The next settled path starts an attempt.
    Waiting,
    /// Reasserting: a `RestartTunnel` effect is owed for `path`.
    Due { path: PathFingerprint },
    /// Reasserting: attempt `id` for `path` runs until `deadline`.
    InFlight {
        id: RestartId,
        path: PathFingerprint,
        deadline: Instant,
    },
    /// Reasserting: the last attempt for `path` failed; the next one is due at `until`.
    BackingOff {
        path: PathFingerprint,
        until: Instant,
    },
}

/// What the host learns from a `RestartTunnel` effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Announce {
    pub(super) id: RestartId,
    pub(super) path: PathFingerprint,
    pub(super) attempt: u16,
}

/// Why a restart report was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RestartReportError {
    /// An attempt this machine announced, but not the one running: abandoned, timed out or
    /// already reported.
    Stale,
    /// An id this machine never announced.
    Unknown,
}

/// The restart state of one session.
#[derive(Clone, Copy, Debug)]
pub(super) struct Reassert {
    /// The path the tunnel is up on, once known.
    established: Option<PathFingerprint>,
    /// The latest path reported, once one was.
    latest: Option<PathFingerprint>,
    /// When the latest change has held for the debounce.
    settles_at: Option<Instant>,
    /// A wake asked for a restart even on an unchanged path.
    wake_due: bool,
    restart: Restart,
    /// Failed attempts on `retry_path`.
    failures: u16,
    /// The path whose failed attempts `failures` counts, since its last failure.
    retry_path: Option<PathFingerprint>,
    /// The id the next announced attempt gets; ids are never reused.
    next_id: u64,
    /// An attempt the host must abandon; at most one is owed at a time, because a new attempt is
    /// announced only after the owed abandon was handed out.
    abandon_due: Option<RestartId>,
}

impl Reassert {
    pub(super) const fn new() -> Self {
        Reassert {
            established: None,
            latest: None,
            settles_at: None,
            wake_due: false,
            restart: Restart::Idle,
            failures: 0,
            retry_path: None,
            next_id: 1,
            abandon_due: None,
        }
    }

    /// A new session: forget the restarts of the last one and come up on the latest path
    /// reported; keep the ids.
    pub(super) fn begin_session(&mut self) {
        debug_assert!(
            self.abandon_due.is_none(),
            "an abandon was owed across sessions"
        );
        *self = Reassert {
            established: self.latest,
            latest: self.latest,
            next_id: self.next_id,
            ..Reassert::new()
        };
    }

    /// The session stops: an attempt in flight is abandoned, nothing else will start.
    pub(super) fn end_session(&mut self, stats: &mut LifecycleStats) {
        if let Restart::InFlight { id, .. } = self.restart {
            self.abandon(id, stats);
        }
        self.restart = Restart::Idle;
        self.settles_at = None;
        self.wake_due = false;
    }

    /// Reasserting: a restart is owed, running, backing off or waiting for a path.
    pub(super) fn reasserting(&self) -> bool {
        !matches!(self.restart, Restart::Idle)
    }

    /// The path the tunnel is up on, once known.
    pub(super) fn established(&self) -> Option<PathFingerprint> {
        self.established
    }

    /// The earliest timer: the debounce's end, the attempt's deadline or the back-off's end.
    pub(super) fn timeout(&self) -> Option<Instant> {
        let restart = match self.restart {
            Restart::InFlight { deadline, .. } => Some(deadline),
            Restart::BackingOff { until, .. } => Some(until),
            Restart::Idle | Restart::Waiting | Restart::Due { .. } => None,
        };
        match (self.settles_at, restart) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// A path report. `running`: the tunnel is up (reports before that only record the path).
    pub(super) fn on_path(
        &mut self,
        now: Instant,
        path: PathFingerprint,
        running: bool,
        config: &LifecycleConfig,
        stats: &mut LifecycleStats,
    ) -> PathReport {
        if self.latest == Some(path) {
            return PathReport::Unchanged;
        }
        let first = self.latest.replace(path).is_none();
        if !running || first {
            // The tunnel comes up on this path, or (the first report) is up on it.
            debug_assert!(!first || self.established.is_none());
            self.established = Some(path);
            return PathReport::Recorded;
        }
        stats.path_changes = stats.path_changes.saturating_add(1);
        let settles_at = now.saturating_add_micros(config.path_debounce_micros);
        self.settles_at = Some(settles_at);
        PathReport::Scheduled { settles_at }
    }

    /// The device woke after sleeping `slept_micros`. Returns whether a restart was scheduled.
    pub(super) fn on_wake(
        &mut self,
        now: Instant,
        slept_micros: u64,
        config: &LifecycleConfig,
        stats: &mut LifecycleStats,
    ) -> bool {
        stats.wakes = stats.wakes.saturating_add(1);
        let after = config.wake_restart_after_micros;
        if after == 0 || slept_micros < after || self.latest.is_none() {
            // Off, a short sleep, or no path ever reported to restart on.
            return false;
        }
        stats.wake_restarts = stats.wake_restarts.saturating_add(1);
        self.wake_due = true;
        // The path monitor usually reports right after a wake; the debounce lets that report
        // land, so the one restart is for the path the device woke on.
        self.settles_at = Some(now.saturating_add_micros(config.path_debounce_micros));
        true
    }

    /// Apply the timers `now` reached, each once, in the order debounce, attempt deadline,
    /// back-off. Every timer it arms is measured from `now`, so a jump of hours fires each timer
    /// once and never a cascade.
    pub(super) fn on_time(
        &mut self,
        now: Instant,
        config: &LifecycleConfig,
        stats: &mut LifecycleStats,
    ) -> Verdict {
        if let Some(settles_at) = self.settles_at
            && now >= settles_at
        {
            self.settles_at = None;
            self.settle(stats);
        }
        if let Restart::InFlight { id, path, deadline } = self.restart
            && now >= deadline
        {
            stats.restart_timeouts = stats.restart_timeouts.saturating_add(1);
            // The host must stop the attempt that hangs before the next one runs.
            self.abandon(id, stats);
            return self.fail(now, path, config, stats);
        }
        if let Restart::BackingOff { path, until } = self.restart
            && now >= until
        {
            self.restart = if self.settles_at.is_some() {
                // A newer path is settling; its settling starts the next attempt.
                Restart::Waiting
            } else {
                Restart::Due { path }
            };
        }
        Verdict::Continue
    }

    /// The latest path held for the debounce (or a wake asked for a restart): act on it.
    fn settle(&mut self, stats: &mut LifecycleStats) {
        let Some(target) = self.latest else {
            debug_assert!(!self.wake_due, "a wake restart scheduled without a path");
            self.wake_due = false;
            return;
        };
        let wake = core::mem::take(&mut self.wake_due);
        if !self.reasserting() && Some(target) == self.established && !wake {
            // The path came back before the debounce ended: nothing to restart.
            return;
        }
        if let Restart::InFlight { id, path, .. } = self.restart {
            if path == target && !wake {
                // The attempt in flight is already for the settled path.
                return;
            }
            self.abandon(id, stats);
        }
        if let Restart::BackingOff { path, .. } = self.restart
            && path == target
            && !wake
        {
            // The path flapped and came back: its failures and its back-off stand.
            return;
        }
        if self.retry_path != Some(target) {
            // A new path gets the full number of attempts; the path that failed keeps its
            // count, so a flapping path cannot retry without end.
            self.failures = 0;
            self.retry_path = None;
        }
        self.restart = if target == PathFingerprint::NONE {
            Restart::Waiting
        } else {
            Restart::Due { path: target }
        };
    }

    fn abandon(&mut self, id: RestartId, stats: &mut LifecycleStats) {
        debug_assert!(
            self.abandon_due.is_none(),
            "a second abandon owed before the first was handed out"
        );
        self.abandon_due = Some(id);
        self.restart = Restart::Idle;
        stats.restarts_abandoned = stats.restarts_abandoned.saturating_add(1);
    }

    /// An attempt for `path` failed (reported, or past its deadline).
    fn fail(
        &mut self,
        now: Instant,
        path: PathFingerprint,
        config: &LifecycleConfig,
        stats: &mut LifecycleStats,
    ) -> Verdict {
        stats.restarts_failed = stats.restarts_failed.saturating_add(1);
        self.failures = self.failures.saturating_add(1);
        self.retry_path = Some(path);
        if self.failures >= config.restart_attempts_max {
            self.restart = Restart::Idle;
            return Verdict::Exhausted;
        }
        let until = now.saturating_add_micros(backoff_micros(config, self.failures));
        self.restart = Restart::BackingOff { path, until };
        Verdict::Continue
    }

    /// The abandon owed to the host, taken.
    pub(super) fn take_abandon(&mut self) -> Option<RestartId> {
        self.abandon_due.take()
    }

    /// The attempt owed to the host, announced: it runs from `now` until its deadline.
    pub(super) fn take_announce(
        &mut self,
        now: Instant,
        config: &LifecycleConfig,
        stats: &mut LifecycleStats,
    ) -> Option<Announce> {
        let Restart::Due { path } = self.restart else {
            return None;
        };
        if self.abandon_due.is_some() {
            // The abandon goes out first: one attempt at a time, as the host sees them.
            return None;
        }
        let id = RestartId(self.next_id);
        self.next_id = self.next_id.saturating_add(1);
        self.restart = Restart::InFlight {
            id,
            path,
            deadline: now.saturating_add_micros(config.restart_deadline_micros),
        };
        stats.restarts_run = stats.restarts_run.saturating_add(1);
        Some(Announce {
            id,
            path,
            attempt: self.failures.saturating_add(1),
        })
    }

    /// The host reports attempt `id` ended, with success or not.
    pub(super) fn on_restart_ended(
        &mut self,
        now: Instant,
        id: RestartId,
        done: bool,
        config: &LifecycleConfig,
        stats: &mut LifecycleStats,
    ) -> Result<Verdict, RestartReportError> {
        match self.restart {
            Restart::InFlight {
                id: running, path, ..
            } if running == id => {
                if !done {
                    return Ok(self.fail(now, path, config, stats));
                }
                stats.restarts_done = stats.restarts_done.saturating_add(1);
                self.established = Some(path);
                self.failures = 0;
                self.retry_path = None;
                self.restart = Restart::Idle;
                Ok(Verdict::Continue)
            }
            _ if id.0 >= 1 && id.0 < self.next_id => Err(RestartReportError::Stale),
            _ => Err(RestartReportError::Unknown),
        }
    }
}

/// The back-off after the `failures`-th failure: the initial back-off doubled per earlier
/// failure, capped at the maximum.
fn backoff_micros(config: &LifecycleConfig, failures: u16) -> u64 {
    let doublings = u32::from(failures.saturating_sub(1)).min(63);
    let factor = 1_u64 << doublings;
    config
        .restart_backoff_micros
        .saturating_mul(factor)
        .min(config.restart_backoff_max_micros)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::{
        CancelCause, Generation, Lifecycle, LifecycleConfigError, LifecycleEffect, LifecycleState,
        ReportError, StopPhase, TaskSlot,
    };

    type Machine = Lifecycle<[TaskSlot; 4]>;

    fn config() -> LifecycleConfig {
        LifecycleConfig::DEFAULT
    }

    fn at(millis: u64) -> Instant {
        Instant::from_millis(millis)
    }

    const A: PathFingerprint = PathFingerprint(0xa);
    const B: PathFingerprint = PathFingerprint(0xb);
    const C: PathFingerprint = PathFingerprint(0xc);

    fn drain(machine: &mut Machine, now: Instant) -> Vec<LifecycleEffect> {
        core::iter::from_fn(|| machine.poll_effect(now)).collect()
    }

    /// A machine running on path `A` since 1 ms, with `config`.
    fn running_on_a(config: LifecycleConfig) -> (Machine, Generation) {
        let mut machine = Lifecycle::new(config, [TaskSlot::EMPTY; 4]).unwrap();
        let generation = machine.on_start(at(0), None).unwrap();
        drain(&mut machine, at(0));
        assert_eq!(machine.on_path_change(at(0), A), PathReport::Recorded);
        machine.on_tunnel_started(at(1), generation).unwrap();
        assert_eq!(machine.path(), Some(A));
        (machine, generation)
    }

    /// The one `RestartTunnel` among `effects`: (id, path, attempt).
    fn restart_of(effects: &[LifecycleEffect]) -> (RestartId, PathFingerprint, u16) {
        match effects {
            [
                LifecycleEffect::RestartTunnel {
                    restart,
                    path,
                    attempt,
                    ..
                },
            ] => (*restart, *path, *attempt),
            other => panic!("expected one RestartTunnel, got {other:?}"),
        }
    }

    #[test]
    fn an_unchanged_path_restarts_nothing() {
        let (mut machine, _) = running_on_a(config());
        assert_eq!(machine.on_path_change(at(5), A), PathReport::Unchanged);
        assert_eq!(machine.poll_timeout(), None);
        assert!(drain(&mut machine, at(60_000)).is_empty());
        assert_eq!(machine.state(), LifecycleState::Running);
        assert_eq!(machine.stats().path_changes, 0);
    }

    #[test]
    fn a_storm_of_changes_runs_one_restart_for_the_latest_path() {
        let (mut machine, generation) = running_on_a(config());
        // Ten changes in two seconds, alternating between two new paths and ending on C.
        for i in 0..10_u64 {
            let path = if i % 2 == 0 { B } else { C };
            let now = at(10 + i * 200);
            assert!(matches!(
                machine.on_path_change(now, path),
                PathReport::Scheduled { .. }
            ));
            assert!(
                drain(&mut machine, now).is_empty(),
                "nothing before the debounce"
            );
        }
        let last = at(10 + 9 * 200);
        let settles = last.saturating_add_micros(DEFAULT_PATH_DEBOUNCE);
        assert_eq!(machine.poll_timeout(), Some(settles));
        assert_eq!(machine.state(), LifecycleState::Running);
        machine.handle_timeout(settles);
        assert_eq!(machine.state(), LifecycleState::Reasserting);
        let (id, path, attempt) = restart_of(&drain(&mut machine, settles));
        assert_eq!((path, attempt), (C, 1));
        machine.on_restart_done(at(4_000), generation, id).unwrap();
        assert_eq!(machine.state(), LifecycleState::Running);
        assert_eq!(machine.path(), Some(C));
        let stats = machine.stats();
        assert_eq!(
            (stats.path_changes, stats.restarts_run, stats.restarts_done),
            (10, 1, 1)
        );
    }

    const DEFAULT_PATH_DEBOUNCE: u64 = crate::lifecycle::DEFAULT_PATH_DEBOUNCE_MICROS;

    #[test]
    fn a_path_that_comes_back_within_the_debounce_restarts_nothing() {
        let (mut machine, _) = running_on_a(config());
        let _ = machine.on_path_change(at(10), B);
        let _ = machine.on_path_change(at(500), A);
        machine.handle_timeout(at(5_000));
        assert!(drain(&mut machine, at(5_000)).is_empty());
        assert_eq!(machine.state(), LifecycleState::Running);
        assert_eq!(machine.stats().restarts_run, 0);
    }

    #[test]
    fn a_change_during_a_restart_abandons_it_for_the_latest_path() {
        let (mut machine, generation) = running_on_a(config());
        let _ = machine.on_path_change(at(10), B);
        let (first, _, _) = restart_of(&drain(&mut machine, at(1_010)));
        // The restart on B is slow; the path moves to C meanwhile.
        let _ = machine.on_path_change(at(1_500), C);
        assert!(
            drain(&mut machine, at(1_500)).is_empty(),
            "the attempt runs on"
        );
        assert_eq!(
            drain(&mut machine, at(2_500)),
            vec![LifecycleEffect::AbandonRestart {
                generation,
                restart: first
            }]
            .into_iter()
            .chain([LifecycleEffect::RestartTunnel {
                generation,
                restart: RestartId(first.0 + 1),
                path: C,
                attempt: 1
            }])
            .collect::<Vec<_>>()
        );
        // The abandoned attempt's late report is refused and changes nothing.
        let stats = *machine.stats();
        assert_eq!(
            machine.on_restart_done(at(2_600), generation, first),
            Err(ReportError::StaleRestart { restart: first })
        );
        assert_eq!(machine.state(), LifecycleState::Reasserting);
        assert_eq!(machine.path(), Some(A));
        assert_eq!(machine.stats().restarts_done, stats.restarts_done);
        assert_eq!(
            machine.on_restart_done(at(2_600), generation, RestartId(99)),
            Err(ReportError::UnknownRestart {
                restart: RestartId(99)
            })
        );
        machine
            .on_restart_done(at(2_700), generation, RestartId(first.0 + 1))
            .unwrap();
        assert_eq!(machine.path(), Some(C));
        assert_eq!(machine.stats().restarts_abandoned, 1);
    }

    #[test]
    fn failed_restarts_back_off_then_cancel_the_session() {
        let (mut machine, generation) = running_on_a(config());
        let _ = machine.on_path_change(at(10), B);
        let mut now = at(1_010);
        let mut waits = Vec::new();
        for attempt in 1..=DEFAULT_RESTART_ATTEMPTS_MAX {
            let (id, path, reported_attempt) = restart_of(&drain(&mut machine, now));
            assert_eq!((path, reported_attempt), (B, attempt));
            machine.on_restart_failed(now, generation, id).unwrap();
            if attempt == DEFAULT_RESTART_ATTEMPTS_MAX {
                break;
            }
            assert_eq!(machine.state(), LifecycleState::Reasserting);
            let next = machine.poll_timeout().unwrap();
            waits.push(next.micros_since(now));
            assert!(
                drain(&mut machine, now).is_empty(),
                "no retry before the back-off"
            );
            now = next;
        }
        assert_eq!(waits, [1_000_000, 2_000_000, 4_000_000]);
        assert_eq!(
            machine.state(),
            LifecycleState::Stopping(StopPhase::TearingDown)
        );
        assert_eq!(
            drain(&mut machine, now),
            vec![LifecycleEffect::TearDown { generation }]
        );
        machine.on_torn_down(now, generation).unwrap();
        assert_eq!(
            drain(&mut machine, now),
            vec![LifecycleEffect::CancelWithError {
                generation,
                code: 0,
                cause: CancelCause::RestartsExhausted
            }]
        );
        let stats = machine.stats();
        assert_eq!((stats.restarts_failed, stats.restarts_exhausted), (4, 1));
    }

    /// A path that fails, flaps away and comes back within the debounce keeps its failures and
    /// its back-off: flapping cannot buy endless attempts.
    #[test]
    fn a_path_that_flaps_back_keeps_its_failures_and_back_off() {
        let (mut machine, generation) = running_on_a(LifecycleConfig {
            restart_attempts_max: 2,
            restart_backoff_micros: 10_000_000,
            restart_backoff_max_micros: 10_000_000,
            ..config()
        });
        let _ = machine.on_path_change(at(10), B);
        let (id, _, _) = restart_of(&drain(&mut machine, at(1_010)));
        machine
            .on_restart_failed(at(1_020), generation, id)
            .unwrap();
        let retry_at = at(1_020).saturating_add_micros(10_000_000);
        // B flaps to C and back within the debounce.
        let _ = machine.on_path_change(at(2_000), C);
        let _ = machine.on_path_change(at(2_500), B);
        assert!(
            drain(&mut machine, at(4_000)).is_empty(),
            "the back-off stands"
        );
        assert_eq!(machine.poll_timeout(), Some(retry_at));
        let (id, path, attempt) = restart_of(&drain(&mut machine, retry_at));
        assert_eq!((path, attempt), (B, 2), "the count stands too");
        machine.on_restart_failed(retry_at, generation, id).unwrap();
        assert_eq!(
            machine.state(),
            LifecycleState::Stopping(StopPhase::TearingDown),
            "the second failure on B is the last"
        );
    }

    /// The same when the back-off ends while the path is away: the next attempt on it, once it
    /// has settled again, is still its second.
    #[test]
    fn a_path_that_comes_back_after_its_back_off_keeps_its_count() {
        let (mut machine, generation) = running_on_a(config());
        let _ = machine.on_path_change(at(10), B);
        let (id, _, _) = restart_of(&drain(&mut machine, at(1_010)));
        machine
            .on_restart_failed(at(1_020), generation, id)
            .unwrap();
        // Away to C while the 1 s back-off runs out, back to B before C settles.
        let _ = machine.on_path_change(at(1_500), C);
        assert!(
            drain(&mut machine, at(2_020)).is_empty(),
            "C is still settling"
        );
        let _ = machine.on_path_change(at(2_200), B);
        let (_, path, attempt) = restart_of(&drain(&mut machine, at(3_200)));
        assert_eq!((path, attempt), (B, 2));
    }

    #[test]
    fn a_wake_without_any_path_schedules_nothing() {
        let mut machine = Machine::new(config(), [TaskSlot::EMPTY; 4]).unwrap();
        let generation = machine.on_start(at(0), None).unwrap();
        drain(&mut machine, at(0));
        machine.on_tunnel_started(at(1), generation).unwrap();
        assert!(!machine.on_wake(at(10), u64::MAX));
        assert_eq!(machine.poll_timeout(), None);
        assert_eq!(machine.stats().wakes, 1);
    }

    #[test]
    fn a_hung_restart_is_abandoned_at_its_deadline_and_retried() {
        let (mut machine, generation) = running_on_a(config());
        let _ = machine.on_path_change(at(10), B);
        let (first, _, _) = restart_of(&drain(&mut machine, at(1_010)));
        let deadline = at(1_010).saturating_add_micros(DEFAULT_RESTART_DEADLINE);
        assert_eq!(machine.poll_timeout(), Some(deadline));
        machine.handle_timeout(deadline);
        assert_eq!(
            drain(&mut machine, deadline),
            vec![LifecycleEffect::AbandonRestart {
                generation,
                restart: first
            }]
        );
        let retry = deadline.saturating_add_micros(1_000_000);
        assert_eq!(machine.poll_timeout(), Some(retry));
        let (second, path, attempt) = restart_of(&drain(&mut machine, retry));
        assert_eq!((path, attempt), (B, 2));
        assert!(second > first);
        let stats = machine.stats();
        assert_eq!((stats.restart_timeouts, stats.restarts_failed), (1, 1));
    }

    const DEFAULT_RESTART_DEADLINE: u64 = crate::lifecycle::DEFAULT_RESTART_DEADLINE_MICROS;
    const DEFAULT_RESTART_ATTEMPTS_MAX: u16 = crate::lifecycle::DEFAULT_RESTART_ATTEMPTS_MAX;

    #[test]
    fn no_path_waits_without_using_attempts() {
        let (mut machine, generation) = running_on_a(config());
        let _ = machine.on_path_change(at(10), B);
        let (first, _, _) = restart_of(&drain(&mut machine, at(1_010)));
        let _ = machine.on_path_change(at(1_100), PathFingerprint::NONE);
        assert_eq!(
            drain(&mut machine, at(2_100)),
            vec![LifecycleEffect::AbandonRestart {
                generation,
                restart: first
            }]
        );
        assert_eq!(machine.state(), LifecycleState::Reasserting);
        assert_eq!(
            machine.poll_timeout(),
            None,
            "nothing to time while no path"
        );
        // An hour without a path: still waiting, nothing cancelled.
        machine.handle_timeout(at(3_600_000));
        assert_eq!(machine.state(), LifecycleState::Reasserting);
        let _ = machine.on_path_change(at(3_600_000), C);
        let (_, path, attempt) = restart_of(&drain(&mut machine, at(3_601_000)));
        assert_eq!((path, attempt), (C, 1));
    }

    #[test]
    fn a_stop_abandons_the_restart_before_the_teardown() {
        let (mut machine, generation) = running_on_a(config());
        let _ = machine.on_path_change(at(10), B);
        let (id, _, _) = restart_of(&drain(&mut machine, at(1_010)));
        machine.on_stop(at(1_100)).unwrap();
        assert_eq!(
            drain(&mut machine, at(1_100)),
            vec![
                LifecycleEffect::AbandonRestart {
                    generation,
                    restart: id
                },
                LifecycleEffect::TearDown { generation }
            ]
        );
        assert_eq!(
            machine.on_restart_done(at(1_200), generation, id),
            Err(ReportError::StaleRestart { restart: id })
        );
        assert_eq!(
            machine.state(),
            LifecycleState::Stopping(StopPhase::TearingDown)
        );
        // Path reports while stopping schedule nothing.
        assert_eq!(machine.on_path_change(at(1_300), C), PathReport::Recorded);
        assert_eq!(
            machine.poll_timeout(),
            Some(at(1_100).saturating_add_micros(5_000_000))
        );
    }

    #[test]
    fn the_next_session_comes_up_on_the_latest_path() {
        let (mut machine, generation) = running_on_a(config());
        machine.on_stop(at(10)).unwrap();
        drain(&mut machine, at(10));
        machine.on_torn_down(at(11), generation).unwrap();
        drain(&mut machine, at(11));
        assert_eq!(machine.on_path_change(at(20), B), PathReport::Recorded);
        let next = machine.on_start(at(30), None).unwrap();
        drain(&mut machine, at(30));
        machine.on_tunnel_started(at(31), next).unwrap();
        assert_eq!(machine.path(), Some(B));
        assert_eq!(machine.on_path_change(at(40), B), PathReport::Unchanged);
    }

    #[test]
    fn a_wake_after_a_long_sleep_restarts_on_the_same_path() {
        let (mut machine, _) = running_on_a(config());
        assert!(
            !machine.on_wake(at(100), 60_000_000),
            "a minute's nap restarts nothing"
        );
        assert!(drain(&mut machine, at(5_000)).is_empty());
        let woke = at(10_000_000);
        assert!(machine.on_wake(woke, 3 * 3_600_000_000));
        let settles = woke.saturating_add_micros(DEFAULT_PATH_DEBOUNCE);
        assert_eq!(machine.poll_timeout(), Some(settles));
        let (_, path, attempt) = restart_of(&drain(&mut machine, settles));
        assert_eq!((path, attempt), (A, 1));
        let stats = machine.stats();
        assert_eq!((stats.wakes, stats.wake_restarts), (2, 1));
    }

    #[test]
    fn a_wake_during_a_restart_replaces_it() {
        let (mut machine, generation) = running_on_a(config());
        let _ = machine.on_path_change(at(10), B);
        let (first, _, _) = restart_of(&drain(&mut machine, at(1_010)));
        assert!(machine.on_wake(at(2_000), 600_000_000));
        let effects = drain(&mut machine, at(3_000));
        assert_eq!(
            effects.first(),
            Some(&LifecycleEffect::AbandonRestart {
                generation,
                restart: first
            })
        );
        assert_eq!(restart_of(&effects[1..]).1, B);
    }

    #[test]
    fn a_jump_of_hours_fires_each_restart_timer_once() {
        let (mut machine, generation) = running_on_a(config());
        let _ = machine.on_path_change(at(10), B);
        let (id, _, _) = restart_of(&drain(&mut machine, at(1_010)));
        machine
            .on_restart_failed(at(1_020), generation, id)
            .unwrap();
        // Hours later: the back-off ends once, one attempt is announced, and its deadline is
        // measured from the jump.
        let later = at(1_020).saturating_add_micros(5 * 3_600_000_000);
        let (_, path, attempt) = restart_of(&drain(&mut machine, later));
        assert_eq!((path, attempt), (B, 2));
        assert_eq!(
            machine.poll_timeout(),
            Some(later.saturating_add_micros(DEFAULT_RESTART_DEADLINE))
        );
        assert_eq!(machine.stats().restarts_failed, 1);
    }

    #[test]
    fn zero_restart_settings_are_refused() {
        for (config, error) in [
            (
                LifecycleConfig {
                    restart_deadline_micros: 0,
                    ..config()
                },
                LifecycleConfigError::ZeroRestartDeadline,
            ),
            (
                LifecycleConfig {
                    restart_attempts_max: 0,
                    ..config()
                },
                LifecycleConfigError::ZeroRestartAttempts,
            ),
            (
                LifecycleConfig {
                    restart_backoff_micros: 0,
                    ..config()
                },
                LifecycleConfigError::ZeroRestartBackoff,
            ),
            (
                LifecycleConfig {
                    restart_backoff_max_micros: 999_999,
                    ..config()
                },
                LifecycleConfigError::RestartBackoffMaxBelowInitial,
            ),
        ] {
            assert_eq!(
                Machine::new(config, [TaskSlot::EMPTY; 4]).err(),
                Some(error)
            );
        }
        // A debounce of 0 acts at once; a wake threshold of 0 never restarts.
        let (mut machine, _) = running_on_a(LifecycleConfig {
            path_debounce_micros: 0,
            wake_restart_after_micros: 0,
            ..config()
        });
        assert!(!machine.on_wake(at(10), u64::MAX));
        let _ = machine.on_path_change(at(20), B);
        // Settled within the report itself: no timer is left at the report's `now`.
        assert_eq!(machine.state(), LifecycleState::Reasserting);
        assert_eq!(machine.poll_timeout(), None);
        assert_eq!(restart_of(&drain(&mut machine, at(20))).1, B);
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let config = LifecycleConfig {
            restart_backoff_micros: 1_000,
            restart_backoff_max_micros: 5_000,
            ..config()
        };
        let backoffs: Vec<u64> = (1..=5).map(|n| backoff_micros(&config, n)).collect();
        assert_eq!(backoffs, [1_000, 2_000, 4_000, 5_000, 5_000]);
        assert_eq!(backoff_micros(&config, u16::MAX), 5_000);
    }
}
