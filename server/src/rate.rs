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

/// One token bucket: up to `rate` tokens, refilled at `rate` per second.
#[derive(Debug)]
struct Bucket {
    rate: u64,
    /// Tokens × 1000, so a millisecond's refill is exact.
    milli_tokens: u64,
}

impl Bucket {
    fn new(rate: u64) -> Self {
        Bucket {
            rate,
            milli_tokens: rate.saturating_mul(1000),
        }
    }

    fn refill(&mut self, elapsed_ms: u64) {
        let full = self.rate.saturating_mul(1000);
        self.milli_tokens = self
            .milli_tokens
            .saturating_add(elapsed_ms.saturating_mul(self.rate))
            .min(full);
    }

    /// Takes `amount` tokens if the bucket holds them (an amount larger than
    /// the whole bucket passes when the bucket is full, so one large message
    /// within the size limit is never refused on its own).
    fn take(&mut self, amount: u64) -> bool {
        let need = amount.saturating_mul(1000);
        let full = self.rate.saturating_mul(1000);
        if need <= self.milli_tokens || self.milli_tokens == full {
            self.milli_tokens = self.milli_tokens.saturating_sub(need);
            true
        } else {
            false
        }
    }
}

/// The limits of one connection, as it spends them.
#[derive(Debug)]
pub struct RateLimiter {
    messages: Option<Bucket>,
    bytes: Option<Bucket>,
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
        Some(RateLimiter {
            messages: (limits.messages > 0).then(|| Bucket::new(limits.messages)),
            bytes: (limits.bytes > 0).then(|| Bucket::new(limits.bytes)),
            last_ms: coarse_clock::now_ms(),
        })
    }

    /// Spends one message of `len` bytes.
    ///
    /// # Errors
    /// The limit it goes over.
    pub fn spend(&mut self, len: usize) -> Result<(), RateExceeded> {
        self.spend_at(coarse_clock::now_ms(), len)
    }

    fn spend_at(&mut self, now_ms: u64, len: usize) -> Result<(), RateExceeded> {
        let elapsed = now_ms.saturating_sub(self.last_ms);
        self.last_ms = now_ms;
        if let Some(messages) = &mut self.messages {
            messages.refill(elapsed);
            if !messages.take(1) {
                return Err(RateExceeded::Messages(messages.rate));
            }
        }
        if let Some(bytes) = &mut self.bytes {
            bytes.refill(elapsed);
            if !bytes.take(len as u64) {
                return Err(RateExceeded::Bytes(bytes.rate));
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
        let mut limiter = RateLimiter::new(RateLimits {
            messages: 10,
            bytes: 0,
        })
        .unwrap();
        limiter.last_ms = 0;
        for _ in 0..10 {
            assert_eq!(limiter.spend_at(0, 1), Ok(()));
        }
        assert_eq!(limiter.spend_at(0, 1), Err(RateExceeded::Messages(10)));
        // 100 ms later: one more message's worth.
        assert_eq!(limiter.spend_at(100, 1), Ok(()));
        assert!(limiter.spend_at(100, 1).is_err());
    }

    #[test]
    fn bytes_are_limited_too_and_nothing_limited_means_no_limiter() {
        let mut limiter = RateLimiter::new(RateLimits {
            messages: 0,
            bytes: 1000,
        })
        .unwrap();
        limiter.last_ms = 0;
        assert_eq!(limiter.spend_at(0, 600), Ok(()));
        assert_eq!(limiter.spend_at(0, 600), Err(RateExceeded::Bytes(1000)));
        assert_eq!(
            limiter.spend_at(1000, 5000),
            Ok(()),
            "a full bucket lets one big message by"
        );
        assert!(RateLimiter::new(RateLimits::default()).is_none());
    }
}
