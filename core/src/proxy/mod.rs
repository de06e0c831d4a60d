//! The proxy engine: flows, the connection budget and Happy Eyeballs races behind one loop.
//!
//! A proxy host (an `NEAppProxyProvider`, an `NETransparentProxyProvider`, a Linux splice
//! proxy) feeds [`ProxyEngine`] what happens (a new flow, bytes read and written, DNS answers,
//! connect outcomes, closes, the time) and drains one queue of [`ProxyEvent`]s telling it what
//! to do (close a flow, resume a read, open or close an attempt's socket, use the winner, fail
//! a flow), then arms one timer. The engine owns the [`FlowGovernor`], the
//! [`ConnectionBudget`] and a fixed table of races, so the three always agree:
//!
//! - **Admission** ([`ProxyEngine::on_new_flow`]) asks the caps, the fairness rule and the
//!   budget. A full attempt limit refuses at once with [`RejectReason::ConnectionBudget`]; a
//!   full connection limit is handled like a full table (an app below its fair share may evict
//!   a flow of the heaviest app, if that flow holds a connection its close gives back).
//! - **Connect**: a host that connects with BSD sockets feeds the flow's DNS answers
//!   ([`ProxyEngine::on_resolved`]); the first answer starts a race for the flow, which opens
//!   attempts under the budget ([`ProxyEvent::StartAttempt`]), cancels losers
//!   ([`ProxyEvent::CancelAttempt`]) and establishes the flow with the winner
//!   ([`ProxyEvent::Established`]) or fails it ([`ProxyEvent::ConnectFailed`]). A host whose
//!   system connects for it (Network framework) reports [`ProxyEngine::on_connecting`],
//!   [`ProxyEngine::on_connected`] or [`ProxyEngine::on_connect_failed`] instead.
//! - **Relay**: bytes read and completed per side ([`ProxyEngine::on_local_read`] and the
//!   like) pause reads at the watermarks ([`ProxyEngine::can_read`]) and resume them with
//!   [`ProxyEvent::ResumeRead`].
//! - **Close**: the governor's closes (eviction, idle and connect timeouts) come out as
//!   [`ProxyEvent::CloseFlow`]; when the host reports a flow closed
//!   ([`ProxyEngine::on_closed`]), its race is aborted and the connection it held goes back to
//!   the budget, exactly once.
//!
//! Invariants, checked by the tests against a host that drains after every input: attempts in
//! flight never exceed the budget's limit; every started attempt ends once (won, failed or
//! cancelled); every admitted flow gets exactly one outcome; the budget's open connections equal
//! the flows established by races and not yet closed (plus the host's own, opened with
//! [`ProxyEngine::try_open_connection`]); a race never outlives its drain.
//!
//! ## Drain contract
//!
//! After any input (`on_*`, [`ProxyEngine::handle_timeout`]), call
//! [`ProxyEngine::poll_event`] until it returns `None`, then arm one timer for
//! [`ProxyEngine::poll_timeout`]. Events live in the flow table and the race table (flags and
//! intrusive queues), so they cannot overflow, however late the host drains.
//!
//! ## Cost
//!
//! Admission, close, relay accounting and every per-flow input are O(1) (a close that resumes
//! an app's paused reads visits that app's flows once). [`ProxyEngine::poll_timeout`] and
//! [`ProxyEngine::handle_timeout`] visit the race table, and a budget release while races wait
//! for budget visits it once; none of them depends on the number of flows.

mod event;
mod races;
#[cfg(test)]
mod tests;

use core::net::SocketAddr;

pub use event::{ProxyConfigError, ProxyError, ProxyEvent, Side};
pub use races::RaceSlot;

use crate::budget::{BudgetConfig, BudgetConfigError, BudgetError, BudgetRefusal, BudgetStats};
use crate::error_class::ErrorClass;
use crate::eyeballs::{
    Action, AddressFamily, DEFAULT_MAX_CANDIDATES, EyeballsConfig, HappyEyeballs, RaceStatus,
    ResolveError,
};
use crate::flow::{
    Admission, AppId, AppState, FlowError, FlowGovernor, FlowId, FlowInfo, FlowOutcome, FlowPolicy,
    FlowSlot, FlowState, FlowStats, FlowView, Notification,
};
use crate::fmt::{log_debug, log_warn};
use crate::memory::Pressure;
use crate::{Clock, ConnectionBudget, Instant};
use event::connectable;
use races::{Race, Races};

/// Race slots to hand an engine running with the default configuration: 128, the default
/// [`FlowPolicy::max_connecting`], so every flow admitted but not yet connected can run a
/// race.
pub const DEFAULT_RACE_SLOTS: usize = 128;

/// What the engine admits, how it connects and how much it may connect at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ProxyConfig {
    /// Caps, watermarks and timeouts of the flows.
    pub flows: FlowPolicy,
    /// The connection budget every race and the host's own connections share.
    pub budget: BudgetConfig,
    /// The parameters of every race.
    pub race: EyeballsConfig,
}

impl ProxyConfig {
    /// The documented defaults of each part. Build a configuration as
    /// `ProxyConfig { flows: FlowPolicy { max_flows: 900, ..FlowPolicy::DEFAULT },
    /// ..ProxyConfig::DEFAULT }`, so that a field added later keeps its default.
    pub const DEFAULT: ProxyConfig = ProxyConfig {
        flows: FlowPolicy::DEFAULT,
        budget: BudgetConfig::DEFAULT,
        race: EyeballsConfig::DEFAULT,
    };
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig::DEFAULT
    }
}

/// Bytes an engine with `flow_slots` flow slots and `race_slots` race slots uses: the engine
/// with its storage held out of line (slices, or boxed slices on a host with an allocator) plus
/// the slots themselves.
pub const fn proxy_engine_footprint(flow_slots: usize, race_slots: usize) -> usize {
    core::mem::size_of::<ProxyEngine<&'static mut [FlowSlot], &'static mut [RaceSlot]>>()
        .saturating_add(flow_slots.saturating_mul(core::mem::size_of::<FlowSlot>()))
        .saturating_add(race_slots.saturating_mul(core::mem::size_of::<RaceSlot>()))
}

/// Counters and occupancy of the races, in [`ProxyStats`]. Counters saturate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct RaceStats {
    /// Races in their slots now (running, or draining their cancellations).
    pub running: u32,
    /// Races started (a flow's first DNS input).
    pub started: u64,
    /// Races won: flows established by an attempt.
    pub won: u64,
    /// Races failed: flows closed with a connect failure.
    pub failed: u64,
    /// Races aborted because their flow stopped being open.
    pub aborted: u64,
    /// DNS inputs refused because every race slot was in use.
    pub no_slot: u64,
}

/// A snapshot of the engine: its flows, its budget and its races.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ProxyStats {
    /// The flow table.
    pub flows: FlowStats,
    /// The connection budget's counters.
    pub budget: BudgetStats,
    /// Connection attempts in flight now.
    pub attempts_in_flight: u32,
    /// Connections the budget counts open now (races' winners and the host's own).
    pub open_connections: u32,
    /// The budget's effective attempt limit now (lower than configured while backing off).
    pub attempt_limit: u32,
    /// The budget's effective connection limit now.
    pub connection_limit: u32,
    /// The races.
    pub races: RaceStats,
}

/// The proxy engine over caller-handed storage: `S` for the flow table, `R` for the race
/// table (arrays, slices or boxed slices). See the module documentation for what it does and
/// the drain contract.
///
/// Not safe for concurrent use: the host serialises calls (one dispatch queue, one lock).
/// Moving it between threads is fine.
///
/// ```
/// use tidegate_core::{
///     AddressFamily, Admission, AppId, DestinationKey, FlowInfo, FlowSlot, Instant, Protocol,
///     ProxyConfig, ProxyEngine, ProxyEvent, RaceSlot,
/// };
///
/// let mut flow_slots = [FlowSlot::EMPTY; 512];
/// let mut race_slots = [const { RaceSlot::EMPTY }; 8];
/// let mut proxy = ProxyEngine::new(
///     Instant::ZERO,
///     &mut flow_slots[..],
///     &mut race_slots[..],
///     ProxyConfig::DEFAULT,
/// )
/// .map_err(|_| "config")?;
/// // A TCP flow to port 443: the default class, `FlowClass::Stream`.
/// let info = FlowInfo::new(
///     AppId::from_bytes(b"com.example.browser"),
///     DestinationKey::from_bytes(b"example.com:443"),
///     Protocol::Tcp,
///     443,
/// );
/// let now = Instant::from_millis(1);
/// let Admission::Accepted { id } = proxy.on_new_flow(now, info) else {
///     return Err("refused: pass the flow on or fail it");
/// };
/// let addr = "[2001:db8::1]:443".parse().map_err(|_| "addr")?;
/// proxy.on_resolved(now, id, AddressFamily::Ipv6, &[addr]).map_err(|_| "dns")?;
/// proxy.on_resolution_done(now, id).map_err(|_| "dns")?;
/// while let Some(event) = proxy.poll_event() {
///     match event {
///         // Open a non-blocking socket to the address; here it connects at once.
///         ProxyEvent::StartAttempt { id, attempt, .. } => {
///             proxy.on_attempt_connected(now, id, attempt).map_err(|_| "attempt")?;
///         }
///         ProxyEvent::Established { .. } => {} // relay through the winner's socket
///         _ => {}
///     }
/// }
/// assert_eq!(proxy.stats().open_connections, 1);
/// proxy.on_closed(Instant::from_millis(2), id).map_err(|_| "close")?;
/// assert_eq!(proxy.stats().open_connections, 0);
/// # Ok::<(), &str>(())
/// ```
#[derive(Debug)]
pub struct ProxyEngine<S, R> {
    flows: FlowGovernor<S>,
    budget: ConnectionBudget,
    races: Races<R>,
    race_config: EyeballsConfig,
    clock: Clock,
    /// Budget may have been released since waiting races were last woken.
    budget_released: bool,
    race_stats: RaceStats,
}

impl<S, R> ProxyEngine<S, R>
where
    S: AsRef<[FlowSlot]> + AsMut<[FlowSlot]>,
    R: AsRef<[RaceSlot]> + AsMut<[RaceSlot]>,
{
    /// An engine over `flow_slots` and `race_slots`, all of which it (re)initialises.
    ///
    /// # Errors
    ///
    /// [`ProxyConfigError`] names the part of `config` that is out of range, or the race slot
    /// count; nothing is built.
    pub fn new(
        now: Instant,
        flow_slots: S,
        race_slots: R,
        config: ProxyConfig,
    ) -> Result<Self, ProxyConfigError> {
        let races = race_slots.as_ref().len();
        if races == 0 || u32::try_from(races).map_or(true, |count| count == u32::MAX) {
            return Err(ProxyConfigError::RaceSlots);
        }
        config.race.validate().map_err(ProxyConfigError::Race)?;
        let budget = ConnectionBudget::new(config.budget).map_err(ProxyConfigError::Budget)?;
        let flows =
            FlowGovernor::new(now, flow_slots, config.flows).map_err(ProxyConfigError::Flows)?;
        Ok(ProxyEngine {
            flows,
            budget,
            races: Races::new(race_slots),
            race_config: config.race,
            clock: Clock::new(now),
            budget_released: false,
            race_stats: RaceStats::default(),
        })
    }

    /// Ask to admit a new flow under the caps and the budget. See [`Admission`] for the
    /// answers; a flow evicted to admit this one also comes out of
    /// [`ProxyEngine::poll_event`] as [`ProxyEvent::CloseFlow`] (close it there). A refused
    /// flow changes nothing but the rejection counters. O(1).
    ///
    /// Flows admitted in the same instant share the room the budget had; a race that then
    /// finds none waits at most [`EyeballsConfig::budget_wait_micros`] and fails with
    /// [`RaceFailure::NoBudget`](crate::RaceFailure::NoBudget), so no flow waits unbounded.
    ///
    /// [`RejectReason::ConnectionBudget`]: crate::RejectReason::ConnectionBudget
    pub fn on_new_flow(&mut self, now: Instant, info: FlowInfo) -> Admission {
        let now = self.clock.observe(now);
        self.budget.handle_timeout(now);
        let refusal = self.budget.refusal();
        self.flows.admit_under_budget(now, info, refusal)
    }

    /// Why the budget would refuse an attempt now, or `None` if it has room. After
    /// [`ProxyEngine::on_new_flow`] refused with
    /// [`RejectReason::ConnectionBudget`](crate::RejectReason::ConnectionBudget), `None`
    /// means [`FlowPolicy::max_connecting`] refused.
    pub fn budget_refusal(&self) -> Option<BudgetRefusal> {
        self.budget.refusal()
    }

    /// The host's system started connecting flow `id` (a host that does not connect through
    /// races): opening becomes connecting.
    ///
    /// # Errors
    ///
    /// [`ProxyError::RaceRunning`] for a flow a race connects; otherwise as
    /// [`FlowGovernor::on_connecting`].
    pub fn on_connecting(&mut self, now: Instant, id: FlowId) -> Result<(), ProxyError> {
        self.without_race(id)?;
        self.flows.on_connecting(self.clock.peek(now), id)?;
        self.clock.observe(now);
        Ok(())
    }

    /// The host's system connected flow `id`: it is established. The budget does not count
    /// the connection (the system made it).
    ///
    /// # Errors
    ///
    /// [`ProxyError::RaceRunning`] for a flow a race connects; otherwise as
    /// [`FlowGovernor::on_connected`].
    pub fn on_connected(&mut self, now: Instant, id: FlowId) -> Result<(), ProxyError> {
        self.without_race(id)?;
        self.flows.on_connected(self.clock.peek(now), id)?;
        self.clock.observe(now);
        Ok(())
    }

    /// The host's system failed to connect flow `id` with `class`; the host closes the local
    /// flow and the slot is free. Returns the flow's outcome.
    ///
    /// # Errors
    ///
    /// [`ProxyError::RaceRunning`] for a flow a race connects; otherwise as
    /// [`FlowGovernor::on_connect_failed`].
    pub fn on_connect_failed(
        &mut self,
        now: Instant,
        id: FlowId,
        class: ErrorClass,
    ) -> Result<FlowOutcome, ProxyError> {
        self.without_race(id)?;
        let outcome = self
            .flows
            .on_connect_failed(self.clock.peek(now), id, class)?;
        let now = self.clock.observe(now);
        self.settle(now);
        Ok(outcome)
    }

    /// The host closed flow `id` (either side ended, or the engine asked). The slot is freed
    /// and the id becomes stale; a race still running for the flow is aborted (its attempts
    /// come out as [`ProxyEvent::CancelAttempt`]); a connection the flow held goes back to
    /// the budget. Returns the flow's one outcome, as [`FlowGovernor::on_closed`].
    ///
    /// # Errors
    ///
    /// [`ProxyError::Flow`] for an id that names no flow (closed twice, or never issued);
    /// nothing changes.
    pub fn on_closed(&mut self, now: Instant, id: FlowId) -> Result<FlowOutcome, ProxyError> {
        let (_, race) = self.flows.race_of(id)?;
        let outcome = self.flows.on_closed(self.clock.peek(now), id)?;
        let now = self.clock.observe(now);
        if let Some(race) = race {
            // The poll finds the flow gone and aborts the race.
            self.races.queue(race);
        }
        self.settle(now);
        Ok(outcome)
    }

    /// `bytes` were read from flow `id`'s local side (toward the remote). Check
    /// [`ProxyEngine::can_read`] before the next read. As [`FlowGovernor::on_local_read`].
    ///
    /// # Errors
    ///
    /// As [`FlowGovernor::on_local_read`]; nothing changes.
    pub fn on_local_read(
        &mut self,
        now: Instant,
        id: FlowId,
        bytes: u64,
    ) -> Result<(), ProxyError> {
        self.flows.on_local_read(self.clock.peek(now), id, bytes)?;
        self.clock.observe(now);
        Ok(())
    }

    /// The remote send of `bytes` of flow `id` completed. As [`FlowGovernor::on_remote_sent`].
    ///
    /// # Errors
    ///
    /// As [`FlowGovernor::on_remote_sent`]; nothing changes.
    pub fn on_remote_sent(
        &mut self,
        now: Instant,
        id: FlowId,
        bytes: u64,
    ) -> Result<(), ProxyError> {
        self.flows.on_remote_sent(self.clock.peek(now), id, bytes)?;
        self.clock.observe(now);
        Ok(())
    }

    /// `bytes` were read from flow `id`'s remote side (toward the app). As
    /// [`FlowGovernor::on_remote_read`].
    ///
    /// # Errors
    ///
    /// As [`FlowGovernor::on_remote_read`]; nothing changes.
    pub fn on_remote_read(
        &mut self,
        now: Instant,
        id: FlowId,
        bytes: u64,
    ) -> Result<(), ProxyError> {
        self.flows.on_remote_read(self.clock.peek(now), id, bytes)?;
        self.clock.observe(now);
        Ok(())
    }

    /// The local write of `bytes` of flow `id` completed. As
    /// [`FlowGovernor::on_local_written`].
    ///
    /// # Errors
    ///
    /// As [`FlowGovernor::on_local_written`]; nothing changes.
    pub fn on_local_written(
        &mut self,
        now: Instant,
        id: FlowId,
        bytes: u64,
    ) -> Result<(), ProxyError> {
        self.flows
            .on_local_written(self.clock.peek(now), id, bytes)?;
        self.clock.observe(now);
        Ok(())
    }

    /// Whether the host may read `side` of flow `id` now. `false` for an id that names no open
    /// flow. A paused side is resumed by [`ProxyEvent::ResumeRead`].
    pub fn can_read(&self, id: FlowId, side: Side) -> bool {
        match side {
            Side::Local => self.flows.can_read_local(id),
            Side::Remote => self.flows.can_read_remote(id),
        }
    }

    /// Feed (part of) flow `id`'s DNS answer of `family`, in the resolver's order, with the port
    /// to connect to; an empty `addrs` is an answer with no records. The flow's first DNS input
    /// starts its race. Returns how many addresses became candidates.
    ///
    /// # Errors
    ///
    /// [`ProxyError::Flow`] for an id that names no flow, or a flow that is neither opening
    /// nor connecting by a race; [`ProxyError::RaceRunning`] never;
    /// [`ProxyError::NoRaceSlot`] when every race slot is in use; [`ProxyError::Resolve`] when
    /// the race refuses the answer. Nothing changes.
    pub fn on_resolved(
        &mut self,
        now: Instant,
        id: FlowId,
        family: AddressFamily,
        addrs: &[SocketAddr],
    ) -> Result<usize, ProxyError> {
        self.with_race(now, id, |race, now| race.on_resolved(now, family, addrs))
    }

    /// The DNS query of `family` for flow `id` failed (or timed out). Starts the flow's race if
    /// this is its first DNS input.
    ///
    /// # Errors
    ///
    /// As [`ProxyEngine::on_resolved`].
    pub fn on_resolution_failed(
        &mut self,
        now: Instant,
        id: FlowId,
        family: AddressFamily,
    ) -> Result<(), ProxyError> {
        self.with_race(now, id, |race, now| race.on_resolution_failed(now, family))
    }

    /// Resolution of flow `id` is over: no more addresses will come. A race with no candidate
    /// left fails ([`ProxyEvent::ConnectFailed`]).
    ///
    /// # Errors
    ///
    /// As [`ProxyEngine::on_resolved`].
    pub fn on_resolution_done(&mut self, now: Instant, id: FlowId) -> Result<(), ProxyError> {
        self.with_race(now, id, |race, now| race.on_resolution_done(now))
    }

    /// Attempt `attempt` of flow `id` connected. The race decides the winner on the next
    /// [`ProxyEngine::poll_event`].
    ///
    /// # Errors
    ///
    /// [`ProxyError::Flow`] for an id that names no open flow; [`ProxyError::NoRace`] if its
    /// race is over; [`ProxyError::Attempt`] for an attempt never started or no longer in
    /// flight (its [`ProxyEvent::CancelAttempt`] closes the socket). Nothing changes.
    pub fn on_attempt_connected(
        &mut self,
        now: Instant,
        id: FlowId,
        attempt: usize,
    ) -> Result<(), ProxyError> {
        let race = self.running_race(id)?;
        let now = self.clock.peek(now);
        let (_, engine) = self.races.get_mut(race).ok_or(ProxyError::NoRace)?;
        engine
            .on_attempt_connected(now, attempt)
            .map_err(ProxyError::Attempt)?;
        self.clock.observe(now);
        self.races.queue(race);
        Ok(())
    }

    /// Attempt `attempt` of flow `id` failed with `class` (from
    /// [`classify_errno`](crate::classify_errno)); the host closes its socket. A resource error
    /// makes the budget back off.
    ///
    /// # Errors
    ///
    /// As [`ProxyEngine::on_attempt_connected`].
    pub fn on_attempt_failed(
        &mut self,
        now: Instant,
        id: FlowId,
        attempt: usize,
        class: ErrorClass,
    ) -> Result<(), ProxyError> {
        let race = self.running_race(id)?;
        let now = self.clock.peek(now);
        let (_, engine) = self.races.get_mut(race).ok_or(ProxyError::NoRace)?;
        engine
            .on_attempt_failed(now, attempt, class)
            .map_err(ProxyError::Attempt)?;
        self.clock.observe(now);
        self.races.queue(race);
        Ok(())
    }

    /// The host opened a connection of its own (a control channel, a DNS-over-HTTPS
    /// connection) outside any flow: count it against the budget. Give it back with
    /// [`ProxyEngine::on_connection_closed`].
    ///
    /// # Errors
    ///
    /// The [`BudgetRefusal`] when the budget has no room; nothing is counted.
    pub fn try_open_connection(&mut self, now: Instant) -> Result<(), BudgetRefusal> {
        let now = self.clock.observe(now);
        self.budget.handle_timeout(now);
        self.budget.try_open_connection(now)
    }

    /// A connection of the host's own ([`ProxyEngine::try_open_connection`]) closed.
    ///
    /// # Errors
    ///
    /// [`BudgetError::NoOpenConnection`] if none is open; nothing changes.
    pub fn on_connection_closed(&mut self, now: Instant) -> Result<(), BudgetError> {
        if self.budget.open_connections() <= self.flows.connections_held() {
            // Every open connection belongs to a flow: this one was never opened.
            return Err(BudgetError::NoOpenConnection);
        }
        let now = self.clock.observe(now);
        self.budget.on_connection_closed(now)?;
        self.budget_released = true;
        Ok(())
    }

    /// The OS reported a resource error (`EMFILE`, `ENOBUFS`...) outside a race: the budget
    /// backs off. Errors of a race's attempts are reported with
    /// [`ProxyEngine::on_attempt_failed`], which does this itself.
    pub fn on_resource_error(&mut self, now: Instant) {
        let now = self.clock.observe(now);
        self.budget.on_resource_error(now);
    }

    /// Give the process's descriptor limit (`getrlimit(RLIMIT_NOFILE)`, soft value), as
    /// [`ConnectionBudget::set_fd_limit`].
    ///
    /// # Errors
    ///
    /// As [`ConnectionBudget::set_fd_limit`]; nothing changes.
    pub fn set_fd_limit(&mut self, rlimit_nofile: u64) -> Result<(), BudgetConfigError> {
        self.budget.set_fd_limit(rlimit_nofile)?;
        self.budget_released = true;
        Ok(())
    }

    /// Set the limit on flows admitted but not yet connected (opening or connecting), as
    /// [`FlowGovernor::set_connection_budget`]: a host lowers it under pressure and raises it
    /// back. Flows already admitted are not touched; 0 refuses every new flow.
    pub fn set_max_connecting(&mut self, max_connecting: u32) {
        self.flows.set_connection_budget(max_connecting);
    }

    /// Apply memory pressure `level` (from
    /// [`MemoryGovernor::poll_pressure`](crate::MemoryGovernor::poll_pressure)) to the flows,
    /// as [`FlowGovernor::on_pressure`] (shrunk caps and watermarks; at critical, new flows
    /// refused and idle ones evicted in batches), and to the connection budget, as
    /// [`ConnectionBudget::on_pressure`] (fewer attempts at once). Limits grow back as the
    /// level falls. Drain [`ProxyEngine::poll_event`] afterwards: it reports the evicted flows
    /// and the reads that may restart.
    pub fn on_pressure(&mut self, now: Instant, level: Pressure) {
        let now = self.clock.observe(now);
        self.flows.on_pressure(now, level);
        self.budget.on_pressure(now, level);
        // A grown attempt limit may let waiting races start.
        self.budget_released = true;
    }

    /// The next thing the host must do, or `None` when there is nothing until the next input or
    /// timer. See [`ProxyEvent`]; every event is already accounted for.
    ///
    /// Closes and resumes come first, then the races' actions, race by race.
    #[must_use = "an event tells the host to close, resume, open or use a socket"]
    pub fn poll_event(&mut self) -> Option<ProxyEvent> {
        loop {
            if let Some(notification) = self.flows.poll_notification() {
                return Some(self.notification_event(notification));
            }
            if let Some(index) = self.races.peek_ready() {
                if let Some(event) = self.poll_race(index) {
                    return Some(event);
                }
                if let Some(flow) = self.races.retire_ready() {
                    // The race is over and drained: a flow it established no longer names it.
                    if self
                        .flows
                        .race_of(flow)
                        .is_ok_and(|(_, race)| race == Some(index))
                    {
                        self.flows.set_race(flow, None);
                    }
                }
                continue;
            }
            if self.budget_released && self.races.waiting() > 0 && self.budget.can_start_attempt() {
                self.budget_released = false;
                self.races.wake_waiting();
                continue;
            }
            self.budget_released = false;
            return None;
        }
    }

    /// The earliest instant at which [`ProxyEngine::handle_timeout`] has work: a flow's connect
    /// or idle deadline, the budget's next recovery step, or a race's timer (next attempt,
    /// Resolution Delay, end of a budget wait, attempt timeout). O(race slots).
    #[must_use = "arm a timer for this instant"]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut earliest = earliest(self.flows.poll_timeout(), self.budget.poll_timeout());
        for (_, race) in self.races.iter() {
            earliest = self::earliest(earliest, race.poll_timeout());
        }
        earliest
    }

    /// Apply everything due at `now`: flows past their deadlines are closed (reported as
    /// [`ProxyEvent::CloseFlow`]), the budget takes its recovery steps, and races whose timers
    /// are due are queued. Idempotent. Then drain [`ProxyEngine::poll_event`].
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.clock.observe(now);
        self.flows.handle_timeout(now);
        self.budget.handle_timeout(now);
        self.budget_released = true;
        let capacity = u32::try_from(self.races.capacity()).unwrap_or(u32::MAX);
        for index in 0..capacity {
            let Some((_, race)) = self.races.get_mut(index) else {
                continue;
            };
            if race.poll_timeout().is_some_and(|due| due <= now) {
                race.handle_timeout(now);
                self.races.queue(index);
            }
        }
    }

    /// A snapshot of flow `id`.
    ///
    /// # Errors
    ///
    /// As [`FlowGovernor::flow`].
    pub fn flow(&self, id: FlowId) -> Result<FlowView, ProxyError> {
        Ok(self.flows.flow(id)?)
    }

    /// How many open flows `app` holds and whether its reads are paused.
    pub fn app_state(&self, app: AppId) -> AppState {
        self.flows.app_state(app)
    }

    /// Flow `id`'s race, while one is running or draining: its status, candidates and stats.
    pub fn race(&self, id: FlowId) -> Option<&HappyEyeballs<DEFAULT_MAX_CANDIDATES>> {
        let (_, index) = self.flows.race_of(id).ok()?;
        self.races.get(index?)
    }

    /// The flow table, read-only (per-app and per-destination counts, the policy).
    pub fn flows(&self) -> &FlowGovernor<S> {
        &self.flows
    }

    /// The connection budget, read-only (its levels, limits and stats).
    pub fn budget(&self) -> &ConnectionBudget {
        &self.budget
    }

    /// A snapshot of the counters and occupancy of the flows, the budget and the races.
    pub fn stats(&self) -> ProxyStats {
        ProxyStats {
            flows: self.flows.stats(),
            budget: self.budget.stats(),
            attempts_in_flight: self.budget.attempts_in_flight(),
            open_connections: self.budget.open_connections(),
            attempt_limit: self.budget.attempt_limit(),
            connection_limit: self.budget.connection_limit(),
            races: RaceStats {
                running: self.races.running(),
                ..self.race_stats
            },
        }
    }

    /// Refuse host connect reports for a flow a race connects.
    fn without_race(&self, id: FlowId) -> Result<(), ProxyError> {
        match self.flows.race_of(id)? {
            (_, Some(_)) => Err(ProxyError::RaceRunning),
            (_, None) => Ok(()),
        }
    }

    /// The race slot of flow `id`, which must be open with a race.
    fn running_race(&self, id: FlowId) -> Result<u32, ProxyError> {
        match self.flows.race_of(id)? {
            (_, Some(race)) => Ok(race),
            (_, None) => Err(ProxyError::NoRace),
        }
    }

    /// Apply a DNS input to flow `id`'s race, starting the race on the flow's first input. A
    /// refused input leaves no race behind and the clock where it was.
    fn with_race<T>(
        &mut self,
        now: Instant,
        id: FlowId,
        input: impl FnOnce(&mut Race, Instant) -> Result<T, ResolveError>,
    ) -> Result<T, ProxyError> {
        let (state, race) = self.flows.race_of(id)?;
        let now = self.clock.peek(now);
        if let Some(index) = race {
            let (_, engine) = self.races.get_mut(index).ok_or(ProxyError::NoRace)?;
            let value = input(engine, now).map_err(ProxyError::Resolve)?;
            self.clock.observe(now);
            self.races.queue(index);
            return Ok(value);
        }
        if state != FlowState::Opening {
            return Err(ProxyError::Flow(FlowError::InvalidState { state }));
        }
        if self.races.running() as usize >= self.races.capacity() {
            self.race_stats.no_slot = self.race_stats.no_slot.saturating_add(1);
            return Err(ProxyError::NoRaceSlot);
        }
        let mut race = match HappyEyeballs::new(self.race_config, now) {
            Ok(race) => race,
            Err(_) => {
                debug_assert!(
                    false,
                    "the race configuration was validated at construction"
                );
                return Err(ProxyError::NoRaceSlot);
            }
        };
        let value = input(&mut race, now).map_err(ProxyError::Resolve)?;
        let Some(index) = self.races.insert(id, race) else {
            debug_assert!(false, "a race slot was free");
            return Err(ProxyError::NoRaceSlot);
        };
        self.clock.observe(now);
        self.flows.set_race(id, Some(index));
        self.race_stats.started = self.race_stats.started.saturating_add(1);
        log_debug!("proxy: race started in slot {}", index);
        Ok(value)
    }

    /// The next action of the race in slot `index`, mirrored into the flow table.
    fn poll_race(&mut self, index: u32) -> Option<ProxyEvent> {
        let now = self.clock.latest();
        let (flow, race) = self.races.get_mut(index)?;
        race.handle_timeout(now);
        // The flow's state, while the flow is still the one this race connects.
        let owner = match self.flows.race_of(flow) {
            Ok((state, Some(at))) if at == index => Some(state),
            _ => None,
        };
        let running = matches!(
            race.status(),
            RaceStatus::Resolving | RaceStatus::Connecting | RaceStatus::WaitingForBudget { .. }
        );
        if running && !owner.is_some_and(FlowState::is_open) {
            race.on_abort(now);
            self.race_stats.aborted = self.race_stats.aborted.saturating_add(1);
        }
        let state = owner.filter(|&state| connectable(state));
        let action = race.poll_action(&mut self.budget)?;
        let event = match action {
            Action::StartAttempt {
                index: attempt,
                addr,
            } => {
                if state == Some(FlowState::Opening) && self.flows.on_connecting(now, flow).is_err()
                {
                    debug_assert!(false, "an opening flow can start connecting");
                }
                ProxyEvent::StartAttempt {
                    id: flow,
                    attempt,
                    addr,
                }
            }
            Action::CancelAttempt { index: attempt } => {
                self.budget_released = true;
                ProxyEvent::CancelAttempt { id: flow, attempt }
            }
            Action::Connected { index: attempt } => {
                // The race reports its winner once, after marking every loser cancelled.
                let losers = race.stats().attempts_also_ran;
                self.flows.count_also_ran_attempts(losers);
                // The winner's attempt became a connection: the attempt limit has room again.
                self.budget_released = true;
                if state.is_some() && self.flows.establish_holding_connection(now, flow).is_ok() {
                    self.race_stats.won = self.race_stats.won.saturating_add(1);
                    ProxyEvent::Established { id: flow, attempt }
                } else {
                    // The flow stopped being open while the winner connected: give the
                    // connection back and have the host close the socket.
                    if self.budget.on_connection_closed(now).is_err() {
                        debug_assert!(false, "the winner's connection is counted open");
                    }
                    self.budget_released = true;
                    ProxyEvent::CancelAttempt { id: flow, attempt }
                }
            }
            Action::Failed { reason } => {
                let class = reason.error_class();
                self.budget_released = true;
                self.race_stats.failed = self.race_stats.failed.saturating_add(1);
                // The race was not aborted, so its flow is open and the failure frees it.
                if self.flows.on_connect_failed(now, flow, class).is_err() {
                    debug_assert!(false, "a race fails only while its flow is open");
                    log_warn!("proxy: race failed for a flow that is no longer open");
                }
                self.settle(now);
                ProxyEvent::ConnectFailed {
                    id: flow,
                    reason,
                    class,
                }
            }
        };
        Some(event)
    }

    /// Map a governor notification to an event; a close aborts the flow's race.
    fn notification_event(&mut self, notification: Notification) -> ProxyEvent {
        match notification {
            Notification::Close { id, reason } => {
                if let Ok((_, Some(race))) = self.flows.race_of(id) {
                    self.races.queue(race);
                }
                ProxyEvent::CloseFlow { id, reason }
            }
            Notification::ResumeReadLocal { id } => ProxyEvent::ResumeRead {
                id,
                side: Side::Local,
            },
            Notification::ResumeReadRemote { id } => ProxyEvent::ResumeRead {
                id,
                side: Side::Remote,
            },
        }
    }

    /// Give the budget the connections of flows whose slots were freed.
    fn settle(&mut self, now: Instant) {
        let releases = self.flows.take_connection_releases();
        for _ in 0..releases {
            if self.budget.on_connection_closed(now).is_err() {
                debug_assert!(false, "a flow's connection is counted open by the budget");
            }
        }
        if releases > 0 {
            self.budget_released = true;
        }
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
