//! A deterministic, randomized run of every engine through the C ABI, with bursts: the workload
//! of the all-engine allocation audit (`tests/tests/alloc_audit_all.rs`) and of the soak
//! (`tests/tests/soak.rs`).
//!
//! One [`Workload`] holds a packet tunnel, a proxy engine (flows, connection budget, Happy
//! Eyeballs races), a lifecycle machine and a memory governor, made with small capacities so the
//! run keeps hitting their limits: full rings, full flow tables and race tables, evictions,
//! timeouts, stops past their deadline, races waiting for budget, refused reservations. The
//! governor is fed a simulated footprint that wanders through every pressure level; each change
//! of level is passed to the tunnel and the proxy engine, as a host does. [`Workload::step`] makes one operation, chosen by a
//! xorshift generator from the seed: an input, a drain of outputs, a query, or a bad call (empty
//! and oversized packets, forged ids, NULL out-parameters, double completions). Now and then a
//! burst floods one engine for a few hundred operations without draining it. The proxy's events
//! are drained after every proxy operation, as a host does; the attempts it starts are answered
//! later by a scripted network (connected, refused, unreachable, out of descriptors).
//!
//! Every buffer the workload uses is allocated in [`Workload::new`], so a step allocates nothing
//! on the Rust side; only the library could. With `restart_proxy` on, the proxy engine is freed
//! and a new one created every [`PROXY_RESTART_OPERATIONS`] operations, as a host does when its
//! provider restarts, so the soak sees the allocator reuse its block.

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
    /// The most races in their slots seen at a sample.
    pub races_running: u32,
    /// The longest journal a stop sealed, in bytes.
    pub journal_len: usize,
    /// The most reservations outstanding in the governor seen at a sample.
    pub reservations: u32,
}

/// The counters of every engine.
#[derive(Clone, Copy, Debug)]
pub struct EngineStats {
    /// The packet tunnel's.
    pub tunnel: TidegateTunnelStats,
    /// The proxy engine's: its flows, budget and races.
    pub proxy: TidegateProxyStats,
    /// The lifecycle machine's.
    pub lifecycle: TidegateLifecycleStats,
    /// The memory governor's.
    pub memory: TidegateMemoryStats,
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
    /// The proxy's race slots.
    pub race_slots: u32,
    /// The longest journal the lifecycle's task queue can seal.
    pub journal_len: usize,
    /// The governor's `max_reservations`.
    pub reservations: u32,
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
    /// Races that ended, won or failed (from the events the host drained).
    pub races_finished: u64,
    /// Attempts the races asked the host to start.
    pub attempts_started: u64,
    /// Races won.
    pub races_won: u64,
    /// Proxy engines freed and created again (`restart_proxy`).
    pub proxy_restarts: u64,
    /// Changes of pressure level passed to the tunnel and the proxy engine, per level entered:
    /// normal, elevated, critical.
    pub pressure_changes: [u64; 3],
    /// Sleeps of hours: `now` jumped, each engine's timers were handled once, and none was
    /// left at or before the new `now`.
    pub sleeps: u64,
    /// Restart attempts the lifecycle announced (after path changes and wakes).
    pub restarts_announced: u64,
    /// Black box records captured from every engine, written and read back.
    pub black_box_records: u64,
    /// Wakes after which the lifecycle scheduled a restart (the tunnel was up on a path).
    pub wake_restarts: u64,
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
const RACE_SLOTS: u32 = 16;
/// The memory limit the simulated footprint wanders under.
const MEMORY_LIMIT: u64 = 4 << 20;
const MAX_RESERVATIONS: u32 = 12;
/// Flow ids the workload remembers to act on.
const FLOWS_REMEMBERED: usize = 256;
/// Attempts in flight the scripted network remembers to answer.
const ATTEMPTS_REMEMBERED: usize = 64;
/// With `restart_proxy`, operations between two restarts of the proxy engine.
pub const PROXY_RESTART_OPERATIONS: u64 = 100_000;

/// The workload: every engine, its scratch buffers and its generator.
pub struct Workload {
    state: u64,
    now: u64,
    tunnel: *mut TidegateTunnel,
    proxy: *mut TidegateProxy,
    lifecycle: *mut TidegateLifecycle,
    memory: *mut TidegateMemory,
    restart_proxy: bool,
    packet: Vec<u8>,
    views: Vec<TidegatePacketView>,
    events: Vec<TidegateProxyEvent>,
    flows: Vec<u64>,
    /// Attempts in flight: flow, attempt, whether to IPv6.
    attempts: Vec<(u64, u32, bool)>,
    journal: Vec<u8>,
    /// The black box file, written in place as a host writes its file.
    black_box: Vec<u8>,
    journal_len: usize,
    generation: u64,
    running_tasks: [u64; 4],
    /// The last restart attempt announced.
    restart_id: u64,
    ipv6: Vec<TidegateSocketAddress>,
    ipv4: Vec<TidegateSocketAddress>,
    own_connections: u32,
    /// The simulated process footprint the governor is fed.
    footprint: u64,
    /// Reservations granted and not yet released, oldest first.
    reservations: Vec<u64>,
    burst_left: u32,
    burst_engine: u64,
    peaks: Peaks,
    activity: Activity,
}

impl Activity {
    /// Assert that a run of `operations` slept for hours now and then and restarted the tunnel
    /// after path changes, so the checks made on those paths ran.
    pub fn assert_slept_and_restarted(&self, operations: u64) {
        assert!(
            self.sleeps >= operations / 1_000_000,
            "the device slept for hours and woke: {self:?}"
        );
        assert!(
            self.restarts_announced > operations / 1_000_000,
            "path changes restarted the tunnel: {self:?}"
        );
        assert!(
            self.wake_restarts > 0,
            "a wake after hours restarted the tunnel: {self:?}"
        );
    }
}

impl Workload {
    /// Create every engine, calling `around` for each creation with what it is and the creation
    /// itself to run (so an allocation audit can count just that). With `restart_proxy`, the
    /// proxy engine is freed and created again every [`PROXY_RESTART_OPERATIONS`] operations.
    pub fn new(
        seed: u64,
        restart_proxy: bool,
        mut around: impl FnMut(Creation, &mut dyn FnMut()),
    ) -> Workload {
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
            proxy: null_mut(),
            lifecycle: null_mut(),
            memory: null_mut(),
            restart_proxy,
            packet: (0..2048).map(|i| i as u8).collect(),
            views: vec![
                TidegatePacketView {
                    data: null(),
                    len: 0
                };
                64
            ],
            events: vec![
                TidegateProxyEvent {
                    kind: TidegateProxyEventKind::CloseFlow,
                    attempt: 0,
                    flow: 0,
                    address: address(0, false),
                    close_reason: TidegateCloseReason::None,
                    failure: TidegateRaceFailure::AllAttemptsFailed,
                    error_class: TidegateErrorClass::Other,
                    budget_refusal: TidegateBudgetRefusal::None,
                };
                8
            ],
            flows: Vec::with_capacity(FLOWS_REMEMBERED),
            attempts: Vec::with_capacity(ATTEMPTS_REMEMBERED),
            journal: vec![0; 4096],
            black_box: vec![0; TIDEGATE_BLACK_BOX_LEN],
            journal_len: 0,
            generation: 0,
            running_tasks: [0; 4],
            restart_id: 0,
            ipv6: (0..20).map(|n| address(n, true)).collect(),
            ipv4: (0..20).map(|n| address(n, false)).collect(),
            own_connections: 0,
            footprint: MEMORY_LIMIT / 4,
            reservations: Vec::with_capacity(MAX_RESERVATIONS as usize + 1),
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

            let config = proxy_config();
            assert_eq!(
                tidegate_proxy_footprint(&config, &mut bytes, &mut align),
                TidegateStatus::Ok
            );
            let creation = Creation {
                function: "tidegate_proxy_new",
                footprint: bytes,
            };
            around(creation, &mut || {
                let status = tidegate_proxy_new(&config, 0, &mut w.proxy);
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

            let config = memory_config();
            assert_eq!(
                tidegate_memory_footprint(&config, &mut bytes, &mut align),
                TidegateStatus::Ok
            );
            let creation = Creation {
                function: "tidegate_memory_new",
                footprint: bytes,
            };
            around(creation, &mut || {
                assert_eq!(
                    tidegate_memory_new(&config, &mut w.memory),
                    TidegateStatus::Ok
                );
            });
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
            race_slots: RACE_SLOTS,
            // Header, checksum, and per task a kind, a length byte and a full payload.
            journal_len: 23 + TASK_CAPACITY as usize * (4 + 1 + TIDEGATE_TASK_PAYLOAD_MAX),
            reservations: MAX_RESERVATIONS,
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
                proxy: written(|out| tidegate_proxy_stats(self.proxy, out)),
                lifecycle: written(|out| tidegate_lifecycle_stats(self.lifecycle, out)),
                memory: written(|out| tidegate_memory_stats(self.memory, out)),
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
        if r % 200_003 == 17 {
            self.sleep_for_hours(r);
        }
        if self.burst_left > 0 {
            self.burst_left -= 1;
            self.burst(r);
        } else if r.is_multiple_of(4096) {
            self.burst_left = 200 + (r >> 12) as u32 % 1800;
            self.burst_engine = (r >> 24) % 4;
            self.activity.bursts += 1;
        } else {
            match (r >> 8) % 22 {
                0..=6 => self.tunnel_step(r >> 16),
                7..=16 => self.proxy_step(r >> 16),
                17..=19 => self.lifecycle_step(r >> 16),
                _ => self.memory_step(r >> 16),
            }
        }
        if self.activity.operations.is_multiple_of(1024) {
            self.sample();
            self.write_black_box();
        }
        if self.restart_proxy
            && self
                .activity
                .operations
                .is_multiple_of(PROXY_RESTART_OPERATIONS)
        {
            self.restart_proxy_engine();
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
                    // A reconnect storm: new flows, each reading at once, events not drained.
                    let app = (r >> 8) % 5;
                    let admission = self.new_flow(app, (r >> 16) % 40, ((r >> 4) % 2) as u32);
                    if admission.flow != 0 {
                        let mut can_read = false;
                        let status = tidegate_proxy_on_bytes(
                            self.proxy,
                            now,
                            admission.flow,
                            TidegateRelayStep::LocalRead as u32,
                            (r >> 24) % 300_000,
                            &mut can_read,
                        );
                        self.call(status);
                    }
                }
                2 => {
                    // DNS answers for many flows at once: races fill the race table.
                    let pick = self
                        .flows
                        .get((r >> 32) as usize % self.flows.len().max(1))
                        .copied()
                        .unwrap_or(0);
                    let list = if r & 2 == 0 { &self.ipv6 } else { &self.ipv4 };
                    let family = if r & 2 == 0 {
                        TidegateAddressFamily::Ipv6
                    } else {
                        TidegateAddressFamily::Ipv4
                    };
                    let mut added = 0;
                    let status = tidegate_proxy_on_resolved(
                        self.proxy,
                        now,
                        pick,
                        family as u32,
                        list.as_ptr(),
                        2,
                        &mut added,
                    );
                    self.call(status);
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

    fn memory_step(&mut self, r: u64) {
        let now = self.now;
        let m = self.memory;
        // SAFETY: the handle is live and every pointer is to a field of `self` or a local.
        unsafe {
            match r % 8 {
                0..=2 => {
                    // The footprint wanders, pulled back towards a fifth of the limit, with now
                    // and then a surge of up to three quarters of it (a TLS search, a crypto
                    // batch).
                    let step = MEMORY_LIMIT / 32;
                    let pull = self.footprint.abs_diff(MEMORY_LIMIT / 5) / 8;
                    let mut footprint = if self.footprint > MEMORY_LIMIT / 5 {
                        self.footprint - pull
                    } else {
                        self.footprint + pull
                    };
                    footprint = (footprint + (r >> 4) % (2 * step)).saturating_sub(step);
                    let s = self.next();
                    if s.is_multiple_of(64) {
                        footprint += (s >> 8) % (MEMORY_LIMIT / 4 * 3);
                    }
                    self.footprint = footprint.min(MEMORY_LIMIT);
                    // Either source, and now and then an unknown report (0).
                    let status = match (s >> 40) % 8 {
                        0 => tidegate_memory_on_headroom(m, now, 0),
                        1..=3 => tidegate_memory_on_headroom(m, now, MEMORY_LIMIT - self.footprint),
                        _ => tidegate_memory_on_footprint(m, now, self.footprint),
                    };
                    assert_eq!(self.call(status), TidegateStatus::Ok);
                    let _ = self.apply_pressure();
                }
                3 | 4 => {
                    if self.reservations.len() == MAX_RESERVATIONS as usize {
                        let oldest = self.reservations.remove(0);
                        self.release(oldest);
                    }
                    let bytes = 1 + (r >> 4) % (MEMORY_LIMIT / 6);
                    let mut id = 0;
                    let status = tidegate_memory_reserve(m, now, bytes, &mut id);
                    match self.call(status) {
                        TidegateStatus::Ok => {
                            assert_ne!(id, 0);
                            self.reservations.push(id);
                        }
                        TidegateStatus::MemoryPressure => {}
                        other => panic!("reserve returned {other:?}"),
                    }
                }
                5 => {
                    if !self.reservations.is_empty() {
                        let pick = (r >> 4) as usize % self.reservations.len();
                        let id = self.reservations.swap_remove(pick);
                        self.release(id);
                    }
                }
                6 => {
                    let mut deadline = 0;
                    let status = tidegate_memory_poll_timeout(m, &mut deadline);
                    assert_eq!(self.call(status), TidegateStatus::Ok);
                    if deadline <= now {
                        assert_eq!(
                            self.call(tidegate_memory_handle_timeout(m, now)),
                            TidegateStatus::Ok
                        );
                    }
                    let _ = self.apply_pressure();
                }
                _ => {
                    // Bad input: an empty reservation, a forged or released id, NULL
                    // out-parameters, a level no engine knows.
                    let mut id = 0;
                    self.call(tidegate_memory_reserve(m, now, 0, &mut id));
                    self.call(tidegate_memory_reserve(m, now, 1, null_mut()));
                    self.call(tidegate_memory_release(m, now, (r >> 4) | 1 << 63));
                    self.call(tidegate_memory_poll_pressure(m, null_mut(), null_mut()));
                    let mut resume = false;
                    let level = 3 + (r >> 4) as u32 % 100;
                    self.call(tidegate_tunnel_on_pressure(
                        self.tunnel,
                        now,
                        level,
                        &mut resume,
                    ));
                    self.call(tidegate_proxy_on_pressure(self.proxy, now, level));
                }
            }
        }
    }

    fn release(&mut self, id: u64) {
        // SAFETY: the handle is live.
        let status = unsafe { tidegate_memory_release(self.memory, self.now, id) };
        assert_eq!(self.call(status), TidegateStatus::Ok, "release {id}");
    }

    /// Pass a change of pressure level to the tunnel and the proxy engine, as a host does, and
    /// return the level in force.
    fn apply_pressure(&mut self) -> TidegatePressure {
        let now = self.now;
        let mut level = TidegatePressure::Normal;
        let mut changed = false;
        // SAFETY: the handles are live; every out-pointer is a local.
        unsafe {
            let status = tidegate_memory_poll_pressure(self.memory, &mut level, &mut changed);
            assert_eq!(self.call(status), TidegateStatus::Ok);
            if !changed {
                return level;
            }
            self.activity.pressure_changes[level as usize] += 1;
            let mut resume = false;
            let status = tidegate_tunnel_on_pressure(self.tunnel, now, level as u32, &mut resume);
            assert_eq!(self.call(status), TidegateStatus::Ok);
            let status = tidegate_proxy_on_pressure(self.proxy, now, level as u32);
            assert_eq!(self.call(status), TidegateStatus::Ok);
        }
        self.drain_proxy();
        level
    }

    fn admitted(&mut self, admission: TidegateAdmission) {
        // An eviction also comes out as a CLOSE_FLOW event: the drain reports it closed.
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
        let proxy = self.proxy;
        let mut calls = 0;
        self.flows.retain(|&flow| {
            let mut info = std::mem::MaybeUninit::uninit();
            calls += 1;
            // SAFETY: the handle is live; `info` is a local.
            unsafe { tidegate_proxy_flow(proxy, flow, info.as_mut_ptr()) == TidegateStatus::Ok }
        });
        self.activity.calls += calls;
    }

    fn new_flow(&mut self, app: u64, destination: u64, protocol: u32) -> TidegateAdmission {
        // Every eighth destination is a resolver: its flows are DNS queries, the other UDP
        // flows sessions of the datagram class.
        let class = if destination.is_multiple_of(8) {
            TidegateFlowClass::Dns
        } else if protocol == TidegateFlowProtocol::Udp as u32 {
            TidegateFlowClass::Datagram
        } else {
            TidegateFlowClass::Stream
        } as u32;
        let mut admission = TidegateAdmission {
            decision: TidegateAdmissionDecision::Rejected,
            reject_reason: TidegateRejectReason::None,
            flow: 0,
            evicted: 0,
            budget_refusal: TidegateBudgetRefusal::None,
            reserved: 0,
            retry_at_us: 0,
        };
        // SAFETY: the handle is live; `admission` is a local.
        let status = unsafe {
            tidegate_proxy_on_new_flow(
                self.proxy,
                self.now,
                app,
                destination,
                protocol,
                class,
                &mut admission,
            )
        };
        assert_eq!(self.call(status), TidegateStatus::Ok);
        self.admitted(admission);
        admission
    }

    fn proxy_step(&mut self, r: u64) {
        let now = self.now;
        let p = self.proxy;
        let pick = self
            .flows
            .get((r >> 32) as usize % self.flows.len().max(1))
            .copied()
            .unwrap_or(0);
        let bytes = (r >> 12) % 70_000;
        let mut outcome = TidegateFlowOutcome::Closed;
        let mut can_read = false;
        // SAFETY: the handle is live and every pointer is to a field of `self` or a local.
        unsafe {
            match r % 16 {
                0 | 1 => {
                    self.new_flow((r >> 8) % 6, (r >> 40) % 300, ((r >> 4) % 2) as u32);
                }
                2 => {
                    // A flow the host's system connects.
                    self.call(tidegate_proxy_on_connecting(p, now, pick));
                    self.call(tidegate_proxy_on_connected(p, now, pick));
                }
                3 | 4 => {
                    // DNS answers for a flow the host connects itself: mostly records, now and
                    // then an empty answer, a failed family or the end of resolution.
                    let count = ((r >> 24) as usize % 10) | usize::from(r & 0x80 != 0);
                    let start = (r >> 40) as usize % 10;
                    let (family, list) = if r & 0x20 == 0 {
                        (TidegateAddressFamily::Ipv6, &self.ipv6)
                    } else {
                        (TidegateAddressFamily::Ipv4, &self.ipv4)
                    };
                    let list = &list[start..start + count];
                    let mut added = 0;
                    self.call(tidegate_proxy_on_resolved(
                        p,
                        now,
                        pick,
                        family as u32,
                        list.as_ptr(),
                        list.len(),
                        &mut added,
                    ));
                    match (r >> 56) % 8 {
                        0 => self.call(tidegate_proxy_on_resolution_done(p, now, pick)),
                        1 => self.call(tidegate_proxy_on_resolution_failed(
                            p,
                            now,
                            pick,
                            family as u32 ^ 1,
                        )),
                        _ => TidegateStatus::Ok,
                    };
                }
                5 | 6 => {
                    // The network answers one attempt in flight: connected, or ECONNREFUSED,
                    // ENETUNREACH, EMFILE (a resource error) on Linux. IPv6 is mostly a black
                    // hole: its attempts stay in flight until the race times them out.
                    let i = (r >> 8) as usize % self.attempts.len().max(1);
                    let answers = match self.attempts.get(i) {
                        Some(&(_, _, ipv6)) => !ipv6 || r & 0x7000 == 0,
                        None => false,
                    };
                    if answers {
                        let (flow, attempt, _) = self.attempts.swap_remove(i);
                        let status = match (r >> 24) % 32 {
                            0..=15 => tidegate_proxy_on_attempt_connected(p, now, flow, attempt),
                            16..=23 => tidegate_proxy_on_attempt_failed(p, now, flow, attempt, 111),
                            24..=30 => tidegate_proxy_on_attempt_failed(p, now, flow, attempt, 101),
                            _ => tidegate_proxy_on_attempt_failed(p, now, flow, attempt, 24),
                        };
                        self.call(status);
                    }
                }
                7 => {
                    self.call(tidegate_proxy_on_bytes(
                        p,
                        now,
                        pick,
                        TidegateRelayStep::LocalRead as u32,
                        bytes,
                        &mut can_read,
                    ));
                    self.call(tidegate_proxy_on_bytes(
                        p,
                        now,
                        pick,
                        TidegateRelayStep::RemoteRead as u32,
                        bytes / 2,
                        &mut can_read,
                    ));
                }
                8 => {
                    self.call(tidegate_proxy_on_bytes(
                        p,
                        now,
                        pick,
                        TidegateRelayStep::RemoteSent as u32,
                        bytes,
                        &mut can_read,
                    ));
                    self.call(tidegate_proxy_on_bytes(
                        p,
                        now,
                        pick,
                        TidegateRelayStep::LocalWritten as u32,
                        bytes / 3,
                        &mut can_read,
                    ));
                }
                9 => {
                    let status = if r & 0x100 == 0 {
                        tidegate_proxy_on_closed(p, now, pick, &mut outcome)
                    } else {
                        tidegate_proxy_on_connect_failed(p, now, pick, 111, &mut outcome)
                    };
                    self.call(status);
                }
                10 => {
                    self.call(tidegate_proxy_handle_timeout(p, now));
                    let mut deadline = 0;
                    self.call(tidegate_proxy_poll_timeout(p, &mut deadline));
                }
                11 => {
                    // The host's own connections, and a resource error now and then.
                    if r & 0x100 == 0 {
                        if self.call(tidegate_proxy_try_open_connection(p, now))
                            == TidegateStatus::Ok
                        {
                            self.own_connections += 1;
                        }
                    } else if self.own_connections > 0
                        && self.call(tidegate_proxy_on_connection_closed(p, now))
                            == TidegateStatus::Ok
                    {
                        self.own_connections -= 1;
                    }
                    if r & 0xFF000 == 0 {
                        self.call(tidegate_proxy_on_resource_error(p, now));
                    }
                }
                12 => {
                    self.call(tidegate_proxy_can_read(
                        p,
                        pick,
                        TidegateProxySide::Local as u32,
                        &mut can_read,
                    ));
                    self.call(tidegate_proxy_can_read(
                        p,
                        pick,
                        TidegateProxySide::Remote as u32,
                        &mut can_read,
                    ));
                    let mut info = std::mem::MaybeUninit::uninit();
                    self.call(tidegate_proxy_flow(p, pick, info.as_mut_ptr()));
                    let mut app = std::mem::MaybeUninit::uninit();
                    self.call(tidegate_proxy_app_state(p, (r >> 8) % 6, app.as_mut_ptr()));
                }
                13 => {
                    // Bad input: forged and stale ids, NULL out-parameters, an unknown protocol,
                    // relay step, side and family, completions past what is pending, a read no
                    // counter can hold, a report for an attempt never started.
                    self.call(tidegate_proxy_on_connected(p, now, r));
                    self.call(tidegate_proxy_on_closed(p, now, pick, null_mut()));
                    let mut admission = std::mem::MaybeUninit::uninit();
                    self.call(tidegate_proxy_on_new_flow(
                        p,
                        now,
                        1,
                        1,
                        9,
                        TidegateFlowClass::Stream as u32,
                        admission.as_mut_ptr(),
                    ));
                    self.call(tidegate_proxy_on_new_flow(
                        p,
                        now,
                        1,
                        1,
                        TidegateFlowProtocol::Tcp as u32,
                        3,
                        admission.as_mut_ptr(),
                    ));
                    self.call(tidegate_proxy_on_bytes(
                        p,
                        now,
                        pick,
                        TidegateRelayStep::RemoteSent as u32,
                        u64::MAX,
                        &mut can_read,
                    ));
                    self.call(tidegate_proxy_on_bytes(
                        p,
                        0,
                        pick,
                        TidegateRelayStep::LocalRead as u32,
                        u64::MAX,
                        &mut can_read,
                    ));
                    self.call(tidegate_proxy_on_bytes(p, now, pick, 4, 1, &mut can_read));
                    self.call(tidegate_proxy_can_read(p, pick, 2, &mut can_read));
                    let mut added = 0;
                    let list = self.ipv4.as_ptr();
                    self.call(tidegate_proxy_on_resolved(
                        p, now, pick, 5, list, 1, &mut added,
                    ));
                    self.call(tidegate_proxy_on_attempt_connected(p, now, pick, 15));
                    self.call(tidegate_proxy_on_attempt_failed(p, now, pick, 16, 111));
                }
                _ => {}
            }
        }
        self.drain_proxy();
    }

    /// Drain the proxy's events, a few at a time, acting on each as a host does.
    fn drain_proxy(&mut self) {
        let now = self.now;
        let p = self.proxy;
        loop {
            let mut count = 0;
            let batch = self.events.as_mut_ptr();
            let capacity = self.events.len();
            // SAFETY: the handle is live; the batch is a field of `self` of `capacity` events.
            let status = unsafe { tidegate_proxy_poll_events(p, batch, capacity, &mut count) };
            assert_eq!(self.call(status), TidegateStatus::Ok);
            if count == 0 {
                break;
            }
            for i in 0..count {
                let event = self.events[i];
                match event.kind {
                    TidegateProxyEventKind::CloseFlow => {
                        let mut outcome = TidegateFlowOutcome::Closed;
                        // SAFETY: the handle is live; `outcome` is a local.
                        let status =
                            unsafe { tidegate_proxy_on_closed(p, now, event.flow, &mut outcome) };
                        assert_eq!(self.call(status), TidegateStatus::Ok);
                    }
                    TidegateProxyEventKind::StartAttempt => {
                        self.activity.attempts_started += 1;
                        let ipv6 = event.address.family == TidegateAddressFamily::Ipv6 as u8;
                        if self.attempts.len() < self.attempts.capacity() {
                            self.attempts.push((event.flow, event.attempt, ipv6));
                        }
                    }
                    TidegateProxyEventKind::CancelAttempt => {
                        let key = (event.flow, event.attempt);
                        self.attempts
                            .retain(|&(flow, attempt, _)| (flow, attempt) != key);
                    }
                    TidegateProxyEventKind::Established => {
                        self.activity.races_won += 1;
                        self.activity.races_finished += 1;
                    }
                    TidegateProxyEventKind::ConnectFailed => self.activity.races_finished += 1,
                    _ => {}
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
                    let status = tidegate_lifecycle_on_tunnel_started(l, now, generation);
                    // Now and then the device sleeps soon after the tunnel came up: the case a
                    // wake restart is for (the other sleeps land in any state).
                    if self.call(status) == TidegateStatus::Ok && (r >> 8).is_multiple_of(8) {
                        self.sleep_for_hours(r);
                    }
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
                7 => {
                    // The path monitor: four paths, 0 being none.
                    let mut scheduled = false;
                    let path = (r >> 20) % 4;
                    self.call(tidegate_lifecycle_on_path_change(
                        l,
                        now,
                        path,
                        &mut scheduled,
                    ));
                    self.drain_lifecycle();
                }
                8 => {
                    let restart = self.restart_id;
                    let status = if r & 0x100 == 0 {
                        tidegate_lifecycle_on_restart_done(l, now, generation, restart)
                    } else {
                        tidegate_lifecycle_on_restart_failed(l, now, generation, restart)
                    };
                    self.call(status);
                    self.drain_lifecycle();
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
                TidegateLifecycleEffectKind::RestartTunnel => {
                    self.restart_id = effect.restart_id;
                    self.activity.restarts_announced += 1;
                }
                _ => {}
            }
        }
    }

    /// The device sleeps for hours on a clock that counts sleep: `now` jumps, the lifecycle
    /// hears the wake, and every engine with timers handles them once (and its effects or
    /// events are drained, as the drain contract says). Afterwards no engine asks for a timer at
    /// or before the new `now` (a timer armed in the past would fire again
    /// and again), and a second `handle_timeout` at the same `now` changes nothing.
    fn sleep_for_hours(&mut self, r: u64) {
        let (p, l, m) = (self.proxy, self.lifecycle, self.memory);
        self.bring_tunnel_up();
        let slept = (1 + r % 8) * 3_600_000_000;
        self.now += slept;
        self.activity.sleeps += 1;
        let now = self.now;
        // SAFETY: the handles are live and every pointer is to a local.
        unsafe {
            let mut scheduled = false;
            self.call(tidegate_lifecycle_on_wake(l, now, slept, &mut scheduled));
            self.activity.wake_restarts += u64::from(scheduled);
            let handle_all = |w: &mut Workload| {
                w.call(tidegate_lifecycle_handle_timeout(l, now));
                w.drain_lifecycle();
                w.call(tidegate_proxy_handle_timeout(p, now));
                w.drain_proxy();
                w.call(tidegate_memory_handle_timeout(m, now));
            };
            handle_all(self);
            let mut deadlines = [0u64; 3];
            self.call(tidegate_lifecycle_poll_timeout(l, &mut deadlines[0]));
            self.call(tidegate_proxy_poll_timeout(p, &mut deadlines[1]));
            self.call(tidegate_memory_poll_timeout(m, &mut deadlines[2]));
            for (engine, deadline) in ["lifecycle", "proxy", "memory"].iter().zip(deadlines) {
                assert!(
                    deadline > now,
                    "{engine} asks for a timer at {deadline} us after handling {now} us"
                );
            }
            let before = self.stats_snapshot();
            handle_all(self);
            assert_eq!(before, self.stats_snapshot(), "handling the same now twice");
        }
    }

    /// The device sleeps with the tunnel up: start a session and report it up if none is.
    fn bring_tunnel_up(&mut self) {
        let (l, now) = (self.lifecycle, self.now);
        let mut state = TidegateLifecycleState::Idle;
        let mut generation = 0;
        // SAFETY: the handle is live and every pointer is to a local.
        unsafe {
            let status = tidegate_lifecycle_state(l, &mut state, &mut generation);
            assert_eq!(self.call(status), TidegateStatus::Ok);
            if matches!(
                state,
                TidegateLifecycleState::Idle | TidegateLifecycleState::Stopped
            ) {
                let status = tidegate_lifecycle_on_start(l, now, null(), 0, &mut generation);
                assert_eq!(self.call(status), TidegateStatus::Ok);
                self.generation = generation;
                self.drain_lifecycle();
                state = TidegateLifecycleState::Starting;
            }
            if state == TidegateLifecycleState::Starting {
                let status = tidegate_lifecycle_on_tunnel_started(l, now, generation);
                assert_eq!(self.call(status), TidegateStatus::Ok);
                self.drain_lifecycle();
            }
        }
    }

    /// The counters of the engines with timers, to tell whether a call changed anything.
    fn stats_snapshot(
        &mut self,
    ) -> (
        TidegateLifecycleStats,
        TidegateProxyStats,
        TidegateMemoryStats,
    ) {
        let mut lifecycle = std::mem::MaybeUninit::uninit();
        let mut proxy = std::mem::MaybeUninit::uninit();
        let mut memory = std::mem::MaybeUninit::uninit();
        // SAFETY: the handles are live; each out-struct is written whole on success, checked.
        unsafe {
            for status in [
                tidegate_lifecycle_stats(self.lifecycle, lifecycle.as_mut_ptr()),
                tidegate_proxy_stats(self.proxy, proxy.as_mut_ptr()),
                tidegate_memory_stats(self.memory, memory.as_mut_ptr()),
            ] {
                assert_eq!(self.call(status), TidegateStatus::Ok);
            }
            (
                lifecycle.assume_init(),
                proxy.assume_init(),
                memory.assume_init(),
            )
        }
    }

    /// Capture every engine into the next black box record and write its slot, as a host does
    /// every few seconds; then read the file back: the record just written is the newest.
    fn write_black_box(&mut self) {
        let mut record = TidegateBlackBoxRecord {
            sequence: self.activity.black_box_records + 1,
            written_at_us: self.now,
            ..TidegateBlackBoxRecord::default()
        };
        let mut slot = [0u8; TIDEGATE_BLACK_BOX_SLOT_LEN];
        let mut offset = 0;
        let mut read = TidegateBlackBoxRecord::default();
        // SAFETY: the handles are live; every pointer is to a local or a field of `self`.
        unsafe {
            for status in [
                tidegate_black_box_capture_lifecycle(&mut record, self.lifecycle),
                tidegate_black_box_capture_tunnel(&mut record, self.tunnel),
                tidegate_black_box_capture_proxy(&mut record, self.proxy),
                tidegate_black_box_capture_memory(&mut record, self.memory),
                tidegate_black_box_encode(&record, slot.as_mut_ptr(), slot.len(), &mut offset),
            ] {
                assert_eq!(self.call(status), TidegateStatus::Ok);
            }
            self.black_box[offset..offset + slot.len()].copy_from_slice(&slot);
            let status =
                tidegate_black_box_decode(self.black_box.as_ptr(), self.black_box.len(), &mut read);
            assert_eq!(self.call(status), TidegateStatus::Ok);
        }
        assert_eq!(read, record, "the record just written is the newest");
        self.activity.black_box_records += 1;
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

            let mut proxy = std::mem::MaybeUninit::<TidegateProxyStats>::uninit();
            let status = tidegate_proxy_stats(self.proxy, proxy.as_mut_ptr());
            assert_eq!(self.call(status), TidegateStatus::Ok);
            let proxy = proxy.assume_init();
            let flows = proxy.flows;
            let open = flows.opening + flows.connecting + flows.established;
            self.peaks.flows_open = self.peaks.flows_open.max(open);
            self.peaks.flows_in_table = self.peaks.flows_in_table.max(open + flows.closing);
            let pending = flows
                .bytes_pending_outbound
                .saturating_add(flows.bytes_pending_inbound);
            self.peaks.flow_bytes_pending = self.peaks.flow_bytes_pending.max(pending);
            let attempts = proxy.attempts_in_flight;
            self.peaks.budget_attempts = self.peaks.budget_attempts.max(attempts);
            let in_use = attempts + proxy.open_connections;
            self.peaks.budget_in_use = self.peaks.budget_in_use.max(in_use);
            self.peaks.races_running = self.peaks.races_running.max(proxy.races.running);

            // The limits in force are never above the configured ones, at any level.
            let mut limits = std::mem::MaybeUninit::<TidegateTunnelLimits>::uninit();
            let status = tidegate_tunnel_limits(self.tunnel, limits.as_mut_ptr());
            assert_eq!(self.call(status), TidegateStatus::Ok);
            let limits = limits.assume_init();
            assert!(limits.outbound_high_watermark_bytes <= TUNNEL.outbound_high_watermark_bytes);
            assert!(limits.outbound_low_watermark_bytes < limits.outbound_high_watermark_bytes);
            assert!(
                limits.outbound_high_watermark_packets <= TUNNEL.outbound_high_watermark_packets
            );
            assert!(limits.inbound_bytes <= TUNNEL.inbound_bytes);
            assert!(limits.inbound_packets <= TUNNEL.inbound_packets);
            let policy = proxy.limits;
            assert!(policy.max_flows <= MAX_FLOWS && policy.max_flows >= 1);
            assert_eq!(limits.pressure as u32, proxy.pressure as u32);

            let mut memory = std::mem::MaybeUninit::<TidegateMemoryStats>::uninit();
            let status = tidegate_memory_stats(self.memory, memory.as_mut_ptr());
            assert_eq!(self.call(status), TidegateStatus::Ok);
            let memory = memory.assume_init();
            assert_eq!(memory.reservations as usize, self.reservations.len());
            self.peaks.reservations = self.peaks.reservations.max(memory.reservations);
        }
    }

    /// Free the proxy engine and create a new one, as a host does when its provider restarts:
    /// every flow, attempt and connection of the old engine is gone with it.
    fn restart_proxy_engine(&mut self) {
        // SAFETY: the handle came from `_new` and is freed once; the field gets the new one.
        unsafe {
            tidegate_proxy_free(self.proxy);
            self.proxy = null_mut();
            let status = tidegate_proxy_new(&proxy_config(), self.now, &mut self.proxy);
            assert_eq!(self.call(status), TidegateStatus::Ok);
            // A new engine starts at normal pressure: the host passes the level in force.
            let level = self.apply_pressure();
            let status = tidegate_proxy_on_pressure(self.proxy, self.now, level as u32);
            assert_eq!(self.call(status), TidegateStatus::Ok);
        }
        self.flows.clear();
        self.attempts.clear();
        self.own_connections = 0;
        self.activity.proxy_restarts += 1;
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        // SAFETY: every handle came from its `_new` and is freed once.
        unsafe {
            tidegate_tunnel_free(self.tunnel);
            tidegate_proxy_free(self.proxy);
            tidegate_lifecycle_free(self.lifecycle);
            tidegate_memory_free(self.memory);
        }
    }
}

fn proxy_config() -> TidegateProxyConfig {
    let mut config = tidegate_proxy_config_default();
    config.flows = TidegateFlowPolicy {
        slots: FLOW_SLOTS,
        max_flows: MAX_FLOWS,
        max_flows_per_app: MAX_FLOWS,
        max_flows_per_destination: MAX_FLOWS,
        max_connecting: MAX_FLOWS,
        idle_timeout_us: 200_000,
        connect_timeout_us: 300_000,
        ..config.flows
    };
    config.budget = TidegateBudgetConfig {
        max_attempts_in_flight: BUDGET_ATTEMPTS,
        max_open_connections: BUDGET_CONNECTIONS,
        fd_limit: 10_000,
        backoff_floor: 2,
        recovery_interval_us: 100_000,
        ..config.budget
    };
    config.race = TidegateEyeballsConfig {
        attempt_timeout_us: 400_000,
        budget_wait_us: 2_000_000,
        ..config.race
    };
    config.race_slots = RACE_SLOTS;
    config
}

fn memory_config() -> TidegateMemoryConfig {
    TidegateMemoryConfig {
        limit_bytes: MEMORY_LIMIT,
        calm_us: 20_000,
        max_reservations: MAX_RESERVATIONS,
        ..tidegate_memory_config_packet_tunnel()
    }
}

fn lifecycle_config() -> TidegateLifecycleConfig {
    // Restart timers scaled to the workload's clock (about 32 us per operation), so sessions
    // live long enough for path changes to settle, attempts to time out and back off.
    TidegateLifecycleConfig {
        task_capacity: TASK_CAPACITY,
        path_debounce_us: 500,
        restart_deadline_us: 20_000,
        restart_backoff_us: 1_000,
        restart_backoff_max_us: 8_000,
        ..tidegate_lifecycle_config_default()
    }
}
