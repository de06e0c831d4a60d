//! A TCP relay on loopback driven by the flow governor, the upstream server behind it, and a
//! helper to connect from a chosen loopback source address (Linux).
//!
//! ```text
//!   flooder 127.0.0.2 --+                                  +--> upstream 127.0.0.1:<port>
//!                       +--> relay 127.0.0.1:<port> -------+     echo, or "GET <id> <len>\n"
//!   client  127.0.0.3 --+    one poll loop, FlowGovernor         -> <len> bytes, then close
//! ```
//!
//! [`Relay`] is a small app proxy: one thread, one `poll(2)` loop over non-blocking sockets, and
//! one [`FlowGovernor`] that nothing else touches (the governor is not thread-safe; here it
//! never has to be). For each connection it accepts it derives the app from the client's source
//! address (a real proxy would use the source app's signing identifier) and asks
//! [`FlowGovernor::on_new_flow`]:
//!
//! - **Accepted**: connect to the upstream (on loopback the connect completes at once, so the
//!   loop does it inline between `on_connecting` and `on_connected`) and relay bytes both ways.
//! - **Accepted after evicting**: close the evicted flow's two sockets first and report it with
//!   `on_closed`, then proceed as above.
//! - **Rejected**: close the client connection at once. That is what an app proxy does: it
//!   cannot pass a flow on, so the app sees a failed connection. A transparent proxy would
//!   instead answer `false` from `handleNewFlow` and the system would carry the flow directly.
//!
//! Relaying follows the governor's accounting exactly: bytes read from the client are reported
//! with `on_local_read` and stay in the flow's outbound buffer until written to the upstream
//! (`on_remote_sent`); bytes read from the upstream are reported with `on_remote_read` and stay
//! in the inbound buffer until written to the client (`on_local_written`). After every read the
//! loop asks `can_read_local` / `can_read_remote`; a side told to stop leaves the poll set until
//! the governor's `ResumeReadLocal` / `ResumeReadRemote` notification. So the relay's buffers
//! are the governor's pending bytes, and a flow never buffers more than the per-flow high
//! watermark plus one read in each direction. Notifications are drained after every input, the
//! poll timeout honours [`FlowGovernor::poll_timeout`], and a `Close` notification (idle or
//! connect timeout) closes the flow's sockets. End of stream is passed on as a half-close
//! (`shutdown(Write)`); a flow ends when both directions have ended and both buffers are empty,
//! or at once when either socket fails (a reset).
//!
//! The relay also checks the governor as it goes, for the test to assert: open flows against
//! the global cap, flows in the table against the slot count, each app's flows against its cap,
//! and the relay's buffers against the governor's pending counters after every step.
//!
//! Only loopback addresses are accepted anywhere in this module: [`Relay::start`],
//! [`Upstream::start`] and [`connect_from`] refuse any other address.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant as StdInstant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{
    AddressFamily, SockFlag, SockType, SockaddrIn, bind, connect, setsockopt, socket, sockopt,
};
use tidegate_core::{
    Admission, AppId, CloseReason, DestinationKey, FlowClass, FlowError, FlowGovernor, FlowId,
    FlowInfo, FlowOutcome, FlowPolicy, FlowSlot, FlowStats, Instant, Notification, Pressure,
    Protocol, RejectReason, classify_errno,
};

/// How long the relay's inline connect to the upstream may take before the flow fails.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest the poll loop sleeps, so a stop request is seen promptly.
const MAX_POLL_WAIT_MS: u16 = 20;
/// Read and write rounds one flow gets per wake-up before the loop moves on.
const ROUNDS_PER_SERVICE: usize = 64;
/// Upstream connections that go silent for this long are dropped, so no thread outlives a test.
const UPSTREAM_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest request line the upstream accepts.
const MAX_REQUEST_LINE: usize = 64;

/// How a [`Relay`] is set up.
#[derive(Clone, Debug)]
pub struct RelaySpec {
    /// Where every accepted flow is relayed to; must be a loopback address.
    pub upstream: SocketAddr,
    /// The governor's policy.
    pub policy: FlowPolicy,
    /// Slots in the governor's table; at least [`FlowPolicy::min_slots`].
    pub slots: usize,
    /// Bytes per read from either socket.
    pub read_chunk: usize,
    /// `SO_SNDBUF` of the relay's client-facing sockets (the kernel doubles it), or `None` for
    /// the default. Small, so a slow client pushes back into the relay and the governor's
    /// watermarks, not the kernel, bound what is buffered.
    pub client_send_buffer: Option<usize>,
    /// The relay stops by itself after this long even if nobody stops it.
    pub max_duration: Duration,
}

impl RelaySpec {
    /// A relay to `upstream` under `policy`, with the minimum slot count, 8 KiB reads, a
    /// 16 KiB client send buffer and a two-minute lifetime.
    pub fn new(upstream: SocketAddr, policy: FlowPolicy) -> RelaySpec {
        RelaySpec {
            upstream,
            policy,
            slots: policy.min_slots(),
            read_chunk: 8 * 1024,
            client_send_buffer: Some(16 * 1024),
            max_duration: Duration::from_secs(120),
        }
    }
}

/// What happened to the flows of one app (one client source address).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppCounts {
    /// Flows admitted, with or without an eviction.
    pub admitted: u64,
    /// Of those, flows admitted by evicting another app's flow.
    pub admitted_after_evicting: u64,
    /// Flows refused, indexed by [`RejectReason`] as `u8`.
    pub rejected: [u64; 4],
    /// Flows of this app the relay closed because the governor evicted them.
    pub evicted: u64,
    /// Flows closed on a governor `Close` notification (idle or connect timeout).
    pub closed_by_timeout: u64,
    /// Flows that ended by themselves: both directions finished.
    pub finished: u64,
    /// Flows that ended because a socket failed (a reset).
    pub reset: u64,
    /// Flows closed before any byte moved.
    pub also_ran: u64,
    /// Flows whose upstream connect failed.
    pub connect_failed: u64,
    /// Flows still open when the relay stopped, closed by the stop.
    pub open_at_stop: u64,
    /// The most flows the governor counted open for this app, sampled after every admission.
    pub max_open: u32,
}

impl AppCounts {
    /// Flows refused, all reasons.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().sum()
    }

    /// Flows refused for `reason`.
    pub fn rejected_for(&self, reason: RejectReason) -> u64 {
        self.rejected.get(reason as usize).copied().unwrap_or(0)
    }
}

/// What a [`Relay`] saw and did, returned by [`Relay::stop`].
#[derive(Clone, Debug, Default)]
pub struct RelayReport {
    /// The governor's statistics after the relay closed its last flow.
    pub stats: FlowStats,
    /// Per app, keyed by the client's source address.
    pub apps: BTreeMap<Ipv4Addr, AppCounts>,
    /// The most flows the governor counted open, sampled after every admission.
    pub max_open_flows: u32,
    /// The most slots taken (open plus closing flows), sampled after every admission.
    pub max_flows_in_table: u32,
    /// The largest buffer of one flow in one direction, in bytes.
    pub max_flow_buffer_bytes: u64,
    /// The most bytes pending over all flows, as the governor counted them.
    pub max_total_pending_bytes: u64,
    /// Whether the governor's global high watermark was ever seen reached.
    pub global_pause_seen: bool,
    /// Reads the relay paused because `can_read_*` said no after a read or a connect.
    pub read_pauses: u64,
    /// Paused reads restarted by a resume notification.
    pub read_resumes: u64,
    /// Reads still paused when their flow closed.
    pub paused_at_close: u64,
    /// Resume notifications for a read the relay had not paused (must stay 0).
    pub unexpected_resumes: u64,
    /// Times the relay's buffers disagreed with the governor's pending counters (must stay 0).
    pub accounting_mismatches: u64,
    /// `Close` notifications drained.
    pub close_notifications: u64,
    /// Bytes written to the upstream.
    pub bytes_to_upstream: u64,
    /// Bytes written to clients.
    pub bytes_to_clients: u64,
    /// Flows ended by a socket error, by error kind.
    pub resets_by_kind: BTreeMap<String, u64>,
    /// Times `poll` returned.
    pub poll_wakeups: u64,
    /// Whether the relay stopped because `max_duration` ran out rather than by request.
    pub hit_max_duration: bool,
    /// Changes of memory pressure level passed to the governor ([`Relay::set_pressure`]).
    pub pressure_changes: u64,
    /// Reads paused when a pressure level shrank the watermarks below what a flow held (also
    /// counted in `read_pauses`).
    pub pressure_pauses: u64,
    /// Governor calls refused, unexpected outcomes, poll or accept failures (must stay empty).
    pub errors: Vec<String>,
}

/// A running relay: a listener on 127.0.0.1 and the thread that drives it.
#[derive(Debug)]
pub struct Relay {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    open_flows: Arc<AtomicU32>,
    pending: Arc<AtomicU64>,
    pressure: Arc<AtomicU8>,
    pressure_applied: Arc<AtomicU8>,
    thread: JoinHandle<RelayReport>,
}

impl Relay {
    /// Bind a listener on 127.0.0.1 (a free port) and start relaying to `spec.upstream`.
    ///
    /// # Errors
    ///
    /// A non-loopback upstream, a policy the governor refuses, or a socket error.
    pub fn start(spec: RelaySpec) -> io::Result<Relay> {
        require_loopback(spec.upstream.ip())?;
        let slots = vec![FlowSlot::EMPTY; spec.slots].into_boxed_slice();
        let governor = FlowGovernor::new(Instant::ZERO, slots, spec.policy)
            .map_err(|error| io::Error::new(ErrorKind::InvalidInput, error.to_string()))?;
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let open_flows = Arc::new(AtomicU32::new(0));
        let pending = Arc::new(AtomicU64::new(0));
        let pressure = Arc::new(AtomicU8::new(Pressure::Normal as u8));
        let pressure_applied = Arc::new(AtomicU8::new(Pressure::Normal as u8));
        let relay = RelayLoop {
            destination: DestinationKey::from_bytes(spec.upstream.to_string().as_bytes()),
            scratch: vec![0; spec.read_chunk.max(1)],
            spec,
            listener,
            governor,
            flows: HashMap::new(),
            started: StdInstant::now(),
            stop: Arc::clone(&stop),
            open_flows: Arc::clone(&open_flows),
            pending: Arc::clone(&pending),
            pressure_wanted: Arc::clone(&pressure),
            pressure_applied: Arc::clone(&pressure_applied),
            pressure: Pressure::Normal,
            report: RelayReport::default(),
        };
        let thread = thread::Builder::new()
            .name("tidegate-relay".to_owned())
            .spawn(move || relay.run())?;
        Ok(Relay {
            addr,
            stop,
            open_flows,
            pending,
            pressure,
            pressure_applied,
            thread,
        })
    }

    /// Pass memory pressure `level` to the relay's governor: the loop applies it at its next
    /// turn (within 20 ms), pausing the reads its shrunk watermarks no longer allow.
    pub fn set_pressure(&self, level: Pressure) {
        self.pressure.store(level as u8, Ordering::Release);
    }

    /// The pressure level the loop last applied.
    pub fn pressure_applied(&self) -> Pressure {
        match self.pressure_applied.load(Ordering::Acquire) {
            0 => Pressure::Normal,
            1 => Pressure::Elevated,
            _ => Pressure::Critical,
        }
    }

    /// Bytes pending in the relay's buffers over all flows, as the governor counts them, updated
    /// after every read and write.
    pub fn pending_bytes(&self) -> u64 {
        self.pending.load(Ordering::Acquire)
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Flows the relay holds sockets for now, updated as flows open and close.
    pub fn open_flows(&self) -> u32 {
        self.open_flows.load(Ordering::Acquire)
    }

    /// Stop the relay: it closes every flow it still holds (reporting each to the governor) and
    /// returns its report, or the panic if its thread panicked.
    pub fn stop(self) -> thread::Result<RelayReport> {
        self.stop.store(true, Ordering::Release);
        self.thread.join()
    }
}

/// What the upstream server saw, returned by [`Upstream::stop`].
#[derive(Clone, Debug, Default)]
pub struct UpstreamReport {
    /// Connections accepted.
    pub connections: u64,
    /// Requests answered (`GET` connections).
    pub requests: u64,
    /// Echo connections.
    pub echo_connections: u64,
    /// Bytes echoed.
    pub echoed_bytes: u64,
    /// Connections the relay reset (it closes evicted flows abruptly).
    pub resets: u64,
    /// Connection threads that panicked (must stay 0).
    pub panics: u64,
    /// Malformed requests and socket errors other than a reset by the relay.
    pub errors: Vec<String>,
}

/// The upstream server on 127.0.0.1: one blocking thread per connection.
///
/// A connection whose first byte is `G` is a request `GET <id> <len>\n`: the server answers
/// with `len` bytes of [`response_byte`]`(id, offset)` and closes. Any other connection is
/// echoed, byte for byte, until the relay closes it.
#[derive(Debug)]
pub struct Upstream {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<UpstreamReport>,
}

impl Upstream {
    /// Bind a listener on 127.0.0.1 (a free port) and serve.
    ///
    /// # Errors
    ///
    /// A socket error.
    pub fn start() -> io::Result<Upstream> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = thread::Builder::new()
            .name("tidegate-upstream".to_owned())
            .spawn(move || serve_upstream(&listener, &stopping))?;
        Ok(Upstream { addr, stop, thread })
    }

    /// The address the relay connects to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop accepting, wait for every connection thread to end (they end when the relay closes
    /// their connection, or after 30 s of silence) and return the report.
    pub fn stop(self) -> thread::Result<UpstreamReport> {
        self.stop.store(true, Ordering::Release);
        // Wake the blocking accept.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        self.thread.join()
    }
}

/// Connect to `to` from `source` (port chosen by the kernel), both loopback addresses, with
/// `timeout` on the connect, reads and writes. `receive_buffer` sets `SO_RCVBUF` before the
/// connect, when the client should read slowly relative to the network.
///
/// # Errors
///
/// A non-loopback address, or a socket error.
pub fn connect_from(
    source: Ipv4Addr,
    to: SocketAddr,
    receive_buffer: Option<usize>,
    timeout: Duration,
) -> io::Result<TcpStream> {
    require_loopback(IpAddr::V4(source))?;
    require_loopback(to.ip())?;
    let SocketAddr::V4(to) = to else {
        return Err(io::Error::new(ErrorKind::InvalidInput, "IPv4 only"));
    };
    let fd: OwnedFd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    if let Some(bytes) = receive_buffer {
        setsockopt(&fd, sockopt::RcvBuf, &bytes)?;
    }
    let stream = TcpStream::from(fd);
    // SO_SNDTIMEO bounds a blocking connect on Linux as well as writes.
    stream.set_write_timeout(Some(timeout))?;
    stream.set_read_timeout(Some(timeout))?;
    bind(
        stream.as_raw_fd(),
        &SockaddrIn::from(SocketAddrV4::new(source, 0)),
    )?;
    loop {
        match connect(stream.as_raw_fd(), &SockaddrIn::from(to)) {
            Ok(()) => return Ok(stream),
            Err(Errno::EINTR) => continue,
            Err(error) => return Err(error.into()),
        }
    }
}

/// The request line for response `id` of `len` bytes.
pub fn request_line(id: u64, len: usize) -> String {
    format!("GET {id} {len}\n")
}

/// Byte `offset` of the upstream's response to request `id`: a pattern that differs between
/// requests and shifts along the response, so a misplaced or foreign chunk does not match.
pub fn response_byte(id: u64, offset: u64) -> u8 {
    let mixed = id
        .wrapping_mul(131)
        .wrapping_add(offset.wrapping_mul(7))
        .wrapping_add(offset >> 8);
    (mixed % 251) as u8
}

fn require_loopback(ip: IpAddr) -> io::Result<()> {
    if ip.is_loopback() {
        Ok(())
    } else {
        Err(io::Error::new(
            ErrorKind::InvalidInput,
            format!("{ip} is not a loopback address; this harness uses loopback only"),
        ))
    }
}

/// One relayed flow: the two sockets and a buffer per direction.
struct Flow {
    app: Ipv4Addr,
    client: TcpStream,
    upstream: TcpStream,
    /// Read from the client, not yet written to the upstream (the governor's outbound pending).
    outbound: Vec<u8>,
    /// Read from the upstream, not yet written to the client (the governor's inbound pending).
    inbound: Vec<u8>,
    client_eof: bool,
    upstream_eof: bool,
    upstream_write_shut: bool,
    client_write_shut: bool,
    /// Reading the client is paused until `ResumeReadLocal`.
    local_paused: bool,
    /// Reading the upstream is paused until `ResumeReadRemote`.
    remote_paused: bool,
}

impl Flow {
    /// Poll events wanted on the client and the upstream socket.
    fn interest(&self) -> (PollFlags, PollFlags) {
        let mut client = PollFlags::empty();
        let mut upstream = PollFlags::empty();
        if !self.client_eof && !self.local_paused {
            client |= PollFlags::POLLIN;
        }
        if !self.inbound.is_empty() {
            client |= PollFlags::POLLOUT;
        }
        if !self.upstream_eof && !self.remote_paused {
            upstream |= PollFlags::POLLIN;
        }
        if !self.outbound.is_empty() {
            upstream |= PollFlags::POLLOUT;
        }
        (client, upstream)
    }

    fn finished(&self) -> bool {
        self.client_eof
            && self.upstream_eof
            && self.outbound.is_empty()
            && self.inbound.is_empty()
            && self.upstream_write_shut
            && self.client_write_shut
    }
}

/// Why the relay closes a flow.
#[derive(Debug)]
enum Ending {
    Finished,
    Reset(io::Error),
    Governor,
    Evicted,
    Notified(CloseReason),
    Stop,
}

/// Why relaying a flow stopped.
enum PumpError {
    Socket(io::Error),
    Governor(FlowError),
}

impl From<io::Error> for PumpError {
    fn from(error: io::Error) -> PumpError {
        PumpError::Socket(error)
    }
}

impl From<FlowError> for PumpError {
    fn from(error: FlowError) -> PumpError {
        PumpError::Governor(error)
    }
}

struct RelayLoop {
    spec: RelaySpec,
    listener: TcpListener,
    governor: FlowGovernor<Box<[FlowSlot]>>,
    flows: HashMap<FlowId, Flow>,
    destination: DestinationKey,
    scratch: Vec<u8>,
    started: StdInstant,
    stop: Arc<AtomicBool>,
    open_flows: Arc<AtomicU32>,
    /// Published for [`Relay::pending_bytes`].
    pending: Arc<AtomicU64>,
    /// Published for [`Relay::pressure_applied`].
    pressure_applied: Arc<AtomicU8>,
    /// The level [`Relay::set_pressure`] asked for, and the one applied.
    pressure_wanted: Arc<AtomicU8>,
    pressure: Pressure,
    report: RelayReport,
}

impl RelayLoop {
    fn run(mut self) -> RelayReport {
        let deadline = self.started + self.spec.max_duration;
        while !self.stop.load(Ordering::Acquire) {
            if StdInstant::now() >= deadline {
                self.report.hit_max_duration = true;
                break;
            }
            self.apply_pressure();
            if let Err(error) = self.turn() {
                self.report.errors.push(format!("poll failed: {error}"));
                break;
            }
        }
        let now = self.now();
        let ids: Vec<FlowId> = self.flows.keys().copied().collect();
        for id in ids {
            self.close_flow(id, now, Ending::Stop);
        }
        self.drain(now);
        self.report.stats = self.governor.stats();
        self.report
    }

    /// Pass a new pressure level to the governor. Reads its shrunk watermarks stop are paused
    /// here as after a read, so the resume notifications that follow find them paused.
    fn apply_pressure(&mut self) {
        let level = match self.pressure_wanted.load(Ordering::Acquire) {
            0 => Pressure::Normal,
            1 => Pressure::Elevated,
            _ => Pressure::Critical,
        };
        if level == self.pressure {
            return;
        }
        let now = self.now();
        self.pressure = level;
        self.report.pressure_changes += 1;
        self.governor.on_pressure(now, level);
        for (&id, flow) in &mut self.flows {
            if !flow.local_paused && !self.governor.can_read_local(id) {
                flow.local_paused = true;
                self.report.read_pauses += 1;
                self.report.pressure_pauses += 1;
            }
            if !flow.remote_paused && !self.governor.can_read_remote(id) {
                flow.remote_paused = true;
                self.report.read_pauses += 1;
                self.report.pressure_pauses += 1;
            }
        }
        self.pressure_applied.store(level as u8, Ordering::Release);
        self.drain(now);
    }

    /// The governor's clock: microseconds since the relay started.
    fn now(&self) -> Instant {
        Instant::from_micros(u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX))
    }

    /// One poll and the work it reveals.
    fn turn(&mut self) -> io::Result<()> {
        let now = self.now();
        let wait_ms = self.governor.poll_timeout().map_or(MAX_POLL_WAIT_MS, |at| {
            let micros = at.micros_since(now);
            u16::try_from(micros.div_ceil(1000))
                .map_or(MAX_POLL_WAIT_MS, |ms| ms.min(MAX_POLL_WAIT_MS))
        });
        let (listener_ready, ready) = {
            let mut fds = Vec::with_capacity(1 + 2 * self.flows.len());
            let mut owners = Vec::with_capacity(2 * self.flows.len());
            fds.push(PollFd::new(self.listener.as_fd(), PollFlags::POLLIN));
            for (id, flow) in &self.flows {
                // A side with nothing to wait for stays out of the poll set, so a hang-up on a
                // paused socket cannot spin the loop; the failure is seen at the next read.
                let (client, upstream) = flow.interest();
                if !client.is_empty() {
                    fds.push(PollFd::new(flow.client.as_fd(), client));
                    owners.push(*id);
                }
                if !upstream.is_empty() {
                    fds.push(PollFd::new(flow.upstream.as_fd(), upstream));
                    owners.push(*id);
                }
            }
            match poll(&mut fds, PollTimeout::from(wait_ms)) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(error) => return Err(error.into()),
            }
            let fired = |fd: &PollFd| fd.revents().is_some_and(|events| !events.is_empty());
            let listener_ready = fds.first().is_some_and(fired);
            let mut ready: Vec<FlowId> = owners
                .iter()
                .zip(fds.iter().skip(1))
                .filter(|(_, fd)| fired(fd))
                .map(|(id, _)| *id)
                .collect();
            ready.dedup();
            (listener_ready, ready)
        };
        self.report.poll_wakeups += 1;
        if listener_ready {
            self.accept_all();
        }
        for id in ready {
            self.service(id);
        }
        let now = self.now();
        if self.governor.poll_timeout().is_some_and(|at| at <= now) {
            self.governor.handle_timeout(now);
            self.drain(now);
        }
        Ok(())
    }

    fn accept_all(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((client, peer)) => self.admit(client, peer),
                Err(error) if error.kind() == ErrorKind::WouldBlock => break,
                Err(error)
                    if matches!(
                        error.kind(),
                        ErrorKind::Interrupted | ErrorKind::ConnectionAborted
                    ) => {}
                Err(error) => {
                    self.report.errors.push(format!("accept failed: {error}"));
                    break;
                }
            }
        }
    }

    /// Ask the governor about a new connection and act on the answer.
    fn admit(&mut self, client: TcpStream, peer: SocketAddr) {
        let IpAddr::V4(app_address) = peer.ip() else {
            self.report.errors.push(format!("IPv6 client {peer}"));
            return;
        };
        let now = self.now();
        let info = FlowInfo {
            app: app_id(app_address),
            destination: self.destination,
            protocol: Protocol::Tcp,
            class: FlowClass::Stream,
        };
        let answer = self.governor.on_new_flow(now, info);
        self.report.apps.entry(app_address).or_default();
        // Sampled before an evicted flow is closed: its slot is still taken, the peak.
        self.sample_caps();
        let counts = self.report.apps.entry(app_address).or_default();
        let id = match answer {
            Admission::Rejected(reason) => {
                if let Some(count) = counts.rejected.get_mut(reason as usize) {
                    *count += 1;
                }
                // An app proxy fails the flow: the client sees its connection closed.
                drop(client);
                self.drain(now);
                return;
            }
            Admission::Accepted { id } => {
                counts.admitted += 1;
                id
            }
            Admission::AcceptedAfterEvicting { id, evicted } => {
                counts.admitted += 1;
                counts.admitted_after_evicting += 1;
                // The evicted flow's sockets close before the new flow goes anywhere.
                self.close_flow(evicted, now, Ending::Evicted);
                id
            }
        };
        if let Err(error) = self.governor.on_connecting(now, id) {
            self.report
                .errors
                .push(format!("on_connecting({id:?}): {error}"));
        }
        match self.connect_upstream(&client) {
            Ok(upstream) => {
                let now = self.now();
                if let Err(error) = self.governor.on_connected(now, id) {
                    self.report
                        .errors
                        .push(format!("on_connected({id:?}): {error}"));
                }
                let local_paused = !self.governor.can_read_local(id);
                let remote_paused = !self.governor.can_read_remote(id);
                self.report.read_pauses += u64::from(local_paused) + u64::from(remote_paused);
                self.flows.insert(
                    id,
                    Flow {
                        app: app_address,
                        client,
                        upstream,
                        outbound: Vec::new(),
                        inbound: Vec::new(),
                        client_eof: false,
                        upstream_eof: false,
                        upstream_write_shut: false,
                        client_write_shut: false,
                        local_paused,
                        remote_paused,
                    },
                );
                self.publish_open_flows();
            }
            Err(error) => {
                drop(client);
                let class = classify_errno(error.raw_os_error().unwrap_or(0));
                let now = self.now();
                match self.governor.on_connect_failed(now, id, class) {
                    Ok(_) => {
                        self.report
                            .apps
                            .entry(app_address)
                            .or_default()
                            .connect_failed += 1;
                    }
                    Err(failure) => self
                        .report
                        .errors
                        .push(format!("on_connect_failed({id:?}): {failure}")),
                }
            }
        }
        self.drain(now);
    }

    fn connect_upstream(&self, client: &TcpStream) -> io::Result<TcpStream> {
        let upstream = TcpStream::connect_timeout(&self.spec.upstream, UPSTREAM_CONNECT_TIMEOUT)?;
        upstream.set_nonblocking(true)?;
        upstream.set_nodelay(true)?;
        client.set_nonblocking(true)?;
        client.set_nodelay(true)?;
        if let Some(bytes) = self.spec.client_send_buffer {
            setsockopt(client, sockopt::SndBuf, &bytes)?;
        }
        Ok(upstream)
    }

    /// Relay what flow `id`'s sockets allow, then close it if it ended.
    fn service(&mut self, id: FlowId) {
        let now = self.now();
        let Some(flow) = self.flows.get_mut(&id) else {
            // Closed earlier in this turn (evicted or notified).
            return;
        };
        let result = pump(
            flow,
            id,
            &mut self.governor,
            &mut self.report,
            &mut self.scratch,
            now,
        );
        self.check_accounting(id);
        match result {
            Ok(true) => self.close_flow(id, now, Ending::Finished),
            Ok(false) => {}
            Err(PumpError::Socket(error)) => self.close_flow(id, now, Ending::Reset(error)),
            Err(PumpError::Governor(error)) => {
                self.report
                    .errors
                    .push(format!("flow {id:?} accounting refused: {error}"));
                self.close_flow(id, now, Ending::Governor);
            }
        }
        self.drain(now);
    }

    /// Close flow `id`'s sockets, then report it closed, and count how it ended. The caller
    /// drains notifications afterwards.
    fn close_flow(&mut self, id: FlowId, now: Instant, ending: Ending) {
        let Some(flow) = self.flows.remove(&id) else {
            self.report
                .errors
                .push(format!("asked to close unknown flow {id:?} ({ending:?})"));
            return;
        };
        let app = flow.app;
        self.report.paused_at_close += u64::from(flow.local_paused) + u64::from(flow.remote_paused);
        // Sockets first: the governor's slot is freed only once the host no longer holds them.
        drop(flow);
        self.publish_open_flows();
        let outcome = self.governor.on_closed(now, id);
        let counts = self.report.apps.entry(app).or_default();
        match (&ending, outcome) {
            (Ending::Evicted, Ok(FlowOutcome::ClosedByGovernor(CloseReason::Evicted))) => {
                counts.evicted += 1;
            }
            (Ending::Notified(asked), Ok(FlowOutcome::ClosedByGovernor(reason)))
                if *asked == reason =>
            {
                counts.closed_by_timeout += 1;
            }
            (_, Ok(FlowOutcome::AlsoRan)) => counts.also_ran += 1,
            (Ending::Finished, Ok(FlowOutcome::Closed)) => counts.finished += 1,
            (Ending::Reset(error), Ok(FlowOutcome::Closed)) => {
                counts.reset += 1;
                *self
                    .report
                    .resets_by_kind
                    .entry(format!("{:?}", error.kind()))
                    .or_default() += 1;
            }
            (Ending::Stop, Ok(FlowOutcome::Closed)) => counts.open_at_stop += 1,
            (Ending::Governor, Ok(_)) => {}
            (ending, outcome) => self
                .report
                .errors
                .push(format!("flow {id:?} closed ({ending:?}) with {outcome:?}")),
        }
    }

    /// Act on every notification: the drain contract.
    fn drain(&mut self, now: Instant) {
        while let Some(notification) = self.governor.poll_notification() {
            match notification {
                Notification::Close { id, reason } => {
                    self.report.close_notifications += 1;
                    self.close_flow(id, now, Ending::Notified(reason));
                }
                Notification::ResumeReadLocal { id } => match self.flows.get_mut(&id) {
                    Some(flow) if flow.local_paused => {
                        flow.local_paused = false;
                        self.report.read_resumes += 1;
                    }
                    _ => self.report.unexpected_resumes += 1,
                },
                Notification::ResumeReadRemote { id } => match self.flows.get_mut(&id) {
                    Some(flow) if flow.remote_paused => {
                        flow.remote_paused = false;
                        self.report.read_resumes += 1;
                    }
                    _ => self.report.unexpected_resumes += 1,
                },
            }
        }
    }

    /// Record the governor's occupancy against its caps.
    fn sample_caps(&mut self) {
        let open = self.governor.open_flows();
        let capacity = u32::try_from(self.governor.capacity()).unwrap_or(u32::MAX);
        let in_table = capacity.saturating_sub(self.governor.free_slots());
        self.report.max_open_flows = self.report.max_open_flows.max(open);
        self.report.max_flows_in_table = self.report.max_flows_in_table.max(in_table);
        for (address, counts) in &mut self.report.apps {
            let flows = self.governor.app_flows(app_id(*address));
            counts.max_open = counts.max_open.max(flows);
        }
    }

    /// Compare flow `id`'s buffers with the governor's pending counters, and record highs.
    fn check_accounting(&mut self, id: FlowId) {
        let stats = self.governor.stats();
        let total = stats
            .bytes_pending_outbound
            .saturating_add(stats.bytes_pending_inbound);
        self.report.max_total_pending_bytes = self.report.max_total_pending_bytes.max(total);
        self.pending.store(total, Ordering::Release);
        self.report.global_pause_seen |= stats.reads_paused_globally;
        let Some(flow) = self.flows.get(&id) else {
            return;
        };
        let outbound = flow.outbound.len() as u64;
        let inbound = flow.inbound.len() as u64;
        self.report.max_flow_buffer_bytes =
            self.report.max_flow_buffer_bytes.max(outbound.max(inbound));
        match self.governor.flow(id) {
            Ok(view) if view.outbound_pending == outbound && view.inbound_pending == inbound => {}
            _ => self.report.accounting_mismatches += 1,
        }
    }

    fn publish_open_flows(&self) {
        let open = u32::try_from(self.flows.len()).unwrap_or(u32::MAX);
        self.open_flows.store(open, Ordering::Release);
    }
}

/// The app of a client: its source address, hashed the way a proxy hashes a signing identifier.
fn app_id(address: Ipv4Addr) -> AppId {
    AppId::from_bytes(&address.octets())
}

/// Move bytes on one flow until neither socket can make progress. `Ok(true)` when the flow has
/// finished in both directions.
fn pump(
    flow: &mut Flow,
    id: FlowId,
    governor: &mut FlowGovernor<Box<[FlowSlot]>>,
    report: &mut RelayReport,
    scratch: &mut [u8],
    now: Instant,
) -> Result<bool, PumpError> {
    for _ in 0..ROUNDS_PER_SERVICE {
        let mut progress = false;

        // Client -> relay, while the governor allows.
        if !flow.client_eof && !flow.local_paused {
            check_allowed(governor.can_read_local(id), id, "client", report);
            match flow.client.read(scratch) {
                Ok(0) => {
                    flow.client_eof = true;
                    progress = true;
                }
                Ok(n) => {
                    flow.outbound
                        .extend_from_slice(scratch.get(..n).unwrap_or_default());
                    governor.on_local_read(now, id, n as u64)?;
                    if !governor.can_read_local(id) {
                        flow.local_paused = true;
                        report.read_pauses += 1;
                    }
                    progress = true;
                }
                Err(error) if would_block(&error) => {}
                Err(error) => return Err(error.into()),
            }
        }
        // Relay -> upstream.
        if !flow.outbound.is_empty() {
            match flow.upstream.write(&flow.outbound) {
                Ok(0) => return Err(io::Error::from(ErrorKind::WriteZero).into()),
                Ok(n) => {
                    flow.outbound.drain(..n);
                    governor.on_remote_sent(now, id, n as u64)?;
                    report.bytes_to_upstream += n as u64;
                    progress = true;
                }
                Err(error) if would_block(&error) => {}
                Err(error) => return Err(error.into()),
            }
        }
        if flow.client_eof && flow.outbound.is_empty() && !flow.upstream_write_shut {
            shutdown_write(&flow.upstream)?;
            flow.upstream_write_shut = true;
            progress = true;
        }

        // Upstream -> relay, while the governor allows.
        if !flow.upstream_eof && !flow.remote_paused {
            check_allowed(governor.can_read_remote(id), id, "upstream", report);
            match flow.upstream.read(scratch) {
                Ok(0) => {
                    flow.upstream_eof = true;
                    progress = true;
                }
                Ok(n) => {
                    flow.inbound
                        .extend_from_slice(scratch.get(..n).unwrap_or_default());
                    governor.on_remote_read(now, id, n as u64)?;
                    if !governor.can_read_remote(id) {
                        flow.remote_paused = true;
                        report.read_pauses += 1;
                    }
                    progress = true;
                }
                Err(error) if would_block(&error) => {}
                Err(error) => return Err(error.into()),
            }
        }
        // Relay -> client.
        if !flow.inbound.is_empty() {
            match flow.client.write(&flow.inbound) {
                Ok(0) => return Err(io::Error::from(ErrorKind::WriteZero).into()),
                Ok(n) => {
                    flow.inbound.drain(..n);
                    governor.on_local_written(now, id, n as u64)?;
                    report.bytes_to_clients += n as u64;
                    progress = true;
                }
                Err(error) if would_block(&error) => {}
                Err(error) => return Err(error.into()),
            }
        }
        if flow.upstream_eof && flow.inbound.is_empty() && !flow.client_write_shut {
            shutdown_write(&flow.client)?;
            flow.client_write_shut = true;
            progress = true;
        }

        if flow.finished() {
            return Ok(true);
        }
        if !progress {
            break;
        }
    }
    Ok(false)
}

/// A read the relay is about to make must be one the governor allows: the relay's own record of
/// paused reads has to follow every pause (after a read, and when memory pressure shrinks the
/// watermarks). One it missed is reported as a relay error, which the tests fail on.
fn check_allowed(allowed: bool, id: FlowId, side: &str, report: &mut RelayReport) {
    if !allowed {
        report.errors.push(format!(
            "flow {id:?}: {side} read while the governor pauses it"
        ));
    }
}

fn would_block(error: &io::Error) -> bool {
    matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted)
}

/// Pass an end of stream on. A peer that already went away is not an error here: the next read
/// or write on the socket reports it.
fn shutdown_write(stream: &TcpStream) -> io::Result<()> {
    match stream.shutdown(Shutdown::Write) {
        Err(error) if error.kind() != ErrorKind::NotConnected => Err(error),
        _ => Ok(()),
    }
}

/// What one upstream connection was.
enum Served {
    Request,
    Echo(u64),
    Reset,
    Failed(String),
}

fn serve_upstream(listener: &TcpListener, stop: &AtomicBool) -> UpstreamReport {
    let mut report = UpstreamReport::default();
    let mut handlers: Vec<JoinHandle<Served>> = Vec::new();
    loop {
        let accepted = listener.accept();
        if stop.load(Ordering::Acquire) {
            break;
        }
        match accepted {
            Ok((stream, _)) => {
                report.connections += 1;
                match thread::Builder::new()
                    .name("tidegate-upstream-conn".to_owned())
                    .spawn(move || serve_connection(stream))
                {
                    Ok(handle) => handlers.push(handle),
                    Err(error) => report.errors.push(format!("spawn failed: {error}")),
                }
            }
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(error) => {
                report.errors.push(format!("accept failed: {error}"));
                break;
            }
        }
        // Reap finished connection threads so the list stays short.
        let (done, running): (Vec<_>, Vec<_>) =
            handlers.drain(..).partition(JoinHandle::is_finished);
        handlers = running;
        for handle in done {
            collect(handle, &mut report);
        }
    }
    for handle in handlers {
        collect(handle, &mut report);
    }
    report
}

fn collect(handle: JoinHandle<Served>, report: &mut UpstreamReport) {
    match handle.join() {
        Ok(Served::Request) => report.requests += 1,
        Ok(Served::Echo(bytes)) => {
            report.echo_connections += 1;
            report.echoed_bytes += bytes;
        }
        Ok(Served::Reset) => report.resets += 1,
        Ok(Served::Failed(error)) => report.errors.push(error),
        Err(_) => report.panics += 1,
    }
}

fn serve_connection(mut stream: TcpStream) -> Served {
    match serve_connection_inner(&mut stream) {
        Ok(served) => served,
        // The relay resets connections it closes abruptly (evictions, the end of a test).
        Err(error)
            if matches!(
                error.kind(),
                ErrorKind::ConnectionReset | ErrorKind::BrokenPipe
            ) =>
        {
            Served::Reset
        }
        Err(error) => Served::Failed(format!("upstream connection: {error}")),
    }
}

fn serve_connection_inner(stream: &mut TcpStream) -> io::Result<Served> {
    stream.set_read_timeout(Some(UPSTREAM_READ_TIMEOUT))?;
    stream.set_write_timeout(Some(UPSTREAM_READ_TIMEOUT))?;
    stream.set_nodelay(true)?;
    let mut first = [0u8; 1];
    if stream.read(&mut first)? == 0 {
        return Ok(Served::Echo(0));
    }
    if first == *b"G" {
        // Read the rest of the line byte by byte: nothing past it is consumed, and the client
        // sends nothing past it, so the close below is a clean FIN, not a reset.
        let mut line = vec![b'G'];
        let mut byte = [0u8; 1];
        while line.last() != Some(&b'\n') {
            if line.len() > MAX_REQUEST_LINE || stream.read(&mut byte)? == 0 {
                return Ok(Served::Failed(format!(
                    "truncated request {:?}",
                    String::from_utf8_lossy(&line)
                )));
            }
            line.extend_from_slice(&byte);
        }
        let text = String::from_utf8_lossy(&line);
        let mut words = text.split_whitespace().skip(1);
        let (Some(Ok(id)), Some(Ok(len))) = (
            words.next().map(str::parse::<u64>),
            words.next().map(str::parse::<u64>),
        ) else {
            return Ok(Served::Failed(format!("bad request {text:?}")));
        };
        let mut offset = 0u64;
        let mut chunk = [0u8; 16 * 1024];
        while offset < len {
            let n = usize::try_from(len - offset)
                .unwrap_or(chunk.len())
                .min(chunk.len());
            for (i, slot) in chunk.iter_mut().take(n).enumerate() {
                *slot = response_byte(id, offset + i as u64);
            }
            stream.write_all(chunk.get(..n).unwrap_or_default())?;
            offset += n as u64;
        }
        return Ok(Served::Request);
    }
    stream.write_all(&first)?;
    let mut echoed = 1u64;
    let mut buffer = [0u8; 4096];
    loop {
        let n = stream.read(&mut buffer)?;
        if n == 0 {
            return Ok(Served::Echo(echoed));
        }
        stream.write_all(buffer.get(..n).unwrap_or_default())?;
        echoed += n as u64;
    }
}
