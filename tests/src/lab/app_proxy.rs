//! App proxy scenario (seed 000): an app with 32 flows (a browser with many tabs) stops reading
//! while the proxy relays downloads to it and to three other apps of 4 flows each.
//!
//! Each stalled flow stops at the per-flow watermark (256 KiB), but 32 of them would hold 8 MiB,
//! past the global watermark (6 MiB) that pauses every app's reads; and since the stalled app
//! never takes its bytes, the global watermark would never clear. The per-app watermark (2 MiB)
//! pauses the stalled app alone first. A third row runs tidegate with the app watermark turned
//! off, to show what it prevents.
//!
//! An app proxy may not drop data. What it receives from a remote connection it passes to the
//! app's flow with `writeData`, whose completion arrives once the app has taken the bytes; until
//! then the proxy holds them. The remote side is receiver-driven: a connection the proxy keeps
//! reading from keeps sending (its share of the link), one the proxy stops reading from stops
//! (its TCP window closes).

use tidegate_core::{
    Admission, AppId, DEFAULT_FLOW_SLOTS, DestinationKey, FlowClass, FlowGovernor, FlowId,
    FlowInfo, FlowPolicy, FlowSlot, Instant, Notification, Protocol, flow_governor_footprint,
};

use super::{APP_PROXY_LIMIT, Host, Row, percent, proxy_ceiling};

const ID: &str = "app-proxy-stalled-reader";
const SCENARIO: &str = "app proxy, one app stops reading";
/// One virtual tick: 1 ms.
const TICK_US: u64 = 1_000;
const TICKS: u64 = 10_000;
/// The app stops reading after 1 s.
const STALL_AT_TICK: u64 = 1_000;
/// The downstream link: 200 Mbit/s, in bytes per tick.
const LINK_BYTES_PER_TICK: u64 = 200_000_000 / 8 / 1_000;
/// The most one receive on a remote connection returns.
const MAX_RECEIVE: u64 = 64 * 1024;
/// Flows of the app that stops reading (app 0), and of each other app.
const STALLED_FLOWS: usize = 32;
const FLOWS_PER_APP: usize = 4;
const APPS: usize = 4;
const STALLED_APP: usize = 0;
const NO_APP_WATERMARK: &str = "no app watermark";

/// Every host relays the same four apps' downloads over one 200 Mbit/s link for 10 s; the first
/// app stops taking data after 1 s.
pub(super) fn stalled_reader() -> [Row; 3] {
    let without_app_watermark = FlowPolicy {
        app_high_watermark: u64::MAX,
        app_low_watermark: u64::MAX - 1,
        ..FlowPolicy::APPLE_DEFAULT
    };
    [
        run(Host::Naive, FlowPolicy::APPLE_DEFAULT, None),
        run(
            Host::Tidegate,
            without_app_watermark,
            Some(NO_APP_WATERMARK),
        ),
        run(Host::Tidegate, FlowPolicy::APPLE_DEFAULT, None),
    ]
}

/// Everything the run needs to know about one flow.
struct Flow {
    app: usize,
    id: Option<FlowId>,
    /// Bytes received from the remote and not yet taken by the app: the host holds them.
    pending: u64,
    /// Whether the host stopped receiving on the remote connection.
    paused: bool,
    /// Whether it ever did.
    ever_paused: bool,
}

fn run(host: Host, policy: FlowPolicy, variant: Option<&'static str>) -> Row {
    let mut governor = FlowGovernor::new(
        Instant::ZERO,
        vec![FlowSlot::EMPTY; DEFAULT_FLOW_SLOTS].into_boxed_slice(),
        policy,
    )
    .ok();
    let apps = std::iter::repeat_n(STALLED_APP, STALLED_FLOWS)
        .chain((1..APPS).flat_map(|app| std::iter::repeat_n(app, FLOWS_PER_APP)));
    let mut flows: Vec<Flow> = apps
        .map(|app| Flow {
            app,
            id: None,
            pending: 0,
            paused: false,
            ever_paused: false,
        })
        .collect();
    if host == Host::Tidegate {
        for (index, flow) in flows.iter_mut().enumerate() {
            let governor = governor
                .as_mut()
                .expect("the default policy fits 512 slots");
            let info = FlowInfo {
                app: AppId(flow.app as u64 + 1),
                destination: DestinationKey(index as u64),
                protocol: Protocol::Tcp,
                class: FlowClass::Stream,
            };
            let Admission::Accepted { id } = governor.on_new_flow(Instant::ZERO, info) else {
                unreachable!("an empty table admits 44 flows");
            };
            governor
                .on_connected(Instant::ZERO, id)
                .expect("a new flow connects");
            flow.id = Some(id);
        }
    }

    let mut row = Row::new(ID, SCENARIO, "000", host);
    row.variant = variant;
    row.platform_limit = Some(APP_PROXY_LIMIT);
    row.drops = Some(0); // an app proxy may not drop; neither host does
    let mut held_high_water = 0u64;
    let mut delivered_to_readers_after_stall = 0u64;
    let mut others_starved_at = None;
    for tick in 0..TICKS {
        let now = Instant::from_micros(tick * TICK_US);
        // The link's capacity is shared by the connections the host is receiving on.
        let receiving: Vec<usize> = (0..flows.len()).filter(|&i| !flows[i].paused).collect();
        for (nth, &index) in receiving.iter().enumerate() {
            let share = share_of(LINK_BYTES_PER_TICK, receiving.len(), nth).min(MAX_RECEIVE);
            let flow = &mut flows[index];
            flow.pending += share;
            if let (Some(governor), Some(id)) = (governor.as_mut(), flow.id) {
                governor
                    .on_remote_read(now, id, share)
                    .expect("the flow is open");
                // Check before issuing the next receive; a pause lasts until the resume.
                flow.paused = !governor.can_read_remote(id);
                flow.ever_paused |= flow.paused;
            }
        }
        if others_starved_at.is_none()
            && tick >= STALL_AT_TICK
            && flows.iter().all(|f| f.app == STALLED_APP || f.paused)
        {
            others_starved_at = Some(tick as f64 * TICK_US as f64 / 1e6);
        }
        let held: u64 = flows.iter().map(|f| f.pending).sum();
        held_high_water = held_high_water.max(held);
        if host == Host::Naive && held > APP_PROXY_LIMIT {
            row.killed_at_seconds = Some(tick as f64 * TICK_US as f64 / 1e6);
            break;
        }
        // writeData completions: every app but the stalled one takes all it was given.
        for flow in &mut flows {
            let reads = flow.app != STALLED_APP || tick < STALL_AT_TICK;
            if !reads || flow.pending == 0 {
                continue;
            }
            let taken = flow.pending;
            flow.pending = 0;
            if tick >= STALL_AT_TICK {
                delivered_to_readers_after_stall += taken;
            }
            if let (Some(governor), Some(id)) = (governor.as_mut(), flow.id) {
                governor
                    .on_local_written(now, id, taken)
                    .expect("the bytes were pending");
            }
        }
        if let Some(governor) = governor.as_mut() {
            while let Some(notification) = governor.poll_notification() {
                match notification {
                    Notification::ResumeReadRemote { id } => {
                        if let Some(flow) = flows.iter_mut().find(|f| f.id == Some(id)) {
                            flow.paused = false;
                        }
                    }
                    // No flow is idle for 10 minutes here, nothing is evicted, no local
                    // read is paused.
                    Notification::Close { .. } | Notification::ResumeReadLocal { .. } => {}
                }
            }
        }
    }

    let after_stall = LINK_BYTES_PER_TICK * (TICKS - STALL_AT_TICK);
    row.throughput_percent = Some(percent(delivered_to_readers_after_stall, after_stall));
    let stalled_paused = flows
        .iter()
        .filter(|f| f.paused && f.app == STALLED_APP)
        .count();
    let others = flows.iter().filter(|f| f.app != STALLED_APP).count();
    let others_never_paused = flows
        .iter()
        .filter(|f| f.app != STALLED_APP && !f.ever_paused)
        .count();
    match host {
        Host::Naive => {
            row.memory_high_water = Some(held_high_water);
            row.outcome = match row.killed_at_seconds {
                Some(at) => format!("killed at {at:.2} s (15 MiB limit)"),
                None => "survived".to_owned(),
            };
        }
        Host::Tidegate => {
            let table = flow_governor_footprint(DEFAULT_FLOW_SLOTS) as u64;
            row.memory_high_water = Some(held_high_water + table);
            row.ceiling = Some(proxy_ceiling(&policy, flows.len() as u64, MAX_RECEIVE));
            row.outcome = match others_starved_at {
                Some(at) => {
                    format!("global watermark at {at:.2} s paused all {others} others for good")
                }
                None => format!(
                    "stalled app's {stalled_paused} flows paused; \
                     {others_never_paused} of {others} others never"
                ),
            };
        }
    }
    row
}

/// The `nth` of `parts` equal shares of `total`, the remainder going to the first shares.
fn share_of(total: u64, parts: usize, nth: usize) -> u64 {
    let parts = parts as u64;
    total / parts + u64::from((nth as u64) < total % parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_to_the_link() {
        for parts in 1..20 {
            let sum: u64 = (0..parts).map(|n| share_of(25_000, parts, n)).sum();
            assert_eq!(sum, 25_000);
        }
    }
}
