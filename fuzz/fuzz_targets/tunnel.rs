//! `PacketTunnel` call sequences, AQM off or CoDel, with a host clock that jumps and runs
//! backwards. Checked after every call against a model of both rings:
//!
//! - the ceiling: bytes held never exceed a ring's arena, packets never its slots;
//! - accounting: accepted = queued + in flight + completed + dropped (AQM, drop-oldest), in
//!   packets and bytes, and every counter of refusals matches the calls made;
//! - order and content: packets leave in FIFO order (after the AQM drops it reports), in-flight
//!   bytes stay unchanged until completed;
//! - flow control, across CoDel overload episodes: reading pauses at a high watermark, a packet
//!   read while reading was allowed always fits, `resume_reading` is reported exactly on the
//!   completion that resumes, and the completion that reaches the low watermarks ends overload;
//! - a refused packet changes nothing but its counter (the clock included);
//! - the byte queue limit: the bytes below match completions minus the reports of the layer
//!   below, a poll hands nothing out exactly while they reach the limit (and changes nothing but
//!   the hold counter), and the limit stays within its bounds;
//! - memory pressure, changed at random: the limits in force are the configured ones scaled
//!   (never above them, each low below its high), the watermark checks above hold for the
//!   limits in force, a shrink at or above the shrunk high watermark pauses reading at once, a
//!   change reports `resume_reading` exactly when it ends a pause, and an inbound packet is
//!   queued only within the shrunk inbound limits.
#![no_main]

use std::collections::VecDeque;

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use tidegate_core::{
    ByteQueueLimit, DropPolicy, InboundDisposition, Instant, PacketError, PacketTunnel, Pressure,
    Slot, TunnelConfig, TunnelStats, TunnelStorage,
};
use tidegate_fuzz::{FifoSetup, HostClock, MAX_OPS, Tick, stamped_packet};

type Tunnel = PacketTunnel<Vec<u8>, Vec<Slot>>;

#[derive(Debug, Arbitrary)]
enum Op {
    Outbound {
        len: u16,
        tick: Tick,
    },
    Inbound {
        len: u16,
        tick: Tick,
    },
    PollOutbound {
        tick: Tick,
    },
    PollInbound {
        tick: Tick,
    },
    CompleteOutbound {
        count: u8,
        tick: Tick,
    },
    CompleteInbound {
        count: u8,
        tick: Tick,
    },
    Transmitted {
        bytes: u16,
        tick: Tick,
    },
    QueuedBelow {
        bytes: u16,
        tick: Tick,
    },
    /// The memory governor reports a level: `level % 3` is normal, elevated or critical.
    Pressure {
        level: u8,
        tick: Tick,
    },
}

/// What the model expects one ring to hold.
#[derive(Default)]
struct Direction {
    queued: VecDeque<Vec<u8>>,
    in_flight: VecDeque<Vec<u8>>,
    /// Handed-out packets and packets AQM dropped behind them, in ring order (`true` marks a
    /// dropped one): dropped bytes stay in the arena until the packets before them complete.
    handed: VecDeque<(usize, bool)>,
    empty: u64,
    oversized: u64,
}

fuzz_target!(|data: &[u8]| {
    let mut input = Unstructured::new(data);
    let Ok(setup) = FifoSetup::arbitrary(&mut input) else {
        return;
    };
    let config = setup.config();
    config.validate().expect("derived configurations are valid");
    let storage = TunnelStorage {
        outbound_arena: vec![0u8; config.outbound_bytes as usize],
        outbound_slots: vec![Slot::EMPTY; config.outbound_packets as usize],
        inbound_arena: vec![0u8; config.inbound_bytes as usize],
        inbound_slots: vec![Slot::EMPTY; config.inbound_packets as usize],
        outbound_queues: [],
        inbound_queues: [],
    };
    let mut tunnel = Tunnel::new(config, storage).unwrap();
    let mut clock = HostClock::new(1_000_000);
    let mut outbound = Direction::default();
    let mut inbound = Direction::default();
    let mut refused = (0u64, 0u64);
    let mut seq = 0u32;
    let mut last = tunnel.stats();
    // Bytes completed outbound and not yet reported transmitted, while the limit is on.
    let limit_on = config.byte_queue_limit != ByteQueueLimit::Off;
    let mut below = 0u64;
    for _ in 0..MAX_OPS {
        let Ok(op) = Op::arbitrary(&mut input) else {
            break;
        };
        match op {
            Op::Outbound { len, tick } => {
                let now = Instant::from_micros(clock.tick(tick));
                let len = usize::from(len) % (config.max_packet_len as usize + 8);
                seq += 1;
                let packet = stamped_packet(seq, len);
                let could_read = tunnel.can_read_outbound();
                let before = tunnel.stats();
                match tunnel.on_outbound_packet(now, &packet) {
                    Ok(()) => outbound.queued.push_back(packet),
                    Err(PacketError::Empty) => {
                        assert_eq!(len, 0);
                        outbound.empty += 1;
                        let mut expected = before;
                        expected.outbound.empty_packets += 1;
                        assert_eq!(tunnel.stats(), expected, "a refusal changes one counter");
                    }
                    Err(PacketError::TooLong { len: l, max }) => {
                        assert!(l == len && len > max && max == config.max_packet_len as usize);
                        outbound.oversized += 1;
                        let mut expected = before;
                        expected.outbound.oversized_packets += 1;
                        assert_eq!(tunnel.stats(), expected, "a refusal changes one counter");
                    }
                    Err(PacketError::NoRoom) => {
                        let mut expected = before;
                        expected.outbound_refused_packets += 1;
                        expected.outbound_refused_bytes += len as u64;
                        assert_eq!(tunnel.stats(), expected, "a refusal changes one counter");
                        assert!(
                            !could_read,
                            "a valid packet read while reading was allowed must fit: {len} bytes, \
                             {config:?}, held {:?}, {:?}",
                            held(&tunnel, &outbound),
                            outbound.handed
                        );
                        refused = (refused.0 + 1, refused.1 + len as u64);
                    }
                    Err(other) => panic!("an undocumented refusal: {other:?}"),
                }
                let (bytes, packets) = held(&tunnel, &outbound);
                let limits = tunnel.limits();
                if bytes >= limits.outbound_high_watermark_bytes as usize
                    || packets >= limits.outbound_high_watermark_packets as usize
                {
                    assert!(
                        !tunnel.can_read_outbound(),
                        "reading pauses at a high watermark"
                    );
                }
                if !could_read {
                    assert!(
                        !tunnel.can_read_outbound(),
                        "only a completion resumes reading"
                    );
                }
            }
            Op::Inbound { len, tick } => {
                let now = Instant::from_micros(clock.tick(tick));
                let len = usize::from(len) % (config.max_packet_len as usize + 8);
                seq += 1;
                let packet = stamped_packet(seq, len);
                let before = tunnel.stats();
                let queued = match tunnel.on_inbound_packet(now, &packet) {
                    Ok(InboundDisposition::Queued) => {
                        inbound.queued.push_back(packet);
                        true
                    }
                    Ok(InboundDisposition::QueuedAfterDroppingOldest { packets, bytes }) => {
                        assert_eq!(config.inbound_drop_policy, DropPolicy::DropOldest);
                        assert!(packets > 0);
                        let dropped: usize = inbound.queued.drain(..packets).map(|p| p.len()).sum();
                        assert_eq!(dropped, bytes);
                        inbound.queued.push_back(packet);
                        true
                    }
                    Ok(InboundDisposition::DroppedNewest) => false,
                    Ok(other) => panic!("FIFO mode never reports {other:?}"),
                    Err(PacketError::Empty) => {
                        assert_eq!(len, 0);
                        inbound.empty += 1;
                        let mut expected = before;
                        expected.inbound.empty_packets += 1;
                        assert_eq!(tunnel.stats(), expected, "a refusal changes one counter");
                        false
                    }
                    Err(PacketError::TooLong { .. }) => {
                        assert!(len > config.max_packet_len as usize);
                        inbound.oversized += 1;
                        let mut expected = before;
                        expected.inbound.oversized_packets += 1;
                        assert_eq!(tunnel.stats(), expected, "a refusal changes one counter");
                        false
                    }
                    Err(PacketError::NoRoom) => panic!("inbound drops by policy, never NoRoom"),
                    Err(other) => panic!("an undocumented refusal: {other:?}"),
                };
                let limits = tunnel.limits();
                if queued && limits.pressure != Pressure::Normal {
                    // Within the shrunk limits: the packet's bytes fitted (its padding aside).
                    let (bytes, packets) = held_in(&tunnel.stats().inbound, &inbound, &config);
                    let padding = config.packet_align as usize - 1;
                    assert!(
                        bytes <= limits.inbound_bytes as usize + padding,
                        "inbound holds {bytes} bytes under a limit of {}",
                        limits.inbound_bytes
                    );
                    assert!(packets <= limits.inbound_packets as usize);
                }
            }
            Op::PollOutbound { tick } => {
                let now = Instant::from_micros(clock.tick(tick));
                let had_queued = !outbound.queued.is_empty();
                let before = tunnel.stats();
                let got = tunnel.poll_outbound(now).map(<[u8]>::to_vec);
                let stats = tunnel.stats();
                if limit_on && had_queued && below >= before.outbound_queue_limit_bytes {
                    assert_eq!(got, None, "held by the limit");
                    let mut expected = before;
                    expected.outbound_limit_holds += 1;
                    expected.outbound_paused_micros = stats.outbound_paused_micros;
                    assert_eq!(stats, expected, "a held poll changes one counter");
                    continue_checks(
                        &tunnel, &config, &mut last, &outbound, &inbound, refused, &clock, below,
                    );
                    continue;
                }
                after_poll(
                    &mut outbound,
                    got,
                    had_queued,
                    &last.outbound,
                    &stats.outbound,
                );
            }
            Op::PollInbound { tick } => {
                let now = Instant::from_micros(clock.tick(tick));
                let had_queued = !inbound.queued.is_empty();
                let got = tunnel.poll_inbound(now).map(<[u8]>::to_vec);
                let stats = tunnel.stats();
                after_poll(&mut inbound, got, had_queued, &last.inbound, &stats.inbound);
            }
            Op::CompleteOutbound { count, tick } => {
                let now = Instant::from_micros(clock.tick(tick));
                let count = usize::from(count % 6);
                let was_paused = !tunnel.can_read_outbound();
                match tunnel.complete_outbound(now, count) {
                    Ok(done) => {
                        let bytes = complete(&mut outbound, count);
                        if limit_on {
                            below += bytes as u64;
                        }
                        assert_eq!((done.released.packets, done.released.bytes), (count, bytes));
                        let resumed = was_paused && tunnel.can_read_outbound();
                        assert_eq!(done.resume_reading, resumed, "resume edge exactly once");
                        let (bytes, packets) = held(&tunnel, &outbound);
                        let limits = tunnel.limits();
                        let at_low = bytes <= limits.outbound_low_watermark_bytes as usize
                            && packets <= limits.outbound_low_watermark_packets as usize;
                        if !tunnel.can_read_outbound() {
                            assert!(!at_low, "a completion at the low watermarks resumes");
                        }
                        if at_low {
                            assert!(
                                !tunnel.stats().outbound_overloaded,
                                "the completion that reaches the low watermarks ends overload"
                            );
                        }
                    }
                    Err(error) => {
                        assert!(count > outbound.in_flight.len());
                        assert_eq!(error.in_flight, outbound.in_flight.len());
                        assert_eq!(was_paused, !tunnel.can_read_outbound());
                    }
                }
            }
            Op::CompleteInbound { count, tick } => {
                let now = Instant::from_micros(clock.tick(tick));
                let count = usize::from(count % 6);
                match tunnel.complete_inbound(now, count) {
                    Ok(released) => {
                        let bytes = complete(&mut inbound, count);
                        assert_eq!((released.packets, released.bytes), (count, bytes));
                    }
                    Err(_) => assert!(count > inbound.in_flight.len()),
                }
            }
            Op::Transmitted { bytes, tick } => {
                let now = Instant::from_micros(clock.tick(tick));
                tunnel.on_outbound_transmitted(now, u64::from(bytes));
                below -= below.min(u64::from(bytes));
            }
            Op::QueuedBelow { bytes, tick } => {
                let now = Instant::from_micros(clock.tick(tick));
                tunnel.on_outbound_queued_below(now, u64::from(bytes));
                below = below.min(u64::from(bytes));
            }
            Op::Pressure { level, tick } => {
                let now = Instant::from_micros(clock.tick(tick));
                let level = [Pressure::Normal, Pressure::Elevated, Pressure::Critical]
                    [usize::from(level % 3)];
                let was_paused = !tunnel.can_read_outbound();
                let resume = tunnel.on_pressure(now, level);
                let limits = tunnel.limits();
                assert_eq!(limits.pressure, level);
                for (shrunk, configured) in [
                    (
                        limits.outbound_high_watermark_bytes,
                        config.outbound_high_watermark_bytes,
                    ),
                    (
                        limits.outbound_low_watermark_bytes,
                        config.outbound_low_watermark_bytes,
                    ),
                    (
                        limits.outbound_high_watermark_packets,
                        config.outbound_high_watermark_packets,
                    ),
                    (
                        limits.outbound_low_watermark_packets,
                        config.outbound_low_watermark_packets,
                    ),
                    (limits.inbound_bytes, config.inbound_bytes),
                    (limits.inbound_packets, config.inbound_packets),
                ] {
                    assert!(shrunk <= configured, "a limit above the configured one");
                }
                assert!(limits.outbound_low_watermark_bytes < limits.outbound_high_watermark_bytes);
                assert!(
                    limits.outbound_low_watermark_packets < limits.outbound_high_watermark_packets
                );
                let can_read = tunnel.can_read_outbound();
                assert_eq!(resume, was_paused && can_read, "resume edge exactly once");
                let (bytes, packets) = held(&tunnel, &outbound);
                if bytes >= limits.outbound_high_watermark_bytes as usize
                    || packets >= limits.outbound_high_watermark_packets as usize
                {
                    assert!(
                        !can_read,
                        "a shrink to at or below what is held pauses at once"
                    );
                }
                let at_low = bytes <= limits.outbound_low_watermark_bytes as usize
                    && packets <= limits.outbound_low_watermark_packets as usize;
                if at_low {
                    assert!(can_read, "limits grown to above what is held resume");
                    assert!(!tunnel.stats().outbound_overloaded);
                }
            }
        }
        continue_checks(
            &tunnel, &config, &mut last, &outbound, &inbound, refused, &clock, below,
        );
    }
});

/// The checks after every call; `last` becomes the stats now.
#[allow(clippy::too_many_arguments)]
fn continue_checks(
    tunnel: &Tunnel,
    config: &TunnelConfig,
    last: &mut TunnelStats,
    outbound: &Direction,
    inbound: &Direction,
    refused: (u64, u64),
    clock: &HostClock,
    below: u64,
) {
    let stats = tunnel.stats();
    check(tunnel, config, &stats, outbound, inbound, refused);
    assert!(stats.outbound_paused_micros >= last.outbound_paused_micros);
    assert!(stats.outbound_paused_micros <= clock.span());
    for direction in [&stats.outbound, &stats.inbound] {
        assert!(direction.last_sojourn_micros <= clock.span());
    }
    assert_eq!(stats.outbound_bytes_below, below, "bytes below");
    match config.byte_queue_limit {
        ByteQueueLimit::Off => assert_eq!(stats.outbound_queue_limit_bytes, 0),
        ByteQueueLimit::Auto {
            min_bytes,
            max_bytes,
            ..
        } => assert!(
            (u64::from(min_bytes)..=u64::from(max_bytes))
                .contains(&stats.outbound_queue_limit_bytes),
            "limit within its bounds"
        ),
    }
    *last = stats;
}

/// Arena bytes and slots the outbound ring holds, as the watermarks count them: dropped-pending
/// packets included (they keep their slot and bytes until the packets handed out before them
/// complete), and the bytes with the alignment padding, which is checked against the model's
/// payload: at least none, at most `packet_align - 1` per packet.
fn held(tunnel: &Tunnel, model: &Direction) -> (usize, usize) {
    held_in(&tunnel.stats().outbound, model, tunnel.config())
}

/// [`held`] for either direction, from its stats.
fn held_in(
    s: &tidegate_core::DirectionStats,
    model: &Direction,
    config: &TunnelConfig,
) -> (usize, usize) {
    let dropped_pending: usize = model.handed.iter().filter(|h| h.1).map(|h| h.0).sum();
    let dropped_slots = model.handed.iter().filter(|h| h.1).count();
    let packets = (s.packets_queued + s.packets_in_flight) as usize + dropped_slots;
    let payload = (s.bytes_queued + s.bytes_in_flight) as usize + dropped_pending;
    let bytes = s.arena_bytes_used as usize;
    let align = config.packet_align as usize;
    assert!(
        payload <= bytes && bytes <= payload + packets * (align - 1),
        "padding: {payload} payload bytes in {bytes} arena bytes, {packets} packets"
    );
    (bytes, packets)
}

fn after_poll(
    direction: &mut Direction,
    got: Option<Vec<u8>>,
    had_queued: bool,
    before: &tidegate_core::DirectionStats,
    after: &tidegate_core::DirectionStats,
) {
    let dropped = after.aqm_dropped_packets - before.aqm_dropped_packets;
    let mut dropped_bytes = 0u64;
    for packet in direction.queued.drain(..dropped as usize) {
        dropped_bytes += packet.len() as u64;
        // Dropped behind packets in flight: its bytes stay until those complete.
        if !direction.handed.is_empty() {
            direction.handed.push_back((packet.len(), true));
        }
    }
    assert_eq!(
        dropped_bytes,
        after.aqm_dropped_bytes - before.aqm_dropped_bytes
    );
    if had_queued {
        assert!(got.is_some(), "AQM never drops the last packet queued");
    }
    let want = direction.queued.pop_front();
    assert_eq!(got, want, "packets leave in order");
    if let Some(packet) = want {
        direction.handed.push_back((packet.len(), false));
        direction.in_flight.push_back(packet);
    }
}

fn complete(direction: &mut Direction, count: usize) -> usize {
    // As the ring does: release `count` packets, reclaiming dropped ones met at the front.
    let mut released = 0;
    while let Some(&(_, dropped)) = direction.handed.front() {
        if !dropped {
            if released == count {
                break;
            }
            released += 1;
        }
        direction.handed.pop_front();
    }
    direction.in_flight.drain(..count).map(|p| p.len()).sum()
}

fn check(
    tunnel: &Tunnel,
    config: &TunnelConfig,
    stats: &TunnelStats,
    outbound: &Direction,
    inbound: &Direction,
    refused: (u64, u64),
) {
    let sum = |packets: &VecDeque<Vec<u8>>| packets.iter().map(|p| p.len() as u64).sum::<u64>();
    for (s, model, arena, slots, extra) in [
        (
            &stats.outbound,
            outbound,
            config.outbound_bytes,
            config.outbound_packets,
            (0, 0),
        ),
        (
            &stats.inbound,
            inbound,
            config.inbound_bytes,
            config.inbound_packets,
            (
                stats.inbound_dropped_oldest_packets,
                stats.inbound_dropped_oldest_bytes,
            ),
        ),
    ] {
        assert_eq!(s.packets_queued, model.queued.len() as u64);
        assert_eq!(s.bytes_queued, sum(&model.queued));
        assert_eq!(s.packets_in_flight, model.in_flight.len() as u64);
        assert_eq!(s.bytes_in_flight, sum(&model.in_flight));
        assert_eq!(
            s.packets_accepted,
            s.packets_queued
                + s.packets_in_flight
                + s.packets_completed
                + s.aqm_dropped_packets
                + extra.0
        );
        assert_eq!(
            s.bytes_accepted,
            s.bytes_queued + s.bytes_in_flight + s.bytes_completed + s.aqm_dropped_bytes + extra.1
        );
        assert!(s.bytes_high_water <= u64::from(arena), "byte ceiling");
        assert!(
            s.arena_bytes_used <= s.bytes_high_water,
            "the high water is the peak"
        );
        assert!(s.packets_high_water <= u64::from(slots), "slot ceiling");
        assert_eq!(
            (s.empty_packets, s.oversized_packets),
            (model.empty, model.oversized)
        );
    }
    assert_eq!(
        (stats.outbound_refused_packets, stats.outbound_refused_bytes),
        refused
    );
    assert_eq!(stats.outbound_paused, !tunnel.can_read_outbound());
    let shown: Vec<&[u8]> = tunnel.outbound_in_flight().collect();
    assert!(
        shown.iter().eq(outbound.in_flight.iter()),
        "outbound bytes unchanged in flight"
    );
    let shown: Vec<&[u8]> = tunnel.inbound_in_flight().collect();
    assert!(
        shown.iter().eq(inbound.in_flight.iter()),
        "inbound bytes unchanged in flight"
    );
}
