//! The lifecycle state machine: states, transitions and the effects the host polls.

use core::mem::size_of;

use crate::fmt::{log_debug, log_trace, log_warn};
use crate::journal::{Journal, JournalTask, TaskPayload, encode_journal, journal_encoded_len};
use crate::time::{Clock, Instant};

use super::reassert::{
    PathFingerprint, PathReport, Reassert, RestartId, RestartReportError, Verdict,
};
use super::tasks::{Status, TaskQueue, TaskSlot};
use super::{
    CancelCause, Generation, LifecycleConfig, LifecycleConfigError, LifecycleEffect,
    LifecycleState, LifecycleStats, ReportError, StartError, StopError, StopOutcome, StopPhase,
    TaskId, TaskRegisterError, WriteJournalError,
};

/// The session lifecycle machine of one provider process.
///
/// The host feeds it what happens (`on_start`, `on_tunnel_started`, `on_stop`, `on_cancel`,
/// `on_torn_down`, task and journal reports, all with `now`) and asks it what to do next with
/// [`Lifecycle::poll_effect`].
///
/// **Drain contract:** after any input, and after [`Lifecycle::handle_timeout`], call
/// `poll_effect` until it returns `None`. Effects come out in the order the host must carry them
/// out; carrying them out and reporting back is the host's part.
///
/// **A stop**, from [`Lifecycle::on_stop`] or [`Lifecycle::on_cancel`]:
/// 1. `TearDown`; the host stops the network side and reports [`Lifecycle::on_torn_down`].
/// 2. Housekeeping: one `RunTask` per queued task (at most `tasks_in_flight_max` at once), each
///    reported done or failed, until all have ended or the housekeeping deadline (measured from
///    the teardown report, see [`Lifecycle::poll_timeout`]) passes.
/// 3. If the deadline passed: `PersistJournal`; the host writes the journal with
///    [`Lifecycle::write_journal`], persists it and reports [`Lifecycle::on_journal_persisted`].
/// 4. `CompleteStop` (or `CancelWithError`): the host calls the completion handler. The stop
///    completes within the teardown time plus the deadline, however much housekeeping is queued.
///
/// **Housekeeping is at-least-once.** A task that was running when the deadline passed goes
/// into the journal and runs again at the next start, even if it had in fact finished. Every
/// task must be idempotent. Tasks registered while the session runs wait for the stop; tasks
/// read back from a journal run as soon as the tunnel is up. When every task of the journal
/// handed to `on_start` has ended, a `DiscardJournal` effect says the host may delete it; until
/// then the host keeps it, so a process killed mid-session loses nothing either.
///
/// **Restarts.** While the tunnel is up, [`Lifecycle::on_path_change`] reports each path from
/// the host's path monitor. A new path that holds for `path_debounce_micros` restarts the
/// tunnel on it: a `RestartTunnel` effect, reported with [`Lifecycle::on_restart_done`] or
/// [`Lifecycle::on_restart_failed`]. The state is [`LifecycleState::Reasserting`] from the
/// debounce's end until an attempt is reported done. One attempt runs at a time. A change to yet
/// another path that holds abandons the attempt in flight (an `AbandonRestart` effect, then a
/// `RestartTunnel` for the latest path), and an attempt past `restart_deadline_micros` is
/// abandoned and counts as failed. A failed attempt is retried on the same path after a back-off
/// that doubles; when `restart_attempts_max` attempts on one path have failed, the session is
/// cancelled with [`CancelCause::RestartsExhausted`] instead of staying up but dead. Each attempt
/// has its own [`RestartId`]; a report for an attempt that was abandoned is refused with
/// [`ReportError::StaleRestart`] and changes nothing. [`PathFingerprint::NONE`] means no usable
/// path: the attempt in flight is abandoned and the session waits, reasserting, for a path to
/// appear, without using up attempts. A stop abandons the attempt in flight (its
/// `AbandonRestart` comes before `TearDown`).
///
/// **Sleep.** [`Lifecycle::on_wake`] reports a wake and how long the device slept. After a sleep
/// of `wake_restart_after_micros` or more the tunnel restarts on the latest path, through the
/// same debounce (the path monitor's report after a wake lands in it). A jump in `now` fires
/// each deadline and timer once: every timer armed by a firing is measured from that `now`.
///
/// **Generations.** Each start opens a new [`Generation`], larger than the last one and than the
/// one recorded in the journal handed in (so it keeps growing across process launches). Effects
/// carry it and task and phase reports must echo it; a report for another generation is refused
/// with [`ReportError::StaleGeneration`] and changes nothing.
///
/// Storage for the task queue is handed in (`[TaskSlot; N]`, a `&'static mut [TaskSlot]`, or a
/// `Box<[TaskSlot]>` on a host with an allocator); nothing allocates.
#[derive(Debug)]
pub struct Lifecycle<S> {
    config: LifecycleConfig,
    clock: Clock,
    phase: Phase,
    generation: Generation,
    next_task_id: u64,
    tasks: TaskQueue<S>,
    /// Tasks of the journal handed to the last start that have not ended.
    carried_outstanding: usize,
    /// The host holds a persisted journal that still matters.
    journal_held: bool,
    /// A `DiscardJournal` effect is due.
    discard_due: bool,
    /// Length of the sealed journal, while there is one.
    sealed_journal_len: Option<usize>,
    /// Path changes and restarts of the running tunnel.
    reassert: Reassert,
    stats: LifecycleStats,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Idle,
    Starting {
        announced: bool,
        carried: u16,
        deadline: Instant,
    },
    Running,
    Stopping(Stop),
    Stopped,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stop {
    requested_at: Instant,
    cancel: Option<(u32, CancelCause)>,
    step: StopStep,
}

/// The steps of a stop; each one that waits on the host carries the deadline it waits until.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StopStep {
    TearDownDue { deadline: Instant },
    TearingDown { deadline: Instant },
    Housekeeping { deadline: Instant },
    PersistDue { deadline: Instant },
    Persisting { deadline: Instant },
    CompletionDue,
}

impl StopStep {
    /// The deadline this step waits until, if it waits on the host.
    fn deadline(self) -> Option<Instant> {
        match self {
            StopStep::TearDownDue { deadline }
            | StopStep::TearingDown { deadline }
            | StopStep::Housekeeping { deadline }
            | StopStep::PersistDue { deadline }
            | StopStep::Persisting { deadline } => Some(deadline),
            StopStep::CompletionDue => None,
        }
    }
}

impl<S> Lifecycle<S>
where
    S: AsRef<[TaskSlot]> + AsMut<[TaskSlot]>,
{
    /// A machine in [`LifecycleState::Idle`] whose task queue holds `task_slots.len()` tasks:
    /// at least 1 and at most [`crate::JOURNAL_TASKS_MAX`]. A configuration it cannot honour is
    /// refused.
    pub fn new(config: LifecycleConfig, task_slots: S) -> Result<Self, LifecycleConfigError> {
        config.validate(task_slots.as_ref().len())?;
        Ok(Lifecycle {
            config,
            clock: Clock::default(),
            phase: Phase::Idle,
            generation: Generation(0),
            next_task_id: 1,
            tasks: TaskQueue::new(task_slots),
            carried_outstanding: 0,
            journal_held: false,
            discard_due: false,
            sealed_journal_len: None,
            reassert: Reassert::new(),
            stats: LifecycleStats::default(),
        })
    }

    /// Bytes a machine with `task_capacity` slots takes when its slots are held out of line (a
    /// boxed or borrowed slice): the machine itself plus the slots. For an inline array the
    /// footprint is simply `size_of::<Lifecycle<[TaskSlot; N]>>()`.
    pub const fn footprint(task_capacity: usize) -> usize {
        size_of::<Self>().saturating_add(task_capacity.saturating_mul(size_of::<TaskSlot>()))
    }

    /// The settings in use (`tasks_in_flight_max` raised to at least 1).
    pub fn config(&self) -> &LifecycleConfig {
        &self.config
    }

    /// The current state.
    pub fn state(&self) -> LifecycleState {
        match self.phase {
            Phase::Idle => LifecycleState::Idle,
            Phase::Starting { .. } => LifecycleState::Starting,
            Phase::Running if self.reassert.reasserting() => LifecycleState::Reasserting,
            Phase::Running => LifecycleState::Running,
            Phase::Stopped => LifecycleState::Stopped,
            Phase::Stopping(stop) => LifecycleState::Stopping(match stop.step {
                StopStep::TearDownDue { .. } | StopStep::TearingDown { .. } => {
                    StopPhase::TearingDown
                }
                StopStep::Housekeeping { .. } => StopPhase::Housekeeping,
                StopStep::PersistDue { .. } | StopStep::Persisting { .. } => {
                    StopPhase::PersistingJournal
                }
                StopStep::CompletionDue => StopPhase::Completing,
            }),
        }
    }

    /// The current session's generation (0 before the first start).
    pub fn generation(&self) -> Generation {
        self.generation
    }

    /// Counters and figures so far.
    pub fn stats(&self) -> &LifecycleStats {
        &self.stats
    }

    /// The path the tunnel is up on: the latest path reported before it came up, or the path of
    /// the last restart reported done. `None` until a path was reported.
    pub fn path(&self) -> Option<PathFingerprint> {
        self.reassert.established()
    }

    /// Tasks in the queue (pending, running or sealed into the journal).
    pub fn tasks_queued(&self) -> usize {
        self.tasks.len()
    }

    /// Tasks the queue can hold.
    pub fn task_capacity(&self) -> usize {
        self.tasks.capacity()
    }

    /// Start a session. `journal` is the journal persisted by the last stop, if any; its tasks
    /// are queued and run once the tunnel is up.
    ///
    /// Accepted from [`LifecycleState::Idle`] and [`LifecycleState::Stopped`]; the next effect
    /// is `StartTunnel`. A bad journal is refused with [`StartError::Journal`] and nothing
    /// changes: the host decides whether to start again without it.
    pub fn on_start(
        &mut self,
        now: Instant,
        journal: Option<&[u8]>,
    ) -> Result<Generation, StartError> {
        let now = self.observe(now);
        match self.phase {
            Phase::Idle | Phase::Stopped => {}
            Phase::Starting { .. } | Phase::Running => return Err(StartError::AlreadyActive),
            Phase::Stopping(_) => return Err(StartError::StopInProgress),
        }
        let journal = match journal.map(Journal::decode).transpose() {
            Ok(journal) => journal,
            Err(error) => {
                self.stats.journals_rejected = self.stats.journals_rejected.saturating_add(1);
                log_warn!("lifecycle: journal refused at start");
                return Err(StartError::Journal(error));
            }
        };
        let carried = journal.map_or(0, |journal| journal.task_count());
        // The queue is empty here: a completed stop clears it.
        if carried > self.tasks.free() {
            self.stats.journals_rejected = self.stats.journals_rejected.saturating_add(1);
            return Err(StartError::JournalTooLarge {
                tasks: carried,
                capacity: self.tasks.capacity(),
            });
        }
        let base = journal.map_or(self.generation.0, |journal| {
            journal.generation().max(self.generation.0)
        });
        let generation = base.checked_add(1).ok_or(StartError::GenerationExhausted)?;

        self.generation = Generation(generation);
        self.reassert.begin_session();
        self.tasks.clear();
        self.sealed_journal_len = None;
        self.discard_due = false;
        self.journal_held = journal.is_some();
        self.carried_outstanding = 0;
        if let Some(journal) = journal {
            for task in journal.tasks() {
                let id = self.allocate_task_id();
                if self.tasks.push(id, task, true) {
                    self.carried_outstanding = self.carried_outstanding.saturating_add(1);
                }
            }
            // An empty journal has nothing left to run.
            self.discard_due = self.carried_outstanding == 0;
        }
        let carried = u16::try_from(self.carried_outstanding).unwrap_or(u16::MAX);
        self.phase = Phase::Starting {
            announced: false,
            carried,
            deadline: now.saturating_add_micros(self.config.start_deadline_micros),
        };
        self.stats.sessions_started = self.stats.sessions_started.saturating_add(1);
        self.stats.tasks_resumed = self.stats.tasks_resumed.saturating_add(u64::from(carried));
        log_debug!(
            "lifecycle: start at {}, generation {}, {} tasks carried over",
            now,
            generation,
            carried
        );
        Ok(self.generation)
    }

    /// The host brought the tunnel up for `generation`: the session is running.
    ///
    /// Refused with [`ReportError::Unexpected`] unless starting (a duplicate report, or a stop
    /// that already abandoned the start).
    pub fn on_tunnel_started(
        &mut self,
        now: Instant,
        generation: Generation,
    ) -> Result<(), ReportError> {
        self.observe(now);
        self.check_generation(generation)?;
        match self.phase {
            Phase::Starting { .. } => {
                self.phase = Phase::Running;
                log_debug!("lifecycle: running, generation {}", generation.0);
                Ok(())
            }
            _ => Err(self.refuse_unexpected()),
        }
    }

    /// A stop request (the system called `stopTunnel`).
    ///
    /// From running: [`StopOutcome::Stopping`]. From starting: [`StopOutcome::StartAbandoned`].
    /// The next effect is `TearDown`. Refused while idle or stopped ([`StopError::NotActive`])
    /// and while already stopping ([`StopError::AlreadyStopping`]).
    pub fn on_stop(&mut self, now: Instant) -> Result<StopOutcome, StopError> {
        let now = self.observe(now);
        let outcome = match self.phase {
            Phase::Running => StopOutcome::Stopping,
            Phase::Starting { .. } => StopOutcome::StartAbandoned,
            Phase::Stopping(_) => return Err(StopError::AlreadyStopping),
            Phase::Idle | Phase::Stopped => return Err(StopError::NotActive),
        };
        self.begin_stop(now, None);
        Ok(outcome)
    }

    /// The provider hit an error and must end the session (`cancelTunnelWithError`).
    ///
    /// Accepted while starting or running: the stop runs in the same order as
    /// [`Lifecycle::on_stop`] and ends with `CancelWithError { code }` instead of
    /// `CompleteStop`. Refused while a stop is in progress ([`StopError::AlreadyStopping`]: the
    /// stop goes on and ends as it would have) and while idle or stopped.
    pub fn on_cancel(&mut self, now: Instant, code: u32) -> Result<(), StopError> {
        let now = self.observe(now);
        match self.phase {
            Phase::Running | Phase::Starting { .. } => {
                self.begin_stop(now, Some((code, CancelCause::Host)));
                Ok(())
            }
            Phase::Stopping(_) => Err(StopError::AlreadyStopping),
            Phase::Idle | Phase::Stopped => Err(StopError::NotActive),
        }
    }

    /// The host finished tearing down `generation`: housekeeping begins and its deadline starts.
    pub fn on_torn_down(
        &mut self,
        now: Instant,
        generation: Generation,
    ) -> Result<(), ReportError> {
        let now = self.observe(now);
        self.check_generation(generation)?;
        let Phase::Stopping(stop) = &mut self.phase else {
            return Err(self.refuse_unexpected());
        };
        if !matches!(
            stop.step,
            StopStep::TearDownDue { .. } | StopStep::TearingDown { .. }
        ) {
            return Err(self.refuse_unexpected());
        }
        self.begin_housekeeping(now);
        Ok(())
    }

    /// Queue a housekeeping task: `kind` is the host's own numbering, `payload` (at most
    /// [`crate::TASK_PAYLOAD_MAX`] bytes) its argument.
    ///
    /// Accepted while a session is starting, running or stopping until the housekeeping deadline
    /// passes. Tasks registered before the stop run during the stop's housekeeping; tasks
    /// registered during housekeeping join it.
    pub fn register_task(
        &mut self,
        now: Instant,
        kind: u32,
        payload: &[u8],
    ) -> Result<TaskId, TaskRegisterError> {
        self.observe(now);
        match self.phase {
            Phase::Idle | Phase::Stopped => return Err(TaskRegisterError::NoSession),
            Phase::Stopping(Stop {
                step:
                    StopStep::PersistDue { .. } | StopStep::Persisting { .. } | StopStep::CompletionDue,
                ..
            }) => return Err(TaskRegisterError::HousekeepingOver),
            _ => {}
        }
        let payload = TaskPayload::new(payload)
            .map_err(|error| TaskRegisterError::PayloadTooLong { len: error.len })?;
        if self.tasks.free() == 0 {
            return Err(TaskRegisterError::QueueFull {
                capacity: self.tasks.capacity(),
            });
        }
        let id = TaskId(self.next_task_id);
        if !self.tasks.push(id, JournalTask { kind, payload }, false) {
            return Err(TaskRegisterError::QueueFull {
                capacity: self.tasks.capacity(),
            });
        }
        self.next_task_id = self.next_task_id.saturating_add(1);
        self.stats.tasks_registered = self.stats.tasks_registered.saturating_add(1);
        log_trace!("lifecycle: registered task {} kind {}", id.0, kind);
        Ok(id)
    }

    /// The host finished `task` of `generation`.
    pub fn on_task_done(
        &mut self,
        now: Instant,
        generation: Generation,
        task: TaskId,
    ) -> Result<(), ReportError> {
        self.end_task(now, generation, task, true)
    }

    /// `task` of `generation` failed. It ends there: it is neither retried nor journaled (a task
    /// that should be retried can be registered again).
    pub fn on_task_failed(
        &mut self,
        now: Instant,
        generation: Generation,
        task: TaskId,
    ) -> Result<(), ReportError> {
        self.end_task(now, generation, task, false)
    }

    /// The host persisted the journal of `generation`: the stop can complete.
    pub fn on_journal_persisted(
        &mut self,
        now: Instant,
        generation: Generation,
    ) -> Result<(), ReportError> {
        self.observe(now);
        self.check_generation(generation)?;
        let Phase::Stopping(stop) = &mut self.phase else {
            return Err(self.refuse_unexpected());
        };
        if !matches!(
            stop.step,
            StopStep::PersistDue { .. } | StopStep::Persisting { .. }
        ) {
            return Err(self.refuse_unexpected());
        }
        stop.step = StopStep::CompletionDue;
        // The new journal replaced the old one; nothing is left to discard.
        self.journal_held = true;
        self.discard_due = false;
        Ok(())
    }

    /// The host's path monitor reports the current path (`NWPathMonitor`'s update handler, or a
    /// route or interface change on other systems). A report of the path last reported changes
    /// nothing; before the tunnel is up a report only records the path it comes up on; while it
    /// is up a new path restarts it once it has held for the debounce (see the restarts on
    /// [`Lifecycle`]). Never refused: a report while no session runs is recorded for the next
    /// start.
    pub fn on_path_change(&mut self, now: Instant, path: PathFingerprint) -> PathReport {
        let now = self.observe(now);
        let running = matches!(self.phase, Phase::Running);
        let report = self
            .reassert
            .on_path(now, path, running, &self.config, &mut self.stats);
        log_debug!("lifecycle: path {} reported", path.0);
        // A debounce of 0 settles at this very `now`: no timer is left at or before it.
        self.observe(now);
        report
    }

    /// The device woke after sleeping `slept_micros` (on Apple platforms, the difference between
    /// the continuous and the uptime clock across the sleep). While the tunnel is up, a sleep of
    /// `wake_restart_after_micros` or more schedules a restart on the latest path, through the
    /// path debounce (none when no path was ever reported); the return says whether it did. Deadlines and timers need no wake report: a
    /// `now` that jumped fires each of them once.
    pub fn on_wake(&mut self, now: Instant, slept_micros: u64) -> bool {
        let now = self.observe(now);
        if !matches!(self.phase, Phase::Running) {
            self.stats.wakes = self.stats.wakes.saturating_add(1);
            return false;
        }
        let scheduled = self
            .reassert
            .on_wake(now, slept_micros, &self.config, &mut self.stats);
        self.observe(now);
        scheduled
    }

    /// Restart attempt `restart` of `generation` is done: the tunnel is up on the attempt's path.
    pub fn on_restart_done(
        &mut self,
        now: Instant,
        generation: Generation,
        restart: RestartId,
    ) -> Result<(), ReportError> {
        self.end_restart(now, generation, restart, true)
    }

    /// Restart attempt `restart` of `generation` failed. It is retried after the back-off, or,
    /// if it was the last attempt for its path, the session is cancelled with
    /// [`CancelCause::RestartsExhausted`].
    pub fn on_restart_failed(
        &mut self,
        now: Instant,
        generation: Generation,
        restart: RestartId,
    ) -> Result<(), ReportError> {
        self.end_restart(now, generation, restart, false)
    }

    /// Write the sealed journal into the front of `buf` and return its length.
    ///
    /// Available from the `PersistJournal` effect until the stop completes. On error nothing is
    /// written; [`WriteJournalError::BufferTooSmall`] carries the size required.
    pub fn write_journal(&self, buf: &mut [u8]) -> Result<usize, WriteJournalError> {
        if self.sealed_journal_len.is_none() {
            return Err(WriteJournalError::NoJournal);
        }
        Ok(encode_journal(self.generation.0, self.tasks.sealed(), buf)?)
    }

    /// The length of the sealed journal, while there is one.
    pub fn journal_len(&self) -> Option<usize> {
        self.sealed_journal_len
    }

    /// The next thing the host must do, or `None` when there is nothing until the next input or
    /// timeout. Poll until `None` after every input (see the drain contract on [`Lifecycle`]).
    ///
    /// `now` also applies the housekeeping deadline, exactly as [`Lifecycle::handle_timeout`].
    #[must_use = "an effect is work the host must do"]
    pub fn poll_effect(&mut self, now: Instant) -> Option<LifecycleEffect> {
        let now = self.observe(now);
        let generation = self.generation;
        if let Some(restart) = self.reassert.take_abandon() {
            return Some(LifecycleEffect::AbandonRestart {
                generation,
                restart,
            });
        }
        if self.discard_due {
            self.discard_due = false;
            self.journal_held = false;
            return Some(LifecycleEffect::DiscardJournal { generation });
        }
        match self.phase {
            Phase::Idle | Phase::Stopped => None,
            Phase::Starting {
                announced,
                carried,
                deadline,
            } => {
                if announced {
                    return None;
                }
                self.phase = Phase::Starting {
                    announced: true,
                    carried,
                    deadline,
                };
                Some(LifecycleEffect::StartTunnel {
                    generation,
                    carried_over_tasks: carried,
                })
            }
            Phase::Running => match self
                .reassert
                .take_announce(now, &self.config, &mut self.stats)
            {
                Some(announce) => Some(LifecycleEffect::RestartTunnel {
                    generation,
                    restart: announce.id,
                    path: announce.path,
                    attempt: announce.attempt,
                }),
                None => self.next_task(true),
            },
            Phase::Stopping(mut stop) => match stop.step {
                StopStep::TearDownDue { deadline } => {
                    stop.step = StopStep::TearingDown { deadline };
                    self.phase = Phase::Stopping(stop);
                    Some(LifecycleEffect::TearDown { generation })
                }
                StopStep::TearingDown { .. } | StopStep::Persisting { .. } => None,
                StopStep::Housekeeping { .. } => self.next_task(false),
                StopStep::PersistDue { deadline } => {
                    stop.step = StopStep::Persisting { deadline };
                    self.phase = Phase::Stopping(stop);
                    let len = self.sealed_journal_len.unwrap_or(0);
                    Some(LifecycleEffect::PersistJournal { generation, len })
                }
                StopStep::CompletionDue => Some(self.complete_stop(now, stop)),
            },
        }
    }

    /// When [`Lifecycle::handle_timeout`] must next be called: the deadline of the phase that
    /// waits on the host (starting, tearing down, housekeeping, persisting the journal), or while
    /// the tunnel is up the end of a path debounce, a restart attempt's deadline or a back-off;
    /// otherwise `None`.
    #[must_use = "arm a timer for this instant"]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Starting { deadline, .. } => Some(deadline),
            Phase::Stopping(stop) => stop.step.deadline(),
            Phase::Running => self.reassert.timeout(),
            Phase::Idle | Phase::Stopped => None,
        }
    }

    /// Apply the deadline `now` reached, if any (see [`Lifecycle::poll_timeout`]), with its
    /// documented effect; then poll the effects. Idempotent; every other input applies the
    /// deadlines too, before anything else.
    ///
    /// A deadline fires once, however late `now` is: after a jump of hours (a device that
    /// slept, whose host clock counts sleep) the phase that waited moves on one step, and the
    /// next phase's deadline is measured from that `now`. Housekeeping is the exception: when
    /// the teardown deadline fires it starts, and its own deadline then runs in full.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.observe(now);
    }

    // ---- helpers ------------------------------------------------------------------------------

    /// Clamp `now` and apply the deadline it may have reached: one step, however late `now` is.
    fn observe(&mut self, now: Instant) -> Instant {
        let now = self.clock.observe(now);
        match self.phase {
            Phase::Starting { deadline, .. } if now >= deadline => {
                self.stats.start_timeouts = self.stats.start_timeouts.saturating_add(1);
                log_warn!("lifecycle: start deadline passed, cancelling");
                self.begin_stop(now, Some((0, CancelCause::StartTimedOut)));
            }
            Phase::Running => match self.reassert.on_time(now, &self.config, &mut self.stats) {
                Verdict::Exhausted => self.restarts_exhausted(now),
                Verdict::Continue => {}
            },
            Phase::Stopping(stop) => match stop.step {
                StopStep::TearDownDue { deadline } | StopStep::TearingDown { deadline }
                    if now >= deadline =>
                {
                    self.stats.teardown_timeouts = self.stats.teardown_timeouts.saturating_add(1);
                    log_warn!("lifecycle: teardown deadline passed, housekeeping begins");
                    self.begin_housekeeping(now);
                }
                StopStep::Housekeeping { deadline } if now >= deadline => self.seal_journal(now),
                StopStep::PersistDue { deadline } | StopStep::Persisting { deadline }
                    if now >= deadline =>
                {
                    self.stats.persist_timeouts = self.stats.persist_timeouts.saturating_add(1);
                    let sealed = u64::try_from(self.tasks.len()).unwrap_or(u64::MAX);
                    self.stats.tasks_unconfirmed =
                        self.stats.tasks_unconfirmed.saturating_add(sealed);
                    log_warn!("lifecycle: persist deadline passed, completing the stop");
                    if let Phase::Stopping(stop) = &mut self.phase {
                        stop.step = StopStep::CompletionDue;
                    }
                }
                _ => {}
            },
            _ => {}
        }
        now
    }

    /// The teardown is over (reported, or its deadline passed): housekeeping runs until its
    /// deadline, measured from `now`.
    fn begin_housekeeping(&mut self, now: Instant) {
        let deadline = now.saturating_add_micros(self.config.housekeeping_deadline_micros);
        if let Phase::Stopping(stop) = &mut self.phase {
            stop.step = StopStep::Housekeeping { deadline };
        }
        log_debug!("lifecycle: housekeeping until {}", deadline);
        self.finish_housekeeping_if_done();
    }

    fn seal_journal(&mut self, now: Instant) {
        let persist_deadline = now.saturating_add_micros(self.config.persist_deadline_micros);
        let Phase::Stopping(stop) = &mut self.phase else {
            return;
        };
        let sealed = self.tasks.seal_all();
        if sealed == 0 {
            stop.step = StopStep::CompletionDue;
            return;
        }
        stop.step = StopStep::PersistDue {
            deadline: persist_deadline,
        };
        self.sealed_journal_len = Some(journal_encoded_len(self.tasks.sealed()));
        let sealed = u64::try_from(sealed).unwrap_or(u64::MAX);
        self.stats.tasks_carried_over = self.stats.tasks_carried_over.saturating_add(sealed);
        self.stats.journals_written = self.stats.journals_written.saturating_add(1);
        log_debug!(
            "lifecycle: housekeeping deadline passed, {} tasks carried over",
            sealed
        );
    }

    fn begin_stop(&mut self, now: Instant, cancel: Option<(u32, CancelCause)>) {
        self.reassert.end_session(&mut self.stats);
        self.phase = Phase::Stopping(Stop {
            requested_at: now,
            cancel,
            step: StopStep::TearDownDue {
                deadline: now.saturating_add_micros(self.config.teardown_deadline_micros),
            },
        });
        log_debug!("lifecycle: stop requested at {}", now);
    }

    fn complete_stop(&mut self, now: Instant, stop: Stop) -> LifecycleEffect {
        let generation = self.generation;
        let latency = now.micros_since(stop.requested_at);
        self.stats.last_stop_latency_micros = Some(latency);
        self.stats.max_stop_latency_micros = self.stats.max_stop_latency_micros.max(latency);
        self.stats.stops_completed = self.stats.stops_completed.saturating_add(1);
        self.phase = Phase::Stopped;
        self.tasks.clear();
        self.carried_outstanding = 0;
        self.sealed_journal_len = None;
        log_debug!("lifecycle: stop complete after {}us", latency);
        match stop.cancel {
            Some((code, cause)) => LifecycleEffect::CancelWithError {
                generation,
                code,
                cause,
            },
            None => LifecycleEffect::CompleteStop { generation },
        }
    }

    fn next_task(&mut self, carried_only: bool) -> Option<LifecycleEffect> {
        let in_flight = self.tasks.count(Status::Running);
        if in_flight >= usize::from(self.config.tasks_in_flight_max) {
            return None;
        }
        let generation = self.generation;
        let entry = self.tasks.oldest_pending_mut(carried_only)?;
        entry.status = Status::Running;
        let effect = LifecycleEffect::RunTask {
            generation,
            task: entry.id,
            kind: entry.task.kind,
            payload: entry.task.payload,
        };
        self.stats.tasks_run = self.stats.tasks_run.saturating_add(1);
        Some(effect)
    }

    fn end_task(
        &mut self,
        now: Instant,
        generation: Generation,
        task: TaskId,
        done: bool,
    ) -> Result<(), ReportError> {
        self.observe(now);
        self.check_generation(generation)?;
        let status = match self.tasks.find_mut(task) {
            Some(entry) => entry.status,
            None if task.0 >= 1 && task.0 < self.next_task_id => {
                return Err(self.refuse(ReportError::TaskAlreadyEnded { task }));
            }
            None => return Err(self.refuse(ReportError::UnknownTask { task })),
        };
        match status {
            Status::Pending => return Err(self.refuse(ReportError::TaskNotRunning { task })),
            Status::Sealed => return Err(self.refuse(ReportError::TaskCarriedOver { task })),
            Status::Running => {}
        }
        let Some(entry) = self.tasks.remove(task) else {
            return Err(self.refuse(ReportError::UnknownTask { task }));
        };
        if done {
            self.stats.tasks_done = self.stats.tasks_done.saturating_add(1);
        } else {
            self.stats.tasks_failed = self.stats.tasks_failed.saturating_add(1);
        }
        if entry.carried {
            self.carried_outstanding = self.carried_outstanding.saturating_sub(1);
            if self.carried_outstanding == 0 && self.journal_held {
                self.discard_due = true;
            }
        }
        self.finish_housekeeping_if_done();
        Ok(())
    }

    fn end_restart(
        &mut self,
        now: Instant,
        generation: Generation,
        restart: RestartId,
        done: bool,
    ) -> Result<(), ReportError> {
        let now = self.observe(now);
        self.check_generation(generation)?;
        match self
            .reassert
            .on_restart_ended(now, restart, done, &self.config, &mut self.stats)
        {
            Ok(Verdict::Continue) => Ok(()),
            Ok(Verdict::Exhausted) => {
                self.restarts_exhausted(now);
                Ok(())
            }
            Err(RestartReportError::Stale) => {
                self.stats.stale_reports = self.stats.stale_reports.saturating_add(1);
                Err(self.refuse(ReportError::StaleRestart { restart }))
            }
            Err(RestartReportError::Unknown) => {
                Err(self.refuse(ReportError::UnknownRestart { restart }))
            }
        }
    }

    /// Every attempt on the path failed: cancel rather than stay up but dead.
    fn restarts_exhausted(&mut self, now: Instant) {
        self.stats.restarts_exhausted = self.stats.restarts_exhausted.saturating_add(1);
        log_warn!("lifecycle: every restart attempt failed, cancelling");
        self.begin_stop(now, Some((0, CancelCause::RestartsExhausted)));
    }

    fn finish_housekeeping_if_done(&mut self) {
        if let Phase::Stopping(stop) = &mut self.phase
            && matches!(stop.step, StopStep::Housekeeping { .. })
            && self.tasks.len() == 0
        {
            stop.step = StopStep::CompletionDue;
        }
    }

    fn allocate_task_id(&mut self) -> TaskId {
        let id = TaskId(self.next_task_id);
        self.next_task_id = self.next_task_id.saturating_add(1);
        id
    }

    fn check_generation(&mut self, generation: Generation) -> Result<(), ReportError> {
        if generation == self.generation {
            return Ok(());
        }
        // Generations start at 1 and grow by one per start: 0 and anything above the current
        // one were never issued, a host bug rather than a late callback.
        if generation.0 == 0 || generation.0 > self.generation.0 {
            return Err(self.refuse(ReportError::UnknownGeneration {
                reported: generation,
                current: self.generation,
            }));
        }
        self.stats.stale_reports = self.stats.stale_reports.saturating_add(1);
        Err(self.refuse(ReportError::StaleGeneration {
            reported: generation,
            current: self.generation,
        }))
    }

    fn refuse_unexpected(&mut self) -> ReportError {
        let state = self.state();
        self.refuse(ReportError::Unexpected { state })
    }

    fn refuse(&mut self, error: ReportError) -> ReportError {
        self.stats.reports_refused = self.stats.reports_refused.saturating_add(1);
        log_trace!("lifecycle: report refused");
        error
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{Journal, JournalDecodeError};
    use crate::lifecycle::{
        DEFAULT_HOUSEKEEPING_DEADLINE_MICROS, DEFAULT_PERSIST_DEADLINE_MICROS,
        DEFAULT_START_DEADLINE_MICROS, DEFAULT_TEARDOWN_DEADLINE_MICROS,
    };

    type Machine = Lifecycle<[TaskSlot; 4]>;

    fn machine() -> Machine {
        Lifecycle::new(LifecycleConfig::default(), [TaskSlot::EMPTY; 4]).unwrap()
    }

    fn at(millis: u64) -> Instant {
        Instant::from_millis(millis)
    }

    fn drain(machine: &mut Machine, now: Instant) -> Vec<LifecycleEffect> {
        core::iter::from_fn(|| machine.poll_effect(now)).collect()
    }

    fn running(machine: &mut Machine) -> Generation {
        let generation = machine.on_start(at(0), None).unwrap();
        drain(machine, at(0));
        machine.on_tunnel_started(at(1), generation).unwrap();
        generation
    }

    #[test]
    fn stop_without_tasks_goes_teardown_then_completion() {
        let mut machine = machine();
        let generation = machine.on_start(at(0), None).unwrap();
        assert_eq!(generation, Generation(1));
        assert_eq!(
            drain(&mut machine, at(0)),
            vec![LifecycleEffect::StartTunnel {
                generation,
                carried_over_tasks: 0
            }]
        );
        machine.on_tunnel_started(at(5), generation).unwrap();
        assert_eq!(machine.state(), LifecycleState::Running);
        assert_eq!(machine.on_stop(at(10)), Ok(StopOutcome::Stopping));
        assert_eq!(
            drain(&mut machine, at(10)),
            vec![LifecycleEffect::TearDown { generation }]
        );
        assert_eq!(
            machine.state(),
            LifecycleState::Stopping(StopPhase::TearingDown)
        );
        machine.on_torn_down(at(30), generation).unwrap();
        assert_eq!(
            machine.state(),
            LifecycleState::Stopping(StopPhase::Completing)
        );
        assert_eq!(
            drain(&mut machine, at(31)),
            vec![LifecycleEffect::CompleteStop { generation }]
        );
        assert_eq!(machine.state(), LifecycleState::Stopped);
        assert_eq!(machine.stats().last_stop_latency_micros, Some(21_000));
        assert_eq!(machine.stats().stops_completed, 1);
    }

    #[test]
    fn stop_during_start_abandons_the_start() {
        let mut machine = machine();
        let generation = machine.on_start(at(0), None).unwrap();
        drain(&mut machine, at(0));
        assert_eq!(machine.on_stop(at(1)), Ok(StopOutcome::StartAbandoned));
        assert_eq!(
            machine.state(),
            LifecycleState::Stopping(StopPhase::TearingDown)
        );
        // The start finishing late is refused and changes nothing.
        assert_eq!(
            machine.on_tunnel_started(at(2), generation),
            Err(ReportError::Unexpected {
                state: LifecycleState::Stopping(StopPhase::TearingDown)
            })
        );
        assert_eq!(
            drain(&mut machine, at(2)),
            vec![LifecycleEffect::TearDown { generation }]
        );
        machine.on_torn_down(at(3), generation).unwrap();
        assert_eq!(
            drain(&mut machine, at(3)),
            vec![LifecycleEffect::CompleteStop { generation }]
        );
    }

    #[test]
    fn cancel_ends_with_the_error_and_cancel_during_stop_is_refused() {
        let mut machine = machine();
        let generation = running(&mut machine);
        assert_eq!(machine.on_cancel(at(2), 42), Ok(()));
        assert_eq!(machine.on_cancel(at(3), 7), Err(StopError::AlreadyStopping));
        assert_eq!(machine.on_stop(at(3)), Err(StopError::AlreadyStopping));
        assert_eq!(
            drain(&mut machine, at(3)),
            vec![LifecycleEffect::TearDown { generation }]
        );
        machine.on_torn_down(at(4), generation).unwrap();
        assert_eq!(
            drain(&mut machine, at(4)),
            vec![LifecycleEffect::CancelWithError {
                generation,
                code: 42,
                cause: CancelCause::Host,
            }]
        );
        assert_eq!(machine.state(), LifecycleState::Stopped);
        assert_eq!(machine.on_cancel(at(5), 1), Err(StopError::NotActive));
        assert_eq!(machine.on_stop(at(5)), Err(StopError::NotActive));
    }

    #[test]
    fn start_while_stopping_or_running_is_refused() {
        let mut machine = machine();
        running(&mut machine);
        assert_eq!(
            machine.on_start(at(2), None),
            Err(StartError::AlreadyActive)
        );
        machine.on_stop(at(3)).unwrap();
        assert_eq!(
            machine.on_start(at(4), None),
            Err(StartError::StopInProgress)
        );
        assert_eq!(
            machine.state(),
            LifecycleState::Stopping(StopPhase::TearingDown)
        );
    }

    #[test]
    fn duplicate_stale_and_early_reports_are_refused_and_change_nothing() {
        let mut machine = machine();
        let generation = running(&mut machine);
        let first = machine.register_task(at(2), 1, b"a").unwrap();
        let second = machine.register_task(at(2), 1, b"b").unwrap();
        machine.on_stop(at(3)).unwrap();
        drain(&mut machine, at(3));
        // Second is pending, not running, while the first has not been handed out either.
        assert_eq!(
            machine.on_task_done(at(3), generation, first),
            Err(ReportError::TaskNotRunning { task: first })
        );
        machine.on_torn_down(at(4), generation).unwrap();
        let effects = drain(&mut machine, at(4));
        assert!(
            matches!(effects.as_slice(), [LifecycleEffect::RunTask { task, .. }] if *task == first)
        );
        // Generation 0 and the next one were never issued: a host bug, not a late report.
        let before = machine.tasks_queued();
        for never in [Generation(0), Generation(generation.0 + 1)] {
            assert_eq!(
                machine.on_task_done(at(5), never, first),
                Err(ReportError::UnknownGeneration {
                    reported: never,
                    current: generation
                })
            );
        }
        assert_eq!(machine.stats().stale_reports, 0, "no report was stale");
        assert_eq!(machine.tasks_queued(), before);
        machine.on_task_done(at(5), generation, first).unwrap();
        assert_eq!(
            machine.on_task_done(at(6), generation, first),
            Err(ReportError::TaskAlreadyEnded { task: first })
        );
        assert_eq!(
            machine.on_task_failed(at(6), generation, TaskId(99)),
            Err(ReportError::UnknownTask { task: TaskId(99) })
        );
        assert_eq!(
            machine.on_torn_down(at(6), generation),
            Err(ReportError::Unexpected {
                state: LifecycleState::Stopping(StopPhase::Housekeeping)
            })
        );
        assert_eq!(machine.stats().stale_reports, 0);
        assert_eq!(machine.stats().reports_refused, 6);
        assert_eq!(machine.tasks_queued(), 1);
        let effects = drain(&mut machine, at(6));
        assert!(
            matches!(effects.as_slice(), [LifecycleEffect::RunTask { task, .. }] if *task == second)
        );
    }

    #[test]
    fn deadline_seals_pending_and_running_tasks_into_the_journal() {
        let mut machine = machine();
        let generation = running(&mut machine);
        let slow = machine.register_task(at(2), 7, b"slow").unwrap();
        machine.register_task(at(2), 8, b"later").unwrap();
        machine.on_stop(at(3)).unwrap();
        drain(&mut machine, at(3));
        machine.on_torn_down(at(10), generation).unwrap();
        assert_eq!(machine.poll_timeout(), Some(at(260)));
        drain(&mut machine, at(10));
        assert_eq!(
            machine.write_journal(&mut [0; 64]),
            Err(WriteJournalError::NoJournal)
        );
        machine.handle_timeout(at(259));
        assert_eq!(
            machine.state(),
            LifecycleState::Stopping(StopPhase::Housekeeping)
        );
        machine.handle_timeout(at(260));
        machine.handle_timeout(at(260));
        // Persisting the journal has its own deadline, 2 s.
        assert_eq!(machine.poll_timeout(), Some(at(2_260)));
        let len = machine.journal_len().unwrap();
        assert_eq!(
            drain(&mut machine, at(260)),
            vec![LifecycleEffect::PersistJournal { generation, len }]
        );
        // The late report of the running task does not take it out of the journal.
        assert_eq!(
            machine.on_task_done(at(261), generation, slow),
            Err(ReportError::TaskCarriedOver { task: slow })
        );
        assert_eq!(
            machine.register_task(at(261), 1, b""),
            Err(TaskRegisterError::HousekeepingOver)
        );
        let mut small = [0u8; 8];
        assert_eq!(
            machine.write_journal(&mut small),
            Err(WriteJournalError::BufferTooSmall { required: len })
        );
        assert_eq!(small, [0; 8]);
        let mut buf = [0u8; 128];
        assert_eq!(machine.write_journal(&mut buf), Ok(len));
        let journal = Journal::decode(&buf[..len]).unwrap();
        assert_eq!(journal.generation(), generation.0);
        let kinds: Vec<u32> = journal.tasks().map(|task| task.kind).collect();
        assert_eq!(kinds, vec![7, 8]);
        assert!(drain(&mut machine, at(262)).is_empty());
        machine.on_journal_persisted(at(270), generation).unwrap();
        assert_eq!(
            drain(&mut machine, at(271)),
            vec![LifecycleEffect::CompleteStop { generation }]
        );
        assert_eq!(machine.stats().tasks_carried_over, 2);
        assert_eq!(machine.stats().journals_written, 1);
        assert_eq!(machine.stats().last_stop_latency_micros, Some(268_000));
    }

    #[test]
    fn journal_resumes_tasks_once_running_and_is_discarded_when_they_end() {
        let mut machine = machine();
        let task = JournalTask {
            kind: 5,
            payload: TaskPayload::new(b"x").unwrap(),
        };
        let mut buf = [0u8; 64];
        let len = encode_journal(41, [task, task], &mut buf).unwrap();
        let generation = machine.on_start(at(0), Some(&buf[..len])).unwrap();
        assert_eq!(generation, Generation(42));
        assert_eq!(
            drain(&mut machine, at(0)),
            vec![LifecycleEffect::StartTunnel {
                generation,
                carried_over_tasks: 2
            }]
        );
        // Nothing runs before the tunnel is up.
        assert!(drain(&mut machine, at(1)).is_empty());
        machine.on_tunnel_started(at(2), generation).unwrap();
        let mut ended = 0;
        while let Some(effect) = machine.poll_effect(at(3)) {
            match effect {
                LifecycleEffect::RunTask { task: id, kind, .. } => {
                    assert_eq!(kind, 5);
                    machine.on_task_done(at(3), generation, id).unwrap();
                    ended += 1;
                }
                LifecycleEffect::DiscardJournal { generation: g } => {
                    assert_eq!(g, generation);
                    assert_eq!(ended, 2);
                }
                other => unreachable!("unexpected {other:?}"),
            }
        }
        assert_eq!(machine.stats().tasks_resumed, 2);
        assert_eq!(machine.stats().tasks_done, 2);
        assert_eq!(machine.tasks_queued(), 0);
    }

    #[test]
    fn bad_journal_is_refused_and_changes_nothing() {
        let mut machine = machine();
        let mut buf = [0u8; 64];
        let len = encode_journal(3, [JournalTask::default()], &mut buf).unwrap();
        buf[len - 1] ^= 0x10;
        assert!(matches!(
            machine.on_start(at(0), Some(&buf[..len])),
            Err(StartError::Journal(
                JournalDecodeError::ChecksumMismatch { .. }
            ))
        ));
        assert_eq!(
            machine.on_start(at(0), Some(&buf[..len - 3])),
            Err(StartError::Journal(JournalDecodeError::Truncated {
                len: len - 3,
                required: len
            }))
        );
        let five = [JournalTask::default(); 5];
        let len = encode_journal(3, five, &mut buf).unwrap();
        assert_eq!(
            machine.on_start(at(0), Some(&buf[..len])),
            Err(StartError::JournalTooLarge {
                tasks: 5,
                capacity: 4
            })
        );
        assert_eq!(machine.state(), LifecycleState::Idle);
        assert_eq!(machine.generation(), Generation(0));
        assert_eq!(machine.stats().journals_rejected, 3);
        assert!(machine.poll_effect(at(0)).is_none());
        let len = encode_journal(u64::MAX, [], &mut buf).unwrap();
        assert_eq!(
            machine.on_start(at(0), Some(&buf[..len])),
            Err(StartError::GenerationExhausted)
        );
    }

    #[test]
    fn register_refusals() {
        let mut machine = machine();
        assert_eq!(
            machine.register_task(at(0), 1, b""),
            Err(TaskRegisterError::NoSession)
        );
        running(&mut machine);
        assert_eq!(
            machine.register_task(at(1), 1, &[0; 33]),
            Err(TaskRegisterError::PayloadTooLong { len: 33 })
        );
        for _ in 0..4 {
            machine.register_task(at(1), 1, b"").unwrap();
        }
        assert_eq!(
            machine.register_task(at(1), 1, b""),
            Err(TaskRegisterError::QueueFull { capacity: 4 })
        );
        assert_eq!(machine.stats().tasks_registered, 4);
    }

    #[test]
    fn tasks_in_flight_bound_is_respected() {
        let config = LifecycleConfig {
            tasks_in_flight_max: 3,
            ..LifecycleConfig::default()
        };
        let mut machine = Lifecycle::new(config, [TaskSlot::EMPTY; 4]).unwrap();
        let generation = machine.on_start(at(0), None).unwrap();
        drain(&mut machine, at(0));
        machine.on_tunnel_started(at(0), generation).unwrap();
        for kind in 0..4 {
            machine.register_task(at(0), kind, b"").unwrap();
        }
        // Registered tasks wait for the stop.
        assert!(drain(&mut machine, at(0)).is_empty());
        machine.on_stop(at(1)).unwrap();
        drain(&mut machine, at(1));
        machine.on_torn_down(at(1), generation).unwrap();
        let effects = drain(&mut machine, at(1));
        assert_eq!(effects.len(), 3);
        let LifecycleEffect::RunTask { task, .. } = effects[0] else {
            unreachable!()
        };
        machine.on_task_failed(at(2), generation, task).unwrap();
        assert_eq!(drain(&mut machine, at(2)).len(), 1);
        assert_eq!(machine.stats().tasks_failed, 1);
    }

    #[test]
    fn time_going_backwards_does_not_reopen_housekeeping() {
        let mut machine = machine();
        let generation = running(&mut machine);
        machine.register_task(at(1), 1, b"").unwrap();
        machine.on_stop(at(2)).unwrap();
        drain(&mut machine, at(2));
        machine.on_torn_down(at(2), generation).unwrap();
        drain(&mut machine, at(2));
        machine.handle_timeout(at(1_000));
        assert!(matches!(
            machine.poll_effect(at(0)),
            Some(LifecycleEffect::PersistJournal { .. })
        ));
        assert_eq!(
            machine.state(),
            LifecycleState::Stopping(StopPhase::PersistingJournal)
        );
    }

    /// A start that never comes up is cancelled at its deadline, once, and a late report of
    /// the tunnel coming up is refused.
    #[test]
    fn a_start_past_its_deadline_is_cancelled_once() {
        let mut machine = machine();
        let generation = machine.on_start(at(0), None).unwrap();
        drain(&mut machine, at(0));
        let deadline = at(0).saturating_add_micros(DEFAULT_START_DEADLINE_MICROS);
        assert_eq!(machine.poll_timeout(), Some(deadline));
        machine.handle_timeout(Instant::from_micros(deadline.as_micros() - 1));
        assert_eq!(machine.state(), LifecycleState::Starting);
        machine.handle_timeout(deadline);
        assert_eq!(
            machine.state(),
            LifecycleState::Stopping(StopPhase::TearingDown)
        );
        assert_eq!(
            machine.on_tunnel_started(deadline, generation),
            Err(ReportError::Unexpected {
                state: LifecycleState::Stopping(StopPhase::TearingDown)
            })
        );
        assert_eq!(
            drain(&mut machine, deadline),
            vec![LifecycleEffect::TearDown { generation }]
        );
        machine.on_torn_down(deadline, generation).unwrap();
        assert_eq!(
            drain(&mut machine, deadline),
            vec![LifecycleEffect::CancelWithError {
                generation,
                code: 0,
                cause: CancelCause::StartTimedOut,
            }]
        );
        assert_eq!(machine.stats().start_timeouts, 1);
    }

    /// A teardown that never ends does not hold the stop forever: past its deadline
    /// housekeeping runs with its own full deadline, and the stop completes.
    #[test]
    fn a_hung_teardown_ends_at_its_deadline_and_the_stop_completes() {
        let mut machine = machine();
        let generation = running(&mut machine);
        machine.register_task(at(1), 1, b"x").unwrap();
        machine.on_stop(at(10)).unwrap();
        assert_eq!(
            drain(&mut machine, at(10)),
            vec![LifecycleEffect::TearDown { generation }]
        );
        let teardown = at(10).saturating_add_micros(DEFAULT_TEARDOWN_DEADLINE_MICROS);
        assert_eq!(machine.poll_timeout(), Some(teardown));
        machine.handle_timeout(teardown);
        assert_eq!(
            machine.state(),
            LifecycleState::Stopping(StopPhase::Housekeeping)
        );
        assert_eq!(
            machine.poll_timeout(),
            Some(teardown.saturating_add_micros(DEFAULT_HOUSEKEEPING_DEADLINE_MICROS))
        );
        assert_eq!(
            machine.on_torn_down(teardown, generation),
            Err(ReportError::Unexpected {
                state: LifecycleState::Stopping(StopPhase::Housekeeping)
            })
        );
        let effects = drain(&mut machine, teardown);
        let [LifecycleEffect::RunTask { task, .. }] = effects[..] else {
            panic!("{effects:?}");
        };
        machine.on_task_done(teardown, generation, task).unwrap();
        assert_eq!(
            drain(&mut machine, teardown),
            vec![LifecycleEffect::CompleteStop { generation }]
        );
        assert_eq!(machine.stats().teardown_timeouts, 1);
        assert_eq!(
            machine.stats().last_stop_latency_micros,
            Some(DEFAULT_TEARDOWN_DEADLINE_MICROS)
        );
    }

    /// A persist report that never comes does not hold the stop: past the persist deadline it
    /// completes, and the sealed tasks are counted as unconfirmed.
    #[test]
    fn a_journal_never_reported_persisted_completes_the_stop_at_its_deadline() {
        let mut machine = machine();
        let generation = running(&mut machine);
        machine.register_task(at(1), 1, b"x").unwrap();
        machine.register_task(at(1), 2, b"y").unwrap();
        machine.on_stop(at(2)).unwrap();
        drain(&mut machine, at(2));
        machine.on_torn_down(at(2), generation).unwrap();
        drain(&mut machine, at(2));
        let sealed_at = at(2).saturating_add_micros(DEFAULT_HOUSEKEEPING_DEADLINE_MICROS);
        machine.handle_timeout(sealed_at);
        let effects = drain(&mut machine, sealed_at);
        assert!(matches!(
            effects[..],
            [LifecycleEffect::PersistJournal { .. }]
        ));
        let persist = sealed_at.saturating_add_micros(DEFAULT_PERSIST_DEADLINE_MICROS);
        assert_eq!(machine.poll_timeout(), Some(persist));
        machine.handle_timeout(persist);
        assert_eq!(
            drain(&mut machine, persist),
            vec![LifecycleEffect::CompleteStop { generation }]
        );
        let stats = machine.stats();
        assert_eq!((stats.persist_timeouts, stats.tasks_unconfirmed), (1, 2));
        assert_eq!(machine.state(), LifecycleState::Stopped);
    }

    /// A jump of hours in `now` (a device that slept) moves a waiting phase on one step, never a
    /// burst: the next phase's deadline is measured from the late `now`.
    #[test]
    fn a_jump_of_hours_fires_one_deadline_not_a_burst() {
        let mut machine = machine();
        let generation = running(&mut machine);
        machine.register_task(at(1), 1, b"x").unwrap();
        machine.on_stop(at(2)).unwrap();
        drain(&mut machine, at(2));
        let hours_later = at(2).saturating_add_micros(3 * 3_600_000_000);
        machine.handle_timeout(hours_later);
        assert_eq!(
            machine.state(),
            LifecycleState::Stopping(StopPhase::Housekeeping),
            "only the teardown deadline fired"
        );
        let effects = drain(&mut machine, hours_later);
        assert!(
            matches!(effects[..], [LifecycleEffect::RunTask { .. }]),
            "the task still gets its housekeeping time: {effects:?}"
        );
        let stats = machine.stats();
        assert_eq!((stats.teardown_timeouts, stats.journals_written), (1, 0));
        assert_eq!(machine.generation(), generation);
    }

    #[test]
    fn zero_deadlines_are_refused() {
        for (config, error) in [
            (
                LifecycleConfig {
                    start_deadline_micros: 0,
                    ..LifecycleConfig::DEFAULT
                },
                LifecycleConfigError::ZeroStartDeadline,
            ),
            (
                LifecycleConfig {
                    teardown_deadline_micros: 0,
                    ..LifecycleConfig::DEFAULT
                },
                LifecycleConfigError::ZeroTeardownDeadline,
            ),
            (
                LifecycleConfig {
                    persist_deadline_micros: 0,
                    ..LifecycleConfig::DEFAULT
                },
                LifecycleConfigError::ZeroPersistDeadline,
            ),
        ] {
            assert_eq!(
                Lifecycle::new(config, [TaskSlot::EMPTY; 4]).err(),
                Some(error)
            );
        }
    }

    #[test]
    fn footprint_counts_machine_and_slots() {
        type Boxed = Lifecycle<Box<[TaskSlot]>>;
        assert_eq!(
            Boxed::footprint(10),
            size_of::<Boxed>() + 10 * size_of::<TaskSlot>()
        );
        assert!(size_of::<TaskSlot>() <= 64);
    }
}
