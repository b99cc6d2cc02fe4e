//! Restart delays: exponential, capped, jittered. Pure; the random source is injected.

use std::time::Duration;

use crate::config::BackoffPolicy;

/// Delay before restart number `attempt` (0 = the first restart of a streak).
///
/// `unit_random` must return a value in `[0, 1)`; it scales the delay by a
/// factor in `[1 - jitter, 1 + jitter]`. The result never exceeds `policy.max`.
pub fn delay(policy: &BackoffPolicy, attempt: u32, unit_random: f64) -> Duration {
    let base = policy.initial.as_secs_f64() * policy.multiplier.powi(attempt.min(1000) as i32);
    let factor = 1.0 + policy.jitter * (2.0 * unit_random - 1.0);
    let secs = (base * factor).clamp(0.0, policy.max.as_secs_f64());
    if secs.is_finite() {
        Duration::from_secs_f64(secs)
    } else {
        policy.max
    }
}

/// A small, fast, non-cryptographic random source (splitmix64) for jitter.
#[derive(Debug, Clone)]
pub struct Jitter(u64);

impl Jitter {
    pub fn seeded(seed: u64) -> Jitter {
        Jitter(seed)
    }

    /// Seeded from the clock and the pid: different across programs and runs.
    pub fn from_entropy(salt: &str) -> Jitter {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let mut h = now ^ (u64::from(std::process::id()) << 32);
        for b in salt.bytes() {
            h = h.rotate_left(5) ^ u64::from(b);
        }
        Jitter(h)
    }

    /// A value in `[0, 1)`.
    pub fn next_unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(jitter: f64) -> BackoffPolicy {
        BackoffPolicy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            multiplier: 2.0,
            jitter,
        }
    }

    #[test]
    fn grows_exponentially_and_caps() {
        let p = policy(0.0);
        let secs: Vec<u64> = (0..9).map(|a| delay(&p, a, 0.5).as_secs()).collect();
        assert_eq!(secs, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(delay(&p, u32::MAX, 0.5), Duration::from_secs(60));
    }

    #[test]
    fn jitter_stays_in_band() {
        let p = policy(0.2);
        assert_eq!(delay(&p, 2, 0.0), Duration::from_secs_f64(3.2));
        assert_eq!(delay(&p, 2, 0.5), Duration::from_secs(4));
        assert!(delay(&p, 2, 0.999_999) <= Duration::from_secs_f64(4.8));
        let mut rng = Jitter::seeded(7);
        for _ in 0..1000 {
            let d = delay(&p, 3, rng.next_unit()).as_secs_f64();
            assert!((6.4..=9.6).contains(&d), "{d}");
        }
    }

    #[test]
    fn zero_initial_means_immediate() {
        let mut p = policy(0.2);
        p.initial = Duration::ZERO;
        assert_eq!(delay(&p, 5, 0.9), Duration::ZERO);
    }

    #[test]
    fn unit_random_is_in_range() {
        let mut rng = Jitter::seeded(1);
        for _ in 0..10_000 {
            let u = rng.next_unit();
            assert!((0.0..1.0).contains(&u));
        }
    }
}
