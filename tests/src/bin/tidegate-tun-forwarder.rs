//! `tidegate-tun-forwarder`: a real host for the packet tunnel engine (Linux only).
//!
//! It opens a TUN device and a UDP socket to its peer and drives a [`PacketTunnel`] between
//! them, the way a packet tunnel provider drives it between `packetFlow` and its server
//! connection:
//!
//! - **Outbound** (TUN → UDP). The TUN device is read only while `can_read_outbound()` is true;
//!   when the engine pauses, the TUN descriptor leaves the poll set and comes back on the
//!   completion that reports `resume_reading`. Each packet handed out is sent as one UDP
//!   datagram, prefixed with an 8-byte big-endian sequence number, and completed once the send
//!   succeeded. A send refused with `EAGAIN` (socket buffer full: the slow link pushing back) or
//!   `ENOBUFS` leaves the packet in flight and is retried.
//! - **Inbound** (UDP → TUN). Each datagram's sequence number must be strictly larger than the
//!   last one; anything else is counted as a link reorder. The packet goes through
//!   `on_inbound_packet`, is handed out and written to the TUN device, then completed.
//!
//! Two kinds of reordering are told apart. Sequence numbers are stamped when the engine hands a
//! packet out, so `link_reorders` counts what the kernel path between the two forwarders did
//! (veth delivery through per-CPU backlogs can swap two packets now and then). What the engine
//! itself did is checked directly: the host keeps a fingerprint (FNV-1a) of every packet it
//! pushes, in push order, and compares each packet handed out with the oldest fingerprint;
//! `core_reorders_outbound` and `core_reorders_inbound` count mismatches and must stay 0. With
//! `--aqm fq-codel` the engine keeps order within each flow only, so the check is per flow
//! (`FlowOrderCheck`): a packet handed out must have been pushed after the last packet of its
//! flow handed out before it.
//!
//! With `--queue-limit-max-bytes N` the engine's byte queue limit is on: the forwarder reads the
//! socket's unsent bytes (`SIOCOUTQ`) before each send pass and reports them with
//! `on_outbound_queued_below`, and while the limit holds packets back it wakes every
//! half millisecond to look again (no readiness event says the socket drained). Every 100 ms it
//! samples where its outbound queue sits, the engine's held bytes and the socket's unsent bytes,
//! and each report carries the median and maximum of the samples since the previous report.
//!
//! Sends can also be paced in the host (`--pace-mbit`, a token bucket) instead of, or on top
//! of, a `tc tbf` qdisc. On SIGTERM, SIGINT or when `--duration-secs` runs out it prints one
//! JSON line of statistics on stdout and exits 0; SIGUSR1 prints the same line (with
//! `"stopped_by": null`) and carries on, so a harness can take a snapshot between phases. Every engine capacity is a flag, so new engine
//! options (an AQM policy, say) become new flags. `--help` lists them.

#[cfg(target_os = "linux")]
fn main() -> std::process::ExitCode {
    linux::main()
}

#[cfg(not(target_os = "linux"))]
fn main() -> std::process::ExitCode {
    eprintln!("tidegate-tun-forwarder runs on Linux only");
    std::process::ExitCode::FAILURE
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io::{self, IoSlice, Write as _};
    use std::net::{SocketAddr, UdpSocket};
    use std::os::fd::{AsFd, AsRawFd};
    use std::process::ExitCode;
    use std::time::{Duration, Instant as StdInstant};

    use nix::errno::Errno;
    use nix::poll::{PollFd, PollFlags, ppoll};
    use nix::sys::signal::{SigSet, Signal};
    use nix::sys::signalfd::{SfdFlags, SignalFd};
    use nix::sys::socket::{MsgFlags, SockaddrIn, setsockopt, sockopt};
    use nix::sys::time::TimeSpec;
    use serde_json::{Value, json};
    use tidegate_core::{
        Aqm, ByteQueueLimit, DirectionStats, DropPolicy, InboundDisposition, Instant, PacketError,
        TunnelConfig, TunnelStats,
    };
    use tidegate_tests::order_check::{FlowOrderCheck, OrderCheck};
    use tidegate_tests::storage::{HeapTunnel, heap_tunnel};
    use tun_rs::{DeviceBuilder, SyncDevice};

    /// Bytes of the sequence number in front of every tunnel datagram.
    const SEQUENCE_LEN: usize = 8;
    /// IPv4 and UDP headers around each tunnel datagram, counted by the host pacer.
    const IP_UDP_OVERHEAD: usize = 28;
    /// The most packets moved in one direction before the loop looks at the other one.
    const BATCH: usize = 64;
    /// How long to wait before retrying a send refused with `ENOBUFS` (no readiness event
    /// announces that the condition is over).
    const ENOBUFS_RETRY: Duration = Duration::from_millis(1);
    /// How often, while the byte queue limit holds packets back, the loop reads the socket's
    /// queue again.
    const BELOW_POLL: Duration = Duration::from_micros(500);
    /// How often the outbound queue's place is sampled.
    const SAMPLE_EVERY: Duration = Duration::from_millis(100);
    /// Samples kept between two reports (the oldest are overwritten): 102 s at 10 Hz.
    const SAMPLES: usize = 1024;
    /// The longest run allowed, so a forgotten forwarder always stops by itself.
    const MAX_DURATION_SECS: f64 = 3600.0;

    const USAGE: &str = "\
usage: tidegate-tun-forwarder --local ADDR:PORT --peer ADDR:PORT [options]

  --tun NAME                   TUN device to create or attach to (default tg0)
  --tun-address ADDR/PREFIX    IPv4 address given to the TUN device (optional)
  --mtu BYTES                  TUN MTU (default 1400); also the default --max-packet-len
  --tun-txqueuelen PACKETS     the TUN device's kernel queue (default: the kernel's)
  --local ADDR:PORT            UDP address to bind
  --peer ADDR:PORT             UDP address of the other forwarder
  --udp-sndbuf BYTES           SO_SNDBUF of the UDP socket (default: the kernel's)
  --pace-mbit RATE             pace sends in the host at RATE Mbit/s of IP datagrams (optional)
  --pace-burst-bytes BYTES     token bucket depth of the pacer (default 16384)
  --duration-secs SECONDS      stop after this long (default 60, at most 3600)
engine (TunnelConfig; defaults are TunnelConfig::DEFAULT):
  --outbound-bytes N  --outbound-packets N  --inbound-bytes N  --inbound-packets N
  --outbound-high-bytes N  --outbound-low-bytes N
  --outbound-high-packets N  --outbound-low-packets N
  --max-packet-len N  --inbound-drop-policy newest|oldest
  --aqm off|codel|fq-codel  --aqm-target-us N (default 5000)  --aqm-interval-us N (default 100000)
  --flow-queues N (fq-codel: queues per direction, default 1024)
  --queue-limit-max-bytes N (byte queue limit, fed from SIOCOUTQ; default 0: off)
  --queue-limit-hold-us N (default 100000)
    with fq-codel each direction holds min(packets, bytes / cell) cells of max-packet-len
    rounded up to 64 bytes, and the hash seed comes from /dev/urandom
signals: SIGTERM or SIGINT print one JSON line of statistics and exit 0; SIGUSR1 prints the
  same line and carries on
";

    /// Everything the command line sets.
    struct Options {
        tun: String,
        tun_address: Option<(std::net::Ipv4Addr, u8)>,
        mtu: u16,
        tun_txqueuelen: Option<u32>,
        local: SocketAddr,
        peer: SocketAddr,
        udp_sndbuf: Option<usize>,
        pace_mbit: Option<f64>,
        pace_burst_bytes: f64,
        duration: Duration,
        config: TunnelConfig,
    }

    pub(crate) fn main() -> ExitCode {
        let args: Vec<String> = std::env::args().skip(1).collect();
        if args.iter().any(|a| a == "--help" || a == "-h") {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        let options = match parse(&args) {
            Ok(options) => options,
            Err(message) => {
                eprintln!("tidegate-tun-forwarder: {message}\n\n{USAGE}");
                return ExitCode::from(2);
            }
        };
        match run(&options) {
            Ok(report) => {
                let mut stdout = io::stdout().lock();
                // One line, so a harness reads it with a single `lines().last()`.
                let written = writeln!(stdout, "{report}").and_then(|()| stdout.flush());
                if written.is_err() {
                    return ExitCode::FAILURE;
                }
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("tidegate-tun-forwarder: {error}");
                ExitCode::FAILURE
            }
        }
    }

    fn parse(args: &[String]) -> Result<Options, String> {
        let mut tun = "tg0".to_owned();
        let mut tun_address = None;
        let mut mtu: u16 = 1400;
        let mut tun_txqueuelen = None;
        let mut local = None;
        let mut peer = None;
        let mut udp_sndbuf = None;
        let mut pace_mbit = None;
        let mut pace_burst_bytes = 16384.0;
        let mut duration_secs: f64 = 60.0;
        let mut config = TunnelConfig::DEFAULT;
        let mut max_packet_len = None;
        let mut aqm_mode = "off";
        let mut flow_queues = Aqm::FQ_DEFAULT_FLOW_QUEUES;
        let mut aqm_target = Aqm::CODEL_DEFAULT_TARGET_MICROS;
        let mut aqm_interval = Aqm::CODEL_DEFAULT_INTERVAL_MICROS;
        let mut queue_limit_max = 0;
        let mut queue_limit_hold = ByteQueueLimit::DEFAULT_HOLD_MICROS;

        let mut rest = args.iter();
        while let Some(flag) = rest.next() {
            let value = rest
                .next()
                .ok_or_else(|| format!("{flag} needs a value"))?
                .as_str();
            let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
            let number = || value.parse::<u32>().map_err(|e| bad(&e));
            match flag.as_str() {
                "--tun" => tun = value.to_owned(),
                "--tun-address" => {
                    let (address, prefix) = value
                        .split_once('/')
                        .ok_or_else(|| bad(&"expected ADDR/PREFIX"))?;
                    let address = address.parse().map_err(|e| bad(&e))?;
                    let prefix = prefix.parse().map_err(|e| bad(&e))?;
                    tun_address = Some((address, prefix));
                }
                "--mtu" => mtu = value.parse().map_err(|e| bad(&e))?,
                "--tun-txqueuelen" => tun_txqueuelen = Some(number()?),
                "--local" => local = Some(value.parse().map_err(|e| bad(&e))?),
                "--peer" => peer = Some(value.parse().map_err(|e| bad(&e))?),
                "--udp-sndbuf" => udp_sndbuf = Some(number()? as usize),
                "--pace-mbit" => pace_mbit = Some(value.parse().map_err(|e| bad(&e))?),
                "--pace-burst-bytes" => pace_burst_bytes = f64::from(number()?),
                "--duration-secs" => duration_secs = value.parse().map_err(|e| bad(&e))?,
                "--outbound-bytes" => config.outbound_bytes = number()?,
                "--outbound-packets" => config.outbound_packets = number()?,
                "--inbound-bytes" => config.inbound_bytes = number()?,
                "--inbound-packets" => config.inbound_packets = number()?,
                "--outbound-high-bytes" => config.outbound_high_watermark_bytes = number()?,
                "--outbound-low-bytes" => config.outbound_low_watermark_bytes = number()?,
                "--outbound-high-packets" => config.outbound_high_watermark_packets = number()?,
                "--outbound-low-packets" => config.outbound_low_watermark_packets = number()?,
                "--max-packet-len" => max_packet_len = Some(number()?),
                "--aqm" => {
                    aqm_mode = match value {
                        "off" | "codel" | "fq-codel" => value,
                        _ => return Err(bad(&"expected off, codel or fq-codel")),
                    }
                }
                "--flow-queues" => flow_queues = number()?,
                "--queue-limit-max-bytes" => queue_limit_max = number()?,
                "--queue-limit-hold-us" => queue_limit_hold = number()?,
                "--aqm-target-us" => aqm_target = number()?,
                "--aqm-interval-us" => aqm_interval = number()?,
                "--inbound-drop-policy" => {
                    config.inbound_drop_policy = match value {
                        "newest" => DropPolicy::DropNewest,
                        "oldest" => DropPolicy::DropOldest,
                        _ => return Err(bad(&"expected newest or oldest")),
                    }
                }
                _ => return Err(format!("unknown flag {flag}")),
            }
        }
        config.max_packet_len = max_packet_len.unwrap_or(u32::from(mtu));
        if queue_limit_max > 0 {
            config.byte_queue_limit = ByteQueueLimit::Auto {
                min_bytes: config.max_packet_len * 2,
                max_bytes: queue_limit_max,
                hold_micros: queue_limit_hold,
            };
        }
        match aqm_mode {
            "codel" => {
                config.aqm = Aqm::Codel {
                    target_micros: aqm_target,
                    interval_micros: aqm_interval,
                }
            }
            "fq-codel" => {
                let mut hash_seed = [0u8; 16];
                std::fs::File::open("/dev/urandom")
                    .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut hash_seed))
                    .map_err(|e| format!("reading a hash seed from /dev/urandom: {e}"))?;
                config.aqm = Aqm::FqCodel {
                    target_micros: aqm_target,
                    interval_micros: aqm_interval,
                    flow_queues,
                    quantum_bytes: Aqm::FQ_DEFAULT_QUANTUM_BYTES,
                    hash_seed,
                };
                let cell = config.cell_bytes();
                let cells = |bytes: u32, packets: u32| packets.min(bytes / cell.max(1));
                config.outbound_packets = cells(config.outbound_bytes, config.outbound_packets);
                config.outbound_bytes = config.outbound_packets * cell;
                config.inbound_packets = cells(config.inbound_bytes, config.inbound_packets);
                config.inbound_bytes = config.inbound_packets * cell;
            }
            _ => {}
        }
        config
            .validate()
            .map_err(|e| format!("invalid engine configuration: {e}"))?;
        if !duration_secs.is_finite() || duration_secs <= 0.0 || duration_secs > MAX_DURATION_SECS {
            return Err(format!(
                "--duration-secs must be in (0, {MAX_DURATION_SECS}]"
            ));
        }
        if pace_mbit.is_some_and(|rate: f64| !rate.is_finite() || rate <= 0.0) {
            return Err("--pace-mbit must be positive".to_owned());
        }
        Ok(Options {
            tun,
            tun_address,
            mtu,
            tun_txqueuelen,
            local: local.ok_or("--local is required")?,
            peer: peer.ok_or("--peer is required")?,
            udp_sndbuf,
            pace_mbit,
            pace_burst_bytes,
            duration: Duration::from_secs_f64(duration_secs),
            config,
        })
    }

    type Tunnel = HeapTunnel;

    /// What the host itself counted, beside the engine's own statistics.
    #[derive(Default)]
    struct HostCounters {
        tun_packets_read: u64,
        /// Packets read from the TUN device that the engine refused for lack of room; each one
        /// is an IP packet the host dropped (TCP recovers). Expected to stay 0: the host reads
        /// one packet at a time and the engine keeps two packets of headroom.
        outbound_refused_by_engine: u64,
        udp_datagrams_sent: u64,
        udp_send_would_block: u64,
        udp_send_no_buffers: u64,
        udp_send_connection_refused: u64,
        udp_datagrams_received: u64,
        udp_receive_errors: u64,
        /// Datagrams too short to hold a sequence number.
        malformed_datagrams: u64,
        /// Datagrams whose sequence number was not larger than the last one seen: reordered (or
        /// duplicated) between the two forwarders, after the sending engine.
        link_reorders: u64,
        /// Sequence numbers skipped: datagrams lost between the two forwarders.
        sequence_gaps: u64,
        tun_packets_written: u64,
        tun_write_would_block: u64,
        /// Inbound packets the TUN device refused with an error other than `EAGAIN`; each is
        /// completed (dropped) so the ring keeps moving.
        tun_write_errors: u64,
        /// Completions that reported `resume_reading`.
        resume_edges: u64,
        /// Times the loop found `reading` and `can_read_outbound()` disagreeing. Always 0.
        reading_state_mismatches: u64,
        poll_wakeups: u64,
    }

    /// Where the outbound queue sat, sampled every [`SAMPLE_EVERY`]: fixed arrays, so sampling
    /// allocates nothing.
    struct QueueSamples {
        engine: Box<[u32]>,
        socket: Box<[u32]>,
        count: usize,
        next_at: StdInstant,
    }

    impl QueueSamples {
        fn new(now: StdInstant) -> QueueSamples {
            QueueSamples {
                engine: vec![0; SAMPLES].into_boxed_slice(),
                socket: vec![0; SAMPLES].into_boxed_slice(),
                count: 0,
                next_at: now + SAMPLE_EVERY,
            }
        }

        fn record(&mut self, engine: u64, socket: u64) {
            let at = self.count % SAMPLES;
            self.engine[at] = u32::try_from(engine).unwrap_or(u32::MAX);
            self.socket[at] = u32::try_from(socket).unwrap_or(u32::MAX);
            self.count += 1;
        }

        /// Median and maximum of each kind, then forget them.
        fn take(&mut self) -> Value {
            let n = self.count.min(SAMPLES);
            let summary = |samples: &mut [u32]| {
                let samples = &mut samples[..n];
                samples.sort_unstable();
                json!({
                    "median": samples.get(n / 2),
                    "max": samples.last(),
                })
            };
            let value = json!({
                "samples": n,
                "engine_bytes": summary(&mut self.engine),
                "socket_bytes": summary(&mut self.socket),
            });
            self.count = 0;
            value
        }
    }

    /// The socket's bytes not yet sent (`SIOCOUTQ`; for UDP, its buffers at their true size).
    fn socket_unsent(socket: &UdpSocket) -> u64 {
        let mut value: nix::libc::c_int = 0;
        // SAFETY: SIOCOUTQ (TIOCOUTQ) writes one int through the pointer, which is valid.
        let status =
            unsafe { nix::libc::ioctl(socket.as_raw_fd(), nix::libc::TIOCOUTQ, &mut value) };
        if status == 0 {
            u64::try_from(value).unwrap_or(0)
        } else {
            0
        }
    }

    /// A token bucket in bytes, refilled from the monotonic clock.
    struct Pacer {
        bytes_per_second: f64,
        depth: f64,
        tokens: f64,
        refilled_at: StdInstant,
    }

    impl Pacer {
        fn new(mbit: f64, depth: f64, now: StdInstant) -> Pacer {
            Pacer {
                bytes_per_second: mbit * 1e6 / 8.0,
                depth,
                tokens: depth,
                refilled_at: now,
            }
        }

        fn refill(&mut self, now: StdInstant) {
            let elapsed = now.saturating_duration_since(self.refilled_at);
            self.tokens =
                (self.tokens + elapsed.as_secs_f64() * self.bytes_per_second).min(self.depth);
            self.refilled_at = now;
        }

        /// `None` if a packet may go now, else how long until the bucket is positive again. A
        /// packet may take the bucket below zero (deficit pacing), so the length of the next
        /// packet need not be known before it is handed out.
        fn wait(&self) -> Option<Duration> {
            (self.tokens <= 0.0)
                .then(|| Duration::from_secs_f64(-self.tokens / self.bytes_per_second))
        }
    }

    /// Why the forwarder stopped, or that it has not (a snapshot).
    #[derive(Clone, Copy)]
    enum Stop {
        Running,
        Duration,
        Signal(Signal),
    }

    /// The forwarder's state: devices, engine, and where each direction stands.
    struct Host {
        tun: SyncDevice,
        udp: UdpSocket,
        tunnel: Tunnel,
        started: StdInstant,
        /// The host's own record of whether it reads the TUN device.
        reading: bool,
        /// The oldest outbound packet in flight has not been sent yet (its send was refused).
        outbound_unsent: bool,
        /// Waiting for the UDP socket to become writable.
        udp_blocked: bool,
        /// When to retry a send refused with `ENOBUFS`.
        retry_at: Option<StdInstant>,
        /// The oldest inbound packet in flight has not been written yet.
        inbound_unwritten: bool,
        /// Waiting for the TUN device to become writable.
        tun_blocked: bool,
        pacer: Option<Pacer>,
        next_sequence: u64,
        last_sequence: Option<u64>,
        tun_buffer: Box<[u8]>,
        udp_buffer: Box<[u8]>,
        /// Fingerprints of the outbound packets queued in the engine, oldest first, allocated
        /// once for the engine's packet capacity. It forgets the packets the engine reports
        /// dropping, so it never holds more than the engine does.
        outbound_order: Order,
        /// The same for inbound packets.
        inbound_order: Order,
        counters: HostCounters,
        samples: QueueSamples,
        /// The byte queue limit is on: report the socket's queue to the engine.
        queue_limit: bool,
    }

    fn run(options: &Options) -> io::Result<Value> {
        // Block the stop signals before anything else, so they arrive through the poll loop.
        let mut signals = SigSet::empty();
        signals.add(Signal::SIGTERM);
        signals.add(Signal::SIGINT);
        signals.add(Signal::SIGUSR1);
        signals.thread_block()?;
        let signal_fd = SignalFd::with_flags(&signals, SfdFlags::SFD_NONBLOCK)?;

        let mut builder = DeviceBuilder::new().name(&options.tun).mtu(options.mtu);
        if let Some((address, prefix)) = options.tun_address {
            builder = builder.ipv4(address, prefix, None);
        }
        if let Some(len) = options.tun_txqueuelen {
            builder = builder.tx_queue_len(len);
        }
        let tun = builder.enable(true).build_sync()?;
        tun.set_nonblocking(true)?;

        let udp = UdpSocket::bind(options.local)?;
        udp.connect(options.peer)?;
        udp.set_nonblocking(true)?;
        if let Some(bytes) = options.udp_sndbuf {
            setsockopt(&udp, sockopt::SndBuf, &bytes)?;
        }

        let config = options.config;
        let tunnel = heap_tunnel(config)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let started = StdInstant::now();
        let max = config.max_packet_len as usize;
        let mut host = Host {
            tun,
            udp,
            tunnel,
            started,
            reading: true,
            outbound_unsent: false,
            udp_blocked: false,
            retry_at: None,
            inbound_unwritten: false,
            tun_blocked: false,
            pacer: options
                .pace_mbit
                .map(|mbit| Pacer::new(mbit, options.pace_burst_bytes, started)),
            next_sequence: 0,
            last_sequence: None,
            // One byte more than the largest packet, so an oversized one is seen as such.
            tun_buffer: vec![0; max + 1].into_boxed_slice(),
            udp_buffer: vec![0; SEQUENCE_LEN + max + 1].into_boxed_slice(),
            outbound_order: Order::new(&config, config.outbound_packets as usize),
            inbound_order: Order::new(&config, config.inbound_packets as usize),
            counters: HostCounters::default(),
            samples: QueueSamples::new(started),
            queue_limit: config.byte_queue_limit != ByteQueueLimit::Off,
        };
        let deadline = started + options.duration;
        let stop = host.run_until(deadline, &signal_fd, options)?;
        Ok(host.report_and_reset(options, stop))
    }

    impl Host {
        fn now(&self) -> Instant {
            let micros = self.started.elapsed().as_micros();
            Instant::from_micros(u64::try_from(micros).unwrap_or(u64::MAX))
        }

        fn run_until(
            &mut self,
            deadline: StdInstant,
            signal_fd: &SignalFd,
            options: &Options,
        ) -> io::Result<Stop> {
            loop {
                if let Some(info) = signal_fd.read_signal()? {
                    let signal = Signal::try_from(info.ssi_signo as i32).unwrap_or(Signal::SIGTERM);
                    if signal != Signal::SIGUSR1 {
                        return Ok(Stop::Signal(signal));
                    }
                    let mut stdout = io::stdout().lock();
                    writeln!(stdout, "{}", self.report_and_reset(options, Stop::Running))?;
                    stdout.flush()?;
                }
                let now = StdInstant::now();
                if now >= deadline {
                    return Ok(Stop::Duration);
                }
                if self.retry_at.is_some_and(|at| now >= at) {
                    self.retry_at = None;
                }
                if now >= self.samples.next_at {
                    let held = self.tunnel.stats().outbound;
                    let engine = held.bytes_queued + held.bytes_in_flight;
                    self.samples.record(engine, socket_unsent(&self.udp));
                    self.samples.next_at = now + SAMPLE_EVERY;
                }
                let mut busy = self.receive_inbound()?;
                busy |= self.write_inbound()?;
                busy |= self.read_outbound()?;
                busy |= self.send_outbound()?;
                if self.reading != self.tunnel.can_read_outbound() {
                    self.counters.reading_state_mismatches += 1;
                    self.reading = self.tunnel.can_read_outbound();
                }
                if busy {
                    continue; // a batch ran out: look again before sleeping
                }
                self.wait(deadline, signal_fd)?;
            }
        }

        /// Sleep until a descriptor the loop cares about is ready, a timer is due, or a signal
        /// arrives.
        fn wait(&mut self, deadline: StdInstant, signal_fd: &SignalFd) -> io::Result<()> {
            let now = StdInstant::now();
            let mut wake = deadline.min(self.samples.next_at);
            if let Some(at) = self.retry_at {
                wake = wake.min(at);
            }
            if self.queue_limit && self.tunnel.stats().outbound.packets_queued > 0 {
                // Held by the limit: look at the socket's queue again soon.
                wake = wake.min(now + BELOW_POLL);
            }
            if let Some(wait) = self.pacer_wait(now) {
                wake = wake.min(now + wait);
            }
            let mut udp_events = PollFlags::POLLIN;
            if self.udp_blocked {
                udp_events |= PollFlags::POLLOUT;
            }
            let mut tun_events = PollFlags::empty();
            if self.reading {
                tun_events |= PollFlags::POLLIN;
            }
            if self.tun_blocked {
                tun_events |= PollFlags::POLLOUT;
            }
            let mut fds = [
                PollFd::new(signal_fd.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.udp.as_fd(), udp_events),
                PollFd::new(self.tun.as_fd(), tun_events),
            ];
            let timeout = TimeSpec::from_duration(wake.saturating_duration_since(now));
            match ppoll(&mut fds, Some(timeout), None) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
            let ready = |fd: &PollFd, flag| fd.revents().is_some_and(|r| r.contains(flag));
            if ready(&fds[1], PollFlags::POLLOUT) {
                self.udp_blocked = false;
            }
            if ready(&fds[2], PollFlags::POLLOUT) {
                self.tun_blocked = false;
            }
            self.counters.poll_wakeups += 1;
            Ok(())
        }

        fn pacer_wait(&mut self, now: StdInstant) -> Option<Duration> {
            let pacer = self.pacer.as_mut()?;
            pacer.refill(now);
            pacer.wait()
        }

        /// UDP → engine. `true` if the batch ran out before the socket did.
        fn receive_inbound(&mut self) -> io::Result<bool> {
            for _ in 0..BATCH {
                let len = match self.udp.recv(&mut self.udp_buffer) {
                    Ok(len) => len,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                    // An ICMP error from before the peer was up, reported once.
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                        self.counters.udp_receive_errors += 1;
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                self.counters.udp_datagrams_received += 1;
                let Some((sequence, packet)) = self.udp_buffer[..len].split_first_chunk() else {
                    self.counters.malformed_datagrams += 1;
                    continue;
                };
                let sequence = u64::from_be_bytes(*sequence);
                match self.last_sequence {
                    Some(last) if sequence <= last => self.counters.link_reorders += 1,
                    last => {
                        let expected = last.map_or(0, |l| l + 1);
                        self.counters.sequence_gaps += sequence - expected;
                        self.last_sequence = Some(sequence);
                    }
                }
                let now = self.now();
                // Drops by policy and malformed packets are counted by the engine; the
                // fingerprints follow what stays queued.
                match self.tunnel.on_inbound_packet(now, packet) {
                    Ok(InboundDisposition::Queued) => self.inbound_order.pushed(packet),
                    Ok(InboundDisposition::QueuedAfterDroppingOldest { packets, .. }) => {
                        self.inbound_order.dropped_oldest(packets);
                        self.inbound_order.pushed(packet);
                    }
                    Ok(InboundDisposition::QueuedAfterDroppingFromFattest { .. }) => {
                        self.inbound_order.pushed(packet)
                    }
                    Ok(InboundDisposition::DroppedNewest) | Err(_) => {}
                    Ok(other) => unreachable!("a disposition this host does not know: {other:?}"),
                }
            }
            Ok(true)
        }

        /// Engine → TUN. `true` if the batch ran out with packets left.
        fn write_inbound(&mut self) -> io::Result<bool> {
            for _ in 0..BATCH {
                if self.tun_blocked {
                    return Ok(false);
                }
                let now = self.now();
                let packet = if self.inbound_unwritten {
                    self.tunnel.inbound_in_flight().next()
                } else {
                    // The drops the engine made before this hand-out are in its stats, so
                    // the packet is looked up again (the newest in flight) after reading them.
                    if self.tunnel.poll_inbound(now).is_some() {
                        let drops = self.tunnel.stats().inbound.aqm_dropped_packets;
                        let packet = self.tunnel.inbound_in_flight().last();
                        if let Some(packet) = packet {
                            self.inbound_order.handed_out(packet, drops);
                        }
                        packet
                    } else {
                        None
                    }
                };
                let Some(packet) = packet else {
                    return Ok(false);
                };
                match self.tun.send(packet) {
                    Ok(_) => self.counters.tun_packets_written += 1,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        self.counters.tun_write_would_block += 1;
                        self.inbound_unwritten = true;
                        self.tun_blocked = true;
                        return Ok(false);
                    }
                    // The kernel refused this packet (say, a malformed one): drop it.
                    Err(_) => self.counters.tun_write_errors += 1,
                }
                self.inbound_unwritten = false;
                self.tunnel
                    .complete_inbound(now, 1)
                    .map_err(|e| io::Error::other(e.to_string()))?;
            }
            Ok(true)
        }

        /// TUN → engine, only while the engine allows reading. `true` if the batch ran out
        /// while reading was still allowed.
        fn read_outbound(&mut self) -> io::Result<bool> {
            for _ in 0..BATCH {
                if !self.reading {
                    return Ok(false);
                }
                let len = match self.tun.recv(&mut self.tun_buffer) {
                    Ok(len) => len,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                    Err(e) => return Err(e),
                };
                self.counters.tun_packets_read += 1;
                let now = self.now();
                let packet = &self.tun_buffer[..len];
                match self.tunnel.on_outbound_packet(now, packet) {
                    Ok(()) => self.outbound_order.pushed(packet),
                    Err(PacketError::NoRoom) => self.counters.outbound_refused_by_engine += 1,
                    // Counted by the engine under their own reasons (the error is
                    // `#[non_exhaustive]`: a refusal added later is counted there too).
                    Err(_) => {}
                }
                if !self.tunnel.can_read_outbound() {
                    // Paused at the high watermark: the TUN descriptor leaves the poll set until
                    // a completion reports `resume_reading`.
                    self.reading = false;
                }
            }
            Ok(true)
        }

        /// Engine → UDP. `true` if the batch ran out with packets left.
        fn send_outbound(&mut self) -> io::Result<bool> {
            if self.queue_limit {
                let now = self.now();
                let unsent = socket_unsent(&self.udp);
                self.tunnel.on_outbound_queued_below(now, unsent);
            }
            for _ in 0..BATCH {
                if self.udp_blocked || self.retry_at.is_some() {
                    return Ok(false);
                }
                let wall = StdInstant::now();
                if self.pacer_wait(wall).is_some() {
                    return Ok(false);
                }
                let now = self.now();
                let packet = if self.outbound_unsent {
                    self.tunnel.outbound_in_flight().next()
                } else {
                    // The drops the engine made before this hand-out are in its stats, so
                    // the packet is looked up again (the newest in flight) after reading them.
                    if self.tunnel.poll_outbound(now).is_some() {
                        let drops = self.tunnel.stats().outbound.aqm_dropped_packets;
                        let packet = self.tunnel.outbound_in_flight().last();
                        if let Some(packet) = packet {
                            self.outbound_order.handed_out(packet, drops);
                        }
                        packet
                    } else {
                        None
                    }
                };
                let Some(packet) = packet else {
                    return Ok(false);
                };
                let sequence = self.next_sequence.to_be_bytes();
                let iov = [IoSlice::new(&sequence), IoSlice::new(packet)];
                let sent = nix::sys::socket::sendmsg::<SockaddrIn>(
                    self.udp.as_raw_fd(),
                    &iov,
                    &[],
                    MsgFlags::empty(),
                    None,
                );
                let wire_len = packet.len() + SEQUENCE_LEN + IP_UDP_OVERHEAD;
                match sent {
                    Ok(_) => {}
                    Err(Errno::EAGAIN) => {
                        self.counters.udp_send_would_block += 1;
                        self.outbound_unsent = true;
                        self.udp_blocked = true;
                        return Ok(false);
                    }
                    Err(Errno::ENOBUFS) => {
                        self.counters.udp_send_no_buffers += 1;
                        self.outbound_unsent = true;
                        self.retry_at = Some(wall + ENOBUFS_RETRY);
                        return Ok(false);
                    }
                    // An earlier ICMP error reported on this send; the datagram did not go.
                    Err(Errno::ECONNREFUSED) => {
                        self.counters.udp_send_connection_refused += 1;
                        self.outbound_unsent = true;
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                }
                self.counters.udp_datagrams_sent += 1;
                self.next_sequence += 1;
                self.outbound_unsent = false;
                if let Some(pacer) = self.pacer.as_mut() {
                    pacer.tokens -= wire_len as f64;
                }
                let completion = self
                    .tunnel
                    .complete_outbound(now, 1)
                    .map_err(|e| io::Error::other(e.to_string()))?;
                if completion.resume_reading {
                    // The edge: start reading the TUN device again.
                    self.counters.resume_edges += 1;
                    self.reading = true;
                }
            }
            Ok(true)
        }

        fn report(&self, options: &Options, stop: Stop) -> Value {
            let config = &options.config;
            let stats = self.tunnel.stats();
            let c = &self.counters;
            json!({
                "tun": options.tun,
                "elapsed_secs": self.started.elapsed().as_secs_f64(),
                "stopped_by": match stop {
                    Stop::Running => None,
                    Stop::Duration => Some("duration".to_owned()),
                    Stop::Signal(signal) => Some(signal.as_str().to_owned()),
                },
                "ceiling_bytes": Tunnel::footprint(config),
                "config": {
                    "outbound_bytes": config.outbound_bytes,
                    "outbound_packets": config.outbound_packets,
                    "inbound_bytes": config.inbound_bytes,
                    "inbound_packets": config.inbound_packets,
                    "max_packet_len": config.max_packet_len,
                    "outbound_high_watermark_bytes": config.outbound_high_watermark_bytes,
                    "outbound_low_watermark_bytes": config.outbound_low_watermark_bytes,
                    "outbound_high_watermark_packets": config.outbound_high_watermark_packets,
                    "outbound_low_watermark_packets": config.outbound_low_watermark_packets,
                    "aqm": config.aqm.to_string(),
                    "inbound_drop_policy": match config.inbound_drop_policy {
                        DropPolicy::DropNewest => "newest",
                        DropPolicy::DropOldest => "oldest",
                    },
                    "mtu": options.mtu,
                    "pace_mbit": options.pace_mbit,
                    "udp_sndbuf": options.udp_sndbuf,
                },
                "engine": engine_json(&stats),
                "host": {
                    "tun_packets_read": c.tun_packets_read,
                    "outbound_refused_by_engine": c.outbound_refused_by_engine,
                    "udp_datagrams_sent": c.udp_datagrams_sent,
                    "udp_send_would_block": c.udp_send_would_block,
                    "udp_send_no_buffers": c.udp_send_no_buffers,
                    "udp_send_connection_refused": c.udp_send_connection_refused,
                    "udp_datagrams_received": c.udp_datagrams_received,
                    "udp_receive_errors": c.udp_receive_errors,
                    "malformed_datagrams": c.malformed_datagrams,
                    "link_reorders": c.link_reorders,
                    // Packets handed out by the engine in a different order from the one they
                    // were pushed in, after the drops it reports (CoDel, drop-oldest): always 0.
                    // With flow queues, within each flow.
                    "core_reorders_outbound": self.outbound_order.mismatches(),
                    "core_reorders_inbound": self.inbound_order.mismatches(),
                    // Fingerprints that found the order check full: always 0, since the check
                    // holds one per slot of the engine and forgets what the engine drops.
                    "order_check_overflows":
                        self.outbound_order.overflows() + self.inbound_order.overflows(),
                    // Flow queues: packets handed out after leaving the per-flow check's window.
                    "order_check_unverified":
                        self.outbound_order.unverified() + self.inbound_order.unverified(),
                    "sequence_gaps": c.sequence_gaps,
                    "tun_packets_written": c.tun_packets_written,
                    "tun_write_would_block": c.tun_write_would_block,
                    "tun_write_errors": c.tun_write_errors,
                    "resume_edges": c.resume_edges,
                    "reading_state_mismatches": c.reading_state_mismatches,
                    "poll_wakeups": c.poll_wakeups,
                },
            })
        }

        /// The report, with the queue samples since the previous one (which it forgets).
        fn report_and_reset(&mut self, options: &Options, stop: Stop) -> Value {
            let mut report = self.report(options, stop);
            report["queue_samples"] = self.samples.take();
            report
        }
    }

    fn engine_json(stats: &TunnelStats) -> Value {
        json!({
            "outbound": direction_json(&stats.outbound),
            "inbound": direction_json(&stats.inbound),
            "outbound_refused_packets": stats.outbound_refused_packets,
            "outbound_refused_bytes": stats.outbound_refused_bytes,
            "outbound_pauses": stats.outbound_pauses,
            "outbound_paused_micros": stats.outbound_paused_micros,
            "outbound_paused": stats.outbound_paused,
            "inbound_dropped_newest_packets": stats.inbound_dropped_newest_packets,
            "inbound_dropped_newest_bytes": stats.inbound_dropped_newest_bytes,
            "inbound_dropped_oldest_packets": stats.inbound_dropped_oldest_packets,
            "inbound_dropped_oldest_bytes": stats.inbound_dropped_oldest_bytes,
            "outbound_queue_limit_bytes": stats.outbound_queue_limit_bytes,
            "outbound_bytes_below": stats.outbound_bytes_below,
            "outbound_limit_holds": stats.outbound_limit_holds,
            "outbound_limit_grows": stats.outbound_limit_grows,
            "outbound_limit_shrinks": stats.outbound_limit_shrinks,
        })
    }

    fn direction_json(stats: &DirectionStats) -> Value {
        json!({
            "packets_queued": stats.packets_queued,
            "bytes_queued": stats.bytes_queued,
            "packets_in_flight": stats.packets_in_flight,
            "bytes_in_flight": stats.bytes_in_flight,
            "bytes_high_water": stats.bytes_high_water,
            "packets_high_water": stats.packets_high_water,
            "packets_accepted": stats.packets_accepted,
            "bytes_accepted": stats.bytes_accepted,
            "packets_completed": stats.packets_completed,
            "bytes_completed": stats.bytes_completed,
            "empty_packets": stats.empty_packets,
            "oversized_packets": stats.oversized_packets,
            "aqm_dropped_packets": stats.aqm_dropped_packets,
            "aqm_dropped_bytes": stats.aqm_dropped_bytes,
            "overflow_dropped_packets": stats.overflow_dropped_packets,
            "overflow_dropped_bytes": stats.overflow_dropped_bytes,
            "last_sojourn_micros": stats.last_sojourn_micros,
        })
    }

    /// The order check of one direction: in push order (FIFO), or within each flow (flow
    /// queues).
    enum Order {
        Fifo(OrderCheck),
        Flows(FlowOrderCheck),
    }

    impl Order {
        fn new(config: &TunnelConfig, packets: usize) -> Order {
            if config.aqm.flow_queues() > 0 {
                Order::Flows(FlowOrderCheck::new(4 * packets))
            } else {
                Order::Fifo(OrderCheck::new(packets))
            }
        }

        fn pushed(&mut self, packet: &[u8]) {
            match self {
                Order::Fifo(check) => check.pushed(packet),
                Order::Flows(check) => check.pushed(packet),
            }
        }

        fn dropped_oldest(&mut self, count: usize) {
            if let Order::Fifo(check) = self {
                check.dropped_oldest(count);
            }
        }

        fn handed_out(&mut self, packet: &[u8], total_drops: u64) {
            match self {
                Order::Fifo(check) => {
                    check.handed_out(packet, total_drops);
                }
                Order::Flows(check) => {
                    check.handed_out(packet);
                }
            }
        }

        fn mismatches(&self) -> u64 {
            match self {
                Order::Fifo(check) => check.mismatches,
                Order::Flows(check) => check.mismatches,
            }
        }

        fn overflows(&self) -> u64 {
            match self {
                Order::Fifo(check) => check.overflows,
                Order::Flows(_) => 0,
            }
        }

        fn unverified(&self) -> u64 {
            match self {
                Order::Fifo(_) => 0,
                Order::Flows(check) => check.unverified,
            }
        }
    }
}
