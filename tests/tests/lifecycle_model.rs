//! Differential property test of the lifecycle machine against a plain model.
//!
//! Random sequences of host events (start, tunnel up, stop, cancel, teardown, task registration
//! and reports, journal persistence, time passing, stale reports, process death) drive both the
//! machine and a model built from `BTreeSet`s. After every event the two must agree on the state
//! and on each call's result, and the invariant the machine exists for must hold: every task the
//! host registered ends exactly once (done, failed) or is carried in the persisted journal;
//! none is lost, none runs after it ended. Every phase that waits on the host has a deadline
//! (start, teardown, housekeeping, persisting the journal), and the model applies each from the
//! docs: a start past its deadline is cancelled (`StartTimedOut`), a teardown past its deadline
//! gives way to housekeeping, and a persist past its deadline completes the stop (here the
//! host's write lands late, so the journal still reaches the disk). Every stop therefore ends
//! within the sum of its deadlines, which the test checks too.
//!
//! While the tunnel is up the host also reports path changes and wakes, and restart attempts
//! done or failed (or never: an attempt may hang). The model follows the restart rules from the
//! docs: a new path acts once it held for the debounce, one attempt at a time for the latest
//! path, an attempt for a path gone abandoned before the next is announced, a failure retried
//! after a back-off doubling per failure, the session cancelled when one path's attempts are
//! used up, an attempt past its deadline abandoned and counted failed, no path means waiting.
//! It checks every effect against that, the state (`Reasserting` exactly when a restart is owed,
//! running, backing off or waiting), the timer the machine asks for, and that reports for
//! abandoned attempts are refused and change nothing.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use tidegate_core::{
    CancelCause, Generation, Instant, Journal, Lifecycle, LifecycleConfig, LifecycleEffect,
    LifecycleState, PathFingerprint, PathReport, ReportError, RestartId, StartError, StopError,
    StopPhase, TaskId, TaskRegisterError, TaskSlot,
};

type Machine = Lifecycle<Vec<TaskSlot>>;

#[derive(Clone, Debug)]
enum Event {
    Start,
    TunnelStarted,
    Stop,
    Cancel(u32),
    TornDown,
    Register,
    Done(u8),
    Failed(u8),
    Persisted,
    Advance(u32),
    StaleReport(u8),
    Restart,
    Path(u8),
    Wake(u8),
    RestartDone(u8),
    RestartFailed(u8),
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        2 => Just(Event::Start),
        2 => Just(Event::TunnelStarted),
        1 => Just(Event::Stop),
        1 => any::<u32>().prop_map(Event::Cancel),
        2 => Just(Event::TornDown),
        4 => Just(Event::Register),
        4 => any::<u8>().prop_map(Event::Done),
        1 => any::<u8>().prop_map(Event::Failed),
        2 => Just(Event::Persisted),
        3 => (0u32..200_000).prop_map(Event::Advance),
        1 => any::<u8>().prop_map(Event::StaleReport),
        1 => Just(Event::Restart),
        3 => any::<u8>().prop_map(Event::Path),
        1 => any::<u8>().prop_map(Event::Wake),
        2 => any::<u8>().prop_map(Event::RestartDone),
        2 => any::<u8>().prop_map(Event::RestartFailed),
    ]
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Idle,
    Starting {
        deadline: u64,
    },
    Running,
    Stopping {
        requested_at: u64,
        teardown_deadline: u64,
        torn_down_deadline: Option<u64>,
        sealed: bool,
        persist_deadline: u64,
        persisted: bool,
        persist_timed_out: bool,
        cancel: Option<(u32, CancelCause)>,
    },
    Stopped,
}

impl Phase {
    /// A stop requested at `now`.
    fn stopping(now: u64, config: &LifecycleConfig, cancel: Option<(u32, CancelCause)>) -> Phase {
        Phase::Stopping {
            requested_at: now,
            teardown_deadline: now + config.teardown_deadline_micros,
            torn_down_deadline: None,
            sealed: false,
            persist_deadline: 0,
            persisted: false,
            persist_timed_out: false,
            cancel,
        }
    }
}

/// Where the restarts of the running tunnel stand, from the docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Re {
    /// Not reasserting.
    Idle,
    /// Reasserting with nothing to restart on (no usable path, or a back-off that ended while a
    /// newer path was settling).
    Waiting,
    /// A `RestartTunnel` is owed for the path.
    Due(u64),
    /// The host runs attempt `id` (number `attempt` on `path`) until `deadline`.
    InFlight {
        id: RestartId,
        path: u64,
        attempt: u16,
        deadline: u64,
    },
    /// The next attempt on `path` is due at `until`.
    BackingOff { path: u64, until: u64 },
}

/// The restart half of the model.
struct Restarts {
    latest: Option<u64>,
    established: Option<u64>,
    settles_at: Option<u64>,
    wake_due: bool,
    state: Re,
    /// Failed attempts on `retry_path`.
    failures: u16,
    /// The path whose failures `failures` counts.
    retry_path: Option<u64>,
    /// The `AbandonRestart` the host is owed.
    abandon_owed: Option<RestartId>,
    /// The id the next `RestartTunnel` carries.
    next_id: u64,
}

impl Restarts {
    fn new() -> Self {
        Restarts {
            latest: None,
            established: None,
            settles_at: None,
            wake_due: false,
            state: Re::Idle,
            failures: 0,
            retry_path: None,
            abandon_owed: None,
            next_id: 1,
        }
    }

    fn abandon(&mut self, id: RestartId) {
        assert!(self.abandon_owed.is_none(), "two abandons owed at once");
        self.abandon_owed = Some(id);
        self.state = Re::Idle;
    }

    /// The stop: the attempt in flight is abandoned, nothing else runs.
    fn end_session(&mut self) {
        if let Re::InFlight { id, .. } = self.state {
            self.abandon(id);
        }
        self.state = Re::Idle;
        self.settles_at = None;
        self.wake_due = false;
    }

    /// The next timer while running.
    fn timeout(&self) -> Option<u64> {
        let restart = match self.state {
            Re::InFlight { deadline, .. } => Some(deadline),
            Re::BackingOff { until, .. } => Some(until),
            _ => None,
        };
        [self.settles_at, restart].into_iter().flatten().min()
    }

    /// An attempt on `path` failed at `now`: true when the session must be cancelled.
    fn fail(&mut self, now: u64, path: u64, config: &LifecycleConfig) -> bool {
        self.failures += 1;
        self.retry_path = Some(path);
        if self.failures >= config.restart_attempts_max {
            self.state = Re::Idle;
            return true;
        }
        let backoff = (config.restart_backoff_micros << (self.failures - 1).min(40))
            .min(config.restart_backoff_max_micros);
        self.state = Re::BackingOff {
            path,
            until: now + backoff,
        };
        false
    }

    /// The timers `now` reached, in order: debounce, attempt deadline, back-off. True when the
    /// session must be cancelled.
    fn on_time(&mut self, now: u64, config: &LifecycleConfig) -> bool {
        if self.settles_at.is_some_and(|at| now >= at) {
            self.settles_at = None;
            let wake = std::mem::take(&mut self.wake_due);
            if let Some(target) = self.latest {
                let reasserting = self.state != Re::Idle;
                if reasserting || Some(target) != self.established || wake {
                    let keep = matches!(
                        self.state,
                        Re::InFlight { path, .. } | Re::BackingOff { path, .. } if path == target
                    ) && !wake;
                    if !keep {
                        if let Re::InFlight { id, .. } = self.state {
                            self.abandon(id);
                        }
                        // The count follows the path that failed, not each settle.
                        if self.retry_path != Some(target) {
                            self.failures = 0;
                            self.retry_path = None;
                        }
                        self.state = if target == 0 {
                            Re::Waiting
                        } else {
                            Re::Due(target)
                        };
                    }
                }
            }
        }
        if let Re::InFlight {
            id, path, deadline, ..
        } = self.state
            && now >= deadline
        {
            self.abandon(id);
            return self.fail(now, path, config);
        }
        if let Re::BackingOff { path, until } = self.state
            && now >= until
        {
            self.state = if self.settles_at.is_some() {
                Re::Waiting
            } else {
                Re::Due(path)
            };
        }
        false
    }
}

/// The model of host and machine together. A task's identity is its payload (a `u32` counter),
/// which survives the journal while task ids do not.
struct Model {
    config: LifecycleConfig,
    capacity: usize,
    in_flight_max: usize,
    now: u64,
    phase: Phase,
    /// Logical tasks registered or resumed and not yet ended.
    unfinished: BTreeSet<u32>,
    /// Logical tasks that ended (done or failed); each may enter only once.
    ended: BTreeSet<u32>,
    /// Logical tasks that came from the journal at the last start.
    carried: BTreeSet<u32>,
    /// Tasks handed out by `RunTask` in this session and not reported.
    running: BTreeMap<TaskId, u32>,
    /// The persisted journal (as logical ids) and its bytes.
    disk: Option<(Vec<u8>, Vec<u32>)>,
    /// The journal written at `PersistJournal`, persisted at the `Persisted` event.
    written: Option<(Vec<u8>, Vec<u32>)>,
    next_logical: u32,
    /// The longest single step of time so far: a deadline is seen at the first input after it.
    max_step: u64,
    restarts: Restarts,
}

impl Model {
    fn expected_state(&self) -> LifecycleState {
        match self.phase {
            Phase::Idle => LifecycleState::Idle,
            Phase::Starting { .. } => LifecycleState::Starting,
            Phase::Running if self.restarts.state != Re::Idle => LifecycleState::Reasserting,
            Phase::Running => LifecycleState::Running,
            Phase::Stopped => LifecycleState::Stopped,
            Phase::Stopping {
                torn_down_deadline,
                sealed,
                persisted,
                persist_timed_out,
                ..
            } => LifecycleState::Stopping(if torn_down_deadline.is_none() {
                StopPhase::TearingDown
            } else if sealed && !persisted && !persist_timed_out {
                StopPhase::PersistingJournal
            } else if sealed || self.unfinished.is_empty() {
                StopPhase::Completing
            } else {
                StopPhase::Housekeeping
            }),
        }
    }

    /// Apply the deadline `now` reached, as every machine input does first: one step, since
    /// each step's next deadline lies after the `now` that set it.
    fn apply_deadline(&mut self) {
        let now = self.now;
        let config = self.config;
        let nothing_left = self.unfinished.is_empty();
        match &mut self.phase {
            Phase::Starting { deadline } if now >= *deadline => {
                self.phase = Phase::stopping(now, &config, Some((0, CancelCause::StartTimedOut)));
            }
            Phase::Running => {
                let exhausted = self.restarts.on_time(now, &config);
                if exhausted {
                    self.cancel_restarts_exhausted();
                }
            }
            Phase::Stopping {
                teardown_deadline,
                torn_down_deadline: torn_down @ None,
                ..
            } if now >= *teardown_deadline => {
                *torn_down = Some(now + config.housekeeping_deadline_micros);
            }
            Phase::Stopping {
                torn_down_deadline: Some(deadline),
                sealed: sealed @ false,
                persist_deadline,
                ..
            } if now >= *deadline && !nothing_left => {
                *sealed = true;
                *persist_deadline = now + config.persist_deadline_micros;
            }
            Phase::Stopping {
                sealed: true,
                persisted: false,
                persist_timed_out: timed_out @ false,
                persist_deadline,
                ..
            } if now >= *persist_deadline => {
                *timed_out = true;
                // The host's write lands late: the journal reaches the disk unconfirmed.
                self.disk = self.written.take();
            }
            _ => {}
        }
    }

    fn cancel_restarts_exhausted(&mut self) {
        self.restarts.end_session();
        self.phase = Phase::stopping(
            self.now,
            &self.config,
            Some((0, CancelCause::RestartsExhausted)),
        );
    }

    fn sealed(&self) -> bool {
        matches!(self.phase, Phase::Stopping { sealed: true, .. })
    }
}

fn logical(payload: &[u8]) -> u32 {
    u32::from_le_bytes(payload.try_into().expect("4-byte payload"))
}

fn journal_logicals(bytes: &[u8]) -> Vec<u32> {
    Journal::decode(bytes)
        .expect("the machine writes valid journals")
        .tasks()
        .map(|task| logical(task.payload.as_bytes()))
        .collect()
}

fn drain(machine: &mut Machine, model: &mut Model) -> Result<(), TestCaseError> {
    let now = Instant::from_micros(model.now);
    while let Some(effect) = machine.poll_effect(now) {
        let generation = machine.generation();
        match effect {
            LifecycleEffect::StartTunnel {
                generation: g,
                carried_over_tasks,
            } => {
                prop_assert_eq!(g, generation);
                let starting = matches!(model.phase, Phase::Starting { .. });
                prop_assert!(starting, "StartTunnel in {:?}", model.phase);
                prop_assert_eq!(usize::from(carried_over_tasks), model.carried.len());
            }
            LifecycleEffect::RunTask {
                generation: g,
                task,
                payload,
                ..
            } => {
                prop_assert_eq!(g, generation);
                let id = logical(payload.as_bytes());
                prop_assert!(model.unfinished.contains(&id), "ended task {} runs", id);
                prop_assert!(!model.running.values().any(|r| *r == id));
                // First in, first out among the tasks eligible now.
                let running_now = model.phase == Phase::Running;
                let oldest = model
                    .unfinished
                    .iter()
                    .filter(|t| !model.running.values().any(|r| r == *t))
                    .find(|t| !running_now || model.carried.contains(t))
                    .copied();
                prop_assert_eq!(Some(id), oldest);
                let may_run = matches!(
                    model.phase,
                    Phase::Running
                        | Phase::Stopping {
                            torn_down_deadline: Some(_),
                            sealed: false,
                            ..
                        }
                );
                prop_assert!(may_run, "RunTask in {:?}", model.phase);
                model.running.insert(task, id);
                prop_assert!(model.running.len() <= model.in_flight_max);
            }
            LifecycleEffect::TearDown { generation: g } => {
                prop_assert_eq!(g, generation);
                let tearing_down = matches!(
                    model.phase,
                    Phase::Stopping {
                        torn_down_deadline: None,
                        ..
                    }
                );
                prop_assert!(tearing_down);
                prop_assert_eq!(
                    model.restarts.abandon_owed,
                    None,
                    "abandon after the teardown"
                );
            }
            LifecycleEffect::AbandonRestart {
                generation: g,
                restart,
            } => {
                prop_assert_eq!(g, generation);
                prop_assert_eq!(model.restarts.abandon_owed.take(), Some(restart));
            }
            LifecycleEffect::RestartTunnel {
                generation: g,
                restart,
                path,
                attempt,
            } => {
                prop_assert_eq!(g, generation);
                prop_assert_eq!(model.phase, Phase::Running);
                let restarts = &mut model.restarts;
                prop_assert_eq!(restarts.abandon_owed, None, "one attempt at a time");
                prop_assert_eq!(restarts.state, Re::Due(path.0));
                prop_assert_eq!(attempt, restarts.failures + 1);
                prop_assert_eq!(restart, RestartId(restarts.next_id));
                restarts.next_id += 1;
                restarts.state = Re::InFlight {
                    id: restart,
                    path: path.0,
                    attempt,
                    deadline: model.now + model.config.restart_deadline_micros,
                };
            }
            LifecycleEffect::PersistJournal { generation: g, len } => {
                prop_assert_eq!(g, generation);
                prop_assert!(model.sealed());
                let mut buf = vec![0u8; len];
                prop_assert_eq!(machine.write_journal(&mut buf), Ok(len));
                let ids = journal_logicals(&buf);
                let expected: Vec<u32> = model.unfinished.iter().copied().collect();
                prop_assert_eq!(&ids, &expected);
                model.written = Some((buf, ids));
            }
            LifecycleEffect::DiscardJournal { generation: g } => {
                prop_assert_eq!(g, generation);
                let (_, ids) = model.disk.take().expect("a journal to discard");
                for id in ids {
                    prop_assert!(model.ended.contains(&id), "discarded unfinished {}", id);
                }
            }
            LifecycleEffect::CompleteStop { generation: g }
            | LifecycleEffect::CancelWithError { generation: g, .. } => {
                prop_assert_eq!(g, generation);
                let Phase::Stopping {
                    cancel,
                    requested_at,
                    ..
                } = model.phase
                else {
                    return Err(TestCaseError::fail("completion outside a stop"));
                };
                let code = match effect {
                    LifecycleEffect::CancelWithError { code, cause, .. } => Some((code, cause)),
                    _ => None,
                };
                prop_assert_eq!(code, cancel);
                // Every phase ends: a stop takes at most its deadlines, whatever the host does.
                let config = model.config;
                let bound = config.teardown_deadline_micros
                    + config.housekeeping_deadline_micros
                    + config.persist_deadline_micros;
                let latency = machine.stats().last_stop_latency_micros;
                prop_assert_eq!(latency, Some(model.now - requested_at));
                // Each of the three deadlines is seen at the first input after it, one step late
                // at most, and the next phase's deadline counts from there.
                prop_assert!(
                    model.now - requested_at <= bound + 3 * model.max_step,
                    "a stop took {} us, deadlines {}",
                    model.now - requested_at,
                    bound
                );
                // Nothing lost: what did not end is exactly what the disk holds.
                let on_disk: BTreeSet<u32> = model
                    .disk
                    .as_ref()
                    .map(|(_, ids)| ids.iter().copied().collect())
                    .unwrap_or_default();
                prop_assert_eq!(&on_disk, &model.unfinished);
                model.phase = Phase::Stopped;
                model.running.clear();
            }
        }
    }
    Ok(())
}

fn check_agreement(machine: &Machine, model: &Model) -> Result<(), TestCaseError> {
    prop_assert_eq!(machine.state(), model.expected_state());
    prop_assert_eq!(
        model.restarts.abandon_owed,
        None,
        "an abandon left undrained"
    );
    if model.phase == Phase::Running {
        prop_assert_eq!(
            machine.poll_timeout().map(|t| t.as_micros()),
            model.restarts.timeout()
        );
        // Liveness: reasserting on a usable path always has a timer or an attempt running.
        if model.restarts.latest.is_some_and(|path| path != 0)
            && machine.state() == LifecycleState::Reasserting
        {
            prop_assert!(
                machine.poll_timeout().is_some(),
                "reasserting forever: {:?}",
                model.restarts.state
            );
        }
    }
    match model.phase {
        Phase::Idle | Phase::Stopped => prop_assert_eq!(machine.tasks_queued(), 0),
        _ => prop_assert_eq!(machine.tasks_queued(), model.unfinished.len()),
    }
    prop_assert!(model.unfinished.is_disjoint(&model.ended));
    // Liveness: after draining, no task that may run now is left waiting while a slot is free.
    let housekeeping = matches!(
        model.phase,
        Phase::Stopping {
            torn_down_deadline: Some(_),
            sealed: false,
            ..
        }
    );
    if (model.phase == Phase::Running || housekeeping) && model.running.len() < model.in_flight_max
    {
        let waiting = model
            .unfinished
            .iter()
            .filter(|t| !model.running.values().any(|r| r == *t))
            .any(|t| housekeeping || model.carried.contains(t));
        prop_assert!(!waiting, "a runnable task waits with a free slot");
    }
    Ok(())
}

fn apply(
    machine: &mut Machine,
    model: &mut Model,
    event: Event,
    config: LifecycleConfig,
) -> Result<(), TestCaseError> {
    let now = Instant::from_micros(model.now);
    model.apply_deadline();
    let generation = machine.generation();
    match event {
        Event::Start => {
            let journal = model.disk.as_ref().map(|(bytes, _)| bytes.clone());
            let result = machine.on_start(now, journal.as_deref());
            match model.phase {
                Phase::Idle | Phase::Stopped => {
                    prop_assert!(result.is_ok(), "{:?}", result);
                    let carried: BTreeSet<u32> = model
                        .disk
                        .as_ref()
                        .map(|(_, ids)| ids.iter().copied().collect())
                        .unwrap_or_default();
                    prop_assert_eq!(&carried, &model.unfinished);
                    model.carried = carried;
                    model.restarts.established = model.restarts.latest;
                    model.phase = Phase::Starting {
                        deadline: model.now + config.start_deadline_micros,
                    };
                }
                Phase::Starting { .. } | Phase::Running => {
                    prop_assert_eq!(result, Err(StartError::AlreadyActive))
                }
                Phase::Stopping { .. } => {
                    prop_assert_eq!(result, Err(StartError::StopInProgress))
                }
            }
        }
        Event::TunnelStarted => {
            let result = machine.on_tunnel_started(now, generation);
            if matches!(model.phase, Phase::Starting { .. }) {
                prop_assert_eq!(result, Ok(()));
                model.phase = Phase::Running;
            } else {
                let refused_as_unexpected = matches!(result, Err(ReportError::Unexpected { .. }));
                prop_assert!(refused_as_unexpected, "{:?}", result);
            }
        }
        Event::Stop | Event::Cancel(_) => {
            let code = match event {
                Event::Cancel(code) => Some(code),
                _ => None,
            };
            let result = match code {
                Some(code) => machine.on_cancel(now, code),
                None => machine.on_stop(now).map(|_| ()),
            };
            match model.phase {
                Phase::Starting { .. } | Phase::Running => {
                    prop_assert_eq!(result, Ok(()));
                    model.restarts.end_session();
                    let cancel = code.map(|code| (code, CancelCause::Host));
                    model.phase = Phase::stopping(model.now, &config, cancel);
                }
                Phase::Stopping { .. } => prop_assert_eq!(result, Err(StopError::AlreadyStopping)),
                Phase::Idle | Phase::Stopped => prop_assert_eq!(result, Err(StopError::NotActive)),
            }
        }
        Event::TornDown => {
            let result = machine.on_torn_down(now, generation);
            if let Phase::Stopping {
                torn_down_deadline: deadline @ None,
                ..
            } = &mut model.phase
            {
                prop_assert_eq!(result, Ok(()));
                *deadline = Some(model.now + config.housekeeping_deadline_micros);
            } else {
                let refused = matches!(result, Err(ReportError::Unexpected { .. }));
                prop_assert!(refused, "{:?}", result);
            }
        }
        Event::Register => {
            let id = model.next_logical;
            let result = machine.register_task(now, 1, &id.to_le_bytes());
            let over = match model.phase {
                Phase::Stopping {
                    torn_down_deadline: Some(_),
                    sealed,
                    ..
                } => sealed || model.unfinished.is_empty(),
                _ => false,
            };
            match model.phase {
                Phase::Idle | Phase::Stopped => {
                    prop_assert_eq!(result, Err(TaskRegisterError::NoSession))
                }
                _ if over => prop_assert_eq!(result, Err(TaskRegisterError::HousekeepingOver)),
                _ if model.unfinished.len() == model.capacity => prop_assert_eq!(
                    result,
                    Err(TaskRegisterError::QueueFull {
                        capacity: model.capacity
                    })
                ),
                _ => {
                    prop_assert!(result.is_ok());
                    model.unfinished.insert(id);
                    model.next_logical += 1;
                }
            }
        }
        Event::Done(pick) | Event::Failed(pick) => {
            let done = matches!(event, Event::Done(_));
            // Mostly a task the host is running; sometimes any id, to exercise refusals.
            let task = if pick % 4 != 0 && !model.running.is_empty() {
                *model
                    .running
                    .keys()
                    .nth(usize::from(pick) % model.running.len())
                    .unwrap()
            } else {
                TaskId(u64::from(pick % 16))
            };
            let result = if done {
                machine.on_task_done(now, generation, task)
            } else {
                machine.on_task_failed(now, generation, task)
            };
            match model.running.get(&task).copied() {
                Some(id) if !model.sealed() => {
                    prop_assert_eq!(result, Ok(()));
                    model.running.remove(&task);
                    model.unfinished.remove(&id);
                    prop_assert!(model.ended.insert(id), "task {} ended twice", id);
                }
                Some(_) => prop_assert_eq!(result, Err(ReportError::TaskCarriedOver { task })),
                None => prop_assert!(result.is_err(), "{:?}", result),
            }
        }
        Event::Persisted => {
            let result = machine.on_journal_persisted(now, generation);
            if let Phase::Stopping {
                sealed: true,
                persisted,
                persist_timed_out: false,
                ..
            } = &mut model.phase
                && !*persisted
            {
                prop_assert_eq!(result, Ok(()));
                *persisted = true;
                model.disk = model.written.take();
                prop_assert!(model.disk.is_some());
            } else {
                let refused = matches!(result, Err(ReportError::Unexpected { .. }));
                prop_assert!(refused, "{:?}", result);
            }
        }
        Event::Advance(micros) => {
            model.now += u64::from(micros);
            model.max_step = model.max_step.max(u64::from(micros));
            machine.handle_timeout(Instant::from_micros(model.now));
            model.apply_deadline();
        }
        Event::StaleReport(pick) => {
            let stale = Generation(generation.0.wrapping_sub(1 + u64::from(pick % 3)));
            let queued = machine.tasks_queued();
            let state = machine.state();
            let result = machine.on_task_done(now, stale, TaskId(u64::from(pick)));
            // From the docs: 0 and generations above the current one were never issued.
            let expected = if stale.0 == 0 || stale.0 > generation.0 {
                ReportError::UnknownGeneration {
                    reported: stale,
                    current: generation,
                }
            } else {
                ReportError::StaleGeneration {
                    reported: stale,
                    current: generation,
                }
            };
            prop_assert_eq!(result, Err(expected));
            prop_assert_eq!(machine.tasks_queued(), queued);
            prop_assert_eq!(machine.state(), state);
        }
        Event::Restart => {
            // The process dies once the stop completed (or before any start): the engine goes,
            // the disk stays.
            if matches!(model.phase, Phase::Idle | Phase::Stopped) {
                *machine = Lifecycle::new(config, vec![TaskSlot::EMPTY; model.capacity]).unwrap();
                model.phase = Phase::Idle;
                model.running.clear();
                model.restarts = Restarts::new();
            }
        }
        Event::Path(pick) => {
            let path = u64::from(pick % 4);
            let result = machine.on_path_change(now, PathFingerprint(path));
            let restarts = &mut model.restarts;
            if restarts.latest == Some(path) {
                prop_assert_eq!(result, PathReport::Unchanged);
            } else if model.phase == Phase::Running && restarts.latest.is_some() {
                let settles_at = model.now + config.path_debounce_micros;
                prop_assert_eq!(
                    result,
                    PathReport::Scheduled {
                        settles_at: Instant::from_micros(settles_at)
                    }
                );
                restarts.latest = Some(path);
                restarts.settles_at = Some(settles_at);
                // A debounce of 0 acts at this very input's polls.
                if model.restarts.on_time(model.now, &config) {
                    model.cancel_restarts_exhausted();
                }
            } else {
                prop_assert_eq!(result, PathReport::Recorded);
                restarts.latest = Some(path);
                restarts.established = Some(path);
            }
        }
        Event::Wake(pick) => {
            let slept = u64::from(pick) * 1_000_000;
            let scheduled = machine.on_wake(now, slept);
            let expected = model.phase == Phase::Running
                && config.wake_restart_after_micros != 0
                && slept >= config.wake_restart_after_micros
                && model.restarts.latest.is_some();
            prop_assert_eq!(scheduled, expected);
            if expected {
                model.restarts.wake_due = true;
                model.restarts.settles_at = Some(model.now + config.path_debounce_micros);
                if model.restarts.on_time(model.now, &config) {
                    model.cancel_restarts_exhausted();
                }
            }
        }
        Event::RestartDone(pick) | Event::RestartFailed(pick) => {
            let done = matches!(event, Event::RestartDone(_));
            let in_flight = match model.restarts.state {
                Re::InFlight { id, path, .. } => Some((id, path)),
                _ => None,
            };
            let restart = match in_flight {
                Some((id, _)) if pick % 4 != 0 => id,
                _ => RestartId(u64::from(pick % 8)),
            };
            let stats = *machine.stats();
            let state = machine.state();
            let result = if done {
                machine.on_restart_done(now, generation, restart)
            } else {
                machine.on_restart_failed(now, generation, restart)
            };
            match in_flight {
                Some((id, path)) if id == restart => {
                    prop_assert_eq!(result, Ok(()));
                    if done {
                        let restarts = &mut model.restarts;
                        restarts.established = Some(path);
                        restarts.failures = 0;
                        restarts.retry_path = None;
                        restarts.state = Re::Idle;
                    } else if model.restarts.fail(model.now, path, &config) {
                        model.cancel_restarts_exhausted();
                    }
                }
                _ => {
                    let expected = if restart.0 >= 1 && restart.0 < model.restarts.next_id {
                        ReportError::StaleRestart { restart }
                    } else {
                        ReportError::UnknownRestart { restart }
                    };
                    prop_assert_eq!(result, Err(expected));
                    // A refused report changes nothing but the refusal counters.
                    prop_assert_eq!(machine.state(), state);
                    let after = machine.stats();
                    prop_assert_eq!(after.restarts_done, stats.restarts_done);
                    prop_assert_eq!(after.restarts_failed, stats.restarts_failed);
                    prop_assert_eq!(after.reports_refused, stats.reports_refused + 1);
                }
            }
        }
    }
    drain(machine, model)?;
    check_agreement(machine, model)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_task_ends_exactly_once_or_is_carried_in_the_journal(
        capacity in 1usize..7,
        deadline_millis in 1u64..400,
        phase_deadlines_millis in [1u64..1_000, 1u64..400, 1u64..400],
        in_flight_max in 1u16..4,
        restart_millis in [0u64..500, 1u64..1_000, 1u64..300, 0u64..2_000],
        restart_attempts_max in 1u16..5,
        wake_restart_after_secs in 0u64..200,
        events in proptest::collection::vec(event(), 1..120),
    ) {
        let [start, teardown, persist] = phase_deadlines_millis;
        let [debounce, restart_deadline, backoff, backoff_extra] = restart_millis;
        let config = LifecycleConfig {
            housekeeping_deadline_micros: deadline_millis * 1_000,
            tasks_in_flight_max: in_flight_max,
            start_deadline_micros: start * 1_000,
            teardown_deadline_micros: teardown * 1_000,
            persist_deadline_micros: persist * 1_000,
            path_debounce_micros: debounce * 1_000,
            restart_deadline_micros: restart_deadline * 1_000,
            restart_attempts_max,
            restart_backoff_micros: backoff * 1_000,
            restart_backoff_max_micros: (backoff + backoff_extra) * 1_000,
            wake_restart_after_micros: wake_restart_after_secs * 1_000_000,
        };
        let mut machine: Machine = Lifecycle::new(config, vec![TaskSlot::EMPTY; capacity]).unwrap();
        let mut model = Model {
            config,
            max_step: 0,
            capacity,
            in_flight_max: usize::from(in_flight_max),
            now: 0,
            phase: Phase::Idle,
            unfinished: BTreeSet::new(),
            ended: BTreeSet::new(),
            carried: BTreeSet::new(),
            running: BTreeMap::new(),
            disk: None,
            written: None,
            next_logical: 0,
            restarts: Restarts::new(),
        };
        for event in events {
            apply(&mut machine, &mut model, event, config)?;
        }
        // Every task the host ever registered either ended once or is still owed: in the queue
        // of the live session, or on disk once the session stopped.
        let all: BTreeSet<u32> = (0..model.next_logical).collect();
        let accounted: BTreeSet<u32> = model.ended.union(&model.unfinished).copied().collect();
        prop_assert_eq!(all, accounted);
        if matches!(model.phase, Phase::Idle | Phase::Stopped) {
            let on_disk: BTreeSet<u32> = model
                .disk
                .as_ref()
                .map(|(_, ids)| ids.iter().copied().collect())
                .unwrap_or_default();
            prop_assert_eq!(on_disk, model.unfinished.clone());
        }
        let stats = machine.stats();
        prop_assert!(stats.tasks_done + stats.tasks_failed <= stats.tasks_run);
    }
}
