//! Lifecycle scenarios with virtual time: a simulated provider host drives the machine through
//! stops with far more housekeeping than the deadline allows, process death right after the
//! completion, and the restart that resumes the carried-over tasks.

use std::collections::BTreeMap;

use tidegate_core::{
    DEFAULT_HOUSEKEEPING_DEADLINE_MICROS, Generation, Instant, Journal, Lifecycle, LifecycleConfig,
    LifecycleEffect, LifecycleState, ReportError, StartError, StopError, StopOutcome, StopPhase,
    TaskId, TaskSlot,
};

type Machine = Lifecycle<Box<[TaskSlot]>>;

const TEARDOWN_MICROS: u64 = 40_000;
const DEADLINE_MICROS: u64 = DEFAULT_HOUSEKEEPING_DEADLINE_MICROS;

fn machine(capacity: usize) -> Machine {
    Lifecycle::new(
        LifecycleConfig::default(),
        vec![TaskSlot::EMPTY; capacity].into_boxed_slice(),
    )
    .expect("a valid lifecycle config")
}

/// A provider host on virtual time. Each task kind takes `kind` milliseconds to run; teardown
/// takes [`TEARDOWN_MICROS`]; persisting the journal is immediate.
struct Host {
    now: Instant,
    /// The journal on "disk".
    disk: Option<Vec<u8>>,
    /// Tasks the host is running: id -> finish time.
    running: BTreeMap<TaskId, (Instant, Vec<u8>)>,
    teardown_done_at: Option<Instant>,
    /// Payloads of tasks reported done, in order.
    completed: Vec<Vec<u8>>,
    stop_completed: bool,
    cancelled_with: Option<u32>,
    discarded: usize,
}

impl Host {
    fn new(now: Instant) -> Self {
        Host {
            now,
            disk: None,
            running: BTreeMap::new(),
            teardown_done_at: None,
            completed: Vec::new(),
            stop_completed: false,
            cancelled_with: None,
            discarded: 0,
        }
    }

    /// Carry out every effect the machine has for now.
    fn drain(&mut self, machine: &mut Machine) {
        while let Some(effect) = machine.poll_effect(self.now) {
            let current = machine.generation();
            match effect {
                LifecycleEffect::StartTunnel { generation, .. } => {
                    assert_eq!(generation, current);
                    machine.on_tunnel_started(self.now, generation).unwrap();
                }
                LifecycleEffect::RunTask {
                    generation,
                    task,
                    kind,
                    payload,
                } => {
                    assert_eq!(generation, current);
                    let finish = self.now.saturating_add_micros(u64::from(kind) * 1_000);
                    self.running
                        .insert(task, (finish, payload.as_bytes().to_vec()));
                }
                LifecycleEffect::TearDown { generation } => {
                    assert_eq!(generation, current);
                    self.teardown_done_at = Some(self.now.saturating_add_micros(TEARDOWN_MICROS));
                }
                LifecycleEffect::PersistJournal { generation, len } => {
                    assert_eq!(generation, current);
                    let mut buf = vec![0u8; len];
                    assert_eq!(machine.write_journal(&mut buf), Ok(len));
                    self.disk = Some(buf);
                    machine.on_journal_persisted(self.now, generation).unwrap();
                }
                LifecycleEffect::DiscardJournal { generation } => {
                    assert_eq!(generation, current);
                    self.disk = None;
                    self.discarded += 1;
                }
                LifecycleEffect::CompleteStop { generation } => {
                    assert_eq!(generation, current);
                    self.stop_completed = true;
                    self.running.clear();
                }
                LifecycleEffect::CancelWithError {
                    generation, code, ..
                } => {
                    assert_eq!(generation, current);
                    self.cancelled_with = Some(code);
                    self.running.clear();
                }
                LifecycleEffect::RestartTunnel { .. } | LifecycleEffect::AbandonRestart { .. } => {
                    panic!("these scenarios report no path change")
                }
            }
        }
    }

    /// Advance virtual time to the next thing that happens (a task finishing, the teardown
    /// finishing, the machine's timeout), deliver it and drain. Returns false when nothing is
    /// left to happen or `until` is reached.
    fn step(&mut self, machine: &mut Machine, until: Instant) -> bool {
        let next_task = self.running.iter().map(|(_, (at, _))| *at).min();
        let next = [next_task, self.teardown_done_at, machine.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        let Some(next) = next.filter(|next| *next <= until) else {
            return false;
        };
        self.now = next;
        machine.handle_timeout(self.now);
        if self.teardown_done_at.is_some_and(|at| at <= self.now) {
            self.teardown_done_at = None;
            machine
                .on_torn_down(self.now, machine.generation())
                .unwrap();
        }
        let finished: Vec<TaskId> = self
            .running
            .iter()
            .filter(|(_, (at, _))| *at <= self.now)
            .map(|(id, _)| *id)
            .collect();
        for id in finished {
            let (_, payload) = self.running.remove(&id).unwrap();
            match machine.on_task_done(self.now, machine.generation(), id) {
                Ok(()) => self.completed.push(payload),
                Err(ReportError::TaskCarriedOver { .. }) => {}
                Err(other) => panic!("task report refused: {other}"),
            }
        }
        self.drain(machine);
        true
    }

    fn run_until(&mut self, machine: &mut Machine, until: Instant) {
        while self.step(machine, until) {}
        self.now = self.now.max(until);
        machine.handle_timeout(self.now);
        self.drain(machine);
    }
}

fn payload(index: u32) -> Vec<u8> {
    format!("cleanup-{index:03}").into_bytes()
}

/// 3 quick tasks (50 ms) and 12 slow ones (2.5 s): about 30 s of housekeeping.
fn register_housekeeping(machine: &mut Machine, now: Instant) -> Vec<Vec<u8>> {
    let mut registered = Vec::new();
    for index in 0..15u32 {
        let kind = if index < 3 { 50 } else { 2_500 };
        machine
            .register_task(now, kind, &payload(index))
            .expect("queue has room");
        registered.push(payload(index));
    }
    registered
}

#[test]
fn thirty_seconds_of_housekeeping_stop_within_deadline_and_resume_on_next_start() {
    let mut host = Host::new(Instant::from_millis(1_000));
    let mut first = machine(32);
    first.on_start(host.now, None).unwrap();
    host.drain(&mut first);
    assert_eq!(first.state(), LifecycleState::Running);
    let registered = register_housekeeping(&mut first, host.now);

    // The tunnel runs for a minute; registered housekeeping waits for the stop.
    host.run_until(&mut first, Instant::from_millis(61_000));
    assert!(host.completed.is_empty());

    let stop_requested = host.now;
    assert_eq!(first.on_stop(host.now), Ok(StopOutcome::Stopping));
    host.drain(&mut first);
    host.run_until(&mut first, Instant::from_millis(120_000));

    assert!(host.stop_completed);
    assert_eq!(first.state(), LifecycleState::Stopped);
    let latency = first.stats().last_stop_latency_micros.unwrap();
    assert!(
        latency <= TEARDOWN_MICROS + DEADLINE_MICROS,
        "stop took {latency} us"
    );
    assert_eq!(latency, TEARDOWN_MICROS + DEADLINE_MICROS);
    assert!(host.now.micros_since(stop_requested) >= latency);
    // The three quick tasks finished inside the deadline; the rest are on disk.
    assert_eq!(host.completed, registered[..3].to_vec());
    assert_eq!(first.stats().tasks_done, 3);
    assert_eq!(first.stats().tasks_carried_over, 12);
    assert_eq!(first.stats().journals_written, 1);

    // The process is killed right after the completion: the engine is gone, the disk is not.
    let first_generation = first.generation();
    drop(first);
    let disk = host
        .disk
        .clone()
        .expect("journal persisted before completion");
    let journal = Journal::decode(&disk).unwrap();
    assert_eq!(journal.generation(), first_generation.0);
    let journaled: Vec<Vec<u8>> = journal
        .tasks()
        .map(|task| task.payload.as_bytes().to_vec())
        .collect();
    assert_eq!(journaled, registered[3..].to_vec());

    // Next launch: a fresh engine gets the journal back and runs the tasks while the tunnel is up.
    let mut second = machine(32);
    host.completed.clear();
    host.stop_completed = false;
    let generation = second.on_start(host.now, Some(&disk)).unwrap();
    assert!(generation > first_generation);
    host.drain(&mut second);
    assert_eq!(second.state(), LifecycleState::Running);
    assert_eq!(second.stats().tasks_resumed, 12);
    host.run_until(&mut second, host.now.saturating_add_micros(31_000_000));
    assert_eq!(host.completed, registered[3..].to_vec());
    assert_eq!(host.discarded, 1);
    assert!(host.disk.is_none());
    assert_eq!(second.tasks_queued(), 0);
    assert_eq!(second.state(), LifecycleState::Running);
}

#[test]
fn housekeeping_that_fits_the_deadline_completes_without_a_journal() {
    let mut host = Host::new(Instant::ZERO);
    let mut machine = machine(8);
    machine.on_start(host.now, None).unwrap();
    host.drain(&mut machine);
    for index in 0..4 {
        machine
            .register_task(host.now, 50, &payload(index))
            .unwrap();
    }
    machine.on_stop(host.now).unwrap();
    host.drain(&mut machine);
    host.run_until(&mut machine, Instant::from_millis(10_000));
    assert!(host.stop_completed);
    assert!(host.disk.is_none());
    assert_eq!(host.completed.len(), 4);
    // Teardown plus four sequential 50 ms tasks.
    assert_eq!(
        machine.stats().last_stop_latency_micros,
        Some(TEARDOWN_MICROS + 200_000)
    );
    assert_eq!(machine.stats().tasks_carried_over, 0);
}

#[test]
fn stop_during_start_tears_down_and_completes() {
    let mut host = Host::new(Instant::ZERO);
    let mut machine = machine(4);
    let generation = machine.on_start(host.now, None).unwrap();
    // Take the StartTunnel effect but do not report the tunnel up yet.
    assert!(matches!(
        machine.poll_effect(host.now),
        Some(LifecycleEffect::StartTunnel { .. })
    ));
    assert_eq!(machine.on_stop(host.now), Ok(StopOutcome::StartAbandoned));
    assert_eq!(
        machine.state(),
        LifecycleState::Stopping(StopPhase::TearingDown)
    );
    assert_eq!(
        machine.on_tunnel_started(host.now, generation),
        Err(ReportError::Unexpected {
            state: LifecycleState::Stopping(StopPhase::TearingDown)
        })
    );
    host.drain(&mut machine);
    host.run_until(&mut machine, Instant::from_millis(1_000));
    assert!(host.stop_completed);
    assert_eq!(machine.state(), LifecycleState::Stopped);
    assert_eq!(
        machine.stats().last_stop_latency_micros,
        Some(TEARDOWN_MICROS)
    );
}

#[test]
fn cancel_during_stop_is_refused_and_the_stop_ends_as_a_stop() {
    let mut host = Host::new(Instant::ZERO);
    let mut machine = machine(4);
    machine.on_start(host.now, None).unwrap();
    host.drain(&mut machine);
    machine.register_task(host.now, 100, b"slow").unwrap();
    machine.on_stop(host.now).unwrap();
    host.drain(&mut machine);
    host.run_until(&mut machine, Instant::from_millis(60));
    assert_eq!(
        machine.state(),
        LifecycleState::Stopping(StopPhase::Housekeeping)
    );
    assert_eq!(
        machine.on_cancel(host.now, 9),
        Err(StopError::AlreadyStopping)
    );
    assert_eq!(
        machine.state(),
        LifecycleState::Stopping(StopPhase::Housekeeping)
    );
    host.run_until(&mut machine, Instant::from_millis(1_000));
    assert!(host.stop_completed);
    assert_eq!(host.cancelled_with, None);

    // A cancel from a running session ends with the error after teardown and housekeeping.
    machine.on_start(host.now, None).unwrap();
    host.drain(&mut machine);
    machine.register_task(host.now, 10, b"quick").unwrap();
    assert_eq!(machine.on_cancel(host.now, 77), Ok(()));
    host.drain(&mut machine);
    host.run_until(&mut machine, Instant::from_millis(2_000));
    assert_eq!(host.cancelled_with, Some(77));
    assert_eq!(
        host.completed.last().map(Vec::as_slice),
        Some(&b"quick"[..])
    );
}

#[test]
fn duplicate_and_stale_reports_are_refused_and_change_nothing() {
    let mut host = Host::new(Instant::ZERO);
    let mut machine = machine(4);
    let old = machine.on_start(host.now, None).unwrap();
    host.drain(&mut machine);
    machine.register_task(host.now, 1_000, b"slow").unwrap();
    machine.on_stop(host.now).unwrap();
    host.drain(&mut machine);
    host.run_until(&mut machine, Instant::from_millis(1_000));
    assert!(host.stop_completed);
    let disk = host.disk.clone().unwrap();

    // The slow task of the old session finishes after the restart: its report is stale.
    let new = machine.on_start(host.now, Some(&disk)).unwrap();
    host.drain(&mut machine);
    assert_eq!(machine.state(), LifecycleState::Running);
    let resumed = *host.running.keys().next().unwrap();
    let queued = machine.tasks_queued();
    assert_eq!(
        machine.on_task_done(host.now, old, TaskId(1)),
        Err(ReportError::StaleGeneration {
            reported: old,
            current: new
        })
    );
    assert_eq!(
        machine.on_tunnel_started(host.now, old),
        Err(ReportError::StaleGeneration {
            reported: old,
            current: new
        })
    );
    assert_eq!(machine.tasks_queued(), queued);
    assert_eq!(machine.state(), LifecycleState::Running);

    // A duplicate report of a resumed task is refused the second time.
    machine.on_task_done(host.now, new, resumed).unwrap();
    host.running.remove(&resumed);
    assert_eq!(
        machine.on_task_done(host.now, new, resumed),
        Err(ReportError::TaskAlreadyEnded { task: resumed })
    );
    assert_eq!(
        machine.on_tunnel_started(host.now, new),
        Err(ReportError::Unexpected {
            state: LifecycleState::Running
        })
    );
    assert_eq!(machine.stats().stale_reports, 2);
    assert_eq!(machine.stats().reports_refused, 4);
    assert_eq!(machine.stats().tasks_done, 1);
    assert_eq!(machine.generation(), new);
    assert_eq!(new, Generation(old.0 + 1));
}

#[test]
fn start_while_stopping_is_refused_until_the_stop_completes() {
    let mut host = Host::new(Instant::ZERO);
    let mut machine = machine(4);
    machine.on_start(host.now, None).unwrap();
    host.drain(&mut machine);
    machine.on_stop(host.now).unwrap();
    host.drain(&mut machine);
    assert_eq!(
        machine.on_start(host.now, None),
        Err(StartError::StopInProgress)
    );
    host.run_until(&mut machine, Instant::from_millis(100));
    assert!(machine.on_start(host.now, None).is_ok());
}
