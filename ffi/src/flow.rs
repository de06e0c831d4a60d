//! C ABI of the flow governor: `TidegateFlowGovernor`.

use core::ffi::c_void;
use std::cell::Cell;

use tidegate_core::{
    Admission, AppId, AppState, CloseReason, DestinationKey, FlowError, FlowGovernor, FlowId,
    FlowInfo, FlowOutcome, FlowPolicy, FlowSlot, FlowState, FlowStats, Instant, Notification,
    PolicyError, Protocol, RejectReason, TOP_APPS, classify_errno,
};

use crate::boundary::{Handle, bytes, call, call_free, call_mut, require_non_null, write_out};
use crate::eyeballs::TidegateBudgetRefusal;
use crate::place::{self, Carver, Memory, Region};
use crate::status::TidegateStatus;

/// A flow governor: the flow table of an app or transparent proxy, with admission, fairness,
/// eviction, timeouts and per-flow backpressure.
///
/// All its memory is one block of `tidegate_flow_governor_footprint` bytes, allocated by
/// `tidegate_flow_governor_new` or given to `tidegate_flow_governor_init`; nothing is allocated
/// afterwards.
///
/// After every input (`_on_*`, `_handle_timeout`), drain `tidegate_flow_governor_poll_notifications`
/// until it returns a count of 0, then arm a timer for `tidegate_flow_governor_poll_timeout`.
///
/// Thread safety: not safe for concurrent use. Calls on one handle must not overlap (use one
/// serial dispatch queue, or a lock of your own); moving the handle between threads is fine.
pub struct TidegateFlowGovernor {
    poison: Cell<bool>,
    memory: Memory,
    pub(crate) engine: FlowGovernor<Region<FlowSlot>>,
}

impl Handle for TidegateFlowGovernor {
    fn poison(&self) -> &Cell<bool> {
        &self.poison
    }
    fn memory(&self) -> Memory {
        self.memory
    }
}

/// A flow id: a slot index (low 32 bits) and the slot's generation (high 32 bits). 0 is never a
/// valid id. A stale or forged id is refused with `TIDEGATE_STATUS_STALE_FLOW` or
/// `TIDEGATE_STATUS_UNKNOWN_FLOW` and touches no other flow.
pub type TidegateFlowId = u64;

/// Policy of a `TidegateFlowGovernor`. Start from `tidegate_flow_policy_default()` and change
/// what you need; `tidegate_flow_governor_new` checks it and names the first problem.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TidegateFlowPolicy {
    /// Slots in the table: open flows plus flows being closed. At least `max_flows + 1`. Default
    /// 512, Network framework's per-process flow limit.
    pub slots: u32,
    /// Global cap on open flows (opening, connecting, established). Default 448: 512 less
    /// headroom for flows being closed and the provider's own connections.
    pub max_flows: u32,
    /// Cap on open flows per app. Default 256.
    pub max_flows_per_app: u32,
    /// Cap on open flows per destination. Default 128.
    pub max_flows_per_destination: u32,
    /// Connection budget: flows opening or connecting at most. Default 128.
    pub max_connecting: u32,
    /// Must be 0 (the default is); room for a future field. Anything else is refused with
    /// `TIDEGATE_STATUS_INVALID_ARGUMENT`.
    pub reserved: u32,
    /// A flow with no byte read or completed this long is closed, in microseconds. Default 10
    /// minutes. Not 0 (refused: it would close every flow at once); `UINT64_MAX` means never.
    pub idle_timeout_us: u64,
    /// A flow still connecting this long after admission is closed, in microseconds. Default
    /// 30 s. Not 0; `UINT64_MAX` means never.
    pub connect_timeout_us: u64,
    /// Per flow and direction, reading pauses at this many pending bytes. Default 256 KiB.
    pub flow_high_watermark_bytes: u64,
    /// Per flow and direction, paused reading resumes at this many. Default 64 KiB.
    pub flow_low_watermark_bytes: u64,
    /// Over all flows, every read pauses at this many pending bytes. Default 6 MiB, sized for
    /// the 15 MiB app proxy limit.
    pub global_high_watermark_bytes: u64,
    /// Over all flows, paused reads resume at this many. Default 4 MiB.
    pub global_low_watermark_bytes: u64,
    /// Seed of the app and destination hash tables; pass a random value at start if attackers
    /// choose destinations.
    pub hash_seed: u64,
    /// Over one app's flows (both directions), every read of that app pauses at this many
    /// pending bytes. Default 2 MiB: an app whose reader stalls across many flows pauses its own
    /// reads, not every app's at the global watermark.
    pub app_high_watermark_bytes: u64,
    /// Over one app's flows, its paused reads resume at this many. Default 1 MiB.
    pub app_low_watermark_bytes: u64,
}

/// A flow's transport (the `protocol` argument of `tidegate_flow_governor_on_new_flow`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TidegateFlowProtocol {
    /// TCP (`NEAppProxyTCPFlow`).
    Tcp = 0,
    /// UDP (`NEAppProxyUDPFlow`).
    Udp = 1,
}

/// The governor's answer to a new flow (the `decision` field of `TidegateAdmission`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TidegateAdmissionDecision {
    /// Admitted as `flow`.
    Accepted = 0,
    /// Admitted as `flow` after evicting `evicted`: close `evicted` now, then report it with
    /// `tidegate_flow_governor_on_closed`. This answer is the only notice of the eviction.
    AcceptedAfterEvicting = 1,
    /// Refused for `reject_reason`; nothing changed.
    Rejected = 2,
}

/// Why a flow was refused. A transparent proxy returns `false` from `handleNewFlow` for every
/// reason, so the flow goes direct; an app proxy fails the flow.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TidegateRejectReason {
    /// Not refused (the decision is an acceptance).
    None = 0,
    /// The table is full and the app is not below its fair share (or the host has not closed
    /// evicted flows). App proxy: fail with a resource error; a retry works once flows close.
    TableFull = 1,
    /// The app holds its cap of flows. App proxy: fail the flow.
    AppOverLimit = 2,
    /// The destination holds its cap of flows. App proxy: fail the flow.
    DestinationOverLimit = 3,
    /// Too many flows are still connecting. App proxy: fail, or retry after a flow connects.
    ConnectionBudget = 4,
}

/// The answer of `tidegate_flow_governor_on_new_flow`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TidegateAdmission {
    /// What the governor decided.
    pub decision: TidegateAdmissionDecision,
    /// Why the flow was refused; `TIDEGATE_REJECT_REASON_NONE` when admitted.
    pub reject_reason: TidegateRejectReason,
    /// The new flow's id; 0 when refused.
    pub flow: TidegateFlowId,
    /// The flow the host must close; 0 unless the decision is `ACCEPTED_AFTER_EVICTING`.
    pub evicted: TidegateFlowId,
    /// For `REJECTED` with `CONNECTION_BUDGET` from `tidegate_proxy_on_new_flow`, the budget
    /// limit that refused (`NONE` there means `max_connecting` refused); `NONE` otherwise.
    pub budget_refusal: TidegateBudgetRefusal,
    /// Always 0: keeps the struct free of padding, so every byte is written.
    pub reserved: u32,
}

/// Where a flow is in its life.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TidegateFlowState {
    /// Admitted; the remote connection is not started.
    Opening = 0,
    /// The remote connection is being set up.
    Connecting = 1,
    /// Relaying.
    Established = 2,
    /// The governor asked for the close; waiting for `tidegate_flow_governor_on_closed`.
    Closing = 3,
    /// The flow is gone; its id is stale.
    Closed = 4,
}

/// How a flow ended: exactly one per admitted flow.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TidegateFlowOutcome {
    /// Closed by the host after bytes moved.
    Closed = 0,
    /// Closed by the host before any byte moved (a Happy Eyeballs loser, a port scan).
    AlsoRan = 1,
    /// The remote connection failed.
    ConnectFailed = 2,
    /// Closed after the governor evicted it.
    Evicted = 3,
    /// Closed after the governor found it idle too long.
    IdleTimeout = 4,
    /// Closed after the governor found it connecting too long.
    ConnectTimeout = 5,
}

/// What a notification asks of the host.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TidegateFlowNotificationKind {
    /// Close `flow` (reason in `close_reason`), then report it with
    /// `tidegate_flow_governor_on_closed`.
    Close = 0,
    /// Reading from the local flow of `flow` may restart: issue the next `readData`.
    ResumeReadLocal = 1,
    /// Reading from the remote of `flow` may restart: issue the next receive.
    ResumeReadRemote = 2,
}

/// Why the governor asks for a close.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TidegateCloseReason {
    /// Not a close notification.
    None = 0,
    /// Idle for longer than the idle timeout.
    IdleTimeout = 1,
    /// Still connecting after the connect timeout.
    ConnectTimeout = 2,
    /// Evicted to admit a flow of an app below its fair share: reported by the admission
    /// answer (and, by `TidegateProxy`, as a `CLOSE_FLOW` event too).
    Evicted = 3,
}

/// One notification from `tidegate_flow_governor_poll_notifications`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TidegateFlowNotification {
    /// What to do.
    pub kind: TidegateFlowNotificationKind,
    /// For `CLOSE`, why; otherwise `TIDEGATE_CLOSE_REASON_NONE`.
    pub close_reason: TidegateCloseReason,
    /// The flow concerned.
    pub flow: TidegateFlowId,
}

/// An app and the open flows it holds.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TidegateAppFlows {
    /// The app id the host passed in.
    pub app: u64,
    /// Its open flows.
    pub flows: u32,
    /// Always 0: keeps the struct free of padding, so every byte is written.
    pub reserved: u32,
}

/// What the governor holds for one app (`tidegate_flow_governor_app_state`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TidegateAppState {
    /// Bytes pending over the app's flows, both directions, closing flows included: what the
    /// app watermark compares.
    pub bytes_pending: u64,
    /// Open flows (opening, connecting or established).
    pub open_flows: u32,
    /// Whether the app watermark pauses the app's reads now.
    pub reads_paused: bool,
    /// Always 0: keeps the struct free of padding, so every byte is written.
    pub reserved: [u8; 3],
}

/// A snapshot of the governor's counters and occupancy. Counters saturate.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TidegateFlowStats {
    /// Flows admitted, with or without an eviction.
    pub admitted: u64,
    /// Flows refused because the table was full.
    pub rejected_table_full: u64,
    /// Flows refused because their app held its cap.
    pub rejected_app_over_limit: u64,
    /// Flows refused because their destination held its cap.
    pub rejected_destination_over_limit: u64,
    /// Flows refused by the connection budget.
    pub rejected_connection_budget: u64,
    /// Flows evicted to admit others.
    pub evicted: u64,
    /// Flows closed for idling past the idle timeout.
    pub idle_timeouts: u64,
    /// Flows closed for connecting past the connect timeout.
    pub connect_timeouts: u64,
    /// Flows closed before any byte moved.
    pub also_ran: u64,
    /// Flows closed after bytes moved.
    pub closed: u64,
    /// Failed connections, indexed by `TidegateErrorClass` (resource exhausted, refused,
    /// unreachable, timed out, reset, denied, other).
    pub connect_failures: [u64; 7],
    /// Flows opening now.
    pub opening: u32,
    /// Flows connecting now.
    pub connecting: u32,
    /// Flows established now.
    pub established: u32,
    /// Flows the host has been asked to close and has not reported closed.
    pub closing: u32,
    /// Bytes read from local flows and not yet acknowledged by the remote, over all flows.
    pub bytes_pending_outbound: u64,
    /// Bytes read from remotes and not yet written to the local flows, over all flows.
    pub bytes_pending_inbound: u64,
    /// Whether the global high watermark has paused every read.
    pub reads_paused_globally: bool,
    /// Always 0: keeps the struct free of padding, so every byte is written.
    pub reserved: [u8; 7],
    /// Apps with at least one open flow.
    pub apps: u32,
    /// Valid entries in `top_apps`.
    pub top_apps_len: u32,
    /// The apps holding the most open flows, most first.
    pub top_apps: [TidegateAppFlows; 8],
    /// Also-ran attempts: race losers of flows connected with `tidegate_flow_governor_poll_race`,
    /// cancelled because another attempt of the same race connected. Distinct from `also_ran`,
    /// which counts flows.
    pub also_ran_attempts: u64,
    /// Connection closes the budget rejected (the governor was used with two budgets, or a
    /// flow's connection was also released by hand).
    pub budget_mismatches: u64,
    /// Flows whose connection the budget counts open now (established through
    /// `tidegate_flow_governor_poll_race`, not yet reported closed).
    pub connections_held: u32,
    /// Apps whose reads their app watermark pauses now.
    pub apps_reads_paused: u32,
    /// Times an app's reads paused at the app high watermark.
    pub app_pauses: u64,
}

const _: () = assert!(TOP_APPS == 8, "TidegateFlowStats.top_apps has 8 entries");

/// The default policy, for an Apple Network Extension proxy: 512 slots, at most 448 open flows,
/// 256 per app, 128 per destination, 128 connecting; idle timeout 10 minutes, connect timeout
/// 30 s; per-flow watermarks 256 KiB / 64 KiB, per app 2 MiB / 1 MiB, global 6 MiB / 4 MiB.
#[unsafe(no_mangle)]
pub extern "C" fn tidegate_flow_policy_default() -> TidegateFlowPolicy {
    let p = FlowPolicy::APPLE_DEFAULT;
    TidegateFlowPolicy {
        slots: tidegate_core::DEFAULT_FLOW_SLOTS as u32,
        max_flows: p.max_flows,
        max_flows_per_app: p.max_flows_per_app,
        max_flows_per_destination: p.max_flows_per_destination,
        max_connecting: p.max_connecting,
        reserved: 0,
        idle_timeout_us: p.idle_timeout_micros,
        connect_timeout_us: p.connect_timeout_micros,
        flow_high_watermark_bytes: p.flow_high_watermark,
        flow_low_watermark_bytes: p.flow_low_watermark,
        global_high_watermark_bytes: p.global_high_watermark,
        global_low_watermark_bytes: p.global_low_watermark,
        hash_seed: p.hash_seed,
        app_high_watermark_bytes: p.app_high_watermark,
        app_low_watermark_bytes: p.app_low_watermark,
    }
}

/// Writes to `*out_key` a stable 64-bit key (FNV-1a) of the `len` bytes at `data`: derive app
/// ids from signing identifiers and destination keys from addresses or host names with it.
///
/// # Safety
/// `data` must be valid for reading `len` bytes (NULL only if `len` is 0); `out_key` must be
/// NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_flow_key(
    data: *const u8,
    len: usize,
    out_key: *mut u64,
) -> TidegateStatus {
    call_free(|| {
        // SAFETY: forwarded caller contract.
        let data = unsafe { bytes(data, len) }?;
        // SAFETY: forwarded caller contract.
        unsafe { write_out(out_key, AppId::from_bytes(data).0) }
    })
}

/// Writes to `*out_size` and `*out_align` the size and alignment of the memory a flow governor with
/// `policy` lives in, in one block. That is all the memory it ever uses:
/// `tidegate_flow_governor_new` allocates exactly this block, and `tidegate_flow_governor_init` places it in a
/// block of yours.
///
/// Returns a `TIDEGATE_STATUS_CONFIG_*` status if the policy is invalid.
///
/// # Safety
/// `policy` must be NULL or point to a valid `TidegateFlowPolicy`; `out_size` and `out_align` must be
/// NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_flow_governor_footprint(
    policy: *const TidegateFlowPolicy,
    out_size: *mut usize,
    out_align: *mut usize,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe { place::footprint::<TidegateFlowGovernor>(policy, out_size, out_align) }
}

/// Creates a flow governor with `policy`, started at `now_us`, in memory it allocates, and writes its handle to
/// `*out_governor`. The one allocation is `tidegate_flow_governor_footprint(policy)` bytes; nothing is
/// allocated afterwards. Free the handle with `tidegate_flow_governor_free`.
///
/// Returns a `TIDEGATE_STATUS_CONFIG_*` status for an invalid policy, or
/// `TIDEGATE_STATUS_OUT_OF_MEMORY` if the allocation fails.
///
/// # Safety
/// `policy` must be NULL or point to a valid `TidegateFlowPolicy`; `out_governor` must be NULL or valid for
/// writing a pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_flow_governor_new(
    policy: *const TidegateFlowPolicy,
    now_us: u64,
    out_governor: *mut *mut TidegateFlowGovernor,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe { place::new(policy, now_us, out_governor) }
}

/// Creates a flow governor with `policy`, started at `now_us`, in the `len` bytes at `memory`, and writes its
/// handle (`memory` itself) to `*out_governor`: for hosts that place engines in memory of their own.
///
/// `memory` must hold the size `tidegate_flow_governor_footprint` gives and start on its alignment, or
/// the call returns `TIDEGATE_STATUS_BUFFER_TOO_SMALL` or `TIDEGATE_STATUS_MISALIGNED`. Nothing
/// else is ever used. Call `tidegate_flow_governor_free` when done: it ends the handle and leaves the
/// memory to you.
///
/// # Safety
/// `policy` must be NULL or point to a valid `TidegateFlowPolicy`; `memory` must be NULL or valid for
/// reading and writing `len` bytes, used by nothing else until the handle is freed; `out_governor`
/// must be NULL or valid for writing a pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_flow_governor_init(
    policy: *const TidegateFlowPolicy,
    now_us: u64,
    memory: *mut c_void,
    len: usize,
    out_governor: *mut *mut TidegateFlowGovernor,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe { place::init(policy, now_us, memory, len, out_governor) }
}

/// Frees a flow governor: ends it and releases its memory (memory given to `tidegate_flow_governor_init` goes
/// back to the caller). `NULL` is a no-op. Works on a poisoned handle too.
///
/// # Safety
/// `governor` must be NULL or a handle from `tidegate_flow_governor_new` or `tidegate_flow_governor_init` that was
/// not freed yet, with no other call on it running.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_flow_governor_free(governor: *mut TidegateFlowGovernor) {
    // SAFETY: forwarded caller contract.
    unsafe { place::free(governor) }
}

/// Asks to admit a new flow of `app` to `destination` over `protocol` (a
/// `TIDEGATE_FLOW_PROTOCOL_*` value) and writes the answer to `*out_admission`. A refusal is an
/// answer, not an error: the status is `TIDEGATE_STATUS_OK` and the decision says
/// `REJECTED`. O(1).
///
/// # Safety
/// `governor` must be NULL or a live handle; `out_admission` must be NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_flow_governor_on_new_flow(
    governor: *mut TidegateFlowGovernor,
    now_us: u64,
    app: u64,
    destination: u64,
    protocol: u32,
    out_admission: *mut TidegateAdmission,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(governor, |g| {
            require_non_null([out_admission.cast_const().cast()])?;
            let info = flow_info_of(app, destination, protocol)?;
            let answer = g.engine.on_new_flow(Instant::from_micros(now_us), info);
            write_out(out_admission, admission_of(answer))
        })
    }
}

/// The host started the remote connection of `flow`: opening becomes connecting.
///
/// # Safety
/// `governor` must be NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_flow_governor_on_connecting(
    governor: *mut TidegateFlowGovernor,
    now_us: u64,
    flow: TidegateFlowId,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(governor, |g| {
            let now = Instant::from_micros(now_us);
            g.engine
                .on_connecting(now, FlowId::from_raw(flow))
                .map_err(status_of_flow)
        })
    }
}

/// The remote connection of `flow` is up. Check `tidegate_flow_governor_can_read_local` and
/// `_can_read_remote` before the first reads.
///
/// # Safety
/// `governor` must be NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_flow_governor_on_connected(
    governor: *mut TidegateFlowGovernor,
    now_us: u64,
    flow: TidegateFlowId,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(governor, |g| {
            let now = Instant::from_micros(now_us);
            g.engine
                .on_connected(now, FlowId::from_raw(flow))
                .map_err(status_of_flow)
        })
    }
}

/// The remote connection of `flow` failed with `errno_value` (the POSIX errno, for example
/// from `NWError.posix`, classified as a `TidegateErrorClass`); the host closes the local flow. The slot is freed at once and the
/// outcome written to `*out_outcome`: `CONNECT_FAILED`, or the governor's close reason if it
/// had already asked for the close. The failure is counted by its class in the stats.
///
/// # Safety
/// `governor` must be NULL or a live handle; `out_outcome` must be NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_flow_governor_on_connect_failed(
    governor: *mut TidegateFlowGovernor,
    now_us: u64,
    flow: TidegateFlowId,
    errno_value: i32,
    out_outcome: *mut TidegateFlowOutcome,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(governor, |g| {
            require_non_null([out_outcome.cast_const().cast()])?;
            let now = Instant::from_micros(now_us);
            let class = classify_errno(errno_value);
            let outcome = g
                .engine
                .on_connect_failed(now, FlowId::from_raw(flow), class)
                .map_err(status_of_flow)?;
            write_out(out_outcome, outcome_of(outcome))
        })
    }
}

/// The host closed `flow`. The slot is freed at once, pending bytes are released, and the
/// flow's one outcome is written to `*out_outcome`. A second close returns
/// `TIDEGATE_STATUS_STALE_FLOW`.
///
/// # Safety
/// `governor` must be NULL or a live handle; `out_outcome` must be NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_flow_governor_on_closed(
    governor: *mut TidegateFlowGovernor,
    now_us: u64,
    flow: TidegateFlowId,
    out_outcome: *mut TidegateFlowOutcome,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(governor, |g| {
            require_non_null([out_outcome.cast_const().cast()])?;
            let now = Instant::from_micros(now_us);
            let outcome = g
                .engine
                .on_closed(now, FlowId::from_raw(flow))
                .map_err(status_of_flow)?;
            write_out(out_outcome, outcome_of(outcome))
        })
    }
}

/// The host read `bytes` from the local flow of `flow` (`readData`). Then check
/// `tidegate_flow_governor_can_read_local` before the next read. Returns
/// `TIDEGATE_STATUS_INVALID_ARGUMENT`, changing nothing, if the bytes pending (on the flow or
/// over all flows) cannot count `bytes` more: a corrupted length, such as -1 cast to unsigned.
///
/// # Safety
/// `governor` must be NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_flow_governor_on_local_read(
    governor: *mut TidegateFlowGovernor,
    now_us: u64,
    flow: TidegateFlowId,
    bytes: u64,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe { relay(governor, now_us, flow, bytes, Relay::LocalRead) }
}

/// The remote send completion of `flow` acknowledged `bytes` read from the local flow. Returns
/// `TIDEGATE_STATUS_COMPLETION_EXCEEDS_PENDING`, changing nothing, if fewer bytes are pending.
///
/// # Safety
/// `governor` must be NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_flow_governor_on_remote_sent(
    governor: *mut TidegateFlowGovernor,
    now_us: u64,
    flow: TidegateFlowId,
    bytes: u64,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe { relay(governor, now_us, flow, bytes, Relay::RemoteSent) }
}

/// The host received `bytes` from the remote of `flow`. Then check
/// `tidegate_flow_governor_can_read_remote` before the next receive. Returns
/// `TIDEGATE_STATUS_INVALID_ARGUMENT`, changing nothing, if the bytes pending (on the flow or
/// over all flows) cannot count `bytes` more: a corrupted length, such as -1 cast to unsigned.
///
/// # Safety
/// `governor` must be NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_flow_governor_on_remote_read(
    governor: *mut TidegateFlowGovernor,
    now_us: u64,
    flow: TidegateFlowId,
    bytes: u64,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe { relay(governor, now_us, flow, bytes, Relay::RemoteRead) }
}

/// The `writeData` completion of `flow` handed `bytes` to the local app. Returns
/// `TIDEGATE_STATUS_COMPLETION_EXCEEDS_PENDING`, changing nothing, if fewer bytes are pending.
///
/// # Safety
/// `governor` must be NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_flow_governor_on_local_written(
    governor: *mut TidegateFlowGovernor,
    now_us: u64,
    flow: TidegateFlowId,
    bytes: u64,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe { relay(governor, now_us, flow, bytes, Relay::LocalWritten) }
}

/// Writes to `*out_can_read` whether the host may issue a read on the local flow of `flow`: its
/// outbound bytes, its app's and all pending bytes are under their watermarks. If it is `false`
/// after a read, stop reading until a `RESUME_READ_LOCAL` notification. `false` for an unknown
/// or stale flow.
///
/// # Safety
/// `governor` must be NULL or a live handle; `out_can_read` must be NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_flow_governor_can_read_local(
    governor: *const TidegateFlowGovernor,
    flow: TidegateFlowId,
    out_can_read: *mut bool,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call(governor, |g| {
            write_out(
                out_can_read,
                g.engine.can_read_local(FlowId::from_raw(flow)),
            )
        })
    }
}

/// Writes to `*out_can_read` whether the host may issue a receive on the remote of `flow`: its
/// inbound bytes, its app's and all pending bytes are under their watermarks. If it is `false`
/// after a read, stop reading until a `RESUME_READ_REMOTE` notification. `false` for an unknown
/// or stale flow and before the flow is connected.
///
/// # Safety
/// `governor` must be NULL or a live handle; `out_can_read` must be NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_flow_governor_can_read_remote(
    governor: *const TidegateFlowGovernor,
    flow: TidegateFlowId,
    out_can_read: *mut bool,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call(governor, |g| {
            write_out(
                out_can_read,
                g.engine.can_read_remote(FlowId::from_raw(flow)),
            )
        })
    }
}

/// Writes up to `capacity` notifications to `notifications[0..]` and their number to
/// `*out_count`. Call it after every input until the count is 0. Notifications wait in the
/// table itself, so none is ever lost, however late you drain.
///
/// # Safety
/// `governor` must be NULL or a live handle; `notifications` must be valid for writing
/// `capacity` entries (NULL only if `capacity` is 0); `out_count` must be NULL or valid for
/// writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_flow_governor_poll_notifications(
    governor: *mut TidegateFlowGovernor,
    notifications: *mut TidegateFlowNotification,
    capacity: usize,
    out_count: *mut usize,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(governor, |g| {
            require_non_null([out_count.cast_const().cast()])?;
            if notifications.is_null() && capacity > 0 {
                return Err(TidegateStatus::NullArgument);
            }
            let mut count = 0;
            while count < capacity {
                let Some(notification) = g.engine.poll_notification() else {
                    break;
                };
                // SAFETY: `count < capacity` and `notifications` is valid for `capacity` writes.
                notifications
                    .add(count)
                    .write(notification_of(notification));
                count += 1;
            }
            write_out(out_count, count)
        })
    }
}

/// Writes to `*out_deadline_us` when `tidegate_flow_governor_handle_timeout` next has work, or
/// `UINT64_MAX` if no flow has a deadline.
///
/// # Safety
/// `governor` must be NULL or a live handle; `out_deadline_us` must be NULL or valid for
/// writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_flow_governor_poll_timeout(
    governor: *const TidegateFlowGovernor,
    out_deadline_us: *mut u64,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call(governor, |g| {
            let deadline = g.engine.poll_timeout().unwrap_or(Instant::MAX);
            write_out(out_deadline_us, deadline.as_micros())
        })
    }
}

/// Closes every flow whose connect or idle deadline has passed: each becomes a `CLOSE`
/// notification. Idempotent.
///
/// # Safety
/// `governor` must be NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_flow_governor_handle_timeout(
    governor: *mut TidegateFlowGovernor,
    now_us: u64,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(governor, |g| {
            g.engine.handle_timeout(Instant::from_micros(now_us));
            Ok(())
        })
    }
}

/// Sets the connection budget hook: at most `max_connecting` flows opening or connecting (0
/// refuses every new flow). A host with a `TidegateBudget` admits through
/// `tidegate_flow_governor_on_new_flow_with_budget` instead, which asks the budget each time.
///
/// # Safety
/// `governor` must be NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_flow_governor_set_connection_budget(
    governor: *mut TidegateFlowGovernor,
    max_connecting: u32,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(governor, |g| {
            g.engine.set_connection_budget(max_connecting);
            Ok(())
        })
    }
}

/// Writes the state of `flow` to `*out_state`: `CLOSED` for a flow that has closed. Returns
/// `TIDEGATE_STATUS_UNKNOWN_FLOW` for an id the governor never issued.
///
/// # Safety
/// `governor` must be NULL or a live handle; `out_state` must be NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_flow_governor_state(
    governor: *const TidegateFlowGovernor,
    flow: TidegateFlowId,
    out_state: *mut TidegateFlowState,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call(governor, |g| {
            require_non_null([out_state.cast_const().cast()])?;
            let state = g
                .engine
                .state(FlowId::from_raw(flow))
                .map_err(status_of_flow)?;
            write_out(out_state, state_of(state))
        })
    }
}

/// Writes what the governor holds for `app` to `*out_state`: its open flows, the bytes pending
/// over its flows and whether its app watermark pauses its reads; all zero for an app with no
/// flow in the table. Ask it for the app behind a paused read to tell a stalled app from a
/// stalled flow.
///
/// # Safety
/// `governor` must be NULL or a live handle; `out_state` must be NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_flow_governor_app_state(
    governor: *const TidegateFlowGovernor,
    app: u64,
    out_state: *mut TidegateAppState,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call(governor, |g| {
            let state = g.engine.app_state(AppId(app));
            write_out(out_state, app_state_of(state))
        })
    }
}

/// Writes a snapshot of the governor's counters and occupancy to `*out_stats`.
///
/// # Safety
/// `governor` must be NULL or a live handle; `out_stats` must be NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_flow_governor_stats(
    governor: *const TidegateFlowGovernor,
    out_stats: *mut TidegateFlowStats,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call(governor, |g| {
            write_out(out_stats, stats_of(&g.engine.stats()))
        })
    }
}

/// Which relay input a call reports.
#[derive(Clone, Copy)]
enum Relay {
    LocalRead,
    RemoteSent,
    RemoteRead,
    LocalWritten,
}

/// Apply one relay input to `governor`.
///
/// # Safety
/// `governor` must be NULL or a live handle.
unsafe fn relay(
    governor: *mut TidegateFlowGovernor,
    now_us: u64,
    flow: TidegateFlowId,
    bytes: u64,
    input: Relay,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(governor, |g| {
            let now = Instant::from_micros(now_us);
            let id = FlowId::from_raw(flow);
            let engine = &mut g.engine;
            match input {
                Relay::LocalRead => engine.on_local_read(now, id, bytes),
                Relay::RemoteSent => engine.on_remote_sent(now, id, bytes),
                Relay::RemoteRead => engine.on_remote_read(now, id, bytes),
                Relay::LocalWritten => engine.on_local_written(now, id, bytes),
            }
            .map_err(status_of_flow)
        })
    }
}

/// The flow of `app` to `destination` over `protocol` (a `TIDEGATE_FLOW_PROTOCOL_*` value), or
/// `TidegateStatus::InvalidArgument` for an unknown protocol.
pub(crate) fn flow_info_of(
    app: u64,
    destination: u64,
    protocol: u32,
) -> Result<FlowInfo, TidegateStatus> {
    let protocol = u8::try_from(protocol)
        .ok()
        .and_then(Protocol::from_u8)
        .ok_or(TidegateStatus::InvalidArgument)?;
    Ok(FlowInfo {
        app: AppId(app),
        destination: DestinationKey(destination),
        protocol,
    })
}

/// The bytes `tidegate_flow_governor_new` allocates for `slots` slots.
impl place::Placed for TidegateFlowGovernor {
    type CConfig = TidegateFlowPolicy;
    /// The core policy and the slot count.
    type Config = (FlowPolicy, usize);
    /// The flow slots.
    type Storage = Region<FlowSlot>;

    fn check(policy: &TidegateFlowPolicy) -> Result<(FlowPolicy, usize), TidegateStatus> {
        core_policy(policy)
    }

    fn walk(
        &(_, slots): &(FlowPolicy, usize),
        carver: &mut Carver,
    ) -> Result<Region<FlowSlot>, TidegateStatus> {
        carver.array(slots, FlowSlot::EMPTY)
    }

    fn build(
        (policy, _): (FlowPolicy, usize),
        now_us: u64,
        slots: Region<FlowSlot>,
        memory: Memory,
    ) -> Result<Self, TidegateStatus> {
        let engine = FlowGovernor::new(Instant::from_micros(now_us), slots, policy)
            .map_err(status_of_policy)?;
        Ok(TidegateFlowGovernor {
            poison: Cell::new(false),
            memory,
            engine,
        })
    }
}

/// The core policy and slot count of a C policy, validated.
pub(crate) fn core_policy(p: &TidegateFlowPolicy) -> Result<(FlowPolicy, usize), TidegateStatus> {
    if p.reserved != 0 {
        return Err(TidegateStatus::InvalidArgument);
    }
    let policy = FlowPolicy {
        max_flows: p.max_flows,
        max_flows_per_app: p.max_flows_per_app,
        max_flows_per_destination: p.max_flows_per_destination,
        max_connecting: p.max_connecting,
        idle_timeout_micros: p.idle_timeout_us,
        connect_timeout_micros: p.connect_timeout_us,
        flow_high_watermark: p.flow_high_watermark_bytes,
        flow_low_watermark: p.flow_low_watermark_bytes,
        app_high_watermark: p.app_high_watermark_bytes,
        app_low_watermark: p.app_low_watermark_bytes,
        global_high_watermark: p.global_high_watermark_bytes,
        global_low_watermark: p.global_low_watermark_bytes,
        hash_seed: p.hash_seed,
    };
    let slots = p.slots as usize;
    policy.validate(slots).map_err(status_of_policy)?;
    Ok((policy, slots))
}

pub(crate) fn status_of_policy(error: PolicyError) -> TidegateStatus {
    match error {
        PolicyError::ZeroCap => TidegateStatus::ConfigFlowZeroCap,
        PolicyError::ZeroTimeout => TidegateStatus::ConfigZeroDuration,
        PolicyError::WatermarksInverted => TidegateStatus::ConfigWatermarksOutOfOrder,
        PolicyError::TooFewSlots { .. } => TidegateStatus::ConfigFlowTooFewSlots,
        PolicyError::TooManySlots { .. } => TidegateStatus::ConfigFlowTooManySlots,
    }
}

pub(crate) fn status_of_flow(error: FlowError) -> TidegateStatus {
    match error {
        FlowError::UnknownFlow => TidegateStatus::UnknownFlow,
        FlowError::StaleFlow => TidegateStatus::StaleFlow,
        FlowError::InvalidState { .. } => TidegateStatus::FlowInvalidState,
        FlowError::ExceedsPending { .. } => TidegateStatus::CompletionExceedsPending,
        FlowError::TooManyBytes { .. } => TidegateStatus::InvalidArgument,
    }
}

pub(crate) fn admission_of(answer: Admission) -> TidegateAdmission {
    match answer {
        Admission::Accepted { id } => TidegateAdmission {
            decision: TidegateAdmissionDecision::Accepted,
            reject_reason: TidegateRejectReason::None,
            flow: id.to_raw(),
            evicted: 0,
            budget_refusal: TidegateBudgetRefusal::None,
            reserved: 0,
        },
        Admission::AcceptedAfterEvicting { id, evicted } => TidegateAdmission {
            decision: TidegateAdmissionDecision::AcceptedAfterEvicting,
            reject_reason: TidegateRejectReason::None,
            flow: id.to_raw(),
            evicted: evicted.to_raw(),
            budget_refusal: TidegateBudgetRefusal::None,
            reserved: 0,
        },
        Admission::Rejected(reason) => TidegateAdmission {
            decision: TidegateAdmissionDecision::Rejected,
            reject_reason: match reason {
                RejectReason::TableFull => TidegateRejectReason::TableFull,
                RejectReason::AppOverLimit => TidegateRejectReason::AppOverLimit,
                RejectReason::DestinationOverLimit => TidegateRejectReason::DestinationOverLimit,
                RejectReason::ConnectionBudget => TidegateRejectReason::ConnectionBudget,
            },
            flow: 0,
            evicted: 0,
            budget_refusal: TidegateBudgetRefusal::None,
            reserved: 0,
        },
    }
}

pub(crate) fn outcome_of(outcome: FlowOutcome) -> TidegateFlowOutcome {
    match outcome {
        FlowOutcome::Closed => TidegateFlowOutcome::Closed,
        FlowOutcome::AlsoRan => TidegateFlowOutcome::AlsoRan,
        FlowOutcome::ConnectFailed(_) => TidegateFlowOutcome::ConnectFailed,
        FlowOutcome::ClosedByGovernor(CloseReason::Evicted) => TidegateFlowOutcome::Evicted,
        FlowOutcome::ClosedByGovernor(CloseReason::IdleTimeout) => TidegateFlowOutcome::IdleTimeout,
        FlowOutcome::ClosedByGovernor(CloseReason::ConnectTimeout) => {
            TidegateFlowOutcome::ConnectTimeout
        }
    }
}

pub(crate) fn state_of(state: FlowState) -> TidegateFlowState {
    match state {
        FlowState::Opening => TidegateFlowState::Opening,
        FlowState::Connecting => TidegateFlowState::Connecting,
        FlowState::Established => TidegateFlowState::Established,
        FlowState::Closing => TidegateFlowState::Closing,
        FlowState::Closed => TidegateFlowState::Closed,
    }
}

pub(crate) fn close_reason_of(reason: CloseReason) -> TidegateCloseReason {
    match reason {
        CloseReason::Evicted => TidegateCloseReason::Evicted,
        CloseReason::IdleTimeout => TidegateCloseReason::IdleTimeout,
        CloseReason::ConnectTimeout => TidegateCloseReason::ConnectTimeout,
    }
}

pub(crate) fn app_state_of(state: AppState) -> TidegateAppState {
    TidegateAppState {
        bytes_pending: state.bytes_pending,
        open_flows: state.open_flows,
        reads_paused: state.reads_paused,
        reserved: [0; 3],
    }
}

fn notification_of(notification: Notification) -> TidegateFlowNotification {
    match notification {
        Notification::Close { id, reason } => TidegateFlowNotification {
            kind: TidegateFlowNotificationKind::Close,
            close_reason: close_reason_of(reason),
            flow: id.to_raw(),
        },
        Notification::ResumeReadLocal { id } => TidegateFlowNotification {
            kind: TidegateFlowNotificationKind::ResumeReadLocal,
            close_reason: TidegateCloseReason::None,
            flow: id.to_raw(),
        },
        Notification::ResumeReadRemote { id } => TidegateFlowNotification {
            kind: TidegateFlowNotificationKind::ResumeReadRemote,
            close_reason: TidegateCloseReason::None,
            flow: id.to_raw(),
        },
    }
}

pub(crate) fn stats_of(s: &FlowStats) -> TidegateFlowStats {
    let mut top_apps = [TidegateAppFlows::default(); 8];
    for (out, entry) in top_apps.iter_mut().zip(s.top_apps()) {
        *out = TidegateAppFlows {
            app: entry.app.0,
            flows: entry.flows,
            reserved: 0,
        };
    }
    TidegateFlowStats {
        admitted: s.admitted,
        rejected_table_full: s.rejected.table_full,
        rejected_app_over_limit: s.rejected.app_over_limit,
        rejected_destination_over_limit: s.rejected.destination_over_limit,
        rejected_connection_budget: s.rejected.connection_budget,
        evicted: s.evicted,
        idle_timeouts: s.idle_timeouts,
        connect_timeouts: s.connect_timeouts,
        also_ran: s.also_ran,
        closed: s.closed,
        connect_failures: s.connect_failures,
        opening: s.flows.opening,
        connecting: s.flows.connecting,
        established: s.flows.established,
        closing: s.flows.closing,
        bytes_pending_outbound: s.bytes_pending_outbound,
        bytes_pending_inbound: s.bytes_pending_inbound,
        reads_paused_globally: s.reads_paused_globally,
        reserved: [0; 7],
        apps: s.apps,
        top_apps_len: s.top_apps().len() as u32,
        top_apps,
        also_ran_attempts: s.also_ran_attempts,
        budget_mismatches: s.budget_mismatches,
        connections_held: s.connections_held,
        apps_reads_paused: s.apps_reads_paused,
        app_pauses: s.app_pauses,
    }
}

/// Force a panic inside the boundary of `governor`, to test that the panic is caught and the
/// handle poisoned. Not part of the C API.
///
/// # Safety
/// As for any mutating call: `governor` must be NULL or a live handle.
#[doc(hidden)]
#[cfg(any(test, feature = "testing"))]
pub unsafe fn testing_panic_inside_flow_governor(
    governor: *mut TidegateFlowGovernor,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(governor, |_| -> Result<(), TidegateStatus> {
            panic!("forced panic for testing the C boundary")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{align_of, size_of};
    use std::ptr;

    #[test]
    fn default_policy_round_trips_and_footprint_matches() {
        let policy = tidegate_flow_policy_default();
        let (core, slots) = core_policy(&policy).unwrap();
        assert_eq!(core, FlowPolicy::APPLE_DEFAULT);
        assert_eq!(slots, 512);
        let (mut bytes, mut align) = (0, 0);
        // SAFETY: valid pointers.
        let status = unsafe { tidegate_flow_governor_footprint(&policy, &mut bytes, &mut align) };
        assert_eq!(status, TidegateStatus::Ok);
        // The handle, then the slots on their alignment: nothing else.
        let slots_at = size_of::<TidegateFlowGovernor>().next_multiple_of(align_of::<FlowSlot>());
        let end = slots_at + 512 * size_of::<FlowSlot>();
        assert_eq!(bytes, end.next_multiple_of(align));
        let bad = TidegateFlowPolicy {
            slots: 100,
            ..policy
        };
        // SAFETY: valid pointers.
        let status = unsafe { tidegate_flow_governor_footprint(&bad, &mut bytes, &mut align) };
        assert_eq!(status, TidegateStatus::ConfigFlowTooFewSlots);
        // A NULL out-pointer is reported before what else is wrong.
        // SAFETY: a valid policy and a NULL out-pointer.
        let status = unsafe { tidegate_flow_governor_footprint(&bad, ptr::null_mut(), &mut align) };
        assert_eq!(status, TidegateStatus::NullArgument);
    }

    #[test]
    fn errors_map_to_distinct_statuses_and_out_params_stay_untouched() {
        let policy = tidegate_flow_policy_default();
        let mut governor = ptr::null_mut();
        // SAFETY: valid pointers; the handle is freed at the end.
        unsafe {
            assert_eq!(
                tidegate_flow_governor_new(&policy, 0, &mut governor),
                TidegateStatus::Ok
            );
            let mut admission = std::mem::MaybeUninit::uninit();
            assert_eq!(
                tidegate_flow_governor_on_new_flow(governor, 1, 7, 9, 5, admission.as_mut_ptr()),
                TidegateStatus::InvalidArgument
            );
            assert_eq!(
                tidegate_flow_governor_on_new_flow(governor, 1, 7, 9, 0, admission.as_mut_ptr()),
                TidegateStatus::Ok
            );
            let admission = admission.assume_init();
            assert_eq!(admission.decision, TidegateAdmissionDecision::Accepted);
            let flow = admission.flow;
            assert_eq!(
                tidegate_flow_governor_on_remote_sent(governor, 2, flow, 1),
                TidegateStatus::CompletionExceedsPending
            );
            assert_eq!(
                tidegate_flow_governor_on_connected(governor, 2, 0),
                TidegateStatus::UnknownFlow
            );
            let mut outcome = TidegateFlowOutcome::Closed;
            assert_eq!(
                tidegate_flow_governor_on_connect_failed(governor, 3, flow, 111, &mut outcome),
                TidegateStatus::Ok
            );
            assert_eq!(outcome, TidegateFlowOutcome::ConnectFailed);
            outcome = TidegateFlowOutcome::Evicted;
            assert_eq!(
                tidegate_flow_governor_on_closed(governor, 3, flow, &mut outcome),
                TidegateStatus::StaleFlow
            );
            assert_eq!(outcome, TidegateFlowOutcome::Evicted, "untouched on error");
            let mut stats = std::mem::MaybeUninit::uninit();
            assert_eq!(
                tidegate_flow_governor_stats(governor, stats.as_mut_ptr()),
                TidegateStatus::Ok
            );
            let stats = stats.assume_init();
            assert_eq!(stats.admitted, 1);
            assert_eq!(stats.connect_failures.iter().sum::<u64>(), 1);
            let mut deadline = 0;
            assert_eq!(
                tidegate_flow_governor_poll_timeout(governor, &mut deadline),
                TidegateStatus::Ok
            );
            assert_eq!(deadline, u64::MAX);
            tidegate_flow_governor_free(governor);
            tidegate_flow_governor_free(ptr::null_mut());
        }
    }
}
