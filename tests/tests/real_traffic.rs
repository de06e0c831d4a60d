//! Real kernel traffic through the packet tunnel engine (Linux, root, `ip netns`).
//!
//! Two namespaces joined by a veth pair limited to 50 Mbit/s by `tbf` in each direction, one
//! `tidegate-tun-forwarder` in each, and kernel TCP (cubic), ping and an unresponsive UDP flood
//! through the tunnel (see `tidegate_tests::real_traffic`). Asserts what the engine promises:
//! its high water never passes its ceiling, it reorders nothing (the forwarder follows every
//! packet through the engine by fingerprint), it refuses no packet read while reading was
//! allowed, every pause ends on one resume edge, and TCP moves data.
//!
//! Goodput and latency are figures, not thresholds: they go to stderr and to
//! `target/real-traffic/report.json`, and docs/real-traffic.md reports them. For scale: `tbf`
//! counts every byte of the encapsulated packet on the veth link (the tunnel packet, MTU 1400,
//! plus the forwarder's 8-byte sequence number, UDP 8, IPv4 20 and Ethernet 14: 1450 bytes);
//! of the 1400 bytes, IPv4 20, TCP 20 and TCP timestamps 12 leave 1348 bytes of goodput, so at
//! most 50 x 1348 / 1450 = 46.5 Mbit/s of TCP goodput fits on the 50 Mbit/s link.
//!
//! Without root or `ip netns` the test prints `SKIPPED: <reason>` and passes, except under
//! `CI=true`, where it fails (see `tidegate_tests::skip`). Without iperf3 it uses a Rust sender
//! and receiver; without ping it measures no latency and says so (each a failure under CI
//! unless that tool's installation failed). Setting `TIDEGATE_REAL_TRAFFIC_NO_IPERF3=1` or
//! `TIDEGATE_REAL_TRAFFIC_NO_PING=1` takes those paths on a machine that has the tools.

#[cfg(target_os = "linux")]
mod linux {
    use std::path::Path;

    use serde_json::{Value, json};
    use tidegate_tests::real_traffic::{
        FloodSummary, Lab, LabSpec, Load, Measurements, PingSummary, report_dir,
    };

    /// Seconds of bulk TCP in each phase.
    const BULK_SECS: f64 = 8.0;
    /// The engine's configuration: a 64 KiB outbound ring (about 10 ms at 50 Mbit/s, pausing at
    /// 48 KiB and resuming at 32 KiB) is smaller than what kernel TCP keeps in flight here, so
    /// TCP alone makes the engine pause and resume. The inbound ring holds 256 KiB, above the
    /// forwarder's read batch of 64 full packets.
    const ENGINE: &[&str] = &[
        "--outbound-bytes",
        "65536",
        "--outbound-packets",
        "64",
        "--outbound-high-bytes",
        "49152",
        "--outbound-low-bytes",
        "32768",
        "--outbound-high-packets",
        "48",
        "--outbound-low-packets",
        "32",
        "--inbound-bytes",
        "262144",
        "--inbound-packets",
        "256",
    ];

    #[test]
    fn kernel_tcp_through_the_packet_tunnel_stays_under_the_ceiling_at_link_rate() {
        if let Some(reason) = Lab::unavailable() {
            tidegate_tests::skip::skip(&["iproute2"], &reason);
            return;
        }
        let spec = LabSpec {
            forwarder_args: ENGINE.iter().map(|&a| a.to_owned()).collect(),
            ..LabSpec::default()
        };
        let forwarder = Path::new(env!("CARGO_BIN_EXE_tidegate-tun-forwarder"));
        let mut lab = Lab::start(spec.clone(), forwarder).expect("the lab starts");

        let idle = lab.ping(1.0, 0.1).expect("idle ping");
        let bulk = lab
            .run_load(&Load::bulk_tcp(BULK_SECS))
            .expect("bulk TCP with ping");
        let after_bulk = lab.snapshot().expect("statistics after the bulk phase");
        let flood = lab
            .run_load(&Load {
                udp_flood_mbit: Some(100.0),
                ..Load::bulk_tcp(BULK_SECS)
            })
            // Measured for the queue management issue, not asserted on: under a flood TCP may
            // starve, so a failed measurement becomes a note instead of failing the test.
            .unwrap_or_else(|error| Measurements {
                notes: vec![format!("flood phase not measured: {error}")],
                ..Measurements::default()
            });
        let tbf = [lab.tbf_stats(true), lab.tbf_stats(false)];
        let reports = lab.stop().expect("the forwarders stop and report");
        drop(lab);

        let report = json!({
            "congestion_control": spec.congestion_control,
            "link_mbit": spec.link_mbit,
            "tunnel_mtu": spec.tunnel_mtu,
            "veth_mtu": spec.veth_mtu,
            "max_goodput_mbit": spec.max_goodput_mbit(),
            "idle_ping": idle.as_ref().map(ping_json),
            "bulk": measurements_json(&bulk),
            "forwarder_a_after_bulk": after_bulk.a,
            "bulk_with_udp_flood": measurements_json(&flood),
            "tbf_drops": tbf.iter().map(|t| t.as_ref().ok().map(|t| t.drops)).collect::<Vec<_>>(),
            "forwarder_a": reports.a,
            "forwarder_b": reports.b,
        });
        let dir = report_dir(Path::new(env!("CARGO_TARGET_TMPDIR")));
        std::fs::create_dir_all(&dir).expect("target/real-traffic");
        let path = dir.join("report.json");
        std::fs::write(&path, serde_json::to_string_pretty(&report).expect("json"))
            .expect("write the report");
        print_figures(&spec, &idle, &bulk, &flood, &reports.a, &reports.b);
        eprintln!(
            "bulk phase alone: forwarder A paused reading its TUN device {} times, {} ms in all",
            after_bulk.a["engine"]["outbound_pauses"],
            after_bulk.a["engine"]["outbound_paused_micros"]
                .as_u64()
                .unwrap_or(0)
                / 1000,
        );
        eprintln!("report: {}", path.display());

        for (side, forwarder) in [("A", &reports.a), ("B", &reports.b)] {
            let ceiling = forwarder["ceiling_bytes"].as_u64().expect("ceiling");
            let engine = &forwarder["engine"];
            let out_hw = engine["outbound"]["bytes_high_water"].as_u64().expect("hw");
            let in_hw = engine["inbound"]["bytes_high_water"].as_u64().expect("hw");
            let out_arena = forwarder["config"]["outbound_bytes"].as_u64().expect("cfg");
            let in_arena = forwarder["config"]["inbound_bytes"].as_u64().expect("cfg");
            assert!(
                out_hw <= out_arena,
                "{side}: outbound {out_hw} > {out_arena}"
            );
            assert!(in_hw <= in_arena, "{side}: inbound {in_hw} > {in_arena}");
            assert!(
                out_hw + in_hw <= ceiling,
                "{side}: {out_hw} + {in_hw} > {ceiling}"
            );
            let host = &forwarder["host"];
            // The engine hands packets out in the order they came in, in both directions.
            // (`link_reorders`, swaps on the kernel path between the forwarders, are reported.)
            assert_eq!(
                host["core_reorders_outbound"], 0,
                "{side}: the engine reordered"
            );
            assert_eq!(
                host["core_reorders_inbound"], 0,
                "{side}: the engine reordered"
            );
            assert_eq!(host["malformed_datagrams"], 0, "{side}");
            assert_eq!(host["reading_state_mismatches"], 0, "{side}");
            assert_eq!(
                host["outbound_refused_by_engine"], 0,
                "{side}: a packet was refused"
            );
            assert!(host["udp_datagrams_received"].as_u64() > Some(0), "{side}");
        }
        // TCP alone filled the engine's outbound ring: it paused reading the TUN device and
        // resumed on a completion edge, every time, and TCP still ran at link rate.
        let a = &after_bulk.a;
        let pauses = a["engine"]["outbound_pauses"].as_u64().expect("pauses");
        let edges = a["host"]["resume_edges"].as_u64().expect("edges");
        let paused_now = u64::from(a["engine"]["outbound_paused"].as_bool().expect("paused"));
        assert!(pauses > 0, "the link never pushed back: {a}");
        assert_eq!(
            edges + paused_now,
            pauses,
            "every pause ends on one resume edge"
        );

        // Goodput is a figure (docs/real-traffic.md), not a threshold: TCP must move data.
        let goodput = bulk.tcp_goodput_mbit.expect("TCP ran");
        assert!(goodput > 0.0, "TCP moved no data through the tunnel");
        if let Some(ping) = &bulk.ping {
            assert!(ping.received > 0, "no ping came back under load: {ping:?}");
        }
        if let Some(ping) = &idle {
            assert!(
                ping.received > 0,
                "no ping came back on the idle tunnel: {ping:?}"
            );
        }
    }

    fn print_figures(
        spec: &LabSpec,
        idle: &Option<PingSummary>,
        bulk: &Measurements,
        flood: &Measurements,
        a: &Value,
        b: &Value,
    ) {
        eprintln!(
            "link: tbf {} Mbit/s each way, tunnel MTU {}, TCP ({}) goodput at most {:.2} Mbit/s",
            spec.link_mbit,
            spec.tunnel_mtu,
            spec.congestion_control,
            spec.max_goodput_mbit()
        );
        eprintln!("idle ping: {}", ping_line(idle.as_ref()));
        for (name, m) in [
            ("bulk TCP", bulk),
            ("bulk TCP + 100 Mbit/s UDP flood", flood),
        ] {
            eprintln!(
                "{name}: goodput {} ({}), retransmits {}",
                m.tcp_goodput_mbit
                    .map_or("-".to_owned(), |g| format!("{g:.2} Mbit/s")),
                m.tcp_tool.unwrap_or("-"),
                m.tcp_retransmits.map_or("-".to_owned(), |r| r.to_string()),
            );
            eprintln!("  ping under load: {}", ping_line(m.ping.as_ref()));
            if let Some(FloodSummary {
                offered_mbit,
                received_mbit,
            }) = m.udp_flood
            {
                eprintln!(
                    "  UDP flood: offered {offered_mbit:.1} Mbit/s, delivered {received_mbit:.1}"
                );
            }
            for note in &m.notes {
                eprintln!("  note: {note}");
            }
        }
        for (side, f) in [("A", a), ("B", b)] {
            let e = &f["engine"];
            eprintln!(
                "forwarder {side}: ceiling {} B; high water outbound {} B / {} pkts, inbound {} \
                 B / {} pkts; pauses {}; reorders by the engine {}, on the link {}; sent {} \
                 received {} datagrams",
                f["ceiling_bytes"],
                e["outbound"]["bytes_high_water"],
                e["outbound"]["packets_high_water"],
                e["inbound"]["bytes_high_water"],
                e["inbound"]["packets_high_water"],
                e["outbound_pauses"],
                f["host"]["core_reorders_outbound"].as_u64().unwrap_or(0)
                    + f["host"]["core_reorders_inbound"].as_u64().unwrap_or(0),
                f["host"]["link_reorders"],
                f["host"]["udp_datagrams_sent"],
                f["host"]["udp_datagrams_received"],
            );
        }
    }

    fn ping_line(ping: Option<&PingSummary>) -> String {
        match ping {
            None => "not measured (ping not installed)".to_owned(),
            Some(p) => format!(
                "{}/{} replies, min {:.2} ms, median {:.2} ms, p90 {:.2} ms, max {:.2} ms",
                p.received, p.sent, p.min_ms, p.median_ms, p.p90_ms, p.max_ms
            ),
        }
    }

    fn ping_json(p: &PingSummary) -> Value {
        json!({
            "sent": p.sent, "received": p.received, "min_ms": p.min_ms,
            "median_ms": p.median_ms, "p90_ms": p.p90_ms, "max_ms": p.max_ms,
        })
    }

    fn measurements_json(m: &Measurements) -> Value {
        json!({
            "tcp_tool": m.tcp_tool,
            "tcp_goodput_mbit": m.tcp_goodput_mbit,
            "tcp_retransmits": m.tcp_retransmits,
            "ping": m.ping.as_ref().map(ping_json),
            "udp_flood": m.udp_flood.as_ref().map(|f| json!({
                "offered_mbit": f.offered_mbit, "received_mbit": f.received_mbit,
            })),
            "notes": m.notes,
        })
    }
}

#[cfg(not(target_os = "linux"))]
#[test]
fn kernel_tcp_through_the_packet_tunnel_stays_under_the_ceiling_at_link_rate() {
    eprintln!("SKIPPED: real traffic needs Linux (TUN devices and network namespaces)");
}
