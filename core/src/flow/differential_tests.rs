//! Differential property test: the governor against a plain `HashMap` model over random
//! sequences of new / connecting / connected / failed / read / complete / close / timeout /
//! memory pressure.
//!
//! The model is written from the documentation: the caps (global, per app, per destination,
//! UDP, DNS in flight overall and per app), admission pacing's token bucket, the deadlines of
//! every kind (connect, idle per class, UDP lifetime, paused time), the watermarks, and memory
//! pressure (caps and watermarks scaled, reads above a shrunk watermark paused at once and
//! resumed when they grow back, admission refused and idle flows evicted at critical). It
//! predicts every admission answer (except which of several equally heavy apps loses a flow),
//! every error, every outcome, every close notification and its reason, and the next timeout,
//! and checks the invariants the governor exists for: caps never exceeded, pending bytes never
//! negative and never above the watermark plus one read when the host obeys readiness, no
//! resume lost or spurious, and exactly one terminal outcome per admitted flow.

use super::*;
use crate::ErrorClass;
use proptest::prelude::*;
use std::collections::{HashMap, HashSet};
use std::vec::Vec;

const SLOTS: usize = 9;
const MAX_READ: u64 = 70;

/// The policy of a run. Every timeout is multiplied by `time_scale` and the pacing rate divided
/// by it: at 1 flows live for microseconds, at 10,000 for seconds, long enough for the idle
/// eviction under critical pressure (flows idle for 2 s) to matter.
fn policy(per_app: u32, time_scale: u64) -> FlowPolicy {
    let rate = 25_000 / u32::try_from(time_scale).unwrap();
    FlowPolicy {
        max_flows: 6,
        max_flows_per_app: per_app,
        max_flows_per_destination: 5,
        max_connecting: 5,
        idle_timeout_micros: 300 * time_scale,
        connect_timeout_micros: 150 * time_scale,
        flow_high_watermark: 100,
        flow_low_watermark: 40,
        app_high_watermark: 180,
        app_low_watermark: 90,
        global_high_watermark: 300,
        global_low_watermark: 150,
        hash_seed: 7,
        max_datagram_flows: 3,
        datagram_idle_timeout_micros: 120 * time_scale,
        datagram_max_lifetime_micros: 400 * time_scale,
        max_dns_in_flight: 3,
        max_dns_in_flight_per_app: 2,
        dns_idle_timeout_micros: 80 * time_scale,
        max_paused_micros: 200 * time_scale,
        app_admission_burst: 4,
        // One token per 40 µs (times the scale).
        app_admission_rate_per_second: rate.max(1),
    }
}

/// `policy` as the documentation says memory pressure `level` applies it: the caps and the
/// six watermarks at the whole configured value at normal, half at elevated, a quarter at
/// critical, never below 1; a low watermark that meets its high one drops to one below it.
fn scaled(policy: &FlowPolicy, level: Pressure) -> FlowPolicy {
    let divisor = match level {
        Pressure::Normal => 1,
        Pressure::Elevated => 2,
        Pressure::Critical => 4,
    };
    let cap = |limit: u32| (limit / divisor).max(1);
    let mark = |limit: u64| (limit / u64::from(divisor)).max(1);
    let pair = |high: u64, low: u64| {
        let high = mark(high);
        (high, mark(low).min(high - 1))
    };
    let (flow_high_watermark, flow_low_watermark) =
        pair(policy.flow_high_watermark, policy.flow_low_watermark);
    let (app_high_watermark, app_low_watermark) =
        pair(policy.app_high_watermark, policy.app_low_watermark);
    let (global_high_watermark, global_low_watermark) =
        pair(policy.global_high_watermark, policy.global_low_watermark);
    FlowPolicy {
        max_flows: cap(policy.max_flows),
        max_flows_per_app: cap(policy.max_flows_per_app),
        max_flows_per_destination: cap(policy.max_flows_per_destination),
        max_datagram_flows: cap(policy.max_datagram_flows),
        max_dns_in_flight: cap(policy.max_dns_in_flight),
        max_dns_in_flight_per_app: cap(policy.max_dns_in_flight_per_app),
        flow_high_watermark,
        flow_low_watermark,
        app_high_watermark,
        app_low_watermark,
        global_high_watermark,
        global_low_watermark,
        ..*policy
    }
}

/// One token of the pacing bucket, in the millionths the documentation counts in.
const TOKEN: u128 = 1_000_000;

#[derive(Clone, Debug)]
enum Op {
    New {
        app: u64,
        destination: u64,
        class: u8,
    },
    Connecting(usize),
    Connected(usize),
    ConnectFailed(usize, u8),
    Read {
        flow: usize,
        inbound: bool,
        bytes: u64,
    },
    Complete {
        flow: usize,
        inbound: bool,
        bytes: u64,
    },
    Close(usize),
    Advance(u64),
    /// Time passes without a timer firing: the next input carries a later `now`.
    Tick(u64),
    Forged(u64),
    /// The memory governor reports a pressure level.
    Pressure(Pressure),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u64..4, 0u64..4, 0u8..3)
            .prop_map(|(app, destination, class)| Op::New { app, destination, class }),
        1 => any::<usize>().prop_map(Op::Connecting),
        3 => any::<usize>().prop_map(Op::Connected),
        1 => (any::<usize>(), 0u8..7).prop_map(|(flow, class)| Op::ConnectFailed(flow, class)),
        6 => (any::<usize>(), any::<bool>(), 0u64..=MAX_READ)
            .prop_map(|(flow, inbound, bytes)| Op::Read { flow, inbound, bytes }),
        6 => (any::<usize>(), any::<bool>(), 0u64..=MAX_READ)
            .prop_map(|(flow, inbound, bytes)| Op::Complete { flow, inbound, bytes }),
        2 => any::<usize>().prop_map(Op::Close),
        2 => (0u64..60).prop_map(Op::Advance),
        1 => (0u64..30).prop_map(Op::Tick),
        1 => any::<u64>().prop_map(Op::Forged),
        1 => prop_oneof![
            Just(Pressure::Normal),
            Just(Pressure::Elevated),
            Just(Pressure::Critical)
        ]
        .prop_map(Op::Pressure),
    ]
}

#[derive(Clone, Debug)]
struct ModelFlow {
    app: u64,
    destination: u64,
    class: FlowClass,
    /// Since when a read has been paused (the host waits for a resume), while one is.
    paused_since: Option<u64>,
    state: FlowState,
    reason: Option<CloseReason>,
    pending: [u64; 2],
    over: [bool; 2],
    /// The host stopped reading this direction and waits for a resume.
    host_paused: [bool; 2],
    moved: bool,
    admitted: u64,
    last_active: u64,
    /// Activity order, for least-recently-active eviction.
    seq: u64,
    close_notified: bool,
}

struct Model {
    /// The configured policy.
    policy: FlowPolicy,
    /// The policy in force: `policy` scaled for `level`.
    limits: FlowPolicy,
    level: Pressure,
    /// When the next eviction round of idle flows is due, while pressure is critical.
    next_eviction: Option<u64>,
    /// What `Op::Advance` and `Op::Tick` multiply their microseconds by.
    time_scale: u64,
    now: u64,
    seq: u64,
    flows: HashMap<FlowId, ModelFlow>,
    /// Every id ever issued, live or not, so ops can name closed flows too.
    issued: Vec<FlowId>,
    outcomes: HashMap<FlowId, FlowOutcome>,
    global_paused: bool,
    /// Apps whose reads the app watermark pauses.
    apps_paused: HashSet<u64>,
    /// Each app's pacing bucket, while the app has a flow in the table: tokens in millionths
    /// and when they were counted.
    buckets: HashMap<u64, (u128, u64)>,
}

impl Model {
    fn open(&self) -> impl Iterator<Item = (&FlowId, &ModelFlow)> {
        self.flows.iter().filter(|(_, f)| f.state.is_open())
    }

    fn class_open(&self, class: FlowClass, app: Option<u64>) -> u32 {
        self.open()
            .filter(|(_, f)| f.class == class && app.is_none_or(|app| f.app == app))
            .count() as u32
    }

    /// App `app`'s pacing bucket brought up to now: it refills at the rate, up to the burst,
    /// and an app with no flow in the table has a full one.
    fn tokens_now(&self, app: u64) -> u128 {
        let full = u128::from(self.policy.app_admission_burst) * TOKEN;
        let Some(&(tokens, at)) = self.buckets.get(&app) else {
            return full;
        };
        let refill =
            u128::from(self.now - at) * u128::from(self.policy.app_admission_rate_per_second);
        (tokens + refill).min(full)
    }

    /// Keep a flow's pause start in step with its paused reads.
    fn sync_paused(&mut self, id: FlowId) {
        let now = self.now;
        if let Some(flow) = self.flows.get_mut(&id) {
            let paused = flow.state.is_open() && flow.host_paused.iter().any(|&p| p);
            flow.paused_since = match (paused, flow.paused_since) {
                (true, Some(since)) => Some(since),
                (true, None) => Some(now),
                (false, _) => None,
            };
        }
    }

    /// The deadlines of an open flow, in the order the governor's sweep tries them.
    fn deadlines(&self, flow: &ModelFlow) -> Vec<(u64, CloseReason)> {
        let policy = self.policy;
        let mut out = Vec::new();
        match flow.state {
            FlowState::Opening | FlowState::Connecting => out.push((
                flow.admitted.saturating_add(policy.connect_timeout_micros),
                CloseReason::ConnectTimeout,
            )),
            FlowState::Established => {
                let idle = match flow.class {
                    FlowClass::Stream => policy.idle_timeout_micros,
                    FlowClass::Datagram => policy.datagram_idle_timeout_micros,
                    FlowClass::Dns => policy.dns_idle_timeout_micros,
                };
                out.push((
                    flow.last_active.saturating_add(idle),
                    CloseReason::IdleTimeout,
                ));
            }
            _ => return out,
        }
        if flow.class == FlowClass::Datagram {
            out.push((
                flow.admitted
                    .saturating_add(policy.datagram_max_lifetime_micros),
                CloseReason::LifetimeExceeded,
            ));
        }
        if let Some(since) = flow.paused_since {
            out.push((
                since.saturating_add(policy.max_paused_micros),
                CloseReason::PausedTooLong,
            ));
        }
        out
    }

    fn app_open(&self, app: u64) -> u32 {
        self.open().filter(|(_, f)| f.app == app).count() as u32
    }

    fn total_pending(&self) -> u64 {
        self.flows
            .values()
            .map(|f| f.pending[0] + f.pending[1])
            .sum()
    }

    fn app_pending(&self, app: u64) -> u64 {
        self.flows
            .values()
            .filter(|f| f.app == app)
            .map(|f| f.pending[0] + f.pending[1])
            .sum()
    }

    /// The app watermarks' hysteresis, then the global one's.
    fn update_global(&mut self) {
        let apps: HashSet<u64> = self
            .flows
            .values()
            .map(|f| f.app)
            .chain(self.apps_paused.iter().copied())
            .collect();
        for app in apps {
            let pending = self.app_pending(app);
            if pending >= self.limits.app_high_watermark {
                self.apps_paused.insert(app);
            } else if pending <= self.limits.app_low_watermark {
                self.apps_paused.remove(&app);
            }
        }
        let total = self.total_pending();
        if !self.global_paused && total >= self.limits.global_high_watermark {
            self.global_paused = true;
        } else if self.global_paused && total <= self.limits.global_low_watermark {
            self.global_paused = false;
        }
    }

    fn readable(&self, id: FlowId, side: usize) -> bool {
        let Some(flow) = self.flows.get(&id) else {
            return false;
        };
        let state_ok = if side == 0 {
            flow.state.is_open()
        } else {
            flow.state == FlowState::Established
        };
        state_ok && !flow.over[side] && !self.global_paused && !self.apps_paused.contains(&flow.app)
    }

    fn touch(&mut self, id: FlowId) {
        self.seq += 1;
        let (now, seq) = (self.now, self.seq);
        if let Some(flow) = self.flows.get_mut(&id) {
            flow.last_active = now;
            flow.seq = seq;
        }
    }

    /// The answer the governor must give, with the eviction victim's app when it evicts.
    fn expected_admission(
        &self,
        app: u64,
        destination: u64,
        class: FlowClass,
    ) -> Result<Option<()>, RejectReason> {
        if self.level == Pressure::Critical {
            return Err(RejectReason::MemoryPressure);
        }
        // The caps in force; the limit on flows connecting is not scaled.
        let policy = self.limits;
        let app_open = self.app_open(app);
        if app_open >= policy.max_flows_per_app {
            return Err(RejectReason::AppOverLimit);
        }
        let destination_open = self
            .open()
            .filter(|(_, f)| f.destination == destination)
            .count() as u32;
        if destination_open >= policy.max_flows_per_destination {
            return Err(RejectReason::DestinationOverLimit);
        }
        match class {
            FlowClass::Stream => {}
            FlowClass::Datagram => {
                if self.class_open(class, None) >= policy.max_datagram_flows {
                    return Err(RejectReason::DatagramOverLimit);
                }
            }
            FlowClass::Dns => {
                if self.class_open(class, None) >= policy.max_dns_in_flight
                    || self.class_open(class, Some(app)) >= policy.max_dns_in_flight_per_app
                {
                    return Err(RejectReason::DnsOverLimit);
                }
            }
        }
        if class != FlowClass::Dns && self.tokens_now(app) < TOKEN {
            return Err(RejectReason::Paced);
        }
        let connecting = self
            .open()
            .filter(|(_, f)| f.state != FlowState::Established)
            .count() as u32;
        if connecting >= self.policy.max_connecting {
            return Err(RejectReason::ConnectionBudget);
        }
        if self.flows.len() >= SLOTS {
            return Err(RejectReason::TableFull);
        }
        let open = self.open().count() as u32;
        if open < policy.max_flows {
            return Ok(None);
        }
        let mut apps: HashSet<u64> = self.open().map(|(_, f)| f.app).collect();
        apps.insert(app);
        let fair_share = (policy.max_flows / apps.len() as u32).max(1);
        let heaviest = apps.iter().map(|&a| self.app_open(a)).max().unwrap_or(0);
        if app_open < fair_share && heaviest >= app_open + 2 {
            Ok(Some(()))
        } else {
            Err(RejectReason::TableFull)
        }
    }

    fn check_victim(&self, victim: FlowId) -> Result<(), TestCaseError> {
        let flow = self
            .flows
            .get(&victim)
            .ok_or_else(|| fail("victim unknown"))?;
        prop_assert!(flow.state.is_open());
        let heaviest = self
            .open()
            .map(|(_, f)| self.app_open(f.app))
            .max()
            .unwrap_or(0);
        prop_assert_eq!(self.app_open(flow.app), heaviest);
        let candidates: Vec<&ModelFlow> = self
            .open()
            .filter(|(_, f)| f.app == flow.app)
            .map(|(_, f)| f)
            .collect();
        let idle: Vec<&&ModelFlow> = candidates.iter().filter(|f| f.pending == [0, 0]).collect();
        let expected_seq = if idle.is_empty() {
            candidates.iter().map(|f| f.seq).min()
        } else {
            idle.iter().map(|f| f.seq).min()
        };
        prop_assert_eq!(Some(flow.seq), expected_seq);
        Ok(())
    }

    /// A paced flow of `app` stopped being open: its token goes back, up to the burst.
    fn give_back(&mut self, app: u64, class: FlowClass) {
        if class == FlowClass::Dns {
            return;
        }
        let full = u128::from(self.policy.app_admission_burst) * TOKEN;
        let tokens = (self.tokens_now(app) + TOKEN).min(full);
        self.buckets.insert(app, (tokens, self.now));
    }

    /// The governor closes open flow `id` for `reason`: its token goes back, its reads stop.
    fn begin_closing(&mut self, id: FlowId, reason: CloseReason) {
        let (app, class) = (self.flows[&id].app, self.flows[&id].class);
        self.give_back(app, class);
        let flow = self.flows.get_mut(&id).unwrap();
        flow.state = FlowState::Closing;
        flow.reason = Some(reason);
        flow.host_paused = [false, false];
        flow.paused_since = None;
    }

    /// An eviction round: every established flow idle for 2 s closes (a round closes up to 32,
    /// more than the table holds), and the next round is due in 1 s.
    fn evict_idle(&mut self) {
        let now = self.now;
        let idle: Vec<FlowId> = self
            .flows
            .iter()
            .filter(|(_, f)| f.state == FlowState::Established && now - f.last_active >= 2_000_000)
            .map(|(&id, _)| id)
            .collect();
        for id in idle {
            self.begin_closing(id, CloseReason::MemoryPressure);
        }
        self.next_eviction = Some(now + 1_000_000);
    }

    /// The governor applies pressure `level`: the limits change, every open flow's watermark
    /// hysteresis is applied again with them, then the app and global ones; reads that may no
    /// longer run are paused (the host may be between reads), paused ones that may run again are
    /// resumed by notification (checked by `drain_and_check`). At critical an eviction round
    /// runs unless one is already scheduled; below critical none is.
    fn on_pressure(&mut self, level: Pressure) {
        self.level = level;
        self.limits = scaled(&self.policy, level);
        let (high, low) = (
            self.limits.flow_high_watermark,
            self.limits.flow_low_watermark,
        );
        for flow in self.flows.values_mut().filter(|f| f.state.is_open()) {
            for side in 0..2 {
                if flow.pending[side] >= high {
                    flow.over[side] = true;
                } else if flow.pending[side] <= low {
                    flow.over[side] = false;
                }
            }
        }
        self.update_global();
        let mut ids: Vec<FlowId> = self.flows.keys().copied().collect();
        ids.sort();
        for id in ids {
            let flow = &self.flows[&id];
            let may_read = [flow.state.is_open(), flow.state == FlowState::Established];
            for (side, may_read) in may_read.into_iter().enumerate() {
                let flow = &self.flows[&id];
                if may_read && !flow.host_paused[side] && !self.readable(id, side) {
                    self.flows.get_mut(&id).unwrap().host_paused[side] = true;
                }
            }
            self.sync_paused(id);
        }
        if level == Pressure::Critical {
            if self.next_eviction.is_none() {
                self.evict_idle();
            }
        } else {
            self.next_eviction = None;
        }
    }

    fn release(&mut self, id: FlowId, outcome: FlowOutcome) {
        if let Some(flow) = self.flows.get(&id)
            && flow.state.is_open()
        {
            self.give_back(flow.app, flow.class);
        }
        if let Some(flow) = self.flows.remove(&id)
            && !self.flows.values().any(|f| f.app == flow.app)
        {
            // The app's record, and its bucket with it, is freed with its last flow.
            self.buckets.remove(&flow.app);
        }
        let previous = self.outcomes.insert(id, outcome);
        assert!(previous.is_none(), "second outcome for {id}");
        self.update_global();
    }
}

fn fail(message: &str) -> TestCaseError {
    TestCaseError::fail(message.to_string())
}

/// A flow for an op: usually a live one, sometimes any id ever issued (so stale ids are used).
fn pick(model: &Model, index: usize) -> FlowId {
    let mut live: Vec<FlowId> = model.flows.keys().copied().collect();
    live.sort();
    if !index.is_multiple_of(5) && !live.is_empty() {
        live[index / 5 % live.len()]
    } else if model.issued.is_empty() {
        FlowId::new(3, 1)
    } else {
        model.issued[index / 5 % model.issued.len()]
    }
}

fn lookup_error(model: &Model, id: FlowId) -> Option<FlowError> {
    if model.flows.contains_key(&id) {
        None
    } else if model.outcomes.contains_key(&id) {
        Some(FlowError::StaleFlow)
    } else {
        Some(FlowError::UnknownFlow)
    }
}

fn run(ops: Vec<Op>, per_app: u32, time_scale: u64) -> Result<(), TestCaseError> {
    let policy = policy(per_app, time_scale);
    let mut governor = FlowGovernor::new(Instant::ZERO, [FlowSlot::EMPTY; SLOTS], policy)
        .map_err(|_| fail("policy"))?;
    let mut model = Model {
        policy,
        limits: policy,
        level: Pressure::Normal,
        next_eviction: None,
        time_scale,
        now: 0,
        seq: 0,
        flows: HashMap::new(),
        issued: Vec::new(),
        outcomes: HashMap::new(),
        global_paused: false,
        apps_paused: HashSet::new(),
        buckets: HashMap::new(),
    };
    for op in ops {
        step(&mut governor, &mut model, op)?;
        drain_and_check(&mut governor, &mut model)?;
        check_invariants(&governor, &model)?;
    }
    // Close everything left: each flow ends with exactly one outcome.
    let live: Vec<FlowId> = model.flows.keys().copied().collect();
    for id in live {
        let outcome = governor.on_closed(Instant::from_micros(model.now), id);
        prop_assert!(outcome.is_ok());
        if let Ok(outcome) = outcome {
            model.release(id, outcome);
        }
    }
    prop_assert_eq!(model.outcomes.len(), model.issued.len());
    let stats = governor.stats();
    let failures: u64 = stats.connect_failures.iter().sum();
    prop_assert_eq!(
        stats.admitted,
        stats.closed
            + stats.also_ran
            + failures
            + stats.evicted
            + stats.idle_timeouts
            + stats.connect_timeouts
            + stats.lifetime_closes
            + stats.paused_closes
            + stats.pressure_closes
    );
    prop_assert_eq!(governor.free_slots() as usize, SLOTS);
    prop_assert_eq!(stats.apps, 0);
    prop_assert_eq!(
        stats.bytes_pending_inbound + stats.bytes_pending_outbound,
        0
    );
    // While pressure stays critical, the eviction rounds keep their timer.
    prop_assert_eq!(
        governor.poll_timeout(),
        model.next_eviction.map(Instant::from_micros)
    );
    Ok(())
}

fn step<S: AsRef<[FlowSlot]> + AsMut<[FlowSlot]>>(
    governor: &mut FlowGovernor<S>,
    model: &mut Model,
    op: Op,
) -> Result<(), TestCaseError> {
    let now = Instant::from_micros(model.now);
    match op {
        Op::New {
            app,
            destination,
            class,
        } => {
            let class = FlowClass::from_u8(class).unwrap();
            let expected = model.expected_admission(app, destination, class);
            let info = FlowInfo {
                app: AppId(app),
                destination: DestinationKey(destination),
                protocol: Protocol::Udp,
                class,
            };
            let tokens = model.tokens_now(app);
            let answer = governor.on_new_flow(now, info);
            let id = match (expected, answer) {
                (Err(reason), Admission::Rejected(got)) => {
                    prop_assert_eq!(reason, got);
                    // Admission observed `now`: the tokens reported are the model's now.
                    prop_assert_eq!(
                        u128::from(governor.app_state(AppId(app)).admission_tokens),
                        model.tokens_now(app) / TOKEN
                    );
                    return Ok(());
                }
                (Ok(None), Admission::Accepted { id }) => id,
                (Ok(Some(())), Admission::AcceptedAfterEvicting { id, evicted }) => {
                    model.check_victim(evicted)?;
                    if let Some(&ModelFlow { app, class, .. }) = model.flows.get(&evicted) {
                        model.give_back(app, class);
                    }
                    if let Some(flow) = model.flows.get_mut(&evicted) {
                        flow.state = FlowState::Closing;
                        flow.reason = Some(CloseReason::Evicted);
                        flow.host_paused = [false, false];
                        flow.paused_since = None;
                        // Reported by the answer, never as a notification.
                        flow.close_notified = true;
                    }
                    id
                }
                (expected, answer) => {
                    return Err(fail(&std::format!("expected {expected:?}, got {answer:?}")));
                }
            };
            prop_assert!(!model.issued.contains(&id), "id reused: {}", id);
            model.issued.push(id);
            let after = if class == FlowClass::Dns {
                tokens
            } else {
                tokens - TOKEN
            };
            model.buckets.insert(app, (after, model.now));
            prop_assert_eq!(
                u128::from(governor.app_state(AppId(app)).admission_tokens),
                model.tokens_now(app) / TOKEN
            );
            model.flows.insert(
                id,
                ModelFlow {
                    app,
                    destination,
                    class,
                    paused_since: None,
                    state: FlowState::Opening,
                    reason: None,
                    pending: [0, 0],
                    over: [false, false],
                    host_paused: [false, false],
                    moved: false,
                    admitted: model.now,
                    last_active: model.now,
                    seq: 0,
                    close_notified: false,
                },
            );
            model.touch(id);
            let readable = governor.can_read_local(id);
            prop_assert_eq!(readable, model.readable(id, 0));
            if let Some(flow) = model.flows.get_mut(&id) {
                flow.host_paused[0] = !readable;
            }
            model.sync_paused(id);
        }
        Op::Connecting(index) => {
            let id = pick(model, index);
            let result = governor.on_connecting(now, id);
            match (lookup_error(model, id), model.flows.get_mut(&id)) {
                (Some(error), _) => prop_assert_eq!(result, Err(error)),
                (None, Some(flow)) if flow.state == FlowState::Opening => {
                    prop_assert_eq!(result, Ok(()));
                    flow.state = FlowState::Connecting;
                }
                (None, Some(flow)) => {
                    prop_assert_eq!(result, Err(FlowError::InvalidState { state: flow.state }));
                }
                (None, None) => unreachable!(),
            }
        }
        Op::Connected(index) => {
            let id = pick(model, index);
            let result = governor.on_connected(now, id);
            if let Some(error) = lookup_error(model, id) {
                prop_assert_eq!(result, Err(error));
                return Ok(());
            }
            let state = model.flows[&id].state;
            if matches!(state, FlowState::Opening | FlowState::Connecting) {
                prop_assert_eq!(result, Ok(()));
                model.flows.get_mut(&id).unwrap().state = FlowState::Established;
                model.touch(id);
                let readable = [governor.can_read_local(id), governor.can_read_remote(id)];
                prop_assert_eq!(readable, [model.readable(id, 0), model.readable(id, 1)]);
                let flow = model.flows.get_mut(&id).unwrap();
                flow.host_paused = [!readable[0], !readable[1]];
                model.sync_paused(id);
            } else {
                prop_assert_eq!(result, Err(FlowError::InvalidState { state }));
            }
        }
        Op::ConnectFailed(index, class) => {
            let id = pick(model, index);
            let class = ErrorClass::from_u8(class).unwrap();
            let result = governor.on_connect_failed(now, id, class);
            if let Some(error) = lookup_error(model, id) {
                prop_assert_eq!(result, Err(error));
                return Ok(());
            }
            let flow = &model.flows[&id];
            let expected = match flow.state {
                FlowState::Opening | FlowState::Connecting => FlowOutcome::ConnectFailed(class),
                FlowState::Closing => FlowOutcome::ClosedByGovernor(flow.reason.unwrap()),
                state => {
                    prop_assert_eq!(result, Err(FlowError::InvalidState { state }));
                    return Ok(());
                }
            };
            prop_assert_eq!(result, Ok(expected));
            model.release(id, expected);
        }
        Op::Read {
            flow,
            inbound,
            bytes,
        } => {
            let id = pick(model, flow);
            let side = usize::from(inbound);
            // The host obeys readiness: it reads only when allowed and not waiting for a resume.
            let allowed = if inbound {
                governor.can_read_remote(id)
            } else {
                governor.can_read_local(id)
            };
            prop_assert_eq!(allowed, model.readable(id, side));
            let waiting = model.flows.get(&id).is_some_and(|f| f.host_paused[side]);
            if !allowed || waiting {
                return Ok(());
            }
            let result = if inbound {
                governor.on_remote_read(now, id, bytes)
            } else {
                governor.on_local_read(now, id, bytes)
            };
            prop_assert_eq!(result, Ok(()));
            if bytes > 0 {
                let high = model.limits.flow_high_watermark;
                let flow = model.flows.get_mut(&id).unwrap();
                flow.pending[side] += bytes;
                flow.moved = true;
                if flow.pending[side] >= high {
                    flow.over[side] = true;
                }
                model.update_global();
                model.touch(id);
                let readable = if inbound {
                    governor.can_read_remote(id)
                } else {
                    governor.can_read_local(id)
                };
                prop_assert_eq!(readable, model.readable(id, side));
                model.flows.get_mut(&id).unwrap().host_paused[side] = !readable;
                model.sync_paused(id);
            }
        }
        Op::Complete {
            flow,
            inbound,
            bytes,
        } => {
            let id = pick(model, flow);
            let side = usize::from(inbound);
            let result = if inbound {
                governor.on_local_written(now, id, bytes)
            } else {
                governor.on_remote_sent(now, id, bytes)
            };
            if let Some(error) = lookup_error(model, id) {
                prop_assert_eq!(result, Err(error));
                return Ok(());
            }
            let low = model.limits.flow_low_watermark;
            let flow = model.flows.get_mut(&id).unwrap();
            if bytes > flow.pending[side] {
                prop_assert_eq!(
                    result,
                    Err(FlowError::ExceedsPending {
                        pending: flow.pending[side]
                    })
                );
                return Ok(());
            }
            prop_assert_eq!(result, Ok(()));
            if bytes > 0 {
                flow.pending[side] -= bytes;
                if flow.pending[side] <= low {
                    flow.over[side] = false;
                }
                model.update_global();
                model.touch(id);
            }
        }
        Op::Close(index) => {
            let id = pick(model, index);
            let result = governor.on_closed(now, id);
            if let Some(error) = lookup_error(model, id) {
                prop_assert_eq!(result, Err(error));
                return Ok(());
            }
            let flow = &model.flows[&id];
            let expected = if flow.state == FlowState::Closing {
                FlowOutcome::ClosedByGovernor(flow.reason.unwrap())
            } else if flow.moved {
                FlowOutcome::Closed
            } else {
                FlowOutcome::AlsoRan
            };
            prop_assert_eq!(result, Ok(expected));
            model.release(id, expected);
        }
        Op::Advance(micros) => {
            model.now += micros * model.time_scale;
            let now = model.now;
            governor.handle_timeout(Instant::from_micros(now));
            let due: Vec<(FlowId, CloseReason)> = model
                .flows
                .iter()
                .filter_map(|(&id, flow)| {
                    let deadlines = model.deadlines(flow);
                    // The first due deadline in the sweep's order names the reason.
                    deadlines
                        .into_iter()
                        .find(|&(deadline, _)| deadline <= now)
                        .map(|(_, reason)| (id, reason))
                })
                .collect();
            for (id, reason) in due {
                model.begin_closing(id, reason);
            }
            // The deadlines first, then the eviction round if one is due.
            if model.next_eviction.is_some_and(|due| due <= now) {
                model.evict_idle();
            }
        }
        Op::Tick(micros) => model.now += micros * model.time_scale,
        Op::Forged(raw) => {
            let id = FlowId::from_raw(raw | (1 << 63));
            prop_assert_eq!(governor.on_closed(now, id), Err(FlowError::UnknownFlow));
            prop_assert!(!governor.can_read_local(id));
        }
        Op::Pressure(level) => {
            governor.on_pressure(now, level);
            model.on_pressure(level);
        }
    }
    Ok(())
}

fn drain_and_check<S: AsRef<[FlowSlot]> + AsMut<[FlowSlot]>>(
    governor: &mut FlowGovernor<S>,
    model: &mut Model,
) -> Result<(), TestCaseError> {
    let mut guard = 0;
    while let Some(notification) = governor.poll_notification() {
        guard += 1;
        prop_assert!(guard < 100, "notifications never end");
        match notification {
            Notification::Close { id, reason } => {
                let flow = model
                    .flows
                    .get_mut(&id)
                    .ok_or_else(|| fail("close of unknown"))?;
                prop_assert_eq!(flow.state, FlowState::Closing);
                prop_assert_eq!(flow.reason, Some(reason));
                prop_assert!(!flow.close_notified, "close reported twice");
                flow.close_notified = true;
            }
            Notification::ResumeReadLocal { id } | Notification::ResumeReadRemote { id } => {
                let side = usize::from(matches!(
                    notification,
                    Notification::ResumeReadRemote { .. }
                ));
                prop_assert!(model.readable(id, side), "resume while not readable");
                let flow = model
                    .flows
                    .get_mut(&id)
                    .ok_or_else(|| fail("resume of unknown"))?;
                prop_assert!(flow.host_paused[side], "spurious resume");
                flow.host_paused[side] = false;
                model.sync_paused(id);
            }
        }
    }
    // No lost wake-up: a paused read that may restart has been resumed.
    for (&id, flow) in &model.flows {
        for side in 0..2 {
            prop_assert!(
                !(flow.host_paused[side] && model.readable(id, side)),
                "lost resume for {} side {}",
                id,
                side
            );
        }
        if flow.state == FlowState::Closing {
            prop_assert!(flow.close_notified, "close lost for {}", id);
        }
    }
    Ok(())
}

fn check_invariants<S: AsRef<[FlowSlot]> + AsMut<[FlowSlot]>>(
    governor: &FlowGovernor<S>,
    model: &Model,
) -> Result<(), TestCaseError> {
    let policy = model.policy;
    let stats = governor.stats();
    prop_assert_eq!(governor.pressure(), model.level);
    prop_assert_eq!(governor.limits(), &model.limits);
    let open = model.open().count() as u32;
    prop_assert!(open <= policy.max_flows);
    prop_assert_eq!(governor.open_flows(), open);
    prop_assert_eq!(governor.free_slots() as usize, SLOTS - model.flows.len());
    for app in 0..4 {
        prop_assert!(governor.app_flows(AppId(app)) <= policy.max_flows_per_app);
        prop_assert_eq!(governor.app_flows(AppId(app)), model.app_open(app));
    }
    for destination in 0..4 {
        let count = model
            .open()
            .filter(|(_, f)| f.destination == destination)
            .count() as u32;
        prop_assert_eq!(
            governor.destination_flows(DestinationKey(destination)),
            count
        );
        prop_assert!(count <= policy.max_flows_per_destination);
    }
    let count = |state| model.flows.values().filter(|f| f.state == state).count() as u32;
    prop_assert_eq!(
        stats.flows,
        FlowsByState {
            opening: count(FlowState::Opening),
            connecting: count(FlowState::Connecting),
            established: count(FlowState::Established),
            closing: count(FlowState::Closing),
        }
    );
    let outbound: u64 = model.flows.values().map(|f| f.pending[0]).sum();
    let inbound: u64 = model.flows.values().map(|f| f.pending[1]).sum();
    prop_assert_eq!(stats.bytes_pending_outbound, outbound);
    prop_assert_eq!(stats.bytes_pending_inbound, inbound);
    prop_assert_eq!(stats.reads_paused_globally, model.global_paused);
    prop_assert_eq!(stats.apps_reads_paused as usize, model.apps_paused.len());
    for app in 0..4 {
        // The host obeys readiness, so an app's watermark is overshot by less than one read.
        prop_assert!(model.app_pending(app) < policy.app_high_watermark + MAX_READ);
        let state = governor.app_state(AppId(app));
        prop_assert_eq!(
            (state.open_flows, state.bytes_pending, state.reads_paused),
            (
                model.app_open(app),
                model.app_pending(app),
                model.apps_paused.contains(&app)
            )
        );
        prop_assert_eq!(
            state.dns_in_flight,
            model.class_open(FlowClass::Dns, Some(app))
        );
    }
    // The host obeys readiness, so a watermark is overshot by less than one read.
    prop_assert!(outbound + inbound < policy.global_high_watermark + MAX_READ);
    for (&id, flow) in &model.flows {
        prop_assert!(
            flow.pending
                .iter()
                .all(|&p| p < policy.flow_high_watermark + MAX_READ)
        );
        let view = governor.flow(id).map_err(|_| fail("flow view"))?;
        prop_assert_eq!(view.outbound_pending, flow.pending[0]);
        prop_assert_eq!(view.inbound_pending, flow.pending[1]);
        prop_assert_eq!(view.state, flow.state);
        prop_assert_eq!(view.app, AppId(flow.app));
        prop_assert_eq!(view.class, flow.class);
    }
    let expected_timeout = model
        .flows
        .values()
        .flat_map(|f| model.deadlines(f))
        .map(|(deadline, _)| deadline)
        .chain(model.next_eviction)
        .min()
        .map(Instant::from_micros);
    for class in FlowClass::ALL {
        let open = model.class_open(class, None);
        match class {
            FlowClass::Stream => {}
            FlowClass::Datagram => {
                prop_assert!(open <= policy.max_datagram_flows);
                prop_assert_eq!(stats.datagram_flows, open);
            }
            FlowClass::Dns => {
                prop_assert!(open <= policy.max_dns_in_flight);
                prop_assert_eq!(stats.dns_in_flight, open);
                for app in 0..4 {
                    prop_assert!(
                        model.class_open(class, Some(app)) <= policy.max_dns_in_flight_per_app
                    );
                }
            }
        }
    }
    let paused = model
        .flows
        .values()
        .filter(|f| f.paused_since.is_some())
        .count() as u32;
    prop_assert_eq!(stats.flows_paused, paused);

    prop_assert_eq!(governor.poll_timeout(), expected_timeout);
    let top = stats.top_apps();
    prop_assert!(top.windows(2).all(|pair| pair[0].flows >= pair[1].flows));
    for entry in top {
        prop_assert_eq!(entry.flows, model.app_open(entry.app.0));
    }
    Ok(())
}

proptest! {
    #![proptest_config(crate::proptest_config::with_cases(512))]

    /// Per-app cap below the global cap: the app limit and eviction both come into play.
    #[test]
    fn governor_matches_model(
        ops in proptest::collection::vec(op(), 0..crate::proptest_config::ops(250))
    ) {
        run(ops, 4, 1)?;
    }

    /// Per-app cap equal to the global cap: one app can fill the table, so fairness evicts.
    #[test]
    fn governor_matches_model_with_fair_eviction(
        ops in proptest::collection::vec(op(), 0..crate::proptest_config::ops(250))
    ) {
        run(ops, 6, 1)?;
    }

    /// Timeouts in seconds: flows live long enough for critical pressure to evict idle ones.
    #[test]
    fn governor_matches_model_with_idle_eviction(
        ops in proptest::collection::vec(op(), 0..crate::proptest_config::ops(250))
    ) {
        run(ops, 4, 10_000)?;
    }
}
