//! When a failed delivery is tried again: Svix's schedule (5 s, 5 min, 30 min, 2 h, 5 h, 10 h,
//! 10 h after the first attempt, so eight attempts over about 28 hours) with ±20 % jitter, so
//! an endpoint that comes back is not hit by every queued delivery in the same second; a
//! `Retry-After` asking for more time than the schedule wins.

use std::time::{Duration, SystemTime};

use rand::Rng;

/// The longest `Retry-After` honoured; a receiver cannot park a delivery for a month.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone)]
pub struct RetrySchedule {
    delays: Vec<Duration>,
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NextAttempt {
    After(Duration),
    /// The schedule is exhausted (or the failure is permanent): the delivery failed.
    GiveUp,
}

impl RetrySchedule {
    pub fn new(delays: Vec<Duration>) -> Self {
        Self { delays }
    }

    pub fn svix() -> Self {
        let m = |m: u64| Duration::from_secs(60 * m);
        Self::new(vec![Duration::from_secs(5), m(5), m(30), m(120), m(300), m(600), m(600)])
    }

    pub fn len(&self) -> usize {
        self.delays.len()
    }

    pub fn is_empty(&self) -> bool {
        self.delays.is_empty()
    }

    /// `step` is how many retries were already scheduled for this delivery.
    pub fn next(&self, step: usize, retry_after: Option<Duration>, rng: &mut impl Rng) -> NextAttempt {
        let Some(base) = self.delays.get(step) else { return NextAttempt::GiveUp };
        let jittered = base.mul_f64(rng.random_range(0.8..=1.2));
        match retry_after {
            Some(asked) => NextAttempt::After(jittered.max(asked.min(MAX_RETRY_AFTER))),
            None => NextAttempt::After(jittered),
        }
    }
}

/// `Retry-After` is either delta-seconds or an HTTP date (RFC 9110 §10.2.3).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let format = time::format_description::well_known::Rfc2822;
    let at = time::OffsetDateTime::parse(value, &format).ok()?;
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(at.unix_timestamp()).ok()?);
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_step_stays_within_twenty_percent_and_then_gives_up() {
        let s = RetrySchedule::svix();
        let mut rng = rand::rng();
        let bases = [5u64, 300, 1800, 7200, 18000, 36000, 36000];
        for (step, base) in bases.iter().enumerate() {
            for _ in 0..200 {
                let NextAttempt::After(d) = s.next(step, None, &mut rng) else { panic!("step {step} retries") };
                let (lo, hi) = (*base as f64 * 0.8, *base as f64 * 1.2);
                assert!((lo..=hi).contains(&d.as_secs_f64()), "step {step}: {d:?}");
            }
        }
        assert_eq!(s.next(7, None, &mut rng), NextAttempt::GiveUp);
    }

    #[test]
    fn jitter_actually_varies() {
        let s = RetrySchedule::svix();
        let mut rng = rand::rng();
        let seen: std::collections::HashSet<_> = (0..50).map(|_| s.next(1, None, &mut rng)).collect();
        assert!(seen.len() > 10);
    }

    #[test]
    fn retry_after_wins_only_when_longer_and_is_capped() {
        let s = RetrySchedule::svix();
        let mut rng = rand::rng();
        let NextAttempt::After(d) = s.next(0, Some(Duration::from_secs(120)), &mut rng) else { panic!() };
        assert_eq!(d, Duration::from_secs(120));
        let NextAttempt::After(d) = s.next(2, Some(Duration::from_secs(1)), &mut rng) else { panic!() };
        assert!(d >= Duration::from_secs(1440));
        let NextAttempt::After(d) = s.next(0, Some(Duration::from_secs(90 * 86400)), &mut rng) else { panic!() };
        assert_eq!(d, MAX_RETRY_AFTER);
    }

    #[test]
    fn retry_after_parses_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        // 1_700_000_060 = Tue, 14 Nov 2023 22:14:20 GMT
        assert_eq!(parse_retry_after("Tue, 14 Nov 2023 22:14:20 GMT", now), Some(Duration::from_secs(60)));
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
