//! C ABI of the session lifecycle machine: `TidegateLifecycle`.

use core::cell::Cell;
use core::ffi::c_void;

use tidegate_core::{
    CancelCause, Generation, Instant, JournalDecodeError, Lifecycle, LifecycleConfig,
    LifecycleConfigError, LifecycleEffect, LifecycleState, LifecycleStats, PathFingerprint,
    PathReport, ReportError, RestartId, StartError, StopError, StopOutcome, StopPhase,
    TASK_PAYLOAD_MAX, TaskId, TaskRegisterError, TaskSlot, WriteJournalError,
};

use crate::black_box::{self, TidegateBlackBoxRecord};
use crate::boundary::{Handle, bytes, call, call_mut, require_non_null, slice_len_fits, write_out};
use crate::place::{self, Carver, Memory, Region};
use crate::status::TidegateStatus;

/// The largest payload of a housekeeping task, in bytes.
pub const TIDEGATE_TASK_PAYLOAD_MAX: usize = 32;

/// The most tasks a `TidegateLifecycle` can hold (one journal's limit).
pub const TIDEGATE_LIFECYCLE_TASK_CAPACITY_MAX: u32 = 65_535;

const _: () = assert!(TIDEGATE_TASK_PAYLOAD_MAX == TASK_PAYLOAD_MAX);
const _: () =
    assert!(TIDEGATE_LIFECYCLE_TASK_CAPACITY_MAX as usize == tidegate_core::JOURNAL_TASKS_MAX);

/// The session lifecycle of one provider process: start, stop and cancel in the order Apple
/// requires (tear down, housekeeping, then the completion handler), with housekeeping bounded by
/// a deadline and the unfinished tasks carried to the next start in a journal the host persists.
/// While the tunnel is up, path changes and wakes from a long sleep restart it: debounced, one
/// attempt at a time, retried with back-off a bounded number of times, then cancelled rather
/// than left up but dead.
///
/// Drive it with the `tidegate_lifecycle_on_*` inputs and, after every input, call
/// `tidegate_lifecycle_poll_effect` until it reports `TIDEGATE_LIFECYCLE_EFFECT_KIND_NONE`.
/// Housekeeping is at-least-once: a task carried over may run again after it had in fact
/// finished, so every task must be idempotent.
///
/// All its memory is one block of `tidegate_lifecycle_footprint` bytes, allocated by
/// `tidegate_lifecycle_new` or given to `tidegate_lifecycle_init`; nothing is allocated
/// afterwards.
///
/// Thread safety: not safe for concurrent use. Calls on one handle must not overlap (use one
/// serial dispatch queue, or a lock of your own); moving the handle between threads is fine.
pub struct TidegateLifecycle {
    poison: Cell<bool>,
    #[cfg_attr(not(feature = "std"), allow(dead_code))]
    memory: Memory,
    engine: Lifecycle<Region<TaskSlot>>,
}

impl Handle for TidegateLifecycle {
    fn poison(&self) -> &Cell<bool> {
        &self.poison
    }
    #[cfg(feature = "std")]
    fn memory(&self) -> Memory {
        self.memory
    }
}

/// Configuration of a `TidegateLifecycle`. Start from `tidegate_lifecycle_config_default()`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TidegateLifecycleConfig {
    /// How long housekeeping may run after the teardown is reported, in microseconds. When it
    /// passes, the tasks not yet finished go into the journal and the stop completes. Default
    /// 250 ms; not 0 (refused with `TIDEGATE_STATUS_CONFIG_ZERO_DURATION`).
    pub housekeeping_deadline_us: u64,
    /// How many housekeeping tasks the queue holds at once: 1 to
    /// `TIDEGATE_LIFECYCLE_TASK_CAPACITY_MAX` (default 64).
    pub task_capacity: u32,
    /// How many `RUN_TASK` effects may be outstanding at once: 1 to 65535 (default 1).
    pub tasks_in_flight_max: u32,
    /// How long a start may take, from `tidegate_lifecycle_on_start` to
    /// `tidegate_lifecycle_on_tunnel_started`, in microseconds. Past it the session is
    /// cancelled: the stop runs and ends with `CANCEL_WITH_ERROR` whose `cancel_cause` is
    /// `TIDEGATE_CANCEL_CAUSE_START_TIMED_OUT`. Default 60 s; not 0 (refused with
    /// `TIDEGATE_STATUS_CONFIG_ZERO_DURATION`).
    pub start_deadline_us: u64,
    /// How long the teardown may take, from the stop or cancel request to
    /// `tidegate_lifecycle_on_torn_down`, in microseconds. Past it housekeeping begins as if
    /// the teardown had been reported (a late report is refused). Default 5 s; not 0.
    pub teardown_deadline_us: u64,
    /// How long persisting the journal may take, from the `PERSIST_JOURNAL` effect to
    /// `tidegate_lifecycle_on_journal_persisted`, in microseconds. Past it the stop completes
    /// without the report (its tasks count as `tasks_unconfirmed`). Default 2 s; not 0.
    pub persist_deadline_us: u64,
    /// How long a path change must hold before the tunnel restarts on it, in microseconds;
    /// each further change starts it again. 0 restarts at once on every change. Default 1 s.
    pub path_debounce_us: u64,
    /// How long one restart attempt may take, from its `RESTART_TUNNEL` effect to its report,
    /// in microseconds. Past it the attempt is abandoned (an `ABANDON_RESTART` effect) and
    /// counts as failed. Default 20 s; not 0 (`TIDEGATE_STATUS_CONFIG_ZERO_DURATION`).
    pub restart_deadline_us: u64,
    /// The wait after the first failed attempt before the next, in microseconds; it doubles
    /// after each further failure, up to `restart_backoff_max_us`. Default 1 s; not 0
    /// (`TIDEGATE_STATUS_CONFIG_ZERO_DURATION`: retrying at once is the storm this prevents).
    pub restart_backoff_us: u64,
    /// The longest back-off, in microseconds. Default 30 s; not below `restart_backoff_us`
    /// (`TIDEGATE_STATUS_CONFIG_RESTART`).
    pub restart_backoff_max_us: u64,
    /// A wake reported after a sleep at least this long restarts the tunnel on the latest path.
    /// 0: a wake never restarts. Default 120 s (NAT mappings of UDP flows last at least two
    /// minutes, RFC 4787).
    pub wake_restart_after_us: u64,
    /// How many attempts one path gets before the session is cancelled with cause
    /// `TIDEGATE_CANCEL_CAUSE_RESTARTS_EXHAUSTED`; a new path gets them all again (a path that
    /// flaps away and back within the debounce keeps its count and back-off). 1 to 65535,
    /// default 4; 0 is refused with `TIDEGATE_STATUS_CONFIG_RESTART`.
    pub restart_attempts_max: u32,
    /// Must be 0.
    pub reserved: u32,
}

/// Why a session was cancelled (`cancel_cause` of a `CANCEL_WITH_ERROR` effect).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TidegateCancelCause {
    /// The host called `tidegate_lifecycle_on_cancel` with the effect's `error_code`.
    Host = 0,
    /// The tunnel did not come up within `start_deadline_us`; `error_code` is 0.
    StartTimedOut = 1,
    /// Every restart attempt on the latest path failed (`restart_attempts_max` of them); the
    /// tunnel is cancelled rather than left up but dead. `error_code` is 0.
    RestartsExhausted = 2,
}

/// The state of a `TidegateLifecycle`; the stopping state is split into its phases.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TidegateLifecycleState {
    /// No session has started yet.
    Idle = 0,
    /// A start was accepted; the tunnel is being brought up.
    Starting = 1,
    /// The tunnel is up; tasks carried over from the journal run now.
    Running = 2,
    /// Stopping: the host is tearing the tunnel down.
    StoppingTearingDown = 3,
    /// Stopping: housekeeping tasks run until done or the deadline.
    StoppingHousekeeping = 4,
    /// Stopping: the deadline passed; the host writes and persists the journal.
    StoppingPersistingJournal = 5,
    /// Stopping: the next effect completes the stop (or cancels with the error).
    StoppingCompleting = 6,
    /// The last stop completed; a new start is accepted.
    Stopped = 7,
    /// The tunnel is up but its path changed (or the device woke from a long sleep): a restart
    /// is due, running, backing off after a failure, or waiting for a usable path. Set the
    /// provider's `reasserting` to true while in this state.
    Reasserting = 8,
}

/// How `tidegate_lifecycle_on_stop` proceeds.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TidegateStopOutcome {
    /// The session was running; it now tears down, does housekeeping and completes.
    Stopping = 0,
    /// The stop came while starting: fail the pending start completion handler; a later
    /// `tidegate_lifecycle_on_tunnel_started` is refused; the stop proceeds as usual.
    StartAbandoned = 1,
}

/// The kind of a `TidegateLifecycleEffect`; it says which fields are meaningful.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TidegateLifecycleEffectKind {
    /// Nothing to do until the next input or timeout.
    None = 0,
    /// Bring the tunnel up, then call `tidegate_lifecycle_on_tunnel_started`.
    /// `carried_over_tasks` tasks from the journal will run once it is up.
    StartTunnel = 1,
    /// Run task `task_id` (`task_kind`, `payload`), then report it done or failed.
    RunTask = 2,
    /// Tear the tunnel down, then call `tidegate_lifecycle_on_torn_down`.
    TearDown = 3,
    /// Write the journal (`journal_len` bytes) with `tidegate_lifecycle_write_journal`, persist
    /// it in place of any earlier one, then call `tidegate_lifecycle_on_journal_persisted`.
    PersistJournal = 4,
    /// Every task of the journal handed to the last start has ended: delete the persisted journal.
    DiscardJournal = 5,
    /// Call the stop completion handler. The process may be killed right after.
    CompleteStop = 6,
    /// Call `cancelTunnelWithError` with `error_code` (or fail the start with it if the cancel
    /// came while starting).
    CancelWithError = 7,
    /// Restart the tunnel on path `path` (reconnect its transport there; keep the interface and
    /// its settings), then report `tidegate_lifecycle_on_restart_done` or
    /// `tidegate_lifecycle_on_restart_failed` with `restart_id`. `restart_attempt` is 1 for the
    /// first attempt on this path. One attempt runs at a time.
    RestartTunnel = 8,
    /// Stop attempt `restart_id` now and forget it (its path is gone, it passed its deadline, or
    /// the session is stopping). A later report for it returns `REPORT_STALE_RESTART`. The next
    /// attempt, if any, comes as its own `RESTART_TUNNEL` after this effect.
    AbandonRestart = 9,
}

/// One thing the host must do next. Every effect carries the session's generation; echo it in
/// the reports.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TidegateLifecycleEffect {
    /// What to do; `TIDEGATE_LIFECYCLE_EFFECT_KIND_NONE` when there is nothing.
    pub kind: TidegateLifecycleEffectKind,
    /// `RUN_TASK`: the host-defined kind of task.
    pub task_kind: u32,
    /// The session the effect belongs to.
    pub generation: u64,
    /// `RUN_TASK`: the task to run and report.
    pub task_id: u64,
    /// `PERSIST_JOURNAL`: bytes the journal takes.
    pub journal_len: u64,
    /// `CANCEL_WITH_ERROR`: the code given to `tidegate_lifecycle_on_cancel`.
    pub error_code: u32,
    /// `START_TUNNEL`: tasks read back from the journal.
    pub carried_over_tasks: u16,
    /// `RUN_TASK`: bytes of `payload` in use.
    pub payload_len: u8,
    /// `CANCEL_WITH_ERROR`: who cancelled (`TIDEGATE_CANCEL_CAUSE_*`); 0 otherwise.
    pub cancel_cause: TidegateCancelCause,
    /// `RUN_TASK`: the task's argument (the first `payload_len` bytes).
    pub payload: [u8; TIDEGATE_TASK_PAYLOAD_MAX],
    /// `RESTART_TUNNEL` and `ABANDON_RESTART`: the attempt.
    pub restart_id: u64,
    /// `RESTART_TUNNEL`: the path fingerprint to restart on, as reported.
    pub path: u64,
    /// `RESTART_TUNNEL`: 1 for the first attempt on this path, then 2, 3, ...
    pub restart_attempt: u32,
    /// Always 0.
    pub reserved: u32,
}

/// Counters of a `TidegateLifecycle`. Counters saturate.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TidegateLifecycleStats {
    /// Starts accepted.
    pub sessions_started: u64,
    /// Stops and cancels completed.
    pub stops_completed: u64,
    /// Microseconds from the last stop or cancel request to its completion effect, on the host's
    /// clock; 0 before the first completion.
    pub last_stop_latency_us: u64,
    /// The longest stop latency seen, in microseconds.
    pub max_stop_latency_us: u64,
    /// Tasks registered by the host.
    pub tasks_registered: u64,
    /// `RUN_TASK` effects handed out.
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
    /// Host reports refused, stale ones included.
    pub reports_refused: u64,
    /// Host reports refused because they named an earlier session.
    pub stale_reports: u64,
    /// Starts cancelled because the tunnel did not come up within the start deadline.
    pub start_timeouts: u64,
    /// Stops that went on without a teardown report, past the teardown deadline.
    pub teardown_timeouts: u64,
    /// Stops that completed without a persist report, past the persist deadline.
    pub persist_timeouts: u64,
    /// Tasks sealed into a journal whose persistence was never confirmed: they run again only
    /// if the host did persist that journal.
    pub tasks_unconfirmed: u64,
    /// Path reports with a new fingerprint while the tunnel was up.
    pub path_changes: u64,
    /// `RESTART_TUNNEL` effects handed out.
    pub restarts_run: u64,
    /// Restart attempts reported done.
    pub restarts_done: u64,
    /// Restart attempts that failed: reported failed, or past their deadline.
    pub restarts_failed: u64,
    /// Restart attempts past their deadline (counted in `restarts_failed` too).
    pub restart_timeouts: u64,
    /// `ABANDON_RESTART` effects.
    pub restarts_abandoned: u64,
    /// Sessions cancelled because every attempt on a path failed.
    pub restarts_exhausted: u64,
    /// Wakes reported.
    pub wakes: u64,
    /// Wakes after a sleep long enough to restart the tunnel.
    pub wake_restarts: u64,
}

/// The default configuration: a 250 ms housekeeping deadline (short enough that the user's next
/// start is not held up, long enough for a few quick tasks), 64 tasks, one task at a time,
/// deadlines of 60 s to start, 5 s to tear down and 2 s to persist the journal; restarts after a
/// 1 s path debounce, 20 s per attempt, 4 attempts per path with a back-off from 1 s doubling up
/// to 30 s, and a restart on waking from a sleep of 120 s or more.
#[unsafe(no_mangle)]
pub extern "C" fn tidegate_lifecycle_config_default() -> TidegateLifecycleConfig {
    let core = LifecycleConfig::default();
    TidegateLifecycleConfig {
        housekeeping_deadline_us: core.housekeeping_deadline_micros,
        task_capacity: 64,
        tasks_in_flight_max: u32::from(core.tasks_in_flight_max),
        start_deadline_us: core.start_deadline_micros,
        teardown_deadline_us: core.teardown_deadline_micros,
        persist_deadline_us: core.persist_deadline_micros,
        path_debounce_us: core.path_debounce_micros,
        restart_deadline_us: core.restart_deadline_micros,
        restart_backoff_us: core.restart_backoff_micros,
        restart_backoff_max_us: core.restart_backoff_max_micros,
        wake_restart_after_us: core.wake_restart_after_micros,
        restart_attempts_max: u32::from(core.restart_attempts_max),
        reserved: 0,
    }
}

/// Writes to `*out_size` and `*out_align` the size and alignment of the memory a lifecycle machine (state idle) with
/// `config` lives in, in one block. That is all the memory it ever uses:
/// `tidegate_lifecycle_new` allocates exactly this block, and `tidegate_lifecycle_init` places it in a
/// block of yours.
///
/// Returns a `TIDEGATE_STATUS_CONFIG_*` status if the configuration is invalid.
///
/// # Safety
/// `config` must be NULL or point to a valid `TidegateLifecycleConfig`; `out_size` and `out_align` must be
/// NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_lifecycle_footprint(
    config: *const TidegateLifecycleConfig,
    out_size: *mut usize,
    out_align: *mut usize,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe { place::footprint::<TidegateLifecycle>(config, out_size, out_align) }
}

/// Creates a lifecycle machine (state idle) with `config`, in memory it allocates, and writes its handle to
/// `*out_lifecycle`. The one allocation is `tidegate_lifecycle_footprint(config)` bytes; nothing is
/// allocated afterwards. Free the handle with `tidegate_lifecycle_free`.
///
/// Returns a `TIDEGATE_STATUS_CONFIG_*` status for an invalid configuration, or
/// `TIDEGATE_STATUS_OUT_OF_MEMORY` if the allocation fails.
///
/// # Safety
/// `config` must be NULL or point to a valid `TidegateLifecycleConfig`; `out_lifecycle` must be NULL or valid for
/// writing a pointer.
#[cfg(feature = "std")]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_lifecycle_new(
    config: *const TidegateLifecycleConfig,
    out_lifecycle: *mut *mut TidegateLifecycle,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe { place::new(config, 0, out_lifecycle) }
}

/// Creates a lifecycle machine (state idle) with `config`, in the `len` bytes at `memory`, and writes its
/// handle (`memory` itself) to `*out_lifecycle`: for hosts that place engines in memory of their own.
///
/// `memory` must hold the size `tidegate_lifecycle_footprint` gives and start on its alignment, or
/// the call returns `TIDEGATE_STATUS_BUFFER_TOO_SMALL` or `TIDEGATE_STATUS_MISALIGNED`. Nothing
/// else is ever used. Call `tidegate_lifecycle_free` when done: it ends the handle and leaves the
/// memory to you.
///
/// # Safety
/// `config` must be NULL or point to a valid `TidegateLifecycleConfig`; `memory` must be NULL or valid for
/// reading and writing `len` bytes, used by nothing else until the handle is freed; `out_lifecycle`
/// must be NULL or valid for writing a pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_lifecycle_init(
    config: *const TidegateLifecycleConfig,
    memory: *mut c_void,
    len: usize,
    out_lifecycle: *mut *mut TidegateLifecycle,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe { place::init(config, 0, memory, len, out_lifecycle) }
}

/// Frees a lifecycle machine (state idle): ends it and releases its memory (memory given to `tidegate_lifecycle_init` goes
/// back to the caller). `NULL` is a no-op. Works on a poisoned handle too.
///
/// # Safety
/// `lifecycle` must be NULL or a handle from `tidegate_lifecycle_new` or `tidegate_lifecycle_init` that was
/// not freed yet, with no other call on it running.
#[cfg(feature = "std")]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_lifecycle_free(lifecycle: *mut TidegateLifecycle) {
    // SAFETY: forwarded caller contract.
    unsafe { place::free(lifecycle) }
}

/// Starts a session (from idle or stopped) and writes its generation to `*out_generation`.
///
/// `journal` is the journal persisted by the last stop, `journal_len` bytes exactly, or NULL
/// (with `journal_len` 0) for none. Its tasks run once the tunnel is up. A bad journal is
/// refused with a `TIDEGATE_STATUS_JOURNAL_*` status and nothing changes; start again with NULL
/// to go on without it. `TIDEGATE_STATUS_LIFECYCLE_STOP_IN_PROGRESS` means the previous stop has
/// not completed: starts are refused, not queued.
///
/// # Safety
/// `lifecycle` must be NULL or a live handle; `journal` must be NULL or valid for reading
/// `journal_len` bytes; `out_generation` must be NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_lifecycle_on_start(
    lifecycle: *mut TidegateLifecycle,
    now_us: u64,
    journal: *const u8,
    journal_len: usize,
    out_generation: *mut u64,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(lifecycle, |l| {
            require_non_null([out_generation.cast_const().cast()])?;
            let journal = if journal.is_null() {
                if journal_len != 0 {
                    return Err(TidegateStatus::NullArgument);
                }
                None
            } else {
                Some(bytes(journal, journal_len)?)
            };
            let generation = l
                .engine
                .on_start(Instant::from_micros(now_us), journal)
                .map_err(status_of_start)?;
            write_out(out_generation, generation.0)
        })
    }
}

/// Reports that the tunnel of `generation` is up: the session runs.
///
/// # Safety
/// `lifecycle` must be NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_lifecycle_on_tunnel_started(
    lifecycle: *mut TidegateLifecycle,
    now_us: u64,
    generation: u64,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(lifecycle, |l| {
            l.engine
                .on_tunnel_started(Instant::from_micros(now_us), Generation(generation))
                .map_err(status_of_report)
        })
    }
}

/// A stop request (`stopTunnel`). Writes to `*out_outcome` whether the session was running or the
/// start is abandoned. Refused with `TIDEGATE_STATUS_LIFECYCLE_NOT_ACTIVE` or
/// `TIDEGATE_STATUS_LIFECYCLE_ALREADY_STOPPING`.
///
/// # Safety
/// `lifecycle` must be NULL or a live handle; `out_outcome` must be NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_lifecycle_on_stop(
    lifecycle: *mut TidegateLifecycle,
    now_us: u64,
    out_outcome: *mut TidegateStopOutcome,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(lifecycle, |l| {
            require_non_null([out_outcome.cast_const().cast()])?;
            let outcome = match l.engine.on_stop(Instant::from_micros(now_us)) {
                Ok(StopOutcome::Stopping) => TidegateStopOutcome::Stopping,
                Ok(StopOutcome::StartAbandoned) => TidegateStopOutcome::StartAbandoned,
                Err(error) => return Err(status_of_stop(error)),
            };
            write_out(out_outcome, outcome)
        })
    }
}

/// The provider hit error `error_code` and must end the session: the stop runs as for
/// `tidegate_lifecycle_on_stop` and ends with `CANCEL_WITH_ERROR`. Refused while a stop is in
/// progress (`TIDEGATE_STATUS_LIFECYCLE_ALREADY_STOPPING`: that stop ends as it would have).
///
/// # Safety
/// `lifecycle` must be NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_lifecycle_on_cancel(
    lifecycle: *mut TidegateLifecycle,
    now_us: u64,
    error_code: u32,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(lifecycle, |l| {
            l.engine
                .on_cancel(Instant::from_micros(now_us), error_code)
                .map_err(status_of_stop)
        })
    }
}

/// Reports that the tunnel of `generation` is torn down: housekeeping and its deadline start.
///
/// # Safety
/// `lifecycle` must be NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_lifecycle_on_torn_down(
    lifecycle: *mut TidegateLifecycle,
    now_us: u64,
    generation: u64,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(lifecycle, |l| {
            l.engine
                .on_torn_down(Instant::from_micros(now_us), Generation(generation))
                .map_err(status_of_report)
        })
    }
}

/// Queues a housekeeping task (`kind`, and `payload_len` bytes of `payload`, at most
/// `TIDEGATE_TASK_PAYLOAD_MAX`) and writes its id to `*out_task_id`. Tasks registered while the
/// session runs wait for the stop's housekeeping. Tasks must be idempotent.
///
/// # Safety
/// `lifecycle` must be NULL or a live handle; `payload` must be valid for reading `payload_len`
/// bytes (NULL only if `payload_len` is 0); `out_task_id` must be NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_lifecycle_register_task(
    lifecycle: *mut TidegateLifecycle,
    now_us: u64,
    kind: u32,
    payload: *const u8,
    payload_len: usize,
    out_task_id: *mut u64,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(lifecycle, |l| {
            require_non_null([out_task_id.cast_const().cast()])?;
            let payload = bytes(payload, payload_len)?;
            let task = l
                .engine
                .register_task(Instant::from_micros(now_us), kind, payload)
                .map_err(status_of_register)?;
            write_out(out_task_id, task.0)
        })
    }
}

/// Reports task `task_id` of `generation` done.
///
/// # Safety
/// `lifecycle` must be NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_lifecycle_on_task_done(
    lifecycle: *mut TidegateLifecycle,
    now_us: u64,
    generation: u64,
    task_id: u64,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(lifecycle, |l| {
            l.engine
                .on_task_done(
                    Instant::from_micros(now_us),
                    Generation(generation),
                    TaskId(task_id),
                )
                .map_err(status_of_report)
        })
    }
}

/// Reports task `task_id` of `generation` failed; it ends there (not retried, not journaled).
///
/// # Safety
/// `lifecycle` must be NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_lifecycle_on_task_failed(
    lifecycle: *mut TidegateLifecycle,
    now_us: u64,
    generation: u64,
    task_id: u64,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(lifecycle, |l| {
            l.engine
                .on_task_failed(
                    Instant::from_micros(now_us),
                    Generation(generation),
                    TaskId(task_id),
                )
                .map_err(status_of_report)
        })
    }
}

/// Reports that the journal of `generation` is persisted: the stop can complete.
///
/// # Safety
/// `lifecycle` must be NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_lifecycle_on_journal_persisted(
    lifecycle: *mut TidegateLifecycle,
    now_us: u64,
    generation: u64,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(lifecycle, |l| {
            l.engine
                .on_journal_persisted(Instant::from_micros(now_us), Generation(generation))
                .map_err(status_of_report)
        })
    }
}

/// Reports the current network path: `path` is a fingerprint the host computes from what
/// identifies the path for its tunnel (a hash of interface type, name and local addresses; never
/// an address itself), 0 for no usable path (`NWPath.status` unsatisfied). Call it from the path
/// monitor's update handler with every update.
///
/// A report of the path last reported changes nothing. Before the tunnel is up it records the
/// path the tunnel comes up on. While it is up, a new path that holds for `path_debounce_us`
/// restarts the tunnel on it (a `RESTART_TUNNEL` effect; one attempt at a time, an attempt for a
/// path already gone is abandoned first). With no usable path the session waits, reasserting,
/// for one. Never refused for its value. Writes to `*out_restart_scheduled` whether the report
/// started a debounce that may restart the tunnel.
///
/// # Safety
/// `lifecycle` must be NULL or a live handle; `out_restart_scheduled` must be NULL or valid for
/// writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_lifecycle_on_path_change(
    lifecycle: *mut TidegateLifecycle,
    now_us: u64,
    path: u64,
    out_restart_scheduled: *mut bool,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(lifecycle, |l| {
            require_non_null([out_restart_scheduled.cast_const().cast()])?;
            let report = l
                .engine
                .on_path_change(Instant::from_micros(now_us), PathFingerprint(path));
            write_out(
                out_restart_scheduled,
                matches!(report, PathReport::Scheduled { .. }),
            )
        })
    }
}

/// Reports that the device woke after sleeping `slept_us` microseconds (on Apple platforms:
/// how much further `CLOCK_MONOTONIC` (continuous) moved than `CLOCK_UPTIME_RAW` across the
/// sleep; `NEPacketTunnelProvider.wake()` is the place). While the tunnel is up, a sleep of
/// `wake_restart_after_us` or more restarts it on the latest path, through the path debounce
/// (not when no path was ever reported); `*out_restart_scheduled` says whether it did. Deadlines need no wake report: a `now_us` that
/// jumped fires each deadline and timer once.
///
/// # Safety
/// `lifecycle` must be NULL or a live handle; `out_restart_scheduled` must be NULL or valid for
/// writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_lifecycle_on_wake(
    lifecycle: *mut TidegateLifecycle,
    now_us: u64,
    slept_us: u64,
    out_restart_scheduled: *mut bool,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(lifecycle, |l| {
            require_non_null([out_restart_scheduled.cast_const().cast()])?;
            let scheduled = l.engine.on_wake(Instant::from_micros(now_us), slept_us);
            write_out(out_restart_scheduled, scheduled)
        })
    }
}

/// Reports restart attempt `restart_id` of `generation` done: the tunnel is up on the
/// attempt's path and the session leaves `REASSERTING`. An attempt that was abandoned is refused
/// with `TIDEGATE_STATUS_REPORT_STALE_RESTART` and changes nothing.
///
/// # Safety
/// `lifecycle` must be NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_lifecycle_on_restart_done(
    lifecycle: *mut TidegateLifecycle,
    now_us: u64,
    generation: u64,
    restart_id: u64,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe { restart_report(lifecycle, now_us, generation, restart_id, true) }
}

/// Reports restart attempt `restart_id` of `generation` failed. It is retried on the same path
/// after the back-off; after `restart_attempts_max` failures the session is cancelled
/// (`CANCEL_WITH_ERROR`, cause `TIDEGATE_CANCEL_CAUSE_RESTARTS_EXHAUSTED`).
///
/// # Safety
/// `lifecycle` must be NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_lifecycle_on_restart_failed(
    lifecycle: *mut TidegateLifecycle,
    now_us: u64,
    generation: u64,
    restart_id: u64,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe { restart_report(lifecycle, now_us, generation, restart_id, false) }
}

/// A restart report, done or failed.
///
/// # Safety
/// `lifecycle` must be NULL or a live handle.
unsafe fn restart_report(
    lifecycle: *mut TidegateLifecycle,
    now_us: u64,
    generation: u64,
    restart_id: u64,
    done: bool,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(lifecycle, |l| {
            let (now, generation) = (Instant::from_micros(now_us), Generation(generation));
            let restart = RestartId(restart_id);
            if done {
                l.engine.on_restart_done(now, generation, restart)
            } else {
                l.engine.on_restart_failed(now, generation, restart)
            }
            .map_err(status_of_report)
        })
    }
}

/// Writes the sealed journal into `buf` (`buf_len` bytes) and its length to `*out_len`.
///
/// Available from the `PERSIST_JOURNAL` effect until the stop completes; otherwise
/// `TIDEGATE_STATUS_JOURNAL_NONE`. When `buf` is too small the call returns
/// `TIDEGATE_STATUS_BUFFER_TOO_SMALL`, writes nothing into `buf`, and writes the size required to
/// `*out_len` (the one out-parameter written on failure, as the README's conventions say; it is
/// also the effect's `journal_len`). Calling with `buf` NULL and `buf_len` 0 asks for the size.
///
/// # Safety
/// `lifecycle` must be NULL or a live handle; `buf` must be valid for writing `buf_len` bytes
/// (NULL only if `buf_len` is 0); `out_len` must be NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_lifecycle_write_journal(
    lifecycle: *const TidegateLifecycle,
    buf: *mut u8,
    buf_len: usize,
    out_len: *mut usize,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call(lifecycle, |l| {
            require_non_null([out_len.cast_const().cast()])?;
            let buf: &mut [u8] = if buf.is_null() {
                if buf_len != 0 {
                    return Err(TidegateStatus::NullArgument);
                }
                &mut []
            } else {
                slice_len_fits::<u8>(buf_len)?;
                // SAFETY: `buf` is non-NULL and valid for writing `buf_len` bytes by the
                // caller's contract (at most `isize::MAX`), and not aliased during the call.
                core::slice::from_raw_parts_mut(buf, buf_len)
            };
            match l.engine.write_journal(buf) {
                Ok(len) => write_out(out_len, len),
                Err(WriteJournalError::NoJournal) => Err(TidegateStatus::JournalNone),
                Err(WriteJournalError::BufferTooSmall { required }) => {
                    write_out(out_len, required)?;
                    Err(TidegateStatus::BufferTooSmall)
                }
                // A refusal added to the core later still refuses, with the generic status.
                Err(_) => Err(TidegateStatus::InvalidArgument),
            }
        })
    }
}

/// Writes to `*out_len` the length of the sealed journal, or returns
/// `TIDEGATE_STATUS_JOURNAL_NONE` when there is none.
///
/// # Safety
/// `lifecycle` must be NULL or a live handle; `out_len` must be NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_lifecycle_journal_len(
    lifecycle: *const TidegateLifecycle,
    out_len: *mut usize,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call(lifecycle, |l| {
            require_non_null([out_len.cast_const().cast()])?;
            let len = l.engine.journal_len().ok_or(TidegateStatus::JournalNone)?;
            write_out(out_len, len)
        })
    }
}

/// Writes the next thing to do to `*out_effect` (kind `NONE` when there is nothing). Call it
/// until it reports `NONE` after every input. `now_us` also applies the housekeeping deadline.
///
/// # Safety
/// `lifecycle` must be NULL or a live handle; `out_effect` must be NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_lifecycle_poll_effect(
    lifecycle: *mut TidegateLifecycle,
    now_us: u64,
    out_effect: *mut TidegateLifecycleEffect,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(lifecycle, |l| {
            require_non_null([out_effect.cast_const().cast()])?;
            let effect = l.engine.poll_effect(Instant::from_micros(now_us));
            write_out(out_effect, effect_of(effect))
        })
    }
}

/// Writes to `*out_deadline_us` when `tidegate_lifecycle_handle_timeout` must next be called:
/// the deadline of the phase that waits on the host (starting, tearing down, housekeeping,
/// persisting the journal), or while the tunnel is up the end of a path debounce, a restart
/// attempt's deadline or a back-off; otherwise `UINT64_MAX` (never).
///
/// # Safety
/// `lifecycle` must be NULL or a live handle; `out_deadline_us` must be NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_lifecycle_poll_timeout(
    lifecycle: *const TidegateLifecycle,
    out_deadline_us: *mut u64,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call(lifecycle, |l| {
            let deadline = l.engine.poll_timeout().unwrap_or(Instant::MAX);
            write_out(out_deadline_us, deadline.as_micros())
        })
    }
}

/// Applies the deadline or timer `now_us` reached, if any (see
/// `tidegate_lifecycle_poll_timeout`), each once however late `now_us` is. Idempotent. Poll
/// effects afterwards.
///
/// # Safety
/// `lifecycle` must be NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_lifecycle_handle_timeout(
    lifecycle: *mut TidegateLifecycle,
    now_us: u64,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(lifecycle, |l| {
            l.engine.handle_timeout(Instant::from_micros(now_us));
            Ok(())
        })
    }
}

/// Writes the current state to `*out_state` and the current generation to `*out_generation`
/// (0 before the first start).
///
/// # Safety
/// `lifecycle` must be NULL or a live handle; `out_state` and `out_generation` must be NULL or
/// valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_lifecycle_state(
    lifecycle: *const TidegateLifecycle,
    out_state: *mut TidegateLifecycleState,
    out_generation: *mut u64,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call(lifecycle, |l| {
            require_non_null([
                out_state.cast_const().cast(),
                out_generation.cast_const().cast(),
            ])?;
            write_out(out_state, state_of(l.engine.state()))?;
            write_out(out_generation, l.engine.generation().0)
        })
    }
}

/// Writes a snapshot of the counters to `*out_stats`.
///
/// # Safety
/// `lifecycle` must be NULL or a live handle; `out_stats` must be NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_lifecycle_stats(
    lifecycle: *const TidegateLifecycle,
    out_stats: *mut TidegateLifecycleStats,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call(lifecycle, |l| {
            write_out(out_stats, stats_of(l.engine.stats()))
        })
    }
}

/// Fills the lifecycle (generation, state, stops, timeouts, restarts) figures of `*record` from `lifecycle` (see `TidegateBlackBoxRecord`); the other
/// fields are left as they are. Refused with `TIDEGATE_STATUS_INVALID_ARGUMENT`, leaving
/// `*record` unchanged, if its `flags` or `reserved` are not valid.
///
/// # Safety
/// `record` must be NULL or valid for reading and writing; `lifecycle` must be NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_black_box_capture_lifecycle(
    record: *mut TidegateBlackBoxRecord,
    lifecycle: *const TidegateLifecycle,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call(lifecycle, |h| {
            black_box::capture(record, |r| r.capture_lifecycle(&h.engine))
        })
    }
}

/// The bytes `tidegate_lifecycle_new` allocates for `capacity` task slots.
impl place::Placed for TidegateLifecycle {
    type CConfig = TidegateLifecycleConfig;
    /// The core configuration and the task capacity.
    type Config = (LifecycleConfig, usize);
    /// The task slots.
    type Storage = Region<TaskSlot>;

    fn check(config: &TidegateLifecycleConfig) -> Result<(LifecycleConfig, usize), TidegateStatus> {
        let tasks_in_flight_max = u16::try_from(config.tasks_in_flight_max)
            .map_err(|_| TidegateStatus::InvalidArgument)?;
        let restart_attempts_max = u16::try_from(config.restart_attempts_max)
            .map_err(|_| TidegateStatus::InvalidArgument)?;
        if config.reserved != 0 {
            return Err(TidegateStatus::InvalidArgument);
        }
        let core = LifecycleConfig {
            housekeeping_deadline_micros: config.housekeeping_deadline_us,
            tasks_in_flight_max,
            start_deadline_micros: config.start_deadline_us,
            teardown_deadline_micros: config.teardown_deadline_us,
            persist_deadline_micros: config.persist_deadline_us,
            path_debounce_micros: config.path_debounce_us,
            restart_deadline_micros: config.restart_deadline_us,
            restart_attempts_max,
            restart_backoff_micros: config.restart_backoff_us,
            restart_backoff_max_micros: config.restart_backoff_max_us,
            wake_restart_after_micros: config.wake_restart_after_us,
        };
        let capacity = config.task_capacity as usize;
        core.validate(capacity)
            .map_err(status_of_lifecycle_config)?;
        Ok((core, capacity))
    }

    fn walk(
        &(_, capacity): &(LifecycleConfig, usize),
        carver: &mut Carver,
    ) -> Result<Region<TaskSlot>, TidegateStatus> {
        carver.array(capacity, TaskSlot::EMPTY)
    }

    fn build(
        (config, _): (LifecycleConfig, usize),
        _: u64,
        slots: Region<TaskSlot>,
        memory: Memory,
    ) -> Result<Self, TidegateStatus> {
        let engine = Lifecycle::new(config, slots).map_err(status_of_lifecycle_config)?;
        Ok(TidegateLifecycle {
            poison: Cell::new(false),
            memory,
            engine,
        })
    }
}

fn status_of_lifecycle_config(error: LifecycleConfigError) -> TidegateStatus {
    match error {
        LifecycleConfigError::ZeroTaskCapacity | LifecycleConfigError::ZeroTasksInFlight => {
            TidegateStatus::ConfigZeroCapacity
        }
        LifecycleConfigError::TooManyTasks => TidegateStatus::ConfigTaskCapacityTooLarge,
        LifecycleConfigError::ZeroHousekeepingDeadline
        | LifecycleConfigError::ZeroStartDeadline
        | LifecycleConfigError::ZeroTeardownDeadline
        | LifecycleConfigError::ZeroPersistDeadline
        | LifecycleConfigError::ZeroRestartDeadline
        | LifecycleConfigError::ZeroRestartBackoff => TidegateStatus::ConfigZeroDuration,
        LifecycleConfigError::ZeroRestartAttempts
        | LifecycleConfigError::RestartBackoffMaxBelowInitial => TidegateStatus::ConfigRestart,
        // A refusal added to the core later still refuses, with the generic status.
        _ => TidegateStatus::InvalidArgument,
    }
}

fn effect_of(effect: Option<LifecycleEffect>) -> TidegateLifecycleEffect {
    let mut out = TidegateLifecycleEffect {
        kind: TidegateLifecycleEffectKind::None,
        task_kind: 0,
        generation: 0,
        task_id: 0,
        journal_len: 0,
        error_code: 0,
        carried_over_tasks: 0,
        payload_len: 0,
        cancel_cause: TidegateCancelCause::Host,
        payload: [0; TIDEGATE_TASK_PAYLOAD_MAX],
        restart_id: 0,
        path: 0,
        restart_attempt: 0,
        reserved: 0,
    };
    let Some(effect) = effect else { return out };
    match effect {
        LifecycleEffect::StartTunnel {
            generation,
            carried_over_tasks,
        } => {
            out.kind = TidegateLifecycleEffectKind::StartTunnel;
            out.generation = generation.0;
            out.carried_over_tasks = carried_over_tasks;
        }
        LifecycleEffect::RunTask {
            generation,
            task,
            kind,
            payload,
        } => {
            out.kind = TidegateLifecycleEffectKind::RunTask;
            out.generation = generation.0;
            out.task_id = task.0;
            out.task_kind = kind;
            let bytes = payload.as_bytes();
            out.payload_len = u8::try_from(bytes.len()).unwrap_or(0);
            if let Some(target) = out.payload.get_mut(..bytes.len()) {
                target.copy_from_slice(bytes);
            }
        }
        LifecycleEffect::TearDown { generation } => {
            out.kind = TidegateLifecycleEffectKind::TearDown;
            out.generation = generation.0;
        }
        LifecycleEffect::PersistJournal { generation, len } => {
            out.kind = TidegateLifecycleEffectKind::PersistJournal;
            out.generation = generation.0;
            out.journal_len = len as u64;
        }
        LifecycleEffect::DiscardJournal { generation } => {
            out.kind = TidegateLifecycleEffectKind::DiscardJournal;
            out.generation = generation.0;
        }
        LifecycleEffect::RestartTunnel {
            generation,
            restart,
            path,
            attempt,
        } => {
            out.kind = TidegateLifecycleEffectKind::RestartTunnel;
            out.generation = generation.0;
            out.restart_id = restart.0;
            out.path = path.0;
            out.restart_attempt = u32::from(attempt);
        }
        LifecycleEffect::AbandonRestart {
            generation,
            restart,
        } => {
            out.kind = TidegateLifecycleEffectKind::AbandonRestart;
            out.generation = generation.0;
            out.restart_id = restart.0;
        }
        LifecycleEffect::CompleteStop { generation } => {
            out.kind = TidegateLifecycleEffectKind::CompleteStop;
            out.generation = generation.0;
        }
        LifecycleEffect::CancelWithError {
            generation,
            code,
            cause,
        } => {
            out.kind = TidegateLifecycleEffectKind::CancelWithError;
            out.generation = generation.0;
            out.error_code = code;
            out.cancel_cause = match cause {
                CancelCause::StartTimedOut => TidegateCancelCause::StartTimedOut,
                CancelCause::RestartsExhausted => TidegateCancelCause::RestartsExhausted,
                // A cause added to the core later reads as the host's own.
                _ => TidegateCancelCause::Host,
            };
        }
    }
    out
}

fn state_of(state: LifecycleState) -> TidegateLifecycleState {
    match state {
        LifecycleState::Idle => TidegateLifecycleState::Idle,
        LifecycleState::Starting => TidegateLifecycleState::Starting,
        LifecycleState::Running => TidegateLifecycleState::Running,
        LifecycleState::Reasserting => TidegateLifecycleState::Reasserting,
        LifecycleState::Stopping(StopPhase::TearingDown) => {
            TidegateLifecycleState::StoppingTearingDown
        }
        LifecycleState::Stopping(StopPhase::Housekeeping) => {
            TidegateLifecycleState::StoppingHousekeeping
        }
        LifecycleState::Stopping(StopPhase::PersistingJournal) => {
            TidegateLifecycleState::StoppingPersistingJournal
        }
        LifecycleState::Stopping(StopPhase::Completing) => {
            TidegateLifecycleState::StoppingCompleting
        }
        LifecycleState::Stopped => TidegateLifecycleState::Stopped,
    }
}

fn stats_of(s: &LifecycleStats) -> TidegateLifecycleStats {
    TidegateLifecycleStats {
        sessions_started: s.sessions_started,
        stops_completed: s.stops_completed,
        last_stop_latency_us: s.last_stop_latency_micros.unwrap_or(0),
        max_stop_latency_us: s.max_stop_latency_micros,
        tasks_registered: s.tasks_registered,
        tasks_run: s.tasks_run,
        tasks_done: s.tasks_done,
        tasks_failed: s.tasks_failed,
        tasks_carried_over: s.tasks_carried_over,
        tasks_resumed: s.tasks_resumed,
        journals_written: s.journals_written,
        journals_rejected: s.journals_rejected,
        reports_refused: s.reports_refused,
        stale_reports: s.stale_reports,
        start_timeouts: s.start_timeouts,
        teardown_timeouts: s.teardown_timeouts,
        persist_timeouts: s.persist_timeouts,
        tasks_unconfirmed: s.tasks_unconfirmed,
        path_changes: s.path_changes,
        restarts_run: s.restarts_run,
        restarts_done: s.restarts_done,
        restarts_failed: s.restarts_failed,
        restart_timeouts: s.restart_timeouts,
        restarts_abandoned: s.restarts_abandoned,
        restarts_exhausted: s.restarts_exhausted,
        wakes: s.wakes,
        wake_restarts: s.wake_restarts,
    }
}

fn status_of_start(error: StartError) -> TidegateStatus {
    match error {
        StartError::AlreadyActive => TidegateStatus::LifecycleAlreadyActive,
        StartError::StopInProgress => TidegateStatus::LifecycleStopInProgress,
        StartError::Journal(error) => match error {
            JournalDecodeError::Truncated { .. } => TidegateStatus::JournalTruncated,
            JournalDecodeError::NotAJournal => TidegateStatus::JournalNotAJournal,
            JournalDecodeError::UnsupportedVersion { .. } => {
                TidegateStatus::JournalUnsupportedVersion
            }
            JournalDecodeError::LengthMismatch { .. } => TidegateStatus::JournalLengthMismatch,
            JournalDecodeError::ChecksumMismatch { .. } => TidegateStatus::JournalChecksumMismatch,
            JournalDecodeError::Malformed => TidegateStatus::JournalMalformed,
            // A refusal added to the core later still refuses, with the generic status.
            _ => TidegateStatus::InvalidArgument,
        },
        StartError::JournalTooLarge { .. } => TidegateStatus::JournalTooLarge,
        StartError::GenerationExhausted => TidegateStatus::LifecycleGenerationExhausted,
        // A refusal added to the core later still refuses, with the generic status.
        _ => TidegateStatus::InvalidArgument,
    }
}

fn status_of_stop(error: StopError) -> TidegateStatus {
    match error {
        StopError::NotActive => TidegateStatus::LifecycleNotActive,
        StopError::AlreadyStopping => TidegateStatus::LifecycleAlreadyStopping,
        // A refusal added to the core later still refuses, with the generic status.
        _ => TidegateStatus::InvalidArgument,
    }
}

fn status_of_register(error: TaskRegisterError) -> TidegateStatus {
    match error {
        TaskRegisterError::NoSession => TidegateStatus::LifecycleNotActive,
        TaskRegisterError::HousekeepingOver => TidegateStatus::LifecycleHousekeepingOver,
        TaskRegisterError::QueueFull { .. } => TidegateStatus::TaskQueueFull,
        TaskRegisterError::PayloadTooLong { .. } => TidegateStatus::TaskPayloadTooLong,
        // A refusal added to the core later still refuses, with the generic status.
        _ => TidegateStatus::InvalidArgument,
    }
}

fn status_of_report(error: ReportError) -> TidegateStatus {
    match error {
        ReportError::StaleGeneration { .. } => TidegateStatus::ReportStaleGeneration,
        ReportError::UnknownGeneration { .. } => TidegateStatus::ReportUnknownGeneration,
        ReportError::Unexpected { .. } => TidegateStatus::ReportUnexpected,
        ReportError::UnknownTask { .. } => TidegateStatus::ReportUnknownTask,
        ReportError::TaskAlreadyEnded { .. } => TidegateStatus::ReportTaskAlreadyEnded,
        ReportError::TaskNotRunning { .. } => TidegateStatus::ReportTaskNotRunning,
        ReportError::TaskCarriedOver { .. } => TidegateStatus::ReportTaskCarriedOver,
        ReportError::StaleRestart { .. } => TidegateStatus::ReportStaleRestart,
        ReportError::UnknownRestart { .. } => TidegateStatus::ReportUnknownRestart,
        // A refusal added to the core later still refuses, with the generic status.
        _ => TidegateStatus::InvalidArgument,
    }
}

/// Force a panic inside the boundary of `lifecycle`, to test that the panic is caught and the
/// handle poisoned. Not part of the C API.
///
/// # Safety
/// As for any mutating call: `lifecycle` must be NULL or a live handle.
#[doc(hidden)]
#[cfg(any(test, feature = "testing"))]
pub unsafe fn testing_panic_inside_lifecycle(lifecycle: *mut TidegateLifecycle) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(lifecycle, |_| -> Result<(), TidegateStatus> {
            panic!("forced panic for testing the C boundary")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{align_of, size_of};

    #[test]
    fn a_null_out_pointer_is_reported_before_what_else_is_wrong() {
        let too_large = TidegateLifecycleConfig {
            task_capacity: TIDEGATE_LIFECYCLE_TASK_CAPACITY_MAX + 1,
            ..tidegate_lifecycle_config_default()
        };
        let mut lifecycle = std::ptr::null_mut();
        // SAFETY: valid pointers or NULL; the handle is freed at the end.
        unsafe {
            assert_eq!(
                tidegate_lifecycle_footprint(&too_large, std::ptr::null_mut(), &mut 0),
                TidegateStatus::NullArgument
            );
            let config = tidegate_lifecycle_config_default();
            assert_eq!(
                tidegate_lifecycle_new(&config, &mut lifecycle),
                TidegateStatus::Ok
            );
            // No journal, and nowhere to write its length: the NULL is the error.
            assert_eq!(
                tidegate_lifecycle_journal_len(lifecycle, std::ptr::null_mut()),
                TidegateStatus::NullArgument
            );
            let mut len = 7;
            assert_eq!(
                tidegate_lifecycle_journal_len(lifecycle, &mut len),
                TidegateStatus::JournalNone
            );
            assert_eq!(len, 7);
            tidegate_lifecycle_free(lifecycle);
        }
    }

    #[test]
    fn default_config_matches_the_core_default() {
        let config = tidegate_lifecycle_config_default();
        assert_eq!(config.housekeeping_deadline_us, 250_000);
        assert_eq!(config.tasks_in_flight_max, 1);
        let (mut bytes, mut align) = (0, 0);
        // SAFETY: valid pointers to locals.
        let status = unsafe { tidegate_lifecycle_footprint(&config, &mut bytes, &mut align) };
        assert_eq!(status, TidegateStatus::Ok);
        let slots_at = size_of::<TidegateLifecycle>().next_multiple_of(align_of::<TaskSlot>());
        assert_eq!(
            bytes,
            (slots_at + 64 * size_of::<TaskSlot>()).next_multiple_of(align)
        );
    }
}
