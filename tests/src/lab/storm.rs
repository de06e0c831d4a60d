//! Also-ran storm scenario (seed 003): Happy Eyeballs losers, connections that open and close
//! before a byte moves, arrive by the thousand beside established flows in an app proxy.
//!
//! Every race of two attempts through the proxy leaves two flows that open and close at once
//! (the client's winner goes elsewhere, as with a port scan or a crashing client). The storm
//! runs at one race per millisecond: 2,000 also-ran flows a second.

use tidegate_core::{
    Admission, AppId, DEFAULT_FLOW_SLOTS, DestinationKey, FlowClass, FlowGovernor, FlowId,
    FlowInfo, FlowOutcome, FlowPolicy, FlowSlot, FlowState, Instant, Protocol,
    flow_governor_footprint,
};

use super::{APP_PROXY_LIMIT, Host, Row, Scale, proxy_ceiling};

const ID: &str = "also-ran-storm";
const SCENARIO: &str = "also-ran storm beside 100 established flows";
/// Network framework's flows per process.
const SYSTEM_FLOW_LIMIT: u64 = 512;
const ESTABLISHED: u64 = 100;
/// Bytes each established flow keeps pending (read from the remote, not yet written).
const ESTABLISHED_PENDING: u64 = 8 * 1024;
/// The naive host gives every accepted flow a relay buffer of this size, the most one receive
/// returns.
const RELAY_BUFFER: u64 = 64 * 1024;
/// The naive host reaps closed flows (slot and buffer) once a second.
const NAIVE_REAP_EVERY_STEPS: u64 = 1_000;
/// One step: 1 ms, one race of two attempts.
const STEP_US: u64 = 1_000;
const STORM_APP: AppId = AppId(99);

/// The naive proxy allocates a relay buffer for every accepted flow and reaps closed flows
/// with a once-a-second sweep; the tidegate proxy reports each flow to a [`FlowGovernor`] and
/// allocates buffers only for bytes it has read.
pub(super) fn also_ran_storm(scale: Scale) -> [Row; 2] {
    let races = match scale {
        Scale::Full => 50_000,
        Scale::Quick => 10_000,
    };
    [naive(races), tidegate(races)]
}

fn naive(races: u64) -> Row {
    let mut row = Row::new(ID, SCENARIO, "003", Host::Naive);
    row.platform_limit = Some(APP_PROXY_LIMIT);
    // Slots (and buffers) held: live flows, and closed flows not yet reaped.
    let mut live = ESTABLISHED;
    let mut closed_unreaped = 0u64;
    let mut high_water = 0u64;
    let mut hung = 0u64;
    for step in 0..races {
        if step % NAIVE_REAP_EVERY_STEPS == 0 {
            closed_unreaped = 0;
        }
        for _attempt in 0..2 {
            if live + closed_unreaped >= SYSTEM_FLOW_LIMIT {
                hung += 1; // no slot: the connection waits
                continue;
            }
            // Accepted: a buffer is allocated; the flow closes at once and waits for the reaper.
            live += 1;
            let held = (live + closed_unreaped) * RELAY_BUFFER;
            high_water = high_water.max(held);
            live -= 1;
            closed_unreaped += 1;
        }
        if high_water > APP_PROXY_LIMIT {
            row.killed_at_seconds = Some(step as f64 * STEP_US as f64 / 1e6);
            break;
        }
    }
    row.memory_high_water = Some(high_water);
    row.hung_connections = Some(hung);
    row.established_evicted = Some(0);
    row.slots_leaked = Some(closed_unreaped);
    row.outcome = match row.killed_at_seconds {
        Some(at) => {
            format!("killed at {at:.2} s: 64 KiB each, {closed_unreaped} closed flows unreaped")
        }
        None => format!("{closed_unreaped} closed flows still hold slots"),
    };
    row
}

fn tidegate(races: u64) -> Row {
    let policy = FlowPolicy::APPLE_DEFAULT;
    let mut governor = FlowGovernor::new(
        Instant::ZERO,
        vec![FlowSlot::EMPTY; DEFAULT_FLOW_SLOTS].into_boxed_slice(),
        policy,
    )
    .expect("the default policy fits 512 slots");
    let established: Vec<FlowId> = (0..ESTABLISHED)
        .map(|i| {
            let info = FlowInfo {
                app: AppId(10 + i % 10),
                destination: DestinationKey(i),
                protocol: Protocol::Tcp,
                class: FlowClass::Stream,
            };
            let Admission::Accepted { id } = governor.on_new_flow(Instant::ZERO, info) else {
                unreachable!("an empty table admits 100 flows");
            };
            governor
                .on_connected(Instant::ZERO, id)
                .expect("a new flow connects");
            governor
                .on_remote_read(Instant::ZERO, id, ESTABLISHED_PENDING)
                .expect("the flow is open");
            id
        })
        .collect();
    let free_before = governor.free_slots();
    let mut evicted = 0u64;
    let mut refused = 0u64;
    let mut also_ran = 0u64;
    let mut hung = 0u64;
    let mut pending_high_water = governor.stats().bytes_pending_inbound;
    for step in 0..races {
        let now = Instant::from_micros((step + 1) * STEP_US);
        let mut attempts = [None; 2];
        for attempt in &mut attempts {
            let info = FlowInfo {
                app: STORM_APP,
                destination: DestinationKey(1_000 + step % 7),
                protocol: Protocol::Tcp,
                class: FlowClass::Stream,
            };
            *attempt = match governor.on_new_flow(now, info) {
                Admission::Accepted { id } => Some(id),
                Admission::AcceptedAfterEvicting {
                    id,
                    evicted: victim,
                } => {
                    evicted += 1;
                    governor
                        .on_closed(now, victim)
                        .expect("evicted flow closes");
                    Some(id)
                }
                Admission::Rejected(_) => {
                    refused += 1;
                    None
                }
            };
        }
        // Each admitted flow is a system connection; the table never holds more than 512.
        let in_system = (governor.capacity() - governor.free_slots() as usize) as u64;
        if in_system > SYSTEM_FLOW_LIMIT {
            hung += in_system - SYSTEM_FLOW_LIMIT;
        }
        // Both attempts close before any byte moved.
        for id in attempts.into_iter().flatten() {
            if governor.on_closed(now, id) == Ok(FlowOutcome::AlsoRan) {
                also_ran += 1;
            }
        }
        // The established flows keep relaying: each round trip completes what was pending and
        // reads as much again.
        if step % 100 == 0 {
            for &id in &established {
                if governor
                    .on_local_written(now, id, ESTABLISHED_PENDING)
                    .is_ok()
                {
                    let _ = governor.on_remote_read(now, id, ESTABLISHED_PENDING);
                }
            }
        }
        governor.handle_timeout(now);
        while governor.poll_notification().is_some() {}
        pending_high_water = pending_high_water.max(governor.stats().bytes_pending_inbound);
    }
    let survivors = established
        .iter()
        .filter(|&&id| governor.state(id) == Ok(FlowState::Established))
        .count() as u64;
    let mut row = Row::new(ID, SCENARIO, "003", Host::Tidegate);
    row.platform_limit = Some(APP_PROXY_LIMIT);
    let table = flow_governor_footprint(DEFAULT_FLOW_SLOTS) as u64;
    row.memory_high_water = Some(table + pending_high_water);
    row.ceiling = Some(proxy_ceiling(&policy, ESTABLISHED + 2, RELAY_BUFFER));
    row.hung_connections = Some(hung);
    row.connects_refused = Some(refused);
    row.established_evicted = Some(evicted + (ESTABLISHED - survivors));
    row.slots_leaked = Some(u64::from(free_before.saturating_sub(governor.free_slots())));
    row.outcome = format!(
        "{also_ran} also-rans freed at close; {survivors} of {ESTABLISHED} established kept"
    );
    row
}
