//! `Arena`: the heap storage of a ring's packet bytes, owned through a raw pointer.
//!
//! A packet view handed to C points into a ring's arena and must stay valid while later calls
//! write other packets into the same arena. With the arena held as a `Box<[u8]>`, every push
//! reborrows the whole box mutably, and under Rust's aliasing model (Stacked Borrows, which
//! Miri checks) that reborrow invalidates every pointer derived from an earlier shared borrow,
//! so a view read after a push would be undefined behaviour as far as Rust is concerned.
//!
//! `Arena` keeps the allocation as the raw pointer `Box::into_raw` returned. Its `AsRef` and
//! `AsMut` build slices from that pointer on each call, and [`rebase`] gives a view the
//! base pointer's own provenance instead of the provenance of the short-lived slice the ring
//! returned. Writes through the mutable slices never invalidate the base pointer, so views
//! derived from it stay valid until the arena is dropped; the ring itself guarantees that the
//! bytes a view covers are not written while the packet is in flight.

use std::ptr::NonNull;

/// A fixed heap arena of bytes, freed on drop. Not `Send` or `Sync` by itself; the handles that
/// own one are only ever used through raw pointers from C.
pub(crate) struct Arena {
    base: NonNull<u8>,
    len: usize,
}

impl Arena {
    /// Take ownership of `bytes`.
    pub(crate) fn new(bytes: Box<[u8]>) -> Arena {
        let len = bytes.len();
        let base = NonNull::from(Box::leak(bytes)).cast::<u8>();
        Arena { base, len }
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
        let slice = std::ptr::slice_from_raw_parts_mut(self.base.as_ptr(), self.len);
        // SAFETY: `slice` is exactly the pointer and length `Box::leak` gave up in `new`, and it
        // is reclaimed once, here.
        drop(unsafe { Box::from_raw(slice) });
    }
}
