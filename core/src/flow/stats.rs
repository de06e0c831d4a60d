//! What the flow governor has done and holds: counters by outcome and reason, flows per state,
//! bytes pending, and the apps holding the most flows.

use super::table::NIL;
use super::{AppId, FlowGovernor, FlowOutcome, FlowSlot, RejectReason};
use crate::ErrorClass;

/// How many apps [`FlowStats::top_apps`] lists at most.
pub const TOP_APPS: usize = 8;

/// Flows in each live state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FlowsByState {
    /// Admitted, remote connection not started.
    pub opening: u32,
    /// Remote connection started, not yet up.
    pub connecting: u32,
    /// Relaying.
    pub established: u32,
    /// Asked to close, waiting for the host to report it closed.
    pub closing: u32,
}

impl FlowsByState {
    /// Flows counted against the caps: opening, connecting and established.
    pub const fn open(&self) -> u32 {
        self.opening
            .saturating_add(self.connecting)
            .saturating_add(self.established)
    }
}

/// Refused flows by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct RejectCounts {
    /// [`RejectReason::TableFull`].
    pub table_full: u64,
    /// [`RejectReason::AppOverLimit`].
    pub app_over_limit: u64,
    /// [`RejectReason::DestinationOverLimit`].
    pub destination_over_limit: u64,
    /// [`RejectReason::ConnectionBudget`].
    pub connection_budget: u64,
    /// [`RejectReason::DatagramOverLimit`].
    pub datagram_over_limit: u64,
    /// [`RejectReason::DnsOverLimit`].
    pub dns_over_limit: u64,
    /// [`RejectReason::Paced`].
    pub paced: u64,
    /// [`RejectReason::MemoryPressure`].
    pub memory_pressure: u64,
}

impl RejectCounts {
    /// The count for `reason`.
    pub const fn for_reason(&self, reason: RejectReason) -> u64 {
        match reason {
            RejectReason::TableFull => self.table_full,
            RejectReason::AppOverLimit => self.app_over_limit,
            RejectReason::DestinationOverLimit => self.destination_over_limit,
            RejectReason::ConnectionBudget => self.connection_budget,
            RejectReason::DatagramOverLimit => self.datagram_over_limit,
            RejectReason::DnsOverLimit => self.dns_over_limit,
            RejectReason::Paced => self.paced,
            RejectReason::MemoryPressure => self.memory_pressure,
        }
    }

    /// Refusals for every reason together.
    pub const fn total(&self) -> u64 {
        self.table_full
            .saturating_add(self.app_over_limit)
            .saturating_add(self.destination_over_limit)
            .saturating_add(self.connection_budget)
            .saturating_add(self.datagram_over_limit)
            .saturating_add(self.dns_over_limit)
            .saturating_add(self.paced)
            .saturating_add(self.memory_pressure)
    }

    pub(crate) fn add(&mut self, reason: RejectReason) {
        let count = match reason {
            RejectReason::TableFull => &mut self.table_full,
            RejectReason::AppOverLimit => &mut self.app_over_limit,
            RejectReason::DestinationOverLimit => &mut self.destination_over_limit,
            RejectReason::ConnectionBudget => &mut self.connection_budget,
            RejectReason::DatagramOverLimit => &mut self.datagram_over_limit,
            RejectReason::DnsOverLimit => &mut self.dns_over_limit,
            RejectReason::Paced => &mut self.paced,
            RejectReason::MemoryPressure => &mut self.memory_pressure,
        };
        *count = count.saturating_add(1);
    }
}

/// An app and the open flows it holds, an entry of [`FlowStats::top_apps`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct AppFlows {
    /// The app.
    pub app: AppId,
    /// Its open flows.
    pub flows: u32,
}

/// What the governor holds for one app; see [`FlowGovernor::app_state`].
///
/// [`FlowGovernor::app_state`]: crate::FlowGovernor::app_state
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct AppState {
    /// Open flows (opening, connecting or established).
    pub open_flows: u32,
    /// Bytes pending over the app's flows, both directions, closing flows included: what its
    /// app watermark compares.
    pub bytes_pending: u64,
    /// Whether the app watermark pauses the app's reads now.
    pub reads_paused: bool,
    /// Open DNS flows of the app: its queries in flight.
    pub dns_in_flight: u32,
    /// Admission pacing tokens the app has as of the latest `now` the governor was given: new
    /// flows it may open at once ([`FlowPolicy::app_admission_burst`] for an app holding no
    /// flow).
    ///
    /// [`FlowPolicy::app_admission_burst`]: crate::FlowPolicy::app_admission_burst
    pub admission_tokens: u32,
}

/// A snapshot of the governor's counters and occupancy. Counters saturate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FlowStats {
    /// Flows admitted, with or without an eviction.
    pub admitted: u64,
    /// Flows refused, by reason.
    pub rejected: RejectCounts,
    /// Flows the governor evicted to admit another.
    pub evicted: u64,
    /// Flows closed for being idle past the idle timeout.
    pub idle_timeouts: u64,
    /// Flows closed for connecting past the connect timeout.
    pub connect_timeouts: u64,
    /// UDP flows closed at their maximum lifetime.
    pub lifetime_closes: u64,
    /// Flows closed for a read paused past the maximum paused time.
    pub paused_closes: u64,
    /// Idle flows evicted under critical memory pressure.
    pub pressure_closes: u64,
    /// Open UDP flows now (what [`FlowPolicy::max_datagram_flows`] caps).
    ///
    /// [`FlowPolicy::max_datagram_flows`]: crate::FlowPolicy::max_datagram_flows
    pub datagram_flows: u32,
    /// Open DNS flows now: the queries in flight [`FlowPolicy::max_dns_in_flight`] caps.
    ///
    /// [`FlowPolicy::max_dns_in_flight`]: crate::FlowPolicy::max_dns_in_flight
    pub dns_in_flight: u32,
    /// Open flows with a read paused now (each on its way to the maximum paused time).
    pub flows_paused: u32,
    /// Flows the host closed before any byte moved.
    pub also_ran: u64,
    /// Flows the host closed after bytes moved.
    pub closed: u64,
    /// Also-ran attempts: connection attempts of a flow's Happy Eyeballs race cancelled because
    /// another attempt of the same race connected first (counted by the
    /// [`ProxyEngine`](crate::ProxyEngine)). Distinct from [`FlowStats::also_ran`], which counts
    /// flows: a flow whose race had two losers and which then carried bytes adds 2 here and
    /// nothing there.
    pub also_ran_attempts: u64,
    /// Flows whose connection the proxy engine's budget counts open now: established by a race
    /// and not yet reported closed. It equals the budget's open connections less the host's own
    /// ([`ProxyEngine::try_open_connection`](crate::ProxyEngine::try_open_connection)).
    pub connections_held: u32,
    /// Failed remote connections, indexed by [`ErrorClass`] as `u8`.
    pub connect_failures: [u64; 7],
    /// Flows in each live state now.
    pub flows: FlowsByState,
    /// Bytes read from local flows and not yet acknowledged by the remote, over all flows.
    pub bytes_pending_outbound: u64,
    /// Bytes read from remotes and not yet completed on the local flows, over all flows.
    pub bytes_pending_inbound: u64,
    /// Whether the global high watermark has paused every read.
    pub reads_paused_globally: bool,
    /// Apps whose reads their app watermark pauses now.
    pub apps_reads_paused: u32,
    /// Times an app's reads paused at the app high watermark.
    pub app_pauses: u64,
    /// Apps with at least one open flow.
    pub apps: u32,
    /// The apps holding the most open flows, most first; `top_apps_len` entries are valid.
    pub top_apps: [AppFlows; TOP_APPS],
    /// Valid entries in `top_apps`.
    pub top_apps_len: usize,
}

impl FlowStats {
    /// Failed remote connections of `class`.
    pub fn connect_failures_of(&self, class: ErrorClass) -> u64 {
        self.connect_failures
            .get(class as usize)
            .copied()
            .unwrap_or(0)
    }

    /// The valid entries of [`FlowStats::top_apps`].
    pub fn top_apps(&self) -> &[AppFlows] {
        self.top_apps
            .get(..self.top_apps_len)
            .unwrap_or(&self.top_apps)
    }
}

/// The running counters a governor keeps (the cumulative part of [`FlowStats`]).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Counters {
    pub(crate) admitted: u64,
    pub(crate) rejected: RejectCounts,
    pub(crate) evicted: u64,
    pub(crate) idle_timeouts: u64,
    pub(crate) connect_timeouts: u64,
    pub(crate) lifetime_closes: u64,
    pub(crate) paused_closes: u64,
    pub(crate) pressure_closes: u64,
    pub(crate) also_ran: u64,
    pub(crate) closed: u64,
    pub(crate) also_ran_attempts: u64,
    pub(crate) connect_failures: [u64; 7],
    pub(crate) app_pauses: u64,
}

impl Counters {
    pub(crate) fn record_outcome(&mut self, outcome: FlowOutcome) {
        match outcome {
            FlowOutcome::Closed => self.closed = self.closed.saturating_add(1),
            FlowOutcome::AlsoRan => self.also_ran = self.also_ran.saturating_add(1),
            FlowOutcome::ConnectFailed(class) => {
                if let Some(count) = self.connect_failures.get_mut(class as usize) {
                    *count = count.saturating_add(1);
                }
            }
            // Counted when the governor decided the close.
            FlowOutcome::ClosedByGovernor(_) => {}
        }
    }
}

impl<S: AsRef<[FlowSlot]> + AsMut<[FlowSlot]>> FlowGovernor<S> {
    /// A snapshot of the counters and occupancy. Walks the apps from the heaviest down for
    /// [`FlowStats::top_apps`]: O(heaviest app's flow count), not O(table).
    pub fn stats(&self) -> FlowStats {
        let counters = self.counters;
        let mut stats = FlowStats {
            admitted: counters.admitted,
            rejected: counters.rejected,
            evicted: counters.evicted,
            idle_timeouts: counters.idle_timeouts,
            connect_timeouts: counters.connect_timeouts,
            lifetime_closes: counters.lifetime_closes,
            paused_closes: counters.paused_closes,
            pressure_closes: counters.pressure_closes,
            datagram_flows: self.class_open(super::FlowClass::Datagram),
            dns_in_flight: self.class_open(super::FlowClass::Dns),
            flows_paused: self.paused_timers.len,
            also_ran: counters.also_ran,
            closed: counters.closed,
            also_ran_attempts: counters.also_ran_attempts,
            connections_held: self.connections_held,
            connect_failures: counters.connect_failures,
            flows: self.by_state,
            bytes_pending_outbound: u64::try_from(self.outbound_pending).unwrap_or(u64::MAX),
            bytes_pending_inbound: u64::try_from(self.inbound_pending).unwrap_or(u64::MAX),
            reads_paused_globally: self.global_paused,
            apps_reads_paused: self.apps_paused,
            app_pauses: counters.app_pauses,
            apps: self.apps_with_open_flows,
            ..FlowStats::default()
        };
        let rows = self.slots.as_ref();
        let mut count = self.heaviest_count;
        while count > 0 && stats.top_apps_len < TOP_APPS {
            let mut at = rows
                .get(count as usize - 1)
                .map_or(NIL, |row| row.apps_with_count.head);
            while at != NIL && stats.top_apps_len < TOP_APPS {
                let Some(row) = rows.get(at as usize) else {
                    break;
                };
                if let Some(entry) = stats.top_apps.get_mut(stats.top_apps_len) {
                    *entry = AppFlows {
                        app: row.app.id,
                        flows: count,
                    };
                }
                stats.top_apps_len += 1;
                at = row.app.count_link.next;
            }
            count -= 1;
        }
        stats
    }
}
