//! Call sequences through the `extern "C"` functions of `libtidegate`, as a careless C host
//! would make them: NULL handles, buffers and out-pointers, zero and oversized lengths, stale
//! and forged flow ids, task ids and generations, double completions, unknown enum integers,
//! configurations of every shape and clocks running backwards. Checked on every call:
//!
//! - the status is one the function documents, and never `PANIC` or `POISONED`;
//! - a NULL handle or a NULL required pointer gives `NULL_ARGUMENT`;
//! - out-parameters are written only on success: a refused call leaves them byte for byte;
//! - packet views stay readable and unchanged until completed (AddressSanitizer checks every
//!   byte read through them), and every handle is freed, so a leak fails the run too;
//! - the memory governor issues each reservation id once, never 0, refuses exactly 0 bytes,
//!   a full slot table and unknown ids; a pressure level reaches the tunnel and the proxy
//!   engine, and an unknown one is refused and leaves their limits unchanged.
#![no_main]

use std::collections::VecDeque;
use std::mem::{MaybeUninit, size_of};
use std::ptr::{null, null_mut};

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use tidegate::*;
use tidegate_fuzz::{HostClock, MAX_OPS, Tick};

use TidegateStatus as S;

/// Bytes an out-parameter is filled with before a call, to see whether a refused call wrote it.
const SENTINEL: u8 = 0xa7;
/// The most memory one handle may take in this target (bigger configurations are only sized).
const MAX_FOOTPRINT: usize = 4 << 20;

/// An out-parameter: NULL, or a sentinel-filled slot.
struct Out<T> {
    slot: MaybeUninit<T>,
    null: bool,
}

impl<T> Out<T> {
    fn new(null: bool) -> Self {
        let mut slot = MaybeUninit::<T>::uninit();
        // SAFETY: writing bytes into the slot's own storage.
        unsafe {
            slot.as_mut_ptr()
                .cast::<u8>()
                .write_bytes(SENTINEL, size_of::<T>())
        };
        Out { slot, null }
    }

    fn ptr(&mut self) -> *mut T {
        if self.null {
            null_mut()
        } else {
            self.slot.as_mut_ptr()
        }
    }

    /// The value written by a successful call; on any other status, check it was not touched.
    fn after(self, status: S) -> Option<T> {
        if status == S::Ok {
            assert!(!self.null, "OK with a NULL out-parameter");
            // SAFETY: the call succeeded, so it wrote a valid `T`.
            return Some(unsafe { self.slot.assume_init() });
        }
        if !self.null {
            // SAFETY: the bytes were initialised by `new` and, by the contract checked here,
            // not written since.
            let bytes = unsafe {
                std::slice::from_raw_parts(self.slot.as_ptr().cast::<u8>(), size_of::<T>())
            };
            assert!(
                bytes.iter().all(|&b| b == SENTINEL),
                "a refused call wrote its out-param"
            );
        }
        None
    }
}

/// Assert `status` is one of `allowed` (and NULL_ARGUMENT when a required pointer was NULL).
fn expect(status: S, null_given: bool, allowed: &[S]) -> S {
    assert!(status != S::Panic && status != S::Poisoned, "{status:?}");
    if null_given {
        assert_eq!(status, S::NullArgument, "a NULL required pointer");
    } else {
        assert!(
            status == S::Ok || allowed.contains(&status),
            "undocumented status {status:?}, allowed {allowed:?}"
        );
    }
    // SAFETY: a valid status code.
    let message = tidegate_status_str(status as u32);
    assert!(!message.is_null());
    status
}

#[derive(Debug, Arbitrary)]
enum Packet {
    Null { len: u16 },
    Bytes { len: u16, fill: u8 },
    Oversized { extra: u16 },
}

#[derive(Debug, Arbitrary)]
enum Id {
    Issued(u8),
    Forged(u64),
}

#[derive(Debug, Arbitrary)]
enum Op {
    // Tunnel.
    TunnelNew {
        config: [u32; 14],
        preset: bool,
        null_out: bool,
    },
    TunnelFree,
    Outbound {
        packet: Packet,
        null_handle: bool,
        tick: Tick,
    },
    Inbound {
        packet: Packet,
        null_out: bool,
        tick: Tick,
    },
    PollOutbound {
        capacity: u8,
        null_views: bool,
        null_count: bool,
        tick: Tick,
    },
    PollInbound {
        capacity: u8,
        null_count: bool,
        tick: Tick,
    },
    CompleteOutbound {
        count: u16,
        null_out: bool,
        tick: Tick,
    },
    CompleteInbound {
        count: u16,
        tick: Tick,
    },
    /// A report from the layer below: transmitted bytes, or (`level`) its queue level.
    Below {
        bytes: u32,
        level: bool,
        tick: Tick,
    },
    TunnelQueries {
        null_out: bool,
    },
    // Proxy engine.
    ProxyNew {
        policy: [u64; 14],
        preset: bool,
        budget: [u16; 4],
        race: (u32, u32, [u16; 4]),
        race_slots: u8,
    },
    ProxyFree,
    NewFlow {
        app: u8,
        destination: u8,
        protocol: u32,
        class: u32,
        null_out: bool,
        tick: Tick,
    },
    FlowCall {
        call: u8,
        flow: Id,
        bytes: u64,
        errno: i32,
        what: u32,
        null_out: bool,
        tick: Tick,
    },
    ProxyPoll {
        capacity: u8,
        null_out: bool,
    },
    BudgetCall {
        call: u8,
        value: u64,
        tick: Tick,
    },
    Resolved {
        flow: Id,
        family: u32,
        addresses: Vec<(u8, u8, u16, u8)>,
        null_addresses: bool,
        tick: Tick,
    },
    RaceCall {
        call: u8,
        flow: Id,
        attempt: Id,
        errno: i32,
        family: u32,
        tick: Tick,
    },
    FlowKey {
        data: Option<Vec<u8>>,
        len_extra: u8,
    },
    // Lifecycle.
    LifecycleNew {
        deadline_us: u64,
        capacity: u32,
        in_flight: u16,
    },
    LifecycleFree,
    LifecycleCall {
        call: u8,
        generation: Id,
        task: Id,
        code: u32,
        null_out: bool,
        tick: Tick,
    },
    Register {
        kind: u32,
        payload: Packet,
        null_out: bool,
        tick: Tick,
    },
    Start {
        journal: Option<Vec<u8>>,
        use_saved: bool,
        null_out: bool,
        tick: Tick,
    },
    WriteJournal {
        short: u8,
        null_buf: bool,
    },
    // Memory governor.
    MemoryNew {
        /// A preset (even: packet tunnel, odd: app proxy) when `raw` is `None`.
        preset: u8,
        raw: Option<(u64, u64, [u32; 4])>,
        null_out: bool,
    },
    MemoryFree,
    MemoryCall {
        call: u8,
        value: u64,
        reservation: Id,
        null_out: bool,
        tick: Tick,
    },
    /// A pressure level, known (0 to 2) or not, passed to the tunnel and the proxy engine.
    Pressure {
        level: u32,
        null_out: bool,
        tick: Tick,
    },
}

#[derive(Default)]
struct Host {
    tunnel: Option<*mut TidegateTunnel>,
    max_packet_len: usize,
    /// Copies of the packets behind the views handed out, with the views, oldest first.
    outbound_views: VecDeque<(TidegatePacketView, Vec<u8>)>,
    inbound_views: VecDeque<(TidegatePacketView, Vec<u8>)>,
    proxy: Option<*mut TidegateProxy>,
    flows: Vec<u64>,
    /// Attempts the proxy asked to start: flow and attempt.
    attempts: Vec<(u64, u32)>,
    lifecycle: Option<*mut TidegateLifecycle>,
    generations: Vec<u64>,
    tasks: Vec<u64>,
    journal: Vec<u8>,
    memory: Option<*mut TidegateMemory>,
    /// Reservations granted and not released.
    reservations: Vec<u64>,
    max_reservations: usize,
}

fuzz_target!(|data: &[u8]| {
    let mut input = Unstructured::new(data);
    let mut host = Host::default();
    let mut clock = HostClock::new(7_000_000);
    for _ in 0..MAX_OPS {
        let Ok(op) = Op::arbitrary(&mut input) else {
            break;
        };
        // SAFETY: every pointer passed below is NULL, a live handle of `host`, or a buffer
        // valid for the length passed with it, as the header requires.
        unsafe { run(&mut host, &mut clock, op) };
        check_views(&host);
    }
    // SAFETY: the handles are live and freed once.
    unsafe {
        free_all(&mut host);
    }
});

fn pick(list: &[u64], id: &Id) -> u64 {
    match *id {
        Id::Issued(i) if !list.is_empty() => list[usize::from(i) % list.len()],
        Id::Issued(i) => u64::from(i),
        Id::Forged(raw) => raw,
    }
}

/// The bytes and length of a packet argument (the buffer must outlive the call).
fn packet_of(packet: &Packet, max: usize, storage: &mut Vec<u8>) -> (*const u8, usize) {
    match *packet {
        Packet::Null { len } => (null(), usize::from(len % 3)),
        Packet::Bytes { len, fill } => {
            *storage = vec![fill; usize::from(len) % (max + 2)];
            (storage.as_ptr(), storage.len())
        }
        Packet::Oversized { extra } => {
            *storage = vec![0x42; max + 1 + usize::from(extra % 2048)];
            (storage.as_ptr(), storage.len())
        }
    }
}

fn check_views(host: &Host) {
    for (view, copy) in host.outbound_views.iter().chain(&host.inbound_views) {
        // SAFETY: a view stays valid until its packet is completed, which is the contract
        // under test; AddressSanitizer reports any byte read outside a live allocation.
        let bytes = unsafe { std::slice::from_raw_parts(view.data, view.len) };
        assert_eq!(
            bytes,
            &copy[..],
            "a view's bytes changed before its completion"
        );
    }
}

unsafe fn run(host: &mut Host, clock: &mut HostClock, op: Op) {
    unsafe {
        match op {
            Op::TunnelNew {
                config,
                preset,
                null_out,
            } => {
                let mut c = tidegate_tunnel_config_default();
                if preset {
                    c.outbound_bytes = 4096 + config[0] % 8192;
                    c.outbound_packets = 8 + config[1] % 64;
                    c.inbound_bytes = 2048 + config[2] % 8192;
                    c.inbound_packets = 1 + config[3] % 64;
                    c.max_packet_len = 1 + config[4] % 1500;
                    c.outbound_high_watermark_bytes = c.outbound_bytes / 2;
                    c.outbound_low_watermark_bytes = c.outbound_bytes / 4;
                    c.outbound_high_watermark_packets = c.outbound_packets / 2;
                    c.outbound_low_watermark_packets =
                        config[5] % c.outbound_high_watermark_packets;
                    c.inbound_drop_policy = config[6] % 3;
                    c.aqm = config[7] % 4;
                    // Mostly valid alignments, now and then one that is not a power of two.
                    c.packet_align = match config[8] % 16 {
                        15 => 48,
                        n => 1 << (n % 8),
                    };
                    if c.aqm == 2 {
                        // Flow queues: whole cells, and now and then a quantum too small.
                        c.flow_queues = 1 + config[9] % 64;
                        c.flow_quantum_bytes = 200 + config[10] % 2000;
                        c.flow_hash_seed = [config[11] as u8; 16];
                        let cell = c.max_packet_len.next_multiple_of(c.packet_align);
                        c.outbound_bytes = c.outbound_packets * cell;
                        c.inbound_bytes = c.inbound_packets * cell;
                    }
                    if config[12] % 3 == 0 {
                        // A byte queue limit; now and then a minimum below a packet.
                        c.queue_limit_min_bytes = c.max_packet_len - u32::from(config[13] % 5 == 0);
                        c.queue_limit_max_bytes = c.max_packet_len * (1 + config[13] % 8);
                        c.queue_limit_hold_us = config[11] % 200_000;
                    }
                } else {
                    c = TidegateTunnelConfig {
                        outbound_bytes: config[0],
                        outbound_packets: config[1],
                        inbound_bytes: config[2],
                        inbound_packets: config[3],
                        max_packet_len: config[4],
                        outbound_high_watermark_bytes: config[5],
                        outbound_low_watermark_bytes: config[6],
                        outbound_high_watermark_packets: config[7],
                        outbound_low_watermark_packets: config[8],
                        inbound_drop_policy: config[9],
                        aqm: config[10],
                        aqm_target_us: config[11],
                        aqm_interval_us: config[12],
                        packet_align: config[13],
                        flow_queues: config[0] ^ config[1],
                        flow_quantum_bytes: config[2] ^ config[3],
                        flow_hash_seed: [config[4] as u8; 16],
                        queue_limit_max_bytes: config[5] ^ config[6],
                        queue_limit_min_bytes: config[7] ^ config[8],
                        queue_limit_hold_us: config[9] ^ config[10],
                    };
                }
                let mut configs: Vec<S> = (10..=20).map(status).collect();
                configs.push(S::ConfigArenaNotWholeCells);
                configs.push(S::ConfigInvalidQueueLimit);
                configs.push(S::ConfigZeroDuration);
                let mut footprint = Out::<usize>::new(false);
                let mut align = 0;
                let s = expect(
                    tidegate_tunnel_footprint(&c, footprint.ptr(), &mut align),
                    false,
                    &configs,
                );
                let Some(bytes) = footprint.after(s) else {
                    return;
                };
                if bytes > MAX_FOOTPRINT {
                    return;
                }
                let mut out = Out::<*mut TidegateTunnel>::new(null_out);
                let s = expect(
                    tidegate_tunnel_new(&c, out.ptr()),
                    null_out,
                    &[S::OutOfMemory],
                );
                if let Some(tunnel) = out.after(s) {
                    free_tunnel(host);
                    host.tunnel = Some(tunnel);
                    host.max_packet_len = c.max_packet_len as usize;
                }
            }
            Op::TunnelFree => free_tunnel(host),
            Op::Outbound {
                packet,
                null_handle,
                tick,
            } => {
                let now = clock.tick(tick);
                let tunnel = handle(host.tunnel, null_handle);
                let mut storage = Vec::new();
                let (data, len) = packet_of(&packet, host.max_packet_len, &mut storage);
                let null_given = tunnel.is_null() || (data.is_null() && len > 0);
                let allowed = [S::PacketEmpty, S::PacketTooLong, S::NoRoom];
                let s = tidegate_tunnel_on_outbound_packet(tunnel, now, data, len);
                expect(s, null_given, &allowed);
                match s {
                    S::PacketEmpty => assert_eq!(len, 0),
                    S::PacketTooLong => assert!(len > host.max_packet_len),
                    S::Ok => assert!(len > 0 && len <= host.max_packet_len),
                    _ => {}
                }
            }
            Op::Inbound {
                packet,
                null_out,
                tick,
            } => {
                let now = clock.tick(tick);
                let tunnel = handle(host.tunnel, false);
                let mut storage = Vec::new();
                let (data, len) = packet_of(&packet, host.max_packet_len, &mut storage);
                let null_given = tunnel.is_null() || null_out || (data.is_null() && len > 0);
                let mut out = Out::<TidegateInboundDisposition>::new(null_out);
                let s = tidegate_tunnel_on_inbound_packet(tunnel, now, data, len, out.ptr());
                expect(s, null_given, &[S::PacketEmpty, S::PacketTooLong]);
                out.after(s);
            }
            Op::PollOutbound {
                capacity,
                null_views,
                null_count,
                tick,
            } => {
                let now = clock.tick(tick);
                poll(host, now, true, capacity, null_views, null_count);
            }
            Op::PollInbound {
                capacity,
                null_count,
                tick,
            } => {
                let now = clock.tick(tick);
                poll(host, now, false, capacity, false, null_count);
            }
            Op::CompleteOutbound {
                count,
                null_out,
                tick,
            } => {
                let now = clock.tick(tick);
                let tunnel = handle(host.tunnel, false);
                let count = usize::from(count % 8);
                let mut out = Out::<bool>::new(null_out);
                let s = tidegate_tunnel_complete_outbound(tunnel, now, count, out.ptr());
                expect(s, tunnel.is_null() || null_out, &[S::NotInFlight]);
                if out.after(s).is_some() {
                    host.outbound_views.drain(..count);
                } else if s == S::NotInFlight {
                    assert!(count > host.outbound_views.len());
                }
            }
            Op::Below { bytes, level, tick } => {
                let now = clock.tick(tick);
                let tunnel = handle(host.tunnel, false);
                let s = if level {
                    tidegate_tunnel_on_outbound_queued_below(tunnel, now, u64::from(bytes))
                } else {
                    tidegate_tunnel_on_outbound_transmitted(tunnel, now, u64::from(bytes))
                };
                expect(s, tunnel.is_null(), &[]);
            }
            Op::CompleteInbound { count, tick } => {
                let now = clock.tick(tick);
                let tunnel = handle(host.tunnel, false);
                let count = usize::from(count % 8);
                let s = tidegate_tunnel_complete_inbound(tunnel, now, count);
                expect(s, tunnel.is_null(), &[S::NotInFlight]);
                if s == S::Ok {
                    host.inbound_views.drain(..count);
                }
            }
            Op::TunnelQueries { null_out } => {
                let tunnel = handle(host.tunnel, false);
                let mut can_read = Out::<bool>::new(null_out);
                let s = tidegate_tunnel_can_read_outbound(tunnel, can_read.ptr());
                can_read.after(expect(s, tunnel.is_null() || null_out, &[]));
                let mut stats = Out::<TidegateTunnelStats>::new(null_out);
                let s = tidegate_tunnel_stats(tunnel, stats.ptr());
                if let Some(stats) = stats.after(expect(s, tunnel.is_null() || null_out, &[])) {
                    assert_eq!(
                        stats.outbound.packets_in_flight as usize,
                        host.outbound_views.len()
                    );
                    assert_eq!(
                        stats.inbound.packets_in_flight as usize,
                        host.inbound_views.len()
                    );
                }
            }
            Op::ProxyNew {
                policy,
                preset,
                budget,
                race,
                race_slots,
            } => {
                let mut config = tidegate_proxy_config_default();
                let p = &mut config.flows;
                if preset {
                    p.max_flows = 1 + (policy[0] % 16) as u32;
                    p.slots = p.max_flows + 1 + (policy[1] % 4) as u32;
                    p.max_flows_per_app = 1 + (policy[2] % 16) as u32;
                    p.max_flows_per_destination = 1 + (policy[3] % 16) as u32;
                    p.max_connecting = (policy[4] % 16) as u32;
                    p.idle_timeout_us = policy[5] % 10_000_000;
                    p.connect_timeout_us = policy[6] % 10_000_000;
                    p.flow_low_watermark_bytes = policy[7] % 70_000;
                    p.flow_high_watermark_bytes = p.flow_low_watermark_bytes + policy[8] % 100;
                    // Sometimes inverted (low = high), which the policy check refuses.
                    p.app_low_watermark_bytes = policy[9] % 200_000;
                    p.app_high_watermark_bytes = p.app_low_watermark_bytes + policy[10] % 1000;
                } else {
                    *p = TidegateFlowPolicy {
                        slots: policy[0] as u32,
                        max_flows: policy[1] as u32,
                        max_flows_per_app: policy[2] as u32,
                        max_flows_per_destination: policy[3] as u32,
                        max_connecting: policy[4] as u32,
                        max_datagram_flows: (policy[4] >> 32) as u32,
                        idle_timeout_us: policy[5],
                        connect_timeout_us: policy[6],
                        flow_high_watermark_bytes: policy[7],
                        flow_low_watermark_bytes: policy[8],
                        global_high_watermark_bytes: policy[9],
                        global_low_watermark_bytes: policy[10],
                        hash_seed: policy[11],
                        app_high_watermark_bytes: policy[12],
                        app_low_watermark_bytes: policy[13],
                        // The class and pacing fields from the seed's bits: 0 sometimes (a
                        // refusal), small or huge otherwise.
                        max_dns_in_flight: (policy[11] % 9) as u32,
                        max_dns_in_flight_per_app: (policy[11] >> 8 & 7) as u32,
                        app_admission_burst: (policy[11] >> 16 & 31) as u32,
                        app_admission_rate_per_second: (policy[11] >> 24) as u32,
                        datagram_idle_timeout_us: policy[5] >> 1,
                        datagram_max_lifetime_us: policy[6].rotate_left(7),
                        dns_idle_timeout_us: policy[5] >> 2,
                        max_paused_us: policy[6] >> 3,
                    };
                }
                // Small budgets (0 refused), and race parameters around the edges of each
                // range: a few are refused, most run.
                config.budget.max_attempts_in_flight = u32::from(budget[0] % 9);
                config.budget.max_open_connections = u32::from(budget[1] % 17);
                config.budget.fd_limit = u64::from(budget[2] % 300);
                config.budget.backoff_floor = 1 + u32::from(budget[3] % 4);
                let (family, count, delays) = race;
                config.race.preferred_family = family % 8;
                config.race.first_address_family_count = count % 5;
                config.race.resolution_delay_us = u64::from(delays[0]) * 40;
                config.race.connection_attempt_delay_us = 9_000 + u64::from(delays[1]) * 10;
                config.race.attempt_timeout_us = u64::from(delays[2]) * 10;
                config.race.budget_wait_us = u64::from(delays[3]) * 10;
                config.race_slots = u32::from(race_slots % 9);
                let configs = [
                    S::ConfigFlowZeroCap,
                    S::ConfigWatermarksOutOfOrder,
                    S::ConfigFlowTooFewSlots,
                    S::ConfigFlowTooManySlots,
                    S::ConfigZeroDuration,
                    S::ConfigBudgetZeroLimit,
                    S::ConfigBudgetReserveTooLarge,
                    S::ConfigUnknownAddressFamily,
                    S::ConfigEyeballsOutOfRange,
                    S::ConfigZeroCapacity,
                ];
                let mut footprint = Out::<usize>::new(false);
                let s = tidegate_proxy_footprint(&config, footprint.ptr(), &mut 0);
                let s = expect(s, false, &configs);
                let race_in_range = config.race.first_address_family_count > 0
                    && config.race.resolution_delay_us <= 2_000_000
                    && config.race.connection_attempt_delay_us >= 10_000;
                if s == S::ConfigEyeballsOutOfRange {
                    assert!(!race_in_range, "refused exactly out of range");
                }
                let Some(bytes) = footprint.after(s) else {
                    return;
                };
                assert!(race_in_range, "accepted only in range");
                if bytes > MAX_FOOTPRINT {
                    return;
                }
                let mut out = Out::<*mut TidegateProxy>::new(false);
                let s = tidegate_proxy_new(&config, clock.now, out.ptr());
                if let Some(proxy) = out.after(expect(s, false, &[S::OutOfMemory])) {
                    if let Some(old) = host.proxy.replace(proxy) {
                        tidegate_proxy_free(old);
                    }
                    host.flows.clear();
                    host.attempts.clear();
                }
            }
            Op::ProxyFree => {
                if let Some(old) = host.proxy.take() {
                    tidegate_proxy_free(old);
                }
                tidegate_proxy_free(null_mut());
                host.attempts.clear();
            }
            Op::NewFlow {
                app,
                destination,
                protocol,
                class,
                null_out,
                tick,
            } => {
                let now = clock.tick(tick);
                let proxy = handle(host.proxy, false);
                let mut out = Out::<TidegateAdmission>::new(null_out);
                let s = tidegate_proxy_on_new_flow(
                    proxy,
                    now,
                    u64::from(app % 6),
                    u64::from(destination % 6),
                    protocol % 4,
                    class % 5,
                    out.ptr(),
                );
                expect(s, proxy.is_null() || null_out, &[S::InvalidArgument]);
                if s == S::InvalidArgument {
                    assert!(
                        protocol % 4 > 1 || class % 5 > 2,
                        "TCP and UDP are known protocols, and the three classes known classes"
                    );
                }
                if let Some(admission) = out.after(s) {
                    let paced = admission.reject_reason == TidegateRejectReason::Paced;
                    assert_eq!(
                        paced,
                        admission.retry_at_us > now,
                        "a paced refusal, and only it, says when to ask again"
                    );
                    if admission.decision != TidegateAdmissionDecision::Rejected {
                        host.flows.push(admission.flow);
                    }
                }
            }
            Op::FlowCall {
                call,
                flow,
                bytes,
                errno,
                what,
                null_out,
                tick,
            } => {
                let now = clock.tick(tick);
                let proxy = handle(host.proxy, false);
                let flow = pick(&host.flows, &flow);
                let ids = [S::UnknownFlow, S::StaleFlow, S::FlowInvalidState];
                let system = [ids[0], ids[1], ids[2], S::RaceRunning];
                let null_given = proxy.is_null();
                match call % 9 {
                    0 => {
                        let s = tidegate_proxy_on_connecting(proxy, now, flow);
                        expect(s, null_given, &system);
                    }
                    1 => {
                        let s = tidegate_proxy_on_connected(proxy, now, flow);
                        expect(s, null_given, &system);
                    }
                    2 => {
                        let mut out = Out::<TidegateFlowOutcome>::new(null_out);
                        let s =
                            tidegate_proxy_on_connect_failed(proxy, now, flow, errno, out.ptr());
                        out.after(expect(s, null_given || null_out, &system));
                    }
                    3 => {
                        let mut out = Out::<TidegateFlowOutcome>::new(null_out);
                        let s = tidegate_proxy_on_closed(proxy, now, flow, out.ptr());
                        out.after(expect(s, null_given || null_out, &ids));
                    }
                    4 => {
                        // Any step, known or not, and any count: a read the pending counters
                        // cannot hold and an unknown step are INVALID_ARGUMENT, changing nothing.
                        let what = what % 6;
                        let mut out = Out::<bool>::new(null_out);
                        let s = tidegate_proxy_on_bytes(proxy, now, flow, what, bytes, out.ptr());
                        let allowed = [
                            S::UnknownFlow,
                            S::StaleFlow,
                            S::FlowInvalidState,
                            S::CompletionExceedsPending,
                            S::InvalidArgument,
                        ];
                        let s = expect(s, null_given || null_out, &allowed);
                        if what > 3 && !null_given && !null_out {
                            assert_eq!(s, S::InvalidArgument, "unknown relay step");
                        }
                        out.after(s);
                    }
                    5 => {
                        let side = what % 3;
                        let mut out = Out::<bool>::new(null_out);
                        let s = tidegate_proxy_can_read(proxy, flow, side, out.ptr());
                        let s = expect(s, null_given || null_out, &[S::InvalidArgument]);
                        if !null_given && !null_out {
                            assert_eq!(s == S::InvalidArgument, side > 1, "unknown side");
                        }
                        out.after(s);
                    }
                    6 => {
                        let mut out = Out::<TidegateProxyFlow>::new(null_out);
                        let s = tidegate_proxy_flow(proxy, flow, out.ptr());
                        if let Some(view) = out.after(expect(s, null_given || null_out, &ids)) {
                            assert!(view.attempts_in_flight <= 16);
                        }
                    }
                    7 => {
                        let mut out = Out::<TidegateProxyStats>::new(null_out);
                        let s = tidegate_proxy_stats(proxy, out.ptr());
                        if let Some(stats) = out.after(expect(s, null_given || null_out, &[])) {
                            let flows = stats.flows;
                            assert!(flows.top_apps_len as usize <= flows.top_apps.len());
                            assert!(stats.attempts_in_flight <= stats.attempt_limit.max(1) * 2);
                            // Every listed app's state agrees with the list, and at most the
                            // apps the stats count as paused are paused.
                            let mut paused = 0;
                            for entry in &flows.top_apps[..flows.top_apps_len as usize] {
                                let mut state = Out::<TidegateAppState>::new(false);
                                let s = tidegate_proxy_app_state(proxy, entry.app, state.ptr());
                                if let Some(state) = state.after(expect(s, false, &[])) {
                                    assert_eq!(state.open_flows, entry.flows);
                                    paused += u32::from(state.reads_paused);
                                }
                            }
                            assert!(paused <= flows.apps_reads_paused);
                        }
                        let mut out = Out::<u64>::new(null_out);
                        let s = tidegate_proxy_poll_timeout(proxy, out.ptr());
                        out.after(expect(s, null_given || null_out, &[]));
                    }
                    _ => {
                        let s = tidegate_proxy_handle_timeout(proxy, now);
                        expect(s, null_given, &[]);
                    }
                }
            }
            Op::ProxyPoll { capacity, null_out } => {
                let proxy = handle(host.proxy, false);
                let capacity = usize::from(capacity % 6);
                let mut buf: Vec<MaybeUninit<TidegateProxyEvent>> =
                    (0..capacity).map(|_| MaybeUninit::uninit()).collect();
                let mut count = Out::<usize>::new(null_out);
                let s = tidegate_proxy_poll_events(
                    proxy,
                    buf.as_mut_ptr().cast(),
                    capacity,
                    count.ptr(),
                );
                if let Some(count) = count.after(expect(s, proxy.is_null() || null_out, &[])) {
                    assert!(count <= capacity);
                    for event in &buf[..count] {
                        // The first `count` events were written (the enclosing SAFETY covers it).
                        let event = event.assume_init();
                        match event.kind {
                            TidegateProxyEventKind::StartAttempt => {
                                assert!(event.attempt < 16);
                                host.attempts.push((event.flow, event.attempt));
                            }
                            TidegateProxyEventKind::CancelAttempt => {
                                let key = (event.flow, event.attempt);
                                host.attempts.retain(|a| *a != key);
                            }
                            _ => {}
                        }
                    }
                }
            }
            Op::BudgetCall { call, value, tick } => {
                let now = clock.tick(tick);
                let proxy = handle(host.proxy, call >= 200);
                let null_given = proxy.is_null();
                let refusals = [S::NoBudgetAttempts, S::NoBudgetConnections];
                match call % 5 {
                    0 => {
                        let s = tidegate_proxy_try_open_connection(proxy, now);
                        expect(s, null_given, &refusals);
                    }
                    1 => {
                        let s = tidegate_proxy_on_connection_closed(proxy, now);
                        expect(s, null_given, &[S::BudgetNoOpenConnection]);
                    }
                    2 => {
                        let s = tidegate_proxy_on_resource_error(proxy, now);
                        expect(s, null_given, &[]);
                    }
                    3 => {
                        let s = tidegate_proxy_set_fd_limit(proxy, value);
                        let s = expect(s, null_given, &[S::ConfigBudgetZeroLimit]);
                        if !null_given {
                            assert_eq!(s != S::Ok, value == 0, "only 0 is refused");
                        }
                    }
                    _ => {
                        let s = tidegate_proxy_set_max_connecting(proxy, value as u32);
                        expect(s, null_given, &[]);
                    }
                }
            }
            Op::Resolved {
                flow,
                family,
                addresses,
                null_addresses,
                tick,
            } => {
                let now = clock.tick(tick);
                let proxy = handle(host.proxy, false);
                let flow = pick(&host.flows, &flow);
                let addresses: Vec<TidegateSocketAddress> = addresses
                    .iter()
                    .take(20)
                    .map(|&(family, host, port, scope)| {
                        let mut ip = [0u8; 16];
                        ip[0] = 0x20;
                        ip[15] = host;
                        TidegateSocketAddress {
                            ip,
                            port,
                            family: family % 8,
                            reserved: 0,
                            scope_id: u32::from(scope),
                        }
                    })
                    .collect();
                let (ptr, count) = if null_addresses {
                    (null(), addresses.len())
                } else {
                    (addresses.as_ptr(), addresses.len())
                };
                let mut added = Out::<usize>::new(false);
                let s = tidegate_proxy_on_resolved(
                    proxy,
                    now,
                    flow,
                    family % 8,
                    ptr,
                    count,
                    added.ptr(),
                );
                let null_given = proxy.is_null() || (ptr.is_null() && count > 0);
                let allowed = [
                    S::UnknownFlow,
                    S::StaleFlow,
                    S::FlowInvalidState,
                    S::NoRaceSlot,
                    S::InvalidArgument,
                    S::RaceFinished,
                    S::AddressFamilyMismatch,
                ];
                if let Some(added) = added.after(expect(s, null_given, &allowed)) {
                    assert!(added <= count);
                }
            }
            Op::RaceCall {
                call,
                flow,
                attempt,
                errno,
                family,
                tick,
            } => {
                let now = clock.tick(tick);
                let proxy = handle(host.proxy, false);
                let null_given = proxy.is_null();
                // Mostly an attempt the engine started; else any flow and index.
                let (flow, index) = match attempt {
                    Id::Issued(i) if !host.attempts.is_empty() => {
                        host.attempts[usize::from(i) % host.attempts.len()]
                    }
                    Id::Issued(i) => (pick(&host.flows, &flow), u32::from(i % 24)),
                    Id::Forged(raw) => (pick(&host.flows, &flow), raw as u32),
                };
                let resolve = [
                    S::UnknownFlow,
                    S::StaleFlow,
                    S::FlowInvalidState,
                    S::NoRaceSlot,
                    S::InvalidArgument,
                    S::RaceFinished,
                ];
                let attempts = [
                    S::UnknownFlow,
                    S::StaleFlow,
                    S::NoRace,
                    S::UnknownAttempt,
                    S::AttemptNotInFlight,
                ];
                match call % 4 {
                    0 => {
                        let s = tidegate_proxy_on_resolution_failed(proxy, now, flow, family % 8);
                        expect(s, null_given, &resolve);
                    }
                    1 => {
                        let s = tidegate_proxy_on_resolution_done(proxy, now, flow);
                        expect(s, null_given, &resolve);
                    }
                    2 => {
                        let s = tidegate_proxy_on_attempt_connected(proxy, now, flow, index);
                        expect(s, null_given, &attempts);
                    }
                    _ => {
                        let s = tidegate_proxy_on_attempt_failed(proxy, now, flow, index, errno);
                        expect(s, null_given, &attempts);
                    }
                }
            }
            Op::FlowKey { data, len_extra } => {
                let (ptr, len) = match &data {
                    Some(bytes) => (bytes.as_ptr(), bytes.len()),
                    None => (null(), usize::from(len_extra % 2)),
                };
                let mut out = Out::<u64>::new(false);
                let s = tidegate_flow_key(ptr, len, out.ptr());
                out.after(expect(s, ptr.is_null() && len > 0, &[]));
            }
            Op::LifecycleNew {
                deadline_us,
                capacity,
                in_flight,
            } => {
                // The phase deadlines vary with the housekeeping one: 0 is refused for each.
                let config = TidegateLifecycleConfig {
                    housekeeping_deadline_us: deadline_us,
                    task_capacity: capacity,
                    tasks_in_flight_max: u32::from(in_flight),
                    start_deadline_us: deadline_us.rotate_left(7),
                    teardown_deadline_us: deadline_us.rotate_left(13),
                    persist_deadline_us: deadline_us.rotate_left(29),
                    path_debounce_us: deadline_us.rotate_left(3),
                    restart_deadline_us: deadline_us.rotate_left(37),
                    restart_backoff_us: deadline_us.rotate_left(41),
                    restart_backoff_max_us: deadline_us.rotate_left(43),
                    wake_restart_after_us: deadline_us.rotate_left(47),
                    restart_attempts_max: u32::from(in_flight % 8),
                    reserved: 0,
                };
                let mut footprint = Out::<usize>::new(false);
                let s = tidegate_lifecycle_footprint(&config, footprint.ptr(), &mut 0);
                let allowed = [
                    S::ConfigTaskCapacityTooLarge,
                    S::ConfigZeroCapacity,
                    S::ConfigZeroDuration,
                    S::ConfigRestart,
                ];
                let Some(bytes) = footprint.after(expect(s, false, &allowed)) else {
                    return;
                };
                if bytes > MAX_FOOTPRINT {
                    return;
                }
                let mut out = Out::<*mut TidegateLifecycle>::new(false);
                let s = tidegate_lifecycle_new(&config, out.ptr());
                if let Some(lifecycle) = out.after(expect(s, false, &[S::OutOfMemory])) {
                    if let Some(old) = host.lifecycle.replace(lifecycle) {
                        tidegate_lifecycle_free(old);
                    }
                    host.generations.clear();
                    host.tasks.clear();
                }
            }
            Op::LifecycleFree => {
                if let Some(old) = host.lifecycle.take() {
                    tidegate_lifecycle_free(old);
                }
                tidegate_lifecycle_free(null_mut());
            }
            Op::LifecycleCall {
                call,
                generation,
                task,
                code,
                null_out,
                tick,
            } => {
                let now = clock.tick(tick);
                let lifecycle = handle(host.lifecycle, false);
                let generation = pick(&host.generations, &generation);
                let task = pick(&host.tasks, &task);
                let null_given = lifecycle.is_null();
                let report = [
                    S::ReportStaleGeneration,
                    S::ReportUnknownGeneration,
                    S::ReportUnexpected,
                ];
                let task_report = [
                    S::ReportStaleGeneration,
                    S::ReportUnknownGeneration,
                    S::ReportUnexpected,
                    S::ReportUnknownTask,
                    S::ReportTaskAlreadyEnded,
                    S::ReportTaskNotRunning,
                    S::ReportTaskCarriedOver,
                ];
                let stop = [S::LifecycleNotActive, S::LifecycleAlreadyStopping];
                let restart_report = [
                    S::ReportStaleGeneration,
                    S::ReportUnknownGeneration,
                    S::ReportStaleRestart,
                    S::ReportUnknownRestart,
                ];
                match call % 15 {
                    0 => {
                        let s = tidegate_lifecycle_on_tunnel_started(lifecycle, now, generation);
                        expect(s, null_given, &report);
                    }
                    1 => {
                        let mut out = Out::<TidegateStopOutcome>::new(null_out);
                        let s = tidegate_lifecycle_on_stop(lifecycle, now, out.ptr());
                        out.after(expect(s, null_given || null_out, &stop));
                    }
                    2 => {
                        expect(
                            tidegate_lifecycle_on_cancel(lifecycle, now, code),
                            null_given,
                            &stop,
                        );
                    }
                    3 => {
                        let s = tidegate_lifecycle_on_torn_down(lifecycle, now, generation);
                        expect(s, null_given, &report);
                    }
                    4 => {
                        let s = tidegate_lifecycle_on_task_done(lifecycle, now, generation, task);
                        expect(s, null_given, &task_report);
                    }
                    5 => {
                        let s = tidegate_lifecycle_on_task_failed(lifecycle, now, generation, task);
                        expect(s, null_given, &task_report);
                    }
                    6 => {
                        let s = tidegate_lifecycle_on_journal_persisted(lifecycle, now, generation);
                        expect(s, null_given, &report);
                    }
                    7 => {
                        for _ in 0..64 {
                            let mut out = Out::<TidegateLifecycleEffect>::new(null_out);
                            let s = tidegate_lifecycle_poll_effect(lifecycle, now, out.ptr());
                            let Some(effect) = out.after(expect(s, null_given || null_out, &[]))
                            else {
                                break;
                            };
                            if effect.kind == TidegateLifecycleEffectKind::None {
                                break;
                            }
                            if effect.kind == TidegateLifecycleEffectKind::RunTask {
                                host.tasks.push(effect.task_id);
                            }
                            if effect.kind == TidegateLifecycleEffectKind::RestartTunnel {
                                // Restart ids share the pool of ids the fuzzer reports.
                                host.tasks.push(effect.restart_id);
                                assert!(effect.restart_attempt >= 1);
                            }
                            assert!(usize::from(effect.payload_len) <= TIDEGATE_TASK_PAYLOAD_MAX);
                            host.generations.push(effect.generation);
                        }
                    }
                    8 => {
                        let mut out = Out::<u64>::new(null_out);
                        let s = tidegate_lifecycle_poll_timeout(lifecycle, out.ptr());
                        out.after(expect(s, null_given || null_out, &[]));
                        expect(
                            tidegate_lifecycle_handle_timeout(lifecycle, now),
                            null_given,
                            &[],
                        );
                    }
                    9 => {
                        let mut state = Out::<TidegateLifecycleState>::new(null_out);
                        let mut generation = Out::<u64>::new(false);
                        let s = tidegate_lifecycle_state(lifecycle, state.ptr(), generation.ptr());
                        expect(s, null_given || null_out, &[]);
                        state.after(s);
                        generation.after(s);
                    }
                    11 => {
                        let mut out = Out::<bool>::new(null_out);
                        let path = u64::from(code % 4);
                        let s = tidegate_lifecycle_on_path_change(lifecycle, now, path, out.ptr());
                        out.after(expect(s, null_given || null_out, &[]));
                    }
                    12 => {
                        let mut out = Out::<bool>::new(null_out);
                        let slept = u64::from(code) * 1_000;
                        let s = tidegate_lifecycle_on_wake(lifecycle, now, slept, out.ptr());
                        out.after(expect(s, null_given || null_out, &[]));
                    }
                    13 => {
                        let s =
                            tidegate_lifecycle_on_restart_done(lifecycle, now, generation, task);
                        expect(s, null_given, &restart_report);
                    }
                    14 => {
                        let s =
                            tidegate_lifecycle_on_restart_failed(lifecycle, now, generation, task);
                        expect(s, null_given, &restart_report);
                    }
                    _ => {
                        let mut out = Out::<TidegateLifecycleStats>::new(null_out);
                        let s = tidegate_lifecycle_stats(lifecycle, out.ptr());
                        out.after(expect(s, null_given || null_out, &[]));
                    }
                }
            }
            Op::Register {
                kind,
                payload,
                null_out,
                tick,
            } => {
                let now = clock.tick(tick);
                let lifecycle = handle(host.lifecycle, false);
                let mut storage = Vec::new();
                let (data, len) = packet_of(&payload, TIDEGATE_TASK_PAYLOAD_MAX, &mut storage);
                let null_given = lifecycle.is_null() || null_out || (data.is_null() && len > 0);
                let allowed = [
                    S::LifecycleNotActive,
                    S::LifecycleHousekeepingOver,
                    S::TaskQueueFull,
                    S::TaskPayloadTooLong,
                ];
                let mut out = Out::<u64>::new(null_out);
                let s =
                    tidegate_lifecycle_register_task(lifecycle, now, kind, data, len, out.ptr());
                if let Some(id) = out.after(expect(s, null_given, &allowed)) {
                    assert!(len <= TIDEGATE_TASK_PAYLOAD_MAX);
                    host.tasks.push(id);
                }
            }
            Op::Start {
                journal,
                use_saved,
                null_out,
                tick,
            } => {
                let now = clock.tick(tick);
                let lifecycle = handle(host.lifecycle, false);
                let journal = if use_saved {
                    Some(host.journal.clone())
                } else {
                    journal
                };
                let (data, len) = match &journal {
                    Some(bytes) => (bytes.as_ptr(), bytes.len()),
                    None => (null(), 0),
                };
                let allowed: Vec<S> = (60..=83).map(status).collect();
                let mut out = Out::<u64>::new(null_out);
                let s = tidegate_lifecycle_on_start(lifecycle, now, data, len, out.ptr());
                if let Some(generation) =
                    out.after(expect(s, lifecycle.is_null() || null_out, &allowed))
                {
                    host.generations.push(generation);
                }
            }
            Op::WriteJournal { short, null_buf } => {
                let lifecycle = handle(host.lifecycle, false);
                let mut len = Out::<usize>::new(false);
                let s = tidegate_lifecycle_journal_len(lifecycle, len.ptr());
                let want = len.after(expect(s, lifecycle.is_null(), &[S::JournalNone]));
                let size = want.unwrap_or(40).saturating_sub(usize::from(short % 3));
                let mut buf = vec![SENTINEL; size];
                let ptr = if null_buf {
                    null_mut()
                } else {
                    buf.as_mut_ptr()
                };
                let mut written = Out::<usize>::new(false);
                let s = tidegate_lifecycle_write_journal(lifecycle, ptr, size, written.ptr());
                let null_given = lifecycle.is_null() || (null_buf && size > 0);
                expect(s, null_given, &[S::JournalNone, S::BufferTooSmall]);
                if s == S::BufferTooSmall {
                    // The one out-parameter written on failure: the size required.
                    // SAFETY: written by the call, as its documentation says.
                    let required = written.slot.assume_init();
                    assert_eq!(Some(required), want, "BUFFER_TOO_SMALL gives the size");
                    assert!(buf.iter().all(|&b| b == SENTINEL), "buffer untouched");
                } else {
                    match written.after(s) {
                        Some(n) => {
                            assert_eq!(Some(n), want);
                            host.journal = buf[..n].to_vec();
                        }
                        None => assert!(buf.iter().all(|&b| b == SENTINEL), "buffer untouched"),
                    }
                }
            }
            op @ (Op::MemoryNew { .. }
            | Op::MemoryFree
            | Op::MemoryCall { .. }
            | Op::Pressure { .. }) => run_memory(host, clock, op),
        }
    }
}

/// The memory governor's operations.
unsafe fn run_memory(host: &mut Host, clock: &mut HostClock, op: Op) {
    unsafe {
        match op {
            Op::MemoryNew {
                preset,
                raw,
                null_out,
            } => {
                let mut c = if preset % 2 == 0 {
                    tidegate_memory_config_packet_tunnel()
                } else {
                    tidegate_memory_config_app_proxy()
                };
                if let Some((limit, calm, [elevated, critical, hysteresis, slots])) = raw {
                    c = TidegateMemoryConfig {
                        limit_bytes: limit,
                        calm_us: calm,
                        elevated_permille: elevated,
                        critical_permille: critical,
                        hysteresis_permille: hysteresis,
                        max_reservations: slots % 80_000,
                    };
                }
                let configs = [
                    S::ConfigMemoryZeroLimit,
                    S::ConfigMemoryThresholds,
                    S::ConfigMemoryHysteresis,
                    S::ConfigMemoryReservations,
                ];
                let mut footprint = Out::<usize>::new(false);
                let mut align = 0;
                let s = tidegate_memory_footprint(&c, footprint.ptr(), &mut align);
                let Some(bytes) = footprint.after(expect(s, false, &configs)) else {
                    return;
                };
                if bytes > MAX_FOOTPRINT {
                    return;
                }
                let mut out = Out::<*mut TidegateMemory>::new(null_out);
                let s = tidegate_memory_new(&c, out.ptr());
                if let Some(memory) = out.after(expect(s, null_out, &[S::OutOfMemory])) {
                    if let Some(old) = host.memory.replace(memory) {
                        tidegate_memory_free(old);
                    }
                    host.reservations.clear();
                    host.max_reservations = c.max_reservations as usize;
                }
            }
            Op::MemoryFree => {
                if let Some(memory) = host.memory.take() {
                    tidegate_memory_free(memory);
                }
                tidegate_memory_free(null_mut());
                host.reservations.clear();
            }
            Op::MemoryCall {
                call,
                value,
                reservation,
                null_out,
                tick,
            } => {
                let now = clock.tick(tick);
                let memory = handle(host.memory, call >= 250);
                let null_given = memory.is_null();
                match call % 8 {
                    0 => {
                        let s = tidegate_memory_on_headroom(memory, now, value);
                        expect(s, null_given, &[]);
                    }
                    1 => {
                        let s = tidegate_memory_on_footprint(memory, now, value);
                        expect(s, null_given, &[]);
                    }
                    2 => {
                        let full = host.reservations.len() == host.max_reservations;
                        let mut out = Out::<u64>::new(null_out);
                        let s = tidegate_memory_reserve(memory, now, value, out.ptr());
                        let refusals =
                            [S::MemoryPressure, S::NoReservationSlot, S::InvalidArgument];
                        let s = expect(s, null_given || null_out, &refusals);
                        if let Some(id) = out.after(s) {
                            assert_ne!(id, 0, "a reservation id is never 0");
                            assert!(!host.reservations.contains(&id), "id {id} issued twice");
                            host.reservations.push(id);
                        }
                        if !null_given && !null_out {
                            assert_eq!(
                                s == S::InvalidArgument,
                                value == 0,
                                "only 0 bytes is invalid"
                            );
                            // A full table refuses, unless pressure refused first.
                            if full {
                                assert!(matches!(s, S::NoReservationSlot | S::MemoryPressure));
                            } else {
                                assert_ne!(s, S::NoReservationSlot, "a slot was free");
                            }
                        }
                    }
                    3 => {
                        let id = pick(&host.reservations, &reservation);
                        let s = tidegate_memory_release(memory, now, id);
                        let s = expect(s, null_given, &[S::UnknownReservation]);
                        if !null_given {
                            let outstanding = host.reservations.contains(&id);
                            assert_eq!(s == S::Ok, outstanding, "release of {id}");
                            host.reservations.retain(|&r| r != id);
                        }
                    }
                    4 => {
                        let mut level = Out::<TidegatePressure>::new(null_out);
                        let mut changed = Out::<bool>::new(null_out);
                        let s = tidegate_memory_poll_pressure(memory, level.ptr(), changed.ptr());
                        let s = expect(s, null_given || null_out, &[]);
                        changed.after(s);
                        if let Some(level) = level.after(s) {
                            apply_pressure(host, now, level as u32, false);
                        }
                    }
                    5 => {
                        let mut out = Out::<u64>::new(null_out);
                        let s = tidegate_memory_poll_timeout(memory, out.ptr());
                        out.after(expect(s, null_given || null_out, &[]));
                    }
                    6 => {
                        let s = tidegate_memory_handle_timeout(memory, now);
                        expect(s, null_given, &[]);
                    }
                    _ => {
                        let mut out = Out::<TidegateMemoryStats>::new(null_out);
                        let s = tidegate_memory_stats(memory, out.ptr());
                        if let Some(stats) = out.after(expect(s, null_given || null_out, &[])) {
                            assert_eq!(stats.reservations as usize, host.reservations.len());
                            assert!(stats.unmeasured_bytes <= stats.reserved_bytes);
                            assert!(stats.peak_projected_bytes >= stats.projected_bytes);
                        }
                    }
                }
            }
            Op::Pressure {
                level,
                null_out,
                tick,
            } => {
                let now = clock.tick(tick);
                // Mostly a known level; now and then any integer.
                let level = if level >= 0xF000_0000 {
                    level
                } else {
                    level % 4
                };
                apply_pressure(host, now, level, null_out);
            }
            _ => unreachable!("not a memory operation"),
        }
    }
}

/// Pass pressure `level` to the tunnel and the proxy engine, and check what they apply: an
/// unknown level is refused and changes nothing, a known one is in force afterwards with
/// limits never above the configured ones.
unsafe fn apply_pressure(host: &mut Host, now: u64, level: u32, null_out: bool) {
    let known = level <= TidegatePressure::Critical as u32;
    unsafe {
        let tunnel = handle(host.tunnel, false);
        let before = tunnel_limits(tunnel);
        let mut resume = Out::<bool>::new(null_out);
        let s = tidegate_tunnel_on_pressure(tunnel, now, level, resume.ptr());
        let s = expect(s, tunnel.is_null() || null_out, &[S::InvalidArgument]);
        resume.after(s);
        if let (Some(before), Some(after)) = (before, tunnel_limits(tunnel)) {
            if s == S::Ok {
                assert!(known);
                assert_eq!(after.pressure as u32, level);
            } else {
                assert_eq!(before, after, "a refused level changed the limits");
            }
        }

        let proxy = handle(host.proxy, false);
        let s = tidegate_proxy_on_pressure(proxy, now, level);
        let s = expect(s, proxy.is_null(), &[S::InvalidArgument]);
        if !proxy.is_null() {
            assert_eq!(s == S::Ok, known, "level {level}");
            let mut stats = Out::<TidegateProxyStats>::new(false);
            let s = tidegate_proxy_stats(proxy, stats.ptr());
            if let Some(stats) = stats.after(expect(s, false, &[])) {
                if known {
                    assert_eq!(stats.pressure as u32, level);
                }
                assert!(stats.limits.max_flows >= 1);
            }
        }
    }
}

/// The tunnel's limits in force, if there is a tunnel.
unsafe fn tunnel_limits(tunnel: *mut TidegateTunnel) -> Option<TidegateTunnelLimits> {
    if tunnel.is_null() {
        return None;
    }
    let mut out = Out::<TidegateTunnelLimits>::new(false);
    let s = unsafe { tidegate_tunnel_limits(tunnel, out.ptr()) };
    out.after(expect(s, false, &[]))
}

/// The handle, or NULL when there is none or the operation asks for NULL.
fn handle<T>(handle: Option<*mut T>, null: bool) -> *mut T {
    match handle {
        Some(h) if !null => h,
        _ => null_mut(),
    }
}

fn status(code: u32) -> S {
    S::ALL
        .iter()
        .copied()
        .find(|s| *s as u32 == code)
        .unwrap_or(S::Ok)
}

unsafe fn poll(
    host: &mut Host,
    now: u64,
    outbound: bool,
    capacity: u8,
    null_views: bool,
    null_count: bool,
) {
    let tunnel = handle(host.tunnel, false);
    let capacity = usize::from(capacity % 6);
    let mut views = vec![
        TidegatePacketView {
            data: null(),
            len: 0
        };
        capacity
    ];
    let ptr = if null_views {
        null_mut()
    } else {
        views.as_mut_ptr()
    };
    let mut count = Out::<usize>::new(null_count);
    let s = unsafe {
        if outbound {
            tidegate_tunnel_poll_outbound(tunnel, now, ptr, capacity, count.ptr())
        } else {
            tidegate_tunnel_poll_inbound(tunnel, now, ptr, capacity, count.ptr())
        }
    };
    let null_given = tunnel.is_null() || null_count || (null_views && capacity > 0);
    expect(s, null_given, &[]);
    let Some(count) = count.after(s) else {
        return;
    };
    assert!(count <= capacity);
    let held = if outbound {
        &mut host.outbound_views
    } else {
        &mut host.inbound_views
    };
    for view in &views[..count] {
        assert!(view.len > 0 && view.len <= host.max_packet_len);
        // SAFETY: a view just handed out is valid for `len` bytes.
        let copy = unsafe { std::slice::from_raw_parts(view.data, view.len) }.to_vec();
        held.push_back((*view, copy));
    }
}

unsafe fn free_tunnel(host: &mut Host) {
    if let Some(tunnel) = host.tunnel.take() {
        unsafe { tidegate_tunnel_free(tunnel) };
    }
    unsafe { tidegate_tunnel_free(null_mut()) };
    host.outbound_views.clear();
    host.inbound_views.clear();
}

unsafe fn free_all(host: &mut Host) {
    unsafe {
        free_tunnel(host);
        if let Some(proxy) = host.proxy.take() {
            tidegate_proxy_free(proxy);
        }
        if let Some(lifecycle) = host.lifecycle.take() {
            tidegate_lifecycle_free(lifecycle);
        }
        if let Some(memory) = host.memory.take() {
            tidegate_memory_free(memory);
        }
    }
}
