//! C types of the Happy Eyeballs races the proxy engine runs: addresses, the race
//! configuration, failures, budget refusals and errno classes.

use core::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use tidegate_core::{
    AddressFamily, AttemptError, BudgetRefusal, DEFAULT_MAX_CANDIDATES, ErrorClass, EyeballsConfig,
    EyeballsConfigError, RaceFailure, ResolveError, classify_errno,
};

use crate::boundary::slice_len_fits;
use crate::status::TidegateStatus;

/// An address family, as a DNS answer type (AAAA or A). Functions take it as a `uint32_t`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TidegateAddressFamily {
    /// IPv4, from an A answer.
    Ipv4 = 4,
    /// IPv6, from an AAAA answer.
    Ipv6 = 6,
}

/// An IP address and port to connect to.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TidegateSocketAddress {
    /// The address in network byte order: 16 bytes for IPv6, the first 4 for IPv4 (the rest 0).
    pub ip: [u8; 16],
    /// The port, in host byte order.
    pub port: u16,
    /// `TIDEGATE_ADDRESS_FAMILY_IPV4` or `TIDEGATE_ADDRESS_FAMILY_IPV6`.
    pub family: u8,
    /// 0 in addresses tidegate writes; ignored in addresses it reads.
    pub reserved: u8,
    /// The IPv6 scope (interface index) of a link-local address; 0 otherwise.
    pub scope_id: u32,
}

/// Configuration of every race of a proxy engine (the `race` field of `TidegateProxyConfig`).
/// A value outside its range is refused with `TIDEGATE_STATUS_CONFIG_EYEBALLS_OUT_OF_RANGE`;
/// nothing is clamped.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TidegateEyeballsConfig {
    /// The family tried first: a `TIDEGATE_ADDRESS_FAMILY_*` value (default IPv6).
    pub preferred_family: u32,
    /// Preferred-family addresses tried before the first of the other family (RFC 8305 "First
    /// Address Family Count"; default 1; 1 to 255).
    pub first_address_family_count: u32,
    /// How long to wait for the preferred family's answer when the other arrives first, in
    /// microseconds (RFC 8305 "Resolution Delay"; default 50 ms; at most 2 s; 0 starts on the
    /// first answer).
    pub resolution_delay_us: u64,
    /// How long an attempt runs before the next one starts, in microseconds (RFC 8305
    /// "Connection Attempt Delay"; default 250 ms; 10 ms to 2 s).
    pub connection_attempt_delay_us: u64,
    /// How long one attempt may run before the race cancels it as timed out, in microseconds;
    /// 0 (default) means no timeout: the socket layer's own applies.
    pub attempt_timeout_us: u64,
    /// How long the race waits for budget before failing, in microseconds (default 1 s); 0 never
    /// waits: a refusal while no attempt is in flight fails the race.
    pub budget_wait_us: u64,
}

/// Why a race failed.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TidegateRaceFailure {
    /// The race has not failed.
    None = 0,
    /// Every candidate failed; `last_error_class` is the class of the last failure.
    AllAttemptsFailed = 1,
    /// Resolution gave no usable address.
    NoAddresses = 2,
    /// An attempt was due but the budget refused it for longer than `budget_wait_us`;
    /// `budget_refusal` says which limit.
    NoBudget = 3,
}

/// Which budget limit refused an attempt.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TidegateBudgetRefusal {
    /// No refusal.
    None = 0,
    /// Too many connection attempts in flight.
    AttemptsInFlight = 1,
    /// Too many descriptors in use by attempts and open connections.
    Connections = 2,
}

/// The class of a connect failure, by what the host should do about it.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TidegateErrorClass {
    /// Out of descriptors, flows, memory or ports: `EMFILE`, `ENFILE`, `ENOSPC`, `ENOMEM`, `ENOBUFS`, `EADDRNOTAVAIL`, `EAGAIN`
    /// (numbered as on the platform the library was built for). Back off.
    ResourceExhausted = 0,
    /// The peer refused the connection (`ECONNREFUSED`).
    Refused = 1,
    /// No route (`ENETUNREACH`, `EHOSTUNREACH`...).
    Unreachable = 2,
    /// The attempt timed out (`ETIMEDOUT`, or `attempt_timeout_us`).
    TimedOut = 3,
    /// Reset or aborted (`ECONNRESET`, `ECONNABORTED`, `EPIPE`).
    Reset = 4,
    /// Local policy forbids it (`EACCES`, `EPERM`).
    Denied = 5,
    /// Anything else.
    Other = 6,
}

/// The class of `errno_value` (from `connect`, `socket`, `accept` or `SO_ERROR`), numbered as on
/// the platform the library was built for: what the budget and the races do with it, and what a
/// host should do. `TIDEGATE_ERROR_CLASS_RESOURCE_EXHAUSTED` is the one list of resource errors
/// that make the budget back off. Unknown values are `TIDEGATE_ERROR_CLASS_OTHER`.
#[unsafe(no_mangle)]
pub extern "C" fn tidegate_errno_class(errno_value: i32) -> TidegateErrorClass {
    TidegateErrorClass::from(classify_errno(errno_value))
}

/// The default race configuration: IPv6 first, First Address Family Count 1, Resolution Delay
/// 50 ms, Connection Attempt Delay 250 ms (RFC 8305), no attempt timeout, 1 s budget wait.
pub(crate) fn race_config_default() -> TidegateEyeballsConfig {
    let c = EyeballsConfig::default();
    TidegateEyeballsConfig {
        preferred_family: TidegateAddressFamily::from(c.preferred_family) as u32,
        first_address_family_count: u32::from(c.first_address_family_count),
        resolution_delay_us: c.resolution_delay_micros,
        connection_attempt_delay_us: c.connection_attempt_delay_micros,
        attempt_timeout_us: c.attempt_timeout_micros,
        budget_wait_us: c.budget_wait_micros,
    }
}

/// The core configuration, refused where a value is outside its documented range.
pub(crate) fn eyeballs_config(
    config: &TidegateEyeballsConfig,
) -> Result<EyeballsConfig, TidegateStatus> {
    let preferred_family =
        family_of(config.preferred_family).ok_or(TidegateStatus::ConfigUnknownAddressFamily)?;
    let config = EyeballsConfig {
        preferred_family,
        first_address_family_count: u8::try_from(config.first_address_family_count)
            .map_err(|_| TidegateStatus::ConfigEyeballsOutOfRange)?,
        resolution_delay_micros: config.resolution_delay_us,
        connection_attempt_delay_micros: config.connection_attempt_delay_us,
        attempt_timeout_micros: config.attempt_timeout_us,
        budget_wait_micros: config.budget_wait_us,
    };
    config
        .validate()
        .map_err(|_: EyeballsConfigError| TidegateStatus::ConfigEyeballsOutOfRange)?;
    Ok(config)
}

/// The family and the addresses of a DNS answer as C passes them (`family` a
/// `TIDEGATE_ADDRESS_FAMILY_*` value, `addresses[0..count]`), every address checked before any
/// is fed, so a refused answer changes nothing: `NULL_ARGUMENT` for a NULL array with a count
/// (checked first, as in every function), `INVALID_ARGUMENT` for an unknown family or a count
/// whose bytes overflow, `ADDRESS_FAMILY_MISMATCH` for an address of the other family.
///
/// # Safety
/// `addresses` must be NULL or valid for reading `count` addresses.
pub(crate) unsafe fn dns_answer<'a>(
    family: u32,
    addresses: *const TidegateSocketAddress,
    count: usize,
) -> Result<(AddressFamily, &'a [TidegateSocketAddress]), TidegateStatus> {
    let addresses = if addresses.is_null() {
        if count > 0 {
            return Err(TidegateStatus::NullArgument);
        }
        &[]
    } else {
        slice_len_fits::<TidegateSocketAddress>(count)?;
        // SAFETY: non-NULL and valid for `count` addresses by the caller's contract, which
        // span at most `isize::MAX` bytes (checked just above).
        unsafe { core::slice::from_raw_parts(addresses, count) }
    };
    let family = family_of(family).ok_or(TidegateStatus::InvalidArgument)?;
    for address in addresses {
        let addr = socket_addr_of(address).ok_or(TidegateStatus::InvalidArgument)?;
        if AddressFamily::of(&addr) != family {
            return Err(TidegateStatus::AddressFamilyMismatch);
        }
    }
    Ok((family, addresses))
}

/// Feed checked `addresses` to `feed` through a stack buffer of [`DEFAULT_MAX_CANDIDATES`]
/// addresses (nothing is allocated), once even for an empty answer (an answer without records
/// still counts as the family's answer); the sum of what each chunk added. Only the first
/// chunk may be refused without anything fed.
pub(crate) fn feed_in_chunks(
    addresses: &[TidegateSocketAddress],
    mut feed: impl FnMut(&[SocketAddr]) -> Result<usize, TidegateStatus>,
) -> Result<usize, TidegateStatus> {
    let mut chunk = [SocketAddr::from(([0, 0, 0, 0], 0)); DEFAULT_MAX_CANDIDATES];
    let mut parts = addresses.chunks(DEFAULT_MAX_CANDIDATES);
    let mut part = parts.next().unwrap_or(&[]);
    let mut added = 0usize;
    loop {
        let mut len = 0;
        for (slot, address) in chunk.iter_mut().zip(part) {
            if let Some(addr) = socket_addr_of(address) {
                *slot = addr;
                len += 1;
            }
        }
        added += feed(chunk.get(..len).unwrap_or(&[]))?;
        match parts.next() {
            Some(next) => part = next,
            None => return Ok(added),
        }
    }
}

/// An attempt index for C: below the race's candidate count (16), so it always fits.
pub(crate) fn index_of(index: usize) -> u32 {
    debug_assert!(
        index < DEFAULT_MAX_CANDIDATES,
        "attempt index {index} out of range"
    );
    u32::try_from(index).unwrap_or(u32::MAX)
}

pub(crate) fn family_of(value: u32) -> Option<AddressFamily> {
    match value {
        4 => Some(AddressFamily::Ipv4),
        6 => Some(AddressFamily::Ipv6),
        _ => None,
    }
}

pub(crate) fn socket_addr_of(a: &TidegateSocketAddress) -> Option<SocketAddr> {
    match family_of(u32::from(a.family))? {
        AddressFamily::Ipv6 => Some(SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::from(a.ip),
            a.port,
            0,
            a.scope_id,
        ))),
        AddressFamily::Ipv4 => {
            let [b0, b1, b2, b3, ..] = a.ip;
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::new(b0, b1, b2, b3),
                a.port,
            )))
        }
    }
}

pub(crate) fn address_of(addr: SocketAddr) -> TidegateSocketAddress {
    match addr {
        SocketAddr::V6(v6) => TidegateSocketAddress {
            ip: v6.ip().octets(),
            port: v6.port(),
            family: TidegateAddressFamily::Ipv6 as u8,
            reserved: 0,
            scope_id: v6.scope_id(),
        },
        SocketAddr::V4(v4) => {
            let [b0, b1, b2, b3] = v4.ip().octets();
            let ip = [b0, b1, b2, b3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            TidegateSocketAddress {
                ip,
                port: v4.port(),
                family: TidegateAddressFamily::Ipv4 as u8,
                reserved: 0,
                scope_id: 0,
            }
        }
    }
}

pub(crate) const NO_ADDRESS: TidegateSocketAddress = TidegateSocketAddress {
    ip: [0; 16],
    port: 0,
    family: 0,
    reserved: 0,
    scope_id: 0,
};

pub(crate) fn failure_of(
    reason: RaceFailure,
) -> (
    TidegateRaceFailure,
    TidegateErrorClass,
    TidegateBudgetRefusal,
) {
    match reason {
        RaceFailure::AllAttemptsFailed { last } => (
            TidegateRaceFailure::AllAttemptsFailed,
            TidegateErrorClass::from(last),
            TidegateBudgetRefusal::None,
        ),
        RaceFailure::NoAddresses => (
            TidegateRaceFailure::NoAddresses,
            TidegateErrorClass::ResourceExhausted,
            TidegateBudgetRefusal::None,
        ),
        RaceFailure::NoBudget { refusal } => (
            TidegateRaceFailure::NoBudget,
            TidegateErrorClass::ResourceExhausted,
            refusal_of(refusal),
        ),
    }
}

pub(crate) fn refusal_of(refusal: BudgetRefusal) -> TidegateBudgetRefusal {
    match refusal {
        BudgetRefusal::AttemptsInFlight { .. } => TidegateBudgetRefusal::AttemptsInFlight,
        BudgetRefusal::Connections { .. } => TidegateBudgetRefusal::Connections,
    }
}

pub(crate) fn status_of_resolve(error: ResolveError) -> TidegateStatus {
    match error {
        ResolveError::RaceFinished => TidegateStatus::RaceFinished,
        ResolveError::FamilyMismatch { .. } => TidegateStatus::AddressFamilyMismatch,
        // A refusal added to the core later still refuses, with the generic status.
        _ => TidegateStatus::InvalidArgument,
    }
}

pub(crate) fn status_of_attempt(error: AttemptError) -> TidegateStatus {
    match error {
        AttemptError::UnknownAttempt { .. } => TidegateStatus::UnknownAttempt,
        AttemptError::NotInFlight { .. } => TidegateStatus::AttemptNotInFlight,
        // A refusal added to the core later still refuses, with the generic status.
        _ => TidegateStatus::InvalidArgument,
    }
}

impl From<AddressFamily> for TidegateAddressFamily {
    fn from(family: AddressFamily) -> Self {
        match family {
            AddressFamily::Ipv4 => TidegateAddressFamily::Ipv4,
            AddressFamily::Ipv6 => TidegateAddressFamily::Ipv6,
        }
    }
}

impl From<ErrorClass> for TidegateErrorClass {
    fn from(class: ErrorClass) -> Self {
        match class {
            ErrorClass::ResourceExhausted => TidegateErrorClass::ResourceExhausted,
            ErrorClass::Refused => TidegateErrorClass::Refused,
            ErrorClass::Unreachable => TidegateErrorClass::Unreachable,
            ErrorClass::TimedOut => TidegateErrorClass::TimedOut,
            ErrorClass::Reset => TidegateErrorClass::Reset,
            ErrorClass::Denied => TidegateErrorClass::Denied,
            ErrorClass::Other => TidegateErrorClass::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `c_abi` fuzz target: a NULL address array with a non-zero count and an
    /// unknown family gave `INVALID_ARGUMENT`; NULL checks come first, so it is `NULL_ARGUMENT`.
    #[test]
    fn a_null_address_array_is_a_null_argument_whatever_the_family() {
        for family in [4, 6, 5, u32::MAX] {
            // SAFETY: a NULL array is allowed; it is refused, not read.
            let answer = unsafe { dns_answer(family, std::ptr::null(), 3) };
            assert_eq!(answer.unwrap_err(), TidegateStatus::NullArgument);
        }
        // SAFETY: as above, with no records.
        let answer = unsafe { dns_answer(5, std::ptr::null(), 0) };
        assert_eq!(answer.unwrap_err(), TidegateStatus::InvalidArgument);
        // SAFETY: as above.
        let answer = unsafe { dns_answer(6, std::ptr::null(), 0) };
        assert_eq!(answer.unwrap().1.len(), 0, "an empty answer is an answer");
    }
}
