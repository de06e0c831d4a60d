//! The order in which candidates are tried (RFC 8305 section 4).
//!
//! Addresses of the preferred family and of the other family are interleaved: first
//! `first_count` preferred addresses ("First Address Family Count"), then one of the other
//! family, one preferred, and so on; when one family runs out the rest of the other follows.
//! Within a family the order is the resolver's (the host sorts by RFC 6724 if it wants to).
//!
//! The scheduler never builds that list: addresses arrive in several answers and the list would
//! be rebuilt each time. Instead [`interleaved_position`] gives the position of one candidate
//! in the list from its rank within its family and the two family counts, in O(1), and the
//! scheduler starts the untried candidate with the lowest position.

/// Position of a candidate in the interleaved order.
///
/// `preferred` says whether the candidate is of the preferred family, `rank` is its index within
/// its family (0 = first received), `preferred_count` and `other_count` are how many candidates
/// each family has, and `first_count` is the First Address Family Count (taken as at least 1).
/// Positions of distinct candidates are distinct and cover `0..preferred_count + other_count`.
pub(crate) fn interleaved_position(
    preferred: bool,
    rank: usize,
    preferred_count: usize,
    other_count: usize,
    first_count: usize,
) -> usize {
    let first_count = first_count.max(1);
    // Preferred candidates that lead the list before the first one of the other family.
    let leading = first_count.min(preferred_count);
    if preferred {
        if rank < leading {
            return rank;
        }
        // Preferred rank `leading + j` follows `j + 1` others, as far as there are others.
        let j = rank.saturating_sub(leading);
        leading
            .saturating_add(j)
            .saturating_add(j.saturating_add(1).min(other_count))
    } else {
        // Other rank `j` follows the leading preferred ones and `j` alternating preferred ones,
        // as far as there are preferred ones left.
        let alternating = preferred_count.saturating_sub(leading);
        leading
            .saturating_add(rank)
            .saturating_add(rank.min(alternating))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The plain model: build the interleaved list the way RFC 8305 describes it.
    fn model(preferred_count: usize, other_count: usize, first_count: usize) -> Vec<(bool, usize)> {
        let mut preferred: std::collections::VecDeque<usize> = (0..preferred_count).collect();
        let mut other: std::collections::VecDeque<usize> = (0..other_count).collect();
        let mut list = Vec::new();
        for _ in 0..first_count.max(1) {
            if let Some(rank) = preferred.pop_front() {
                list.push((true, rank));
            }
        }
        loop {
            let o = other.pop_front();
            if let Some(rank) = o {
                list.push((false, rank));
            }
            let p = preferred.pop_front();
            if let Some(rank) = p {
                list.push((true, rank));
            }
            if o.is_none() && p.is_none() {
                return list;
            }
        }
    }

    #[test]
    fn rfc_examples() {
        // First Address Family Count 1: v6 v4 v6 v4 v6.
        let order: Vec<usize> = [(true, 0), (false, 0), (true, 1), (false, 1), (true, 2)]
            .iter()
            .map(|&(p, r)| interleaved_position(p, r, 3, 2, 1))
            .collect();
        assert_eq!(order, [0, 1, 2, 3, 4]);
        // First Address Family Count 2: v6 v6 v4 v6 v6.
        assert_eq!(interleaved_position(true, 1, 4, 1, 2), 1);
        assert_eq!(interleaved_position(false, 0, 4, 1, 2), 2);
        assert_eq!(interleaved_position(true, 2, 4, 1, 2), 3);
        assert_eq!(interleaved_position(true, 3, 4, 1, 2), 4);
        // Only the other family.
        assert_eq!(interleaved_position(false, 2, 0, 3, 1), 2);
        // First count 0 is taken as 1.
        assert_eq!(interleaved_position(false, 0, 2, 2, 0), 1);
    }

    proptest! {

        #![proptest_config(crate::proptest_config::default_cases())]

        #[test]
        fn position_matches_model(
            preferred_count in 0usize..12,
            other_count in 0usize..12,
            first_count in 0usize..6,
        ) {
            let list = model(preferred_count, other_count, first_count);
            prop_assert_eq!(list.len(), preferred_count + other_count);
            for (position, &(preferred, rank)) in list.iter().enumerate() {
                let count_p = preferred_count;
                prop_assert_eq!(
                    interleaved_position(preferred, rank, count_p, other_count, first_count),
                    position
                );
            }
        }
    }
}
