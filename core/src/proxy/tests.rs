//! Unit tests of the proxy engine: each drives it the way a host does (inputs, then a full
//! drain) and checks the events and the budget.

use std::vec::Vec;

use super::*;
use crate::flow::tests::info;
use crate::{CloseReason, FlowError, RaceFailure, RejectReason};

type Engine = ProxyEngine<[FlowSlot; 8], [RaceSlot; 4]>;

const MS: u64 = 1_000;

fn ms(millis: u64) -> Instant {
    Instant::from_millis(millis)
}

fn v6(last: u16) -> SocketAddr {
    SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, last], 443))
}

fn v4(last: u8) -> SocketAddr {
    SocketAddr::from(([198, 51, 100, last], 443))
}

fn config(attempts: u32) -> ProxyConfig {
    ProxyConfig {
        flows: FlowPolicy {
            max_flows: 6,
            max_flows_per_app: 6,
            max_flows_per_destination: 6,
            max_connecting: 8,
            connect_timeout_micros: 5_000 * MS,
            idle_timeout_micros: 60_000 * MS,
            ..FlowPolicy::DEFAULT
        },
        budget: BudgetConfig {
            max_attempts_in_flight: attempts,
            max_open_connections: 100,
            fd_limit: 10_000,
            backoff_floor: 1,
            ..BudgetConfig::DEFAULT
        },
        race: EyeballsConfig::DEFAULT,
    }
}

fn engine(attempts: u32) -> Engine {
    ProxyEngine::new(
        ms(0),
        [FlowSlot::EMPTY; 8],
        [const { RaceSlot::EMPTY }; 4],
        config(attempts),
    )
    .unwrap()
}

fn admit(proxy: &mut Engine, at: u64, app: u64) -> FlowId {
    match proxy.on_new_flow(ms(at), info(app, 7)) {
        Admission::Accepted { id } => id,
        other => panic!("expected acceptance, got {other:?}"),
    }
}

/// Resolve flow `id` to one IPv6 and one IPv4 address, resolution over.
fn resolve_both(proxy: &mut Engine, at: u64, id: FlowId, host: u8) {
    proxy
        .on_resolved(ms(at), id, AddressFamily::Ipv6, &[v6(u16::from(host))])
        .unwrap();
    proxy
        .on_resolved(ms(at), id, AddressFamily::Ipv4, &[v4(host)])
        .unwrap();
    proxy.on_resolution_done(ms(at), id).unwrap();
}

fn drain(proxy: &mut Engine) -> Vec<ProxyEvent> {
    let mut events = Vec::new();
    while let Some(event) = proxy.poll_event() {
        events.push(event);
        assert!(events.len() < 1_000, "the drain ends");
    }
    events
}

/// Fire the engine's timer until `until`, draining after each step.
fn run_until(proxy: &mut Engine, until: u64) -> Vec<ProxyEvent> {
    let mut events = drain(proxy);
    while let Some(due) = proxy.poll_timeout() {
        if due > ms(until) {
            break;
        }
        proxy.handle_timeout(due);
        events.extend(drain(proxy));
    }
    proxy.handle_timeout(ms(until));
    events.extend(drain(proxy));
    events
}

#[test]
fn a_race_establishes_its_flow_and_the_close_gives_the_connection_back() {
    let mut proxy = engine(4);
    let id = admit(&mut proxy, 1, 1);
    resolve_both(&mut proxy, 1, id, 1);
    let events = drain(&mut proxy);
    assert_eq!(
        events,
        [ProxyEvent::StartAttempt {
            id,
            attempt: 0,
            addr: v6(1)
        }]
    );
    assert_eq!(proxy.flow(id).unwrap().state, FlowState::Connecting);
    // The IPv6 attempt hangs; the IPv4 one starts after the Connection Attempt Delay.
    let events = run_until(&mut proxy, 251);
    assert_eq!(
        events,
        [ProxyEvent::StartAttempt {
            id,
            attempt: 1,
            addr: v4(1)
        }]
    );
    proxy.on_attempt_connected(ms(260), id, 1).unwrap();
    let events = drain(&mut proxy);
    assert_eq!(
        events,
        [
            ProxyEvent::Established { id, attempt: 1 },
            ProxyEvent::CancelAttempt { id, attempt: 0 },
        ]
    );
    let stats = proxy.stats();
    assert_eq!(stats.attempts_in_flight, 0);
    assert_eq!(stats.open_connections, 1);
    assert_eq!(stats.flows.connections_held, 1);
    assert_eq!(stats.flows.also_ran_attempts, 1);
    assert_eq!(stats.races.won, 1);
    assert_eq!(stats.races.running, 0, "a drained race frees its slot");
    assert!(proxy.race(id).is_none());
    assert_eq!(proxy.flow(id).unwrap().state, FlowState::Established);
    // A late report about the loser is refused without effect.
    assert_eq!(
        proxy.on_attempt_failed(ms(270), id, 0, ErrorClass::Refused),
        Err(ProxyError::NoRace)
    );
    assert_eq!(proxy.on_closed(ms(300), id), Ok(FlowOutcome::AlsoRan));
    assert_eq!(proxy.stats().open_connections, 0);
    assert_eq!(
        proxy.on_closed(ms(300), id),
        Err(ProxyError::Flow(FlowError::StaleFlow))
    );
}

#[test]
fn closing_a_flow_aborts_its_race_and_cancels_its_attempts() {
    let mut proxy = engine(4);
    let id = admit(&mut proxy, 1, 1);
    resolve_both(&mut proxy, 1, id, 1);
    let _ = run_until(&mut proxy, 251);
    assert_eq!(proxy.stats().attempts_in_flight, 2);
    proxy.on_closed(ms(300), id).unwrap();
    let mut events = drain(&mut proxy);
    events.sort_by_key(|event| match event {
        ProxyEvent::CancelAttempt { attempt, .. } => *attempt,
        _ => usize::MAX,
    });
    assert_eq!(
        events,
        [
            ProxyEvent::CancelAttempt { id, attempt: 0 },
            ProxyEvent::CancelAttempt { id, attempt: 1 },
        ]
    );
    let stats = proxy.stats();
    assert_eq!(stats.attempts_in_flight, 0);
    assert_eq!(stats.races.aborted, 1);
    assert_eq!(stats.races.running, 0);
    assert_eq!(proxy.poll_timeout(), None, "nothing is left to time");
}

#[test]
fn a_connect_timeout_closes_the_flow_and_aborts_its_race() {
    let mut proxy = engine(4);
    let id = admit(&mut proxy, 0, 1);
    proxy
        .on_resolved(ms(0), id, AddressFamily::Ipv6, &[v6(1)])
        .unwrap();
    proxy.on_resolution_done(ms(0), id).unwrap();
    let events = run_until(&mut proxy, 5_000);
    assert_eq!(
        events,
        [
            ProxyEvent::StartAttempt {
                id,
                attempt: 0,
                addr: v6(1)
            },
            ProxyEvent::CloseFlow {
                id,
                reason: CloseReason::ConnectTimeout
            },
            ProxyEvent::CancelAttempt { id, attempt: 0 },
        ]
    );
    assert_eq!(proxy.stats().attempts_in_flight, 0);
    assert_eq!(
        proxy.on_closed(ms(5_001), id),
        Ok(FlowOutcome::ClosedByGovernor(CloseReason::ConnectTimeout))
    );
    assert_eq!(proxy.stats().races.running, 0);
}

#[test]
fn a_winner_for_a_flow_that_stopped_being_open_is_cancelled_and_its_connection_released() {
    let mut proxy = engine(4);
    let id = admit(&mut proxy, 0, 1);
    proxy
        .on_resolved(ms(0), id, AddressFamily::Ipv6, &[v6(1)])
        .unwrap();
    proxy.on_resolution_done(ms(0), id).unwrap();
    let _ = drain(&mut proxy);
    // The attempt connects, but the connect timeout fires before the host drains.
    proxy.on_attempt_connected(ms(4_999), id, 0).unwrap();
    proxy.handle_timeout(ms(5_000));
    let events = drain(&mut proxy);
    assert_eq!(
        events,
        [
            ProxyEvent::CloseFlow {
                id,
                reason: CloseReason::ConnectTimeout
            },
            ProxyEvent::CancelAttempt { id, attempt: 0 },
        ]
    );
    let stats = proxy.stats();
    assert_eq!(stats.open_connections, 0);
    assert_eq!(stats.attempts_in_flight, 0);
    assert_eq!(stats.flows.connections_held, 0);
}

#[test]
fn a_failed_race_fails_its_flow_once() {
    let mut proxy = engine(4);
    let id = admit(&mut proxy, 0, 1);
    proxy
        .on_resolved(ms(0), id, AddressFamily::Ipv4, &[v4(1)])
        .unwrap();
    proxy
        .on_resolution_failed(ms(0), id, AddressFamily::Ipv6)
        .unwrap();
    proxy.on_resolution_done(ms(0), id).unwrap();
    let _ = drain(&mut proxy);
    proxy
        .on_attempt_failed(ms(10), id, 0, ErrorClass::Refused)
        .unwrap();
    let events = drain(&mut proxy);
    let reason = RaceFailure::AllAttemptsFailed {
        last: ErrorClass::Refused,
    };
    assert_eq!(
        events,
        [ProxyEvent::ConnectFailed {
            id,
            reason,
            class: ErrorClass::Refused
        }]
    );
    assert_eq!(
        proxy.on_closed(ms(11), id),
        Err(ProxyError::Flow(FlowError::StaleFlow)),
        "the failure already ended the flow"
    );
    let stats = proxy.stats();
    assert_eq!(
        stats.flows.connect_failures[ErrorClass::Refused as usize],
        1
    );
    assert_eq!(stats.races.failed, 1);
    assert_eq!(stats.races.running, 0);
    assert_eq!(stats.attempts_in_flight, 0);
}

#[test]
fn no_address_fails_the_flow_as_unreachable() {
    let mut proxy = engine(4);
    let id = admit(&mut proxy, 0, 1);
    proxy
        .on_resolution_failed(ms(0), id, AddressFamily::Ipv6)
        .unwrap();
    proxy
        .on_resolution_failed(ms(0), id, AddressFamily::Ipv4)
        .unwrap();
    proxy.on_resolution_done(ms(0), id).unwrap();
    assert_eq!(
        drain(&mut proxy),
        [ProxyEvent::ConnectFailed {
            id,
            reason: RaceFailure::NoAddresses,
            class: ErrorClass::Unreachable
        }]
    );
}

/// An engine allowing one attempt in flight, and two flows of different apps resolved to one
/// IPv4 address each at 0 ms: the first race takes the attempt, the second waits for budget.
fn two_races_for_one_attempt() -> (Engine, FlowId, FlowId) {
    let mut proxy = engine(1);
    let first = admit(&mut proxy, 0, 1);
    let second = admit(&mut proxy, 0, 2);
    for (id, host) in [(first, 1), (second, 2)] {
        proxy
            .on_resolved(ms(0), id, AddressFamily::Ipv4, &[v4(host)])
            .unwrap();
        proxy.on_resolution_done(ms(0), id).unwrap();
    }
    (proxy, first, second)
}

#[test]
fn a_race_waiting_for_budget_starts_when_another_race_releases_it() {
    let (mut proxy, first, second) = two_races_for_one_attempt();
    let events = drain(&mut proxy);
    assert_eq!(
        events,
        [ProxyEvent::StartAttempt {
            id: first,
            attempt: 0,
            addr: v4(1)
        }]
    );
    assert!(proxy.race(second).unwrap().is_waiting_for_budget());
    proxy.on_attempt_connected(ms(100), first, 0).unwrap();
    let events = drain(&mut proxy);
    assert_eq!(
        events,
        [
            ProxyEvent::Established {
                id: first,
                attempt: 0
            },
            ProxyEvent::StartAttempt {
                id: second,
                attempt: 0,
                addr: v4(2)
            },
        ],
        "the winner's attempt became a connection, so the waiting race starts in the same drain"
    );
}

#[test]
fn a_race_that_waits_too_long_for_budget_fails_no_later_than_its_wait() {
    let mut proxy = engine(1);
    let first = admit(&mut proxy, 0, 1);
    let second = admit(&mut proxy, 0, 2);
    proxy
        .on_resolved(ms(0), first, AddressFamily::Ipv4, &[v4(1)])
        .unwrap();
    proxy.on_resolution_done(ms(0), first).unwrap();
    let _ = drain(&mut proxy);
    proxy
        .on_resolved(ms(0), second, AddressFamily::Ipv4, &[v4(2)])
        .unwrap();
    proxy.on_resolution_done(ms(0), second).unwrap();
    // The first attempt hangs: the second race fails once its budget wait (1 s) is over.
    let events = run_until(&mut proxy, 1_000);
    assert!(matches!(
        events.as_slice(),
        [ProxyEvent::ConnectFailed {
            id,
            reason: RaceFailure::NoBudget { .. },
            class: ErrorClass::ResourceExhausted
        }] if *id == second
    ));
}

#[test]
fn an_eviction_comes_out_as_a_close_and_aborts_the_evicted_flows_race() {
    let mut proxy = engine(8);
    // App 1 takes the table (6 flows), each with a race running.
    let heavy: Vec<FlowId> = (0..6).map(|_| admit(&mut proxy, 0, 1)).collect();
    for (n, &id) in heavy.iter().take(4).enumerate() {
        proxy
            .on_resolved(ms(0), id, AddressFamily::Ipv4, &[v4(n as u8)])
            .unwrap();
        proxy.on_resolution_done(ms(0), id).unwrap();
    }
    let _ = drain(&mut proxy);
    assert_eq!(proxy.stats().attempts_in_flight, 4);
    let answer = proxy.on_new_flow(ms(1), info(2, 8));
    let Admission::AcceptedAfterEvicting { evicted, .. } = answer else {
        panic!("expected an eviction, got {answer:?}");
    };
    let events = drain(&mut proxy);
    assert_eq!(
        events.first(),
        Some(&ProxyEvent::CloseFlow {
            id: evicted,
            reason: CloseReason::Evicted
        })
    );
    assert_eq!(evicted, heavy[0], "the least recently active flow goes");
    assert!(events.contains(&ProxyEvent::CancelAttempt {
        id: evicted,
        attempt: 0
    }));
    assert_eq!(
        proxy.stats().attempts_in_flight,
        3,
        "the evicted flow's attempt is released"
    );
}

#[test]
fn refused_calls_change_nothing() {
    let mut proxy = engine(4);
    let raced = admit(&mut proxy, 0, 1);
    proxy
        .on_resolved(ms(0), raced, AddressFamily::Ipv6, &[v6(1)])
        .unwrap();
    let _ = drain(&mut proxy);
    let before = proxy.stats();
    assert_eq!(
        proxy.on_connecting(ms(9_000), raced),
        Err(ProxyError::RaceRunning)
    );
    assert_eq!(
        proxy.on_connected(ms(9_000), raced),
        Err(ProxyError::RaceRunning)
    );
    assert_eq!(
        proxy.on_attempt_connected(ms(9_000), raced, 5),
        Err(ProxyError::Attempt(crate::AttemptError::UnknownAttempt {
            index: 5
        }))
    );
    assert_eq!(
        proxy.on_resolved(ms(9_000), raced, AddressFamily::Ipv4, &[v6(2)]),
        Err(ProxyError::Resolve(crate::ResolveError::FamilyMismatch {
            position: 0
        }))
    );
    let forged = FlowId::from_raw(u64::MAX);
    assert_eq!(
        proxy.on_resolved(ms(9_000), forged, AddressFamily::Ipv4, &[v4(1)]),
        Err(ProxyError::Flow(FlowError::UnknownFlow))
    );
    // A flow the host's system connected takes no race.
    let system = admit(&mut proxy, 0, 2);
    proxy.on_connected(ms(0), system).unwrap();
    assert_eq!(
        proxy.on_resolved(ms(9_000), system, AddressFamily::Ipv4, &[v4(1)]),
        Err(ProxyError::Flow(FlowError::InvalidState {
            state: FlowState::Established
        }))
    );
    assert_eq!(
        proxy.on_attempt_failed(ms(9_000), system, 0, ErrorClass::Refused),
        Err(ProxyError::NoRace)
    );
    assert_eq!(
        proxy.on_connection_closed(ms(9_000)),
        Err(BudgetError::NoOpenConnection)
    );
    assert!(drain(&mut proxy).is_empty());
    let after = proxy.stats();
    assert_eq!(after.races, before.races);
    assert_eq!(after.attempts_in_flight, before.attempts_in_flight);
    // None of the refused calls moved the clock: the connect timeout still fires at 5 s.
    assert_eq!(proxy.poll_timeout(), Some(ms(5_000)));
}

#[test]
fn a_full_race_table_refuses_at_once_and_frees_with_the_drain() {
    let mut proxy = engine(8);
    let ids: Vec<FlowId> = (0..5).map(|app| admit(&mut proxy, 0, app)).collect();
    for (n, &id) in ids.iter().take(4).enumerate() {
        proxy
            .on_resolved(ms(0), id, AddressFamily::Ipv4, &[v4(n as u8)])
            .unwrap();
    }
    assert_eq!(
        proxy.on_resolved(ms(0), ids[4], AddressFamily::Ipv4, &[v4(9)]),
        Err(ProxyError::NoRaceSlot)
    );
    assert_eq!(proxy.stats().races.no_slot, 1);
    proxy.on_closed(ms(1), ids[0]).unwrap();
    assert_eq!(
        proxy.on_resolved(ms(1), ids[4], AddressFamily::Ipv4, &[v4(9)]),
        Err(ProxyError::NoRaceSlot),
        "the closed flow's race holds its slot until drained"
    );
    let _ = drain(&mut proxy);
    assert_eq!(
        proxy.on_resolved(ms(1), ids[4], AddressFamily::Ipv4, &[v4(9)]),
        Ok(1)
    );
}

#[test]
fn the_budget_refuses_admission_at_its_attempt_limit() {
    let mut proxy = engine(1);
    let id = admit(&mut proxy, 0, 1);
    proxy
        .on_resolved(ms(0), id, AddressFamily::Ipv4, &[v4(1)])
        .unwrap();
    proxy.on_resolution_done(ms(0), id).unwrap();
    let _ = drain(&mut proxy);
    assert_eq!(proxy.stats().attempts_in_flight, 1);
    assert_eq!(
        proxy.on_new_flow(ms(1), info(2, 7)),
        Admission::Rejected(RejectReason::ConnectionBudget)
    );
    assert!(matches!(
        proxy.budget_refusal(),
        Some(BudgetRefusal::AttemptsInFlight { .. })
    ));
}

#[test]
fn the_hosts_own_connections_share_the_budget() {
    let mut proxy = engine(4);
    proxy.try_open_connection(ms(0)).unwrap();
    assert_eq!(proxy.stats().open_connections, 1);
    proxy.on_connection_closed(ms(1)).unwrap();
    assert_eq!(
        proxy.on_connection_closed(ms(1)),
        Err(BudgetError::NoOpenConnection)
    );
}

#[test]
fn configs_out_of_range_are_refused() {
    let none: [RaceSlot; 0] = [];
    assert_eq!(
        ProxyEngine::new(ms(0), [FlowSlot::EMPTY; 8], none, config(1)).err(),
        Some(ProxyConfigError::RaceSlots)
    );
    let bad_budget = ProxyConfig {
        budget: BudgetConfig {
            max_attempts_in_flight: 0,
            ..BudgetConfig::DEFAULT
        },
        ..config(1)
    };
    assert!(matches!(
        ProxyEngine::new(
            ms(0),
            [FlowSlot::EMPTY; 8],
            [const { RaceSlot::EMPTY }; 1],
            bad_budget
        ),
        Err(ProxyConfigError::Budget(_))
    ));
    assert!(matches!(
        ProxyEngine::new(
            ms(0),
            [FlowSlot::EMPTY; 2],
            [const { RaceSlot::EMPTY }; 1],
            config(1)
        ),
        Err(ProxyConfigError::Flows(_))
    ));
}

#[test]
fn footprint_counts_the_slots() {
    let base = proxy_engine_footprint(0, 0);
    assert_eq!(
        proxy_engine_footprint(512, 128),
        base + 512 * core::mem::size_of::<FlowSlot>() + 128 * core::mem::size_of::<RaceSlot>()
    );
}

#[test]
fn a_cancelled_attempt_hands_its_budget_to_a_waiting_race_in_the_same_drain() {
    let (mut proxy, first, second) = two_races_for_one_attempt();
    let _ = drain(&mut proxy);
    proxy.on_closed(ms(100), first).unwrap();
    assert_eq!(
        drain(&mut proxy),
        [
            ProxyEvent::CancelAttempt {
                id: first,
                attempt: 0
            },
            ProxyEvent::StartAttempt {
                id: second,
                attempt: 0,
                addr: v4(2)
            },
        ]
    );
}

#[test]
fn a_won_flow_forgets_its_race_slot_so_the_next_race_there_is_not_its_own() {
    let mut proxy = engine(4);
    let won = admit(&mut proxy, 0, 1);
    proxy
        .on_resolved(ms(0), won, AddressFamily::Ipv4, &[v4(1)])
        .unwrap();
    proxy.on_resolution_done(ms(0), won).unwrap();
    let _ = drain(&mut proxy);
    proxy.on_attempt_connected(ms(10), won, 0).unwrap();
    let _ = drain(&mut proxy);
    // The freed slot goes to the next race, of another flow.
    let next = admit(&mut proxy, 20, 2);
    proxy
        .on_resolved(ms(20), next, AddressFamily::Ipv4, &[v4(2)])
        .unwrap();
    proxy.on_resolution_done(ms(20), next).unwrap();
    let _ = drain(&mut proxy);
    assert!(
        proxy.race(won).is_none(),
        "the established flow has no race"
    );
    assert_eq!(
        proxy.on_attempt_failed(ms(30), won, 0, ErrorClass::Refused),
        Err(ProxyError::NoRace),
        "a report for the won flow never reaches another flow's race"
    );
    assert_eq!(
        proxy.on_resolved(ms(30), won, AddressFamily::Ipv4, &[v4(3)]),
        Err(ProxyError::Flow(FlowError::InvalidState {
            state: FlowState::Established
        }))
    );
    assert_eq!(proxy.race(next).unwrap().attempts_in_flight(), 1);
    assert_eq!(proxy.stats().attempts_in_flight, 1);
}

fn engine_with_connections(attempts: u32, connections: u32) -> Engine {
    let mut config = config(attempts);
    config.budget.max_open_connections = connections;
    let races = [const { RaceSlot::EMPTY }; 4];
    ProxyEngine::new(ms(0), [FlowSlot::EMPTY; 8], races, config).unwrap()
}

/// Race flow `id` to a win by its IPv6 attempt, 5 ms after `at`.
fn establish(proxy: &mut Engine, at: u64, id: FlowId) {
    resolve_both(proxy, at, id, 1);
    let events = drain(proxy);
    let [ProxyEvent::StartAttempt { attempt, .. }] = events[..] else {
        panic!("expected one attempt, got {events:?}");
    };
    proxy.on_attempt_connected(ms(at + 5), id, attempt).unwrap();
    assert_eq!(drain(proxy), [ProxyEvent::Established { id, attempt }]);
}

#[test]
fn out_of_connections_a_polite_app_evicts_a_connected_flow_of_the_heaviest() {
    let mut proxy = engine_with_connections(4, 3);
    let greedy: Vec<FlowId> = (0..3)
        .map(|step| {
            let id = admit(&mut proxy, step * 10, 1);
            establish(&mut proxy, step * 10, id);
            id
        })
        .collect();
    let answer = proxy.on_new_flow(ms(100), info(2, 8));
    let Admission::AcceptedAfterEvicting { id, evicted } = answer else {
        panic!("expected an eviction, got {answer:?}");
    };
    assert_eq!(evicted, greedy[0], "least recently active first");
    assert_eq!(
        drain(&mut proxy),
        [ProxyEvent::CloseFlow {
            id: evicted,
            reason: CloseReason::Evicted
        }]
    );
    // The greedy app cannot evict for itself: it is the heaviest.
    assert_eq!(
        proxy.on_new_flow(ms(101), info(1, 8)),
        Admission::Rejected(RejectReason::ConnectionBudget)
    );
    // The host closes the evicted flow; its connection gives the polite flow room.
    assert_eq!(
        proxy.on_closed(ms(102), evicted),
        Ok(FlowOutcome::ClosedByGovernor(CloseReason::Evicted))
    );
    assert_eq!(proxy.stats().open_connections, 2);
    establish(&mut proxy, 103, id);
    assert_eq!(proxy.stats().open_connections, 3);
    assert_eq!(proxy.stats().flows.connections_held, 3);
}

#[test]
fn out_of_connections_a_victim_without_a_connection_frees_nothing() {
    let mut proxy = engine_with_connections(4, 2);
    let first = admit(&mut proxy, 0, 1);
    establish(&mut proxy, 0, first);
    // Bytes pending make the established flow busy, so the idle racing flow is the victim.
    proxy.on_local_read(ms(5), first, 100).unwrap();
    // The heaviest app's other flow is still racing: it holds an attempt, no connection.
    let racing = admit(&mut proxy, 10, 1);
    resolve_both(&mut proxy, 10, racing, 2);
    assert_eq!(drain(&mut proxy).len(), 1);
    assert_eq!(
        proxy.on_new_flow(ms(20), info(2, 8)),
        Admission::Rejected(RejectReason::ConnectionBudget)
    );
    assert_eq!(proxy.flow(racing).unwrap().state, FlowState::Connecting);
    // Once the race has failed, the budget has room and the same request is admitted.
    proxy
        .on_attempt_failed(ms(21), racing, 0, ErrorClass::Refused)
        .unwrap();
    drain(&mut proxy);
    proxy
        .on_attempt_failed(ms(22), racing, 1, ErrorClass::Refused)
        .unwrap();
    assert!(matches!(
        drain(&mut proxy)[..],
        [ProxyEvent::ConnectFailed { .. }]
    ));
    assert!(proxy.budget_refusal().is_none());
    assert!(matches!(
        proxy.on_new_flow(ms(22), info(2, 8)),
        Admission::Accepted { .. }
    ));
}

/// Found by the proxy simulation: a DNS answer for a flow the engine evicted, fed before the
/// host drained its close, is refused as a flow no longer open, and changes nothing.
#[test]
fn a_dns_answer_for_a_flow_waiting_to_be_closed_is_refused() {
    let mut proxy = engine(4);
    let greedy: Vec<FlowId> = (0..6).map(|i| admit(&mut proxy, i, 1)).collect();
    let Admission::AcceptedAfterEvicting { evicted, .. } = proxy.on_new_flow(ms(10), info(2, 8))
    else {
        panic!("expected an eviction");
    };
    assert!(greedy.contains(&evicted));
    let before = proxy.stats();
    assert_eq!(
        proxy.on_resolved(ms(11), evicted, AddressFamily::Ipv6, &[v6(1)]),
        Err(ProxyError::Flow(FlowError::InvalidState {
            state: FlowState::Closing
        }))
    );
    assert_eq!(proxy.stats(), before, "nothing changed");
    assert_eq!(
        drain(&mut proxy),
        [ProxyEvent::CloseFlow {
            id: evicted,
            reason: CloseReason::Evicted
        }]
    );
}

#[test]
fn memory_pressure_reaches_the_flows_and_the_budget_and_evictions_come_out_as_closes() {
    let mut proxy = engine_with_connections(8, 100);
    let idle = admit(&mut proxy, 0, 1);
    establish(&mut proxy, 0, idle);
    drain(&mut proxy);
    proxy.on_pressure(ms(3_000), Pressure::Elevated);
    assert_eq!(proxy.budget().attempt_limit(), 4);
    assert_eq!(proxy.flows().limits().max_flows, 3);
    proxy.on_pressure(ms(3_001), Pressure::Critical);
    assert_eq!(proxy.budget().attempt_limit(), 2);
    assert_eq!(
        drain(&mut proxy),
        [ProxyEvent::CloseFlow {
            id: idle,
            reason: CloseReason::MemoryPressure
        }]
    );
    assert_eq!(
        proxy.on_new_flow(ms(3_002), info(2, 7)),
        Admission::Rejected(RejectReason::MemoryPressure)
    );
    proxy.on_pressure(ms(3_003), Pressure::Normal);
    assert_eq!(proxy.budget().attempt_limit(), 8);
    admit(&mut proxy, 3_004, 2);
}
