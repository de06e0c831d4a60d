//! The panic handler of the `no_std` static library.
//!
//! A static library built without `std` must contain a `#[panic_handler]`, and a C host cannot
//! write one in Rust. This one calls the hook the host registers with
//! [`tidegate_set_panic_hook`] (typically: log, then reset the device) and, if the hook returns
//! or none is registered, spins forever. There is no unwinding on bare metal: a panic never
//! returns to the caller, so no call returns `TIDEGATE_STATUS_PANIC` and no handle is poisoned.
//!
//! No panic is reachable in the release library: the `no-panic-proof` feature replaces the hook
//! call with a call to `tidegate_no_panic_proof_failed`, a symbol nothing defines, and
//! `tests/embedded/run.sh` links a program calling every function against that build, so any
//! panic path the optimiser keeps fails the link.

use core::sync::atomic::{AtomicPtr, Ordering};

/// The hook registered by [`tidegate_set_panic_hook`], or NULL.
static HOOK: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());

/// Registers `hook`, called when the library panics (on bare metal, where there is no
/// unwinding): a panic means a bug in tidegate, and the hook should record it and reset the
/// device. If the hook returns, the library spins forever. NULL removes the hook. Only in a
/// build without the standard library.
#[unsafe(no_mangle)]
pub extern "C" fn tidegate_set_panic_hook(hook: Option<extern "C" fn()>) {
    let raw = hook.map_or(core::ptr::null_mut(), |hook| hook as *mut ());
    HOOK.store(raw, Ordering::Release);
}

/// Panics, so a test can check that the panic handler calls the hook. Not part of the C API.
#[cfg(feature = "testing-panic")]
#[unsafe(no_mangle)]
pub extern "C" fn tidegate_testing_panic() {
    panic!("tidegate_testing_panic");
}

#[cfg(not(feature = "no-panic-proof"))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    let raw = HOOK.load(Ordering::Acquire);
    if !raw.is_null() {
        // SAFETY: only `tidegate_set_panic_hook` stores a non-NULL value, and it stores an
        // `extern "C" fn()`.
        let hook: extern "C" fn() =
            unsafe { core::mem::transmute::<*mut (), extern "C" fn()>(raw) };
        hook();
    }
    loop {
        core::hint::spin_loop();
    }
}

#[cfg(feature = "no-panic-proof")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    unsafe extern "C" {
        /// Defined nowhere: a reference to it that survives optimisation fails the link.
        safe fn tidegate_no_panic_proof_failed() -> !;
    }
    tidegate_no_panic_proof_failed()
}
