//! A sans-IO Happy Eyeballs v2 scheduler (RFC 8305) whose attempts run under a
//! [`ConnectionBudget`].
//!
//! A host that connects through BSD sockets (a proxy that must keep the originating process
//! visible, an embedded stack) loses Network framework's Happy Eyeballs. [`HappyEyeballs`] gives
//! it back without doing any I/O: the host feeds DNS answers and the outcome of each connect,
//! and polls [`Action`]s telling it which socket to open, which to close and when the race is
//! won or lost.
//!
//! ## The algorithm
//!
//! - **Resolution Delay** (section 3). AAAA and A answers are fed separately, in the order they
//!   arrive. If the answer of the other family (A, by default) arrives first, the scheduler
//!   waits up to [`EyeballsConfig::resolution_delay_micros`] (50 ms) for the preferred one before
//!   connecting to the other family.
//! - **Interleaving** (section 4). Candidates are tried in the order IPv6, IPv4, IPv6, IPv4...
//!   (preferred family first, [`EyeballsConfig::first_address_family_count`] of them before the
//!   first of the other family). Addresses that arrive after the race started are sorted into
//!   the untried ones.
//! - **Connection Attempt Delay** (section 5). One attempt starts; if it has neither connected
//!   nor failed after [`EyeballsConfig::connection_attempt_delay_micros`] (250 ms), the next
//!   starts while the first is still pending. When an attempt fails the next starts at once,
//!   but never sooner than [`MIN_ATTEMPT_SPACING_MICROS`] (10 ms) after the previous start.
//! - The first attempt to connect wins; every other attempt in flight is cancelled at once and
//!   untried candidates are ignored. When every candidate has failed and resolution is over,
//!   the race fails once, with the class of the last error.
//!
//! ## Budget
//!
//! Every attempt is counted by the shared [`ConnectionBudget`], passed to
//! [`HappyEyeballs::poll_action`]: the scheduler asks it before emitting
//! [`Action::StartAttempt`], and releases each attempt exactly once when it connects (it then
//! counts as an open connection, which the host releases with
//! [`ConnectionBudget::on_connection_closed`] when it closes the winner), fails or is cancelled.
//! A failure of class [`ErrorClass::ResourceExhausted`] makes the budget back off.
//!
//! When an attempt is due and the budget refuses it:
//!
//! - a race that holds attempts in flight **trades** the oldest of them for the due candidate:
//!   it cancels that attempt ([`Action::CancelAttempt`]) and the budget the attempt held starts
//!   the candidate in the same drain. The oldest attempt has gone at least a Connection Attempt
//!   Delay without an answer, the mark of a black-holed path (an IPv6 route that drops SYNs);
//!   waiting behind it for budget would stall the race until the OS gives up on it, 75 s later,
//!   and under a tight budget every race would. Trading keeps the race within the budget it
//!   already held, so a race under budget pressure tries its candidates one at a time, each for
//!   a Connection Attempt Delay, instead of racing two;
//! - a race that holds none waits for budget, and [`HappyEyeballs::status`] says so with the
//!   refusal. The wait is bounded by [`EyeballsConfig::budget_wait_micros`]: once it is over the
//!   race fails with [`RaceFailure::NoBudget`]. A wait of 0 refuses at once.
//!
//! So a race never stalls behind its own attempts, and never waits for budget longer than
//! `budget_wait_micros` after its attempt fell due.
//!
//! ## Drain contract
//!
//! After any input (`on_*`, `handle_timeout`), call [`HappyEyeballs::poll_action`] until it
//! returns `None`, then arm a timer for [`HappyEyeballs::poll_timeout`]. A race waiting for
//! budget retries on every `poll_action`: poll waiting races
//! ([`HappyEyeballs::is_waiting_for_budget`]) again whenever budget is released (a connection
//! closed, another race ended, the budget's own `handle_timeout`).
//!
//! The host's side of one attempt `i`: [`Action::StartAttempt`] opens socket `i`. The host
//! closes it after reporting [`HappyEyeballs::on_attempt_failed`] (accepted) or on
//! [`Action::CancelAttempt`]; it keeps it on [`Action::Connected`]. If a report is rejected with
//! [`AttemptError::NotInFlight`], the scheduler already gave up on that attempt and its
//! `CancelAttempt` is (or was) in the action stream: close the socket there.

mod order;

use core::fmt;
use core::net::SocketAddr;

use crate::budget::{BudgetRefusal, ConnectionBudget};
use crate::error_class::ErrorClass;
use crate::fmt::{log_debug, log_trace, log_warn};
use crate::time::{Clock, Instant};

use order::interleaved_position;

/// The RFC 8305 floor on the time between two attempt starts: 10 ms. No configuration and no
/// failure makes the scheduler start attempts closer together.
pub const MIN_ATTEMPT_SPACING_MICROS: u64 = 10_000;

/// The default number of candidates a race keeps (the `N` of [`HappyEyeballs`] the C ABI uses).
pub const DEFAULT_MAX_CANDIDATES: usize = 16;

/// An address family, as a DNS answer type: AAAA answers carry IPv6 addresses, A answers IPv4.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum AddressFamily {
    /// IPv6, from an AAAA answer.
    Ipv6 = 6,
    /// IPv4, from an A answer.
    Ipv4 = 4,
}

impl AddressFamily {
    /// The family of `addr`.
    pub const fn of(addr: &SocketAddr) -> AddressFamily {
        match addr {
            SocketAddr::V6(_) => AddressFamily::Ipv6,
            SocketAddr::V4(_) => AddressFamily::Ipv4,
        }
    }

    /// The other family.
    pub const fn other(self) -> AddressFamily {
        match self {
            AddressFamily::Ipv6 => AddressFamily::Ipv4,
            AddressFamily::Ipv4 => AddressFamily::Ipv6,
        }
    }
}

/// Parameters of a race. [`HappyEyeballs::new`] refuses a value outside its documented range
/// ([`EyeballsConfig::validate`]); nothing is clamped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct EyeballsConfig {
    /// The family tried first. Default IPv6, as RFC 8305 recommends.
    pub preferred_family: AddressFamily,
    /// How many preferred-family addresses are tried before the first of the other family
    /// (RFC 8305 "First Address Family Count"). Default 1; at least 1.
    pub first_address_family_count: u8,
    /// How long to wait for the preferred family's answer when the other family's answer
    /// arrives first, in microseconds (RFC 8305 "Resolution Delay"). Default 50 ms; at most 2 s;
    /// 0 starts on the first answer without waiting for the preferred family.
    pub resolution_delay_micros: u64,
    /// How long an attempt may stay pending before the next one starts, in microseconds
    /// (RFC 8305 "Connection Attempt Delay"). Default 250 ms; from
    /// [`MIN_CONNECTION_ATTEMPT_DELAY_MICROS`] (10 ms, the RFC's hard floor) to
    /// [`MAX_CONNECTION_ATTEMPT_DELAY_MICROS`] (2 s, the RFC's recommended maximum). The RFC
    /// recommends at least 100 ms unless the host has round-trip measurements to the
    /// destination; going below that is the host's informed choice.
    pub connection_attempt_delay_micros: u64,
    /// How long the scheduler lets one attempt run before cancelling it as timed out, in
    /// microseconds; 0 (the default) leaves timeouts to the host's socket layer.
    pub attempt_timeout_micros: u64,
    /// How long a race may wait for budget when an attempt is due and the budget refuses, in
    /// microseconds, before it fails with [`RaceFailure::NoBudget`] (once it has no attempt in
    /// flight). Default 1 s; 0 never waits: a refusal with no attempt in flight fails the race.
    pub budget_wait_micros: u64,
}

/// The smallest Connection Attempt Delay the scheduler accepts: 10 ms (RFC 8305 section 5, a
/// MUST).
pub const MIN_CONNECTION_ATTEMPT_DELAY_MICROS: u64 = 10_000;
/// The largest Connection Attempt Delay the scheduler accepts: 2 s (RFC 8305 section 5,
/// recommended maximum).
pub const MAX_CONNECTION_ATTEMPT_DELAY_MICROS: u64 = 2_000_000;
/// The largest Resolution Delay the scheduler accepts: 2 s (a longer wait would only hide a
/// broken resolver).
pub const MAX_RESOLUTION_DELAY_MICROS: u64 = 2_000_000;

impl EyeballsConfig {
    /// Default [`EyeballsConfig::resolution_delay_micros`]: 50 ms (RFC 8305).
    pub const DEFAULT_RESOLUTION_DELAY_MICROS: u64 = 50_000;
    /// Default [`EyeballsConfig::connection_attempt_delay_micros`]: 250 ms (RFC 8305).
    pub const DEFAULT_CONNECTION_ATTEMPT_DELAY_MICROS: u64 = 250_000;
    /// Default [`EyeballsConfig::budget_wait_micros`]: 1 s.
    pub const DEFAULT_BUDGET_WAIT_MICROS: u64 = 1_000_000;

    /// Check every value against its documented range.
    pub const fn validate(&self) -> Result<(), EyeballsConfigError> {
        if self.first_address_family_count == 0 {
            return Err(EyeballsConfigError::ZeroFirstAddressFamilyCount);
        }
        if self.resolution_delay_micros > MAX_RESOLUTION_DELAY_MICROS {
            return Err(EyeballsConfigError::ResolutionDelayTooLong);
        }
        if self.connection_attempt_delay_micros < MIN_CONNECTION_ATTEMPT_DELAY_MICROS
            || self.connection_attempt_delay_micros > MAX_CONNECTION_ATTEMPT_DELAY_MICROS
        {
            return Err(EyeballsConfigError::AttemptDelayOutOfRange);
        }
        Ok(())
    }
}

/// Why [`HappyEyeballs::new`] refused an [`EyeballsConfig`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum EyeballsConfigError {
    /// `first_address_family_count` is 0.
    ZeroFirstAddressFamilyCount,
    /// `resolution_delay_micros` is above [`MAX_RESOLUTION_DELAY_MICROS`].
    ResolutionDelayTooLong,
    /// `connection_attempt_delay_micros` is outside [`MIN_CONNECTION_ATTEMPT_DELAY_MICROS`] ..=
    /// [`MAX_CONNECTION_ATTEMPT_DELAY_MICROS`].
    AttemptDelayOutOfRange,
}

impl core::fmt::Display for EyeballsConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            EyeballsConfigError::ZeroFirstAddressFamilyCount => {
                "first address family count must be at least 1"
            }
            EyeballsConfigError::ResolutionDelayTooLong => "resolution delay above 2 s",
            EyeballsConfigError::AttemptDelayOutOfRange => {
                "connection attempt delay outside 10 ms ..= 2 s"
            }
        })
    }
}

impl EyeballsConfig {
    /// The documented defaults (RFC 8305's values). Build a configuration as
    /// `EyeballsConfig { field: value, ..EyeballsConfig::DEFAULT }`, so that a field added later
    /// keeps its default without breaking the caller.
    pub const DEFAULT: EyeballsConfig = EyeballsConfig {
        preferred_family: AddressFamily::Ipv6,
        first_address_family_count: 1,
        resolution_delay_micros: Self::DEFAULT_RESOLUTION_DELAY_MICROS,
        connection_attempt_delay_micros: Self::DEFAULT_CONNECTION_ATTEMPT_DELAY_MICROS,
        attempt_timeout_micros: 0,
        budget_wait_micros: Self::DEFAULT_BUDGET_WAIT_MICROS,
    };
}

impl Default for EyeballsConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// What the host must do next, from [`HappyEyeballs::poll_action`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Open a socket and start connecting to `addr`; report the outcome with index `index`.
    /// The attempt is already counted by the budget.
    StartAttempt {
        /// The attempt's index, stable for the race (below the race's `N`).
        index: usize,
        /// Where to connect.
        addr: SocketAddr,
    },
    /// Close attempt `index`'s socket: another attempt won, it timed out, or the race was
    /// aborted. Its budget is already released.
    CancelAttempt {
        /// The attempt to close.
        index: usize,
    },
    /// Attempt `index` won: use its socket. Every other attempt is cancelled. The winner now
    /// counts as an open connection; release it with [`ConnectionBudget::on_connection_closed`]
    /// when the host closes it.
    Connected {
        /// The winning attempt.
        index: usize,
    },
    /// The race is lost; nothing else will come out of it.
    Failed {
        /// Why.
        reason: RaceFailure,
    },
}

// `defmt` has no `Format` for `core::net::SocketAddr`, so the address goes through `Display`.
#[cfg(feature = "defmt")]
impl defmt::Format for Action {
    fn format(&self, f: defmt::Formatter<'_>) {
        match self {
            Action::StartAttempt { index, addr } => defmt::write!(
                f,
                "StartAttempt {{ index: {}, addr: {} }}",
                index,
                defmt::Display2Format(addr)
            ),
            Action::CancelAttempt { index } => {
                defmt::write!(f, "CancelAttempt {{ index: {} }}", index)
            }
            Action::Connected { index } => defmt::write!(f, "Connected {{ index: {} }}", index),
            Action::Failed { reason } => defmt::write!(f, "Failed {{ reason: {} }}", reason),
        }
    }
}

/// Why a race failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum RaceFailure {
    /// Every candidate was tried and failed; `last` is the class of the last failure.
    AllAttemptsFailed {
        /// The class of the last attempt's failure.
        last: ErrorClass,
    },
    /// Resolution ended without a single usable address.
    NoAddresses,
    /// An attempt was due but the budget refused it for longer than the configured wait, and
    /// no attempt was left in flight. `refusal` is the budget's last answer.
    NoBudget {
        /// Which budget limit was reached.
        refusal: BudgetRefusal,
    },
}

impl RaceFailure {
    /// The error class a host reports for the connection this race was for (a flow's
    /// [`FlowGovernor::on_connect_failed`], an app proxy's error to the app): the last attempt's
    /// class when every attempt failed; [`ErrorClass::Unreachable`] when resolution gave no
    /// address, since nothing can reach the peer; [`ErrorClass::ResourceExhausted`] when the
    /// budget never had room, since the host is out of connections. Mapping `NoBudget` to a
    /// resource class does not feed the budget's back-off: that only follows errors the OS
    /// reported.
    ///
    /// [`FlowGovernor::on_connect_failed`]: crate::FlowGovernor::on_connect_failed
    pub const fn error_class(&self) -> ErrorClass {
        match self {
            RaceFailure::AllAttemptsFailed { last } => *last,
            RaceFailure::NoAddresses => ErrorClass::Unreachable,
            RaceFailure::NoBudget { .. } => ErrorClass::ResourceExhausted,
        }
    }
}

impl fmt::Display for RaceFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RaceFailure::AllAttemptsFailed { last } => {
                write!(f, "every connection attempt failed, the last with: {last}")
            }
            RaceFailure::NoAddresses => f.write_str("name resolution gave no usable address"),
            RaceFailure::NoBudget { refusal } => write!(f, "gave up waiting: {refusal}"),
        }
    }
}

/// Where a race stands, from [`HappyEyeballs::status`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum RaceStatus {
    /// No attempt has started yet: waiting for addresses or for the Resolution Delay.
    Resolving,
    /// Attempts are in flight or the next one is waiting for its delay.
    Connecting,
    /// An attempt is due but the budget refuses it; the race retries on every poll.
    WaitingForBudget {
        /// The budget's last answer.
        refusal: BudgetRefusal,
    },
    /// Attempt `index` won.
    Connected {
        /// The winning attempt.
        index: usize,
    },
    /// The race failed.
    Failed {
        /// Why.
        reason: RaceFailure,
    },
    /// The host aborted the race.
    Aborted,
}

/// Why a DNS input was rejected; the race is unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ResolveError {
    /// The race is already won, failed or aborted; the answer is not needed.
    RaceFinished,
    /// The address at `position` in the answer is not of the answer's family.
    FamilyMismatch {
        /// Position of the offending address in the slice passed in.
        position: usize,
    },
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResolveError::RaceFinished => f.write_str("the race is already finished"),
            ResolveError::FamilyMismatch { position } => {
                write!(f, "address {position} is not of the answer's family")
            }
        }
    }
}

/// Why an attempt report was rejected; the race is unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum AttemptError {
    /// No attempt with this index was ever started.
    UnknownAttempt {
        /// The index reported.
        index: usize,
    },
    /// The attempt already ended, or the scheduler is cancelling it (its
    /// [`Action::CancelAttempt`] is pending or was emitted): close the socket there.
    NotInFlight {
        /// The index reported.
        index: usize,
    },
}

impl fmt::Display for AttemptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttemptError::UnknownAttempt { index } => {
                write!(f, "attempt {index} was never started")
            }
            AttemptError::NotInFlight { index } => {
                write!(f, "attempt {index} is no longer in flight")
            }
        }
    }
}

/// Counters of one race. They saturate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct EyeballsStats {
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
    /// Attempts cancelled because [`EyeballsConfig::attempt_timeout_micros`] passed.
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

/// One Happy Eyeballs race over at most `N` candidate addresses.
///
/// `N` fixes the storage: the race holds `N` candidates inline and reports its exact size as
/// [`HappyEyeballs::FOOTPRINT`]. Addresses beyond `N` are dropped (counted in
/// [`EyeballsStats::candidates_dropped`]), except that a full table makes room for a family
/// with fewer candidates by dropping the untried candidate of the other family that would be
/// tried last, so a late AAAA answer is not crowded out by a long A answer.
///
/// Drop a race only once [`HappyEyeballs::is_finished`] (after [`HappyEyeballs::on_abort`] and
/// draining, if it was still running): a race dropped with attempts in flight leaves them
/// counted in the budget.
///
/// Not safe for concurrent use; moving it between threads is fine.
#[derive(Clone, Debug)]
pub struct HappyEyeballs<const N: usize> {
    config: EyeballsConfig,
    clock: Clock,
    /// The candidates received, in arrival order; an index is an attempt's index.
    candidates: heapless::Vec<Candidate, N>,
    ipv6: FamilyResolution,
    ipv4: FamilyResolution,
    resolution_done: bool,
    last_start: Option<Instant>,
    failed_since_last_start: bool,
    budget_wait_since: Option<Instant>,
    last_refusal: Option<BudgetRefusal>,
    last_error: Option<ErrorClass>,
    outcome: Outcome,
    needs_settle: bool,
    stats: EyeballsStats,
}

impl<const N: usize> HappyEyeballs<N> {
    /// The exact size of a race in bytes; it owns no other memory.
    pub const FOOTPRINT: usize = core::mem::size_of::<Self>();

    /// A race with `config`, started at `now`, with no address yet; a value outside its
    /// documented range is refused.
    pub fn new(config: EyeballsConfig, now: Instant) -> Result<Self, EyeballsConfigError> {
        config.validate()?;
        Ok(HappyEyeballs {
            config,
            clock: Clock::new(now),
            candidates: heapless::Vec::new(),
            ipv6: FamilyResolution::default(),
            ipv4: FamilyResolution::default(),
            resolution_done: false,
            last_start: None,
            failed_since_last_start: false,
            budget_wait_since: None,
            last_refusal: None,
            last_error: None,
            outcome: Outcome::Running,
            needs_settle: false,
            stats: EyeballsStats::default(),
        })
    }

    /// Feed (part of) a DNS answer: `family` says whether it is the AAAA or the A answer, and
    /// `addrs` are its addresses with the port to connect to, in the resolver's order. An empty
    /// `addrs` is an answer with no records. May be called more than once per family; duplicates
    /// are ignored. Returns how many addresses were added as candidates.
    pub fn on_resolved(
        &mut self,
        now: Instant,
        family: AddressFamily,
        addrs: &[SocketAddr],
    ) -> Result<usize, ResolveError> {
        let now = self.clock.observe(now);
        if !self.is_running() {
            return Err(ResolveError::RaceFinished);
        }
        if let Some(position) = addrs.iter().position(|a| AddressFamily::of(a) != family) {
            return Err(ResolveError::FamilyMismatch { position });
        }
        self.family_mut(family).answered_at.get_or_insert(now);
        let mut added = 0;
        for addr in addrs {
            if self.add_candidate(*addr, family) {
                added += 1;
            }
        }
        log_trace!("eyeballs: {} addresses added", added);
        Ok(added)
    }

    /// The query for `family` failed or timed out: no address of that family will come.
    pub fn on_resolution_failed(
        &mut self,
        now: Instant,
        family: AddressFamily,
    ) -> Result<(), ResolveError> {
        let now = self.clock.observe(now);
        if !self.is_running() {
            return Err(ResolveError::RaceFinished);
        }
        self.family_mut(family).answered_at.get_or_insert(now);
        Ok(())
    }

    /// Resolution is over: no address of any family will come (a host using `getaddrinfo` feeds
    /// its results with `on_resolved` and then calls this).
    pub fn on_resolution_done(&mut self, now: Instant) -> Result<(), ResolveError> {
        self.clock.observe(now);
        if !self.is_running() {
            return Err(ResolveError::RaceFinished);
        }
        self.resolution_done = true;
        Ok(())
    }

    /// Attempt `index` connected. The first attempt to connect wins the race: every other
    /// attempt in flight is cancelled.
    pub fn on_attempt_connected(&mut self, now: Instant, index: usize) -> Result<(), AttemptError> {
        self.clock.observe(now);
        self.in_flight_slot(index)?;
        if let Some(candidate) = self.candidates.get_mut(index) {
            candidate.state = AttemptState::Connected { settled: false };
        }
        self.needs_settle = true;
        self.outcome = Outcome::Won {
            index,
            reported: false,
        };
        let also_ran = self.cancel_in_flight();
        self.stats.attempts_also_ran = self.stats.attempts_also_ran.saturating_add(also_ran);
        log_debug!("eyeballs: attempt {} won", index);
        Ok(())
    }

    /// Attempt `index` failed with `class` (from [`crate::classify_errno`]). The host closes its
    /// socket. The next candidate starts at once (subject to the 10 ms spacing and the budget).
    pub fn on_attempt_failed(
        &mut self,
        now: Instant,
        index: usize,
        class: ErrorClass,
    ) -> Result<(), AttemptError> {
        self.clock.observe(now);
        self.in_flight_slot(index)?;
        if let Some(candidate) = self.candidates.get_mut(index) {
            candidate.state = AttemptState::Failed {
                class,
                settled: false,
            };
        }
        self.needs_settle = true;
        self.last_error = Some(class);
        self.failed_since_last_start = true;
        self.stats.attempts_failed = self.stats.attempts_failed.saturating_add(1);
        log_debug!("eyeballs: attempt {} failed: {}", index, class);
        Ok(())
    }

    /// Give up the race (the flow it was for went away): every attempt in flight is cancelled.
    /// No effect once the race is won, failed or aborted; after [`Action::Connected`] the
    /// winner belongs to the host.
    pub fn on_abort(&mut self, now: Instant) {
        self.clock.observe(now);
        if self.is_running() {
            self.outcome = Outcome::Aborted;
            let cancelled = self.cancel_in_flight();
            log_trace!("eyeballs: cancelling {} attempts", cancelled);
            log_debug!("eyeballs: race aborted");
        }
    }

    /// When the race next needs [`HappyEyeballs::handle_timeout`] and a poll: the next attempt
    /// start, the end of the Resolution Delay or of the budget wait, or an attempt timeout.
    /// `None` when nothing is timed (the race waits for the host's input or is over).
    #[must_use = "arm a timer for this instant"]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.is_running() {
            return None;
        }
        // A race waits for budget only while it holds no attempt, so the end of its wait, when
        // it fails, is always armed and fires once.
        let mut earliest = match self.budget_wait_since {
            Some(since) => Some(since.saturating_add_micros(self.config.budget_wait_micros)),
            None => self.next_start_at(),
        };
        if self.config.attempt_timeout_micros > 0 {
            for candidate in self.candidates() {
                if let AttemptState::InFlight { started_at } = candidate.state {
                    let deadline =
                        started_at.saturating_add_micros(self.config.attempt_timeout_micros);
                    earliest = Some(earliest.map_or(deadline, |e| e.min(deadline)));
                }
            }
        }
        earliest
    }

    /// Apply the timers due at `now`: attempt timeouts (the attempt is cancelled and counts as
    /// failed with [`ErrorClass::TimedOut`]); attempt starts and the budget wait are applied by
    /// the next [`HappyEyeballs::poll_action`]. Idempotent.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.clock.observe(now);
        let timeout = self.config.attempt_timeout_micros;
        if timeout == 0 || !self.is_running() {
            return;
        }
        let mut timed_out = 0u32;
        for candidate in self.candidates.iter_mut() {
            if let AttemptState::InFlight { started_at } = candidate.state
                && now.micros_since(started_at) >= timeout
            {
                candidate.state = AttemptState::CancelPending;
                timed_out = timed_out.saturating_add(1);
            }
        }
        if timed_out > 0 {
            self.last_error = Some(ErrorClass::TimedOut);
            self.failed_since_last_start = true;
            self.stats.attempts_timed_out = self.stats.attempts_timed_out.saturating_add(timed_out);
            log_debug!("eyeballs: {} attempts timed out", timed_out);
        }
    }

    /// The next action for the host, or `None` when there is nothing to do until the next input
    /// or timer. Settles the budget for attempts that ended, and asks `budget` before starting
    /// an attempt. Always pass the same budget.
    #[must_use = "an action tells the host to open, close or use a socket"]
    pub fn poll_action(&mut self, budget: &mut ConnectionBudget) -> Option<Action> {
        let now = self.clock.latest();
        self.settle(budget, now);
        if let Outcome::Won {
            index,
            reported: false,
        } = self.outcome
        {
            self.outcome = Outcome::Won {
                index,
                reported: true,
            };
            return Some(Action::Connected { index });
        }
        if let Some(index) = self
            .candidates()
            .iter()
            .position(|c| c.state == AttemptState::CancelPending)
        {
            if let Some(candidate) = self.candidates.get_mut(index) {
                candidate.state = AttemptState::Cancelled;
            }
            if budget.on_attempt_cancelled(now).is_err() {
                self.budget_mismatch();
            }
            self.stats.attempts_cancelled = self.stats.attempts_cancelled.saturating_add(1);
            return Some(Action::CancelAttempt { index });
        }
        if !self.is_running() {
            return None;
        }
        if let Some(index) = self.due_candidate(now) {
            match budget.try_start_attempt(now) {
                Ok(()) => return Some(self.start(index, now)),
                Err(refusal) => {
                    if self.budget_wait_since.is_none() {
                        self.stats.budget_refusals = self.stats.budget_refusals.saturating_add(1);
                    }
                    if self.trade_oldest_in_flight() {
                        // The cancel releases the attempt's budget on the next poll, which
                        // then starts the due candidate with it.
                        return self.poll_action(budget);
                    }
                    if self.budget_wait_since.is_none() {
                        self.budget_wait_since = Some(now);
                        log_warn!("eyeballs: waiting for budget: {}", refusal);
                    }
                    self.last_refusal = Some(refusal);
                }
            }
        }
        let reason = self.failure(now)?;
        self.outcome = Outcome::Failed { reason };
        log_debug!("eyeballs: race failed: {}", reason);
        Some(Action::Failed { reason })
    }

    /// Where the race stands.
    pub fn status(&self) -> RaceStatus {
        match self.outcome {
            Outcome::Won { index, .. } => RaceStatus::Connected { index },
            Outcome::Failed { reason } => RaceStatus::Failed { reason },
            Outcome::Aborted => RaceStatus::Aborted,
            Outcome::Running => match (self.budget_wait_since, self.last_refusal) {
                (Some(_), Some(refusal)) => RaceStatus::WaitingForBudget { refusal },
                _ if self.last_start.is_some() => RaceStatus::Connecting,
                _ => RaceStatus::Resolving,
            },
        }
    }

    /// Whether an attempt is due but the budget refused it: poll this race again when budget
    /// is released.
    pub fn is_waiting_for_budget(&self) -> bool {
        self.is_running() && self.budget_wait_since.is_some()
    }

    /// Whether the race is over and drained: no action will come out of it and it holds no
    /// budget (the winner's connection is the host's). It may then be dropped or replaced.
    pub fn is_finished(&self) -> bool {
        !self.is_running()
            && !self.needs_settle
            && !matches!(
                self.outcome,
                Outcome::Won {
                    reported: false,
                    ..
                }
            )
            && !self
                .candidates()
                .iter()
                .any(|c| c.state == AttemptState::CancelPending)
    }

    /// The address of candidate `index`, or `None` past the candidates received.
    pub fn candidate(&self, index: usize) -> Option<SocketAddr> {
        self.candidates().get(index).map(|c| c.addr)
    }

    /// How many candidates the race holds.
    pub fn candidate_count(&self) -> usize {
        self.candidates.len()
    }

    /// Attempts started and not yet ended (including those whose cancellation is pending).
    pub fn attempts_in_flight(&self) -> usize {
        self.candidates()
            .iter()
            .filter(|c| {
                matches!(
                    c.state,
                    AttemptState::InFlight { .. } | AttemptState::CancelPending
                )
            })
            .count()
    }

    /// The configuration the race was built with.
    pub fn config(&self) -> &EyeballsConfig {
        &self.config
    }

    /// Counters of this race.
    pub fn stats(&self) -> EyeballsStats {
        self.stats
    }

    fn is_running(&self) -> bool {
        matches!(self.outcome, Outcome::Running)
    }

    fn candidates(&self) -> &[Candidate] {
        &self.candidates
    }

    fn family(&self, family: AddressFamily) -> &FamilyResolution {
        match family {
            AddressFamily::Ipv6 => &self.ipv6,
            AddressFamily::Ipv4 => &self.ipv4,
        }
    }

    fn family_mut(&mut self, family: AddressFamily) -> &mut FamilyResolution {
        match family {
            AddressFamily::Ipv6 => &mut self.ipv6,
            AddressFamily::Ipv4 => &mut self.ipv4,
        }
    }

    fn resolution_complete(&self) -> bool {
        self.resolution_done || (self.ipv6.answered_at.is_some() && self.ipv4.answered_at.is_some())
    }

    fn any_in_flight(&self) -> bool {
        self.attempts_in_flight() > 0
    }

    /// Add `addr` as a candidate; false if it is a duplicate or was dropped.
    fn add_candidate(&mut self, addr: SocketAddr, family: AddressFamily) -> bool {
        if self.candidates().iter().any(|c| c.addr == addr) {
            return false;
        }
        let rank = self.family(family).count;
        let fresh = Candidate {
            addr,
            family,
            rank,
            state: AttemptState::Unstarted,
        };
        if self.candidates.push(fresh).is_ok() {
            self.family_mut(family).count += 1;
            return true;
        }
        // Full: make room if this family has fewer candidates than the other, by dropping the
        // other family's last candidate when it is untried.
        let other = family.other();
        let other_count = self.family(other).count;
        if rank < other_count {
            let last_rank = other_count - 1;
            let victim = self
                .candidates
                .iter_mut()
                .find(|c| c.family == other && c.rank == last_rank);
            if let Some(victim) = victim
                && victim.state == AttemptState::Unstarted
            {
                *victim = fresh;
                self.family_mut(other).count -= 1;
                self.family_mut(family).count += 1;
                self.stats.candidates_dropped = self.stats.candidates_dropped.saturating_add(1);
                return true;
            }
        }
        self.stats.candidates_dropped = self.stats.candidates_dropped.saturating_add(1);
        log_warn!("eyeballs: candidate table full, address dropped");
        false
    }

    /// The index of attempt `index` if it is in flight.
    fn in_flight_slot(&self, index: usize) -> Result<(), AttemptError> {
        match self.candidates().get(index).map(|c| c.state) {
            Some(AttemptState::InFlight { .. }) => Ok(()),
            None | Some(AttemptState::Unstarted) => Err(AttemptError::UnknownAttempt { index }),
            Some(_) => Err(AttemptError::NotInFlight { index }),
        }
    }

    /// Mark every attempt in flight for cancellation; returns how many.
    fn cancel_in_flight(&mut self) -> u32 {
        let mut cancelled = 0u32;
        for candidate in self.candidates.iter_mut() {
            if matches!(candidate.state, AttemptState::InFlight { .. }) {
                candidate.state = AttemptState::CancelPending;
                cancelled = cancelled.saturating_add(1);
            }
        }
        cancelled
    }

    /// Report attempts that connected or failed to the budget, exactly once each.
    fn settle(&mut self, budget: &mut ConnectionBudget, now: Instant) {
        if !self.needs_settle {
            return;
        }
        self.needs_settle = false;
        let mut mismatches = 0u32;
        for candidate in self.candidates.iter_mut() {
            let result = match candidate.state {
                AttemptState::Connected { settled: false } => {
                    candidate.state = AttemptState::Connected { settled: true };
                    budget.on_attempt_connected(now)
                }
                AttemptState::Failed {
                    class,
                    settled: false,
                } => {
                    candidate.state = AttemptState::Failed {
                        class,
                        settled: true,
                    };
                    budget.on_attempt_failed(now, class)
                }
                _ => Ok(()),
            };
            if result.is_err() {
                mismatches = mismatches.saturating_add(1);
            }
        }
        for _ in 0..mismatches {
            self.budget_mismatch();
        }
    }

    fn budget_mismatch(&mut self) {
        self.stats.budget_mismatches = self.stats.budget_mismatches.saturating_add(1);
        log_warn!(
            "eyeballs: budget had no attempt to release; is the race polled with another budget?"
        );
    }

    /// The untried candidate that comes first in the interleaved order.
    fn next_candidate(&self) -> Option<usize> {
        let preferred = self.config.preferred_family;
        let preferred_count = self.family(preferred).count;
        let other_count = self.family(preferred.other()).count;
        let first = usize::from(self.config.first_address_family_count);
        self.candidates()
            .iter()
            .enumerate()
            .filter(|(_, c)| c.state == AttemptState::Unstarted)
            .min_by_key(|(_, c)| {
                interleaved_position(
                    c.family == preferred,
                    c.rank,
                    preferred_count,
                    other_count,
                    first,
                )
            })
            .map(|(index, _)| index)
    }

    /// When the next candidate may start, or `None` if there is none.
    fn next_start_at(&self) -> Option<Instant> {
        if !self.is_running() {
            return None;
        }
        self.next_candidate()?;
        let latest = self.clock.latest();
        match self.last_start {
            None => {
                if self
                    .family(self.config.preferred_family)
                    .answered_at
                    .is_some()
                    || self.resolution_complete()
                {
                    Some(latest)
                } else {
                    // Only the other family has answered: the Resolution Delay runs.
                    let other = self.family(self.config.preferred_family.other());
                    other
                        .answered_at
                        .map(|at| at.saturating_add_micros(self.config.resolution_delay_micros))
                }
            }
            Some(last) => {
                let spacing = last.saturating_add_micros(MIN_ATTEMPT_SPACING_MICROS);
                if self.failed_since_last_start || !self.any_in_flight() {
                    Some(spacing)
                } else {
                    Some(last.saturating_add_micros(self.config.connection_attempt_delay_micros))
                }
            }
        }
    }

    fn due_candidate(&self, now: Instant) -> Option<usize> {
        let at = self.next_start_at()?;
        if at <= now {
            self.next_candidate()
        } else {
            None
        }
    }

    fn start(&mut self, index: usize, now: Instant) -> Action {
        let mut addr = SocketAddr::from(([0, 0, 0, 0], 0));
        if let Some(candidate) = self.candidates.get_mut(index) {
            candidate.state = AttemptState::InFlight { started_at: now };
            addr = candidate.addr;
        }
        self.last_start = Some(now);
        self.failed_since_last_start = false;
        self.budget_wait_since = None;
        self.last_refusal = None;
        self.stats.attempts_started = self.stats.attempts_started.saturating_add(1);
        log_debug!("eyeballs: starting attempt {}", index);
        Action::StartAttempt { index, addr }
    }

    /// The budget refused a due candidate: give up on the oldest attempt in flight so its budget
    /// starts the candidate (see the module docs). Returns whether an attempt was traded.
    fn trade_oldest_in_flight(&mut self) -> bool {
        let oldest = self
            .candidates
            .iter_mut()
            .filter_map(|candidate| match candidate.state {
                AttemptState::InFlight { started_at } => Some((started_at, candidate)),
                _ => None,
            })
            .min_by_key(|(started_at, _)| *started_at);
        let Some((_, candidate)) = oldest else {
            return false;
        };
        candidate.state = AttemptState::CancelPending;
        self.failed_since_last_start = true;
        self.stats.attempts_traded = self.stats.attempts_traded.saturating_add(1);
        log_debug!("eyeballs: budget refused, trading the oldest attempt for the due one");
        true
    }

    /// Whether the race has failed by `now`, and why.
    fn failure(&self, now: Instant) -> Option<RaceFailure> {
        if self.any_in_flight() || self.needs_settle {
            return None;
        }
        if let (Some(since), Some(refusal)) = (self.budget_wait_since, self.last_refusal) {
            if now.micros_since(since) >= self.config.budget_wait_micros {
                return Some(RaceFailure::NoBudget { refusal });
            }
            return None;
        }
        if self.next_candidate().is_some() || !self.resolution_complete() {
            return None;
        }
        Some(match self.last_error {
            Some(last) => RaceFailure::AllAttemptsFailed { last },
            None => RaceFailure::NoAddresses,
        })
    }
}

/// How far one family's resolution has come.
#[derive(Clone, Copy, Debug, Default)]
struct FamilyResolution {
    /// When the family's first answer (or failure) arrived.
    answered_at: Option<Instant>,
    /// Candidates of this family in the table (their ranks are `0..count`).
    count: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Running,
    Won { index: usize, reported: bool },
    Failed { reason: RaceFailure },
    Aborted,
}

#[derive(Clone, Copy, Debug)]
struct Candidate {
    addr: SocketAddr,
    family: AddressFamily,
    /// Index within its family, in the order received.
    rank: usize,
    state: AttemptState,
}

/// The life of one attempt. Every attempt that leaves `Unstarted` ends exactly once: in
/// `Connected` or `Failed` (reported to the budget when `settled` turns true) or in `Cancelled`
/// (reported when it leaves `CancelPending`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AttemptState {
    Unstarted,
    InFlight { started_at: Instant },
    Connected { settled: bool },
    Failed { class: ErrorClass, settled: bool },
    CancelPending,
    Cancelled,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::BudgetConfig;
    use proptest::prelude::*;

    type Race = HappyEyeballs<8>;

    fn ms(millis: u64) -> Instant {
        Instant::from_millis(millis)
    }

    fn v6(last: u16) -> SocketAddr {
        SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, last], 443))
    }

    fn v4(last: u8) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, last], 443))
    }

    fn budget() -> ConnectionBudget {
        ConnectionBudget::new(BudgetConfig::default()).unwrap()
    }

    fn drain<const N: usize>(
        race: &mut HappyEyeballs<N>,
        budget: &mut ConnectionBudget,
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        while let Some(action) = race.poll_action(budget) {
            actions.push(action);
            assert!(actions.len() < 100, "poll_action must drain");
        }
        actions
    }

    #[test]
    fn a_config_out_of_range_is_refused_not_clamped() {
        let base = EyeballsConfig::default();
        let refused = [
            (
                EyeballsConfig {
                    first_address_family_count: 0,
                    ..base
                },
                EyeballsConfigError::ZeroFirstAddressFamilyCount,
            ),
            (
                EyeballsConfig {
                    resolution_delay_micros: MAX_RESOLUTION_DELAY_MICROS + 1,
                    ..base
                },
                EyeballsConfigError::ResolutionDelayTooLong,
            ),
            (
                EyeballsConfig {
                    connection_attempt_delay_micros: MIN_CONNECTION_ATTEMPT_DELAY_MICROS - 1,
                    ..base
                },
                EyeballsConfigError::AttemptDelayOutOfRange,
            ),
            (
                EyeballsConfig {
                    connection_attempt_delay_micros: MAX_CONNECTION_ATTEMPT_DELAY_MICROS + 1,
                    ..base
                },
                EyeballsConfigError::AttemptDelayOutOfRange,
            ),
        ];
        for (config, error) in refused {
            assert_eq!(Race::new(config, ms(0)).err(), Some(error));
        }
        let edges = EyeballsConfig {
            resolution_delay_micros: MAX_RESOLUTION_DELAY_MICROS,
            connection_attempt_delay_micros: MIN_CONNECTION_ATTEMPT_DELAY_MICROS,
            ..base
        };
        assert_eq!(Race::new(edges, ms(0)).unwrap().config(), &edges);
        let slow = EyeballsConfig {
            connection_attempt_delay_micros: MAX_CONNECTION_ATTEMPT_DELAY_MICROS,
            ..EyeballsConfig::default()
        };
        let race = Race::new(slow, ms(0)).unwrap();
        assert_eq!(race.config().connection_attempt_delay_micros, 2_000_000);
        assert_eq!(Race::FOOTPRINT, core::mem::size_of::<Race>());
    }

    #[test]
    fn rejected_inputs_change_nothing() {
        let mut budget = budget();
        let mut race = Race::new(EyeballsConfig::default(), ms(0)).unwrap();
        assert_eq!(
            race.on_resolved(ms(0), AddressFamily::Ipv6, &[v6(1), v4(1)]),
            Err(ResolveError::FamilyMismatch { position: 1 })
        );
        assert_eq!(race.candidate_count(), 0);
        assert_eq!(race.poll_timeout(), None, "a rejected answer is no answer");
        assert_eq!(
            race.on_attempt_failed(ms(0), 0, ErrorClass::Refused),
            Err(AttemptError::UnknownAttempt { index: 0 })
        );
        race.on_resolved(ms(0), AddressFamily::Ipv6, &[v6(1), v6(1)])
            .unwrap();
        assert_eq!(race.candidate_count(), 1, "duplicates are ignored");
        assert_eq!(
            race.on_attempt_connected(ms(0), 0),
            Err(AttemptError::UnknownAttempt { index: 0 }),
            "not started yet"
        );
        assert_eq!(
            drain(&mut race, &mut budget),
            [Action::StartAttempt {
                index: 0,
                addr: v6(1)
            }]
        );
        race.on_attempt_failed(ms(5), 0, ErrorClass::Refused)
            .unwrap();
        assert_eq!(
            race.on_attempt_failed(ms(5), 0, ErrorClass::Refused),
            Err(AttemptError::NotInFlight { index: 0 })
        );
        assert_eq!(race.stats().attempts_failed, 1);
    }

    #[test]
    fn second_connect_loses_and_is_cancelled() {
        let mut budget = budget();
        let mut race = Race::new(EyeballsConfig::default(), ms(0)).unwrap();
        race.on_resolved(ms(0), AddressFamily::Ipv6, &[v6(1)])
            .unwrap();
        race.on_resolved(ms(0), AddressFamily::Ipv4, &[v4(1)])
            .unwrap();
        drain(&mut race, &mut budget);
        race.handle_timeout(ms(250));
        drain(&mut race, &mut budget);
        assert_eq!(budget.attempts_in_flight(), 2);
        race.on_attempt_connected(ms(260), 1).unwrap();
        assert_eq!(
            race.on_attempt_connected(ms(260), 0),
            Err(AttemptError::NotInFlight { index: 0 })
        );
        assert_eq!(
            drain(&mut race, &mut budget),
            [
                Action::Connected { index: 1 },
                Action::CancelAttempt { index: 0 }
            ]
        );
        assert_eq!(budget.attempts_in_flight(), 0);
        assert_eq!(budget.open_connections(), 1);
        assert_eq!(race.stats().attempts_also_ran, 1);
        assert!(race.is_finished());
        assert_eq!(race.status(), RaceStatus::Connected { index: 1 });
        assert_eq!(
            race.on_resolved(ms(300), AddressFamily::Ipv6, &[v6(2)]),
            Err(ResolveError::RaceFinished)
        );
        assert_eq!(race.poll_timeout(), None);
    }

    #[test]
    fn full_table_makes_room_for_the_smaller_family() {
        let mut race = HappyEyeballs::<4>::new(EyeballsConfig::default(), ms(0)).unwrap();
        let a: Vec<SocketAddr> = (1..=6).map(v4).collect();
        assert_eq!(race.on_resolved(ms(0), AddressFamily::Ipv4, &a), Ok(4));
        assert_eq!(race.stats().candidates_dropped, 2);
        let aaaa = [v6(1), v6(2), v6(3)];
        assert_eq!(race.on_resolved(ms(10), AddressFamily::Ipv6, &aaaa), Ok(2));
        let held: Vec<SocketAddr> = (0..4).filter_map(|i| race.candidate(i)).collect();
        assert!(held.contains(&v6(1)) && held.contains(&v6(2)));
        assert!(held.contains(&v4(1)) && held.contains(&v4(2)));
        assert_eq!(race.stats().candidates_dropped, 5);
        let mut budget = budget();
        let first = drain(&mut race, &mut budget);
        assert_eq!(
            first,
            [Action::StartAttempt {
                index: 3,
                addr: v6(1)
            }],
            "IPv6 first, in the slot a dropped IPv4 candidate left"
        );
    }

    #[test]
    fn attempt_timeout_cancels_and_moves_on() {
        let mut budget = budget();
        let config = EyeballsConfig {
            attempt_timeout_micros: 100_000,
            ..EyeballsConfig::default()
        };
        let mut race = Race::new(config, ms(0)).unwrap();
        race.on_resolved(ms(0), AddressFamily::Ipv6, &[v6(1)])
            .unwrap();
        race.on_resolution_done(ms(0)).unwrap();
        drain(&mut race, &mut budget);
        assert_eq!(race.poll_timeout(), Some(ms(100)));
        race.handle_timeout(ms(100));
        race.handle_timeout(ms(100));
        assert_eq!(
            drain(&mut race, &mut budget),
            [
                Action::CancelAttempt { index: 0 },
                Action::Failed {
                    reason: RaceFailure::AllAttemptsFailed {
                        last: ErrorClass::TimedOut
                    }
                }
            ]
        );
        assert_eq!(race.stats().attempts_timed_out, 1);
        assert_eq!(budget.attempts_in_flight(), 0);
    }

    #[test]
    fn abort_cancels_every_attempt_once() {
        let mut budget = budget();
        let mut race = Race::new(EyeballsConfig::default(), ms(0)).unwrap();
        race.on_resolved(ms(0), AddressFamily::Ipv6, &[v6(1), v6(2)])
            .unwrap();
        drain(&mut race, &mut budget);
        race.handle_timeout(ms(250));
        drain(&mut race, &mut budget);
        assert!(!race.is_finished());
        race.on_abort(ms(300));
        race.on_abort(ms(300));
        assert_eq!(
            drain(&mut race, &mut budget),
            [
                Action::CancelAttempt { index: 0 },
                Action::CancelAttempt { index: 1 }
            ]
        );
        assert!(race.is_finished());
        assert_eq!(race.status(), RaceStatus::Aborted);
        assert_eq!(race.stats().attempts_also_ran, 0);
        assert_eq!(race.stats().attempts_cancelled, 2);
        assert_eq!(budget.attempts_in_flight(), 0);
    }

    #[test]
    fn no_budget_fails_at_once_when_wait_is_zero() {
        let mut budget = ConnectionBudget::new(BudgetConfig {
            max_attempts_in_flight: 1,
            ..BudgetConfig::default()
        })
        .unwrap();
        budget.try_start_attempt(ms(0)).unwrap();
        let config = EyeballsConfig {
            budget_wait_micros: 0,
            ..EyeballsConfig::default()
        };
        let mut race = Race::new(config, ms(0)).unwrap();
        race.on_resolved(ms(0), AddressFamily::Ipv6, &[v6(1)])
            .unwrap();
        let refusal = BudgetRefusal::AttemptsInFlight {
            in_flight: 1,
            limit: 1,
            backing_off: false,
        };
        assert_eq!(
            drain(&mut race, &mut budget),
            [Action::Failed {
                reason: RaceFailure::NoBudget { refusal }
            }]
        );
        assert!(race.is_finished());
        assert_eq!(budget.attempts_in_flight(), 1, "nothing was counted");
    }

    #[test]
    fn waiting_for_budget_is_bounded_and_resumes() {
        let mut budget = ConnectionBudget::new(BudgetConfig {
            max_attempts_in_flight: 1,
            ..BudgetConfig::default()
        })
        .unwrap();
        budget.try_start_attempt(ms(0)).unwrap();
        let mut race = Race::new(EyeballsConfig::default(), ms(0)).unwrap();
        race.on_resolved(ms(0), AddressFamily::Ipv6, &[v6(1)])
            .unwrap();
        assert_eq!(drain(&mut race, &mut budget), []);
        assert!(race.is_waiting_for_budget());
        assert!(matches!(race.status(), RaceStatus::WaitingForBudget { .. }));
        assert_eq!(race.poll_timeout(), Some(ms(1_000)));
        // Budget comes back before the deadline: the race proceeds.
        budget.on_attempt_cancelled(ms(500)).unwrap();
        race.handle_timeout(ms(500));
        assert_eq!(
            drain(&mut race, &mut budget),
            [Action::StartAttempt {
                index: 0,
                addr: v6(1)
            }]
        );
        assert!(!race.is_waiting_for_budget());
        assert_eq!(race.status(), RaceStatus::Connecting);

        // A second race never gets budget: it fails at its deadline.
        let mut starved = Race::new(EyeballsConfig::default(), ms(500)).unwrap();
        starved
            .on_resolved(ms(500), AddressFamily::Ipv4, &[v4(1)])
            .unwrap();
        starved.on_resolution_done(ms(500)).unwrap();
        assert_eq!(drain(&mut starved, &mut budget), []);
        starved.handle_timeout(ms(1_499));
        assert_eq!(drain(&mut starved, &mut budget), []);
        assert_eq!(starved.poll_timeout(), Some(ms(1_500)));
        starved.handle_timeout(ms(1_500));
        assert!(matches!(
            drain(&mut starved, &mut budget).as_slice(),
            [Action::Failed {
                reason: RaceFailure::NoBudget { .. }
            }]
        ));
    }

    /// Found by a host written from the docs: with one attempt allowed in flight, a race whose
    /// IPv6 attempt never answers waited for budget behind its own attempt forever (until the
    /// OS's 75 s connect timeout), with no timer armed. It now trades that attempt for the IPv4
    /// candidate as soon as the budget refuses it.
    #[test]
    fn a_race_refused_budget_trades_its_own_attempt_for_the_due_candidate() {
        let mut budget = ConnectionBudget::new(BudgetConfig {
            max_attempts_in_flight: 1,
            ..BudgetConfig::default()
        })
        .unwrap();
        let mut race = Race::new(EyeballsConfig::default(), ms(0)).unwrap();
        race.on_resolved(ms(0), AddressFamily::Ipv6, &[v6(1)])
            .unwrap();
        race.on_resolved(ms(0), AddressFamily::Ipv4, &[v4(1)])
            .unwrap();
        race.on_resolution_done(ms(0)).unwrap();
        let first = drain(&mut race, &mut budget);
        assert!(matches!(
            first.as_slice(),
            [Action::StartAttempt { index: 0, .. }]
        ));
        // 250 ms: IPv4 is due, but the only attempt slot is the race's own IPv6 attempt.
        assert_eq!(race.poll_timeout(), Some(ms(250)));
        race.handle_timeout(ms(250));
        assert_eq!(
            drain(&mut race, &mut budget),
            [
                Action::CancelAttempt { index: 0 },
                Action::StartAttempt {
                    index: 1,
                    addr: v4(1)
                }
            ]
        );
        assert_eq!(race.status(), RaceStatus::Connecting);
        assert_eq!(race.stats().attempts_traded, 1);
        assert_eq!(
            budget.attempts_in_flight(),
            1,
            "the traded attempt's budget was reused"
        );
        assert_eq!(race.stats().budget_refusals, 1);
        race.on_attempt_connected(ms(270), 1).unwrap();
        assert_eq!(
            drain(&mut race, &mut budget),
            [Action::Connected { index: 1 }]
        );
    }

    #[test]
    fn resolution_failure_of_both_families_fails_without_addresses() {
        let mut budget = budget();
        let mut race = Race::new(EyeballsConfig::default(), ms(0)).unwrap();
        race.on_resolution_failed(ms(0), AddressFamily::Ipv6)
            .unwrap();
        assert_eq!(drain(&mut race, &mut budget), []);
        race.on_resolved(ms(3), AddressFamily::Ipv4, &[]).unwrap();
        assert_eq!(
            drain(&mut race, &mut budget),
            [Action::Failed {
                reason: RaceFailure::NoAddresses
            }]
        );
        assert_eq!(
            RaceFailure::NoAddresses.to_string(),
            "name resolution gave no usable address"
        );
    }

    #[test]
    fn failure_starts_next_after_minimum_spacing() {
        let mut budget = budget();
        let mut race = Race::new(EyeballsConfig::default(), ms(100)).unwrap();
        race.on_resolved(ms(100), AddressFamily::Ipv6, &[v6(1), v6(2)])
            .unwrap();
        drain(&mut race, &mut budget);
        race.on_attempt_failed(ms(102), 0, ErrorClass::Refused)
            .unwrap();
        assert_eq!(drain(&mut race, &mut budget), []);
        assert_eq!(race.poll_timeout(), Some(ms(110)));
        // Time going backwards is clamped, not trusted.
        race.handle_timeout(ms(50));
        assert_eq!(drain(&mut race, &mut budget), []);
        race.handle_timeout(ms(110));
        assert_eq!(
            drain(&mut race, &mut budget),
            [Action::StartAttempt {
                index: 1,
                addr: v6(2)
            }]
        );
    }

    fn model_order(aaaa: &[SocketAddr], a: &[SocketAddr], first: usize) -> Vec<SocketAddr> {
        let mut v6: std::collections::VecDeque<_> = aaaa.iter().copied().collect();
        let mut v4: std::collections::VecDeque<_> = a.iter().copied().collect();
        let mut order: Vec<SocketAddr> = Vec::new();
        for _ in 0..first.max(1) {
            order.extend(v6.pop_front());
        }
        while !v6.is_empty() || !v4.is_empty() {
            order.extend(v4.pop_front());
            order.extend(v6.pop_front());
        }
        order
    }

    proptest! {

        #![proptest_config(crate::proptest_config::default_cases())]

        /// Differential test: with every attempt failing at once, attempts start in the order
        /// a plain interleaved list gives, then the race fails with the last class.
        #[test]
        fn start_order_matches_interleaved_model(
            aaaa_count in 0u16..5,
            a_count in 0u8..5,
            first in 1u8..4,
            a_first in any::<bool>(),
        ) {
            let aaaa: Vec<SocketAddr> = (1..=aaaa_count).map(v6).collect();
            let a: Vec<SocketAddr> = (1..=a_count).map(v4).collect();
            let config = EyeballsConfig {
                first_address_family_count: first,
                ..EyeballsConfig::default()
            };
            let mut race = Race::new(config, ms(0)).unwrap();
            let mut budget = budget();
            if a_first {
                race.on_resolved(ms(0), AddressFamily::Ipv4, &a).unwrap();
                race.on_resolved(ms(0), AddressFamily::Ipv6, &aaaa).unwrap();
            } else {
                race.on_resolved(ms(0), AddressFamily::Ipv6, &aaaa).unwrap();
                race.on_resolved(ms(0), AddressFamily::Ipv4, &a).unwrap();
            }
            let mut started = Vec::new();
            let mut failed = None;
            let mut now = 0;
            for _ in 0..50 {
                for action in drain(&mut race, &mut budget) {
                    match action {
                        Action::StartAttempt { index, addr } => {
                            started.push(addr);
                            race.on_attempt_failed(ms(now), index, ErrorClass::Unreachable).unwrap();
                        }
                        Action::Failed { reason } => failed = Some(reason),
                        other => prop_assert!(false, "unexpected {:?}", other),
                    }
                }
                if failed.is_some() {
                    break;
                }
                now += 10;
                race.handle_timeout(ms(now));
            }
            prop_assert_eq!(started, model_order(&aaaa, &a, usize::from(first)));
            let expected = if aaaa_count + u16::from(a_count) == 0 {
                RaceFailure::NoAddresses
            } else {
                RaceFailure::AllAttemptsFailed { last: ErrorClass::Unreachable }
            };
            prop_assert_eq!(failed, Some(expected));
            prop_assert_eq!(budget.attempts_in_flight(), 0);
            prop_assert!(race.is_finished());
        }
    }
}
