use std::collections::{HashMap, VecDeque};

use proptest::prelude::*;

use super::*;

type TestQueues = FlowQueues<Vec<u8>, Vec<Slot>, Vec<FlowQueue>>;

const SEED: [u8; 16] = [9; 16];
/// CoDel that never drops: the target is never reached in these tests' time.
const NO_CODEL: CodelParams = CodelParams::new(u32::MAX - 1, u32::MAX);

fn queues(cells: usize, queues: usize, codel: CodelParams) -> TestQueues {
    let settings = FlowSettings {
        cell_size: 1536,
        max_packet: 1500,
        quantum: 1500,
        seed: SEED,
        codel,
    };
    FlowQueues::new(
        vec![0; cells * 1536],
        vec![Slot::EMPTY; cells],
        vec![FlowQueue::EMPTY; queues],
        settings,
    )
    .unwrap()
}

/// A UDP packet of flow `flow` (its source port) carrying `seq` in its first payload bytes.
fn packet(flow: u16, seq: u32, len: usize) -> Vec<u8> {
    let mut p = udp4([10, 0, 0, 1], flow, [10, 0, 0, 2], 9, len.max(4));
    p[28..32].copy_from_slice(&seq.to_be_bytes());
    p
}

fn decode(p: &[u8]) -> (u16, u32) {
    (
        u16::from_be_bytes([p[20], p[21]]),
        u32::from_be_bytes([p[28], p[29], p[30], p[31]]),
    )
}

fn push(q: &mut TestQueues, now: u64, p: &[u8]) -> Result<Dropped, PushError> {
    q.push_with(Instant::from_micros(now), p.len(), |dst| {
        dst.copy_from_slice(p)
    })
}

fn take(q: &mut TestQueues, now: u64) -> Option<(u16, u32)> {
    q.handout(Instant::from_micros(now))
        .1
        .map(|(_, p)| decode(p))
}

#[test]
fn storage_lengths_must_agree() {
    let settings = FlowSettings {
        cell_size: 1536,
        max_packet: 1500,
        quantum: 1500,
        seed: SEED,
        codel: NO_CODEL,
    };
    let make = |bytes: usize, cells: usize, qs: usize, s: FlowSettings| {
        FlowQueues::new(
            vec![0u8; bytes],
            vec![Slot::EMPTY; cells],
            vec![FlowQueue::EMPTY; qs],
            s,
        )
        .is_some()
    };
    assert!(make(4 * 1536, 4, 8, settings));
    assert!(!make(4 * 1536 + 1, 4, 8, settings), "arena is whole cells");
    assert!(!make(4 * 1536, 4, 0, settings), "at least one queue");
    let small = FlowSettings {
        cell_size: 1000,
        ..settings
    };
    assert!(
        !make(4 * 1000, 4, 8, small),
        "a cell holds the largest packet"
    );
}

#[test]
fn a_sparse_flow_passes_a_backlogged_one() {
    let mut q = queues(64, 64, NO_CODEL);
    for seq in 0..40 {
        push(&mut q, 0, &packet(1000, seq, 1400)).unwrap();
    }
    // The bulk flow is served, and has spent its first quantum: it is on the old list.
    assert_eq!(take(&mut q, 1), Some((1000, 0)));
    assert_eq!(take(&mut q, 1), Some((1000, 1)));
    // A ping-sized packet of a new flow goes next, ahead of 38 queued bulk packets.
    push(&mut q, 2, &packet(2000, 0, 60)).unwrap();
    assert_eq!(take(&mut q, 3), Some((2000, 0)));
    assert_eq!(take(&mut q, 3), Some((1000, 2)));
}

/// RFC 8290, section 4.2: a queue that empties while on the new list goes behind the old ones,
/// so a flow that keeps going idle and active again cannot claim new-flow priority every time
/// and take more than its share from backlogged flows.
#[test]
fn a_flow_that_keeps_reactivating_gets_no_more_than_its_share() {
    let mut q = queues(1024, 1024, NO_CODEL);
    let (bulk, bouncer) = ([1001u16, 1002, 1003], 2000u16);
    let mut seen = std::collections::HashSet::new();
    for port in bulk.iter().chain([&bouncer]) {
        let queue = classify::queue_of(classify::flow_hash(&packet(*port, 0, 1400), &SEED), 1024);
        assert!(seen.insert(queue), "the test needs four distinct queues");
    }
    for seq in 0..200 {
        for port in bulk {
            push(&mut q, 0, &packet(port, seq, 1400)).unwrap();
        }
    }
    // Serve each bulk flow its first quantum, so all three are on the old list.
    for _ in 0..12 {
        assert_ne!(
            q.handout(Instant::ZERO).1.map(|(_, p)| decode(p).0),
            Some(bouncer)
        );
        q.complete(1).unwrap();
    }
    let mut bouncer_out = 0;
    for seq in 0..200 {
        // One packet, then two hand-outs: the bouncer's queue is empty at the second.
        push(&mut q, 1, &packet(bouncer, seq, 1400)).unwrap();
        for _ in 0..2 {
            let (_, Some((_, p))) = q.handout(Instant::from_micros(1)) else {
                panic!("backlogged")
            };
            bouncer_out += usize::from(decode(p).0 == bouncer);
            q.complete(1).unwrap();
        }
    }
    // Four flows of equal packets: a fair share is a quarter of 400. Claiming new-flow priority
    // at every packet would give the bouncer every other hand-out, 200.
    assert!(
        bouncer_out <= 120,
        "the bouncer took {bouncer_out} of 400 hand-outs"
    );
}

#[test]
fn deficit_round_robin_shares_bytes_not_packets() {
    let mut q = queues(1024, 64, NO_CODEL);
    let (big, small) = (1001u16, 1002u16);
    assert_ne!(
        classify::queue_of(classify::flow_hash(&packet(big, 0, 1400), &SEED), 64),
        classify::queue_of(classify::flow_hash(&packet(small, 0, 100), &SEED), 64),
        "the test needs the two flows in different queues"
    );
    for seq in 0..200 {
        push(&mut q, 0, &packet(big, seq, 1400)).unwrap();
    }
    for seq in 0..800 {
        push(&mut q, 0, &packet(small, seq, 100)).unwrap();
    }
    let mut bytes: HashMap<u16, usize> = HashMap::new();
    for _ in 0..300 {
        let (_, Some((_, p))) = q.handout(Instant::from_micros(1)) else {
            panic!("queued")
        };
        *bytes.entry(decode(p).0).or_default() += p.len();
        q.complete(1).unwrap();
    }
    let (b, s) = (bytes[&big], bytes[&small]);
    assert!(
        b.abs_diff(s) <= 2 * 1500,
        "byte shares differ by {}: {b} vs {s}",
        b.abs_diff(s)
    );
}

#[test]
fn overflow_drops_from_the_head_of_the_fattest_queue() {
    let mut q = queues(16, 64, NO_CODEL);
    for seq in 0..14 {
        push(&mut q, 0, &packet(1000, seq, 1400)).unwrap();
    }
    push(&mut q, 0, &packet(2000, 0, 100)).unwrap();
    push(&mut q, 0, &packet(2000, 1, 100)).unwrap();
    assert!(!q.can_take() || q.cells_used() == 16);
    // Full: a third packet of the small flow drops half the flood's 14, oldest first.
    let dropped = push(&mut q, 1, &packet(2000, 2, 100)).unwrap();
    assert_eq!(dropped.packets, 7);
    assert_eq!(dropped.bytes, 7 * (1400 + 28));
    assert_eq!(q.cells_used(), 10);
    let mut out = Vec::new();
    while let Some(p) = take(&mut q, 2) {
        out.push(p);
    }
    let flood: Vec<u32> = out.iter().filter(|p| p.0 == 1000).map(|p| p.1).collect();
    assert_eq!(flood, (7..14).collect::<Vec<_>>(), "the oldest seven went");
    assert_eq!(
        out.iter().filter(|p| p.0 == 2000).count(),
        3,
        "the small flow lost nothing"
    );
}

#[test]
fn a_push_is_refused_only_when_every_cell_is_in_flight() {
    let mut q = queues(4, 8, NO_CODEL);
    for seq in 0..4 {
        push(&mut q, 0, &packet(1, seq, 100)).unwrap();
    }
    for _ in 0..3 {
        take(&mut q, 0).unwrap();
    }
    assert!(q.can_take());
    push(&mut q, 0, &packet(1, 9, 100)).unwrap();
    take(&mut q, 0).unwrap();
    assert!(!q.can_take());
    let before = (q.levels(), q.cells_used());
    assert_eq!(push(&mut q, 0, &packet(2, 0, 100)), Err(PushError::Full));
    assert_eq!(
        (q.levels(), q.cells_used()),
        before,
        "a refusal changes nothing"
    );
    let released = q.complete(1).unwrap();
    assert_eq!(released.packets, 1);
    assert!(q.can_take());
}

#[test]
fn freed_cells_are_reused_last_in_first_out() {
    let mut q = queues(256, 8, NO_CODEL);
    for seq in 0..1000 {
        push(&mut q, 0, &packet(1, seq, 1000)).unwrap();
        push(&mut q, 0, &packet(2, seq, 1000)).unwrap();
        take(&mut q, 0).unwrap();
        take(&mut q, 0).unwrap();
        q.complete(2).unwrap();
    }
    assert_eq!(
        q.fresh, 2,
        "two packets at a time touch two cells, never more"
    );
}

#[test]
fn codel_runs_per_queue() {
    let mut q = queues(512, 64, CodelParams::new(5_000, 100_000));
    // A bulk flow with a standing queue, and a sparse flow sending one packet at a time.
    for seq in 0..200 {
        push(&mut q, 0, &packet(1000, seq, 1400)).unwrap();
    }
    let mut bulk_drops = 0;
    for step in 1..=100u64 {
        let now = step * 10_000;
        push(&mut q, now, &packet(2000, step as u32, 60)).unwrap();
        for _ in 0..2 {
            let (dropped, _) = q.handout(Instant::from_micros(now));
            bulk_drops += dropped.packets;
            q.complete(1).unwrap();
        }
    }
    assert!(bulk_drops > 0, "the standing queue lost packets");
}

#[derive(Clone, Debug)]
enum Op {
    Push { flow: u16, len: usize },
    Handout,
    Complete(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u16..12, 1usize..1472).prop_map(|(flow, len)| Op::Push { flow, len }),
        3 => Just(Op::Handout),
        1 => (0usize..6).prop_map(Op::Complete),
    ]
}

proptest! {
    #![proptest_config(crate::proptest_config::default_cases())]

    /// Against a model of what the docs promise: a push is refused exactly when every cell is in
    /// flight, packets of one flow leave in order, every packet is handed out, dropped or still
    /// queued, completions release the oldest handed out, and the cells never exceed the arena.
    #[test]
    fn flow_queues_keep_their_promises(
        cells in 1usize..24,
        nqueues in 1usize..20,
        codel in any::<bool>(),
        ops in proptest::collection::vec(op(), 0..300),
    ) {
        let params = if codel { CodelParams::new(5_000, 100_000) } else { NO_CODEL };
        let mut q = queues(cells, nqueues, params);
        let mut next_seq: HashMap<u16, u32> = HashMap::new();
        let mut last_out: HashMap<u16, u32> = HashMap::new();
        let mut flight: VecDeque<(u16, u32)> = VecDeque::new();
        let (mut pushed, mut dropped, mut handed) = (0u64, 0u64, 0u64);
        for (step, op) in ops.into_iter().enumerate() {
            let now = step as u64 * 3_000;
            match op {
                Op::Push { flow, len } => {
                    let seq = *next_seq.entry(flow).or_default();
                    let can = flight.len() < cells;
                    prop_assert_eq!(q.can_take(), can);
                    match push(&mut q, now, &packet(flow, seq, len)) {
                        Ok(d) => {
                            prop_assert!(can);
                            pushed += 1;
                            dropped += d.packets;
                            next_seq.insert(flow, seq + 1);
                        }
                        Err(e) => {
                            prop_assert!(!can);
                            prop_assert_eq!(e, PushError::Full);
                        }
                    }
                }
                Op::Handout => {
                    let (d, out) = q.handout(Instant::from_micros(now));
                    dropped += d.packets;
                    if let Some((_, p)) = out {
                        let (flow, seq) = decode(p);
                        if let Some(&last) = last_out.get(&flow) {
                            prop_assert!(seq > last, "flow {} out of order: {} after {}", flow, seq, last);
                        }
                        last_out.insert(flow, seq);
                        flight.push_back((flow, seq));
                        handed += 1;
                    } else {
                        prop_assert_eq!(q.levels().packets_queued, 0);
                    }
                }
                Op::Complete(n) => {
                    let result = q.complete(n);
                    if n > flight.len() {
                        prop_assert!(result.is_err());
                    } else {
                        prop_assert_eq!(result.unwrap().packets, n);
                        flight.drain(..n);
                    }
                }
            }
            let in_flight: Vec<(u16, u32)> = q.in_flight().map(decode).collect();
            prop_assert_eq!(in_flight, flight.iter().copied().collect::<Vec<_>>());
            let levels = q.levels();
            prop_assert_eq!(levels.packets_in_flight, flight.len());
            prop_assert_eq!(pushed, handed + dropped + levels.packets_queued as u64);
            prop_assert!(q.cells_used() <= cells);
            prop_assert!(q.bytes_used() <= cells * 1536);
            let queued: u32 = q.queues.iter().map(|fq| fq.packets).sum();
            prop_assert_eq!(queued as usize, levels.packets_queued);
        }
    }
}

#[test]
fn a_cell_limit_keeps_a_flood_to_the_same_few_cells() {
    let mut q = queues(16, 8, NO_CODEL);
    q.set_cell_limit(3);
    let base = q.arena.as_ptr().addr();
    let mut highest = 0;
    for seq in 0..200u32 {
        push(
            &mut q,
            u64::from(seq),
            &packet(1 + (seq % 5) as u16, seq, 100),
        )
        .unwrap();
        assert!(q.cells_used() <= 3);
        if seq % 3 == 0 {
            let (_, p) = q.handout(Instant::from_micros(u64::from(seq)));
            let at = p.unwrap().1.as_ptr().addr() - base;
            highest = highest.max(at);
            q.complete(1).unwrap();
        }
    }
    assert!(
        highest < 3 * 1536,
        "only the first three cells were ever written"
    );
    assert!(q.fresh <= 3);
}
