//! Flow governor benchmark: the cost of one admission plus one close, and of the relay
//! accounting of one read, with few and with many live flows in the table.
//!
//! ```text
//! cargo bench -p tidegate-tests --bench flow
//! cargo bench -p tidegate-tests --bench flow -- --quick      # short smoke run
//! ```
//!
//! # Method
//!
//! A governor with 2048 slots (policy caps raised so that no cap refuses) is filled with `live`
//! long-lived, established flows spread over 16 apps and 512 destinations. Each operation then
//! admits a new flow for one of those apps to a rotating destination (`on_new_flow`) and closes
//! it (`on_closed`), touching the app and destination hash tables, the per-app recency lists and
//! the slot free list. That is the issue's "admit+close"; a second row also marks the flow
//! connected in between (`on_connected`), the path a short connection takes. The table returns
//! to `live` flows after every operation, so the measured state does not drift. A third row,
//! "read+complete", is the relay path of a proxy moving data: on a live flow (rotating through
//! all of them) a 1500-byte receive is reported (`on_remote_read`), readiness checked
//! (`can_read_remote`) and the write completed (`on_local_written`); it updates the flow's, its
//! app's and the global counters against their watermarks. Time is the benchmark thread's own
//! CPU time; each case runs 11 times for about 50 ms, interleaved across cases, and the median is
//! shown. The issue's target: under 100 ns per admit+close, and the 1024-flow cost at most 1.3
//! times the 64-flow cost.
//!
//! Before timing, every admission is checked to be `Accepted` and every close to free the slot;
//! any other answer exits non-zero. That is a correctness check; no speed makes it fail.

use std::hint::black_box;
use std::process::ExitCode;
use std::time::{Duration, Instant as WallClock};

use cpu_time::ThreadTime;
use tidegate_core::{
    Admission, AppId, DestinationKey, FlowGovernor, FlowId, FlowInfo, FlowPolicy, FlowSlot,
    Instant, Protocol,
};

const SLOTS: usize = 2048;
const LIVE: [usize; 2] = [64, 1024];
const APPS: u64 = 16;
const DESTINATIONS: u64 = 512;
const RUNS: usize = 11;

type Governor = FlowGovernor<Box<[FlowSlot]>>;

fn policy() -> FlowPolicy {
    FlowPolicy {
        max_flows: (SLOTS - 1) as u32,
        max_flows_per_app: SLOTS as u32,
        max_flows_per_destination: SLOTS as u32,
        max_connecting: SLOTS as u32,
        ..FlowPolicy::APPLE_DEFAULT
    }
}

fn info(app: u64, destination: u64) -> FlowInfo {
    FlowInfo {
        app: AppId(app),
        destination: DestinationKey(destination),
        protocol: Protocol::Tcp,
    }
}

/// What one measured operation does.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Operation {
    AdmitClose,
    AdmitConnectClose,
    ReadComplete,
}

impl Operation {
    const ALL: [Operation; 3] = [
        Operation::AdmitClose,
        Operation::AdmitConnectClose,
        Operation::ReadComplete,
    ];

    fn name(self) -> &'static str {
        match self {
            Operation::AdmitClose => "admit+close",
            Operation::AdmitConnectClose => "admit+connect+close",
            Operation::ReadComplete => "read+complete",
        }
    }
}

/// A governor holding `live` established flows, and their ids.
fn filled(live: usize) -> Result<(Governor, Vec<FlowId>), String> {
    let slots = vec![FlowSlot::EMPTY; SLOTS].into_boxed_slice();
    let mut governor = Governor::new(Instant::ZERO, slots, policy()).map_err(|e| e.to_string())?;
    let mut ids = Vec::with_capacity(live);
    for i in 0..live as u64 {
        let now = Instant::from_micros(i);
        match governor.on_new_flow(now, info(i % APPS, i % DESTINATIONS)) {
            Admission::Accepted { id } => {
                governor.on_connected(now, id).map_err(|e| e.to_string())?;
                ids.push(id);
            }
            other => return Err(format!("filling flow {i}: {other:?}")),
        }
    }
    Ok((governor, ids))
}

/// One operation, the `n`th.
fn operate(
    governor: &mut Governor,
    live: &[FlowId],
    n: u64,
    operation: Operation,
) -> Result<FlowId, String> {
    match operation {
        Operation::AdmitClose => admit_and_close(governor, n, false),
        Operation::AdmitConnectClose => admit_and_close(governor, n, true),
        Operation::ReadComplete => read_and_complete(governor, live, n),
    }
}

/// One admission, connect and close; returns the admitted id.
fn admit_and_close(governor: &mut Governor, n: u64, connect: bool) -> Result<FlowId, String> {
    let now = Instant::from_micros(1_000_000 + n);
    let id = match governor.on_new_flow(now, black_box(info(n % APPS, (n * 7) % DESTINATIONS))) {
        Admission::Accepted { id } => id,
        other => return Err(format!("operation {n}: {other:?}")),
    };
    if connect {
        governor.on_connected(now, id).map_err(|e| e.to_string())?;
    }
    governor.on_closed(now, id).map_err(|e| e.to_string())?;
    Ok(id)
}

/// A 1500-byte receive on the `n`th live flow (in rotation), its readiness check and its write
/// completion; returns the flow's id.
fn read_and_complete(governor: &mut Governor, live: &[FlowId], n: u64) -> Result<FlowId, String> {
    let now = Instant::from_micros(1_000_000 + n);
    let id = live[n as usize % live.len()];
    governor
        .on_remote_read(now, id, black_box(1500))
        .map_err(|e| e.to_string())?;
    if !governor.can_read_remote(id) {
        return Err(format!("operation {n}: a 1500-byte read paused the flow"));
    }
    governor
        .on_local_written(now, id, black_box(1500))
        .map_err(|e| e.to_string())?;
    Ok(id)
}

/// Run operations for about `budget` of CPU time; return ns per operation.
fn timed_run(
    governor: &mut Governor,
    live: &[FlowId],
    counter: &mut u64,
    operation: Operation,
    budget: Duration,
) -> Result<f64, String> {
    const CHUNK: u64 = 2_000;
    let start = ThreadTime::now();
    let mut operations = 0u64;
    while start.elapsed() < budget {
        // One loop per operation, so the timed loop holds no dispatch of its own.
        match operation {
            Operation::AdmitClose | Operation::AdmitConnectClose => {
                let connect = operation == Operation::AdmitConnectClose;
                for _ in 0..CHUNK {
                    black_box(admit_and_close(governor, *counter, connect)?);
                    *counter += 1;
                }
            }
            Operation::ReadComplete => {
                for _ in 0..CHUNK {
                    black_box(read_and_complete(governor, live, *counter)?);
                    *counter += 1;
                }
            }
        }
        operations += CHUNK;
    }
    Ok(start.elapsed().as_nanos() as f64 / operations as f64)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() -> ExitCode {
    let quick = std::env::args().any(|a| a == "--quick");
    let (runs, budget) = if quick {
        (3, Duration::from_millis(5))
    } else {
        (RUNS, Duration::from_millis(50))
    };
    let wall = WallClock::now();
    let cpu = ThreadTime::now();

    let mut cases = Vec::new();
    for operation in Operation::ALL {
        for live in LIVE {
            let (mut governor, ids) = match filled(live) {
                Ok(filled) => filled,
                Err(e) => {
                    eprintln!("setup failed: {e}");
                    return ExitCode::FAILURE;
                }
            };
            // Correctness check and warm-up: every admission is accepted, every read taken and
            // completed, and the table stays at `live` flows with nothing left pending.
            let mut counter = 0u64;
            for _ in 0..20_000 {
                if let Err(e) = operate(&mut governor, &ids, counter, operation) {
                    eprintln!("check failed with {live} live flows: {e}");
                    return ExitCode::FAILURE;
                }
                counter += 1;
            }
            let stats = governor.stats();
            if governor.open_flows() as usize != live
                || stats.bytes_pending_inbound + stats.bytes_pending_outbound != 0
            {
                eprintln!(
                    "table drifted: {} open flows, {} bytes pending; expected {live} and none",
                    governor.open_flows(),
                    stats.bytes_pending_inbound + stats.bytes_pending_outbound
                );
                return ExitCode::FAILURE;
            }
            cases.push((
                live,
                operation,
                governor,
                ids,
                counter,
                Vec::with_capacity(runs),
            ));
        }
    }
    for _ in 0..runs {
        for (_, operation, governor, ids, counter, samples) in &mut cases {
            match timed_run(governor, ids, counter, *operation, budget) {
                Ok(ns) => samples.push(ns),
                Err(e) => {
                    eprintln!("timed run failed: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    }

    println!("flow governor cost per flow: {runs} runs, median of thread CPU time\n");
    println!(
        "{:<22} {:>11} {:>10} {:>18}",
        "operation", "live flows", "ns/flow", "spread (min-max)"
    );
    let mut medians = Vec::new();
    for (live, operation, _, _, _, samples) in &mut cases {
        let (min, max) = samples
            .iter()
            .fold((f64::MAX, 0.0f64), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        let med = median(samples);
        medians.push(med);
        println!(
            "{:<22} {live:>11} {med:>10.1} {:>18}",
            operation.name(),
            format!("{min:.1}-{max:.1}")
        );
    }
    let ratios: Vec<String> = Operation::ALL
        .iter()
        .zip(medians.chunks(2))
        .map(|(operation, pair)| format!("{} {:.2}x", operation.name(), pair[1] / pair[0]))
        .collect();
    println!(
        "\nratio {} / {} live flows: {}",
        LIVE[1],
        LIVE[0],
        ratios.join(", ")
    );
    let share = cpu.elapsed().as_secs_f64() / wall.elapsed().as_secs_f64();
    println!("CPU share: {:.0}% of wall-clock time", share * 100.0);
    ExitCode::SUCCESS
}
