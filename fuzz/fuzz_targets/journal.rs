//! The housekeeping journal's decoder and encoder.
//!
//! - Arbitrary bytes: `Journal::decode` never panics, and whatever it accepts re-encodes to the
//!   very same bytes (the format has one encoding per journal).
//! - Arbitrary journals: `decode(encode(x)) == x` (generation and every task), the encoded
//!   length is what `journal_encoded_len` predicts, a buffer one byte short is refused with the
//!   size required and left untouched, and flipping any single bit makes decoding fail.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use tidegate_core::{
    Journal, JournalEncodeError, JournalTask, TASK_PAYLOAD_MAX, TaskPayload, encode_journal,
    journal_encoded_len,
};

#[derive(Debug, Arbitrary)]
enum Input {
    Bytes(Vec<u8>),
    Tasks {
        generation: u64,
        tasks: Vec<(u32, Vec<u8>)>,
        flip_bit: u32,
    },
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    match input {
        Input::Bytes(bytes) => {
            if let Ok(journal) = Journal::decode(&bytes) {
                let mut again = vec![0u8; bytes.len()];
                let written = encode_journal(journal.generation(), journal.tasks(), &mut again)
                    .expect("an accepted journal re-encodes");
                assert_eq!(&again[..written], &bytes[..], "one encoding per journal");
            }
        }
        Input::Tasks {
            generation,
            tasks,
            flip_bit,
        } => {
            let tasks: Vec<JournalTask> = tasks
                .into_iter()
                .take(64)
                .map(|(kind, payload)| JournalTask {
                    kind,
                    payload: TaskPayload::new(&payload[..payload.len().min(TASK_PAYLOAD_MAX)])
                        .expect("payload within the maximum"),
                })
                .collect();
            let len = journal_encoded_len(tasks.iter().copied());
            let mut short = vec![0x5au8; len - 1];
            assert_eq!(
                encode_journal(generation, tasks.iter().copied(), &mut short),
                Err(JournalEncodeError::BufferTooSmall { required: len })
            );
            assert!(short.iter().all(|&b| b == 0x5a), "nothing written on error");
            let mut buf = vec![0u8; len + 3];
            let written = encode_journal(generation, tasks.iter().copied(), &mut buf).unwrap();
            assert_eq!(written, len);
            let bytes = &buf[..written];
            let journal = Journal::decode(bytes).expect("an encoded journal decodes");
            assert_eq!(journal.generation(), generation);
            assert_eq!(journal.task_count(), tasks.len());
            assert!(
                journal.tasks().eq(tasks.iter().copied()),
                "decode(encode(x)) == x"
            );
            assert!(
                Journal::decode(&buf[..written + 1]).is_err(),
                "trailing bytes refused"
            );
            let bit = flip_bit as usize % (written * 8);
            let mut flipped = bytes.to_vec();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(
                Journal::decode(&flipped).is_err(),
                "a single flipped bit is caught"
            );
        }
    }
});
