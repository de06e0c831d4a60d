//! Placement: every handle lives in one block of memory, the handle first and its storage
//! (arenas, slot tables) after it, and the block is either allocated by `_new` or given by the
//! caller to `_init`.
//!
//! One [`Carver`] walk per engine ([`Placed::walk`]) both measures the block (`_footprint`) and
//! carves it (`_init`), so the size `_footprint` reports is the size `_init` uses, by
//! construction. `_new` places the handle the same way in a fresh heap block of that size.
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

use core::alloc::Layout;
use core::ffi::c_void;
use core::marker::PhantomData;
use core::ptr::NonNull;

use crate::boundary::{Handle, call_free, require_non_null, write_out};
use crate::status::TidegateStatus;

/// Who owns a handle's block: `_free` deallocates an owned one and leaves the caller's alone.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Memory {
    /// Allocated by `_new` with this layout.
    #[cfg(feature = "std")]
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
        unsafe { core::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T> AsMut<[T]> for Region<T> {
    fn as_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `as_ref`; the borrow is tied to `&mut self`, so it is the only one live.
        unsafe { core::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
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
    pub(crate) fn array<T: Clone>(
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
                unsafe { ptr.as_ptr().add(index).write(fill.clone()) };
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

/// An engine handle the C ABI places in one block. Each engine says how its C configuration is
/// checked, what storage it carves after the handle, and how the handle is built; the bodies of
/// every `_footprint`, `_new` and `_init` are [`footprint`], [`new`] and [`init`].
pub(crate) trait Placed: Handle + Sized {
    /// The configuration struct C passes in.
    type CConfig;
    /// The checked configuration.
    type Config;
    /// The storage carved after the handle.
    type Storage;

    /// Check the C configuration, naming the first problem in its status.
    fn check(config: &Self::CConfig) -> Result<Self::Config, TidegateStatus>;

    /// Carve (or, while measuring, only size) the storage a handle with `config` needs.
    fn walk(config: &Self::Config, carver: &mut Carver) -> Result<Self::Storage, TidegateStatus>;

    /// The handle over `storage`, created at `now_us` (engines without a clock ignore it), owned
    /// as `memory` says.
    fn build(
        config: Self::Config,
        now_us: u64,
        storage: Self::Storage,
        memory: Memory,
    ) -> Result<Self, TidegateStatus>;
}

/// The body of every `_footprint`: the size and alignment of the block a handle with `config`
/// lives in.
///
/// # Safety
/// `config` must be NULL or valid for reading; `out_size` and `out_align` must be NULL or valid
/// for writing.
pub(crate) unsafe fn footprint<H: Placed>(
    config: *const H::CConfig,
    out_size: *mut usize,
    out_align: *mut usize,
) -> TidegateStatus {
    call_free(|| {
        // SAFETY: NULL or valid by the caller's contract.
        let config = unsafe { config.as_ref() }.ok_or(TidegateStatus::NullArgument)?;
        require_non_null([out_size.cast_const().cast(), out_align.cast_const().cast()])?;
        let layout = measure::<H>(&H::check(config)?)?;
        // SAFETY: both checked non-NULL above and valid by the caller's contract.
        unsafe {
            write_out(out_size, layout.size())?;
            write_out(out_align, layout.align())
        }
    })
}

/// The body of every `_new`: allocate a block of the footprint and place a handle in it.
///
/// # Safety
/// `config` must be NULL or valid for reading; `out` must be NULL or valid for writing.
#[cfg(feature = "std")]
pub(crate) unsafe fn new<H: Placed>(
    config: *const H::CConfig,
    now_us: u64,
    out: *mut *mut H,
) -> TidegateStatus {
    call_free(|| {
        // SAFETY: NULL or valid by the caller's contract.
        let config = unsafe { config.as_ref() }.ok_or(TidegateStatus::NullArgument)?;
        require_non_null([out.cast_const().cast()])?;
        let config = H::check(config)?;
        let layout = measure::<H>(&config)?;
        // The layout starts with `H`, which is never zero-sized (it holds the poison flag).
        debug_assert!(layout.size() > 0);
        // SAFETY: `layout` has a non-zero size.
        let block = NonNull::new(unsafe { std::alloc::alloc(layout) })
            .ok_or(TidegateStatus::OutOfMemory)?;
        // SAFETY: a fresh allocation of `layout`, used by nothing else.
        let placed = unsafe { place(block, layout, Memory::Owned(layout), config, now_us) };
        match placed {
            // SAFETY: `out` was checked non-NULL and is valid by the caller's contract.
            Ok(handle) => unsafe { write_out(out, handle.as_ptr()) },
            Err(status) => {
                // SAFETY: allocated above with `layout`, and no handle was placed in it.
                unsafe { std::alloc::dealloc(block.as_ptr(), layout) };
                Err(status)
            }
        }
    })
}

/// The body of every `_init`: place a handle in the caller's `len` bytes at `memory`, refusing
/// memory that is too small or misaligned without writing it.
///
/// # Safety
/// `config` must be NULL or valid for reading; `memory` must be NULL or valid for reading and
/// writing `len` bytes, used by nothing else until the handle is freed; `out` must be NULL or
/// valid for writing.
pub(crate) unsafe fn init<H: Placed>(
    config: *const H::CConfig,
    now_us: u64,
    memory: *mut c_void,
    len: usize,
    out: *mut *mut H,
) -> TidegateStatus {
    call_free(|| {
        // SAFETY: NULL or valid by the caller's contract.
        let config = unsafe { config.as_ref() }.ok_or(TidegateStatus::NullArgument)?;
        require_non_null([out.cast_const().cast()])?;
        let config = H::check(config)?;
        let block = NonNull::new(memory.cast::<u8>()).ok_or(TidegateStatus::NullArgument)?;
        let layout = measure::<H>(&config)?;
        if len < layout.size() {
            return Err(TidegateStatus::BufferTooSmall);
        }
        if block.as_ptr().addr() % layout.align() != 0 {
            return Err(TidegateStatus::Misaligned);
        }
        // SAFETY: the caller's memory, large enough and aligned for `layout`.
        let handle = unsafe { place(block, layout, Memory::Caller, config, now_us) }?;
        // SAFETY: `out` was checked non-NULL and is valid by the caller's contract.
        unsafe { write_out(out, handle.as_ptr()) }
    })
}

/// The block a handle with `config` lives in: the handle, then its storage.
fn measure<H: Placed>(config: &H::Config) -> Result<Layout, TidegateStatus> {
    let mut carver = Carver::measure::<H>();
    H::walk(config, &mut carver)?;
    Ok(carver.layout())
}

/// Carve `block` (measured as `layout`) for `config` and write the handle at its start.
///
/// # Safety
/// `block` must be valid for reading and writing `layout.size()` bytes, aligned to
/// `layout.align()`, and used by nothing else until the handle is freed.
unsafe fn place<H: Placed>(
    block: NonNull<u8>,
    layout: Layout,
    memory: Memory,
    config: H::Config,
    now_us: u64,
) -> Result<NonNull<H>, TidegateStatus> {
    let mut carver = Carver {
        layout: Layout::new::<H>(),
        block: Some(block),
    };
    let storage = H::walk(&config, &mut carver)?;
    debug_assert_eq!(carver.layout(), layout, "measuring and carving walk alike");
    let handle = H::build(config, now_us, storage, memory)?;
    let at = block.cast::<H>();
    // SAFETY: the block is large enough and aligned for `layout`, which starts with `H`.
    unsafe { at.as_ptr().write(handle) };
    Ok(at)
}

/// `_free`: drop the handle at `handle` and deallocate its block if `_new` allocated it.
///
/// # Safety
/// `handle` must be a live handle placed by [`place`], not used afterwards; `memory` must be the
/// [`Memory`] it was placed with.
#[cfg(feature = "std")]
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
#[cfg(feature = "std")]
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
    use std::cell::Cell;

    /// A handle with a 1500-byte arena on 64 bytes and seven `u32` slots after it.
    struct Probe {
        poison: Cell<bool>,
        memory: Memory,
        storage: (Region<u8>, Region<u32>),
    }

    impl Handle for Probe {
        fn poison(&self) -> &Cell<bool> {
            &self.poison
        }
        fn memory(&self) -> Memory {
            self.memory
        }
    }

    impl Placed for Probe {
        type CConfig = u32;
        type Config = u32;
        type Storage = (Region<u8>, Region<u32>);
        fn check(config: &u32) -> Result<u32, TidegateStatus> {
            Ok(*config)
        }
        fn walk(fill: &u32, c: &mut Carver) -> Result<Self::Storage, TidegateStatus> {
            Ok((c.bytes(1500, 64)?, c.array(7, *fill)?))
        }
        fn build(
            _: u32,
            _: u64,
            storage: Self::Storage,
            memory: Memory,
        ) -> Result<Self, TidegateStatus> {
            Ok(Probe {
                poison: Cell::new(false),
                memory,
                storage,
            })
        }
    }

    #[test]
    fn measuring_and_carving_agree_and_regions_are_aligned_and_initialised() {
        let (mut size, mut align) = (0, 0);
        // SAFETY: valid pointers.
        let status = unsafe { footprint::<Probe>(&0xABCD, &mut size, &mut align) };
        assert_eq!(status, TidegateStatus::Ok);
        assert_eq!(align, 64);
        let handle = size_of::<Probe>().next_multiple_of(64);
        assert_eq!(size, (handle + 1500 + 4 * 7_usize).next_multiple_of(64));
        let mut memory = vec![0xAAu8; size + 64];
        let offset = memory.as_ptr().align_offset(64);
        let start = memory[offset..].as_mut_ptr().cast::<c_void>();
        let mut probe: *mut Probe = std::ptr::null_mut();
        // SAFETY: `start + 1` has `size - 1` bytes after it inside `memory`: refused before use.
        unsafe {
            let skewed = start.byte_add(1);
            assert_eq!(
                init(&0xABCD, 0, start, size - 1, &mut probe),
                TidegateStatus::BufferTooSmall
            );
            assert_eq!(
                init(&0xABCD, 0, skewed, size - 1, &mut probe),
                TidegateStatus::BufferTooSmall
            );
        }
        assert!(probe.is_null());
        assert!(memory[offset..offset + size].iter().all(|&b| b == 0xAA));
        let mut big = vec![0u8; size + 128];
        let offset = big.as_ptr().align_offset(64) + 1;
        let misaligned = big[offset..].as_mut_ptr().cast::<c_void>();
        // SAFETY: `misaligned` has more than `size` bytes after it inside `big`.
        let status = unsafe { init(&0xABCD, 0, misaligned, size, &mut probe) };
        assert_eq!(status, TidegateStatus::Misaligned);
        // SAFETY: `start` has `size` bytes, used by nothing else until the end of the test.
        let status = unsafe { init(&0xABCD, 0, start, size, &mut probe) };
        assert_eq!(status, TidegateStatus::Ok);
        assert_eq!(probe.cast::<c_void>(), start);
        // SAFETY: placed above in live memory.
        let (bytes, slots) = unsafe { &(*probe).storage };
        assert_eq!(bytes.base().addr() % 64, 0);
        assert!(bytes.as_ref().iter().all(|&b| b == 0));
        assert!(slots.as_ref().iter().all(|&s| s == 0xABCD));
        // SAFETY: live; the memory is the caller's, which `free` leaves alone.
        unsafe { free(probe) };
        let mut owned: *mut Probe = std::ptr::null_mut();
        // SAFETY: valid pointers; freed once below.
        unsafe {
            assert_eq!(new(&7, 0, &mut owned), TidegateStatus::Ok);
            free(owned);
        }
    }
}
