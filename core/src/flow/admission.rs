//! What the host tells the governor about a new flow, and the governor's answer.

use core::fmt;

use super::FlowId;

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
    /// Too many flows are still connecting (the connection budget). Transparent proxy: pass the
    /// flow on. App proxy: fail the flow, or hold it briefly and ask again after a flow connects;
    /// opening more connections now would only make the system's own limits bite.
    ConnectionBudget = 3,
}

impl RejectReason {
    /// Every reason, in numeric order.
    pub const ALL: [RejectReason; 4] = [
        RejectReason::TableFull,
        RejectReason::AppOverLimit,
        RejectReason::DestinationOverLimit,
        RejectReason::ConnectionBudget,
    ];
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RejectReason::TableFull => "flow table full and no flow may be evicted",
            RejectReason::AppOverLimit => "app holds its maximum number of flows",
            RejectReason::DestinationOverLimit => "destination holds its maximum number of flows",
            RejectReason::ConnectionBudget => "too many flows still connecting",
        })
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
