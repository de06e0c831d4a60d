//! Allocation audit of Happy Eyeballs races and the connection budget through the C ABI:
//! `tidegate_budget_new` and `tidegate_eyeballs_new` allocate exactly their footprints, and
//! nothing at all is allocated or freed across many races' worth of mixed operations afterwards.
//!
//! A test binary of its own (not a test in `alloc_audit.rs`): the counters are global, so an
//! audit running at the same time in the same process would be blamed for the other's
//! allocations.
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

const RACES: usize = 32;

#[test]
fn creation_allocates_the_footprint_and_racing_allocates_nothing() {
    let budget_config = TidegateBudgetConfig {
        max_attempts_in_flight: 6,
        max_open_connections: 12,
        ..tidegate_budget_config_default()
    };
    let race_config = TidegateEyeballsConfig {
        attempt_timeout_micros: 400_000,
        budget_wait_micros: 300_000,
        ..tidegate_eyeballs_config_default()
    };
    let mut budget = ptr::null_mut();
    let mut races = [ptr::null_mut(); RACES];
    let addresses: Vec<TidegateSocketAddress> = (0..40u8)
        .map(|n| {
            let mut ip = [0u8; 16];
            let family = if n % 2 == 0 {
                ip[0] = 0x20;
                ip[15] = n;
                TidegateAddressFamily::Ipv6
            } else {
                ip[..4].copy_from_slice(&[192, 0, 2, n]);
                TidegateAddressFamily::Ipv4
            };
            TidegateSocketAddress {
                ip,
                port: 443,
                family: family as u8,
                scope_id: 0,
            }
        })
        .collect();
    let v6: Vec<_> = addresses.iter().copied().step_by(2).collect();
    let v4: Vec<_> = addresses.iter().copied().skip(1).step_by(2).collect();

    COUNTING.with(|c| c.set(true));
    // SAFETY: every pointer below is valid for the call; the handles are freed at the end.
    unsafe {
        let before = counts();
        assert_eq!(
            tidegate_budget_new(&budget_config, &mut budget),
            TidegateStatus::Ok
        );
        for race in &mut races {
            assert_eq!(
                tidegate_eyeballs_new(&race_config, 0, race),
                TidegateStatus::Ok
            );
        }
        let after_new = counts();
        assert_eq!(
            after_new.1 - before.1,
            (tidegate_budget_footprint() + RACES * tidegate_eyeballs_footprint()) as u64,
            "creation allocates exactly the reported footprints"
        );

        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut now = 0u64;
        let mut actions = 0u64;
        let mut started = 0u64;
        for _ in 0..300_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            now += state % 3_000;
            let race = races[(state >> 8) as usize % RACES];
            let index = (state >> 16) as usize % 20;
            let mut added = 0;
            match (state >> 24) % 10 {
                0 => {
                    let count = (state >> 32) as usize % 10;
                    let start = (state >> 40) as usize % 10;
                    let (family, list) = if state.is_multiple_of(2) {
                        (TidegateAddressFamily::Ipv6, &v6)
                    } else {
                        (TidegateAddressFamily::Ipv4, &v4)
                    };
                    let list = &list[start..start + count];
                    tidegate_eyeballs_on_resolved(
                        race,
                        now,
                        family as u32,
                        list.as_ptr(),
                        list.len(),
                        &mut added,
                    );
                }
                1 => {
                    tidegate_eyeballs_on_resolution_done(race, now);
                }
                2 => {
                    tidegate_eyeballs_on_attempt_connected(race, now, index);
                }
                3 | 4 => {
                    // ECONNREFUSED, ENETUNREACH, EMFILE on Linux.
                    let errno = [111, 101, 24][(state >> 32) as usize % 3];
                    tidegate_eyeballs_on_attempt_failed(race, now, index, errno);
                }
                5 => {
                    tidegate_eyeballs_handle_timeout(race, now);
                    tidegate_budget_handle_timeout(budget, now);
                }
                6 => {
                    tidegate_budget_on_connection_closed(budget, now);
                }
                7 if state.is_multiple_of(16) => {
                    tidegate_eyeballs_on_abort(race, now);
                }
                _ => {
                    let mut deadline = 0;
                    tidegate_eyeballs_poll_timeout(race, &mut deadline);
                    let mut status = std::mem::MaybeUninit::uninit();
                    tidegate_eyeballs_status(race, status.as_mut_ptr());
                }
            }
            // Drain every race: an ending attempt may unblock another race.
            for &race in &races {
                loop {
                    let mut action = std::mem::MaybeUninit::<TidegateEyeballsAction>::uninit();
                    let status = tidegate_eyeballs_poll_action(race, budget, action.as_mut_ptr());
                    assert_eq!(status, TidegateStatus::Ok);
                    let action = action.assume_init();
                    if action.kind == TidegateEyeballsActionKind::None {
                        break;
                    }
                    if action.kind == TidegateEyeballsActionKind::StartAttempt {
                        started += 1;
                    }
                    actions += 1;
                }
            }
        }
        let after_run = counts();
        assert_eq!(
            after_run, after_new,
            "no allocation, reallocation or free after creation"
        );
        assert!(started > 20, "the run started real attempts ({started})");
        assert!(actions > started, "the run produced other actions too");
        for race in races {
            tidegate_eyeballs_free(race);
        }
        tidegate_budget_free(budget);
    }
}
