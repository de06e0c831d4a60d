//! C ABI of the black box: `TidegateBlackBoxRecord`, its encoding into a slot and its decoding
//! from the file. The `tidegate_black_box_capture_*` functions live beside their engines.

use tidegate_core::{
    BLACK_BOX_LEN, BLACK_BOX_SLOT_LEN, BlackBoxEncodeError, BlackBoxRecord, decode_black_box,
    encode_black_box,
};

use crate::boundary::{bytes, call_free, require_non_null, slice_len_fits, write_out};
use crate::status::TidegateStatus;

/// Bytes of one black box slot: what `tidegate_black_box_encode` writes.
pub const TIDEGATE_BLACK_BOX_SLOT_LEN: usize = 252;

/// Bytes of the black box file: two slots.
pub const TIDEGATE_BLACK_BOX_LEN: usize = 504;

/// `flags` bit of a `TidegateBlackBoxRecord`: the record was written when the stop completed.
pub const TIDEGATE_BLACK_BOX_CLEAN_STOP: u32 = 1;

const _: () = assert!(TIDEGATE_BLACK_BOX_SLOT_LEN == BLACK_BOX_SLOT_LEN);
const _: () = assert!(TIDEGATE_BLACK_BOX_LEN == BLACK_BOX_LEN);

/// The last figures of every engine, for the black box file: counters, levels and states only,
/// never an address, a name or a path fingerprint.
///
/// The host zeroes one, sets `sequence` (the last record's plus 1; 1 for a new file),
/// `written_at_us` and `flags`, fills it with `tidegate_black_box_capture_*` for each engine it
/// runs (figures of the others stay 0), and writes it with `tidegate_black_box_encode` every few
/// seconds and once more with `TIDEGATE_BLACK_BOX_CLEAN_STOP` when the stop completes. At the
/// next start `tidegate_black_box_decode` reads the newest record back: without the clean-stop
/// flag, the process was killed or crashed while running, and the figures are what it last knew.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TidegateBlackBoxRecord {
    /// The record's number, from 1: it goes into slot `sequence % 2` of the file.
    pub sequence: u64,
    /// When the record was written, in microseconds of the host's clock.
    pub written_at_us: u64,
    /// `TIDEGATE_BLACK_BOX_CLEAN_STOP` or 0; other bits are refused.
    pub flags: u32,
    /// Must be 0.
    pub reserved: u32,
    /// The lifecycle's session generation.
    pub generation: u64,
    /// The lifecycle's state, a `TIDEGATE_LIFECYCLE_STATE_*` value.
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
    /// The memory pressure level, a `TIDEGATE_PRESSURE_*` value.
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

impl TidegateBlackBoxRecord {
    /// The core record, or `INVALID_ARGUMENT` for unknown flags or a reserved field not 0.
    fn core_record(&self) -> Result<BlackBoxRecord, TidegateStatus> {
        if self.flags & !TIDEGATE_BLACK_BOX_CLEAN_STOP != 0 || self.reserved != 0 {
            return Err(TidegateStatus::InvalidArgument);
        }
        let mut r = BlackBoxRecord::new(
            self.sequence,
            self.written_at_us,
            self.flags & TIDEGATE_BLACK_BOX_CLEAN_STOP != 0,
        );
        r.generation = self.generation;
        r.lifecycle_state = self.lifecycle_state;
        r.stops_completed = self.stops_completed;
        r.start_timeouts = self.start_timeouts;
        r.teardown_timeouts = self.teardown_timeouts;
        r.path_changes = self.path_changes;
        r.restarts_run = self.restarts_run;
        r.restarts_failed = self.restarts_failed;
        r.restarts_exhausted = self.restarts_exhausted;
        r.pressure = self.pressure;
        r.memory_projected_bytes = self.memory_projected_bytes;
        r.memory_peak_bytes = self.memory_peak_bytes;
        r.reservations_refused = self.reservations_refused;
        r.critical_entries = self.critical_entries;
        r.outbound_bytes_queued = self.outbound_bytes_queued;
        r.outbound_bytes_high_water = self.outbound_bytes_high_water;
        r.inbound_bytes_queued = self.inbound_bytes_queued;
        r.inbound_bytes_high_water = self.inbound_bytes_high_water;
        r.outbound_dropped_packets = self.outbound_dropped_packets;
        r.inbound_dropped_packets = self.inbound_dropped_packets;
        r.outbound_refused_packets = self.outbound_refused_packets;
        r.outbound_pauses = self.outbound_pauses;
        r.flows_open = self.flows_open;
        r.flows_admitted = self.flows_admitted;
        r.flows_rejected = self.flows_rejected;
        r.flows_evicted = self.flows_evicted;
        r.flows_paused = self.flows_paused;
        r.pressure_closes = self.pressure_closes;
        Ok(r)
    }

    fn from_core(r: &BlackBoxRecord) -> Self {
        TidegateBlackBoxRecord {
            sequence: r.sequence,
            written_at_us: r.written_at_micros,
            flags: if r.clean_stop {
                TIDEGATE_BLACK_BOX_CLEAN_STOP
            } else {
                0
            },
            reserved: 0,
            generation: r.generation,
            lifecycle_state: r.lifecycle_state,
            stops_completed: r.stops_completed,
            start_timeouts: r.start_timeouts,
            teardown_timeouts: r.teardown_timeouts,
            path_changes: r.path_changes,
            restarts_run: r.restarts_run,
            restarts_failed: r.restarts_failed,
            restarts_exhausted: r.restarts_exhausted,
            pressure: r.pressure,
            memory_projected_bytes: r.memory_projected_bytes,
            memory_peak_bytes: r.memory_peak_bytes,
            reservations_refused: r.reservations_refused,
            critical_entries: r.critical_entries,
            outbound_bytes_queued: r.outbound_bytes_queued,
            outbound_bytes_high_water: r.outbound_bytes_high_water,
            inbound_bytes_queued: r.inbound_bytes_queued,
            inbound_bytes_high_water: r.inbound_bytes_high_water,
            outbound_dropped_packets: r.outbound_dropped_packets,
            inbound_dropped_packets: r.inbound_dropped_packets,
            outbound_refused_packets: r.outbound_refused_packets,
            outbound_pauses: r.outbound_pauses,
            flows_open: r.flows_open,
            flows_admitted: r.flows_admitted,
            flows_rejected: r.flows_rejected,
            flows_evicted: r.flows_evicted,
            flows_paused: r.flows_paused,
            pressure_closes: r.pressure_closes,
        }
    }
}

/// Read `*record`, let `apply` fill in an engine's figures, write it back: the body of every
/// `tidegate_black_box_capture_*`. On error `*record` is unchanged.
///
/// # Safety
/// `record` must be NULL or valid for reading and writing a `TidegateBlackBoxRecord`.
pub(crate) unsafe fn capture(
    record: *mut TidegateBlackBoxRecord,
    apply: impl FnOnce(&mut BlackBoxRecord),
) -> Result<(), TidegateStatus> {
    require_non_null([record.cast_const().cast()])?;
    // SAFETY: non-NULL and valid by the caller's contract; every field is an integer, so any
    // bytes the host left in it are a valid value.
    let mut core = unsafe { record.read() }.core_record()?;
    apply(&mut core);
    // SAFETY: as above.
    unsafe { write_out(record, TidegateBlackBoxRecord::from_core(&core)) }
}

/// Encodes `*record` as one slot into `slot` (`slot_len` bytes, at least
/// `TIDEGATE_BLACK_BOX_SLOT_LEN`) and writes to `*out_offset` where in the file those
/// `TIDEGATE_BLACK_BOX_SLOT_LEN` bytes go: slot `sequence % 2`. Write them there in place
/// (`pwrite`; never truncate the file): a kill during the write tears only that slot, and the
/// other keeps the record before.
///
/// Refused, writing nothing: `sequence` 0, unknown `flags` bits or `reserved` not 0
/// (`TIDEGATE_STATUS_INVALID_ARGUMENT`), `slot_len` too small (`TIDEGATE_STATUS_BUFFER_TOO_SMALL`).
/// Encoding copies 252 bytes and computes one CRC: cheap enough to run every second.
///
/// # Safety
/// `record` must be NULL or valid for reading; `slot` must be valid for writing `slot_len` bytes
/// (NULL only if `slot_len` is 0); `out_offset` must be NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_black_box_encode(
    record: *const TidegateBlackBoxRecord,
    slot: *mut u8,
    slot_len: usize,
    out_offset: *mut usize,
) -> TidegateStatus {
    call_free(|| {
        require_non_null([record.cast(), out_offset.cast_const().cast()])?;
        if slot.is_null() && slot_len != 0 {
            return Err(TidegateStatus::NullArgument);
        }
        slice_len_fits::<u8>(slot_len)?;
        // SAFETY: non-NULL and valid by the caller's contract; every field is an integer.
        let core = unsafe { record.read() }.core_record()?;
        if slot_len < TIDEGATE_BLACK_BOX_SLOT_LEN {
            return Err(TidegateStatus::BufferTooSmall);
        }
        // SAFETY: `slot` is non-NULL (`slot_len` is at least one slot) and valid for writing
        // `slot_len` bytes, which span at most `isize::MAX`.
        let out = unsafe { core::slice::from_raw_parts_mut(slot, slot_len) };
        let offset = encode_black_box(&core, out).map_err(|error| match error {
            BlackBoxEncodeError::BufferTooSmall { .. } => TidegateStatus::BufferTooSmall,
            _ => TidegateStatus::InvalidArgument,
        })?;
        // SAFETY: checked non-NULL above; valid by the caller's contract.
        unsafe { write_out(out_offset, offset) }
    })
}

/// Reads the newest intact record from the black box file `file` (`file_len` bytes: the whole
/// file, `TIDEGATE_BLACK_BOX_LEN`, or as much of it as exists) into `*out_record`.
/// `TIDEGATE_STATUS_BLACK_BOX_EMPTY` when neither slot holds one: no file yet (NULL and 0 are
/// accepted), a file of another format, or both slots damaged. A slot torn by a kill during its
/// write, or with any single bit flipped, is skipped and the record before it is read.
///
/// # Safety
/// `file` must be valid for reading `file_len` bytes (NULL only if `file_len` is 0);
/// `out_record` must be NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tidegate_black_box_decode(
    file: *const u8,
    file_len: usize,
    out_record: *mut TidegateBlackBoxRecord,
) -> TidegateStatus {
    call_free(|| {
        require_non_null([out_record.cast_const().cast()])?;
        // SAFETY: forwarded caller contract.
        let file = unsafe { bytes(file, file_len) }?;
        let record = decode_black_box(file).ok_or(TidegateStatus::BlackBoxEmpty)?;
        // SAFETY: checked non-NULL above; valid by the caller's contract.
        unsafe { write_out(out_record, TidegateBlackBoxRecord::from_core(&record)) }
    })
}
