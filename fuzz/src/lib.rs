//! Helpers shared by the fuzz targets in `fuzz_targets/`.
//!
//! Every target decodes its input with `arbitrary` into a small configuration and a bounded
//! sequence of operations, runs them against an engine (or the C ABI) and checks invariants
//! after each step: a target fails on a wrong answer, not only on a crash.

use arbitrary::Arbitrary;
use tidegate_core::{Aqm, ByteQueueLimit, DropPolicy, TunnelConfig};

/// The most operations a target runs per input, so one input stays fast.
pub const MAX_OPS: usize = 512;

/// A host clock that may jump forward or run backwards, as a buggy host's clock might.
#[derive(Clone, Copy, Debug, Arbitrary)]
pub enum Tick {
    /// Time stands still.
    Same,
    /// Time moves forward by this many microseconds.
    Forward(u16),
    /// Time moves forward by this many milliseconds (timers fire).
    ForwardMillis(u16),
    /// The host's clock runs backwards by this many microseconds (the engines clamp it).
    Backward(u16),
}

/// The host's view of time: the `now` it passes, and the latest value it ever passed.
#[derive(Clone, Copy, Debug, Default)]
pub struct HostClock {
    /// What the host passes as `now` next.
    pub now: u64,
    /// The largest `now` passed so far: what the engine's clamped clock reads.
    pub latest: u64,
    /// The smallest `now` passed so far.
    pub earliest: u64,
}

impl HostClock {
    /// A clock starting at `start` microseconds.
    pub fn new(start: u64) -> Self {
        HostClock {
            now: start,
            latest: start,
            earliest: start,
        }
    }

    /// Apply `tick` and return the new `now`.
    pub fn tick(&mut self, tick: Tick) -> u64 {
        self.now = match tick {
            Tick::Same => self.now,
            Tick::Forward(us) => self.now.saturating_add(u64::from(us)),
            Tick::ForwardMillis(ms) => self.now.saturating_add(u64::from(ms) * 1_000),
            Tick::Backward(us) => self.now.saturating_sub(u64::from(us)),
        };
        self.latest = self.latest.max(self.now);
        self.earliest = self.earliest.min(self.now);
        self.now
    }

    /// The longest span any engine can have measured: from the earliest `now` to the latest.
    pub fn span(&self) -> u64 {
        self.latest - self.earliest
    }
}

/// A packet of `len` bytes whose content identifies it: a 4-byte sequence number, repeated.
pub fn stamped_packet(seq: u32, len: usize) -> Vec<u8> {
    seq.to_le_bytes()
        .iter()
        .copied()
        .cycle()
        .take(len)
        .collect()
}

/// A FIFO tunnel configuration (AQM off or CoDel, either drop policy, any alignment, with or
/// without a byte queue limit), valid by construction.
#[derive(Debug, Arbitrary)]
pub struct FifoSetup {
    pub max_packet_len: u8,
    pub high_bytes: u16,
    pub low_bytes: u16,
    pub extra_outbound_bytes: u16,
    pub high_packets: u8,
    pub low_packets: u8,
    pub extra_outbound_packets: u8,
    pub inbound_bytes: u16,
    pub inbound_packets: u8,
    pub drop_oldest: bool,
    pub codel: Option<(u16, u16)>,
    pub align_log2: u8,
    pub queue_limit: Option<(u16, u16, u16)>,
}

impl FifoSetup {
    /// The configuration this setup describes.
    pub fn config(&self) -> TunnelConfig {
        let setup = self;
        let max_packet_len = u32::from(setup.max_packet_len) + 1;
        let high_bytes = u32::from(setup.high_bytes % 4096) + 1;
        let high_packets = u32::from(setup.high_packets % 40) + 1;
        let aqm = match setup.codel {
            None => Aqm::Off,
            Some((target, interval)) => {
                let target = u32::from(target % 20_000) + 1;
                Aqm::Codel {
                    target_micros: target,
                    interval_micros: target + 1 + u32::from(interval) * 4,
                }
            }
        };
        TunnelConfig {
            outbound_bytes: high_bytes
                + 2 * max_packet_len
                + u32::from(setup.extra_outbound_bytes % 1024),
            outbound_packets: high_packets + 1 + u32::from(setup.extra_outbound_packets % 8),
            inbound_bytes: max_packet_len + u32::from(setup.inbound_bytes % 4096),
            inbound_packets: u32::from(setup.inbound_packets % 48) + 1,
            max_packet_len,
            outbound_high_watermark_bytes: high_bytes,
            outbound_low_watermark_bytes: u32::from(setup.low_bytes) % high_bytes,
            outbound_high_watermark_packets: high_packets,
            outbound_low_watermark_packets: u32::from(setup.low_packets) % high_packets,
            inbound_drop_policy: if setup.drop_oldest {
                DropPolicy::DropOldest
            } else {
                DropPolicy::DropNewest
            },
            aqm,
            packet_align: 1 << (setup.align_log2 % 8),
            byte_queue_limit: match setup.queue_limit {
                None => ByteQueueLimit::Off,
                Some((min, extra, hold)) => {
                    let min_bytes = max_packet_len + u32::from(min % 2048);
                    ByteQueueLimit::Auto {
                        min_bytes,
                        max_bytes: min_bytes + u32::from(extra % 8192),
                        hold_micros: u32::from(hold) + 1,
                    }
                }
            },
        }
    }
}

/// A flow-queue tunnel configuration, valid by construction.
#[derive(Debug, Arbitrary)]
pub struct FqSetup {
    pub max_packet_len: u8,
    pub outbound_cells: u8,
    pub inbound_cells: u8,
    pub queues: u8,
    pub quantum: u16,
    pub seed: [u8; 16],
    pub codel: (u16, u16),
    pub align_log2: u8,
}

impl FqSetup {
    /// The configuration this setup describes.
    pub fn config(&self) -> TunnelConfig {
        let setup = self;
        let target = u32::from(setup.codel.0 % 20_000) + 1;
        let mut config = TunnelConfig {
            max_packet_len: 32 + u32::from(setup.max_packet_len),
            packet_align: 1 << (setup.align_log2 % 8),
            aqm: Aqm::FqCodel {
                target_micros: target,
                interval_micros: target + 1 + u32::from(setup.codel.1),
                flow_queues: 1 + u32::from(setup.queues % 32),
                quantum_bytes: 256 + u32::from(setup.quantum % 3000),
                hash_seed: setup.seed,
            },
            ..TunnelConfig::DEFAULT
        };
        let cell = config.cell_bytes();
        config.outbound_packets = 1 + u32::from(setup.outbound_cells % 24);
        config.inbound_packets = 1 + u32::from(setup.inbound_cells % 24);
        config.outbound_bytes = config.outbound_packets * cell;
        config.inbound_bytes = config.inbound_packets * cell;
        config
    }
}

/// A zeroed byte arena that starts on a 4 KiB boundary (the largest packet alignment), so two
/// rings given the same packets lay them out the same way: a ring aligns addresses, not offsets.
pub struct PageAlignedArena {
    bytes: Vec<u8>,
    start: usize,
    len: usize,
}

impl PageAlignedArena {
    /// An arena of `len` bytes.
    pub fn new(len: usize) -> Self {
        let page = tidegate_core::MAX_PACKET_ALIGN;
        let bytes = vec![0u8; len + page];
        let start = bytes.as_ptr().align_offset(page);
        PageAlignedArena { bytes, start, len }
    }
}

impl AsRef<[u8]> for PageAlignedArena {
    fn as_ref(&self) -> &[u8] {
        &self.bytes[self.start..self.start + self.len]
    }
}

impl AsMut<[u8]> for PageAlignedArena {
    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.bytes[self.start..self.start + self.len]
    }
}
