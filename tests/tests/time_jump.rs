//! A jump of hours in `now`, in every engine that keeps time: a host whose clock counts sleep
//! (continuous time on Apple platforms) sees one at every wake. Each engine must treat it as a
//! long quiet interval: every timer that passed fires once, never a burst of stale expiries and
//! never a timer armed in the past. `docs/engines.md` ("A jump in `now`, in every engine")
//! states what each engine does; these tests hold it to that.

use tidegate_core::{
    Admission, Aqm, FlowClass, FlowGovernor, FlowId, FlowInfo, FlowPolicy, FlowSlot, Instant,
    Lifecycle, LifecycleConfig, LifecycleEffect, LifecycleState, Notification, PathFingerprint,
    Protocol, TaskSlot, TunnelConfig,
};
use tidegate_core::{AppId, DestinationKey};
use tidegate_tests::storage::heap_tunnel;

const HOURS: u64 = 3 * 3_600_000_000;

/// CoDel has no timer of its own: it acts on the sojourn time of the packet it dequeues, and
/// a jump makes every packet queued before the sleep hours old. What that does depends on
/// whether CoDel was dropping when the device slept, and each case is bounded by what the ring
/// held: nothing repeats, nothing is armed in the past.
#[test]
fn codel_after_a_jump_acts_on_sojourn_once() {
    let config = TunnelConfig {
        aqm: Aqm::CODEL_DEFAULT,
        ..TunnelConfig::DEFAULT
    };
    let packet = [0x45u8; 200];
    let woke = Instant::from_micros(HOURS);

    // Not dropping before the sleep: CoDel drops only after the sojourn stayed above target for
    // a whole interval (100 ms), so the packets dequeued within it go out, each once.
    let mut tunnel = heap_tunnel(config).expect("the default config is valid");
    for _ in 0..50 {
        tunnel
            .on_outbound_packet(Instant::ZERO, &packet)
            .expect("room for 50 small packets");
    }
    let mut sent = 0u64;
    while tunnel.poll_outbound(woke).is_some() {
        sent += 1;
    }
    assert_eq!((sent, tunnel.stats().outbound.aqm_dropped_packets), (50, 0));

    // Dropping before the sleep: its drop schedule is hours behind, and at the first dequeue
    // after the wake it drops the stale packets (RFC 8289's catch-up) until no more than one
    // maximum-size packet is left behind the head (the rule RFC 8289 and Linux keep), each once.
    let mut tunnel = heap_tunnel(config).expect("the default config is valid");
    let mut now = 0u64;
    // A standing queue served slowly for a second: sojourn far above the 5 ms target.
    for _ in 0..100 {
        tunnel
            .on_outbound_packet(Instant::from_micros(now), &packet)
            .expect("room");
    }
    while now < 1_000_000 {
        now += 10_000;
        tunnel
            .on_outbound_packet(Instant::from_micros(now), &packet)
            .expect("room");
        if tunnel.poll_outbound(Instant::from_micros(now)).is_some() {
            let _completion = tunnel
                .complete_outbound(Instant::from_micros(now), 1)
                .expect("one handed out");
        }
    }
    let before = tunnel.stats().outbound.aqm_dropped_packets;
    assert!(before > 0, "CoDel is dropping before the sleep");
    let queued = tunnel.stats().outbound.packets_queued;
    let mut sent = 0u64;
    while tunnel.poll_outbound(woke).is_some() {
        sent += 1;
    }
    let dropped = tunnel.stats().outbound.aqm_dropped_packets - before;
    assert_eq!(sent + dropped, queued, "each packet sent or dropped once");
    let behind = (sent - 1) * packet.len() as u64;
    assert!(
        behind <= u64::from(config.max_packet_len) && dropped > 0,
        "stale packets went out: {sent} of {queued}"
    );
}

/// Idle flows: every flow past its idle timeout is closed at the first `handle_timeout` after
/// the jump, each with one notification; a second call does nothing, and no timer is left in
/// the past.
#[test]
fn idle_flows_close_once_each_after_a_jump() {
    let slots = vec![FlowSlot::EMPTY; tidegate_core::DEFAULT_FLOW_SLOTS].into_boxed_slice();
    let mut governor: FlowGovernor<Box<[FlowSlot]>> =
        FlowGovernor::new(Instant::ZERO, slots, FlowPolicy::APPLE_DEFAULT)
            .expect("the default policy is valid");
    let mut flows: Vec<FlowId> = Vec::new();
    for app in 0..10u64 {
        let info = FlowInfo {
            app: AppId(app),
            destination: DestinationKey(app),
            protocol: Protocol::Tcp,
            class: FlowClass::default_for(Protocol::Tcp, 443),
        };
        match governor.on_new_flow(Instant::ZERO, info) {
            Admission::Accepted { id } => {
                governor.on_connecting(Instant::ZERO, id).expect("admitted");
                governor
                    .on_connected(Instant::ZERO, id)
                    .expect("connecting");
                flows.push(id);
            }
            other => panic!("refused: {other:?}"),
        }
    }
    let woke = Instant::from_micros(HOURS);
    governor.handle_timeout(woke);
    let mut closes = Vec::new();
    while let Some(notification) = governor.poll_notification() {
        if let Notification::Close { id, .. } = notification {
            closes.push(id);
        }
    }
    // Sorted, not deduplicated: a flow closed twice would show.
    closes.sort();
    let mut expected = flows.clone();
    expected.sort();
    assert_eq!(closes, expected, "each idle flow closed once");
    governor.handle_timeout(woke);
    assert!(governor.poll_notification().is_none(), "idempotent");
    for id in flows {
        governor.on_closed(woke, id).expect("closing");
    }
    assert!(
        governor.poll_timeout().is_none_or(|t| t > woke),
        "no timer left in the past"
    );
}

/// The lifecycle: a restart attempt hung through the sleep is abandoned once, one retry is
/// announced, and its deadline counts from the wake; a wake report after the long sleep
/// schedules one restart.
#[test]
fn a_hung_restart_and_a_wake_fire_once_after_a_jump() {
    let mut machine =
        Lifecycle::new(LifecycleConfig::DEFAULT, vec![TaskSlot::EMPTY; 4]).expect("valid");
    let at = Instant::from_micros;
    let _ = machine.on_path_change(at(0), PathFingerprint(1));
    let generation = machine.on_start(at(0), None).expect("starts");
    while machine.poll_effect(at(0)).is_some() {}
    machine
        .on_tunnel_started(at(1), generation)
        .expect("current");
    let _ = machine.on_path_change(at(10), PathFingerprint(2));
    let effects: Vec<_> = core::iter::from_fn(|| machine.poll_effect(at(2_000_000))).collect();
    assert!(matches!(
        effects[..],
        [LifecycleEffect::RestartTunnel { .. }]
    ));
    let woke = at(HOURS);
    assert!(machine.on_wake(woke, HOURS));
    let effects: Vec<_> = core::iter::from_fn(|| machine.poll_effect(woke)).collect();
    // The hung attempt is abandoned once; the wake's restart waits for the debounce.
    assert!(
        matches!(effects[..], [LifecycleEffect::AbandonRestart { .. }]),
        "{effects:?}"
    );
    let stats = machine.stats();
    assert_eq!((stats.restart_timeouts, stats.restarts_failed), (1, 1));
    assert_eq!(machine.state(), LifecycleState::Reasserting);
    let next = machine.poll_timeout().expect("a timer");
    assert!(next > woke, "no timer in the past");
    let effects: Vec<_> = core::iter::from_fn(|| machine.poll_effect(next)).collect();
    // The attempt that hung was the path's first and counts as failed: this is its second.
    assert!(
        matches!(
            effects[..],
            [LifecycleEffect::RestartTunnel { attempt: 2, .. }]
        ),
        "one attempt for the settled path, after the wake: {effects:?}"
    );
}
