//! `PacketRing` against a `VecDeque` model: contents, order, levels, the in-flight view, the
//! byte and slot ceilings, the alignment padding's bounds, and the documented fit guarantee,
//! with packet alignments from 1 to 128.
#![no_main]

use std::collections::VecDeque;

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use tidegate_core::{CompleteError, Instant, PacketRing, PushError, Released, Slot};
use tidegate_fuzz::{MAX_OPS, stamped_packet};

#[derive(Debug, Arbitrary)]
enum Op {
    Push(u16),
    Handout,
    HandoutBatch(u8),
    Complete(u8),
    DropQueuedFront,
    Fits(u16),
}

fuzz_target!(|data: &[u8]| {
    let mut input = Unstructured::new(data);
    let Ok(arena) = input.int_in_range(1usize..=2048) else {
        return;
    };
    let Ok(slots) = input.int_in_range(1usize..=48) else {
        return;
    };
    let Ok(align_log2) = input.int_in_range(0u32..=7) else {
        return;
    };
    let align = 1usize << align_log2;
    let mut ring =
        PacketRing::with_packet_align(vec![0u8; arena], vec![Slot::EMPTY; slots], align).unwrap();
    let mut queued: VecDeque<Vec<u8>> = VecDeque::new();
    // Handed-out packets in arena order; `true` marks one dropped behind in-flight ones.
    let mut handed: VecDeque<(Vec<u8>, bool)> = VecDeque::new();
    let mut largest_since_empty = 0usize;
    let mut seq = 0u32;
    for _ in 0..MAX_OPS {
        let Ok(op) = Op::arbitrary(&mut input) else {
            break;
        };
        match op {
            Op::Push(len) => {
                let len = usize::from(len) % 600;
                seq += 1;
                let packet = stamped_packet(seq, len);
                let fits = ring.fits(len);
                let used = ring.bytes_used();
                let live = queued.len() + handed.len();
                match ring.push(Instant::from_micros(u64::from(seq)), &packet) {
                    Ok(()) => {
                        assert!(fits && len > 0);
                        largest_since_empty = largest_since_empty.max(len);
                        queued.push_back(packet);
                    }
                    Err(PushError::Empty) => assert_eq!(len, 0),
                    Err(PushError::Full) => {
                        assert!(!fits && len > 0);
                        // Refused only where the documented guarantee allows it.
                        let bound = len.max(largest_since_empty);
                        assert!(live >= slots || used + len + bound > arena);
                    }
                    Err(other) => panic!("an undocumented refusal: {other:?}"),
                }
            }
            Op::Handout => {
                let got = ring.handout().map(<[u8]>::to_vec);
                let want = queued.pop_front();
                if let Some(packet) = &want {
                    handed.push_back((packet.clone(), false));
                }
                assert_eq!(got, want);
            }
            Op::HandoutBatch(max) => {
                let max = usize::from(max % 8);
                let mut got = Vec::new();
                let (count, last) = ring.handout_batch(max, |packet| got.push(packet.to_vec()));
                let want: Vec<Vec<u8>> = (0..max).map_while(|_| queued.pop_front()).collect();
                assert_eq!(count, want.len());
                assert_eq!(last.is_some(), !want.is_empty());
                handed.extend(want.iter().map(|packet| (packet.clone(), false)));
                assert_eq!(got, want);
            }
            Op::Complete(n) => {
                let n = usize::from(n % 8);
                let in_flight = handed.iter().filter(|(_, dropped)| !dropped).count();
                let result = ring.complete(n);
                if n > in_flight {
                    assert_eq!(
                        result,
                        Err(CompleteError {
                            requested: n,
                            in_flight
                        })
                    );
                } else {
                    let mut want = Released::default();
                    while let Some((packet, dropped)) = handed.front() {
                        if !dropped {
                            if want.packets == n {
                                break;
                            }
                            want.packets += 1;
                            want.bytes += packet.len();
                        }
                        handed.pop_front();
                    }
                    assert_eq!(result, Ok(want));
                }
            }
            Op::DropQueuedFront => {
                let got = ring.drop_queued_front();
                let want = queued.pop_front();
                assert_eq!(got, want.as_ref().map(Vec::len));
                if let Some(packet) = want
                    && !handed.is_empty()
                {
                    handed.push_back((packet, true));
                }
            }
            Op::Fits(len) => {
                let len = usize::from(len) % 600;
                let fits = ring.fits(len);
                let used = ring.bytes_used();
                let live = queued.len() + handed.len();
                if len == 0 {
                    assert!(!fits);
                } else if live < slots && used + len + len.max(largest_since_empty) <= arena {
                    assert!(fits, "the fit guarantee promises room for {len} bytes");
                }
            }
        }
        if queued.is_empty() && handed.is_empty() {
            largest_since_empty = 0;
        }
        check_levels(&ring, &queued, &handed, arena, slots, align);
    }
});

fn check_levels(
    ring: &PacketRing<Vec<u8>, Vec<Slot>>,
    queued: &VecDeque<Vec<u8>>,
    handed: &VecDeque<(Vec<u8>, bool)>,
    arena: usize,
    slots: usize,
    align: usize,
) {
    let levels = ring.levels();
    let in_flight: Vec<&Vec<u8>> = handed
        .iter()
        .filter(|(_, dropped)| !dropped)
        .map(|(packet, _)| packet)
        .collect();
    let pending: usize = handed
        .iter()
        .filter(|(_, dropped)| *dropped)
        .map(|(packet, _)| packet.len())
        .sum();
    assert_eq!(levels.packets_queued, queued.len());
    assert_eq!(
        levels.bytes_queued,
        queued.iter().map(Vec::len).sum::<usize>()
    );
    assert_eq!(levels.packets_in_flight, in_flight.len());
    assert_eq!(
        levels.bytes_in_flight,
        in_flight.iter().map(|p| p.len()).sum::<usize>()
    );
    assert_eq!(levels.bytes_dropped_pending, pending);
    assert!(ring.bytes_used() <= arena, "byte ceiling");
    let live = queued.len() + handed.len();
    let payload = levels.payload_bytes();
    assert!(
        payload <= ring.bytes_used(),
        "padding is counted, never subtracted"
    );
    assert!(
        ring.bytes_used() <= payload + live * (align - 1),
        "at most align - 1 bytes of padding a packet"
    );
    assert!(queued.len() + handed.len() <= slots, "slot ceiling");
    assert_eq!(ring.is_queue_empty(), queued.is_empty());
    let shown: Vec<&[u8]> = ring.in_flight().collect();
    assert_eq!(shown.len(), in_flight.len());
    for (shown, want) in shown.iter().zip(&in_flight) {
        assert_eq!(
            shown,
            &want.as_slice(),
            "in-flight bytes stay in place, unchanged"
        );
    }
}
