//! Flow classes: which caps and timers apply to a flow, as the host declares it.
//!
//! Three classes share the table and its global, per-app and per-destination caps:
//!
//! - **Stream**: TCP and anything the host does not declare otherwise. The general idle timeout.
//! - **Datagram**: UDP sessions (QUIC, calls, games). A cap of their own, so a storm of UDP
//!   sessions (hundreds in seconds, as hev-socks5-tunnel #109 and leaf #326 report crashing iOS
//!   tunnels) cannot take the table from TCP; a short idle timeout, since an abandoned UDP
//!   session never says goodbye; and an optional maximum lifetime, off by default because QUIC
//!   connections and calls live long.
//! - **Dns**: DNS queries, over any transport. The host knows which flows carry DNS (a resolver
//!   it forwards to, DNS-over-TLS, DNS-over-HTTPS); the core cannot see it, and port 53 is only
//!   the default ([`FlowClass::default_for`]). A DNS flow counts as a query in flight from
//!   admission until it closes, against a budget refused at once beyond it (Tailscale caps
//!   queries in flight at 64 on iOS, tailscale/tailscale #6897, #2566) and a per-app share of
//!   it, so one app's burst leaves other apps their lookups. DNS flows have their own short idle
//!   timeout and are not paced.
//!
//! Each class keeps its own established-timer list in activity order, so every idle deadline is
//! still a list head and timers stay O(1).

use super::Protocol;
use super::policy::FlowPolicy;

/// Which caps and timers apply to a flow; see the module documentation of each class. The host
/// declares it in [`FlowInfo::class`](crate::FlowInfo::class).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum FlowClass {
    /// A TCP flow, or any flow not declared otherwise: the general caps and idle timeout.
    Stream = 0,
    /// A UDP session: [`FlowPolicy::max_datagram_flows`],
    /// [`FlowPolicy::datagram_idle_timeout_micros`] and
    /// [`FlowPolicy::datagram_max_lifetime_micros`] apply.
    Datagram = 1,
    /// A flow carrying DNS queries (UDP or TCP port 53, DNS-over-TLS, DNS-over-HTTPS to a
    /// resolver the host knows): [`FlowPolicy::max_dns_in_flight`],
    /// [`FlowPolicy::max_dns_in_flight_per_app`] and [`FlowPolicy::dns_idle_timeout_micros`]
    /// apply, and admission pacing does not.
    Dns = 2,
}

impl FlowClass {
    /// Every class, in numeric order.
    pub const ALL: [FlowClass; 3] = [FlowClass::Stream, FlowClass::Datagram, FlowClass::Dns];

    /// The class a host that knows nothing more declares: [`FlowClass::Dns`] for remote port
    /// 53, [`FlowClass::Datagram`] for other UDP flows, [`FlowClass::Stream`] otherwise. A host
    /// that forwards DNS elsewhere (DNS-over-HTTPS to a known resolver, port 853) declares those
    /// flows [`FlowClass::Dns`] itself.
    pub const fn default_for(protocol: Protocol, remote_port: u16) -> FlowClass {
        match (protocol, remote_port) {
            (_, 53) => FlowClass::Dns,
            (Protocol::Udp, _) => FlowClass::Datagram,
            _ => FlowClass::Stream,
        }
    }

    /// The class with numeric value `value`, or `None` for an unknown value.
    pub const fn from_u8(value: u8) -> Option<FlowClass> {
        match value {
            0 => Some(FlowClass::Stream),
            1 => Some(FlowClass::Datagram),
            2 => Some(FlowClass::Dns),
            _ => None,
        }
    }

    /// The idle timeout of an established flow of this class under `policy`, in microseconds.
    pub(crate) const fn idle_timeout_micros(self, policy: &FlowPolicy) -> u64 {
        match self {
            FlowClass::Stream => policy.idle_timeout_micros,
            FlowClass::Datagram => policy.datagram_idle_timeout_micros,
            FlowClass::Dns => policy.dns_idle_timeout_micros,
        }
    }

    /// Index into per-class arrays.
    pub(crate) const fn index(self) -> usize {
        self as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_53_is_dns_whatever_the_transport_and_other_udp_is_datagram() {
        assert_eq!(FlowClass::default_for(Protocol::Udp, 53), FlowClass::Dns);
        assert_eq!(FlowClass::default_for(Protocol::Tcp, 53), FlowClass::Dns);
        assert_eq!(
            FlowClass::default_for(Protocol::Udp, 443),
            FlowClass::Datagram
        );
        assert_eq!(
            FlowClass::default_for(Protocol::Tcp, 443),
            FlowClass::Stream
        );
        for class in FlowClass::ALL {
            assert_eq!(FlowClass::from_u8(class as u8), Some(class));
            assert_eq!(FlowClass::ALL[class.index()], class);
        }
        assert_eq!(FlowClass::from_u8(3), None);
    }
}

#[cfg(test)]
mod governor_tests {
    use crate::flow::tests::{info, small_policy};
    use crate::{
        Admission, AppId, CloseReason, FlowClass, FlowGovernor, FlowInfo, FlowPolicy, FlowSlot,
        Instant, Notification, RejectReason,
    };

    fn of(app: u64, destination: u64, class: FlowClass) -> FlowInfo {
        FlowInfo {
            class,
            ..info(app, destination)
        }
    }

    /// One app's burst of DNS queries stops at its share of the budget; another app's lookups
    /// still get in, and the budget as a whole refuses at once beyond its cap.
    #[test]
    fn a_dns_burst_from_one_app_leaves_the_others_their_lookups() {
        let policy = FlowPolicy {
            max_flows: 20,
            max_flows_per_app: 20,
            max_flows_per_destination: 20,
            max_connecting: 20,
            max_dns_in_flight: 4,
            max_dns_in_flight_per_app: 2,
            ..small_policy()
        };
        let mut governor = FlowGovernor::new(Instant::ZERO, [FlowSlot::EMPTY; 21], policy).unwrap();
        let now = Instant::from_micros(1);
        for query in 0..2 {
            assert!(
                governor
                    .on_new_flow(now, of(1, query, FlowClass::Dns))
                    .id()
                    .is_some()
            );
        }
        assert_eq!(
            governor.on_new_flow(now, of(1, 9, FlowClass::Dns)),
            Admission::Rejected(RejectReason::DnsOverLimit)
        );
        // The app's other flows are not DNS and are not refused.
        assert!(
            governor
                .on_new_flow(now, of(1, 9, FlowClass::Stream))
                .id()
                .is_some()
        );
        for query in 0..2 {
            assert!(
                governor
                    .on_new_flow(now, of(2, query, FlowClass::Dns))
                    .id()
                    .is_some()
            );
        }
        assert_eq!(
            governor.on_new_flow(now, of(3, 0, FlowClass::Dns)),
            Admission::Rejected(RejectReason::DnsOverLimit),
            "the whole budget is in flight"
        );
        let stats = governor.stats();
        assert_eq!((stats.dns_in_flight, stats.rejected.dns_over_limit), (4, 2));
        assert_eq!(governor.app_flows(AppId(1)), 3);
    }

    /// A UDP storm stops at the UDP cap; TCP flows still get in, and an established UDP flow
    /// idles out on its own, shorter timeout.
    #[test]
    fn a_udp_storm_stops_at_its_cap_and_idles_out_first() {
        let policy = FlowPolicy {
            max_flows: 20,
            max_flows_per_app: 20,
            max_flows_per_destination: 20,
            max_connecting: 20,
            max_datagram_flows: 3,
            datagram_idle_timeout_micros: 30,
            idle_timeout_micros: 1_000,
            ..small_policy()
        };
        let mut governor = FlowGovernor::new(Instant::ZERO, [FlowSlot::EMPTY; 21], policy).unwrap();
        let at = Instant::from_micros;
        let udp: std::vec::Vec<_> = (0..3)
            .map(|d| {
                governor
                    .on_new_flow(at(1), of(1, d, FlowClass::Datagram))
                    .id()
                    .unwrap()
            })
            .collect();
        assert_eq!(
            governor.on_new_flow(at(1), of(2, 9, FlowClass::Datagram)),
            Admission::Rejected(RejectReason::DatagramOverLimit)
        );
        let tcp = governor
            .on_new_flow(at(1), of(2, 9, FlowClass::Stream))
            .id()
            .unwrap();
        for &id in udp.iter().chain([&tcp]) {
            governor.on_connected(at(2), id).unwrap();
        }
        assert_eq!(governor.poll_timeout(), Some(at(32)));
        governor.handle_timeout(at(32));
        let closes: std::vec::Vec<_> =
            std::iter::from_fn(|| governor.poll_notification()).collect();
        assert_eq!(closes.len(), 3);
        assert!(closes.iter().all(|n| matches!(
            n,
            Notification::Close { reason: CloseReason::IdleTimeout, id } if udp.contains(id)
        )));
        assert_eq!(
            governor.stats().datagram_flows,
            0,
            "closing flows leave the cap"
        );
        assert_eq!(
            governor.poll_timeout(),
            Some(at(1_002)),
            "the TCP flow's idle deadline"
        );
    }

    /// A UDP flow's lifetime, when set, closes it however busy it is.
    #[test]
    fn a_udp_lifetime_closes_a_busy_session() {
        let policy = FlowPolicy {
            datagram_max_lifetime_micros: 50,
            datagram_idle_timeout_micros: 1_000,
            ..small_policy()
        };
        let mut governor = FlowGovernor::new(Instant::ZERO, [FlowSlot::EMPTY; 9], policy).unwrap();
        let at = Instant::from_micros;
        let id = governor
            .on_new_flow(at(10), of(1, 1, FlowClass::Datagram))
            .id()
            .unwrap();
        governor.on_connected(at(11), id).unwrap();
        for t in (12..60).step_by(5) {
            governor.on_local_read(at(t), id, 1).unwrap();
            governor.on_remote_sent(at(t), id, 1).unwrap();
        }
        assert_eq!(governor.poll_timeout(), Some(at(60)));
        governor.handle_timeout(at(60));
        assert_eq!(
            governor.poll_notification(),
            Some(Notification::Close {
                id,
                reason: CloseReason::LifetimeExceeded
            })
        );
        assert_eq!(governor.stats().lifetime_closes, 1);
    }
}
