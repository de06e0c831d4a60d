//! `Arena`: the heap storage of a ring's packet bytes, owned through a raw pointer.
//!
//! A packet view handed to C points into a ring's arena and must stay valid while later calls
//! write other packets into the same arena. With the arena held as a `Box<[u8]>`, every push
//! reborrows the whole box mutably, and under Rust's aliasing model (Stacked Borrows, which
//! Miri checks) that reborrow invalidates every pointer derived from an earlier shared borrow,
//! so a view read after a push would be undefined behaviour as far as Rust is concerned.
//!
//! `Arena` keeps the allocation as the raw pointer the allocator returned. Its `AsRef` and
//! `AsMut` build slices from that pointer on each call, and [`rebase`] gives a view the
//! base pointer's own provenance instead of the provenance of the short-lived slice the ring
//! returned.
//!
//! The allocation starts on a boundary of the ring's packet alignment, so packets sit at the
//! same offsets on every run: the ring aligns packet addresses, and with an aligned base the
//! layout, and every byte level the tunnel reports, depends on the packets alone. Writes through the mutable slices never invalidate the base pointer, so views
//! derived from it stay valid until the arena is dropped; the ring itself guarantees that the
//! bytes a view covers are not written while the packet is in flight.

use std::alloc::Layout;
use std::ptr::NonNull;

/// A fixed heap arena of zeroed bytes, freed on drop. Not `Send` or `Sync` by itself; the
/// handles that own one are only ever used through raw pointers from C.
pub(crate) struct Arena {
    base: NonNull<u8>,
    len: usize,
    /// The allocation's layout, `None` for an empty arena, which owns no allocation.
    layout: Option<Layout>,
}

/// The allocator could not provide an arena.
#[derive(Debug)]
pub(crate) struct OutOfMemory;

impl Arena {
    /// Allocate `len` zeroed bytes starting on an `align` boundary (a power of two).
    pub(crate) fn zeroed(len: usize, align: usize) -> Result<Arena, OutOfMemory> {
        let layout = Layout::from_size_align(len, align).map_err(|_| OutOfMemory)?;
        if len == 0 {
            // No allocation: a dangling, aligned pointer is a valid base for an empty slice.
            let base = NonNull::new(std::ptr::without_provenance_mut(align)).ok_or(OutOfMemory)?;
            return Ok(Arena {
                base,
                len,
                layout: None,
            });
        }
        // SAFETY: `layout` has a non-zero size, checked above.
        let base = NonNull::new(unsafe { std::alloc::alloc(layout) }).ok_or(OutOfMemory)?;
        // Zero it by writing every byte, not with `alloc_zeroed`: fresh pages from the kernel
        // would then be left untouched, and the memory would become resident only as packets
        // arrive, after the provider already looked settled.
        // SAFETY: `base` is a fresh allocation of `len` bytes.
        unsafe { base.as_ptr().write_bytes(0, len) };
        Ok(Arena {
            base,
            len,
            layout: Some(layout),
        })
    }

    /// The arena's base pointer, with the provenance of the whole allocation. Keep a copy to
    /// [`rebase`] views on after the arena moved into a ring.
    pub(crate) fn base(&self) -> *const u8 {
        self.base.as_ptr().cast_const()
    }
}

/// A pointer to the address of `inside` (a pointer into the arena whose [`Arena::base`] is
/// `base`, taken from a slice the ring handed out) that carries the arena's own provenance, so
/// it stays valid across later writes elsewhere in the arena.
pub(crate) fn rebase(base: *const u8, inside: *const u8) -> *const u8 {
    base.with_addr(inside.addr())
}

impl AsRef<[u8]> for Arena {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `base` is the start of a live allocation of `len` initialised bytes owned by
        // this arena; the returned borrow is tied to `&self`, so no `&mut` from `as_mut` is live.
        unsafe { std::slice::from_raw_parts(self.base.as_ptr(), self.len) }
    }
}

impl AsMut<[u8]> for Arena {
    fn as_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_ref`; the borrow is tied to `&mut self`, so it is the only one live.
        unsafe { std::slice::from_raw_parts_mut(self.base.as_ptr(), self.len) }
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        if let Some(layout) = self.layout {
            // SAFETY: `base` was returned by `alloc` with exactly this layout in
            // `zeroed`, and it is freed once, here.
            unsafe { std::alloc::dealloc(self.base.as_ptr(), layout) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arenas_are_zeroed_and_start_on_their_alignment() {
        for align in [1, 64, 4096] {
            let mut arena = Arena::zeroed(1500, align).unwrap();
            assert_eq!(arena.base().addr() % align, 0);
            assert!(arena.as_ref().iter().all(|&b| b == 0));
            arena.as_mut().fill(7);
            assert_eq!(arena.as_ref().len(), 1500);
        }
        let empty = Arena::zeroed(0, 64).unwrap();
        assert!(empty.as_ref().is_empty());
    }
}
