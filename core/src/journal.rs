//! The housekeeping journal: a compact, versioned, checksummed byte record of unfinished tasks.
//!
//! When a stop's housekeeping deadline passes, the lifecycle machine writes the tasks still
//! pending into a journal in a buffer the host owns; the host persists the bytes before it
//! completes the stop, and hands them back on the next start so the tasks run again. This module
//! owns the wire format and nothing else: [`encode_journal`] writes a record, [`Journal::decode`]
//! validates one and iterates its tasks without copying.
//!
//! ## Format (version 1, little-endian)
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 4 | magic `TGJL` ([`JOURNAL_MAGIC`]) |
//! | 4 | 1 | version, 1 ([`JOURNAL_VERSION`]) |
//! | 5 | 4 | total length of the record in bytes, this header and the checksum included |
//! | 9 | 8 | generation of the session that wrote the journal |
//! | 17 | 2 | number of tasks |
//! | 19 | ... | each task: kind (`u32`), payload length (`u8`, at most [`TASK_PAYLOAD_MAX`]), payload |
//! | end - 4 | 4 | CRC-32C (Castagnoli) of every byte before it |
//!
//! The decoder accepts a slice only if its length equals the recorded length exactly, so a flip
//! in the length field is caught by the length check, a flip in the magic or version by those
//! checks, and a flip anywhere else by the CRC, which detects every single-bit error (and every
//! burst of up to 32 bits). CRC-32C is implemented here with a 1 KiB table computed at compile
//! time rather than taken from a crate: it is twenty lines, needs no feature flags on a
//! `no_std` target, and the check value test pins it to the standard.

use core::fmt;

/// The four bytes every journal starts with.
pub const JOURNAL_MAGIC: [u8; 4] = *b"TGJL";

/// The journal format version this build writes and the only one it reads.
pub const JOURNAL_VERSION: u8 = 1;

/// The largest payload a housekeeping task may carry, in bytes.
///
/// Small on purpose: a payload names what to clean up (a file number, a session id, a hash), it
/// does not hold the data. 32 bytes fit a SHA-256 digest or a UUID plus a counter.
pub const TASK_PAYLOAD_MAX: usize = 32;

/// The most tasks one journal can hold (its count field is 16 bits wide).
pub const JOURNAL_TASKS_MAX: usize = u16::MAX as usize;

/// Bytes of a journal with no tasks: the header plus the checksum.
pub const JOURNAL_EMPTY_LEN: usize = HEADER_LEN + CRC_LEN;

/// The small opaque payload of a housekeeping task, at most [`TASK_PAYLOAD_MAX`] bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TaskPayload {
    len: u8,
    bytes: [u8; TASK_PAYLOAD_MAX],
}

impl TaskPayload {
    /// The empty payload.
    pub const EMPTY: TaskPayload = TaskPayload {
        len: 0,
        bytes: [0; TASK_PAYLOAD_MAX],
    };

    /// A payload holding a copy of `bytes`, or an error if it is longer than
    /// [`TASK_PAYLOAD_MAX`].
    pub fn new(bytes: &[u8]) -> Result<TaskPayload, PayloadTooLong> {
        let mut payload = TaskPayload::EMPTY;
        let len = u8::try_from(bytes.len()).map_err(|_| PayloadTooLong { len: bytes.len() })?;
        let target = payload
            .bytes
            .get_mut(..bytes.len())
            .ok_or(PayloadTooLong { len: bytes.len() })?;
        target.copy_from_slice(bytes);
        payload.len = len;
        Ok(payload)
    }

    /// The payload bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or(&[])
    }

    /// The payload length in bytes.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Default for TaskPayload {
    fn default() -> Self {
        TaskPayload::EMPTY
    }
}

impl fmt::Debug for TaskPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TaskPayload({:02x?})", self.as_bytes())
    }
}

/// A payload was longer than [`TASK_PAYLOAD_MAX`]; nothing was stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PayloadTooLong {
    /// The length that was offered.
    pub len: usize,
}

impl fmt::Display for PayloadTooLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "task payload of {} bytes is longer than the maximum of {TASK_PAYLOAD_MAX}",
            self.len
        )
    }
}

/// One housekeeping task as the journal stores it: what to do (`kind`, the host's own numbering)
/// and on what (`payload`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct JournalTask {
    /// The host-defined kind of task.
    pub kind: u32,
    /// The task's argument.
    pub payload: TaskPayload,
}

impl JournalTask {
    /// Bytes this task takes in a journal.
    pub fn encoded_len(&self) -> usize {
        TASK_HEADER_LEN.saturating_add(self.payload.len())
    }
}

/// The number of bytes a journal holding `tasks` takes.
pub fn journal_encoded_len<I>(tasks: I) -> usize
where
    I: IntoIterator<Item = JournalTask>,
{
    tasks.into_iter().fold(JOURNAL_EMPTY_LEN, |len, task| {
        len.saturating_add(task.encoded_len())
    })
}

/// Write a journal for session `generation` holding `tasks` into the front of `buf`.
///
/// Returns the number of bytes written. The iterator is walked twice (once to size the record,
/// once to write it), so it must yield the same tasks each time. On error nothing is written.
pub fn encode_journal<I>(
    generation: u64,
    tasks: I,
    buf: &mut [u8],
) -> Result<usize, JournalEncodeError>
where
    I: IntoIterator<Item = JournalTask>,
    I::IntoIter: Clone,
{
    let tasks = tasks.into_iter();
    let count = tasks.clone().count();
    let count_field =
        u16::try_from(count).map_err(|_| JournalEncodeError::TooManyTasks { count })?;
    let required = journal_encoded_len(tasks.clone());
    let len_field =
        u32::try_from(required).map_err(|_| JournalEncodeError::TooManyTasks { count })?;
    if buf.len() < required {
        return Err(JournalEncodeError::BufferTooSmall { required });
    }
    let mut writer = Writer { buf, at: 0 };
    writer.put(&JOURNAL_MAGIC)?;
    writer.put(&[JOURNAL_VERSION])?;
    writer.put(&len_field.to_le_bytes())?;
    writer.put(&generation.to_le_bytes())?;
    writer.put(&count_field.to_le_bytes())?;
    for task in tasks {
        writer.put(&task.kind.to_le_bytes())?;
        writer.put(&[task.payload.len])?;
        writer.put(task.payload.as_bytes())?;
    }
    let body = writer
        .buf
        .get(..writer.at)
        .ok_or(JournalEncodeError::BufferTooSmall { required })?;
    let crc = crc32c(body);
    writer.put(&crc.to_le_bytes())?;
    Ok(writer.at)
}

/// Why a journal could not be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum JournalEncodeError {
    /// The buffer is shorter than the journal; `required` is the size that fits it.
    BufferTooSmall {
        /// Bytes the journal needs.
        required: usize,
    },
    /// More tasks than one journal can hold ([`JOURNAL_TASKS_MAX`]).
    TooManyTasks {
        /// The number of tasks offered.
        count: usize,
    },
}

impl fmt::Display for JournalEncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JournalEncodeError::BufferTooSmall { required } => {
                write!(
                    f,
                    "buffer too small for the journal: {required} bytes required"
                )
            }
            JournalEncodeError::TooManyTasks { count } => write!(
                f,
                "{count} tasks do not fit one journal (at most {JOURNAL_TASKS_MAX})"
            ),
        }
    }
}

/// A validated journal borrowed from the host's bytes.
///
/// Holding a `Journal` means every check passed: magic, version, exact length, checksum and the
/// shape of every task record. Iterating its tasks cannot fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Journal<'a> {
    generation: u64,
    task_count: u16,
    task_bytes: &'a [u8],
}

impl<'a> Journal<'a> {
    /// Validate `bytes` as a journal. Never panics, whatever the bytes.
    ///
    /// `bytes` must be exactly the record that was written: a longer slice is refused with
    /// [`JournalDecodeError::LengthMismatch`], a shorter one with [`JournalDecodeError::Truncated`].
    pub fn decode(bytes: &'a [u8]) -> Result<Journal<'a>, JournalDecodeError> {
        if bytes.len() < JOURNAL_EMPTY_LEN {
            return Err(JournalDecodeError::Truncated {
                len: bytes.len(),
                required: JOURNAL_EMPTY_LEN,
            });
        }
        let mut reader = Reader { bytes, at: 0 };
        let malformed = JournalDecodeError::Malformed;
        if reader.take(4).ok_or(malformed)? != JOURNAL_MAGIC {
            return Err(JournalDecodeError::NotAJournal);
        }
        let version = reader.u8().ok_or(malformed)?;
        if version != JOURNAL_VERSION {
            return Err(JournalDecodeError::UnsupportedVersion { found: version });
        }
        let declared = usize::try_from(reader.u32().ok_or(malformed)?).unwrap_or(usize::MAX);
        if declared > bytes.len() {
            return Err(JournalDecodeError::Truncated {
                len: bytes.len(),
                required: declared,
            });
        }
        if declared != bytes.len() {
            return Err(JournalDecodeError::LengthMismatch {
                declared,
                actual: bytes.len(),
            });
        }
        let body_len = bytes.len().saturating_sub(CRC_LEN);
        let (body, stored) = bytes.split_at_checked(body_len).ok_or(malformed)?;
        let stored = u32::from_le_bytes(stored.try_into().map_err(|_| malformed)?);
        let computed = crc32c(body);
        if stored != computed {
            return Err(JournalDecodeError::ChecksumMismatch { stored, computed });
        }
        let generation = reader.u64().ok_or(malformed)?;
        let task_count = reader.u16().ok_or(malformed)?;
        let task_bytes = body.get(HEADER_LEN..).ok_or(malformed)?;
        // Walk the task records once so that iteration later cannot fail.
        let mut tasks = JournalTasks {
            reader: Reader {
                bytes: task_bytes,
                at: 0,
            },
            remaining: task_count,
        };
        for _ in 0..task_count {
            tasks.next_checked()?;
        }
        if tasks.reader.at != task_bytes.len() {
            return Err(JournalDecodeError::Malformed);
        }
        Ok(Journal {
            generation,
            task_count,
            task_bytes,
        })
    }

    /// The generation of the session that wrote this journal.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// How many tasks the journal holds.
    pub fn task_count(&self) -> usize {
        usize::from(self.task_count)
    }

    /// The tasks, in the order they were written (the order they were queued).
    pub fn tasks(&self) -> JournalTasks<'a> {
        JournalTasks {
            reader: Reader {
                bytes: self.task_bytes,
                at: 0,
            },
            remaining: self.task_count,
        }
    }
}

/// Iterator over the tasks of a validated [`Journal`].
#[derive(Clone, Debug)]
pub struct JournalTasks<'a> {
    reader: Reader<'a>,
    remaining: u16,
}

impl JournalTasks<'_> {
    fn next_checked(&mut self) -> Result<JournalTask, JournalDecodeError> {
        let kind = self.reader.u32().ok_or(JournalDecodeError::Malformed)?;
        let len = self.reader.u8().ok_or(JournalDecodeError::Malformed)?;
        if usize::from(len) > TASK_PAYLOAD_MAX {
            return Err(JournalDecodeError::Malformed);
        }
        let bytes = self
            .reader
            .take(usize::from(len))
            .ok_or(JournalDecodeError::Malformed)?;
        let payload = TaskPayload::new(bytes).map_err(|_| JournalDecodeError::Malformed)?;
        self.remaining = self.remaining.saturating_sub(1);
        Ok(JournalTask { kind, payload })
    }
}

impl Iterator for JournalTasks<'_> {
    type Item = JournalTask;

    fn next(&mut self) -> Option<JournalTask> {
        if self.remaining == 0 {
            return None;
        }
        self.next_checked().ok()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let remaining = usize::from(self.remaining);
        (remaining, Some(remaining))
    }
}

/// Why bytes handed back as a journal were refused. Refusing a journal changes nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum JournalDecodeError {
    /// Fewer bytes than the record needs: `len` were given, `required` are needed. The write was
    /// probably interrupted.
    Truncated {
        /// Bytes given.
        len: usize,
        /// Bytes the record needs.
        required: usize,
    },
    /// The bytes do not start with [`JOURNAL_MAGIC`]: this is not a tidegate journal.
    NotAJournal,
    /// A journal of a format version this build does not read.
    UnsupportedVersion {
        /// The version byte found.
        found: u8,
    },
    /// More bytes than the record declares; pass exactly the bytes that were written.
    LengthMismatch {
        /// Length recorded in the journal.
        declared: usize,
        /// Length of the slice given.
        actual: usize,
    },
    /// The checksum does not match: the bytes were corrupted in storage.
    ChecksumMismatch {
        /// Checksum recorded in the journal.
        stored: u32,
        /// Checksum of the bytes given.
        computed: u32,
    },
    /// The checksum matches but the task records are inconsistent (a payload longer than
    /// [`TASK_PAYLOAD_MAX`], a count that does not match the bytes). Only a writer bug or a
    /// deliberately forged record gets here.
    Malformed,
}

impl fmt::Display for JournalDecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JournalDecodeError::Truncated { len, required } => {
                write!(f, "journal truncated: {len} bytes, {required} required")
            }
            JournalDecodeError::NotAJournal => f.write_str("not a tidegate journal (bad magic)"),
            JournalDecodeError::UnsupportedVersion { found } => write!(
                f,
                "journal version {found} is not supported (this build reads version {JOURNAL_VERSION})"
            ),
            JournalDecodeError::LengthMismatch { declared, actual } => write!(
                f,
                "journal declares {declared} bytes but {actual} were given"
            ),
            JournalDecodeError::ChecksumMismatch { stored, computed } => write!(
                f,
                "journal corrupted: checksum {stored:#010x} stored, {computed:#010x} computed"
            ),
            JournalDecodeError::Malformed => f.write_str("journal task records are malformed"),
        }
    }
}

/// CRC-32C (Castagnoli, reflected, as used by iSCSI, ext4 and SCTP) of `bytes`.
pub(crate) fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = u32::MAX;
    for &byte in bytes {
        let index = usize::from((crc as u8) ^ byte);
        crc = (crc >> 8) ^ CRC32C_TABLE.get(index).copied().unwrap_or(0);
    }
    !crc
}

const HEADER_LEN: usize = 4 + 1 + 4 + 8 + 2;
const CRC_LEN: usize = 4;
const TASK_HEADER_LEN: usize = 4 + 1;

/// Reflected Castagnoli polynomial.
const CRC32C_POLY: u32 = 0x82F6_3B78;

const CRC32C_TABLE: [u32; 256] = crc32c_table();

const fn crc32c_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut index = 0usize;
    while index < 256 {
        let mut crc = index as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ CRC32C_POLY
            } else {
                crc >> 1
            };
            bit += 1;
        }
        // Evaluated at compile time: an out-of-range index would fail the build, not panic.
        #[allow(clippy::indexing_slicing)]
        {
            table[index] = crc;
        }
        index += 1;
    }
    table
}

struct Writer<'b> {
    buf: &'b mut [u8],
    at: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), JournalEncodeError> {
        // `checked_add`, not `saturating_add`: the target is then exactly `bytes.len()` long,
        // which the optimiser sees, so the copy keeps no length-mismatch panic.
        let end = self.at.checked_add(bytes.len());
        let target = end.and_then(|end| self.buf.get_mut(self.at..end)).ok_or(
            JournalEncodeError::BufferTooSmall {
                required: end.unwrap_or(usize::MAX),
            },
        )?;
        target.copy_from_slice(bytes);
        self.at = self.at.saturating_add(bytes.len());
        Ok(())
    }
}

#[derive(Clone, Debug)]
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(len)?;
        let slice = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(slice)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(|[byte]| byte)
    }

    fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_le_bytes)
    }

    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn task(kind: u32, payload: &[u8]) -> JournalTask {
        JournalTask {
            kind,
            payload: TaskPayload::new(payload).unwrap(),
        }
    }

    fn encode(generation: u64, tasks: &[JournalTask]) -> Vec<u8> {
        let mut buf = vec![0u8; journal_encoded_len(tasks.iter().copied())];
        let len = encode_journal(generation, tasks.iter().copied(), &mut buf).unwrap();
        assert_eq!(len, buf.len());
        buf
    }

    fn sample_journals() -> Vec<Vec<u8>> {
        vec![
            encode(0, &[]),
            encode(7, &[task(1, b"")]),
            encode(
                u64::MAX - 3,
                &[task(2, b"flush-metrics"), task(u32::MAX, &[0xA5; 32])],
            ),
            encode(
                42,
                &[
                    task(3, b"a"),
                    task(4, b"bc"),
                    task(5, &[0; 7]),
                    task(6, &[1; 31]),
                ],
            ),
        ]
    }

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn round_trip_keeps_generation_and_tasks_in_order() {
        let tasks = [task(9, b"one"), task(10, b""), task(11, &[0xFF; 32])];
        let bytes = encode(1234, &tasks);
        assert_eq!(bytes.len(), JOURNAL_EMPTY_LEN + 3 * 5 + 3 + 32);
        let journal = Journal::decode(&bytes).unwrap();
        assert_eq!(journal.generation(), 1234);
        assert_eq!(journal.task_count(), 3);
        assert_eq!(journal.tasks().collect::<Vec<_>>(), tasks.to_vec());
        assert_eq!(&bytes[..4], b"TGJL");
        assert_eq!(bytes[4], JOURNAL_VERSION);
    }

    #[test]
    fn buffer_too_small_reports_required_size_and_writes_nothing() {
        let tasks = [task(1, b"abc")];
        let required = journal_encoded_len(tasks.iter().copied());
        let mut buf = vec![0xEEu8; required - 1];
        assert_eq!(
            encode_journal(5, tasks.iter().copied(), &mut buf),
            Err(JournalEncodeError::BufferTooSmall { required })
        );
        assert!(buf.iter().all(|&b| b == 0xEE));
    }

    #[test]
    fn payload_longer_than_maximum_is_refused() {
        assert_eq!(TaskPayload::new(&[0; 33]), Err(PayloadTooLong { len: 33 }));
        assert_eq!(TaskPayload::new(&[7; 32]).unwrap().as_bytes(), &[7; 32]);
        assert!(TaskPayload::new(&[]).unwrap().is_empty());
    }

    #[test]
    fn truncated_journal_is_refused_at_every_length() {
        let bytes = encode(3, &[task(1, b"xyz"), task(2, b"")]);
        for len in 0..bytes.len() {
            let result = Journal::decode(&bytes[..len]);
            assert!(
                matches!(result, Err(JournalDecodeError::Truncated { len: l, .. }) if l == len),
                "len {len}: {result:?}"
            );
        }
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut bytes = encode(3, &[task(1, b"xyz")]);
        let declared = bytes.len();
        bytes.push(0);
        assert_eq!(
            Journal::decode(&bytes),
            Err(JournalDecodeError::LengthMismatch {
                declared,
                actual: declared + 1
            })
        );
    }

    #[test]
    fn foreign_version_and_foreign_magic_are_refused() {
        let mut bytes = encode(3, &[task(1, b"xyz")]);
        bytes[4] = 2;
        // Re-seal so only the version differs from a valid record.
        let body = bytes.len() - 4;
        let crc = crc32c(&bytes[..body]).to_le_bytes();
        bytes[body..].copy_from_slice(&crc);
        assert_eq!(
            Journal::decode(&bytes),
            Err(JournalDecodeError::UnsupportedVersion { found: 2 })
        );
        let mut foreign = encode(3, &[]);
        foreign[0] = b'X';
        assert_eq!(
            Journal::decode(&foreign),
            Err(JournalDecodeError::NotAJournal)
        );
    }

    #[test]
    fn consistent_checksum_over_inconsistent_records_is_malformed() {
        // A count of two with the bytes of one task, sealed with a valid checksum.
        let mut bytes = encode(1, &[task(1, b"ab")]);
        bytes[17] = 2;
        let body = bytes.len() - 4;
        let crc = crc32c(&bytes[..body]).to_le_bytes();
        bytes[body..].copy_from_slice(&crc);
        assert_eq!(Journal::decode(&bytes), Err(JournalDecodeError::Malformed));
        // A payload length above the maximum.
        let mut bytes = encode(1, &[task(1, &[0; 32])]);
        bytes[HEADER_LEN + 4] = 33;
        let body = bytes.len() - 4;
        let crc = crc32c(&bytes[..body]).to_le_bytes();
        bytes[body..].copy_from_slice(&crc);
        assert_eq!(Journal::decode(&bytes), Err(JournalDecodeError::Malformed));
    }

    #[test]
    // Slow under Miri (an exhaustive loop of safe arithmetic); the normal run covers it.
    #[cfg_attr(miri, ignore = "slow under Miri")]
    fn every_single_bit_flip_of_valid_journals_is_detected() {
        for bytes in sample_journals() {
            assert!(Journal::decode(&bytes).is_ok());
            for bit in 0..bytes.len() * 8 {
                let mut flipped = bytes.clone();
                flipped[bit / 8] ^= 1 << (bit % 8);
                assert!(
                    Journal::decode(&flipped).is_err(),
                    "flip of bit {bit} in a {}-byte journal went unnoticed",
                    bytes.len()
                );
            }
        }
    }

    proptest! {

        #![proptest_config(crate::proptest_config::default_cases())]

        #[test]
        fn decode_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Journal::decode(&bytes);
        }

        #[test]
        fn decode_never_panics_on_mutated_journals(
            index in 0usize..4,
            edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        ) {
            let mut bytes = sample_journals()[index].clone();
            for (at, value) in edits {
                let at = at % bytes.len();
                bytes[at] = value;
            }
            if let Ok(journal) = Journal::decode(&bytes) {
                // Whatever passes validation iterates exactly its declared count.
                prop_assert_eq!(journal.tasks().count(), journal.task_count());
            }
        }

        #[test]
        // Slow under Miri (an exhaustive loop of safe arithmetic); the normal run covers it.
        #[cfg_attr(miri, ignore = "slow under Miri")]
        fn every_single_bit_flip_of_a_random_journal_is_detected(
            generation in any::<u64>(),
            tasks in proptest::collection::vec(
                (any::<u32>(), proptest::collection::vec(any::<u8>(), 0..=TASK_PAYLOAD_MAX)),
                0..4,
            ),
        ) {
            let tasks: Vec<JournalTask> = tasks.iter().map(|(k, p)| task(*k, p)).collect();
            let bytes = encode(generation, &tasks);
            for bit in 0..bytes.len() * 8 {
                let mut flipped = bytes.clone();
                flipped[bit / 8] ^= 1 << (bit % 8);
                prop_assert!(Journal::decode(&flipped).is_err(), "bit {} undetected", bit);
            }
        }

        #[test]
        fn any_task_list_round_trips(
            generation in any::<u64>(),
            tasks in proptest::collection::vec(
                (any::<u32>(), proptest::collection::vec(any::<u8>(), 0..=TASK_PAYLOAD_MAX)),
                0..20,
            ),
        ) {
            let tasks: Vec<JournalTask> = tasks.iter().map(|(k, p)| task(*k, p)).collect();
            let bytes = encode(generation, &tasks);
            let journal = Journal::decode(&bytes).unwrap();
            prop_assert_eq!(journal.generation(), generation);
            prop_assert_eq!(journal.tasks().collect::<Vec<_>>(), tasks);
        }
    }
}
