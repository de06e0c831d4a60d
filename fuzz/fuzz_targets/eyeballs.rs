//! Happy Eyeballs races sharing one `ConnectionBudget`: DNS answers (including mixed-family and
//! duplicate addresses), attempt reports for live, cancelled, unknown and finished attempts,
//! aborts, timeouts, resource errors, descriptor limits and a clock running backwards. A host
//! model follows the actions and checks:
//!
//! - each attempt starts once and ends exactly once (a cancel action or an accepted report);
//! - a race ends with at most one of `Connected` (for the attempt the host reported
//!   connected, once) and `Failed` (with nothing left in flight), and starts nothing after;
//! - the budget: every start fits the effective limits, and once every race is drained the
//!   budget's attempts and open connections equal what the host holds, with no unbalanced
//!   release and no budget mismatch.
#![no_main]

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use tidegate_core::{
    Action, AddressFamily, BudgetConfig, ConnectionBudget, EyeballsConfig, HappyEyeballs, Instant,
    MAX_CONNECTION_ATTEMPT_DELAY_MICROS, MIN_CONNECTION_ATTEMPT_DELAY_MICROS, RaceStatus,
    classify_errno,
};
use tidegate_fuzz::{HostClock, MAX_OPS, Tick};

const CANDIDATES: usize = 6;
const RACES: usize = 3;
type Race = HappyEyeballs<CANDIDATES>;

#[derive(Debug, Arbitrary)]
struct Setup {
    ipv4_first: bool,
    first_family_count: u8,
    resolution_delay_ms: u8,
    attempt_delay_ms: u16,
    attempt_timeout_ms: u8,
    budget_wait_ms: u16,
    max_attempts: u8,
    max_connections: u8,
    backoff_floor: u8,
}

#[derive(Debug, Arbitrary)]
enum Op {
    Resolved {
        race: u8,
        ipv6: bool,
        hosts: Vec<u8>,
        mixed: bool,
        tick: Tick,
    },
    ResolutionFailed {
        race: u8,
        ipv6: bool,
        tick: Tick,
    },
    ResolutionDone {
        race: u8,
        tick: Tick,
    },
    Connected {
        race: u8,
        index: u8,
        tick: Tick,
    },
    Failed {
        race: u8,
        index: u8,
        errno: u8,
        tick: Tick,
    },
    Abort {
        race: u8,
        tick: Tick,
    },
    Timeout(Tick),
    Poll {
        race: u8,
    },
    DrainAll,
    CloseConnection {
        tick: Tick,
    },
    OpenDirect {
        tick: Tick,
    },
    ResourceError {
        tick: Tick,
    },
    FdLimit(u16),
    Replace {
        race: u8,
        tick: Tick,
    },
}

/// What the host knows about one race.
#[derive(Default)]
struct HostRace {
    started: BTreeSet<usize>,
    in_flight: BTreeSet<usize>,
    reported_connected: Option<usize>,
    connected_action: bool,
    failed_action: bool,
    aborted: bool,
}

const ERRNOS: [i32; 9] = [111, 110, 24, 23, 101, 104, 13, 0, 9999];

fuzz_target!(|data: &[u8]| {
    let mut input = Unstructured::new(data);
    let Ok(setup) = Setup::arbitrary(&mut input) else {
        return;
    };
    let budget_config = BudgetConfig {
        max_attempts_in_flight: u32::from(setup.max_attempts % 8) + 1,
        max_open_connections: u32::from(setup.max_connections % 10) + 1,
        backoff_floor: u32::from(setup.backoff_floor % 4) + 1,
        recovery_interval_micros: 200_000,
        ..BudgetConfig::default()
    };
    let mut budget = ConnectionBudget::new(budget_config).expect("valid budget");
    let config = EyeballsConfig {
        preferred_family: if setup.ipv4_first {
            AddressFamily::Ipv4
        } else {
            AddressFamily::Ipv6
        },
        // The host keeps each value in its documented range (the race refuses others).
        first_address_family_count: setup.first_family_count % 4 + 1,
        resolution_delay_micros: u64::from(setup.resolution_delay_ms) * 1_000,
        connection_attempt_delay_micros: (u64::from(setup.attempt_delay_ms) * 100).clamp(
            MIN_CONNECTION_ATTEMPT_DELAY_MICROS,
            MAX_CONNECTION_ATTEMPT_DELAY_MICROS,
        ),
        attempt_timeout_micros: u64::from(setup.attempt_timeout_ms) * 5_000,
        budget_wait_micros: u64::from(setup.budget_wait_ms) * 100,
    };
    let mut clock = HostClock::new(3_000_000);
    let start = Instant::from_micros(clock.now);
    let mut races: Vec<(Race, HostRace)> = (0..RACES)
        .map(|_| {
            (
                Race::new(config, start).expect("an in-range config"),
                HostRace::default(),
            )
        })
        .collect();
    let mut winners_open = 0u32;
    let mut direct_open = 0u32;
    // Releases with nothing to release that the host made on purpose.
    let mut unbalanced = 0u64;
    for _ in 0..MAX_OPS {
        let Ok(op) = Op::arbitrary(&mut input) else {
            break;
        };
        match op {
            Op::Resolved {
                race,
                ipv6,
                hosts,
                mixed,
                tick,
            } => {
                let now = Instant::from_micros(clock.tick(tick));
                let family = if ipv6 {
                    AddressFamily::Ipv6
                } else {
                    AddressFamily::Ipv4
                };
                let mut addrs: Vec<SocketAddr> =
                    hosts.iter().take(10).map(|&h| address(ipv6, h)).collect();
                if mixed {
                    addrs.push(address(!ipv6, 1));
                }
                let race = &mut races[usize::from(race) % RACES].0;
                let running = running(race);
                match race.on_resolved(now, family, &addrs) {
                    Ok(added) => {
                        assert!(running && !mixed && added <= addrs.len());
                        assert!(race.candidate_count() <= CANDIDATES);
                    }
                    Err(tidegate_core::ResolveError::FamilyMismatch { position }) => {
                        assert!(running && mixed && position == addrs.len() - 1);
                    }
                    Err(tidegate_core::ResolveError::RaceFinished) => assert!(!running),
                    Err(other) => panic!("an undocumented refusal: {other:?}"),
                }
            }
            Op::ResolutionFailed { race, ipv6, tick } => {
                let now = Instant::from_micros(clock.tick(tick));
                let family = if ipv6 {
                    AddressFamily::Ipv6
                } else {
                    AddressFamily::Ipv4
                };
                let _ = races[usize::from(race) % RACES]
                    .0
                    .on_resolution_failed(now, family);
            }
            Op::ResolutionDone { race, tick } => {
                let now = Instant::from_micros(clock.tick(tick));
                let _ = races[usize::from(race) % RACES].0.on_resolution_done(now);
            }
            Op::Connected { race, index, tick } => {
                let now = Instant::from_micros(clock.tick(tick));
                let (race, host) = &mut races[usize::from(race) % RACES];
                let index = pick(host, index);
                if race.on_attempt_connected(now, index).is_ok() {
                    assert!(
                        host.in_flight.remove(&index),
                        "only an attempt in flight connects"
                    );
                    assert!(host.reported_connected.is_none(), "one winner per race");
                    host.reported_connected = Some(index);
                } else {
                    assert!(!started_and_live(race, host, index));
                }
            }
            Op::Failed {
                race,
                index,
                errno,
                tick,
            } => {
                let now = Instant::from_micros(clock.tick(tick));
                let (race, host) = &mut races[usize::from(race) % RACES];
                let index = pick(host, index);
                let class = classify_errno(ERRNOS[usize::from(errno) % ERRNOS.len()]);
                if race.on_attempt_failed(now, index, class).is_ok() {
                    assert!(
                        host.in_flight.remove(&index),
                        "only an attempt in flight fails"
                    );
                } else {
                    assert!(!started_and_live(race, host, index));
                }
            }
            Op::Abort { race, tick } => {
                let now = Instant::from_micros(clock.tick(tick));
                let (race, host) = &mut races[usize::from(race) % RACES];
                let running = running(race);
                race.on_abort(now);
                if running {
                    host.aborted = true;
                }
            }
            Op::Timeout(tick) => {
                let now = Instant::from_micros(clock.tick(tick));
                budget.handle_timeout(now);
                for (race, _) in &mut races {
                    race.handle_timeout(now);
                }
            }
            Op::Poll { race } => {
                let (race, host) = &mut races[usize::from(race) % RACES];
                drain(race, host, &mut budget, &mut winners_open);
            }
            Op::DrainAll => {
                drain_all(&mut races, &mut budget, &mut winners_open);
                check_budget(&races, &budget, winners_open + direct_open);
            }
            Op::CloseConnection { tick } => {
                let now = Instant::from_micros(clock.tick(tick));
                let result = budget.on_connection_closed(now);
                if winners_open + direct_open == 0 {
                    assert!(result.is_err(), "nothing open to close");
                    unbalanced += 1;
                } else {
                    result.expect("an open connection closes");
                    if direct_open > 0 {
                        direct_open -= 1;
                    } else {
                        winners_open -= 1;
                    }
                }
            }
            Op::OpenDirect { tick } => {
                let now = Instant::from_micros(clock.tick(tick));
                if budget.try_open_connection(now).is_ok() {
                    direct_open += 1;
                    let used = budget.attempts_in_flight() + budget.open_connections();
                    assert!(used <= budget.connection_limit(), "connection limit");
                }
            }
            Op::ResourceError { tick } => {
                budget.on_resource_error(Instant::from_micros(clock.tick(tick)));
            }
            Op::FdLimit(limit) => {
                let refused = budget.set_fd_limit(u64::from(limit)).is_err();
                assert_eq!(refused, limit == 0, "only a limit of 0 is refused");
            }
            Op::Replace { race, tick } => {
                let now = Instant::from_micros(clock.tick(tick));
                let (race, host) = &mut races[usize::from(race) % RACES];
                if race.is_finished() {
                    assert!(host.in_flight.is_empty() && race.attempts_in_flight() == 0);
                    *race = Race::new(config, now).expect("an in-range config");
                    *host = HostRace::default();
                }
            }
        }
        assert!(budget.attempts_in_flight() <= budget_config.max_attempts_in_flight);
        assert!(budget.attempt_limit() <= budget_config.max_attempts_in_flight);
        assert_eq!(budget.stats().unbalanced_releases, unbalanced);
        for (race, host) in &races {
            assert_eq!(race.stats().budget_mismatches, 0);
            if race.is_finished() {
                assert!(
                    host.in_flight.is_empty(),
                    "a finished race holds no attempt"
                );
                assert_eq!(race.attempts_in_flight(), 0);
            }
        }
    }
    // Abort every race and drain: everything the races held goes back to the budget.
    let now = Instant::from_micros(clock.tick(Tick::Same));
    for (race, _) in &mut races {
        race.on_abort(now);
    }
    drain_all(&mut races, &mut budget, &mut winners_open);
    check_budget(&races, &budget, winners_open + direct_open);
    assert_eq!(budget.attempts_in_flight(), 0);
    for (race, _) in &races {
        assert!(race.is_finished());
    }
});

fn address(ipv6: bool, host: u8) -> SocketAddr {
    let ip = if ipv6 {
        IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            0,
            0,
            0,
            0,
            0,
            u16::from(host % 12),
        ))
    } else {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, host % 12))
    };
    SocketAddr::new(ip, 443)
}

/// Whether the race is still running: resolving, connecting or waiting for budget.
fn running(race: &Race) -> bool {
    matches!(
        race.status(),
        RaceStatus::Resolving | RaceStatus::Connecting | RaceStatus::WaitingForBudget { .. }
    )
}

/// An attempt index: one the host started (by position), or any other value.
fn pick(host: &HostRace, index: u8) -> usize {
    let started: Vec<usize> = host.started.iter().copied().collect();
    if index < 128 && !started.is_empty() {
        started[usize::from(index) % started.len()]
    } else {
        usize::from(index % 16)
    }
}

/// Whether the host still holds attempt `index` and the race has no reason to refuse it.
fn started_and_live(race: &Race, host: &HostRace, index: usize) -> bool {
    // The race may refuse a live attempt it is cancelling (a winner, a timeout or an abort);
    // otherwise a report for an attempt the host holds is taken.
    host.in_flight.contains(&index)
        && host.reported_connected.is_none()
        && !host.aborted
        && race.config().attempt_timeout_micros == 0
}

fn drain(race: &mut Race, host: &mut HostRace, budget: &mut ConnectionBudget, winners: &mut u32) {
    for _ in 0..64 {
        let Some(action) = race.poll_action(budget) else {
            return;
        };
        match action {
            Action::StartAttempt { index, addr } => {
                assert!(!host.connected_action && !host.failed_action && !host.aborted);
                assert!(
                    host.reported_connected.is_none(),
                    "nothing starts after a win"
                );
                assert!(index < CANDIDATES && race.candidate(index) == Some(addr));
                assert!(host.started.insert(index), "an attempt starts once");
                host.in_flight.insert(index);
                assert!(
                    budget.attempts_in_flight() <= budget.attempt_limit(),
                    "attempt limit"
                );
                let used = budget.attempts_in_flight() + budget.open_connections();
                assert!(used <= budget.connection_limit(), "connection limit");
            }
            Action::CancelAttempt { index } => {
                assert!(
                    host.in_flight.remove(&index),
                    "only an attempt in flight is cancelled"
                );
            }
            Action::Connected { index } => {
                assert_eq!(host.reported_connected, Some(index), "the reported winner");
                assert!(
                    !host.connected_action && !host.failed_action,
                    "one ending per race"
                );
                host.connected_action = true;
                *winners += 1;
            }
            Action::Failed { .. } => {
                assert!(
                    !host.connected_action && !host.failed_action,
                    "one ending per race"
                );
                assert!(host.reported_connected.is_none() && !host.aborted);
                assert!(
                    host.in_flight.is_empty(),
                    "a race fails with nothing in flight"
                );
                host.failed_action = true;
            }
        }
    }
    panic!("a race never stops producing actions");
}

fn drain_all(races: &mut [(Race, HostRace)], budget: &mut ConnectionBudget, winners: &mut u32) {
    // Budget released by one race may let another start: drain until all are quiet.
    for _ in 0..8 {
        for (race, host) in races.iter_mut() {
            drain(race, host, budget, winners);
        }
    }
}

fn check_budget(races: &[(Race, HostRace)], budget: &ConnectionBudget, open: u32) {
    let held: usize = races.iter().map(|(_, host)| host.in_flight.len()).sum();
    let counted: usize = races
        .iter()
        .map(|(race, _)| race.attempts_in_flight())
        .sum();
    assert_eq!(
        budget.attempts_in_flight() as usize,
        held,
        "budget attempts = host attempts"
    );
    assert_eq!(counted, held);
    assert_eq!(
        budget.open_connections(),
        open,
        "budget connections = host connections"
    );
}
