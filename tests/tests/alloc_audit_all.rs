//! Allocation audit of every engine at once, through the C ABI: each `_new` allocates exactly
//! what its `_footprint` reports, and a mixed, randomized run of ten million operations across
//! all engines afterwards (`tidegate_tests::workload`: inputs, drains, queries, bad calls and
//! bursts) allocates, reallocates and frees nothing.
//!
//! The counting allocator is this test binary's global allocator. It counts only on the thread
//! that enables it, so allocations by the test harness's own threads are not blamed on tidegate.
//!
//! Ten million operations take about 15 s in a debug build (the default `cargo test`) and 2 s in
//! release. `TIDEGATE_AUDIT_OPERATIONS=n` runs `n` instead, to run it longer.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use tidegate_tests::workload::{Creation, Workload};

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

/// Allocations, bytes allocated and frees counted so far.
fn counts() -> [u64; 3] {
    [
        ALLOCATIONS.load(Relaxed),
        ALLOCATED_BYTES.load(Relaxed),
        FREES.load(Relaxed),
    ]
}

/// Operations after creation.
const OPERATIONS: u64 = 10_000_000;

#[test]
fn every_engine_allocates_its_footprint_and_a_mixed_run_allocates_nothing() {
    let operations = std::env::var("TIDEGATE_AUDIT_OPERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(OPERATIONS);
    // Filled outside the counted windows; room is reserved up front.
    let mut creations: Vec<(Creation, [u64; 3])> = Vec::with_capacity(4);
    let mut workload = Workload::new(0x2545_F491_4F6C_DD1D, false, |creation, create| {
        COUNTING.with(|c| c.set(true));
        let before = counts();
        create();
        let after = counts();
        COUNTING.with(|c| c.set(false));
        creations.push((creation, [0, 1, 2].map(|i| after[i] - before[i])));
    });
    assert_eq!(creations.len(), 4, "every engine was created");
    for (creation, [allocations, bytes, frees]) in &creations {
        assert_eq!(
            *bytes, creation.footprint as u64,
            "{} allocates exactly its footprint",
            creation.function
        );
        assert!(*allocations >= 1);
        assert_eq!(
            *frees, 0,
            "{} frees nothing it allocated",
            creation.function
        );
    }

    COUNTING.with(|c| c.set(true));
    let before = counts();
    workload.run(operations);
    let after = counts();
    COUNTING.with(|c| c.set(false));
    assert_eq!(
        after, before,
        "no allocation, reallocation or free after creation"
    );

    // The run did real work on every engine, up to their limits.
    let activity = workload.activity();
    let peaks = workload.peaks();
    let ceilings = workload.ceilings();
    let stats = workload.engine_stats();
    println!("{operations} operations, {activity:?}\npeaks {peaks:?}\nceilings {ceilings:?}");
    println!("{stats:#?}");
    assert_eq!(activity.operations, operations);
    assert!(activity.calls > operations);
    assert!(activity.bursts > operations / 10_000, "bursts happened");
    activity.assert_slept_and_restarted(operations);
    assert!(
        activity.attempts_started > operations / 5_000,
        "races started attempts"
    );
    assert!(
        activity.races_won > 100 && activity.races_finished > activity.races_won,
        "races were won and lost"
    );
    assert!(
        peaks.tunnel_bytes_high_water[0] * 2 > ceilings.tunnel_bytes[0],
        "outbound filled"
    );
    assert!(
        peaks.tunnel_bytes_high_water[1] + 1500 > ceilings.tunnel_bytes[1],
        "inbound filled"
    );
    assert_eq!(
        peaks.flows_open, ceilings.flows_open,
        "the flow table filled"
    );
    assert_eq!(
        peaks.budget_attempts, ceilings.budget_attempts,
        "the budget ran out"
    );
    assert!(peaks.races_running <= ceilings.race_slots);
    assert!(peaks.journal_len > 0, "stops wrote journals");
    // What the per-engine audits this test replaced asserted, and more.
    assert!(
        stats.tunnel.outbound.packets_accepted > 100_000,
        "the tunnel moved traffic"
    );
    assert!(
        stats.tunnel.inbound_dropped_oldest_packets > 0,
        "inbound dropped the oldest"
    );
    assert!(
        stats.tunnel.outbound_refused_packets > 0,
        "outbound refused packets when full"
    );
    assert!(
        stats.tunnel.inbound.aqm_dropped_packets > 0,
        "CoDel dropped"
    );
    assert!(
        stats.proxy.flows.admitted > operations / 500,
        "the proxy admitted flows"
    );
    assert!(stats.proxy.flows.evicted > 0, "the proxy evicted");
    assert!(
        stats.proxy.flows.idle_timeouts + stats.proxy.flows.connect_timeouts > 0,
        "flows timed out"
    );
    assert!(
        stats.lifecycle.stops_completed > 100,
        "the lifecycle completed stops"
    );
    assert!(
        stats.lifecycle.tasks_carried_over > 0,
        "stops carried tasks over"
    );
    assert!(
        stats.lifecycle.tasks_resumed > 0,
        "starts resumed tasks from journals"
    );
    assert!(stats.proxy.budget.backoffs > 0, "the budget backed off");
    assert!(
        stats.proxy.flows.rejected_connection_budget > 0,
        "the budget refused flows"
    );
    assert!(stats.proxy.races.no_slot > 0, "the race table filled");
    assert!(
        stats.proxy.races.aborted > 0,
        "closes aborted races in flight"
    );
    assert!(
        stats.proxy.budget.attempts_refused > 0,
        "the budget refused attempts"
    );
    assert!(
        activity.pressure_changes.iter().all(|&n| n > 100),
        "every pressure level was entered and passed on"
    );
    assert!(
        stats.memory.reservations_granted > 1000 && stats.memory.reservations_refused > 1000,
        "reservations were granted and refused"
    );
    assert_eq!(
        peaks.reservations, ceilings.reservations,
        "the reservation slots filled"
    );
    assert!(
        stats.proxy.flows.rejected_memory_pressure > 0,
        "critical pressure refused flows"
    );
}
