//! `PacketTunnel` in flow-queue mode (FQ-CoDel): call sequences over a handful of flows, with a
//! host clock that jumps and runs backwards. Checked after every call against a model written
//! from the documentation:
//!
//! - the ceiling: cells in use never exceed the ring's cells, bytes never its arena;
//! - accounting: accepted = queued + in flight + completed + CoDel drops + overflow drops;
//! - readiness: a push is refused (`NoRoom`) exactly when every outbound cell is in flight, which
//!   is exactly when `can_read_outbound` is false; a refusal changes only its counter; the resume
//!   edge comes exactly on the completion that frees a cell, once per pause;
//! - inbound: `DroppedNewest` exactly when every inbound cell is in flight, and a drop from the
//!   fattest queue is reported with its size;
//! - order within each flow, not across flows; in-flight bytes unchanged until completed, and
//!   completions release the oldest handed out;
//! - memory pressure, changed at random: the cell limits in force (at least 1, at most the
//!   cells) take the place of the cell counts above, an accepted packet leaves at most the limit
//!   of cells in use, and a change reports `resume_reading` exactly when it ends a pause.
#![no_main]

use std::collections::{HashMap, VecDeque};

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use tidegate_core::{
    FlowQueue, InboundDisposition, Instant, PacketError, PacketTunnel, Pressure, Slot,
    TunnelConfig, TunnelStorage,
};
use tidegate_fuzz::{FqSetup, HostClock, MAX_OPS, Tick};

type Tunnel = PacketTunnel<Vec<u8>, Vec<Slot>, Vec<FlowQueue>>;

#[derive(Debug, Arbitrary)]
enum Op {
    Outbound {
        flow: u8,
        len: u8,
        tick: Tick,
    },
    Inbound {
        flow: u8,
        len: u8,
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
    /// The memory governor reports a level: `level % 3` is normal, elevated or critical.
    Pressure {
        level: u8,
        tick: Tick,
    },
}

/// What the model knows of one direction.
#[derive(Default)]
struct Direction {
    in_flight: VecDeque<Vec<u8>>,
    last_seq: HashMap<u8, u32>,
    accepted: u64,
    completed: u64,
}

/// A UDP/IPv4 packet of flow `flow` (its source port) carrying `seq`, `len` bytes at least 32.
fn packet(flow: u8, seq: u32, len: usize) -> Vec<u8> {
    let mut p = vec![
        0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
    ];
    p.extend_from_slice(&[0, flow, 0, 9, 0, 0, 0, 0]);
    p.extend_from_slice(&seq.to_be_bytes());
    p.resize(len.max(32), flow);
    p
}

fn decode(p: &[u8]) -> (u8, u32) {
    (p[21], u32::from_be_bytes([p[28], p[29], p[30], p[31]]))
}

fuzz_target!(|data: &[u8]| {
    let mut input = Unstructured::new(data);
    let Ok(setup) = FqSetup::arbitrary(&mut input) else {
        return;
    };
    let config = setup.config();
    config.validate().expect("derived configurations are valid");
    let queues = config.aqm.flow_queues() as usize;
    let storage = TunnelStorage {
        outbound_arena: vec![0u8; config.outbound_bytes as usize],
        outbound_slots: vec![Slot::EMPTY; config.outbound_packets as usize],
        inbound_arena: vec![0u8; config.inbound_bytes as usize],
        inbound_slots: vec![Slot::EMPTY; config.inbound_packets as usize],
        outbound_queues: vec![FlowQueue::EMPTY; queues],
        inbound_queues: vec![FlowQueue::EMPTY; queues],
    };
    let mut tunnel = Tunnel::new(config, storage).unwrap();
    let mut clock = HostClock::new(1_000_000);
    let mut outbound = Direction::default();
    let mut inbound = Direction::default();
    let mut seq = 0u32;
    let max = config.max_packet_len as usize;
    for _ in 0..MAX_OPS {
        let Ok(op) = Op::arbitrary(&mut input) else {
            break;
        };
        // The cells in use at most, shrunk under pressure.
        let limits = tunnel.limits();
        let (out_cells, in_cells) = (
            limits.outbound_packets as usize,
            limits.inbound_packets as usize,
        );
        match op {
            Op::Outbound { flow, len, tick } => {
                let now = Instant::from_micros(clock.tick(tick));
                seq += 1;
                let p = packet(flow % 6, seq, 32 + usize::from(len) % (max - 31));
                let could_read = tunnel.can_read_outbound();
                assert_eq!(could_read, outbound.in_flight.len() < out_cells);
                let before = tunnel.stats();
                match tunnel.on_outbound_packet(now, &p) {
                    Ok(()) => {
                        assert!(could_read, "a push while paused was accepted");
                        outbound.accepted += 1;
                        let s = tunnel.stats().outbound;
                        let used = (s.packets_queued + s.packets_in_flight) as usize;
                        assert!(used <= out_cells, "{used} cells in use, limit {out_cells}");
                    }
                    Err(PacketError::NoRoom) => {
                        assert!(!could_read, "a push while reading was allowed was refused");
                        let mut expected = before;
                        expected.outbound_refused_packets += 1;
                        expected.outbound_refused_bytes += p.len() as u64;
                        assert_eq!(tunnel.stats(), expected, "a refusal changes one counter");
                    }
                    Err(other) => panic!("a valid packet refused: {other:?}"),
                }
                assert_eq!(
                    tunnel.can_read_outbound(),
                    could_read,
                    "a push never changes readiness in flow-queue mode"
                );
            }
            Op::Inbound { flow, len, tick } => {
                let now = Instant::from_micros(clock.tick(tick));
                seq += 1;
                let p = packet(flow % 6, seq, 32 + usize::from(len) % (max - 31));
                let before = tunnel.stats();
                let all_in_flight = inbound.in_flight.len() >= in_cells;
                match tunnel.on_inbound_packet(now, &p).expect("a valid packet") {
                    InboundDisposition::Queued => {
                        assert!(!all_in_flight);
                        assert_eq!(
                            tunnel.stats().inbound.overflow_dropped_packets,
                            before.inbound.overflow_dropped_packets
                        );
                        inbound.accepted += 1;
                        inbound_within(&tunnel, in_cells);
                    }
                    InboundDisposition::QueuedAfterDroppingFromFattest { packets, bytes } => {
                        assert!(!all_in_flight && packets > 0 && bytes >= packets * 32);
                        let after = tunnel.stats().inbound;
                        assert_eq!(
                            after.overflow_dropped_packets,
                            before.inbound.overflow_dropped_packets + packets as u64
                        );
                        inbound.accepted += 1;
                        inbound_within(&tunnel, in_cells);
                    }
                    InboundDisposition::DroppedNewest => {
                        assert!(all_in_flight, "dropped the newcomer with a cell to free");
                        // A drop by policy is a normal input: its `now` counts (an ongoing pause
                        // is measured up to it), and only the drop counters move.
                        let after = tunnel.stats();
                        let mut expected = before;
                        expected.inbound_dropped_newest_packets += 1;
                        expected.inbound_dropped_newest_bytes += p.len() as u64;
                        expected.outbound_paused_micros = after.outbound_paused_micros;
                        assert_eq!(after, expected);
                    }
                    other => panic!("flow-queue mode never reports {other:?}"),
                }
            }
            Op::PollOutbound { tick } => {
                let now = Instant::from_micros(clock.tick(tick));
                if let Some(p) = tunnel.poll_outbound(now) {
                    handed_out(&mut outbound, p);
                }
                assert_eq!(
                    tunnel.can_read_outbound(),
                    outbound.in_flight.len() < out_cells,
                    "reading pauses exactly when every cell is in flight"
                );
            }
            Op::PollInbound { tick } => {
                let now = Instant::from_micros(clock.tick(tick));
                if let Some(p) = tunnel.poll_inbound(now) {
                    handed_out(&mut inbound, p);
                }
            }
            Op::CompleteOutbound { count, tick } => {
                let now = Instant::from_micros(clock.tick(tick));
                let count = usize::from(count % 8);
                let was_paused = !tunnel.can_read_outbound();
                match tunnel.complete_outbound(now, count) {
                    Ok(done) => {
                        assert!(count <= outbound.in_flight.len());
                        let released: Vec<Vec<u8>> = outbound.in_flight.drain(..count).collect();
                        assert_eq!(done.released.packets, count);
                        assert_eq!(
                            done.released.bytes,
                            released.iter().map(Vec::len).sum::<usize>()
                        );
                        outbound.completed += count as u64;
                        let can_read = tunnel.can_read_outbound();
                        assert_eq!(can_read, outbound.in_flight.len() < out_cells);
                        assert_eq!(
                            done.resume_reading,
                            was_paused && can_read,
                            "the resume edge is the completion that frees a cell"
                        );
                    }
                    Err(_) => assert!(count > outbound.in_flight.len()),
                }
            }
            Op::CompleteInbound { count, tick } => {
                let now = Instant::from_micros(clock.tick(tick));
                let count = usize::from(count % 8);
                match tunnel.complete_inbound(now, count) {
                    Ok(released) => {
                        assert_eq!(released.packets, count);
                        inbound.in_flight.drain(..count);
                        inbound.completed += count as u64;
                    }
                    Err(_) => assert!(count > inbound.in_flight.len()),
                }
            }
            Op::Pressure { level, tick } => {
                let now = Instant::from_micros(clock.tick(tick));
                let level = [Pressure::Normal, Pressure::Elevated, Pressure::Critical]
                    [usize::from(level % 3)];
                let was_paused = !tunnel.can_read_outbound();
                let resume = tunnel.on_pressure(now, level);
                let limits = tunnel.limits();
                assert_eq!(limits.pressure, level);
                for (limit, cells) in [
                    (limits.outbound_packets, config.outbound_packets),
                    (limits.inbound_packets, config.inbound_packets),
                ] {
                    assert!((1..=cells).contains(&limit), "{limit} of {cells} cells");
                }
                let can_read = tunnel.can_read_outbound();
                assert_eq!(
                    can_read,
                    outbound.in_flight.len() < limits.outbound_packets as usize,
                    "reading pauses exactly when the limit of cells is in flight"
                );
                assert_eq!(resume, was_paused && can_read, "resume edge exactly once");
            }
        }
        check(&tunnel, &config, &outbound, &inbound);
    }
});

/// After an inbound packet was queued: at most `limit` cells are in use.
fn inbound_within(tunnel: &Tunnel, limit: usize) {
    let s = tunnel.stats().inbound;
    let used = (s.packets_queued + s.packets_in_flight) as usize;
    assert!(used <= limit, "inbound: {used} cells in use, limit {limit}");
}

/// Record a packet handed out, checking its flow's order.
fn handed_out(direction: &mut Direction, p: &[u8]) {
    let (flow, seq) = decode(p);
    if let Some(&last) = direction.last_seq.get(&flow) {
        assert!(seq > last, "flow {flow}: {seq} handed out after {last}");
    }
    direction.last_seq.insert(flow, seq);
    direction.in_flight.push_back(p.to_vec());
}

fn check(tunnel: &Tunnel, config: &TunnelConfig, outbound: &Direction, inbound: &Direction) {
    let stats = tunnel.stats();
    let cell = u64::from(config.cell_bytes());
    for (name, s, d, cells) in [
        (
            "outbound",
            &stats.outbound,
            outbound,
            config.outbound_packets,
        ),
        ("inbound", &stats.inbound, inbound, config.inbound_packets),
    ] {
        let held = s.packets_queued + s.packets_in_flight;
        assert!(
            held <= u64::from(cells),
            "{name}: {held} packets in {cells} cells"
        );
        assert_eq!(s.arena_bytes_used, held * cell, "{name}: whole cells");
        assert_eq!(s.packets_in_flight, d.in_flight.len() as u64, "{name}");
        assert_eq!(s.packets_accepted, d.accepted, "{name}");
        assert_eq!(s.packets_completed, d.completed, "{name}");
        assert_eq!(
            s.packets_accepted,
            s.packets_queued
                + s.packets_in_flight
                + s.packets_completed
                + s.aqm_dropped_packets
                + s.overflow_dropped_packets,
            "{name}: every packet accounted for"
        );
    }
    let out: Vec<&[u8]> = tunnel.outbound_in_flight().collect();
    assert!(
        out.iter()
            .copied()
            .eq(outbound.in_flight.iter().map(Vec::as_slice))
    );
    let inb: Vec<&[u8]> = tunnel.inbound_in_flight().collect();
    assert!(
        inb.iter()
            .copied()
            .eq(inbound.in_flight.iter().map(Vec::as_slice))
    );
}
