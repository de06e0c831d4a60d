//! A real process killed by its own allocations, as jetsam kills a packet tunnel provider, and
//! the same process surviving with the memory governor (Linux; no root needed).
//!
//! The host is `tidegate-memory-host`: real traffic through a loopback relay while it makes the
//! lab's `memory-pressure` allocations in real memory (anonymous `mmap`, every page written,
//! released with `munmap`), the same schedule in both runs. This test is its watchdog: it samples
//! the host's resident set (`VmRSS` in `/proc/<pid>/status`) about every millisecond and kills
//! it with `SIGKILL` the first time it passes 50 MiB, the packet tunnel limit
//! (`MemoryConfig::PACKET_TUNNEL.limit_bytes`), with no warning first.
//!
//! Asserted: the host without the governor is killed; the host with it (fed its resident set
//! from `/proc/self/status` every millisecond, reserving before each allocation) runs to the
//! end below the limit, delayed some allocations, and relayed traffic throughout with no relay
//! error. The figures go to `target/real-traffic/memory-watchdog.json` and
//! `docs/memory-watchdog.md`:
//!
//! ```text
//! cargo test --release -p tidegate-tests --test memory_watchdog -- --nocapture
//! ```

#[cfg(target_os = "linux")]
mod linux {
    use std::io::{BufRead, BufReader};
    use std::path::Path;
    use std::process::{Command, Stdio};
    use std::thread;
    use std::time::{Duration, Instant};

    use serde_json::{Value, json};
    use tidegate_core::MemoryConfig;
    use tidegate_tests::real_traffic::{report_dir, resident_kib};

    const LIMIT: u64 = MemoryConfig::PACKET_TUNNEL.limit_bytes;
    const MIB: f64 = 1024.0 * 1024.0;

    /// What the watchdog saw of one run.
    #[derive(Debug)]
    struct Watched {
        /// Seconds from spawn to the kill, if the watchdog killed the host.
        killed_at: Option<f64>,
        /// The highest resident set sampled, in bytes.
        peak: u64,
        /// Samples taken, and the seconds they spanned.
        samples: u64,
        seconds: f64,
        /// The host's JSON lines: progress every 100 ms, then its summary if it finished.
        lines: Vec<Value>,
    }

    impl Watched {
        fn summary(&self) -> Option<&Value> {
            self.lines.last().filter(|line| line["done"] == true)
        }

        /// Bytes relayed by the last progress line or the summary.
        fn relayed(&self) -> u64 {
            self.lines
                .last()
                .map_or(0, |line| line["relayed"].as_u64().unwrap_or(0))
        }
    }

    fn watch(args: &[&str]) -> Watched {
        let host = Path::new(env!("CARGO_BIN_EXE_tidegate-memory-host"));
        let mut child = Command::new(host)
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("the host starts");
        let stdout = child.stdout.take().expect("piped");
        let reader = thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .filter_map(|line| serde_json::from_str::<Value>(&line).ok())
                .collect::<Vec<_>>()
        });
        let pid = child.id();
        let started = Instant::now();
        let (mut peak, mut samples, mut killed_at) = (0, 0, None);
        loop {
            if child.try_wait().expect("wait").is_some() {
                break;
            }
            let Some(rss) = resident_kib(pid).map(|kib| kib * 1024) else {
                continue;
            };
            samples += 1;
            peak = u64::max(peak, rss);
            if rss > LIMIT {
                child.kill().expect("SIGKILL");
                killed_at = Some(started.elapsed().as_secs_f64());
                child.wait().expect("reaped");
                break;
            }
            thread::sleep(Duration::from_millis(1));
        }
        let seconds = started.elapsed().as_secs_f64();
        Watched {
            killed_at,
            peak,
            samples,
            seconds,
            lines: reader.join().expect("the reader"),
        }
    }

    #[test]
    fn a_host_killed_by_its_own_surges_survives_with_the_governor() {
        let naive = watch(&[]);
        let governed = watch(&["--governor"]);
        let runs: Vec<Value> = [("naive", &naive), ("governor", &governed)]
            .iter()
            .map(|(name, run)| {
                json!({
                    "host": name,
                    "killed_at_seconds": run.killed_at,
                    "memory_high_water": run.peak,
                    "relayed_bytes": run.relayed(),
                    "seconds": run.seconds,
                    "sample_interval_ms": run.seconds * 1000.0 / run.samples.max(1) as f64,
                    "summary": run.summary(),
                })
            })
            .collect();
        let report = json!({ "limit_bytes": LIMIT, "runs": runs });
        let dir = report_dir(Path::new(env!("CARGO_TARGET_TMPDIR")));
        std::fs::create_dir_all(&dir).expect("the report directory");
        let text = serde_json::to_string_pretty(&report).expect("JSON");
        std::fs::write(dir.join("memory-watchdog.json"), &text).expect("the report");
        println!("{text}");
        for (name, run) in [("naive", &naive), ("governor", &governed)] {
            println!(
                "{name}: {}, peak {:.1} MiB, {:.1} MB relayed, a sample every {:.2} ms",
                run.killed_at
                    .map_or("survived".to_owned(), |at| format!("killed at {at:.2} s")),
                run.peak as f64 / MIB,
                run.relayed() as f64 / 1e6,
                run.seconds * 1000.0 / run.samples.max(1) as f64,
            );
        }

        assert!(
            naive.killed_at.is_some(),
            "without the governor the host passes the limit (peak {} bytes)",
            naive.peak
        );
        assert!(naive.summary().is_none(), "a killed host never finishes");
        assert!(
            governed.killed_at.is_none(),
            "with the governor the host stays under the limit (peak {} bytes)",
            governed.peak
        );
        assert!(governed.peak <= LIMIT);
        let summary = governed.summary().expect("the governed host finished");
        assert!(
            summary["delayed_allocations"].as_u64() > Some(0),
            "the governor made allocations wait"
        );
        assert!(summary["reservations_granted"].as_u64() > Some(0));
        assert_eq!(summary["relay_errors"], json!([]));
        assert_eq!(summary["relay_unexpected_resumes"], 0);
        // Traffic flowed the whole run: every progress line after the first second had moved
        // more bytes than the one before it.
        let relayed: Vec<u64> = governed
            .lines
            .iter()
            .filter(|line| line["t"].as_f64() > Some(1.0))
            .filter_map(|line| line["relayed"].as_u64())
            .collect();
        assert!(relayed.len() > 50, "progress lines: {}", relayed.len());
        assert!(
            relayed.windows(10).all(|w| w[9] > w[0]),
            "traffic stalled: {relayed:?}"
        );
    }
}
