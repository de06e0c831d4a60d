//! Generational flow identifiers.
//!
//! A [`FlowId`] names a slot of the flow table and the generation of that slot when the flow was
//! admitted. Freeing a slot bumps its generation, so an id kept by the host after its flow closed
//! (a late completion handler, a forged value from C) no longer matches and is refused instead of
//! touching whichever flow reuses the slot.

use core::fmt;

/// The identity of one admitted flow: a slot index and the slot's generation at admission.
///
/// Ids are cheap to copy and compare. [`FlowId::to_raw`] packs one into a `u64` for hosts that
/// keep it in a C field or a dictionary; the raw value 0 is never a valid id, so a host may use 0
/// as "no flow".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FlowId {
    index: u32,
    generation: u32,
}

impl FlowId {
    /// The id with slot `index` and `generation`; only the governor mints valid ones.
    pub(crate) const fn new(index: u32, generation: u32) -> FlowId {
        FlowId { index, generation }
    }

    /// The slot this flow occupies (or occupied), below the table's capacity.
    pub const fn index(self) -> u32 {
        self.index
    }

    /// The slot's generation when the flow was admitted; never 0 for an id the governor issued.
    pub const fn generation(self) -> u32 {
        self.generation
    }

    /// The id packed into a `u64`: generation in the high 32 bits, index in the low 32 bits.
    pub const fn to_raw(self) -> u64 {
        ((self.generation as u64) << 32) | self.index as u64
    }

    /// The id packed by [`FlowId::to_raw`]. Any value is accepted; the governor refuses ids it did
    /// not issue when they are used.
    pub const fn from_raw(raw: u64) -> FlowId {
        FlowId {
            index: raw as u32,
            generation: (raw >> 32) as u32,
        }
    }
}

impl fmt::Display for FlowId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "flow {}#{}", self.index, self.generation)
    }
}

/// The generation that follows `generation` when a slot is freed: wraps past `u32::MAX` to 1 so
/// that 0 is never issued.
pub(crate) const fn next_generation(generation: u32) -> u32 {
    if generation == u32::MAX {
        1
    } else {
        generation + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_round_trip_keeps_index_and_generation() {
        let id = FlowId::new(7, 0xdead_beef);
        assert_eq!(id.to_raw(), 0xdead_beef_0000_0007);
        assert_eq!(FlowId::from_raw(id.to_raw()), id);
        assert_eq!(FlowId::from_raw(u64::MAX).index(), u32::MAX);
        assert_eq!(FlowId::from_raw(u64::MAX).generation(), u32::MAX);
    }

    #[test]
    fn generation_wraps_past_zero() {
        assert_eq!(next_generation(1), 2);
        assert_eq!(next_generation(u32::MAX - 1), u32::MAX);
        assert_eq!(next_generation(u32::MAX), 1);
    }

    #[test]
    fn display_names_slot_and_generation() {
        assert_eq!(std::format!("{}", FlowId::new(3, 9)), "flow 3#9");
    }
}
