//! Packet tunnel scenarios (seed 000): apps faster than the tunnel, and an inbound burst.

use std::collections::VecDeque;

use tidegate_core::{Instant, TunnelConfig};

use super::{Host, Row, percent};

const OUTBOUND_ID: &str = "tunnel-outbound-flood";
const INBOUND_ID: &str = "tunnel-inbound-burst";

/// A packet tunnel provider is killed above this much memory (iOS and macOS).
pub(super) const PACKET_TUNNEL_LIMIT: u64 = 50 * 1024 * 1024;
/// One virtual tick.
const TICK_US: u64 = 100;
const TICKS_PER_SECOND: u64 = 1_000_000 / TICK_US;
const PACKET: usize = 1400;

/// Bytes per tick of a rate in Mbit/s.
const fn per_tick(mbit_per_second: u64) -> u64 {
    mbit_per_second * 1_000_000 / 8 / TICKS_PER_SECOND
}

use crate::storage::{HeapTunnel as Tunnel, heap_tunnel};

/// A tunnel with the default configuration, as a Rust host builds one.
pub(super) fn default_tunnel() -> Tunnel {
    heap_tunnel(TunnelConfig::DEFAULT).expect("the default configuration is valid")
}

/// Apps send 200 Mbit/s into a 50 Mbit/s tunnel for 10 s. The kernel's utun queue holds 512
/// packets and drops what arrives while it is full (TCP backs off on those drops).
pub(super) fn outbound_flood() -> [Row; 2] {
    const SECONDS: u64 = 10;
    const UTUN_QUEUE: usize = 512;
    const READ_BATCH: usize = 64;
    let app_rate = per_tick(200);
    let link_rate = per_tick(50);
    let scenario = "apps 4x faster than the tunnel";

    // Naive: read everything, queue it without bound, send at link rate.
    let mut naive = Sim::new(app_rate, UTUN_QUEUE);
    let mut queue: VecDeque<usize> = VecDeque::new();
    let mut queued_bytes = 0u64;
    let mut naive_row = Row::new(OUTBOUND_ID, scenario, "000", Host::Naive);
    naive_row.platform_limit = Some(PACKET_TUNNEL_LIMIT);
    let mut naive_high_water = 0u64;
    for tick in 0..SECONDS * TICKS_PER_SECOND {
        naive.offer();
        while let Some(len) = naive.utun.pop_front() {
            queue.push_back(len);
            queued_bytes += len as u64;
        }
        naive_high_water = naive_high_water.max(queued_bytes);
        if queued_bytes > PACKET_TUNNEL_LIMIT {
            naive_row.killed_at_seconds = Some(tick as f64 / TICKS_PER_SECOND as f64);
            break;
        }
        naive.link_credit += link_rate as i64;
        while naive.link_credit > 0 {
            let Some(len) = queue.pop_front() else { break };
            queued_bytes -= len as u64;
            naive.link_credit -= len as i64;
            naive.sent += len as u64;
        }
        naive.link_credit = naive.link_credit.min(link_rate as i64);
    }
    naive_row.memory_high_water = Some(naive_high_water);
    naive_row.drops = Some(naive.kernel_drops);
    naive_row.throughput_percent =
        Some(percent(naive.sent, link_rate * SECONDS * TICKS_PER_SECOND));
    naive_row.outcome = outcome(&naive_row, "");

    // tidegate: read only while can_read_outbound, resume on the completion edge.
    let mut sim = Sim::new(app_rate, UTUN_QUEUE);
    let mut tunnel = default_tunnel();
    let packet = [0u8; PACKET];
    let mut reading = true;
    let mut host_refusals = 0u64;
    let mut sent_last_tick = 0usize;
    for tick in 0..SECONDS * TICKS_PER_SECOND {
        let now = Instant::from_micros(tick * TICK_US);
        sim.offer();
        if sent_last_tick > 0 {
            // Last tick's sends completed.
            let done = tunnel
                .complete_outbound(now, sent_last_tick)
                .expect("in flight");
            reading |= done.resume_reading;
        }
        if reading {
            for _ in 0..READ_BATCH {
                let Some(len) = sim.utun.pop_front() else {
                    break;
                };
                if tunnel.on_outbound_packet(now, &packet[..len]).is_err() {
                    host_refusals += 1; // an IP packet the host chose to drop; counted
                }
            }
            reading = tunnel.can_read_outbound();
        }
        sim.link_credit += link_rate as i64;
        sent_last_tick = 0;
        while sim.link_credit > 0 {
            let Some(sent) = tunnel.poll_outbound(now) else {
                break;
            };
            sim.link_credit -= sent.len() as i64;
            sim.sent += sent.len() as u64;
            sent_last_tick += 1;
        }
        sim.link_credit = sim.link_credit.min(link_rate as i64);
    }
    let stats = tunnel.stats();
    let mut tidegate_row = Row::new(OUTBOUND_ID, scenario, "000", Host::Tidegate);
    tidegate_row.platform_limit = Some(PACKET_TUNNEL_LIMIT);
    tidegate_row.ceiling = Some(Tunnel::footprint(tunnel.config()) as u64);
    tidegate_row.memory_high_water =
        Some(stats.outbound.bytes_high_water + stats.inbound.bytes_high_water);
    tidegate_row.throughput_percent =
        Some(percent(sim.sent, link_rate * SECONDS * TICKS_PER_SECOND));
    tidegate_row.drops = Some(sim.kernel_drops + host_refusals);
    tidegate_row.outcome = outcome(&tidegate_row, "drops: utun queue while reading paused");
    [naive_row, tidegate_row]
}

/// The tunnel delivers a 1 Gbit/s burst for 1 s; the provider can decrypt and write only
/// 200 Mbit/s to the apps (`writePackets`, which has no flow control).
pub(super) fn inbound_burst() -> [Row; 2] {
    const BURST_SECONDS: u64 = 1;
    const SECONDS: u64 = 3;
    let burst_rate = per_tick(1000);
    let write_rate = per_tick(200);
    let scenario = "inbound burst 5x the write rate";
    let window = write_rate * BURST_SECONDS * TICKS_PER_SECOND;

    let mut rows = Vec::with_capacity(2);
    for host in [Host::Naive, Host::Tidegate] {
        let mut tunnel = default_tunnel();
        let mut queue: VecDeque<usize> = VecDeque::new();
        let mut queued_bytes = 0u64;
        let mut row = Row::new(INBOUND_ID, scenario, "000", host);
        row.platform_limit = Some(PACKET_TUNNEL_LIMIT);
        row.ceiling = (host == Host::Tidegate).then(|| Tunnel::footprint(tunnel.config()) as u64);
        row.drops = Some(0);
        let mut naive_high_water = 0u64;
        let packet = [0u8; PACKET];
        let (mut arrival_credit, mut write_credit) = (0u64, 0i64);
        let mut written_in_burst = 0u64;
        for tick in 0..SECONDS * TICKS_PER_SECOND {
            let now = Instant::from_micros(tick * TICK_US);
            let in_burst = tick < BURST_SECONDS * TICKS_PER_SECOND;
            if in_burst {
                arrival_credit += burst_rate;
                while arrival_credit >= PACKET as u64 {
                    arrival_credit -= PACKET as u64;
                    if host == Host::Naive {
                        queue.push_back(PACKET);
                        queued_bytes += PACKET as u64;
                    } else {
                        tunnel
                            .on_inbound_packet(now, &packet)
                            .expect("valid packet");
                    }
                }
            }
            if host == Host::Naive {
                naive_high_water = naive_high_water.max(queued_bytes);
                row.memory_high_water = Some(naive_high_water);
                if queued_bytes > PACKET_TUNNEL_LIMIT {
                    row.killed_at_seconds = Some(tick as f64 / TICKS_PER_SECOND as f64);
                    break;
                }
            }
            write_credit = (write_credit + write_rate as i64).min(write_rate as i64);
            let mut written = 0usize;
            while write_credit > 0 {
                let len = if host == Host::Naive {
                    let Some(len) = queue.pop_front() else { break };
                    queued_bytes -= len as u64;
                    len
                } else {
                    let Some(p) = tunnel.poll_inbound(now) else {
                        break;
                    };
                    written += 1;
                    p.len()
                };
                write_credit -= len as i64;
                if in_burst {
                    written_in_burst += len as u64;
                }
            }
            if written > 0 {
                tunnel.complete_inbound(now, written).expect("in flight");
            }
        }
        if host == Host::Tidegate {
            let stats = tunnel.stats();
            row.memory_high_water =
                Some(stats.inbound.bytes_high_water + stats.outbound.bytes_high_water);
            row.drops =
                Some(stats.inbound_dropped_newest_packets + stats.inbound_dropped_oldest_packets);
        }
        row.throughput_percent = Some(percent(written_in_burst, window));
        row.outcome = outcome(&row, "drops: by policy at the full ring");
        rows.push(row);
    }
    let tidegate = rows.pop().expect("two rows");
    let naive = rows.pop().expect("two rows");
    [naive, tidegate]
}

/// Apps offering packets into the kernel's utun queue, and the tunnel link's send credit.
struct Sim {
    app_rate: u64,
    app_credit: u64,
    utun: VecDeque<usize>,
    utun_capacity: usize,
    kernel_drops: u64,
    link_credit: i64,
    sent: u64,
}

impl Sim {
    fn new(app_rate: u64, utun_capacity: usize) -> Self {
        Sim {
            app_rate,
            app_credit: 0,
            utun: VecDeque::with_capacity(utun_capacity),
            utun_capacity,
            kernel_drops: 0,
            link_credit: 0,
            sent: 0,
        }
    }

    /// The apps' packets for one tick enter the utun queue, or are dropped when it is full.
    fn offer(&mut self) {
        self.app_credit += self.app_rate;
        while self.app_credit >= PACKET as u64 {
            self.app_credit -= PACKET as u64;
            if self.utun.len() < self.utun_capacity {
                self.utun.push_back(PACKET);
            } else {
                self.kernel_drops += 1;
            }
        }
    }
}

/// "killed at ..." or "ok" and what the drops are, from the row's figures.
fn outcome(row: &Row, drops: &str) -> String {
    let limit = row.platform_limit.unwrap_or(0) / (1024 * 1024);
    match row.killed_at_seconds {
        Some(at) => format!("killed at {at:.2} s ({limit} MiB limit)"),
        None => format!("ok; {drops}"),
    }
}
