//! Flow governor policy: caps, timeouts and watermarks, with defaults chosen for Apple hosts.

use core::fmt;

/// Slots to hand a governor running with [`FlowPolicy::default`]: 512, Network framework's
/// per-process flow limit before macOS 26.4.
///
/// The policy admits at most [`FlowPolicy::max_flows`] (448) open flows; the 64 slots above that
/// hold flows the governor has asked the host to close (evicted or timed out) until the host
/// reports them closed. So live plus closing flows never exceed the 512 the system allows.
pub const DEFAULT_FLOW_SLOTS: usize = 512;

/// What the governor admits and when it asks for a flow to be closed or a read to pause.
///
/// Flows of each [`FlowClass`](crate::FlowClass) share the caps, watermarks and connect
/// timeout; the UDP and DNS fields add what applies to those classes alone.
///
/// Fixed at construction except [`FlowGovernor::set_connection_budget`], the hook a connection
/// budget uses to tighten or relax admission at run time. Every field has a default for an Apple
/// Network Extension host (a transparent or app proxy); the field docs say why.
///
/// [`FlowGovernor::set_connection_budget`]: crate::FlowGovernor::set_connection_budget
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FlowPolicy {
    /// Global cap on open flows (opening, connecting or established). Default 448: Network
    /// framework allows 512 flows per process, and past that connections hang in "waiting" with
    /// `ENOMEM`; the 64 left over cover flows being closed, the provider's own connections
    /// (control channel, DNS) and NECP's fuzzy limit, which Apple puts at "around 500". On macOS
    /// 26.4 and later (1024 flows) a host may double both this and the slot count.
    pub max_flows: u32,
    /// Cap on open flows per app. Default 256: the socket pool limit of Chrome, the heaviest
    /// legitimate client, and well below `max_flows`, so no single app can take the table even
    /// before fairness eviction starts. An app at its cap is refused; it never evicts others.
    pub max_flows_per_app: u32,
    /// Cap on open flows to one destination, across all apps. Default 128: far above what
    /// browsers open per host (6 for HTTP/1.1, 1 for HTTP/2 and HTTP/3), low enough that one
    /// destination (a flooded CDN address, a tracker hit by every app) cannot hold more than
    /// about a quarter of the table.
    pub max_flows_per_destination: u32,
    /// Connection budget hook: flows admitted but not yet connected (opening or connecting) at
    /// most. Default 128: bounds a burst of simultaneous connects (Happy Eyeballs races, a
    /// reconnect storm after a network change) so the system's own limits are not hit by
    /// half-open connections; the host may adjust it through
    /// [`FlowGovernor::set_connection_budget`]. The [`ProxyEngine`] asks its
    /// [`ConnectionBudget`] as well; this cap then bounds how many admitted flows may wait for
    /// attempt budget.
    ///
    /// [`FlowGovernor::set_connection_budget`]: crate::FlowGovernor::set_connection_budget
    /// [`ConnectionBudget`]: crate::ConnectionBudget
    /// [`ProxyEngine`]: crate::ProxyEngine
    pub max_connecting: u32,
    /// A flow with no byte read or completed for this long is closed, in microseconds. Default 10
    /// minutes: longer than the heartbeat of push channels and websockets (30 s to 5 minutes) so
    /// live connections survive, short enough that abandoned ones give their slot back within
    /// minutes. Under pressure, eviction reclaims idle flows first anyway. Not 0 (it would close
    /// every flow at once); `u64::MAX` means never.
    pub idle_timeout_micros: u64,
    /// A flow still opening or connecting this long after admission is closed, in microseconds.
    /// Default 30 s: Happy Eyeballs on a slow mobile path settles within a few seconds, while a
    /// connection stuck in Network framework's "waiting" state (the `ENOMEM` hang past the flow
    /// limit) never completes and must give its slot back. Not 0; `u64::MAX` means never.
    pub connect_timeout_micros: u64,
    /// Per flow and direction, bytes pending at which reading that direction pauses. Default 256
    /// KiB: keeps one flow at about 20 Mbit/s over a 100 ms round trip.
    pub flow_high_watermark: u64,
    /// Per flow and direction, bytes pending at or below which a paused read resumes. Default 64
    /// KiB, a quarter of the high watermark, so a paused flow resumes with room for several reads.
    pub flow_low_watermark: u64,
    /// Bytes pending over one app's flows, both directions, at which every read of that app
    /// pauses. Default 2 MiB, a third of the global watermark: an app whose reader stalls across
    /// many flows (each under the per-flow watermark) pauses its own reads long before the
    /// global watermark would pause everyone's; it takes three such apps to reach it.
    pub app_high_watermark: u64,
    /// Bytes pending over one app's flows at or below which that app's paused reads resume.
    /// Default 1 MiB.
    pub app_low_watermark: u64,
    /// Bytes pending over all flows and both directions at which every read pauses. Default 6 MiB:
    /// an app proxy is killed at 15 MiB, the process itself (runtime, Network framework, the
    /// table) takes about 5 MiB, and reads already issued when the watermark is crossed land on
    /// top, so 6 MiB leaves about 4 MiB of margin.
    pub global_high_watermark: u64,
    /// Bytes pending over all flows at or below which globally paused reads resume. Default 4 MiB.
    pub global_low_watermark: u64,
    /// Seed for the app and destination hash tables. Hosts that face destinations chosen by an
    /// attacker should pass a random value at start, so colliding keys cannot be precomputed.
    pub hash_seed: u64,
    /// Cap on open [`FlowClass::Datagram`] flows (UDP sessions). Default 128: a QUIC client
    /// holds about one session per origin and a call one or two, so 128 covers a browser with
    /// dozens of origins, while a storm of hundreds of UDP sessions in seconds (the
    /// hev-socks5-tunnel #109 and leaf #326 crashes) stops at under a third of the table and
    /// leaves the rest to TCP. Beyond it a new UDP flow is refused at once with
    /// [`RejectReason::DatagramOverLimit`].
    ///
    /// [`FlowClass::Datagram`]: crate::FlowClass::Datagram
    /// [`RejectReason::DatagramOverLimit`]: crate::RejectReason::DatagramOverLimit
    pub max_datagram_flows: u32,
    /// An established UDP flow with no byte read or completed for this long is closed, in
    /// microseconds. Default 60 s: QUIC's usual idle timeout is 30 s (a live connection sends at
    /// least that often) and NAT mappings for UDP expire after 30 s to 2 minutes, while an
    /// abandoned UDP session (it never says goodbye) gives its slot back within a minute instead
    /// of the general 10. Not 0; `u64::MAX` means never.
    pub datagram_idle_timeout_micros: u64,
    /// A UDP flow open this long after admission is closed however busy it is, in
    /// microseconds. Default `u64::MAX` (never): QUIC connections and calls live long, and the
    /// idle timeout already reclaims dead sessions. A host that must bound every session (rama's
    /// transparent proxy uses 15 minutes) sets it. Not 0.
    pub datagram_max_lifetime_micros: u64,
    /// Cap on open [`FlowClass::Dns`] flows, each a query in flight until it closes. Default 64,
    /// what Tailscale settled on for iOS after 256 exhausted the extension
    /// (tailscale/tailscale #6897, #2566): a query costs a socket, a flow and a buffer, and a
    /// resolver answers in milliseconds, so 64 in flight serve hundreds per second. Beyond it a
    /// query is refused at once with [`RejectReason::DnsOverLimit`] (the app's resolver retries
    /// or fails fast) instead of queueing toward the flow limit.
    ///
    /// [`FlowClass::Dns`]: crate::FlowClass::Dns
    /// [`RejectReason::DnsOverLimit`]: crate::RejectReason::DnsOverLimit
    pub max_dns_in_flight: u32,
    /// Cap on one app's open DNS flows. Default 32, half of [`FlowPolicy::max_dns_in_flight`]:
    /// one app's burst of lookups takes at most half the budget, and every other app keeps the
    /// rest. Refused with [`RejectReason::DnsOverLimit`] too.
    ///
    /// [`RejectReason::DnsOverLimit`]: crate::RejectReason::DnsOverLimit
    pub max_dns_in_flight_per_app: u32,
    /// An established DNS flow with no byte read or completed for this long is closed, in
    /// microseconds. Default 10 s: resolvers answer in milliseconds and stub resolvers retry
    /// after 1 to 5 s, so a query unanswered for 10 s is abandoned and must give its place in
    /// the budget back. A DNS-over-HTTPS connection the host declares DNS is reopened by its
    /// client when needed. Not 0; `u64::MAX` means never.
    pub dns_idle_timeout_micros: u64,
    /// A flow with a read paused (by its own, its app's or the global watermark) for this long
    /// without a resume is closed, in microseconds. Default 60 s, as rama's proxy: a peer that
    /// has not drained a byte in a minute holds its buffers for nothing, and without this only
    /// the 10-minute idle timeout would free them. Not 0; `u64::MAX` means never.
    pub max_paused_micros: u64,
    /// Admission pacing, per app: how far one app's open flows may grow at once (its token
    /// bucket's size: each admitted flow takes a token, each flow that closes gives it back).
    /// Default 128, as [`FlowPolicy::max_connecting`]: a page load opens a few dozen flows and a
    /// session restore about a hundred, and never notice, and an app opening and closing short
    /// flows never runs out, while one app's reconnect storm of hundreds of flows after a
    /// network change is spread over time instead of landing at once. Per app, so a flooding
    /// app spends only its own tokens. DNS flows are not paced (their in-flight cap bounds
    /// them). Not 0.
    pub app_admission_burst: u32,
    /// Admission pacing, per app: how many flows a second one app's open flows may grow by once
    /// its burst is spent (its bucket's refill rate). Default 64: an app reaches its 256-flow
    /// cap two seconds after its burst. A flow that finds no token is refused with [`RejectReason::Paced`];
    /// [`FlowGovernor::paced_until`] says when to ask again. Not 0; `u32::MAX` with a burst of
    /// `u32::MAX` makes pacing inert.
    ///
    /// [`RejectReason::Paced`]: crate::RejectReason::Paced
    /// [`FlowGovernor::paced_until`]: crate::FlowGovernor::paced_until
    pub app_admission_rate_per_second: u32,
}

impl FlowPolicy {
    /// The documented defaults: [`FlowPolicy::APPLE_DEFAULT`]. Build a policy as
    /// `FlowPolicy { field: value, ..FlowPolicy::DEFAULT }`, so that a field added later keeps
    /// its default without breaking the caller.
    pub const DEFAULT: FlowPolicy = FlowPolicy::APPLE_DEFAULT;

    /// The defaults for an Apple Network Extension proxy, as documented on each field.
    pub const APPLE_DEFAULT: FlowPolicy = FlowPolicy {
        max_flows: 448,
        max_flows_per_app: 256,
        max_flows_per_destination: 128,
        max_connecting: 128,
        idle_timeout_micros: 10 * 60 * 1_000_000,
        connect_timeout_micros: 30 * 1_000_000,
        flow_high_watermark: 256 * 1024,
        flow_low_watermark: 64 * 1024,
        app_high_watermark: 2 * 1024 * 1024,
        app_low_watermark: 1024 * 1024,
        global_high_watermark: 6 * 1024 * 1024,
        global_low_watermark: 4 * 1024 * 1024,
        hash_seed: 0x7469_6465_6761_7465,
        max_datagram_flows: 128,
        datagram_idle_timeout_micros: 60 * 1_000_000,
        datagram_max_lifetime_micros: u64::MAX,
        max_dns_in_flight: 64,
        max_dns_in_flight_per_app: 32,
        dns_idle_timeout_micros: 10 * 1_000_000,
        max_paused_micros: 60 * 1_000_000,
        app_admission_burst: 128,
        app_admission_rate_per_second: 64,
    };

    /// Slots a governor with this policy needs at least: one more than [`FlowPolicy::max_flows`],
    /// so an admission that evicts has a free slot for the new flow while the evicted one waits
    /// for the host to close it.
    pub const fn min_slots(&self) -> usize {
        self.max_flows as usize + 1
    }

    /// Check the policy against a table of `slots` slots.
    ///
    /// # Errors
    ///
    /// [`PolicyError`] names the first field that is out of range.
    pub const fn validate(&self, slots: usize) -> Result<(), PolicyError> {
        if self.max_flows == 0
            || self.max_flows_per_app == 0
            || self.max_flows_per_destination == 0
            || self.max_connecting == 0
            || self.max_datagram_flows == 0
            || self.max_dns_in_flight == 0
            || self.max_dns_in_flight_per_app == 0
            || self.app_admission_burst == 0
            || self.app_admission_rate_per_second == 0
        {
            return Err(PolicyError::ZeroCap);
        }
        if self.idle_timeout_micros == 0
            || self.connect_timeout_micros == 0
            || self.datagram_idle_timeout_micros == 0
            || self.datagram_max_lifetime_micros == 0
            || self.dns_idle_timeout_micros == 0
            || self.max_paused_micros == 0
        {
            return Err(PolicyError::ZeroTimeout);
        }
        if self.flow_low_watermark >= self.flow_high_watermark
            || self.app_low_watermark >= self.app_high_watermark
            || self.global_low_watermark >= self.global_high_watermark
        {
            return Err(PolicyError::WatermarksInverted);
        }
        if slots > MAX_SLOTS {
            return Err(PolicyError::TooManySlots { max: MAX_SLOTS });
        }
        if slots < self.min_slots() {
            return Err(PolicyError::TooFewSlots {
                required: self.min_slots(),
            });
        }
        Ok(())
    }
}

impl Default for FlowPolicy {
    fn default() -> Self {
        FlowPolicy::APPLE_DEFAULT
    }
}

/// The largest slot count a governor accepts; indices are `u32` with one value kept as "none".
pub(crate) const MAX_SLOTS: usize = (u32::MAX - 1) as usize;

/// Why a [`FlowPolicy`] cannot drive a table; nothing is built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum PolicyError {
    /// A cap (global, per app, per destination, connecting, UDP, DNS in flight) or an admission
    /// pacing value (an app's burst or rate) is 0, which would refuse every flow of its kind.
    ZeroCap,
    /// A timeout or time limit (idle, connect, UDP idle, UDP lifetime, DNS idle, paused) is 0,
    /// which would close every flow at once. For no limit, use `u64::MAX`.
    ZeroTimeout,
    /// A low watermark is not below its high watermark, so a paused read could never resume.
    WatermarksInverted,
    /// The storage has fewer slots than the policy needs: `max_flows + 1`.
    TooFewSlots {
        /// Slots the policy needs.
        required: usize,
    },
    /// The storage has more slots than a `u32` index can name.
    TooManySlots {
        /// The largest slot count accepted.
        max: usize,
    },
}

impl core::error::Error for PolicyError {}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyError::ZeroCap => f.write_str("a flow cap is 0"),
            PolicyError::ZeroTimeout => f.write_str("a flow timeout is 0"),
            PolicyError::WatermarksInverted => {
                f.write_str("a low watermark is not below its high watermark")
            }
            PolicyError::TooFewSlots { required } => {
                write!(f, "flow storage too small: {required} slots required")
            }
            PolicyError::TooManySlots { max } => {
                write!(f, "flow storage too large: at most {max} slots")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fit_the_network_framework_limit() {
        let policy = FlowPolicy::default();
        assert_eq!(policy.validate(DEFAULT_FLOW_SLOTS), Ok(()));
        assert!(policy.max_flows < 512);
        assert!(policy.max_flows_per_app < policy.max_flows);
        assert!(policy.max_flows_per_destination < policy.max_flows_per_app);
        // The global watermark leaves room under the 15 MiB app proxy limit.
        assert!(policy.global_high_watermark <= 15 * 1024 * 1024 / 2);
        // One stalled app pauses its own reads before everyone's.
        assert!(policy.app_high_watermark < policy.global_high_watermark);
        assert!(policy.flow_high_watermark < policy.app_high_watermark);
        // UDP sessions and DNS queries cannot take the table from TCP.
        assert!(policy.max_datagram_flows < policy.max_flows / 3);
        assert!(policy.max_dns_in_flight_per_app < policy.max_dns_in_flight);
        assert!(policy.datagram_idle_timeout_micros < policy.idle_timeout_micros);
        assert!(policy.app_admission_burst >= policy.max_connecting);
    }

    #[test]
    fn validation_names_the_problem() {
        let policy = FlowPolicy::default();
        assert_eq!(
            policy.validate(448),
            Err(PolicyError::TooFewSlots { required: 449 })
        );
        assert_eq!(
            policy.validate(MAX_SLOTS + 1),
            Err(PolicyError::TooManySlots { max: MAX_SLOTS })
        );
        let zero = FlowPolicy {
            max_flows_per_destination: 0,
            ..policy
        };
        assert_eq!(zero.validate(512), Err(PolicyError::ZeroCap));
        let inverted = FlowPolicy {
            global_low_watermark: policy.global_high_watermark,
            ..policy
        };
        assert_eq!(inverted.validate(512), Err(PolicyError::WatermarksInverted));
        let inverted = FlowPolicy {
            app_low_watermark: policy.app_high_watermark,
            ..policy
        };
        assert_eq!(inverted.validate(512), Err(PolicyError::WatermarksInverted));
        for zero in [
            FlowPolicy {
                max_datagram_flows: 0,
                ..policy
            },
            FlowPolicy {
                max_dns_in_flight: 0,
                ..policy
            },
            FlowPolicy {
                max_dns_in_flight_per_app: 0,
                ..policy
            },
            FlowPolicy {
                app_admission_burst: 0,
                ..policy
            },
            FlowPolicy {
                app_admission_rate_per_second: 0,
                ..policy
            },
        ] {
            assert_eq!(zero.validate(512), Err(PolicyError::ZeroCap));
        }
        for zero in [
            FlowPolicy {
                datagram_idle_timeout_micros: 0,
                ..policy
            },
            FlowPolicy {
                datagram_max_lifetime_micros: 0,
                ..policy
            },
            FlowPolicy {
                dns_idle_timeout_micros: 0,
                ..policy
            },
            FlowPolicy {
                max_paused_micros: 0,
                ..policy
            },
        ] {
            assert_eq!(zero.validate(512), Err(PolicyError::ZeroTimeout));
        }
        assert!(!std::format!("{}", PolicyError::ZeroCap).is_empty());
    }
}
