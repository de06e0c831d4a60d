//! `Lifecycle` event sequences: starts with the last journal (intact or corrupted), stops and
//! cancels at any moment, late and forged reports, task registrations, deadlines and a host
//! clock running backwards. A host model drives it and checks:
//!
//! - every accepted stop or cancel, and every start cancelled at its deadline, ends with exactly
//!   one `CompleteStop` or `CancelWithError` (with the cancel's code and cause), and effects
//!   always carry the current generation;
//! - every phase that waits on the host has a deadline (start, teardown, housekeeping, persist;
//!   each drawn from the input): after every call none is left at or before the latest `now`,
//!   and a refused call changes nothing unless a deadline its `now` reached moved the machine on;
//! - generations only grow; a refused call changes no state, generation or queue;
//! - tasks: each `RunTask` names a task that is queued, at most `tasks_in_flight_max` run at
//!   once, each task ends at most once, and at-least-once holds: the journal sealed at the
//!   deadline holds exactly the tasks that have not ended (their kinds and payloads), it
//!   decodes, and handing it to the next start carries them all over;
//! - restarts (path reports, wakes, attempts reported done, failed, forged or never): at most one
//!   attempt runs at a time (a `RestartTunnel` comes only when the host has none running, and an
//!   attempt is abandoned before the teardown), each is for a usable path the host reported, ids
//!   only grow, attempt numbers stay within `restart_attempts_max`, only the running
//!   attempt's report is taken and an abandoned one's is refused as stale, a session cancelled for
//!   exhausted restarts ends with that cause, and a session reasserting on a usable path always
//!   has a timer armed (it never waits forever).
#![no_main]

use std::collections::HashMap;

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use tidegate_core::{
    CancelCause, Generation, Instant, Journal, Lifecycle, LifecycleConfig, LifecycleEffect,
    LifecycleState, PathFingerprint, PathReport, ReportError, RestartId, StartError, StopError,
    StopPhase, TaskId, TaskRegisterError, TaskSlot, WriteJournalError,
};
use tidegate_fuzz::{HostClock, MAX_OPS, Tick};

type Machine = Lifecycle<Vec<TaskSlot>>;
type Task = (u32, Vec<u8>);

#[derive(Debug, Arbitrary)]
enum Gen {
    Current,
    Previous,
    Forged(u64),
}

#[derive(Debug, Arbitrary)]
enum JournalChoice {
    None,
    Persisted,
    /// The persisted journal with one byte changed.
    Corrupted(u16, u8),
    Garbage(Vec<u8>),
}

#[derive(Debug, Arbitrary)]
enum Op {
    Start(JournalChoice, Tick),
    Stop(Tick),
    Cancel(u32, Tick),
    TunnelStarted(Gen, Tick),
    TornDown(Gen, Tick),
    Register {
        kind: u8,
        payload: u8,
        tick: Tick,
    },
    TaskEnded {
        task: u8,
        forged: Option<u64>,
        done: bool,
        generation: Gen,
        tick: Tick,
    },
    JournalPersisted(Gen, Tick),
    WriteJournal {
        short_by: u8,
    },
    Poll(Tick),
    Timeout(Tick),
    Path(u8, Tick),
    /// A wake after this many seconds of sleep.
    Wake(u16, Tick),
    RestartEnded {
        forged: Option<u64>,
        done: bool,
        generation: Gen,
        tick: Tick,
    },
}

#[derive(Default)]
struct Host {
    persisted: Option<Vec<u8>>,
    /// Tasks queued in this session and not ended: their kinds and payloads.
    outstanding: Vec<Task>,
    /// Every task id seen in this session (registered or run), with its task.
    ids: HashMap<u64, Task>,
    running: Vec<u64>,
    ended: Vec<u64>,
    stops_accepted: u64,
    stops_ended: u64,
    cancel_code: Option<u32>,
    /// Why the stop in progress will end cancelled (with `cancel_code`).
    cancel_cause: Option<CancelCause>,
    /// Starts the machine cancelled at their deadline, as its stats count them.
    start_timeouts: u64,
    generation: u64,
    previous_generation: u64,
    journal_due: Option<usize>,
    carried: usize,
    sealed_journal: Option<Vec<u8>>,
    /// The latest path reported.
    path: Option<u64>,
    /// The paths reported since the process started.
    paths: Vec<u64>,
    /// The restart attempt the host runs (announced, not reported or abandoned).
    attempt: Option<u64>,
    /// The largest restart id announced.
    last_restart: u64,
    /// `AbandonRestart` effects received.
    abandons: u64,
    /// Sessions the machine cancelled because every restart failed, as its stats count them.
    restarts_exhausted: u64,
}

fuzz_target!(|data: &[u8]| {
    let mut input = Unstructured::new(data);
    let (Ok(capacity), Ok(in_flight), Ok(deadline_ms), Ok(phase_ms)) = (
        input.int_in_range(1usize..=12),
        input.int_in_range(0u16..=3),
        input.int_in_range(0u64..=300),
        <[u16; 3]>::arbitrary(&mut input),
    ) else {
        return;
    };
    let (Ok(restart_ms), Ok(attempts), Ok(wake_after_s)) = (
        <[u16; 4]>::arbitrary(&mut input),
        input.int_in_range(0u16..=5),
        input.int_in_range(0u64..=300),
    ) else {
        return;
    };
    // Debounce (0 acts at once), attempt deadline, back-off and the cap's excess over it.
    let [
        debounce_ms,
        restart_deadline_ms,
        backoff_ms,
        backoff_extra_ms,
    ] = restart_ms.map(u64::from);
    // The start, teardown and persist deadlines: 0 (refused) to about 65 s.
    let [start_ms, teardown_ms, persist_ms] = phase_ms.map(u64::from);
    let config = LifecycleConfig {
        housekeeping_deadline_micros: deadline_ms * 1_000,
        tasks_in_flight_max: in_flight,
        start_deadline_micros: start_ms * 1_000,
        teardown_deadline_micros: teardown_ms * 1_000,
        persist_deadline_micros: persist_ms * 1_000,
        path_debounce_micros: debounce_ms * 1_000,
        restart_deadline_micros: restart_deadline_ms * 1_000,
        restart_attempts_max: attempts,
        restart_backoff_micros: backoff_ms * 1_000,
        restart_backoff_max_micros: (backoff_ms + backoff_extra_ms) * 1_000,
        wake_restart_after_micros: wake_after_s * 1_000_000,
    };
    let phases_valid = start_ms > 0
        && teardown_ms > 0
        && persist_ms > 0
        && restart_deadline_ms > 0
        && attempts > 0
        && backoff_ms > 0;
    let max_running = usize::from(in_flight);
    let mut machine = match Machine::new(config, vec![TaskSlot::EMPTY; capacity]) {
        Ok(machine) => machine,
        Err(error) => {
            // Refused exactly when a value can never work, nothing clamped.
            assert!(
                in_flight == 0 || deadline_ms == 0 || !phases_valid,
                "{error:?} for a valid config"
            );
            return;
        }
    };
    assert!(
        in_flight > 0 && deadline_ms > 0 && phases_valid,
        "a config that cannot work was accepted"
    );
    let mut clock = HostClock::new(5_000_000);
    // The latest `now` the machine has been given.
    let mut seen = 0u64;
    let mut host = Host::default();
    for _ in 0..MAX_OPS {
        let Ok(op) = Op::arbitrary(&mut input) else {
            break;
        };
        let deadline = machine.poll_timeout().map(Instant::as_micros);
        let before = (
            machine.state(),
            machine.generation(),
            machine.tasks_queued(),
        );
        let mut refused = false;
        // Every call but `write_journal` passes the clock's `now` to the machine.
        let passes_now = !matches!(op, Op::WriteJournal { .. });
        match op {
            Op::Start(choice, tick) => {
                let now = Instant::from_micros(clock.tick(tick));
                let journal = match choice {
                    JournalChoice::None => None,
                    JournalChoice::Persisted => host.persisted.clone(),
                    JournalChoice::Corrupted(at, xor) => host.persisted.clone().map(|mut j| {
                        let at = usize::from(at) % j.len();
                        j[at] ^= xor.max(1);
                        j
                    }),
                    JournalChoice::Garbage(bytes) => Some(bytes),
                };
                let decoded = journal.as_deref().map(Journal::decode);
                match machine.on_start(now, journal.as_deref()) {
                    Ok(generation) => {
                        assert!(matches!(
                            before.0,
                            LifecycleState::Idle | LifecycleState::Stopped
                        ));
                        assert!(generation.0 > host.generation, "generations only grow");
                        host.previous_generation = host.generation;
                        host.generation = generation.0;
                        host.outstanding.clear();
                        host.ids.clear();
                        host.running.clear();
                        host.ended.clear();
                        host.cancel_code = None;
                        host.cancel_cause = None;
                        host.sealed_journal = None;
                        if let Some(decoded) = decoded {
                            let journal = decoded.expect("an accepted journal decodes");
                            host.outstanding.extend(
                                journal
                                    .tasks()
                                    .map(|t| (t.kind, t.payload.as_bytes().to_vec())),
                            );
                        }
                        host.carried = host.outstanding.len();
                    }
                    Err(StartError::Journal(error)) => {
                        assert_eq!(decoded, Some(Err(error)));
                        refused = true;
                    }
                    Err(StartError::AlreadyActive) => {
                        assert!(matches!(
                            before.0,
                            LifecycleState::Starting
                                | LifecycleState::Running
                                | LifecycleState::Reasserting
                        ));
                        refused = true;
                    }
                    Err(StartError::StopInProgress) => {
                        // Or a deadline passed and the machine cancelled the session first (the
                        // start's, or the last restart attempt's).
                        let timed_out = matches!(
                            before.0,
                            LifecycleState::Starting
                                | LifecycleState::Running
                                | LifecycleState::Reasserting
                        ) && passed(deadline, &clock);
                        assert!(matches!(before.0, LifecycleState::Stopping(_)) || timed_out);
                        refused = true;
                    }
                    Err(StartError::JournalTooLarge { tasks, capacity: c }) => {
                        assert!(tasks > c && c == capacity);
                        refused = true;
                    }
                    Err(error) => panic!("unexpected start error {error:?}"),
                }
            }
            Op::Stop(tick) | Op::Cancel(_, tick) => {
                let now = Instant::from_micros(clock.tick(tick));
                let result = match op {
                    Op::Cancel(code, _) => machine.on_cancel(now, code).map(|()| Some(code)),
                    _ => machine.on_stop(now).map(|_| None),
                };
                match result {
                    Ok(code) => {
                        assert!(matches!(
                            before.0,
                            LifecycleState::Starting
                                | LifecycleState::Running
                                | LifecycleState::Reasserting
                        ));
                        host.stops_accepted += 1;
                        host.cancel_code = code;
                        host.cancel_cause = code.map(|_| CancelCause::Host);
                    }
                    Err(StopError::AlreadyStopping) => {
                        // Or a deadline passed and the machine cancelled the session first (the
                        // start's, or the last restart attempt's).
                        let timed_out = matches!(
                            before.0,
                            LifecycleState::Starting
                                | LifecycleState::Running
                                | LifecycleState::Reasserting
                        ) && passed(deadline, &clock);
                        assert!(matches!(before.0, LifecycleState::Stopping(_)) || timed_out);
                        refused = true;
                    }
                    Err(StopError::NotActive) => {
                        assert!(matches!(
                            before.0,
                            LifecycleState::Idle | LifecycleState::Stopped
                        ));
                        refused = true;
                    }
                    Err(other) => panic!("an undocumented refusal: {other:?}"),
                }
            }
            Op::TunnelStarted(generation, tick) => {
                let now = Instant::from_micros(clock.tick(tick));
                let generation = pick(&host, generation);
                let result = machine.on_tunnel_started(now, generation);
                refused = check_report(
                    &host,
                    &before.0,
                    passed(deadline, &clock),
                    generation,
                    result,
                    |state| *state == LifecycleState::Starting,
                );
            }
            Op::TornDown(generation, tick) => {
                let now = Instant::from_micros(clock.tick(tick));
                let generation = pick(&host, generation);
                let result = machine.on_torn_down(now, generation);
                refused = check_report(
                    &host,
                    &before.0,
                    passed(deadline, &clock),
                    generation,
                    result,
                    |state| *state == LifecycleState::Stopping(StopPhase::TearingDown),
                );
            }
            Op::Register {
                kind,
                payload,
                tick,
            } => {
                let now = Instant::from_micros(clock.tick(tick));
                let payload = vec![kind; usize::from(payload % 40)];
                let kind = u32::from(kind % 4);
                match machine.register_task(now, kind, &payload) {
                    Ok(TaskId(id)) => {
                        assert!(payload.len() <= tidegate_core::TASK_PAYLOAD_MAX);
                        assert!(host.ids.insert(id, (kind, payload.clone())).is_none());
                        host.outstanding.push((kind, payload));
                    }
                    Err(TaskRegisterError::PayloadTooLong { len }) => {
                        assert!(len == payload.len() && len > tidegate_core::TASK_PAYLOAD_MAX);
                        refused = true;
                    }
                    Err(TaskRegisterError::QueueFull { capacity: c }) => {
                        assert_eq!((c, before.2), (capacity, capacity));
                        refused = true;
                    }
                    Err(TaskRegisterError::NoSession) => {
                        assert!(matches!(
                            before.0,
                            LifecycleState::Idle | LifecycleState::Stopped
                        ));
                        refused = true;
                    }
                    Err(TaskRegisterError::HousekeepingOver) => {
                        assert!(matches!(
                            machine.state(),
                            LifecycleState::Stopping(
                                StopPhase::PersistingJournal | StopPhase::Completing
                            )
                        ));
                        refused = true;
                    }
                    Err(other) => panic!("an undocumented refusal: {other:?}"),
                }
            }
            Op::TaskEnded {
                task,
                forged,
                done,
                generation,
                tick,
            } => {
                let now = Instant::from_micros(clock.tick(tick));
                let generation = pick(&host, generation);
                let id = match forged {
                    Some(raw) => raw,
                    None if host.running.is_empty() => u64::from(task),
                    None => host.running[usize::from(task) % host.running.len()],
                };
                let result = if done {
                    machine.on_task_done(now, generation, TaskId(id))
                } else {
                    machine.on_task_failed(now, generation, TaskId(id))
                };
                match result {
                    Ok(()) => {
                        assert_eq!(generation.0, host.generation);
                        let position = host.running.iter().position(|&r| r == id);
                        let position = position.expect("only a running task can end");
                        host.running.remove(position);
                        assert!(!host.ended.contains(&id), "a task ends once");
                        host.ended.push(id);
                        let task = &host.ids[&id];
                        let at = host.outstanding.iter().position(|t| t == task).unwrap();
                        host.outstanding.remove(at);
                    }
                    Err(error) if refused_for_generation(&host, generation, &error) => {
                        refused = true;
                    }
                    Err(error) => {
                        let taken = matches!(
                            machine.state(),
                            LifecycleState::Starting
                                | LifecycleState::Running
                                | LifecycleState::Reasserting
                                | LifecycleState::Stopping(
                                    StopPhase::TearingDown | StopPhase::Housekeeping
                                )
                        );
                        if taken && generation.0 == host.generation {
                            assert!(
                                !host.running.contains(&id),
                                "a running task's report is taken, not {error:?}"
                            );
                        }
                        refused = true;
                    }
                }
            }
            Op::JournalPersisted(generation, tick) => {
                let now = Instant::from_micros(clock.tick(tick));
                let generation = pick(&host, generation);
                let result = machine.on_journal_persisted(now, generation);
                refused = check_report(
                    &host,
                    &before.0,
                    passed(deadline, &clock),
                    generation,
                    result,
                    |state| *state == LifecycleState::Stopping(StopPhase::PersistingJournal),
                );
                // A careless host may report it persisted a journal it never wrote; the
                // machine cannot tell, and the host then simply has no new journal.
                if !refused && let Some(sealed) = host.sealed_journal.take() {
                    host.persisted = Some(sealed);
                }
            }
            Op::WriteJournal { short_by } => {
                let want = machine.journal_len();
                let len = want.unwrap_or(64).saturating_sub(usize::from(short_by % 3));
                let mut buf = vec![0xa5u8; len + 8];
                let result = machine.write_journal(&mut buf[..len]);
                match (result, want) {
                    (Ok(written), Some(want)) => {
                        assert_eq!(written, want);
                        let journal = Journal::decode(&buf[..written]).expect("it decodes");
                        assert_eq!(journal.generation(), host.generation);
                        let mut tasks: Vec<Task> = journal
                            .tasks()
                            .map(|t| (t.kind, t.payload.as_bytes().to_vec()))
                            .collect();
                        let mut outstanding = host.outstanding.clone();
                        tasks.sort();
                        outstanding.sort();
                        assert_eq!(tasks, outstanding, "the journal holds every task not ended");
                        host.sealed_journal = Some(buf[..written].to_vec());
                    }
                    (Err(WriteJournalError::BufferTooSmall { required }), Some(want)) => {
                        assert!(required == want && len < want);
                    }
                    (Err(WriteJournalError::NoJournal), None) => {}
                    (result, want) => panic!("write_journal gave {result:?} with {want:?}"),
                }
                assert!(
                    buf[len..].iter().all(|&b| b == 0xa5),
                    "nothing past the buffer"
                );
            }
            Op::Poll(tick) => {
                let now = clock.tick(tick);
                while let Some(effect) = machine.poll_effect(Instant::from_micros(now)) {
                    apply(&mut host, &machine, effect, max_running, &config);
                }
                // Never reasserting forever: with a usable path, a timer is always armed.
                if machine.state() == LifecycleState::Reasserting
                    && host.path.is_some_and(|path| path != 0)
                {
                    assert!(
                        machine.poll_timeout().is_some(),
                        "reasserting with no timer"
                    );
                }
            }
            Op::Timeout(tick) => {
                let now = clock.tick(tick);
                machine.handle_timeout(Instant::from_micros(now));
            }
            Op::Path(path, tick) => {
                let now = Instant::from_micros(clock.tick(tick));
                let path = u64::from(path % 5);
                let report = machine.on_path_change(now, PathFingerprint(path));
                let changed = host.path != Some(path);
                match report {
                    PathReport::Unchanged => assert!(!changed, "a new path reported unchanged"),
                    PathReport::Recorded => assert!(changed),
                    PathReport::Scheduled { settles_at } => {
                        assert!(changed);
                        assert_eq!(
                            settles_at.as_micros(),
                            seen.max(clock.now) + config.path_debounce_micros
                        );
                        assert!(matches!(
                            before.0,
                            LifecycleState::Running | LifecycleState::Reasserting
                        ));
                    }
                }
                host.path = Some(path);
                host.paths.push(path);
            }
            Op::Wake(slept_s, tick) => {
                let now = Instant::from_micros(clock.tick(tick));
                let slept = u64::from(slept_s) * 1_000_000;
                let scheduled = machine.on_wake(now, slept);
                if scheduled {
                    assert!(wake_after_s > 0 && slept >= config.wake_restart_after_micros);
                }
            }
            Op::RestartEnded {
                forged,
                done,
                generation,
                tick,
            } => {
                let now = Instant::from_micros(clock.tick(tick));
                let generation = pick(&host, generation);
                let id = forged.or(host.attempt).unwrap_or(host.last_restart);
                let result = if done {
                    machine.on_restart_done(now, generation, RestartId(id))
                } else {
                    machine.on_restart_failed(now, generation, RestartId(id))
                };
                match result {
                    Ok(()) => {
                        assert_eq!(generation.0, host.generation);
                        assert_eq!(host.attempt, Some(id), "only the running attempt's report");
                        host.attempt = None;
                    }
                    Err(ReportError::StaleRestart { restart }) => {
                        assert_eq!(restart, RestartId(id));
                        assert!(1 <= id && id <= host.last_restart);
                        // The running attempt is stale only once its deadline passed or its
                        // abandon is owed (a stop, a path that settled) but not yet polled.
                        let abandon_owed = machine.stats().restarts_abandoned > host.abandons;
                        assert!(
                            host.attempt != Some(id) || passed(deadline, &clock) || abandon_owed
                        );
                        refused = true;
                    }
                    Err(ReportError::UnknownRestart { restart }) => {
                        assert_eq!(restart, RestartId(id));
                        assert!(id == 0 || id > host.last_restart);
                        refused = true;
                    }
                    Err(error) if refused_for_generation(&host, generation, &error) => {
                        refused = true;
                    }
                    Err(error) => panic!("unexpected restart report error {error:?}"),
                }
            }
        }
        // A session cancelled because its restarts were used up is a stop the host did not ask
        // for, like a start past its deadline.
        let restarts_exhausted = machine.stats().restarts_exhausted;
        if restarts_exhausted > host.restarts_exhausted {
            assert_eq!(restarts_exhausted, host.restarts_exhausted + 1);
            assert!(matches!(
                before.0,
                LifecycleState::Running | LifecycleState::Reasserting
            ));
            host.restarts_exhausted = restarts_exhausted;
            host.stops_accepted += 1;
            host.cancel_code = Some(0);
            host.cancel_cause = Some(CancelCause::RestartsExhausted);
        }
        // A start the machine cancelled at its deadline is a stop the host did not ask for.
        let start_timeouts = machine.stats().start_timeouts;
        if start_timeouts > host.start_timeouts {
            assert_eq!(
                start_timeouts,
                host.start_timeouts + 1,
                "one deadline per call"
            );
            assert_eq!(before.0, LifecycleState::Starting);
            assert!(passed(deadline, &clock), "cancelled before its deadline");
            host.start_timeouts = start_timeouts;
            host.stops_accepted += 1;
            host.cancel_code = Some(0);
            host.cancel_cause = Some(CancelCause::StartTimedOut);
        }
        if refused {
            let after = (
                machine.state(),
                machine.generation(),
                machine.tasks_queued(),
            );
            // A refused report may still apply a deadline that `now` reached.
            if !passed(deadline, &clock) {
                assert_eq!(after, before, "a refused call changes nothing");
            }
        }
        assert!(machine.tasks_queued() <= capacity);
        assert_eq!(machine.generation().0, host.generation);
        // No phase outlives its deadline: each call that passed a `now` applied any deadline
        // up to the latest `now` the machine has seen (and a new deadline lies after it).
        if passes_now {
            seen = seen.max(clock.now);
        }
        if let Some(next) = machine.poll_timeout() {
            assert!(
                next.as_micros() > seen,
                "{:?} still waits on a deadline at {} us, now {} us",
                machine.state(),
                next.as_micros(),
                seen
            );
        }
        if matches!(machine.state(), LifecycleState::Stopping(_)) {
            assert_eq!(host.stops_accepted, host.stops_ended + 1);
        } else {
            assert_eq!(
                host.stops_accepted, host.stops_ended,
                "each stop ends exactly once"
            );
        }
        let stats = machine.stats();
        assert!(stats.max_stop_latency_micros <= clock.span());
    }
});

/// Whether the deadline `deadline` (read before the call) is at or before the engine's clock
/// now.
fn passed(deadline: Option<u64>, clock: &HostClock) -> bool {
    deadline.is_some_and(|deadline| clock.latest >= deadline)
}

fn pick(host: &Host, generation: Gen) -> Generation {
    Generation(match generation {
        Gen::Current => host.generation,
        Gen::Previous => host.previous_generation,
        Gen::Forged(g) => g,
    })
}

/// Whether `error` refused a report for its generation, checked against the host's view: a
/// stale generation is an earlier one, an unknown one was never issued (0 or later).
fn refused_for_generation(host: &Host, generation: Generation, error: &ReportError) -> bool {
    let (reported, current, stale) = match *error {
        ReportError::StaleGeneration { reported, current } => (reported, current, true),
        ReportError::UnknownGeneration { reported, current } => (reported, current, false),
        _ => return false,
    };
    assert_eq!(
        (reported, current),
        (generation, Generation(host.generation))
    );
    if stale {
        assert!(0 < generation.0 && generation.0 < host.generation);
    } else {
        assert!(generation.0 == 0 || generation.0 > host.generation);
    }
    true
}

/// A report accepted only in the state `expected` accepts and for the current generation.
fn check_report(
    host: &Host,
    before: &LifecycleState,
    deadline_passed: bool,
    generation: Generation,
    result: Result<(), ReportError>,
    expected: impl Fn(&LifecycleState) -> bool,
) -> bool {
    match result {
        Ok(()) => {
            assert_eq!(generation.0, host.generation);
            // Every input applies a deadline its `now` reached before anything else: one step.
            use LifecycleState::{Reasserting, Running, Starting, Stopping};
            use StopPhase::{Completing, Housekeeping, PersistingJournal, TearingDown};
            let next: &[LifecycleState] = match before {
                // A start past its deadline, or the last restart attempt past its own.
                Starting | Running | Reasserting => &[Stopping(TearingDown)],
                Stopping(TearingDown) => &[Stopping(Housekeeping), Stopping(Completing)],
                Stopping(Housekeeping) => &[Stopping(PersistingJournal), Stopping(Completing)],
                Stopping(PersistingJournal) => &[Stopping(Completing)],
                _ => &[],
            };
            let deadline_applied = deadline_passed && next.iter().any(&expected);
            assert!(
                expected(before) || deadline_applied,
                "accepted in {before:?}"
            );
            false
        }
        Err(error) if refused_for_generation(host, generation, &error) => true,
        Err(ReportError::Unexpected { .. }) => {
            assert_eq!(generation.0, host.generation);
            true
        }
        Err(error) => panic!("unexpected report error {error:?}"),
    }
}

fn apply(
    host: &mut Host,
    machine: &Machine,
    effect: LifecycleEffect,
    max_running: usize,
    config: &LifecycleConfig,
) {
    let generation = match effect {
        LifecycleEffect::StartTunnel {
            generation,
            carried_over_tasks,
        } => {
            assert_eq!(usize::from(carried_over_tasks), host.carried);
            generation
        }
        LifecycleEffect::RunTask {
            generation,
            task,
            kind,
            payload,
        } => {
            let run: Task = (kind, payload.as_bytes().to_vec());
            match host.ids.get(&task.0) {
                Some(known) => assert_eq!(known, &run, "a task runs with what it was given"),
                None => {
                    assert!(host.outstanding.contains(&run), "a carried-over task");
                    host.ids.insert(task.0, run);
                }
            }
            assert!(!host.running.contains(&task.0) && !host.ended.contains(&task.0));
            host.running.push(task.0);
            assert!(host.running.len() <= max_running, "tasks_in_flight_max");
            generation
        }
        LifecycleEffect::TearDown { generation } => {
            assert_eq!(
                host.attempt, None,
                "an attempt is abandoned before the teardown"
            );
            generation
        }
        LifecycleEffect::RestartTunnel {
            generation,
            restart,
            path,
            attempt,
        } => {
            assert_eq!(host.attempt, None, "one restart at a time");
            assert!(restart.0 > host.last_restart, "restart ids only grow");
            // The latest path that held for the debounce: a report still settling does not
            // hold back an attempt already owed.
            assert!(
                host.paths.contains(&path.0),
                "a restart for a path never reported"
            );
            assert_ne!(path, PathFingerprint::NONE, "no restart without a path");
            assert!((1..=config.restart_attempts_max).contains(&attempt));
            assert_eq!(machine.state(), LifecycleState::Reasserting);
            host.attempt = Some(restart.0);
            host.last_restart = restart.0;
            generation
        }
        LifecycleEffect::AbandonRestart {
            generation,
            restart,
        } => {
            assert_eq!(
                host.attempt,
                Some(restart.0),
                "only the running attempt is abandoned"
            );
            host.attempt = None;
            host.abandons += 1;
            generation
        }
        LifecycleEffect::PersistJournal { generation, len } => {
            assert_eq!(machine.journal_len(), Some(len));
            assert!(
                !host.outstanding.is_empty(),
                "a journal only for unfinished tasks"
            );
            host.journal_due = Some(len);
            generation
        }
        LifecycleEffect::DiscardJournal { generation } => {
            host.persisted = None;
            generation
        }
        LifecycleEffect::CompleteStop { generation } => {
            assert_eq!(host.cancel_code, None);
            host.stops_ended += 1;
            host.running.clear();
            generation
        }
        LifecycleEffect::CancelWithError {
            generation,
            code,
            cause,
        } => {
            assert_eq!(host.cancel_code, Some(code));
            assert_eq!(host.cancel_cause, Some(cause));
            host.stops_ended += 1;
            host.running.clear();
            generation
        }
    };
    assert_eq!(
        generation.0, host.generation,
        "effects carry the current generation"
    );
}
