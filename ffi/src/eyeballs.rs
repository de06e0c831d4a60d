//! C ABI of the Happy Eyeballs scheduler: `TidegateEyeballs`.

use core::ffi::c_void;
use core::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::cell::Cell;
use std::panic::resume_unwind;

use tidegate_core::{
    Action, AddressFamily, AttemptError, BudgetRefusal, ConnectionBudget, DEFAULT_MAX_CANDIDATES,
    ErrorClass, EyeballsConfig, EyeballsConfigError, EyeballsStats, HappyEyeballs, Instant,
    RaceFailure, RaceStatus, ResolveError, classify_errno,
};

use crate::boundary::{Handle, call, call_mut, require_non_null, slice_len_fits, write_out};
use crate::budget::TidegateBudget;
use crate::place::{self, Memory};
use crate::status::TidegateStatus;

/// One Happy Eyeballs v2 race (RFC 8305) over at most 16 candidate addresses, for a host that
/// connects with BSD sockets.
///
/// The host feeds DNS answers and connect outcomes and polls actions: open socket `i` to an
/// address, close socket `i`, attempt `i` won, or the race failed. Every attempt is counted by
/// the `TidegateBudget` passed to `tidegate_eyeballs_poll_action` (always the same one).
///
/// Drain contract: after any input, call `tidegate_eyeballs_poll_action` until it reports
/// `TIDEGATE_EYEBALLS_ACTION_KIND_NONE`, then arm a timer for `tidegate_eyeballs_poll_timeout`.
/// A race waiting for budget retries on every poll: poll it again when budget is released.
///
/// Thread safety: not safe for concurrent use. Calls on one handle must not overlap (use one
/// serial dispatch queue, or a lock of your own); moving the handle between threads is fine.
pub struct TidegateEyeballs {
    poison: Cell<bool>,
    memory: Memory,
    pub(crate) engine: HappyEyeballs<DEFAULT_MAX_CANDIDATES>,
}

impl Handle for TidegateEyeballs {
    fn poison(&self) -> &Cell<bool> {
        &self.poison
    }
    fn memory(&self) -> Memory {
        self.memory
    }
}

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

/// Configuration of a race. Start from `tidegate_eyeballs_config_default()`. Creating a race
/// refuses a value outside its range with `TIDEGATE_STATUS_CONFIG_EYEBALLS_OUT_OF_RANGE`; nothing
/// is clamped.
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

/// What an action asks of the host.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TidegateEyeballsActionKind {
    /// Nothing to do until the next input or timer.
    None = 0,
    /// Open a socket and connect it to `address`; report its outcome with `index`.
    StartAttempt = 1,
    /// Close the socket of attempt `index`; its budget is already released.
    CancelAttempt = 2,
    /// Attempt `index` won: use its socket. It now counts as an open connection; call
    /// `tidegate_budget_on_connection_closed` when you close it.
    Connected = 3,
    /// The race failed (see `failure`); nothing else will come out of it.
    Failed = 4,
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

/// One action from `tidegate_eyeballs_poll_action`. Fields not named by `kind` are zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TidegateEyeballsAction {
    /// What to do.
    pub kind: TidegateEyeballsActionKind,
    /// The attempt, for `START_ATTEMPT`, `CANCEL_ATTEMPT` and `CONNECTED` (below 16).
    pub index: u32,
    /// Where to connect, for `START_ATTEMPT`.
    pub address: TidegateSocketAddress,
    /// Why the race failed, for `FAILED`.
    pub failure: TidegateRaceFailure,
    /// The last failure's class, for `FAILED` with `TIDEGATE_RACE_FAILURE_ALL_ATTEMPTS_FAILED`.
    pub last_error_class: TidegateErrorClass,
    /// The budget limit, for `FAILED` with `TIDEGATE_RACE_FAILURE_NO_BUDGET`.
    pub budget_refusal: TidegateBudgetRefusal,
}

/// Where a race stands.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TidegateRaceState {
    /// No attempt started yet: waiting for addresses or the Resolution Delay.
    Resolving = 0,
    /// Attempts in flight, or the next waiting for its delay.
    Connecting = 1,
    /// An attempt is due but the budget refuses it (`budget_refusal` says which limit).
    WaitingForBudget = 2,
    /// Attempt `index` won.
    Connected = 3,
    /// The race failed (`failure` says why).
    Failed = 4,
    /// The host aborted the race.
    Aborted = 5,
}

/// A race's state, from `tidegate_eyeballs_status`. Fields not named by `state` are zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TidegateRaceStatus {
    /// Where the race stands.
    pub state: TidegateRaceState,
    /// The winner, for `CONNECTED`.
    pub index: u32,
    /// Why it failed, for `FAILED`.
    pub failure: TidegateRaceFailure,
    /// The last failure's class, for `FAILED` with `ALL_ATTEMPTS_FAILED`.
    pub last_error_class: TidegateErrorClass,
    /// The budget limit, for `WAITING_FOR_BUDGET` and `FAILED` with `NO_BUDGET`.
    pub budget_refusal: TidegateBudgetRefusal,
}

/// The default race configuration: IPv6 first, First Address Family Count 1, Resolution Delay
/// 50 ms, Connection Attempt Delay 250 ms (RFC 8305), no attempt timeout, 1 s budget wait.
#[unsafe(no_mangle)]
pub extern "C" fn tidegate_eyeballs_config_default() -> TidegateEyeballsConfig {
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

/// Writes to `*out_size` and `*out_align` the size and alignment of the memory a race with
/// `config` lives in, in one block. That is all the memory it ever uses:
/// `tidegate_eyeballs_new` allocates exactly this block, and `tidegate_eyeballs_init` places it in a
/// block of yours.
///
/// Returns a `TIDEGATE_STATUS_CONFIG_*` status if the configuration is invalid.
///
/// # Safety
/// `config` must be NULL or point to a valid `TidegateEyeballsConfig`; `out_size` and `out_align` must be
/// NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_eyeballs_footprint(
    config: *const TidegateEyeballsConfig,
    out_size: *mut usize,
    out_align: *mut usize,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe { place::footprint::<TidegateEyeballs>(config, out_size, out_align) }
}

/// Creates a race with `config`, started at `now_us`, in memory it allocates, and writes its handle to
/// `*out_race`. The one allocation is `tidegate_eyeballs_footprint(config)` bytes; nothing is
/// allocated afterwards. Free the handle with `tidegate_eyeballs_free`.
///
/// Returns a `TIDEGATE_STATUS_CONFIG_*` status for an invalid configuration, or
/// `TIDEGATE_STATUS_OUT_OF_MEMORY` if the allocation fails.
///
/// # Safety
/// `config` must be NULL or point to a valid `TidegateEyeballsConfig`; `out_race` must be NULL or valid for
/// writing a pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_eyeballs_new(
    config: *const TidegateEyeballsConfig,
    now_us: u64,
    out_race: *mut *mut TidegateEyeballs,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe { place::new(config, now_us, out_race) }
}

/// Creates a race with `config`, started at `now_us`, in the `len` bytes at `memory`, and writes its
/// handle (`memory` itself) to `*out_race`: for hosts that place engines in memory of their own.
///
/// `memory` must hold the size `tidegate_eyeballs_footprint` gives and start on its alignment, or
/// the call returns `TIDEGATE_STATUS_BUFFER_TOO_SMALL` or `TIDEGATE_STATUS_MISALIGNED`. Nothing
/// else is ever used. Call `tidegate_eyeballs_free` when done: it ends the handle and leaves the
/// memory to you.
///
/// # Safety
/// `config` must be NULL or point to a valid `TidegateEyeballsConfig`; `memory` must be NULL or valid for
/// reading and writing `len` bytes, used by nothing else until the handle is freed; `out_race`
/// must be NULL or valid for writing a pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_eyeballs_init(
    config: *const TidegateEyeballsConfig,
    now_us: u64,
    memory: *mut c_void,
    len: usize,
    out_race: *mut *mut TidegateEyeballs,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe { place::init(config, now_us, memory, len, out_race) }
}

/// Frees a race: ends it and releases its memory (memory given to `tidegate_eyeballs_init` goes
/// back to the caller). `NULL` is a no-op. Works on a poisoned handle too.
///
/// Free a race only once `tidegate_eyeballs_is_finished` says so (call `tidegate_eyeballs_on_abort`
/// and drain it first if it is still running): attempts still in flight stay counted in the
/// budget.
///
/// # Safety
/// `race` must be NULL or a handle from `tidegate_eyeballs_new` or `tidegate_eyeballs_init` that was
/// not freed yet, with no other call on it running.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_eyeballs_free(race: *mut TidegateEyeballs) {
    // SAFETY: forwarded caller contract.
    unsafe { place::free(race) }
}

impl place::Placed for TidegateEyeballs {
    type CConfig = TidegateEyeballsConfig;
    type Config = EyeballsConfig;
    /// A race keeps its candidates inline: no storage beyond its handle.
    type Storage = ();

    fn check(config: &TidegateEyeballsConfig) -> Result<EyeballsConfig, TidegateStatus> {
        eyeballs_config(config)
    }

    fn walk(_: &EyeballsConfig, _: &mut place::Carver) -> Result<(), TidegateStatus> {
        Ok(())
    }

    fn build(
        config: EyeballsConfig,
        now_us: u64,
        (): (),
        memory: Memory,
    ) -> Result<Self, TidegateStatus> {
        let engine = HappyEyeballs::new(config, Instant::from_micros(now_us))
            .map_err(|_| TidegateStatus::ConfigEyeballsOutOfRange)?;
        Ok(TidegateEyeballs {
            poison: Cell::new(false),
            memory,
            engine,
        })
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

/// Feeds (part of) a DNS answer: `family` (a `TIDEGATE_ADDRESS_FAMILY_*` value) says whether it
/// is the AAAA or the A answer; `addresses[0..count]` are its addresses with the port, in the
/// resolver's order. `count` 0 is an answer without records. Writes how many addresses became
/// candidates to `*out_added` (duplicates and addresses past 16 are not).
///
/// Returns `TIDEGATE_STATUS_INVALID_ARGUMENT` for an unknown family value (in the argument or
/// an address), `TIDEGATE_STATUS_ADDRESS_FAMILY_MISMATCH` if an address is not of `family`,
/// `TIDEGATE_STATUS_RACE_FINISHED` once the race is over; nothing is fed then.
///
/// # Safety
/// `race` must be NULL or a live handle; `addresses` must be valid for reading `count`
/// addresses (NULL only if `count` is 0); `out_added` must be NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_eyeballs_on_resolved(
    race: *mut TidegateEyeballs,
    now_us: u64,
    family: u32,
    addresses: *const TidegateSocketAddress,
    count: usize,
    out_added: *mut usize,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(race, |r| {
            require_non_null([out_added.cast_const().cast()])?;
            let (family, addresses) = dns_answer(family, addresses, count)?;
            let now = Instant::from_micros(now_us);
            let added = feed_in_chunks(addresses, |part| {
                r.engine
                    .on_resolved(now, family, part)
                    .map_err(status_of_resolve)
            })?;
            write_out(out_added, added)
        })
    }
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
        unsafe { std::slice::from_raw_parts(addresses, count) }
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

/// The query for `family` (a `TIDEGATE_ADDRESS_FAMILY_*` value) failed or timed out: no address
/// of that family will come. Ends the Resolution Delay if it was waiting for this family.
///
/// # Safety
/// `race` must be NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_eyeballs_on_resolution_failed(
    race: *mut TidegateEyeballs,
    now_us: u64,
    family: u32,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(race, |r| {
            let family = family_of(family).ok_or(TidegateStatus::InvalidArgument)?;
            r.engine
                .on_resolution_failed(Instant::from_micros(now_us), family)
                .map_err(status_of_resolve)
        })
    }
}

/// Resolution is over: no address of any family will come (after feeding `getaddrinfo`'s
/// results, for example).
///
/// # Safety
/// `race` must be NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_eyeballs_on_resolution_done(
    race: *mut TidegateEyeballs,
    now_us: u64,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(race, |r| {
            r.engine
                .on_resolution_done(Instant::from_micros(now_us))
                .map_err(status_of_resolve)
        })
    }
}

/// Attempt `index` connected (its socket became writable with `SO_ERROR` 0). The first attempt
/// to connect wins; the others are cancelled.
///
/// Returns `TIDEGATE_STATUS_UNKNOWN_ATTEMPT` for an index never started, or
/// `TIDEGATE_STATUS_ATTEMPT_NOT_IN_FLIGHT` if the race already gave up on it: then its
/// `CANCEL_ATTEMPT` action is (or was) in the action stream; close the socket there.
///
/// # Safety
/// `race` must be NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_eyeballs_on_attempt_connected(
    race: *mut TidegateEyeballs,
    now_us: u64,
    index: u32,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(race, |r| {
            r.engine
                .on_attempt_connected(Instant::from_micros(now_us), index as usize)
                .map_err(status_of_attempt)
        })
    }
}

/// Attempt `index` failed with `errno_value` (from `connect`, `socket` or `SO_ERROR`). Close its
/// socket after this returns `TIDEGATE_STATUS_OK`; the next candidate starts at once. Resource
/// errors make the budget back off. Same errors as `tidegate_eyeballs_on_attempt_connected`.
///
/// # Safety
/// `race` must be NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_eyeballs_on_attempt_failed(
    race: *mut TidegateEyeballs,
    now_us: u64,
    index: u32,
    errno_value: i32,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(race, |r| {
            r.engine
                .on_attempt_failed(
                    Instant::from_micros(now_us),
                    index as usize,
                    classify_errno(errno_value),
                )
                .map_err(status_of_attempt)
        })
    }
}

/// Gives up the race: every attempt in flight is cancelled (drain the `CANCEL_ATTEMPT` actions).
/// No effect once the race is over.
///
/// # Safety
/// `race` must be NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_eyeballs_on_abort(
    race: *mut TidegateEyeballs,
    now_us: u64,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(race, |r| {
            r.engine.on_abort(Instant::from_micros(now_us));
            Ok(())
        })
    }
}

/// Writes to `*out_deadline_us` when the race next needs `tidegate_eyeballs_handle_timeout` and
/// a poll, or `UINT64_MAX` when nothing is timed.
///
/// # Safety
/// `race` must be NULL or a live handle; `out_deadline_us` must be NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_eyeballs_poll_timeout(
    race: *const TidegateEyeballs,
    out_deadline_us: *mut u64,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call(race, |r| {
            let deadline = r.engine.poll_timeout().unwrap_or(Instant::MAX);
            write_out(out_deadline_us, deadline.as_micros())
        })
    }
}

/// Applies the timers due at `now_us` (attempt timeouts); attempt starts happen in the next
/// poll. Idempotent.
///
/// # Safety
/// `race` must be NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_eyeballs_handle_timeout(
    race: *mut TidegateEyeballs,
    now_us: u64,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(race, |r| {
            r.engine.handle_timeout(Instant::from_micros(now_us));
            Ok(())
        })
    }
}

/// Writes the next action to `*out_action` (`kind` `TIDEGATE_EYEBALLS_ACTION_KIND_NONE` when
/// there is nothing to do). Applies the timers due at `now_us` first (as
/// `tidegate_eyeballs_handle_timeout` does), so a timer only needs to call this. Asks `budget`
/// before every `START_ATTEMPT` and releases each attempt's budget exactly once. Pass the same
/// budget every time.
///
/// A panic inside poisons both handles.
///
/// # Safety
/// `race` and `budget` must each be NULL or a live handle, with no other call on either running;
/// `out_action` must be NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_eyeballs_poll_action(
    race: *mut TidegateEyeballs,
    now_us: u64,
    budget: *mut TidegateBudget,
    out_action: *mut TidegateEyeballsAction,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        with_budget(race, budget, |r, b| {
            require_non_null([out_action.cast_const().cast()])?;
            r.handle_timeout(Instant::from_micros(now_us));
            let action = action_of(r.poll_action(b));
            write_out(out_action, action)
        })
    }
}

/// Writes where the race stands to `*out_status`.
///
/// # Safety
/// `race` must be NULL or a live handle; `out_status` must be NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_eyeballs_status(
    race: *const TidegateEyeballs,
    out_status: *mut TidegateRaceStatus,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call(race, |r| {
            write_out(out_status, status_of_race(r.engine.status()))
        })
    }
}

/// Writes to `*out_finished` whether the race is over and drained: nothing more will come out
/// of it and it holds no budget. It may then be freed.
///
/// # Safety
/// `race` must be NULL or a live handle; `out_finished` must be NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_eyeballs_is_finished(
    race: *const TidegateEyeballs,
    out_finished: *mut bool,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe { call(race, |r| write_out(out_finished, r.engine.is_finished())) }
}

/// Writes to `*out_waiting` whether the race waits for budget: poll it again when budget is
/// released.
///
/// # Safety
/// `race` must be NULL or a live handle; `out_waiting` must be NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_eyeballs_is_waiting_for_budget(
    race: *const TidegateEyeballs,
    out_waiting: *mut bool,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call(race, |r| {
            write_out(out_waiting, r.engine.is_waiting_for_budget())
        })
    }
}

/// Writes a snapshot of the race's counters to `*out_stats`.
///
/// # Safety
/// `race` must be NULL or a live handle; `out_stats` must be NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_eyeballs_stats(
    race: *const TidegateEyeballs,
    out_stats: *mut TidegateEyeballsStats,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe { call(race, |r| write_out(out_stats, r.engine.stats().into())) }
}

/// A snapshot of a race's counters, from `tidegate_eyeballs_stats`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TidegateEyeballsStats {
    /// Attempts started.
    pub attempts_started: u32,
    /// Attempts the host reported failed.
    pub attempts_failed: u32,
    /// Attempts cancelled: also-ran losers, timed-out and traded attempts, and attempts of an
    /// aborted race.
    pub attempts_cancelled: u32,
    /// Also-ran attempts: losers cancelled because another attempt of the race connected
    /// (included in `attempts_cancelled`).
    pub attempts_also_ran: u32,
    /// Attempts cancelled because `attempt_timeout_us` passed.
    pub attempts_timed_out: u32,
    /// Addresses dropped because the candidate table was full.
    pub candidates_dropped: u32,
    /// Times the budget refused an attempt that was due.
    pub budget_refusals: u32,
    /// Budget releases the budget rejected (the race was polled with a different budget).
    pub budget_mismatches: u32,
    /// Attempts given up because the budget refused the candidate that was due: each one's
    /// budget started that candidate instead (included in `attempts_cancelled`).
    pub attempts_traded: u32,
}

impl From<EyeballsStats> for TidegateEyeballsStats {
    fn from(s: EyeballsStats) -> Self {
        TidegateEyeballsStats {
            attempts_started: s.attempts_started,
            attempts_failed: s.attempts_failed,
            attempts_cancelled: s.attempts_cancelled,
            attempts_also_ran: s.attempts_also_ran,
            attempts_timed_out: s.attempts_timed_out,
            candidates_dropped: s.candidates_dropped,
            budget_refusals: s.budget_refusals,
            budget_mismatches: s.budget_mismatches,
            attempts_traded: s.attempts_traded,
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

/// Run `body` on a race and its budget, each inside the boundary: a panic poisons both.
///
/// # Safety
/// `race` and `budget` must each be NULL or a live handle, not used concurrently.
unsafe fn with_budget(
    race: *mut TidegateEyeballs,
    budget: *mut TidegateBudget,
    body: impl FnOnce(
        &mut HappyEyeballs<DEFAULT_MAX_CANDIDATES>,
        &mut ConnectionBudget,
    ) -> Result<(), TidegateStatus>,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(race, |r| {
            let status = call_mut(budget, |b| body(&mut r.engine, &mut b.engine));
            match status {
                TidegateStatus::Ok => Ok(()),
                // The budget is poisoned; unwind through the race's boundary to poison it too.
                TidegateStatus::Panic => resume_unwind(Box::new("panic inside the budget")),
                other => Err(other),
            }
        })
    }
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

fn action_of(action: Option<Action>) -> TidegateEyeballsAction {
    let mut out = TidegateEyeballsAction {
        kind: TidegateEyeballsActionKind::None,
        index: 0,
        address: NO_ADDRESS,
        failure: TidegateRaceFailure::None,
        last_error_class: TidegateErrorClass::ResourceExhausted,
        budget_refusal: TidegateBudgetRefusal::None,
    };
    match action {
        None => {}
        Some(Action::StartAttempt { index, addr }) => {
            out.kind = TidegateEyeballsActionKind::StartAttempt;
            out.index = index_of(index);
            out.address = address_of(addr);
        }
        Some(Action::CancelAttempt { index }) => {
            out.kind = TidegateEyeballsActionKind::CancelAttempt;
            out.index = index_of(index);
        }
        Some(Action::Connected { index }) => {
            out.kind = TidegateEyeballsActionKind::Connected;
            out.index = index_of(index);
        }
        Some(Action::Failed { reason }) => {
            out.kind = TidegateEyeballsActionKind::Failed;
            (out.failure, out.last_error_class, out.budget_refusal) = failure_of(reason);
        }
    }
    out
}

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

fn status_of_race(status: RaceStatus) -> TidegateRaceStatus {
    let mut out = TidegateRaceStatus {
        state: TidegateRaceState::Resolving,
        index: 0,
        failure: TidegateRaceFailure::None,
        last_error_class: TidegateErrorClass::ResourceExhausted,
        budget_refusal: TidegateBudgetRefusal::None,
    };
    match status {
        RaceStatus::Resolving => {}
        RaceStatus::Connecting => out.state = TidegateRaceState::Connecting,
        RaceStatus::WaitingForBudget { refusal } => {
            out.state = TidegateRaceState::WaitingForBudget;
            out.budget_refusal = refusal_of(refusal);
        }
        RaceStatus::Connected { index } => {
            out.state = TidegateRaceState::Connected;
            out.index = index_of(index);
        }
        RaceStatus::Failed { reason } => {
            out.state = TidegateRaceState::Failed;
            (out.failure, out.last_error_class, out.budget_refusal) = failure_of(reason);
        }
        RaceStatus::Aborted => out.state = TidegateRaceState::Aborted,
    }
    out
}

pub(crate) fn status_of_resolve(error: ResolveError) -> TidegateStatus {
    match error {
        ResolveError::RaceFinished => TidegateStatus::RaceFinished,
        ResolveError::FamilyMismatch { .. } => TidegateStatus::AddressFamilyMismatch,
    }
}

pub(crate) fn status_of_attempt(error: AttemptError) -> TidegateStatus {
    match error {
        AttemptError::UnknownAttempt { .. } => TidegateStatus::UnknownAttempt,
        AttemptError::NotInFlight { .. } => TidegateStatus::AttemptNotInFlight,
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

/// Force a panic inside the budget's boundary during a race call, to test that the panic is
/// caught and both handles are poisoned. Not part of the C API.
///
/// # Safety
/// As for `tidegate_eyeballs_poll_action`: each handle must be NULL or live.
#[doc(hidden)]
#[cfg(any(test, feature = "testing"))]
pub unsafe fn testing_panic_inside_budget(
    race: *mut TidegateEyeballs,
    budget: *mut TidegateBudget,
) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        with_budget(race, budget, |_, _| -> Result<(), TidegateStatus> {
            panic!("forced panic for testing the C boundary")
        })
    }
}

/// Force a panic inside the boundary of `race` alone (no budget involved), to test that the
/// panic is caught and the handle poisoned. Not part of the C API.
///
/// # Safety
/// As for any mutating call: `race` must be NULL or a live handle.
#[doc(hidden)]
#[cfg(any(test, feature = "testing"))]
pub unsafe fn testing_panic_inside_eyeballs(race: *mut TidegateEyeballs) -> TidegateStatus {
    // SAFETY: forwarded caller contract.
    unsafe {
        call_mut(race, |_| -> Result<(), TidegateStatus> {
            panic!("forced panic for testing the C boundary")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `c_abi` fuzz target: a NULL address array with a non-zero count and an
    /// unknown family gave `INVALID_ARGUMENT`; NULL checks come first, so it is `NULL_ARGUMENT`.
    #[test]
    fn a_null_address_array_is_a_null_argument_whatever_the_family() {
        let config = tidegate_eyeballs_config_default();
        let mut race = std::ptr::null_mut();
        // SAFETY: valid config and out-pointers; the handle is freed at the end.
        unsafe {
            assert_eq!(
                tidegate_eyeballs_new(&config, 0, &mut race),
                TidegateStatus::Ok
            );
            let mut added = 7usize;
            for family in [4, 6, 5, u32::MAX] {
                assert_eq!(
                    tidegate_eyeballs_on_resolved(race, 1, family, std::ptr::null(), 3, &mut added),
                    TidegateStatus::NullArgument
                );
            }
            assert_eq!(
                tidegate_eyeballs_on_resolved(race, 1, 5, std::ptr::null(), 0, &mut added),
                TidegateStatus::InvalidArgument
            );
            assert_eq!(added, 7, "out-param untouched on failure");
            tidegate_eyeballs_free(race);
        }
    }
}
