//! The subscription lifecycle as a declared state machine: every allowed (state, transition) pair is listed in
//! one table, and anything else is refused. Pure; the store applies what this module allows.
//!
//! ```text
//!   pending ──verified──▶ active ──renewed──▶ active
//!      │                   │ ├──expired──────▶ expired      ──verified──▶ active
//!      │                   │ ├──unsubscribed─▶ unsubscribed ──verified──▶ active
//!      │                   │ └──gone (410)───▶ unsubscribed
//!      └──denied──▶ denied ◀──denied──┘                       denied ──verified──▶ active
//! ```

use std::fmt;

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
}

/// The declared transitions: (from, transition, to).
pub const TRANSITIONS: &[(State, Transition, State)] = &[
    (State::Pending, Transition::Verified, State::Active),
    (State::Expired, Transition::Verified, State::Active),
    (State::Unsubscribed, Transition::Verified, State::Active),
    (State::Denied, Transition::Verified, State::Active),
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
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Active => "active",
            State::Expired => "expired",
            State::Unsubscribed => "unsubscribed",
            State::Denied => "denied",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [State::Pending, State::Active, State::Expired, State::Unsubscribed, State::Denied]
            .into_iter()
            .find(|s| s.as_str() == raw)
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
        for state in [State::Expired, State::Unsubscribed, State::Denied] {
            assert_eq!(next(state, on_subscribe_verified(state)), Ok(State::Active));
        }
    }

    #[test]
    fn only_active_subscriptions_expire_unsubscribe_or_go() {
        for t in [Transition::Expired, Transition::Unsubscribed, Transition::Gone] {
            for s in [State::Pending, State::Expired, State::Unsubscribed, State::Denied] {
                assert_eq!(next(s, t), Err(NotAllowed { state: s, transition: t }));
            }
            assert!(next(State::Active, t).is_ok());
        }
    }

    #[test]
    fn states_round_trip_through_their_names() {
        for s in [State::Pending, State::Active, State::Expired, State::Unsubscribed, State::Denied] {
            assert_eq!(State::parse(s.as_str()), Some(s));
        }
        assert_eq!(State::parse("nope"), None);
    }
}
