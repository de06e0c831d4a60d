//! The governor's deadlines: connect, idle (per class), UDP lifetime and paused time.
//!
//! Every deadline lives in a list kept in deadline order, so the earliest one of each kind is a
//! list head and [`FlowGovernor::poll_timeout`] is O(1):
//!
//! - connecting flows in admission order (connect timeout);
//! - established flows of each [`FlowClass`] in activity order (that class's idle timeout);
//! - open datagram flows in admission order (their maximum lifetime);
//! - open flows with a paused read, in the order they paused (the maximum paused time).
//!
//! A list's order matches its deadlines because each kind's timeout is one value and the clock
//! never goes backwards.

use super::table::{FlowRecord, LinkKind, ListHead, push_back, unlink};
use super::{CloseReason, FlowClass, FlowGovernor, FlowSlot, FlowState};
use crate::Instant;

impl<S: AsRef<[FlowSlot]> + AsMut<[FlowSlot]>> FlowGovernor<S> {
    /// The earliest instant at which [`FlowGovernor::handle_timeout`] has work: the connect
    /// deadline of the oldest connecting flow, the idle deadline of the least recently active
    /// established flow of each class, the lifetime of the oldest UDP flow, or the end of the
    /// longest pause. `None` when no open flow has a deadline. O(1).
    #[must_use = "arm a timer for this instant"]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut earliest = self.next_eviction;
        for (list, _) in TIMER_LISTS {
            earliest = earlier(earliest, self.head_deadline(list));
        }
        earliest
    }

    /// Close every flow whose deadline is at or before `now`: each moves to closing and is
    /// reported by [`FlowGovernor::poll_notification`] as
    /// [`Notification::Close`](crate::Notification::Close) with the deadline's
    /// [`CloseReason`]. Idempotent: a second call with the same `now` does nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.clock.observe(now);
        // A flow leaves every list when it closes, so at most one close per slot.
        let mut budget = self.slots.as_ref().len();
        for (list, reason) in TIMER_LISTS {
            while budget > 0 {
                let head = self.list(list).head;
                match self.head_deadline(list) {
                    Some(deadline) if deadline <= now => {
                        budget -= 1;
                        self.begin_closing(head, reason, true);
                    }
                    _ => break,
                }
            }
        }
        self.evict_if_due(now);
    }

    fn list(&self, list: TimerList) -> ListHead {
        match list {
            TimerList::Connecting => self.connecting_timers,
            TimerList::Established(class) => self
                .established_timers
                .get(class.index())
                .copied()
                .unwrap_or(ListHead::EMPTY),
            TimerList::Lifetime => self.lifetime_timers,
            TimerList::Paused => self.paused_timers,
        }
    }

    /// The deadline of the first flow of `list`.
    fn head_deadline(&self, list: TimerList) -> Option<Instant> {
        let flow = self.flow_record(self.list(list).head)?;
        let policy = &self.limits;
        Some(match list {
            TimerList::Connecting => flow
                .admitted_at
                .saturating_add_micros(policy.connect_timeout_micros),
            TimerList::Established(class) => flow
                .last_active
                .saturating_add_micros(class.idle_timeout_micros(policy)),
            TimerList::Lifetime => flow
                .admitted_at
                .saturating_add_micros(policy.datagram_max_lifetime_micros),
            TimerList::Paused => flow
                .paused_since
                .saturating_add_micros(policy.max_paused_micros),
        })
    }

    /// Keep open flow `index` in the paused-timer list exactly while one of its reads is
    /// paused: it joins when the first side pauses (its pause starts now) and leaves when no
    /// side is paused any more, or the flow stops being open.
    pub(crate) fn update_paused_timer(&mut self, index: u32) {
        let now = self.clock.latest();
        let Some(flow) = self.flow_record(index) else {
            return;
        };
        let paused = flow.state.is_open() && (flow.outbound.paused || flow.inbound.paused);
        if paused == flow.in_paused {
            return;
        }
        let rows = self.slots.as_mut();
        if paused {
            push_back(rows, &mut self.paused_timers, index, LinkKind::Pause);
        } else {
            unlink(rows, &mut self.paused_timers, index, LinkKind::Pause);
        }
        if let Some(flow) = self.flow_mut(index) {
            flow.in_paused = paused;
            if paused {
                flow.paused_since = now;
            }
        }
    }

    /// Established flow `index` of `class` becomes the most recently active of its class.
    pub(crate) fn move_to_idle_tail(&mut self, index: u32, class: FlowClass) {
        let rows = self.slots.as_mut();
        let Some(list) = self.established_timers.get_mut(class.index()) else {
            return;
        };
        unlink(rows, list, index, LinkKind::Timer);
        push_back(rows, list, index, LinkKind::Timer);
    }

    /// Flow `index` (its record as it was: `flow`) leaves every timer list it is in (it is
    /// closing or freed).
    pub(crate) fn leave_timers(&mut self, index: u32, flow: &FlowRecord) {
        let state = flow.state;
        let rows = self.slots.as_mut();
        match state {
            FlowState::Opening | FlowState::Connecting => {
                unlink(rows, &mut self.connecting_timers, index, LinkKind::Timer);
            }
            FlowState::Established => {
                if let Some(list) = self.established_timers.get_mut(flow.class.index()) {
                    unlink(rows, list, index, LinkKind::Timer);
                }
            }
            FlowState::Closing | FlowState::Closed => {}
        }
        if flow.class == FlowClass::Datagram && state.is_open() {
            unlink(rows, &mut self.lifetime_timers, index, LinkKind::Lifetime);
        }
        if flow.in_paused {
            unlink(rows, &mut self.paused_timers, index, LinkKind::Pause);
            if let Some(flow) = self.flow_mut(index) {
                flow.in_paused = false;
            }
        }
    }
}

/// Every timer list, with the reason its deadlines close a flow for.
const TIMER_LISTS: [(TimerList, CloseReason); 6] = [
    (TimerList::Connecting, CloseReason::ConnectTimeout),
    (
        TimerList::Established(FlowClass::Stream),
        CloseReason::IdleTimeout,
    ),
    (
        TimerList::Established(FlowClass::Datagram),
        CloseReason::IdleTimeout,
    ),
    (
        TimerList::Established(FlowClass::Dns),
        CloseReason::IdleTimeout,
    ),
    (TimerList::Lifetime, CloseReason::LifetimeExceeded),
    (TimerList::Paused, CloseReason::PausedTooLong),
];

/// One of the governor's timer lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TimerList {
    Connecting,
    Established(FlowClass),
    Lifetime,
    Paused,
}

fn earlier(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use crate::flow::tests::{info, small_policy};
    use crate::{
        Admission, AppId, CloseReason, FlowGovernor, FlowPolicy, FlowSlot, Instant, Notification,
        RejectReason,
    };

    fn at(micros: u64) -> Instant {
        Instant::from_micros(micros)
    }

    /// A flow whose peer stops draining is closed at the maximum paused time, long before its
    /// idle timeout; a resume in time restarts the count.
    #[test]
    fn a_read_paused_too_long_closes_its_flow() {
        let policy = FlowPolicy {
            max_paused_micros: 40,
            idle_timeout_micros: 10_000,
            ..small_policy()
        };
        let mut governor = FlowGovernor::new(at(0), [FlowSlot::EMPTY; 9], policy).unwrap();
        let id = governor.on_new_flow(at(1), info(1, 1)).id().unwrap();
        governor.on_connected(at(1), id).unwrap();
        // 100 bytes: the per-flow watermark pauses the local read at 10.
        governor.on_local_read(at(10), id, 100).unwrap();
        assert!(!governor.can_read_local(id));
        assert_eq!(governor.stats().flows_paused, 1);
        assert_eq!(governor.poll_timeout(), Some(at(50)));
        // Draining to the low watermark at 45 resumes it: no close at 50.
        governor.on_remote_sent(at(45), id, 60).unwrap();
        assert_eq!(
            governor.poll_notification(),
            Some(Notification::ResumeReadLocal { id })
        );
        assert_eq!(governor.stats().flows_paused, 0);
        governor.handle_timeout(at(50));
        assert_eq!(governor.poll_notification(), None);
        // Paused again at 60, never drained: closed at 100 with its own reason.
        governor.on_local_read(at(60), id, 60).unwrap();
        assert_eq!(governor.poll_timeout(), Some(at(100)));
        governor.handle_timeout(at(99));
        assert_eq!(governor.poll_notification(), None);
        governor.handle_timeout(at(100));
        assert_eq!(
            governor.poll_notification(),
            Some(Notification::Close {
                id,
                reason: CloseReason::PausedTooLong
            })
        );
        let stats = governor.stats();
        assert_eq!((stats.paused_closes, stats.flows_paused), (1, 0));
    }

    /// One app's reconnect storm is admitted at its burst, then at its rate; `paced_until`
    /// says when its next flow gets in, another app keeps its own bucket, and DNS is not
    /// paced.
    #[test]
    fn pacing_spreads_a_reconnect_storm() {
        let policy = FlowPolicy {
            max_flows: 20,
            max_flows_per_app: 20,
            max_flows_per_destination: 20,
            max_connecting: 20,
            app_admission_burst: 3,
            app_admission_rate_per_second: 1_000,
            ..small_policy()
        };
        let mut governor = FlowGovernor::new(at(0), [FlowSlot::EMPTY; 21], policy).unwrap();
        for d in 0..3 {
            assert!(governor.on_new_flow(at(5), info(1, d)).id().is_some());
        }
        assert_eq!(
            governor.on_new_flow(at(5), info(1, 9)),
            Admission::Rejected(RejectReason::Paced)
        );
        // One token per millisecond: the bucket emptied at 5 µs refills one at 1,005 µs.
        assert_eq!(governor.paced_until(AppId(1)), Some(at(1_005)));
        // Another app has its own bucket.
        assert_eq!(governor.paced_until(AppId(3)), None);
        assert!(governor.on_new_flow(at(5), info(3, 9)).id().is_some());
        let dns = crate::FlowInfo {
            class: crate::FlowClass::Dns,
            ..info(1, 9)
        };
        assert!(
            governor.on_new_flow(at(5), dns).id().is_some(),
            "DNS is not paced"
        );
        assert_eq!(governor.app_state(AppId(1)).dns_in_flight, 1);
        assert_eq!(
            governor.on_new_flow(at(1_004), info(1, 9)),
            Admission::Rejected(RejectReason::Paced)
        );
        assert!(governor.on_new_flow(at(1_005), info(1, 9)).id().is_some());
        assert_eq!(governor.paced_until(AppId(1)), Some(at(2_005)));
        assert_eq!(governor.app_state(AppId(1)).admission_tokens, 0);
        assert_eq!(governor.stats().rejected.paced, 2);
    }
}
