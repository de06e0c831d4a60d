//! Allocation audit of the lifecycle through the C ABI: `tidegate_lifecycle_new` allocates exactly
//! `tidegate_lifecycle_footprint` bytes, and nothing at all is allocated or freed across stop and
//! restart cycles and random inputs afterwards. (A binary of its own: the counters are global.)
//!
//! The counting allocator is this test binary's global allocator. It counts only on the thread
//! that enables it, so allocations by the test harness's own threads are not blamed on tidegate.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::ptr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use tidegate::*;

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static ALLOCATED_BYTES: AtomicU64 = AtomicU64::new(0);
static FREES: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

fn counting() -> bool {
    COUNTING.try_with(Cell::get).unwrap_or(false)
}

fn count_alloc(bytes: usize) {
    if counting() {
        ALLOCATIONS.fetch_add(1, Relaxed);
        ALLOCATED_BYTES.fetch_add(bytes as u64, Relaxed);
    }
}

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_alloc(layout.size());
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_alloc(layout.size());
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_alloc(new_size);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if counting() {
            FREES.fetch_add(1, Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn counts() -> (u64, u64, u64) {
    (
        ALLOCATIONS.load(Relaxed),
        ALLOCATED_BYTES.load(Relaxed),
        FREES.load(Relaxed),
    )
}

#[test]
fn lifecycle_creation_allocates_the_footprint_and_operation_allocates_nothing() {
    let mut config = tidegate_lifecycle_config_default();
    config.task_capacity = 40;
    let mut footprint = 0usize;
    let mut lifecycle = ptr::null_mut();
    // Scratch buffers are made before counting starts.
    let mut journal = vec![0u8; 4096];
    let mut journal_len = 0usize;
    let payload = [0x5Au8; 40];
    let mut effect = std::mem::MaybeUninit::uninit();
    let mut stats = std::mem::MaybeUninit::uninit();

    COUNTING.with(|c| c.set(true));
    // SAFETY: every pointer below is valid for the call; the handle is freed at the end.
    unsafe {
        assert_eq!(
            tidegate_lifecycle_footprint(&config, &mut footprint),
            TidegateStatus::Ok
        );
        let before = counts();
        assert_eq!(
            tidegate_lifecycle_new(&config, &mut lifecycle),
            TidegateStatus::Ok
        );
        let after_new = counts();
        assert_eq!(
            after_new.1 - before.1,
            footprint as u64,
            "tidegate_lifecycle_new allocates exactly the reported footprint"
        );

        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut now = 0u64;
        let mut generation = 0u64;
        let mut running = [0u64; 4];
        for _ in 0..300_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            now += state % 20_000;
            match state % 10 {
                0 => {
                    let (data, len) = if journal_len > 0 {
                        (journal.as_ptr(), journal_len)
                    } else {
                        (ptr::null(), 0)
                    };
                    let mut new_generation = 0;
                    if tidegate_lifecycle_on_start(lifecycle, now, data, len, &mut new_generation)
                        == TidegateStatus::Ok
                    {
                        generation = new_generation;
                    }
                }
                1 => {
                    tidegate_lifecycle_on_tunnel_started(lifecycle, now, generation);
                }
                2 => {
                    let mut outcome = TidegateStopOutcome::Stopping;
                    tidegate_lifecycle_on_stop(lifecycle, now, &mut outcome);
                }
                3 => {
                    tidegate_lifecycle_on_torn_down(lifecycle, now, generation);
                    tidegate_lifecycle_on_cancel(lifecycle, now, 3);
                }
                4 | 5 => {
                    let len = (state >> 16) as usize % payload.len();
                    let mut id = 0;
                    tidegate_lifecycle_register_task(
                        lifecycle,
                        now,
                        1,
                        payload.as_ptr(),
                        len,
                        &mut id,
                    );
                }
                6 => {
                    let slot = (state >> 24) as usize % running.len();
                    let task = running[slot];
                    if state & 0x100 == 0 {
                        tidegate_lifecycle_on_task_done(lifecycle, now, generation, task);
                    } else {
                        tidegate_lifecycle_on_task_failed(lifecycle, now, generation, task);
                    }
                }
                _ => {
                    tidegate_lifecycle_handle_timeout(lifecycle, now);
                    loop {
                        let status =
                            tidegate_lifecycle_poll_effect(lifecycle, now, effect.as_mut_ptr());
                        assert_eq!(status, TidegateStatus::Ok);
                        let effect = effect.assume_init_ref();
                        match effect.kind {
                            TidegateLifecycleEffectKind::None => break,
                            TidegateLifecycleEffectKind::RunTask => {
                                let slot = (effect.task_id as usize) % running.len();
                                running[slot] = effect.task_id;
                            }
                            TidegateLifecycleEffectKind::PersistJournal => {
                                let status = tidegate_lifecycle_write_journal(
                                    lifecycle,
                                    journal.as_mut_ptr(),
                                    journal.len(),
                                    &mut journal_len,
                                );
                                assert_eq!(status, TidegateStatus::Ok);
                                tidegate_lifecycle_on_journal_persisted(lifecycle, now, generation);
                            }
                            TidegateLifecycleEffectKind::DiscardJournal => journal_len = 0,
                            _ => {}
                        }
                    }
                    tidegate_lifecycle_stats(lifecycle, stats.as_mut_ptr());
                }
            }
        }
        let after_run = counts();
        assert_eq!(
            after_run, after_new,
            "no allocation, reallocation or free after creation"
        );
        tidegate_lifecycle_stats(lifecycle, stats.as_mut_ptr());
        let stats = stats.assume_init();
        assert!(stats.stops_completed > 100, "the run completed real stops");
        assert!(stats.tasks_carried_over > 0, "the run carried tasks over");
        assert!(
            stats.tasks_resumed > 0,
            "the run resumed tasks from journals"
        );
        tidegate_lifecycle_free(lifecycle);
    }
}
