//! The retry policy as data plus pure functions: a schedule of delays (`TIDINGS_RETRY_SCHEDULE`), ±20% jitter,
//! and `Retry-After` clamping. The durable schedule lives in each outbox row (`due_at`, `attempts`); this module
//! only answers "when is the next attempt, if any?". The same schedule is also a `backon` backoff, so in-memory
//! retries can follow it.

use std::{fmt, str::FromStr, time::Duration};

use rand::Rng;

/// Delays between attempts: after the n-th failed attempt, wait `delays[n-1]`; after the last, give up.
#[derive(Clone, PartialEq, Eq)]
pub struct RetrySchedule {
    delays: Vec<Duration>,
}

/// Relative jitter applied to every scheduled delay: the real delay lies within ±20%.
pub const JITTER: f64 = 0.2;

impl RetrySchedule {
    pub fn new(delays: Vec<Duration>) -> Self {
        Self { delays }
    }

    /// How a thin ping's fetch of its topic URL is retried: again after 10 s, then after 60 s, then given up.
    /// The publisher asked for the fetch moments ago, so a failure is more likely its server restarting than a
    /// subscriber being away, and a few attempts within about a minute either get the content or tell the
    /// operator (the fetch is `failed` with its last error) while the ping is still fresh.
    pub fn topic_fetches() -> Self {
        Self::new(vec![Duration::from_secs(10), Duration::from_secs(60)])
    }

    /// How many attempts a job gets in all: the first plus one per delay.
    pub fn max_attempts(&self) -> u32 {
        self.delays.len() as u32 + 1
    }

    /// The delay before the next attempt after `attempts_made` failed attempts, jittered, or `None` when the
    /// schedule is exhausted and the job is dead.
    pub fn next_delay(&self, attempts_made: u32, rng: &mut impl Rng) -> Option<Duration> {
        let base = *self.delays.get(attempts_made.checked_sub(1)? as usize)?;
        Some(jittered(base, rng.gen_range(-JITTER..=JITTER)))
    }

    /// The delay before the next attempt, honouring a `Retry-After` from the subscriber (clamped to `max`)
    /// when it asks for more than the schedule would wait.
    pub fn next_delay_with_hint(
        &self,
        attempts_made: u32,
        retry_after: Option<Duration>,
        max: Duration,
        rng: &mut impl Rng,
    ) -> Option<Duration> {
        let scheduled = self.next_delay(attempts_made, rng)?;
        Some(match retry_after {
            Some(hint) => hint.min(max).max(Duration::from_millis(1)),
            None => scheduled,
        })
    }
}

fn jittered(base: Duration, factor: f64) -> Duration {
    base.mul_f64(1.0 + factor)
}

/// Parses a `Retry-After` header value given in seconds (HTTP-dates are accepted as "no hint").
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// A duration that is not `<whole number><unit>` within its bound.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("`{0}` is not a duration like 5s, 5m or 2h")]
    NotANumber(String),
    #[error("`{0}` has no unit (ms, s, m, h or d)")]
    NoUnit(String),
    #[error("`{0}` is longer than {1} days")]
    TooLong(String, u64),
}

impl FromStr for RetrySchedule {
    type Err = DurationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let delays =
            s.split(',').map(str::trim).filter(|p| !p.is_empty()).map(parse_duration).collect::<Result<Vec<_>, _>>()?;
        Ok(Self { delays })
    }
}

/// Parses `250ms`, `5s`, `5m`, `2h` or `1d`, at most 30 days.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    parse_duration_within(s, Duration::from_secs(30 * 86_400))
}

/// Parses `250ms`, `5s`, `5m`, `2h` or `1d`, at most `max`.
pub fn parse_duration_within(s: &str, max: Duration) -> Result<Duration, DurationError> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: u64 = number.parse().map_err(|_| DurationError::NotANumber(s.to_owned()))?;
    let unit_ms = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(DurationError::NoUnit(s.to_owned())),
    };
    let ms = n
        .checked_mul(unit_ms)
        .filter(|ms| u128::from(*ms) <= max.as_millis())
        .ok_or_else(|| DurationError::TooLong(s.to_owned(), max.as_secs() / 86_400))?;
    Ok(Duration::from_millis(ms))
}

impl fmt::Debug for RetrySchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.delays.iter()).finish()
    }
}

/// The schedule as a `backon` backoff: yields each jittered delay once, then stops.
pub struct ScheduleBackoff {
    schedule: RetrySchedule,
    attempts: u32,
}

impl Iterator for ScheduleBackoff {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        self.attempts += 1;
        self.schedule.next_delay(self.attempts, &mut rand::thread_rng())
    }
}

impl backon::BackoffBuilder for RetrySchedule {
    type Backoff = ScheduleBackoff;
    fn build(self) -> Self::Backoff {
        ScheduleBackoff { schedule: self, attempts: 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, SeedableRng};

    fn schedule() -> RetrySchedule {
        "5s,5m,30m".parse().unwrap()
    }

    #[test]
    fn the_default_schedule_parses() {
        let s: RetrySchedule = "5s,5m,30m,2h,5h,10h,10h".parse().unwrap();
        assert_eq!(s.max_attempts(), 8);
    }

    #[test]
    fn delays_stay_within_twenty_percent_of_the_schedule() {
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..1000 {
            let d = schedule().next_delay(2, &mut rng).unwrap();
            assert!(d >= Duration::from_secs(240) && d <= Duration::from_secs(360), "{d:?}");
        }
    }

    #[test]
    fn the_schedule_is_exhausted_after_its_last_delay() {
        let mut rng = StdRng::seed_from_u64(7);
        assert!(schedule().next_delay(3, &mut rng).is_some());
        assert!(schedule().next_delay(4, &mut rng).is_none());
        assert!(schedule().next_delay(0, &mut rng).is_none());
    }

    #[test]
    fn retry_after_is_honoured_and_clamped() {
        let mut rng = StdRng::seed_from_u64(7);
        let max = Duration::from_secs(60);
        let d = schedule().next_delay_with_hint(1, Some(Duration::from_secs(30)), max, &mut rng);
        assert_eq!(d, Some(Duration::from_secs(30)));
        let d = schedule().next_delay_with_hint(1, Some(Duration::from_secs(86_400)), max, &mut rng);
        assert_eq!(d, Some(max));
    }

    #[test]
    fn bad_durations_are_refused_with_a_reason() {
        assert!("5x".parse::<RetrySchedule>().unwrap_err().to_string().contains("5x"));
        assert!("s".parse::<RetrySchedule>().is_err());
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
    }

    #[test]
    fn the_schedule_drives_a_backon_backoff() {
        use backon::BackoffBuilder;
        assert_eq!(schedule().build().count(), 3);
    }
}
