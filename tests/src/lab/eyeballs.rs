//! IPv6 black hole scenario (seeds 002 and 003): a proxy on BSD sockets connects to servers
//! whose IPv6 address swallows every packet while IPv4 answers in 20 ms, under a GUI process's
//! descriptor limit.
//!
//! One connect is requested every 10 ms; each connection, once up, is used for 3 s and closed.
//! `RLIMIT_NOFILE` is 256, 32 descriptors of which the host keeps for itself, so 224 are left
//! for sockets. A socket connecting into the black hole gets no answer; the host's socket layer
//! gives up after 75 s (the macOS TCP connect timeout).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;

use tidegate_core::{
    AddressFamily, AppId, BudgetConfig, DEFAULT_FLOW_SLOTS, DEFAULT_RACE_SLOTS, DestinationKey,
    ErrorClass, FlowClass, FlowId, FlowInfo, FlowSlot, Instant, Protocol, ProxyConfig, ProxyEngine,
    ProxyError, ProxyEvent, RaceSlot,
};

use super::{HUNG_AFTER_SECONDS, Host, Row, Scale};

const ID: &str = "ipv6-black-hole";
const SCENARIO: &str = "IPv6 black hole, a connect every 10 ms, 256 descriptors";
const MS: u64 = 1_000;
const SECOND: u64 = 1_000_000;
const REQUEST_EVERY_US: u64 = 10 * MS;
const IPV4_HANDSHAKE_US: u64 = 20 * MS;
/// The A answer arrives this long after the AAAA answer.
const A_AFTER_AAAA_US: u64 = MS;
const SOCKET_CONNECT_TIMEOUT_US: u64 = 75 * SECOND;
const CONNECTION_HOLD_US: u64 = 3_000 * MS;
/// Descriptors left for sockets: the GUI default of 256 less the host's own 32.
const SOCKET_DESCRIPTORS: u64 = BudgetConfig::DEFAULT_FD_LIMIT - BudgetConfig::DEFAULT_FD_RESERVE;
const HUNG_AFTER_US: u64 = (HUNG_AFTER_SECONDS * 1e6) as u64;

/// The naive host connects to IPv6, then IPv4, one after the other, with no budget; the tidegate
/// host runs every connect as a flow of one default [`ProxyEngine`]: a Happy Eyeballs race per
/// flow, all under the engine's one connection budget.
pub(super) fn ipv6_black_hole(scale: Scale) -> [Row; 2] {
    let connects = match scale {
        Scale::Full => 1_000,
        Scale::Quick => 300,
    };
    [naive(connects), tidegate(connects)]
}

fn v6(server: u64) -> SocketAddr {
    SocketAddr::from((
        [0x2001, 0xdb8, 0, 0, 0, 0, 0, (server % 60_000) as u16],
        443,
    ))
}

fn v4(server: u64) -> SocketAddr {
    SocketAddr::from(([198, 51, 100, (server % 250) as u8], 443))
}

/// What became of each connect request: (requested at, resolved at, connected).
type Outcomes = Vec<(u64, Option<u64>, bool)>;

fn naive(connects: u64) -> Row {
    // Release times of the descriptors in use.
    let mut in_use: BinaryHeap<Reverse<u64>> = BinaryHeap::new();
    let mut outcomes: Outcomes = Vec::new();
    let mut refused = 0u64;
    for request in 0..connects {
        let at = request * REQUEST_EVERY_US;
        while in_use.peek().is_some_and(|Reverse(free)| *free <= at) {
            in_use.pop();
        }
        if in_use.len() as u64 >= SOCKET_DESCRIPTORS {
            // socket() fails with EMFILE: the connect fails at once.
            refused += 1;
            outcomes.push((at, Some(at), false));
            continue;
        }
        // IPv6 first: nothing comes back until the socket layer gives up; then IPv4 on a new
        // socket (the old descriptor was just closed), used for 3 s.
        let connected = at + SOCKET_CONNECT_TIMEOUT_US + IPV4_HANDSHAKE_US;
        in_use.push(Reverse(connected + CONNECTION_HOLD_US));
        outcomes.push((at, Some(connected), true));
    }
    let mut row = Row::new(ID, SCENARIO, "002, 003", Host::Naive);
    row.connects_refused = Some(refused);
    fill(&mut row, &outcomes);
    row.outcome = format!(
        "connects take {:.2} s (IPv6 first); {refused} failed with EMFILE",
        row.median_connect_seconds.unwrap_or(f64::NAN)
    );
    row
}

/// The engine of the tidegate host: the default flow table and race table, on the heap.
type Engine = ProxyEngine<Vec<FlowSlot>, Vec<RaceSlot>>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Request(usize),
    Aaaa(usize),
    A(usize),
    /// Attempt `attempt` of request `r`'s race connected (true) or timed out (false).
    Attempt(usize, usize, bool),
    Close(usize),
    Timer,
}

/// What the host knows of one connect request.
struct Request {
    requested_at: u64,
    resolved_at: Option<u64>,
    connected: bool,
    /// The flow the engine admitted for it, while it is open.
    flow: Option<FlowId>,
    /// Sockets the host holds open for the race's attempts, by attempt index.
    socket_open: [bool; 16],
}

struct World {
    now: u64,
    seq: u64,
    events: BinaryHeap<Reverse<(u64, u64, Event)>>,
    engine: Engine,
    requests: Vec<Request>,
    by_flow: HashMap<FlowId, usize>,
    timer: Option<u64>,
    descriptors: u64,
    descriptors_peak: u64,
    beyond_budget: u64,
    also_ran: u64,
}

impl World {
    fn schedule(&mut self, at: u64, event: Event) {
        self.seq += 1;
        self.events.push(Reverse((at, self.seq, event)));
    }

    /// The request flow `id` was admitted for.
    fn request_of(&self, id: FlowId) -> usize {
        *self
            .by_flow
            .get(&id)
            .expect("the engine names flows it admitted")
    }

    /// A request ends without a connection now (refused, failed or closed by the engine).
    fn refuse(&mut self, r: usize) {
        let request = &mut self.requests[r];
        request.resolved_at.get_or_insert(self.now);
        if let Some(id) = request.flow.take() {
            self.by_flow.remove(&id);
        }
    }

    /// Drain the engine's events, acting on each as a BSD-socket host does, then re-arm the
    /// one timer.
    fn drain(&mut self) {
        let now = self.now;
        let t = Instant::from_micros(now);
        while let Some(event) = self.engine.poll_event() {
            match event {
                ProxyEvent::StartAttempt { id, attempt, addr } => {
                    let r = self.request_of(id);
                    self.requests[r].socket_open[attempt] = true;
                    self.descriptors += 1;
                    self.descriptors_peak = self.descriptors_peak.max(self.descriptors);
                    let stats = self.engine.stats();
                    let in_use = stats.attempts_in_flight + stats.open_connections;
                    if stats.attempts_in_flight > stats.attempt_limit
                        || in_use > stats.connection_limit
                        || self.descriptors > SOCKET_DESCRIPTORS
                    {
                        self.beyond_budget += 1;
                    }
                    let (after, connects) = match AddressFamily::of(&addr) {
                        AddressFamily::Ipv4 => (IPV4_HANDSHAKE_US, true),
                        AddressFamily::Ipv6 => (SOCKET_CONNECT_TIMEOUT_US, false),
                    };
                    self.schedule(now + after, Event::Attempt(r, attempt, connects));
                }
                ProxyEvent::CancelAttempt { id, attempt } => {
                    if let Some(&r) = self.by_flow.get(&id)
                        && std::mem::take(&mut self.requests[r].socket_open[attempt])
                    {
                        self.descriptors -= 1;
                    }
                    self.also_ran += 1;
                }
                ProxyEvent::Established { id, attempt } => {
                    // The socket stays open as the flow's connection.
                    let r = self.request_of(id);
                    let request = &mut self.requests[r];
                    request.socket_open[attempt] = false;
                    request.connected = true;
                    request.resolved_at = Some(now);
                    self.schedule(now + CONNECTION_HOLD_US, Event::Close(r));
                }
                ProxyEvent::ConnectFailed { id, .. } => {
                    let r = self.request_of(id);
                    self.refuse(r);
                }
                ProxyEvent::CloseFlow { id, .. } => {
                    let r = self.request_of(id);
                    self.engine
                        .on_closed(t, id)
                        .expect("the engine asked for it");
                    self.refuse(r);
                }
                // Nothing is relayed here.
                _ => {}
            }
        }
        if let Some(at) = self.engine.poll_timeout().map(Instant::as_micros)
            && self.timer.is_none_or(|armed| at < armed)
        {
            self.timer = Some(at);
            self.schedule(at.max(now), Event::Timer);
        }
    }

    fn deliver(&mut self, event: Event) {
        let t = Instant::from_micros(self.now);
        match event {
            Event::Request(r) => {
                // Each connect is a flow of its own app and server, so only the connecting
                // cap and the budget can refuse it.
                let info = FlowInfo {
                    app: AppId(r as u64),
                    destination: DestinationKey(r as u64),
                    protocol: Protocol::Tcp,
                    class: FlowClass::Stream,
                };
                match self.engine.on_new_flow(t, info).id() {
                    Some(id) => {
                        self.requests[r].flow = Some(id);
                        self.by_flow.insert(id, r);
                        self.schedule(self.now, Event::Aaaa(r));
                        self.schedule(self.now + A_AFTER_AAAA_US, Event::A(r));
                    }
                    None => self.refuse(r),
                }
            }
            Event::Aaaa(r) | Event::A(r) => {
                let Some(id) = self.requests[r].flow else {
                    return;
                };
                let answer = if matches!(event, Event::Aaaa(_)) {
                    self.engine
                        .on_resolved(t, id, AddressFamily::Ipv6, &[v6(r as u64)])
                } else {
                    self.engine
                        .on_resolved(t, id, AddressFamily::Ipv4, &[v4(r as u64)])
                        .and_then(|_| self.engine.on_resolution_done(t, id).map(|()| 1))
                };
                if answer == Err(ProxyError::NoRaceSlot) {
                    // No race slot for it now: the host fails the connect at once.
                    self.engine.on_closed(t, id).expect("an open flow closes");
                    self.refuse(r);
                }
            }
            Event::Attempt(r, attempt, connected) => {
                let request = &mut self.requests[r];
                let Some(id) = request.flow else {
                    return;
                };
                if !request.socket_open[attempt] {
                    return; // cancelled earlier: the socket is closed
                }
                if connected {
                    let _ = self.engine.on_attempt_connected(t, id, attempt);
                } else if self
                    .engine
                    .on_attempt_failed(t, id, attempt, ErrorClass::TimedOut)
                    .is_ok()
                {
                    self.requests[r].socket_open[attempt] = false;
                    self.descriptors -= 1;
                }
            }
            Event::Close(r) => {
                let id = self.requests[r].flow.take().expect("a connected flow");
                self.by_flow.remove(&id);
                self.engine
                    .on_closed(t, id)
                    .expect("an established flow closes");
                self.descriptors -= 1;
            }
            Event::Timer => {
                self.timer = None;
                self.engine.handle_timeout(t);
            }
        }
    }

    fn run(&mut self) {
        while let Some(Reverse((at, _, event))) = self.events.pop() {
            self.now = self.now.max(at);
            self.deliver(event);
            self.drain();
        }
    }
}

/// Run one connect per request time through one [`ProxyEngine`] at default settings (flow
/// table, connection budget and races), and report what became of each.
fn run_races(requests: &[u64]) -> (World, Outcomes) {
    let config = ProxyConfig::DEFAULT;
    let flows = vec![FlowSlot::EMPTY; DEFAULT_FLOW_SLOTS];
    let races = vec![RaceSlot::EMPTY; DEFAULT_RACE_SLOTS];
    let engine = ProxyEngine::new(Instant::from_micros(0), flows, races, config)
        .expect("defaults are valid");
    let mut world = World {
        now: 0,
        seq: 0,
        events: BinaryHeap::new(),
        engine,
        requests: requests
            .iter()
            .map(|&at| Request {
                requested_at: at,
                resolved_at: None,
                connected: false,
                flow: None,
                socket_open: [false; 16],
            })
            .collect(),
        by_flow: HashMap::new(),
        timer: None,
        descriptors: 0,
        descriptors_peak: 0,
        beyond_budget: 0,
        also_ran: 0,
    };
    for (r, &at) in requests.iter().enumerate() {
        world.schedule(at, Event::Request(r));
    }
    world.run();
    let outcomes: Outcomes = world
        .requests
        .iter()
        .map(|s| (s.requested_at, s.resolved_at, s.connected))
        .collect();
    (world, outcomes)
}

fn tidegate(connects: u64) -> Row {
    let requests: Vec<u64> = (0..connects).map(|r| r * REQUEST_EVERY_US).collect();
    let (world, outcomes) = run_races(&requests);
    let mut row = Row::new(ID, SCENARIO, "002, 003", Host::Tidegate);
    describe_tidegate(&mut row, &world, &outcomes);
    row
}

/// The outcome columns of a tidegate row.
fn describe_tidegate(row: &mut Row, world: &World, outcomes: &Outcomes) {
    let refused = outcomes.iter().filter(|o| o.1.is_some() && !o.2).count() as u64;
    let slowest_refusal = outcomes
        .iter()
        .filter(|o| !o.2)
        .filter_map(|o| o.1.map(|done| done - o.0))
        .max()
        .unwrap_or(0);
    row.connects_refused = Some(refused);
    row.beyond_budget = Some(world.beyond_budget);
    row.slowest_refusal_seconds = Some(slowest_refusal as f64 / 1e6);
    fill(row, outcomes);
    let refused_when = if slowest_refusal == 0 {
        "at once".to_owned()
    } else {
        format!("within {:.2} s", slowest_refusal as f64 / 1e6)
    };
    row.outcome = format!(
        "IPv4 up in {:.2} s, {} losers cancelled; {refused} refused {refused_when}; \
         {}/{SOCKET_DESCRIPTORS} fds",
        row.median_connect_seconds.unwrap_or(f64::NAN),
        world.also_ran,
        world.descriptors_peak
    );
}

const BURST_ID: &str = "ipv6-black-hole-burst";
const BURST_SCENARIO: &str = "IPv6 black hole, a burst of concurrent connects, default settings";

/// The burst sizes the scenario runs: around the default attempt limit (64) and past the
/// descriptor budget (224 sockets).
const BURST_SIZES: [u64; 3] = [64, 128, 512];

/// Many connects at once to servers behind an IPv6 black hole, at default settings: a race
/// waiting for budget behind its own IPv6 attempt trades it for IPv4 when its budget wait ends,
/// so every connect is up over IPv4 or refused within about a second; the naive host waits for
/// the socket layer's 75 s timeout on each.
/// The burst is cheap to simulate, so it runs at every size whatever the lab's scale.
pub(super) fn ipv6_black_hole_burst() -> Vec<Row> {
    let mut rows = Vec::new();
    for size in BURST_SIZES {
        let variant = match size {
            64 => "64 at once",
            128 => "128 at once",
            _ => "512 at once",
        };
        let mut naive = naive_burst(size);
        naive.variant = Some(variant);
        rows.push(naive);
        let (world, outcomes) = run_races(&vec![0; size as usize]);
        let mut row = Row::new(BURST_ID, BURST_SCENARIO, "002, 003", Host::Tidegate);
        row.variant = Some(variant);
        describe_tidegate(&mut row, &world, &outcomes);
        rows.push(row);
    }
    rows
}

/// The naive host for a burst: IPv6 first on every connect, then IPv4 once the socket layer
/// gives up; every descriptor it cannot get fails at once.
fn naive_burst(size: u64) -> Row {
    let mut outcomes: Outcomes = Vec::new();
    let mut refused = 0u64;
    for request in 0..size {
        if request >= SOCKET_DESCRIPTORS {
            refused += 1;
            outcomes.push((0, Some(0), false));
        } else {
            outcomes.push((0, Some(SOCKET_CONNECT_TIMEOUT_US + IPV4_HANDSHAKE_US), true));
        }
    }
    let mut row = Row::new(BURST_ID, BURST_SCENARIO, "002, 003", Host::Naive);
    row.connects_refused = Some(refused);
    fill(&mut row, &outcomes);
    row.outcome =
        format!("every connect waits out the 75 s IPv6 timeout; {refused} failed with EMFILE");
    row
}

/// Time-to-connect and hung connections from the outcomes.
fn fill(row: &mut Row, outcomes: &Outcomes) {
    let mut connect_times: Vec<u64> = outcomes
        .iter()
        .filter(|o| o.2)
        .filter_map(|o| o.1.map(|done| done - o.0))
        .collect();
    connect_times.sort_unstable();
    row.median_connect_seconds = connect_times
        .get(connect_times.len() / 2)
        .map(|&us| us as f64 / 1e6);
    row.max_connect_seconds = connect_times.last().map(|&us| us as f64 / 1e6);
    let hung = outcomes
        .iter()
        .filter(|o| o.1.is_none_or(|done| done - o.0 > HUNG_AFTER_US))
        .count() as u64;
    row.hung_connections = Some(hung);
}
