//! C ABI of the proxy engine: `TidegateProxy`, flows, the connection budget and Happy Eyeballs
//! races behind one loop.

use core::cell::Cell;
use core::ffi::c_void;

use tidegate_core::{
    Admission, AppId, BudgetConfig, DEFAULT_RACE_SLOTS, FlowId, FlowSlot, Instant, ProxyConfig,
    ProxyConfigError, ProxyEngine, ProxyError, ProxyEvent, RaceSlot, RaceStatus, RejectReason,
    Side, classify_errno,
};

use crate::black_box::{self, TidegateBlackBoxRecord};
use crate::boundary::{Handle, call, call_mut, require_non_null, write_out};
use crate::budget::{
    TidegateBudgetConfig, TidegateBudgetStats, status_of_budget_config, status_of_budget_error,
    status_of_refusal,
};
use crate::eyeballs::{
    NO_ADDRESS, TidegateBudgetRefusal, TidegateErrorClass, TidegateEyeballsConfig,
    TidegateRaceFailure, TidegateSocketAddress, address_of, dns_answer, eyeballs_config,
    failure_of, family_of, feed_in_chunks, index_of, race_config_default, refusal_of,
    status_of_attempt, status_of_resolve,
};
use crate::flow::{
    TidegateAdmission, TidegateAppState, TidegateCloseReason, TidegateFlowId, TidegateFlowOutcome,
    TidegateFlowPolicy, TidegateFlowState, TidegateFlowStats, admission_of, app_state_of,
    close_reason_of, core_policy, flow_info_of, flow_policy_default, outcome_of, state_of,
    stats_of, status_of_flow, status_of_policy,
};
use crate::place::{self, Carver, Memory, Region};
use crate::status::TidegateStatus;

/// A proxy engine: the flow table of an app or transparent proxy (admission, fairness,
/// eviction, timeouts, per-flow backpressure), the process's connection budget, and a Happy
/// Eyeballs race (RFC 8305) for each flow the host connects with BSD sockets.
///
/// The host feeds in what happens (`tidegate_proxy_on_*`: a new flow, DNS answers, attempt
/// outcomes, bytes read and written, closes) and the time, and drains one queue of events
/// (`tidegate_proxy_poll_events`): close a flow, resume a read, open or close an attempt's
/// socket, use the winner, a failed connect. Every event is already accounted for when it comes
/// out. After every input, drain until the count is 0, then arm one timer for
/// `tidegate_proxy_poll_timeout` and call `tidegate_proxy_handle_timeout` when it fires. Events
/// wait in the engine's tables, so none is lost however late the host drains.
///
/// A host whose system connects for it (Network framework) reports
/// `tidegate_proxy_on_connecting`, `_on_connected` and `_on_connect_failed` instead of DNS
/// answers; the budget then counts only the host's own connections.
///
/// All its memory is one block of `tidegate_proxy_footprint` bytes, allocated by
/// `tidegate_proxy_new` or given to `tidegate_proxy_init`; nothing is allocated afterwards.
///
/// Thread safety: not safe for concurrent use. Calls on one handle must not overlap (use one
/// serial dispatch queue, or a lock of your own); moving the handle between threads is fine.
pub struct TidegateProxy {
    poison: Cell<bool>,
    #[cfg_attr(not(feature = "std"), allow(dead_code))]
    memory: Memory,
    engine: ProxyEngine<Region<FlowSlot>, Region<RaceSlot>>,
}

impl Handle for TidegateProxy {
    fn poison(&self) -> &Cell<bool> {
        &self.poison
    }
    #[cfg(feature = "std")]
    fn memory(&self) -> Memory {
        self.memory
    }
}

/// Configuration of a `TidegateProxy`. Start from `tidegate_proxy_config_default()` and change
/// what you need; `tidegate_proxy_footprint`, `_new` and `_init` check it and name the first
/// problem in their status.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TidegateProxyConfig {
    /// The flow table: slots, caps, timeouts, watermarks.
    pub flows: TidegateFlowPolicy,
    /// The connection budget shared by every race and the host's own connections.
    pub budget: TidegateBudgetConfig,
    /// The parameters of every race.
    pub race: TidegateEyeballsConfig,
    /// Races that may run at once: flows connecting through DNS answers, and races of closed
    /// flows until their cancellations are drained. Default 128, the default `max_connecting`;
    /// 1 to `UINT32_MAX - 1`. A DNS answer for a flow that would need one more is refused with
    /// `TIDEGATE_STATUS_NO_RACE_SLOT`.
    pub race_slots: u32,
    /// Must be 0 (the default is); room for a future field. Anything else is refused with
    /// `TIDEGATE_STATUS_INVALID_ARGUMENT`.
    pub reserved: u32,
}

/// What an event asks of the host.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TidegateProxyEventKind {
    /// Close `flow` (its local flow and its remote connection, if any), then report it with
    /// `tidegate_proxy_on_closed`. `close_reason` says why. Its race, if one was running, is
    /// aborted: its attempts come out as `CANCEL_ATTEMPT`.
    CloseFlow = 0,
    /// Reading the local side of `flow` may restart: issue the next `readData`.
    ResumeReadLocal = 1,
    /// Reading the remote side of `flow` may restart: issue the next receive.
    ResumeReadRemote = 2,
    /// Open a non-blocking socket and connect it to `address`; report the outcome with
    /// `tidegate_proxy_on_attempt_connected` or `_failed`, naming `flow` and `attempt`. The
    /// budget counts the attempt; the flow is connecting.
    StartAttempt = 3,
    /// Close the socket of `attempt` of `flow`: it lost, timed out, was traded for the next
    /// candidate under budget pressure, or connected for a flow no longer open. Its budget is
    /// already released; `flow` may already be closed.
    CancelAttempt = 4,
    /// `attempt` won: its socket is `flow`'s remote connection. The flow is established and the
    /// budget counts the connection open until the flow is reported closed.
    Established = 5,
    /// `flow`'s connect failed (`failure`, `error_class`, `budget_refusal`): the flow is
    /// closed and its id is stale. Close the local flow (an app proxy fails it with an error of
    /// `error_class`); do not report it closed.
    ConnectFailed = 6,
}

/// One event from `tidegate_proxy_poll_events`. Fields not named by `kind` are zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TidegateProxyEvent {
    /// What to do.
    pub kind: TidegateProxyEventKind,
    /// The attempt, for `START_ATTEMPT`, `CANCEL_ATTEMPT` and `ESTABLISHED` (below 16).
    pub attempt: u32,
    /// The flow concerned.
    pub flow: TidegateFlowId,
    /// Where to connect, for `START_ATTEMPT`.
    pub address: TidegateSocketAddress,
    /// Why, for `CLOSE_FLOW`; `TIDEGATE_CLOSE_REASON_NONE` otherwise.
    pub close_reason: TidegateCloseReason,
    /// Why the race failed, for `CONNECT_FAILED`.
    pub failure: TidegateRaceFailure,
    /// For `CONNECT_FAILED`, the class the flow's failure is counted under: the last attempt's
    /// class (`ALL_ATTEMPTS_FAILED`), `UNREACHABLE` (`NO_ADDRESSES`) or `RESOURCE_EXHAUSTED`
    /// (`NO_BUDGET`); 0 otherwise.
    pub error_class: TidegateErrorClass,
    /// The budget limit, for `CONNECT_FAILED` with `TIDEGATE_RACE_FAILURE_NO_BUDGET`.
    pub budget_refusal: TidegateBudgetRefusal,
}

/// A side of a flow (the `side` argument of `tidegate_proxy_can_read`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TidegateProxySide {
    /// The local flow (the app's socket): bytes toward the remote.
    Local = 0,
    /// The remote connection: bytes toward the app.
    Remote = 1,
}

/// What `tidegate_proxy_on_bytes` reports (its `what` argument).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TidegateRelayStep {
    /// Bytes read from the local flow (now pending toward the remote).
    LocalRead = 0,
    /// The remote send of that many bytes completed.
    RemoteSent = 1,
    /// Bytes read from the remote (now pending toward the app).
    RemoteRead = 2,
    /// The local write of that many bytes completed.
    LocalWritten = 3,
}

/// Where a flow's race stands (`race_state` of `TidegateProxyFlow`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TidegateProxyRaceState {
    /// The flow has no race: no DNS input yet, connected by the host's system, or its race
    /// is over and drained.
    None = 0,
    /// No attempt started yet: waiting for addresses or the Resolution Delay.
    Resolving = 1,
    /// Attempts in flight, or the next waiting for its delay.
    Connecting = 2,
    /// An attempt is due but the budget refuses it (`budget_refusal` says which limit).
    WaitingForBudget = 3,
    /// Won; the winner comes out (or came out) as `ESTABLISHED`.
    Connected = 4,
    /// Failed; the failure comes out (or came out) as `CONNECT_FAILED`.
    Failed = 5,
    /// Aborted because the flow stopped being open.
    Aborted = 6,
}

/// One flow, from `tidegate_proxy_flow`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TidegateProxyFlow {
    /// Bytes read from the local flow and not yet acknowledged by the remote send.
    pub bytes_pending_outbound: u64,
    /// Bytes read from the remote and not yet written to the local flow.
    pub bytes_pending_inbound: u64,
    /// When the flow was admitted, in microseconds.
    pub admitted_at_us: u64,
    /// The last time bytes moved on it (or it was admitted or connected), in microseconds.
    pub last_active_us: u64,
    /// Where the flow is in its life.
    pub state: TidegateFlowState,
    /// Where its race stands.
    pub race_state: TidegateProxyRaceState,
    /// For `race_state` `WAITING_FOR_BUDGET`, the limit that refuses.
    pub budget_refusal: TidegateBudgetRefusal,
    /// Attempts of its race in flight.
    pub attempts_in_flight: u32,
}

/// Counters and occupancy of the races, in `TidegateProxyStats`. Counters saturate.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TidegateRaceStats {
    /// Races started (a flow's first DNS input).
    pub started: u64,
    /// Races won: flows established by an attempt.
    pub won: u64,
    /// Races failed: flows closed with a connect failure.
    pub failed: u64,
    /// Races aborted because their flow stopped being open.
    pub aborted: u64,
    /// DNS inputs refused with `TIDEGATE_STATUS_NO_RACE_SLOT`.
    pub no_slot: u64,
    /// Races in their slots now (running, or draining their cancellations).
    pub running: u32,
    /// Always 0: keeps the struct free of padding, so every byte is written.
    pub reserved: u32,
}

/// A snapshot of the engine, from `tidegate_proxy_stats`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TidegateProxyStats {
    /// The flow table.
    pub flows: TidegateFlowStats,
    /// The connection budget's counters.
    pub budget: TidegateBudgetStats,
    /// The races.
    pub races: TidegateRaceStats,
    /// Connection attempts in flight now.
    pub attempts_in_flight: u32,
    /// Connections the budget counts open now: races' winners and the host's own.
    pub open_connections: u32,
    /// The budget's effective attempt limit now (lower than configured while backing off).
    pub attempt_limit: u32,
    /// The budget's effective limit on attempts plus open connections now.
    pub connection_limit: u32,
    /// The memory pressure level in force (`tidegate_proxy_on_pressure`).
    pub pressure: crate::memory::TidegatePressure,
    /// Always 0: keeps the struct free of padding, so every byte is written.
    pub reserved: u32,
    /// The flow policy in force: the configured one with its caps and watermarks scaled by the
    /// pressure level (timeouts and pacing as configured).
    pub limits: TidegateFlowPolicy,
}

/// The default configuration, for an Apple Network Extension proxy: the flow policy of
/// `tidegate_flow_policy_default()` (512 slots, at most 448 open flows, 128 connecting), a
/// budget of 64 attempts in flight and 400 connections with `RLIMIT_NOFILE` 256 (32 kept back),
/// the races of RFC 8305 (IPv6 first, 50 ms Resolution Delay, 250 ms Connection Attempt Delay,
/// 1 s budget wait), and 128 race slots.
#[unsafe(no_mangle)]
pub extern "C" fn tidegate_proxy_config_default() -> TidegateProxyConfig {
    TidegateProxyConfig {
        flows: flow_policy_default(),
        budget: TidegateBudgetConfig::from(BudgetConfig::DEFAULT),
        race: race_config_default(),
        race_slots: DEFAULT_RACE_SLOTS as u32,
        reserved: 0,
    }
}

/// Writes to `*out_size` and `*out_align` the size and alignment of the memory a proxy engine
/// with `config` lives in, in one block: the engine, its flow slots and its race slots. That is
/// all the memory it ever uses: `tidegate_proxy_new` allocates exactly this block, and
/// `tidegate_proxy_init` places it in a block of yours.
///
/// Returns a `TIDEGATE_STATUS_CONFIG_*` status if the configuration is invalid.
///
/// # Safety
/// `config` must be NULL or point to a valid `TidegateProxyConfig`; `out_size` and `out_align`
/// must be NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_proxy_footprint(
    config: *const TidegateProxyConfig,
    out_size: *mut usize,
    out_align: *mut usize,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe { place::footprint::<TidegateProxy>(config, out_size, out_align) }
}

/// Creates a proxy engine with `config`, started at `now_us`, in memory it allocates, and
/// writes its handle to `*out_proxy`. The one allocation is `tidegate_proxy_footprint(config)`
/// bytes; nothing is allocated afterwards. Free the handle with `tidegate_proxy_free`.
///
/// Returns a `TIDEGATE_STATUS_CONFIG_*` status for an invalid configuration, or
/// `TIDEGATE_STATUS_OUT_OF_MEMORY` if the allocation fails.
///
/// # Safety
/// `config` must be NULL or point to a valid `TidegateProxyConfig`; `out_proxy` must be NULL or
/// valid for writing a pointer.
#[cfg(feature = "std")]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_proxy_new(
    config: *const TidegateProxyConfig,
    now_us: u64,
    out_proxy: *mut *mut TidegateProxy,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe { place::new(config, now_us, out_proxy) }
}

/// Creates a proxy engine with `config`, started at `now_us`, in the `len` bytes at `memory`,
/// and writes its handle (`memory` itself) to `*out_proxy`: for hosts that place engines in
/// memory of their own.
///
/// `memory` must hold the size `tidegate_proxy_footprint` gives and start on its alignment, or
/// the call returns `TIDEGATE_STATUS_BUFFER_TOO_SMALL` or `TIDEGATE_STATUS_MISALIGNED`. Nothing
/// else is ever used. Call `tidegate_proxy_free` when done: it ends the handle and leaves the
/// memory to you.
///
/// # Safety
/// `config` must be NULL or point to a valid `TidegateProxyConfig`; `memory` must be NULL or
/// valid for reading and writing `len` bytes, used by nothing else until the handle is freed;
/// `out_proxy` must be NULL or valid for writing a pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_proxy_init(
    config: *const TidegateProxyConfig,
    now_us: u64,
    memory: *mut c_void,
    len: usize,
    out_proxy: *mut *mut TidegateProxy,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe { place::init(config, now_us, memory, len, out_proxy) }
}

/// Frees a proxy engine: ends it and releases its memory (memory given to `tidegate_proxy_init`
/// goes back to the caller). `NULL` is a no-op. Works on a poisoned handle too. Close the
/// sockets you hold first: the engine forgets them.
///
/// # Safety
/// `proxy` must be NULL or a handle from `tidegate_proxy_new` or `tidegate_proxy_init` that was
/// not freed yet, with no other call on it running.
#[cfg(feature = "std")]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_proxy_free(proxy: *mut TidegateProxy) {
    // SAFETY: forwarded caller contract.
    unsafe { place::free(proxy) }
}

/// Asks to admit a new flow of `app` to `destination` over `protocol` (a
/// `TIDEGATE_FLOW_PROTOCOL_*` value) of class `flow_class` (a `TIDEGATE_FLOW_CLASS_*` value:
/// `DNS` for DNS queries, `DATAGRAM` for other UDP, `STREAM` otherwise), under the caps, the
/// class's caps, admission pacing, the fairness rule and the connection budget, and writes the
/// answer to `*out_admission`. A refusal is an answer, not an error: the status is
/// `TIDEGATE_STATUS_OK` and the decision says `REJECTED`, with `budget_refusal` naming the
/// budget limit when the reason is `CONNECTION_BUDGET` (`NONE` there means `max_connecting`
/// refused) and `retry_at_us` the time to ask again when it is `PACED`. A flow evicted to
/// admit this one also comes out of `tidegate_proxy_poll_events` as `CLOSE_FLOW`: close it
/// there. O(1).
///
/// Returns `TIDEGATE_STATUS_INVALID_ARGUMENT` for an unknown protocol or class; nothing
/// changes.
///
/// # Safety
/// `proxy` must be NULL or a live handle; `out_admission` must be NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_proxy_on_new_flow(
    proxy: *mut TidegateProxy,
    now_us: u64,
    app: u64,
    destination: u64,
    protocol: u32,
    flow_class: u32,
    out_admission: *mut TidegateAdmission,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(proxy, |p| {
            require_non_null([out_admission.cast_const().cast()])?;
            let info = flow_info_of(app, destination, protocol, flow_class)?;
            let answer = p.engine.on_new_flow(Instant::from_micros(now_us), info);
            let mut admission = admission_of(answer);
            match answer {
                Admission::Rejected(RejectReason::ConnectionBudget) => {
                    admission.budget_refusal = p
                        .engine
                        .budget_refusal()
                        .map_or(TidegateBudgetRefusal::None, refusal_of);
                }
                Admission::Rejected(RejectReason::Paced) => {
                    admission.retry_at_us = p
                        .engine
                        .flows()
                        .paced_until(AppId(app))
                        .map_or(0, Instant::as_micros);
                }
                _ => {}
            }
            write_out(out_admission, admission)
        })
    }
}

/// The host's system started connecting `flow` (a host that does not connect through DNS
/// answers and races): opening becomes connecting.
///
/// Returns `TIDEGATE_STATUS_UNKNOWN_FLOW` or `_STALE_FLOW` for an id that names no open flow,
/// `TIDEGATE_STATUS_FLOW_INVALID_STATE` unless the flow is opening, and
/// `TIDEGATE_STATUS_RACE_RUNNING` for a flow a race connects; nothing changes.
///
/// # Safety
/// `proxy` must be NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_proxy_on_connecting(
    proxy: *mut TidegateProxy,
    now_us: u64,
    flow: TidegateFlowId,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(proxy, |p| {
            p.engine
                .on_connecting(Instant::from_micros(now_us), FlowId::from_raw(flow))
                .map_err(status_of_proxy)
        })
    }
}

/// The host's system connected `flow`: it is established and may read from the remote. The
/// budget does not count the connection (the system made it).
///
/// Returns as `tidegate_proxy_on_connecting` (`FLOW_INVALID_STATE` unless opening or
/// connecting); nothing changes then.
///
/// # Safety
/// `proxy` must be NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_proxy_on_connected(
    proxy: *mut TidegateProxy,
    now_us: u64,
    flow: TidegateFlowId,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(proxy, |p| {
            p.engine
                .on_connected(Instant::from_micros(now_us), FlowId::from_raw(flow))
                .map_err(status_of_proxy)
        })
    }
}

/// The host's system failed to connect `flow` with `errno_value` (classified as
/// `tidegate_errno_class` does); close the local flow. The slot is freed; writes the flow's
/// outcome to `*out_outcome`.
///
/// Returns as `tidegate_proxy_on_connecting` (`FLOW_INVALID_STATE` for an established flow:
/// report its end with `tidegate_proxy_on_closed`); nothing changes then.
///
/// # Safety
/// `proxy` must be NULL or a live handle; `out_outcome` must be NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_proxy_on_connect_failed(
    proxy: *mut TidegateProxy,
    now_us: u64,
    flow: TidegateFlowId,
    errno_value: i32,
    out_outcome: *mut TidegateFlowOutcome,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(proxy, |p| {
            require_non_null([out_outcome.cast_const().cast()])?;
            let outcome = p
                .engine
                .on_connect_failed(
                    Instant::from_micros(now_us),
                    FlowId::from_raw(flow),
                    classify_errno(errno_value),
                )
                .map_err(status_of_proxy)?;
            write_out(out_outcome, outcome_of(outcome))
        })
    }
}

/// The host closed `flow` (either side ended, or the engine asked). The slot is freed and the
/// id becomes stale; a race still running for it is aborted (its attempts come out as
/// `CANCEL_ATTEMPT`); the connection it held goes back to the budget. Writes the flow's one
/// outcome to `*out_outcome`.
///
/// Returns `TIDEGATE_STATUS_UNKNOWN_FLOW` for an id never issued and
/// `TIDEGATE_STATUS_STALE_FLOW` for a flow already closed; nothing changes.
///
/// # Safety
/// `proxy` must be NULL or a live handle; `out_outcome` must be NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_proxy_on_closed(
    proxy: *mut TidegateProxy,
    now_us: u64,
    flow: TidegateFlowId,
    out_outcome: *mut TidegateFlowOutcome,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(proxy, |p| {
            require_non_null([out_outcome.cast_const().cast()])?;
            let outcome = p
                .engine
                .on_closed(Instant::from_micros(now_us), FlowId::from_raw(flow))
                .map_err(status_of_proxy)?;
            write_out(out_outcome, outcome_of(outcome))
        })
    }
}

/// Reports `bytes` moved on `flow`: read from a side (`LOCAL_READ`, `REMOTE_READ`) or
/// completed toward the other (`REMOTE_SENT`, `LOCAL_WRITTEN`), a `TIDEGATE_RELAY_STEP_*`
/// value. Writes to `*out_can_read` whether the side this step concerns may be read now (the
/// local side for `LOCAL_READ` and `REMOTE_SENT`, the remote side for the others): when it is
/// false, stop reading that side until `RESUME_READ_*` comes out of the event queue. O(1).
///
/// Returns `TIDEGATE_STATUS_UNKNOWN_FLOW` or `_STALE_FLOW` for an id that names no flow,
/// `TIDEGATE_STATUS_COMPLETION_EXCEEDS_PENDING` for a completion larger than the bytes pending,
/// `TIDEGATE_STATUS_INVALID_ARGUMENT` for an unknown step or a read too large to count;
/// nothing changes then.
///
/// # Safety
/// `proxy` must be NULL or a live handle; `out_can_read` must be NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_proxy_on_bytes(
    proxy: *mut TidegateProxy,
    now_us: u64,
    flow: TidegateFlowId,
    what: u32,
    bytes: u64,
    out_can_read: *mut bool,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(proxy, |p| {
            require_non_null([out_can_read.cast_const().cast()])?;
            let now = Instant::from_micros(now_us);
            let id = FlowId::from_raw(flow);
            let engine = &mut p.engine;
            let side = match what {
                0 => {
                    engine
                        .on_local_read(now, id, bytes)
                        .map_err(status_of_proxy)?;
                    Side::Local
                }
                1 => {
                    engine
                        .on_remote_sent(now, id, bytes)
                        .map_err(status_of_proxy)?;
                    Side::Local
                }
                2 => {
                    engine
                        .on_remote_read(now, id, bytes)
                        .map_err(status_of_proxy)?;
                    Side::Remote
                }
                3 => {
                    engine
                        .on_local_written(now, id, bytes)
                        .map_err(status_of_proxy)?;
                    Side::Remote
                }
                _ => return Err(TidegateStatus::InvalidArgument),
            };
            write_out(out_can_read, engine.can_read(id, side))
        })
    }
}

/// Writes to `*out_can_read` whether `side` (a `TIDEGATE_PROXY_SIDE_*` value) of `flow` may be
/// read now: false for a side paused by a watermark, and for an id that names no open flow.
///
/// Returns `TIDEGATE_STATUS_INVALID_ARGUMENT` for an unknown side.
///
/// # Safety
/// `proxy` must be NULL or a live handle; `out_can_read` must be NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_proxy_can_read(
    proxy: *const TidegateProxy,
    flow: TidegateFlowId,
    side: u32,
    out_can_read: *mut bool,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call(proxy, |p| {
            require_non_null([out_can_read.cast_const().cast()])?;
            let side = match side {
                0 => Side::Local,
                1 => Side::Remote,
                _ => return Err(TidegateStatus::InvalidArgument),
            };
            write_out(
                out_can_read,
                p.engine.can_read(FlowId::from_raw(flow), side),
            )
        })
    }
}

/// Feeds (part of) `flow`'s DNS answer: `family` (a `TIDEGATE_ADDRESS_FAMILY_*` value) says
/// whether it is the AAAA or the A answer; `addresses[0..count]` are its addresses with the
/// port to connect to, in the resolver's order; `count` 0 is an answer without records. The
/// flow's first DNS input starts its race. Writes how many addresses became candidates to
/// `*out_added` (duplicates and addresses past 16 do not).
///
/// Returns `TIDEGATE_STATUS_UNKNOWN_FLOW` or `_STALE_FLOW` for an id that names no flow,
/// `TIDEGATE_STATUS_FLOW_INVALID_STATE` for a flow neither opening nor connected by a race,
/// `TIDEGATE_STATUS_NO_RACE_SLOT` when every race slot is in use (drain the events and retry,
/// or fail the flow), `TIDEGATE_STATUS_INVALID_ARGUMENT` for an unknown family (in the argument
/// or an address), `TIDEGATE_STATUS_ADDRESS_FAMILY_MISMATCH` if an address is not of `family`,
/// `TIDEGATE_STATUS_RACE_FINISHED` once the race is over; nothing is fed then.
///
/// # Safety
/// `proxy` must be NULL or a live handle; `addresses` must be valid for reading `count`
/// addresses (NULL only if `count` is 0); `out_added` must be NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_proxy_on_resolved(
    proxy: *mut TidegateProxy,
    now_us: u64,
    flow: TidegateFlowId,
    family: u32,
    addresses: *const TidegateSocketAddress,
    count: usize,
    out_added: *mut usize,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(proxy, |p| {
            require_non_null([out_added.cast_const().cast()])?;
            let (family, addresses) = dns_answer(family, addresses, count)?;
            let now = Instant::from_micros(now_us);
            let id = FlowId::from_raw(flow);
            let added = feed_in_chunks(addresses, |part| {
                p.engine
                    .on_resolved(now, id, family, part)
                    .map_err(status_of_proxy)
            })?;
            write_out(out_added, added)
        })
    }
}

/// `flow`'s DNS query of `family` (a `TIDEGATE_ADDRESS_FAMILY_*` value) failed or timed out.
/// Starts the flow's race if this is its first DNS input.
///
/// Returns as `tidegate_proxy_on_resolved`; nothing changes then.
///
/// # Safety
/// `proxy` must be NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_proxy_on_resolution_failed(
    proxy: *mut TidegateProxy,
    now_us: u64,
    flow: TidegateFlowId,
    family: u32,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(proxy, |p| {
            let family = family_of(family).ok_or(TidegateStatus::InvalidArgument)?;
            p.engine
                .on_resolution_failed(Instant::from_micros(now_us), FlowId::from_raw(flow), family)
                .map_err(status_of_proxy)
        })
    }
}

/// Resolution of `flow` is over: no more addresses will come. A race left without a candidate
/// fails (`CONNECT_FAILED` with `NO_ADDRESSES`).
///
/// Returns as `tidegate_proxy_on_resolved`; nothing changes then.
///
/// # Safety
/// `proxy` must be NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_proxy_on_resolution_done(
    proxy: *mut TidegateProxy,
    now_us: u64,
    flow: TidegateFlowId,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(proxy, |p| {
            p.engine
                .on_resolution_done(Instant::from_micros(now_us), FlowId::from_raw(flow))
                .map_err(status_of_proxy)
        })
    }
}

/// `attempt` of `flow` connected. The race picks the winner on the next poll of the events.
///
/// Returns `TIDEGATE_STATUS_UNKNOWN_FLOW` or `_STALE_FLOW` for an id that names no open flow,
/// `TIDEGATE_STATUS_NO_RACE` if the flow's race is over, `TIDEGATE_STATUS_UNKNOWN_ATTEMPT` for
/// an attempt never started, `TIDEGATE_STATUS_ATTEMPT_NOT_IN_FLIGHT` for one the race gave up
/// (its `CANCEL_ATTEMPT` closes the socket); nothing changes then.
///
/// # Safety
/// `proxy` must be NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_proxy_on_attempt_connected(
    proxy: *mut TidegateProxy,
    now_us: u64,
    flow: TidegateFlowId,
    attempt: u32,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(proxy, |p| {
            p.engine
                .on_attempt_connected(
                    Instant::from_micros(now_us),
                    FlowId::from_raw(flow),
                    attempt as usize,
                )
                .map_err(status_of_proxy)
        })
    }
}

/// `attempt` of `flow` failed with `errno_value` (from `connect` or `SO_ERROR`, classified as
/// `tidegate_errno_class` does); close its socket. A resource error makes the budget back off.
/// The next candidate starts at once (no sooner than 10 ms after the previous start).
///
/// Returns as `tidegate_proxy_on_attempt_connected`; nothing changes then.
///
/// # Safety
/// `proxy` must be NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_proxy_on_attempt_failed(
    proxy: *mut TidegateProxy,
    now_us: u64,
    flow: TidegateFlowId,
    attempt: u32,
    errno_value: i32,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(proxy, |p| {
            p.engine
                .on_attempt_failed(
                    Instant::from_micros(now_us),
                    FlowId::from_raw(flow),
                    attempt as usize,
                    classify_errno(errno_value),
                )
                .map_err(status_of_proxy)
        })
    }
}

/// Writes up to `capacity` events to `events[0..]` and their number to `*out_count`. Call it
/// after every input until the count is 0. See `TidegateProxyEventKind` for what each asks.
///
/// # Safety
/// `proxy` must be NULL or a live handle; `events` must be valid for writing `capacity`
/// entries (NULL only if `capacity` is 0); `out_count` must be NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_proxy_poll_events(
    proxy: *mut TidegateProxy,
    events: *mut TidegateProxyEvent,
    capacity: usize,
    out_count: *mut usize,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(proxy, |p| {
            require_non_null([out_count.cast_const().cast()])?;
            if events.is_null() && capacity > 0 {
                return Err(TidegateStatus::NullArgument);
            }
            let mut count = 0;
            while count < capacity {
                let Some(event) = p.engine.poll_event() else {
                    break;
                };
                // SAFETY: `count < capacity` and `events` is valid for `capacity` writes.
                events.add(count).write(event_of(event));
                count += 1;
            }
            write_out(out_count, count)
        })
    }
}

/// Writes to `*out_deadline_us` when `tidegate_proxy_handle_timeout` next has work (a flow's
/// connect or idle deadline, a race's next attempt or budget wait, the budget's recovery), or
/// `UINT64_MAX` if nothing is timed.
///
/// # Safety
/// `proxy` must be NULL or a live handle; `out_deadline_us` must be NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_proxy_poll_timeout(
    proxy: *const TidegateProxy,
    out_deadline_us: *mut u64,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call(proxy, |p| {
            let deadline = p.engine.poll_timeout().unwrap_or(Instant::MAX);
            write_out(out_deadline_us, deadline.as_micros())
        })
    }
}

/// Applies everything due at `now_us`: flows past their connect or idle deadline become
/// `CLOSE_FLOW` events, races whose timers are due act, the budget recovers. Idempotent. Then
/// drain `tidegate_proxy_poll_events`.
///
/// # Safety
/// `proxy` must be NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_proxy_handle_timeout(
    proxy: *mut TidegateProxy,
    now_us: u64,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(proxy, |p| {
            p.engine.handle_timeout(Instant::from_micros(now_us));
            Ok(())
        })
    }
}

/// Writes what the engine holds for `flow` to `*out_flow`: its state, bytes pending, times and
/// race.
///
/// Returns `TIDEGATE_STATUS_UNKNOWN_FLOW` for an id never issued and
/// `TIDEGATE_STATUS_STALE_FLOW` for a flow that has closed.
///
/// # Safety
/// `proxy` must be NULL or a live handle; `out_flow` must be NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_proxy_flow(
    proxy: *const TidegateProxy,
    flow: TidegateFlowId,
    out_flow: *mut TidegateProxyFlow,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call(proxy, |p| {
            require_non_null([out_flow.cast_const().cast()])?;
            let id = FlowId::from_raw(flow);
            let view = p.engine.flow(id).map_err(status_of_proxy)?;
            let mut out = TidegateProxyFlow {
                bytes_pending_outbound: view.outbound_pending,
                bytes_pending_inbound: view.inbound_pending,
                admitted_at_us: view.admitted_at.as_micros(),
                last_active_us: view.last_active.as_micros(),
                state: state_of(view.state),
                race_state: TidegateProxyRaceState::None,
                budget_refusal: TidegateBudgetRefusal::None,
                attempts_in_flight: 0,
            };
            if let Some(race) = p.engine.race(id) {
                out.attempts_in_flight = u32::try_from(race.attempts_in_flight()).unwrap_or(0);
                out.race_state = match race.status() {
                    RaceStatus::Resolving => TidegateProxyRaceState::Resolving,
                    RaceStatus::Connecting => TidegateProxyRaceState::Connecting,
                    RaceStatus::WaitingForBudget { refusal } => {
                        out.budget_refusal = refusal_of(refusal);
                        TidegateProxyRaceState::WaitingForBudget
                    }
                    RaceStatus::Connected { .. } => TidegateProxyRaceState::Connected,
                    RaceStatus::Failed { .. } => TidegateProxyRaceState::Failed,
                    RaceStatus::Aborted => TidegateProxyRaceState::Aborted,
                };
            }
            write_out(out_flow, out)
        })
    }
}

/// Writes what the engine holds for `app` to `*out_state`: its open flows, the bytes pending
/// over its flows and whether its app watermark pauses its reads; all zero for an app with no
/// flow. Ask it for the app behind a paused read to tell a stalled app from a stalled flow.
///
/// # Safety
/// `proxy` must be NULL or a live handle; `out_state` must be NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_proxy_app_state(
    proxy: *const TidegateProxy,
    app: u64,
    out_state: *mut TidegateAppState,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call(proxy, |p| {
            write_out(out_state, app_state_of(p.engine.app_state(AppId(app))))
        })
    }
}

/// Writes a snapshot of the engine's counters and occupancy (flows, budget, races) to
/// `*out_stats`.
///
/// # Safety
/// `proxy` must be NULL or a live handle; `out_stats` must be NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_proxy_stats(
    proxy: *const TidegateProxy,
    out_stats: *mut TidegateProxyStats,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call(proxy, |p| {
            let s = p.engine.stats();
            write_out(
                out_stats,
                TidegateProxyStats {
                    flows: stats_of(&s.flows),
                    budget: TidegateBudgetStats::from(s.budget),
                    races: TidegateRaceStats {
                        started: s.races.started,
                        won: s.races.won,
                        failed: s.races.failed,
                        aborted: s.races.aborted,
                        no_slot: s.races.no_slot,
                        running: s.races.running,
                        reserved: 0,
                    },
                    attempts_in_flight: s.attempts_in_flight,
                    open_connections: s.open_connections,
                    attempt_limit: s.attempt_limit,
                    connection_limit: s.connection_limit,
                    pressure: p.engine.flows().pressure().into(),
                    reserved: 0,
                    limits: crate::flow::c_policy(
                        p.engine.flows().limits(),
                        u32::try_from(p.engine.flows().capacity()).unwrap_or(u32::MAX),
                    ),
                },
            )
        })
    }
}

/// Applies memory pressure `level` (a `TIDEGATE_PRESSURE_*` value, from
/// `tidegate_memory_poll_pressure`): the flow policy's caps (flows, per app, per destination,
/// UDP, DNS) and its six watermarks are scaled (half at `ELEVATED`, a quarter at `CRITICAL`,
/// never below 1), and so is the budget's attempt limit. Reads above a shrunk watermark pause at
/// once and are resumed by a `RESUME_READ` event when they may run again. At `CRITICAL` every
/// new flow is refused (`TIDEGATE_REJECT_REASON_MEMORY_PRESSURE`) and flows idle for 2 s are
/// closed (`CLOSE_FLOW` with `TIDEGATE_CLOSE_REASON_MEMORY_PRESSURE`), least recently active
/// first, 32 at once and 32 more every second while it lasts. Limits grow back as the level
/// falls; `tidegate_proxy_stats` reports those in force. Poll the events afterwards.
///
/// Returns `TIDEGATE_STATUS_INVALID_ARGUMENT` for an unknown level, changing nothing.
///
/// # Safety
/// `proxy` must be NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_proxy_on_pressure(
    proxy: *mut TidegateProxy,
    now_us: u64,
    level: u32,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(proxy, |p| {
            let level = crate::memory::pressure_from_c(level)?;
            p.engine.on_pressure(Instant::from_micros(now_us), level);
            Ok(())
        })
    }
}

/// Sets the limit on flows admitted but not yet connected (opening or connecting): lower it
/// under pressure, raise it back after. Flows already admitted are not touched; 0 refuses every
/// new flow with `CONNECTION_BUDGET`.
///
/// # Safety
/// `proxy` must be NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_proxy_set_max_connecting(
    proxy: *mut TidegateProxy,
    max_connecting: u32,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(proxy, |p| {
            p.engine.set_max_connecting(max_connecting);
            Ok(())
        })
    }
}

/// Gives the budget the process's real descriptor limit (`getrlimit(RLIMIT_NOFILE)`, soft
/// value): connections are then capped at that limit less a reserve (the configured
/// `fd_reserve`, at most half the new limit).
///
/// Returns `TIDEGATE_STATUS_CONFIG_BUDGET_ZERO_LIMIT` for 0; nothing changes.
///
/// # Safety
/// `proxy` must be NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_proxy_set_fd_limit(
    proxy: *mut TidegateProxy,
    rlimit_nofile: u64,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(proxy, |p| {
            p.engine
                .set_fd_limit(rlimit_nofile)
                .map_err(status_of_budget_config)
        })
    }
}

/// The OS reported a resource error (`EMFILE`, `ENOBUFS`...) outside a race, on a connection of
/// the host's own: the budget backs off. Attempt failures reported with
/// `tidegate_proxy_on_attempt_failed` do this themselves.
///
/// # Safety
/// `proxy` must be NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_proxy_on_resource_error(
    proxy: *mut TidegateProxy,
    now_us: u64,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(proxy, |p| {
            p.engine.on_resource_error(Instant::from_micros(now_us));
            Ok(())
        })
    }
}

/// Counts a connection of the host's own (a control channel, a DNS-over-HTTPS connection)
/// against the budget before the host opens it; give it back with
/// `tidegate_proxy_on_connection_closed`.
///
/// Returns `TIDEGATE_STATUS_NO_BUDGET_ATTEMPTS` or `_NO_BUDGET_CONNECTIONS` when the budget has
/// no room (do not open it); nothing is counted then.
///
/// # Safety
/// `proxy` must be NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_proxy_try_open_connection(
    proxy: *mut TidegateProxy,
    now_us: u64,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(proxy, |p| {
            p.engine
                .try_open_connection(Instant::from_micros(now_us))
                .map_err(status_of_refusal)
        })
    }
}

/// A connection of the host's own (`tidegate_proxy_try_open_connection`) closed: the budget
/// gets it back, and races waiting for budget may start.
///
/// Returns `TIDEGATE_STATUS_BUDGET_NO_OPEN_CONNECTION` if none is open; nothing changes.
///
/// # Safety
/// `proxy` must be NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_proxy_on_connection_closed(
    proxy: *mut TidegateProxy,
    now_us: u64,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(proxy, |p| {
            p.engine
                .on_connection_closed(Instant::from_micros(now_us))
                .map_err(status_of_budget_error)
        })
    }
}

impl place::Placed for TidegateProxy {
    type CConfig = TidegateProxyConfig;
    /// The core configuration and the flow and race slot counts.
    type Config = (ProxyConfig, usize, usize);
    /// The flow slots and the race slots.
    type Storage = (Region<FlowSlot>, Region<RaceSlot>);

    fn check(config: &TidegateProxyConfig) -> Result<Self::Config, TidegateStatus> {
        if config.reserved != 0 {
            return Err(TidegateStatus::InvalidArgument);
        }
        let (flows, flow_slots) = core_policy(&config.flows)?;
        let budget = BudgetConfig::from(config.budget);
        budget.validate().map_err(status_of_budget_config)?;
        let race = eyeballs_config(&config.race)?;
        if config.race_slots == 0 || config.race_slots == u32::MAX {
            return Err(TidegateStatus::ConfigZeroCapacity);
        }
        let core = ProxyConfig {
            flows,
            budget,
            race,
        };
        Ok((core, flow_slots, config.race_slots as usize))
    }

    fn walk(
        &(_, flow_slots, race_slots): &Self::Config,
        carver: &mut Carver,
    ) -> Result<Self::Storage, TidegateStatus> {
        let flows = carver.array(flow_slots, FlowSlot::EMPTY)?;
        let races = carver.array(race_slots, RaceSlot::EMPTY)?;
        Ok((flows, races))
    }

    fn build(
        (config, _, _): Self::Config,
        now_us: u64,
        (flows, races): Self::Storage,
        memory: Memory,
    ) -> Result<Self, TidegateStatus> {
        let engine = ProxyEngine::new(Instant::from_micros(now_us), flows, races, config)
            .map_err(status_of_config)?;
        Ok(TidegateProxy {
            poison: Cell::new(false),
            memory,
            engine,
        })
    }
}

fn status_of_config(error: ProxyConfigError) -> TidegateStatus {
    match error {
        ProxyConfigError::Flows(error) => status_of_policy(error),
        ProxyConfigError::Budget(error) => status_of_budget_config(error),
        ProxyConfigError::Race(_) => TidegateStatus::ConfigEyeballsOutOfRange,
        // Checked before building, as a zero capacity.
        ProxyConfigError::RaceSlots => TidegateStatus::ConfigZeroCapacity,
        // A refusal added to the core later still refuses, with the generic status.
        _ => TidegateStatus::InvalidArgument,
    }
}

pub(crate) fn status_of_proxy(error: ProxyError) -> TidegateStatus {
    match error {
        ProxyError::Flow(error) => status_of_flow(error),
        ProxyError::NoRaceSlot => TidegateStatus::NoRaceSlot,
        ProxyError::NoRace => TidegateStatus::NoRace,
        ProxyError::RaceRunning => TidegateStatus::RaceRunning,
        ProxyError::Resolve(error) => status_of_resolve(error),
        ProxyError::Attempt(error) => status_of_attempt(error),
        // A refusal added to the core later still refuses, with the generic status.
        _ => TidegateStatus::InvalidArgument,
    }
}

fn event_of(event: ProxyEvent) -> TidegateProxyEvent {
    let mut out = TidegateProxyEvent {
        kind: TidegateProxyEventKind::CloseFlow,
        attempt: 0,
        flow: 0,
        address: NO_ADDRESS,
        close_reason: TidegateCloseReason::None,
        failure: TidegateRaceFailure::None,
        error_class: TidegateErrorClass::ResourceExhausted,
        budget_refusal: TidegateBudgetRefusal::None,
    };
    match event {
        ProxyEvent::CloseFlow { id, reason } => {
            out.flow = id.to_raw();
            out.close_reason = close_reason_of(reason);
        }
        ProxyEvent::ResumeRead { id, side } => {
            out.flow = id.to_raw();
            out.kind = match side {
                Side::Local => TidegateProxyEventKind::ResumeReadLocal,
                Side::Remote => TidegateProxyEventKind::ResumeReadRemote,
            };
        }
        ProxyEvent::StartAttempt { id, attempt, addr } => {
            out.kind = TidegateProxyEventKind::StartAttempt;
            out.flow = id.to_raw();
            out.attempt = index_of(attempt);
            out.address = address_of(addr);
        }
        ProxyEvent::CancelAttempt { id, attempt } => {
            out.kind = TidegateProxyEventKind::CancelAttempt;
            out.flow = id.to_raw();
            out.attempt = index_of(attempt);
        }
        ProxyEvent::Established { id, attempt } => {
            out.kind = TidegateProxyEventKind::Established;
            out.flow = id.to_raw();
            out.attempt = index_of(attempt);
        }
        ProxyEvent::ConnectFailed { id, reason, class } => {
            out.kind = TidegateProxyEventKind::ConnectFailed;
            out.flow = id.to_raw();
            (out.failure, _, out.budget_refusal) = failure_of(reason);
            out.error_class = TidegateErrorClass::from(class);
        }
        _ => {
            debug_assert!(false, "every core event has a C kind");
        }
    }
    out
}

/// Fills the proxy (flows open, admitted, refused, evicted, paused, closed by pressure) figures of `*record` from `proxy` (see `TidegateBlackBoxRecord`); the other
/// fields are left as they are. Refused with `TIDEGATE_STATUS_INVALID_ARGUMENT`, leaving
/// `*record` unchanged, if its `flags` or `reserved` are not valid.
///
/// # Safety
/// `record` must be NULL or valid for reading and writing; `proxy` must be NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_black_box_capture_proxy(
    record: *mut TidegateBlackBoxRecord,
    proxy: *const TidegateProxy,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call(proxy, |h| {
            black_box::capture(record, |r| r.capture_proxy(&h.engine.stats()))
        })
    }
}

/// Force a panic inside the boundary of `proxy`, to test that the panic is caught and the
/// handle poisoned. Not part of the C API.
///
/// # Safety
/// As for any mutating call: `proxy` must be NULL or a live handle.
#[doc(hidden)]
#[cfg(any(test, feature = "testing"))]
pub unsafe fn testing_panic_inside_proxy(proxy: *mut TidegateProxy) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(proxy, |_| -> Result<(), TidegateStatus> {
            panic!("forced panic for testing the C boundary")
        })
    }
}
