//! The order check a host keeps beside a packet tunnel: did the engine hand packets out in the
//! order they were pushed, apart from the ones it reports dropping?
//!
//! The host keeps a fingerprint of every packet it pushes, oldest first, and compares each packet
//! handed out with the oldest one. The engine drops packets too (CoDel at hand-out, drop-oldest
//! on arrival), and reports them only in counters, so the check follows those counters: before
//! comparing, it forgets as many of the oldest fingerprints as the engine dropped since the last
//! look. It holds at most one fingerprint per slot of the ring, allocated once: a host that must
//! keep a memory ceiling cannot keep an order check that grows with the traffic.

//!
//! In flow-queue mode the engine keeps order within a flow only, and drops from any flow's head
//! without saying which, so [`FlowOrderCheck`] checks that instead: each packet handed out must
//! have been pushed after the last packet of its flow handed out before it.

use std::collections::{HashMap, VecDeque};

/// Fingerprints of the packets queued in one direction of a tunnel, in push order.
#[derive(Debug)]
pub struct OrderCheck {
    fingerprints: VecDeque<u64>,
    capacity: usize,
    /// The engine's count of packets it dropped from this queue, as last seen.
    drops_seen: u64,
    /// Packets handed out that did not match the oldest fingerprint.
    pub mismatches: u64,
    /// Pushes that found the check full: the engine held more packets than it has slots, or the
    /// host missed a drop. Always 0 for a correct engine and host.
    pub overflows: u64,
}

impl OrderCheck {
    /// A check for a ring of `slots` packets.
    pub fn new(slots: usize) -> Self {
        OrderCheck {
            fingerprints: VecDeque::with_capacity(slots),
            capacity: slots,
            drops_seen: 0,
            mismatches: 0,
            overflows: 0,
        }
    }

    /// The engine accepted `packet` into its queue.
    pub fn pushed(&mut self, packet: &[u8]) {
        if self.fingerprints.len() == self.capacity {
            self.overflows += 1;
            self.fingerprints.pop_front();
        }
        self.fingerprints.push_back(fnv1a(packet));
    }

    /// The engine dropped `count` of the oldest queued packets (drop-oldest on arrival).
    pub fn dropped_oldest(&mut self, count: usize) {
        let count = count.min(self.fingerprints.len());
        self.fingerprints.drain(..count);
    }

    /// The engine handed out `packet`, having dropped `total_drops` packets from the head of this
    /// queue since it was built (its `aqm_dropped_packets` counter). Returns whether the packet
    /// was the oldest one not dropped.
    pub fn handed_out(&mut self, packet: &[u8], total_drops: u64) -> bool {
        let new_drops = total_drops.saturating_sub(self.drops_seen);
        self.drops_seen = total_drops;
        self.dropped_oldest(usize::try_from(new_drops).unwrap_or(usize::MAX));
        let in_order = self.fingerprints.pop_front() == Some(fnv1a(packet));
        if !in_order {
            self.mismatches += 1;
        }
        in_order
    }

    /// Fingerprints held: the packets the engine should still have queued.
    pub fn len(&self) -> usize {
        self.fingerprints.len()
    }

    /// Whether no fingerprint is held.
    pub fn is_empty(&self) -> bool {
        self.fingerprints.is_empty()
    }

    /// Bytes of fingerprint storage, fixed at creation.
    pub fn storage_bytes(&self) -> usize {
        self.fingerprints.capacity() * size_of::<u64>()
    }
}

/// The per-flow order check for flow-queue mode, in bounded memory allocated once.
///
/// It remembers the push index of the last `window` packets pushed (by fingerprint) and, per
/// flow, the push index of the last packet handed out. A packet handed out whose index is not
/// above its flow's last is a mismatch. A packet pushed more than `window` pushes ago is no
/// longer remembered and is counted as `unverified` instead (a window of four times the engine's
/// cells makes that rare: the engine holds at most its cells). Byte-identical packets (a TCP
/// segment retransmitted while the original is still queued) are told apart by nothing: while
/// more than one copy is remembered, a hand-out of that fingerprint is counted `unverified`,
/// not checked, and the last copy left is checked as the latest push.
#[derive(Debug)]
pub struct FlowOrderCheck {
    window: VecDeque<(u64, u64)>,
    capacity: usize,
    next_index: u64,
    /// Per fingerprint: the push index of its latest copy, and the copies not yet handed out.
    by_fingerprint: HashMap<u64, (u64, u32)>,
    last_by_flow: HashMap<FlowKey, u64>,
    /// Packets handed out before a packet of the same flow pushed earlier: always 0.
    pub mismatches: u64,
    /// Packets handed out that had left the window, so could not be checked.
    pub unverified: u64,
}

/// A flow as the host sees it: IP version, addresses, protocol and ports; fragments by address
/// pair (the engine's documented key, parsed here independently).
pub type FlowKey = [u8; 38];

impl FlowOrderCheck {
    /// A check remembering the last `window` pushes.
    pub fn new(window: usize) -> Self {
        let window = window.max(1);
        FlowOrderCheck {
            window: VecDeque::with_capacity(window),
            capacity: window,
            next_index: 0,
            by_fingerprint: HashMap::with_capacity(window),
            // Pruned every `window` pushes to the flows handed out in the last window, so it
            // holds at most the flows of two windows between prunes.
            last_by_flow: HashMap::with_capacity(2 * window),
            mismatches: 0,
            unverified: 0,
        }
    }

    /// The engine accepted `packet`.
    pub fn pushed(&mut self, packet: &[u8]) {
        // The latest copy of a fingerprint leaving the window takes the earlier ones with it.
        if self.window.len() == self.capacity
            && let Some((fingerprint, index)) = self.window.pop_front()
            && self.by_fingerprint.get(&fingerprint).map(|e| e.0) == Some(index)
        {
            self.by_fingerprint.remove(&fingerprint);
        }
        let fingerprint = fnv1a(packet);
        self.window.push_back((fingerprint, self.next_index));
        let entry = self.by_fingerprint.entry(fingerprint).or_insert((0, 0));
        *entry = (self.next_index, entry.1.saturating_add(1));
        self.next_index += 1;
        // Flows whose last hand-out is older than the window cannot see a mismatch any more:
        // every packet of theirs still to come was pushed later. Forget them now and then.
        if self.next_index.is_multiple_of(self.capacity as u64) {
            let start = self.next_index.saturating_sub(self.capacity as u64);
            self.last_by_flow.retain(|_, last| *last >= start);
        }
    }

    /// The engine handed out `packet`; whether it kept its flow's order.
    pub fn handed_out(&mut self, packet: &[u8]) -> bool {
        let fingerprint = fnv1a(packet);
        let index = match self.by_fingerprint.get_mut(&fingerprint) {
            None => {
                self.unverified += 1;
                return true;
            }
            // Another copy is remembered too: which one this is, nothing tells.
            Some((_, copies)) if *copies > 1 => {
                *copies -= 1;
                self.unverified += 1;
                return true;
            }
            Some(&mut (index, _)) => {
                self.by_fingerprint.remove(&fingerprint);
                index
            }
        };
        let last = self.last_by_flow.entry(flow_key(packet)).or_insert(index);
        let in_order = *last <= index;
        if in_order {
            *last = index;
        } else {
            self.mismatches += 1;
        }
        in_order
    }

    /// Bytes the check may hold at most, fixed at creation.
    pub fn storage_bytes(&self) -> usize {
        self.window.capacity() * 16
            + self.by_fingerprint.capacity() * size_of::<(u64, (u64, u32))>()
            + self.last_by_flow.capacity() * (size_of::<FlowKey>() + 8)
    }
}

/// The flow key of an IP packet: version, addresses, protocol, and ports for TCP and UDP;
/// fragments by address pair; anything unparsable maps to one key.
pub fn flow_key(packet: &[u8]) -> FlowKey {
    let mut key = [0u8; 38];
    let (header, src, dst, protocol, fragment) = match packet.first().map(|b| b >> 4) {
        Some(4) if packet.len() >= 20 => {
            let header = usize::from(packet[0] & 0x0f) * 4;
            let fragment = u16::from_be_bytes([packet[6], packet[7]]) & 0x3fff != 0;
            (
                header,
                &packet[12..16],
                &packet[16..20],
                packet[9],
                fragment,
            )
        }
        Some(6) if packet.len() >= 40 => (
            40,
            &packet[8..24],
            &packet[24..40],
            packet[6],
            packet[6] == 44,
        ),
        _ => return key,
    };
    key[0] = packet[0] >> 4;
    key[1..1 + src.len()].copy_from_slice(src);
    key[17..17 + dst.len()].copy_from_slice(dst);
    if fragment {
        key[33] = 0xff;
        return key;
    }
    key[33] = protocol;
    if matches!(protocol, 6 | 17)
        && let Some(ports) = packet.get(header..header + 4)
    {
        key[34..38].copy_from_slice(ports);
    }
    key
}

/// FNV-1a, 64 bits: a cheap fingerprint to follow packets through the engine.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use tidegate_core::{Aqm, Instant, TunnelConfig};

    use super::*;
    use crate::storage::heap_tunnel;

    /// The forwarder's order check kept the fingerprints of packets CoDel dropped, so it grew
    /// without bound under a flood and counted every later packet as reordered. Driven through a
    /// real tunnel with CoDel dropping, it stays within the ring's slots and sees no reorder.
    #[test]
    fn codel_drops_neither_grow_the_check_nor_count_as_reorders() {
        let config = TunnelConfig {
            aqm: Aqm::CODEL_DEFAULT,
            ..TunnelConfig::DEFAULT
        };
        let mut tunnel = heap_tunnel(config).unwrap();
        let mut check = OrderCheck::new(config.outbound_packets as usize);
        let storage = check.storage_bytes();
        let mut seq = 0u32;
        // A flood at twice the drain rate for 5 s of virtual time: 2 packets in, 1 out, per ms.
        for ms in 0..5_000u64 {
            let now = Instant::from_millis(ms);
            for _ in 0..2 {
                if !tunnel.can_read_outbound() {
                    break;
                }
                seq += 1;
                let mut packet = [0u8; 1200];
                packet[..4].copy_from_slice(&seq.to_be_bytes());
                tunnel.on_outbound_packet(now, &packet).unwrap();
                check.pushed(&packet);
            }
            if let Some(packet) = tunnel.poll_outbound(now) {
                let packet = packet.to_vec();
                let drops = tunnel.stats().outbound.aqm_dropped_packets;
                assert!(check.handed_out(&packet, drops), "at {ms} ms");
                // This host checks can_read_outbound every tick, so the resume edge needs no action.
                let _ = tunnel.complete_outbound(now, 1).unwrap();
            }
            let queued = tunnel.stats().outbound.packets_queued;
            assert_eq!(
                check.len() as u64,
                queued,
                "one fingerprint per queued packet"
            );
        }
        assert!(
            tunnel.stats().outbound.aqm_dropped_packets > 0,
            "CoDel dropped"
        );
        assert_eq!((check.mismatches, check.overflows), (0, 0));
        assert_eq!(check.storage_bytes(), storage, "no growth");
    }

    #[test]
    fn per_flow_order_allows_flows_to_pass_each_other_but_not_themselves() {
        let udp = |sport: u8, seq: u8| {
            let mut p = vec![
                0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
            ];
            p.extend_from_slice(&[0, sport, 0, 9, 0, 0, 0, 0, seq]);
            p
        };
        let mut check = FlowOrderCheck::new(16);
        for packet in [udp(1, 0), udp(1, 1), udp(2, 0)] {
            check.pushed(&packet);
        }
        assert!(check.handed_out(&udp(2, 0)), "another flow may pass");
        assert!(check.handed_out(&udp(1, 1)), "a drop of (1, 0) is allowed");
        check.pushed(&udp(1, 0));
        check.pushed(&udp(1, 2));
        assert!(check.handed_out(&udp(1, 2)));
        // A packet of flow 1 pushed before (1, 2) and handed out after it: reordered.
        let mut late = FlowOrderCheck::new(16);
        late.pushed(&udp(1, 5));
        late.pushed(&udp(1, 6));
        assert!(late.handed_out(&udp(1, 6)));
        assert!(!late.handed_out(&udp(1, 5)));
        assert_eq!(late.mismatches, 1);
        // A byte-identical copy (a retransmission) queued while the original still is: the
        // packets between them keep their order, and neither copy is blamed (found by a
        // real-traffic run, where the check counted one reorder the engine did not make).
        let mut copies = FlowOrderCheck::new(16);
        for packet in [udp(1, 7), udp(1, 8), udp(1, 7), udp(1, 9)] {
            copies.pushed(&packet);
        }
        for packet in [udp(1, 7), udp(1, 8), udp(1, 7), udp(1, 9)] {
            assert!(copies.handed_out(&packet), "{packet:?} in order");
        }
        assert_eq!((copies.mismatches, copies.unverified), (0, 1));
        // Bounded: 100,000 pushes leave the storage as it was.
        let storage = check.storage_bytes();
        for i in 0..100_000u32 {
            let mut p = udp((i % 7) as u8, 0);
            p.extend_from_slice(&i.to_be_bytes());
            check.pushed(&p);
            if i % 3 == 0 {
                check.handed_out(&p);
            }
        }
        assert_eq!(check.storage_bytes(), storage);
        assert_eq!(check.mismatches, 0);
    }

    #[test]
    fn a_swapped_pair_is_seen() {
        let mut check = OrderCheck::new(4);
        check.pushed(b"a");
        check.pushed(b"b");
        assert!(!check.handed_out(b"b", 0));
        assert_eq!(check.mismatches, 1);
    }
}
