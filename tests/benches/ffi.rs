//! C ABI benchmark: what crossing the C boundary costs per packet, over calling the core directly.
//!
//! Run it with
//!
//! ```text
//! cargo bench -p tidegate-tests --bench ffi
//! cargo bench -p tidegate-tests --bench ffi -- --quick   # short smoke run, e.g. in CI
//! tests/bench-instructions.sh --ffi                        # instructions per packet (callgrind)
//! ```
//!
//! # Method
//!
//! The packet tunnel's outbound path, driven the way a `readPacketObjects` / send host drives it:
//! push a batch of [`BATCH`] packets, hand every one out and copy it into a destination buffer,
//! then complete the batch. Three candidates, over the same configuration (AQM off, the ring
//! benchmark's sizes) and the same 64-byte-aligned host buffers:
//!
//! - **core**: `PacketTunnel` called directly from Rust: `on_outbound_batch`,
//!   `poll_outbound_batch` for every queued packet, `complete_outbound` (what the C batch calls
//!   run inside).
//! - **C ABI, batch**: the exported C functions, one call per batch each way:
//!   `tidegate_tunnel_on_outbound_batch` with an array of packet views,
//!   `tidegate_tunnel_poll_outbound` with room for the whole batch, then
//!   `tidegate_tunnel_complete_outbound`.
//! - **C ABI, per packet**: `tidegate_tunnel_on_outbound_packet` and
//!   `tidegate_tunnel_poll_outbound` with room for one view, once per packet.
//!
//! The C functions are called through their `extern "C"` symbols in the `tidegate-ffi` library
//! crate, compiled without link-time optimisation, so no call is inlined across the boundary:
//! each one pays what a C host linked against `libtidegate.a` pays (the NULL and poison checks,
//! the panic guard, converting time and arguments, writing the out-parameters).
//!
//! Runs are interleaved across candidates and timed on the thread's CPU clock, as in the ring
//! benchmark; the table shows the median ns/packet, and `C ABI cost` is the median over rounds of
//! each C candidate's run minus the core's run in the same round. Before timing, each candidate
//! must drain exactly the packets it pushed, in order, byte for byte, and every timed run must
//! drain every packet; otherwise the program exits non-zero. No figure is asserted.

use std::hint::black_box;
use std::process::ExitCode;
use std::ptr;
use std::time::Duration;

use cpu_time::ThreadTime;
use tidegate::{
    TidegatePacketView, TidegateStatus, TidegateTunnel, TidegateTunnelConfig,
    tidegate_tunnel_complete_outbound, tidegate_tunnel_free, tidegate_tunnel_new,
    tidegate_tunnel_on_outbound_batch, tidegate_tunnel_on_outbound_packet,
    tidegate_tunnel_poll_outbound,
};
use tidegate_core::{Aqm, FlowQueue, Instant, PacketTunnel, Slot, TunnelConfig, TunnelStorage};
use tidegate_tests::storage::AlignedBytes;

/// Packets pushed before the batch is drained.
const BATCH: usize = 32;
/// Packet sizes measured, in bytes.
const SIZES: [usize; 2] = [64, 1500];
/// Timed runs per candidate and size; the median is reported.
const RUNS: usize = 11;
/// Batches the correctness check pushes and drains.
const VERIFY_BATCHES: usize = 200;
/// Alignment of every host buffer: a cache line.
const HOST_ALIGN: usize = 64;

/// The tunnel every candidate runs: the ring benchmark's `tunnel, AQM off` configuration.
fn config() -> TunnelConfig {
    TunnelConfig {
        outbound_bytes: 64 * 1024,
        outbound_packets: 64,
        outbound_high_watermark_bytes: 60_000,
        outbound_low_watermark_bytes: 30_000,
        outbound_high_watermark_packets: 48,
        outbound_low_watermark_packets: 24,
        inbound_bytes: 2048,
        inbound_packets: 4,
        max_packet_len: 1500,
        aqm: Aqm::Off,
        ..TunnelConfig::DEFAULT
    }
}

/// One way of driving the outbound path.
trait Candidate {
    fn name(&self) -> &'static str;
    /// Push `packets`, drain them into `dst` (calling `seen` with each), complete them; returns
    /// the number drained.
    fn batch(
        &mut self,
        packets: &[AlignedBytes],
        dst: &mut [u8],
        seen: &mut dyn FnMut(&[u8]),
    ) -> usize;
}

/// A tunnel over boxed storage.
type BoxedTunnel = PacketTunnel<Box<[u8]>, Box<[Slot]>, Box<[FlowQueue]>>;

struct Core {
    tunnel: BoxedTunnel,
    now: Instant,
}

impl Core {
    /// The tunnel over boxed storage, as the ring benchmark builds it.
    fn new() -> Result<Core, String> {
        let config = config();
        let bytes = |len: u32| vec![0u8; len as usize].into_boxed_slice();
        let slots = |len: u32| vec![Slot::EMPTY; len as usize].into_boxed_slice();
        let storage = TunnelStorage {
            outbound_arena: bytes(config.outbound_bytes),
            outbound_slots: slots(config.outbound_packets),
            inbound_arena: bytes(config.inbound_bytes),
            inbound_slots: slots(config.inbound_packets),
            outbound_queues: Box::default(),
            inbound_queues: Box::default(),
        };
        let tunnel = PacketTunnel::new(config, storage).map_err(|e| format!("core tunnel: {e}"))?;
        Ok(Core {
            tunnel,
            now: Instant::from_micros(1),
        })
    }
}

impl Candidate for Core {
    fn name(&self) -> &'static str {
        "core"
    }

    fn batch(
        &mut self,
        packets: &[AlignedBytes],
        dst: &mut [u8],
        seen: &mut dyn FnMut(&[u8]),
    ) -> usize {
        let pushed = self
            .tunnel
            .on_outbound_batch(self.now, packets.iter().map(AlignedBytes::as_ref));
        if pushed.stopped_by.is_some() {
            return 0;
        }
        let mut copied = true;
        let drained = self
            .tunnel
            .poll_outbound_batch(self.now, usize::MAX, |packet| {
                match dst.get_mut(..packet.len()) {
                    Some(out) => {
                        out.copy_from_slice(packet);
                        seen(out);
                    }
                    None => copied = false,
                }
            });
        if !copied {
            return 0;
        }
        match self.tunnel.complete_outbound(self.now, drained) {
            Ok(_) => drained,
            Err(_) => 0,
        }
    }
}

/// A tunnel created and driven through the C ABI.
struct CAbi {
    tunnel: *mut TidegateTunnel,
    per_packet: bool,
    now_us: u64,
    views: Vec<TidegatePacketView>,
}

impl CAbi {
    fn new(per_packet: bool) -> Result<CAbi, String> {
        let config = TidegateTunnelConfig::from(config());
        let mut tunnel = ptr::null_mut();
        // SAFETY: `config` and `tunnel` are valid for reading and writing.
        let status = unsafe { tidegate_tunnel_new(&config, &mut tunnel) };
        if status != TidegateStatus::Ok {
            return Err(format!("tidegate_tunnel_new: {status:?}"));
        }
        let empty = TidegatePacketView {
            data: ptr::null(),
            len: 0,
        };
        Ok(CAbi {
            tunnel,
            per_packet,
            now_us: 1,
            views: vec![empty; BATCH],
        })
    }

    /// Copy each view into `dst` and pass it to `seen`.
    fn copy_out(views: &[TidegatePacketView], dst: &mut [u8], seen: &mut dyn FnMut(&[u8])) -> bool {
        for view in views {
            // SAFETY: the tunnel handed this view out and it is in flight, so its bytes stay
            // valid until the batch is completed below.
            let packet = unsafe { std::slice::from_raw_parts(view.data, view.len) };
            let Some(out) = dst.get_mut(..packet.len()) else {
                return false;
            };
            out.copy_from_slice(packet);
            seen(out);
        }
        true
    }
}

impl Drop for CAbi {
    fn drop(&mut self) {
        // SAFETY: `tunnel` came from `tidegate_tunnel_new` and is freed once, here.
        unsafe { tidegate_tunnel_free(self.tunnel) };
    }
}

impl Candidate for CAbi {
    fn name(&self) -> &'static str {
        if self.per_packet {
            "C ABI, per packet"
        } else {
            "C ABI, batch"
        }
    }

    fn batch(
        &mut self,
        packets: &[AlignedBytes],
        dst: &mut [u8],
        seen: &mut dyn FnMut(&[u8]),
    ) -> usize {
        let mut drained = 0;
        if self.per_packet {
            for packet in packets {
                let packet = packet.as_ref();
                // SAFETY: a live handle, and `packet` is valid for reading its length.
                let status = unsafe {
                    tidegate_tunnel_on_outbound_packet(
                        self.tunnel,
                        self.now_us,
                        packet.as_ptr(),
                        packet.len(),
                    )
                };
                if status != TidegateStatus::Ok {
                    return 0;
                }
            }
        } else {
            for (view, packet) in self.views.iter_mut().zip(packets) {
                let packet = packet.as_ref();
                *view = TidegatePacketView {
                    data: packet.as_ptr(),
                    len: packet.len(),
                };
            }
            let (mut accepted, mut stopped) = (0, TidegateStatus::Ok);
            // SAFETY: a live handle; `views` holds `packets.len()` views of live buffers; the
            // out-parameters are writable.
            let status = unsafe {
                tidegate_tunnel_on_outbound_batch(
                    self.tunnel,
                    self.now_us,
                    self.views.as_ptr(),
                    packets.len(),
                    &mut accepted,
                    &mut stopped,
                )
            };
            if status != TidegateStatus::Ok || accepted != packets.len() {
                return 0;
            }
        }
        // One view per poll call, or room for the whole batch.
        let capacity = if self.per_packet { 1 } else { self.views.len() };
        loop {
            let mut count = 0;
            // SAFETY: a live handle; `views` has room for `capacity <= views.len()` views;
            // `count` is writable.
            let status = unsafe {
                tidegate_tunnel_poll_outbound(
                    self.tunnel,
                    self.now_us,
                    self.views.as_mut_ptr(),
                    capacity,
                    &mut count,
                )
            };
            if status != TidegateStatus::Ok {
                return 0;
            }
            if count == 0 {
                break;
            }
            if !Self::copy_out(&self.views[..count], dst, seen) {
                return 0;
            }
            drained += count;
        }
        let mut resume = false;
        // SAFETY: a live handle; `resume` is writable.
        let status = unsafe {
            tidegate_tunnel_complete_outbound(self.tunnel, self.now_us, drained, &mut resume)
        };
        if status == TidegateStatus::Ok {
            drained
        } else {
            0
        }
    }
}

/// [`BATCH`] distinct packets of `size` bytes in 64-byte-aligned buffers; `set` varies them.
fn packets(size: usize, set: usize) -> Vec<AlignedBytes> {
    (0..BATCH)
        .map(|index| {
            let mut packet = AlignedBytes::zeroed(size, HOST_ALIGN);
            for (byte, value) in packet.as_mut().iter_mut().enumerate() {
                *value = (byte * 7 + index * 31 + set * 101 + 1) as u8;
            }
            packet
        })
        .collect()
}

/// Push and drain alternating sets; every packet must come back, in order, byte for byte.
fn verify(candidate: &mut dyn Candidate, sets: &[Vec<AlignedBytes>; 2]) -> Result<(), String> {
    let mut dst = AlignedBytes::zeroed(1500, HOST_ALIGN);
    for batch in 0..VERIFY_BATCHES {
        let set = &sets[batch % 2];
        let mut index = 0;
        let mut mismatch = None;
        let drained = candidate.batch(set, dst.as_mut(), &mut |packet| {
            if set.get(index).map(AlignedBytes::as_ref) != Some(packet) && mismatch.is_none() {
                mismatch = Some(index);
            }
            index += 1;
        });
        if drained != BATCH {
            return Err(format!("batch {batch}: drained {drained} of {BATCH}"));
        }
        if let Some(index) = mismatch {
            return Err(format!("batch {batch}: packet {index} differs"));
        }
    }
    Ok(())
}

/// Run `batches` batches; returns ns per packet, or `None` if a batch fell short.
fn timed(
    candidate: &mut dyn Candidate,
    packets: &[AlignedBytes],
    dst: &mut [u8],
    batches: u64,
) -> Option<f64> {
    let start = ThreadTime::now();
    let complete = run_batches(candidate, packets, dst, batches);
    let elapsed = start.elapsed();
    complete.then(|| elapsed.as_nanos() as f64 / (batches * BATCH as u64) as f64)
}

/// The measured loop: `batches` batches of `packets`; `false` if one did not drain whole. Not
/// inlined, so that `tests/bench-instructions.sh --ffi` can count the instructions inside it.
#[inline(never)]
fn run_batches(
    candidate: &mut dyn Candidate,
    packets: &[AlignedBytes],
    dst: &mut [u8],
    batches: u64,
) -> bool {
    for _ in 0..batches {
        let drained = candidate.batch(black_box(packets), dst, &mut |packet| {
            black_box(packet);
        });
        if drained != BATCH {
            return false;
        }
    }
    true
}

/// The three candidates, the core first (every C ABI cost is measured against it).
fn candidates() -> Result<Vec<Box<dyn Candidate>>, String> {
    Ok(vec![
        Box::new(Core::new()?),
        Box::new(CAbi::new(false)?),
        Box::new(CAbi::new(true)?),
    ])
}

/// Batches one `--instructions` run pushes and drains.
const COUNTED_BATCHES: u64 = 2_000;

/// `--instructions NAME SIZE`: check candidate `NAME`, then run [`COUNTED_BATCHES`] batches of
/// `SIZE`-byte packets through [`run_batches`] once and print the packet count, for callgrind.
fn count_instructions(name: &str, size: usize) -> ExitCode {
    let sets = [packets(size, 0), packets(size, 1)];
    let mut candidates = match candidates() {
        Ok(candidates) => candidates,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::FAILURE;
        }
    };
    let Some(candidate) = candidates.iter_mut().find(|c| c.name() == name) else {
        eprintln!("no candidate named {name:?}");
        return ExitCode::from(2);
    };
    if let Err(problem) = verify(candidate.as_mut(), &sets) {
        eprintln!("CORRECTNESS FAILURE: {name} at {size} bytes: {problem}");
        return ExitCode::FAILURE;
    }
    let mut dst = AlignedBytes::zeroed(1500, HOST_ALIGN);
    if !run_batches(candidate.as_mut(), &sets[0], dst.as_mut(), COUNTED_BATCHES) {
        eprintln!("CORRECTNESS FAILURE: {name} at {size} bytes: a batch did not drain whole");
        return ExitCode::FAILURE;
    }
    println!("packets {}", COUNTED_BATCHES * BATCH as u64);
    ExitCode::SUCCESS
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(at) = args.iter().position(|arg| arg == "--instructions") {
        let (Some(name), Some(Ok(size))) = (
            args.get(at + 1),
            args.get(at + 2).map(|size| size.parse::<usize>()),
        ) else {
            eprintln!("usage: ffi [--quick] | ffi --instructions NAME SIZE");
            return ExitCode::from(2);
        };
        return count_instructions(name, size);
    }
    let quick = args.iter().any(|arg| arg == "--quick");
    let (runs, run_length) = if quick {
        (3, Duration::from_millis(5))
    } else {
        (RUNS, Duration::from_millis(50))
    };
    println!(
        "tunnel outbound path per packet, core vs C ABI: batches of {BATCH}, {runs} runs of {} ms, \
         median of thread CPU time",
        run_length.as_millis()
    );
    println!();
    println!(
        "{:<18} {:>5} {:>10} {:>19} {:>12}",
        "candidate", "size", "ns/packet", "spread (min-max)", "C ABI cost"
    );
    let mut failures = Vec::new();
    for size in SIZES {
        let sets = [packets(size, 0), packets(size, 1)];
        let mut candidates = match candidates() {
            Ok(candidates) => candidates,
            Err(error) => {
                eprintln!("{error}");
                return ExitCode::FAILURE;
            }
        };
        for candidate in &mut candidates {
            if let Err(problem) = verify(candidate.as_mut(), &sets) {
                failures.push(format!("{} at {size} bytes: {problem}", candidate.name()));
            }
        }
        let mut dst = AlignedBytes::zeroed(1500, HOST_ALIGN);
        // Size a run from a warm-up of each candidate.
        let batches: Vec<u64> = candidates
            .iter_mut()
            .map(|candidate| {
                let probe = 2_000;
                let per_packet = timed(candidate.as_mut(), &sets[0], dst.as_mut(), probe);
                let per_batch = per_packet.unwrap_or(1.0).max(0.1) * BATCH as f64;
                ((run_length.as_nanos() as f64 / per_batch) as u64).max(1)
            })
            .collect();
        let mut samples = vec![Vec::new(); candidates.len()];
        for _ in 0..runs {
            for ((candidate, &batches), samples) in
                candidates.iter_mut().zip(&batches).zip(&mut samples)
            {
                match timed(candidate.as_mut(), &sets[0], dst.as_mut(), batches) {
                    Some(ns) => samples.push(ns),
                    None => failures.push(format!(
                        "{} at {size} bytes: a timed batch fell short",
                        candidate.name()
                    )),
                }
            }
        }
        let core_runs = samples.first().cloned().unwrap_or_default();
        for (candidate, runs) in candidates.iter().zip(&samples) {
            let cost = median(runs.iter().zip(&core_runs).map(|(c, r)| c - r).collect());
            let mut sorted = runs.clone();
            sorted.sort_by(f64::total_cmp);
            let spread = format!(
                "{:.1}-{:.1}",
                sorted.first().copied().unwrap_or(f64::NAN),
                sorted.last().copied().unwrap_or(f64::NAN)
            );
            println!(
                "{:<18} {:>5} {:>10.1} {:>19} {:>12}",
                candidate.name(),
                size,
                median(runs.clone()),
                spread,
                if candidate.name() == "core" {
                    "-".to_owned()
                } else {
                    format!("{cost:+.1} ns")
                }
            );
        }
    }
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        for failure in &failures {
            eprintln!("CORRECTNESS FAILURE: {failure}");
        }
        ExitCode::FAILURE
    }
}
