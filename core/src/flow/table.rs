//! The flow table's storage: one [`FlowSlot`] per flow, with intrusive lists threaded through it.
//!
//! Each slot is a row holding one flow record and, beside it, one entry of each bookkeeping
//! table: an app record, a destination record, a hash bucket head for each of the two hash
//! tables and the head of one "apps holding exactly k flows" list. A table of `n` slots can hold
//! `n` flows, so it never has more than `n` distinct apps or destinations, and no count above
//! `n`: sizing every table to the flow capacity means none of them can overflow, and the host
//! hands in a single array.
//!
//! Every list is doubly linked through `u32` indices ([`NIL`] for none), so linking and
//! unlinking are O(1). The hash tables chain through the records and have `n` buckets, a load
//! factor of at most 1, so a lookup visits O(1) records on average.

use super::pacing::Pacer;
use super::{AppId, CloseReason, DestinationKey, FlowClass, FlowState, Protocol};
use crate::Instant;

/// The index that means "no slot".
pub(crate) const NIL: u32 = u32::MAX;

/// One row of the flow table's storage. Hand a governor an array or slice of them, all
/// [`FlowSlot::EMPTY`]; the governor initialises them itself.
///
/// The fields are private: the slot is only storage the host owns and the governor manages.
#[derive(Clone, Copy, Debug)]
pub struct FlowSlot {
    pub(crate) flow: FlowRecord,
    pub(crate) app: AppRecord,
    pub(crate) destination: DestinationRecord,
    /// First app record in hash bucket `row index`.
    pub(crate) app_bucket: u32,
    /// First destination record in hash bucket `row index`.
    pub(crate) destination_bucket: u32,
    /// Apps holding exactly `row index + 1` open flows.
    pub(crate) apps_with_count: ListHead,
}

impl FlowSlot {
    /// An unused slot, for initialising storage (`[FlowSlot::EMPTY; 512]`).
    pub const EMPTY: FlowSlot = FlowSlot {
        flow: FlowRecord::EMPTY,
        app: AppRecord::EMPTY,
        destination: DestinationRecord::EMPTY,
        app_bucket: NIL,
        destination_bucket: NIL,
        apps_with_count: ListHead::EMPTY,
    };
}

impl Default for FlowSlot {
    fn default() -> Self {
        FlowSlot::EMPTY
    }
}

/// Notification flags of a flow (bits of [`FlowRecord::notify`]).
pub(crate) const NOTIFY_CLOSE: u8 = 1;
pub(crate) const NOTIFY_RESUME_LOCAL: u8 = 2;
pub(crate) const NOTIFY_RESUME_REMOTE: u8 = 4;

/// One direction of a flow's relay accounting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Direction {
    /// Bytes read and not yet completed.
    pub(crate) pending: u64,
    /// Pending reached the high watermark and has not yet fallen to the low one.
    pub(crate) over: bool,
    /// The host was told to stop reading this direction and waits for a resume.
    pub(crate) paused: bool,
}

/// A flow occupying a slot, or a free slot ([`FlowState::Closed`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct FlowRecord {
    pub(crate) generation: u32,
    pub(crate) state: FlowState,
    pub(crate) protocol: Protocol,
    pub(crate) class: FlowClass,
    /// Why the governor asked for the close, while closing.
    pub(crate) close_reason: Option<CloseReason>,
    /// Whether a byte was ever read on the flow (an also-ran has none).
    pub(crate) moved_bytes: bool,
    /// `NOTIFY_*` bits still to report.
    pub(crate) notify: u8,
    /// Whether the flow sits in the notification list.
    pub(crate) in_notify: bool,
    /// Whether the flow sits in the list of reads waiting for the global watermark.
    pub(crate) in_wait: bool,
    /// Whether the flow sits in its app's busy list (bytes pending) rather than the idle list.
    pub(crate) in_busy: bool,
    /// Whether the flow sits in the paused-timer list: open with a read paused.
    pub(crate) in_paused: bool,
    /// Whether the flow's remote connection is counted open by a [`crate::ConnectionBudget`]
    /// (it was established by a race under the budget); its slot's release owes the budget
    /// one connection close.
    pub(crate) holds_connection: bool,
    /// The proxy engine's race slot connecting this flow, or `NIL`.
    pub(crate) race: u32,
    /// App record index.
    pub(crate) app: u32,
    /// Destination record index.
    pub(crate) destination: u32,
    /// Bytes from the local flow toward the remote.
    pub(crate) outbound: Direction,
    /// Bytes from the remote toward the local flow.
    pub(crate) inbound: Direction,
    pub(crate) admitted_at: Instant,
    pub(crate) last_active: Instant,
    /// When a read of the flow paused, while it sits in the paused-timer list.
    pub(crate) paused_since: Instant,
    /// Link in the app's idle or busy list while open; in the free-slot list while free.
    pub(crate) app_link: Link,
    /// Link in the connecting or its class's established timer list while open.
    pub(crate) timer_link: Link,
    /// Link in the paused-timer list.
    pub(crate) pause_link: Link,
    /// Link in the lifetime-timer list while an open datagram flow.
    pub(crate) lifetime_link: Link,
    /// Link in the notification list.
    pub(crate) notify_link: Link,
    /// Link in the global-watermark wait list.
    pub(crate) wait_link: Link,
}

impl FlowRecord {
    pub(crate) const EMPTY: FlowRecord = FlowRecord {
        generation: 0,
        state: FlowState::Closed,
        protocol: Protocol::Tcp,
        class: FlowClass::Stream,
        close_reason: None,
        moved_bytes: false,
        notify: 0,
        in_notify: false,
        in_wait: false,
        in_busy: false,
        in_paused: false,
        holds_connection: false,
        race: NIL,
        app: NIL,
        destination: NIL,
        outbound: Direction {
            pending: 0,
            over: false,
            paused: false,
        },
        inbound: Direction {
            pending: 0,
            over: false,
            paused: false,
        },
        admitted_at: Instant::ZERO,
        last_active: Instant::ZERO,
        paused_since: Instant::ZERO,
        app_link: Link::EMPTY,
        timer_link: Link::EMPTY,
        pause_link: Link::EMPTY,
        lifetime_link: Link::EMPTY,
        notify_link: Link::EMPTY,
        wait_link: Link::EMPTY,
    };

    /// Bytes pending in both directions.
    pub(crate) const fn pending(&self) -> u64 {
        self.outbound.pending.saturating_add(self.inbound.pending)
    }
}

/// An app with at least one flow in the table (open or closing).
#[derive(Clone, Copy, Debug)]
pub(crate) struct AppRecord {
    pub(crate) id: AppId,
    /// Open flows (counted against caps and fairness).
    pub(crate) open: u32,
    /// Open DNS flows (counted against the per-app DNS cap).
    pub(crate) dns_open: u32,
    /// Flows referring to this record, open or closing; the record is freed at 0.
    pub(crate) references: u32,
    /// Next record in the hash chain, or in the free list.
    pub(crate) chain_next: u32,
    /// Open flows with nothing pending, least recently active first.
    pub(crate) idle_flows: ListHead,
    /// Open flows with bytes pending, least recently active first.
    pub(crate) busy_flows: ListHead,
    /// Link in the list of apps holding the same number of open flows.
    pub(crate) count_link: Link,
    /// Bytes pending over the app's flows (open and closing), both directions.
    pub(crate) pending: u64,
    /// App hysteresis: set at the app high watermark, cleared at the low one.
    pub(crate) reads_paused: bool,
    /// The app's admission pacing bucket.
    pub(crate) pacer: Pacer,
}

impl AppRecord {
    pub(crate) const EMPTY: AppRecord = AppRecord {
        id: AppId(0),
        open: 0,
        dns_open: 0,
        references: 0,
        chain_next: NIL,
        idle_flows: ListHead::EMPTY,
        busy_flows: ListHead::EMPTY,
        count_link: Link::EMPTY,
        pending: 0,
        reads_paused: false,
        pacer: Pacer::EMPTY,
    };
}

/// A destination with at least one flow in the table.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DestinationRecord {
    pub(crate) key: DestinationKey,
    pub(crate) open: u32,
    pub(crate) references: u32,
    pub(crate) chain_next: u32,
}

impl DestinationRecord {
    pub(crate) const EMPTY: DestinationRecord = DestinationRecord {
        key: DestinationKey(0),
        open: 0,
        references: 0,
        chain_next: NIL,
    };
}

/// Previous and next element of a doubly linked list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Link {
    pub(crate) prev: u32,
    pub(crate) next: u32,
}

impl Link {
    pub(crate) const EMPTY: Link = Link {
        prev: NIL,
        next: NIL,
    };
}

/// First and last element and length of a doubly linked list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ListHead {
    pub(crate) head: u32,
    pub(crate) tail: u32,
    pub(crate) len: u32,
}

impl ListHead {
    pub(crate) const EMPTY: ListHead = ListHead {
        head: NIL,
        tail: NIL,
        len: 0,
    };
}

/// Which link of a row a list threads through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LinkKind {
    /// `flow.app_link`: an app's idle or busy list.
    App,
    /// `flow.timer_link`: the connecting or an established timer list.
    Timer,
    /// `flow.pause_link`: the paused-timer list.
    Pause,
    /// `flow.lifetime_link`: the datagram lifetime list.
    Lifetime,
    /// `flow.notify_link`: the notification list.
    Notify,
    /// `flow.wait_link`: the global-watermark wait list.
    Wait,
    /// `app.count_link`: apps holding the same number of open flows.
    Count,
}

#[inline]
fn link_mut(rows: &mut [FlowSlot], index: u32, kind: LinkKind) -> Option<&mut Link> {
    let row = rows.get_mut(index as usize)?;
    Some(match kind {
        LinkKind::App => &mut row.flow.app_link,
        LinkKind::Timer => &mut row.flow.timer_link,
        LinkKind::Pause => &mut row.flow.pause_link,
        LinkKind::Lifetime => &mut row.flow.lifetime_link,
        LinkKind::Notify => &mut row.flow.notify_link,
        LinkKind::Wait => &mut row.flow.wait_link,
        LinkKind::Count => &mut row.app.count_link,
    })
}

/// Append `index` to `list`. The caller guarantees `index` is in no list of this kind.
#[inline]
pub(crate) fn push_back(rows: &mut [FlowSlot], list: &mut ListHead, index: u32, kind: LinkKind) {
    let old_tail = list.tail;
    if let Some(link) = link_mut(rows, index, kind) {
        *link = Link {
            prev: old_tail,
            next: NIL,
        };
    } else {
        return;
    }
    match link_mut(rows, old_tail, kind) {
        Some(tail) => tail.next = index,
        None => list.head = index,
    }
    list.tail = index;
    list.len = list.len.saturating_add(1);
}

/// Remove `index` from `list`. The caller guarantees `index` is in `list`.
#[inline]
pub(crate) fn unlink(rows: &mut [FlowSlot], list: &mut ListHead, index: u32, kind: LinkKind) {
    let Some(link) = link_mut(rows, index, kind) else {
        return;
    };
    let Link { prev, next } = *link;
    *link = Link::EMPTY;
    match link_mut(rows, prev, kind) {
        Some(before) => before.next = next,
        None => list.head = next,
    }
    match link_mut(rows, next, kind) {
        Some(after) => after.prev = prev,
        None => list.tail = prev,
    }
    list.len = list.len.saturating_sub(1);
}

/// Remove and return the first element of `list`.
#[inline]
pub(crate) fn pop_front(rows: &mut [FlowSlot], list: &mut ListHead, kind: LinkKind) -> Option<u32> {
    let head = list.head;
    if head == NIL {
        return None;
    }
    unlink(rows, list, head, kind);
    Some(head)
}

/// The bucket of `key` in a table of `buckets` buckets, with `seed` mixed in.
///
/// The key goes through the SplitMix64 finaliser (so nearby keys spread) and is then mapped to
/// `0..buckets` by a multiply-shift, which needs no division and works for any table size.
pub(crate) fn bucket_of(key: u64, seed: u64, buckets: usize) -> u32 {
    let mut z = key ^ seed;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    let bucket = (u128::from(z) * buckets as u128) >> 64;
    u32::try_from(bucket).unwrap_or(NIL)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;
    use std::vec::Vec;

    fn collect(rows: &[FlowSlot], list: &ListHead) -> Vec<u32> {
        let mut out = Vec::new();
        let mut at = list.head;
        while at != NIL {
            out.push(at);
            at = rows[at as usize].flow.timer_link.next;
        }
        out
    }

    proptest! {

        #![proptest_config(crate::proptest_config::default_cases())]

        /// The intrusive list behaves like a `VecDeque` under random pushes, removals and pops,
        /// on a table whose size is not a power of two.
        #[test]
        fn list_matches_vecdeque(ops in proptest::collection::vec(
            (0u8..3, 0u32..13),
            0..crate::proptest_config::ops(200),
        )) {
            let mut rows = [FlowSlot::EMPTY; 13];
            let mut list = ListHead::EMPTY;
            let mut model: VecDeque<u32> = VecDeque::new();
            for (op, index) in ops {
                match op {
                    0 if !model.contains(&index) => {
                        push_back(&mut rows, &mut list, index, LinkKind::Timer);
                        model.push_back(index);
                    }
                    1 if model.contains(&index) => {
                        unlink(&mut rows, &mut list, index, LinkKind::Timer);
                        model.retain(|&x| x != index);
                    }
                    2 => {
                        prop_assert_eq!(pop_front(&mut rows, &mut list, LinkKind::Timer), model.pop_front());
                    }
                    _ => {}
                }
                prop_assert_eq!(collect(&rows, &list), model.iter().copied().collect::<Vec<_>>());
                prop_assert_eq!(list.len as usize, model.len());
                let tail = if list.tail == NIL { None } else { Some(list.tail) };
                prop_assert_eq!(tail, model.back().copied());
            }
        }

        /// Buckets stay in range for any key, seed and table size.
        #[test]
        fn bucket_in_range(key: u64, seed: u64, buckets in 1usize..100_000) {
            prop_assert!((bucket_of(key, seed, buckets) as usize) < buckets);
        }
    }

    #[test]
    fn buckets_spread_sequential_keys() {
        let buckets = 449;
        let mut used = std::vec![0u32; buckets];
        for key in 0..buckets as u64 {
            used[bucket_of(key, 0, buckets) as usize] += 1;
        }
        let longest = used.iter().copied().max().unwrap_or(0);
        assert!(longest <= 8, "longest chain {longest}");
    }
}
