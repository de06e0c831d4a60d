//! Flow flood scenario (seed 004): one app opens twice Network framework's flow limit of
//! long-lived connections through a transparent proxy, beside a well-behaved app making short
//! requests.
//!
//! Network framework allows 512 flows per process; past that a new connection does not fail, it
//! sits in "waiting" with `ENOMEM` indefinitely. A transparent proxy opens a connection for every
//! flow it handles, so its 512 are shared by every app on the machine.

use std::collections::VecDeque;

use tidegate_core::{
    Admission, AppId, CloseReason, DEFAULT_FLOW_SLOTS, DestinationKey, FlowClass, FlowGovernor,
    FlowInfo, FlowOutcome, FlowPolicy, FlowSlot, Instant, Notification, Protocol,
};

use super::{Host, Row, percent};

const ID: &str = "flow-flood";
const SCENARIO: &str = "one app opens 2x the 512-flow limit beside a well-behaved app";
/// Network framework's flows per process.
const SYSTEM_FLOW_LIMIT: u32 = 512;
/// One step of virtual time: 1 ms.
const STEP_US: u64 = 1_000;
/// The run lasts 2,048 steps; the flood opens one flow per step for the first 1,024.
const STEPS: u64 = 2_048;
const FLOOD_FLOWS: u64 = 2 * SYSTEM_FLOW_LIMIT as u64;
/// The well-behaved app starts a request every 4 ms; each lasts 10 ms.
const REQUEST_EVERY_STEPS: u64 = 4;
const REQUEST_STEPS: u64 = 10;
const FLOODER: AppId = AppId(1);
const WELL_BEHAVED: AppId = AppId(2);

/// The naive proxy hands every flow to the system (whose limit is the only cap, first come
/// first served); the tidegate proxy asks a [`FlowGovernor`] with [`FlowPolicy::APPLE_DEFAULT`]
/// first and passes refused flows on at once.
pub(super) fn flood_beside_well_behaved_app() -> [Row; 2] {
    [run(Host::Naive), run(Host::Tidegate)]
}

fn run(host: Host) -> Row {
    let policy = FlowPolicy::APPLE_DEFAULT;
    let mut governor = match host {
        Host::Naive => None,
        Host::Tidegate => Some(
            FlowGovernor::new(
                Instant::ZERO,
                vec![FlowSlot::EMPTY; DEFAULT_FLOW_SLOTS].into_boxed_slice(),
                policy,
            )
            .expect("the default policy fits 512 slots"),
        ),
    };
    // Connections the system holds for the proxy (live, not waiting).
    let mut system_flows = 0u32;
    let mut hung = 0u64;
    let mut flooder_refused = 0u64;
    let mut evicted = 0u64;
    let (mut requests, mut requests_served) = (0u64, 0u64);
    let mut flooder_peak = 0u32;
    let mut table_full_at: Option<f64> = None;
    // The well-behaved app's requests in progress: (finish step, governor id if any).
    let mut in_progress: VecDeque<(u64, Option<tidegate_core::FlowId>)> = VecDeque::new();

    for step in 0..STEPS {
        let now = Instant::from_micros(step * STEP_US);
        // The well-behaved app's finished requests close first.
        while in_progress.front().is_some_and(|&(end, _)| end <= step) {
            let Some((_, id)) = in_progress.pop_front() else {
                break;
            };
            system_flows -= 1;
            if let (Some(governor), Some(id)) = (governor.as_mut(), id) {
                assert_eq!(governor.on_closed(now, id), Ok(FlowOutcome::Closed));
            }
        }
        let flooding = step < FLOOD_FLOWS;
        let requesting = step % REQUEST_EVERY_STEPS == 0;
        for (app, wanted) in [(FLOODER, flooding), (WELL_BEHAVED, requesting)] {
            if !wanted {
                continue;
            }
            if app == WELL_BEHAVED {
                requests += 1;
            }
            // The proxy's decision: admit (and open a system connection) or refuse at once.
            let admitted = match governor.as_mut() {
                None => Some(None),
                Some(governor) => {
                    let info = FlowInfo {
                        app,
                        destination: DestinationKey(step),
                        protocol: Protocol::Tcp,
                        class: FlowClass::Stream,
                    };
                    match governor.on_new_flow(now, info) {
                        Admission::Accepted { id } => Some(Some(id)),
                        Admission::AcceptedAfterEvicting {
                            id,
                            evicted: victim,
                        } => {
                            evicted += 1;
                            system_flows -= 1;
                            assert_eq!(
                                governor.on_closed(now, victim),
                                Ok(FlowOutcome::ClosedByGovernor(CloseReason::Evicted))
                            );
                            Some(Some(id))
                        }
                        Admission::Rejected(_) => None,
                    }
                }
            };
            let Some(id) = admitted else {
                if app == FLOODER {
                    flooder_refused += 1;
                }
                continue;
            };
            if system_flows >= SYSTEM_FLOW_LIMIT {
                // Past the system's limit the connection waits forever.
                hung += 1;
                table_full_at.get_or_insert(step as f64 * STEP_US as f64 / 1e6);
                continue;
            }
            system_flows += 1;
            if let (Some(governor), Some(id)) = (governor.as_mut(), id) {
                governor.on_connected(now, id).expect("a new flow connects");
                // A request and its response move through the relay (the flood's flows keep
                // 512 bytes of request pending: they are busy, not idle).
                governor.on_local_read(now, id, 512).expect("open");
                if app == WELL_BEHAVED {
                    governor.on_remote_sent(now, id, 512).expect("pending");
                    governor.on_remote_read(now, id, 4_096).expect("open");
                    governor.on_local_written(now, id, 4_096).expect("pending");
                }
            }
            if app == WELL_BEHAVED {
                requests_served += 1;
                in_progress.push_back((step + REQUEST_STEPS, id));
            }
        }
        if let Some(governor) = governor.as_mut() {
            governor.handle_timeout(now);
            while let Some(notification) = governor.poll_notification() {
                // Nothing is idle for 10 minutes or connecting for 30 s in a 2 s run.
                if let Notification::Close { id, .. } = notification {
                    unreachable!("no flow times out here: {id:?}");
                }
            }
            flooder_peak = flooder_peak.max(governor.app_flows(FLOODER));
        }
    }

    let mut row = Row::new(ID, SCENARIO, "004", host);
    row.admitted_percent = Some(percent(requests_served, requests));
    row.hung_connections = Some(hung);
    row.established_evicted = Some(evicted);
    row.outcome = match host {
        Host::Naive => format!(
            "limit full at {:.2} s; {} of {} requests served",
            table_full_at.unwrap_or(f64::NAN),
            requests_served,
            requests
        ),
        Host::Tidegate => format!(
            "flooder capped at {flooder_peak}, {flooder_refused} refused at once; \
             {requests_served} of {requests} served"
        ),
    };
    row
}
