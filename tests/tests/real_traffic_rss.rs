//! The forwarders' resident set over a 60 s flood (Linux, root, `ip netns`): bulk TCP beside an
//! unresponsive 100 Mbit/s UDP flood through the tunnel, FIFO with CoDel and then flow queues,
//! the engine holding 256 KiB each way as in `real_traffic_aqm`. Each forwarder's `VmRSS` is read
//! every second.
//!
//! A host that keeps its ceiling holds a flat resident set once its buffers are touched: asserted
//! is that neither forwarder grows by more than 256 KiB after the first 5 s (a leak of one
//! fingerprint per dropped packet, the bug this once had, grows by megabytes). The figures go to
//! `target/real-traffic/rss.json` and `docs/real-traffic.md`.
//!
//! Without root or `ip netns` the test prints `SKIPPED: <reason>` and passes, except under
//! `CI=true`, where it fails (see `tidegate_tests::skip`).

#[cfg(target_os = "linux")]
mod linux {
    use std::path::Path;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::thread;
    use std::time::{Duration, Instant};

    use serde_json::json;
    use tidegate_tests::real_traffic::{ENGINE_256K, Lab, LabSpec, Load, report_dir, resident_kib};

    const SECS: f64 = 60.0;
    const SETTLE_SECS: usize = 5;
    const GROWTH_KIB: u64 = 256;

    /// Seconds since start and each forwarder's resident set in KiB, once a second.
    fn flood_and_sample(aqm: &str) -> Vec<(f64, Vec<u64>)> {
        let spec = LabSpec {
            forwarder_args: ENGINE_256K
                .iter()
                .chain(&["--aqm", aqm])
                .map(|&a| a.to_owned())
                .collect(),
            ..LabSpec::default()
        };
        let forwarder = Path::new(env!("CARGO_BIN_EXE_tidegate-tun-forwarder"));
        let mut lab = Lab::start(spec, forwarder).expect("the lab starts");
        let pids = lab.forwarder_pids();
        let done = Arc::new(AtomicBool::new(false));
        let stop = done.clone();
        let sampler = thread::spawn(move || {
            let start = Instant::now();
            let mut samples = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let kib = pids
                    .iter()
                    .map(|&pid| resident_kib(pid).unwrap_or(0))
                    .collect();
                samples.push((start.elapsed().as_secs_f64(), kib));
                thread::sleep(Duration::from_secs(1));
            }
            samples
        });
        // The Rust sender and receiver, not iperf3: both stop on their own clocks, where
        // iperf3's end-of-test exchange runs on a control connection that a minute of flood
        // through a FIFO tunnel can leave in TCP's retransmission back-off for longer than the
        // run's deadline (it did, once in CI).
        let measured = lab.run_load(&Load {
            udp_flood_mbit: Some(100.0),
            ping: false,
            force_rust_tcp: true,
            ..Load::bulk_tcp(SECS)
        });
        done.store(true, Ordering::Relaxed);
        let samples = sampler.join().expect("the sampler");
        let reports = lab.stop().expect("the forwarders stop and report");
        let measured = measured.expect("the flood ran");
        assert!(
            measured.tcp_goodput_mbit.is_some_and(|mbit| mbit > 0.0),
            "{aqm}: TCP moved no data: {:?}",
            measured.notes
        );
        assert_eq!(
            reports.a["host"]["order_check_overflows"].as_u64(),
            Some(0),
            "{aqm}"
        );
        samples
    }

    #[test]
    fn the_forwarders_resident_set_stays_flat_over_a_60_s_flood() {
        if let Some(reason) = Lab::unavailable() {
            tidegate_tests::skip::skip(&["iproute2"], &reason);
            return;
        }
        let mut report = Vec::new();
        let mut failures = Vec::new();
        for aqm in ["codel", "fq-codel"] {
            let samples = flood_and_sample(aqm);
            assert!(samples.len() > SETTLE_SECS + 10, "{aqm}: {samples:?}");
            let mut sides = Vec::new();
            for (side, name) in ["a", "b"].iter().enumerate() {
                let kib: Vec<u64> = samples.iter().map(|(_, k)| k[side]).collect();
                let settled = kib[SETTLE_SECS];
                let peak = kib.iter().copied().max().unwrap_or(0);
                let after = kib[SETTLE_SECS..].iter().copied().max().unwrap_or(0);
                let growth = after.saturating_sub(settled);
                if growth > GROWTH_KIB {
                    failures.push(format!(
                        "{aqm}, forwarder {name}: grew {growth} KiB after {SETTLE_SECS} s: {kib:?}"
                    ));
                }
                sides.push(json!({
                    "forwarder": name,
                    "kib_at_settle": settled,
                    "growth_after_settle_kib": growth,
                    "peak_kib": peak,
                    "last_kib": kib.last(),
                    "samples_kib": kib,
                }));
            }
            report.push(json!({"aqm": aqm, "seconds": SECS, "forwarders": sides}));
        }
        let report = serde_json::Value::from(report);
        eprintln!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
        let dir = report_dir(Path::new(env!("CARGO_TARGET_TMPDIR")));
        std::fs::create_dir_all(&dir).expect("target/real-traffic");
        std::fs::write(dir.join("rss.json"), report.to_string()).expect("write the report");
        assert!(failures.is_empty(), "{failures:#?}");
    }
}
