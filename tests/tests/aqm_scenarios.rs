//! CoDel in the tunnel rings, in virtual time.
//!
//! A Reno-like sender (slow start, then one packet more per round trip, half the window on a loss,
//! at most once per round trip) pushes 1400-byte packets through a tunnel ring drained at 50 Mbit/s with a
//! 20 ms base round trip. With AQM off, the window grows until the 1 MiB ring overflows, so the
//! standing queue approaches the ceiling (about 170 ms). With CoDel, the sojourn time stays near
//! its 5 ms target once the first interval has passed, and the link stays busy. A sender slower
//! than the link never loses a packet to CoDel.

use std::collections::VecDeque;

use tidegate_core::{Aqm, Instant, TunnelConfig};
use tidegate_tests::storage::{HeapTunnel, heap_tunnel};

const TICK_US: u64 = 100;
const PACKET: usize = 1400;
/// 50 Mbit/s in bytes per tick.
const LINK_PER_TICK: u64 = 50_000_000 / 8 * TICK_US / 1_000_000;
const BASE_RTT_US: u64 = 20_000;

type Tunnel = HeapTunnel;

fn tunnel(aqm: Aqm) -> Tunnel {
    let config = TunnelConfig {
        aqm,
        ..TunnelConfig::DEFAULT
    };
    heap_tunnel(config).unwrap()
}

struct Run {
    /// Sojourn of every packet handed out after `warm_up_us`, in microseconds.
    sojourns: Vec<u64>,
    /// Bytes the link carried after the warm-up, as a share of its capacity then.
    utilisation: f64,
    aqm_drops: u64,
    tail_drops: u64,
}

/// Drive the inbound ring (no flow control, so only drops slow the sender) for `seconds`.
fn run(aqm: Aqm, seconds: u64, warm_up_us: u64, sender: Sender) -> Run {
    let mut tun = tunnel(aqm);
    let packet = [0u8; PACKET];
    let mut cwnd = 10.0f64;
    let mut ssthresh = f64::INFINITY;
    let mut in_network = 0u64; // sent, not yet acknowledged or known lost
    let mut acks: VecDeque<u64> = VecDeque::new(); // times acks arrive
    let mut losses: VecDeque<u64> = VecDeque::new(); // times losses are detected
    let mut recovery_until = 0u64;
    let (mut rate_credit, mut link_credit) = (0u64, 0i64);
    let mut sojourns = Vec::new();
    let mut carried = 0u64;
    let mut seen_drops = 0u64;
    let ticks = seconds * 1_000_000 / TICK_US;
    for tick in 0..ticks {
        let t = tick * TICK_US;
        let now = Instant::from_micros(t);
        while acks.front().is_some_and(|&at| at <= t) {
            acks.pop_front();
            in_network -= 1;
            cwnd += if cwnd < ssthresh { 1.0 } else { 1.0 / cwnd };
        }
        while losses.front().is_some_and(|&at| at <= t) {
            losses.pop_front();
            in_network -= 1;
            if t >= recovery_until {
                cwnd = (cwnd / 2.0).max(2.0);
                ssthresh = cwnd;
                recovery_until = t + BASE_RTT_US;
            }
        }
        // Send what the sender allows this tick.
        let budget = match sender {
            Sender::Reno => (cwnd as u64).saturating_sub(in_network),
            Sender::ConstantMbit(mbit) => {
                rate_credit += mbit * 1_000_000 / 8 * TICK_US / 1_000_000;
                let n = rate_credit / PACKET as u64;
                rate_credit -= n * PACKET as u64;
                n
            }
        };
        for _ in 0..budget {
            tun.on_inbound_packet(now, &packet).unwrap();
            in_network += 1;
        }
        // The link carries LINK_PER_TICK bytes.
        link_credit = (link_credit + LINK_PER_TICK as i64).min(LINK_PER_TICK as i64);
        let mut handed = 0;
        while link_credit > 0 {
            let Some(p) = tun.poll_inbound(now) else {
                break;
            };
            link_credit -= p.len() as i64;
            handed += 1;
            if t >= warm_up_us {
                carried += PACKET as u64;
                sojourns.push(tun.stats().inbound.last_sojourn_micros);
            }
            acks.push_back(t + BASE_RTT_US);
        }
        tun.complete_inbound(now, handed).unwrap();
        // Every drop (CoDel or a full ring) is detected by the sender a round trip later.
        let stats = tun.stats();
        let drops = stats.inbound.aqm_dropped_packets + stats.inbound_dropped_newest_packets;
        for _ in seen_drops..drops {
            losses.push_back(t + BASE_RTT_US);
        }
        seen_drops = drops;
    }
    let stats = tun.stats();
    let capacity = LINK_PER_TICK * (ticks - warm_up_us / TICK_US);
    eprintln!(
        "aqm {aqm}: median sojourn {} us, p95 {} us, max {} us, link {:.1}%, aqm drops {}, \
         tail drops {}",
        percentile(&sojourns, 0.5),
        percentile(&sojourns, 0.95),
        percentile(&sojourns, 1.0),
        carried as f64 * 100.0 / capacity as f64,
        stats.inbound.aqm_dropped_packets,
        stats.inbound_dropped_newest_packets
    );
    Run {
        sojourns,
        utilisation: carried as f64 / capacity as f64,
        aqm_drops: stats.inbound.aqm_dropped_packets,
        tail_drops: stats.inbound_dropped_newest_packets,
    }
}

#[derive(Clone, Copy)]
enum Sender {
    Reno,
    ConstantMbit(u64),
}

fn percentile(values: &[u64], p: f64) -> u64 {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

#[test]
fn without_aqm_the_standing_queue_grows_to_the_ceiling() {
    let run = run(Aqm::Off, 20, 0, Sender::Reno);
    // 1 MiB drained at 6.25 MB/s is 168 ms of queue.
    let full_ring_us = u64::from(TunnelConfig::DEFAULT.inbound_bytes) * 1_000_000 / 6_250_000;
    let max = *run.sojourns.iter().max().unwrap();
    assert!(
        max >= full_ring_us * 9 / 10,
        "max sojourn {max} us, ring {full_ring_us} us"
    );
    assert!(
        percentile(&run.sojourns, 0.5) > 50_000,
        "a standing queue of tens of ms"
    );
    assert!(run.tail_drops > 0 && run.aqm_drops == 0);
    assert!(run.utilisation > 0.99, "utilisation {}", run.utilisation);
}

#[test]
fn codel_keeps_the_sojourn_near_its_target_and_the_link_busy() {
    let run = run(Aqm::CODEL_DEFAULT, 20, 2_000_000, Sender::Reno);
    let median = percentile(&run.sojourns, 0.5);
    let p95 = percentile(&run.sojourns, 0.95);
    assert!(median <= 15_000, "median sojourn {median} us (target 5000)");
    assert!(p95 <= 40_000, "95th percentile sojourn {p95} us");
    assert!(run.aqm_drops > 0, "CoDel did the dropping");
    assert_eq!(run.tail_drops, 0, "the ring never filled");
    assert!(run.utilisation > 0.90, "utilisation {}", run.utilisation);
}

#[test]
fn a_sender_slower_than_the_link_never_sees_a_drop() {
    for aqm in [Aqm::CODEL_DEFAULT, Aqm::Off] {
        let run = run(aqm, 10, 0, Sender::ConstantMbit(45));
        assert_eq!((run.aqm_drops, run.tail_drops), (0, 0));
        assert!(percentile(&run.sojourns, 1.0) < 1_000, "no queue builds up");
    }
}

/// The outbound overload, in virtual time: an unresponsive 100 Mbit/s flood and a ping every
/// 10 ms enter the kernel's 500-packet utun queue in front of the provider for 10 s, then the
/// flood stops for 2 s; the provider reads only while `can_read_outbound` allows (resuming on
/// the completion edge) and the tunnel sends 50 Mbit/s. Latency is counted from entering the
/// kernel queue to leaving the tunnel, since that is what a ping sees.
///
/// A FIFO pauses at its high watermark with or without CoDel, so the kernel queue fills during
/// the pauses and pings wait behind the flood either way (CoDel's overload drops stale packets
/// and shortens the pauses; flow queueing is what protects the ping). What must hold is the
/// contract: the ceiling, no packet refused that was read while reading was allowed, and, with
/// CoDel, overload ending once the flood is over. The latencies are printed, not judged.
struct FloodRun {
    ping_median_us: u64,
    ping_p90_us: u64,
    pauses: u64,
    aqm_drops: u64,
    refused_while_allowed: u64,
    /// The tunnel's state two seconds after the flood stopped.
    overloaded_after: bool,
    reading_after: bool,
}

fn flood_through_the_kernel_queue(aqm: Aqm) -> FloodRun {
    const KERNEL_QUEUE: usize = 500;
    const READ_BATCH: usize = 64;
    const PING_EVERY_US: u64 = 10_000;
    const FLOOD_US: u64 = 10_000_000;
    const QUIET_US: u64 = 2_000_000;
    let config = TunnelConfig {
        outbound_bytes: 256 * 1024,
        outbound_packets: 256,
        outbound_high_watermark_bytes: 192 * 1024,
        outbound_low_watermark_bytes: 128 * 1024,
        outbound_high_watermark_packets: 192,
        outbound_low_watermark_packets: 128,
        aqm,
        ..TunnelConfig::DEFAULT
    };
    let mut tun = heap_tunnel(config).unwrap();
    // (entered the kernel queue at, is a ping, length)
    let mut kernel: VecDeque<(u64, bool, usize)> = VecDeque::new();
    let (mut flood_credit, mut link_credit) = (0u64, 0i64);
    let mut reading = true;
    let mut sent_last_tick = 0;
    let mut ping_latencies = Vec::new();
    let mut refused_while_allowed = 0;
    let mut packet = [0u8; PACKET];
    for tick in 0..(FLOOD_US + QUIET_US) / TICK_US {
        let t = tick * TICK_US;
        let now = Instant::from_micros(t);
        if sent_last_tick > 0 {
            reading |= tun
                .complete_outbound(now, sent_last_tick)
                .unwrap()
                .resume_reading;
        }
        if t < FLOOD_US {
            flood_credit += 2 * LINK_PER_TICK;
        }
        while flood_credit >= PACKET as u64 {
            flood_credit -= PACKET as u64;
            if kernel.len() < KERNEL_QUEUE {
                kernel.push_back((t, false, PACKET));
            }
        }
        if t.is_multiple_of(PING_EVERY_US) && kernel.len() < KERNEL_QUEUE {
            kernel.push_back((t, true, 84));
        }
        if reading {
            for _ in 0..READ_BATCH {
                let Some((entered, ping, len)) = kernel.pop_front() else {
                    break;
                };
                packet[0] = u8::from(ping);
                packet[1..9].copy_from_slice(&entered.to_le_bytes());
                // The rest of a batch read before a pause may be refused (the host drops it);
                // a packet read while reading was allowed never is.
                let allowed = tun.can_read_outbound();
                if tun.on_outbound_packet(now, &packet[..len]).is_err() && allowed {
                    refused_while_allowed += 1;
                }
            }
            reading = tun.can_read_outbound();
        }
        link_credit = (link_credit + LINK_PER_TICK as i64).min(LINK_PER_TICK as i64);
        sent_last_tick = 0;
        while link_credit > 0 {
            let Some(p) = tun.poll_outbound(now) else {
                break;
            };
            link_credit -= p.len() as i64;
            sent_last_tick += 1;
            let entered = u64::from_le_bytes(p[1..9].try_into().unwrap());
            if p[0] == 1 && (2_000_000..FLOOD_US).contains(&t) {
                ping_latencies.push(t - entered);
            }
        }
        assert!(
            tun.stats().outbound.bytes_high_water <= 256 * 1024,
            "the ceiling holds"
        );
    }
    let stats = tun.stats();
    let run = FloodRun {
        ping_median_us: percentile(&ping_latencies, 0.5),
        ping_p90_us: percentile(&ping_latencies, 0.9),
        pauses: stats.outbound_pauses,
        aqm_drops: stats.outbound.aqm_dropped_packets,
        refused_while_allowed,
        overloaded_after: stats.outbound_overloaded,
        reading_after: tun.can_read_outbound(),
    };
    eprintln!(
        "flood through the kernel queue, aqm {aqm}: ping latency median {} us, p90 {} us, \
         pauses {}, aqm drops {}, overload episodes {}",
        run.ping_median_us, run.ping_p90_us, run.pauses, run.aqm_drops, stats.outbound_overloads
    );
    run
}

#[test]
fn under_an_unresponsive_flood_the_fifo_keeps_its_contract_and_leaves_overload() {
    let off = flood_through_the_kernel_queue(Aqm::Off);
    let codel = flood_through_the_kernel_queue(Aqm::CODEL_DEFAULT);
    for run in [&off, &codel] {
        assert_eq!(
            run.refused_while_allowed, 0,
            "read while allowed, always fits"
        );
        assert!(
            run.pauses > 100,
            "the FIFO pauses again and again under the flood"
        );
        assert!(run.reading_after, "the flood is over: reading goes on");
    }
    assert_eq!(off.aqm_drops, 0);
    assert!(codel.aqm_drops > 0, "CoDel dropped stale packets");
    // Found by a host written from the docs: overload was never left.
    assert!(
        !codel.overloaded_after,
        "overload ends once the flood is over"
    );
}
