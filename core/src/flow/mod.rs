//! The flow governor: admission, fairness, eviction, timeouts and per-flow backpressure for app
//! and transparent proxies.
//!
//! A proxy host (an `NEAppProxyProvider`, an `NETransparentProxyProvider`, a Linux splice proxy)
//! asks [`FlowGovernor::on_new_flow`] before it handles a flow and tells the governor what
//! happens to it: connected, bytes read and completed in each direction, closed. The governor
//! owns the flow table and answers three questions:
//!
//! - **May this flow in?** Caps per app, per destination and globally (below Network
//!   framework's 512 flows per process), a limit on flows connecting (and, in the
//!   [`ProxyEngine`](crate::ProxyEngine), the process's
//!   [`ConnectionBudget`](crate::ConnectionBudget)), and the fairness rule: an app below its
//!   fair share is admitted even when the table is full, by evicting the least
//!   recently active flow (idle ones first) of the app holding the most flows; an app at its cap
//!   is refused rather than evicting others.
//! - **May I read more on this flow?** Bytes read and not yet completed, per flow and direction,
//!   per app and over all flows, against high and low watermarks
//!   ([`FlowGovernor::can_read_local`], [`FlowGovernor::can_read_remote`]); a paused read is
//!   resumed by an edge-triggered notification. The per-app watermark keeps one app that stops
//!   reading on many flows from pausing every other app at the global watermark.
//! - **Which flows must close?** Flows idle past the idle timeout or stuck connecting past the
//!   connect timeout ([`FlowGovernor::handle_timeout`]).
//!
//! [`FlowGovernor`] documents the drain contract, the cost of each operation and a usage sketch.
//! A proxy host uses it through the [`ProxyEngine`](crate::ProxyEngine), which adds the
//! connection budget and a Happy Eyeballs race per flow behind one event loop; module
//! `connection` holds what the engine needs from the governor beyond its public calls.

mod accounting;
mod admission;
mod class;
mod connection;
#[cfg(test)]
mod differential_tests;
mod directory;
mod id;
mod lifecycle;
mod pacing;
mod policy;
mod pressure;
mod stats;
mod table;
mod timers;

pub use admission::{Admission, AppId, DestinationKey, FlowInfo, Protocol, RejectReason};
pub use class::FlowClass;
pub use id::FlowId;
pub use lifecycle::{CloseReason, FlowError, FlowOutcome, FlowState, FlowView, Notification};
pub use policy::{DEFAULT_FLOW_SLOTS, FlowPolicy, PolicyError};
pub use pressure::{EVICT_BATCH, EVICT_INTERVAL_MICROS, EVICT_MIN_IDLE_MICROS};
pub use stats::{AppFlows, AppState, FlowStats, FlowsByState, RejectCounts, TOP_APPS};
pub use table::FlowSlot;

use crate::memory::Pressure;
use crate::{Clock, Instant};
use directory::Directory;
use id::next_generation;
use stats::Counters;
use table::{AppRecord, DestinationRecord, FlowRecord, ListHead, NIL};

/// Bytes a governor with `slots` slots uses: the engine with its slots held out of line (a
/// slice, or a boxed slice on a host with an allocator) plus the slots themselves.
pub const fn flow_governor_footprint(slots: usize) -> usize {
    core::mem::size_of::<FlowGovernor<&'static mut [FlowSlot]>>()
        .saturating_add(slots.saturating_mul(core::mem::size_of::<FlowSlot>()))
}

/// The flow governor engine over caller-handed storage `S` (an array, a `&mut [FlowSlot]`, a
/// `Box<[FlowSlot]>`): admission, fairness, eviction, timeouts and per-flow backpressure for an
/// app or transparent proxy.
///
/// Not safe for concurrent use: the host serialises calls (one dispatch queue, one lock).
/// Moving it between threads is fine.
///
/// ## Drain contract
///
/// After any input (`on_*`, `handle_timeout`), call [`FlowGovernor::poll_notification`] until it
/// returns `None`, then arm a timer for [`FlowGovernor::poll_timeout`]. Notifications live in
/// the slots (one flag per kind per flow, threaded on a list through the table), so they cannot
/// overflow and a close is never lost, however late the host drains.
///
/// ## Cost
///
/// Admission and close are O(1): apps and destinations are found through hash tables with as
/// many buckets as slots; each app keeps its open flows on intrusive least-recently-active lists
/// and the apps are bucketed by flow count, so the heaviest app and its victim are list heads;
/// timers are lists kept in deadline order (admission order for connecting flows and for UDP
/// lifetimes, activity order for established flows of each class, pause order for paused
/// reads), so every deadline is a list head. Reads and completions are O(1), except the completion that
/// brings an app down to its low watermark, which visits that app's open flows once to resume
/// their paused reads. Nothing scans the table; [`FlowGovernor::stats`] walks the apps from the
/// heaviest down only as far as its bounded top-apps list needs.
///
/// ## Sketch
///
/// ```
/// use tidegate_core::{
///     Admission, AppId, DestinationKey, FlowGovernor, FlowInfo, FlowPolicy, FlowSlot, Instant,
///     Protocol, DEFAULT_FLOW_SLOTS,
/// };
///
/// let mut slots = [FlowSlot::EMPTY; DEFAULT_FLOW_SLOTS];
/// let mut governor = FlowGovernor::new(Instant::ZERO, &mut slots[..], FlowPolicy::default())
///     .map_err(|_| "policy")?;
/// // A TCP flow to port 443: the default class, `FlowClass::Stream`.
/// let info = FlowInfo::new(
///     AppId::from_bytes(b"com.example.browser"),
///     DestinationKey::from_bytes(b"192.0.2.1:443"),
///     Protocol::Tcp,
///     443,
/// );
/// let now = Instant::from_millis(1);
/// let Admission::Accepted { id } = governor.on_new_flow(now, info) else {
///     return Err("refused");
/// };
/// governor.on_connected(now, id).map_err(|_| "connect")?;
/// governor.on_local_read(now, id, 1_500).map_err(|_| "read")?;
/// assert!(governor.can_read_local(id));
/// governor.on_remote_sent(now, id, 1_500).map_err(|_| "sent")?;
/// governor.on_closed(now, id).map_err(|_| "close")?;
/// while let Some(notification) = governor.poll_notification() {
///     let _ = notification; // close flows, restart reads
/// }
/// # Ok::<(), &str>(())
/// ```
#[derive(Debug)]
pub struct FlowGovernor<S> {
    slots: S,
    /// The policy the governor was built with.
    policy: FlowPolicy,
    /// The policy in force: `policy`, with caps and watermarks scaled by `pressure`.
    limits: FlowPolicy,
    pressure: Pressure,
    /// While pressure is critical: when the next round of idle evictions is due.
    next_eviction: Option<Instant>,
    clock: Clock,
    /// Free slots, threaded through `flow.app_link`.
    free_flows: ListHead,
    /// Free app records, threaded through `app.chain_next`.
    free_apps: u32,
    /// Free destination records, threaded through `destination.chain_next`.
    free_destinations: u32,
    /// Opening and connecting flows in admission order (connect deadline order).
    connecting_timers: ListHead,
    /// Established flows of each class in activity order (that class's idle deadline order),
    /// indexed by [`FlowClass`].
    established_timers: [ListHead; 3],
    /// Open flows with a paused read, in the order they paused (paused deadline order).
    paused_timers: ListHead,
    /// Open datagram flows in admission order (lifetime deadline order).
    lifetime_timers: ListHead,
    /// Open flows of each class, indexed by [`FlowClass`].
    open_by_class: [u32; 3],
    /// Flows with notifications to report.
    notifications: ListHead,
    /// Flows with a paused read waiting for the global watermark to clear.
    waiting_for_global: ListHead,
    /// The largest number of open flows any app holds.
    heaviest_count: u32,
    /// Apps with at least one open flow.
    apps_with_open_flows: u32,
    by_state: FlowsByState,
    /// Bytes pending over all flows, per direction: exactly the sum of the flows' own
    /// (saturating, 64-bit) counters, which 128 bits hold without overflow.
    outbound_pending: u128,
    inbound_pending: u128,
    /// Global hysteresis: set at the global high watermark, cleared at the low one.
    global_paused: bool,
    /// Apps whose reads their app watermark pauses now.
    apps_paused: u32,
    max_connecting: u32,
    /// Flows whose connection the proxy engine's budget counts open.
    connections_held: u32,
    /// Connections released with their flows' slots since the proxy engine last took the count;
    /// the engine gives them back to its budget in the same call, so none is ever left owed.
    connection_releases_owed: u32,
    counters: Counters,
}

impl<S: AsRef<[FlowSlot]> + AsMut<[FlowSlot]>> FlowGovernor<S> {
    /// A governor over `slots`, all of which it (re)initialises, applying `policy`.
    ///
    /// # Errors
    ///
    /// [`PolicyError`] if the policy is out of range or `slots` holds fewer than
    /// [`FlowPolicy::min_slots`] slots; nothing is built.
    pub fn new(now: Instant, mut slots: S, policy: FlowPolicy) -> Result<Self, PolicyError> {
        let count = slots.as_ref().len();
        policy.validate(count)?;
        let last = u32::try_from(count.saturating_sub(1)).unwrap_or(NIL);
        for (index, row) in slots.as_mut().iter_mut().enumerate() {
            let index = u32::try_from(index).unwrap_or(NIL);
            let generation = next_generation(row.flow.generation);
            *row = FlowSlot::EMPTY;
            row.flow.generation = generation;
            let next = if index < last { index + 1 } else { NIL };
            row.flow.app_link.prev = index.checked_sub(1).unwrap_or(NIL);
            row.flow.app_link.next = next;
            row.app.chain_next = next;
            row.destination.chain_next = next;
        }
        Ok(FlowGovernor {
            slots,
            policy,
            limits: policy,
            pressure: Pressure::Normal,
            next_eviction: None,
            clock: Clock::new(now),
            free_flows: ListHead {
                head: 0,
                tail: last,
                len: last.saturating_add(1),
            },
            free_apps: 0,
            free_destinations: 0,
            connecting_timers: ListHead::EMPTY,
            established_timers: [ListHead::EMPTY; 3],
            paused_timers: ListHead::EMPTY,
            lifetime_timers: ListHead::EMPTY,
            open_by_class: [0; 3],
            notifications: ListHead::EMPTY,
            waiting_for_global: ListHead::EMPTY,
            heaviest_count: 0,
            apps_with_open_flows: 0,
            by_state: FlowsByState::default(),
            outbound_pending: 0,
            inbound_pending: 0,
            global_paused: false,
            apps_paused: 0,
            max_connecting: policy.max_connecting,
            connections_held: 0,
            connection_releases_owed: 0,
            counters: Counters::default(),
        })
    }

    /// Change the connection budget hook: at most `max_connecting` flows opening or connecting.
    /// Flows already admitted are not affected; 0 refuses every new flow with
    /// [`RejectReason::ConnectionBudget`].
    pub fn set_connection_budget(&mut self, max_connecting: u32) {
        self.max_connecting = max_connecting;
    }

    /// The state of flow `id`: [`FlowState::Closed`] for a flow that has closed.
    ///
    /// # Errors
    ///
    /// [`FlowError::UnknownFlow`] for an id this governor never issued.
    pub fn state(&self, id: FlowId) -> Result<FlowState, FlowError> {
        match self.resolve(id) {
            Ok(index) => self
                .flow_record(index)
                .map(|flow| flow.state)
                .ok_or(FlowError::UnknownFlow),
            Err(FlowError::StaleFlow) => Ok(FlowState::Closed),
            Err(error) => Err(error),
        }
    }

    /// A snapshot of flow `id`.
    ///
    /// # Errors
    ///
    /// [`FlowError::UnknownFlow`] or [`FlowError::StaleFlow`] for an id that names no flow.
    pub fn flow(&self, id: FlowId) -> Result<FlowView, FlowError> {
        let index = self.resolve(id)?;
        let flow = self.flow_record(index).ok_or(FlowError::UnknownFlow)?;
        let app = self.app(flow.app).ok_or(FlowError::UnknownFlow)?;
        let destination = self
            .destination(flow.destination)
            .ok_or(FlowError::UnknownFlow)?;
        Ok(FlowView {
            state: flow.state,
            app: app.id,
            destination: destination.key,
            protocol: flow.protocol,
            class: flow.class,
            outbound_pending: flow.outbound.pending,
            inbound_pending: flow.inbound.pending,
            admitted_at: flow.admitted_at,
            last_active: flow.last_active,
        })
    }

    /// The policy the governor was built with (the connection budget may since have changed).
    pub const fn policy(&self) -> &FlowPolicy {
        &self.policy
    }

    /// Open flows of `app` (opening, connecting or established). O(1) on average.
    pub fn app_flows(&self, app: AppId) -> u32 {
        self.find_app(app)
            .and_then(|index| self.app(index))
            .map_or(0, |record| record.open)
    }

    /// What the governor holds for `app`: its open flows, the bytes pending over its flows,
    /// whether its app watermark pauses its reads, its DNS queries in flight and its pacing
    /// tokens; zero (and a full bucket) for an app with no flow in the table. Ask it for the app behind a paused read to tell a stalled app from a stalled flow.
    /// O(1) on average.
    pub fn app_state(&self, app: AppId) -> AppState {
        let record = self.find_app(app).and_then(|index| self.app(index));
        let tokens = record.map_or(self.limits.app_admission_burst, |record| {
            let mut pacer = record.pacer;
            pacer.refill(self.clock.latest(), &self.limits);
            pacer.tokens()
        });
        record.map_or(
            AppState {
                admission_tokens: tokens,
                ..AppState::default()
            },
            |record| AppState {
                open_flows: record.open,
                bytes_pending: record.pending,
                reads_paused: record.reads_paused,
                dns_in_flight: record.dns_open,
                admission_tokens: tokens,
            },
        )
    }

    /// Open flows to `destination`. O(1) on average.
    pub fn destination_flows(&self, destination: DestinationKey) -> u32 {
        self.find_destination(destination)
            .and_then(|index| self.destination(index))
            .map_or(0, |record| record.open)
    }

    /// Open flows (opening, connecting or established), the number the global cap limits.
    pub const fn open_flows(&self) -> u32 {
        self.by_state.open()
    }

    /// Slots free for new flows.
    pub const fn free_slots(&self) -> u32 {
        self.free_flows.len
    }

    /// Slots in the table.
    pub fn capacity(&self) -> usize {
        self.slots.as_ref().len()
    }
}

// Record access, lookups and the two hash tables.
impl<S: AsRef<[FlowSlot]> + AsMut<[FlowSlot]>> FlowGovernor<S> {
    /// The slot index `id` names, if it is a flow in the table now.
    fn resolve(&self, id: FlowId) -> Result<u32, FlowError> {
        let flow = self.flow_record(id.index()).ok_or(FlowError::UnknownFlow)?;
        if id.generation() == flow.generation {
            if flow.state == FlowState::Closed {
                Err(FlowError::UnknownFlow)
            } else {
                Ok(id.index())
            }
        } else if id.generation() != 0 && id.generation() < flow.generation {
            Err(FlowError::StaleFlow)
        } else {
            Err(FlowError::UnknownFlow)
        }
    }

    fn flow_record(&self, index: u32) -> Option<&FlowRecord> {
        self.slots.as_ref().get(index as usize).map(|row| &row.flow)
    }

    fn flow_mut(&mut self, index: u32) -> Option<&mut FlowRecord> {
        self.slots
            .as_mut()
            .get_mut(index as usize)
            .map(|row| &mut row.flow)
    }

    fn app(&self, index: u32) -> Option<&AppRecord> {
        self.slots.as_ref().get(index as usize).map(|row| &row.app)
    }

    fn app_mut(&mut self, index: u32) -> Option<&mut AppRecord> {
        self.slots
            .as_mut()
            .get_mut(index as usize)
            .map(|row| &mut row.app)
    }

    fn destination(&self, index: u32) -> Option<&DestinationRecord> {
        self.slots
            .as_ref()
            .get(index as usize)
            .map(|row| &row.destination)
    }

    fn destination_mut(&mut self, index: u32) -> Option<&mut DestinationRecord> {
        self.slots
            .as_mut()
            .get_mut(index as usize)
            .map(|row| &mut row.destination)
    }

    fn find_app(&self, id: AppId) -> Option<u32> {
        let rows = self.slots.as_ref();
        directory::find(rows, Directory::Apps, self.limits.hash_seed, id.0)
    }

    fn find_destination(&self, key: DestinationKey) -> Option<u32> {
        let rows = self.slots.as_ref();
        directory::find(rows, Directory::Destinations, self.limits.hash_seed, key.0)
    }

    fn insert_app(&mut self, id: AppId) -> Option<u32> {
        let rows = self.slots.as_mut();
        let seed = self.limits.hash_seed;
        directory::insert(rows, Directory::Apps, seed, &mut self.free_apps, id.0)
    }

    fn insert_destination(&mut self, key: DestinationKey) -> Option<u32> {
        let rows = self.slots.as_mut();
        let seed = self.limits.hash_seed;
        let free = &mut self.free_destinations;
        directory::insert(rows, Directory::Destinations, seed, free, key.0)
    }

    fn remove_app(&mut self, index: u32) {
        let rows = self.slots.as_mut();
        let seed = self.limits.hash_seed;
        directory::remove(rows, Directory::Apps, seed, &mut self.free_apps, index);
    }

    fn remove_destination(&mut self, index: u32) {
        let rows = self.slots.as_mut();
        let seed = self.limits.hash_seed;
        let free = &mut self.free_destinations;
        directory::remove(rows, Directory::Destinations, seed, free, index);
    }
}

/// Apply `edit` to the list of apps holding `bucket + 1` flows, stored in row `bucket`.
#[inline]
fn edit_count_list(
    rows: &mut [FlowSlot],
    bucket: u32,
    edit: impl FnOnce(&mut [FlowSlot], &mut ListHead),
) {
    let Some(mut list) = rows.get(bucket as usize).map(|row| row.apps_with_count) else {
        return;
    };
    edit(rows, &mut list);
    if let Some(row) = rows.get_mut(bucket as usize) {
        row.apps_with_count = list;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ErrorClass;
    use std::vec::Vec;

    pub(crate) fn small_policy() -> FlowPolicy {
        FlowPolicy {
            max_flows: 6,
            max_flows_per_app: 6,
            max_flows_per_destination: 6,
            max_connecting: 8,
            idle_timeout_micros: 100,
            connect_timeout_micros: 50,
            flow_high_watermark: 100,
            flow_low_watermark: 40,
            // Above the global watermark, so these tests see the per-flow and global ones alone.
            app_high_watermark: 1000,
            app_low_watermark: 500,
            global_high_watermark: 300,
            global_low_watermark: 150,
            hash_seed: 1,
            max_datagram_flows: 6,
            datagram_idle_timeout_micros: 100,
            datagram_max_lifetime_micros: u64::MAX,
            max_dns_in_flight: 6,
            max_dns_in_flight_per_app: 6,
            dns_idle_timeout_micros: 100,
            max_paused_micros: u64::MAX,
            app_admission_burst: u32::MAX,
            app_admission_rate_per_second: u32::MAX,
        }
    }

    pub(crate) fn info(app: u64, destination: u64) -> FlowInfo {
        FlowInfo {
            app: AppId(app),
            destination: DestinationKey(destination),
            protocol: Protocol::Tcp,
            class: FlowClass::Stream,
        }
    }

    fn at(micros: u64) -> Instant {
        Instant::from_micros(micros)
    }

    fn accepted(answer: Admission) -> FlowId {
        match answer {
            Admission::Accepted { id } => id,
            other => panic!("expected plain acceptance, got {other:?}"),
        }
    }

    fn drain<S: AsRef<[FlowSlot]> + AsMut<[FlowSlot]>>(
        governor: &mut FlowGovernor<S>,
    ) -> Vec<Notification> {
        std::iter::from_fn(|| governor.poll_notification()).collect()
    }

    /// A governor whose app watermark (150 / 60 bytes) lies between the per-flow (100) and the
    /// global (300) ones.
    fn app_watermark_governor() -> FlowGovernor<[FlowSlot; 9]> {
        let policy = FlowPolicy {
            app_high_watermark: 150,
            app_low_watermark: 60,
            ..small_policy()
        };
        FlowGovernor::new(at(0), [FlowSlot::EMPTY; 9], policy).unwrap()
    }

    /// One app whose reader stalls across several flows, each under the per-flow watermark,
    /// pauses its own reads at the app watermark; another app keeps reading, and the global
    /// watermark is never reached.
    #[test]
    fn a_stalled_app_pauses_only_its_own_reads() {
        let mut governor = app_watermark_governor();
        let a1 = accepted(governor.on_new_flow(at(1), info(1, 10)));
        let a2 = accepted(governor.on_new_flow(at(1), info(1, 11)));
        let b = accepted(governor.on_new_flow(at(1), info(2, 10)));
        for id in [a1, a2, b] {
            governor.on_connected(at(2), id).unwrap();
        }
        governor.on_local_read(at(3), a1, 80).unwrap();
        assert!(governor.can_read_local(a1));
        // 80 + 80 = 160 pending over app 1: its reads pause, though each flow is under 100.
        governor.on_local_read(at(3), a2, 80).unwrap();
        assert!(!governor.can_read_local(a2));
        assert!(!governor.can_read_remote(a1));
        // a1's read, allowed before the pause, lands and is told to stop too.
        governor.on_remote_read(at(4), a1, 10).unwrap();
        assert!(!governor.can_read_remote(a1));
        governor.on_local_read(at(4), b, 90).unwrap();
        assert!(governor.can_read_local(b), "the other app reads on");
        let stats = governor.stats();
        assert_eq!((stats.apps_reads_paused, stats.app_pauses), (1, 1));
        let state = governor.app_state(AppId(1));
        assert_eq!(
            (state.open_flows, state.bytes_pending, state.reads_paused),
            (2, 170, true)
        );
        assert!(!governor.app_state(AppId(2)).reads_paused);
        assert_eq!(
            governor.app_state(AppId(9)),
            AppState {
                admission_tokens: u32::MAX,
                ..AppState::default()
            },
            "an app with no flow: nothing held, a full bucket"
        );
        assert!(!stats.reads_paused_globally);
        assert!(drain(&mut governor).is_empty());

        // Down to 110, then 60: the low watermark resumes both paused reads, once each.
        governor.on_remote_sent(at(5), a2, 60).unwrap();
        assert!(drain(&mut governor).is_empty());
        assert!(!governor.can_read_local(a2));
        governor.on_local_written(at(6), a1, 10).unwrap();
        governor.on_remote_sent(at(6), a1, 40).unwrap();
        assert!(governor.can_read_local(a2));
        let mut resumed = drain(&mut governor);
        resumed.sort_by_key(|n| std::format!("{n:?}"));
        assert_eq!(
            resumed,
            [
                Notification::ResumeReadLocal { id: a2 },
                Notification::ResumeReadRemote { id: a1 },
            ]
        );
        assert_eq!(governor.stats().apps_reads_paused, 0);
    }

    /// Closing the flow that held most of a paused app's bytes releases them, and the app's
    /// other paused reads resume.
    #[test]
    fn closing_a_stalled_flow_resumes_its_app() {
        let mut governor = app_watermark_governor();
        let stalled = accepted(governor.on_new_flow(at(1), info(1, 10)));
        let other = accepted(governor.on_new_flow(at(1), info(1, 11)));
        governor.on_local_read(at(2), stalled, 99).unwrap();
        governor.on_local_read(at(2), other, 60).unwrap();
        assert!(!governor.can_read_local(other));
        governor.on_closed(at(3), stalled).unwrap();
        assert!(governor.can_read_local(other));
        assert_eq!(
            drain(&mut governor),
            [Notification::ResumeReadLocal { id: other }]
        );
    }

    /// Found by the `flow_governor` fuzz target: a read of `u64::MAX` bytes (a C host passing
    /// `(uint64_t)-1`) saturated the global total, so completing it wiped the bytes other flows
    /// still held from the total, and the global watermark stopped seeing them.
    #[test]
    fn totals_stay_the_sum_of_the_flows_after_absurd_byte_counts() {
        let mut governor = FlowGovernor::new(at(0), [FlowSlot::EMPTY; 9], small_policy()).unwrap();
        let a = accepted(governor.on_new_flow(at(1), info(1, 10)));
        let b = accepted(governor.on_new_flow(at(1), info(2, 11)));
        governor.on_local_read(at(2), b, 250).unwrap();
        // A read the totals cannot hold exactly is refused and changes nothing.
        assert_eq!(
            governor.on_local_read(at(2), a, u64::MAX),
            Err(FlowError::TooManyBytes { pending: 250 })
        );
        assert_eq!(governor.stats().bytes_pending_outbound, 250);
        governor.on_local_read(at(2), a, u64::MAX - 250).unwrap();
        assert_eq!(governor.stats().bytes_pending_outbound, u64::MAX);
        assert_eq!(
            governor.on_local_read(at(2), a, 7),
            Err(FlowError::TooManyBytes { pending: u64::MAX })
        );
        assert_eq!(governor.on_remote_sent(at(3), a, u64::MAX - 250), Ok(()));
        let stats = governor.stats();
        assert_eq!(
            stats.bytes_pending_outbound, 250,
            "flow b still holds its bytes"
        );
        assert!(
            stats.reads_paused_globally,
            "250 bytes are above the global low watermark of 150"
        );
        governor.on_remote_sent(at(4), b, 150).unwrap();
        assert!(
            !governor.stats().reads_paused_globally,
            "100 bytes: resumed"
        );
        governor.on_remote_read(at(4), b, 210).unwrap();
        assert!(
            governor.stats().reads_paused_globally,
            "310 bytes pending in total cross the global high watermark of 300"
        );
        governor.on_closed(at(5), b).unwrap();
        let stats = governor.stats();
        assert_eq!(
            (stats.bytes_pending_outbound, stats.bytes_pending_inbound),
            (0, 0)
        );
    }

    #[test]
    fn refusals_name_the_first_limit_hit() {
        let policy = FlowPolicy {
            max_flows_per_app: 2,
            max_flows_per_destination: 3,
            max_connecting: 4,
            ..small_policy()
        };
        let mut governor = FlowGovernor::new(at(0), [FlowSlot::EMPTY; 9], policy).unwrap();
        accepted(governor.on_new_flow(at(1), info(1, 10)));
        accepted(governor.on_new_flow(at(1), info(1, 10)));
        assert_eq!(
            governor.on_new_flow(at(1), info(1, 11)),
            Admission::Rejected(RejectReason::AppOverLimit)
        );
        accepted(governor.on_new_flow(at(1), info(2, 10)));
        assert_eq!(
            governor.on_new_flow(at(1), info(3, 10)),
            Admission::Rejected(RejectReason::DestinationOverLimit)
        );
        accepted(governor.on_new_flow(at(1), info(3, 11)));
        assert_eq!(
            governor.on_new_flow(at(1), info(4, 12)),
            Admission::Rejected(RejectReason::ConnectionBudget)
        );
        let stats = governor.stats();
        assert_eq!(stats.admitted, 4);
        assert_eq!(stats.rejected.app_over_limit, 1);
        assert_eq!(stats.rejected.destination_over_limit, 1);
        assert_eq!(stats.rejected.connection_budget, 1);
        assert_eq!(stats.rejected.total(), 3);
        assert_eq!(governor.app_flows(AppId(1)), 2);
        assert_eq!(governor.destination_flows(DestinationKey(10)), 3);
        governor.set_connection_budget(5);
        accepted(governor.on_new_flow(at(1), info(4, 12)));
    }

    #[test]
    fn full_table_evicts_the_least_recently_active_idle_flow_of_the_heaviest_app() {
        let mut governor = FlowGovernor::new(at(0), [FlowSlot::EMPTY; 9], small_policy()).unwrap();
        let flood: Vec<FlowId> = (0..6)
            .map(|i| {
                let id = accepted(governor.on_new_flow(at(i), info(1, i)));
                governor.on_connected(at(i), id).unwrap();
                id
            })
            .collect();
        // Flow 0 is the oldest but has bytes in flight; flow 1 is the oldest idle one.
        governor.on_local_read(at(10), flood[0], 10).unwrap();
        governor.on_local_read(at(11), flood[2], 5).unwrap();
        governor.on_remote_sent(at(12), flood[2], 5).unwrap();
        let answer = governor.on_new_flow(at(20), info(2, 99));
        let Admission::AcceptedAfterEvicting { id, evicted } = answer else {
            panic!("expected eviction, got {answer:?}");
        };
        assert_eq!(evicted, flood[1]);
        assert_eq!(governor.state(evicted), Ok(FlowState::Closing));
        assert_eq!(governor.state(id), Ok(FlowState::Opening));
        // The eviction is reported by the answer only.
        assert!(drain(&mut governor).is_empty());
        assert_eq!(governor.open_flows(), 6);
        assert_eq!(governor.stats().evicted, 1);
        assert_eq!(
            governor.on_closed(at(21), evicted),
            Ok(FlowOutcome::ClosedByGovernor(CloseReason::Evicted))
        );
        // The flooding app cannot evict; it is refused.
        assert_eq!(
            governor.on_new_flow(at(22), info(1, 50)),
            Admission::Rejected(RejectReason::TableFull)
        );
    }

    #[test]
    fn busy_flows_are_evicted_only_when_no_flow_is_idle() {
        let mut governor = FlowGovernor::new(at(0), [FlowSlot::EMPTY; 9], small_policy()).unwrap();
        let flood: Vec<FlowId> = (0..6)
            .map(|i| {
                let id = accepted(governor.on_new_flow(at(i), info(1, i)));
                governor.on_connected(at(i), id).unwrap();
                governor.on_local_read(at(i), id, 1).unwrap();
                id
            })
            .collect();
        governor.on_local_read(at(30), flood[0], 1).unwrap();
        let answer = governor.on_new_flow(at(40), info(2, 99));
        assert_eq!(answer.id().map(|_| ()), Some(()));
        assert!(matches!(
            answer,
            Admission::AcceptedAfterEvicting { evicted, .. } if evicted == flood[1]
        ));
    }

    #[test]
    fn an_app_at_or_above_its_fair_share_cannot_evict() {
        let mut governor = FlowGovernor::new(at(0), [FlowSlot::EMPTY; 9], small_policy()).unwrap();
        for i in 0..3 {
            accepted(governor.on_new_flow(at(i), info(1, i)));
            accepted(governor.on_new_flow(at(i), info(2, 10 + i)));
        }
        // Two apps, three flows each: the fair share is 3, so neither may evict the other.
        assert_eq!(
            governor.on_new_flow(at(5), info(2, 20)),
            Admission::Rejected(RejectReason::TableFull)
        );
        // A third app's fair share is 2: it may evict.
        assert!(matches!(
            governor.on_new_flow(at(5), info(3, 20)),
            Admission::AcceptedAfterEvicting { .. }
        ));
        assert_eq!(governor.stats().rejected.table_full, 1);
    }

    #[test]
    fn closing_slots_run_out_if_the_host_never_closes_evicted_flows() {
        let mut governor = FlowGovernor::new(at(0), [FlowSlot::EMPTY; 7], small_policy()).unwrap();
        for i in 0..6 {
            accepted(governor.on_new_flow(at(i), info(1, i)));
        }
        assert!(matches!(
            governor.on_new_flow(at(9), info(2, 20)),
            Admission::AcceptedAfterEvicting { .. }
        ));
        // The single spare slot holds the evicted flow until the host closes it.
        assert_eq!(governor.free_slots(), 0);
        assert_eq!(
            governor.on_new_flow(at(9), info(3, 21)),
            Admission::Rejected(RejectReason::TableFull)
        );
    }

    #[test]
    fn stale_and_forged_ids_are_refused_without_touching_the_new_flow() {
        let mut governor = FlowGovernor::new(at(0), [FlowSlot::EMPTY; 9], small_policy()).unwrap();
        let old = accepted(governor.on_new_flow(at(1), info(1, 1)));
        assert_eq!(governor.on_closed(at(2), old), Ok(FlowOutcome::AlsoRan));
        let new = accepted(governor.on_new_flow(at(3), info(2, 2)));
        assert_eq!(new.index(), old.index() + 1);
        // Fill the table so the old slot is reused.
        let mut reused = None;
        for i in 0..5 {
            let id = accepted(governor.on_new_flow(at(4), info(3 + i, 3 + i)));
            if id.index() == old.index() {
                reused = Some(id);
            }
        }
        let _ = reused;
        assert_eq!(governor.on_closed(at(5), old), Err(FlowError::StaleFlow));
        assert_eq!(
            governor.on_local_read(at(5), old, 1),
            Err(FlowError::StaleFlow)
        );
        assert_eq!(governor.state(old), Ok(FlowState::Closed));
        let forged = FlowId::new(new.index(), new.generation() + 7);
        assert_eq!(
            governor.on_connected(at(5), forged),
            Err(FlowError::UnknownFlow)
        );
        assert_eq!(
            governor.on_connected(at(5), FlowId::new(500, 1)),
            Err(FlowError::UnknownFlow)
        );
        assert_eq!(
            governor.on_connected(at(5), FlowId::from_raw(0)),
            Err(FlowError::UnknownFlow)
        );
        assert!(!governor.can_read_local(forged));
        assert_eq!(governor.state(new), Ok(FlowState::Opening));
    }

    #[test]
    fn lifecycle_transitions_are_checked() {
        let mut governor = FlowGovernor::new(at(0), [FlowSlot::EMPTY; 9], small_policy()).unwrap();
        let id = accepted(governor.on_new_flow(at(1), info(1, 1)));
        governor.on_connecting(at(1), id).unwrap();
        assert_eq!(
            governor.on_connecting(at(1), id),
            Err(FlowError::InvalidState {
                state: FlowState::Connecting
            })
        );
        assert_eq!(governor.stats().flows.connecting, 1);
        governor.on_connected(at(2), id).unwrap();
        assert_eq!(
            governor.on_connected(at(2), id),
            Err(FlowError::InvalidState {
                state: FlowState::Established
            })
        );
        assert_eq!(
            governor.on_connect_failed(at(2), id, ErrorClass::Refused),
            Err(FlowError::InvalidState {
                state: FlowState::Established
            })
        );
        governor.on_remote_read(at(3), id, 5).unwrap();
        let view = governor.flow(id).unwrap();
        assert_eq!(view.inbound_pending, 5);
        assert_eq!(view.app, AppId(1));
        assert_eq!(view.last_active, at(3));
        assert_eq!(governor.on_closed(at(4), id), Ok(FlowOutcome::Closed));
        assert_eq!(governor.stats().bytes_pending_inbound, 0);
        assert_eq!(governor.stats().closed, 1);

        let failed = accepted(governor.on_new_flow(at(5), info(1, 1)));
        assert_eq!(
            governor.on_connect_failed(at(6), failed, ErrorClass::ResourceExhausted),
            Ok(FlowOutcome::ConnectFailed(ErrorClass::ResourceExhausted))
        );
        let stats = governor.stats();
        assert_eq!(stats.connect_failures_of(ErrorClass::ResourceExhausted), 1);
        assert_eq!(stats.flows, FlowsByState::default());
        assert_eq!(governor.free_slots(), 9);
    }

    #[test]
    // Slow under Miri (an exhaustive loop of safe arithmetic); the normal run covers it.
    #[cfg_attr(miri, ignore = "slow under Miri")]
    fn also_ran_flows_free_their_slot_at_once() {
        let mut governor = FlowGovernor::new(at(0), [FlowSlot::EMPTY; 9], small_policy()).unwrap();
        for i in 0..1_000 {
            let id = accepted(governor.on_new_flow(at(i), info(1, 1)));
            if i % 2 == 0 {
                governor.on_connected(at(i), id).unwrap();
            }
            assert_eq!(governor.on_closed(at(i), id), Ok(FlowOutcome::AlsoRan));
        }
        let stats = governor.stats();
        assert_eq!(stats.also_ran, 1_000);
        assert_eq!(stats.evicted, 0);
        assert_eq!(stats.closed, 0);
        assert_eq!(governor.free_slots(), 9);
        assert_eq!(governor.app_flows(AppId(1)), 0);
        assert_eq!(stats.apps, 0);
    }

    #[test]
    fn timeouts_close_stuck_and_idle_flows_once() {
        let mut governor = FlowGovernor::new(at(0), [FlowSlot::EMPTY; 9], small_policy()).unwrap();
        assert_eq!(governor.poll_timeout(), None);
        let stuck = accepted(governor.on_new_flow(at(10), info(1, 1)));
        let idle = accepted(governor.on_new_flow(at(10), info(1, 2)));
        governor.on_connected(at(20), idle).unwrap();
        assert_eq!(governor.poll_timeout(), Some(at(60)));
        governor.handle_timeout(at(59));
        assert!(drain(&mut governor).is_empty());
        governor.handle_timeout(at(60));
        assert_eq!(
            drain(&mut governor),
            [Notification::Close {
                id: stuck,
                reason: CloseReason::ConnectTimeout
            }]
        );
        assert_eq!(governor.poll_timeout(), Some(at(120)));
        governor.on_local_read(at(50), idle, 1).unwrap();
        // Time going backwards is clamped: the read counts as activity at 60.
        assert_eq!(governor.poll_timeout(), Some(at(160)));
        governor.handle_timeout(at(200));
        governor.handle_timeout(at(200));
        assert_eq!(
            drain(&mut governor),
            [Notification::Close {
                id: idle,
                reason: CloseReason::IdleTimeout
            }]
        );
        assert_eq!(governor.poll_timeout(), None);
        let stats = governor.stats();
        assert_eq!((stats.connect_timeouts, stats.idle_timeouts), (1, 1));
        assert_eq!(stats.flows.closing, 2);
        assert_eq!(
            governor.on_closed(at(201), idle),
            Ok(FlowOutcome::ClosedByGovernor(CloseReason::IdleTimeout))
        );
        assert_eq!(
            governor.on_connect_failed(at(201), stuck, ErrorClass::TimedOut),
            Ok(FlowOutcome::ClosedByGovernor(CloseReason::ConnectTimeout))
        );
    }

    #[test]
    fn no_close_is_lost_when_every_flow_times_out_at_once() {
        let policy = FlowPolicy {
            max_connecting: 64,
            ..FlowPolicy {
                max_flows: 64,
                max_flows_per_app: 64,
                max_flows_per_destination: 64,
                ..small_policy()
            }
        };
        let mut governor = FlowGovernor::new(at(0), [FlowSlot::EMPTY; 65], policy).unwrap();
        let ids: Vec<FlowId> = (0..64)
            .map(|i| accepted(governor.on_new_flow(at(1), info(i % 5, i))))
            .collect();
        governor.handle_timeout(at(1_000));
        let closes: Vec<FlowId> = drain(&mut governor)
            .into_iter()
            .map(|notification| match notification {
                Notification::Close { id, .. } => id,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(closes, ids);
    }

    #[test]
    fn a_read_the_counters_cannot_hold_is_refused_and_changes_nothing() {
        let mut governor = FlowGovernor::new(at(0), [FlowSlot::EMPTY; 9], small_policy()).unwrap();
        let a = accepted(governor.on_new_flow(at(1), info(1, 1)));
        let b = accepted(governor.on_new_flow(at(1), info(2, 2)));
        governor.on_local_read(at(2), b, 100).unwrap();
        // A length of -1 cast to unsigned: saturating it would leave the total at u64::MAX, and
        // completing it would then forget b's 100 bytes.
        let before = governor.stats();
        assert_eq!(
            governor.on_local_read(at(3), a, u64::MAX),
            Err(FlowError::TooManyBytes { pending: 100 })
        );
        assert_eq!(
            governor.on_remote_read(at(3), a, u64::MAX),
            Ok(()),
            "inbound has room for exactly u64::MAX"
        );
        assert_eq!(
            governor.on_remote_read(at(3), b, 1),
            Err(FlowError::TooManyBytes { pending: u64::MAX })
        );
        governor.on_local_written(at(4), a, u64::MAX).unwrap();
        let after = governor.stats();
        assert_eq!(after.bytes_pending_outbound, before.bytes_pending_outbound);
        assert_eq!(after.bytes_pending_inbound, 0);
        assert_eq!(governor.flow(a).unwrap().outbound_pending, 0);
        governor.on_remote_sent(at(5), b, 100).unwrap();
        assert_eq!(governor.stats().bytes_pending_outbound, 0);
    }

    #[test]
    fn per_flow_watermark_pauses_and_resumes_once() {
        let mut governor = FlowGovernor::new(at(0), [FlowSlot::EMPTY; 9], small_policy()).unwrap();
        let id = accepted(governor.on_new_flow(at(1), info(1, 1)));
        assert!(!governor.can_read_remote(id), "not before connected");
        governor.on_connected(at(1), id).unwrap();
        governor.on_remote_read(at(2), id, 99).unwrap();
        assert!(governor.can_read_remote(id));
        governor.on_remote_read(at(2), id, 1).unwrap();
        assert!(!governor.can_read_remote(id));
        assert!(
            governor.can_read_local(id),
            "the other direction is independent"
        );
        governor.on_local_written(at(3), id, 59).unwrap();
        assert!(
            !governor.can_read_remote(id),
            "hysteresis: 41 is above the low watermark"
        );
        assert!(drain(&mut governor).is_empty());
        assert_eq!(
            governor.on_local_written(at(3), id, 42),
            Err(FlowError::ExceedsPending { pending: 41 })
        );
        assert_eq!(governor.flow(id).unwrap().inbound_pending, 41);
        governor.on_local_written(at(4), id, 1).unwrap();
        assert!(governor.can_read_remote(id));
        assert_eq!(
            drain(&mut governor),
            [Notification::ResumeReadRemote { id }]
        );
        governor.on_local_written(at(5), id, 40).unwrap();
        assert!(
            drain(&mut governor).is_empty(),
            "edge-triggered: one resume per pause"
        );
    }

    #[test]
    fn global_watermark_pauses_every_flow_until_the_low_watermark() {
        let mut governor = FlowGovernor::new(at(0), [FlowSlot::EMPTY; 9], small_policy()).unwrap();
        let ids: Vec<FlowId> = (0..4)
            .map(|i| {
                let id = accepted(governor.on_new_flow(at(1), info(i, i)));
                governor.on_connected(at(1), id).unwrap();
                id
            })
            .collect();
        for &id in &ids[..3] {
            governor.on_local_read(at(2), id, 90).unwrap();
        }
        assert!(governor.can_read_local(ids[0]));
        governor.on_local_read(at(2), ids[3], 30).unwrap();
        // 300 bytes pending: every read pauses, including flows that hold nothing.
        assert!(governor.stats().reads_paused_globally);
        assert!(!governor.can_read_local(ids[3]));
        assert!(!governor.can_read_remote(ids[3]));
        governor.on_remote_sent(at(3), ids[0], 90).unwrap();
        assert!(
            drain(&mut governor).is_empty(),
            "210 pending: above the low watermark"
        );
        // A flow reading again while paused globally waits too.
        governor.on_remote_sent(at(3), ids[1], 60).unwrap();
        assert!(governor.can_read_local(ids[3]));
        let mut resumed: Vec<FlowId> = drain(&mut governor)
            .into_iter()
            .map(|notification| match notification {
                Notification::ResumeReadLocal { id } => id,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        resumed.sort();
        // Only the flow whose read was refused is resumed; the others never paused.
        assert_eq!(resumed, [ids[3]]);
    }

    #[test]
    fn stats_list_the_heaviest_apps_first() {
        let policy = FlowPolicy {
            max_flows: 40,
            max_flows_per_app: 40,
            max_flows_per_destination: 40,
            max_connecting: 40,
            ..small_policy()
        };
        let mut governor = FlowGovernor::new(at(0), [FlowSlot::EMPTY; 41], policy).unwrap();
        for app in 1..=10u64 {
            for j in 0..(app % 4 + 1) {
                accepted(governor.on_new_flow(at(1), info(app, app * 10 + j)));
            }
        }
        let stats = governor.stats();
        assert_eq!(stats.apps, 10);
        let top = stats.top_apps();
        assert_eq!(top.len(), TOP_APPS);
        assert!(top.windows(2).all(|pair| pair[0].flows >= pair[1].flows));
        assert_eq!(top[0].flows, 4);
        let fours: Vec<u64> = top
            .iter()
            .filter(|e| e.flows == 4)
            .map(|e| e.app.0)
            .collect();
        assert_eq!(fours.len(), 2);
        assert!(fours.contains(&3) && fours.contains(&7));
    }

    #[test]
    fn footprint_counts_the_engine_and_its_slots() {
        assert_eq!(
            flow_governor_footprint(512),
            core::mem::size_of::<FlowGovernor<&'static mut [FlowSlot]>>()
                + 512 * core::mem::size_of::<FlowSlot>()
        );
        // Keep the default table small enough to be unremarkable in a 15 MiB process.
        assert!(flow_governor_footprint(DEFAULT_FLOW_SLOTS) < 144 * 1024);
    }

    #[test]
    fn new_rejects_a_bad_policy_and_reuses_storage_with_fresh_generations() {
        let mut slots = [FlowSlot::EMPTY; 9];
        assert_eq!(
            FlowGovernor::new(at(0), &mut slots[..6], small_policy()).err(),
            Some(PolicyError::TooFewSlots { required: 7 })
        );
        let first = {
            let mut governor = FlowGovernor::new(at(0), &mut slots[..], small_policy()).unwrap();
            accepted(governor.on_new_flow(at(0), info(1, 1)))
        };
        let mut governor = FlowGovernor::new(at(0), &mut slots[..], small_policy()).unwrap();
        assert_eq!(governor.on_closed(at(0), first), Err(FlowError::StaleFlow));
        assert_eq!(governor.free_slots(), 9);
    }
}
