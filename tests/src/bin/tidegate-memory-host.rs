//! A host process whose own allocations surge while real traffic flows through a loopback
//! relay: the process `tests/tests/memory_watchdog.rs` runs under a jetsam-like watchdog.
//!
//! ```text
//! tidegate-memory-host [--governor] [--seconds S]
//! ```
//!
//! The process holds a 10 MiB ballast for a provider's runtime (Swift, the network stack),
//! relays traffic on loopback (four clients, each on one long-lived connection sending 256 KiB
//! every 50 ms through a [`Relay`] driven by a `FlowGovernor` to an echo upstream), and makes the host allocations of the lab's
//! `memory-pressure` scenario in real memory: a 6 MiB relay pool at 1 s held to the end, a TLS
//! strategy search at 2 s (16 handshakes of 2.4 MiB, 20 ms apart, each held 2 s) and a crypto
//! batch at 6 s (11 chunks of 1 MiB, 30 ms apart, each held 1 s). Each allocation is an
//! anonymous `mmap` whose pages are all written, released with `munmap`, so the resident set
//! really rises and falls.
//!
//! Without `--governor` every allocation is made when due. With it, a [`MemoryGovernor`]
//! (`MemoryConfig::PACKET_TUNNEL`: 50 MiB, critical at 35 MiB) is fed the resident set from
//! `/proc/self/status` every millisecond, each allocation is reserved first and, if refused,
//! asked for again a millisecond later, and each change of pressure level goes to the relay.
//!
//! Every 100 ms the process prints one JSON line (`t`, `rss`, `relayed`, `held`, `level`); at
//! the end a last one with `"done": true` and the run's figures.

#[cfg(target_os = "linux")]
fn main() {
    linux::main();
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("tidegate-memory-host runs on Linux only");
    std::process::exit(2);
}

#[cfg(target_os = "linux")]
mod linux {
    use std::ffi::c_void;
    use std::io::{Read, Write};
    use std::net::{Ipv4Addr, SocketAddr};
    use std::num::NonZeroUsize;
    use std::ptr::NonNull;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::thread;
    use std::time::{Duration, Instant as StdInstant};

    use nix::sys::mman::{MapFlags, ProtFlags, mmap_anonymous, munmap};
    use serde_json::json;
    use tidegate_core::{
        FlowPolicy, Instant, MemoryConfig, MemoryGovernor, Pressure, ReservationId, ReservationSlot,
    };
    use tidegate_tests::real_traffic::resident_kib;
    use tidegate_tests::relay::{Relay, RelaySpec, Upstream, connect_from};

    const MIB: usize = 1 << 20;
    const PAGE: usize = 4096;
    const STEP: Duration = Duration::from_millis(1);
    const CLIENTS: usize = 4;
    const RESPONSE: usize = 256 * 1024;
    const CHUNK: usize = 16 * 1024;
    const REQUEST_EVERY: Duration = Duration::from_millis(50);
    const RUNTIME_BALLAST: usize = 10 * MIB;

    /// One allocation the host wants to make: when (ms), how much, for how long (ms).
    #[derive(Clone, Copy, Debug)]
    struct Want {
        at_ms: u64,
        bytes: usize,
        hold_ms: u64,
        job: &'static str,
        /// Refused at least once: it waited for a grant.
        refused: bool,
    }

    /// The allocations of the lab's `memory-pressure` scenario, the same sizes and spacing, on a
    /// 10 s timeline instead of 20 s: the pool at 1 s (lab: 2 s), the TLS search at 2 s (5 s),
    /// the crypto batch at 6 s (12 s).
    fn schedule(run_ms: u64) -> Vec<Want> {
        let mut wants = vec![Want {
            at_ms: 1_000,
            bytes: 6 * MIB,
            hold_ms: run_ms,
            job: "relay pool",
            refused: false,
        }];
        wants.extend((0..16).map(|i| Want {
            at_ms: 2_000 + 20 * i,
            bytes: 2_400 * 1024,
            hold_ms: 2_000,
            job: "tls search",
            refused: false,
        }));
        wants.extend((0..11).map(|i| Want {
            at_ms: 6_000 + 30 * i,
            bytes: MIB,
            hold_ms: 1_000,
            job: "crypto batch",
            refused: false,
        }));
        wants
    }

    /// Anonymous memory with every page written: resident until dropped (`munmap`).
    struct Touched {
        ptr: NonNull<c_void>,
        len: usize,
    }

    impl Touched {
        fn new(len: usize) -> Touched {
            let size = NonZeroUsize::new(len).expect("a surge is not empty");
            // SAFETY: a fresh private anonymous mapping, aliasing nothing.
            let ptr = unsafe {
                mmap_anonymous(
                    None,
                    size,
                    ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                    MapFlags::MAP_PRIVATE,
                )
            }
            .expect("mmap");
            let base = ptr.cast::<u8>();
            for offset in (0..len).step_by(PAGE) {
                // SAFETY: `offset < len`, inside the mapping, which only this value uses.
                unsafe { base.add(offset).write_volatile(1) };
            }
            Touched { ptr, len }
        }
    }

    impl Drop for Touched {
        fn drop(&mut self) {
            // SAFETY: the mapping made in `new`, unmapped once; nothing refers into it.
            unsafe { munmap(self.ptr, self.len) }.expect("munmap");
        }
    }

    /// An allocation held, with its reservation if the governor granted one.
    struct Held {
        memory: Touched,
        until_ms: u64,
        reservation: Option<ReservationId>,
    }

    fn resident_bytes() -> u64 {
        resident_kib(std::process::id()).unwrap_or(0) * 1024
    }

    /// Four clients, each on one connection through the relay to the upstream's echo, sending
    /// 256 KiB every 50 ms in 16 KiB round trips until `stop`; adds the bytes that came back
    /// intact to `relayed`. A connection that fails is opened again. Long-lived connections, as
    /// a provider's flows are: critical pressure refuses new flows, not open ones.
    fn clients(
        relay: SocketAddr,
        stop: &Arc<AtomicBool>,
        relayed: &Arc<AtomicU64>,
    ) -> Vec<thread::JoinHandle<()>> {
        (0..CLIENTS)
            .map(|client| {
                let (stop, relayed) = (Arc::clone(stop), Arc::clone(relayed));
                thread::spawn(move || {
                    let pattern = |at: u64| (at.wrapping_mul(31) ^ client as u64) as u8;
                    let mut sent = vec![0u8; CHUNK];
                    let mut back = vec![0u8; CHUNK];
                    let mut stream = None;
                    let mut at = 0u64;
                    let mut next = StdInstant::now();
                    while !stop.load(Ordering::Acquire) {
                        for _ in 0..RESPONSE / CHUNK {
                            let connected = match stream.take() {
                                Some(stream) => Some(stream),
                                None => connect_from(
                                    Ipv4Addr::new(127, 0, 0, 3),
                                    relay,
                                    None,
                                    Duration::from_secs(2),
                                )
                                .ok(),
                            };
                            let Some(mut connection) = connected else {
                                break;
                            };
                            for (i, byte) in sent.iter_mut().enumerate() {
                                *byte = pattern(at + i as u64);
                            }
                            // The echo starts with the first byte: never `G`, a request.
                            sent[0] = sent[0].max(b'H');
                            let echoed = connection
                                .write_all(&sent)
                                .and_then(|()| connection.read_exact(&mut back));
                            if echoed.is_err() {
                                break;
                            }
                            assert_eq!(sent, back, "the echo came back intact");
                            at += CHUNK as u64;
                            relayed.fetch_add(CHUNK as u64, Ordering::Relaxed);
                            stream = Some(connection);
                        }
                        next += REQUEST_EVERY;
                        if let Some(wait) = next.checked_duration_since(StdInstant::now()) {
                            thread::sleep(wait);
                        }
                    }
                })
            })
            .collect()
    }

    pub(super) fn main() {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let governed = args.iter().any(|a| a == "--governor");
        let seconds: u64 = args
            .iter()
            .position(|a| a == "--seconds")
            .and_then(|i| args.get(i + 1))
            .and_then(|s| s.parse().ok())
            .unwrap_or(10);
        let run_ms = seconds * 1000;

        let _runtime = Touched::new(RUNTIME_BALLAST);
        let upstream = Upstream::start().expect("upstream");
        let relay =
            Relay::start(RelaySpec::new(upstream.addr(), FlowPolicy::default())).expect("relay");
        let stop = Arc::new(AtomicBool::new(false));
        let relayed = Arc::new(AtomicU64::new(0));
        let downloads = clients(relay.addr(), &stop, &relayed);

        let config = MemoryConfig::PACKET_TUNNEL;
        let mut governor = MemoryGovernor::new(
            config,
            vec![ReservationSlot::EMPTY; config.max_reservations as usize],
        )
        .expect("the preset is valid");
        let mut wants = schedule(run_ms).into_iter().peekable();
        let mut waiting: Vec<Want> = Vec::new();
        let mut held: Vec<Held> = Vec::new();
        let (mut delayed, mut highest, mut peak) = (0u64, Pressure::Normal, 0u64);
        let mut last_start_ms = std::collections::BTreeMap::new();
        let started = StdInstant::now();
        let mut out = std::io::stdout().lock();
        for step in 0..run_ms {
            let due = started + STEP * u32::try_from(step).expect("a short run");
            if let Some(wait) = due.checked_duration_since(StdInstant::now()) {
                thread::sleep(wait);
            }
            let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            let now = Instant::from_micros(ms * 1000);
            let rss = resident_bytes();
            peak = peak.max(rss);
            if governed {
                governor.on_footprint(now, rss);
                governor.handle_timeout(now);
                if let Some(level) = governor.poll_pressure() {
                    highest = highest.max(level);
                    relay.set_pressure(level);
                }
            }
            // Releases first: munmap, then the reservation.
            held.retain_mut(|h| {
                let keep = h.until_ms > ms;
                if !keep && let Some(id) = h.reservation.take() {
                    governor.release(now, id).expect("a reservation held");
                }
                keep
            });
            while wants.peek().is_some_and(|w| w.at_ms <= ms) {
                waiting.extend(wants.next());
            }
            let mut still_waiting = Vec::new();
            for mut want in waiting.drain(..) {
                let reservation = if governed {
                    match governor.reserve(now, want.bytes as u64) {
                        Ok(id) => Some(id),
                        Err(_) => {
                            delayed += u64::from(!want.refused);
                            want.refused = true;
                            still_waiting.push(want);
                            continue;
                        }
                    }
                } else {
                    None
                };
                last_start_ms.insert(want.job, ms);
                held.push(Held {
                    memory: Touched::new(want.bytes),
                    until_ms: ms + want.hold_ms,
                    reservation,
                });
            }
            waiting = still_waiting;
            if step % 100 == 0 {
                let line = json!({
                    "t": ms as f64 / 1000.0,
                    "rss": rss,
                    "relayed": relayed.load(Ordering::Relaxed),
                    "held": held.iter().map(|h| h.memory.len as u64).sum::<u64>(),
                    "level": governor.pressure().to_string(),
                });
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            }
        }
        let elapsed = started.elapsed().as_secs_f64();
        stop.store(true, Ordering::Release);
        for download in downloads {
            download.join().expect("a client");
        }
        let relay_report = relay.stop().expect("the relay");
        let _ = upstream.stop();
        let stats = governor.stats();
        let summary = json!({
            "done": true,
            "governor": governed,
            "seconds": elapsed,
            "relayed": relayed.load(Ordering::Relaxed),
            "peak_rss": peak,
            "delayed_allocations": delayed,
            "highest_level": highest.to_string(),
            "last_start_seconds": last_start_ms
                .iter()
                .map(|(job, ms)| (job.to_string(), json!(*ms as f64 / 1000.0)))
                .collect::<serde_json::Map<String, serde_json::Value>>(),
            "reservations_granted": stats.reservations_granted,
            "reservations_refused": stats.reservations_refused,
            "relay_pressure_changes": relay_report.pressure_changes,
            "relay_unexpected_resumes": relay_report.unexpected_resumes,
            "relay_errors": relay_report.errors,
        });
        let _ = writeln!(out, "{summary}");
    }
}
