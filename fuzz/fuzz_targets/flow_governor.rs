//! `FlowGovernor` call sequences, including stale and forged ids, completions larger than what
//! is pending, huge byte counts, timeouts and a host clock running backwards. Checked after
//! every call against a model of each flow the governor issued:
//!
//! - caps: open flows never above the global, per-app and per-destination caps, and an
//!   admission never takes the opening and connecting flows above the connection budget;
//! - pending bytes: each direction's total equals the sum over live flows, a completion larger
//!   than what is pending is refused with the pending amount and changes nothing, and so is a
//!   read that the flow's, its app's or the direction's `u64` counter cannot hold;
//! - outcomes: every admitted flow gets exactly one terminal outcome (close or connect
//!   failure), the right one, and every later report on its id is refused as stale;
//! - a refused call (unknown, stale or forged id, wrong state) changes nothing at all.
#![no_main]

use std::collections::HashMap;

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use tidegate_core::{
    Admission, AppId, CloseReason, DestinationKey, ErrorClass, FlowError, FlowGovernor, FlowId,
    FlowClass, FlowInfo, FlowOutcome, FlowPolicy, FlowSlot, FlowState, Instant, Notification,
    Protocol,
};
use tidegate_fuzz::{HostClock, MAX_OPS, Tick};

type Governor = FlowGovernor<Vec<FlowSlot>>;

#[derive(Debug, Arbitrary)]
struct Setup {
    max_flows: u8,
    per_app: u8,
    per_destination: u8,
    max_connecting: u8,
    extra_slots: u8,
    idle_timeout_ms: u8,
    connect_timeout_ms: u8,
    flow_high: u16,
    flow_low: u16,
    global_high: u16,
    global_low: u16,
    app_high: u16,
    app_low: u16,
    hash_seed: u64,
    datagram_cap: u8,
    dns_cap: u8,
    dns_per_app: u8,
    datagram_idle_ms: u8,
    datagram_lifetime_ms: u8,
    dns_idle_ms: u8,
    paused_ms: u8,
    burst: u8,
    rate: u16,
}

/// A flow named by an operation: one the governor issued (picked by position), or a forged id.
#[derive(Debug, Arbitrary)]
enum Target {
    Issued(u8),
    Forged(u64),
}

#[derive(Debug, Arbitrary)]
enum Bytes {
    Small(u16),
    Huge(u64),
}

#[derive(Debug, Arbitrary)]
enum Op {
    New {
        app: u8,
        destination: u8,
        udp: bool,
        /// 0 stream, 1 datagram, 2 DNS; anything else the default for the transport.
        class: u8,
        tick: Tick,
    },
    Connecting(Target, Tick),
    Connected(Target, Tick),
    ConnectFailed(Target, u8, Tick),
    Read {
        flow: Target,
        inbound: bool,
        bytes: Bytes,
        tick: Tick,
    },
    Complete {
        flow: Target,
        inbound: bool,
        bytes: Bytes,
        tick: Tick,
    },
    Closed(Target, Tick),
    Timeout(Tick),
    ConnectionBudget(u8),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ModelState {
    /// Opening, connecting or established; the governor's state is checked against `phase`.
    Open,
    Closing(CloseReason),
    Closed,
}

#[derive(Clone, Debug)]
struct ModelFlow {
    app: u64,
    destination: u64,
    class: FlowClass,
    state: ModelState,
    /// Opening, connecting, established (meaningful while open).
    phase: FlowState,
    pending: [u64; 2],
    moved: bool,
    outcomes: u32,
}

struct Model {
    flows: HashMap<FlowId, ModelFlow>,
    issued: Vec<FlowId>,
}

impl Model {
    fn resolve(&self, target: &Target) -> FlowId {
        match *target {
            Target::Issued(i) if !self.issued.is_empty() => {
                self.issued[usize::from(i) % self.issued.len()]
            }
            Target::Issued(_) => FlowId::from_raw(0),
            Target::Forged(raw) => FlowId::from_raw(raw),
        }
    }

    fn open_count(&self, filter: impl Fn(&ModelFlow) -> bool) -> u32 {
        self.flows
            .values()
            .filter(|f| f.state == ModelState::Open && filter(f))
            .count() as u32
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Unstructured::new(data);
    let Ok(setup) = Setup::arbitrary(&mut input) else {
        return;
    };
    let policy = policy_of(&setup);
    let slots = policy.min_slots() + usize::from(setup.extra_slots % 4);
    let mut clock = HostClock::new(10_000_000);
    let mut governor = Governor::new(
        Instant::from_micros(clock.now),
        vec![FlowSlot::EMPTY; slots],
        policy,
    )
    .expect("derived policies are valid");
    let mut model = Model {
        flows: HashMap::new(),
        issued: Vec::new(),
    };
    let mut max_connecting = policy.max_connecting;
    for _ in 0..MAX_OPS {
        let Ok(op) = Op::arbitrary(&mut input) else {
            break;
        };
        let before = governor.stats();
        let refused = match op {
            Op::New {
                app,
                destination,
                udp,
                class,
                tick,
            } => {
                let now = Instant::from_micros(clock.tick(tick));
                let (app, destination) = (u64::from(app % 5), u64::from(destination % 5));
                let protocol = if udp { Protocol::Udp } else { Protocol::Tcp };
                let class = FlowClass::from_u8(class)
                    .unwrap_or(FlowClass::default_for(protocol, 443));
                let info = FlowInfo {
                    app: AppId(app),
                    destination: DestinationKey(destination),
                    protocol,
                    class,
                };
                let admission = governor.on_new_flow(now, info);
                if let Admission::AcceptedAfterEvicting { evicted, .. } = admission {
                    let flow = model
                        .flows
                        .get_mut(&evicted)
                        .expect("evicts a flow it issued");
                    assert_eq!(flow.state, ModelState::Open, "only an open flow is evicted");
                    flow.state = ModelState::Closing(CloseReason::Evicted);
                }
                match admission.id() {
                    Some(id) => {
                        assert!(!model.flows.contains_key(&id), "ids are never reused");
                        model.issued.push(id);
                        model.flows.insert(
                            id,
                            ModelFlow {
                                app,
                                destination,
                                class,
                                state: ModelState::Open,
                                phase: FlowState::Opening,
                                pending: [0; 2],
                                moved: false,
                                outcomes: 0,
                            },
                        );
                        let connecting = model.open_count(|f| f.phase != FlowState::Established);
                        assert!(connecting <= max_connecting, "connection budget");
                        false
                    }
                    None => true,
                }
            }
            Op::Connecting(target, tick) => {
                let now = Instant::from_micros(clock.tick(tick));
                let id = model.resolve(&target);
                let result = governor.on_connecting(now, id);
                let flow = model.flows.get_mut(&id);
                match (result, flow) {
                    (Ok(()), Some(flow)) => {
                        assert!(flow.state == ModelState::Open && flow.phase == FlowState::Opening);
                        flow.phase = FlowState::Connecting;
                        false
                    }
                    (Ok(()), None) => panic!("a forged id was accepted"),
                    (Err(error), flow) => {
                        check_refusal(error, flow.as_deref());
                        true
                    }
                }
            }
            Op::Connected(target, tick) => {
                let now = Instant::from_micros(clock.tick(tick));
                let id = model.resolve(&target);
                let result = governor.on_connected(now, id);
                match (result, model.flows.get_mut(&id)) {
                    (Ok(()), Some(flow)) => {
                        assert_eq!(flow.state, ModelState::Open);
                        assert_ne!(flow.phase, FlowState::Established);
                        flow.phase = FlowState::Established;
                        false
                    }
                    (Ok(()), None) => panic!("a forged id was accepted"),
                    (Err(error), flow) => {
                        check_refusal(error, flow.as_deref());
                        true
                    }
                }
            }
            Op::ConnectFailed(target, class, tick) => {
                let now = Instant::from_micros(clock.tick(tick));
                let id = model.resolve(&target);
                let class = ErrorClass::from_u8(class % 7).expect("seven classes");
                let result = governor.on_connect_failed(now, id, class);
                match (result, model.flows.get_mut(&id)) {
                    (Ok(outcome), Some(flow)) => {
                        let want = match flow.state {
                            ModelState::Open => {
                                assert_ne!(flow.phase, FlowState::Established);
                                FlowOutcome::ConnectFailed(class)
                            }
                            ModelState::Closing(reason) => FlowOutcome::ClosedByGovernor(reason),
                            ModelState::Closed => panic!("a closed flow failed again"),
                        };
                        assert_eq!(outcome, want);
                        flow.state = ModelState::Closed;
                        flow.outcomes += 1;
                        assert_eq!(governor.state(id), Ok(FlowState::Closed));
                        false
                    }
                    (Ok(_), None) => panic!("a forged id was accepted"),
                    (Err(error), flow) => {
                        if let (FlowError::InvalidState { state }, Some(flow)) = (error, &flow) {
                            assert_eq!(state, FlowState::Established);
                            assert_eq!(flow.phase, FlowState::Established);
                        } else {
                            check_refusal(error, flow.as_deref());
                        }
                        true
                    }
                }
            }
            Op::Read {
                flow: target,
                inbound,
                bytes,
                tick,
            } => {
                let now = Instant::from_micros(clock.tick(tick));
                let id = model.resolve(&target);
                let bytes = bytes_of(bytes);
                let side = usize::from(inbound);
                // A read the flow's u64 counter, its app's (both directions) or the direction's
                // u64 total cannot hold is refused with the total and changes nothing; any other
                // read is taken.
                let total = model
                    .flows
                    .values()
                    .filter(|f| f.state != ModelState::Closed)
                    .fold(0u64, |sum, f| sum.saturating_add(f.pending[side]));
                let app_total = model.flows.get(&id).map_or(0, |flow| {
                    model
                        .flows
                        .values()
                        .filter(|f| f.state != ModelState::Closed && f.app == flow.app)
                        .fold(0u64, |sum, f| {
                            sum.saturating_add(f.pending[0])
                                .saturating_add(f.pending[1])
                        })
                });
                let result = if inbound {
                    governor.on_remote_read(now, id, bytes)
                } else {
                    governor.on_local_read(now, id, bytes)
                };
                match (result, model.flows.get_mut(&id)) {
                    (Ok(()), Some(flow)) => {
                        assert_ne!(flow.state, ModelState::Closed);
                        let pending = &mut flow.pending[side];
                        assert!(
                            bytes == 0
                                || (pending.checked_add(bytes).is_some()
                                    && app_total.checked_add(bytes).is_some()
                                    && total.checked_add(bytes).is_some()),
                            "a read past u64 was taken"
                        );
                        *pending += bytes;
                        flow.moved |= bytes > 0;
                        false
                    }
                    (Err(FlowError::TooManyBytes { pending }), Some(flow))
                        if flow.state != ModelState::Closed =>
                    {
                        assert_eq!(pending, total, "the refusal names the direction's total");
                        assert!(
                            flow.pending[side].checked_add(bytes).is_none()
                                || app_total.checked_add(bytes).is_none()
                                || total.checked_add(bytes).is_none(),
                            "a read the counters can hold was refused"
                        );
                        true
                    }
                    (Ok(()), None) => panic!("a forged id was accepted"),
                    (Err(error), flow) => {
                        check_refusal(error, flow.as_deref());
                        true
                    }
                }
            }
            Op::Complete {
                flow: target,
                inbound,
                bytes,
                tick,
            } => {
                let now = Instant::from_micros(clock.tick(tick));
                let id = model.resolve(&target);
                let bytes = bytes_of(bytes);
                let result = if inbound {
                    governor.on_local_written(now, id, bytes)
                } else {
                    governor.on_remote_sent(now, id, bytes)
                };
                match (result, model.flows.get_mut(&id)) {
                    (Ok(()), Some(flow)) => {
                        assert_ne!(flow.state, ModelState::Closed);
                        let pending = &mut flow.pending[usize::from(inbound)];
                        assert!(bytes <= *pending);
                        *pending -= bytes;
                        false
                    }
                    (Ok(()), None) => panic!("a forged id was accepted"),
                    (Err(FlowError::ExceedsPending { pending }), Some(flow)) => {
                        assert_ne!(flow.state, ModelState::Closed);
                        assert_eq!(pending, flow.pending[usize::from(inbound)]);
                        assert!(bytes > pending);
                        true
                    }
                    (Err(error), flow) => {
                        check_refusal(error, flow.as_deref());
                        true
                    }
                }
            }
            Op::Closed(target, tick) => {
                let now = Instant::from_micros(clock.tick(tick));
                let id = model.resolve(&target);
                let result = governor.on_closed(now, id);
                match (result, model.flows.get_mut(&id)) {
                    (Ok(outcome), Some(flow)) => {
                        let want = match flow.state {
                            ModelState::Open if flow.moved => FlowOutcome::Closed,
                            ModelState::Open => FlowOutcome::AlsoRan,
                            ModelState::Closing(reason) => FlowOutcome::ClosedByGovernor(reason),
                            ModelState::Closed => panic!("a flow closed twice"),
                        };
                        assert_eq!(outcome, want);
                        flow.state = ModelState::Closed;
                        flow.outcomes += 1;
                        assert_eq!(governor.state(id), Ok(FlowState::Closed));
                        false
                    }
                    (Ok(_), None) => panic!("a forged id was accepted"),
                    (Err(error), flow) => {
                        check_refusal(error, flow.as_deref());
                        true
                    }
                }
            }
            Op::Timeout(tick) => {
                let now = clock.tick(tick);
                governor.handle_timeout(Instant::from_micros(now));
                false
            }
            Op::ConnectionBudget(budget) => {
                max_connecting = u32::from(budget % 6);
                governor.set_connection_budget(max_connecting);
                false
            }
        };
        if refused {
            let after = governor.stats();
            let mut expected = before;
            expected.rejected = after.rejected;
            assert_eq!(after, expected, "a refused call changes nothing");
        }
        drain(&mut governor, &mut model);
        check(&governor, &model, &policy);
    }
    // Close everything: each flow still live ends exactly once, and the table ends empty.
    let now = Instant::from_micros(clock.tick(Tick::Same));
    for id in model.issued.clone() {
        let flow = model.flows.get_mut(&id).unwrap();
        match governor.on_closed(now, id) {
            Ok(_) => {
                assert_ne!(flow.state, ModelState::Closed);
                flow.state = ModelState::Closed;
                flow.outcomes += 1;
            }
            Err(error) => {
                assert_eq!(flow.state, ModelState::Closed);
                assert_eq!(error, FlowError::StaleFlow);
            }
        }
        assert_eq!(
            flow.outcomes, 1,
            "exactly one terminal outcome per admitted flow"
        );
    }
    let left = governor.poll_notification();
    assert_eq!(left, None, "no notification after every flow closed");
    let stats = governor.stats();
    assert_eq!(stats.flows.open() + stats.flows.closing, 0);
    assert_eq!(
        (stats.bytes_pending_outbound, stats.bytes_pending_inbound),
        (0, 0)
    );
    assert_eq!(governor.free_slots() as usize, slots);
});

fn policy_of(s: &Setup) -> FlowPolicy {
    let flow_high = u64::from(s.flow_high % 2000) + 1;
    let global_high = u64::from(s.global_high % 8000) + 1;
    let app_high = u64::from(s.app_high % 8000) + 1;
    FlowPolicy {
        max_flows: u32::from(s.max_flows % 12) + 1,
        max_flows_per_app: u32::from(s.per_app % 12) + 1,
        max_flows_per_destination: u32::from(s.per_destination % 12) + 1,
        max_connecting: u32::from(s.max_connecting % 12) + 1,
        idle_timeout_micros: (u64::from(s.idle_timeout_ms) + 1) * 1_000,
        connect_timeout_micros: (u64::from(s.connect_timeout_ms) + 1) * 1_000,
        flow_high_watermark: flow_high,
        flow_low_watermark: u64::from(s.flow_low) % flow_high,
        global_high_watermark: global_high,
        global_low_watermark: u64::from(s.global_low) % global_high,
        app_high_watermark: app_high,
        app_low_watermark: u64::from(s.app_low) % app_high,
        hash_seed: s.hash_seed,
        max_datagram_flows: u32::from(s.datagram_cap % 12) + 1,
        datagram_idle_timeout_micros: (u64::from(s.datagram_idle_ms) + 1) * 1_000,
        // Off (the default) for a quarter of the runs.
        datagram_max_lifetime_micros: match s.datagram_lifetime_ms {
            0..64 => u64::MAX,
            ms => u64::from(ms) * 1_000,
        },
        max_dns_in_flight: u32::from(s.dns_cap % 12) + 1,
        max_dns_in_flight_per_app: u32::from(s.dns_per_app % 12) + 1,
        dns_idle_timeout_micros: (u64::from(s.dns_idle_ms) + 1) * 1_000,
        max_paused_micros: (u64::from(s.paused_ms) + 1) * 1_000,
        app_admission_burst: u32::from(s.burst % 16) + 1,
        app_admission_rate_per_second: u32::from(s.rate) + 1,
    }
}

fn bytes_of(bytes: Bytes) -> u64 {
    match bytes {
        Bytes::Small(n) => u64::from(n % 3000),
        Bytes::Huge(n) => n,
    }
}

/// A refused report on `flow` (or on an id the governor never issued, `None`): the right error.
fn check_refusal(error: FlowError, flow: Option<&ModelFlow>) {
    match flow {
        None => assert!(
            matches!(error, FlowError::UnknownFlow | FlowError::StaleFlow),
            "a forged id gets UnknownFlow or StaleFlow, not {error:?}"
        ),
        Some(flow) if flow.state == ModelState::Closed => {
            assert_eq!(error, FlowError::StaleFlow, "a closed flow's id is stale")
        }
        Some(flow) => match error {
            FlowError::InvalidState { state } => {
                let phase = match flow.state {
                    ModelState::Closing(_) => FlowState::Closing,
                    _ => flow.phase,
                };
                assert_eq!(state, phase);
            }
            other => panic!("a live flow was refused with {other:?}"),
        },
    }
}

/// Drain notifications into the model: closes move open flows to closing.
fn drain(governor: &mut Governor, model: &mut Model) {
    while let Some(notification) = governor.poll_notification() {
        match notification {
            Notification::Close { id, reason } => {
                let flow = model
                    .flows
                    .get_mut(&id)
                    .expect("notifies about its own flows");
                assert_ne!(flow.state, ModelState::Closed, "no close for a closed flow");
                assert_ne!(
                    reason,
                    CloseReason::Evicted,
                    "evictions come with the admission"
                );
                if flow.state == ModelState::Open {
                    flow.state = ModelState::Closing(reason);
                }
                assert_eq!(flow.state, ModelState::Closing(reason));
            }
            Notification::ResumeReadLocal { id } | Notification::ResumeReadRemote { id } => {
                let flow = model.flows.get(&id).expect("notifies about its own flows");
                assert_eq!(flow.state, ModelState::Open, "resumes only for open flows");
            }
        }
    }
}

fn check(governor: &Governor, model: &Model, policy: &FlowPolicy) {
    let stats = governor.stats();
    let open = model.open_count(|_| true);
    assert_eq!(stats.flows.open(), open);
    assert!(open <= policy.max_flows, "global cap");
    let closing = model
        .flows
        .values()
        .filter(|f| matches!(f.state, ModelState::Closing(_)))
        .count() as u32;
    assert_eq!(stats.flows.closing, closing);
    for key in 0..5u64 {
        let app = model.open_count(|f| f.app == key);
        assert_eq!(governor.app_flows(AppId(key)), app);
        assert!(app <= policy.max_flows_per_app, "per-app cap");
        let destination = model.open_count(|f| f.destination == key);
        assert_eq!(governor.destination_flows(DestinationKey(key)), destination);
        assert!(
            destination <= policy.max_flows_per_destination,
            "per-destination cap"
        );
        let dns = model.open_count(|f| f.app == key && f.class == FlowClass::Dns);
        assert_eq!(governor.app_state(AppId(key)).dns_in_flight, dns);
        assert!(dns <= policy.max_dns_in_flight_per_app, "per-app DNS cap");
    }
    let datagram = model.open_count(|f| f.class == FlowClass::Datagram);
    assert_eq!(stats.datagram_flows, datagram);
    assert!(datagram <= policy.max_datagram_flows, "UDP cap");
    let dns = model.open_count(|f| f.class == FlowClass::Dns);
    assert_eq!(stats.dns_in_flight, dns);
    assert!(dns <= policy.max_dns_in_flight, "DNS cap");
    let live = || {
        model
            .flows
            .values()
            .filter(|f| f.state != ModelState::Closed)
    };
    let pending = |side: usize| live().fold(0u64, |sum, f| sum.saturating_add(f.pending[side]));
    assert_eq!(
        stats.bytes_pending_outbound,
        pending(0),
        "outbound pending bytes"
    );
    assert_eq!(
        stats.bytes_pending_inbound,
        pending(1),
        "inbound pending bytes"
    );
    // Closed flows are checked once, when they close, and again at the end of the run.
    for (id, flow) in model
        .flows
        .iter()
        .filter(|(_, f)| f.state != ModelState::Closed)
    {
        let state = governor.state(*id).expect("issued ids resolve");
        let want = match flow.state {
            ModelState::Open => flow.phase,
            ModelState::Closing(_) => FlowState::Closing,
            ModelState::Closed => FlowState::Closed,
        };
        assert_eq!(state, want);
        if flow.state != ModelState::Closed {
            let view = governor.flow(*id).expect("a live flow has a view");
            assert_eq!([view.outbound_pending, view.inbound_pending], flow.pending);
        }
    }
}
