//! Flow table benchmark: the cost of one admission plus one close, and of the relay accounting
//! of one read, with few and with many live flows in the table, through the flow governor alone
//! and through the proxy engine a host drives (which adds its connection budget, its race table
//! and one event queue, drained after every operation as a host does).
//!
//! ```text
//! cargo bench -p tidegate-tests --bench flow
//! cargo bench -p tidegate-tests --bench flow -- --quick      # short smoke run
//! ```
//!
//! # Method
//!
//! A table with 2048 slots (policy caps raised so that no cap refuses) is filled with `live`
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
//! shown. The proxy engine's flows are connected by the host's system (`on_connecting`,
//! `on_connected`), so no race runs: the rows measure what the engine adds to the governor's
//! path (a budget check at admission, the race-slot and event-queue bookkeeping, the drain). The
//! issue's target: under 100 ns per admit+close through the engine, and the 1024-flow cost at
//! most 1.3 times the 64-flow cost.
//!
//! Before timing, every admission is checked to be `Accepted` and every close to free the slot;
//! any other answer exits non-zero. That is a correctness check; no speed makes it fail.

use std::hint::black_box;
use std::process::ExitCode;
use std::time::{Duration, Instant as WallClock};

use cpu_time::ThreadTime;
use tidegate_core::{
    Admission, AppId, DEFAULT_RACE_SLOTS, DestinationKey, FlowClass, FlowGovernor, FlowId,
    FlowInfo, FlowPolicy, FlowSlot, Instant, Protocol, ProxyConfig, ProxyEngine, RaceSlot, Side,
};

const SLOTS: usize = 2048;
const LIVE: [usize; 2] = [64, 1024];
const APPS: u64 = 16;
const DESTINATIONS: u64 = 512;
const RUNS: usize = 11;

type Governor = FlowGovernor<Box<[FlowSlot]>>;
type Proxy = ProxyEngine<Box<[FlowSlot]>, Box<[RaceSlot]>>;

/// The calls the benchmark makes, on the governor alone or through the proxy engine.
trait Table: Sized {
    const NAME: &'static str;
    fn make() -> Result<Self, String>;
    fn admit(&mut self, now: Instant, info: FlowInfo) -> Admission;
    fn connect(&mut self, now: Instant, id: FlowId) -> Result<(), String>;
    fn close(&mut self, now: Instant, id: FlowId) -> Result<(), String>;
    fn remote_read(&mut self, now: Instant, id: FlowId, bytes: u64) -> Result<(), String>;
    fn can_read_remote(&self, id: FlowId) -> bool;
    fn local_written(&mut self, now: Instant, id: FlowId, bytes: u64) -> Result<(), String>;
    /// Drain the outputs, as a host does after every input; how many there were.
    fn drain(&mut self) -> usize;
    /// Open flows and bytes pending.
    fn levels(&self) -> (usize, u64);
}

impl Table for Governor {
    const NAME: &'static str = "governor";
    fn make() -> Result<Self, String> {
        let slots = vec![FlowSlot::EMPTY; SLOTS].into_boxed_slice();
        Governor::new(Instant::ZERO, slots, policy()).map_err(|e| e.to_string())
    }
    fn admit(&mut self, now: Instant, info: FlowInfo) -> Admission {
        self.on_new_flow(now, info)
    }
    fn connect(&mut self, now: Instant, id: FlowId) -> Result<(), String> {
        self.on_connected(now, id).map_err(|e| e.to_string())
    }
    fn close(&mut self, now: Instant, id: FlowId) -> Result<(), String> {
        self.on_closed(now, id).map(drop).map_err(|e| e.to_string())
    }
    fn remote_read(&mut self, now: Instant, id: FlowId, bytes: u64) -> Result<(), String> {
        self.on_remote_read(now, id, bytes)
            .map_err(|e| e.to_string())
    }
    fn can_read_remote(&self, id: FlowId) -> bool {
        FlowGovernor::can_read_remote(self, id)
    }
    fn local_written(&mut self, now: Instant, id: FlowId, bytes: u64) -> Result<(), String> {
        self.on_local_written(now, id, bytes)
            .map_err(|e| e.to_string())
    }
    fn drain(&mut self) -> usize {
        std::iter::from_fn(|| self.poll_notification()).count()
    }
    fn levels(&self) -> (usize, u64) {
        let stats = self.stats();
        let pending = stats.bytes_pending_inbound + stats.bytes_pending_outbound;
        (self.open_flows() as usize, pending)
    }
}

impl Table for Proxy {
    const NAME: &'static str = "proxy engine";
    fn make() -> Result<Self, String> {
        let slots = vec![FlowSlot::EMPTY; SLOTS].into_boxed_slice();
        let races = vec![RaceSlot::EMPTY; DEFAULT_RACE_SLOTS].into_boxed_slice();
        let config = ProxyConfig {
            flows: policy(),
            ..ProxyConfig::DEFAULT
        };
        Proxy::new(Instant::ZERO, slots, races, config).map_err(|e| e.to_string())
    }
    fn admit(&mut self, now: Instant, info: FlowInfo) -> Admission {
        self.on_new_flow(now, info)
    }
    fn connect(&mut self, now: Instant, id: FlowId) -> Result<(), String> {
        self.on_connected(now, id).map_err(|e| e.to_string())
    }
    fn close(&mut self, now: Instant, id: FlowId) -> Result<(), String> {
        self.on_closed(now, id).map(drop).map_err(|e| e.to_string())
    }
    fn remote_read(&mut self, now: Instant, id: FlowId, bytes: u64) -> Result<(), String> {
        self.on_remote_read(now, id, bytes)
            .map_err(|e| e.to_string())
    }
    fn can_read_remote(&self, id: FlowId) -> bool {
        self.can_read(id, Side::Remote)
    }
    fn local_written(&mut self, now: Instant, id: FlowId, bytes: u64) -> Result<(), String> {
        self.on_local_written(now, id, bytes)
            .map_err(|e| e.to_string())
    }
    fn drain(&mut self) -> usize {
        std::iter::from_fn(|| self.poll_event()).count()
    }
    fn levels(&self) -> (usize, u64) {
        self.flows().levels()
    }
}

fn policy() -> FlowPolicy {
    FlowPolicy {
        max_flows: (SLOTS - 1) as u32,
        max_flows_per_app: SLOTS as u32,
        max_flows_per_destination: SLOTS as u32,
        max_connecting: SLOTS as u32,
        // The bench fills the table in one instant; pacing still runs (a token taken and given
        // back per flow) but never refuses.
        app_admission_burst: u32::MAX,
        app_admission_rate_per_second: u32::MAX,
        ..FlowPolicy::APPLE_DEFAULT
    }
}

fn info(app: u64, destination: u64) -> FlowInfo {
    FlowInfo {
        app: AppId(app),
        destination: DestinationKey(destination),
        protocol: Protocol::Tcp,
        class: FlowClass::default_for(Protocol::Tcp, 443),
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

/// A table holding `live` established flows, and their ids.
fn filled<T: Table>(live: usize) -> Result<(T, Vec<FlowId>), String> {
    let mut table = T::make()?;
    let mut ids = Vec::with_capacity(live);
    for i in 0..live as u64 {
        let now = Instant::from_micros(i);
        match table.admit(now, info(i % APPS, i % DESTINATIONS)) {
            Admission::Accepted { id } => {
                table.connect(now, id)?;
                ids.push(id);
            }
            other => return Err(format!("filling flow {i}: {other:?}")),
        }
    }
    if table.drain() != 0 {
        return Err("filling the table produced outputs".to_owned());
    }
    Ok((table, ids))
}

/// One operation, the `n`th.
fn operate<T: Table>(
    table: &mut T,
    live: &[FlowId],
    n: u64,
    operation: Operation,
) -> Result<FlowId, String> {
    match operation {
        Operation::AdmitClose => admit_and_close(table, n, false),
        Operation::AdmitConnectClose => admit_and_close(table, n, true),
        Operation::ReadComplete => read_and_complete(table, live, n),
    }
}

/// The host's drain after an operation, which finds nothing: these operations have no output.
fn drained<T: Table>(table: &mut T, n: u64) -> Result<(), String> {
    match table.drain() {
        0 => Ok(()),
        outputs => Err(format!("operation {n}: {outputs} outputs")),
    }
}

/// One admission, connect and close, then the host's drain; returns the admitted id.
fn admit_and_close<T: Table>(table: &mut T, n: u64, connect: bool) -> Result<FlowId, String> {
    let now = Instant::from_micros(1_000_000 + n);
    let id = match table.admit(now, black_box(info(n % APPS, (n * 7) % DESTINATIONS))) {
        Admission::Accepted { id } => id,
        other => return Err(format!("operation {n}: {other:?}")),
    };
    if connect {
        table.connect(now, id)?;
    }
    table.close(now, id)?;
    drained(table, n)?;
    Ok(id)
}

/// A 1500-byte receive on the `n`th live flow (in rotation), its readiness check and its write
/// completion, then the host's drain; returns the flow's id.
fn read_and_complete<T: Table>(table: &mut T, live: &[FlowId], n: u64) -> Result<FlowId, String> {
    let now = Instant::from_micros(1_000_000 + n);
    let id = live[n as usize % live.len()];
    table.remote_read(now, id, black_box(1500))?;
    if !table.can_read_remote(id) {
        return Err(format!("operation {n}: a 1500-byte read paused the flow"));
    }
    table.local_written(now, id, black_box(1500))?;
    drained(table, n)?;
    Ok(id)
}

/// Run operations for about `budget` of CPU time; return ns per operation.
fn timed_run<T: Table>(
    governor: &mut T,
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

/// One table's samples: for each operation and live count, the ns per operation of each run.
type Samples = Vec<(usize, Operation, Vec<f64>)>;

/// Fill one table per operation and live count, check it, then time `runs` rounds of
/// `budget` each, interleaved across the cases.
fn measure<T: Table>(runs: usize, budget: Duration) -> Result<Samples, String> {
    let mut cases = Vec::new();
    for operation in Operation::ALL {
        for live in LIVE {
            let (mut table, ids) = filled::<T>(live)?;
            // Correctness check and warm-up: every admission is accepted, every read taken and
            // completed, and the table stays at `live` flows with nothing left pending.
            let mut counter = 0u64;
            for _ in 0..20_000 {
                operate(&mut table, &ids, counter, operation)
                    .map_err(|e| format!("check failed with {live} live flows: {e}"))?;
                counter += 1;
            }
            let (open, pending) = table.levels();
            if open != live || pending != 0 {
                return Err(format!(
                    "table drifted: {open} open flows, {pending} bytes pending; \
                     expected {live} and none"
                ));
            }
            cases.push((
                live,
                operation,
                table,
                ids,
                counter,
                Vec::with_capacity(runs),
            ));
        }
    }
    for _ in 0..runs {
        for (_, operation, table, ids, counter, samples) in &mut cases {
            samples.push(timed_run(table, ids, counter, *operation, budget)?);
        }
    }
    Ok(cases
        .into_iter()
        .map(|(live, operation, _, _, _, samples)| (live, operation, samples))
        .collect())
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
    let measured = measure::<Governor>(runs, budget)
        .map(|samples| (Governor::NAME, samples))
        .and_then(|governor| {
            measure::<Proxy>(runs, budget).map(|proxy| [governor, (Proxy::NAME, proxy)])
        });
    let tables = match measured {
        Ok(tables) => tables,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };

    println!("flow table cost per flow: {runs} runs, median of thread CPU time\n");
    println!(
        "{:<13} {:<22} {:>11} {:>10} {:>18}",
        "through", "operation", "live flows", "ns/flow", "spread (min-max)"
    );
    let mut ratios = Vec::new();
    for (name, mut cases) in tables {
        let mut medians = Vec::new();
        for (live, operation, samples) in &mut cases {
            let (min, max) = samples
                .iter()
                .fold((f64::MAX, 0.0f64), |(lo, hi), &v| (lo.min(v), hi.max(v)));
            let med = median(samples);
            medians.push(med);
            println!(
                "{name:<13} {:<22} {live:>11} {med:>10.1} {:>18}",
                operation.name(),
                format!("{min:.1}-{max:.1}")
            );
        }
        let these: Vec<String> = Operation::ALL
            .iter()
            .zip(medians.chunks(2))
            .map(|(operation, pair)| format!("{} {:.2}x", operation.name(), pair[1] / pair[0]))
            .collect();
        ratios.push(format!("{name}: {}", these.join(", ")));
    }
    println!("\nratio {} / {} live flows:", LIVE[1], LIVE[0]);
    for line in ratios {
        println!("  {line}");
    }
    let share = cpu.elapsed().as_secs_f64() / wall.elapsed().as_secs_f64();
    println!("CPU share: {:.0}% of wall-clock time", share * 100.0);
    ExitCode::SUCCESS
}
