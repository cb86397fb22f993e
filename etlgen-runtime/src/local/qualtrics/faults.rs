//! Fault injection: which API calls misbehave, how, and how often.

use serde::{Deserialize, Serialize};

/// The faults the mock injects into API calls under `/API/v3/`.
///
/// The OAuth token route and the `/__mock/` admin routes are never faulted. Rates are
/// probabilities per API call, from 0 (never) to 1 (every call), drawn from a
/// [`fastrand::Rng`] seeded with [`Faults::seed`], so a sequential run is reproducible.
///
/// What each fault does, in the order the mock decides:
///
/// 1. **poison**: a call whose body contains one of [`Faults::poison`] always gets a 500,
///    before any effect. Clearing the list (`PUT /__mock/faults`) "fixes" the fault.
/// 2. **429** ([`Faults::rate_429`]): `429 Too Many Requests` with
///    `Retry-After: retry_after_seconds`, before any effect: the call changes nothing.
/// 3. **500** ([`Faults::rate_500`]): `500 Internal Server Error`, before any effect: the
///    call changes nothing.
/// 4. Otherwise the call takes effect (or replays a stored answer for a repeated
///    `Idempotency-Key`). Then, for calls that succeeded:
///    - **slow** ([`Faults::rate_slow`]): the mock sleeps [`Faults::slow_ms`] before
///      answering. This is the nasty realistic case: the client times out and retries, but
///      the effect already happened.
///    - **malformed** ([`Faults::rate_malformed`]): the answer has status 200 but a
///      truncated, invalid JSON body (a truncated file for downloads). The effect happened.
///
/// Both post-effect faults can hit the same call. Error answers carry the Qualtrics error
/// envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Probability of a 429 with `Retry-After`.
    pub rate_429: f64,
    /// The `Retry-After` of a 429, in seconds.
    pub retry_after_seconds: u64,
    /// Probability of a 500.
    pub rate_500: f64,
    /// Probability that a successful call answers only after [`Faults::slow_ms`].
    pub rate_slow: f64,
    /// The delay of a slow answer, in milliseconds. The default, 31 s, is just beyond the
    /// client's default timeout of 30 s.
    pub slow_ms: u64,
    /// Probability that a successful call answers with a truncated JSON body.
    pub rate_malformed: f64,
    /// The seed of the random draws.
    pub seed: u64,
    /// Strings that make any API call whose body contains one of them fail with a 500.
    pub poison: Vec<String>,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            rate_429: 0.0,
            retry_after_seconds: 1,
            rate_500: 0.0,
            rate_slow: 0.0,
            slow_ms: 31_000,
            rate_malformed: 0.0,
            seed: 0,
            poison: Vec::new(),
        }
    }
}

impl Faults {
    /// Checks the configuration: every rate is a number from 0 to 1, and no poison string
    /// is empty (it would match every call). The error names the field.
    pub fn validate(&self) -> Result<(), String> {
        let rates = [
            ("rate_429", self.rate_429),
            ("rate_500", self.rate_500),
            ("rate_slow", self.rate_slow),
            ("rate_malformed", self.rate_malformed),
        ];
        for (name, rate) in rates {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!(
                    "{name} must be a probability from 0.0 to 1.0 (inclusive), got {rate}"
                ));
            }
        }
        if self.poison.iter().any(String::is_empty) {
            return Err(
                "poison strings must not be empty (an empty one matches every call)".into(),
            );
        }
        Ok(())
    }
}

/// A kind of injected fault, as counted in [`super::Stats::faults`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum FaultKind {
    /// A 429 with `Retry-After`, before any effect.
    #[serde(rename = "429")]
    TooManyRequests,
    /// A 500, before any effect.
    #[serde(rename = "500")]
    ServerError,
    /// A 500 because the body contains a poison string, before any effect.
    #[serde(rename = "poison")]
    Poison,
    /// A delayed answer, after the effect.
    #[serde(rename = "slow")]
    Slow,
    /// A truncated body with status 200, after the effect.
    #[serde(rename = "malformed")]
    Malformed,
}

impl FaultKind {
    /// The name used in stats and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TooManyRequests => "429",
            Self::ServerError => "500",
            Self::Poison => "poison",
            Self::Slow => "slow",
            Self::Malformed => "malformed",
        }
    }
}

/// The faults drawn for one call.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Draw {
    /// A fault that stops the call before any effect.
    pub before: Option<FaultKind>,
    /// Answer late (if the call succeeds).
    pub slow: bool,
    /// Answer with a truncated body (if the call succeeds).
    pub malformed: bool,
}

/// Draws the faults of one call. Four numbers are drawn for every call, whatever the
/// outcome, so the sequence of outcomes only depends on the seed and the call order.
pub(super) fn draw(faults: &Faults, rng: &mut fastrand::Rng, body: &[u8]) -> Draw {
    let (r429, r500, rslow, rmalformed) = (rng.f64(), rng.f64(), rng.f64(), rng.f64());
    let poisoned = faults.poison.iter().any(|p| contains(body, p.as_bytes()));
    let before = if poisoned {
        Some(FaultKind::Poison)
    } else if r429 < faults.rate_429 {
        Some(FaultKind::TooManyRequests)
    } else if r500 < faults.rate_500 {
        Some(FaultKind::ServerError)
    } else {
        None
    };
    Draw {
        before,
        slow: rslow < faults.rate_slow,
        malformed: rmalformed < faults.rate_malformed,
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_outside_zero_to_one_are_rejected_by_name() {
        let faults = Faults {
            rate_slow: -0.1,
            ..Faults::default()
        };
        let err = faults.validate().unwrap_err();
        assert!(err.starts_with("rate_slow must be"), "{err}");
        let nan = Faults {
            rate_malformed: f64::NAN,
            ..Faults::default()
        };
        assert!(nan.validate().unwrap_err().contains("rate_malformed"));
        assert!(Faults::default().validate().is_ok());
    }

    #[test]
    fn draws_follow_the_seed_and_poison_always_wins() {
        let faults = Faults {
            rate_500: 0.5,
            seed: 7,
            poison: vec!["boom".into()],
            ..Faults::default()
        };
        let run = |body: &[u8]| {
            let mut rng = fastrand::Rng::with_seed(faults.seed);
            (0..20)
                .map(|_| draw(&faults, &mut rng, body).before)
                .collect::<Vec<_>>()
        };
        assert_eq!(run(b"x"), run(b"x"));
        assert!(run(b"x").contains(&Some(FaultKind::ServerError)));
        assert!(run(b"x").contains(&None));
        assert!(
            run(b"a boom b")
                .iter()
                .all(|d| *d == Some(FaultKind::Poison))
        );
    }
}
