//! C types of the proxy engine's flow table: the policy, admissions, flow states and outcomes,
//! close reasons, app state and stats; and `tidegate_flow_key`.

use tidegate_core::{
    Admission, AppId, AppState, CloseReason, DestinationKey, FlowClass, FlowError, FlowInfo,
    FlowOutcome, FlowPolicy, FlowState, FlowStats, PolicyError, Protocol, RejectReason, TOP_APPS,
};

use crate::boundary::{bytes, call_free, write_out};
use crate::eyeballs::TidegateBudgetRefusal;
use crate::status::TidegateStatus;

/// A flow id: a slot index (low 32 bits) and the slot's generation (high 32 bits). 0 is never a
/// valid id. A stale or forged id is refused with `TIDEGATE_STATUS_STALE_FLOW` or
/// `TIDEGATE_STATUS_UNKNOWN_FLOW` and touches no other flow.
pub type TidegateFlowId = u64;

/// The flow table's policy (the `flows` field of `TidegateProxyConfig`): caps, timeouts,
/// watermarks, the UDP and DNS classes' caps and timers, and admission pacing.
/// `tidegate_proxy_new` checks it and names the first problem: a cap or pacing value of 0 is
/// `TIDEGATE_STATUS_CONFIG_FLOW_ZERO_CAP`, a duration of 0 `TIDEGATE_STATUS_CONFIG_ZERO_DURATION`.
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
    /// Cap on open UDP flows (class `DATAGRAM`). Default 128: a storm of hundreds of UDP
    /// sessions stops at under a third of the table and leaves the rest to TCP; beyond it a UDP
    /// flow is refused with `TIDEGATE_REJECT_REASON_DATAGRAM_OVER_LIMIT`.
    pub max_datagram_flows: u32,
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
    /// Cap on open DNS flows (class `DNS`), each a query in flight until it closes. Default
    /// 64, Tailscale's figure for iOS; beyond it a query is refused at once with
    /// `TIDEGATE_REJECT_REASON_DNS_OVER_LIMIT`.
    pub max_dns_in_flight: u32,
    /// Cap on one app's open DNS flows. Default 32, half the budget: one app's burst leaves the
    /// other apps their lookups.
    pub max_dns_in_flight_per_app: u32,
    /// Admission pacing, per app: new flows one app may open at once after a quiet period (its
    /// token bucket's size). Default 128: a page load or a session restore fits, one app's
    /// reconnect storm of hundreds of flows is spread over time. DNS flows are not paced.
    pub app_admission_burst: u32,
    /// Admission pacing, per app: new flows one app may open per second once its burst is
    /// spent. Default 64; `UINT32_MAX` with a burst of `UINT32_MAX` makes pacing inert. A flow
    /// that finds no token is refused with `TIDEGATE_REJECT_REASON_PACED` and `retry_at_us`
    /// says when to ask again.
    pub app_admission_rate_per_second: u32,
    /// An established UDP flow idle this long is closed, in microseconds. Default 60 s. Not 0;
    /// `UINT64_MAX` means never.
    pub datagram_idle_timeout_us: u64,
    /// A UDP flow open this long is closed however busy, in microseconds. Default `UINT64_MAX`
    /// (never: QUIC connections and calls live long). Not 0.
    pub datagram_max_lifetime_us: u64,
    /// An established DNS flow idle this long is closed, in microseconds. Default 10 s. Not 0;
    /// `UINT64_MAX` means never.
    pub dns_idle_timeout_us: u64,
    /// A flow with a read paused this long without a resume is closed, in microseconds.
    /// Default 60 s. Not 0; `UINT64_MAX` means never.
    pub max_paused_us: u64,
}

/// Which caps and timers apply to a flow (the `flow_class` argument of
/// `tidegate_proxy_on_new_flow`). The host declares it: `DNS` for flows carrying DNS queries
/// (UDP or TCP port 53, DNS-over-TLS on 853, DNS-over-HTTPS to a resolver it knows), `DATAGRAM`
/// for other UDP flows, `STREAM` otherwise.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TidegateFlowClass {
    /// TCP, or any flow not declared otherwise: the general caps and idle timeout.
    Stream = 0,
    /// A UDP session: `max_datagram_flows`, `datagram_idle_timeout_us` and
    /// `datagram_max_lifetime_us` apply.
    Datagram = 1,
    /// DNS queries: `max_dns_in_flight`, `max_dns_in_flight_per_app` and `dns_idle_timeout_us`
    /// apply, and admission pacing does not.
    Dns = 2,
}

/// A flow's transport (the `protocol` argument of `tidegate_proxy_on_new_flow`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TidegateFlowProtocol {
    /// TCP (`NEAppProxyTCPFlow`).
    Tcp = 0,
    /// UDP (`NEAppProxyUDPFlow`).
    Udp = 1,
}

/// The engine's answer to a new flow (the `decision` field of `TidegateAdmission`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TidegateAdmissionDecision {
    /// Admitted as `flow`.
    Accepted = 0,
    /// Admitted as `flow` after evicting `evicted`. The eviction also comes out of
    /// `tidegate_proxy_poll_events` as `CLOSE_FLOW`: close `evicted` there, then report it with
    /// `tidegate_proxy_on_closed`.
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
    /// A UDP flow, and `max_datagram_flows` are open. App proxy: fail the flow; idle UDP
    /// sessions give their slots back within `datagram_idle_timeout_us`.
    DatagramOverLimit = 5,
    /// A DNS flow, and `max_dns_in_flight` DNS flows are open, or the app holds
    /// `max_dns_in_flight_per_app`. Refused at once: the app's resolver retries or fails fast.
    DnsOverLimit = 6,
    /// Admission pacing has no token for the app: its new flows arrive faster than
    /// `app_admission_rate_per_second` beyond its burst. Hold the flow and ask again at
    /// `retry_at_us`, or pass it on / fail it.
    Paced = 7,
    /// Memory pressure is critical (`tidegate_proxy_on_pressure`): every new flow is refused
    /// until it falls. Transparent proxy: pass the flow on; app proxy: fail it.
    MemoryPressure = 8,
}

/// The answer of `tidegate_proxy_on_new_flow`.
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
    /// For `REJECTED` with `PACED`, the time (in the host's `now_us` clock) from which asking
    /// again admits the flow if nothing else refuses it; 0 otherwise.
    pub retry_at_us: u64,
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
    /// The engine asked for the close; waiting for `tidegate_proxy_on_closed`.
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
    /// Closed after the UDP flow reached its maximum lifetime.
    LifetimeExceeded = 6,
    /// Closed after a read stayed paused for the maximum paused time.
    PausedTooLong = 7,
    /// Closed after the engine evicted it, idle, under critical memory pressure.
    MemoryPressure = 8,
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
    /// The UDP flow reached `datagram_max_lifetime_us`.
    LifetimeExceeded = 4,
    /// A read stayed paused for `max_paused_us`: its peer stopped draining.
    PausedTooLong = 5,
    /// Memory pressure is critical and the flow was idle for 2 s: evicted in a batch of the
    /// least recently active (32 at once, 32 more every second while it lasts).
    MemoryPressure = 6,
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

/// What the flow table holds for one app (`tidegate_proxy_app_state`).
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
    /// Open DNS flows of the app: its queries in flight.
    pub dns_in_flight: u32,
    /// Admission pacing tokens the app has as of the latest `now_us` given: new flows it may
    /// open at once (`app_admission_burst` for an app holding no flow).
    pub admission_tokens: u32,
}

/// A snapshot of the flow table's counters and occupancy (the `flows` field of
/// `TidegateProxyStats`). Counters saturate.
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
    /// Also-ran attempts: race losers, cancelled because another attempt of the same race
    /// connected. Distinct from `also_ran`,
    /// which counts flows.
    pub also_ran_attempts: u64,
    /// Flows whose connection the budget counts open now (established by a race, not yet
    /// reported closed).
    pub connections_held: u32,
    /// Apps whose reads their app watermark pauses now.
    pub apps_reads_paused: u32,
    /// Times an app's reads paused at the app high watermark.
    pub app_pauses: u64,
    /// Flows refused because `max_datagram_flows` UDP flows were open.
    pub rejected_datagram_over_limit: u64,
    /// DNS flows refused by the DNS budget (overall or the app's share).
    pub rejected_dns_over_limit: u64,
    /// Flows refused by admission pacing.
    pub rejected_paced: u64,
    /// UDP flows closed at their maximum lifetime.
    pub lifetime_closes: u64,
    /// Flows closed for a read paused past the maximum paused time.
    pub paused_closes: u64,
    /// Open UDP flows now.
    pub datagram_flows: u32,
    /// Open DNS flows now: the queries in flight.
    pub dns_in_flight: u32,
    /// Open flows with a read paused now.
    pub flows_paused: u32,
    /// Always 0: keeps the struct free of padding, so every byte is written.
    pub reserved2: u32,
    /// Flows refused because memory pressure was critical.
    pub rejected_memory_pressure: u64,
    /// Idle flows evicted under critical memory pressure.
    pub pressure_closes: u64,
}

const _: () = assert!(TOP_APPS == 8, "TidegateFlowStats.top_apps has 8 entries");

/// The default policy, for an Apple Network Extension proxy: 512 slots, at most 448 open flows,
/// 256 per app, 128 per destination, 128 connecting; idle timeout 10 minutes, connect timeout
/// 30 s; per-flow watermarks 256 KiB / 64 KiB, per app 2 MiB / 1 MiB, global 6 MiB / 4 MiB;
/// 128 UDP flows idle out after 60 s; 64 DNS queries in flight, 32 per app, idle out after
/// 10 s; reads paused for 60 s close their flow; pacing admits a burst of 128 per app, then
/// 64/s.
pub(crate) fn flow_policy_default() -> TidegateFlowPolicy {
    c_policy(
        &FlowPolicy::APPLE_DEFAULT,
        tidegate_core::DEFAULT_FLOW_SLOTS as u32,
    )
}

/// `p` as C sees it, for a table of `slots` slots.
pub(crate) fn c_policy(p: &FlowPolicy, slots: u32) -> TidegateFlowPolicy {
    TidegateFlowPolicy {
        slots,
        max_flows: p.max_flows,
        max_flows_per_app: p.max_flows_per_app,
        max_flows_per_destination: p.max_flows_per_destination,
        max_connecting: p.max_connecting,
        max_datagram_flows: p.max_datagram_flows,
        idle_timeout_us: p.idle_timeout_micros,
        connect_timeout_us: p.connect_timeout_micros,
        flow_high_watermark_bytes: p.flow_high_watermark,
        flow_low_watermark_bytes: p.flow_low_watermark,
        global_high_watermark_bytes: p.global_high_watermark,
        global_low_watermark_bytes: p.global_low_watermark,
        hash_seed: p.hash_seed,
        app_high_watermark_bytes: p.app_high_watermark,
        app_low_watermark_bytes: p.app_low_watermark,
        max_dns_in_flight: p.max_dns_in_flight,
        max_dns_in_flight_per_app: p.max_dns_in_flight_per_app,
        app_admission_burst: p.app_admission_burst,
        app_admission_rate_per_second: p.app_admission_rate_per_second,
        datagram_idle_timeout_us: p.datagram_idle_timeout_micros,
        datagram_max_lifetime_us: p.datagram_max_lifetime_micros,
        dns_idle_timeout_us: p.dns_idle_timeout_micros,
        max_paused_us: p.max_paused_micros,
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

/// The flow of `app` to `destination` over `protocol` (a `TIDEGATE_FLOW_PROTOCOL_*` value) of
/// class `class` (a `TIDEGATE_FLOW_CLASS_*` value), or `TidegateStatus::InvalidArgument` for an
/// unknown protocol or class.
pub(crate) fn flow_info_of(
    app: u64,
    destination: u64,
    protocol: u32,
    class: u32,
) -> Result<FlowInfo, TidegateStatus> {
    let protocol = u8::try_from(protocol)
        .ok()
        .and_then(Protocol::from_u8)
        .ok_or(TidegateStatus::InvalidArgument)?;
    let class = u8::try_from(class)
        .ok()
        .and_then(FlowClass::from_u8)
        .ok_or(TidegateStatus::InvalidArgument)?;
    Ok(FlowInfo {
        app: AppId(app),
        destination: DestinationKey(destination),
        protocol,
        class,
    })
}

/// The core policy and slot count of a C policy, validated.
pub(crate) fn core_policy(p: &TidegateFlowPolicy) -> Result<(FlowPolicy, usize), TidegateStatus> {
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
        max_datagram_flows: p.max_datagram_flows,
        datagram_idle_timeout_micros: p.datagram_idle_timeout_us,
        datagram_max_lifetime_micros: p.datagram_max_lifetime_us,
        max_dns_in_flight: p.max_dns_in_flight,
        max_dns_in_flight_per_app: p.max_dns_in_flight_per_app,
        dns_idle_timeout_micros: p.dns_idle_timeout_us,
        max_paused_micros: p.max_paused_us,
        app_admission_burst: p.app_admission_burst,
        app_admission_rate_per_second: p.app_admission_rate_per_second,
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
        // A refusal added to the core later still refuses, with the generic status.
        _ => TidegateStatus::InvalidArgument,
    }
}

pub(crate) fn status_of_flow(error: FlowError) -> TidegateStatus {
    match error {
        FlowError::UnknownFlow => TidegateStatus::UnknownFlow,
        FlowError::StaleFlow => TidegateStatus::StaleFlow,
        FlowError::InvalidState { .. } => TidegateStatus::FlowInvalidState,
        FlowError::ExceedsPending { .. } => TidegateStatus::CompletionExceedsPending,
        FlowError::TooManyBytes { .. } => TidegateStatus::InvalidArgument,
        // A refusal added to the core later still refuses, with the generic status.
        _ => TidegateStatus::InvalidArgument,
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
            retry_at_us: 0,
        },
        Admission::AcceptedAfterEvicting { id, evicted } => TidegateAdmission {
            decision: TidegateAdmissionDecision::AcceptedAfterEvicting,
            reject_reason: TidegateRejectReason::None,
            flow: id.to_raw(),
            evicted: evicted.to_raw(),
            budget_refusal: TidegateBudgetRefusal::None,
            reserved: 0,
            retry_at_us: 0,
        },
        Admission::Rejected(reason) => TidegateAdmission {
            decision: TidegateAdmissionDecision::Rejected,
            reject_reason: match reason {
                RejectReason::TableFull => TidegateRejectReason::TableFull,
                RejectReason::AppOverLimit => TidegateRejectReason::AppOverLimit,
                RejectReason::DestinationOverLimit => TidegateRejectReason::DestinationOverLimit,
                RejectReason::ConnectionBudget => TidegateRejectReason::ConnectionBudget,
                RejectReason::DatagramOverLimit => TidegateRejectReason::DatagramOverLimit,
                RejectReason::DnsOverLimit => TidegateRejectReason::DnsOverLimit,
                RejectReason::Paced => TidegateRejectReason::Paced,
                RejectReason::MemoryPressure => TidegateRejectReason::MemoryPressure,
            },
            flow: 0,
            evicted: 0,
            budget_refusal: TidegateBudgetRefusal::None,
            reserved: 0,
            retry_at_us: 0,
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
        FlowOutcome::ClosedByGovernor(CloseReason::LifetimeExceeded) => {
            TidegateFlowOutcome::LifetimeExceeded
        }
        FlowOutcome::ClosedByGovernor(CloseReason::PausedTooLong) => {
            TidegateFlowOutcome::PausedTooLong
        }
        FlowOutcome::ClosedByGovernor(CloseReason::MemoryPressure) => {
            TidegateFlowOutcome::MemoryPressure
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
        CloseReason::LifetimeExceeded => TidegateCloseReason::LifetimeExceeded,
        CloseReason::PausedTooLong => TidegateCloseReason::PausedTooLong,
        CloseReason::MemoryPressure => TidegateCloseReason::MemoryPressure,
    }
}

pub(crate) fn app_state_of(state: AppState) -> TidegateAppState {
    TidegateAppState {
        bytes_pending: state.bytes_pending,
        open_flows: state.open_flows,
        reads_paused: state.reads_paused,
        reserved: [0; 3],
        dns_in_flight: state.dns_in_flight,
        admission_tokens: state.admission_tokens,
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
        connections_held: s.connections_held,
        apps_reads_paused: s.apps_reads_paused,
        app_pauses: s.app_pauses,
        rejected_datagram_over_limit: s.rejected.datagram_over_limit,
        rejected_dns_over_limit: s.rejected.dns_over_limit,
        rejected_paced: s.rejected.paced,
        lifetime_closes: s.lifetime_closes,
        paused_closes: s.paused_closes,
        datagram_flows: s.datagram_flows,
        dns_in_flight: s.dns_in_flight,
        flows_paused: s.flows_paused,
        reserved2: 0,
        rejected_memory_pressure: s.rejected.memory_pressure,
        pressure_closes: s.pressure_closes,
    }
}
