//! Admission: what the host tells the governor about a new flow, the governor's answer, and the
//! caps and fairness rule that decide it.
//!
//! Checks run in a fixed order, each O(1): the app's cap, the destination's cap, the connection
//! budget, a free slot, then the global cap. At the global cap an app below its fair share may
//! evict the least recently active flow of the heaviest app; apps are kept in lists by open-flow
//! count, so the heaviest app is the head of the highest non-empty list, and each app keeps its
//! flows in least-recently-active order (idle ones and busy ones apart), so the victim is a list
//! head too.

use core::fmt;

use super::pacing::Pacer;
use super::table::{FlowRecord, LinkKind, NIL, pop_front, push_back, unlink};
use super::{
    CloseReason, FlowClass, FlowGovernor, FlowId, FlowSlot, FlowState, accounting, edit_count_list,
};
use crate::fmt::{log_debug, log_trace};
use crate::memory::Pressure;
use crate::{BudgetRefusal, Instant};

/// The app a flow belongs to: an opaque value the host derives, for example by hashing the
/// source app's signing identifier with [`AppId::from_bytes`].
///
/// Apps are the unit of fairness: caps and eviction count flows per app.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct AppId(pub u64);

impl AppId {
    /// The app id derived from `bytes` (a signing identifier, an audit token, a process path)
    /// with 64-bit FNV-1a, stable across runs and platforms.
    pub const fn from_bytes(bytes: &[u8]) -> AppId {
        AppId(fnv1a(bytes))
    }
}

/// Where a flow goes: an opaque value the host derives from the remote endpoint, for example with
/// [`DestinationKey::from_bytes`] over the address and port or the host name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct DestinationKey(pub u64);

impl DestinationKey {
    /// The destination key derived from `bytes` with 64-bit FNV-1a, stable across runs.
    pub const fn from_bytes(bytes: &[u8]) -> DestinationKey {
        DestinationKey(fnv1a(bytes))
    }
}

/// The transport of a flow, recorded for the host's diagnostics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
#[non_exhaustive]
pub enum Protocol {
    /// A TCP flow (`NEAppProxyTCPFlow`, a stream socket).
    Tcp = 0,
    /// A UDP flow (`NEAppProxyUDPFlow`, a datagram socket).
    Udp = 1,
}

impl Protocol {
    /// The protocol with numeric value `value`, or `None` for an unknown value.
    pub const fn from_u8(value: u8) -> Option<Protocol> {
        match value {
            0 => Some(Protocol::Tcp),
            1 => Some(Protocol::Udp),
            _ => None,
        }
    }
}

/// A new flow the host asks to admit with [`FlowGovernor::on_new_flow`].
///
/// [`FlowGovernor::on_new_flow`]: crate::FlowGovernor::on_new_flow
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FlowInfo {
    /// The app that opened the flow.
    pub app: AppId,
    /// The flow's remote endpoint.
    pub destination: DestinationKey,
    /// The flow's transport.
    pub protocol: Protocol,
    /// Which caps and timers apply: the host declares it, knowing which flows carry DNS;
    /// [`FlowClass::default_for`] gives the default from the transport and remote port.
    pub class: FlowClass,
}

impl FlowInfo {
    /// A flow of `app` to `destination` over `protocol`, of the class
    /// [`FlowClass::default_for`] gives for `remote_port`.
    pub const fn new(
        app: AppId,
        destination: DestinationKey,
        protocol: Protocol,
        remote_port: u16,
    ) -> FlowInfo {
        FlowInfo {
            app,
            destination,
            protocol,
            class: FlowClass::default_for(protocol, remote_port),
        }
    }
}

/// The governor's answer to a new flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Admission {
    /// The flow is admitted under `id`, in state opening.
    Accepted {
        /// The new flow's id; pass it to every later call about this flow.
        id: FlowId,
    },
    /// The flow is admitted under `id`, and to make room the governor chose flow `evicted` of the
    /// app holding the most flows. The host must close `evicted` now (cancel its remote
    /// connection, close the local flow) and then report it with
    /// [`FlowGovernor::on_closed`]. This answer is the only notice of the eviction.
    ///
    /// [`FlowGovernor::on_closed`]: crate::FlowGovernor::on_closed
    AcceptedAfterEvicting {
        /// The new flow's id.
        id: FlowId,
        /// The flow the host must close; it is in state closing until reported closed.
        evicted: FlowId,
    },
    /// The flow is refused; nothing changed in the table.
    Rejected(RejectReason),
}

impl Admission {
    /// The new flow's id, or `None` if the flow was refused.
    pub const fn id(&self) -> Option<FlowId> {
        match self {
            Admission::Accepted { id } | Admission::AcceptedAfterEvicting { id, .. } => Some(*id),
            Admission::Rejected(_) => None,
        }
    }
}

/// Why a flow was refused, and what the host should do with it.
///
/// A transparent proxy (`NETransparentProxyProvider`) answers `false` from `handleNewFlow` for a
/// refused flow, so the system sends it directly, outside the proxy: the app keeps working and
/// only loses the proxy's treatment. An app proxy (`NEAppProxyProvider`) cannot pass a flow on;
/// it closes the flow with an error, and the app sees a failed connection. The per-reason docs
/// add what else the host may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum RejectReason {
    /// Every slot under the global cap is taken and the app is not below its fair share, so no
    /// flow may be evicted for it (or the slots kept for closing flows are all in use because the
    /// host has not reported evicted flows closed). Transparent proxy: pass the flow on
    /// (`false`). App proxy: fail the flow with a resource error (`ENOSPC`-like); the app's
    /// retry succeeds once flows close.
    TableFull = 0,
    /// The app already holds its cap of flows. Transparent proxy: pass the flow on, so the
    /// flooding app is slowed only in what the proxy adds. App proxy: fail the flow; the app is
    /// misbehaving and must not push out others.
    AppOverLimit = 1,
    /// The destination already has its cap of flows. Transparent proxy: pass the flow on. App
    /// proxy: fail the flow; new connections to that destination succeed as old ones close.
    DestinationOverLimit = 2,
    /// Too many flows are still connecting (the governor's [`FlowPolicy::max_connecting`]
    /// hook), or, in the [`ProxyEngine`], its [`ConnectionBudget`] could not start one more
    /// attempt now (attempts in flight or descriptors at their limit, possibly lowered after
    /// resource errors; [`ProxyEngine::budget_refusal`] says which). Transparent proxy: pass the
    /// flow on.
    /// App proxy: fail the flow, or hold it briefly and ask again after a flow connects;
    /// opening more connections now would only make the system's own limits bite.
    ///
    /// [`FlowPolicy::max_connecting`]: crate::FlowPolicy::max_connecting
    /// [`ProxyEngine`]: crate::ProxyEngine
    /// [`ProxyEngine::budget_refusal`]: crate::ProxyEngine::budget_refusal
    /// [`ConnectionBudget`]: crate::ConnectionBudget
    ConnectionBudget = 3,
    /// A UDP flow, and [`FlowPolicy::max_datagram_flows`] UDP flows are open. Transparent
    /// proxy: pass the flow on. App proxy: fail the flow; idle UDP sessions give their slots
    /// back within [`FlowPolicy::datagram_idle_timeout_micros`].
    ///
    /// [`FlowPolicy::max_datagram_flows`]: crate::FlowPolicy::max_datagram_flows
    /// [`FlowPolicy::datagram_idle_timeout_micros`]: crate::FlowPolicy::datagram_idle_timeout_micros
    DatagramOverLimit = 4,
    /// A DNS flow, and [`FlowPolicy::max_dns_in_flight`] DNS flows are open, or the app holds
    /// its [`FlowPolicy::max_dns_in_flight_per_app`]. Refused at once so the app's resolver
    /// retries or fails fast: transparent proxy, pass the query on; app proxy, fail it.
    ///
    /// [`FlowPolicy::max_dns_in_flight`]: crate::FlowPolicy::max_dns_in_flight
    /// [`FlowPolicy::max_dns_in_flight_per_app`]: crate::FlowPolicy::max_dns_in_flight_per_app
    DnsOverLimit = 5,
    /// Admission pacing has no token left for the app: its open flows grow faster than
    /// [`FlowPolicy::app_admission_rate_per_second`] beyond its burst (a reconnect storm).
    /// Hold the flow and ask again at [`FlowGovernor::paced_until`] (an app proxy may delay
    /// its answer to `handleNewFlow`), or pass it on / fail it as for the other reasons.
    ///
    /// [`FlowPolicy::app_admission_rate_per_second`]: crate::FlowPolicy::app_admission_rate_per_second
    /// [`FlowGovernor::paced_until`]: crate::FlowGovernor::paced_until
    Paced = 6,
    /// Memory pressure is critical (see
    /// [`FlowGovernor::on_pressure`](crate::FlowGovernor::on_pressure)): every new flow is
    /// refused until it falls. Transparent proxy: pass the flow on. App proxy: fail the flow;
    /// admitting it could cost the whole extension.
    MemoryPressure = 7,
}

impl RejectReason {
    /// Every reason, in numeric order.
    pub const ALL: [RejectReason; 8] = [
        RejectReason::TableFull,
        RejectReason::AppOverLimit,
        RejectReason::DestinationOverLimit,
        RejectReason::ConnectionBudget,
        RejectReason::DatagramOverLimit,
        RejectReason::DnsOverLimit,
        RejectReason::Paced,
        RejectReason::MemoryPressure,
    ];
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RejectReason::TableFull => "flow table full and no flow may be evicted",
            RejectReason::AppOverLimit => "app holds its maximum number of flows",
            RejectReason::DestinationOverLimit => "destination holds its maximum number of flows",
            RejectReason::ConnectionBudget => {
                "no connection budget: too many flows or attempts connecting, or connections open"
            }
            RejectReason::DatagramOverLimit => "the UDP flow cap is reached",
            RejectReason::DnsOverLimit => "too many DNS queries in flight, overall or for the app",
            RejectReason::Paced => "admission pacing: new flows arrive faster than the rate",
            RejectReason::MemoryPressure => "memory pressure is critical",
        })
    }
}

impl<S: AsRef<[FlowSlot]> + AsMut<[FlowSlot]>> FlowGovernor<S> {
    /// Ask to admit a new flow. See [`Admission`] for the answers and [`RejectReason`] for what
    /// a refused flow means to each kind of proxy. A refused flow changes nothing but the
    /// rejection counters. O(1).
    pub fn on_new_flow(&mut self, now: Instant, info: FlowInfo) -> Admission {
        let now = self.clock.observe(now);
        self.admit_and_count(now, info, None, false)
    }

    /// Admit a new flow at `now` (already observed), given the connection budget's current
    /// refusal if a budget is in use, and count the answer. With `notify_evicted`, an evicted
    /// flow is also reported by [`FlowGovernor::poll_notification`] as a close.
    pub(crate) fn admit_and_count(
        &mut self,
        now: Instant,
        info: FlowInfo,
        budget: Option<BudgetRefusal>,
        notify_evicted: bool,
    ) -> Admission {
        let answer = self.admit(now, info, budget, notify_evicted);
        match answer {
            Admission::Accepted { id } => {
                self.counters.admitted = self.counters.admitted.saturating_add(1);
                log_trace!("flow admitted: slot {}", id.index());
            }
            Admission::AcceptedAfterEvicting { id, evicted } => {
                self.counters.admitted = self.counters.admitted.saturating_add(1);
                log_debug!(
                    "flow admitted in slot {} after evicting slot {}",
                    id.index(),
                    evicted.index()
                );
            }
            Admission::Rejected(reason) => {
                self.counters.rejected.add(reason);
                log_debug!("flow rejected: reason {}", reason as u8);
            }
        }
        answer
    }

    /// The admission decision. `budget` is the connection budget's refusal when the
    /// [`ProxyEngine`](crate::ProxyEngine) admits: a full attempt limit refuses at
    /// once (it clears within a connect's round trip), and a full connection limit is treated
    /// like a full table, except that only a victim holding a budget connection frees room.
    fn admit(
        &mut self,
        now: Instant,
        info: FlowInfo,
        budget: Option<BudgetRefusal>,
        notify_evicted: bool,
    ) -> Admission {
        if self.pressure == Pressure::Critical {
            return Admission::Rejected(RejectReason::MemoryPressure);
        }
        let app = self.find_app(info.app);
        let app_open = app.and_then(|index| self.app(index)).map_or(0, |r| r.open);
        if app_open >= self.limits.max_flows_per_app {
            return Admission::Rejected(RejectReason::AppOverLimit);
        }
        let destination = self.find_destination(info.destination);
        let destination_open = destination
            .and_then(|index| self.destination(index))
            .map_or(0, |r| r.open);
        if destination_open >= self.limits.max_flows_per_destination {
            return Admission::Rejected(RejectReason::DestinationOverLimit);
        }
        if let Some(reason) = self.class_refusal(info.class, app) {
            return Admission::Rejected(reason);
        }
        // An app without a record starts with a full bucket, which holds at least one token.
        let paced = info.class != FlowClass::Dns;
        if paced && let Some(record) = app.and_then(|index| self.app(index)) {
            let mut pacer = record.pacer;
            pacer.refill(now, &self.limits);
            if !pacer.has_token() {
                return Admission::Rejected(RejectReason::Paced);
            }
        }
        let connecting = self
            .by_state
            .opening
            .saturating_add(self.by_state.connecting);
        if connecting >= self.max_connecting
            || matches!(budget, Some(BudgetRefusal::AttemptsInFlight { .. }))
        {
            return Admission::Rejected(RejectReason::ConnectionBudget);
        }
        // A free slot is needed even after an eviction: the evicted flow keeps its slot until
        // the host reports it closed.
        if self.free_flows.head == NIL {
            return Admission::Rejected(RejectReason::TableFull);
        }
        let out_of_connections = matches!(budget, Some(BudgetRefusal::Connections { .. }));
        // Every check that can refuse runs before anything changes. The victim is only chosen
        // here; it is evicted once the new flow holds its slot, after which nothing can fail, so
        // a refusal never evicts.
        let mut evicted = None;
        if out_of_connections || self.open_flows() >= self.limits.max_flows {
            // Out of connections, the victim must give one back when the host closes it.
            let victim = self.eviction_victim(app, app_open).filter(|&victim| {
                !out_of_connections
                    || self
                        .flow_record(victim)
                        .is_some_and(|flow| flow.holds_connection)
            });
            match victim {
                Some(victim) => evicted = Some(victim),
                None if out_of_connections => {
                    return Admission::Rejected(RejectReason::ConnectionBudget);
                }
                None => return Admission::Rejected(RejectReason::TableFull),
            }
        }
        let evicted = match evicted {
            Some(victim) => match self.flow_record(victim) {
                Some(flow) => Some(FlowId::new(victim, flow.generation)),
                None => {
                    debug_assert!(false, "the eviction victim {victim} is a live flow");
                    return Admission::Rejected(RejectReason::TableFull);
                }
            },
            None => None,
        };
        let Some(index) = self.allocate(now, info, app, destination) else {
            // Unreachable while the free lists are consistent: a free slot implies a free app
            // and destination record, since each flow references at most one of each.
            debug_assert!(
                false,
                "a free flow slot implies free app and destination records"
            );
            return Admission::Rejected(RejectReason::TableFull);
        };
        if paced {
            self.take_token(index, now);
        }
        if let Some(victim) = evicted {
            self.begin_closing(victim.index(), CloseReason::Evicted, notify_evicted);
        }
        let generation = self.flow_record(index).map_or(0, |flow| flow.generation);
        let id = FlowId::new(index, generation);
        match evicted {
            Some(evicted) => Admission::AcceptedAfterEvicting { id, evicted },
            None => Admission::Accepted { id },
        }
    }

    /// Open flows of `class`.
    pub(crate) fn class_open(&self, class: FlowClass) -> u32 {
        self.open_by_class.get(class.index()).copied().unwrap_or(0)
    }

    /// Why the caps of `class` refuse one more flow of app record `app` (`None` for a new
    /// app), if they do.
    fn class_refusal(&self, class: FlowClass, app: Option<u32>) -> Option<RejectReason> {
        let open = self.class_open(class);
        match class {
            FlowClass::Stream => None,
            FlowClass::Datagram => {
                (open >= self.limits.max_datagram_flows).then_some(RejectReason::DatagramOverLimit)
            }
            FlowClass::Dns => {
                let app_dns = app
                    .and_then(|index| self.app(index))
                    .map_or(0, |r| r.dns_open);
                (open >= self.limits.max_dns_in_flight
                    || app_dns >= self.limits.max_dns_in_flight_per_app)
                    .then_some(RejectReason::DnsOverLimit)
            }
        }
    }

    /// Count an open flow of `class` and app record `app` in (`opened`) or out.
    pub(crate) fn count_class(&mut self, app: u32, class: FlowClass, opened: bool) {
        let step = |count: u32| {
            if opened {
                count.saturating_add(1)
            } else {
                debug_assert!(count > 0, "a class count never goes below zero");
                count.saturating_sub(1)
            }
        };
        if let Some(count) = self.open_by_class.get_mut(class.index()) {
            *count = step(*count);
        }
        if class == FlowClass::Dns
            && let Some(record) = self.app_mut(app)
        {
            record.dns_open = step(record.dns_open);
        }
    }

    /// When admission pacing has a token again for a new flow of `app`, or `None` if it has
    /// one now (an app holding no flow always has). Ask after a [`RejectReason::Paced`]
    /// refusal: holding the flow until then and asking again admits it (if nothing else
    /// refuses), where asking earlier is refused again. O(1) on average.
    pub fn paced_until(&self, app: AppId) -> Option<Instant> {
        let mut pacer = self.find_app(app).and_then(|index| self.app(index))?.pacer;
        pacer.refill(self.clock.latest(), &self.limits);
        pacer.next_token_at(&self.limits)
    }

    /// A paced flow of app record `app` stopped being open: its token goes back to the app's
    /// bucket (never above the burst), so pacing bounds how fast an app's open flows grow, not
    /// how many short flows it opens and closes.
    pub(crate) fn give_back_token(&mut self, app: u32) {
        let now = self.clock.latest();
        let policy = self.limits;
        if let Some(record) = self.app_mut(app) {
            record.pacer.refill(now, &policy);
            record.pacer.give_back(&policy);
        }
    }

    /// Take a pacing token for the flow just admitted in slot `index`, from its app's bucket.
    fn take_token(&mut self, index: u32, now: Instant) {
        let Some(app) = self.flow_record(index).map(|flow| flow.app) else {
            return;
        };
        let policy = self.limits;
        if let Some(record) = self.app_mut(app) {
            record.pacer.refill(now, &policy);
            record.pacer.take();
        }
    }

    /// The flow to evict so an app holding `requester_open` flows gets one more, if the fairness
    /// rule allows: the requester is below its fair share (the global cap divided by the apps
    /// holding flows, counting the requester), and the heaviest app holds at least two flows
    /// more than the requester, so the eviction makes the table fairer instead of swapping the
    /// two apps' places. The victim is that app's least recently active flow with nothing
    /// pending, or its least recently active flow if all have bytes in flight.
    fn eviction_victim(&self, requester: Option<u32>, requester_open: u32) -> Option<u32> {
        let apps = self
            .apps_with_open_flows
            .saturating_add(u32::from(requester_open == 0));
        let fair_share = (self.limits.max_flows / apps.max(1)).max(1);
        if requester_open >= fair_share {
            return None;
        }
        let bucket = self.heaviest_count.checked_sub(1)?;
        let heaviest = self
            .slots
            .as_ref()
            .get(bucket as usize)?
            .apps_with_count
            .head;
        if Some(heaviest) == requester {
            return None;
        }
        let record = self.app(heaviest)?;
        if record.open < requester_open.saturating_add(2) {
            return None;
        }
        let victim = if record.idle_flows.head != NIL {
            record.idle_flows.head
        } else {
            record.busy_flows.head
        };
        (victim != NIL).then_some(victim)
    }

    /// Take a free slot for a new flow in state opening. Fails, changing nothing, when no slot
    /// or no record for a new app or destination is free.
    fn allocate(
        &mut self,
        now: Instant,
        info: FlowInfo,
        app: Option<u32>,
        destination: Option<u32>,
    ) -> Option<u32> {
        if self.free_flows.head == NIL
            || (app.is_none() && self.free_apps == NIL)
            || (destination.is_none() && self.free_destinations == NIL)
        {
            return None;
        }
        let app = match app {
            Some(app) => app,
            None => {
                let app = self.insert_app(info.app)?;
                let pacer = Pacer::new(now, &self.limits);
                if let Some(record) = self.app_mut(app) {
                    record.pacer = pacer;
                }
                app
            }
        };
        let destination = match destination {
            Some(destination) => destination,
            None => self.insert_destination(info.destination)?,
        };
        let rows = self.slots.as_mut();
        let index = pop_front(rows, &mut self.free_flows, LinkKind::App)?;
        let flow = &mut rows.get_mut(index as usize)?.flow;
        *flow = FlowRecord {
            generation: flow.generation,
            state: FlowState::Opening,
            protocol: info.protocol,
            class: info.class,
            app,
            destination,
            admitted_at: now,
            last_active: now,
            ..FlowRecord::EMPTY
        };
        push_back(rows, &mut self.connecting_timers, index, LinkKind::Timer);
        if info.class == FlowClass::Datagram {
            push_back(rows, &mut self.lifetime_timers, index, LinkKind::Lifetime);
        }
        let record = &mut rows.get_mut(app as usize)?.app;
        record.references = record.references.saturating_add(1);
        let mut idle = record.idle_flows;
        push_back(rows, &mut idle, index, LinkKind::App);
        let record = &mut rows.get_mut(app as usize)?.app;
        record.idle_flows = idle;
        let open = record.open.saturating_add(1);
        self.set_app_open(app, open);
        if let Some(record) = self.destination_mut(destination) {
            record.references = record.references.saturating_add(1);
            record.open = record.open.saturating_add(1);
        }
        self.by_state.opening = self.by_state.opening.saturating_add(1);
        self.count_class(app, info.class, true);
        self.record_pause(index, accounting::Side::Outbound);
        Some(index)
    }

    /// Record that `app` now holds `open` open flows: move it between the count buckets and
    /// keep the heaviest count and the number of apps with flows current. O(1): counts change
    /// by one, so the heaviest count does too.
    pub(crate) fn set_app_open(&mut self, app: u32, open: u32) {
        let Some(old) = self.app(app).map(|record| record.open) else {
            return;
        };
        if old == open {
            return;
        }
        let rows = self.slots.as_mut();
        if let Some(bucket) = old.checked_sub(1) {
            edit_count_list(rows, bucket, |rows, list| {
                unlink(rows, list, app, LinkKind::Count);
            });
        }
        if let Some(bucket) = open.checked_sub(1) {
            edit_count_list(rows, bucket, |rows, list| {
                push_back(rows, list, app, LinkKind::Count);
            });
        }
        if let Some(record) = self.app_mut(app) {
            record.open = open;
        }
        if old == 0 {
            self.apps_with_open_flows = self.apps_with_open_flows.saturating_add(1);
        }
        if open == 0 {
            self.apps_with_open_flows = self.apps_with_open_flows.saturating_sub(1);
        }
        if open > self.heaviest_count {
            self.heaviest_count = open;
        } else if old == self.heaviest_count {
            let emptied = old
                .checked_sub(1)
                .and_then(|bucket| self.slots.as_ref().get(bucket as usize))
                .is_none_or(|row| row.apps_with_count.len == 0);
            if emptied {
                self.heaviest_count = open;
            }
        }
    }
}

/// 64-bit FNV-1a over `bytes`.
const fn fnv1a(mut bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    while let [byte, rest @ ..] = bytes {
        hash ^= *byte as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        bytes = rest;
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_reference_values() {
        assert_eq!(AppId::from_bytes(b"").0, 0xcbf2_9ce4_8422_2325);
        assert_eq!(AppId::from_bytes(b"a").0, 0xaf63_dc4c_8601_ec8c);
        assert_eq!(
            DestinationKey::from_bytes(b"foobar").0,
            0x8594_4171_f739_67e8
        );
    }

    /// A refusal must never evict. Admission at the global cap chose its victim and evicted it
    /// before taking the new flow's records; had that failed, the call returned `TableFull`
    /// with a flow evicted. The failure is unreachable while the free lists are consistent, so
    /// the test breaks them: no free app record is left for the newcomer's app.
    #[test]
    fn a_refused_admission_evicts_nothing() {
        use crate::flow::{FlowGovernor, FlowPolicy, FlowSlot, FlowState};
        let policy = FlowPolicy {
            max_flows: 4,
            max_flows_per_app: 4,
            ..crate::flow::tests::small_policy()
        };
        let mut governor = FlowGovernor::new(Instant::ZERO, [FlowSlot::EMPTY; 6], policy).unwrap();
        let heavy: std::vec::Vec<FlowId> = (0..4)
            .map(|d| {
                governor
                    .on_new_flow(Instant::ZERO, crate::flow::tests::info(1, d))
                    .id()
                    .unwrap()
            })
            .collect();
        governor.free_apps = NIL;
        let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            governor.on_new_flow(Instant::ZERO, crate::flow::tests::info(2, 9))
        }));
        // Debug builds assert the broken invariant; release builds refuse gracefully.
        if cfg!(debug_assertions) {
            assert!(answer.is_err(), "the broken invariant is asserted");
        } else {
            assert_eq!(
                answer.ok(),
                Some(Admission::Rejected(RejectReason::TableFull))
            );
        }
        for id in heavy {
            assert_eq!(
                governor.flow_record(id.index()).map(|flow| flow.state),
                Some(FlowState::Opening),
                "no flow was evicted"
            );
        }
        assert_eq!(governor.open_flows(), 4);
    }

    #[test]
    fn admission_exposes_the_new_id() {
        let id = FlowId::new(1, 1);
        assert_eq!(Admission::Accepted { id }.id(), Some(id));
        let evicted = FlowId::new(2, 1);
        assert_eq!(
            Admission::AcceptedAfterEvicting { id, evicted }.id(),
            Some(id)
        );
        assert_eq!(Admission::Rejected(RejectReason::TableFull).id(), None);
        assert_eq!(Protocol::from_u8(1), Some(Protocol::Udp));
        assert_eq!(Protocol::from_u8(2), None);
    }
}
