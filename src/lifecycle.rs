//! The subscription lifecycle as a declared state machine: every allowed (state, transition) pair is listed in
//! one table, and anything else is refused. Pure, but for the SQL that keeps the `disabled` transition's guard
//! data (`track_delivery_health!`, embedded in the deliverer's record statement); the store applies what this
//! module allows.
//!
//! ```text
//!   pending ──verified──▶ active ──renewed──▶ active
//!      │                   │ ├──expired──────▶ expired      ──verified──▶ active
//!      │                   │ ├──unsubscribed─▶ unsubscribed ──verified──▶ active
//!      │                   │ ├──gone (410)───▶ unsubscribed
//!      │                   │ └──disabled─────▶ disabled     ──verified | enabled──▶ active
//!      │                   │                       └──unsubscribed──▶ unsubscribed
//!      └──denied──▶ denied ◀──denied──┘                       denied ──verified──▶ active
//! ```
//!
//! `disabled` is the one transition with a guard outside this table: the store takes it only when every delivery
//! has failed for the configured window and at least the configured number died in a row
//! ([`crate::subscriptions::store::disable_if_failing`]).

use std::fmt;

/// The SQL, embedded in the deliverer's record statement after its CTE `finished` (the recorded jobs: their
/// subscription, kind and new state), that keeps an active subscription's failure count: a delivered job clears
/// `failing_since` and `dead_in_a_row`; a failed one sets `failing_since` if unset; a dead one adds to
/// `dead_in_a_row`. Only a change writes the row, so healthy subscriptions are never written, and rows are locked
/// in id order, so two deliverers' records never deadlock on them. CTE `health` returns (id, died): the
/// subscriptions whose dead count grew, for
/// [`disable_if_failing`](crate::subscriptions::store::disable_if_failing).
macro_rules! track_delivery_health {
    () => {
        "health_seen AS (
             SELECT f.subscription_id AS id, bool_or(f.state = 'delivered') AS delivered,
                    count(*) FILTER (WHERE f.state = 'dead') AS dead
             FROM finished f WHERE f.kind = 'deliver' AND f.state <> 'cancelled' GROUP BY f.subscription_id
         ), health_locked AS (
             SELECT s.id, h.delivered, h.dead FROM subscriptions s JOIN health_seen h ON h.id = s.id
             WHERE s.state = 'active'
               AND CASE WHEN h.delivered THEN s.failing_since IS NOT NULL OR s.dead_in_a_row > 0
                        ELSE s.failing_since IS NULL OR h.dead > 0 END
             ORDER BY s.id FOR UPDATE OF s
         ), health AS (
             UPDATE subscriptions s
             SET failing_since = CASE WHEN l.delivered THEN NULL ELSE coalesce(s.failing_since, now()) END,
                 dead_in_a_row = CASE WHEN l.delivered THEN 0 ELSE s.dead_in_a_row + l.dead END
             FROM health_locked l WHERE s.id = l.id
             RETURNING s.id, l.dead > 0 AND NOT l.delivered AS died
         )"
    };
}
pub(crate) use track_delivery_health;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum State {
    Pending,
    Active,
    Expired,
    Unsubscribed,
    Denied,
    /// Every delivery failed for too long: no new jobs until a verified re-subscribe or an operator enables it.
    Disabled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Transition {
    /// A subscribe request's verification of intent succeeded (first time, or after the subscription ended).
    Verified,
    /// A subscribe request for an active subscription was verified: new lease, new (or no) secret.
    Renewed,
    /// An unsubscribe request was verified.
    Unsubscribed,
    /// The lease ran out.
    Expired,
    /// The hub refused the subscription (topic not allowed).
    Denied,
    /// The callback answered 410 Gone to a delivery.
    Gone,
    /// Every delivery failed for the configured window, with enough dead in a row.
    Disabled,
    /// An operator enabled a disabled subscription again.
    Enabled,
}

/// The declared transitions: (from, transition, to).
pub const TRANSITIONS: &[(State, Transition, State)] = &[
    (State::Pending, Transition::Verified, State::Active),
    (State::Expired, Transition::Verified, State::Active),
    (State::Unsubscribed, Transition::Verified, State::Active),
    (State::Denied, Transition::Verified, State::Active),
    (State::Disabled, Transition::Verified, State::Active),
    (State::Disabled, Transition::Enabled, State::Active),
    (State::Disabled, Transition::Unsubscribed, State::Unsubscribed),
    (State::Active, Transition::Disabled, State::Disabled),
    (State::Active, Transition::Renewed, State::Active),
    (State::Active, Transition::Unsubscribed, State::Unsubscribed),
    (State::Active, Transition::Expired, State::Expired),
    (State::Active, Transition::Gone, State::Unsubscribed),
    (State::Pending, Transition::Denied, State::Denied),
    (State::Active, Transition::Denied, State::Denied),
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a {state} subscription cannot be {transition}")]
pub struct NotAllowed {
    pub state: State,
    pub transition: Transition,
}

/// The state a transition leads to, if the machine allows it from `from`.
pub fn next(from: State, transition: Transition) -> Result<State, NotAllowed> {
    TRANSITIONS
        .iter()
        .find(|(f, t, _)| *f == from && *t == transition)
        .map(|(_, _, to)| *to)
        .ok_or(NotAllowed { state: from, transition })
}

/// The transition a verified subscribe request makes from `from`.
pub fn on_subscribe_verified(from: State) -> Transition {
    if from == State::Active {
        Transition::Renewed
    } else {
        Transition::Verified
    }
}

impl State {
    pub const ALL: [State; 6] =
        [State::Pending, State::Active, State::Expired, State::Unsubscribed, State::Denied, State::Disabled];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Active => "active",
            State::Expired => "expired",
            State::Unsubscribed => "unsubscribed",
            State::Denied => "denied",
            State::Disabled => "disabled",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        State::ALL.into_iter().find(|s| s.as_str() == raw)
    }
}

impl Transition {
    pub fn as_str(self) -> &'static str {
        match self {
            Transition::Verified => "verified",
            Transition::Renewed => "renewed",
            Transition::Unsubscribed => "unsubscribed",
            Transition::Expired => "expired",
            Transition::Denied => "denied",
            Transition::Gone => "gone",
            Transition::Disabled => "disabled",
            Transition::Enabled => "enabled",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Transition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pending_subscription_becomes_active_when_verified() {
        assert_eq!(next(State::Pending, Transition::Verified), Ok(State::Active));
    }

    #[test]
    fn an_active_subscription_is_renewed_not_reverified() {
        assert_eq!(on_subscribe_verified(State::Active), Transition::Renewed);
        assert_eq!(next(State::Active, Transition::Renewed), Ok(State::Active));
        assert!(next(State::Active, Transition::Verified).is_err());
    }

    #[test]
    fn ended_subscriptions_can_be_subscribed_again() {
        for state in [State::Expired, State::Unsubscribed, State::Denied, State::Disabled] {
            assert_eq!(next(state, on_subscribe_verified(state)), Ok(State::Active));
        }
    }

    #[test]
    fn only_active_subscriptions_expire_go_or_are_disabled() {
        for t in [Transition::Expired, Transition::Gone, Transition::Disabled] {
            for s in [State::Pending, State::Expired, State::Unsubscribed, State::Denied, State::Disabled] {
                assert_eq!(next(s, t), Err(NotAllowed { state: s, transition: t }));
            }
            assert!(next(State::Active, t).is_ok());
        }
    }

    #[test]
    fn a_disabled_subscription_is_enabled_by_an_operator_or_a_verified_subscribe_and_only_from_disabled() {
        assert_eq!(next(State::Active, Transition::Disabled), Ok(State::Disabled));
        assert_eq!(next(State::Disabled, Transition::Enabled), Ok(State::Active));
        assert_eq!(next(State::Disabled, on_subscribe_verified(State::Disabled)), Ok(State::Active));
        assert_eq!(next(State::Disabled, Transition::Unsubscribed), Ok(State::Unsubscribed));
        for s in [State::Pending, State::Active, State::Expired, State::Unsubscribed, State::Denied] {
            assert!(next(s, Transition::Enabled).is_err(), "{s}");
        }
        for s in [State::Pending, State::Expired, State::Unsubscribed, State::Denied] {
            assert!(next(s, Transition::Unsubscribed).is_err(), "{s}");
        }
    }

    #[test]
    fn states_round_trip_through_their_names() {
        for s in State::ALL {
            assert_eq!(State::parse(s.as_str()), Some(s));
        }
        assert_eq!(State::parse("nope"), None);
    }
}
