//! Flood beside TCP (seed 000): one unresponsive UDP flood at twice the link rate shares a
//! packet tunnel with one TCP flow and a ping every 100 ms, in virtual time.
//!
//! The model, stated so the figures can be judged:
//!
//! - **Link.** The tunnel's send side is a 50 Mbit/s bottleneck; the host hands a packet to it
//!   only when the previous one has been serialised (it paces its sends at the link rate, so the
//!   standing queue sits in the engine, not in a socket buffer). Every path adds 1 ms each way.
//! - **Kernel queue.** Packets from the apps wait in the kernel's TUN queue (500 packets, tail
//!   drop) until the host reads them; a host that stops reading moves the queue there.
//! - **Flood.** 1400-byte UDP packets at 100 Mbit/s, whatever happens to them.
//! - **TCP.** One Reno-like sender of 1400-byte segments: slow start, then one segment more per
//!   window; a gap seen by the receiver halves the window (at most once per round trip); no ACK
//!   for 300 ms restarts from one segment. Its goodput is what the receiver got.
//! - **Ping.** An 84-byte ICMP echo every 100 ms; its round trip is the queueing on the way out
//!   plus 2 ms.
//!
//! Hosts: a naive one reading everything into an unbounded FIFO (killed at the packet tunnel's
//! 50 MiB), tidegate in FIFO mode with CoDel (the default ceiling, reading paused at its high
//! watermark), and tidegate in flow-queue mode (FQ-CoDel, 1024 queues) at a 2 MiB ceiling.

use std::collections::VecDeque;

use tidegate_core::{Aqm, Instant, TunnelConfig};

use super::{Host, Row};
use crate::storage::{HeapTunnel, heap_tunnel};

const ID: &str = "flood-beside-tcp";
const SCENARIO: &str = "a UDP flood at 2x a 50 Mbit/s link beside one TCP flow and a ping";
/// The packet tunnel provider's memory limit.
const PACKET_TUNNEL_LIMIT: u64 = 50 * 1024 * 1024;
const LINK_BITS_PER_SEC: u64 = 50_000_000;
const FLOOD_BITS_PER_SEC: u64 = 100_000_000;
const SEGMENT: usize = 1400;
const PING: usize = 84;
const ONE_WAY_US: u64 = 1_000;
const TUN_QUEUE_PACKETS: usize = 500;
const READ_BATCH: usize = 64;
const PING_EVERY_US: u64 = 100_000;
const RTO_US: u64 = 300_000;
/// One step of virtual time.
const STEP_US: u64 = 8;
/// TCP's measurement starts after its first second (slow start and the flood's build-up).
const WARM_UP_US: u64 = 1_000_000;

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;

/// Virtual seconds each host runs: long enough for the naive host to reach 50 MiB.
const SECONDS: u64 = 10;

/// Naive, tidegate FIFO + CoDel (a `variant`), tidegate FQ-CoDel.
pub(super) fn flood_beside_tcp() -> [Row; 3] {
    let fifo = TunnelConfig {
        aqm: Aqm::CODEL_DEFAULT,
        max_packet_len: 1500,
        ..TunnelConfig::DEFAULT
    };
    let fq = TunnelConfig::for_ceiling(
        2 << 20,
        1500,
        Aqm::fq_codel(Aqm::FQ_DEFAULT_FLOW_QUEUES, *b"lab seed, fixed!"),
    )
    .expect("2 MiB fits a flow-queue tunnel");
    [run(None), run(Some(fifo)), run(Some(fq))]
}

/// A packet as the simulation follows it: its IP bytes, and who sent it when.
#[derive(Clone, Debug)]
struct Packet {
    bytes: Vec<u8>,
}

impl Packet {
    fn new(protocol: u8, len: usize, seq: u64, sent_us: u64) -> Packet {
        let mut bytes = vec![0u8; len];
        bytes[0] = 0x45;
        bytes[9] = protocol;
        bytes[12..16].copy_from_slice(&[10, 0, 0, 1]);
        bytes[16..20].copy_from_slice(&[10, 0, 0, 2]);
        let sport: u16 = if protocol == TCP { 5000 } else { 6000 };
        bytes[20..22].copy_from_slice(&sport.to_be_bytes());
        bytes[22..24].copy_from_slice(&5201u16.to_be_bytes());
        bytes[28..36].copy_from_slice(&seq.to_be_bytes());
        bytes[36..44].copy_from_slice(&sent_us.to_be_bytes());
        Packet { bytes }
    }

    fn protocol(bytes: &[u8]) -> u8 {
        bytes[9]
    }

    fn seq(bytes: &[u8]) -> u64 {
        u64::from_be_bytes(bytes[28..36].try_into().unwrap_or_default())
    }

    fn sent_us(bytes: &[u8]) -> u64 {
        u64::from_be_bytes(bytes[36..44].try_into().unwrap_or_default())
    }
}

/// The TCP sender and receiver.
struct Tcp {
    cwnd: f64,
    ssthresh: f64,
    in_flight: u64,
    next_seq: u64,
    expected: u64,
    last_reduction_us: u64,
    last_ack_us: u64,
    srtt_us: u64,
    /// Segments the receiver got after the warm-up.
    goodput_segments: u64,
    /// (time, segments acknowledged, segments found lost), in time order.
    feedback: VecDeque<(u64, u64, u64)>,
}

impl Tcp {
    fn new() -> Tcp {
        Tcp {
            cwnd: 10.0,
            ssthresh: f64::MAX,
            in_flight: 0,
            next_seq: 0,
            expected: 0,
            last_reduction_us: 0,
            last_ack_us: 0,
            srtt_us: 2 * ONE_WAY_US,
            goodput_segments: 0,
            feedback: VecDeque::new(),
        }
    }

    /// The receiver got `seq` at `now`: acknowledge it, and report any gap before it as lost.
    fn delivered(&mut self, now: u64, seq: u64, sent_us: u64) {
        let lost = seq.saturating_sub(self.expected);
        if seq >= self.expected {
            self.expected = seq + 1;
        }
        if now >= WARM_UP_US {
            self.goodput_segments += 1;
        }
        self.srtt_us = (7 * self.srtt_us + (now + ONE_WAY_US - sent_us)) / 8;
        self.feedback.push_back((now + ONE_WAY_US, 1, lost));
    }

    fn on_feedback(&mut self, now: u64) {
        while self.feedback.front().is_some_and(|&(at, _, _)| at <= now) {
            let Some((_, acked, lost)) = self.feedback.pop_front() else {
                break;
            };
            self.in_flight = self.in_flight.saturating_sub(acked + lost);
            self.last_ack_us = now;
            if lost > 0 && now - self.last_reduction_us > self.srtt_us {
                self.cwnd = (self.cwnd / 2.0).max(2.0);
                self.ssthresh = self.cwnd;
                self.last_reduction_us = now;
            } else if self.cwnd < self.ssthresh {
                self.cwnd += 1.0;
            } else {
                self.cwnd += 1.0 / self.cwnd;
            }
        }
        if self.in_flight > 0 && now - self.last_ack_us > RTO_US {
            // Everything outstanding is presumed lost: start again from one segment.
            self.ssthresh = (self.cwnd / 2.0).max(2.0);
            self.cwnd = 1.0;
            self.in_flight = 0;
            self.last_ack_us = now;
            self.last_reduction_us = now;
        }
    }

    fn may_send(&self) -> bool {
        (self.in_flight as f64) < self.cwnd
    }
}

/// Where the host keeps the packets it read: an unbounded FIFO, or a tidegate tunnel.
enum Queue {
    Unbounded {
        packets: VecDeque<Vec<u8>>,
        bytes: u64,
    },
    Tunnel(Box<HeapTunnel>),
}

/// The naive host without a configuration, tidegate with one.
fn run(config: Option<TunnelConfig>) -> Row {
    let host = if config.is_some() {
        Host::Tidegate
    } else {
        Host::Naive
    };
    let mut queue = match config {
        None => Queue::Unbounded {
            packets: VecDeque::new(),
            bytes: 0,
        },
        Some(config) => Queue::Tunnel(Box::new(heap_tunnel(config).expect("valid config"))),
    };
    let end_us = SECONDS * 1_000_000;
    let mut tun_queue: VecDeque<Vec<u8>> = VecDeque::new();
    let mut tun_drops = 0u64;
    let mut tcp = Tcp::new();
    let mut flood_seq = 0u64;
    let mut next_flood_us = 0u64;
    let mut ping_seq = 0u64;
    let mut pings_ms: Vec<f64> = Vec::new();
    let mut link_free_at = 0u64;
    let mut link_busy_us = 0u64;
    // Packets on the wire: (arrival time at the far end, bytes).
    let mut wire: VecDeque<(u64, Vec<u8>)> = VecDeque::new();
    let mut memory_high_water = 0u64;
    let mut killed_at: Option<f64> = None;
    let flood_gap_us = (SEGMENT as u64 * 8 * 1_000_000) / FLOOD_BITS_PER_SEC;

    let mut now_us = 0u64;
    while now_us < end_us {
        // The apps send into the kernel's TUN queue.
        let mut offer = |packet: Packet, tun_queue: &mut VecDeque<Vec<u8>>| {
            if tun_queue.len() < TUN_QUEUE_PACKETS {
                tun_queue.push_back(packet.bytes);
                true
            } else {
                tun_drops += 1;
                false
            }
        };
        while next_flood_us <= now_us {
            offer(Packet::new(UDP, SEGMENT, flood_seq, now_us), &mut tun_queue);
            flood_seq += 1;
            next_flood_us += flood_gap_us;
        }
        if now_us.is_multiple_of(PING_EVERY_US) {
            offer(Packet::new(ICMP, PING, ping_seq, now_us), &mut tun_queue);
            ping_seq += 1;
        }
        tcp.on_feedback(now_us);
        if tcp.may_send() {
            // A segment the kernel refuses is lost like one dropped later.
            offer(
                Packet::new(TCP, SEGMENT, tcp.next_seq, now_us),
                &mut tun_queue,
            );
            tcp.next_seq += 1;
            tcp.in_flight += 1;
        }

        // The host reads a batch while it may, and sends one packet when the link is free.
        let now = Instant::from_micros(now_us);
        match &mut queue {
            Queue::Unbounded { packets, bytes } => {
                for packet in tun_queue.drain(..tun_queue.len().min(READ_BATCH)) {
                    *bytes += packet.len() as u64;
                    packets.push_back(packet);
                }
                memory_high_water = memory_high_water.max(*bytes);
                if *bytes > PACKET_TUNNEL_LIMIT {
                    killed_at = Some(now_us as f64 / 1e6);
                    break;
                }
            }
            Queue::Tunnel(tunnel) => {
                for _ in 0..READ_BATCH {
                    if !tunnel.can_read_outbound() {
                        break;
                    }
                    let Some(packet) = tun_queue.pop_front() else {
                        break;
                    };
                    tunnel
                        .on_outbound_packet(now, &packet)
                        .expect("a packet read while reading was allowed fits");
                }
                let stats = tunnel.stats().outbound;
                memory_high_water = memory_high_water.max(stats.bytes_high_water);
            }
        }
        if link_free_at <= now_us {
            let sent = match &mut queue {
                Queue::Unbounded { packets, bytes } => packets.pop_front().inspect(|p| {
                    *bytes -= p.len() as u64;
                }),
                Queue::Tunnel(tunnel) => {
                    let packet = tunnel.poll_outbound(now).map(<[u8]>::to_vec);
                    if packet.is_some() {
                        // Sent at the link's pace: the send completes at once.
                        let _ = tunnel.complete_outbound(now, 1).expect("one in flight");
                    }
                    packet
                }
            };
            if let Some(packet) = sent {
                let serialise_us = packet.len() as u64 * 8 * 1_000_000 / LINK_BITS_PER_SEC;
                link_free_at = now_us + serialise_us;
                link_busy_us += serialise_us;
                wire.push_back((link_free_at + ONE_WAY_US, packet));
            }
        }
        while wire.front().is_some_and(|(at, _)| *at <= now_us) {
            let Some((at, packet)) = wire.pop_front() else {
                break;
            };
            match Packet::protocol(&packet) {
                TCP => tcp.delivered(at, Packet::seq(&packet), Packet::sent_us(&packet)),
                ICMP => {
                    let rtt_us = at + ONE_WAY_US - Packet::sent_us(&packet);
                    pings_ms.push(rtt_us as f64 / 1000.0);
                }
                _ => {}
            }
        }
        now_us += STEP_US;
    }

    let measured_us = now_us.saturating_sub(WARM_UP_US).max(1);
    let capacity_segments = (measured_us * LINK_BITS_PER_SEC / 8 / 1_000_000) / SEGMENT as u64;
    let tcp_share = super::percent(tcp.goodput_segments, capacity_segments.max(1));
    pings_ms.sort_by(f64::total_cmp);
    let ping_median = pings_ms.get(pings_ms.len() / 2).copied();
    let (variant, label) = match &config {
        None => (None, "unbounded FIFO"),
        Some(c) if c.aqm.flow_queues() > 0 => (None, "FQ-CoDel, 1024 queues"),
        Some(_) => (Some("fifo-codel"), "FIFO + CoDel"),
    };
    let mut row = Row::new(ID, SCENARIO, "000", host);
    row.variant = variant;
    row.platform_limit = Some(PACKET_TUNNEL_LIMIT);
    row.ceiling = config.map(|c| HeapTunnel::footprint(&c) as u64);
    row.memory_high_water = Some(memory_high_water);
    row.throughput_percent = Some(super::percent(link_busy_us, now_us.max(1)));
    row.tcp_share_percent = Some(tcp_share);
    row.ping_median_ms = ping_median;
    row.killed_at_seconds = killed_at;
    let aqm_drops = match &queue {
        Queue::Unbounded { .. } => 0,
        Queue::Tunnel(tunnel) => {
            let s = tunnel.stats().outbound;
            s.aqm_dropped_packets + s.overflow_dropped_packets
        }
    };
    row.drops = Some(tun_drops + aqm_drops);
    row.outcome = match killed_at {
        Some(at) => format!("{label}: killed at {at:.1} s, past 50 MiB"),
        None => format!(
            "{label}: TCP {tcp_share:.0}% of the link, ping median {:.1} ms",
            ping_median.unwrap_or(f64::NAN)
        ),
    };
    row
}
