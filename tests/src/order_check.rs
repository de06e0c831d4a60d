//! The order check a host keeps beside a packet tunnel: did the engine hand packets out in the
//! order they were pushed, apart from the ones it reports dropping?
//!
//! The host keeps a fingerprint of every packet it pushes, oldest first, and compares each packet
//! handed out with the oldest one. The engine drops packets too (CoDel at hand-out, drop-oldest
//! on arrival), and reports them only in counters, so the check follows those counters: before
//! comparing, it forgets as many of the oldest fingerprints as the engine dropped since the last
//! look. It holds at most one fingerprint per slot of the ring, allocated once: a host that must
//! keep a memory ceiling cannot keep an order check that grows with the traffic.

use std::collections::VecDeque;

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
    fn a_swapped_pair_is_seen() {
        let mut check = OrderCheck::new(4);
        check.pushed(b"a");
        check.pushed(b"b");
        assert!(!check.handed_out(b"b", 0));
        assert_eq!(check.mismatches, 1);
    }
}
