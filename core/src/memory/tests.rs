use std::vec::Vec;

use proptest::prelude::*;

use super::*;

const LIMIT: u64 = 10_000;

/// Elevated at 5,000 (left below 4,000), critical at 7,000 (left below 6,000), 100 us of calm,
/// four reservations.
fn config() -> MemoryConfig {
    MemoryConfig {
        limit_bytes: LIMIT,
        elevated_permille: 500,
        critical_permille: 700,
        hysteresis_permille: 100,
        calm_micros: 100,
        max_reservations: 4,
    }
}

fn governor() -> MemoryGovernor<[ReservationSlot; 4]> {
    MemoryGovernor::new(config(), [ReservationSlot::EMPTY; 4]).unwrap()
}

fn t(micros: u64) -> Instant {
    Instant::from_micros(micros)
}

#[test]
fn storage_must_match_the_configuration() {
    assert_eq!(
        MemoryGovernor::new(config(), [ReservationSlot::EMPTY; 3]).err(),
        Some(MemoryConfigError::StorageMismatch)
    );
    assert_eq!(
        MemoryGovernor::<[ReservationSlot; 4]>::footprint(&config()),
        96
    );
}

#[test]
fn headroom_of_zero_is_unknown_never_critical() {
    let mut g = governor();
    g.on_headroom(t(0), 1);
    assert_eq!(g.poll_pressure(), Some(Pressure::Critical));
    g.on_headroom(t(10), 0);
    assert_eq!(g.stats().measured_bytes, 0);
    g.handle_timeout(t(200));
    assert_eq!(g.pressure(), Pressure::Normal);
    assert_eq!(g.poll_pressure(), Some(Pressure::Normal));
}

#[test]
fn the_larger_of_headroom_and_footprint_counts() {
    let mut g = governor();
    g.on_headroom(t(0), 8_000);
    g.on_footprint(t(0), 5_500);
    assert_eq!(g.stats().measured_bytes, 5_500);
    assert_eq!(g.pressure(), Pressure::Elevated);
    g.on_headroom(t(0), 2_000);
    assert_eq!(g.stats().measured_bytes, 8_000);
    assert_eq!(g.pressure(), Pressure::Critical);
}

#[test]
fn levels_rise_at_once_and_fall_after_calm_below_the_hysteresis() {
    let mut g = governor();
    g.on_footprint(t(0), 7_000);
    assert_eq!(g.poll_pressure(), Some(Pressure::Critical));
    assert_eq!(g.poll_pressure(), None);
    // Below the critical threshold but not below its hysteresis: stays.
    g.on_footprint(t(50), 6_500);
    assert_eq!(g.poll_timeout(), None);
    // Below both elevated thresholds: calm starts, and only its end lowers the level.
    g.on_footprint(t(60), 3_000);
    assert_eq!(g.poll_timeout(), Some(t(160)));
    g.handle_timeout(t(159));
    assert_eq!(g.pressure(), Pressure::Critical);
    g.handle_timeout(t(160));
    assert_eq!(g.pressure(), Pressure::Normal);
    assert_eq!(g.poll_pressure(), Some(Pressure::Normal));
    let stats = g.stats();
    assert_eq!((stats.elevated_entries, stats.critical_entries), (1, 1));
    assert_eq!(stats.critical_micros, 160);
}

#[test]
fn a_sample_above_the_leaving_threshold_restarts_the_calm() {
    let mut g = governor();
    g.on_footprint(t(0), 5_000);
    g.on_footprint(t(10), 1_000);
    g.on_footprint(t(90), 4_500);
    assert_eq!(g.poll_timeout(), None);
    g.on_footprint(t(100), 1_000);
    g.handle_timeout(t(199));
    assert_eq!(g.pressure(), Pressure::Elevated);
    g.handle_timeout(t(200));
    assert_eq!(g.pressure(), Pressure::Normal);
}

#[test]
fn reservations_count_until_the_next_report_and_are_refused_near_critical() {
    let mut g = governor();
    g.on_footprint(t(0), 3_000);
    let a = g.reserve(t(1), 2_500).unwrap();
    assert_eq!(g.projected_bytes(), 5_500);
    assert_eq!(g.poll_pressure(), Some(Pressure::Elevated));
    // 5,500 + 1,500 reaches the critical threshold: refused, nothing changes.
    assert_eq!(
        g.reserve(t(2), 1_500),
        Err(ReserveError::Pressure {
            projected: 5_500,
            critical: 7_000
        })
    );
    assert_eq!(g.stats().reservations, 1);
    assert_eq!(g.stats().refused_bytes, 1_500);
    // The report measures the allocation; releasing then waits for the next report.
    g.on_footprint(t(3), 5_500);
    assert_eq!(g.stats().unmeasured_bytes, 0);
    assert_eq!(g.release(t(4), a), Ok(2_500));
    assert_eq!(g.projected_bytes(), 5_500);
    assert_eq!(g.release(t(4), a), Err(UnknownReservation));
    // Released before any report: it leaves the projection at once.
    let b = g.reserve(t(5), 1_000).unwrap();
    assert_eq!(g.projected_bytes(), 6_500);
    g.release(t(6), b).unwrap();
    assert_eq!(g.projected_bytes(), 5_500);
}

#[test]
fn nothing_is_granted_while_critical_even_below_the_threshold() {
    let mut g = governor();
    g.on_footprint(t(0), 7_000);
    g.on_footprint(t(1), 6_000);
    assert_eq!(g.pressure(), Pressure::Critical);
    assert!(matches!(
        g.reserve(t(2), 1),
        Err(ReserveError::Pressure { .. })
    ));
}

#[test]
fn slots_run_out_and_are_reused_last_in_first_out_with_new_generations() {
    let mut g = governor();
    let ids: Vec<_> = (0..4).map(|_| g.reserve(t(0), 10).unwrap()).collect();
    assert_eq!(g.reserve(t(0), 10), Err(ReserveError::NoSlot));
    g.release(t(0), ids[1]).unwrap();
    g.release(t(0), ids[2]).unwrap();
    let again = g.reserve(t(0), 10).unwrap();
    assert_eq!(again.to_raw() as u32, ids[2].to_raw() as u32);
    assert_ne!(again, ids[2]);
    assert_eq!(
        g.release(t(0), ReservationId::from_raw(0)),
        Err(UnknownReservation)
    );
    assert_eq!(g.reserve(t(0), 0), Err(ReserveError::Zero));
}

#[test]
fn a_refused_reservation_does_not_move_the_clock() {
    let mut g = governor();
    g.on_footprint(t(0), 6_000);
    g.reserve(t(1_000_000), 5_000).unwrap_err();
    g.on_footprint(t(10), 6_000);
    assert_eq!(g.stats().elevated_micros, 10);
}

/// What a host can do to the governor.
#[derive(Clone, Debug)]
enum Op {
    Headroom(u64),
    Footprint(u64),
    Reserve(u64),
    Release(usize),
    ReleaseForged(u64),
    Wait(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..12_000u64).prop_map(Op::Headroom),
        (0..12_000u64).prop_map(Op::Footprint),
        prop_oneof![1..3_000u64, Just(u64::MAX)].prop_map(Op::Reserve),
        (0..8usize).prop_map(Op::Release),
        any::<u64>().prop_map(Op::ReleaseForged),
        (0..300u64).prop_map(Op::Wait),
    ]
}

/// The governor as its documentation describes it.
#[derive(Default)]
struct Model {
    headroom: u64,
    footprint: u64,
    /// Outstanding reservations: id, bytes, measured yet.
    reservations: Vec<(ReservationId, u64, bool)>,
    level: Pressure,
    /// When use first went below what the level needs, while it stays there.
    calm_since: Option<u64>,
    reported: Pressure,
}

impl Model {
    fn projected(&self) -> u64 {
        let measured = if self.headroom == 0 {
            0
        } else {
            LIMIT.saturating_sub(self.headroom)
        };
        let unmeasured: u64 = self.reservations.iter().filter(|r| !r.2).map(|r| r.1).sum();
        measured.max(self.footprint) + unmeasured
    }

    /// The level use calls for, from the documented thresholds.
    fn target(&self) -> Pressure {
        let used = self.projected();
        let (leave_elevated, leave_critical) = (4_000, 6_000);
        if used >= 7_000 || (self.level == Pressure::Critical && used >= leave_critical) {
            Pressure::Critical
        } else if used >= 5_000 || (self.level != Pressure::Normal && used >= leave_elevated) {
            Pressure::Elevated
        } else {
            Pressure::Normal
        }
    }

    fn evaluate(&mut self, now: u64) {
        let target = self.target();
        if target > self.level {
            self.level = target;
            self.calm_since = None;
        } else if target < self.level {
            let since = *self.calm_since.get_or_insert(now);
            if now - since >= 100 {
                self.level = target;
                self.calm_since = None;
            }
        } else {
            self.calm_since = None;
        }
    }
}

proptest! {
    #![proptest_config(crate::proptest_config::with_cases(512))]

    /// The governor against the model: every level, grant, refusal and edge the documentation
    /// promises, over random reports, reservations, releases (stale and forged ones included)
    /// and waits.
    #[test]
    fn governor_matches_its_documented_model(ops in proptest::collection::vec(op(), 1..crate::proptest_config::ops(80))) {
        let mut g = governor();
        let mut m = Model::default();
        let mut now = 0u64;
        let mut released: Vec<ReservationId> = Vec::new();
        for op in ops {
            match op {
                Op::Headroom(v) => {
                    g.on_headroom(t(now), v);
                    m.headroom = v;
                    m.reservations.iter_mut().for_each(|r| r.2 = true);
                    m.evaluate(now);
                }
                Op::Footprint(v) => {
                    g.on_footprint(t(now), v);
                    m.footprint = v;
                    m.reservations.iter_mut().for_each(|r| r.2 = true);
                    m.evaluate(now);
                }
                Op::Reserve(bytes) => {
                    let projected = m.projected();
                    let grant = m.level != Pressure::Critical
                        && projected.checked_add(bytes).is_some_and(|after| after < 7_000);
                    let result = g.reserve(t(now), bytes);
                    if !grant {
                        prop_assert_eq!(
                            result,
                            Err(ReserveError::Pressure { projected, critical: 7_000 })
                        );
                    } else if m.reservations.len() == 4 {
                        prop_assert_eq!(result, Err(ReserveError::NoSlot));
                    } else {
                        let id = result.unwrap();
                        prop_assert!(m.reservations.iter().all(|r| r.0 != id));
                        prop_assert_ne!(id.to_raw(), 0);
                        m.reservations.push((id, bytes, false));
                        m.evaluate(now);
                    }
                }
                Op::Release(k) => {
                    if k < m.reservations.len() {
                        let (id, bytes, _) = m.reservations.remove(k);
                        prop_assert_eq!(g.release(t(now), id), Ok(bytes));
                        released.push(id);
                        m.evaluate(now);
                    } else if let Some(&id) = released.last() {
                        prop_assert_eq!(g.release(t(now), id), Err(UnknownReservation));
                    }
                }
                Op::ReleaseForged(raw) => {
                    let id = ReservationId::from_raw(raw);
                    if !m.reservations.iter().any(|r| r.0 == id) {
                        prop_assert_eq!(g.release(t(now), id), Err(UnknownReservation));
                    }
                }
                Op::Wait(micros) => {
                    now += micros;
                    g.handle_timeout(t(now));
                    m.evaluate(now);
                }
            }
            prop_assert_eq!(g.pressure(), m.level);
            prop_assert_eq!(g.projected_bytes(), m.projected());
            prop_assert_eq!(g.poll_timeout(), m.calm_since.map(|s| t(s + 100)));
            let edge = g.poll_pressure();
            if m.level == m.reported {
                prop_assert_eq!(edge, None);
            } else {
                prop_assert_eq!(edge, Some(m.level));
                m.reported = m.level;
            }
            let stats = g.stats();
            prop_assert_eq!(stats.reservations as usize, m.reservations.len());
            prop_assert_eq!(stats.reserved_bytes, m.reservations.iter().map(|r| r.1).sum::<u64>());
        }
    }
}
