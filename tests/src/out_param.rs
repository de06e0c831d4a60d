//! Out-parameters that prove a failing C call wrote nothing.
//!
//! The C ABI promises that out-parameters are written only on success. [`Out`] fills the
//! storage of an out-parameter with a byte pattern before the call; [`Out::untouched`] then
//! checks every byte is still that pattern, whatever the type (enums and structs with padding
//! included), without ever reading the storage as a `T`.

use std::mem::{MaybeUninit, size_of};

/// The byte every [`Out`] starts filled with.
pub const SENTINEL: u8 = 0xA5;

/// Storage for one out-parameter of type `T`, pre-filled with [`SENTINEL`].
pub struct Out<T> {
    storage: MaybeUninit<T>,
}

impl<T> Out<T> {
    /// Fresh storage, every byte [`SENTINEL`].
    pub fn new() -> Self {
        let mut storage = MaybeUninit::<T>::uninit();
        // SAFETY: writes exactly `size_of::<T>()` bytes into the storage this value owns.
        unsafe {
            std::ptr::write_bytes(storage.as_mut_ptr().cast::<u8>(), SENTINEL, size_of::<T>())
        };
        Out { storage }
    }

    /// The pointer to pass to the C function.
    pub fn ptr(&mut self) -> *mut T {
        self.storage.as_mut_ptr()
    }

    /// Whether no byte of the storage was written since [`Out::new`]. Meant for calls expected
    /// to fail: after a successful write, padding bytes of `T` may be uninitialised.
    pub fn untouched(&self) -> bool {
        // SAFETY: every byte was initialised by `new`; a call that wrote nothing left them so
        // (the case this is for), and one that wrote a `T` replaced them with a value's bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts(self.storage.as_ptr().cast::<u8>(), size_of::<T>())
        };
        bytes.iter().all(|&b| b == SENTINEL)
    }

    /// The value a successful call wrote.
    ///
    /// # Safety
    /// A call must have written a valid `T` through [`Out::ptr`].
    pub unsafe fn value(&self) -> T
    where
        T: Copy,
    {
        // SAFETY: the caller guarantees a valid `T` was written.
        unsafe { self.storage.assume_init_read() }
    }
}

impl<T> Default for Out<T> {
    fn default() -> Self {
        Out::new()
    }
}
