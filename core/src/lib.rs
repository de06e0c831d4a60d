//! # tidegate-core
//!
//! A sans-IO, allocation-free core that governs the resources of a network host running under
//! hard limits: Apple Network Extension providers (a packet tunnel is killed at 50 MiB, an app
//! proxy at 15 MiB, with no memory warning), embedded devices, Linux daemons.
//!
//! The host does every I/O itself and passes in `now`; the engines here decide what may be read,
//! what must be dropped and what to do next, within capacities fixed when they are built.
//!
//! ## Conventions
//!
//! - Input verbs are `on_*` / `handle_*` and take `now`; output verbs are `poll_*`; readiness verbs
//!   are `can_*`. After any input, poll until the engine returns `None` or an empty batch.
//! - Time is [`Instant`], microseconds on a monotonic clock the host picks; a `now` earlier than
//!   one already seen is clamped, never trusted to run backwards.
//! - Nothing allocates. Storage is handed in at construction (arrays, `&'static mut` slices or,
//!   on a host with an allocator, boxed slices), and each engine reports its exact footprint.
//! - A full queue refuses or drops and says so; it never grows and never panics.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

mod aqm;
mod blackbox;
mod bql;
mod budget;
mod error_class;
mod eyeballs;
mod flow;
mod fmt;
mod fq;
mod journal;
mod lifecycle;
mod memory;
#[cfg(test)]
mod proptest_config;
mod proxy;
mod ring;
mod time;
mod tunnel;

pub use aqm::Aqm;
pub use blackbox::{
    BLACK_BOX_FIGURES, BLACK_BOX_LEN, BLACK_BOX_MAGIC, BLACK_BOX_SLOT_LEN, BLACK_BOX_VERSION,
    BlackBoxEncodeError, BlackBoxRecord, decode_black_box, encode_black_box,
};
pub use bql::{ByteQueueLimit, MAX_BYTE_QUEUE_LIMIT};
pub use budget::{
    BudgetConfig, BudgetConfigError, BudgetError, BudgetRefusal, BudgetStats, ConnectionBudget,
};
pub use error_class::{ErrnoPlatform, ErrorClass, classify_errno, classify_errno_for};
pub use eyeballs::{
    Action, AddressFamily, AttemptError, DEFAULT_MAX_CANDIDATES, EyeballsConfig,
    EyeballsConfigError, EyeballsStats, HappyEyeballs, MAX_CONNECTION_ATTEMPT_DELAY_MICROS,
    MAX_RESOLUTION_DELAY_MICROS, MIN_ATTEMPT_SPACING_MICROS, MIN_CONNECTION_ATTEMPT_DELAY_MICROS,
    RaceFailure, RaceStatus, ResolveError,
};
pub use flow::{
    Admission, AppFlows, AppId, AppState, CloseReason, DEFAULT_FLOW_SLOTS, DestinationKey,
    EVICT_BATCH, EVICT_INTERVAL_MICROS, EVICT_MIN_IDLE_MICROS, FlowClass, FlowError, FlowGovernor,
    FlowId, FlowInfo, FlowOutcome, FlowPolicy, FlowSlot, FlowState, FlowStats, FlowView,
    FlowsByState, Notification, PolicyError, Protocol, RejectCounts, RejectReason, TOP_APPS,
    flow_governor_footprint,
};
pub use fq::{FlowQueue, MAX_FLOW_QUEUES, MIN_FLOW_QUANTUM};
pub use journal::{
    JOURNAL_EMPTY_LEN, JOURNAL_MAGIC, JOURNAL_TASKS_MAX, JOURNAL_VERSION, Journal,
    JournalDecodeError, JournalEncodeError, JournalTask, JournalTasks, PayloadTooLong,
    TASK_PAYLOAD_MAX, TaskPayload, encode_journal, journal_encoded_len,
};
pub use lifecycle::{
    CancelCause, DEFAULT_HOUSEKEEPING_DEADLINE_MICROS, DEFAULT_PATH_DEBOUNCE_MICROS,
    DEFAULT_PERSIST_DEADLINE_MICROS, DEFAULT_RESTART_ATTEMPTS_MAX,
    DEFAULT_RESTART_BACKOFF_MAX_MICROS, DEFAULT_RESTART_BACKOFF_MICROS,
    DEFAULT_RESTART_DEADLINE_MICROS, DEFAULT_START_DEADLINE_MICROS,
    DEFAULT_TEARDOWN_DEADLINE_MICROS, DEFAULT_WAKE_RESTART_AFTER_MICROS, Generation, Lifecycle,
    LifecycleConfig, LifecycleConfigError, LifecycleEffect, LifecycleState, LifecycleStats,
    PathFingerprint, PathReport, ReportError, RestartId, StartError, StopError, StopOutcome,
    StopPhase, TaskId, TaskRegisterError, TaskSlot, WriteJournalError,
};
pub use memory::{
    MemoryConfig, MemoryConfigError, MemoryGovernor, MemoryStats, Pressure, ReservationId,
    ReservationSlot, ReserveError, UnknownReservation,
};
pub use proxy::{
    DEFAULT_RACE_SLOTS, ProxyConfig, ProxyConfigError, ProxyEngine, ProxyError, ProxyEvent,
    ProxyStats, RaceSlot, RaceStats, Side, proxy_engine_footprint,
};
pub use ring::{
    CompleteError, DEFAULT_PACKET_ALIGN, InFlight, MAX_ARENA_BYTES, MAX_PACKET_ALIGN, PacketRing,
    PushError, Released, RingError, RingLevels, Slot,
};
pub use time::{Clock, Instant};
pub use tunnel::{
    BatchPush, CeilingTooSmall, ConfigError, DirectionStats, DropPolicy, InboundDisposition,
    OutboundCompletion, PacketError, PacketTunnel, TunnelConfig, TunnelLimits, TunnelStats,
    TunnelStorage,
};
