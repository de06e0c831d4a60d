//! The black box: a small, fixed-size, checksummed record of the engines' last figures, written
//! by the host now and then and read at the next start, so that a silent kill (jetsam, a
//! watchdog, a crash) can be told from a clean stop and diagnosed.
//!
//! A provider killed by the system gets no stop call and leaves no log line (netbirdio/ios-client
//! #219, getlantern/lantern #8971). The host writes a [`BlackBoxRecord`] every few seconds and
//! once more, with the clean-stop flag, when it completes a stop; at the next start it reads the
//! newest record back. A record without the flag is the last thing the killed process knew:
//! its pressure level and memory, ring levels and high-water marks, drops, pauses and flows, and
//! where the lifecycle stood.
//!
//! ## The file: two slots
//!
//! The file is two slots of [`BLACK_BOX_SLOT_LEN`] bytes ([`BLACK_BOX_LEN`] in all). Record
//! number `n` (its `sequence`) goes into slot `n % 2`, at the offset [`encode_black_box`]
//! returns, written in place (`pwrite`), never by truncating the file. A process killed in the
//! middle of a write leaves that slot torn, and the other slot still holds the record before it:
//! [`decode_black_box`] returns the newest slot that is intact.
//!
//! ## Slot format (version 1, little-endian)
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 4 | magic `TGBB` ([`BLACK_BOX_MAGIC`]) |
//! | 4 | 1 | version, 1 ([`BLACK_BOX_VERSION`]) |
//! | 5 | 1 | flags: bit 0 is the clean stop; the other bits are 0 |
//! | 6 | 2 | number of figures, [`BLACK_BOX_FIGURES`] |
//! | 8 | 8 | sequence, from 1 |
//! | 16 | 8 | when it was written, in microseconds of the host's clock |
//! | 24 | 8 x figures | the figures, in the order of [`BlackBoxRecord`]'s fields |
//! | end - 4 | 4 | CRC-32C of every byte before it |
//!
//! Every field is checked: the magic, the version, the flags' unused bits, the figure count,
//! a sequence of at least 1, and the CRC over the rest, which detects every single-bit error and
//! every burst of up to 32 bits. A slot is accepted only if all hold.
//!
//! ## No user data
//!
//! The record holds counters, levels and states only: no address, host name, path fingerprint,
//! flow key or payload. It can sit in a file that is readable while the device is locked.
//!
//! ## A host's writer
//!
//! ```
//! use tidegate_core::{
//!     BLACK_BOX_LEN, BLACK_BOX_SLOT_LEN, BlackBoxRecord, Instant, Lifecycle, LifecycleConfig,
//!     TaskSlot, decode_black_box, encode_black_box,
//! };
//!
//! // The file as the last launch left it (here: never written), and what it says.
//! let mut file = [0u8; BLACK_BOX_LEN];
//! let last = decode_black_box(&file);
//! assert!(last.is_none(), "a new file");
//! let mut sequence = BlackBoxRecord::next(last.as_ref());
//!
//! let mut lifecycle = Lifecycle::new(LifecycleConfig::DEFAULT, [TaskSlot::EMPTY; 4]).unwrap();
//! lifecycle.on_start(Instant::ZERO, None).unwrap();
//!
//! // Every few seconds: capture, encode, write the slot in place.
//! let mut write = |now: u64, clean_stop: bool, lifecycle: &Lifecycle<[TaskSlot; 4]>| {
//!     let mut record = BlackBoxRecord::new(sequence, now, clean_stop);
//!     record.capture_lifecycle(lifecycle);
//!     let mut slot = [0u8; BLACK_BOX_SLOT_LEN];
//!     let offset = encode_black_box(&record, &mut slot).unwrap();
//!     file[offset..offset + BLACK_BOX_SLOT_LEN].copy_from_slice(&slot); // pwrite in a host
//!     sequence += 1;
//! };
//! write(2_000_000, false, &lifecycle);
//! write(4_000_000, false, &lifecycle);
//!
//! // A process killed now leaves record 2, without the clean-stop flag: the next launch knows.
//! let found = decode_black_box(&file).unwrap();
//! assert_eq!((found.sequence, found.clean_stop, found.lifecycle_state), (2, false, 1));
//! ```

use core::fmt;

use crate::journal::crc32c;
use crate::lifecycle::{Lifecycle, LifecycleState, StopPhase, TaskSlot};
use crate::memory::{MemoryGovernor, Pressure};
use crate::proxy::ProxyStats;
use crate::tunnel::TunnelStats;

/// The four bytes every black box slot starts with.
pub const BLACK_BOX_MAGIC: [u8; 4] = *b"TGBB";

/// The slot format version this build writes and the only one it reads.
pub const BLACK_BOX_VERSION: u8 = 1;

/// The number of figures a version 1 record holds.
pub const BLACK_BOX_FIGURES: usize = 28;

const HEADER_LEN: usize = 24;
const CRC_LEN: usize = 4;
const CLEAN_STOP: u8 = 1;

/// Bytes of one slot.
pub const BLACK_BOX_SLOT_LEN: usize = HEADER_LEN + 8 * BLACK_BOX_FIGURES + CRC_LEN;

/// Bytes of the whole black box file: two slots.
pub const BLACK_BOX_LEN: usize = 2 * BLACK_BOX_SLOT_LEN;

/// The last figures of every engine, as the host captured them. Figures of an engine the host
/// does not run stay 0. Build one with [`BlackBoxRecord::new`] and the `capture_*` methods.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BlackBoxRecord {
    /// The record's number: 1 for the first record of the file, then one more for each record
    /// written ([`BlackBoxRecord::next`]).
    pub sequence: u64,
    /// When the record was written, in microseconds of the host's clock.
    pub written_at_micros: u64,
    /// Written when the stop completed: the process ended cleanly after it. A newest record
    /// without it means the process was killed, or crashed, while running.
    pub clean_stop: bool,

    /// The lifecycle's session generation.
    pub generation: u64,
    /// The lifecycle's state, numbered as in C: 0 idle, 1 starting, 2 running, 3 to 6 stopping
    /// (tearing down, housekeeping, persisting the journal, completing), 7 stopped,
    /// 8 reasserting.
    pub lifecycle_state: u64,
    /// Stops and cancels completed.
    pub stops_completed: u64,
    /// Starts cancelled at their deadline.
    pub start_timeouts: u64,
    /// Stops that went on past a teardown never reported.
    pub teardown_timeouts: u64,
    /// Path changes while the tunnel was up.
    pub path_changes: u64,
    /// Restart attempts announced.
    pub restarts_run: u64,
    /// Restart attempts that failed.
    pub restarts_failed: u64,
    /// Sessions cancelled because every restart failed.
    pub restarts_exhausted: u64,

    /// The memory pressure level: 0 normal, 1 elevated, 2 critical.
    pub pressure: u64,
    /// The memory governor's projected use, in bytes.
    pub memory_projected_bytes: u64,
    /// The largest projected use seen, in bytes.
    pub memory_peak_bytes: u64,
    /// Reservations refused.
    pub reservations_refused: u64,
    /// Times the critical level was entered.
    pub critical_entries: u64,

    /// Bytes waiting in the outbound ring.
    pub outbound_bytes_queued: u64,
    /// The outbound ring's high-water mark, in bytes.
    pub outbound_bytes_high_water: u64,
    /// Bytes waiting in the inbound ring.
    pub inbound_bytes_queued: u64,
    /// The inbound ring's high-water mark, in bytes.
    pub inbound_bytes_high_water: u64,
    /// Outbound packets dropped (by the AQM, or from the fattest queue on overflow).
    pub outbound_dropped_packets: u64,
    /// Inbound packets dropped (by the AQM, on overflow, or by the drop policy).
    pub inbound_dropped_packets: u64,
    /// Outbound packets refused because the ring had no room.
    pub outbound_refused_packets: u64,
    /// Times outbound reading paused.
    pub outbound_pauses: u64,

    /// Flows open in the proxy.
    pub flows_open: u64,
    /// Flows admitted.
    pub flows_admitted: u64,
    /// Flows refused, for every reason.
    pub flows_rejected: u64,
    /// Flows evicted to make room.
    pub flows_evicted: u64,
    /// Flows whose reads are paused.
    pub flows_paused: u64,
    /// Flows closed by memory pressure.
    pub pressure_closes: u64,
}

/// Why a record could not be encoded. Nothing was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum BlackBoxEncodeError {
    /// The buffer is smaller than one slot; `required` bytes are needed.
    BufferTooSmall {
        /// [`BLACK_BOX_SLOT_LEN`].
        required: usize,
    },
    /// The record's sequence is 0: records are numbered from 1, so a reader can tell a slot
    /// never written from one written.
    ZeroSequence,
}

impl fmt::Display for BlackBoxEncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlackBoxEncodeError::BufferTooSmall { required } => {
                write!(
                    f,
                    "buffer too small for a black box slot: {required} bytes required"
                )
            }
            BlackBoxEncodeError::ZeroSequence => f.write_str("black box sequence is 0"),
        }
    }
}

impl BlackBoxRecord {
    /// A record with every figure 0, numbered `sequence`, written at `written_at_micros`.
    pub const fn new(sequence: u64, written_at_micros: u64, clean_stop: bool) -> Self {
        BlackBoxRecord {
            sequence,
            written_at_micros,
            clean_stop,
            generation: 0,
            lifecycle_state: 0,
            stops_completed: 0,
            start_timeouts: 0,
            teardown_timeouts: 0,
            path_changes: 0,
            restarts_run: 0,
            restarts_failed: 0,
            restarts_exhausted: 0,
            pressure: 0,
            memory_projected_bytes: 0,
            memory_peak_bytes: 0,
            reservations_refused: 0,
            critical_entries: 0,
            outbound_bytes_queued: 0,
            outbound_bytes_high_water: 0,
            inbound_bytes_queued: 0,
            inbound_bytes_high_water: 0,
            outbound_dropped_packets: 0,
            inbound_dropped_packets: 0,
            outbound_refused_packets: 0,
            outbound_pauses: 0,
            flows_open: 0,
            flows_admitted: 0,
            flows_rejected: 0,
            flows_evicted: 0,
            flows_paused: 0,
            pressure_closes: 0,
        }
    }

    /// The sequence the record after `previous` gets: 1 when there is none (a new or unreadable
    /// file), otherwise one more.
    pub fn next(previous: Option<&BlackBoxRecord>) -> u64 {
        previous.map_or(1, |record| record.sequence.saturating_add(1))
    }

    /// Take the lifecycle's figures.
    pub fn capture_lifecycle<S>(&mut self, lifecycle: &Lifecycle<S>)
    where
        S: AsRef<[TaskSlot]> + AsMut<[TaskSlot]>,
    {
        let stats = lifecycle.stats();
        self.generation = lifecycle.generation().0;
        self.lifecycle_state = state_number(lifecycle.state());
        self.stops_completed = stats.stops_completed;
        self.start_timeouts = stats.start_timeouts;
        self.teardown_timeouts = stats.teardown_timeouts;
        self.path_changes = stats.path_changes;
        self.restarts_run = stats.restarts_run;
        self.restarts_failed = stats.restarts_failed;
        self.restarts_exhausted = stats.restarts_exhausted;
    }

    /// Take the memory governor's figures.
    pub fn capture_memory<S>(&mut self, memory: &MemoryGovernor<S>)
    where
        S: AsRef<[crate::memory::ReservationSlot]> + AsMut<[crate::memory::ReservationSlot]>,
    {
        let stats = memory.stats();
        self.pressure = match stats.pressure {
            Pressure::Normal => 0,
            Pressure::Elevated => 1,
            Pressure::Critical => 2,
        };
        self.memory_projected_bytes = stats.projected_bytes;
        self.memory_peak_bytes = stats.peak_projected_bytes;
        self.reservations_refused = stats.reservations_refused;
        self.critical_entries = stats.critical_entries;
    }

    /// Take the packet tunnel's figures, from [`PacketTunnel::stats`](crate::PacketTunnel::stats).
    pub fn capture_tunnel(&mut self, stats: &TunnelStats) {
        let (outbound, inbound) = (&stats.outbound, &stats.inbound);
        self.outbound_bytes_queued = outbound.bytes_queued;
        self.outbound_bytes_high_water = outbound.bytes_high_water;
        self.inbound_bytes_queued = inbound.bytes_queued;
        self.inbound_bytes_high_water = inbound.bytes_high_water;
        self.outbound_dropped_packets = outbound
            .aqm_dropped_packets
            .saturating_add(outbound.overflow_dropped_packets);
        self.inbound_dropped_packets = inbound
            .aqm_dropped_packets
            .saturating_add(inbound.overflow_dropped_packets)
            .saturating_add(stats.inbound_dropped_newest_packets)
            .saturating_add(stats.inbound_dropped_oldest_packets);
        self.outbound_refused_packets = stats.outbound_refused_packets;
        self.outbound_pauses = stats.outbound_pauses;
    }

    /// Take the proxy engine's figures, from [`ProxyEngine::stats`](crate::ProxyEngine::stats).
    pub fn capture_proxy(&mut self, stats: &ProxyStats) {
        let flows = &stats.flows;
        self.flows_open = u64::from(flows.flows.open());
        self.flows_admitted = flows.admitted;
        self.flows_rejected = flows.rejected.total();
        self.flows_evicted = flows.evicted;
        self.flows_paused = u64::from(flows.flows_paused);
        self.pressure_closes = flows.pressure_closes;
    }
}

/// The figures of a record, in their slot order: one list defines both directions, so the
/// encoder and the decoder cannot disagree on the order.
macro_rules! slot_order {
    ($($field:ident),* $(,)?) => {
        impl BlackBoxRecord {
            /// The figures in their slot order.
            fn figures(&self) -> [u64; BLACK_BOX_FIGURES] {
                [$(self.$field),*]
            }

            /// A record from its header fields and its figures in slot order.
            fn from_figures(
                sequence: u64,
                written_at_micros: u64,
                clean_stop: bool,
                figures: [u64; BLACK_BOX_FIGURES],
            ) -> Self {
                let [$($field),*] = figures;
                BlackBoxRecord {
                    sequence,
                    written_at_micros,
                    clean_stop,
                    $($field),*
                }
            }
        }
    };
}

slot_order!(
    generation,
    lifecycle_state,
    stops_completed,
    start_timeouts,
    teardown_timeouts,
    path_changes,
    restarts_run,
    restarts_failed,
    restarts_exhausted,
    pressure,
    memory_projected_bytes,
    memory_peak_bytes,
    reservations_refused,
    critical_entries,
    outbound_bytes_queued,
    outbound_bytes_high_water,
    inbound_bytes_queued,
    inbound_bytes_high_water,
    outbound_dropped_packets,
    inbound_dropped_packets,
    outbound_refused_packets,
    outbound_pauses,
    flows_open,
    flows_admitted,
    flows_rejected,
    flows_evicted,
    flows_paused,
    pressure_closes,
);

/// The lifecycle state as the C ABI numbers it.
fn state_number(state: LifecycleState) -> u64 {
    match state {
        LifecycleState::Idle => 0,
        LifecycleState::Starting => 1,
        LifecycleState::Running => 2,
        LifecycleState::Stopping(StopPhase::TearingDown) => 3,
        LifecycleState::Stopping(StopPhase::Housekeeping) => 4,
        LifecycleState::Stopping(StopPhase::PersistingJournal) => 5,
        LifecycleState::Stopping(StopPhase::Completing) => 6,
        LifecycleState::Stopped => 7,
        LifecycleState::Reasserting => 8,
    }
}

/// Encode `record` as one slot into the front of `out` and return the offset in the file at
/// which the host writes those [`BLACK_BOX_SLOT_LEN`] bytes: slot `record.sequence % 2`. On error
/// nothing is written.
pub fn encode_black_box(
    record: &BlackBoxRecord,
    out: &mut [u8],
) -> Result<usize, BlackBoxEncodeError> {
    if record.sequence == 0 {
        return Err(BlackBoxEncodeError::ZeroSequence);
    }
    let Some(slot) = out.get_mut(..BLACK_BOX_SLOT_LEN) else {
        return Err(BlackBoxEncodeError::BufferTooSmall {
            required: BLACK_BOX_SLOT_LEN,
        });
    };
    let mut at = 0;
    let mut put = |bytes: &[u8]| {
        if let Some(target) = slot.get_mut(at..at + bytes.len()) {
            target.copy_from_slice(bytes);
        }
        at += bytes.len();
    };
    put(&BLACK_BOX_MAGIC);
    put(&[
        BLACK_BOX_VERSION,
        if record.clean_stop { CLEAN_STOP } else { 0 },
    ]);
    put(&(BLACK_BOX_FIGURES as u16).to_le_bytes());
    put(&record.sequence.to_le_bytes());
    put(&record.written_at_micros.to_le_bytes());
    for figure in record.figures() {
        put(&figure.to_le_bytes());
    }
    debug_assert_eq!(at, BLACK_BOX_SLOT_LEN - CRC_LEN);
    if let Some((body, crc)) = slot.split_last_chunk_mut::<CRC_LEN>() {
        *crc = crc32c(body).to_le_bytes();
    }
    // Slot `sequence % 2`: odd sequences in the second slot, even ones in the first.
    let index = usize::from(record.sequence % 2 == 1);
    Ok(index * BLACK_BOX_SLOT_LEN)
}

/// Decode one slot; `None` unless every check holds.
fn decode_slot(slot: &[u8]) -> Option<BlackBoxRecord> {
    if slot.len() != BLACK_BOX_SLOT_LEN {
        return None;
    }
    let (body, crc) = slot.split_last_chunk::<CRC_LEN>()?;
    if crc32c(body).to_le_bytes() != *crc {
        return None;
    }
    let u64_at = |at: usize| -> u64 {
        let mut bytes = [0u8; 8];
        if let Some(source) = body.get(at..at + 8) {
            bytes.copy_from_slice(source);
        }
        u64::from_le_bytes(bytes)
    };
    let magic = body.get(..4)?;
    let version = *body.get(4)?;
    let flags = *body.get(5)?;
    let figures = u16::from_le_bytes([*body.get(6)?, *body.get(7)?]);
    if magic != BLACK_BOX_MAGIC
        || version != BLACK_BOX_VERSION
        || flags & !CLEAN_STOP != 0
        || usize::from(figures) != BLACK_BOX_FIGURES
    {
        return None;
    }
    let sequence = u64_at(8);
    if sequence == 0 {
        return None;
    }
    let mut values = [0u64; BLACK_BOX_FIGURES];
    for (index, value) in values.iter_mut().enumerate() {
        *value = u64_at(HEADER_LEN + 8 * index);
    }
    Some(BlackBoxRecord::from_figures(
        sequence,
        u64_at(16),
        flags & CLEAN_STOP != 0,
        values,
    ))
}

/// The newest intact record of a black box file (the bytes of both slots, or as much of the
/// file as exists): `None` when neither slot holds one (no file yet, a file of another format,
/// or both slots damaged). A slot torn by a kill during its write is skipped, so the record
/// before it is returned.
pub fn decode_black_box(file: &[u8]) -> Option<BlackBoxRecord> {
    let first = file.get(..BLACK_BOX_SLOT_LEN).and_then(decode_slot);
    let second = file
        .get(BLACK_BOX_SLOT_LEN..BLACK_BOX_LEN)
        .and_then(decode_slot);
    match (first, second) {
        (Some(a), Some(b)) => Some(if b.sequence > a.sequence { b } else { a }),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(sequence: u64) -> BlackBoxRecord {
        let mut record = BlackBoxRecord::new(sequence, 1_000 * sequence, false);
        record.generation = 7;
        record.pressure = 2;
        record.memory_peak_bytes = 48 << 20;
        record.flows_open = 300;
        record.pressure_closes = 12;
        record
    }

    fn write(file: &mut [u8; BLACK_BOX_LEN], record: &BlackBoxRecord) {
        let mut slot = [0u8; BLACK_BOX_SLOT_LEN];
        let offset = encode_black_box(record, &mut slot).unwrap();
        file[offset..offset + BLACK_BOX_SLOT_LEN].copy_from_slice(&slot);
    }

    #[test]
    fn a_record_round_trips_and_the_newest_slot_wins() {
        let mut file = [0u8; BLACK_BOX_LEN];
        assert_eq!(decode_black_box(&file), None, "a new file holds nothing");
        for sequence in 1..=5 {
            let written = record(sequence);
            write(&mut file, &written);
            assert_eq!(decode_black_box(&file), Some(written));
        }
        let mut last = record(6);
        last.clean_stop = true;
        write(&mut file, &last);
        assert_eq!(decode_black_box(&file).map(|r| r.clean_stop), Some(true));
        assert_eq!(BlackBoxRecord::next(decode_black_box(&file).as_ref()), 7);
        assert_eq!(BlackBoxRecord::next(None), 1);
    }

    /// Every single-bit flip anywhere in the newest slot is detected, and the record before it
    /// is read instead.
    #[test]
    fn every_single_bit_flip_is_detected() {
        let mut file = [0u8; BLACK_BOX_LEN];
        write(&mut file, &record(1));
        write(&mut file, &record(2));
        let offset = 0; // sequence 2 is in slot 0
        for bit in 0..BLACK_BOX_SLOT_LEN * 8 {
            let mut flipped = file;
            flipped[offset + bit / 8] ^= 1 << (bit % 8);
            assert_eq!(
                decode_black_box(&flipped),
                Some(record(1)),
                "bit {bit} of the newest slot"
            );
        }
    }

    /// A kill during the write of record 3 leaves its slot torn at any length: record 2 is read.
    #[test]
    fn a_torn_write_keeps_the_record_before_it() {
        let mut file = [0u8; BLACK_BOX_LEN];
        write(&mut file, &record(1));
        write(&mut file, &record(2));
        let mut slot = [0u8; BLACK_BOX_SLOT_LEN];
        let offset = encode_black_box(&record(3), &mut slot).unwrap();
        for written in 0..BLACK_BOX_SLOT_LEN {
            let mut torn = file;
            torn[offset..offset + written].copy_from_slice(&slot[..written]);
            assert_eq!(
                decode_black_box(&torn),
                Some(record(2)),
                "torn at {written}"
            );
        }
    }

    #[test]
    fn refusals_write_nothing() {
        let mut small = [0xa5u8; BLACK_BOX_SLOT_LEN - 1];
        assert_eq!(
            encode_black_box(&record(1), &mut small),
            Err(BlackBoxEncodeError::BufferTooSmall {
                required: BLACK_BOX_SLOT_LEN
            })
        );
        assert!(small.iter().all(|&b| b == 0xa5));
        let mut slot = [0xa5u8; BLACK_BOX_SLOT_LEN];
        assert_eq!(
            encode_black_box(&record(0), &mut slot),
            Err(BlackBoxEncodeError::ZeroSequence)
        );
        assert!(slot.iter().all(|&b| b == 0xa5));
        // Short files and files of another format hold nothing.
        assert_eq!(decode_black_box(&[]), None);
        assert_eq!(decode_black_box(&[0xffu8; BLACK_BOX_LEN]), None);
    }

    /// Slots with a correct CRC but a header this build does not write are refused, each
    /// check on its own: another magic, a later version, unknown flags, another figure count,
    /// sequence 0.
    #[test]
    fn forged_headers_with_a_valid_crc_are_refused() {
        let forge = |at: usize, bytes: &[u8]| {
            let mut slot = [0u8; BLACK_BOX_SLOT_LEN];
            encode_black_box(&record(1), &mut slot).unwrap();
            slot[at..at + bytes.len()].copy_from_slice(bytes);
            let (body, crc) = slot.split_last_chunk_mut::<CRC_LEN>().unwrap();
            *crc = crc32c(body).to_le_bytes();
            slot
        };
        assert_eq!(
            decode_slot(&forge(0, b"TGBB")),
            Some(record(1)),
            "the forge itself"
        );
        for (at, bytes) in [
            (0, &b"TGJL"[..]),
            (4, &[2][..]),
            (5, &[2][..]),
            (6, &[27, 0][..]),
            (8, &[0; 8][..]),
        ] {
            assert_eq!(decode_slot(&forge(at, bytes)), None, "{at}: {bytes:?}");
        }
    }

    #[test]
    fn the_slot_layout_is_fixed() {
        assert_eq!(BLACK_BOX_SLOT_LEN, 252);
        let mut slot = [0u8; BLACK_BOX_SLOT_LEN];
        let mut written = record(3);
        written.clean_stop = true;
        assert_eq!(
            encode_black_box(&written, &mut slot),
            Ok(BLACK_BOX_SLOT_LEN)
        );
        assert_eq!(&slot[..4], b"TGBB");
        assert_eq!(slot[4..8], [1, 1, BLACK_BOX_FIGURES as u8, 0]);
        assert_eq!(slot[8..16], 3u64.to_le_bytes());
        assert_eq!(slot[16..24], 3_000u64.to_le_bytes());
        assert_eq!(
            slot[24..32],
            7u64.to_le_bytes(),
            "the generation is the first figure"
        );
    }
}
