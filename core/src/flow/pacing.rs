//! Admission pacing: a token bucket per app that spreads a reconnect storm over time.
//!
//! After a network change apps reconnect at once: a browser restores its tabs, a sync client
//! reopens its connections, hundreds of new flows in the same instant, each a connect the
//! system and the upstream must absorb. The caps bound how many flows are open and the
//! connection budget how many connect at once; pacing bounds how fast each app's open flows
//! grow. Each admitted flow of an app (except DNS, which has its own in-flight budget) takes a
//! token from the app's bucket and gives it back when it stops being open; tokens also refill
//! at [`FlowPolicy::app_admission_rate_per_second`], up to [`FlowPolicy::app_admission_burst`].
//! An app that opens and closes short flows, however many a second, keeps its bucket full; a
//! page load never empties it; a storm of flows that stay open does, and is then admitted at
//! the rate. A flow that finds no token is refused with
//! [`RejectReason::Paced`](crate::RejectReason::Paced), and
//! [`FlowGovernor::paced_until`](crate::FlowGovernor::paced_until) says when the app's next
//! token comes, so the host can hold the flow and ask again instead of failing it.
//!
//! The buckets are per app so that pacing keeps the fairness the caps give: an app flooding
//! new flows spends its own tokens, never another app's. A bucket lives in the app's record,
//! which exists while the app holds a flow; an app that comes back after holding none starts
//! with a full bucket (it holds nothing the storm could pile onto).
//!
//! Tokens are counted in millionths, so a rate of one per second refills exactly one token per
//! 1,000,000 microseconds with no rounding drift.

use super::policy::FlowPolicy;
use crate::Instant;

/// One token, in the bucket's units.
const TOKEN: u64 = 1_000_000;

/// One app's token bucket. Refill is lazy: computed from the time since the last refill
/// whenever the bucket is asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Pacer {
    /// Tokens available, in millionths of a token (a `u32` burst of them fits in 52 bits).
    units: u64,
    /// When `units` was last brought up to date.
    refilled_at: Instant,
}

impl Pacer {
    /// An empty bucket, for a free record.
    pub(crate) const EMPTY: Pacer = Pacer {
        units: 0,
        refilled_at: Instant::ZERO,
    };

    /// A full bucket at `now`.
    pub(crate) fn new(now: Instant, policy: &FlowPolicy) -> Pacer {
        Pacer {
            units: capacity(policy),
            refilled_at: now,
        }
    }

    /// Bring the bucket up to `now` (never backwards).
    pub(crate) fn refill(&mut self, now: Instant, policy: &FlowPolicy) {
        let elapsed = now.micros_since(self.refilled_at);
        if elapsed == 0 {
            return;
        }
        // Saturating in `u64` is exact here: the capacity (a `u32` burst of millionths) is far
        // below `u64::MAX`, so a saturated sum still clamps to the capacity.
        let added = elapsed.saturating_mul(u64::from(policy.app_admission_rate_per_second));
        self.units = self.units.saturating_add(added).min(capacity(policy));
        self.refilled_at = now;
    }

    /// Whether a token is available (after [`Pacer::refill`]).
    pub(crate) const fn has_token(&self) -> bool {
        self.units >= TOKEN
    }

    /// Take a token; the caller checked [`Pacer::has_token`].
    pub(crate) fn take(&mut self) {
        debug_assert!(
            self.has_token(),
            "a token is taken only when one is available"
        );
        self.units = self.units.saturating_sub(TOKEN);
    }

    /// Give a token back (a paced flow stopped being open), up to the burst.
    pub(crate) fn give_back(&mut self, policy: &FlowPolicy) {
        self.units = self.units.saturating_add(TOKEN).min(capacity(policy));
    }

    /// When the next token is available, or `None` if one is available now.
    pub(crate) fn next_token_at(&self, policy: &FlowPolicy) -> Option<Instant> {
        if self.has_token() {
            return None;
        }
        let missing = TOKEN - self.units;
        let rate = u64::from(policy.app_admission_rate_per_second).max(1);
        let micros = missing.div_ceil(rate);
        Some(self.refilled_at.saturating_add_micros(micros))
    }

    /// Whole tokens available now.
    pub(crate) fn tokens(&self) -> u32 {
        u32::try_from(self.units / TOKEN).unwrap_or(u32::MAX)
    }
}

fn capacity(policy: &FlowPolicy) -> u64 {
    u64::from(policy.app_admission_burst).saturating_mul(TOKEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(burst: u32, rate: u32) -> FlowPolicy {
        FlowPolicy {
            app_admission_burst: burst,
            app_admission_rate_per_second: rate,
            ..FlowPolicy::DEFAULT
        }
    }

    #[test]
    fn a_burst_empties_the_bucket_and_the_rate_refills_it_exactly() {
        let policy = policy(3, 2);
        let mut pacer = Pacer::new(Instant::ZERO, &policy);
        for _ in 0..3 {
            assert!(pacer.has_token());
            pacer.take();
        }
        assert!(!pacer.has_token());
        // Two tokens per second: the next one in 500 ms.
        assert_eq!(
            pacer.next_token_at(&policy),
            Some(Instant::from_millis(500))
        );
        pacer.refill(Instant::from_micros(499_999), &policy);
        assert!(!pacer.has_token());
        assert_eq!(
            pacer.next_token_at(&policy),
            Some(Instant::from_millis(500))
        );
        pacer.refill(Instant::from_millis(500), &policy);
        assert!(pacer.has_token());
        assert_eq!(pacer.next_token_at(&policy), None);
        // Never above the burst, however long the quiet.
        pacer.refill(Instant::from_millis(3_600_000), &policy);
        assert_eq!(pacer.tokens(), 3);
    }

    #[test]
    fn extreme_rates_saturate_instead_of_overflowing() {
        let policy = policy(u32::MAX, u32::MAX);
        let mut pacer = Pacer::new(Instant::ZERO, &policy);
        pacer.take();
        pacer.refill(Instant::MAX, &policy);
        assert_eq!(pacer.tokens(), u32::MAX);
    }
}
