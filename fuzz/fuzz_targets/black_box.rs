//! The black box file's decoder and encoder.
//!
//! - Arbitrary files: `decode_black_box` never panics, and the record it returns re-encodes to
//!   the very bytes of the slot it came from (one encoding per record), in the slot its
//!   sequence names, and that slot is the newest intact one.
//! - Arbitrary records written in order into a file, with the last write torn at any length or a
//!   bit flipped anywhere in the newest slot: the newest intact record is read, never a damaged
//!   one, and never nothing while an older intact record exists.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use tidegate_core::{
    BLACK_BOX_LEN, BLACK_BOX_SLOT_LEN, BlackBoxRecord, decode_black_box, encode_black_box,
};

#[derive(Debug, Arbitrary)]
enum Input {
    File(Vec<u8>),
    Writes {
        records: Vec<(u64, bool, u64, u64)>,
        torn_at: Option<u16>,
        flip_bit: Option<u16>,
    },
}

fn slot_of(record: &BlackBoxRecord) -> ([u8; BLACK_BOX_SLOT_LEN], usize) {
    let mut slot = [0u8; BLACK_BOX_SLOT_LEN];
    let offset = encode_black_box(record, &mut slot).expect("a numbered record encodes");
    (slot, offset)
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    match input {
        Input::File(bytes) => {
            let Some(record) = decode_black_box(&bytes) else {
                return;
            };
            let (slot, offset) = slot_of(&record);
            assert_eq!(
                &bytes[offset..offset + BLACK_BOX_SLOT_LEN],
                &slot[..],
                "one encoding per record, in the slot its sequence names"
            );
        }
        Input::Writes {
            records,
            torn_at,
            flip_bit,
        } => {
            let mut file = [0u8; BLACK_BOX_LEN];
            let mut written: Vec<BlackBoxRecord> = Vec::new();
            for (index, (time, clean, figure_a, figure_b)) in records.iter().take(16).enumerate() {
                let mut record = BlackBoxRecord::new(index as u64 + 1, *time, *clean);
                record.memory_peak_bytes = *figure_a;
                record.flows_open = *figure_b;
                assert_eq!(BlackBoxRecord::next(written.last()), record.sequence);
                let (slot, offset) = slot_of(&record);
                file[offset..offset + BLACK_BOX_SLOT_LEN].copy_from_slice(&slot);
                written.push(record);
                assert_eq!(decode_black_box(&file), Some(record));
            }
            let Some(newest) = written.last().copied() else {
                assert_eq!(decode_black_box(&file), None);
                return;
            };
            let older = written.len().checked_sub(2).map(|i| written[i]);
            // A kill during the next write: that slot torn at any length.
            if let Some(torn_at) = torn_at {
                let mut next = newest;
                next.sequence += 1;
                next.flows_open ^= 1;
                let (slot, offset) = slot_of(&next);
                let mut torn = file;
                let len = usize::from(torn_at) % BLACK_BOX_SLOT_LEN;
                torn[offset..offset + len].copy_from_slice(&slot[..len]);
                // The bytes not written may already hold what the write would have put there
                // (the old slot's last CRC byte, say): then the write did land.
                let landed = torn[offset..offset + BLACK_BOX_SLOT_LEN] == slot[..];
                let expected = if landed { next } else { newest };
                assert_eq!(decode_black_box(&torn), Some(expected), "torn at {len}");
            }
            // A flipped bit in the newest slot: the record before it, or nothing if none.
            if let Some(bit) = flip_bit {
                let offset = (newest.sequence % 2) as usize * BLACK_BOX_SLOT_LEN;
                let bit = usize::from(bit) % (BLACK_BOX_SLOT_LEN * 8);
                let mut flipped = file;
                flipped[offset + bit / 8] ^= 1 << (bit % 8);
                assert_eq!(decode_black_box(&flipped), older, "bit {bit}");
            }
        }
    }
});
