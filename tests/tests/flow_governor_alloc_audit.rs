//! Allocation audit of the flow governor through the C ABI: `tidegate_flow_governor_new`
//! allocates exactly `tidegate_flow_governor_footprint` bytes, and nothing at all is allocated or
//! freed across a million mixed operations afterwards (admissions, evictions, relay accounting,
//! notifications, timeouts, bad ids).
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
fn flow_governor_creation_allocates_the_footprint_and_operation_allocates_nothing() {
    let mut policy = tidegate_flow_policy_default();
    policy.slots = 64;
    policy.max_flows = 48;
    policy.max_flows_per_app = 48;
    policy.max_flows_per_destination = 48;
    policy.max_connecting = 48;
    policy.idle_timeout_us = 200_000;
    policy.connect_timeout_us = 50_000;
    let mut footprint = 0usize;
    let mut governor = ptr::null_mut();
    // Scratch space is made before counting starts.
    let mut live: Vec<TidegateFlowId> = Vec::with_capacity(1024);
    let mut batch = vec![
        TidegateFlowNotification {
            kind: TidegateFlowNotificationKind::Close,
            close_reason: TidegateCloseReason::None,
            flow: 0,
        };
        32
    ];
    let mut stats = std::mem::MaybeUninit::uninit();
    let mut admission = std::mem::MaybeUninit::uninit();

    COUNTING.with(|c| c.set(true));
    // SAFETY: every pointer below is valid for the call; the handle is freed at the end.
    unsafe {
        assert_eq!(
            tidegate_flow_governor_footprint(&policy, &mut footprint),
            TidegateStatus::Ok
        );
        let before = counts();
        assert_eq!(
            tidegate_flow_governor_new(&policy, 0, &mut governor),
            TidegateStatus::Ok
        );
        let after_new = counts();
        assert_eq!(
            after_new.1 - before.1,
            footprint as u64,
            "tidegate_flow_governor_new allocates exactly the reported footprint"
        );

        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut now = 0u64;
        let mut outcome = TidegateFlowOutcome::Closed;
        for _ in 0..1_000_000u32 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            now += state % 100;
            let pick = live
                .get((state >> 32) as usize % live.len().max(1))
                .copied()
                .unwrap_or(0);
            let bytes = (state >> 16) % 70_000;
            match state % 10 {
                0 | 1 => {
                    let app = (state >> 24) % 6;
                    let status = tidegate_flow_governor_on_new_flow(
                        governor,
                        now,
                        app,
                        (state >> 40) % 300,
                        ((state >> 8) % 2) as u32,
                        admission.as_mut_ptr(),
                    );
                    assert_eq!(status, TidegateStatus::Ok);
                    let answer = admission.assume_init();
                    if answer.flow != 0 && live.len() < live.capacity() {
                        live.push(answer.flow);
                    }
                    if answer.evicted != 0 {
                        tidegate_flow_governor_on_closed(
                            governor,
                            now,
                            answer.evicted,
                            &mut outcome,
                        );
                    }
                }
                2 => {
                    tidegate_flow_governor_on_connected(governor, now, pick);
                }
                3 => {
                    tidegate_flow_governor_on_local_read(governor, now, pick, bytes);
                    tidegate_flow_governor_on_remote_read(governor, now, pick, bytes / 2);
                }
                4 => {
                    tidegate_flow_governor_on_remote_sent(governor, now, pick, bytes);
                    tidegate_flow_governor_on_local_written(governor, now, pick, bytes / 3);
                }
                5 => {
                    if tidegate_flow_governor_on_closed(governor, now, pick, &mut outcome)
                        == TidegateStatus::Ok
                    {
                        live.retain(|&id| id != pick);
                    }
                }
                6 => {
                    tidegate_flow_governor_handle_timeout(governor, now);
                    let mut deadline = 0;
                    tidegate_flow_governor_poll_timeout(governor, &mut deadline);
                }
                7 => {
                    let mut count = 0;
                    let status = tidegate_flow_governor_poll_notifications(
                        governor,
                        batch.as_mut_ptr(),
                        batch.len(),
                        &mut count,
                    );
                    assert_eq!(status, TidegateStatus::Ok);
                    for notification in &batch[..count] {
                        if notification.kind == TidegateFlowNotificationKind::Close {
                            tidegate_flow_governor_on_closed(
                                governor,
                                now,
                                notification.flow,
                                &mut outcome,
                            );
                        }
                    }
                }
                8 => {
                    let mut can_read = false;
                    tidegate_flow_governor_can_read_local(governor, pick, &mut can_read);
                    tidegate_flow_governor_can_read_remote(governor, pick, &mut can_read);
                    tidegate_flow_governor_stats(governor, stats.as_mut_ptr());
                }
                _ => {
                    // Bad input: forged and stale ids, NULL out-params, unknown protocol.
                    tidegate_flow_governor_on_connected(governor, now, state);
                    tidegate_flow_governor_on_closed(governor, now, pick, ptr::null_mut());
                    tidegate_flow_governor_on_new_flow(
                        governor,
                        now,
                        1,
                        1,
                        9,
                        admission.as_mut_ptr(),
                    );
                    tidegate_flow_governor_on_remote_sent(governor, now, pick, u64::MAX);
                }
            }
            if live.len() == live.capacity() {
                live.retain(|&id| {
                    let mut flow_state = TidegateFlowState::Closed;
                    tidegate_flow_governor_state(governor, id, &mut flow_state);
                    flow_state != TidegateFlowState::Closed
                });
            }
        }
        let after_run = counts();
        assert_eq!(
            after_run, after_new,
            "no allocation, reallocation or free after creation"
        );
        tidegate_flow_governor_stats(governor, stats.as_mut_ptr());
        let stats = stats.assume_init();
        assert!(stats.admitted > 10_000, "the run admitted real traffic");
        assert!(stats.evicted > 0, "the run exercised eviction");
        assert!(
            stats.idle_timeouts + stats.connect_timeouts > 0,
            "the run exercised timers"
        );
        tidegate_flow_governor_free(governor);
    }
}
