//! `TidegateStatus`: the result of every fallible C function, and its static messages.

use core::ffi::c_char;

/// The result of a tidegate call. `TIDEGATE_STATUS_OK` (0) is success; every other value says
/// why the call did nothing. Codes are stable and never reused; new ones are only appended.
///
/// In C the type is a `uint32_t`, so a host may hold any number in it; `tidegate_status_str`
/// takes one and names unknown values as such.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TidegateStatus {
    /// Success.
    Ok = 0,
    /// A required pointer argument was NULL.
    NullArgument = 1,
    /// tidegate panicked inside the call (a bug in tidegate). The handle is now poisoned.
    Panic = 2,
    /// The handle was poisoned by an earlier panic; only `_free` may be called on it.
    Poisoned = 3,
    /// An integer argument does not name a known value (an enum from C, for example) or is out
    /// of range (a byte count the pending counters cannot hold, or a buffer length no buffer can
    /// have: more than `PTRDIFF_MAX` bytes).
    InvalidArgument = 4,
    /// The memory for a new engine could not be allocated.
    OutOfMemory = 5,
    /// The memory given to an `_init` function does not start on the alignment its
    /// `_footprint` gives. Nothing was written.
    Misaligned = 6,

    /// Configuration: a ring has zero bytes or zero packets.
    ConfigZeroCapacity = 10,
    /// Configuration: `max_packet_len` is zero.
    ConfigZeroMaxPacketLen = 11,
    /// Configuration: a ring is larger than 2^31 - 1 bytes.
    ConfigRingTooLarge = 12,
    /// Configuration: the inbound ring cannot hold one packet of `max_packet_len`.
    ConfigInboundSmallerThanPacket = 13,
    /// Configuration: a low watermark is not below its high watermark.
    ConfigWatermarksOutOfOrder = 14,
    /// Configuration: the outbound ring lacks room for two packets of `max_packet_len` above
    /// `outbound_high_watermark_bytes`.
    ConfigNoHeadroom = 15,
    /// Configuration: `outbound_high_watermark_packets` leaves no free outbound slot.
    ConfigNoSlotHeadroom = 16,
    /// Configuration: `inbound_drop_policy` is not a `TIDEGATE_DROP_POLICY_*` value.
    ConfigUnknownDropPolicy = 17,
    /// Configuration: `aqm` is not a `TIDEGATE_AQM_*` value.
    ConfigUnknownAqm = 18,
    /// Configuration: CoDel needs `0 < aqm_target_us < aqm_interval_us`.
    ConfigInvalidAqm = 19,
    /// Configuration: `packet_align` is not a power of two from 1 to 4096.
    ConfigBadPacketAlign = 20,

    /// The packet is empty. It was not queued and is counted as an empty packet.
    PacketEmpty = 30,
    /// The packet is longer than `max_packet_len`. It was not queued and is counted as oversized.
    PacketTooLong = 31,
    /// The outbound ring has no room for the packet now. The packet stays with the caller: drop
    /// it, or keep it and retry after a completion.
    NoRoom = 32,
    /// A completion named more packets than are in flight. Nothing was completed.
    NotInFlight = 33,

    /// Lifecycle: a session is already starting or running.
    LifecycleAlreadyActive = 60,
    /// Lifecycle: the previous session is still stopping. Starts are refused, not queued: start
    /// again after `COMPLETE_STOP` (or `CANCEL_WITH_ERROR`).
    LifecycleStopInProgress = 61,
    /// Lifecycle: no session is active (idle or stopped).
    LifecycleNotActive = 62,
    /// Lifecycle: a stop or cancel is already in progress; it goes on and ends as it would have.
    LifecycleAlreadyStopping = 63,
    /// Lifecycle: the stop is past housekeeping; a task registered now would never run.
    LifecycleHousekeepingOver = 64,
    /// Lifecycle: the journal's generation is the largest possible; start without it.
    LifecycleGenerationExhausted = 65,
    /// Lifecycle: the housekeeping task queue is full.
    TaskQueueFull = 66,
    /// Lifecycle: the task payload is longer than `TIDEGATE_TASK_PAYLOAD_MAX`.
    TaskPayloadTooLong = 67,
    /// Lifecycle: the report names an earlier session (a late callback). Nothing changed.
    ReportStaleGeneration = 68,
    /// Lifecycle: the machine is not waiting for this report in its state (a duplicate, or a
    /// start report after a stop abandoned the start). Nothing changed.
    ReportUnexpected = 69,
    /// Lifecycle: no task with this id was ever queued.
    ReportUnknownTask = 70,
    /// Lifecycle: the task already ended (reported before, or carried into a completed stop's
    /// journal). Nothing changed.
    ReportTaskAlreadyEnded = 71,
    /// Lifecycle: the task was not handed out by a `RUN_TASK` effect yet.
    ReportTaskNotRunning = 72,
    /// Lifecycle: the housekeeping deadline passed while the task ran; it is in the journal and
    /// runs again at the next start.
    ReportTaskCarriedOver = 73,
    /// Journal: fewer bytes than the record needs (an interrupted write). Nothing changed.
    JournalTruncated = 74,
    /// Journal: the bytes are not a tidegate journal (bad magic). Nothing changed.
    JournalNotAJournal = 75,
    /// Journal: a format version this build does not read. Nothing changed.
    JournalUnsupportedVersion = 76,
    /// Journal: more bytes than the record declares; pass exactly the bytes written.
    JournalLengthMismatch = 77,
    /// Journal: the checksum does not match; the bytes were corrupted. Nothing changed.
    JournalChecksumMismatch = 78,
    /// Journal: the checksum matches but the task records are inconsistent. Nothing changed.
    JournalMalformed = 79,
    /// Journal: more tasks than the task queue holds. Nothing changed.
    JournalTooLarge = 80,
    /// Journal: there is no sealed journal to write (only after `PERSIST_JOURNAL`).
    JournalNone = 81,
    /// The buffer is too small; nothing was written into it. A call that fills a caller's buffer
    /// writes the size required to its length out-parameter (`tidegate_lifecycle_write_journal`);
    /// for `_init`, `_footprint` gives the size.
    BufferTooSmall = 82,
    /// Configuration: `task_capacity` is above `TIDEGATE_LIFECYCLE_TASK_CAPACITY_MAX`.
    ConfigTaskCapacityTooLarge = 83,
    /// Budget configuration: `max_attempts_in_flight`, `max_open_connections`, `fd_limit` or
    /// `backoff_floor` is zero.
    ConfigBudgetZeroLimit = 100,
    /// Budget configuration: `recovery_interval_us` is zero.
    ConfigBudgetZeroRecoveryInterval = 101,
    /// Race configuration: `preferred_family` is not a `TIDEGATE_ADDRESS_FAMILY_*` value.
    ConfigUnknownAddressFamily = 102,
    /// No connection budget: as many attempts as allowed are in flight. Nothing was counted;
    /// retry after an attempt ends.
    NoBudgetAttempts = 103,
    /// No connection budget: as many descriptors as allowed are in use by attempts and open
    /// connections (the limit may be lowered after resource errors). Nothing was counted.
    NoBudgetConnections = 104,
    /// The budget has no attempt in flight to connect, fail or cancel. Nothing changed.
    BudgetNoAttemptInFlight = 105,
    /// The budget has no open connection to close. Nothing changed.
    BudgetNoOpenConnection = 106,
    /// The race is already won, failed or aborted; the input is not needed.
    RaceFinished = 107,
    /// An address is not of the DNS answer's family. Nothing was fed.
    AddressFamilyMismatch = 108,
    /// No attempt with this index was ever started.
    UnknownAttempt = 109,
    /// The attempt is no longer in flight: the race is cancelling it (close its socket on the
    /// `CANCEL_ATTEMPT` action) or it already ended.
    AttemptNotInFlight = 110,
    /// Configuration: a flow cap (global, per app, per destination, connecting) is zero.
    ConfigFlowZeroCap = 111,
    /// Configuration: `slots` is below `max_flows + 1`.
    ConfigFlowTooFewSlots = 112,
    /// Configuration: `slots` is larger than a 32-bit index can name.
    ConfigFlowTooManySlots = 113,
    /// The flow id was never issued by this governor (forged or corrupted). Nothing changed.
    UnknownFlow = 114,
    /// The flow has already closed; its id is stale. Late completions get this: ignore it.
    StaleFlow = 115,
    /// The call does not fit the flow's state (connected twice, for example). Nothing changed.
    FlowInvalidState = 116,
    /// A completion reports more bytes than are pending on the flow. Nothing changed.
    CompletionExceedsPending = 117,
    /// Configuration: a duration that cannot be zero is zero (each field's documentation says
    /// what zero means for it).
    ConfigZeroDuration = 118,
    /// Budget configuration: `fd_reserve` is more than half of `fd_limit`.
    ConfigBudgetReserveTooLarge = 119,
    /// Race configuration: a value is outside its range (`first_address_family_count` 1 to 255,
    /// `resolution_delay_us` at most 2 s, `connection_attempt_delay_us` 10 ms to 2 s).
    ConfigEyeballsOutOfRange = 120,
    /// No tunnel configuration fits the memory ceiling given; `tidegate_tunnel_min_ceiling` gives
    /// the smallest that does. Nothing was written.
    CeilingTooSmall = 121,
    /// The report names a generation this lifecycle never issued (0, or above the current one):
    /// a host bug, unlike `REPORT_STALE_GENERATION`. Nothing changed.
    ReportUnknownGeneration = 122,
    /// Tunnel configuration with flow queues: a ring's bytes are not its packets times the cell
    /// size (`max_packet_len` rounded up to `packet_align`).
    ConfigArenaNotWholeCells = 123,
    /// Tunnel configuration with a byte queue limit (`queue_limit_max_bytes` not 0):
    /// `queue_limit_min_bytes` is below `max_packet_len` or above `queue_limit_max_bytes`, or
    /// `queue_limit_max_bytes` is above 1 GiB.
    ConfigInvalidQueueLimit = 124,
    /// Every race slot of the proxy engine is in use (`race_slots`). Races of closed flows free
    /// theirs once their cancellations are drained: drain the events and retry, or fail the
    /// flow. Nothing changed.
    NoRaceSlot = 125,
    /// The flow has no race: an attempt report for a flow the host's system connects, or for a
    /// race already over (its `CANCEL_ATTEMPT` closes the socket). Nothing changed.
    NoRace = 126,
    /// The flow is connected by a race: the host's own connect reports
    /// (`tidegate_proxy_on_connecting` and the like) do not apply to it. Nothing changed.
    RaceRunning = 127,
    /// Memory pressure: the reservation would bring the projected use to the critical
    /// threshold, or pressure is critical. Do not allocate; wait or degrade. Nothing changed
    /// apart from the refusal counters.
    MemoryPressure = 128,
    /// Every reservation slot of the memory governor is taken (`max_reservations`).
    NoReservationSlot = 129,
    /// The reservation id is not outstanding: released already, or never issued. Nothing
    /// changed.
    UnknownReservation = 130,
    /// Configuration: the memory limit is zero.
    ConfigMemoryZeroLimit = 131,
    /// Configuration: the memory thresholds are not `0 < elevated < critical <= 1000` permille.
    ConfigMemoryThresholds = 132,
    /// Configuration: the memory hysteresis is zero or not below the elevated threshold.
    ConfigMemoryHysteresis = 133,
    /// Configuration: `max_reservations` is zero or above `TIDEGATE_MEMORY_RESERVATIONS_MAX`.
    ConfigMemoryReservations = 134,
    /// The restart attempt is not the one running: it was abandoned (an `ABANDON_RESTART`
    /// effect), passed its deadline, or was reported before. A late callback: ignore it.
    /// Nothing changed.
    ReportStaleRestart = 135,
    /// The restart id was never issued by this lifecycle (a host bug, unlike
    /// `REPORT_STALE_RESTART`). Nothing changed.
    ReportUnknownRestart = 136,
    /// Lifecycle configuration: `restart_attempts_max` is 0, or `restart_backoff_max_us` is
    /// below `restart_backoff_us`.
    ConfigRestart = 137,
    /// The black box file holds no intact record: none was written yet, the file is of another
    /// format, or both slots are damaged. Start a new file at sequence 1.
    BlackBoxEmpty = 138,
}

impl TidegateStatus {
    /// Every status, for tests and for `tidegate_status_str`.
    pub const ALL: &'static [TidegateStatus] = &[
        TidegateStatus::Ok,
        TidegateStatus::NullArgument,
        TidegateStatus::Panic,
        TidegateStatus::Poisoned,
        TidegateStatus::InvalidArgument,
        TidegateStatus::OutOfMemory,
        TidegateStatus::Misaligned,
        TidegateStatus::ConfigZeroCapacity,
        TidegateStatus::ConfigZeroMaxPacketLen,
        TidegateStatus::ConfigRingTooLarge,
        TidegateStatus::ConfigInboundSmallerThanPacket,
        TidegateStatus::ConfigWatermarksOutOfOrder,
        TidegateStatus::ConfigNoHeadroom,
        TidegateStatus::ConfigNoSlotHeadroom,
        TidegateStatus::ConfigUnknownDropPolicy,
        TidegateStatus::ConfigUnknownAqm,
        TidegateStatus::ConfigInvalidAqm,
        TidegateStatus::ConfigBadPacketAlign,
        TidegateStatus::PacketEmpty,
        TidegateStatus::PacketTooLong,
        TidegateStatus::NoRoom,
        TidegateStatus::NotInFlight,
        TidegateStatus::LifecycleAlreadyActive,
        TidegateStatus::LifecycleStopInProgress,
        TidegateStatus::LifecycleNotActive,
        TidegateStatus::LifecycleAlreadyStopping,
        TidegateStatus::LifecycleHousekeepingOver,
        TidegateStatus::LifecycleGenerationExhausted,
        TidegateStatus::TaskQueueFull,
        TidegateStatus::TaskPayloadTooLong,
        TidegateStatus::ReportStaleGeneration,
        TidegateStatus::ReportUnexpected,
        TidegateStatus::ReportUnknownTask,
        TidegateStatus::ReportTaskAlreadyEnded,
        TidegateStatus::ReportTaskNotRunning,
        TidegateStatus::ReportTaskCarriedOver,
        TidegateStatus::JournalTruncated,
        TidegateStatus::JournalNotAJournal,
        TidegateStatus::JournalUnsupportedVersion,
        TidegateStatus::JournalLengthMismatch,
        TidegateStatus::JournalChecksumMismatch,
        TidegateStatus::JournalMalformed,
        TidegateStatus::JournalTooLarge,
        TidegateStatus::JournalNone,
        TidegateStatus::BufferTooSmall,
        TidegateStatus::ConfigTaskCapacityTooLarge,
        TidegateStatus::ConfigBudgetZeroLimit,
        TidegateStatus::ConfigBudgetZeroRecoveryInterval,
        TidegateStatus::ConfigUnknownAddressFamily,
        TidegateStatus::NoBudgetAttempts,
        TidegateStatus::NoBudgetConnections,
        TidegateStatus::BudgetNoAttemptInFlight,
        TidegateStatus::BudgetNoOpenConnection,
        TidegateStatus::RaceFinished,
        TidegateStatus::AddressFamilyMismatch,
        TidegateStatus::UnknownAttempt,
        TidegateStatus::AttemptNotInFlight,
        TidegateStatus::ConfigFlowZeroCap,
        TidegateStatus::ConfigFlowTooFewSlots,
        TidegateStatus::ConfigFlowTooManySlots,
        TidegateStatus::UnknownFlow,
        TidegateStatus::StaleFlow,
        TidegateStatus::FlowInvalidState,
        TidegateStatus::CompletionExceedsPending,
        TidegateStatus::ConfigZeroDuration,
        TidegateStatus::ConfigBudgetReserveTooLarge,
        TidegateStatus::ConfigEyeballsOutOfRange,
        TidegateStatus::CeilingTooSmall,
        TidegateStatus::ReportUnknownGeneration,
        TidegateStatus::ConfigArenaNotWholeCells,
        TidegateStatus::ConfigInvalidQueueLimit,
        TidegateStatus::NoRaceSlot,
        TidegateStatus::NoRace,
        TidegateStatus::RaceRunning,
        TidegateStatus::MemoryPressure,
        TidegateStatus::NoReservationSlot,
        TidegateStatus::UnknownReservation,
        TidegateStatus::ConfigMemoryZeroLimit,
        TidegateStatus::ConfigMemoryThresholds,
        TidegateStatus::ConfigMemoryHysteresis,
        TidegateStatus::ConfigMemoryReservations,
        TidegateStatus::ReportStaleRestart,
        TidegateStatus::ReportUnknownRestart,
        TidegateStatus::ConfigRestart,
        TidegateStatus::BlackBoxEmpty,
    ];

    /// A static, NUL-terminated English description.
    pub const fn message(self) -> &'static str {
        match self {
            TidegateStatus::Ok => "ok\0",
            TidegateStatus::NullArgument => "a required pointer argument was NULL\0",
            TidegateStatus::Panic => "tidegate panicked; the handle is poisoned\0",
            TidegateStatus::Poisoned => "handle poisoned by an earlier panic; only free it\0",
            TidegateStatus::InvalidArgument => "argument is not a known value\0",
            TidegateStatus::OutOfMemory => "could not allocate the engine's memory\0",
            TidegateStatus::ConfigZeroCapacity => "config: a ring has zero bytes or packets\0",
            TidegateStatus::ConfigZeroMaxPacketLen => "config: max_packet_len is zero\0",
            TidegateStatus::ConfigRingTooLarge => "config: a ring exceeds 2^31-1 bytes\0",
            TidegateStatus::ConfigInboundSmallerThanPacket => {
                "config: inbound ring is smaller than max_packet_len\0"
            }
            TidegateStatus::ConfigWatermarksOutOfOrder => {
                "config: a low watermark is not below its high watermark\0"
            }
            TidegateStatus::ConfigNoHeadroom => {
                "config: outbound ring needs two max-size packets above the high watermark\0"
            }
            TidegateStatus::ConfigNoSlotHeadroom => {
                "config: outbound packet high watermark leaves no free slot\0"
            }
            TidegateStatus::ConfigUnknownDropPolicy => "config: unknown inbound drop policy\0",
            TidegateStatus::ConfigUnknownAqm => "config: unknown aqm mode\0",
            TidegateStatus::ConfigInvalidAqm => "config: CoDel needs 0 < target < interval\0",
            TidegateStatus::ConfigBadPacketAlign => {
                "config: packet_align is not a power of two from 1 to 4096\0"
            }
            TidegateStatus::PacketEmpty => "packet is empty\0",
            TidegateStatus::PacketTooLong => "packet exceeds max_packet_len\0",
            TidegateStatus::NoRoom => "no room: the packet stays with the caller\0",
            TidegateStatus::NotInFlight => "completion names more packets than are in flight\0",
            TidegateStatus::LifecycleAlreadyActive => {
                "lifecycle: a session is already starting or running\0"
            }
            TidegateStatus::LifecycleStopInProgress => {
                "lifecycle: the previous session is still stopping; start after it completed\0"
            }
            TidegateStatus::LifecycleNotActive => "lifecycle: no session is active\0",
            TidegateStatus::LifecycleAlreadyStopping => {
                "lifecycle: already stopping; the stop goes on unchanged\0"
            }
            TidegateStatus::LifecycleHousekeepingOver => {
                "lifecycle: the stop is past housekeeping\0"
            }
            TidegateStatus::LifecycleGenerationExhausted => {
                "lifecycle: session generations are exhausted\0"
            }
            TidegateStatus::TaskQueueFull => "housekeeping task queue is full\0",
            TidegateStatus::TaskPayloadTooLong => {
                "task payload exceeds TIDEGATE_TASK_PAYLOAD_MAX\0"
            }
            TidegateStatus::ReportStaleGeneration => "report names an earlier session; ignored\0",
            TidegateStatus::ReportUnexpected => {
                "report not expected in the current state; ignored\0"
            }
            TidegateStatus::ReportUnknownTask => "no task with this id was ever queued\0",
            TidegateStatus::ReportTaskAlreadyEnded => {
                "task already ended; duplicate report ignored\0"
            }
            TidegateStatus::ReportTaskNotRunning => "task is not running\0",
            TidegateStatus::ReportTaskCarriedOver => {
                "task was carried into the journal; late report ignored\0"
            }
            TidegateStatus::JournalTruncated => "journal truncated\0",
            TidegateStatus::JournalNotAJournal => "not a tidegate journal\0",
            TidegateStatus::JournalUnsupportedVersion => "journal version not supported\0",
            TidegateStatus::JournalLengthMismatch => {
                "journal length does not match the bytes given\0"
            }
            TidegateStatus::JournalChecksumMismatch => "journal corrupted: checksum mismatch\0",
            TidegateStatus::JournalMalformed => "journal task records are malformed\0",
            TidegateStatus::JournalTooLarge => "journal holds more tasks than the queue\0",
            TidegateStatus::JournalNone => "no journal to write\0",
            TidegateStatus::BufferTooSmall => "buffer too small; nothing written\0",
            TidegateStatus::ConfigTaskCapacityTooLarge => {
                "config: task_capacity above the maximum\0"
            }
            TidegateStatus::ConfigBudgetZeroLimit => "config: a budget limit is zero\0",
            TidegateStatus::ConfigBudgetZeroRecoveryInterval => {
                "config: budget recovery interval is zero\0"
            }
            TidegateStatus::ConfigUnknownAddressFamily => "config: unknown address family\0",
            TidegateStatus::NoBudgetAttempts => {
                "no connection budget: too many connection attempts in flight\0"
            }
            TidegateStatus::NoBudgetConnections => {
                "no connection budget: too many connections open or connecting\0"
            }
            TidegateStatus::BudgetNoAttemptInFlight => "budget: no connection attempt in flight\0",
            TidegateStatus::BudgetNoOpenConnection => "budget: no open connection to close\0",
            TidegateStatus::RaceFinished => "the race is already finished\0",
            TidegateStatus::AddressFamilyMismatch => "an address is not of the answer's family\0",
            TidegateStatus::UnknownAttempt => "no attempt with this index was started\0",
            TidegateStatus::AttemptNotInFlight => {
                "attempt no longer in flight; close it on its cancel action\0"
            }
            TidegateStatus::ConfigFlowZeroCap => "config: a flow cap is zero\0",
            TidegateStatus::ConfigFlowTooFewSlots => "config: fewer slots than max_flows + 1\0",
            TidegateStatus::ConfigFlowTooManySlots => "config: too many flow slots\0",
            TidegateStatus::UnknownFlow => "unknown flow id\0",
            TidegateStatus::StaleFlow => "flow already closed (stale id)\0",
            TidegateStatus::FlowInvalidState => "call not valid in the flow's state\0",
            TidegateStatus::CompletionExceedsPending => {
                "completion larger than the bytes pending on the flow\0"
            }
            TidegateStatus::Misaligned => "memory not on the footprint's alignment\0",
            TidegateStatus::ConfigZeroDuration => "config: a duration is zero\0",
            TidegateStatus::ConfigBudgetReserveTooLarge => {
                "config: budget fd_reserve above half of fd_limit\0"
            }
            TidegateStatus::ConfigEyeballsOutOfRange => {
                "config: a race parameter is out of range\0"
            }
            TidegateStatus::CeilingTooSmall => "no tunnel configuration fits the memory ceiling\0",
            TidegateStatus::ReportUnknownGeneration => {
                "report names a generation never issued (a host bug)\0"
            }
            TidegateStatus::ConfigArenaNotWholeCells => {
                "config: with flow queues, ring bytes must be packets times the cell size\0"
            }
            TidegateStatus::ConfigInvalidQueueLimit => {
                "config: byte queue limit needs max_packet_len <= min <= max <= 1 GiB\0"
            }
            TidegateStatus::NoRaceSlot => "every race slot is in use; drain the events\0",
            TidegateStatus::NoRace => "the flow has no race running\0",
            TidegateStatus::RaceRunning => "the flow is connected by a race\0",
            TidegateStatus::MemoryPressure => {
                "memory pressure: the reservation is refused; wait or degrade\0"
            }
            TidegateStatus::NoReservationSlot => "every reservation slot is taken\0",
            TidegateStatus::UnknownReservation => "no such reservation outstanding\0",
            TidegateStatus::ConfigMemoryZeroLimit => "config: the memory limit is zero\0",
            TidegateStatus::ConfigMemoryThresholds => {
                "config: memory thresholds need 0 < elevated < critical <= 1000 permille\0"
            }
            TidegateStatus::ConfigMemoryHysteresis => {
                "config: memory hysteresis must be above 0 and below the elevated threshold\0"
            }
            TidegateStatus::ConfigMemoryReservations => {
                "config: max_reservations must be 1 to TIDEGATE_MEMORY_RESERVATIONS_MAX\0"
            }
            TidegateStatus::ReportStaleRestart => {
                "restart attempt is not the one running; ignored\0"
            }
            TidegateStatus::ReportUnknownRestart => "restart id was never issued\0",
            TidegateStatus::ConfigRestart => {
                "config: restart_attempts_max is 0 or the back-off maximum is below the back-off\0"
            }
            TidegateStatus::BlackBoxEmpty => "the black box holds no intact record\0",
        }
    }

    /// The status with numeric value `value`, if any.
    pub fn from_u32(value: u32) -> Option<TidegateStatus> {
        TidegateStatus::ALL
            .iter()
            .copied()
            .find(|s| *s as u32 == value)
    }
}

/// A status as C passes it in: `TidegateStatus` in the header (a `uint32_t` there, see
/// `cbindgen.toml`), read here as the integer it is, so an unknown value from C is never
/// undefined behaviour.
pub(crate) type StatusCode = u32;

/// A static, NUL-terminated description of `status`, never NULL. Unknown values get
/// "unknown status". The string lives for the whole program; do not free it.
#[unsafe(no_mangle)]
pub extern "C" fn tidegate_status_str(status: StatusCode) -> *const c_char {
    let message =
        TidegateStatus::from_u32(status).map_or("unknown status\0", TidegateStatus::message);
    message.as_ptr().cast()
}

/// The version of the C ABI this header describes. It changes whenever a function, a type or
/// a documented behaviour changes in a way a C host must know about (CHANGELOG.md lists each
/// change with what to do): compare it at build time, for example
/// `#if TIDEGATE_ABI_VERSION != 12`, to notice a library update that needs attention.
pub const TIDEGATE_ABI_VERSION: u32 = 12;

/// The library version as a static, NUL-terminated string such as "0.1.0"; do not free it.
#[unsafe(no_mangle)]
pub extern "C" fn tidegate_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    #[test]
    fn every_status_has_a_distinct_nul_terminated_message() {
        let mut seen = std::collections::HashSet::new();
        for &status in TidegateStatus::ALL {
            let message = status.message();
            assert!(message.ends_with('\0') && !message[..message.len() - 1].contains('\0'));
            seen.insert((status as u32, message));
            assert_eq!(TidegateStatus::from_u32(status as u32), Some(status));
        }
        // SAFETY: tidegate_status_str returns a static NUL-terminated string.
        let unknown = unsafe { CStr::from_ptr(tidegate_status_str(9999)) };
        assert_eq!(unknown.to_str().unwrap(), "unknown status");
        let distinct: std::collections::HashSet<_> = seen.iter().map(|(_, m)| *m).collect();
        assert_eq!(distinct.len(), seen.len(), "one message per code");
    }
}
