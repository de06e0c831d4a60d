//! Scenario tests of the flow governor with virtual time, each asserting an invariant the
//! governor exists for:
//!
//! - one app flooding with twice the global cap of long-lived flows cannot lock out a
//!   well-behaved app: every flow the well-behaved app opens, one at a time, is admitted;
//! - a storm of 100,000 also-ran flows leaves every established flow in place and leaks no slot;
//! - an app that stops reading stalls only its own flows.

use std::collections::HashMap;

use tidegate_core::{
    Admission, AppId, DEFAULT_FLOW_SLOTS, DestinationKey, FlowClass, FlowGovernor, FlowId,
    FlowInfo, FlowOutcome, FlowPolicy, FlowSlot, FlowState, Instant, Notification, Protocol,
};

type Governor = FlowGovernor<Box<[FlowSlot]>>;

fn governor(policy: FlowPolicy) -> Governor {
    let slots = vec![FlowSlot::EMPTY; DEFAULT_FLOW_SLOTS].into_boxed_slice();
    FlowGovernor::new(Instant::ZERO, slots, policy).expect("default-sized policy is valid")
}

fn flow(app: u64, destination: u64) -> FlowInfo {
    FlowInfo {
        app: AppId(app),
        destination: DestinationKey(destination),
        protocol: Protocol::Tcp,
        class: FlowClass::default_for(Protocol::Tcp, 443),
    }
}

/// The host's side of an admission: close the evicted flow at once, as the answer demands.
fn admit(governor: &mut Governor, now: Instant, info: FlowInfo) -> Option<FlowId> {
    match governor.on_new_flow(now, info) {
        Admission::Accepted { id } => Some(id),
        Admission::AcceptedAfterEvicting { id, evicted } => {
            assert_eq!(
                governor.on_closed(now, evicted),
                Ok(FlowOutcome::ClosedByGovernor(
                    tidegate_core::CloseReason::Evicted
                ))
            );
            Some(id)
        }
        Admission::Rejected(_) => None,
    }
}

const FLOODER: u64 = 1;
const WELL_BEHAVED: u64 = 2;

/// One app opens twice the global cap of long-lived flows, all established and kept busy, while
/// a second app opens flows one at a time (keeping at most four open, like a small client).
/// Every one of the second app's flows is admitted, and the caps hold throughout.
fn flood_with_well_behaved_app(policy: FlowPolicy) {
    let mut governor = governor(policy);
    let flood_attempts = 2 * policy.max_flows as u64;
    let mut flood: Vec<FlowId> = Vec::new();
    let mut mine: Vec<FlowId> = Vec::new();
    let mut admitted_mine = 0;
    let mut micros = 0;
    for attempt in 0..flood_attempts {
        micros += 1_000;
        let now = Instant::from_micros(micros);
        // The flood: a new long-lived flow to one of many destinations, then traffic.
        if let Some(id) = admit(&mut governor, now, flow(FLOODER, attempt % 200)) {
            governor.on_connected(now, id).expect("new flow connects");
            governor.on_local_read(now, id, 512).expect("flow is open");
            flood.push(id);
        }
        // The flood keeps its flows busy, so none of them goes idle.
        flood.retain(|&id| governor.state(id) != Ok(FlowState::Closed));
        if let Some(&busy) = flood.get(attempt as usize % flood.len().max(1)) {
            governor
                .on_remote_read(now, busy, 100)
                .expect("flood flow open");
        }
        // The well-behaved app opens one flow every fourth step.
        if attempt % 4 == 0 {
            let id = admit(&mut governor, now, flow(WELL_BEHAVED, 10_000 + attempt))
                .unwrap_or_else(|| {
                    panic!(
                        "well-behaved app refused at step {attempt}: {:?}",
                        governor.stats()
                    )
                });
            admitted_mine += 1;
            governor.on_connected(now, id).expect("connects");
            governor.on_local_read(now, id, 300).expect("open");
            governor.on_remote_sent(now, id, 300).expect("open");
            mine.push(id);
            if mine.len() > 4 {
                let oldest = mine.remove(0);
                assert_eq!(governor.on_closed(now, oldest), Ok(FlowOutcome::Closed));
            }
        }
        governor.handle_timeout(now);
        while let Some(notification) = governor.poll_notification() {
            if let Notification::Close { id, .. } = notification {
                governor.on_closed(now, id).expect("closing flow");
            }
        }
        assert!(governor.open_flows() <= policy.max_flows);
        assert!(governor.app_flows(AppId(FLOODER)) <= policy.max_flows_per_app);
    }
    let stats = governor.stats();
    assert_eq!(admitted_mine, flood_attempts.div_ceil(4));
    // The flood really held all it could (the table less the second app's four flows, its own
    // cap, or what pacing let its open flows grow to in the run's time) and was refused beyond
    // that.
    let paced = u64::from(policy.app_admission_burst)
        .saturating_add(u64::from(policy.app_admission_rate_per_second) * micros / 1_000_000);
    let paced = u32::try_from(paced).unwrap_or(u32::MAX);
    let flood_limit = policy
        .max_flows_per_app
        .min(policy.max_flows - 4)
        .min(paced);
    assert!(governor.app_flows(AppId(FLOODER)) >= flood_limit - 1);
    assert!(stats.rejected.total() > 0);
    if policy.max_flows_per_app >= policy.max_flows {
        // Without a per-app cap only fairness eviction kept the second app going.
        assert!(stats.evicted > 0);
    }
    assert_eq!(stats.top_apps()[0].app, AppId(FLOODER));
    for id in mine {
        assert_eq!(governor.state(id), Ok(FlowState::Established));
    }
}

#[test]
fn flood_cannot_lock_out_a_well_behaved_app_even_without_a_per_app_cap() {
    let policy = FlowPolicy {
        max_flows_per_app: FlowPolicy::APPLE_DEFAULT.max_flows,
        max_flows_per_destination: FlowPolicy::APPLE_DEFAULT.max_flows,
        // Pacing would keep the flooder from filling the table in the run's second; here only
        // fairness eviction stands between it and the second app.
        app_admission_burst: u32::MAX,
        app_admission_rate_per_second: u32::MAX,
        ..FlowPolicy::APPLE_DEFAULT
    };
    flood_with_well_behaved_app(policy);
}

#[test]
fn flood_cannot_lock_out_a_well_behaved_app_with_default_caps() {
    flood_with_well_behaved_app(FlowPolicy::APPLE_DEFAULT);
}

#[test]
fn eviction_under_a_flood_takes_the_flooders_idle_flows_first() {
    let policy = FlowPolicy {
        max_flows_per_app: FlowPolicy::APPLE_DEFAULT.max_flows,
        // The flooder fills the table in one instant, which pacing would spread over seconds.
        app_admission_burst: u32::MAX,
        app_admission_rate_per_second: u32::MAX,
        ..FlowPolicy::APPLE_DEFAULT
    };
    let mut governor = governor(policy);
    let now = Instant::from_millis(1);
    let flood: Vec<FlowId> = (0..u64::from(policy.max_flows))
        .map(|i| {
            let id = admit(&mut governor, now, flow(FLOODER, i)).expect("room");
            governor.on_connected(now, id).expect("connects");
            id
        })
        .collect();
    // Every flood flow but the last ten has bytes in flight.
    for &id in &flood[..flood.len() - 10] {
        governor
            .on_remote_read(Instant::from_millis(2), id, 1_000)
            .expect("open");
    }
    let idle = &flood[flood.len() - 10..];
    for i in 0..10 {
        match governor.on_new_flow(Instant::from_millis(3), flow(WELL_BEHAVED, 9_000 + i)) {
            Admission::AcceptedAfterEvicting { evicted, .. } => {
                assert!(idle.contains(&evicted), "evicted a busy flow first");
                governor
                    .on_closed(Instant::from_millis(3), evicted)
                    .expect("closing");
            }
            other => panic!("expected an eviction, got {other:?}"),
        }
    }
    assert_eq!(governor.stats().evicted, 10);
}

#[test]
fn also_ran_storm_leaves_established_flows_in_place_and_leaks_no_slot() {
    let mut governor = governor(FlowPolicy::APPLE_DEFAULT);
    let mut micros = 0;
    let mut established: HashMap<FlowId, u64> = HashMap::new();
    for i in 0..200u64 {
        micros += 10;
        let now = Instant::from_micros(micros);
        let id = admit(&mut governor, now, flow(10 + i % 10, i)).expect("room");
        governor.on_connected(now, id).expect("connects");
        governor.on_local_read(now, id, 1_000 + i).expect("open");
        established.insert(id, 1_000 + i);
    }
    let free_before = governor.free_slots();
    let storm_app = 99;
    // 50,000 races of two attempts: 100,000 also-ran flows.
    for i in 0..50_000u64 {
        micros += 10;
        let now = Instant::from_micros(micros);
        // Happy Eyeballs: two racing attempts, both closed before any byte moves.
        let first = admit(&mut governor, now, flow(storm_app, i % 7)).expect("storm admitted");
        let second = admit(&mut governor, now, flow(storm_app, i % 7)).expect("storm admitted");
        governor.on_connecting(now, first).expect("opening");
        assert_eq!(governor.on_closed(now, first), Ok(FlowOutcome::AlsoRan));
        assert_eq!(governor.on_closed(now, second), Ok(FlowOutcome::AlsoRan));
        // Keep the established flows active so idle timeouts play no part.
        if i % 1_000 == 0 {
            for &id in established.keys() {
                governor.on_remote_read(now, id, 1).expect("still open");
                governor.on_local_written(now, id, 1).expect("still open");
            }
        }
        governor.handle_timeout(now);
        assert_eq!(governor.poll_notification(), None);
    }
    let stats = governor.stats();
    assert_eq!(stats.also_ran, 100_000);
    assert_eq!(stats.evicted, 0);
    assert_eq!(stats.rejected.total(), 0);
    assert_eq!(stats.flows.established, 200);
    assert_eq!(stats.flows.open(), 200);
    assert_eq!(governor.free_slots(), free_before);
    assert_eq!(governor.app_flows(AppId(storm_app)), 0);
    for (&id, &pending) in &established {
        let view = governor.flow(id).expect("established flow survives");
        assert_eq!(view.state, FlowState::Established);
        assert_eq!(view.outbound_pending, pending);
    }
    assert_eq!(
        stats.bytes_pending_outbound,
        established.values().sum::<u64>()
    );
}

#[test]
fn also_ran_storm_into_a_full_table_evicts_at_most_once_per_concurrent_attempt() {
    let mut governor = governor(FlowPolicy::APPLE_DEFAULT);
    let now = Instant::from_millis(1);
    for i in 0..u64::from(FlowPolicy::APPLE_DEFAULT.max_flows) {
        let id = admit(&mut governor, now, flow(10 + i % 4, i)).expect("room");
        governor.on_connected(now, id).expect("connects");
    }
    for i in 0..10_000u64 {
        let first = admit(&mut governor, now, flow(99, i % 7)).expect("fair share");
        let second = admit(&mut governor, now, flow(99, i % 7)).expect("fair share");
        governor.on_closed(now, first).expect("open");
        governor.on_closed(now, second).expect("open");
    }
    // The first pair evicted two flows; every later pair reused the room they left.
    assert_eq!(governor.stats().evicted, 2);
    assert_eq!(governor.stats().also_ran, 20_000);
}

#[test]
fn a_slow_reading_app_stalls_only_its_own_flows() {
    const SLOW: u64 = 7;
    const CHUNK: u64 = 16 * 1024;
    let policy = FlowPolicy::APPLE_DEFAULT;
    let mut governor = governor(policy);
    let mut micros = 0;
    let mut now = || {
        micros += 1_000;
        Instant::from_micros(micros)
    };
    // Four flows of an app that stops reading, and eight flows of each of three apps that read.
    let mut flows: Vec<(FlowId, u64)> = Vec::new();
    for app in [SLOW, 1, 2, 3] {
        let count = if app == SLOW { 4 } else { 8 };
        for j in 0..count {
            let at = now();
            let id = admit(&mut governor, at, flow(app, app * 100 + j)).expect("room");
            governor.on_connected(at, id).expect("connects");
            flows.push((id, app));
        }
    }
    // Whether the host has stopped receiving from the remote of each flow.
    let mut paused: HashMap<FlowId, bool> = flows.iter().map(|&(id, _)| (id, false)).collect();
    let mut delivered: HashMap<FlowId, u64> = HashMap::new();
    for _tick in 0..200 {
        let at = now();
        for &(id, app) in &flows {
            if !paused[&id] {
                governor.on_remote_read(at, id, CHUNK).expect("open");
                *delivered.entry(id).or_default() += CHUNK;
                if !governor.can_read_remote(id) {
                    paused.insert(id, true);
                }
            }
            // Fast apps take every byte written to them; the slow app takes none.
            if app != SLOW {
                let pending = governor.flow(id).expect("open").inbound_pending;
                governor.on_local_written(at, id, pending).expect("open");
            }
        }
        while let Some(notification) = governor.poll_notification() {
            if let Notification::ResumeReadRemote { id } = notification {
                paused.insert(id, false);
            }
        }
        assert!(!governor.stats().reads_paused_globally);
    }
    for &(id, app) in &flows {
        let view = governor.flow(id).expect("open");
        if app == SLOW {
            assert!(paused[&id], "slow flow still reading");
            assert!(view.inbound_pending >= policy.flow_high_watermark);
            assert!(view.inbound_pending < policy.flow_high_watermark + CHUNK);
        } else {
            assert!(!paused[&id], "a fast app was stalled");
            assert_eq!(delivered[&id], 200 * CHUNK, "a fast app lost throughput");
            assert_eq!(view.inbound_pending, 0);
        }
    }
    // The slow app catches up: exactly its flows are resumed, once each.
    let at = now();
    let mut resumed = Vec::new();
    for &(id, app) in &flows {
        if app == SLOW {
            let pending = governor.flow(id).expect("open").inbound_pending;
            governor.on_local_written(at, id, pending).expect("open");
        }
    }
    while let Some(notification) = governor.poll_notification() {
        match notification {
            Notification::ResumeReadRemote { id } => resumed.push(id),
            other => panic!("unexpected {other:?}"),
        }
    }
    resumed.sort();
    let mut slow: Vec<FlowId> = flows
        .iter()
        .filter(|&&(_, app)| app == SLOW)
        .map(|&(id, _)| id)
        .collect();
    slow.sort();
    assert_eq!(resumed, slow);
}
