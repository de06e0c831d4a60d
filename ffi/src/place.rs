//! Placement: every handle lives in one block of memory, the handle first and its storage
//! (arenas, slot tables) after it, and the block is either allocated by `_new` or given by the
//! caller to `_init`.
//!
//! One [`Carver`] walk per engine both measures the block (`_footprint`) and carves it (`_init`),
//! so the size `_footprint` reports is the size `_init` uses, by construction. `_new` is
//! `_init` on a fresh heap block of that size.
//!
//! # Regions and provenance
//!
//! A packet view handed to C points into an arena and must stay valid while later calls write
//! other packets into the same arena. With the arena held as a `&mut [u8]` or a `Box<[u8]>`,
//! every push would reborrow the whole arena mutably, and under Stacked Borrows (which Miri
//! checks) that reborrow invalidates every pointer derived from an earlier borrow. A [`Region`]
//! keeps the raw pointer carved from the block instead, and builds a slice from it on each
//! `as_ref`/`as_mut`; [`rebase`] gives a view the region's own provenance instead of the
//! provenance of the short-lived slice the ring returned.
//!
//! The handle is reached through `&mut H` for each call, which covers the handle's bytes only;
//! the regions lie after it in the block, so those borrows never overlap them.

use std::alloc::Layout;
use std::marker::PhantomData;
use std::ptr::NonNull;

use crate::boundary::{Handle, write_out};
use crate::status::TidegateStatus;

/// Who owns a handle's block: `_free` deallocates an owned one and leaves the caller's alone.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Memory {
    /// Allocated by `_new` with this layout.
    Owned(Layout),
    /// Given by the caller to `_init`; the caller reuses it after `_free`.
    Caller,
}

/// A slice of `len` `T`s inside a handle's block, owned by the handle through a raw pointer. It
/// frees nothing: the block is released as a whole.
pub(crate) struct Region<T> {
    ptr: NonNull<T>,
    len: usize,
    _owns: PhantomData<T>,
}

impl<T> Region<T> {
    /// The region's first element, with the provenance of the whole block.
    pub(crate) fn base(&self) -> *const T {
        self.ptr.as_ptr().cast_const()
    }
}

impl<T> AsRef<[T]> for Region<T> {
    fn as_ref(&self) -> &[T] {
        // SAFETY: `ptr` is the start of `len` initialised `T`s inside a live block that only this
        // region reaches (the carver hands out disjoint regions); the borrow is tied to `&self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T> AsMut<[T]> for Region<T> {
    fn as_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `as_ref`; the borrow is tied to `&mut self`, so it is the only one live.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

/// A pointer to the address of `inside` (a pointer into the region whose [`Region::base`] is
/// `base`, taken from a slice the engine handed out) that carries the region's own provenance,
/// so it stays valid across later writes elsewhere in the region.
pub(crate) fn rebase(base: *const u8, inside: *const u8) -> *const u8 {
    base.with_addr(inside.addr())
}

/// Walks a handle's block: the handle `H` at offset 0, then each region in the order asked.
/// Measuring (no block) only grows the layout; carving also initialises each region.
pub(crate) struct Carver {
    layout: Layout,
    /// The block's start, or `None` while measuring.
    block: Option<NonNull<u8>>,
}

impl Carver {
    /// A walk that only measures, starting with the handle `H`.
    pub(crate) fn measure<H>() -> Carver {
        Carver {
            layout: Layout::new::<H>(),
            block: None,
        }
    }

    /// A `len`-element region, every element set to `fill`; a dangling one while measuring.
    pub(crate) fn array<T: Copy>(
        &mut self,
        len: usize,
        fill: T,
    ) -> Result<Region<T>, TidegateStatus> {
        let array = Layout::array::<T>(len).map_err(|_| TidegateStatus::OutOfMemory)?;
        let ptr = self.next(array)?.cast::<T>();
        if self.block.is_some() {
            for index in 0..len {
                // SAFETY: `ptr` starts `len` properly aligned `T`s inside the caller's block
                // (checked by `carve` against the measured layout).
                unsafe { ptr.as_ptr().add(index).write(fill) };
            }
        }
        Ok(Region {
            ptr,
            len,
            _owns: PhantomData,
        })
    }

    /// A `len`-byte region starting on an `align` boundary (a power of two), zeroed by writing
    /// every byte, so the memory is resident from the start and not only once packets arrive.
    pub(crate) fn bytes(&mut self, len: usize, align: usize) -> Result<Region<u8>, TidegateStatus> {
        let bytes = Layout::from_size_align(len, align).map_err(|_| TidegateStatus::OutOfMemory)?;
        let ptr = self.next(bytes)?;
        if self.block.is_some() {
            // SAFETY: `ptr` starts `len` bytes inside the caller's block.
            unsafe { ptr.as_ptr().write_bytes(0, len) };
        }
        Ok(Region {
            ptr,
            len,
            _owns: PhantomData,
        })
    }

    /// The block's layout, padded to its alignment.
    pub(crate) fn layout(&self) -> Layout {
        self.layout.pad_to_align()
    }

    fn next(&mut self, region: Layout) -> Result<NonNull<u8>, TidegateStatus> {
        let (layout, offset) = self
            .layout
            .extend(region)
            .map_err(|_| TidegateStatus::OutOfMemory)?;
        self.layout = layout;
        Ok(match self.block {
            // SAFETY: `carve` checked that the block holds the whole measured layout, which this
            // walk repeats step by step, so `offset` lies inside it.
            Some(block) => unsafe { block.add(offset) },
            None => NonNull::dangling(),
        })
    }
}

/// The size and alignment of the block `walk` carves, written to the out-parameters of a
/// `_footprint` function.
///
/// # Safety
/// `out_size` and `out_align` must be NULL or valid for writing.
pub(crate) unsafe fn footprint<H, S>(
    out_size: *mut usize,
    out_align: *mut usize,
    walk: impl FnOnce(&mut Carver) -> Result<S, TidegateStatus>,
) -> Result<(), TidegateStatus> {
    crate::boundary::require_non_null([
        out_size.cast_const().cast(),
        out_align.cast_const().cast(),
    ])?;
    let mut carver = Carver::measure::<H>();
    walk(&mut carver)?;
    let layout = carver.layout();
    // SAFETY: both checked non-NULL above and valid by the caller's contract.
    unsafe {
        write_out(out_size, layout.size())?;
        write_out(out_align, layout.align())
    }
}

/// Place a handle in `len` bytes at `memory` (`_init`): measure with `walk`, refuse memory that
/// is too small or misaligned, then walk again carving the block and write the handle `build`
/// makes from the storage at its start. Returns the handle; nothing is written on error.
///
/// # Safety
/// `memory` must be NULL or valid for reading and writing `len` bytes, not used by anything else
/// until the handle is freed.
pub(crate) unsafe fn carve<H, S>(
    memory: *mut u8,
    len: usize,
    owner: Memory,
    walk: impl Fn(&mut Carver) -> Result<S, TidegateStatus>,
    build: impl FnOnce(S, Memory) -> Result<H, TidegateStatus>,
) -> Result<NonNull<H>, TidegateStatus> {
    let block = NonNull::new(memory).ok_or(TidegateStatus::NullArgument)?;
    let mut measure = Carver::measure::<H>();
    walk(&mut measure)?;
    let layout = measure.layout();
    if len < layout.size() {
        return Err(TidegateStatus::BufferTooSmall);
    }
    if block.as_ptr().addr() % layout.align() != 0 {
        return Err(TidegateStatus::Misaligned);
    }
    let mut carver = Carver {
        layout: Layout::new::<H>(),
        block: Some(block),
    };
    let storage = walk(&mut carver)?;
    debug_assert_eq!(
        carver.layout(),
        layout,
        "the two walks of one config carve alike"
    );
    let handle = build(storage, owner)?;
    let at = block.cast::<H>();
    // SAFETY: the block is large enough and aligned for `layout`, which starts with `H`.
    unsafe { at.as_ptr().write(handle) };
    Ok(at)
}

/// `_new`: allocate a block of the measured size and [`carve`] it.
pub(crate) fn allocate<H, S>(
    walk: impl Fn(&mut Carver) -> Result<S, TidegateStatus>,
    build: impl FnOnce(S, Memory) -> Result<H, TidegateStatus>,
) -> Result<NonNull<H>, TidegateStatus> {
    let mut measure = Carver::measure::<H>();
    walk(&mut measure)?;
    let layout = measure.layout();
    // The layout starts with `H`, which is never zero-sized (it holds at least the poison flag).
    debug_assert!(layout.size() > 0);
    // SAFETY: `layout` has a non-zero size.
    let memory = unsafe { std::alloc::alloc(layout) };
    if memory.is_null() {
        return Err(TidegateStatus::OutOfMemory);
    }
    // SAFETY: `memory` is a fresh allocation of `layout`, used by nothing else.
    let placed = unsafe { carve(memory, layout.size(), Memory::Owned(layout), walk, build) };
    if placed.is_err() {
        // SAFETY: allocated above with `layout`, and no handle was placed in it.
        unsafe { std::alloc::dealloc(memory, layout) };
    }
    placed
}

/// `_free`: drop the handle at `handle` and deallocate its block if `_new` allocated it.
///
/// # Safety
/// `handle` must be a live handle placed by [`carve`], not used afterwards; `memory` must be the
/// [`Memory`] it was placed with.
pub(crate) unsafe fn release<H>(handle: NonNull<H>, memory: Memory) {
    // Handles own no resources beyond their block, but a panic must never cross into C.
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: `handle` is live and dropped once, by the caller's contract.
        unsafe { handle.as_ptr().drop_in_place() };
    }));
    if let Memory::Owned(layout) = memory {
        // SAFETY: `_new` allocated the block with `layout`, and it is freed once, here.
        unsafe { std::alloc::dealloc(handle.as_ptr().cast(), layout) };
    }
}

/// The body of every `_free`: NULL is a no-op; otherwise drop the handle and release its block.
///
/// # Safety
/// `handle` must be NULL or a live handle from the engine's `_new` or `_init`, with no other call
/// on it running, and not used afterwards.
pub(crate) unsafe fn free<H: Handle>(handle: *mut H) {
    let Some(handle) = NonNull::new(handle) else {
        return;
    };
    // SAFETY: a live handle, by the caller's contract.
    let memory = unsafe { handle.as_ref() }.memory();
    // SAFETY: live, placed by `carve` with `memory`, and not used again.
    unsafe { release(handle, memory) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measuring_and_carving_agree_and_regions_are_aligned_and_initialised() {
        #[repr(C)]
        struct Handle(u8);
        let walk = |c: &mut Carver| {
            let bytes = c.bytes(1500, 64)?;
            let slots = c.array(7, 0xABCD_u32)?;
            Ok((bytes, slots))
        };
        let mut size = 0;
        let mut align = 0;
        // SAFETY: valid out-pointers.
        unsafe { footprint::<Handle, _>(&mut size, &mut align, walk) }.unwrap();
        assert_eq!(align, 64);
        assert_eq!(size, (64 + 1500 + 4 * 7_usize).next_multiple_of(64));
        let mut memory = vec![0xAAu8; size + 64];
        let offset = memory.as_ptr().align_offset(64);
        let start = memory[offset..].as_mut_ptr();
        // SAFETY: `start` has `size` bytes, used by nothing else until the end of the test.
        let placed = unsafe {
            carve(start, size, Memory::Caller, walk, |(bytes, slots), _| {
                assert_eq!(bytes.base().addr() % 64, 0);
                assert!(bytes.as_ref().iter().all(|&b| b == 0));
                assert!(slots.as_ref().iter().all(|&s| s == 0xABCD));
                Ok(Handle(7))
            })
        }
        .unwrap();
        // SAFETY: placed above in live memory.
        assert_eq!(unsafe { placed.as_ref() }.0, 7);
        // SAFETY: as above; the memory is the caller's.
        unsafe { release(placed, Memory::Caller) };
        // SAFETY: `start + 1` is inside `memory`, with `size - 1` bytes after it.
        let small = unsafe { carve(start, size - 1, Memory::Caller, walk, |_, _| Ok(Handle(1))) };
        assert_eq!(small.err(), Some(TidegateStatus::BufferTooSmall));
        // SAFETY: `start + 1` has `size - 1` bytes after it inside `memory`; refused before use.
        let skewed = unsafe {
            carve(start.add(1), size - 1, Memory::Caller, walk, |_, _| {
                Ok(Handle(1))
            })
        };
        assert_eq!(skewed.err(), Some(TidegateStatus::BufferTooSmall));
        let mut big = vec![0u8; size + 128];
        let offset = big.as_ptr().align_offset(64) + 1;
        let misaligned = big[offset..].as_mut_ptr();
        // SAFETY: `misaligned` has more than `size` bytes after it inside `big`.
        let skewed = unsafe { carve(misaligned, size, Memory::Caller, walk, |_, _| Ok(Handle(1))) };
        assert_eq!(skewed.err(), Some(TidegateStatus::Misaligned));
    }
}
