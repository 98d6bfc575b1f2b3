//! When the deliverer may stop claiming: only once its claims' walks, taken together, have visited every
//! subscription with pending jobs. A claim's walk visits at most `WALK_STEPS` subscriptions, so with more than that
//! a due job may sit beyond one claim's reach; the claims of a sweep go on from where the last one stopped until
//! they have gone round, and the sweep then knows the earliest pending job of them all.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::outbox::Claimed;

/// The claims that came back short since the last full one or the last sweep that went round.
#[derive(Debug, Default)]
pub struct Sweep {
    /// Where the first of them began.
    from: Option<Uuid>,
    /// One of them passed the last subscription and went on from the first.
    wrapped: bool,
    /// The earliest pending job they saw.
    earliest: Option<DateTime<Utc>>,
}

/// What a deliverer does after a short claim.
#[derive(Debug, PartialEq, Eq)]
pub enum After {
    /// Claim again at once: subscriptions are left that this sweep has not visited.
    ClaimAgain,
    /// Every subscription with pending jobs was visited; the earliest of their jobs is due then (None: there is
    /// none).
    Round(Option<DateTime<Utc>>),
}

impl Sweep {
    /// Counts in a claim that took fewer jobs than asked. A sweep that went round starts over.
    pub fn after(&mut self, claimed: &Claimed) -> After {
        let from = *self.from.get_or_insert(claimed.from);
        self.wrapped |= claimed.wrapped;
        self.earliest = match (self.earliest, claimed.earliest_due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if claimed.went_round || (self.wrapped && claimed.walked_to >= from) {
            After::Round(std::mem::take(self).earliest)
        } else {
            After::ClaimAgain
        }
    }

    /// A claim came back full: whatever this sweep saw is out of date.
    pub fn reset(&mut self) {
        *self = Sweep::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn claim(from: u128, to: u128, wrapped: bool, went_round: bool, earliest_in: Option<i64>) -> Claimed {
        let at = |s| DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap();
        Claimed {
            from: id(from),
            walked_to: id(to),
            wrapped,
            went_round,
            earliest_due: earliest_in.map(at),
            ..Default::default()
        }
    }

    #[test]
    fn a_claim_that_went_round_ends_the_sweep_with_its_earliest_job() {
        let mut sweep = Sweep::default();
        let after = sweep.after(&claim(5, 5, true, true, Some(30)));
        assert_eq!(after, After::Round(DateTime::from_timestamp(1_800_000_030, 0)));
    }

    #[test]
    fn with_nothing_pending_the_sweep_ends_with_no_job_due() {
        let mut sweep = Sweep::default();
        assert_eq!(sweep.after(&claim(0, 0, false, true, None)), After::Round(None));
    }

    #[test]
    fn claims_go_on_until_their_walks_have_passed_where_the_sweep_began() {
        let mut sweep = Sweep::default();
        assert_eq!(sweep.after(&claim(40, 70, false, false, Some(90))), After::ClaimAgain);
        assert_eq!(sweep.after(&claim(70, 20, true, false, Some(60))), After::ClaimAgain, "wrapped, not yet at 40");
        let after = sweep.after(&claim(20, 45, false, false, Some(120)));
        assert_eq!(after, After::Round(DateTime::from_timestamp(1_800_000_060, 0)), "the earliest of all three");
    }

    #[test]
    fn a_sweep_that_went_round_starts_over() {
        let mut sweep = Sweep::default();
        sweep.after(&claim(40, 40, true, true, Some(10)));
        assert_eq!(sweep.after(&claim(40, 70, false, false, Some(90))), After::ClaimAgain);
        let after = sweep.after(&claim(70, 40, true, false, Some(100)));
        assert_eq!(after, After::Round(DateTime::from_timestamp(1_800_000_090, 0)), "nothing kept of the last sweep");
    }

    #[test]
    fn a_full_claim_forgets_the_sweep() {
        let mut sweep = Sweep::default();
        sweep.after(&claim(40, 70, false, false, Some(5)));
        sweep.reset();
        assert_eq!(sweep.after(&claim(70, 90, false, false, Some(50))), After::ClaimAgain, "begins again at 70");
        let after = sweep.after(&claim(90, 70, true, false, Some(60)));
        assert_eq!(after, After::Round(DateTime::from_timestamp(1_800_000_050, 0)));
    }
}
