//! Allocation audit through the C ABI: `tidegate_tunnel_new` allocates exactly
//! `tidegate_tunnel_footprint` bytes, and nothing at all is allocated or freed across a million
//! mixed operations afterwards.
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
fn creation_allocates_the_footprint_and_operation_allocates_nothing() {
    let mut config = tidegate_tunnel_config_default();
    config.outbound_bytes = 256 * 1024;
    config.outbound_high_watermark_bytes = 192 * 1024;
    config.outbound_low_watermark_bytes = 128 * 1024;
    config.inbound_bytes = 128 * 1024;
    config.inbound_packets = 500;
    config.inbound_drop_policy = TidegateDropPolicy::DropOldest as u32;
    let mut footprint = 0usize;
    let mut tunnel = ptr::null_mut();
    // Scratch buffers are made before counting starts.
    let packet = vec![0xA5u8; 1500];
    let mut views = vec![
        TidegatePacketView {
            data: ptr::null(),
            len: 0
        };
        64
    ];
    let mut stats = std::mem::MaybeUninit::uninit();

    COUNTING.with(|c| c.set(true));
    // SAFETY: every pointer below is valid for the call; the handle is freed at the end.
    unsafe {
        assert_eq!(
            tidegate_tunnel_footprint(&config, &mut footprint),
            TidegateStatus::Ok
        );
        let before = counts();
        assert_eq!(
            tidegate_tunnel_new(&config, &mut tunnel),
            TidegateStatus::Ok
        );
        let after_new = counts();
        assert_eq!(
            after_new.1 - before.1,
            footprint as u64,
            "tidegate_tunnel_new allocates exactly the reported footprint"
        );
        assert_eq!(after_new.2, before.2, "creation frees nothing it allocated");

        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut operations = 0u64;
        let mut now = 0u64;
        while operations < 1_000_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            now += state % 50;
            let len = (state >> 8) as usize % 1600; // includes empty and oversized packets
            let data = packet.as_ptr();
            match state % 8 {
                0 | 1 => {
                    tidegate_tunnel_on_outbound_packet(tunnel, now, data, len);
                }
                2 | 3 => {
                    let mut disposition = TidegateInboundDisposition::Queued;
                    tidegate_tunnel_on_inbound_packet(tunnel, now, data, len, &mut disposition);
                }
                4 => {
                    let mut count = 0;
                    let capacity = (state >> 20) as usize % views.len();
                    let status = tidegate_tunnel_poll_outbound(
                        tunnel,
                        now,
                        views.as_mut_ptr(),
                        capacity,
                        &mut count,
                    );
                    assert_eq!(status, TidegateStatus::Ok);
                    let mut resume = false;
                    let status = tidegate_tunnel_complete_outbound(tunnel, now, count, &mut resume);
                    assert_eq!(status, TidegateStatus::Ok);
                }
                5 => {
                    // The apps take few packets at a time, so inbound fills and drops.
                    let mut count = 0;
                    let capacity = (state >> 20) as usize % 3;
                    let views = views.as_mut_ptr();
                    tidegate_tunnel_poll_inbound(tunnel, now, views, capacity, &mut count);
                    tidegate_tunnel_complete_inbound(tunnel, now, count);
                }
                6 => {
                    let mut can_read = false;
                    tidegate_tunnel_can_read_outbound(tunnel, &mut can_read);
                    tidegate_tunnel_stats(tunnel, stats.as_mut_ptr());
                }
                _ => {
                    // Bad input: more completions than in flight, NULL out-params.
                    let mut resume = false;
                    tidegate_tunnel_complete_outbound(tunnel, now, usize::MAX, &mut resume);
                    tidegate_tunnel_complete_inbound(tunnel, now, usize::MAX);
                    tidegate_tunnel_on_inbound_packet(tunnel, now, data, len, ptr::null_mut());
                }
            }
            operations += 1;
        }
        let after_run = counts();
        assert_eq!(
            after_run, after_new,
            "no allocation, reallocation or free after creation"
        );
        tidegate_tunnel_stats(tunnel, stats.as_mut_ptr());
        let stats = stats.assume_init();
        assert!(
            stats.outbound.packets_accepted > 10_000,
            "the run moved real traffic"
        );
        assert!(
            stats.inbound_dropped_oldest_packets > 0,
            "the run exercised inbound drops"
        );
        tidegate_tunnel_free(tunnel);
    }
}
