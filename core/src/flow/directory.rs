//! The two hash tables of the flow table: apps by [`AppId`] and destinations by
//! [`DestinationKey`].
//!
//! Both live in the slots (see `table.rs`): as many buckets as slots, records chained through
//! `chain_next`, free records on a list through the same field. With at most one record per
//! slot the load factor never exceeds 1, so a lookup visits O(1) records on average; the seed
//! keeps an attacker who picks destination keys from precomputing collisions.

use super::table::{AppRecord, DestinationRecord, FlowSlot, bucket_of};
use super::{AppId, DestinationKey};

/// Which of the two tables an operation works on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Directory {
    /// Apps with flows in the table, keyed by [`AppId`].
    Apps,
    /// Destinations with flows in the table, keyed by [`DestinationKey`].
    Destinations,
}

impl Directory {
    /// The table's seed: the policy seed for apps, a distinct one for destinations so keys that
    /// collide in one table do not collide in the other.
    const fn seed(self, seed: u64) -> u64 {
        match self {
            Directory::Apps => seed,
            Directory::Destinations => seed ^ 0x9e37_79b9_7f4a_7c15,
        }
    }

    const fn key(self, row: &FlowSlot) -> u64 {
        match self {
            Directory::Apps => row.app.id.0,
            Directory::Destinations => row.destination.key.0,
        }
    }

    fn chain_next(self, row: &mut FlowSlot) -> &mut u32 {
        match self {
            Directory::Apps => &mut row.app.chain_next,
            Directory::Destinations => &mut row.destination.chain_next,
        }
    }

    fn bucket(self, row: &mut FlowSlot) -> &mut u32 {
        match self {
            Directory::Apps => &mut row.app_bucket,
            Directory::Destinations => &mut row.destination_bucket,
        }
    }

    /// Reset the record in `row` to a fresh one for `key`, chained before `next`.
    fn reset(self, row: &mut FlowSlot, key: u64, next: u32) {
        match self {
            Directory::Apps => {
                row.app = AppRecord {
                    id: AppId(key),
                    chain_next: next,
                    ..AppRecord::EMPTY
                };
            }
            Directory::Destinations => {
                row.destination = DestinationRecord {
                    key: DestinationKey(key),
                    chain_next: next,
                    ..DestinationRecord::EMPTY
                };
            }
        }
    }
}

/// The record holding `key`, if any.
pub(crate) fn find(rows: &[FlowSlot], directory: Directory, seed: u64, key: u64) -> Option<u32> {
    let bucket = bucket_of(key, directory.seed(seed), rows.len());
    let head = rows.get(bucket as usize)?;
    let mut at = match directory {
        Directory::Apps => head.app_bucket,
        Directory::Destinations => head.destination_bucket,
    };
    // A chain is never longer than the table; the bound only guards against corruption.
    for _ in 0..rows.len() {
        let row = rows.get(at as usize)?;
        if directory.key(row) == key {
            return Some(at);
        }
        at = match directory {
            Directory::Apps => row.app.chain_next,
            Directory::Destinations => row.destination.chain_next,
        };
    }
    None
}

/// Take a record from the free list `free` and enter it for `key`. The caller has checked that
/// `key` is absent.
pub(crate) fn insert(
    rows: &mut [FlowSlot],
    directory: Directory,
    seed: u64,
    free: &mut u32,
    key: u64,
) -> Option<u32> {
    let index = *free;
    let bucket = bucket_of(key, directory.seed(seed), rows.len()) as usize;
    let chain = *directory.bucket(rows.get_mut(bucket)?);
    let row = rows.get_mut(index as usize)?;
    *free = *directory.chain_next(row);
    directory.reset(row, key, chain);
    *directory.bucket(rows.get_mut(bucket)?) = index;
    Some(index)
}

/// Take record `index` out of its chain and put it on the free list `free`.
pub(crate) fn remove(
    rows: &mut [FlowSlot],
    directory: Directory,
    seed: u64,
    free: &mut u32,
    index: u32,
) {
    let Some(row) = rows.get_mut(index as usize) else {
        return;
    };
    let key = directory.key(row);
    let next = *directory.chain_next(row);
    let bucket = bucket_of(key, directory.seed(seed), rows.len()) as usize;
    let Some(head) = rows.get_mut(bucket).map(|row| directory.bucket(row)) else {
        return;
    };
    if *head == index {
        *head = next;
    } else {
        let mut at = *head;
        for _ in 0..rows.len() {
            let Some(link) = rows
                .get_mut(at as usize)
                .map(|row| directory.chain_next(row))
            else {
                return;
            };
            if *link == index {
                *link = next;
                break;
            }
            at = *link;
        }
    }
    if let Some(row) = rows.get_mut(index as usize) {
        directory.reset(row, 0, *free);
    }
    *free = index;
}

#[cfg(test)]
mod tests {
    use super::super::table::NIL;
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn free_list(rows: &mut [FlowSlot], directory: Directory) -> u32 {
        let count = rows.len() as u32;
        for (index, row) in rows.iter_mut().enumerate() {
            let next = index as u32 + 1;
            *directory.chain_next(row) = if next < count { next } else { NIL };
        }
        0
    }

    proptest! {

        #![proptest_config(crate::proptest_config::default_cases())]

        /// Each directory behaves like a `HashMap` from key to record under random inserts and
        /// removals, including colliding keys (small key space, 11 buckets).
        #[test]
        fn directory_matches_hashmap(
            apps in any::<bool>(),
            seed: u64,
            ops in proptest::collection::vec(
                (any::<bool>(), 0u64..20),
                0..crate::proptest_config::ops(200),
            ),
        ) {
            let directory = if apps { Directory::Apps } else { Directory::Destinations };
            let mut rows = [FlowSlot::EMPTY; 11];
            let mut free = free_list(&mut rows, directory);
            let mut model: HashMap<u64, u32> = HashMap::new();
            for (add, key) in ops {
                let found = find(&rows, directory, seed, key);
                prop_assert_eq!(found, model.get(&key).copied());
                match (add, found) {
                    (true, None) if model.len() < rows.len() => {
                        let index = insert(&mut rows, directory, seed, &mut free, key);
                        prop_assert!(index.is_some());
                        model.insert(key, index.unwrap_or(NIL));
                    }
                    (false, Some(index)) => {
                        remove(&mut rows, directory, seed, &mut free, index);
                        model.remove(&key);
                    }
                    _ => {}
                }
                for (&key, &index) in &model {
                    prop_assert_eq!(find(&rows, directory, seed, key), Some(index));
                }
            }
        }
    }
}
