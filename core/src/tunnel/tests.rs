use super::*;
use crate::aqm::Aqm;

type TestTunnel = PacketTunnel<Vec<u8>, Vec<Slot>, Vec<FlowQueue>>;

fn tunnel(config: TunnelConfig) -> TestTunnel {
    let storage = TunnelStorage {
        outbound_arena: vec![0; config.outbound_bytes as usize],
        outbound_slots: vec![Slot::EMPTY; config.outbound_packets as usize],
        inbound_arena: vec![0; config.inbound_bytes as usize],
        inbound_slots: vec![Slot::EMPTY; config.inbound_packets as usize],
        outbound_queues: vec![FlowQueue::EMPTY; config.aqm.flow_queues() as usize],
        inbound_queues: vec![FlowQueue::EMPTY; config.aqm.flow_queues() as usize],
    };
    PacketTunnel::new(config, storage).unwrap()
}

/// Small rings: 1000 bytes / 10 packets each way, packets up to 100 bytes, pause at 700 bytes
/// or 8 packets, resume at 300 bytes and 4 packets. Packets are packed back to back (alignment
/// 1), so byte levels are exact sums of packet lengths.
fn small() -> TunnelConfig {
    TunnelConfig {
        outbound_bytes: 1000,
        outbound_packets: 10,
        inbound_bytes: 1000,
        inbound_packets: 10,
        max_packet_len: 100,
        outbound_high_watermark_bytes: 700,
        outbound_low_watermark_bytes: 300,
        outbound_high_watermark_packets: 8,
        outbound_low_watermark_packets: 4,
        inbound_drop_policy: DropPolicy::DropNewest,
        aqm: Aqm::Off,
        packet_align: 1,
        byte_queue_limit: crate::ByteQueueLimit::Off,
    }
}

fn t(micros: u64) -> Instant {
    Instant::from_micros(micros)
}

#[test]
fn reading_pauses_at_high_and_resumes_once_at_low() {
    let mut tun = tunnel(small());
    for i in 0..7u8 {
        assert!(
            tun.can_read_outbound(),
            "still below 700 bytes before packet {i}"
        );
        tun.on_outbound_packet(t(10), &[i; 100]).unwrap();
    }
    assert!(!tun.can_read_outbound(), "700 bytes held: paused");
    // The rest of a read batch is still accepted in the headroom.
    tun.on_outbound_packet(t(10), &[7; 100]).unwrap();
    for _ in 0..8 {
        tun.poll_outbound(t(20)).unwrap();
    }
    assert_eq!(tun.poll_outbound(t(20)), None);
    let first = tun.complete_outbound(t(30), 4).unwrap();
    assert_eq!(
        first.released,
        Released {
            packets: 4,
            bytes: 400
        }
    );
    assert!(
        !first.resume_reading,
        "400 bytes held is above the low watermark"
    );
    assert!(!tun.can_read_outbound());
    let second = tun.complete_outbound(t(40), 1).unwrap();
    assert!(
        second.resume_reading,
        "300 bytes and 3 packets: resume, edge-triggered"
    );
    assert!(tun.can_read_outbound());
    let third = tun.complete_outbound(t(50), 3).unwrap();
    assert!(!third.resume_reading, "the resume edge is reported once");
    let stats = tun.stats();
    assert_eq!(stats.outbound_pauses, 1);
    assert_eq!(stats.outbound_paused_micros, 30, "paused from t=10 to t=40");
    assert_eq!(stats.outbound.bytes_high_water, 800);
    assert_eq!(stats.outbound.packets_completed, 8);
}

#[test]
fn the_packet_watermark_pauses_small_packets() {
    let mut tun = tunnel(small());
    for _ in 0..8 {
        tun.on_outbound_packet(t(0), &[1; 10]).unwrap();
    }
    assert!(
        !tun.can_read_outbound(),
        "8 packets of 80 bytes total: paused by count"
    );
    for _ in 0..4 {
        tun.poll_outbound(t(0)).unwrap();
    }
    assert!(tun.complete_outbound(t(1), 4).unwrap().resume_reading);
}

#[test]
fn a_batch_is_the_prefix_one_push_at_a_time_would_take() {
    let packets: [&[u8]; 5] = [&[1; 100], &[2; 100], &[], &[3; 10], &[4; 200]];
    for start in 0..packets.len() {
        let mut batched = tunnel(small());
        let mut single = tunnel(small());
        let batch = batched.on_outbound_batch(t(5), packets[start..].iter().copied());
        let mut accepted = 0;
        let mut stopped_by = None;
        for packet in &packets[start..] {
            match single.on_outbound_packet(t(5), packet) {
                Ok(()) => accepted += 1,
                Err(error) => {
                    stopped_by = Some(error);
                    break;
                }
            }
        }
        assert_eq!(
            batch,
            BatchPush {
                accepted,
                stopped_by
            }
        );
        assert_eq!(batched.stats(), single.stats());
    }
    // A full ring stops the batch at the first packet without room.
    let mut tun = tunnel(small());
    let full: [&[u8]; 12] = [&[9; 100]; 12];
    let batch = tun.on_outbound_batch(t(0), full);
    assert_eq!(
        batch,
        BatchPush {
            accepted: 10,
            stopped_by: Some(PacketError::NoRoom)
        }
    );
    assert_eq!(
        tun.stats().outbound_refused_packets,
        1,
        "only the first refusal counts"
    );
}

#[test]
fn no_room_leaves_the_packet_with_the_caller_and_counts_it() {
    let mut tun = tunnel(small());
    for _ in 0..10 {
        tun.on_outbound_packet(t(0), &[1; 100]).unwrap();
    }
    let before = tun.outbound.levels();
    assert_eq!(
        tun.on_outbound_packet(t(0), &[2; 50]),
        Err(PacketError::NoRoom)
    );
    assert_eq!(
        tun.outbound.levels(),
        before,
        "a refused packet changes no level"
    );
    let stats = tun.stats();
    assert_eq!(
        (stats.outbound_refused_packets, stats.outbound_refused_bytes),
        (1, 50)
    );
    assert_eq!(stats.outbound.packets_accepted, 10);
}

#[test]
fn empty_and_oversized_packets_have_distinct_errors_and_counters() {
    let mut tun = tunnel(small());
    assert_eq!(tun.on_outbound_packet(t(0), &[]), Err(PacketError::Empty));
    assert_eq!(
        tun.on_outbound_packet(t(0), &[0; 101]),
        Err(PacketError::TooLong { len: 101, max: 100 })
    );
    assert_eq!(tun.on_inbound_packet(t(0), &[]), Err(PacketError::Empty));
    assert_eq!(
        tun.on_inbound_packet(t(0), &[0; 200]),
        Err(PacketError::TooLong { len: 200, max: 100 })
    );
    let stats = tun.stats();
    assert_eq!(
        (
            stats.outbound.empty_packets,
            stats.outbound.oversized_packets
        ),
        (1, 1)
    );
    assert_eq!(
        (stats.inbound.empty_packets, stats.inbound.oversized_packets),
        (1, 1)
    );
    assert_eq!(
        stats.outbound.packets_accepted + stats.inbound.packets_accepted,
        0
    );
    assert_eq!(
        stats.outbound_refused_packets, 0,
        "bad packets are not 'no room' refusals"
    );
}

#[test]
fn inbound_drop_newest_keeps_the_queue_and_accounts_for_every_packet() {
    let mut tun = tunnel(small());
    let mut dispositions = Vec::new();
    for i in 0..15u8 {
        dispositions.push(tun.on_inbound_packet(t(0), &[i; 100]).unwrap());
    }
    let queued = dispositions
        .iter()
        .filter(|d| **d == InboundDisposition::Queued)
        .count();
    assert_eq!(queued, 10);
    let stats = tun.stats();
    assert_eq!(stats.inbound_dropped_newest_packets, 5);
    assert_eq!(
        stats.inbound.packets_accepted + stats.inbound_dropped_newest_packets,
        15
    );
    assert_eq!(
        tun.poll_inbound(t(0)),
        Some(&[0u8; 100][..]),
        "the oldest packet survived"
    );
}

#[test]
fn inbound_drop_oldest_makes_room_for_fresh_packets() {
    let mut tun = tunnel(TunnelConfig {
        inbound_drop_policy: DropPolicy::DropOldest,
        ..small()
    });
    for i in 0..10u8 {
        tun.on_inbound_packet(t(0), &[i; 100]).unwrap();
    }
    assert_eq!(
        tun.on_inbound_packet(t(0), &[10; 100]).unwrap(),
        InboundDisposition::QueuedAfterDroppingOldest {
            packets: 1,
            bytes: 100
        }
    );
    let mut seen = Vec::new();
    while let Some(p) = tun.poll_inbound(t(0)) {
        seen.push(p[0]);
    }
    assert_eq!(seen, (1..=10).collect::<Vec<u8>>());
    let stats = tun.stats();
    assert_eq!(
        (
            stats.inbound_dropped_oldest_packets,
            stats.inbound_dropped_oldest_bytes
        ),
        (1, 100)
    );
}

#[test]
fn inbound_drop_oldest_drops_the_new_packet_while_packets_are_in_flight() {
    let mut tun = tunnel(TunnelConfig {
        inbound_drop_policy: DropPolicy::DropOldest,
        ..small()
    });
    for i in 0..10u8 {
        tun.on_inbound_packet(t(0), &[i; 100]).unwrap();
    }
    tun.poll_inbound(t(0)).unwrap();
    assert_eq!(
        tun.on_inbound_packet(t(0), &[99; 100]).unwrap(),
        InboundDisposition::DroppedNewest
    );
    assert_eq!(
        tun.stats().inbound_dropped_oldest_packets,
        0,
        "no queued packet was sacrificed"
    );
    assert_eq!(tun.inbound_in_flight().next(), Some(&[0u8; 100][..]));
}

#[test]
fn time_going_backwards_is_clamped() {
    let mut tun = tunnel(small());
    for _ in 0..8 {
        tun.on_outbound_packet(t(1_000), &[1; 100]).unwrap();
    }
    assert!(tun.stats().outbound_paused);
    for _ in 0..8 {
        tun.poll_outbound(t(500)).unwrap();
    }
    let done = tun.complete_outbound(t(400), 8).unwrap();
    assert!(done.resume_reading);
    assert_eq!(
        tun.stats().outbound_paused_micros,
        0,
        "an earlier now never yields a negative pause"
    );
}

#[test]
fn an_ongoing_pause_counts_up_to_the_latest_now() {
    let mut tun = tunnel(small());
    for _ in 0..8 {
        tun.on_outbound_packet(t(100), &[1; 100]).unwrap();
    }
    assert!(tun.poll_outbound(t(350)).is_some());
    assert_eq!(tun.stats().outbound_paused_micros, 250);
}

#[test]
fn complete_more_than_in_flight_is_refused_and_changes_nothing() {
    let mut tun = tunnel(small());
    tun.on_outbound_packet(t(0), &[1; 10]).unwrap();
    tun.poll_outbound(t(0)).unwrap();
    let before = tun.stats();
    assert_eq!(
        tun.complete_outbound(t(0), 2),
        Err(CompleteError {
            requested: 2,
            in_flight: 1
        })
    );
    assert_eq!(
        tun.complete_inbound(t(0), 1),
        Err(CompleteError {
            requested: 1,
            in_flight: 0
        })
    );
    assert_eq!(tun.stats(), before);
}

#[test]
fn storage_must_match_the_config() {
    let config = small();
    let storage = TunnelStorage {
        outbound_arena: vec![0; 999],
        outbound_slots: vec![Slot::EMPTY; 10],
        inbound_arena: vec![0; 1000],
        inbound_slots: vec![Slot::EMPTY; 10],
        outbound_queues: vec![],
        inbound_queues: vec![],
    };
    assert_eq!(
        PacketTunnel::new(config, storage).unwrap_err(),
        ConfigError::StorageMismatch
    );
    assert_eq!(TestTunnel::footprint(&config), 2000 + 20 * 16);
}

#[test]
fn works_in_fixed_arrays_without_an_allocator() {
    let config = small();
    let storage = TunnelStorage {
        outbound_arena: [0u8; 1000],
        outbound_slots: [Slot::EMPTY; 10],
        inbound_arena: [0u8; 1000],
        inbound_slots: [Slot::EMPTY; 10],
        outbound_queues: [],
        inbound_queues: [],
    };
    let mut tun = PacketTunnel::new(config, storage).unwrap();
    tun.on_outbound_packet(t(0), b"hello").unwrap();
    assert_eq!(tun.poll_outbound(t(0)), Some(&b"hello"[..]));
}

#[cfg(feature = "bytes")]
#[test]
fn a_chained_buf_is_gathered_into_one_contiguous_packet() {
    use bytes::Buf;
    let mut tun = tunnel(small());
    let mut chain = (&b"head-"[..]).chain(&b"tail"[..]);
    tun.on_outbound_buf(t(0), &mut chain).unwrap();
    assert_eq!(chain.remaining(), 0, "consumed on success");
    assert_eq!(tun.poll_outbound(t(0)), Some(&b"head-tail"[..]));
    let mut too_long = (&[0u8; 60][..]).chain(&[0u8; 60][..]);
    assert_eq!(
        tun.on_outbound_buf(t(0), &mut too_long),
        Err(PacketError::TooLong { len: 120, max: 100 })
    );
    assert_eq!(too_long.remaining(), 120, "left untouched on error");
}

/// The small tunnel with CoDel, paused by eight 100-byte packets pushed at t = 0.
fn paused_with_codel() -> TestTunnel {
    let mut tun = tunnel(TunnelConfig {
        aqm: Aqm::CODEL_DEFAULT,
        ..small()
    });
    for _ in 0..8 {
        tun.on_outbound_packet(t(0), &[1; 100]).unwrap();
    }
    assert!(!tun.can_read_outbound(), "8 packets: paused");
    tun
}

#[test]
fn codel_overload_empties_a_paused_ring_and_the_resume_edge_still_arrives() {
    let mut tun = paused_with_codel();
    // 50 ms later the head has waited 10x the target: CoDel arms its interval, drops nothing.
    assert!(tun.poll_outbound(t(50_000)).is_some());
    assert!(!tun.complete_outbound(t(50_000), 1).unwrap().resume_reading);
    assert_eq!(
        tun.stats().outbound.aqm_dropped_packets,
        0,
        "a burst gets backpressure"
    );
    // After a whole interval above target CoDel drops; reading is paused, so this is overload:
    // every stale packet but the last goes, and that one is still handed out.
    let handed = tun.poll_outbound(t(200_000));
    assert!(handed.is_some(), "a packet is handed out even after drops");
    let stats = tun.stats();
    assert_eq!(stats.outbound.aqm_dropped_packets, 6);
    assert_eq!(stats.outbound.last_sojourn_micros, 200_000);
    let done = tun.complete_outbound(t(200_100), 1).unwrap();
    assert!(
        done.resume_reading,
        "the ring is empty: reading resumes on this completion"
    );
    assert!(tun.can_read_outbound());
    // Nothing was lost silently: every accepted packet was completed or dropped by CoDel.
    let stats = tun.stats();
    assert_eq!(
        stats.outbound.packets_completed + stats.outbound.aqm_dropped_packets,
        8
    );
}

#[test]
fn codel_without_a_pause_drops_one_packet_per_control_law_step() {
    let config = TunnelConfig {
        aqm: Aqm::CODEL_DEFAULT,
        ..small()
    };
    let mut tun = tunnel(config);
    for _ in 0..6 {
        tun.on_outbound_packet(t(0), &[1; 100]).unwrap();
    }
    assert!(
        tun.can_read_outbound(),
        "600 bytes, 6 packets: below the high watermarks"
    );
    assert!(tun.poll_outbound(t(50_000)).is_some());
    assert!(!tun.complete_outbound(t(50_000), 1).unwrap().resume_reading);
    assert!(tun.poll_outbound(t(200_000)).is_some());
    assert_eq!(tun.stats().outbound.aqm_dropped_packets, 1);
}

/// Found by the `tunnel` fuzz target: packets CoDel dropped behind a packet in flight keep their
/// slots until it completes, so the packet watermark must count them, or the slots run out while
/// reading is still allowed and a packet read then is refused.
#[test]
fn slots_of_packets_dropped_behind_in_flight_ones_count_toward_the_packet_watermark() {
    let config = TunnelConfig {
        outbound_bytes: 10_000,
        outbound_high_watermark_bytes: 7_000,
        outbound_low_watermark_bytes: 3_000,
        aqm: Aqm::CODEL_DEFAULT,
        ..small()
    };
    let mut tun = tunnel(config);
    for _ in 0..7 {
        tun.on_outbound_packet(t(0), &[1; 100]).unwrap();
    }
    assert!(
        tun.poll_outbound(t(50_000)).is_some(),
        "in flight, never completed"
    );
    // An interval above target later, CoDel drops one packet behind the in-flight one.
    assert!(tun.poll_outbound(t(200_000)).is_some());
    let stats = tun.stats();
    assert_eq!(stats.outbound.aqm_dropped_packets, 1);
    assert!(!stats.outbound_overloaded, "7 of 8 slots: not pressed");
    // 2 in flight + 1 dropped-pending + 4 queued = 7 slots; one more reaches the watermark of 8.
    assert!(tun.can_read_outbound());
    tun.on_outbound_packet(t(200_000), &[2; 100]).unwrap();
    assert!(
        !tun.can_read_outbound(),
        "8 slots held: the packet watermark pauses reading"
    );
    // And the two free slots take a packet read while reading was allowed.
    tun.on_outbound_packet(t(200_000), &[3; 100]).unwrap();
}

#[test]
fn alignment_padding_counts_toward_the_byte_watermark() {
    let config = TunnelConfig {
        outbound_packets: 20,
        outbound_high_watermark_packets: 16,
        outbound_low_watermark_packets: 8,
        packet_align: 64,
        ..small()
    };
    let mut tun = tunnel(config);
    // Each 40-byte packet after the first starts 64 bytes after the one before it: ten of them
    // take 40 + 9 * 64 = 616 arena bytes, an eleventh 680, a twelfth 744 (past 700).
    for i in 0..11u8 {
        tun.on_outbound_packet(t(1), &[i; 40]).unwrap();
        assert!(
            tun.can_read_outbound(),
            "{} arena bytes",
            40 + 64 * usize::from(i)
        );
    }
    tun.on_outbound_packet(t(1), &[11; 40]).unwrap();
    assert!(
        !tun.can_read_outbound(),
        "480 payload bytes, but 744 arena bytes"
    );
    let stats = tun.stats().outbound;
    assert_eq!(stats.bytes_queued, 12 * 40);
    assert_eq!(stats.arena_bytes_used, 40 + 11 * 64);
    assert_eq!(stats.bytes_high_water, 40 + 11 * 64);
    for _ in 0..12 {
        let packet = tun.poll_outbound(t(2)).unwrap();
        assert_eq!(
            packet.as_ptr().addr() % 64,
            0,
            "every packet on a cache line"
        );
    }
    // Completing 7 leaves 5 packets in 40 + 4 * 64 = 296 arena bytes: at most the low 300.
    assert!(!tun.complete_outbound(t(3), 6).unwrap().resume_reading);
    assert!(tun.complete_outbound(t(3), 1).unwrap().resume_reading);
    assert_eq!(tun.stats().outbound.arena_bytes_used, 40 + 4 * 64);
}

/// Found by a host written from the docs: overload was entered but never left, so reading never
/// paused at the high watermark again and packets read while reading was allowed were refused.
/// The sequence is the reproducer, step for step.
#[test]
fn overload_ends_on_the_completion_that_reaches_the_low_watermarks() {
    let mut tun = paused_with_codel();
    assert!(tun.poll_outbound(t(50_000)).is_some());
    assert!(!tun.complete_outbound(t(50_000), 1).unwrap().resume_reading);
    assert!(tun.poll_outbound(t(200_000)).is_some());
    assert!(
        tun.stats().outbound_overloaded,
        "CoDel dropped while paused"
    );
    let done = tun.complete_outbound(t(200_100), 1).unwrap();
    assert!(done.resume_reading);
    let stats = tun.stats();
    assert!(!stats.outbound_overloaded, "back at the low watermarks");
    assert_eq!(stats.outbound_overloads, 1);
    // Ten seconds later the ring fills again: reading pauses at the high watermark as before,
    // and every packet pushed while reading was allowed fits.
    for i in 0..10 {
        let could_read = tun.can_read_outbound();
        tun.on_outbound_packet(t(10_000_000), &[2; 100]).unwrap();
        assert_eq!(could_read, i < 7, "700 bytes pause reading, packet {i}");
    }
    assert!(!tun.can_read_outbound());
    assert_eq!(
        tun.on_outbound_packet(t(10_000_000), &[3; 100]),
        Err(PacketError::NoRoom)
    );
    assert_eq!(tun.stats().outbound_pauses, 2);
}

/// A refused packet changed the clock: an empty or oversized packet with a later `now` moved the
/// pause accounting forward although the call did nothing.
#[test]
fn a_refused_packet_leaves_the_clock_and_everything_but_its_counter() {
    let mut tun = tunnel(small());
    for _ in 0..8 {
        tun.on_outbound_packet(t(100), &[1; 100]).unwrap();
    }
    let later = t(1_000_000_000);
    let before = tun.stats();
    assert_eq!(tun.on_outbound_packet(later, &[]), Err(PacketError::Empty));
    assert_eq!(
        tun.on_outbound_packet(later, &[0; 101]),
        Err(PacketError::TooLong { len: 101, max: 100 })
    );
    assert_eq!(tun.on_inbound_packet(later, &[]), Err(PacketError::Empty));
    assert_eq!(
        tun.on_inbound_packet(later, &[0; 101]),
        Err(PacketError::TooLong { len: 101, max: 100 })
    );
    // Two slots are left: fill them, then one more is refused for room.
    tun.on_outbound_packet(t(100), &[1; 100]).unwrap();
    tun.on_outbound_packet(t(100), &[1; 100]).unwrap();
    let full = tun.stats();
    assert_eq!(
        tun.on_outbound_packet(later, &[1; 100]),
        Err(PacketError::NoRoom)
    );
    assert_eq!(
        tun.complete_outbound(later, 1).map(|_| ()),
        Err(CompleteError {
            requested: 1,
            in_flight: 0
        })
    );
    assert_eq!(
        tun.complete_inbound(later, 1).map(|_| ()),
        Err(CompleteError {
            requested: 1,
            in_flight: 0
        })
    );
    let after = tun.stats();
    assert_eq!(after.outbound_paused_micros, 0, "the clock did not move");
    assert_eq!(
        after.outbound.empty_packets,
        before.outbound.empty_packets + 1
    );
    assert_eq!(
        after.outbound.oversized_packets,
        before.outbound.oversized_packets + 1
    );
    assert_eq!(after.inbound.empty_packets, 1);
    assert_eq!(after.inbound.oversized_packets, 1);
    assert_eq!(
        after.outbound_refused_packets,
        full.outbound_refused_packets + 1
    );
    // Apart from those counters nothing changed.
    let mut expected = full;
    expected.outbound_refused_packets += 1;
    expected.outbound_refused_bytes += 100;
    assert_eq!(after, expected);
}

/// Any memory pressure level.
fn pressure() -> impl proptest::strategy::Strategy<Value = Pressure> {
    use proptest::prelude::*;
    prop_oneof![
        Just(Pressure::Normal),
        Just(Pressure::Elevated),
        Just(Pressure::Critical)
    ]
}

mod host_loop {
    //! A host loop driven by random operations, checking the flow-control promises of the docs
    //! after every call, across pauses and CoDel overload episodes.
    use proptest::prelude::*;

    use super::*;

    #[derive(Clone, Debug)]
    enum Op {
        /// Read a batch of this many packets of these lengths, as `readPackets` does.
        Read(Vec<u8>),
        /// Hand out up to this many packets.
        Send(u8),
        /// Complete this many of the in-flight packets.
        Complete(u8),
        /// Let this many milliseconds pass.
        Wait(u16),
        /// Memory pressure changes to this level.
        Pressure(Pressure),
    }

    /// The watermarks the docs promise at `level`: each scaled by `Pressure::scale`, the low
    /// ones kept below the high ones. (high bytes, high packets, low bytes, low packets)
    fn watermarks(config: &TunnelConfig, level: Pressure) -> (usize, usize, usize, usize) {
        let high_bytes = level.scale_u32(config.outbound_high_watermark_bytes);
        let high_packets = level.scale_u32(config.outbound_high_watermark_packets);
        let low_bytes = level
            .scale_u32(config.outbound_low_watermark_bytes)
            .min(high_bytes - 1);
        let low_packets = level
            .scale_u32(config.outbound_low_watermark_packets)
            .min(high_packets - 1);
        (
            high_bytes as usize,
            high_packets as usize,
            low_bytes as usize,
            low_packets as usize,
        )
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => proptest::collection::vec(1u8..=100, 1..6).prop_map(Op::Read),
            3 => (1u8..6).prop_map(Op::Send),
            3 => (1u8..6).prop_map(Op::Complete),
            2 => (0u16..300).prop_map(Op::Wait),
            1 => super::pressure().prop_map(Op::Pressure),
        ]
    }

    proptest! {
        #![proptest_config(crate::proptest_config::with_cases(300))]

        /// A packet read while reading was allowed always fits; reading pauses at a high
        /// watermark; `resume_reading` is reported on exactly the completion that resumes; and
        /// overload ends on the completion that brings the ring to its low watermarks; all of it
        /// with the watermarks memory pressure shrinks and grows back.
        #[test]
        fn flow_control_holds_across_overload_episodes(
            codel in any::<bool>(),
            ops in proptest::collection::vec(op(), 1..crate::proptest_config::ops(300)),
        ) {
            let config = TunnelConfig {
                aqm: if codel { Aqm::CODEL_DEFAULT } else { Aqm::Off },
                ..small()
            };
            let mut tun = tunnel(config);
            let mut now = 0u64;
            let mut in_flight = 0usize;
            let mut level = Pressure::Normal;
            for op in ops {
                let (high_bytes, high_packets, low_bytes, low_packets) =
                    watermarks(&config, level);
                match op {
                    Op::Read(lens) => {
                        // The host reads only when allowed, and keeps pushing the whole batch.
                        if !tun.can_read_outbound() {
                            continue;
                        }
                        for len in lens {
                            let allowed = tun.can_read_outbound();
                            let pushed = tun.on_outbound_packet(t(now), &vec![7; usize::from(len)]);
                            if allowed {
                                prop_assert_eq!(pushed, Ok(()), "read while allowed must fit");
                            }
                            let (bytes, slots) = tun.outbound_held();
                            if bytes >= high_bytes || slots >= high_packets {
                                prop_assert!(!tun.can_read_outbound(), "paused at a high watermark");
                            }
                        }
                    }
                    Op::Send(n) => {
                        for _ in 0..n {
                            if tun.poll_outbound(t(now)).is_none() {
                                break;
                            }
                            in_flight += 1;
                        }
                    }
                    Op::Complete(n) => {
                        let n = usize::from(n).min(in_flight);
                        let was_paused = !tun.can_read_outbound();
                        let done = tun.complete_outbound(t(now), n).unwrap();
                        in_flight -= n;
                        let stats = tun.stats();
                        let (bytes, slots) = tun.outbound_held();
                        let at_low = bytes <= low_bytes && slots <= low_packets;
                        prop_assert_eq!(done.resume_reading, was_paused && at_low);
                        prop_assert_eq!(tun.can_read_outbound(), !was_paused || at_low);
                        if at_low {
                            prop_assert!(!stats.outbound_overloaded, "overload ends at low");
                        }
                    }
                    Op::Wait(ms) => now += u64::from(ms) * 1_000,
                    Op::Pressure(to) => {
                        let was_paused = !tun.can_read_outbound();
                        let resume = tun.on_pressure(t(now), to);
                        level = to;
                        let (high_bytes, high_packets, low_bytes, low_packets) =
                            watermarks(&config, level);
                        let limits = tun.limits();
                        prop_assert_eq!(
                            (
                                limits.outbound_high_watermark_bytes as usize,
                                limits.outbound_high_watermark_packets as usize,
                                limits.outbound_low_watermark_bytes as usize,
                                limits.outbound_low_watermark_packets as usize,
                            ),
                            (high_bytes, high_packets, low_bytes, low_packets)
                        );
                        let (bytes, slots) = tun.outbound_held();
                        let at_high = bytes >= high_bytes || slots >= high_packets;
                        let at_low = bytes <= low_bytes && slots <= low_packets;
                        prop_assert_eq!(resume, was_paused && at_low, "resume edge on growth");
                        prop_assert_eq!(
                            tun.can_read_outbound(),
                            (!was_paused || at_low) && !at_high,
                            "shrinking pauses at the new high watermark"
                        );
                    }
                }
                let stats = tun.stats();
                if stats.outbound_overloaded {
                    prop_assert!(codel, "overload needs CoDel");
                }
            }
        }
    }
}

/// Flow-queue mode: 8 cells of 128 bytes each way, 16 queues, packets up to 100 bytes.
fn fq_small() -> TunnelConfig {
    let mut config = TunnelConfig {
        aqm: Aqm::fq_codel(16, [3; 16]),
        packet_align: 64,
        ..small()
    };
    config.outbound_packets = 8;
    config.inbound_packets = 8;
    config.outbound_bytes = 8 * config.cell_bytes();
    config.inbound_bytes = 8 * config.cell_bytes();
    config
}

/// A UDP/IPv4 packet of flow `port` with `seq` at the end, 33 bytes.
fn flow_packet(port: u16, seq: u8) -> Vec<u8> {
    let mut p = crate::fq::udp4([10, 0, 0, 1], port, [10, 0, 0, 2], 9, 4);
    p.push(seq);
    p
}

#[test]
fn flow_queue_config_needs_whole_cells_and_counts_its_tables() {
    let config = fq_small();
    assert_eq!(config.cell_bytes(), 128);
    config.validate().unwrap();
    assert_eq!(
        PacketTunnel::<Vec<u8>, Vec<Slot>, Vec<FlowQueue>>::footprint(&config),
        2 * 8 * 128 + 16 * 16 + 2 * 16 * 64,
        "arenas, slots and two queue tables of 64-byte queues"
    );
    assert_eq!(core::mem::size_of::<FlowQueue>(), 64);
    let mut bad = config;
    bad.inbound_bytes -= 1;
    assert_eq!(
        bad.validate(),
        Err(ConfigError::ArenaNotWholeCells { cell_bytes: 128 })
    );
    let mut bad = config;
    bad.aqm = Aqm::fq_codel(0, [0; 16]);
    assert_eq!(bad.validate(), Err(ConfigError::InvalidAqm));
    // The queue tables must be there, and only in this mode.
    let storage = TunnelStorage {
        outbound_arena: vec![0; 1024],
        outbound_slots: vec![Slot::EMPTY; 8],
        inbound_arena: vec![0; 1024],
        inbound_slots: vec![Slot::EMPTY; 8],
        outbound_queues: vec![FlowQueue::EMPTY; 15],
        inbound_queues: vec![FlowQueue::EMPTY; 16],
    };
    assert_eq!(
        PacketTunnel::new(config, storage).unwrap_err(),
        ConfigError::StorageMismatch
    );
}

#[test]
fn flow_queues_drop_from_the_fattest_instead_of_pausing() {
    let mut tun = tunnel(fq_small());
    for seq in 0..8 {
        tun.on_outbound_packet(t(0), &flow_packet(1000, seq))
            .unwrap();
    }
    // Every cell is taken, but none is in flight: reading goes on and the flood pays.
    assert!(tun.can_read_outbound());
    tun.on_outbound_packet(t(1), &flow_packet(2000, 0)).unwrap();
    let stats = tun.stats();
    assert_eq!(
        stats.outbound.overflow_dropped_packets, 4,
        "half of the fattest"
    );
    assert_eq!(stats.outbound.packets_queued, 5);
    assert_eq!(stats.outbound_pauses, 0);
    assert_eq!(stats.outbound_refused_packets, 0);
    // The four oldest of the flood went; both flows are new, so each gets a quantum in turn.
    for seq in 4..8 {
        assert_eq!(
            tun.poll_outbound(t(2)).unwrap(),
            &flow_packet(1000, seq)[..]
        );
    }
    assert_eq!(tun.poll_outbound(t(2)).unwrap(), &flow_packet(2000, 0)[..]);
}

#[test]
fn flow_queues_pause_only_when_every_cell_is_in_flight_and_resume_once() {
    let mut tun = tunnel(fq_small());
    for seq in 0..8 {
        tun.on_outbound_packet(t(0), &flow_packet(1000 + u16::from(seq), seq))
            .unwrap();
    }
    for _ in 0..7 {
        assert!(tun.poll_outbound(t(1)).is_some());
        assert!(tun.can_read_outbound(), "a cell is still queued");
    }
    assert!(tun.poll_outbound(t(1)).is_some());
    assert!(!tun.can_read_outbound(), "the last cell went in flight");
    let before = tun.stats();
    assert_eq!(
        tun.on_outbound_packet(t(2), &flow_packet(9, 0)),
        Err(PacketError::NoRoom)
    );
    let mut expected = before;
    expected.outbound_refused_packets += 1;
    expected.outbound_refused_bytes += 33;
    assert_eq!(tun.stats(), expected, "a refusal changes its counter only");
    assert_eq!(tun.stats().outbound_pauses, 1);
    let first = tun.complete_outbound(t(3), 1).unwrap();
    assert!(
        first.resume_reading,
        "the completion that frees a cell resumes"
    );
    assert!(tun.can_read_outbound());
    let second = tun.complete_outbound(t(4), 7).unwrap();
    assert!(!second.resume_reading, "exactly once");
    assert_eq!(tun.stats().outbound_paused_micros, 2);
}

#[test]
fn flow_queues_inbound_says_it_dropped_from_the_fattest() {
    let mut tun = tunnel(fq_small());
    for seq in 0..8 {
        assert_eq!(
            tun.on_inbound_packet(t(0), &flow_packet(7, seq)),
            Ok(InboundDisposition::Queued)
        );
    }
    assert_eq!(
        tun.on_inbound_packet(t(0), &flow_packet(8, 0)),
        Ok(InboundDisposition::QueuedAfterDroppingFromFattest {
            packets: 4,
            bytes: 4 * 33
        })
    );
    for _ in 0..5 {
        assert!(tun.poll_inbound(t(1)).is_some());
    }
    // Five in flight, none queued: a new packet has room in a free cell.
    assert_eq!(
        tun.on_inbound_packet(t(1), &flow_packet(8, 1)),
        Ok(InboundDisposition::Queued)
    );
    for seq in 2..5 {
        let _ = tun.on_inbound_packet(t(1), &flow_packet(8, seq)).unwrap();
    }
    while tun.poll_inbound(t(2)).is_some() {}
    assert_eq!(
        tun.on_inbound_packet(t(2), &flow_packet(8, 9)),
        Ok(InboundDisposition::DroppedNewest),
        "every cell in flight: nothing to drop from"
    );
    assert_eq!(tun.stats().inbound_dropped_newest_packets, 1);
}

/// A limit of 300 bytes below: 100-byte packets.
fn limited() -> TunnelConfig {
    TunnelConfig {
        byte_queue_limit: crate::ByteQueueLimit::Auto {
            min_bytes: 300,
            max_bytes: 600,
            hold_micros: 1000,
        },
        ..small()
    }
}

#[test]
fn the_byte_queue_limit_keeps_packets_in_the_tunnel_until_the_layer_below_drains() {
    let mut tun = tunnel(limited());
    for i in 0..5u8 {
        tun.on_outbound_packet(t(0), &[i; 100]).unwrap();
    }
    for i in 0..3u8 {
        assert_eq!(tun.poll_outbound(t(1)).unwrap()[0], i);
        let _ = tun.complete_outbound(t(1), 1).unwrap();
    }
    assert_eq!(tun.poll_outbound(t(1)), None, "300 bytes below: held");
    let stats = tun.stats();
    assert_eq!(stats.outbound_bytes_below, 300);
    assert_eq!(stats.outbound_limit_holds, 1);
    assert_eq!(
        stats.outbound.packets_queued, 2,
        "the rest waits in the tunnel"
    );
    tun.on_outbound_transmitted(t(2), 100);
    assert_eq!(tun.poll_outbound(t(2)).unwrap()[0], 3, "the limit opened");
    let _ = tun.complete_outbound(t(2), 1).unwrap();
    // A queue level reported by the socket: 100 bytes of ours still there.
    tun.on_outbound_queued_below(t(3), 100);
    assert_eq!(tun.stats().outbound_bytes_below, 100);
    assert_eq!(tun.poll_outbound(t(3)).unwrap()[0], 4);
    assert_eq!(
        tun.stats().outbound_limit_grows,
        0,
        "never ran dry while held"
    );
}

#[test]
fn with_nothing_queued_an_empty_poll_is_not_a_hold() {
    let mut tun = tunnel(limited());
    for i in 0..3u8 {
        tun.on_outbound_packet(t(0), &[i; 100]).unwrap();
        let _ = tun.poll_outbound(t(0)).unwrap();
        let _ = tun.complete_outbound(t(0), 1).unwrap();
    }
    // The limit is reached, but there is nothing to hold back.
    assert_eq!(tun.stats().outbound_bytes_below, 300);
    assert_eq!(tun.poll_outbound(t(1)), None);
    assert_eq!(tun.stats().outbound_limit_holds, 0);
    // A report that the link ran dry is no starvation either: nothing waited.
    tun.on_outbound_transmitted(t(2), 300);
    assert_eq!(tun.stats().outbound_limit_grows, 0);
}

#[test]
fn the_limit_is_off_by_default_and_counts_nothing_below() {
    let mut tun = tunnel(small());
    for i in 0..5u8 {
        tun.on_outbound_packet(t(0), &[i; 100]).unwrap();
        let _ = tun.poll_outbound(t(0)).unwrap();
        let _ = tun.complete_outbound(t(0), 1).unwrap();
    }
    let stats = tun.stats();
    assert_eq!(
        (stats.outbound_queue_limit_bytes, stats.outbound_bytes_below),
        (0, 0)
    );
}

/// A host loop over a link that drains `rate` bytes per tick and keeps what it was given in a
/// queue below the tunnel (a socket buffer nobody can size), reporting its level every tick. A
/// sender keeps the tunnel full. Returns the link's idle ticks after warm-up and the most bytes
/// below seen after warm-up.
fn drive_link(config: TunnelConfig, rate: u64, ticks: u64) -> (u64, u64, TunnelStats) {
    let mut tun = tunnel(config);
    let mut below: u64 = 0;
    let (mut idle, mut most_below) = (0, 0);
    let warm_up = ticks / 2;
    for tick in 0..ticks {
        let now = t(tick * 100);
        while tun.can_read_outbound() && tun.on_outbound_packet(now, &[0; 100]).is_ok() {}
        while let Some(packet) = tun.poll_outbound(now) {
            below += packet.len() as u64;
            let _ = tun.complete_outbound(now, 1).unwrap();
        }
        if tick >= warm_up {
            most_below = most_below.max(below);
            if below == 0 {
                idle += 1;
            }
        }
        below = below.saturating_sub(rate);
        tun.on_outbound_queued_below(now, below);
    }
    (idle, most_below, tun.stats())
}

#[test]
fn the_limit_sizes_itself_to_keep_the_link_busy_with_a_short_queue_below() {
    let auto = TunnelConfig {
        byte_queue_limit: crate::ByteQueueLimit::Auto {
            min_bytes: 100,
            max_bytes: 100_000,
            hold_micros: 5_000,
        },
        ..small()
    };
    // Fewer ticks under Miri, still eight hold times.
    let ticks = if cfg!(miri) { 800 } else { 4000 };
    // Unlimited, everything the tunnel holds moves below it at once and waits there.
    let (idle, most_below, _) = drive_link(small(), 150, ticks);
    assert_eq!(idle, 0);
    assert!(
        most_below >= 600,
        "{most_below} bytes below without a limit"
    );
    // Limited, the link still never idles, and what waits below stays within two ticks of
    // drain and one packet (the limit is checked before a packet, which may overshoot it).
    let (idle, most_below, stats) = drive_link(auto, 150, ticks);
    assert_eq!(idle, 0, "{stats:?}");
    assert!(
        most_below <= 2 * 150 + 100,
        "{most_below} bytes below with the limit: {stats:?}"
    );
    assert!(stats.outbound_limit_grows > 0 && stats.outbound_limit_shrinks > 0);
}

#[test]
fn flow_queues_under_pressure_use_fewer_cells_pause_earlier_and_resume_on_relief() {
    let mut tun = tunnel(fq_small());
    assert!(!tun.on_pressure(t(0), Pressure::Critical));
    assert_eq!(tun.limits().outbound_packets, 2);
    assert_eq!(tun.limits().inbound_packets, 2);
    for seq in 0..6 {
        tun.on_outbound_packet(t(1), &flow_packet(1000, seq))
            .unwrap();
        assert!(tun.stats().outbound.packets_queued <= 2, "at most 2 cells");
    }
    tun.on_outbound_packet(t(1), &flow_packet(2000, 0)).unwrap();
    let stats = tun.stats();
    assert_eq!(stats.outbound.packets_queued, 2);
    assert_eq!(stats.outbound.overflow_dropped_packets, 5);
    assert_eq!(stats.outbound_refused_packets, 0);
    // Two cells in flight reach the limit: reading pauses.
    assert!(tun.poll_outbound(t(2)).is_some());
    assert!(tun.can_read_outbound());
    assert!(tun.poll_outbound(t(2)).is_some());
    assert!(!tun.can_read_outbound());
    // A host that pushes anyway is refused: no cell beyond the limit is taken.
    assert_eq!(
        tun.on_outbound_packet(t(2), &flow_packet(2000, 1)),
        Err(PacketError::NoRoom)
    );
    // Relief: the limit grows back past the cells in flight, and the resume edge comes once.
    assert!(tun.on_pressure(t(3), Pressure::Normal));
    assert!(tun.can_read_outbound());
    assert!(!tun.complete_outbound(t(4), 2).unwrap().resume_reading);
    // Inbound keeps to its limit too, by dropping from the fattest.
    assert!(!tun.on_pressure(t(5), Pressure::Critical));
    for seq in 0..4 {
        tun.on_inbound_packet(t(5), &flow_packet(3000, seq))
            .unwrap();
    }
    assert_eq!(tun.stats().inbound.packets_queued, 2);
}

#[test]
fn shrinking_pauses_a_fifo_tunnel_at_once_and_growing_resumes_it() {
    let mut tun = tunnel(small());
    for _ in 0..4 {
        tun.on_outbound_packet(t(0), &[1; 100]).unwrap();
    }
    assert!(tun.can_read_outbound());
    // Elevated halves the high watermark to 350 bytes: the 400 held are above it.
    assert!(!tun.on_pressure(t(1), Pressure::Elevated));
    assert!(!tun.can_read_outbound());
    assert_eq!(tun.stats().outbound_pauses, 1);
    // Back to normal: 400 bytes held is above the normal low watermark, so it stays paused...
    assert!(!tun.on_pressure(t(2), Pressure::Normal));
    assert!(!tun.can_read_outbound());
    // ...until a completion brings it to 300.
    assert!(tun.poll_outbound(t(3)).is_some());
    assert!(tun.complete_outbound(t(3), 1).unwrap().resume_reading);
}

#[test]
fn inbound_drops_earlier_under_pressure_by_its_policy() {
    let config = TunnelConfig {
        inbound_drop_policy: DropPolicy::DropOldest,
        ..small()
    };
    let mut tun = tunnel(config);
    assert!(!tun.on_pressure(t(0), Pressure::Critical));
    // A quarter of 1000 bytes and 10 slots: 250 bytes, 2 packets.
    assert_eq!(tun.limits().inbound_bytes, 250);
    assert_eq!(tun.limits().inbound_packets, 2);
    for seq in 0..5u8 {
        tun.on_inbound_packet(t(1), &[seq; 100]).unwrap();
    }
    let stats = tun.stats();
    assert_eq!(stats.inbound.packets_queued, 2);
    assert_eq!(stats.inbound_dropped_oldest_packets, 3);
    assert_eq!(tun.poll_inbound(t(2)).unwrap(), &[3; 100][..]);
    // With a packet in flight nothing old can go: the newest is dropped instead.
    tun.on_inbound_packet(t(3), &[9; 100]).unwrap();
    assert_eq!(tun.stats().inbound_dropped_newest_packets, 1);
}

/// Found by the tunnel fuzz target: a critical quarter of a 300-byte inbound arena (75 bytes)
/// is below the largest packet (100 bytes), so a 90-byte packet emptied the queue by dropping
/// the oldest and was then dropped too, reported as `DroppedNewest` alone.
#[test]
fn a_shrunk_inbound_limit_still_takes_a_maximum_size_packet() {
    let config = TunnelConfig {
        inbound_bytes: 300,
        inbound_drop_policy: DropPolicy::DropOldest,
        ..small()
    };
    let mut tun = tunnel(config);
    tun.on_inbound_packet(t(0), &[1; 90]).unwrap();
    tun.on_inbound_packet(t(0), &[2; 90]).unwrap();
    assert!(!tun.on_pressure(t(1), Pressure::Critical));
    assert_eq!(tun.limits().inbound_bytes, 100, "one maximum-size packet");
    assert_eq!(
        tun.on_inbound_packet(t(2), &[3; 90]),
        Ok(InboundDisposition::QueuedAfterDroppingOldest {
            packets: 2,
            bytes: 180
        })
    );
    assert_eq!(tun.stats().inbound.packets_queued, 1);
    assert_eq!(tun.poll_inbound(t(3)).unwrap(), &[3; 90][..]);
}

#[test]
fn scaled_low_watermarks_stay_below_the_high_ones() {
    let config = TunnelConfig {
        outbound_high_watermark_packets: 2,
        outbound_low_watermark_packets: 1,
        ..small()
    };
    let tun = tunnel(config);
    let limits = TunnelLimits::of(tun.config(), Pressure::Critical);
    assert_eq!(limits.outbound_high_watermark_packets, 1);
    assert_eq!(limits.outbound_low_watermark_packets, 0);
    assert_eq!(
        TunnelLimits::of(tun.config(), Pressure::Normal),
        tun.limits()
    );
}

mod batch_calls {
    //! The batch calls against one call per packet: two tunnels of one configuration, driven by
    //! the same random host, one through `on_outbound_batch` and the `poll_*_batch` calls, the
    //! other a packet at a time, must agree on every result and every statistic, in FIFO mode
    //! with AQM off or CoDel, with a byte queue limit, and in flow-queue mode.
    use proptest::prelude::*;

    use super::*;
    use crate::ByteQueueLimit;

    #[derive(Clone, Debug)]
    enum Op {
        /// Push these outbound packets (0 is empty, above 100 oversized), stopping at the first
        /// refused, as a host holding a `readPacketObjects` array does.
        Read(Vec<u8>),
        /// Hand out up to this many outbound packets.
        Send(u8),
        /// Complete this many outbound packets.
        Complete(u8),
        /// The layer below reports this many bytes transmitted.
        Transmitted(u16),
        /// Queue inbound packets of these lengths.
        Receive(Vec<u8>),
        /// Hand out up to this many inbound packets.
        Write(u8),
        /// Complete every inbound packet in flight.
        Written,
        /// Let this many milliseconds pass.
        Wait(u16),
        /// The host's `now` goes back this many milliseconds (the tunnel's clock holds).
        Rewind(u8),
        Pressure(Pressure),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => proptest::collection::vec(0u8..=104, 0..8).prop_map(Op::Read),
            1 => (0u8..50).prop_map(Op::Rewind),
            3 => (0u8..12).prop_map(Op::Send),
            3 => (0u8..8).prop_map(Op::Complete),
            1 => (0u16..600).prop_map(Op::Transmitted),
            2 => proptest::collection::vec(1u8..=100, 1..6).prop_map(Op::Receive),
            2 => (0u8..12).prop_map(Op::Write),
            1 => Just(Op::Written),
            2 => (0u16..300).prop_map(Op::Wait),
            1 => super::pressure().prop_map(Op::Pressure),
        ]
    }

    fn config(mode: u8) -> TunnelConfig {
        match mode {
            0 => small(),
            1 => TunnelConfig {
                aqm: Aqm::CODEL_DEFAULT,
                ..small()
            },
            2 => TunnelConfig {
                byte_queue_limit: ByteQueueLimit::Auto {
                    min_bytes: 100,
                    max_bytes: 400,
                    hold_micros: 50_000,
                },
                ..small()
            },
            _ => fq_small(),
        }
    }

    /// Hand out up to `max` packets with a batch call and one call at a time: the same packets,
    /// and the batch call's count is how many it passed on.
    fn same_hand_outs(
        max: u8,
        batch: impl FnOnce(usize, &mut dyn FnMut(&[u8])) -> usize,
        mut one: impl FnMut() -> Option<Vec<u8>>,
    ) -> Result<(), TestCaseError> {
        let mut got = Vec::new();
        let count = batch(usize::from(max), &mut |p| got.push(p.to_vec()));
        let want: Vec<Vec<u8>> = (0..max).map_while(|_| one()).collect();
        prop_assert_eq!(count, got.len());
        prop_assert_eq!(got, want);
        Ok(())
    }

    /// Everything a host can observe of a tunnel.
    fn observed(tun: &TestTunnel) -> (TunnelStats, bool, Vec<Vec<u8>>, Vec<Vec<u8>>) {
        (
            tun.stats(),
            tun.can_read_outbound(),
            tun.outbound_in_flight().map(<[u8]>::to_vec).collect(),
            tun.inbound_in_flight().map(<[u8]>::to_vec).collect(),
        )
    }

    proptest! {
        #![proptest_config(crate::proptest_config::with_cases(300))]

        #[test]
        fn batch_calls_do_what_one_call_per_packet_does(
            mode in 0u8..4,
            ops in proptest::collection::vec(op(), 1..crate::proptest_config::ops(200)),
        ) {
            let config = config(mode);
            let (mut batched, mut single) = (tunnel(config), tunnel(config));
            let mut now = 0u64;
            let mut seq = 0u8;
            for op in ops {
                let at = t(now);
                match op {
                    Op::Read(lens) => {
                        let packets: Vec<Vec<u8>> = lens
                            .iter()
                            .map(|&len| {
                                seq = seq.wrapping_add(1);
                                vec![seq; usize::from(len)]
                            })
                            .collect();
                        let batch = batched.on_outbound_batch(at, packets.iter().map(Vec::as_slice));
                        let mut accepted = 0;
                        let mut stopped_by = None;
                        for packet in &packets {
                            match single.on_outbound_packet(at, packet) {
                                Ok(()) => accepted += 1,
                                Err(error) => {
                                    stopped_by = Some(error);
                                    break;
                                }
                            }
                        }
                        prop_assert_eq!(batch, BatchPush { accepted, stopped_by });
                    }
                    Op::Send(max) => same_hand_outs(
                        max,
                        |max, each| batched.poll_outbound_batch(at, max, each),
                        || single.poll_outbound(at).map(<[u8]>::to_vec),
                    )?,
                    Op::Complete(n) => {
                        let n = usize::from(n).min(single.outbound_in_flight().count());
                        prop_assert_eq!(
                            batched.complete_outbound(at, n),
                            single.complete_outbound(at, n)
                        );
                    }
                    Op::Transmitted(bytes) => {
                        batched.on_outbound_transmitted(at, u64::from(bytes));
                        single.on_outbound_transmitted(at, u64::from(bytes));
                    }
                    Op::Receive(lens) => {
                        for len in lens {
                            seq = seq.wrapping_add(1);
                            let packet = vec![seq; usize::from(len)];
                            prop_assert_eq!(
                                batched.on_inbound_packet(at, &packet),
                                single.on_inbound_packet(at, &packet)
                            );
                        }
                    }
                    Op::Write(max) => same_hand_outs(
                        max,
                        |max, each| batched.poll_inbound_batch(at, max, each),
                        || single.poll_inbound(at).map(<[u8]>::to_vec),
                    )?,
                    Op::Written => {
                        let n = single.inbound_in_flight().count();
                        prop_assert_eq!(batched.complete_inbound(at, n), single.complete_inbound(at, n));
                    }
                    Op::Wait(ms) => now += u64::from(ms) * 1_000,
                    Op::Rewind(ms) => now = now.saturating_sub(u64::from(ms) * 1_000),
                    Op::Pressure(level) => {
                        prop_assert_eq!(batched.on_pressure(at, level), single.on_pressure(at, level));
                    }
                }
                prop_assert_eq!(observed(&batched), observed(&single));
            }
        }
    }
}
