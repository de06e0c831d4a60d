//! The lab's scenarios assert the invariants tidegate exists for: the tidegate host stays under
//! its ceiling and keeps the bottleneck busy, while the naive host is killed by the platform.

use tidegate_tests::lab::{self, Row};

fn rows() -> Vec<Row> {
    lab::run_all()
}

#[test]
fn tidegate_hosts_stay_under_their_ceiling_and_keep_the_link_busy() {
    let rows = rows();
    let tidegate: Vec<&Row> = rows.iter().filter(|r| r.host == "tidegate").collect();
    assert!(!tidegate.is_empty());
    for row in tidegate {
        let ceiling = row.ceiling.expect("tidegate rows report their ceiling");
        assert!(row.memory_high_water <= ceiling, "{row:?}");
        assert!(ceiling < row.platform_limit, "{row:?}");
        assert_eq!(row.killed_at_seconds, None, "{row:?}");
        assert!(row.throughput_percent >= 99.0, "{row:?}");
    }
}

#[test]
fn naive_hosts_are_killed_in_the_tunnel_scenarios() {
    for row in rows().iter().filter(|r| r.host == "naive") {
        let killed = row
            .killed_at_seconds
            .expect("the naive host exceeds the platform limit");
        assert!(killed > 0.0, "{row:?}");
        assert!(row.memory_high_water > row.platform_limit, "{row:?}");
    }
}

#[test]
fn the_lab_is_deterministic_and_prints_every_row() {
    let (first, second) = (rows(), rows());
    assert_eq!(first, second, "virtual time: the same figures on every run");
    let table = lab::table(&first);
    let json = lab::json(&first);
    for row in &first {
        assert!(table.contains(row.scenario), "{table}");
        assert!(
            json.contains(&format!("\"scenario\":\"{}\"", row.scenario)),
            "{json}"
        );
    }
    assert_eq!(json.matches("\"host\":").count(), first.len());
}
