//! The one way across the C boundary.
//!
//! Every exported function body runs inside [`call`] or [`call_mut`] (for handles) or
//! [`call_free`] (for plain functions). They turn NULL pointers into
//! [`TidegateStatus::NullArgument`], catch any panic so it never unwinds into C (which is
//! undefined behaviour and, in a Network Extension, takes the device's networking down), and
//! poison the handle a panic came through: its state may be half-updated, so from then on only
//! `_free` works and every other call returns [`TidegateStatus::Poisoned`].

use core::cell::Cell;

use crate::status::TidegateStatus;

/// Run `body`, catching a panic (`Err(())`). Without `std` there is no unwinding: a panic ends
/// in the panic handler and never returns here.
fn catching<T>(body: impl FnOnce() -> T) -> Result<T, ()> {
    #[cfg(feature = "std")]
    {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).map_err(drop)
    }
    #[cfg(not(feature = "std"))]
    {
        Ok(body())
    }
}

/// A handle type that can be poisoned by a panic.
pub(crate) trait Handle {
    /// The poison flag; a `Cell` so that read-only calls can set it too.
    fn poison(&self) -> &Cell<bool>;
    /// Who owns the handle's block: `_free` deallocates it only if `_new` allocated it.
    #[cfg(feature = "std")]
    fn memory(&self) -> crate::place::Memory;
}

/// Run `body` on the handle behind `handle` for a read-only call.
///
/// # Safety
/// `handle` must be NULL or a pointer returned by the handle's `_new` or `_init` and not yet freed, with no
/// other call on the same handle running concurrently.
pub(crate) unsafe fn call<H: Handle>(
    handle: *const H,
    body: impl FnOnce(&H) -> Result<(), TidegateStatus>,
) -> TidegateStatus {
    // SAFETY: the caller guarantees `handle` is NULL or valid, with no concurrent mutation.
    let Some(handle) = (unsafe { handle.as_ref() }) else {
        return TidegateStatus::NullArgument;
    };
    if handle.poison().get() {
        return TidegateStatus::Poisoned;
    }
    match catching(|| body(handle)) {
        Ok(result) => into_status(result),
        Err(_) => {
            handle.poison().set(true);
            TidegateStatus::Panic
        }
    }
}

/// Run `body` on the handle behind `handle` for a mutating call.
///
/// # Safety
/// `handle` must be NULL or a pointer returned by the handle's `_new` or `_init` and not yet freed, with no
/// other call on the same handle running concurrently.
pub(crate) unsafe fn call_mut<H: Handle>(
    handle: *mut H,
    body: impl FnOnce(&mut H) -> Result<(), TidegateStatus>,
) -> TidegateStatus {
    // SAFETY: the caller guarantees `handle` is NULL or valid and not used concurrently.
    let Some(handle_ref) = (unsafe { handle.as_mut() }) else {
        return TidegateStatus::NullArgument;
    };
    if handle_ref.poison().get() {
        return TidegateStatus::Poisoned;
    }
    match catching(|| body(handle_ref)) {
        Ok(result) => into_status(result),
        Err(_) => {
            // SAFETY: the closure's exclusive borrow ended when it unwound; `handle` is still
            // valid by the caller's contract.
            unsafe { (*handle).poison().set(true) };
            TidegateStatus::Panic
        }
    }
}

/// Run `body`, a call that takes no handle, catching panics.
pub(crate) fn call_free(body: impl FnOnce() -> Result<(), TidegateStatus>) -> TidegateStatus {
    catching(body).map_or(TidegateStatus::Panic, into_status)
}

/// `*out = value`, or [`TidegateStatus::NullArgument`] if `out` is NULL.
///
/// # Safety
/// `out` must be NULL or valid for writing a `T`.
pub(crate) unsafe fn write_out<T>(out: *mut T, value: T) -> Result<(), TidegateStatus> {
    if out.is_null() {
        return Err(TidegateStatus::NullArgument);
    }
    // SAFETY: `out` is non-NULL and, by the caller's contract, valid for a write of `T`.
    unsafe { out.write(value) };
    Ok(())
}

/// Check that every out-pointer is non-NULL before a call does any work, so a NULL out-param
/// never leaves a half-done operation behind, and gets `NULL_ARGUMENT` whatever else is wrong
/// with the call (an invalid configuration, a missing journal): pointer checks come first.
pub(crate) fn require_non_null<const N: usize>(
    pointers: [*const (); N],
) -> Result<(), TidegateStatus> {
    if pointers.iter().any(|p| p.is_null()) {
        return Err(TidegateStatus::NullArgument);
    }
    Ok(())
}

/// The bytes `(data, len)` as a slice. `data` may be NULL only when `len` is 0.
///
/// # Safety
/// Unless NULL, `data` must be valid for reading `len` bytes, not mutated during the call.
pub(crate) unsafe fn bytes<'a>(data: *const u8, len: usize) -> Result<&'a [u8], TidegateStatus> {
    if data.is_null() {
        return if len == 0 {
            Ok(&[])
        } else {
            Err(TidegateStatus::NullArgument)
        };
    }
    slice_len_fits::<u8>(len)?;
    // SAFETY: `data` is non-NULL and valid for `len` bytes by the caller's contract, and `len`
    // bytes span at most `isize::MAX`.
    Ok(unsafe { core::slice::from_raw_parts(data, len) })
}

/// Refuse a count of `T`s no buffer can hold: a Rust slice spans at most `isize::MAX` bytes, so a
/// larger length (`SIZE_MAX`, a negative value cast to `size_t`) is a caller's bug, reported as
/// `INVALID_ARGUMENT` before any slice is formed instead of being undefined behaviour.
pub(crate) fn slice_len_fits<T>(count: usize) -> Result<(), TidegateStatus> {
    match count.checked_mul(size_of::<T>()) {
        Some(bytes) if bytes <= isize::MAX as usize => Ok(()),
        _ => Err(TidegateStatus::InvalidArgument),
    }
}

fn into_status(result: Result<(), TidegateStatus>) -> TidegateStatus {
    result.err().unwrap_or(TidegateStatus::Ok)
}
