//! The session lifecycle: start, stop and cancel in the order Apple requires, with housekeeping
//! bounded by a deadline and carried over to the next start in a journal.
//!
//! A Network Extension provider must tear down, then do its housekeeping, then call the stop
//! completion handler (or `cancelTunnelWithError`); once it has, the process may be killed at
//! any moment. Slow housekeeping therefore delays the user's next start. [`Lifecycle`] tells the
//! host what to do next, gives housekeeping a short deadline, and writes whatever is still
//! pending into a small checksummed journal that the host persists before completing the stop
//! and hands back at the next start, where those tasks run again while the tunnel is up.
//!
//! While the tunnel is up, a path change (or a wake after a long sleep) restarts it: debounced,
//! one restart at a time, retried with back-off a bounded number of times and then cancelled,
//! never left up but dead.
//!
//! The module owns the states and transitions (`machine.rs`), the restarts of a running tunnel
//! (`reassert.rs`) and the fixed-capacity task queue (`tasks.rs`); the journal's byte format
//! lives in `crate::journal`.

use core::fmt;

use crate::journal::{JournalDecodeError, JournalEncodeError, TaskPayload};

mod machine;
mod reassert;
mod tasks;

pub use machine::Lifecycle;
pub use reassert::{PathFingerprint, PathReport, RestartId};
pub use tasks::TaskSlot;

/// The number of a session. Every start gets a new, larger one; every effect carries it and every
/// host report must echo it, so a callback left over from an earlier session is recognised and
/// refused instead of acting on the current one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Generation(pub u64);

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "generation {}", self.0)
    }
}

/// The id of a housekeeping task, unique for the life of one [`Lifecycle`] and increasing in the
/// order tasks were queued.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TaskId(pub u64);

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task {}", self.0)
    }
}

/// The default housekeeping deadline, 250 ms.
///
/// The user's next start waits for the stop, and a quarter of a second is about the longest pause
/// a tap on the VPN toggle can take without feeling stuck, while still leaving room for a few quick
/// idempotent tasks (delete a temp file, flush a counter) to finish without being carried over.
/// Longer work is exactly what the journal is for.
pub const DEFAULT_HOUSEKEEPING_DEADLINE_MICROS: u64 = 250_000;

/// The default start deadline, 60 s: from a start to the host's report that the tunnel is up.
/// A start that has not come up by then is cancelled, never left starting forever; a minute
/// covers a slow first connection on a poor network.
pub const DEFAULT_START_DEADLINE_MICROS: u64 = 60_000_000;

/// The default teardown deadline, 5 s: from a stop request to the host's teardown report. Past
/// it the stop goes on as if the teardown had been reported (partout-io/tunnelkit #272: a stop
/// that waited forever on a teardown that never ended).
pub const DEFAULT_TEARDOWN_DEADLINE_MICROS: u64 = 5_000_000;

/// The default persist deadline, 2 s: from a `PersistJournal` effect to the host's report that
/// the journal is persisted. Past it the stop completes anyway.
pub const DEFAULT_PERSIST_DEADLINE_MICROS: u64 = 2_000_000;

/// The default path debounce, 1 s: a path change restarts the tunnel only once no other change
/// came for this long. Path monitors report a Wi-Fi to cellular hand-over as a burst of changes
/// within a few hundred milliseconds; one restart for the path that holds beats one per report.
pub const DEFAULT_PATH_DEBOUNCE_MICROS: u64 = 1_000_000;

/// The default restart deadline, 20 s: an attempt not reported done or failed by then counts as
/// failed and is abandoned (a handshake that gets no answer on a path without connectivity).
pub const DEFAULT_RESTART_DEADLINE_MICROS: u64 = 20_000_000;

/// The default number of attempts to restart on one path, 4, before the session is cancelled.
pub const DEFAULT_RESTART_ATTEMPTS_MAX: u16 = 4;

/// The default back-off after the first failed attempt, 1 s; it doubles after each further
/// failure. The first attempt after a change often fails (no link yet, a captive portal).
pub const DEFAULT_RESTART_BACKOFF_MICROS: u64 = 1_000_000;

/// The default cap of the back-off, 30 s.
pub const DEFAULT_RESTART_BACKOFF_MAX_MICROS: u64 = 30_000_000;

/// The default sleep after which a wake restarts the tunnel, 120 s: NAT mappings of UDP flows
/// last at least two minutes (RFC 4787, REQ-5), so after a longer sleep the tunnel's mapping and
/// often the server's session may be gone.
pub const DEFAULT_WAKE_RESTART_AFTER_MICROS: u64 = 120_000_000;

/// Settings fixed when a [`Lifecycle`] is built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LifecycleConfig {
    /// How long housekeeping may run after the host reports the teardown done, in microseconds.
    /// When it passes, the tasks not yet finished are written into the journal and the stop
    /// completes. Default [`DEFAULT_HOUSEKEEPING_DEADLINE_MICROS`]. Not 0 (refused: no task
    /// could ever run before the stop completes).
    pub housekeeping_deadline_micros: u64,
    /// How many `RunTask` effects may be outstanding at once. 1 runs tasks one after another,
    /// which is what a provider doing cleanup on one serial queue wants. Not 0 (refused).
    pub tasks_in_flight_max: u16,
    /// How long a start may take, from [`Lifecycle::on_start`] to
    /// [`Lifecycle::on_tunnel_started`], in microseconds. Past it the session is cancelled: the
    /// stop runs and ends with `CancelWithError` whose cause is [`CancelCause::StartTimedOut`].
    /// Default [`DEFAULT_START_DEADLINE_MICROS`]. Not 0 (refused).
    pub start_deadline_micros: u64,
    /// How long the teardown may take, from the stop (or cancel) request to
    /// [`Lifecycle::on_torn_down`], in microseconds. Past it housekeeping begins as if the
    /// teardown had been reported, and a late report is refused. Default
    /// [`DEFAULT_TEARDOWN_DEADLINE_MICROS`]. Not 0 (refused).
    pub teardown_deadline_micros: u64,
    /// How long persisting the journal may take, from the `PersistJournal` effect to
    /// [`Lifecycle::on_journal_persisted`], in microseconds. Past it the stop completes without
    /// the report: the tasks sealed into that journal survive only if the host did persist it
    /// (counted in [`LifecycleStats::tasks_unconfirmed`]). Default
    /// [`DEFAULT_PERSIST_DEADLINE_MICROS`]. Not 0 (refused).
    pub persist_deadline_micros: u64,
    /// How long a path change must hold before the tunnel restarts on it, in microseconds; each
    /// further change starts it again. 0 restarts at once on every change. Default
    /// [`DEFAULT_PATH_DEBOUNCE_MICROS`].
    pub path_debounce_micros: u64,
    /// How long one restart attempt may take, from its `RestartTunnel` effect to
    /// [`Lifecycle::on_restart_done`] or [`Lifecycle::on_restart_failed`], in microseconds. Past
    /// it the attempt is abandoned (an `AbandonRestart` effect) and counts as failed. Default
    /// [`DEFAULT_RESTART_DEADLINE_MICROS`]. Not 0 (refused).
    pub restart_deadline_micros: u64,
    /// How many attempts a path gets before the session is cancelled with
    /// [`CancelCause::RestartsExhausted`]. A new path gets the full number again; a path that
    /// flaps away and back within the debounce keeps its count and its back-off. Default
    /// [`DEFAULT_RESTART_ATTEMPTS_MAX`]. Not 0 (refused).
    pub restart_attempts_max: u16,
    /// The wait after the first failed attempt before the next, in microseconds; it doubles after
    /// each further failure up to `restart_backoff_max_micros`. Default
    /// [`DEFAULT_RESTART_BACKOFF_MICROS`]. Not 0 (refused: retrying at once is the storm this
    /// prevents).
    pub restart_backoff_micros: u64,
    /// The longest back-off, in microseconds. Default [`DEFAULT_RESTART_BACKOFF_MAX_MICROS`]; not
    /// below `restart_backoff_micros` (refused).
    pub restart_backoff_max_micros: u64,
    /// A wake ([`Lifecycle::on_wake`]) after a sleep at least this long restarts the tunnel on
    /// the latest path, like a path change. 0: a wake never restarts. Default
    /// [`DEFAULT_WAKE_RESTART_AFTER_MICROS`].
    pub wake_restart_after_micros: u64,
}

/// Why [`Lifecycle::new`] refused a configuration or its task storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum LifecycleConfigError {
    /// The task storage has no slot: no task could ever be registered.
    ZeroTaskCapacity,
    /// The task storage has more slots than a journal can carry ([`crate::JOURNAL_TASKS_MAX`]).
    TooManyTasks,
    /// `tasks_in_flight_max` is 0: no task could ever run.
    ZeroTasksInFlight,
    /// `housekeeping_deadline_micros` is 0.
    ZeroHousekeepingDeadline,
    /// `start_deadline_micros` is 0.
    ZeroStartDeadline,
    /// `teardown_deadline_micros` is 0.
    ZeroTeardownDeadline,
    /// `persist_deadline_micros` is 0.
    ZeroPersistDeadline,
    /// `restart_deadline_micros` is 0.
    ZeroRestartDeadline,
    /// `restart_attempts_max` is 0: a path change could never restart the tunnel.
    ZeroRestartAttempts,
    /// `restart_backoff_micros` is 0.
    ZeroRestartBackoff,
    /// `restart_backoff_max_micros` is below `restart_backoff_micros`.
    RestartBackoffMaxBelowInitial,
}

impl core::fmt::Display for LifecycleConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            LifecycleConfigError::ZeroTaskCapacity => "task storage has no slot",
            LifecycleConfigError::TooManyTasks => "task storage larger than a journal can carry",
            LifecycleConfigError::ZeroTasksInFlight => "tasks_in_flight_max is 0",
            LifecycleConfigError::ZeroHousekeepingDeadline => "housekeeping deadline is 0",
            LifecycleConfigError::ZeroStartDeadline => "start deadline is 0",
            LifecycleConfigError::ZeroTeardownDeadline => "teardown deadline is 0",
            LifecycleConfigError::ZeroPersistDeadline => "persist deadline is 0",
            LifecycleConfigError::ZeroRestartDeadline => "restart deadline is 0",
            LifecycleConfigError::ZeroRestartAttempts => "restart_attempts_max is 0",
            LifecycleConfigError::ZeroRestartBackoff => "restart back-off is 0",
            LifecycleConfigError::RestartBackoffMaxBelowInitial => {
                "restart back-off maximum is below the initial back-off"
            }
        })
    }
}

impl LifecycleConfig {
    /// The documented defaults: deadlines of 60 s to start, 5 s to tear down, 250 ms of
    /// housekeeping and 2 s to persist the journal, and one task at a time; restarts after a 1 s
    /// path debounce, 20 s per attempt, 4 attempts per path with back-off from 1 s doubling up to
    /// 30 s, and a restart on waking from a sleep of 2 minutes or more. Build a
    /// configuration as `LifecycleConfig { field: value, ..LifecycleConfig::DEFAULT }`, so that a
    /// field added later keeps its default without breaking the caller.
    pub const DEFAULT: LifecycleConfig = LifecycleConfig {
        housekeeping_deadline_micros: DEFAULT_HOUSEKEEPING_DEADLINE_MICROS,
        tasks_in_flight_max: 1,
        start_deadline_micros: DEFAULT_START_DEADLINE_MICROS,
        teardown_deadline_micros: DEFAULT_TEARDOWN_DEADLINE_MICROS,
        persist_deadline_micros: DEFAULT_PERSIST_DEADLINE_MICROS,
        path_debounce_micros: DEFAULT_PATH_DEBOUNCE_MICROS,
        restart_deadline_micros: DEFAULT_RESTART_DEADLINE_MICROS,
        restart_attempts_max: DEFAULT_RESTART_ATTEMPTS_MAX,
        restart_backoff_micros: DEFAULT_RESTART_BACKOFF_MICROS,
        restart_backoff_max_micros: DEFAULT_RESTART_BACKOFF_MAX_MICROS,
        wake_restart_after_micros: DEFAULT_WAKE_RESTART_AFTER_MICROS,
    };

    /// Check the configuration for a queue of `task_capacity` slots: [`Lifecycle::new`] refuses
    /// what this refuses.
    pub const fn validate(&self, task_capacity: usize) -> Result<(), LifecycleConfigError> {
        if task_capacity == 0 {
            return Err(LifecycleConfigError::ZeroTaskCapacity);
        }
        if task_capacity > crate::JOURNAL_TASKS_MAX {
            return Err(LifecycleConfigError::TooManyTasks);
        }
        if self.tasks_in_flight_max == 0 {
            return Err(LifecycleConfigError::ZeroTasksInFlight);
        }
        if self.housekeeping_deadline_micros == 0 {
            return Err(LifecycleConfigError::ZeroHousekeepingDeadline);
        }
        if self.start_deadline_micros == 0 {
            return Err(LifecycleConfigError::ZeroStartDeadline);
        }
        if self.teardown_deadline_micros == 0 {
            return Err(LifecycleConfigError::ZeroTeardownDeadline);
        }
        if self.persist_deadline_micros == 0 {
            return Err(LifecycleConfigError::ZeroPersistDeadline);
        }
        if self.restart_deadline_micros == 0 {
            return Err(LifecycleConfigError::ZeroRestartDeadline);
        }
        if self.restart_attempts_max == 0 {
            return Err(LifecycleConfigError::ZeroRestartAttempts);
        }
        if self.restart_backoff_micros == 0 {
            return Err(LifecycleConfigError::ZeroRestartBackoff);
        }
        if self.restart_backoff_max_micros < self.restart_backoff_micros {
            return Err(LifecycleConfigError::RestartBackoffMaxBelowInitial);
        }
        Ok(())
    }

    /// The default settings, [`LifecycleConfig::DEFAULT`].
    pub const fn new() -> Self {
        Self::DEFAULT
    }
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// Where the session stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum LifecycleState {
    /// No session has started yet.
    Idle,
    /// A start was accepted; the tunnel is being brought up.
    Starting,
    /// The tunnel is up. Tasks carried over from the last journal run now.
    Running,
    /// The tunnel is up but its path changed (or the device woke from a long sleep): a restart
    /// is due, running, backing off after a failure, or waiting for a usable path. A provider
    /// sets `reasserting = true` for as long as this lasts. Housekeeping carried over from the
    /// journal goes on.
    Reasserting,
    /// A stop or cancel is in progress, in the phase given.
    Stopping(StopPhase),
    /// The last session's stop completed; a new start is accepted.
    Stopped,
}

/// The phases of a stop, in the order they happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum StopPhase {
    /// The host is tearing the tunnel down (from the `TearDown` effect until
    /// [`Lifecycle::on_torn_down`]).
    TearingDown,
    /// Housekeeping tasks run until they are all done or the deadline passes.
    Housekeeping,
    /// The deadline passed with tasks pending: the host writes and persists the journal.
    PersistingJournal,
    /// Everything is done; the next effect completes the stop (or cancels with the error).
    Completing,
}

/// What the host must do next, in order. Every effect carries the session's generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LifecycleEffect {
    /// Bring the tunnel up, then report [`Lifecycle::on_tunnel_started`].
    /// `carried_over_tasks` of the tasks from the journal handed to `on_start` will run as
    /// `RunTask` once the tunnel is up.
    StartTunnel {
        /// The new session.
        generation: Generation,
        /// Tasks read back from the journal.
        carried_over_tasks: u16,
    },
    /// Run one housekeeping task, then report [`Lifecycle::on_task_done`] or
    /// [`Lifecycle::on_task_failed`]. Tasks may run more than once (a task carried over in a
    /// journal may already have done part of its work), so every task must be idempotent.
    RunTask {
        /// The session the task runs in.
        generation: Generation,
        /// The id to report back.
        task: TaskId,
        /// The host-defined kind of task.
        kind: u32,
        /// The task's argument.
        payload: TaskPayload,
    },
    /// Tear the tunnel down (stop the network side), then report [`Lifecycle::on_torn_down`].
    /// Housekeeping runs after this, as Apple requires.
    TearDown {
        /// The session being stopped.
        generation: Generation,
    },
    /// The housekeeping deadline passed: write the journal with [`Lifecycle::write_journal`]
    /// into a buffer of at least `len` bytes, persist it (replacing any journal persisted
    /// earlier), then report [`Lifecycle::on_journal_persisted`].
    PersistJournal {
        /// The session being stopped.
        generation: Generation,
        /// Bytes the journal takes.
        len: usize,
    },
    /// Every task of the journal handed to the last start has ended: the host may delete the
    /// persisted journal.
    DiscardJournal {
        /// The current session.
        generation: Generation,
    },
    /// Restart the tunnel on the path `path` (reconnect its transport there; keep the tunnel
    /// interface and its settings), then report [`Lifecycle::on_restart_done`] or
    /// [`Lifecycle::on_restart_failed`] with `restart`. At most one attempt runs at a time: a
    /// second `RestartTunnel` comes only after the first was reported or abandoned.
    RestartTunnel {
        /// The current session.
        generation: Generation,
        /// The attempt to report.
        restart: RestartId,
        /// The path to restart on, as reported with [`Lifecycle::on_path_change`].
        path: PathFingerprint,
        /// 1 for the first attempt on this path, then 2, 3, ... up to `restart_attempts_max`.
        attempt: u16,
    },
    /// Stop attempt `restart` now and forget it: its path is gone, it passed its deadline, or the
    /// session is stopping. A later report for it is refused as stale; if another attempt
    /// follows, it comes as its own `RestartTunnel` after this effect.
    AbandonRestart {
        /// The current session.
        generation: Generation,
        /// The attempt to stop.
        restart: RestartId,
    },
    /// Call the stop completion handler. The process may be killed right after; nothing is lost
    /// because pending tasks are in the persisted journal.
    CompleteStop {
        /// The session that stopped.
        generation: Generation,
    },
    /// The session was cancelled with an error: call `cancelTunnelWithError` (or, if the cancel
    /// came during the start, fail the start completion handler) with the host's error for
    /// `cause`.
    CancelWithError {
        /// The session that was cancelled.
        generation: Generation,
        /// The host's error code given to [`Lifecycle::on_cancel`]; 0 when the machine itself
        /// cancelled (see `cause`).
        code: u32,
        /// Who cancelled, and why.
        cause: CancelCause,
    },
}

/// Why a session was cancelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum CancelCause {
    /// The host called [`Lifecycle::on_cancel`] with the effect's code.
    Host,
    /// The start did not come up within `start_deadline_micros`.
    StartTimedOut,
    /// Every restart attempt on the latest path failed (`restart_attempts_max` of them): the
    /// tunnel is cancelled rather than left up but dead.
    RestartsExhausted,
}

/// How an accepted stop request proceeds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopOutcome {
    /// The session was running; it now tears down, does housekeeping and completes.
    Stopping,
    /// The stop came while the session was still starting (the system may call `stopTunnel`
    /// before `startTunnel` has finished). The start is abandoned: the host fails its pending
    /// start completion, a later [`Lifecycle::on_tunnel_started`] is refused, and the stop goes
    /// through teardown, housekeeping and completion like any other.
    StartAbandoned,
}

/// Counters and figures about the sessions so far. Counters saturate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LifecycleStats {
    /// Starts accepted.
    pub sessions_started: u64,
    /// Stops (and cancels) completed.
    pub stops_completed: u64,
    /// Time from the last stop or cancel request to its completion effect, in microseconds of
    /// the host's clock.
    pub last_stop_latency_micros: Option<u64>,
    /// The longest stop latency seen, in microseconds.
    pub max_stop_latency_micros: u64,
    /// Tasks registered by the host.
    pub tasks_registered: u64,
    /// `RunTask` effects handed out.
    pub tasks_run: u64,
    /// Tasks reported done.
    pub tasks_done: u64,
    /// Tasks reported failed.
    pub tasks_failed: u64,
    /// Tasks written into a journal because the housekeeping deadline passed.
    pub tasks_carried_over: u64,
    /// Tasks read back from a journal at start.
    pub tasks_resumed: u64,
    /// Journals sealed for the host to persist.
    pub journals_written: u64,
    /// Journals refused at start (truncated, corrupted, foreign, too large).
    pub journals_rejected: u64,
    /// Host reports refused, stale generations included.
    pub reports_refused: u64,
    /// Host reports refused because they named an earlier session.
    pub stale_reports: u64,
    /// Starts cancelled because the tunnel did not come up within the start deadline.
    pub start_timeouts: u64,
    /// Stops that went on without a teardown report, past the teardown deadline.
    pub teardown_timeouts: u64,
    /// Stops that completed without a persist report, past the persist deadline.
    pub persist_timeouts: u64,
    /// Tasks sealed into a journal whose persistence was never confirmed (the persist deadline
    /// passed): they run again only if the host did persist that journal.
    pub tasks_unconfirmed: u64,
    /// Path reports with a new fingerprint while the tunnel was up (each starts the debounce).
    pub path_changes: u64,
    /// `RestartTunnel` effects handed out.
    pub restarts_run: u64,
    /// Restart attempts reported done.
    pub restarts_done: u64,
    /// Restart attempts that failed: reported failed, or past their deadline.
    pub restarts_failed: u64,
    /// Restart attempts past their deadline (counted in `restarts_failed` too).
    pub restart_timeouts: u64,
    /// `AbandonRestart` effects: attempts whose path was gone, that passed their deadline, or
    /// that were running when the session stopped.
    pub restarts_abandoned: u64,
    /// Sessions cancelled because every attempt on a path failed.
    pub restarts_exhausted: u64,
    /// Wakes reported.
    pub wakes: u64,
    /// Wakes after a sleep long enough to restart the tunnel.
    pub wake_restarts: u64,
}

/// Why a start was refused. Nothing changed (except the `journals_rejected` counter for a bad
/// journal).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StartError {
    /// A session is already starting or running.
    AlreadyActive,
    /// The previous session is still stopping. Starts are refused rather than queued: the
    /// system does not start a provider before its stop completed, and a queued start would
    /// run with a tunnel the host is still tearing down. Retry after `CompleteStop`.
    StopInProgress,
    /// The journal was refused. The host should keep or delete it (it is worthless if corrupt)
    /// and start again without it.
    Journal(JournalDecodeError),
    /// The journal holds more tasks than the queue can take.
    JournalTooLarge {
        /// Tasks in the journal.
        tasks: usize,
        /// Tasks the queue holds.
        capacity: usize,
    },
    /// The journal's generation is the largest possible, so no later one exists.
    GenerationExhausted,
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::AlreadyActive => f.write_str("a session is already starting or running"),
            StartError::StopInProgress => {
                f.write_str("the previous session is still stopping; start again once it completed")
            }
            StartError::Journal(error) => write!(f, "journal refused: {error}"),
            StartError::JournalTooLarge { tasks, capacity } => write!(
                f,
                "journal holds {tasks} tasks but the queue holds only {capacity}"
            ),
            StartError::GenerationExhausted => f.write_str("session generations are exhausted"),
        }
    }
}

/// Why a stop or cancel request was refused. Nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopError {
    /// No session is starting or running.
    NotActive,
    /// A stop or cancel is already in progress; it continues unchanged and ends with the effect
    /// it was going to end with. (The completion handler must be called once, so a second
    /// request cannot change how the session ends.)
    AlreadyStopping,
}

impl fmt::Display for StopError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StopError::NotActive => "no session is active",
            StopError::AlreadyStopping => "the session is already stopping",
        })
    }
}

/// Why a task could not be registered. Nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TaskRegisterError {
    /// No session is active (idle or stopped).
    NoSession,
    /// The stop is past housekeeping (the deadline passed and the journal is sealed, or every
    /// task ended and the stop is completing); a new task would be neither run nor journaled.
    HousekeepingOver,
    /// The queue is full.
    QueueFull {
        /// Tasks the queue holds.
        capacity: usize,
    },
    /// The payload is longer than [`crate::TASK_PAYLOAD_MAX`].
    PayloadTooLong {
        /// The length offered.
        len: usize,
    },
}

impl fmt::Display for TaskRegisterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskRegisterError::NoSession => f.write_str("no session is active"),
            TaskRegisterError::HousekeepingOver => {
                f.write_str("the stop is past housekeeping; the task would never run")
            }
            TaskRegisterError::QueueFull { capacity } => {
                write!(f, "housekeeping queue full ({capacity} tasks)")
            }
            TaskRegisterError::PayloadTooLong { len } => write!(
                f,
                "task payload of {len} bytes is longer than the maximum of {}",
                crate::journal::TASK_PAYLOAD_MAX
            ),
        }
    }
}

/// Why a host report was refused. Nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReportError {
    /// The report names an earlier session than the current one: a late callback. Ignore it.
    StaleGeneration {
        /// The generation in the report.
        reported: Generation,
        /// The current generation.
        current: Generation,
    },
    /// The report names a generation this machine never issued (0, or above the current one):
    /// a host bug, such as a generation from another machine or a corrupted value.
    UnknownGeneration {
        /// The generation in the report.
        reported: Generation,
        /// The current generation.
        current: Generation,
    },
    /// The machine is not waiting for this report in its current state (a duplicate
    /// `on_tunnel_started`, a teardown report while running, a start report after a stop
    /// abandoned the start).
    Unexpected {
        /// The state the machine is in.
        state: LifecycleState,
    },
    /// No task with this id was ever queued.
    UnknownTask {
        /// The id reported.
        task: TaskId,
    },
    /// The restart attempt is not the one running: it was abandoned, passed its deadline, or was
    /// reported before. A late callback from an earlier attempt; ignore it.
    StaleRestart {
        /// The id reported.
        restart: RestartId,
    },
    /// No restart attempt with this id was ever announced.
    UnknownRestart {
        /// The id reported.
        restart: RestartId,
    },
    /// The task already ended: it was reported before (a duplicate report), or it was carried
    /// into a journal by a stop that has completed.
    TaskAlreadyEnded {
        /// The id reported.
        task: TaskId,
    },
    /// The task has not been handed out by a `RunTask` effect yet.
    TaskNotRunning {
        /// The id reported.
        task: TaskId,
    },
    /// The housekeeping deadline passed while the task ran, so it is in the journal and will run
    /// again at the next start; the late report does not take it out.
    TaskCarriedOver {
        /// The id reported.
        task: TaskId,
    },
}

impl fmt::Display for ReportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReportError::StaleGeneration { reported, current } => {
                write!(f, "stale report for {reported} (current is {current})")
            }
            ReportError::UnknownGeneration { reported, current } => {
                write!(
                    f,
                    "report for {reported}, never issued (current is {current})"
                )
            }
            ReportError::Unexpected { state } => {
                write!(f, "report not expected in state {state:?}")
            }
            ReportError::StaleRestart { restart } => {
                write!(f, "{restart} is not the attempt running")
            }
            ReportError::UnknownRestart { restart } => write!(f, "{restart} was never announced"),
            ReportError::UnknownTask { task } => write!(f, "{task} was never queued"),
            ReportError::TaskAlreadyEnded { task } => write!(f, "{task} already ended"),
            ReportError::TaskNotRunning { task } => write!(f, "{task} is not running"),
            ReportError::TaskCarriedOver { task } => {
                write!(f, "{task} was carried into the journal")
            }
        }
    }
}

/// Why the journal could not be written. Nothing was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WriteJournalError {
    /// No journal is sealed: only after a `PersistJournal` effect (until the stop completes)
    /// is there one to write.
    NoJournal,
    /// The buffer is too small; `required` bytes are needed.
    BufferTooSmall {
        /// Bytes the journal needs.
        required: usize,
    },
}

impl fmt::Display for WriteJournalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WriteJournalError::NoJournal => f.write_str("no journal to write"),
            WriteJournalError::BufferTooSmall { required } => {
                write!(
                    f,
                    "buffer too small for the journal: {required} bytes required"
                )
            }
        }
    }
}

impl From<JournalEncodeError> for WriteJournalError {
    fn from(error: JournalEncodeError) -> Self {
        match error {
            JournalEncodeError::BufferTooSmall { required } => {
                WriteJournalError::BufferTooSmall { required }
            }
            // The queue never holds more tasks than a journal can.
            JournalEncodeError::TooManyTasks { .. } => WriteJournalError::NoJournal,
        }
    }
}
