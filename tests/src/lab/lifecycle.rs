//! Stop and restart scenario (seed 001): a packet tunnel provider is stopped with about 30 s of
//! housekeeping queued (3 tasks of 50 ms, 12 of 2.5 s), and the user starts it again at once.
//! And a stop whose teardown never completes (`hung-teardown`, partout-io/tunnelkit #272: the
//! network side never reports it stopped).
//!
//! Apple's order is tear down, housekeeping, then the stop completion; the user's restart waits
//! for the completion, and the process may be killed the moment it is called. The simulated
//! platform kills it [`KILL_AFTER_COMPLETION_US`] after the completion, the worst case the
//! contract allows.

use std::collections::{BTreeMap, BTreeSet};

use tidegate_core::{
    DEFAULT_HOUSEKEEPING_DEADLINE_MICROS, DEFAULT_TEARDOWN_DEADLINE_MICROS, Instant, Lifecycle,
    LifecycleConfig, LifecycleEffect, ReportError, TaskId, TaskSlot,
};

use super::{Host, Row};

const ID: &str = "slow-stop-restart";
const SCENARIO: &str = "stop with 30 s of housekeeping, then an immediate restart";
/// Tearing the tunnel down takes 40 ms.
pub const STOP_TEARDOWN_US: u64 = 40_000;
/// The platform kills the process this long after the stop completion: at once.
pub const KILL_AFTER_COMPLETION_US: u64 = 0;
/// How long each housekeeping task takes: 3 quick ones, then 12 slow ones.
const TASK_US: [u64; 15] = {
    let mut tasks = [2_500_000; 15];
    tasks[0] = 50_000;
    tasks[1] = 50_000;
    tasks[2] = 50_000;
    tasks
};

/// Two naive hosts (housekeeping before the completion, as Apple's order demands; or the
/// completion first, housekeeping after) and a host driven by [`Lifecycle`].
pub(super) fn slow_stop_then_restart() -> [Row; 3] {
    [
        naive_housekeeping_first(),
        naive_completion_first(),
        tidegate(),
    ]
}

const HUNG_ID: &str = "hung-teardown";
const HUNG_SCENARIO: &str = "a stop whose teardown never completes";
/// How long the hung-teardown run lasts after the stop request: two minutes.
const HUNG_RUN_US: u64 = 120_000_000;

/// A naive host that waits for the teardown before anything else, and one driven by
/// [`Lifecycle`], whose teardown deadline gives way.
pub(super) fn hung_teardown() -> [Row; 2] {
    let mut naive = Row::new(HUNG_ID, HUNG_SCENARIO, "001", Host::Naive);
    naive.stop_latency_seconds = None;
    naive.tasks_lost = Some(3);
    naive.outcome = format!(
        "the stop waits for the teardown: not complete {} s later, and the user's restart \
         waits with it",
        HUNG_RUN_US / 1_000_000
    );

    let mut row = Row::new(HUNG_ID, HUNG_SCENARIO, "001", Host::Tidegate);
    let mut host = Provider::new(Instant::from_millis(1_000));
    host.teardown_hangs = true;
    let mut machine = machine();
    machine
        .on_start(host.now, None)
        .expect("a new machine starts");
    host.drain(&mut machine);
    let registered: BTreeSet<Vec<u8>> = (0..3)
        .map(|index| format!("flush-{index}").into_bytes())
        .collect();
    for payload in &registered {
        // Three quick tasks of 50 ms (a task of kind k takes k ms).
        machine
            .register_task(host.now, 50, payload)
            .expect("the queue has room");
    }
    host.run_until(&mut machine, Instant::from_millis(61_000));
    let stop_requested = host.now;
    machine.on_stop(host.now).expect("a running session stops");
    host.drain(&mut machine);
    let end = stop_requested.saturating_add_micros(HUNG_RUN_US);
    // Bounded: a deadline that fired without moving the machine on would repeat forever.
    for _ in 0..10_000 {
        if host.completed_stop_at.is_some() || !host.step_until(&mut machine, Some(end)) {
            break;
        }
    }
    let stats = machine.stats();
    let lost = registered.difference(&host.completed).count() as u64;
    row.stop_latency_seconds = stats.last_stop_latency_micros.map(|us| us as f64 / 1e6);
    row.tasks_lost = Some(lost);
    row.outcome = format!(
        "teardown never reported: housekeeping began at the {} s teardown deadline ({} \
         timeout), the stop completed with {lost} tasks lost",
        DEFAULT_TEARDOWN_DEADLINE_MICROS / 1_000_000,
        stats.teardown_timeouts
    );
    [naive, row]
}

fn naive_row(variant: &'static str) -> Row {
    let mut row = Row::new(ID, SCENARIO, "001", Host::Naive);
    row.variant = Some(variant);
    row
}

/// Tear down, run every task, then complete: nothing is lost, and the restart waits for all
/// of it.
fn naive_housekeeping_first() -> Row {
    let mut row = naive_row("housekeeping first");
    let mut now = STOP_TEARDOWN_US;
    let mut done = 0u64;
    for task in TASK_US {
        now += task;
        done += 1;
    }
    row.stop_latency_seconds = Some(now as f64 / 1e6);
    row.tasks_lost = Some(TASK_US.len() as u64 - done);
    row.outcome = format!(
        "restart waits for all housekeeping; {} tasks lost",
        TASK_US.len() as u64 - done
    );
    row
}

/// Tear down, complete, then run the tasks: the restart is quick, and the process is killed
/// with the housekeeping still to do.
fn naive_completion_first() -> Row {
    let mut row = naive_row("completes first");
    let completed_at = STOP_TEARDOWN_US;
    let killed_at = completed_at + KILL_AFTER_COMPLETION_US;
    let mut now = completed_at;
    let mut done = 0u64;
    for task in TASK_US {
        if now + task > killed_at {
            break;
        }
        now += task;
        done += 1;
    }
    let lost = TASK_US.len() as u64 - done;
    row.stop_latency_seconds = Some(completed_at as f64 / 1e6);
    row.tasks_lost = Some(lost);
    row.outcome = format!(
        "killed at the completion: {lost} of {} tasks lost",
        TASK_US.len()
    );
    row
}

fn tidegate() -> Row {
    let mut row = Row::new(ID, SCENARIO, "001", Host::Tidegate);
    let mut host = Provider::new(Instant::from_millis(1_000));
    let mut first = machine();
    first
        .on_start(host.now, None)
        .expect("a new machine starts");
    host.drain(&mut first);
    for (index, &task) in TASK_US.iter().enumerate() {
        let kind = u32::try_from(task / 1_000).expect("task time fits");
        first
            .register_task(host.now, kind, format!("cleanup-{index:02}").as_bytes())
            .expect("the queue has room");
    }
    let registered: BTreeSet<Vec<u8>> = (0..TASK_US.len())
        .map(|index| format!("cleanup-{index:02}").into_bytes())
        .collect();
    // The tunnel runs for a minute, then the stop.
    host.run_until(&mut first, Instant::from_millis(61_000));
    let stop_requested = host.now;
    first.on_stop(host.now).expect("a running session stops");
    host.drain(&mut first);
    while host.completed_stop_at.is_none() && host.step(&mut first) {}
    let completed_at = host
        .completed_stop_at
        .expect("the stop completes within the deadline");
    let latency = first
        .stats()
        .last_stop_latency_micros
        .unwrap_or_else(|| completed_at.micros_since(stop_requested));
    let carried_over = first.stats().tasks_carried_over;
    // Killed right after the completion: the engine and every task in progress are gone; the
    // journal on disk is not.
    host.now = completed_at.saturating_add_micros(KILL_AFTER_COMPLETION_US);
    drop(first);
    host.running.clear();
    let journal = host.disk.clone();

    // The immediate restart: a new process, a new engine, the journal handed back.
    let mut second = machine();
    second
        .on_start(host.now, journal.as_deref())
        .expect("the journal is accepted");
    host.drain(&mut second);
    let end = host.now.saturating_add_micros(60_000_000);
    host.run_until(&mut second, end);

    let lost = registered.difference(&host.completed).count() as u64;
    row.stop_latency_seconds = Some(latency as f64 / 1e6);
    row.tasks_lost = Some(lost);
    row.outcome =
        format!("{carried_over} journaled at the deadline, run after the restart; {lost} lost");
    row
}

type Machine = Lifecycle<Box<[TaskSlot]>>;

fn machine() -> Machine {
    Lifecycle::new(
        LifecycleConfig {
            housekeeping_deadline_micros: DEFAULT_HOUSEKEEPING_DEADLINE_MICROS,
            tasks_in_flight_max: 1,
            ..LifecycleConfig::DEFAULT
        },
        vec![TaskSlot::EMPTY; 32].into_boxed_slice(),
    )
    .expect("the lab's lifecycle config is valid")
}

/// A provider on virtual time: runs what the machine asks, one event at a time. A task of kind
/// `k` takes `k` milliseconds; the journal is persisted at once.
struct Provider {
    now: Instant,
    /// The journal on "disk".
    disk: Option<Vec<u8>>,
    /// Tasks running: id -> (finish time, payload).
    running: BTreeMap<TaskId, (Instant, Vec<u8>)>,
    teardown_done_at: Option<Instant>,
    /// The teardown never completes (the hung-teardown scenario).
    teardown_hangs: bool,
    /// Payloads of the tasks that ran to completion, in any session.
    completed: BTreeSet<Vec<u8>>,
    completed_stop_at: Option<Instant>,
}

impl Provider {
    fn new(now: Instant) -> Self {
        Provider {
            now,
            disk: None,
            running: BTreeMap::new(),
            teardown_done_at: None,
            teardown_hangs: false,
            completed: BTreeSet::new(),
            completed_stop_at: None,
        }
    }

    /// Carry out every effect the machine has for now.
    fn drain(&mut self, machine: &mut Machine) {
        while let Some(effect) = machine.poll_effect(self.now) {
            match effect {
                LifecycleEffect::StartTunnel { generation, .. } => machine
                    .on_tunnel_started(self.now, generation)
                    .expect("the start is current"),
                LifecycleEffect::RunTask {
                    task,
                    kind,
                    payload,
                    ..
                } => {
                    let finish = self.now.saturating_add_micros(u64::from(kind) * 1_000);
                    self.running
                        .insert(task, (finish, payload.as_bytes().to_vec()));
                }
                LifecycleEffect::TearDown { .. } => {
                    if !self.teardown_hangs {
                        self.teardown_done_at =
                            Some(self.now.saturating_add_micros(STOP_TEARDOWN_US));
                    }
                }
                LifecycleEffect::PersistJournal { generation, len } => {
                    let mut buf = vec![0u8; len];
                    let written = machine
                        .write_journal(&mut buf)
                        .expect("the buffer has the announced length");
                    buf.truncate(written);
                    self.disk = Some(buf);
                    machine
                        .on_journal_persisted(self.now, generation)
                        .expect("the journal is current");
                }
                LifecycleEffect::DiscardJournal { .. } => self.disk = None,
                LifecycleEffect::CompleteStop { .. } => {
                    self.completed_stop_at = Some(self.now);
                }
                LifecycleEffect::CancelWithError { .. }
                | LifecycleEffect::RestartTunnel { .. }
                | LifecycleEffect::AbandonRestart { .. } => {
                    unreachable!("nothing cancels and no path changes in this scenario")
                }
            }
        }
    }

    /// Advance to the next event (a task or the teardown finishing, the machine's timeout),
    /// deliver it and drain. False when nothing is left to happen.
    fn step(&mut self, machine: &mut Machine) -> bool {
        self.step_until(machine, None)
    }

    fn step_until(&mut self, machine: &mut Machine, until: Option<Instant>) -> bool {
        let next_task = self.running.values().map(|(at, _)| *at).min();
        let next = [next_task, self.teardown_done_at, machine.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        let Some(next) = next.filter(|next| until.is_none_or(|until| *next <= until)) else {
            return false;
        };
        self.now = self.now.max(next);
        machine.handle_timeout(self.now);
        if self.teardown_done_at.is_some_and(|at| at <= self.now) {
            self.teardown_done_at = None;
            machine
                .on_torn_down(self.now, machine.generation())
                .expect("the teardown is current");
        }
        let finished: Vec<TaskId> = self
            .running
            .iter()
            .filter(|(_, (at, _))| *at <= self.now)
            .map(|(id, _)| *id)
            .collect();
        for id in finished {
            let Some((_, payload)) = self.running.remove(&id) else {
                continue;
            };
            match machine.on_task_done(self.now, machine.generation(), id) {
                Ok(()) => {
                    self.completed.insert(payload);
                }
                // Sealed into the journal at the deadline: it runs again after the restart.
                Err(ReportError::TaskCarriedOver { .. }) => {}
                Err(other) => panic!("task report refused: {other}"),
            }
        }
        self.drain(machine);
        true
    }

    fn run_until(&mut self, machine: &mut Machine, until: Instant) {
        while self.step_until(machine, Some(until)) {}
        self.now = self.now.max(until);
        machine.handle_timeout(self.now);
        self.drain(machine);
    }
}
