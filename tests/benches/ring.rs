//! Packet ring benchmark: push and drain cost per packet, against the memcpy limit and peers.
//!
//! Run it with
//!
//! ```text
//! cargo bench -p tidegate-tests --bench ring
//! cargo bench -p tidegate-tests --bench ring -- --quick      # short smoke run, e.g. in CI
//! cargo bench -p tidegate-tests --bench ring -- tidegate    # only candidates matching a name
//! tests/bench-instructions.sh                                # instructions per packet (callgrind)
//! ```
//!
//! # Method
//!
//! Every candidate runs the same pattern, the one a packet-tunnel host follows: push a batch of
//! [`BATCH`] packets (each copied in from its own source buffer), then drain the batch, copying
//! each packet out into one destination buffer, as a host handing a packet to the OS would. The
//! cost is reported per packet, for packets of 64, 576 and 1500 bytes.
//!
//! - **memcpy limit**: exactly two copies per packet, into a staging buffer at consecutive
//!   offsets and back out; no bookkeeping beyond two offsets. No queue can do less. The `x memcpy`
//!   column is the ratio to this row.
//! - **memcpy, aligned**: the same two copies with each packet's staging offset rounded up to
//!   64 bytes, the layout tidegate's ring uses. The `x aligned` column is the ratio to this row:
//!   what a queue costs beyond the copies in its own layout.
//! - **tidegate**: [`PacketRing`] over boxed storage with its default 64-byte packet alignment;
//!   `push`, then `handout` and a copy out for each packet, then one `complete` for the batch
//!   (the documented `writePackets` pattern).
//! - **tidegate, packed**: the same ring with packet alignment 1, packets back to back: what the
//!   alignment buys, measured in the same binary.
//! - **tunnel, AQM off / tunnel, CoDel**: the same ring inside a `PacketTunnel`, through its
//!   outbound path (`on_outbound_packet`, `poll_outbound`, one `complete_outbound`), with AQM off
//!   and with CoDel. The clock does not move, so CoDel never drops: the difference between the
//!   two rows is what AQM's per-packet sojourn bookkeeping costs.
//! - **tunnel, batch calls**: the same tunnel with AQM off, driven as a host holding
//!   `readPacketObjects` arrays drives it: one `on_outbound_batch` per batch, one
//!   `poll_outbound_batch` that copies each packet out, one `complete_outbound`.
//! - **tunnel, FQ-CoDel**: the same outbound path in flow-queue mode (1024 queues, one cell of
//!   1536 bytes per packet, as many cells as the ring has slots): each packet is classified from
//!   its IPv4/UDP header (every source packet starts with one, of a single flow) and hashed with
//!   SipHash, then served by deficit round robin with per-queue CoDel.
//! - **VecDeque<Vec<u8>>**: the naive host; one allocation per packet, freed after the copy out.
//! - **heapless spsc**: `spsc::Queue` of fixed 1500-byte slots; a packet is copied into a
//!   reusable frame that `enqueue` then moves into its slot, and copied out of `peek` before
//!   `dequeue`.
//! - **bbqueue framed**: `grant`, copy in, `commit`; `read`, copy out, `release` (2-byte headers).
//! - **ringbuf**: a byte ring (`LocalRb`, the single-threaded flavour) holding a 2-byte length
//!   prefix before each packet, pushed and popped with `push_slice` and `pop_slice`.
//!
//! Every queue gets the same room: a 64 KiB byte arena and 64 packet slots, so a whole batch of
//! the largest packets always fits. The host's own buffers (each source packet and the
//! destination of the copies out) and the memcpy staging buffer start on 64-byte boundaries, so
//! the figures do not depend on where the allocator happened to place them: copy speed depends on
//! the alignment of source and destination, and an unlucky address moved the memcpy limit alone
//! by 20% between two builds of this benchmark. `std::hint::black_box` hides each source packet and each copy
//! out from the optimiser, and the queue itself between the push and drain phases.
//!
//! Each candidate is warmed up, then timed over [`RUNS`] runs of about 50 ms each; the table
//! shows the median ns/packet and the spread (min to max). Runs are interleaved across
//! candidates (run 1 of each, then run 2 of each, ...) so a noisy neighbour on a shared machine
//! slows every candidate alike instead of one, and the ratio to the memcpy limit is the median
//! of the per-round ratios (each run against the memcpy run next to it).
//!
//! Time is the benchmark thread's own CPU time where the platform offers it (wall-clock time
//! otherwise; the output says which). On a shared machine wall-clock time also counts the time
//! the scheduler gave to other processes, which has nothing to do with the ring. The "CPU share"
//! line says how much of the wall-clock time the thread actually ran: far below 100% means
//! neighbours were busy and even CPU-time figures carry their cache disturbance.
//!
//! Before timing, every candidate is checked: several hundred batches, alternating two sets of
//! distinct packets so stale bytes cannot pass, must drain exactly what was pushed, in order. A
//! timed run must drain every packet it pushed. Any difference makes the program exit with a
//! non-zero status. This is a correctness check, not a timing assertion: no speed makes it fail.

use std::collections::VecDeque;
use std::hint::black_box;
use std::process::ExitCode;
use std::time::{Duration, Instant as WallClock};

use cpu_time::ThreadTime;

use bbqueue::nicknames::YakiNiku;
use bbqueue::prod_cons::framed::{FramedConsumer, FramedProducer};
use bbqueue::traits::storage::BoxedSlice;
use ringbuf::LocalRb;
use ringbuf::storage::Heap;
use ringbuf::traits::Observer;
use tidegate_core::{
    Aqm, FlowQueue, Instant, PacketRing, PacketTunnel, Slot, TunnelConfig, TunnelStorage,
};
use tidegate_tests::storage::AlignedBytes;

/// Packets pushed before the batch is drained.
const BATCH: usize = 32;
/// Packet sizes measured, in bytes: minimal, the IPv4 minimum MTU, Ethernet MTU.
const SIZES: [usize; 3] = [64, 576, 1500];
/// Largest packet any candidate must hold (the heapless slot size).
const MAX_PACKET: usize = 1500;
/// Byte room every queue gets: a batch of the largest packets with headers fits with room left.
const ARENA_BYTES: usize = 64 * 1024;
/// Packet slots every queue gets.
const SLOTS: usize = 64;
/// Timed runs per candidate and size; the median is reported.
const RUNS: usize = 11;
/// Batches pushed and drained by the correctness check before timing.
const VERIFY_BATCHES: usize = 300;

/// How long to measure.
struct Plan {
    runs: usize,
    run_length: Duration,
    warm_up: Duration,
}

impl Plan {
    const FULL: Plan = Plan {
        runs: RUNS,
        run_length: Duration::from_millis(50),
        warm_up: Duration::from_millis(200),
    };
    const QUICK: Plan = Plan {
        runs: 3,
        run_length: Duration::from_millis(5),
        warm_up: Duration::from_millis(10),
    };
}

/// Batches one `--instructions` run pushes and drains.
const COUNTED_BATCHES: u64 = 2_000;

const USAGE: &str = "usage: ring [--quick] [CANDIDATE...] | ring --instructions NAME SIZE";

fn main() -> ExitCode {
    let mut plan = &Plan::FULL;
    let mut filters = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => plan = &Plan::QUICK,
            "--instructions" => {
                let (Some(name), Some(Ok(size))) = (args.next(), args.next().map(|s| s.parse()))
                else {
                    eprintln!("{USAGE}");
                    return ExitCode::from(2);
                };
                return count_instructions(&name, size);
            }
            // `cargo bench` passes `--bench` to every harness.
            "--bench" => {}
            flag if flag.starts_with('-') => {
                eprintln!("unknown flag {flag:?}; {USAGE}");
                return ExitCode::from(2);
            }
            name => filters.push(name.to_owned()),
        }
    }

    let clock = Clock::pick();
    println!(
        "ring push+drain per packet: batches of {BATCH}, {} runs of {} ms per candidate, median \
         of {}",
        plan.runs,
        plan.run_length.as_millis(),
        clock.describe()
    );
    let started = (WallClock::now(), clock.now());
    println!();
    println!(
        "{:<19} {:>5} {:>10} {:>19} {:>9} {:>10}",
        "candidate", "size", "ns/packet", "spread (min-max)", "x memcpy", "x aligned"
    );

    let mut failures = Vec::new();
    for size in SIZES {
        let sources = [packets(size, 0), packets(size, 1)];
        let mut candidates = candidates(size);
        // The two memcpy limits always run: the ratios are to them.
        let mut index = 0;
        candidates.retain(|candidate| {
            let keep = index < LIMITS
                || filters.is_empty()
                || filters
                    .iter()
                    .any(|f| candidate.name().contains(f.as_str()));
            index += 1;
            keep
        });
        for candidate in &mut candidates {
            if let Err(problem) = candidate.verify(&sources) {
                failures.push(format!("{} at {size} bytes: {problem}", candidate.name()));
            }
        }
        let results = measure(&mut candidates, &sources[0], plan, clock, &mut failures);
        for (candidate, result) in candidates.iter().zip(&results) {
            println!(
                "{:<19} {:>5} {:>10.1} {:>19} {:>8.2}x {:>9.2}x",
                candidate.name(),
                size,
                result.median,
                format!("{:.1}-{:.1}", result.min, result.max),
                result.ratio_to_limit[0],
                result.ratio_to_limit[1],
            );
        }
    }

    if clock == Clock::ThreadCpu {
        let share =
            clock.now().saturating_sub(started.1).as_secs_f64() / started.0.elapsed().as_secs_f64();
        println!();
        println!("CPU share: {:.0}% of wall-clock time", share * 100.0);
    }

    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!();
        for failure in &failures {
            eprintln!("CORRECTNESS FAILURE: {failure}");
        }
        ExitCode::FAILURE
    }
}

/// The `--instructions` mode: check the candidate named exactly `name`, then push and drain
/// [`COUNTED_BATCHES`] batches of `size`-byte packets through [`run_batches`], untimed.
/// `tests/bench-instructions.sh` runs this under callgrind, counting only inside `run_batches`,
/// so the count per packet is the candidate's alone: no timer, warm-up or check is in it.
fn count_instructions(name: &str, size: usize) -> ExitCode {
    let sources = [packets(size, 0), packets(size, 1)];
    let Some(mut candidate) = candidates(size).into_iter().find(|c| c.name() == name) else {
        eprintln!("no candidate named {name:?}");
        return ExitCode::from(2);
    };
    if let Err(problem) = candidate.verify(&sources) {
        eprintln!("CORRECTNESS FAILURE: {name} at {size} bytes: {problem}");
        return ExitCode::FAILURE;
    }
    let mut dst = AlignedBytes::zeroed(MAX_PACKET, HOST_ALIGN);
    let drained = candidate.run(COUNTED_BATCHES, &sources[0], dst.as_mut());
    let pushed = COUNTED_BATCHES * BATCH as u64;
    println!("packets {drained}");
    if drained == pushed {
        ExitCode::SUCCESS
    } else {
        eprintln!("CORRECTNESS FAILURE: {name} at {size} bytes: drained {drained} of {pushed}");
        ExitCode::FAILURE
    }
}

/// One queue under test, driven through the push-a-batch, drain-a-batch pattern.
trait Candidate {
    /// Copy `packet` in; `false` if the queue refused it.
    fn push(&mut self, packet: &[u8]) -> bool;
    /// Copy the oldest packet out into `dst` and return its length, or `None` if empty.
    fn pop_into(&mut self, dst: &mut [u8]) -> Option<usize>;
    /// Called after each drained batch; `false` on an error.
    fn end_batch(&mut self) -> bool {
        true
    }
    /// Copy in every packet of `batch`, in order, stopping at the first one refused; returns
    /// how many were taken. One [`Candidate::push`] per packet unless the queue has a batch call.
    #[inline]
    fn push_batch(&mut self, batch: &[AlignedBytes]) -> usize {
        let mut taken = 0;
        for packet in batch {
            if !self.push(black_box(packet.as_ref())) {
                break;
            }
            taken += 1;
        }
        taken
    }
    /// Copy every queued packet out into `dst`, oldest first, passing each copy to `each`;
    /// returns how many. One [`Candidate::pop_into`] per packet unless the queue has a batch
    /// call.
    #[inline]
    fn drain(&mut self, dst: &mut [u8], mut each: impl FnMut(&[u8])) -> u64 {
        let mut drained = 0;
        while let Some(len) = self.pop_into(dst) {
            each(dst.get(..len).unwrap_or_default());
            drained += 1;
        }
        drained
    }
}

/// Object-safe face of a [`Candidate`]: one dynamic call per timed run, none per packet.
trait Bench {
    fn name(&self) -> &'static str;
    /// Push and drain `batches` batches of `sources`; returns the packets drained.
    fn run(&mut self, batches: u64, sources: &[AlignedBytes], dst: &mut [u8]) -> u64;
    /// Check that what is drained is exactly what was pushed, in order.
    fn verify(&mut self, sources: &[Vec<AlignedBytes>; 2]) -> Result<(), String>;
}

struct Named<C> {
    name: &'static str,
    candidate: C,
}

impl<C: Candidate> Bench for Named<C> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn run(&mut self, batches: u64, sources: &[AlignedBytes], dst: &mut [u8]) -> u64 {
        run_batches(&mut self.candidate, batches, sources, dst)
    }

    fn verify(&mut self, sources: &[Vec<AlignedBytes>; 2]) -> Result<(), String> {
        let mut dst = AlignedBytes::zeroed(MAX_PACKET, HOST_ALIGN);
        let dst = dst.as_mut();
        for batch in 0..VERIFY_BATCHES {
            let set = &sources[batch % 2];
            let taken = self.candidate.push_batch(set);
            if taken != set.len() {
                return Err(format!("batch {batch}: push {taken} refused"));
            }
            let (mut index, mut differs) = (0, None);
            let drained = self.candidate.drain(dst, |packet| {
                if differs.is_none() && set.get(index).map(AlignedBytes::as_ref) != Some(packet) {
                    differs = Some(index);
                }
                index += 1;
            });
            if let Some(index) = differs {
                return Err(format!("batch {batch}: packet {index} differs"));
            }
            if drained != set.len() as u64 {
                return Err(format!("batch {batch}: {drained} of {BATCH} drained"));
            }
            if !self.candidate.end_batch() {
                return Err(format!("batch {batch}: end of batch failed"));
            }
        }
        Ok(())
    }
}

/// The timed loop, monomorphised per candidate.
#[inline(never)]
fn run_batches<C: Candidate>(
    candidate: &mut C,
    batches: u64,
    sources: &[AlignedBytes],
    dst: &mut [u8],
) -> u64 {
    let mut drained = 0u64;
    for _ in 0..batches {
        if candidate.push_batch(sources) != sources.len() {
            return drained;
        }
        black_box(&mut *candidate);
        drained += candidate.drain(dst, |packet| {
            black_box(packet);
        });
        if !candidate.end_batch() {
            return drained;
        }
    }
    drained
}

/// What the runs are timed with.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Clock {
    /// CPU time of the benchmark thread: time spent descheduled does not count.
    ThreadCpu,
    /// Wall-clock time, where thread CPU time is unavailable.
    Wall(WallClock),
}

impl Clock {
    fn pick() -> Clock {
        match ThreadTime::try_now() {
            Ok(_) => Clock::ThreadCpu,
            Err(_) => Clock::Wall(WallClock::now()),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Clock::ThreadCpu => "thread CPU time",
            Clock::Wall(_) => "wall-clock time (no thread CPU clock here)",
        }
    }

    /// Time since an arbitrary origin fixed for the program.
    fn now(self) -> Duration {
        match self {
            Clock::ThreadCpu => ThreadTime::try_now().map_or(Duration::ZERO, |t| t.as_duration()),
            Clock::Wall(origin) => origin.elapsed(),
        }
    }
}

struct Measured {
    median: f64,
    min: f64,
    max: f64,
    /// Median over rounds of this run's time over each memcpy limit's run in the same round:
    /// the plain limit, then the aligned one.
    ratio_to_limit: [f64; LIMITS],
}

/// Warm every candidate up, then time interleaved runs; `failures` gets any short drain.
fn measure(
    candidates: &mut [Box<dyn Bench>],
    sources: &[AlignedBytes],
    plan: &Plan,
    clock: Clock,
    failures: &mut Vec<String>,
) -> Vec<Measured> {
    let mut dst = AlignedBytes::zeroed(MAX_PACKET, HOST_ALIGN);
    let dst = dst.as_mut();
    let size = sources.first().map_or(0, |packet| packet.as_ref().len());
    let batches_per_run: Vec<u64> = candidates
        .iter_mut()
        .map(|candidate| {
            // Double the work until it takes the warm-up time, then size a run from the rate.
            let mut batches = 1u64;
            loop {
                let started = clock.now();
                candidate.run(batches, sources, dst);
                let elapsed = clock.now().saturating_sub(started);
                if elapsed >= plan.warm_up / 4 {
                    let per_batch = elapsed.as_secs_f64() / batches as f64;
                    break ((plan.run_length.as_secs_f64() / per_batch) as u64).max(1);
                }
                batches *= 2;
            }
        })
        .collect();

    let mut samples = vec![Vec::with_capacity(plan.runs); candidates.len()];
    for _ in 0..plan.runs {
        for ((candidate, &batches), samples) in candidates
            .iter_mut()
            .zip(&batches_per_run)
            .zip(&mut samples)
        {
            let started = clock.now();
            let drained = candidate.run(batches, sources, dst);
            let elapsed = clock.now().saturating_sub(started);
            let pushed = batches * BATCH as u64;
            if drained != pushed {
                failures.push(format!(
                    "{} at {size} bytes: drained {drained} of {pushed} packets in a timed run",
                    candidate.name()
                ));
            }
            samples.push(elapsed.as_nanos() as f64 / pushed as f64);
        }
    }
    let limits: Vec<Vec<f64>> = samples.iter().take(LIMITS).cloned().collect();
    samples
        .into_iter()
        .map(|runs| {
            let ratio_to = |limit: Option<&Vec<f64>>| {
                let ratios = runs
                    .iter()
                    .zip(limit.map_or(&[][..], Vec::as_slice))
                    .map(|(run, limit)| run / limit)
                    .collect();
                median(&sorted(ratios))
            };
            let ratio_to_limit = [ratio_to(limits.first()), ratio_to(limits.get(1))];
            let runs = sorted(runs);
            Measured {
                median: median(&runs),
                min: runs.first().copied().unwrap_or(f64::NAN),
                max: runs.last().copied().unwrap_or(f64::NAN),
                ratio_to_limit,
            }
        })
        .collect()
}

fn sorted(mut values: Vec<f64>) -> Vec<f64> {
    values.sort_by(f64::total_cmp);
    values
}

/// The middle of sorted `values` (the upper middle for an even count).
fn median(sorted: &[f64]) -> f64 {
    sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN)
}

/// [`BATCH`] distinct packets of `size` bytes, each in its own 64-byte-aligned buffer; `set`
/// varies the contents.
fn packets(size: usize, set: usize) -> Vec<AlignedBytes> {
    (0..BATCH)
        .map(|index| {
            let mut packet = AlignedBytes::zeroed(size, HOST_ALIGN);
            for (byte, value) in packet.as_mut().iter_mut().enumerate() {
                *value = (byte * 7 + index * 31 + set * 101 + 1) as u8;
            }
            // An IPv4/UDP header of one flow, so the flow-queue row classifies real headers.
            let header = [
                0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2, 0x13, 0x88,
                0x14, 0x51, 0, 0, 0, 0,
            ];
            let n = header.len().min(size);
            packet.as_mut()[..n].copy_from_slice(&header[..n]);
            packet
        })
        .collect()
}

/// Alignment of the host's buffers and of the memcpy staging buffer: a cache line.
const HOST_ALIGN: usize = 64;

/// The first candidates are the memcpy limits every ratio is to.
const LIMITS: usize = 2;

/// Every candidate for packets of `size` bytes, the [`LIMITS`] memcpy limits first.
fn candidates(size: usize) -> Vec<Box<dyn Bench>> {
    fn named<C: Candidate + 'static>(name: &'static str, candidate: C) -> Box<dyn Bench> {
        Box::new(Named { name, candidate })
    }
    vec![
        named("memcpy limit", MemcpyLimit::new(size, 1)),
        named("memcpy, aligned", MemcpyLimit::new(size, HOST_ALIGN)),
        named(
            "tidegate",
            Tidegate::new(tidegate_core::DEFAULT_PACKET_ALIGN),
        ),
        named("tidegate, packed", Tidegate::new(1)),
        named("tunnel, AQM off", TunnelPath::new(Aqm::Off)),
        named("tunnel, CoDel", TunnelPath::new(Aqm::CODEL_DEFAULT)),
        named("tunnel, batch calls", TunnelPath::batched(Aqm::Off)),
        named(
            "tunnel, FQ-CoDel",
            TunnelPath::new(Aqm::fq_codel(Aqm::FQ_DEFAULT_FLOW_QUEUES, [7; 16])),
        ),
        named("VecDeque<Vec<u8>>", VecDequeOfVecs::new()),
        named("heapless spsc", HeaplessSpsc::new()),
        named("bbqueue framed", BbqueueFramed::new()),
        named("ringbuf + len", RingbufPrefixed::new()),
    ]
}

/// Two copies per packet and nothing else: the floor for any queue that copies in and out.
struct MemcpyLimit {
    staging: AlignedBytes,
    packet_len: usize,
    /// Distance between consecutive packets in the staging buffer: the packet length rounded
    /// up to the alignment.
    stride: usize,
    written: usize,
    read: usize,
}

impl MemcpyLimit {
    fn new(packet_len: usize, align: usize) -> Self {
        MemcpyLimit {
            staging: AlignedBytes::zeroed(ARENA_BYTES, HOST_ALIGN),
            packet_len,
            stride: packet_len.next_multiple_of(align),
            written: 0,
            read: 0,
        }
    }
}

impl Candidate for MemcpyLimit {
    fn push(&mut self, packet: &[u8]) -> bool {
        let start = self.written;
        match self.staging.as_mut().get_mut(start..start + packet.len()) {
            Some(dst) if packet.len() == self.packet_len => {
                dst.copy_from_slice(packet);
                self.written = start + self.stride;
                true
            }
            _ => false,
        }
    }

    fn pop_into(&mut self, dst: &mut [u8]) -> Option<usize> {
        if self.read >= self.written {
            return None;
        }
        let start = self.read;
        dst.get_mut(..self.packet_len)?
            .copy_from_slice(self.staging.as_ref().get(start..start + self.packet_len)?);
        self.read = start + self.stride;
        Some(self.packet_len)
    }

    fn end_batch(&mut self) -> bool {
        self.written = 0;
        self.read = 0;
        true
    }
}

struct Tidegate {
    ring: PacketRing<Box<[u8]>, Box<[Slot]>>,
    handed_out: usize,
    now: Instant,
}

impl Tidegate {
    fn new(packet_align: usize) -> Self {
        let arena = vec![0u8; ARENA_BYTES].into_boxed_slice();
        let slots = vec![Slot::EMPTY; SLOTS].into_boxed_slice();
        Tidegate {
            ring: PacketRing::with_packet_align(arena, slots, packet_align)
                .expect("valid ring storage"),
            handed_out: 0,
            now: Instant::from_micros(1),
        }
    }
}

impl Candidate for Tidegate {
    fn push(&mut self, packet: &[u8]) -> bool {
        self.ring.push(self.now, packet).is_ok()
    }

    fn pop_into(&mut self, dst: &mut [u8]) -> Option<usize> {
        let packet = self.ring.handout()?;
        dst.get_mut(..packet.len())?.copy_from_slice(packet);
        self.handed_out += 1;
        Some(packet.len())
    }

    fn end_batch(&mut self) -> bool {
        let completed = self.ring.complete(self.handed_out);
        let ok = completed.is_ok_and(|released| released.packets == self.handed_out);
        self.handed_out = 0;
        ok
    }
}

/// The whole outbound path of a `PacketTunnel` (length checks, watermarks, stats and, with
/// CoDel, its sojourn check at every hand-out) around the same ring. The benchmark's clock does
/// not move, so CoDel never drops: the difference between the two rows is AQM's bookkeeping.
struct TunnelPath {
    tunnel: BoxedTunnel,
    handed_out: usize,
    now: Instant,
    /// Push and drain with the batch calls instead of one call per packet.
    batch_calls: bool,
}

/// A tunnel over boxed storage.
type BoxedTunnel = PacketTunnel<Box<[u8]>, Box<[Slot]>, Box<[FlowQueue]>>;

impl TunnelPath {
    /// The tunnel driven with the batch calls (`on_outbound_batch`, `poll_outbound_batch`), as a
    /// host with `readPacketObjects` arrays drives it.
    fn batched(aqm: Aqm) -> Self {
        TunnelPath {
            batch_calls: true,
            ..TunnelPath::new(aqm)
        }
    }

    fn new(aqm: Aqm) -> Self {
        let mut config = TunnelConfig {
            outbound_bytes: ARENA_BYTES as u32,
            outbound_packets: SLOTS as u32,
            outbound_high_watermark_bytes: 60_000,
            outbound_low_watermark_bytes: 30_000,
            outbound_high_watermark_packets: 48,
            outbound_low_watermark_packets: 24,
            inbound_bytes: 2048,
            inbound_packets: 4,
            max_packet_len: MAX_PACKET as u32,
            aqm,
            ..TunnelConfig::DEFAULT
        };
        if aqm.flow_queues() > 0 {
            // Flow queues: as many cells as the FIFO ring has slots.
            let cell = config.cell_bytes();
            config.outbound_bytes = SLOTS as u32 * cell;
            config.inbound_bytes = 4 * cell;
        }
        let boxed = |len: u32| vec![0u8; len as usize].into_boxed_slice();
        let slots = |len: u32| vec![Slot::EMPTY; len as usize].into_boxed_slice();
        let queues = || vec![FlowQueue::EMPTY; aqm.flow_queues() as usize].into_boxed_slice();
        let storage = TunnelStorage {
            outbound_arena: boxed(config.outbound_bytes),
            outbound_slots: slots(config.outbound_packets),
            inbound_arena: boxed(config.inbound_bytes),
            inbound_slots: slots(config.inbound_packets),
            outbound_queues: queues(),
            inbound_queues: queues(),
        };
        TunnelPath {
            tunnel: PacketTunnel::new(config, storage).expect("valid tunnel configuration"),
            handed_out: 0,
            now: Instant::from_micros(1),
            batch_calls: false,
        }
    }
}

impl Candidate for TunnelPath {
    fn push(&mut self, packet: &[u8]) -> bool {
        self.tunnel.on_outbound_packet(self.now, packet).is_ok()
    }

    fn pop_into(&mut self, dst: &mut [u8]) -> Option<usize> {
        let packet = self.tunnel.poll_outbound(self.now)?;
        dst.get_mut(..packet.len())?.copy_from_slice(packet);
        self.handed_out += 1;
        Some(packet.len())
    }

    fn push_batch(&mut self, batch: &[AlignedBytes]) -> usize {
        if !self.batch_calls {
            return batch
                .iter()
                .take_while(|packet| self.push(black_box(packet.as_ref())))
                .count();
        }
        let packets = batch.iter().map(|packet| black_box(packet.as_ref()));
        self.tunnel.on_outbound_batch(self.now, packets).accepted
    }

    fn drain(&mut self, dst: &mut [u8], mut each: impl FnMut(&[u8])) -> u64 {
        if !self.batch_calls {
            let mut drained = 0;
            while let Some(len) = self.pop_into(dst) {
                each(dst.get(..len).unwrap_or_default());
                drained += 1;
            }
            return drained;
        }
        let handed = self
            .tunnel
            .poll_outbound_batch(self.now, usize::MAX, |packet| {
                if let Some(copy) = dst.get_mut(..packet.len()) {
                    copy.copy_from_slice(packet);
                    each(copy);
                }
            });
        self.handed_out += handed;
        handed as u64
    }

    fn end_batch(&mut self) -> bool {
        let done = self.tunnel.complete_outbound(self.now, self.handed_out);
        let ok = done.is_ok_and(|d| d.released.packets == self.handed_out);
        self.handed_out = 0;
        ok
    }
}

struct VecDequeOfVecs {
    queue: VecDeque<Vec<u8>>,
}

impl VecDequeOfVecs {
    fn new() -> Self {
        VecDequeOfVecs {
            queue: VecDeque::with_capacity(SLOTS),
        }
    }
}

impl Candidate for VecDequeOfVecs {
    fn push(&mut self, packet: &[u8]) -> bool {
        self.queue.push_back(packet.to_vec());
        true
    }

    fn pop_into(&mut self, dst: &mut [u8]) -> Option<usize> {
        let packet = self.queue.pop_front()?;
        dst.get_mut(..packet.len())?.copy_from_slice(&packet);
        Some(packet.len())
    }
}

/// A fixed-size heapless slot: the whole slot moves on `enqueue`, whatever the packet length.
#[derive(Clone, Copy)]
struct Frame {
    len: u16,
    bytes: [u8; MAX_PACKET],
}

struct HeaplessSpsc {
    queue: Box<heapless::spsc::Queue<Frame, SLOTS>>,
    /// Reused so that filling a frame never pays for zeroing one.
    scratch: Frame,
}

impl HeaplessSpsc {
    fn new() -> Self {
        HeaplessSpsc {
            queue: Box::new(heapless::spsc::Queue::new()),
            scratch: Frame {
                len: 0,
                bytes: [0; MAX_PACKET],
            },
        }
    }
}

impl Candidate for HeaplessSpsc {
    fn push(&mut self, packet: &[u8]) -> bool {
        let (Some(dst), Ok(len)) = (
            self.scratch.bytes.get_mut(..packet.len()),
            u16::try_from(packet.len()),
        ) else {
            return false;
        };
        dst.copy_from_slice(packet);
        self.scratch.len = len;
        self.queue.enqueue(self.scratch).is_ok()
    }

    fn pop_into(&mut self, dst: &mut [u8]) -> Option<usize> {
        let frame = self.queue.peek()?;
        let len = usize::from(frame.len);
        dst.get_mut(..len)?.copy_from_slice(frame.bytes.get(..len)?);
        self.queue.dequeue();
        Some(len)
    }
}

/// bbqueue's producer and consumer borrow the queue, which is leaked to live for the program.
struct BbqueueFramed {
    producer: FramedProducer<&'static YakiNiku>,
    consumer: FramedConsumer<&'static YakiNiku>,
}

impl BbqueueFramed {
    fn new() -> Self {
        let queue: &'static YakiNiku = Box::leak(Box::new(YakiNiku::new_with_storage(
            BoxedSlice::new(ARENA_BYTES),
        )));
        BbqueueFramed {
            producer: queue.framed_producer(),
            consumer: queue.framed_consumer(),
        }
    }
}

impl Candidate for BbqueueFramed {
    fn push(&mut self, packet: &[u8]) -> bool {
        let Ok(len) = u16::try_from(packet.len()) else {
            return false;
        };
        let Ok(mut grant) = self.producer.grant(len) else {
            return false;
        };
        grant.copy_from_slice(packet);
        grant.commit(len);
        true
    }

    fn pop_into(&mut self, dst: &mut [u8]) -> Option<usize> {
        let grant = self.consumer.read().ok()?;
        let len = grant.len();
        dst.get_mut(..len)?.copy_from_slice(&grant);
        grant.release();
        Some(len)
    }
}

struct RingbufPrefixed {
    ring: LocalRb<Heap<u8>>,
}

impl RingbufPrefixed {
    fn new() -> Self {
        RingbufPrefixed {
            ring: LocalRb::new(ARENA_BYTES),
        }
    }
}

impl Candidate for RingbufPrefixed {
    fn push(&mut self, packet: &[u8]) -> bool {
        let Ok(len) = u16::try_from(packet.len()) else {
            return false;
        };
        if self.ring.vacant_len() < 2 + packet.len() {
            return false;
        }
        self.ring.push_slice(&len.to_le_bytes());
        self.ring.push_slice(packet);
        true
    }

    fn pop_into(&mut self, dst: &mut [u8]) -> Option<usize> {
        let mut prefix = [0u8; 2];
        if self.ring.pop_slice(&mut prefix) != 2 {
            return None;
        }
        let len = usize::from(u16::from_le_bytes(prefix));
        let popped = self.ring.pop_slice(dst.get_mut(..len)?);
        (popped == len).then_some(len)
    }
}
