//! Per-connection rate limits on what a client sends: messages per second and
//! bytes per second, each a token bucket that holds one second's worth (the
//! burst). A client over either limit is closed with 1008 and a reason that
//! names it. Time comes from the coarse clock, so a message costs a load and
//! a little arithmetic.

use crate::coarse_clock;

/// Messages and bytes per second a client may send (0: no limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RateLimits {
    /// Messages per second.
    pub messages: u64,
    /// Payload bytes per second.
    pub bytes: u64,
}

/// One token bucket's content: tokens × 1000, so a millisecond's refill is
/// exact. Its rate is the app's (passed in at each spend), so a connection
/// carries only what it has spent.
fn refill(milli_tokens: &mut u64, rate: u64, elapsed_ms: u64) {
    let full = rate.saturating_mul(1000);
    *milli_tokens = milli_tokens
        .saturating_add(elapsed_ms.saturating_mul(rate))
        .min(full);
}

/// Takes `amount` tokens if the bucket holds them (an amount larger than the
/// whole bucket passes when the bucket is full, so one large message within
/// the size limit is never refused on its own).
fn take(milli_tokens: &mut u64, rate: u64, amount: u64) -> bool {
    let need = amount.saturating_mul(1000);
    let full = rate.saturating_mul(1000);
    if need <= *milli_tokens || *milli_tokens == full {
        *milli_tokens = milli_tokens.saturating_sub(need);
        true
    } else {
        false
    }
}

/// The limits of one connection, as it spends them.
#[derive(Debug)]
pub struct RateLimiter {
    messages: u64,
    bytes: u64,
    last_ms: u64,
}

/// Which limit a client went over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RateExceeded {
    /// Too many messages.
    #[error("over the message rate limit ({0} per second)")]
    Messages(u64),
    /// Too many bytes.
    #[error("over the byte rate limit ({0} bytes per second)")]
    Bytes(u64),
}

impl RateLimiter {
    /// A limiter with full buckets; `None` when nothing is limited.
    pub fn new(limits: RateLimits) -> Option<Self> {
        if limits.messages == 0 && limits.bytes == 0 {
            return None;
        }
        // Full whatever the rates are (the first refill caps them to a
        // second's worth), also for a limit a reload turns on later.
        Some(RateLimiter {
            messages: u64::MAX,
            bytes: u64::MAX,
            last_ms: coarse_clock::now_ms(),
        })
    }

    /// Spends one message of `len` bytes under `limits` (the app's, which a
    /// reload may change: the buckets then refill up to the new rates).
    ///
    /// # Errors
    /// The limit it goes over.
    pub fn spend(&mut self, limits: RateLimits, len: usize) -> Result<(), RateExceeded> {
        self.spend_at(limits, coarse_clock::now_ms(), len)
    }

    fn spend_at(
        &mut self,
        limits: RateLimits,
        now_ms: u64,
        len: usize,
    ) -> Result<(), RateExceeded> {
        let elapsed = now_ms.saturating_sub(self.last_ms);
        self.last_ms = now_ms;
        if limits.messages > 0 {
            refill(&mut self.messages, limits.messages, elapsed);
            if !take(&mut self.messages, limits.messages, 1) {
                return Err(RateExceeded::Messages(limits.messages));
            }
        }
        if limits.bytes > 0 {
            refill(&mut self.bytes, limits.bytes, elapsed);
            if !take(&mut self.bytes, limits.bytes, len as u64) {
                return Err(RateExceeded::Bytes(limits.bytes));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_of_burst_then_the_rate() {
        let limits = RateLimits {
            messages: 10,
            bytes: 0,
        };
        let mut limiter = RateLimiter::new(limits).unwrap();
        limiter.last_ms = 0;
        for _ in 0..10 {
            assert_eq!(limiter.spend_at(limits, 0, 1), Ok(()));
        }
        assert_eq!(
            limiter.spend_at(limits, 0, 1),
            Err(RateExceeded::Messages(10))
        );
        // 100 ms later: one more message's worth.
        assert_eq!(limiter.spend_at(limits, 100, 1), Ok(()));
        assert!(limiter.spend_at(limits, 100, 1).is_err());
    }

    #[test]
    fn bytes_are_limited_too_and_nothing_limited_means_no_limiter() {
        let limits = RateLimits {
            messages: 0,
            bytes: 1000,
        };
        let mut limiter = RateLimiter::new(limits).unwrap();
        limiter.last_ms = 0;
        assert_eq!(limiter.spend_at(limits, 0, 600), Ok(()));
        assert_eq!(
            limiter.spend_at(limits, 0, 600),
            Err(RateExceeded::Bytes(1000))
        );
        assert_eq!(
            limiter.spend_at(limits, 1000, 5000),
            Ok(()),
            "a full bucket lets one big message by"
        );
        assert!(RateLimiter::new(RateLimits::default()).is_none());
    }
}
