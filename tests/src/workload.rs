//! A deterministic, randomized run of every engine through the C ABI, with bursts: the workload
//! of the all-engine allocation audit (`tests/tests/alloc_audit_all.rs`) and of the soak
//! (`tests/tests/soak.rs`).
//!
//! One [`Workload`] holds a packet tunnel, a flow governor, a lifecycle machine, a connection
//! budget and a pool of Happy Eyeballs races, made with small capacities so the run keeps hitting
//! their limits: full rings, full flow tables, evictions, timeouts, stops past their deadline,
//! races waiting for budget. [`Workload::step`] makes one operation, chosen by a xorshift
//! generator from the seed: an input, a drain of outputs, a query, or a bad call (empty and
//! oversized packets, forged ids, NULL out-parameters, double completions). Now and then a burst
//! floods one engine for a few hundred operations without draining it.
//!
//! Every buffer the workload uses is allocated in [`Workload::new`], so a step allocates nothing
//! on the Rust side; only the library could. With `recycle_races` off a finished race stays
//! finished and the workload moves on to the next fresh race of its pool (so nothing is created
//! after construction); with it on, a finished race is freed and a new one created in its place,
//! as a host does per connection.

use std::ptr::{null, null_mut};

use tidegate::*;

/// One engine about to be created: its name and the footprint its `_footprint` reported.
#[derive(Clone, Copy, Debug)]
pub struct Creation {
    /// The `_new` function about to run.
    pub function: &'static str,
    /// The bytes that function's `_footprint` reports.
    pub footprint: usize,
}

/// Peaks of the engines' levels, each never above a configured ceiling.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Peaks {
    /// The tunnel's own high-water marks: outbound and inbound bytes held at once.
    pub tunnel_bytes_high_water: [u64; 2],
    /// The tunnel's own high-water marks: outbound and inbound packets held at once.
    pub tunnel_packets_high_water: [u64; 2],
    /// The most flows open (opening, connecting, established) seen at a sample.
    pub flows_open: u32,
    /// The most flows in the table (open and closing) seen at a sample.
    pub flows_in_table: u32,
    /// The most bytes pending over all flows seen at a sample.
    pub flow_bytes_pending: u64,
    /// The most attempts in flight in the budget seen at a sample.
    pub budget_attempts: u32,
    /// The most attempts plus connections in the budget seen at a sample.
    pub budget_in_use: u32,
    /// The longest journal a stop sealed, in bytes.
    pub journal_len: usize,
}

/// The counters of every engine but the races (whose activity is in [`Activity`]).
#[derive(Clone, Copy, Debug)]
pub struct EngineStats {
    /// The packet tunnel's.
    pub tunnel: TidegateTunnelStats,
    /// The flow governor's.
    pub flows: TidegateFlowStats,
    /// The lifecycle machine's.
    pub lifecycle: TidegateLifecycleStats,
    /// The connection budget's.
    pub budget: TidegateBudgetStats,
}

/// The ceilings [`Peaks`] must stay under, from the workload's configurations.
#[derive(Clone, Copy, Debug)]
pub struct Ceilings {
    /// Ring bytes, outbound and inbound.
    pub tunnel_bytes: [u64; 2],
    /// Ring packets, outbound and inbound.
    pub tunnel_packets: [u64; 2],
    /// The governor's `max_flows`.
    pub flows_open: u32,
    /// The governor's slots.
    pub flow_slots: u32,
    /// The budget's configured attempt limit.
    pub budget_attempts: u32,
    /// The budget's configured connection limit.
    pub budget_in_use: u32,
    /// The longest journal the lifecycle's task queue can seal.
    pub journal_len: usize,
}

/// What a run did, to show it exercised every engine.
#[derive(Clone, Copy, Debug, Default)]
pub struct Activity {
    /// Operations made by [`Workload::step`].
    pub operations: u64,
    /// C calls made by those operations.
    pub calls: u64,
    /// Bursts started.
    pub bursts: u64,
    /// Races created after construction (recycling) or moved past (pool).
    pub races_finished: u64,
    /// Attempts the races asked the host to start.
    pub attempts_started: u64,
    /// Races won.
    pub races_won: u64,
}

const TUNNEL: TidegateTunnelConfig = TidegateTunnelConfig {
    outbound_bytes: 64 * 1024,
    outbound_packets: 96,
    inbound_bytes: 32 * 1024,
    inbound_packets: 64,
    max_packet_len: 1500,
    outbound_high_watermark_bytes: 48 * 1024,
    outbound_low_watermark_bytes: 24 * 1024,
    outbound_high_watermark_packets: 80,
    outbound_low_watermark_packets: 40,
    inbound_drop_policy: TidegateDropPolicy::DropOldest as u32,
    aqm: TidegateAqm::Codel as u32,
    aqm_target_us: 5_000,
    aqm_interval_us: 100_000,
    packet_align: 64,
    flow_queues: 0,
    flow_quantum_bytes: 1500,
    flow_hash_seed: [0; 16],
    queue_limit_max_bytes: 0,
    queue_limit_min_bytes: 3000,
    queue_limit_hold_us: 100_000,
};

const FLOW_SLOTS: u32 = 64;
const MAX_FLOWS: u32 = 48;
const TASK_CAPACITY: u32 = 40;
const BUDGET_ATTEMPTS: u32 = 8;
const BUDGET_CONNECTIONS: u32 = 24;
/// Races polled at once; the others wait their turn in the pool.
const RACE_WINDOW: usize = 8;
/// Flow ids the workload remembers to act on.
const FLOWS_REMEMBERED: usize = 256;

/// The workload: every engine, its scratch buffers and its generator.
pub struct Workload {
    state: u64,
    now: u64,
    tunnel: *mut TidegateTunnel,
    governor: *mut TidegateFlowGovernor,
    lifecycle: *mut TidegateLifecycle,
    budget: *mut TidegateBudget,
    races: Vec<*mut TidegateEyeballs>,
    race_cursor: usize,
    recycle_races: bool,
    packet: Vec<u8>,
    views: Vec<TidegatePacketView>,
    notifications: Vec<TidegateFlowNotification>,
    flows: Vec<u64>,
    journal: Vec<u8>,
    journal_len: usize,
    generation: u64,
    running_tasks: [u64; 4],
    ipv6: Vec<TidegateSocketAddress>,
    ipv4: Vec<TidegateSocketAddress>,
    race_connections: u32,
    direct_attempts: u32,
    burst_left: u32,
    burst_engine: u64,
    peaks: Peaks,
    activity: Activity,
}

impl Workload {
    /// Create every engine, calling `around` for each creation with what it is and the creation
    /// itself to run (so an allocation audit can count just that). `races` is the size of the
    /// race pool (at least [`RACE_WINDOW`]).
    pub fn new(
        seed: u64,
        races: usize,
        recycle_races: bool,
        mut around: impl FnMut(Creation, &mut dyn FnMut()),
    ) -> Workload {
        let races = races.max(RACE_WINDOW);
        let address = |n: usize, v6: bool| {
            let mut ip = [0u8; 16];
            if v6 {
                ip[..2].copy_from_slice(&[0x20, 0x01]);
                ip[15] = n as u8;
            } else {
                ip[..4].copy_from_slice(&[192, 0, 2, n as u8]);
            }
            let family = if v6 {
                TidegateAddressFamily::Ipv6
            } else {
                TidegateAddressFamily::Ipv4
            };
            TidegateSocketAddress {
                ip,
                port: 443,
                family: family as u8,
                reserved: 0,
                scope_id: 0,
            }
        };
        let mut w = Workload {
            state: seed | 1,
            now: 1,
            tunnel: null_mut(),
            governor: null_mut(),
            lifecycle: null_mut(),
            budget: null_mut(),
            races: vec![null_mut(); races],
            race_cursor: 0,
            recycle_races,
            packet: (0..2048).map(|i| i as u8).collect(),
            views: vec![
                TidegatePacketView {
                    data: null(),
                    len: 0
                };
                64
            ],
            notifications: vec![
                TidegateFlowNotification {
                    kind: TidegateFlowNotificationKind::Close,
                    close_reason: TidegateCloseReason::None,
                    flow: 0,
                };
                32
            ],
            flows: Vec::with_capacity(FLOWS_REMEMBERED),
            journal: vec![0; 4096],
            journal_len: 0,
            generation: 0,
            running_tasks: [0; 4],
            ipv6: (0..20).map(|n| address(n, true)).collect(),
            ipv4: (0..20).map(|n| address(n, false)).collect(),
            race_connections: 0,
            direct_attempts: 0,
            burst_left: 0,
            burst_engine: 0,
            peaks: Peaks::default(),
            activity: Activity::default(),
        };
        // SAFETY: every pointer is to a local or a field that outlives the call.
        unsafe {
            let mut bytes = 0;
            let mut align = 0;
            assert_eq!(
                tidegate_tunnel_footprint(&TUNNEL, &mut bytes, &mut align),
                TidegateStatus::Ok
            );
            let creation = Creation {
                function: "tidegate_tunnel_new",
                footprint: bytes,
            };
            around(creation, &mut || {
                assert_eq!(
                    tidegate_tunnel_new(&TUNNEL, &mut w.tunnel),
                    TidegateStatus::Ok
                );
            });

            let policy = flow_policy();
            assert_eq!(
                tidegate_flow_governor_footprint(&policy, &mut bytes, &mut align),
                TidegateStatus::Ok
            );
            let creation = Creation {
                function: "tidegate_flow_governor_new",
                footprint: bytes,
            };
            around(creation, &mut || {
                let status = tidegate_flow_governor_new(&policy, 0, &mut w.governor);
                assert_eq!(status, TidegateStatus::Ok);
            });

            let config = lifecycle_config();
            assert_eq!(
                tidegate_lifecycle_footprint(&config, &mut bytes, &mut align),
                TidegateStatus::Ok
            );
            let creation = Creation {
                function: "tidegate_lifecycle_new",
                footprint: bytes,
            };
            around(creation, &mut || {
                assert_eq!(
                    tidegate_lifecycle_new(&config, &mut w.lifecycle),
                    TidegateStatus::Ok
                );
            });

            let config = budget_config();
            assert_eq!(
                tidegate_budget_footprint(&config, &mut bytes, &mut align),
                TidegateStatus::Ok
            );
            let creation = Creation {
                function: "tidegate_budget_new",
                footprint: bytes,
            };
            around(creation, &mut || {
                assert_eq!(
                    tidegate_budget_new(&config, &mut w.budget),
                    TidegateStatus::Ok
                );
            });

            let config = race_config();
            assert_eq!(
                tidegate_eyeballs_footprint(&config, &mut bytes, &mut align),
                TidegateStatus::Ok
            );
            let footprint = bytes;
            for race in &mut w.races {
                let creation = Creation {
                    function: "tidegate_eyeballs_new",
                    footprint,
                };
                around(creation, &mut || {
                    assert_eq!(tidegate_eyeballs_new(&config, 0, race), TidegateStatus::Ok);
                });
            }
        }
        w
    }

    /// The ceilings the engines' peaks must stay under.
    pub fn ceilings(&self) -> Ceilings {
        Ceilings {
            tunnel_bytes: [
                u64::from(TUNNEL.outbound_bytes),
                u64::from(TUNNEL.inbound_bytes),
            ],
            tunnel_packets: [
                u64::from(TUNNEL.outbound_packets),
                u64::from(TUNNEL.inbound_packets),
            ],
            flows_open: MAX_FLOWS,
            flow_slots: FLOW_SLOTS,
            budget_attempts: BUDGET_ATTEMPTS,
            budget_in_use: BUDGET_CONNECTIONS,
            // Header, checksum, and per task a kind, a length byte and a full payload.
            journal_len: 23 + TASK_CAPACITY as usize * (4 + 1 + TIDEGATE_TASK_PAYLOAD_MAX),
        }
    }

    /// The peaks seen so far (samples every 1024 operations, the tunnel's own marks).
    pub fn peaks(&self) -> Peaks {
        self.peaks
    }

    /// What the run did so far.
    pub fn activity(&self) -> Activity {
        self.activity
    }

    /// Every engine's counters now.
    pub fn engine_stats(&self) -> EngineStats {
        fn written<T>(call: impl FnOnce(*mut T) -> TidegateStatus) -> T {
            let mut out = std::mem::MaybeUninit::uninit();
            assert_eq!(call(out.as_mut_ptr()), TidegateStatus::Ok);
            // SAFETY: the call succeeded, so it wrote a valid `T`.
            unsafe { out.assume_init() }
        }
        // SAFETY: the handles are live; each out-pointer is a local.
        unsafe {
            EngineStats {
                tunnel: written(|out| tidegate_tunnel_stats(self.tunnel, out)),
                flows: written(|out| tidegate_flow_governor_stats(self.governor, out)),
                lifecycle: written(|out| tidegate_lifecycle_stats(self.lifecycle, out)),
                budget: written(|out| tidegate_budget_stats(self.budget, out)),
            }
        }
    }

    /// Run `operations` steps.
    pub fn run(&mut self, operations: u64) {
        for _ in 0..operations {
            self.step();
        }
    }

    /// One operation on one engine (or a burst's next operation).
    pub fn step(&mut self) {
        let r = self.next();
        self.now += r % 64;
        self.activity.operations += 1;
        if self.burst_left > 0 {
            self.burst_left -= 1;
            self.burst(r);
        } else if r.is_multiple_of(4096) {
            self.burst_left = 200 + (r >> 12) as u32 % 1800;
            self.burst_engine = (r >> 24) % 4;
            self.activity.bursts += 1;
        } else {
            match (r >> 8) % 20 {
                0..=6 => self.tunnel_step(r >> 16),
                7..=13 => self.governor_step(r >> 16),
                14..=16 => self.lifecycle_step(r >> 16),
                _ => self.race_step(r >> 16),
            }
        }
        if self.activity.operations.is_multiple_of(1024) {
            self.sample();
        }
    }

    fn next(&mut self) -> u64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state
    }

    fn call(&mut self, status: TidegateStatus) -> TidegateStatus {
        self.activity.calls += 1;
        assert!(
            !matches!(status, TidegateStatus::Panic | TidegateStatus::Poisoned),
            "a call panicked"
        );
        status
    }

    /// One burst operation: inputs only, nothing drained, so the engine fills up.
    fn burst(&mut self, r: u64) {
        let now = self.now;
        // SAFETY: the handles are live and every pointer is to a field of `self`.
        unsafe {
            match self.burst_engine {
                0 => {
                    let len = 40 + (r >> 8) as usize % 1400;
                    let data = self.packet.as_ptr();
                    let mut disposition = TidegateInboundDisposition::Queued;
                    let status = if r & 1 == 0 {
                        tidegate_tunnel_on_outbound_packet(self.tunnel, now, data, len)
                    } else {
                        tidegate_tunnel_on_inbound_packet(
                            self.tunnel,
                            now,
                            data,
                            len,
                            &mut disposition,
                        )
                    };
                    self.call(status);
                }
                1 => {
                    let mut admission = TidegateAdmission {
                        decision: TidegateAdmissionDecision::Rejected,
                        reject_reason: TidegateRejectReason::None,
                        flow: 0,
                        evicted: 0,
                        budget_refusal: TidegateBudgetRefusal::None,
                        reserved: 0,
                    };
                    let app = (r >> 8) % 5;
                    let status = tidegate_flow_governor_on_new_flow(
                        self.governor,
                        now,
                        app,
                        (r >> 16) % 40,
                        ((r >> 4) % 2) as u32,
                        &mut admission,
                    );
                    self.call(status);
                    self.admitted(admission);
                    if admission.flow != 0 {
                        let status = tidegate_flow_governor_on_local_read(
                            self.governor,
                            now,
                            admission.flow,
                            (r >> 24) % 300_000,
                        );
                        self.call(status);
                    }
                }
                2 => {
                    let status = tidegate_budget_try_start_attempt(self.budget, now);
                    if self.call(status) == TidegateStatus::Ok {
                        self.direct_attempts += 1;
                    }
                }
                _ => {
                    let len = (r >> 8) as usize % 40;
                    let mut id = 0;
                    let status = tidegate_lifecycle_register_task(
                        self.lifecycle,
                        now,
                        (r >> 16) as u32,
                        self.packet.as_ptr(),
                        len,
                        &mut id,
                    );
                    self.call(status);
                }
            }
        }
    }

    fn tunnel_step(&mut self, r: u64) {
        let now = self.now;
        let t = self.tunnel;
        let data = self.packet.as_ptr();
        let len = (r >> 8) as usize % 1600; // empty and oversized packets included
        // SAFETY: the handle is live and every pointer is to a field of `self` or a local.
        unsafe {
            match r % 8 {
                0 | 1 => {
                    let mut can_read = false;
                    self.call(tidegate_tunnel_can_read_outbound(t, &mut can_read));
                    if can_read || r & 0x10 == 0 {
                        self.call(tidegate_tunnel_on_outbound_packet(t, now, data, len));
                    }
                }
                2 | 3 => {
                    let mut disposition = TidegateInboundDisposition::Queued;
                    self.call(tidegate_tunnel_on_inbound_packet(
                        t,
                        now,
                        data,
                        len,
                        &mut disposition,
                    ));
                }
                4 => {
                    let capacity = (r >> 20) as usize % self.views.len();
                    let mut count = 0;
                    let views = self.views.as_mut_ptr();
                    let status = tidegate_tunnel_poll_outbound(t, now, views, capacity, &mut count);
                    assert_eq!(self.call(status), TidegateStatus::Ok);
                    let mut resume = false;
                    let status = tidegate_tunnel_complete_outbound(t, now, count, &mut resume);
                    assert_eq!(self.call(status), TidegateStatus::Ok);
                }
                5 => {
                    // The apps take few packets at a time, so inbound fills and drops.
                    let capacity = (r >> 20) as usize % 4;
                    let mut count = 0;
                    let views = self.views.as_mut_ptr();
                    self.call(tidegate_tunnel_poll_inbound(
                        t, now, views, capacity, &mut count,
                    ));
                    self.call(tidegate_tunnel_complete_inbound(t, now, count));
                }
                6 => {
                    let mut stats = std::mem::MaybeUninit::uninit();
                    self.call(tidegate_tunnel_stats(t, stats.as_mut_ptr()));
                }
                _ => {
                    // Bad input: more completions than in flight, NULL out-params and data, a
                    // clock going backwards.
                    let mut resume = false;
                    self.call(tidegate_tunnel_complete_outbound(
                        t,
                        now,
                        usize::MAX,
                        &mut resume,
                    ));
                    self.call(tidegate_tunnel_complete_inbound(t, 0, usize::MAX));
                    self.call(tidegate_tunnel_on_inbound_packet(
                        t,
                        now,
                        data,
                        len,
                        null_mut(),
                    ));
                    self.call(tidegate_tunnel_on_outbound_packet(t, 0, null(), len | 1));
                }
            }
        }
    }

    fn admitted(&mut self, admission: TidegateAdmission) {
        if admission.evicted != 0 {
            let mut outcome = TidegateFlowOutcome::Closed;
            // SAFETY: the handle is live; `outcome` is a local.
            let status = unsafe {
                tidegate_flow_governor_on_closed(
                    self.governor,
                    self.now,
                    admission.evicted,
                    &mut outcome,
                )
            };
            self.call(status);
        }
        if admission.flow != 0 {
            if self.flows.len() == self.flows.capacity() {
                self.forget_closed_flows();
            }
            if self.flows.len() < self.flows.capacity() {
                self.flows.push(admission.flow);
            }
        }
    }

    fn forget_closed_flows(&mut self) {
        let governor = self.governor;
        let mut calls = 0;
        self.flows.retain(|&flow| {
            let mut state = TidegateFlowState::Closed;
            calls += 1;
            // SAFETY: the handle is live; `state` is a local.
            unsafe { tidegate_flow_governor_state(governor, flow, &mut state) };
            state != TidegateFlowState::Closed
        });
        self.activity.calls += calls;
    }

    fn governor_step(&mut self, r: u64) {
        let now = self.now;
        let g = self.governor;
        let pick = self
            .flows
            .get((r >> 32) as usize % self.flows.len().max(1))
            .copied()
            .unwrap_or(0);
        let bytes = (r >> 12) % 70_000;
        let mut outcome = TidegateFlowOutcome::Closed;
        // SAFETY: the handle is live and every pointer is to a field of `self` or a local.
        unsafe {
            match r % 11 {
                0 | 1 => {
                    let mut admission = TidegateAdmission {
                        decision: TidegateAdmissionDecision::Rejected,
                        reject_reason: TidegateRejectReason::None,
                        flow: 0,
                        evicted: 0,
                        budget_refusal: TidegateBudgetRefusal::None,
                        reserved: 0,
                    };
                    let status = tidegate_flow_governor_on_new_flow(
                        g,
                        now,
                        (r >> 8) % 6,
                        (r >> 40) % 300,
                        ((r >> 4) % 2) as u32,
                        &mut admission,
                    );
                    assert_eq!(self.call(status), TidegateStatus::Ok);
                    self.admitted(admission);
                }
                2 => {
                    self.call(tidegate_flow_governor_on_connecting(g, now, pick));
                    self.call(tidegate_flow_governor_on_connected(g, now, pick));
                }
                3 => {
                    self.call(tidegate_flow_governor_on_local_read(g, now, pick, bytes));
                    self.call(tidegate_flow_governor_on_remote_read(
                        g,
                        now,
                        pick,
                        bytes / 2,
                    ));
                }
                4 => {
                    self.call(tidegate_flow_governor_on_remote_sent(g, now, pick, bytes));
                    self.call(tidegate_flow_governor_on_local_written(
                        g,
                        now,
                        pick,
                        bytes / 3,
                    ));
                }
                5 => {
                    let status = if r & 0x100 == 0 {
                        tidegate_flow_governor_on_closed(g, now, pick, &mut outcome)
                    } else {
                        tidegate_flow_governor_on_connect_failed(g, now, pick, 111, &mut outcome)
                    };
                    self.call(status);
                }
                6 => {
                    self.call(tidegate_flow_governor_handle_timeout(g, now));
                    let mut deadline = 0;
                    self.call(tidegate_flow_governor_poll_timeout(g, &mut deadline));
                }
                7 | 8 => loop {
                    let mut count = 0;
                    let batch = self.notifications.as_mut_ptr();
                    let capacity = self.notifications.len();
                    let status =
                        tidegate_flow_governor_poll_notifications(g, batch, capacity, &mut count);
                    assert_eq!(self.call(status), TidegateStatus::Ok);
                    if count == 0 {
                        break;
                    }
                    for i in 0..count {
                        let notification = self.notifications[i];
                        if notification.kind == TidegateFlowNotificationKind::Close {
                            let flow = notification.flow;
                            self.call(tidegate_flow_governor_on_closed(g, now, flow, &mut outcome));
                        }
                    }
                },
                9 => {
                    let mut can_read = false;
                    self.call(tidegate_flow_governor_can_read_local(
                        g,
                        pick,
                        &mut can_read,
                    ));
                    self.call(tidegate_flow_governor_can_read_remote(
                        g,
                        pick,
                        &mut can_read,
                    ));
                }
                _ => {
                    // Bad input: forged and stale ids, NULL out-params, an unknown protocol,
                    // completions past what is pending, a read no counter can hold.
                    self.call(tidegate_flow_governor_on_connected(g, now, r));
                    self.call(tidegate_flow_governor_on_closed(g, now, pick, null_mut()));
                    let mut admission = std::mem::MaybeUninit::uninit();
                    self.call(tidegate_flow_governor_on_new_flow(
                        g,
                        now,
                        1,
                        1,
                        9,
                        admission.as_mut_ptr(),
                    ));
                    self.call(tidegate_flow_governor_on_remote_sent(
                        g,
                        now,
                        pick,
                        u64::MAX,
                    ));
                    self.call(tidegate_flow_governor_on_local_read(g, 0, pick, u64::MAX));
                }
            }
        }
    }

    fn lifecycle_step(&mut self, r: u64) {
        let now = self.now;
        let l = self.lifecycle;
        let generation = self.generation;
        // SAFETY: the handle is live and every pointer is to a field of `self` or a local.
        unsafe {
            match r % 10 {
                0 => {
                    let (data, len) = if self.journal_len > 0 && r & 0x10 == 0 {
                        (self.journal.as_ptr(), self.journal_len)
                    } else {
                        (null(), 0)
                    };
                    let mut new_generation = 0;
                    let status =
                        tidegate_lifecycle_on_start(l, now, data, len, &mut new_generation);
                    if self.call(status) == TidegateStatus::Ok {
                        self.generation = new_generation;
                    }
                }
                1 => {
                    self.call(tidegate_lifecycle_on_tunnel_started(l, now, generation));
                }
                2 => {
                    let mut outcome = TidegateStopOutcome::Stopping;
                    self.call(tidegate_lifecycle_on_stop(l, now, &mut outcome));
                }
                3 => {
                    self.call(tidegate_lifecycle_on_torn_down(l, now, generation));
                    self.call(tidegate_lifecycle_on_cancel(l, now, 3));
                }
                4 | 5 => {
                    let len = (r >> 16) as usize % 40; // past the payload maximum too
                    let mut id = 0;
                    let payload = self.packet.as_ptr();
                    self.call(tidegate_lifecycle_register_task(
                        l, now, 1, payload, len, &mut id,
                    ));
                }
                6 => {
                    let task = self.running_tasks[(r >> 24) as usize % self.running_tasks.len()];
                    let status = if r & 0x100 == 0 {
                        tidegate_lifecycle_on_task_done(l, now, generation, task)
                    } else {
                        tidegate_lifecycle_on_task_failed(l, now, generation, task)
                    };
                    self.call(status);
                }
                _ => {
                    self.call(tidegate_lifecycle_handle_timeout(l, now));
                    self.drain_lifecycle();
                }
            }
        }
    }

    fn drain_lifecycle(&mut self) {
        let now = self.now;
        let l = self.lifecycle;
        loop {
            let mut effect = std::mem::MaybeUninit::<TidegateLifecycleEffect>::uninit();
            // SAFETY: the handle is live; `effect` is a local written on success.
            let effect = unsafe {
                let status = tidegate_lifecycle_poll_effect(l, now, effect.as_mut_ptr());
                assert_eq!(self.call(status), TidegateStatus::Ok);
                effect.assume_init()
            };
            match effect.kind {
                TidegateLifecycleEffectKind::None => break,
                TidegateLifecycleEffectKind::RunTask => {
                    let slot = effect.task_id as usize % self.running_tasks.len();
                    self.running_tasks[slot] = effect.task_id;
                }
                TidegateLifecycleEffectKind::PersistJournal => {
                    let mut len = 0;
                    // SAFETY: the handle is live; the buffer is a field of `self`.
                    let status = unsafe {
                        tidegate_lifecycle_write_journal(
                            l,
                            self.journal.as_mut_ptr(),
                            self.journal.len(),
                            &mut len,
                        )
                    };
                    assert_eq!(self.call(status), TidegateStatus::Ok);
                    self.journal_len = len;
                    self.peaks.journal_len = self.peaks.journal_len.max(len);
                    // SAFETY: the handle is live.
                    let status = unsafe {
                        tidegate_lifecycle_on_journal_persisted(l, now, effect.generation)
                    };
                    self.call(status);
                }
                TidegateLifecycleEffectKind::DiscardJournal => self.journal_len = 0,
                _ => {}
            }
        }
    }

    /// The race of the window that `r` picks.
    fn race_slot(&self, r: u64) -> usize {
        (self.race_cursor + (r as usize % RACE_WINDOW)) % self.races.len()
    }

    fn race_step(&mut self, r: u64) {
        let now = self.now;
        let slot = self.race_slot(r);
        let race = self.races[slot];
        let budget = self.budget;
        let index = (r >> 8) as u32 % 20;
        // SAFETY: the handles are live and every pointer is to a field of `self` or a local.
        unsafe {
            match (r >> 16) % 12 {
                0 | 1 => {
                    // Mostly answers with records; now and then an empty one.
                    let count = ((r >> 24) as usize % 10) | usize::from(r & 0x80 != 0);
                    let start = (r >> 32) as usize % 10;
                    let (family, list) = if r & 0x20 == 0 {
                        (TidegateAddressFamily::Ipv6, &self.ipv6)
                    } else {
                        (TidegateAddressFamily::Ipv4, &self.ipv4)
                    };
                    let list = &list[start..start + count];
                    let mut added = 0;
                    let status = tidegate_eyeballs_on_resolved(
                        race,
                        now,
                        family as u32,
                        list.as_ptr(),
                        list.len(),
                        &mut added,
                    );
                    self.call(status);
                }
                2 if r & 0x300 == 0 => {
                    self.call(tidegate_eyeballs_on_resolution_done(race, now));
                }
                3 => {
                    self.call(tidegate_eyeballs_on_attempt_connected(race, now, index));
                }
                4 | 5 => {
                    // ECONNREFUSED, ENETUNREACH, EMFILE on Linux.
                    let errno = [111, 101, 24][(r >> 24) as usize % 3];
                    self.call(tidegate_eyeballs_on_attempt_failed(race, now, index, errno));
                }
                6 => {
                    self.call(tidegate_eyeballs_handle_timeout(race, now));
                    self.call(tidegate_budget_handle_timeout(budget, now));
                }
                7 => {
                    if self.race_connections > 0
                        && self.call(tidegate_budget_on_connection_closed(budget, now))
                            == TidegateStatus::Ok
                    {
                        self.race_connections -= 1;
                    }
                }
                2 | 8 => {
                    // Attempts the host makes outside races, started in bursts.
                    if self.direct_attempts > 0 {
                        let status = if r & 0x40 == 0 {
                            tidegate_budget_on_attempt_cancelled(budget, now)
                        } else {
                            tidegate_budget_on_attempt_failed(budget, now, 24)
                        };
                        if self.call(status) == TidegateStatus::Ok {
                            self.direct_attempts -= 1;
                        }
                    }
                }
                9 if r & 0x7F00 == 0 => {
                    self.call(tidegate_eyeballs_on_abort(race, now));
                }
                10 => {
                    // Bad input: releases with nothing to release, an unknown family.
                    self.call(tidegate_budget_on_connection_closed(budget, 0));
                    self.call(tidegate_eyeballs_on_resolution_failed(race, now, 5));
                }
                _ => {
                    let mut deadline = 0;
                    self.call(tidegate_eyeballs_poll_timeout(race, &mut deadline));
                    let mut status = std::mem::MaybeUninit::uninit();
                    self.call(tidegate_eyeballs_status(race, status.as_mut_ptr()));
                }
            }
        }
        self.drain_race(slot);
    }

    /// Poll race `slot` until it has nothing to do; replace it (or move past it) once finished.
    fn drain_race(&mut self, slot: usize) {
        let race = self.races[slot];
        loop {
            let mut action = std::mem::MaybeUninit::<TidegateEyeballsAction>::uninit();
            // SAFETY: both handles are live; `action` is a local written on success.
            let action = unsafe {
                let status =
                    tidegate_eyeballs_poll_action(race, self.now, self.budget, action.as_mut_ptr());
                assert_eq!(self.call(status), TidegateStatus::Ok);
                action.assume_init()
            };
            match action.kind {
                TidegateEyeballsActionKind::None => break,
                TidegateEyeballsActionKind::StartAttempt => self.activity.attempts_started += 1,
                TidegateEyeballsActionKind::Connected => {
                    self.activity.races_won += 1;
                    self.race_connections += 1;
                }
                _ => {}
            }
        }
        let mut finished = false;
        // SAFETY: the handle is live; `finished` is a local.
        let status = unsafe { tidegate_eyeballs_is_finished(race, &mut finished) };
        self.call(status);
        if !finished {
            return;
        }
        self.activity.races_finished += 1;
        if self.recycle_races {
            // SAFETY: the race is finished and freed once; its slot gets the new handle.
            unsafe {
                tidegate_eyeballs_free(race);
                let status = tidegate_eyeballs_new(&race_config(), self.now, &mut self.races[slot]);
                assert_eq!(self.call(status), TidegateStatus::Ok);
            }
        } else if self.race_cursor + RACE_WINDOW < self.races.len() {
            // Move the finished race out of the window (to its front, which the window leaves)
            // and take in the next fresh race of the pool.
            self.races.swap(slot, self.race_cursor);
            self.race_cursor += 1;
        }
    }

    /// Record the engines' levels.
    fn sample(&mut self) {
        // SAFETY: the handles are live; every out-pointer is a local.
        unsafe {
            let mut stats = std::mem::MaybeUninit::<TidegateTunnelStats>::uninit();
            assert_eq!(
                self.call(tidegate_tunnel_stats(self.tunnel, stats.as_mut_ptr())),
                TidegateStatus::Ok
            );
            let stats = stats.assume_init();
            self.peaks.tunnel_bytes_high_water = [
                stats.outbound.bytes_high_water,
                stats.inbound.bytes_high_water,
            ];
            self.peaks.tunnel_packets_high_water = [
                stats.outbound.packets_high_water,
                stats.inbound.packets_high_water,
            ];

            let mut flows = std::mem::MaybeUninit::<TidegateFlowStats>::uninit();
            let status = tidegate_flow_governor_stats(self.governor, flows.as_mut_ptr());
            assert_eq!(self.call(status), TidegateStatus::Ok);
            let flows = flows.assume_init();
            let open = flows.opening + flows.connecting + flows.established;
            self.peaks.flows_open = self.peaks.flows_open.max(open);
            self.peaks.flows_in_table = self.peaks.flows_in_table.max(open + flows.closing);
            let pending = flows
                .bytes_pending_outbound
                .saturating_add(flows.bytes_pending_inbound);
            self.peaks.flow_bytes_pending = self.peaks.flow_bytes_pending.max(pending);

            let mut levels = std::mem::MaybeUninit::<TidegateBudgetLevels>::uninit();
            let status = tidegate_budget_levels(self.budget, levels.as_mut_ptr());
            assert_eq!(self.call(status), TidegateStatus::Ok);
            let levels = levels.assume_init();
            self.peaks.budget_attempts = self.peaks.budget_attempts.max(levels.attempts_in_flight);
            let in_use = levels.attempts_in_flight + levels.open_connections;
            self.peaks.budget_in_use = self.peaks.budget_in_use.max(in_use);
        }
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        // SAFETY: every handle came from its `_new` and is freed once.
        unsafe {
            tidegate_tunnel_free(self.tunnel);
            tidegate_flow_governor_free(self.governor);
            tidegate_lifecycle_free(self.lifecycle);
            for &race in &self.races {
                tidegate_eyeballs_free(race);
            }
            tidegate_budget_free(self.budget);
        }
    }
}

fn flow_policy() -> TidegateFlowPolicy {
    TidegateFlowPolicy {
        slots: FLOW_SLOTS,
        max_flows: MAX_FLOWS,
        max_flows_per_app: MAX_FLOWS,
        max_flows_per_destination: MAX_FLOWS,
        max_connecting: MAX_FLOWS,
        idle_timeout_us: 200_000,
        connect_timeout_us: 50_000,
        ..tidegate_flow_policy_default()
    }
}

fn lifecycle_config() -> TidegateLifecycleConfig {
    TidegateLifecycleConfig {
        task_capacity: TASK_CAPACITY,
        ..tidegate_lifecycle_config_default()
    }
}

fn budget_config() -> TidegateBudgetConfig {
    TidegateBudgetConfig {
        max_attempts_in_flight: BUDGET_ATTEMPTS,
        max_open_connections: BUDGET_CONNECTIONS,
        fd_limit: 10_000,
        backoff_floor: 2,
        recovery_interval_us: 100_000,
        ..tidegate_budget_config_default()
    }
}

fn race_config() -> TidegateEyeballsConfig {
    TidegateEyeballsConfig {
        attempt_timeout_us: 400_000,
        budget_wait_us: 2_000_000,
        ..tidegate_eyeballs_config_default()
    }
}
