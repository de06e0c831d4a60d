//! `TidegateStatus`: the result of every fallible C function, and its static messages.

use core::ffi::c_char;

/// The result of a tidegate call. `TIDEGATE_STATUS_OK` (0) is success; every other value says
/// why the call did nothing. Codes are stable and never reused; new ones are only appended.
///
/// Functions return this type, but take status values as `uint32_t` (see
/// `tidegate_status_str`), so an unknown number coming from C is never read as an enum.
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
    /// An integer argument does not name a known value (an enum from C, for example).
    InvalidArgument = 4,
    /// The memory for a new engine could not be allocated.
    OutOfMemory = 5,

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

    /// The packet is empty. It was not queued and is counted as an empty packet.
    PacketEmpty = 30,
    /// The packet is longer than `max_packet_len`. It was not queued and is counted as oversized.
    PacketTooLong = 31,
    /// The outbound ring has no room for the packet now. The packet stays with the caller: drop
    /// it, or keep it and retry after a completion.
    NoRoom = 32,
    /// A completion named more packets than are in flight. Nothing was completed.
    NotInFlight = 33,

    /// Budget configuration: `max_attempts_in_flight` or `max_open_connections` is zero.
    ConfigBudgetZeroLimit = 70,
    /// Budget configuration: `recovery_interval_micros` is zero.
    ConfigBudgetZeroRecoveryInterval = 71,
    /// Race configuration: `preferred_family` is not a `TIDEGATE_ADDRESS_FAMILY_*` value.
    ConfigUnknownAddressFamily = 72,
    /// No connection budget: as many attempts as allowed are in flight. Nothing was counted;
    /// retry after an attempt ends.
    NoBudgetAttempts = 73,
    /// No connection budget: as many descriptors as allowed are in use by attempts and open
    /// connections (the limit may be lowered after resource errors). Nothing was counted.
    NoBudgetConnections = 74,
    /// The budget has no attempt in flight to connect, fail or cancel. Nothing changed.
    BudgetNoAttemptInFlight = 75,
    /// The budget has no open connection to close. Nothing changed.
    BudgetNoOpenConnection = 76,
    /// The race is already won, failed or aborted; the input is not needed.
    RaceFinished = 77,
    /// An address is not of the DNS answer's family. Nothing was fed.
    AddressFamilyMismatch = 78,
    /// No attempt with this index was ever started.
    UnknownAttempt = 79,
    /// The attempt is no longer in flight: the race is cancelling it (close its socket on the
    /// `CANCEL_ATTEMPT` action) or it already ended.
    AttemptNotInFlight = 80,
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
        TidegateStatus::ConfigZeroCapacity,
        TidegateStatus::ConfigZeroMaxPacketLen,
        TidegateStatus::ConfigRingTooLarge,
        TidegateStatus::ConfigInboundSmallerThanPacket,
        TidegateStatus::ConfigWatermarksOutOfOrder,
        TidegateStatus::ConfigNoHeadroom,
        TidegateStatus::ConfigNoSlotHeadroom,
        TidegateStatus::ConfigUnknownDropPolicy,
        TidegateStatus::PacketEmpty,
        TidegateStatus::PacketTooLong,
        TidegateStatus::NoRoom,
        TidegateStatus::NotInFlight,
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
            TidegateStatus::PacketEmpty => "packet is empty\0",
            TidegateStatus::PacketTooLong => "packet exceeds max_packet_len\0",
            TidegateStatus::NoRoom => "no room: the packet stays with the caller\0",
            TidegateStatus::NotInFlight => "completion names more packets than are in flight\0",
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

/// A static, NUL-terminated description of `status`, never NULL. Unknown values get
/// "unknown status". The string lives for the whole program; do not free it.
#[unsafe(no_mangle)]
pub extern "C" fn tidegate_status_str(status: u32) -> *const c_char {
    let message =
        TidegateStatus::from_u32(status).map_or("unknown status\0", TidegateStatus::message);
    message.as_ptr().cast()
}

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
