//! Memory pressure in the flow governor: shrunk caps and watermarks, no admission at critical,
//! and idle flows evicted in batches.
//!
//! [`FlowGovernor::on_pressure`] applies the configured policy's caps (`max_flows`, per app, per
//! destination, UDP, DNS) and its six watermarks scaled by [`Pressure::scale`]; timeouts and
//! pacing are unchanged. Reads above a shrunk watermark pause at once (and are resumed by a
//! notification once they may restart), so the bytes a proxy buffers shrink with the pressure.
//! At [`Pressure::Critical`] every new flow is refused with
//! [`RejectReason::MemoryPressure`](crate::RejectReason::MemoryPressure), and established flows
//! idle for [`EVICT_MIN_IDLE_MICROS`] are closed with
//! [`CloseReason::MemoryPressure`](crate::CloseReason::MemoryPressure), least recently active
//! first, [`EVICT_BATCH`] at a time, one batch at once and one more every
//! [`EVICT_INTERVAL_MICROS`] while pressure stays critical.

use super::accounting::Side;
use super::{CloseReason, FlowClass, FlowGovernor, FlowPolicy, FlowSlot};
use crate::memory::Pressure;
use crate::time::Instant;

/// The most idle flows one eviction round closes.
pub const EVICT_BATCH: usize = 32;

/// How long an established flow must have been idle to be evicted under critical pressure:
/// 2 s, past a request/response exchange but well inside any keep-alive.
pub const EVICT_MIN_IDLE_MICROS: u64 = 2_000_000;

/// The time between eviction rounds while pressure stays critical: 1 s.
pub const EVICT_INTERVAL_MICROS: u64 = 1_000_000;

impl<S: AsRef<[FlowSlot]> + AsMut<[FlowSlot]>> FlowGovernor<S> {
    /// Apply memory pressure `level` (from
    /// [`MemoryGovernor::poll_pressure`](crate::MemoryGovernor::poll_pressure)):
    ///
    /// - the caps (`max_flows`, per app, per destination, UDP, DNS) and the six watermarks of
    ///   the configured policy are scaled by [`Pressure::scale`] (timeouts and pacing are not),
    ///   and [`FlowGovernor::limits`] reports the result; reads above a shrunk watermark pause
    ///   at once, and reads a grown one allows again are resumed by notification;
    /// - at [`Pressure::Critical`] every new flow is refused with
    ///   [`RejectReason::MemoryPressure`](crate::RejectReason::MemoryPressure), and established
    ///   flows idle for [`EVICT_MIN_IDLE_MICROS`] are closed with
    ///   [`CloseReason::MemoryPressure`], least recently active first, [`EVICT_BATCH`] at once
    ///   and as many again every [`EVICT_INTERVAL_MICROS`] (a timer) while it lasts.
    ///
    /// Drain [`FlowGovernor::poll_notification`] afterwards.
    pub fn on_pressure(&mut self, now: Instant, level: Pressure) {
        let now = self.clock.observe(now);
        self.pressure = level;
        self.limits = scaled(&self.policy, level);
        self.reassess_reads();
        if level == Pressure::Critical {
            if self.next_eviction.is_none() {
                self.evict_idle(now);
            }
        } else {
            self.next_eviction = None;
        }
    }

    /// The pressure level in force.
    pub fn pressure(&self) -> Pressure {
        self.pressure
    }

    /// The policy in force: the configured one with its caps and watermarks scaled by the
    /// pressure level.
    pub fn limits(&self) -> &FlowPolicy {
        &self.limits
    }

    /// Run the eviction round due at `now`, if any.
    pub(crate) fn evict_if_due(&mut self, now: Instant) {
        if self.next_eviction.is_some_and(|due| due <= now) {
            self.evict_idle(now);
        }
    }

    /// The watermarks changed: re-apply every hysteresis with the new values, pause the reads
    /// that may no longer run, and resume those that may run again. O(slots), once per change
    /// of level.
    fn reassess_reads(&mut self) {
        let (flow_high, flow_low) = (
            self.limits.flow_high_watermark,
            self.limits.flow_low_watermark,
        );
        let count = u32::try_from(self.slots.as_ref().len()).unwrap_or(u32::MAX);
        for index in 0..count {
            if let Some(flow) = self.flow_mut(index)
                && flow.state.is_open()
            {
                for dir in [&mut flow.outbound, &mut flow.inbound] {
                    if dir.pending >= flow_high {
                        dir.over = true;
                    } else if dir.pending <= flow_low {
                        dir.over = false;
                    }
                }
            }
        }
        for index in 0..count {
            if self.app(index).is_some_and(|app| app.references > 0) {
                // Resumes are queued by the pass over flows below.
                let _ = self.update_app(index);
            }
        }
        self.update_global();
        for index in 0..count {
            let Some(flow) = self.flow_record(index).copied() else {
                continue;
            };
            if !flow.state.is_open() {
                continue;
            }
            for (side, dir, may_read) in [
                (Side::Outbound, flow.outbound, true),
                (
                    Side::Inbound,
                    flow.inbound,
                    flow.state == super::FlowState::Established,
                ),
            ] {
                if dir.paused {
                    self.maybe_resume(index, side);
                } else if may_read && !self.readable(index, side) {
                    // The host may be between reads: record the pause so a resume follows.
                    self.record_pause(index, side);
                }
            }
        }
    }

    /// Close up to [`EVICT_BATCH`] established flows idle for [`EVICT_MIN_IDLE_MICROS`], least
    /// recently active first, and schedule the next round.
    fn evict_idle(&mut self, now: Instant) {
        for _ in 0..EVICT_BATCH {
            let oldest = FlowClass::ALL
                .iter()
                .filter_map(|class| {
                    let head = self.established_timers.get(class.index())?.head;
                    Some((self.flow_record(head)?.last_active, head))
                })
                .min();
            match oldest {
                Some((last_active, index))
                    if now.micros_since(last_active) >= EVICT_MIN_IDLE_MICROS =>
                {
                    self.begin_closing(index, CloseReason::MemoryPressure, true);
                }
                _ => break,
            }
        }
        self.next_eviction = Some(now.saturating_add_micros(EVICT_INTERVAL_MICROS));
    }
}

/// `policy` with its caps and watermarks scaled for `level`.
fn scaled(policy: &FlowPolicy, level: Pressure) -> FlowPolicy {
    FlowPolicy {
        max_flows: level.scale_u32(policy.max_flows),
        max_flows_per_app: level.scale_u32(policy.max_flows_per_app),
        max_flows_per_destination: level.scale_u32(policy.max_flows_per_destination),
        max_datagram_flows: level.scale_u32(policy.max_datagram_flows),
        max_dns_in_flight: level.scale_u32(policy.max_dns_in_flight),
        max_dns_in_flight_per_app: level.scale_u32(policy.max_dns_in_flight_per_app),
        flow_high_watermark: level.scale(policy.flow_high_watermark),
        flow_low_watermark: below(
            level.scale(policy.flow_low_watermark),
            level.scale(policy.flow_high_watermark),
        ),
        app_high_watermark: level.scale(policy.app_high_watermark),
        app_low_watermark: below(
            level.scale(policy.app_low_watermark),
            level.scale(policy.app_high_watermark),
        ),
        global_high_watermark: level.scale(policy.global_high_watermark),
        global_low_watermark: below(
            level.scale(policy.global_low_watermark),
            level.scale(policy.global_high_watermark),
        ),
        ..*policy
    }
}

/// `low`, lowered below `high` if scaling made them meet, so every pause has a level to
/// resume at (the policy requires low below high).
fn below(low: u64, high: u64) -> u64 {
    if low < high {
        low
    } else {
        high.saturating_sub(1)
    }
}

#[cfg(test)]
mod tests {
    use std::vec::Vec;

    use super::*;
    use crate::flow::tests::{info, small_policy};
    use crate::{Admission, FlowId, Notification, RejectReason};

    fn at(micros: u64) -> Instant {
        Instant::from_micros(micros)
    }

    fn established(governor: &mut FlowGovernor<Vec<FlowSlot>>, now: u64, app: u64) -> FlowId {
        let Admission::Accepted { id } = governor.on_new_flow(at(now), info(app, app)) else {
            panic!("admitted");
        };
        governor.on_connecting(at(now), id).unwrap();
        governor.on_connected(at(now), id).unwrap();
        id
    }

    fn governor(policy: FlowPolicy, slots: usize) -> FlowGovernor<Vec<FlowSlot>> {
        FlowGovernor::new(at(0), vec![FlowSlot::EMPTY; slots], policy).unwrap()
    }

    #[test]
    fn critical_refuses_every_new_flow_and_elevated_halves_the_caps() {
        let mut g = governor(small_policy(), 9);
        g.on_pressure(at(1), Pressure::Critical);
        assert_eq!(
            g.on_new_flow(at(2), info(1, 1)),
            Admission::Rejected(RejectReason::MemoryPressure)
        );
        assert_eq!(g.stats().rejected.memory_pressure, 1);
        g.on_pressure(at(3), Pressure::Elevated);
        assert_eq!(g.limits().max_flows_per_app, 3);
        assert_eq!(
            g.policy().max_flows_per_app,
            6,
            "the configured policy is kept"
        );
        for _ in 0..3 {
            assert!(matches!(
                g.on_new_flow(at(4), info(1, 1)),
                Admission::Accepted { .. }
            ));
        }
        assert_eq!(
            g.on_new_flow(at(4), info(1, 1)),
            Admission::Rejected(RejectReason::AppOverLimit)
        );
        g.on_pressure(at(5), Pressure::Normal);
        assert!(matches!(
            g.on_new_flow(at(6), info(1, 1)),
            Admission::Accepted { .. }
        ));
    }

    #[test]
    fn shrunk_watermarks_pause_reads_at_once_and_relief_resumes_them_once() {
        let mut g = governor(small_policy(), 9);
        let id = established(&mut g, 0, 1);
        // 30 bytes: under the flow watermark of 100, above a critical quarter of it (25), and
        // under the low watermark of 40 that relief brings back.
        g.on_local_read(at(1), id, 30).unwrap();
        assert!(g.can_read_local(id));
        g.on_pressure(at(2), Pressure::Critical);
        assert!(!g.can_read_local(id), "paused at once");
        assert_eq!(g.stats().flows_paused, 1);
        // Relief: the read may run again, and exactly one resume says so.
        g.on_pressure(at(3), Pressure::Normal);
        let notes: Vec<_> = std::iter::from_fn(|| g.poll_notification()).collect();
        assert_eq!(notes, [Notification::ResumeReadLocal { id }]);
        assert!(g.can_read_local(id));
    }

    #[test]
    fn scaled_low_watermarks_stay_below_their_high_ones() {
        // Lows one below their highs meet once halved (50 and 50), and the smallest pair meets
        // at the floor of 1: each low drops to one below its high, so a pause can end.
        let policy = FlowPolicy {
            flow_high_watermark: 101,
            flow_low_watermark: 100,
            app_high_watermark: 2,
            app_low_watermark: 1,
            global_high_watermark: 401,
            global_low_watermark: 400,
            ..small_policy()
        };
        let mut g = governor(policy, 9);
        for (level, expected) in [
            (Pressure::Elevated, [50, 49, 1, 0, 200, 199]),
            (Pressure::Critical, [25, 24, 1, 0, 100, 99]),
            (Pressure::Normal, [101, 100, 2, 1, 401, 400]),
        ] {
            g.on_pressure(at(1), level);
            let l = g.limits();
            assert_eq!(
                [
                    l.flow_high_watermark,
                    l.flow_low_watermark,
                    l.app_high_watermark,
                    l.app_low_watermark,
                    l.global_high_watermark,
                    l.global_low_watermark
                ],
                expected,
                "{level:?}"
            );
        }
    }

    #[test]
    fn critical_evicts_idle_flows_in_batches_least_recently_active_first() {
        let policy = FlowPolicy {
            max_flows: 60,
            max_flows_per_app: 60,
            max_flows_per_destination: 60,
            max_connecting: 60,
            idle_timeout_micros: u64::MAX,
            global_high_watermark: u64::MAX,
            global_low_watermark: 0,
            ..small_policy()
        };
        let mut g = governor(policy, 64);
        let ids: Vec<FlowId> = (0..40).map(|i| established(&mut g, i, i)).collect();
        // One flow is busy recently: never evicted while it is.
        let busy = established(&mut g, 2_500_000, 99);
        g.on_pressure(at(3_000_000), Pressure::Critical);
        let closes: Vec<_> = std::iter::from_fn(|| g.poll_notification()).collect();
        let expected: Vec<_> = ids[..EVICT_BATCH]
            .iter()
            .map(|&id| Notification::Close {
                id,
                reason: CloseReason::MemoryPressure,
            })
            .collect();
        assert_eq!(closes, expected, "the oldest batch, oldest first");
        assert_eq!(g.poll_timeout(), Some(at(4_000_000)));
        // Calling again at the same level starts no extra round.
        g.on_pressure(at(3_500_000), Pressure::Critical);
        assert!(g.poll_notification().is_none());
        g.handle_timeout(at(4_000_000));
        let rest: Vec<_> = std::iter::from_fn(|| g.poll_notification()).collect();
        assert_eq!(rest.len(), 40 - EVICT_BATCH);
        assert_eq!(g.stats().pressure_closes, 40);
        assert!(g.can_read_local(busy));
        // Relief stops the rounds.
        g.on_pressure(at(4_500_000), Pressure::Normal);
        assert_eq!(
            g.poll_timeout(),
            Some(Instant::MAX),
            "only the idle timeout is left"
        );
    }
}
