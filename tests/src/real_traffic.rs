//! Real traffic through the Linux kernel: two network namespaces, a rate-limited veth link, one
//! `tidegate-tun-forwarder` per namespace, and kernel TCP, ping and UDP through the tunnel.
//!
//! ```text
//!   namespace A                                                    namespace B
//!   apps -> tg0 10.77.1.1 -> forwarder -> veth0 10.77.0.1 ==tbf==> veth1 10.77.0.2 -> forwarder -> tg0 10.77.1.2
//! ```
//!
//! [`Lab::start`] builds that (namespace names carry the process id, so runs never collide) and
//! its `Drop` tears it down, also when a test panics. [`Lab::run_load`] runs bulk TCP (iperf3
//! when installed, otherwise a Rust sender and receiver), ping (when iputils-ping is installed)
//! and optionally an unresponsive UDP flood through the tunnel, and returns what it measured.
//! [`Lab::snapshot`] reads the forwarders' statistics between phases and [`Lab::stop`] stops
//! them and returns their final statistics.
//!
//! The tunnel also carries IPv6 (fd77:1::/64), and a load can take the veth link itself
//! ([`Route::Link`], the raw link) instead of the tunnel. [`Lab::start_wireguard`] builds the
//! same link with wireguard-go on both ends (10.77.2.0/24) in place of the forwarders, for a
//! side-by-side comparison. While a load runs, the qdisc backlog of each device in namespace A
//! is sampled every 100 ms, so a report can say where the queue sat.
//!
//! Every address used lives only inside the two namespaces (10.77.0.0/30 on the veth link,
//! 10.77.1.0/24 and fd77:1::/64 in the tunnel, 10.77.2.0/24 in WireGuard); nothing is sent
//! anywhere else.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::sched::{CloneFlags, setns};
use nix::sys::signal::{Signal, kill};
use nix::sys::socket::{setsockopt, sockopt};
use nix::unistd::Pid;
use serde_json::Value;

/// Tunnel address of namespace A.
pub const TUNNEL_A: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 1);
/// Tunnel address of namespace B: the target of every load.
pub const TUNNEL_B: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 2);
/// IPv6 tunnel address of namespace A.
pub const TUNNEL6_A: Ipv6Addr = Ipv6Addr::new(0xfd77, 1, 0, 0, 0, 0, 0, 1);
/// IPv6 tunnel address of namespace B.
pub const TUNNEL6_B: Ipv6Addr = Ipv6Addr::new(0xfd77, 1, 0, 0, 0, 0, 0, 2);
const LINK_A: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const LINK_B: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const WIREGUARD_A: Ipv4Addr = Ipv4Addr::new(10, 77, 2, 1);
const WIREGUARD_B: Ipv4Addr = Ipv4Addr::new(10, 77, 2, 2);
const WIREGUARD_PORT: u16 = 51820;
/// Interface names of the two wireguard-go instances: distinct, since their control sockets
/// share one directory (`/var/run/wireguard`).
const WIREGUARD_DEVICES: [&str; 2] = ["tgwg-a", "tgwg-b"];
const FORWARDER_PORT: u16 = 7000;
const TCP_PORT: u16 = 5201;
const FLOOD_PORT: u16 = 5202;
const TUN_NAME: &str = "tg0";
const VETH_A: &str = "veth0";
const VETH_B: &str = "veth1";

/// TCP/IP headers inside a tunnel packet: IPv4 20, TCP 20, TCP timestamps 12.
pub const TCP_IP_HEADERS: u32 = 52;
/// Bytes `tbf` counts per tunnel packet on top of the packet itself: the forwarder's sequence
/// number 8, UDP 8, IPv4 20, Ethernet 14 (a veth qdisc sees the Ethernet header).
pub const TUNNEL_OVERHEAD: u32 = 50;

/// Forwarder flags for the queue-management tests: 256 KiB and 256 packets each way, reading
/// pausing at 192 KiB or 192 packets and resuming at 128 KiB and 128 packets. A full FIFO of
/// that size is about 40 ms of standing queue at 50 Mbit/s.
pub const ENGINE_256K: &[&str] = &[
    "--outbound-bytes",
    "262144",
    "--outbound-packets",
    "256",
    "--outbound-high-bytes",
    "196608",
    "--outbound-low-bytes",
    "131072",
    "--outbound-high-packets",
    "192",
    "--outbound-low-packets",
    "128",
    "--inbound-bytes",
    "262144",
    "--inbound-packets",
    "256",
];

/// The link and the forwarders.
#[derive(Clone, Debug)]
pub struct LabSpec {
    /// `tbf` rate on the egress of both veth ends, in Mbit/s (`tc`'s mbit: 10^6 bit/s).
    pub link_mbit: u32,
    /// `tbf` bucket depth in bytes.
    pub tbf_burst_bytes: u32,
    /// `tbf` queue limit in bytes. Larger than the forwarder's socket buffer, so the socket
    /// refuses sends (`EAGAIN`, backpressure into the engine) before `tbf` would drop.
    pub tbf_limit_bytes: u32,
    /// MTU of the veth pair.
    pub veth_mtu: u32,
    /// MTU of the TUN devices, and the engine's `max_packet_len`.
    pub tunnel_mtu: u32,
    /// `SO_SNDBUF` of each forwarder's UDP socket (the kernel doubles it). Small, so a slow link
    /// pushes back into the engine (`EAGAIN`) after a few packets instead of queueing in the
    /// socket.
    /// `None` keeps the kernel's default, as on a platform that cannot set it.
    pub udp_sndbuf: Option<u32>,
    /// Kernel queue of each TUN device, in packets.
    pub tun_txqueuelen: u32,
    /// Extra forwarder flags, for example engine capacities or a queue management policy.
    pub forwarder_args: Vec<String>,
    /// The forwarders stop by themselves after this long even if nobody stops them.
    pub forwarder_max_secs: u32,
    /// The TCP sender's congestion control (iperf3 `-C`, a per-socket `TCP_CONGESTION`, which
    /// root may set even where the namespace's default cannot be changed). Explicit because a
    /// namespace inherits the machine's default (BBR on some kernels) and how TCP fares beside
    /// a flood depends on it. The Rust fallback sender uses the namespace's default.
    pub congestion_control: &'static str,
}

impl Default for LabSpec {
    fn default() -> LabSpec {
        LabSpec {
            link_mbit: 50,
            tbf_burst_bytes: 16 * 1024,
            tbf_limit_bytes: 512 * 1024,
            veth_mtu: 1500,
            tunnel_mtu: 1400,
            udp_sndbuf: Some(16 * 1024),
            tun_txqueuelen: 500,
            forwarder_args: Vec::new(),
            forwarder_max_secs: 120,
            congestion_control: "cubic",
        }
    }
}

impl LabSpec {
    /// The most TCP goodput the link can carry, in Mbit/s: each full-size tunnel packet of
    /// `tunnel_mtu` bytes carries `tunnel_mtu - 52` bytes of TCP payload and costs
    /// `tunnel_mtu + 50` bytes of the `tbf` rate.
    pub fn max_goodput_mbit(&self) -> f64 {
        f64::from(self.link_mbit) * f64::from(self.tunnel_mtu - TCP_IP_HEADERS)
            / f64::from(self.tunnel_mtu + TUNNEL_OVERHEAD)
    }
}

/// Which path a load takes from A to B.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Route {
    /// Through the tunnel, over IPv4.
    #[default]
    Tunnel,
    /// Through the tunnel, over IPv6.
    Tunnel6,
    /// The veth link itself, no tunnel: the raw link.
    Link,
    /// Through wireguard-go (a lab from [`Lab::start_wireguard`]).
    WireGuard,
}

impl Route {
    /// Source and destination addresses.
    pub fn addresses(self) -> (IpAddr, IpAddr) {
        match self {
            Route::Tunnel => (TUNNEL_A.into(), TUNNEL_B.into()),
            Route::Tunnel6 => (TUNNEL6_A.into(), TUNNEL6_B.into()),
            Route::Link => (LINK_A.into(), LINK_B.into()),
            Route::WireGuard => (WIREGUARD_A.into(), WIREGUARD_B.into()),
        }
    }
}

/// What one [`Lab::run_load`] runs, all at once.
#[derive(Clone, Debug)]
pub struct Load {
    /// Seconds of bulk TCP from A to B, the omitted start included; 0 for none.
    pub tcp_secs: f64,
    /// Seconds at the start of the transfer left out of the goodput (TCP slow start).
    pub tcp_omit_secs: f64,
    /// Ping B from A during the load (after the omitted start), if ping is installed.
    pub ping: bool,
    /// Interval between pings, in seconds.
    pub ping_interval_secs: f64,
    /// An unresponsive UDP flood from A to B at this many Mbit/s of UDP payload, during the
    /// TCP transfer.
    pub udp_flood_mbit: Option<f64>,
    /// Force the Rust TCP sender even when iperf3 is installed.
    pub force_rust_tcp: bool,
    /// The path from A to B.
    pub route: Route,
}

impl Load {
    /// Bulk TCP for `secs` seconds with ping alongside.
    pub fn bulk_tcp(secs: f64) -> Load {
        Load {
            tcp_secs: secs,
            tcp_omit_secs: 1.0,
            ping: true,
            ping_interval_secs: 0.1,
            udp_flood_mbit: None,
            force_rust_tcp: false,
            route: Route::Tunnel,
        }
    }
}

/// What a [`Lab::run_load`] measured.
#[derive(Clone, Debug, Default)]
pub struct Measurements {
    /// `"iperf3"` or `"rust"`, or `None` without TCP.
    pub tcp_tool: Option<&'static str>,
    /// TCP goodput at the receiver, in Mbit/s, leaving out the first `tcp_omit_secs`.
    pub tcp_goodput_mbit: Option<f64>,
    /// TCP retransmissions, when iperf3 reports them.
    pub tcp_retransmits: Option<u64>,
    /// Round-trip times, or `None` when ping was not run (the reason is in `notes`).
    pub ping: Option<PingSummary>,
    /// The UDP flood, when one ran.
    pub udp_flood: Option<FloodSummary>,
    /// Backlog of each qdisc in namespace A during the load (the TUN device's kernel queue, the
    /// `tbf` bottleneck on the veth link), sampled every 100 ms.
    pub backlogs: Vec<Backlog>,
    /// What was skipped and why.
    pub notes: Vec<String>,
}

/// The backlog of one device's qdisc during a load, in bytes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Backlog {
    /// The device.
    pub dev: String,
    /// The qdisc kind (`tbf`, `pfifo_fast`, ...).
    pub kind: String,
    /// Median of the samples.
    pub median_bytes: u64,
    /// Largest sample.
    pub max_bytes: u64,
    /// Samples taken.
    pub samples: usize,
}

/// Round-trip times seen by ping, in milliseconds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PingSummary {
    /// Echo requests sent.
    pub sent: u64,
    /// Replies received.
    pub received: u64,
    /// Smallest round trip.
    pub min_ms: f64,
    /// Median round trip.
    pub median_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// Largest round trip.
    pub max_ms: f64,
}

/// The unresponsive UDP flood.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FloodSummary {
    /// What the sender offered, Mbit/s of UDP payload.
    pub offered_mbit: f64,
    /// What arrived at B, Mbit/s of UDP payload.
    pub received_mbit: f64,
}

/// Two namespaces, the veth link with `tbf` on it, and a forwarder in each. Torn down on drop.
#[derive(Debug)]
pub struct Lab {
    spec: LabSpec,
    namespaces: [String; 2],
    forwarders: Vec<Forwarder>,
    /// wireguard-go instances, in a lab from [`Lab::start_wireguard`].
    wireguard: Vec<Child>,
    /// The namespaces that exist and must be deleted.
    created: Vec<String>,
}

/// Statistics of the two forwarders, as printed by `tidegate-tun-forwarder` on exit.
#[derive(Clone, Debug)]
pub struct ForwarderReports {
    /// The forwarder in namespace A (bulk data goes out of its engine's outbound ring).
    pub a: Value,
    /// The forwarder in namespace B.
    pub b: Value,
}

/// `tbf` counters of one veth end.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TbfStats {
    /// Bytes sent.
    pub bytes: u64,
    /// Packets sent.
    pub packets: u64,
    /// Packets `tbf` dropped.
    pub drops: u64,
}

impl Lab {
    /// Why this machine cannot run the lab, or `None` if it can: root, `ip` with `netns`,
    /// `tc`, and `/dev/net/tun` are needed.
    pub fn unavailable() -> Option<String> {
        if !nix::unistd::geteuid().is_root() {
            return Some("needs root (creates network namespaces and TUN devices)".to_owned());
        }
        if !Path::new("/dev/net/tun").exists() {
            return Some("/dev/net/tun is missing".to_owned());
        }
        // Listing is not enough: a container may run as root without CAP_NET_ADMIN.
        let probe = format!("tidegate-probe-{}", std::process::id());
        match Command::new("ip").args(["netns", "add", &probe]).output() {
            Ok(out) if out.status.success() => {
                let _ = Command::new("ip").args(["netns", "del", &probe]).output();
            }
            Ok(out) => {
                return Some(format!(
                    "`ip netns add` does not work here: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            Err(_) => return Some("`ip` (iproute2) is not installed".to_owned()),
        }
        if Command::new("tc").arg("-V").output().is_err() {
            return Some("`tc` (iproute2) is not installed".to_owned());
        }
        None
    }

    /// Build the namespaces, the link and the tunnel, and start the forwarders.
    pub fn start(spec: LabSpec, forwarder: &Path) -> Result<Lab, String> {
        let pid = std::process::id();
        let mut lab = Lab {
            spec,
            namespaces: [format!("tidegate-a-{pid}"), format!("tidegate-b-{pid}")],
            forwarders: Vec::new(),
            wireguard: Vec::new(),
            created: Vec::new(),
        };
        lab.build_network()?;
        lab.start_forwarders(forwarder)?;
        lab.add_tunnel_ipv6()?;
        Ok(lab)
    }

    /// Why wireguard-go cannot run here, or `None` if it can (it and `wg` are installed).
    pub fn wireguard_unavailable() -> Option<String> {
        if !tool_available("wireguard-go", &["--version"]) {
            return Some("wireguard-go is not installed".to_owned());
        }
        if !tool_available("wg", &["--version"]) {
            return Some("wg (wireguard-tools) is not installed".to_owned());
        }
        None
    }

    /// The same namespaces and link with wireguard-go on both ends instead of the forwarders:
    /// interfaces `tgwg-a` and `tgwg-b` with the tunnel MTU, 10.77.2.1 and 10.77.2.2, run in
    /// the foreground (`-f`) so the lab owns the processes. Loads take [`Route::WireGuard`].
    pub fn start_wireguard(spec: LabSpec) -> Result<Lab, String> {
        let pid = std::process::id();
        let mut lab = Lab {
            spec,
            namespaces: [format!("tidegate-wa-{pid}"), format!("tidegate-wb-{pid}")],
            forwarders: Vec::new(),
            wireguard: Vec::new(),
            created: Vec::new(),
        };
        lab.build_network()?;
        let key = |args: &[&str], input: Option<&str>| -> Result<String, String> {
            let mut child = Command::new("wg")
                .args(args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .map_err(|e| format!("wg: {e}"))?;
            if let (Some(input), Some(stdin)) = (input, child.stdin.as_mut()) {
                stdin
                    .write_all(input.as_bytes())
                    .map_err(|e| format!("wg: {e}"))?;
            }
            drop(child.stdin.take());
            let out = child.wait_with_output().map_err(|e| format!("wg: {e}"))?;
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        };
        let private = [key(&["genkey"], None)?, key(&["genkey"], None)?];
        let public = [
            key(&["pubkey"], Some(&private[0]))?,
            key(&["pubkey"], Some(&private[1]))?,
        ];
        let dir = std::env::temp_dir().join(format!("tidegate-wg-{pid}"));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let mtu = lab.spec.tunnel_mtu.to_string();
        let sides = [
            (0, WIREGUARD_A, LINK_B, 1usize),
            (1, WIREGUARD_B, LINK_A, 0usize),
        ];
        for (side, address, peer_link, peer) in sides {
            let ns = lab.namespaces[side].clone();
            let dev = WIREGUARD_DEVICES[side];
            let child = Command::new("ip")
                .args(["netns", "exec", &ns, "wireguard-go", "-f", dev])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("starting wireguard-go: {e}"))?;
            lab.wireguard.push(child);
            // wireguard-go creates the device, then its control socket.
            let deadline = Instant::now() + Duration::from_secs(5);
            while run("ip", &["-n", &ns, "link", "show", dev]).is_err()
                || run("ip", &["netns", "exec", &ns, "wg", "show", dev]).is_err()
            {
                if Instant::now() > deadline {
                    return Err(format!("wireguard-go made no {dev} in {ns} within 5 s"));
                }
                thread::sleep(Duration::from_millis(20));
            }
            let key_file = dir.join(format!("key-{side}"));
            std::fs::write(&key_file, &private[side]).map_err(|e| e.to_string())?;
            let key_path = key_file.to_string_lossy().into_owned();
            let port = WIREGUARD_PORT.to_string();
            let endpoint = format!("{peer_link}:{WIREGUARD_PORT}");
            let peer_address = if side == 0 { WIREGUARD_B } else { WIREGUARD_A };
            let allowed = format!("{peer_address}/32");
            run(
                "ip",
                &[
                    "netns",
                    "exec",
                    &ns,
                    "wg",
                    "set",
                    dev,
                    "private-key",
                    &key_path,
                    "listen-port",
                    &port,
                    "peer",
                    &public[peer],
                    "endpoint",
                    &endpoint,
                    "allowed-ips",
                    &allowed,
                ],
            )?;
            let cidr = format!("{address}/24");
            run("ip", &["-n", &ns, "addr", "add", &cidr, "dev", dev])?;
            run("ip", &["-n", &ns, "link", "set", dev, "mtu", &mtu, "up"])?;
        }
        let _ = std::fs::remove_dir_all(&dir);
        Ok(lab)
    }

    /// The process ids of the forwarders (A, then B).
    pub fn forwarder_pids(&self) -> Vec<u32> {
        self.forwarders.iter().map(|f| f.child.id()).collect()
    }

    /// The process ids of the wireguard-go instances (A, then B).
    pub fn wireguard_pids(&self) -> Vec<u32> {
        self.wireguard.iter().map(Child::id).collect()
    }

    /// Give both TUN devices their IPv6 address (no duplicate detection, so it is usable at
    /// once).
    fn add_tunnel_ipv6(&self) -> Result<(), String> {
        for (ns, address) in [
            (&self.namespaces[0], TUNNEL6_A),
            (&self.namespaces[1], TUNNEL6_B),
        ] {
            let cidr = format!("{address}/64");
            run(
                "ip",
                &["-n", ns, "addr", "add", &cidr, "dev", TUN_NAME, "nodad"],
            )?;
        }
        Ok(())
    }

    /// The namespace names, A then B.
    pub fn namespaces(&self) -> &[String; 2] {
        &self.namespaces
    }

    /// The lab's configuration.
    pub fn spec(&self) -> &LabSpec {
        &self.spec
    }

    /// Ping B from A for `secs` seconds, or `Ok(None)` with ping missing.
    pub fn ping(&self, secs: f64, interval_secs: f64) -> Result<Option<PingSummary>, String> {
        if !tool_available("ping", &["-V"]) {
            return Ok(None);
        }
        let child = self.spawn_ping(Route::Tunnel, secs, interval_secs)?;
        finish_ping(child).map(Some)
    }

    /// Run `load` through the tunnel and measure it.
    pub fn run_load(&self, load: &Load) -> Result<Measurements, String> {
        let mut measured = Measurements::default();
        let use_iperf3 = !load.force_rust_tcp && tool_available("iperf3", &["--version"]);
        let ping_installed = tool_available("ping", &["-V"]);
        if load.tcp_secs > 0.0 && !use_iperf3 && !load.force_rust_tcp {
            crate::skip::skip(
                &["iperf3"],
                "iperf3 is not installed: kernel TCP via a Rust sender",
            );
        }
        if load.ping && !ping_installed {
            crate::skip::skip(
                &["iputils-ping"],
                "ping is not installed: latency not measured",
            );
        }
        if load.tcp_secs > 0.0 && !use_iperf3 {
            measured.notes.push(if load.force_rust_tcp {
                "TCP: Rust sender and receiver (forced)".to_owned()
            } else {
                "TCP: iperf3 not installed, Rust sender and receiver used".to_owned()
            });
        }
        if load.ping && !ping_installed {
            measured
                .notes
                .push("ping: iputils-ping not installed, latency not measured".to_owned());
        }

        // Start everything that runs alongside the transfer.
        let sampler = BacklogSampler::start(&self.namespaces[0]);
        let flood = load.udp_flood_mbit.map(|mbit| {
            // Cover the whole transfer, which starts a moment after the flood.
            let secs = load.tcp_secs.max(1.0) + 1.0;
            (mbit, self.start_flood(load.route, mbit, secs))
        });
        let tcp = if load.tcp_secs <= 0.0 {
            None
        } else if use_iperf3 {
            Some(TcpRun::Iperf3(self.start_iperf3(load)?))
        } else {
            Some(TcpRun::Rust(self.start_rust_tcp(load)))
        };
        let ping = if load.ping && ping_installed {
            // Sample latency under load: after the omitted start, until the transfer ends.
            thread::sleep(Duration::from_secs_f64(load.tcp_omit_secs));
            let secs = (load.tcp_secs - load.tcp_omit_secs).max(1.0);
            Some(self.spawn_ping(load.route, secs, load.ping_interval_secs)?)
        } else {
            None
        };

        match tcp {
            Some(TcpRun::Iperf3(run)) => {
                let (goodput, retransmits) = run.finish()?;
                measured.tcp_tool = Some("iperf3");
                measured.tcp_goodput_mbit = Some(goodput);
                measured.tcp_retransmits = retransmits;
            }
            Some(TcpRun::Rust(run)) => {
                measured.tcp_tool = Some("rust");
                measured.tcp_goodput_mbit = Some(run.finish()?);
            }
            None => {}
        }
        if let Some(child) = ping {
            measured.ping = Some(finish_ping(child)?);
        }
        measured.backlogs = sampler.finish();
        if let Some((offered_mbit, (sender, receiver))) = flood {
            let sent = join(sender)?;
            let received = join(receiver)?;
            measured.udp_flood = Some(FloodSummary {
                offered_mbit: sent.mbit(),
                received_mbit: received.mbit(),
            });
            if sent.mbit() < offered_mbit * 0.5 {
                measured.notes.push(format!(
                    "UDP flood: offered only {:.1} of {offered_mbit} Mbit/s",
                    sent.mbit()
                ));
            }
        }
        Ok(measured)
    }

    /// `tbf` counters of the veth end in A (`a == true`) or in B.
    pub fn tbf_stats(&self, a: bool) -> Result<TbfStats, String> {
        let (ns, dev) = if a {
            (&self.namespaces[0], VETH_A)
        } else {
            (&self.namespaces[1], VETH_B)
        };
        let out = run("tc", &["-n", ns, "-s", "-j", "qdisc", "show", "dev", dev])?;
        let json: Value =
            serde_json::from_slice(&out.stdout).map_err(|e| format!("tc -j qdisc show: {e}"))?;
        let tbf = json
            .as_array()
            .and_then(|qdiscs| qdiscs.iter().find(|q| q["kind"] == "tbf"))
            .ok_or("no tbf qdisc in tc's output")?;
        Ok(TbfStats {
            bytes: tbf["bytes"].as_u64().unwrap_or(0),
            packets: tbf["packets"].as_u64().unwrap_or(0),
            drops: tbf["drops"].as_u64().unwrap_or(0),
        })
    }

    /// The forwarders' statistics now (SIGUSR1); they keep running.
    pub fn snapshot(&mut self) -> Result<ForwarderReports, String> {
        let mut reports = Vec::new();
        for forwarder in &mut self.forwarders {
            forwarder.signal(Signal::SIGUSR1)?;
            reports.push(forwarder.report()?);
        }
        ForwarderReports::from_pair(reports)
    }

    /// Stop both forwarders (SIGTERM) and return the statistics each printed.
    pub fn stop(&mut self) -> Result<ForwarderReports, String> {
        let mut reports = Vec::new();
        for mut forwarder in std::mem::take(&mut self.forwarders) {
            // A forwarder that already exited still printed its report.
            let _ = forwarder.signal(Signal::SIGTERM);
            let report = forwarder.report()?;
            let deadline = Instant::now() + Duration::from_secs(5);
            let status = loop {
                if let Some(status) = forwarder.child.try_wait().map_err(|e| e.to_string())? {
                    break status;
                }
                if Instant::now() > deadline {
                    return Err("a forwarder did not exit within 5 s of SIGTERM".to_owned());
                }
                thread::sleep(Duration::from_millis(10));
            };
            if !status.success() {
                return Err(format!("a forwarder exited with {status}"));
            }
            reports.push(report);
        }
        ForwarderReports::from_pair(reports)
    }

    fn build_network(&mut self) -> Result<(), String> {
        let [a, b] = self.namespaces.clone();
        for ns in [&a, &b] {
            // A namespace left by an earlier run of the same pid would make `add` fail.
            let _ = run("ip", &["netns", "del", ns]);
            run("ip", &["netns", "add", ns])?;
            self.created.push(ns.clone());
            run("ip", &["-n", ns, "link", "set", "lo", "up"])?;
        }
        let spec = &self.spec;
        run(
            "ip",
            &[
                "-n", &a, "link", "add", VETH_A, "type", "veth", "peer", "name", VETH_B, "netns",
                &b,
            ],
        )?;
        let mtu = spec.veth_mtu.to_string();
        let rate = format!("{}mbit", spec.link_mbit);
        let burst = spec.tbf_burst_bytes.to_string();
        let limit = spec.tbf_limit_bytes.to_string();
        for (ns, dev, address) in [(&a, VETH_A, LINK_A), (&b, VETH_B, LINK_B)] {
            let cidr = format!("{address}/30");
            run("ip", &["-n", ns, "addr", "add", &cidr, "dev", dev])?;
            run("ip", &["-n", ns, "link", "set", dev, "mtu", &mtu, "up"])?;
            run(
                "tc",
                &[
                    "-n", ns, "qdisc", "add", "dev", dev, "root", "tbf", "rate", &rate, "burst",
                    &burst, "limit", &limit,
                ],
            )?;
        }
        Ok(())
    }

    fn start_forwarders(&mut self, forwarder: &Path) -> Result<(), String> {
        let spec = self.spec.clone();
        let sides = [
            (self.namespaces[0].clone(), TUNNEL_A, LINK_A, LINK_B),
            (self.namespaces[1].clone(), TUNNEL_B, LINK_B, LINK_A),
        ];
        for (ns, tunnel, local, peer) in &sides {
            let mut command = Command::new("ip");
            command
                .args(["netns", "exec", ns])
                .arg(forwarder)
                .args(["--tun", TUN_NAME])
                .args(["--tun-address", &format!("{tunnel}/24")])
                .args(["--mtu", &spec.tunnel_mtu.to_string()])
                .args(["--tun-txqueuelen", &spec.tun_txqueuelen.to_string()])
                .args(["--local", &format!("{local}:{FORWARDER_PORT}")])
                .args(["--peer", &format!("{peer}:{FORWARDER_PORT}")])
                .args(
                    spec.udp_sndbuf
                        .map(|bytes| ["--udp-sndbuf".to_owned(), bytes.to_string()])
                        .iter()
                        .flatten(),
                )
                .args(["--duration-secs", &spec.forwarder_max_secs.to_string()])
                .args(&spec.forwarder_args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit());
            let child = command
                .spawn()
                .map_err(|e| format!("starting the forwarder: {e}"))?;
            self.forwarders.push(Forwarder::new(child));
        }
        // Wait until both TUN devices carry their address.
        let deadline = Instant::now() + Duration::from_secs(5);
        for (ns, tunnel, _, _) in &sides {
            loop {
                let out = run(
                    "ip",
                    &["-n", ns, "-o", "-4", "addr", "show", "dev", TUN_NAME],
                );
                if out
                    .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(&tunnel.to_string()))
                {
                    break;
                }
                for forwarder in &mut self.forwarders {
                    if let Ok(Some(status)) = forwarder.child.try_wait() {
                        return Err(format!("a forwarder exited early with {status}"));
                    }
                }
                if Instant::now() > deadline {
                    return Err(format!("{TUN_NAME} in {ns} did not come up within 5 s"));
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }

    fn spawn_ping(&self, route: Route, secs: f64, interval_secs: f64) -> Result<Child, String> {
        let deadline = (secs.ceil() as u64).max(1).to_string();
        let interval = format!("{interval_secs:.3}");
        let target = route.addresses().1.to_string();
        Command::new("ip")
            .args(["netns", "exec", &self.namespaces[0]])
            .args(["ping", "-n", "-i", &interval, "-w", &deadline, &target])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting ping: {e}"))
    }

    fn start_iperf3(&self, load: &Load) -> Result<Iperf3Run, String> {
        let bind = load.route.addresses().1.to_string();
        let port = TCP_PORT.to_string();
        let server = Command::new("ip")
            .args(["netns", "exec", &self.namespaces[1]])
            .args(["iperf3", "-s", "-1", "-B", &bind, "-p", &port])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting the iperf3 server: {e}"))?;
        let mut run = Iperf3Run {
            server,
            client: None,
            started: Instant::now(),
            secs: load.tcp_secs,
        };
        // The server needs a moment to listen; a client that finds nobody fails at once.
        wait_for_listener(&self.namespaces[1], TCP_PORT)?;
        // iperf3 runs its omitted start (`-O`) before the `-t` seconds it measures.
        let omit_secs = load.tcp_omit_secs.round().max(0.0);
        let time = format!("{}", (load.tcp_secs - omit_secs).round().max(1.0) as u64);
        let omit = format!("{}", omit_secs as u64);
        let client = Command::new("ip")
            .args(["netns", "exec", &self.namespaces[0]])
            .args([
                "iperf3",
                "-c",
                &bind,
                "-p",
                &port,
                "-t",
                &time,
                "-O",
                &omit,
                "-J",
                "-C",
                self.spec.congestion_control,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting the iperf3 client: {e}"))?;
        run.client = Some(client);
        Ok(run)
    }

    fn start_rust_tcp(&self, load: &Load) -> RustTcpRun {
        let secs = load.tcp_secs;
        let omit = load.tcp_omit_secs;
        let target = load.route.addresses().1;
        let listener_ready = std::sync::Arc::new(std::sync::Barrier::new(2));
        let ready = listener_ready.clone();
        let receiver = in_namespace(&self.namespaces[1], move || {
            let listener = TcpListener::bind((target, TCP_PORT));
            ready.wait();
            receive_tcp(listener?, secs, omit)
        });
        listener_ready.wait();
        let congestion_control = self.spec.congestion_control;
        let sender = in_namespace(&self.namespaces[0], move || {
            send_tcp(target, secs, congestion_control)
        });
        RustTcpRun { sender, receiver }
    }

    fn start_flood(
        &self,
        route: Route,
        mbit: f64,
        secs: f64,
    ) -> (JoinHandle<io::Result<Rate>>, JoinHandle<io::Result<Rate>>) {
        let (source, target) = route.addresses();
        let bound = std::sync::Arc::new(std::sync::Barrier::new(2));
        let ready = bound.clone();
        let receiver = in_namespace(&self.namespaces[1], move || {
            let socket = UdpSocket::bind((target, FLOOD_PORT));
            ready.wait();
            receive_udp(socket?, secs + 0.5)
        });
        bound.wait();
        // Full-size datagrams: the tunnel MTU less the IP and UDP headers.
        let ip_udp = if target.is_ipv6() { 48 } else { 28 };
        let payload = (self.spec.tunnel_mtu - ip_udp) as usize;
        let sender = in_namespace(&self.namespaces[0], move || {
            blast_udp(
                source,
                SocketAddr::from((target, FLOOD_PORT)),
                mbit,
                secs,
                payload,
            )
        });
        (sender, receiver)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for forwarder in &mut self.forwarders {
            // Our own children, by their handles.
            let _ = forwarder.child.kill();
            let _ = forwarder.child.wait();
        }
        for child in &mut self.wireguard {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in self.created.drain(..) {
            // Deleting a namespace removes its veth end, its TUN device and its qdiscs.
            let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        }
    }
}

impl ForwarderReports {
    fn from_pair(reports: Vec<Value>) -> Result<ForwarderReports, String> {
        let mut reports = reports.into_iter();
        match (reports.next(), reports.next()) {
            (Some(a), Some(b)) => Ok(ForwarderReports { a, b }),
            _ => Err("the forwarders were already stopped".to_owned()),
        }
    }
}

/// A running forwarder and the lines it prints, read on a thread as they come.
#[derive(Debug)]
struct Forwarder {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Forwarder {
    fn new(mut child: Child) -> Forwarder {
        let (sender, lines) = mpsc::channel();
        if let Some(stdout) = child.stdout.take() {
            thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if sender.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Forwarder { child, lines }
    }

    fn signal(&self, signal: Signal) -> Result<(), String> {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).map_err(|e| e.to_string())?);
        kill(pid, signal).map_err(|e| format!("signalling a forwarder: {e}"))
    }

    /// The next statistics line the forwarder prints.
    fn report(&self) -> Result<Value, String> {
        let line = self
            .lines
            .recv_timeout(Duration::from_secs(5))
            .map_err(|_| "a forwarder printed no statistics within 5 s".to_owned())?;
        serde_json::from_str(&line).map_err(|e| format!("forwarder statistics: {e}: {line}"))
    }
}

enum TcpRun {
    Iperf3(Iperf3Run),
    Rust(RustTcpRun),
}

struct Iperf3Run {
    server: Child,
    client: Option<Child>,
    started: Instant,
    secs: f64,
}

impl Iperf3Run {
    /// Wait for the client; goodput in Mbit/s at the receiver and retransmissions.
    fn finish(mut self) -> Result<(f64, Option<u64>), String> {
        let client = self.client.take().ok_or("no iperf3 client")?;
        // iperf3 has no overall time limit of its own: give it its run time plus a margin.
        let deadline = self.started + Duration::from_secs_f64(self.secs + 15.0);
        let output = wait_until(client, deadline).map_err(|e| format!("iperf3 client: {e}"))?;
        let json: Value =
            serde_json::from_slice(&output.stdout).map_err(|e| format!("iperf3 -J output: {e}"))?;
        if let Some(error) = json["error"].as_str() {
            return Err(format!("iperf3: {error}"));
        }
        let end = &json["end"];
        let bits = end["sum_received"]["bits_per_second"]
            .as_f64()
            .ok_or("iperf3 reported no receiver rate")?;
        Ok((bits / 1e6, end["sum_sent"]["retransmits"].as_u64()))
    }
}

impl Drop for Iperf3Run {
    fn drop(&mut self) {
        if let Some(client) = &mut self.client {
            let _ = client.kill();
            let _ = client.wait();
        }
        // The one-off server (`-1`) exits after its test; stop it if the test never came.
        let deadline = Instant::now() + Duration::from_secs(2);
        while matches!(self.server.try_wait(), Ok(None)) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

struct RustTcpRun {
    sender: JoinHandle<io::Result<u64>>,
    receiver: JoinHandle<io::Result<f64>>,
}

impl RustTcpRun {
    fn finish(self) -> Result<f64, String> {
        join(self.sender)?;
        join(self.receiver)
    }
}

/// Bytes moved over a time.
#[derive(Clone, Copy, Debug)]
struct Rate {
    bytes: u64,
    secs: f64,
}

impl Rate {
    fn mbit(self) -> f64 {
        if self.secs > 0.0 {
            self.bytes as f64 * 8.0 / self.secs / 1e6
        } else {
            0.0
        }
    }
}

/// The report file's place: `target/real-traffic/` of the workspace, next to `target/tmp`.
pub fn report_dir(target_tmpdir: &Path) -> PathBuf {
    target_tmpdir
        .parent()
        .unwrap_or(target_tmpdir)
        .join("real-traffic")
}

/// Run `f` on a new thread that has entered network namespace `ns`: sockets it opens live there.
fn in_namespace<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> JoinHandle<io::Result<T>> {
    let path = Path::new("/run/netns").join(ns);
    thread::spawn(move || {
        let file = File::open(&path)?;
        // Only this thread moves; the rest of the test stays where it was.
        setns(&file, CloneFlags::CLONE_NEWNET)?;
        f()
    })
}

fn join<T>(handle: JoinHandle<io::Result<T>>) -> Result<T, String> {
    handle
        .join()
        .map_err(|_| "a load thread panicked".to_owned())?
        .map_err(|e| e.to_string())
}

/// Write as fast as TCP takes it for `secs` seconds with `congestion_control`; the bytes written.
fn send_tcp(target: IpAddr, secs: f64, congestion_control: &str) -> io::Result<u64> {
    let mut stream = TcpStream::connect_timeout(
        &SocketAddr::from((target, TCP_PORT)),
        Duration::from_secs(5),
    )?;
    // Per socket, as iperf3's `-C` does: a namespace inherits the machine's default.
    setsockopt(
        &stream,
        sockopt::TcpCongestion,
        &OsString::from(congestion_control),
    )
    .map_err(io::Error::from)?;
    // Short timeouts keep the loop on its clock even when the tunnel starves this connection.
    stream.set_write_timeout(Some(Duration::from_millis(200)))?;
    let chunk = vec![0x5a_u8; 64 * 1024];
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let mut written = 0u64;
    while Instant::now() < end {
        match stream.write(&chunk) {
            Ok(n) => written += n as u64,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => return Err(e),
        }
    }
    // What is still buffered drains while the receiver keeps reading.
    let _ = stream.shutdown(std::net::Shutdown::Write);
    Ok(written)
}

/// Accept one connection and read it until the sender finishes (or `secs` + 2 s pass); goodput
/// in Mbit/s from `omit` seconds after the first byte to the last one.
fn receive_tcp(listener: TcpListener, secs: f64, omit: f64) -> io::Result<f64> {
    listener.set_nonblocking(true)?;
    let give_up = Instant::now() + Duration::from_secs(10);
    let mut stream = loop {
        match listener.accept() {
            Ok((stream, _)) => break stream,
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < give_up => {
                thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(e),
        }
    };
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut buffer = vec![0u8; 256 * 1024];
    let mut first: Option<Instant> = None;
    let mut window_bytes = 0u64;
    let mut last = Instant::now();
    let end = Instant::now() + Duration::from_secs_f64(secs + 2.0);
    while Instant::now() < end {
        let n = match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(e) => return Err(e),
        };
        let now = Instant::now();
        let start = *first.get_or_insert(now);
        if now.duration_since(start).as_secs_f64() >= omit {
            window_bytes += n as u64;
            last = now;
        }
    }
    let window_start = first.map(|f| f + Duration::from_secs_f64(omit));
    let window = window_start.map_or(0.0, |s| last.saturating_duration_since(s).as_secs_f64());
    Ok(Rate {
        bytes: window_bytes,
        secs: window,
    }
    .mbit())
}

/// Send `payload`-byte UDP datagrams to `to` at `mbit` Mbit/s for `secs` seconds, whatever
/// happens to them (no congestion control).
fn blast_udp(
    from: IpAddr,
    to: SocketAddr,
    mbit: f64,
    secs: f64,
    payload: usize,
) -> io::Result<Rate> {
    let socket = UdpSocket::bind((from, 0))?;
    socket.connect(to)?;
    socket.set_nonblocking(true)?;
    let datagram = vec![0xa5_u8; payload];
    let bytes_per_second = mbit * 1e6 / 8.0;
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    let mut sent = 0u64;
    while Instant::now() < end {
        let due = start.elapsed().as_secs_f64() * bytes_per_second;
        while (sent as f64) < due {
            match socket.send(&datagram) {
                Ok(n) => sent += n as u64,
                // The TUN queue is full: the datagram is lost, as an unresponsive sender's are.
                Err(e) if e.kind() == ErrorKind::WouldBlock => sent += payload as u64,
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOBUFS) => sent += payload as u64,
                Err(e) => return Err(e),
            }
        }
        thread::sleep(Duration::from_millis(1));
    }
    Ok(Rate {
        bytes: sent,
        secs: start.elapsed().as_secs_f64(),
    })
}

/// Count UDP payload bytes arriving for `secs` seconds.
fn receive_udp(socket: UdpSocket, secs: f64) -> io::Result<Rate> {
    socket.set_read_timeout(Some(Duration::from_millis(50)))?;
    let mut buffer = vec![0u8; 65536];
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    let mut received = 0u64;
    let mut first: Option<Instant> = None;
    let mut last = start;
    while Instant::now() < end {
        match socket.recv(&mut buffer) {
            Ok(n) => {
                let now = Instant::now();
                first.get_or_insert(now);
                last = now;
                received += n as u64;
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => return Err(e),
        }
    }
    let secs = first.map_or(0.0, |f| last.saturating_duration_since(f).as_secs_f64());
    Ok(Rate {
        bytes: received,
        secs,
    })
}

/// Samples the backlog of every qdisc in a namespace every 100 ms on a thread, until finished.
struct BacklogSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: JoinHandle<Vec<(String, String, u64)>>,
}

impl BacklogSampler {
    fn start(ns: &str) -> BacklogSampler {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let ns = ns.to_owned();
        let thread = thread::spawn(move || {
            let mut samples = Vec::new();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(out) = run("tc", &["-n", &ns, "-s", "-j", "qdisc", "show"])
                    && let Ok(Value::Array(qdiscs)) = serde_json::from_slice(&out.stdout)
                {
                    for q in qdiscs {
                        // Root qdiscs only: a child's backlog is in its parent's.
                        if q["root"] != Value::Bool(true) {
                            continue;
                        }
                        let dev = q["dev"].as_str().unwrap_or_default().to_owned();
                        if dev == "lo" {
                            continue;
                        }
                        let kind = q["kind"].as_str().unwrap_or_default().to_owned();
                        samples.push((dev, kind, q["backlog"].as_u64().unwrap_or(0)));
                    }
                }
                thread::sleep(Duration::from_millis(100));
            }
            samples
        });
        BacklogSampler { stop, thread }
    }

    fn finish(self) -> Vec<Backlog> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let samples = self.thread.join().unwrap_or_default();
        let mut devices: Vec<(String, String)> = samples
            .iter()
            .map(|(dev, kind, _)| (dev.clone(), kind.clone()))
            .collect();
        devices.sort();
        devices.dedup();
        devices
            .into_iter()
            .map(|(dev, kind)| {
                let mut bytes: Vec<u64> = samples
                    .iter()
                    .filter(|s| s.0 == dev && s.1 == kind)
                    .map(|s| s.2)
                    .collect();
                bytes.sort_unstable();
                Backlog {
                    median_bytes: bytes.get(bytes.len() / 2).copied().unwrap_or(0),
                    max_bytes: bytes.last().copied().unwrap_or(0),
                    samples: bytes.len(),
                    dev,
                    kind,
                }
            })
            .collect()
    }
}

/// The resident set of process `pid` in KiB (`VmRSS`), or `None` if it is gone.
pub fn resident_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

/// Wait until something listens on TCP `port` in namespace `ns`.
fn wait_for_listener(ns: &str, port: u16) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let wanted = format!(":{port}");
    loop {
        let out = run("ip", &["netns", "exec", ns, "ss", "-Htln"])?;
        if String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .any(|field| field.ends_with(&wanted))
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "nothing listened on port {port} in {ns} within 5 s"
            ));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Wait for `child` and collect its output, killing it if it is still running at `deadline`.
fn wait_until(mut child: Child, deadline: Instant) -> Result<Output, String> {
    // Read stdout on a thread so a child with more output than a pipe holds never blocks.
    let mut stdout = child.stdout.take();
    let reader = thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(out) = &mut stdout {
            let _ = out.read_to_end(&mut bytes);
        }
        bytes
    });
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err("did not finish in time and was killed".to_owned());
        }
        thread::sleep(Duration::from_millis(20));
    };
    let stdout = reader.join().map_err(|_| "output reader panicked")?;
    let mut stderr = Vec::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_end(&mut stderr);
    }
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

fn finish_ping(child: Child) -> Result<PingSummary, String> {
    let output = child.wait_with_output().map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&output.stdout);
    parse_ping(&text).ok_or_else(|| format!("could not read ping's output:\n{text}"))
}

/// Round trips from iputils-ping's output: one `time=X ms` per reply, and the
/// `N packets transmitted, M received` summary.
pub fn parse_ping(text: &str) -> Option<PingSummary> {
    let mut times: Vec<f64> = text
        .lines()
        .filter_map(|line| line.split("time=").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .filter_map(|t| t.parse().ok())
        .collect();
    let summary = text.lines().find(|l| l.contains("packets transmitted"))?;
    let mut numbers = summary
        .split(',')
        .filter_map(|part| part.split_whitespace().next())
        .filter_map(|n| n.parse::<u64>().ok());
    let sent = numbers.next()?;
    let received = numbers.next()?;
    times.sort_by(f64::total_cmp);
    let pick = |q: f64| {
        let index = ((times.len() - 1) as f64 * q).round() as usize;
        times.get(index).copied().unwrap_or(0.0)
    };
    if times.is_empty() {
        return Some(PingSummary {
            sent,
            received,
            ..PingSummary::default()
        });
    }
    Some(PingSummary {
        sent,
        received,
        min_ms: pick(0.0),
        median_ms: pick(0.5),
        p90_ms: pick(0.9),
        max_ms: pick(1.0),
    })
}

fn tool_available(tool: &str, version_args: &[&str]) -> bool {
    let var = format!(
        "TIDEGATE_REAL_TRAFFIC_NO_{}",
        tool.to_ascii_uppercase().replace('-', "_")
    );
    if std::env::var_os(var).is_some() {
        return false; // pretend it is missing, to exercise the fallback
    }
    Command::new(tool)
        .args(version_args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

fn run(program: &str, args: &[&str]) -> Result<Output, String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(format!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_output_is_summarised() {
        let text = "PING 10.77.1.2 (10.77.1.2) 56(84) bytes of data.\n\
            64 bytes from 10.77.1.2: icmp_seq=1 ttl=64 time=0.300 ms\n\
            64 bytes from 10.77.1.2: icmp_seq=2 ttl=64 time=12.5 ms\n\
            64 bytes from 10.77.1.2: icmp_seq=3 ttl=64 time=3.10 ms\n\
            \n--- 10.77.1.2 ping statistics ---\n\
            4 packets transmitted, 3 received, 25% packet loss, time 3004ms\n\
            rtt min/avg/max/mdev = 0.300/5.300/12.500/5.000 ms\n";
        let summary = parse_ping(text).unwrap();
        assert_eq!((summary.sent, summary.received), (4, 3));
        assert_eq!(summary.min_ms, 0.3);
        assert_eq!(summary.median_ms, 3.1);
        assert_eq!(summary.max_ms, 12.5);
    }

    #[test]
    fn max_goodput_accounts_for_every_header() {
        let spec = LabSpec::default();
        // 1348 bytes of TCP payload per 1450 bytes on the link.
        let expected = 50.0 * 1348.0 / 1450.0;
        assert!((spec.max_goodput_mbit() - expected).abs() < 1e-9);
    }
}
