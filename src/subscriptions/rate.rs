//! A subscription's optional rate limit: at most `per_second` deliveries a second, in bursts of up to `burst`.
//! Asked for with the optional `hub.x-rate` / `hub.x-rate-burst` parameters of a subscribe request (applied when
//! its verification succeeds, like `hub.secret`) or set by the admin API. Enforced by the outbox's claim for every
//! deliverer at once.

use serde::{Deserialize, Serialize};

/// The fastest limit a subscription may ask for; beyond it a limit is no limit.
pub const MAX_PER_SECOND: f64 = 10_000.0;

/// The slowest: one delivery every 1,000 seconds.
pub const MIN_PER_SECOND: f64 = 0.001;

/// The largest burst.
pub const MAX_BURST: i32 = 10_000;

/// A validated limit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawRate")]
pub struct RateLimit {
    per_second: f64,
    burst: i32,
}

/// Why a limit was refused; the message names what to send instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateError {
    #[error("the rate must be a number of deliveries per second from {MIN_PER_SECOND} to {MAX_PER_SECOND}")]
    Rate,
    #[error("the burst must be a whole number of deliveries from 1 to {MAX_BURST}")]
    Burst,
    #[error("a burst needs a rate")]
    BurstWithoutRate,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRate {
    per_second: f64,
    #[serde(default = "one")]
    burst: i64,
}

fn one() -> i64 {
    1
}

impl TryFrom<RawRate> for RateLimit {
    type Error = RateError;

    fn try_from(raw: RawRate) -> Result<Self, RateError> {
        Self::new(raw.per_second, raw.burst)
    }
}

impl RateLimit {
    pub fn new(per_second: f64, burst: i64) -> Result<Self, RateError> {
        if !(MIN_PER_SECOND..=MAX_PER_SECOND).contains(&per_second) {
            return Err(RateError::Rate);
        }
        let burst = i32::try_from(burst).ok().filter(|b| (1..=MAX_BURST).contains(b)).ok_or(RateError::Burst)?;
        Ok(Self { per_second, burst })
    }

    /// From a form's `hub.x-rate` and `hub.x-rate-burst` (default 1); None when neither is given.
    pub fn parse(rate: Option<&str>, burst: Option<&str>) -> Result<Option<Self>, RateError> {
        let (rate, burst) = (rate.filter(|r| !r.is_empty()), burst.filter(|b| !b.is_empty()));
        let Some(rate) = rate else {
            return match burst {
                Some(_) => Err(RateError::BurstWithoutRate),
                None => Ok(None),
            };
        };
        let per_second = rate.trim().parse::<f64>().map_err(|_| RateError::Rate)?;
        let burst = match burst {
            Some(b) => b.trim().parse::<i64>().map_err(|_| RateError::Burst)?,
            None => 1,
        };
        Self::new(per_second, burst).map(Some)
    }

    pub fn per_second(&self) -> f64 {
        self.per_second
    }

    pub fn burst(&self) -> i32 {
        self.burst
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_with_and_without_a_burst_parses() {
        assert_eq!(RateLimit::parse(Some("50"), None).unwrap(), Some(RateLimit { per_second: 50.0, burst: 1 }));
        assert_eq!(RateLimit::parse(Some("0.5"), Some("10")).unwrap(), Some(RateLimit { per_second: 0.5, burst: 10 }));
        assert_eq!(RateLimit::parse(None, None).unwrap(), None);
        assert_eq!(RateLimit::parse(Some(""), Some("")).unwrap(), None);
    }

    #[test]
    fn out_of_range_or_malformed_limits_are_refused_with_the_reason() {
        for rate in ["0", "-1", "NaN", "inf", "10001", "fast", "1e9"] {
            assert_eq!(RateLimit::parse(Some(rate), None), Err(RateError::Rate), "{rate}");
        }
        for burst in ["0", "-3", "1.5", "10001", "99999999999"] {
            assert_eq!(RateLimit::parse(Some("5"), Some(burst)), Err(RateError::Burst), "{burst}");
        }
        assert_eq!(RateLimit::parse(None, Some("5")), Err(RateError::BurstWithoutRate));
    }

    #[test]
    fn a_json_limit_is_validated_as_it_is_read() {
        let ok: RateLimit = serde_json::from_str(r#"{"per_second": 50, "burst": 5}"#).unwrap();
        assert_eq!((ok.per_second(), ok.burst()), (50.0, 5));
        let err = serde_json::from_str::<RateLimit>(r#"{"per_second": 0}"#).unwrap_err().to_string();
        assert!(err.contains("deliveries per second"), "{err}");
        assert!(serde_json::from_str::<RateLimit>(r#"{"per_second": 5, "extra": 1}"#).is_err());
    }
}
