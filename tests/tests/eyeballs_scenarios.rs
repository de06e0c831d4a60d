//! Happy Eyeballs scenarios with virtual time: a simulated host runs races against paths that
//! connect, fail or swallow packets, with one connection budget shared by every race.

use std::collections::HashMap;
use std::net::SocketAddr;

use proptest::prelude::*;
use tidegate_core::{
    Action, AddressFamily, BudgetConfig, BudgetRefusal, ConnectionBudget, ErrorClass,
    EyeballsConfig, HappyEyeballs, Instant, RaceFailure, RaceStatus,
};

type Race = HappyEyeballs<8>;

const MS: u64 = 1_000;

fn v6(last: u16) -> SocketAddr {
    SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, last], 443))
}

fn v4(last: u8) -> SocketAddr {
    SocketAddr::from(([198, 51, 100, last], 443))
}

/// How the network treats connects to one address.
#[derive(Clone, Copy, Debug)]
enum Path {
    /// The handshake completes after this many microseconds.
    Connects(u64),
    /// The connect fails after this many microseconds with this class.
    Fails(u64, ErrorClass),
    /// Nothing ever comes back (an IPv6 black hole).
    BlackHole,
}

#[derive(Clone, Debug)]
enum Dns {
    Answer(AddressFamily, Vec<SocketAddr>),
    Failed(AddressFamily),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Life {
    Started,
    Connected,
    Failed,
    Cancelled,
}

#[derive(Clone, Copy, Debug)]
enum Outcome {
    Connect,
    Fail(ErrorClass),
}

/// One race and what its host knows about it.
struct RaceSim {
    race: Race,
    paths: HashMap<SocketAddr, Path>,
    dns: Vec<(u64, Dns)>,
    outcomes: Vec<(u64, usize, Outcome)>,
    ledger: HashMap<usize, Life>,
    log: Vec<(u64, Action)>,
    hold_winner: Option<u64>,
    close_winner_at: Option<u64>,
    abort_at: Option<u64>,
}

impl RaceSim {
    fn new(config: EyeballsConfig, start: u64) -> Self {
        RaceSim {
            race: Race::new(config, Instant::from_micros(start)).expect("a valid race config"),
            paths: HashMap::new(),
            dns: Vec::new(),
            outcomes: Vec::new(),
            ledger: HashMap::new(),
            log: Vec::new(),
            hold_winner: None,
            close_winner_at: None,
            abort_at: None,
        }
    }

    fn path(mut self, addr: SocketAddr, path: Path) -> Self {
        self.paths.insert(addr, path);
        self
    }

    fn answer(mut self, at: u64, family: AddressFamily, addrs: &[SocketAddr]) -> Self {
        self.dns.push((at, Dns::Answer(family, addrs.to_vec())));
        self
    }

    fn dns_failure(mut self, at: u64, family: AddressFamily) -> Self {
        self.dns.push((at, Dns::Failed(family)));
        self
    }

    fn next_event(&self) -> Option<u64> {
        let dns = self.dns.iter().map(|(at, _)| *at);
        let outcomes = self.outcomes.iter().map(|(at, _, _)| *at);
        let timer = self.race.poll_timeout().map(Instant::as_micros);
        dns.chain(outcomes)
            .chain(timer)
            .chain(self.close_winner_at)
            .chain(self.abort_at)
            .min()
    }

    fn starts(&self) -> Vec<(u64, SocketAddr)> {
        self.log
            .iter()
            .filter_map(|(at, action)| match action {
                Action::StartAttempt { addr, .. } => Some((*at, *addr)),
                _ => None,
            })
            .collect()
    }

    fn failures(&self) -> Vec<RaceFailure> {
        self.log
            .iter()
            .filter_map(|(_, action)| match action {
                Action::Failed { reason } => Some(*reason),
                _ => None,
            })
            .collect()
    }
}

/// The simulated host: races sharing one budget, driven by the earliest event.
struct World {
    now: u64,
    budget: ConnectionBudget,
    races: Vec<RaceSim>,
    /// Every start checked against the budget: (in flight after start, effective limit).
    start_checks: Vec<(u32, u32)>,
}

impl World {
    fn new(budget: BudgetConfig, races: Vec<RaceSim>) -> Self {
        World {
            now: 0,
            budget: ConnectionBudget::new(budget).unwrap(),
            races,
            start_checks: Vec::new(),
        }
    }

    fn next_event(&self) -> Option<u64> {
        let budget = self.budget.poll_timeout().map(Instant::as_micros);
        self.races
            .iter()
            .filter_map(RaceSim::next_event)
            .chain(budget)
            .min()
    }

    /// Run events until `end` (virtual microseconds) or until nothing is left to happen.
    fn run_until(&mut self, end: u64) {
        self.drain();
        while let Some(at) = self.next_event() {
            if at > end {
                break;
            }
            self.now = self.now.max(at);
            self.deliver();
            self.drain();
        }
        self.now = self.now.max(end);
    }

    fn deliver(&mut self) {
        let now = self.now;
        let t = Instant::from_micros(now);
        self.budget.handle_timeout(t);
        for sim in &mut self.races {
            let (due, later): (Vec<_>, Vec<_>) = sim.dns.drain(..).partition(|(at, _)| *at <= now);
            sim.dns = later;
            for (_, dns) in due {
                let result = match dns {
                    Dns::Answer(family, addrs) => {
                        sim.race.on_resolved(t, family, &addrs).map(|_| ())
                    }
                    Dns::Failed(family) => sim.race.on_resolution_failed(t, family),
                };
                assert!(result.is_ok() || !matches!(sim.race.status(), RaceStatus::Connecting));
            }
            let (due, later): (Vec<_>, Vec<_>) =
                sim.outcomes.drain(..).partition(|(at, _, _)| *at <= now);
            sim.outcomes = later;
            for (_, index, outcome) in due {
                match outcome {
                    Outcome::Connect => {
                        // Rejected only when the scheduler is already cancelling it.
                        if sim.race.on_attempt_connected(t, index).is_err() {
                            assert_eq!(sim.ledger.get(&index), Some(&Life::Started));
                        }
                    }
                    Outcome::Fail(class) => match sim.race.on_attempt_failed(t, index, class) {
                        Ok(()) => {
                            let life = sim.ledger.insert(index, Life::Failed);
                            assert_eq!(life, Some(Life::Started), "attempt {index} ended twice");
                        }
                        Err(_) => assert_eq!(sim.ledger.get(&index), Some(&Life::Started)),
                    },
                }
            }
            if sim.close_winner_at.is_some_and(|at| at <= now) {
                sim.close_winner_at = None;
                self.budget.on_connection_closed(t).unwrap();
            }
            if sim.abort_at.is_some_and(|at| at <= now) {
                sim.abort_at = None;
                sim.race.on_abort(t);
            }
            sim.race.handle_timeout(t);
        }
    }

    /// Poll every race until none has anything left: one race's release may unblock another.
    fn drain(&mut self) {
        loop {
            let mut progressed = false;
            for sim in &mut self.races {
                while let Some(action) = sim.race.poll_action(&mut self.budget) {
                    progressed = true;
                    assert!(sim.log.len() < 1_000, "a race must drain");
                    sim.log.push((self.now, action));
                    match action {
                        Action::StartAttempt { index, addr } => {
                            self.start_checks.push((
                                self.budget.attempts_in_flight(),
                                self.budget.attempt_limit(),
                            ));
                            let previous = sim.ledger.insert(index, Life::Started);
                            assert_eq!(previous, None, "attempt {index} started twice");
                            match sim.paths.get(&addr).copied().unwrap_or(Path::BlackHole) {
                                Path::Connects(after) => {
                                    sim.outcomes
                                        .push((self.now + after, index, Outcome::Connect))
                                }
                                Path::Fails(after, class) => sim.outcomes.push((
                                    self.now + after,
                                    index,
                                    Outcome::Fail(class),
                                )),
                                Path::BlackHole => {}
                            }
                        }
                        Action::CancelAttempt { index } => {
                            let life = sim.ledger.insert(index, Life::Cancelled);
                            assert_eq!(life, Some(Life::Started), "attempt {index} ended twice");
                            sim.outcomes.retain(|(_, i, _)| *i != index);
                        }
                        Action::Connected { index } => {
                            let life = sim.ledger.insert(index, Life::Connected);
                            assert_eq!(life, Some(Life::Started), "attempt {index} ended twice");
                            sim.outcomes.retain(|(_, i, _)| *i != index);
                            sim.close_winner_at = sim.hold_winner.map(|hold| self.now + hold);
                        }
                        Action::Failed { .. } => {
                            assert_eq!(sim.failures().len(), 1, "a race fails once");
                        }
                    }
                }
            }
            if !progressed {
                return;
            }
        }
    }
}

fn single(budget: BudgetConfig, sim: RaceSim) -> RaceSim {
    let mut world = World::new(budget, vec![sim]);
    world.run_until(10_000 * MS);
    assert_eq!(world.budget.attempts_in_flight(), 0);
    world.races.pop().unwrap()
}

#[test]
fn ipv6_black_hole_ipv4_wins_after_the_attempt_delay() {
    let sim = RaceSim::new(EyeballsConfig::default(), 0)
        .path(v6(1), Path::BlackHole)
        .path(v4(1), Path::Connects(20 * MS))
        .answer(0, AddressFamily::Ipv6, &[v6(1)])
        .answer(MS, AddressFamily::Ipv4, &[v4(1)]);
    let mut world = World::new(BudgetConfig::default(), vec![sim]);
    world.run_until(10_000 * MS);
    let sim = &world.races[0];
    assert_eq!(
        sim.log,
        [
            (
                0,
                Action::StartAttempt {
                    index: 0,
                    addr: v6(1)
                }
            ),
            (
                250 * MS,
                Action::StartAttempt {
                    index: 1,
                    addr: v4(1)
                }
            ),
            (270 * MS, Action::Connected { index: 1 }),
            (270 * MS, Action::CancelAttempt { index: 0 }),
        ]
    );
    assert_eq!(sim.race.status(), RaceStatus::Connected { index: 1 });
    assert_eq!(sim.race.stats().attempts_cancelled, 1);
    assert_eq!(sim.race.stats().attempts_also_ran, 1);
    assert_eq!(world.budget.attempts_in_flight(), 0);
    assert_eq!(
        world.budget.open_connections(),
        1,
        "the winner holds its budget"
    );
}

#[test]
fn both_fast_ipv6_wins_and_ipv4_never_starts() {
    let sim = single(
        BudgetConfig::default(),
        RaceSim::new(EyeballsConfig::default(), 0)
            .path(v6(1), Path::Connects(30 * MS))
            .path(v4(1), Path::Connects(10 * MS))
            .answer(0, AddressFamily::Ipv6, &[v6(1)])
            .answer(2 * MS, AddressFamily::Ipv4, &[v4(1)]),
    );
    assert_eq!(
        sim.log,
        [
            (
                0,
                Action::StartAttempt {
                    index: 0,
                    addr: v6(1)
                }
            ),
            (30 * MS, Action::Connected { index: 0 }),
        ]
    );
    assert_eq!(sim.race.stats().attempts_started, 1);
}

#[test]
fn aaaa_late_a_is_used_after_the_resolution_delay() {
    let sim = single(
        BudgetConfig::default(),
        RaceSim::new(EyeballsConfig::default(), 0)
            .path(v6(1), Path::Connects(10 * MS))
            .path(v4(1), Path::Connects(300 * MS))
            .answer(0, AddressFamily::Ipv4, &[v4(1)])
            .answer(120 * MS, AddressFamily::Ipv6, &[v6(1)]),
    );
    // A waited exactly the 50 ms Resolution Delay; the late AAAA joined the race and, with
    // the IPv4 attempt still pending after 250 ms, started next.
    assert_eq!(
        sim.starts(),
        [(50 * MS, v4(1)), (300 * MS, v6(1))],
        "{:?}",
        sim.log
    );
    assert_eq!(sim.race.status(), RaceStatus::Connected { index: 1 });
}

#[test]
fn aaaa_within_the_resolution_delay_goes_first() {
    let sim = single(
        BudgetConfig::default(),
        RaceSim::new(EyeballsConfig::default(), 0)
            .path(v6(1), Path::Connects(10 * MS))
            .path(v4(1), Path::Connects(10 * MS))
            .answer(0, AddressFamily::Ipv4, &[v4(1)])
            .answer(30 * MS, AddressFamily::Ipv6, &[v6(1)]),
    );
    assert_eq!(sim.starts(), [(30 * MS, v6(1))]);
}

#[test]
fn aaaa_failure_ends_the_resolution_delay_early() {
    let sim = single(
        BudgetConfig::default(),
        RaceSim::new(EyeballsConfig::default(), 0)
            .path(v4(1), Path::Connects(10 * MS))
            .answer(0, AddressFamily::Ipv4, &[v4(1)])
            .dns_failure(5 * MS, AddressFamily::Ipv6),
    );
    assert_eq!(sim.starts(), [(5 * MS, v4(1))]);
}

#[test]
fn every_candidate_fails_with_one_clear_failure() {
    let sim = single(
        BudgetConfig::default(),
        RaceSim::new(EyeballsConfig::default(), 0)
            .path(v6(1), Path::Fails(5 * MS, ErrorClass::Unreachable))
            .path(v6(2), Path::Fails(400 * MS, ErrorClass::TimedOut))
            .path(v4(1), Path::Fails(20 * MS, ErrorClass::Reset))
            .path(v4(2), Path::Fails(30 * MS, ErrorClass::Refused))
            .answer(0, AddressFamily::Ipv6, &[v6(1), v6(2)])
            .answer(0, AddressFamily::Ipv4, &[v4(1), v4(2)]),
    );
    // Each failure starts the next candidate at once (10 ms minimum spacing), interleaved.
    assert_eq!(
        sim.starts(),
        [
            (0, v6(1)),
            (10 * MS, v4(1)),
            (30 * MS, v6(2)),
            (280 * MS, v4(2)),
        ]
    );
    // v4(2) failed at 310 ms, v6(2) last at 430 ms: the race reports the last class, once.
    assert_eq!(
        sim.failures(),
        [RaceFailure::AllAttemptsFailed {
            last: ErrorClass::TimedOut
        }]
    );
    assert_eq!(sim.log.last().map(|(at, _)| *at), Some(430 * MS));
    assert!(sim.ledger.values().all(|life| *life == Life::Failed));
    assert!(sim.race.is_finished());
    assert_eq!(sim.race.poll_timeout(), None);
}

#[test]
fn budget_exhaustion_refuses_at_once_and_never_overcommits() {
    let budget = BudgetConfig {
        max_attempts_in_flight: 2,
        ..BudgetConfig::default()
    };
    let patient = EyeballsConfig::default();
    let impatient = EyeballsConfig {
        budget_wait_micros: 0,
        ..EyeballsConfig::default()
    };
    let race = |config, n: u8| {
        RaceSim::new(config, 0)
            .path(v4(n), Path::BlackHole)
            .answer(0, AddressFamily::Ipv4, &[v4(n)])
            .dns_failure(0, AddressFamily::Ipv6)
    };
    let mut world = World::new(
        budget,
        vec![
            race(patient, 1),
            race(patient, 2),
            race(patient, 3),
            race(impatient, 4),
        ],
    );
    world.run_until(0);
    let refusal = BudgetRefusal::AttemptsInFlight {
        in_flight: 2,
        limit: 2,
        backing_off: false,
    };
    assert_eq!(world.budget.attempts_in_flight(), 2);
    assert_eq!(world.races[0].starts().len(), 1);
    assert_eq!(world.races[1].starts().len(), 1);
    // The third waits, with a clear status; the impatient one is refused at once.
    assert_eq!(world.races[2].starts(), []);
    assert_eq!(
        world.races[2].race.status(),
        RaceStatus::WaitingForBudget { refusal }
    );
    assert_eq!(
        world.races[3].failures(),
        [RaceFailure::NoBudget { refusal }]
    );
    assert_eq!(
        world.races[3].failures()[0].to_string(),
        "gave up waiting: no connection budget: 2 connection attempts in flight, limit 2"
    );
    // A direct request is refused at once too.
    assert_eq!(world.budget.try_start_attempt(Instant::ZERO), Err(refusal));
    // Releasing budget lets the waiting race in: abort the first race at 400 ms.
    world.races[0].abort_at = Some(400 * MS);
    world.run_until(500 * MS);
    assert_eq!(world.races[2].starts(), [(400 * MS, v4(3))]);
    assert!(
        world
            .start_checks
            .iter()
            .all(|(in_flight, limit)| in_flight <= limit)
    );
    // Nobody releases again: the patient race would wait at most 1 s; here it has its attempt.
    world.run_until(5_000 * MS);
    assert_eq!(world.budget.attempts_in_flight(), 2);
}

#[test]
fn waiting_race_fails_clearly_when_budget_never_comes() {
    let budget = BudgetConfig {
        max_open_connections: 1,
        ..BudgetConfig::default()
    };
    let holder = RaceSim::new(EyeballsConfig::default(), 0)
        .path(v4(1), Path::Connects(5 * MS))
        .answer(0, AddressFamily::Ipv4, &[v4(1)])
        .dns_failure(0, AddressFamily::Ipv6);
    let starved = RaceSim::new(EyeballsConfig::default(), 0)
        .answer(10 * MS, AddressFamily::Ipv4, &[v4(2)])
        .dns_failure(10 * MS, AddressFamily::Ipv6);
    let mut world = World::new(budget, vec![holder, starved]);
    world.run_until(5_000 * MS);
    assert_eq!(
        world.races[0].race.status(),
        RaceStatus::Connected { index: 0 }
    );
    let starved = &world.races[1];
    assert_eq!(starved.starts(), []);
    assert_eq!(
        starved.failures(),
        [RaceFailure::NoBudget {
            refusal: BudgetRefusal::Connections {
                in_use: 1,
                limit: 1,
                backing_off: false
            }
        }]
    );
    // It failed when its 1 s wait was over, not later.
    assert_eq!(starved.log.last().map(|(at, _)| *at), Some(1_010 * MS));
}

#[test]
fn resource_errors_back_off_and_recover_step_by_step() {
    let budget = BudgetConfig::default();
    // Ten races whose first attempts die with EMFILE at 10 ms, then connect via IPv4.
    let races = (1..=10)
        .map(|n| {
            RaceSim::new(EyeballsConfig::default(), 0)
                .path(
                    v6(u16::from(n)),
                    Path::Fails(10 * MS, ErrorClass::ResourceExhausted),
                )
                .path(v4(n), Path::Connects(5 * MS))
                .answer(0, AddressFamily::Ipv6, &[v6(u16::from(n))])
                .answer(0, AddressFamily::Ipv4, &[v4(n)])
        })
        .collect();
    let mut world = World::new(budget, races);
    world.run_until(10 * MS);
    // One burst of errors halves the limits once: 64 -> 32 attempts, 224 -> 112 connections.
    assert!(world.budget.is_backing_off());
    assert_eq!(world.budget.attempt_limit(), 32);
    assert_eq!(world.budget.connection_limit(), 112);
    assert_eq!(world.budget.stats().resource_errors, 10);
    assert_eq!(world.budget.stats().backoffs, 1);
    // Every race still connected through IPv4 within the lowered budget.
    world.run_until(100 * MS);
    assert!(
        world
            .races
            .iter()
            .all(|sim| sim.race.status() == RaceStatus::Connected { index: 1 })
    );
    // Quiet time: +8 attempts and +28 connections per second until fully recovered.
    let mut limits = Vec::new();
    for second in 1..=5 {
        world.run_until(10 * MS + second * 1_000 * MS);
        limits.push((
            world.budget.attempt_limit(),
            world.budget.connection_limit(),
        ));
    }
    assert_eq!(
        limits,
        [(40, 140), (48, 168), (56, 196), (64, 224), (64, 224)]
    );
    assert!(!world.budget.is_backing_off());
    assert_eq!(world.budget.poll_timeout(), None);
}

fn path() -> impl Strategy<Value = Path> {
    let class = prop::sample::select(ErrorClass::ALL.to_vec());
    prop_oneof![
        3 => (0u64..600).prop_map(|ms| Path::Connects(ms * MS)),
        3 => ((0u64..600), class).prop_map(|(ms, class)| Path::Fails(ms * MS, class)),
        1 => Just(Path::BlackHole),
    ]
}

#[derive(Clone, Debug)]
struct RaceSpec {
    start: u64,
    aaaa: Vec<Path>,
    a: Vec<Path>,
    aaaa_at: Option<u64>,
    a_at: Option<u64>,
    timeout_ms: u64,
    budget_wait_ms: u64,
    hold_ms: Option<u64>,
    abort_ms: Option<u64>,
}

fn race_spec() -> impl Strategy<Value = RaceSpec> {
    (
        0u64..2_000,
        prop::collection::vec(path(), 0..4),
        prop::collection::vec(path(), 0..4),
        prop::option::weighted(0.9, 0u64..200),
        prop::option::weighted(0.9, 0u64..200),
        prop::sample::select(vec![0u64, 300, 1_000]),
        prop::sample::select(vec![0u64, 100, 1_000]),
        prop::option::of(0u64..3_000),
        prop::option::weighted(0.2, 0u64..3_000),
    )
        .prop_map(
            |(start, aaaa, a, aaaa_at, a_at, timeout_ms, budget_wait_ms, hold_ms, abort_ms)| {
                RaceSpec {
                    start,
                    aaaa,
                    a,
                    aaaa_at,
                    a_at,
                    timeout_ms,
                    budget_wait_ms,
                    hold_ms,
                    abort_ms,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Across random races, paths and failures sharing one small budget: no attempt starts
    /// beyond the budget, every started attempt ends exactly once, and the budget's counters
    /// match what the host sees.
    #[test]
    fn budget_holds_and_every_attempt_ends_once(
        attempts in 1u32..5,
        open in 1u32..8,
        specs in prop::collection::vec(race_spec(), 1..7),
    ) {
        let budget = BudgetConfig {
            max_attempts_in_flight: attempts,
            max_open_connections: open,
            fd_limit: 10_000,
            backoff_floor: 1,
            ..BudgetConfig::default()
        };
        let mut races = Vec::new();
        for (n, spec) in specs.iter().enumerate() {
            let config = EyeballsConfig {
                attempt_timeout_micros: spec.timeout_ms * MS,
                budget_wait_micros: spec.budget_wait_ms * MS,
                ..EyeballsConfig::default()
            };
            let start = spec.start * MS;
            let mut sim = RaceSim::new(config, start);
            let tag = u8::try_from(n).unwrap() * 10;
            let aaaa: Vec<SocketAddr> =
                (0..spec.aaaa.len()).map(|i| v6(u16::from(tag) + i as u16)).collect();
            let a: Vec<SocketAddr> =
                (0..spec.a.len()).map(|i| v4(tag + i as u8)).collect();
            for (addr, path) in aaaa.iter().zip(&spec.aaaa).chain(a.iter().zip(&spec.a)) {
                sim = sim.path(*addr, *path);
            }
            sim = match spec.aaaa_at {
                Some(at) => sim.answer(start + at * MS, AddressFamily::Ipv6, &aaaa),
                None => sim.dns_failure(start + 250 * MS, AddressFamily::Ipv6),
            };
            sim = match spec.a_at {
                Some(at) => sim.answer(start + at * MS, AddressFamily::Ipv4, &a),
                None => sim.dns_failure(start + 250 * MS, AddressFamily::Ipv4),
            };
            sim.hold_winner = spec.hold_ms.map(|ms| ms * MS);
            sim.abort_at = spec.abort_ms.map(|ms| start + ms * MS);
            races.push(sim);
        }
        let mut world = World::new(budget, races);
        let mut t = 0;
        while t < 20_000 * MS {
            t += 50 * MS;
            world.run_until(t);
            let in_flight: usize = world.races.iter().map(|s| s.race.attempts_in_flight()).sum();
            prop_assert_eq!(world.budget.attempts_in_flight() as usize, in_flight);
            prop_assert!(world.budget.attempts_in_flight() <= attempts);
            let open_now = world.races.iter().filter(|s| {
                matches!(s.race.status(), RaceStatus::Connected { .. })
                    && (s.hold_winner.is_none() || s.close_winner_at.is_some())
            }).count();
            prop_assert_eq!(world.budget.open_connections() as usize, open_now);
        }
        // Whatever is left (black holes without timeouts) is aborted and drained.
        for sim in &mut world.races {
            sim.race.on_abort(Instant::from_micros(world.now));
        }
        world.drain();
        for (in_flight, limit) in &world.start_checks {
            prop_assert!(in_flight <= limit, "started beyond the budget");
        }
        for sim in &world.races {
            prop_assert!(sim.race.is_finished());
            prop_assert!(sim.failures().len() <= 1);
            for (index, life) in &sim.ledger {
                prop_assert!(*life != Life::Started, "attempt {} never ended", index);
            }
            let stats = sim.race.stats();
            let ended = sim.ledger.len() as u32;
            prop_assert_eq!(stats.attempts_started, ended);
        }
        prop_assert_eq!(world.budget.attempts_in_flight(), 0);
        prop_assert_eq!(world.budget.stats().unbalanced_releases, 0);
    }
}
