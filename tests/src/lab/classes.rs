//! Flow class scenarios (seeds 000, 004): a burst of DNS queries from one app, and a storm of
//! UDP sessions, in an app proxy that relays every flow.
//!
//! Both run in 1 ms steps. The naive host does what a first proxy does: it accepts every flow
//! the system hands it, gives each a 64 KiB relay buffer (the largest datagram) and keeps a flow
//! until its app closes it or, for UDP, until the general 10-minute idle timeout. Flows past
//! Network framework's 512 hang in "waiting". The tidegate host asks a default
//! [`ProxyEngine`] about every flow, declares each flow's class, closes what the engine asks it
//! to close, and holds only the bytes it has read and not yet written (the engine's pending
//! count), as the other tidegate hosts of the lab do.

use tidegate_core::{
    Admission, AppId, DEFAULT_FLOW_SLOTS, DEFAULT_RACE_SLOTS, DestinationKey, FlowClass, FlowId,
    FlowInfo, FlowPolicy, FlowSlot, Instant, Protocol, ProxyConfig, ProxyEngine, ProxyEvent,
    RaceSlot, RejectReason, proxy_engine_footprint,
};

use super::{APP_PROXY_LIMIT, Host, Row, percent};

/// Network framework's flows per process.
const SYSTEM_FLOW_LIMIT: u64 = 512;
/// What a naive relay allocates per flow: one receive of the largest datagram.
const RELAY_BUFFER: u64 = 64 * 1024;
const STEP_US: u64 = 1_000;

type Engine = ProxyEngine<Vec<FlowSlot>, Vec<RaceSlot>>;

fn engine() -> Engine {
    ProxyEngine::new(
        Instant::ZERO,
        vec![FlowSlot::EMPTY; DEFAULT_FLOW_SLOTS],
        vec![RaceSlot::EMPTY; DEFAULT_RACE_SLOTS],
        ProxyConfig::DEFAULT,
    )
    .expect("the default configuration fits the default slots")
}

/// The most a tidegate relay of this kind can hold: the engine, the global high watermark of
/// pending bytes, and one read of at most `read` bytes by each of `flows` open flows issued
/// before the watermark was crossed.
fn ceiling(flows: u64, read: u64) -> u64 {
    proxy_engine_footprint(DEFAULT_FLOW_SLOTS, DEFAULT_RACE_SLOTS) as u64
        + FlowPolicy::DEFAULT.global_high_watermark
        + flows * read
}

/// What the tidegate host holds now: the engine and the bytes pending.
fn held(engine: &Engine) -> u64 {
    let stats = engine.stats().flows;
    proxy_engine_footprint(DEFAULT_FLOW_SLOTS, DEFAULT_RACE_SLOTS) as u64
        + stats.bytes_pending_inbound
        + stats.bytes_pending_outbound
}

/// Drain the engine: every close it asks for is done at once (the buffer is freed). Returns
/// the flows closed.
fn drain(engine: &mut Engine, now: Instant, open: &mut Vec<(FlowId, u64)>) -> Vec<FlowId> {
    let mut closed = Vec::new();
    while let Some(event) = engine.poll_event() {
        if let ProxyEvent::CloseFlow { id, .. } = event {
            engine.on_closed(now, id).expect("a flow the engine named");
            open.retain(|&(flow, _)| flow != id);
            closed.push(id);
        }
    }
    closed
}

/// The pair of hosts for the DNS burst.
pub(super) fn dns_burst() -> [Row; 2] {
    [dns_naive(), dns_tidegate()]
}

const DNS_ID: &str = "dns-burst";
const DNS_SCENARIO: &str = "one app sends 2,000 DNS queries in 1 s beside 5 apps resolving";
/// The bursting app sends two queries a millisecond for its first second.
const DNS_BURST_STEPS: u64 = 1_000;
/// Five other apps each send one query every 100 ms.
const DNS_QUIET_APPS: u64 = 5;
const DNS_QUIET_EVERY_STEPS: u64 = 100;
/// The resolver answers each query 200 ms after it is sent; the app then closes its flow.
const DNS_ANSWER_STEPS: u64 = 200;
const DNS_RUN_STEPS: u64 = 3_000;
const DNS_BURST_APP: AppId = AppId(1);
const DNS_ANSWER_BYTES: u64 = 120;

/// Queries each step: `(app, query number)`, the burst first.
fn dns_queries(step: u64) -> Vec<(AppId, u64)> {
    let mut out = Vec::new();
    if step < DNS_BURST_STEPS {
        out.push((DNS_BURST_APP, 2 * step));
        out.push((DNS_BURST_APP, 2 * step + 1));
    }
    for app in 0..DNS_QUIET_APPS {
        // Staggered so the apps do not all ask in the same millisecond.
        // The last queries are asked early enough to be answered within the run.
        if step % DNS_QUIET_EVERY_STEPS == app * 17 && step + DNS_ANSWER_STEPS < DNS_RUN_STEPS {
            out.push((AppId(10 + app), step));
        }
    }
    out
}

fn dns_naive() -> Row {
    let mut row = Row::new(DNS_ID, DNS_SCENARIO, "000, 004", Host::Naive);
    row.platform_limit = Some(APP_PROXY_LIMIT);
    // Open flows and when each is answered; flows past the system limit hang.
    let mut open: Vec<(AppId, u64)> = Vec::new();
    let (mut quiet_asked, mut quiet_answered, mut hung, mut high_water) = (0u64, 0u64, 0u64, 0u64);
    for step in 0..DNS_RUN_STEPS {
        for (app, _) in dns_queries(step) {
            if app != DNS_BURST_APP {
                quiet_asked += 1;
            }
            if open.len() as u64 >= SYSTEM_FLOW_LIMIT {
                hung += 1;
                continue;
            }
            open.push((app, step + DNS_ANSWER_STEPS));
        }
        high_water = high_water.max(open.len() as u64 * RELAY_BUFFER);
        if high_water > APP_PROXY_LIMIT {
            row.killed_at_seconds = Some(step as f64 * STEP_US as f64 / 1e6);
            break;
        }
        open.retain(|&(app, answered_at)| {
            let done = answered_at <= step;
            if done && app != DNS_BURST_APP {
                quiet_answered += 1;
            }
            !done
        });
    }
    row.memory_high_water = Some(high_water);
    row.hung_connections = Some(hung);
    row.admitted_percent = Some(percent(quiet_answered, quiet_asked));
    row.outcome = match row.killed_at_seconds {
        Some(at) => format!(
            "killed at {at:.2} s with {} queries in flight, 64 KiB each",
            high_water / RELAY_BUFFER
        ),
        None => format!("{hung} queries hung past the flow limit"),
    };
    row
}

fn dns_tidegate() -> Row {
    let mut engine = engine();
    let policy = FlowPolicy::DEFAULT;
    let mut open: Vec<(FlowId, u64)> = Vec::new();
    let mut owner: Vec<(FlowId, AppId)> = Vec::new();
    let (mut quiet_asked, mut quiet_answered) = (0u64, 0u64);
    let (mut burst_answered, mut refused, mut high_water, mut in_flight_high) = (0, 0, 0, 0);
    for step in 0..DNS_RUN_STEPS {
        let now = Instant::from_micros((step + 1) * STEP_US);
        for (app, query) in dns_queries(step) {
            if app != DNS_BURST_APP {
                quiet_asked += 1;
            }
            let info = FlowInfo {
                app,
                destination: DestinationKey(53_000 + query % 4),
                protocol: Protocol::Udp,
                class: FlowClass::default_for(Protocol::Udp, 53),
            };
            match engine.on_new_flow(now, info) {
                Admission::Rejected(reason) => {
                    assert_eq!(
                        reason,
                        RejectReason::DnsOverLimit,
                        "only the DNS budget refuses"
                    );
                    // Refused at once: the app's resolver fails fast (or tries again later).
                    refused += 1;
                }
                answer => {
                    let id = answer.id().expect("admitted");
                    engine
                        .on_connected(now, id)
                        .expect("a UDP flow is up at once");
                    open.push((id, step + DNS_ANSWER_STEPS));
                    owner.push((id, app));
                }
            }
        }
        drain(&mut engine, now, &mut open);
        in_flight_high = in_flight_high.max(engine.stats().flows.dns_in_flight);
        // Answers: the query went out, the answer comes back and is written, the app closes.
        let answered: Vec<FlowId> = open
            .iter()
            .filter(|&&(_, at)| at <= step)
            .map(|&(id, _)| id)
            .collect();
        for &id in &answered {
            engine.on_local_read(now, id, 40).expect("open");
            engine
                .on_remote_read(now, id, DNS_ANSWER_BYTES)
                .expect("open");
        }
        high_water = high_water.max(held(&engine));
        for id in answered {
            engine.on_remote_sent(now, id, 40).expect("open");
            engine
                .on_local_written(now, id, DNS_ANSWER_BYTES)
                .expect("open");
            engine.on_closed(now, id).expect("open");
            open.retain(|&(flow, _)| flow != id);
            match owner.iter().find(|&&(flow, _)| flow == id) {
                Some(&(_, app)) if app == DNS_BURST_APP => burst_answered += 1,
                Some(_) => quiet_answered += 1,
                None => {}
            }
        }
        engine.handle_timeout(now);
        drain(&mut engine, now, &mut open);
    }
    let mut row = Row::new(DNS_ID, DNS_SCENARIO, "000, 004", Host::Tidegate);
    row.platform_limit = Some(APP_PROXY_LIMIT);
    row.ceiling = Some(ceiling(
        u64::from(policy.max_dns_in_flight),
        DNS_ANSWER_BYTES,
    ));
    row.memory_high_water = Some(high_water);
    row.hung_connections = Some(0);
    row.connects_refused = Some(refused);
    row.admitted_percent = Some(percent(quiet_answered, quiet_asked));
    row.outcome = format!(
        "burst app held to {} in flight ({burst_answered} answered, {refused} refused at once); \
         {in_flight_high} in flight at most",
        policy.max_dns_in_flight_per_app
    );
    row
}

/// The pair of hosts for the UDP session storm.
pub(super) fn udp_session_storm() -> [Row; 2] {
    [udp_naive(), udp_tidegate()]
}

const UDP_ID: &str = "udp-session-storm";
const UDP_SCENARIO: &str = "one app opens 50 UDP sessions a second beside a browser's TCP";
/// The storming app (peer-to-peer discovery, a game's server probes) opens a session every
/// 20 ms, exchanges one datagram each way and abandons it: UDP never says goodbye.
const UDP_EVERY_STEPS: u64 = 20;
/// The browser opens a TCP flow every 200 ms; each lives 20 s, busy every second.
const TCP_EVERY_STEPS: u64 = 200;
const TCP_LIFETIME_STEPS: u64 = 20_000;
/// Each busy second, each browser flow reads this much from its remote and writes it.
const TCP_READ_BYTES: u64 = 16 * 1024;
const UDP_RUN_STEPS: u64 = 120_000;
const STORM_APP: AppId = AppId(7);
const BROWSER: AppId = AppId(8);
/// The naive host closes a flow idle this long: the general 10 minutes, for UDP too.
const NAIVE_IDLE_STEPS: u64 = 600_000;

fn udp_naive() -> Row {
    let mut row = Row::new(UDP_ID, UDP_SCENARIO, "000, 004", Host::Naive);
    row.platform_limit = Some(APP_PROXY_LIMIT);
    // Open flows: (is TCP, closes at).
    let mut open: Vec<(bool, u64)> = Vec::new();
    let (mut tcp_asked, mut tcp_admitted, mut hung, mut high_water) = (0u64, 0u64, 0u64, 0u64);
    for step in 0..UDP_RUN_STEPS {
        let mut arrivals = Vec::new();
        if step % UDP_EVERY_STEPS == 0 {
            arrivals.push(false);
        }
        if step % TCP_EVERY_STEPS == 0 {
            arrivals.push(true);
        }
        for tcp in arrivals {
            tcp_asked += u64::from(tcp);
            if open.len() as u64 >= SYSTEM_FLOW_LIMIT {
                hung += 1;
                continue;
            }
            tcp_admitted += u64::from(tcp);
            let closes_at = step
                + if tcp {
                    TCP_LIFETIME_STEPS
                } else {
                    NAIVE_IDLE_STEPS
                };
            open.push((tcp, closes_at));
        }
        high_water = high_water.max(open.len() as u64 * RELAY_BUFFER);
        if high_water > APP_PROXY_LIMIT {
            row.killed_at_seconds = Some(step as f64 * STEP_US as f64 / 1e6);
            break;
        }
        open.retain(|&(_, closes_at)| closes_at > step);
    }
    row.memory_high_water = Some(high_water);
    row.hung_connections = Some(hung);
    row.admitted_percent = Some(percent(tcp_admitted, tcp_asked));
    let udp = open.iter().filter(|&&(tcp, _)| !tcp).count();
    row.outcome = match row.killed_at_seconds {
        Some(at) => format!("killed at {at:.2} s holding {udp} abandoned UDP sessions"),
        None => format!("{udp} abandoned UDP sessions held, {hung} flows hung"),
    };
    row
}

fn udp_tidegate() -> Row {
    let mut engine = engine();
    let policy = FlowPolicy::DEFAULT;
    // Open flows and, for TCP, when the browser closes them.
    let mut open: Vec<(FlowId, u64)> = Vec::new();
    let mut tcp_flows: Vec<FlowId> = Vec::new();
    let (mut tcp_asked, mut tcp_admitted, mut udp_refused) = (0u64, 0u64, 0u64);
    let (mut udp_closed, mut tcp_closed) = (0u64, 0u64);
    let (mut high_water, mut udp_high) = (0u64, 0u32);
    for step in 0..UDP_RUN_STEPS {
        let now = Instant::from_micros((step + 1) * STEP_US);
        if step % UDP_EVERY_STEPS == 0 {
            let info = FlowInfo {
                app: STORM_APP,
                destination: DestinationKey(100_000 + step),
                protocol: Protocol::Udp,
                class: FlowClass::default_for(Protocol::Udp, 27_015),
            };
            match engine.on_new_flow(now, info) {
                Admission::Rejected(reason) => {
                    assert_eq!(reason, RejectReason::DatagramOverLimit, "{reason:?}");
                    udp_refused += 1;
                }
                answer => {
                    let id = answer.id().expect("admitted");
                    engine
                        .on_connected(now, id)
                        .expect("a UDP flow is up at once");
                    // One datagram out, one back; then the app abandons the session.
                    engine.on_local_read(now, id, 100).expect("open");
                    engine.on_remote_read(now, id, 100).expect("open");
                    high_water = high_water.max(held(&engine));
                    engine.on_remote_sent(now, id, 100).expect("open");
                    engine.on_local_written(now, id, 100).expect("open");
                    open.push((id, u64::MAX));
                }
            }
        }
        if step % TCP_EVERY_STEPS == 0 {
            tcp_asked += 1;
            let info = FlowInfo {
                app: BROWSER,
                destination: DestinationKey(step % 40),
                protocol: Protocol::Tcp,
                class: FlowClass::default_for(Protocol::Tcp, 443),
            };
            if let Some(id) = engine.on_new_flow(now, info).id() {
                tcp_admitted += 1;
                engine.on_connected(now, id).expect("connects");
                open.push((id, step + TCP_LIFETIME_STEPS));
                tcp_flows.push(id);
            }
        }
        // The browser's flows are busy every second, and closed by the browser at their end.
        let ending: Vec<FlowId> = open
            .iter()
            .filter(|&&(_, at)| at <= step)
            .map(|&(id, _)| id)
            .collect();
        for id in ending {
            engine.on_closed(now, id).expect("open");
            open.retain(|&(flow, _)| flow != id);
        }
        if step % 1_000 == 0 {
            let busy: Vec<FlowId> = open
                .iter()
                .filter(|&&(_, until)| until != u64::MAX)
                .map(|&(id, _)| id)
                .collect();
            for &id in &busy {
                engine
                    .on_remote_read(now, id, TCP_READ_BYTES)
                    .expect("open");
            }
            high_water = high_water.max(held(&engine));
            for id in busy {
                engine
                    .on_local_written(now, id, TCP_READ_BYTES)
                    .expect("open");
            }
        }
        engine.handle_timeout(now);
        for id in drain(&mut engine, now, &mut open) {
            if tcp_flows.contains(&id) {
                tcp_closed += 1;
            } else {
                udp_closed += 1;
            }
        }
        udp_high = udp_high.max(engine.stats().flows.datagram_flows);
    }
    let mut row = Row::new(UDP_ID, UDP_SCENARIO, "000, 004", Host::Tidegate);
    row.platform_limit = Some(APP_PROXY_LIMIT);
    let browser_flows = TCP_LIFETIME_STEPS.div_ceil(TCP_EVERY_STEPS) + 1;
    row.ceiling = Some(ceiling(
        u64::from(policy.max_datagram_flows) + browser_flows,
        TCP_READ_BYTES,
    ));
    row.memory_high_water = Some(high_water);
    row.hung_connections = Some(0);
    row.connects_refused = Some(udp_refused);
    row.established_evicted = Some(tcp_closed);
    row.admitted_percent = Some(percent(tcp_admitted, tcp_asked));
    row.outcome = format!(
        "UDP held to {udp_high} sessions; {udp_closed} idled out after {} s, {udp_refused} \
         refused at once",
        policy.datagram_idle_timeout_micros / 1_000_000
    );
    row
}
