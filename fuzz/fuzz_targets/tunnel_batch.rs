//! The batch calls against one call per packet. Two `PacketTunnel`s of one configuration (FIFO
//! with AQM off or CoDel, with or without a byte queue limit, or flow queues) are driven by the
//! same host: one through `on_outbound_batch`, `poll_outbound_batch` and `poll_inbound_batch`,
//! the other a packet at a time. After every call their results, their statistics, whether
//! reading is allowed, and the bytes of every packet in flight must be the same.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use tidegate_core::{
    BatchPush, FlowQueue, Instant, PacketTunnel, Pressure, Slot, TunnelConfig, TunnelStats,
    TunnelStorage,
};
use tidegate_fuzz::{
    FifoSetup, FqSetup, HostClock, MAX_OPS, PageAlignedArena, Tick, stamped_packet,
};

type Tunnel = PacketTunnel<PageAlignedArena, Vec<Slot>, Vec<FlowQueue>>;

#[derive(Debug, Arbitrary)]
enum Setup {
    Fifo(FifoSetup),
    Fq(FqSetup),
}

#[derive(Debug, Arbitrary)]
enum Op {
    /// Outbound packets of these lengths and flows, pushed as one batch.
    Read {
        packets: Vec<(u16, u8)>,
        tick: Tick,
    },
    /// Hand out up to `max` outbound packets.
    Send {
        max: u8,
        tick: Tick,
    },
    CompleteOutbound {
        count: u8,
        tick: Tick,
    },
    Transmitted {
        bytes: u16,
        tick: Tick,
    },
    /// One inbound packet.
    Receive {
        len: u16,
        flow: u8,
        tick: Tick,
    },
    /// Hand out up to `max` inbound packets.
    Write {
        max: u8,
        tick: Tick,
    },
    CompleteInbound {
        count: u8,
        tick: Tick,
    },
    /// `level % 3` is normal, elevated or critical.
    Pressure {
        level: u8,
        tick: Tick,
    },
}

fuzz_target!(|data: &[u8]| {
    let mut input = Unstructured::new(data);
    let Ok(setup) = Setup::arbitrary(&mut input) else {
        return;
    };
    let config = match &setup {
        Setup::Fifo(setup) => setup.config(),
        Setup::Fq(setup) => setup.config(),
    };
    config.validate().expect("derived configurations are valid");
    let (mut batched, mut single) = (tunnel(config), tunnel(config));
    let mut clock = HostClock::new(1_000_000);
    let mut seq = 0u32;
    let limit = config.max_packet_len as usize + 8;
    let mut packet = |len: u16, flow: u8| {
        seq += 1;
        packet_of(seq, usize::from(len) % limit, flow)
    };
    for _ in 0..MAX_OPS {
        let Ok(op) = Op::arbitrary(&mut input) else {
            break;
        };
        match op {
            Op::Read { packets, tick } => {
                let now = Instant::from_micros(clock.tick(tick));
                let packets: Vec<Vec<u8>> = packets
                    .into_iter()
                    .take(64)
                    .map(|(len, flow)| packet(len, flow))
                    .collect();
                let batch = batched.on_outbound_batch(now, packets.iter().map(Vec::as_slice));
                let mut one_by_one = BatchPush {
                    accepted: 0,
                    stopped_by: None,
                };
                for packet in &packets {
                    if let Err(error) = single.on_outbound_packet(now, packet) {
                        one_by_one.stopped_by = Some(error);
                        break;
                    }
                    one_by_one.accepted += 1;
                }
                assert_eq!(batch, one_by_one);
            }
            Op::Send { max, tick } => {
                let now = Instant::from_micros(clock.tick(tick));
                same_hand_outs(
                    max,
                    |max, each| batched.poll_outbound_batch(now, max, each),
                    || single.poll_outbound(now).map(<[u8]>::to_vec),
                );
            }
            Op::CompleteOutbound { count, tick } => {
                let now = Instant::from_micros(clock.tick(tick));
                let count = usize::from(count % 48);
                assert_eq!(
                    batched.complete_outbound(now, count),
                    single.complete_outbound(now, count)
                );
            }
            Op::Transmitted { bytes, tick } => {
                let now = Instant::from_micros(clock.tick(tick));
                batched.on_outbound_transmitted(now, u64::from(bytes));
                single.on_outbound_transmitted(now, u64::from(bytes));
            }
            Op::Receive { len, flow, tick } => {
                let now = Instant::from_micros(clock.tick(tick));
                let p = packet(len, flow);
                assert_eq!(
                    batched.on_inbound_packet(now, &p),
                    single.on_inbound_packet(now, &p)
                );
            }
            Op::Write { max, tick } => {
                let now = Instant::from_micros(clock.tick(tick));
                same_hand_outs(
                    max,
                    |max, each| batched.poll_inbound_batch(now, max, each),
                    || single.poll_inbound(now).map(<[u8]>::to_vec),
                );
            }
            Op::CompleteInbound { count, tick } => {
                let now = Instant::from_micros(clock.tick(tick));
                let count = usize::from(count % 48);
                assert_eq!(
                    batched.complete_inbound(now, count),
                    single.complete_inbound(now, count)
                );
            }
            Op::Pressure { level, tick } => {
                let now = Instant::from_micros(clock.tick(tick));
                let level = [Pressure::Normal, Pressure::Elevated, Pressure::Critical]
                    [usize::from(level % 3)];
                assert_eq!(
                    batched.on_pressure(now, level),
                    single.on_pressure(now, level)
                );
            }
        }
        assert_eq!(observed(&batched), observed(&single));
    }
});

fn tunnel(config: TunnelConfig) -> Tunnel {
    let queues = config.aqm.flow_queues() as usize;
    let storage = TunnelStorage {
        outbound_arena: PageAlignedArena::new(config.outbound_bytes as usize),
        outbound_slots: vec![Slot::EMPTY; config.outbound_packets as usize],
        inbound_arena: PageAlignedArena::new(config.inbound_bytes as usize),
        inbound_slots: vec![Slot::EMPTY; config.inbound_packets as usize],
        outbound_queues: vec![FlowQueue::EMPTY; queues],
        inbound_queues: vec![FlowQueue::EMPTY; queues],
    };
    Tunnel::new(config, storage).expect("valid configuration")
}

/// A packet of `len` bytes identified by `seq`; from 28 bytes on it starts with an IPv4/UDP
/// header of flow `flow % 8`, so flow queues see several flows.
fn packet_of(seq: u32, len: usize, flow: u8) -> Vec<u8> {
    let mut packet = stamped_packet(seq, len);
    if len >= 28 {
        let header = [
            0x45,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            64,
            17,
            0,
            0,
            10,
            0,
            0,
            1,
            10,
            0,
            0,
            2,
            0x13,
            0x88,
            0,
            flow % 8,
            0,
            0,
            0,
            0,
        ];
        packet[..28].copy_from_slice(&header);
    }
    packet
}

/// Hand out up to `max % 40` packets with a batch call and one call at a time: the same
/// packets, and the batch call's count is how many it passed on.
fn same_hand_outs(
    max: u8,
    batch: impl FnOnce(usize, &mut dyn FnMut(&[u8])) -> usize,
    mut one: impl FnMut() -> Option<Vec<u8>>,
) {
    let max = usize::from(max % 40);
    let mut got = Vec::new();
    let count = batch(max, &mut |p| got.push(p.to_vec()));
    let want: Vec<Vec<u8>> = (0..max).map_while(|_| one()).collect();
    assert_eq!(count, got.len());
    assert_eq!(got, want);
}

/// Everything a host can observe of a tunnel.
fn observed(tunnel: &Tunnel) -> (TunnelStats, bool, Vec<Vec<u8>>, Vec<Vec<u8>>) {
    (
        tunnel.stats(),
        tunnel.can_read_outbound(),
        tunnel.outbound_in_flight().map(<[u8]>::to_vec).collect(),
        tunnel.inbound_in_flight().map(<[u8]>::to_vec).collect(),
    )
}
