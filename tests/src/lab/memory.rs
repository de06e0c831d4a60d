//! The memory-pressure scenario: a packet tunnel provider killed by its host's own allocations,
//! replayed from field reports, with and without the memory governor.
//!
//! jetsam counts the whole process. The shapes come from the field: an extension with 35.7 MB
//! available at start (netbirdio/ios-client #219: about 14 MiB of runtime), a TLS strategy
//! search taking about 38.5 MB (getlantern/lantern #8974), and a surge of 11 MB in 0.33 s that
//! killed an extension at 51.4 MB (getlantern/radiance #595). Traffic flows the whole time:
//! apps offer 100 Mbit/s to a 50 Mbit/s tunnel.
//!
//! The run is 20 s in 1 ms steps. The process's footprint at each step is the runtime, the
//! host's allocations held, and the tunnel's queue: for the naive host every byte queued, for
//! tidegate the pages of the rings' arenas touched so far (jetsam counts dirty pages, and a ring
//! that has wrapped once has touched its whole arena) plus the engines' descriptors. The
//! platform kills the process at the first step its footprint passes 50 MiB. The host samples
//! the headroom (`os_proc_available_memory()`) every 100 ms.
//!
//! No row has a ceiling: the process's memory is not the engines' alone, which is the point. The
//! peak is the whole process's.
//!
//! Three hosts: a naive one (unbounded queue, allocations unchecked); tidegate with its fixed
//! ceilings only (a bounded tunnel, allocations unchecked: variant `fixed-ceilings`); tidegate
//! with the governor (allocations reserved first and retried after a refusal, every pressure
//! change passed to the tunnel).

use tidegate_core::{
    Instant, MemoryConfig, MemoryGovernor, Pressure, ReservationId, ReservationSlot, TunnelConfig,
};

use super::tunnel::PACKET_TUNNEL_LIMIT;
use super::{Host, Row, percent};
use crate::storage::heap_tunnel;

const ID: &str = "memory-pressure";
const SCENARIO: &str = "the host's own allocations surge while traffic flows (50 MiB limit)";
const MIB: u64 = 1 << 20;
const PAGE: u64 = 4096;
const STEP_US: u64 = 1_000;
const RUN_STEPS: u64 = 20_000;
/// The host reads the platform's headroom this often.
const SAMPLE_STEPS: u64 = 100;
/// The runtime: Swift, the network stack, the host's code.
const RUNTIME: u64 = 14 * MIB;
const PACKET: usize = 1400;
/// Apps offer 100 Mbit/s; the tunnel carries 50 Mbit/s.
const APP_BYTES_PER_STEP: u64 = 100_000_000 / 8 / 1_000;
const LINK_BYTES_PER_STEP: u64 = 50_000_000 / 8 / 1_000;

/// One allocation the host wants to make: when, how much, for how long, and for which job.
#[derive(Clone, Copy, Debug)]
struct Want {
    at_step: u64,
    bytes: u64,
    hold_steps: u64,
    job: Job,
}

/// The host's jobs that allocate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Job {
    RelayPool,
    TlsSearch,
    CryptoBatch,
}

/// The host's own allocations, the same in every run: a 6 MiB relay pool at 2 s, held to the
/// end; a TLS strategy search at 5 s, 16 handshakes of 2.4 MiB started 20 ms apart, each held
/// 2 s; a crypto batch at 12 s, 11 chunks of 1 MiB 30 ms apart, each held 1 s.
fn schedule() -> Vec<Want> {
    let mut wants = vec![Want {
        at_step: 2_000,
        bytes: 6 * MIB,
        hold_steps: RUN_STEPS,
        job: Job::RelayPool,
    }];
    wants.extend((0..16).map(|i| Want {
        at_step: 5_000 + 20 * i,
        bytes: 2_400 * 1024,
        hold_steps: 2_000,
        job: Job::TlsSearch,
    }));
    wants.extend((0..11).map(|i| Want {
        at_step: 12_000 + 30 * i,
        bytes: MIB,
        hold_steps: 1_000,
        job: Job::CryptoBatch,
    }));
    wants
}

/// The three rows of the scenario.
pub(super) fn memory_pressure() -> [Row; 3] {
    [
        run(Host::Naive, false),
        run(Host::Tidegate, false),
        run(Host::Tidegate, true),
    ]
}

/// An allocation the host holds, with its reservation if it made one.
struct Held {
    bytes: u64,
    until_step: u64,
    reservation: Option<ReservationId>,
}

fn run(host: Host, governed: bool) -> Row {
    let mut row = Row::new(ID, SCENARIO, "000", host);
    row.platform_limit = Some(PACKET_TUNNEL_LIMIT);
    if host == Host::Tidegate && !governed {
        row.variant = Some("fixed-ceilings");
    }
    let config = TunnelConfig::DEFAULT;
    let mut tunnel = heap_tunnel(config).expect("the default configuration is valid");
    let mut governor = MemoryGovernor::new(
        MemoryConfig::PACKET_TUNNEL,
        vec![ReservationSlot::EMPTY; MemoryConfig::PACKET_TUNNEL.max_reservations as usize],
    )
    .expect("the preset is valid");
    // Descriptors are written at creation; arenas only as packets land in them.
    let engines = (config.outbound_packets + config.inbound_packets) as u64 * 16
        + if governed {
            MemoryGovernor::<Vec<ReservationSlot>>::footprint(&MemoryConfig::PACKET_TUNNEL) as u64
        } else {
            0
        };
    let mut touched = Touched::default();
    let mut waiting: Vec<Want> = Vec::new();
    let mut wants = schedule().into_iter().peekable();
    let mut held: Vec<Held> = Vec::new();
    let (mut naive_queue, mut sent, mut offered_credit, mut peak) = (0u64, 0u64, 0u64, 0u64);
    let mut link_credit = 0u64;
    // When each job's last allocation was made, and how many allocations waited for a grant.
    let (mut tls_done, mut crypto_done) = (0u64, 0u64);
    let (mut delayed, mut highest) = (0u64, Pressure::Normal);
    let packet = [0x45u8; PACKET];
    for step in 0..RUN_STEPS {
        let now = Instant::from_micros(step * STEP_US);
        // The host's allocations that are due, then the ones waiting for a grant.
        while wants.peek().is_some_and(|w| w.at_step == step) {
            waiting.extend(wants.next());
        }
        let mut still_waiting = Vec::new();
        for want in waiting.drain(..) {
            let reservation = if governed {
                match governor.reserve(now, want.bytes) {
                    Ok(id) => Some(id),
                    Err(_) => {
                        if want.at_step == step {
                            delayed += 1;
                        }
                        still_waiting.push(want);
                        continue;
                    }
                }
            } else {
                None
            };
            match want.job {
                Job::TlsSearch => tls_done = step,
                Job::CryptoBatch => crypto_done = step,
                Job::RelayPool => {}
            }
            held.push(Held {
                bytes: want.bytes,
                until_step: step + want.hold_steps,
                reservation,
            });
        }
        // A refused allocation waits and is asked for again at the next step.
        waiting = still_waiting;
        held.retain(|h| {
            let keep = h.until_step > step;
            if !keep && let Some(id) = h.reservation {
                governor.release(now, id).expect("a reservation held");
            }
            keep
        });

        // Traffic: apps offer their rate; the host reads while allowed; the link drains.
        offered_credit += APP_BYTES_PER_STEP;
        if host == Host::Naive {
            naive_queue += offered_credit / PACKET as u64 * PACKET as u64;
            offered_credit %= PACKET as u64;
            let out = naive_queue.min(LINK_BYTES_PER_STEP);
            naive_queue -= out;
            sent += out;
        } else {
            while offered_credit >= PACKET as u64 && tunnel.can_read_outbound() {
                tunnel
                    .on_outbound_packet(now, &packet)
                    .expect("a read allowed always fits");
                offered_credit -= PACKET as u64;
            }
            // Apps that find the tunnel paused back off: their offer does not pile up.
            offered_credit = offered_credit.min(PACKET as u64);
            // The link's unused capacity carries over to the next step, up to one packet.
            link_credit += LINK_BYTES_PER_STEP;
            let mut handed = 0;
            while link_credit >= PACKET as u64 {
                let Some(out) = tunnel.poll_outbound(now) else {
                    break;
                };
                touched.note(out);
                link_credit -= out.len() as u64;
                sent += out.len() as u64;
                handed += 1;
            }
            link_credit = link_credit.min(PACKET as u64);
            if handed > 0 {
                // The send completes within the step; a resume edge reopens reading.
                let _ = tunnel.complete_outbound(now, handed).expect("handed out");
            }
        }

        let host_bytes: u64 = held.iter().map(|h| h.bytes).sum();
        let queue = match host {
            Host::Naive => naive_queue,
            Host::Tidegate => engines + touched.bytes(),
        };
        let footprint = RUNTIME + host_bytes + queue;
        peak = peak.max(footprint);
        if footprint > PACKET_TUNNEL_LIMIT {
            row.killed_at_seconds = Some(step as f64 * STEP_US as f64 / 1e6);
            break;
        }
        if governed && step % SAMPLE_STEPS == 0 {
            governor.on_headroom(now, PACKET_TUNNEL_LIMIT - footprint);
        }
        if governed {
            governor.handle_timeout(now);
            if let Some(level) = governor.poll_pressure() {
                highest = highest.max(level);
                let _ = tunnel.on_pressure(now, level);
            }
        }
    }
    row.memory_high_water = Some(peak);
    row.throughput_percent = Some(percent(sent, LINK_BYTES_PER_STEP * RUN_STEPS));
    row.outcome = match row.killed_at_seconds {
        Some(at) => format!("killed at {at:.2} s with {} MiB in use", peak.div_ceil(MIB)),
        None => format!(
            "survived, peak {:.1} MiB (highest level {highest}); {delayed} allocations waited \
             for a grant: TLS search started its last handshake at {:.2} s (5.30 unhindered), \
             crypto batch its last chunk at {:.2} s (12.30)",
            peak as f64 / MIB as f64,
            tls_done as f64 * STEP_US as f64 / 1e6,
            crypto_done as f64 * STEP_US as f64 / 1e6,
        ),
    };
    row
}

/// The pages of the outbound arena the tunnel has written, from the packets it handed out:
/// the first packet lands at the start of the arena, and the ring never writes beyond the
/// furthest packet end it has reached.
#[derive(Default)]
struct Touched {
    start: Option<usize>,
    furthest: usize,
}

impl Touched {
    fn note(&mut self, packet: &[u8]) {
        let at = packet.as_ptr().addr();
        let start = *self.start.get_or_insert(at);
        self.furthest = self.furthest.max((at + packet.len()).saturating_sub(start));
    }

    fn bytes(&self) -> u64 {
        (self.furthest as u64).div_ceil(PAGE) * PAGE
    }
}
