//! Connection limits: how many TCP connections (HTTP and WebSocket alike) may
//! be open at once, in total and from one IP address. A slot is taken at accept
//! and given back when the connection (or the WebSocket it became) ends.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Which limit refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LimitExceeded {
    /// `max_connections` are open.
    #[error("the server is at its connection limit")]
    Total,
    /// `max_connections_per_ip` are open from this address.
    #[error("too many connections from this address")]
    PerIp,
}

/// The counters behind the limits.
#[derive(Debug)]
pub struct ConnectionLimits {
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    max_total: usize,
    max_per_ip: usize,
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// One open connection's place under the limits; given back on drop.
#[derive(Debug)]
pub struct ConnectionSlot {
    limits: Arc<ConnectionLimits>,
    /// Counted in the total.
    total: bool,
    /// Counted for this address.
    ip: Option<IpAddr>,
}

impl LimitExceeded {
    /// A short label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            LimitExceeded::Total => "limit_total",
            LimitExceeded::PerIp => "limit_per_ip",
        }
    }
}

impl ConnectionLimits {
    /// Limits of `max_total` connections and `max_per_ip` per address (0 = no per-address limit).
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<Self> {
        Arc::new(ConnectionLimits {
            counts: Mutex::new(Counts {
                max_total,
                max_per_ip,
                ..Counts::default()
            }),
        })
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a slot for a connection from `ip`.
    ///
    /// # Errors
    /// Which limit is reached.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionSlot, LimitExceeded> {
        let mut counts = self.counts();
        if counts.total >= counts.max_total {
            return Err(LimitExceeded::Total);
        }
        let max_per_ip = counts.max_per_ip;
        let from_ip = counts.per_ip.entry(ip).or_default();
        if max_per_ip > 0 && *from_ip >= max_per_ip {
            return Err(LimitExceeded::PerIp);
        }
        *from_ip += 1;
        counts.total += 1;
        Ok(ConnectionSlot {
            limits: self.clone(),
            total: true,
            ip: Some(ip),
        })
    }

    /// Takes a slot in the total only: for a connection from a trusted
    /// proxy, whose clients are counted by their own address once a request
    /// says who they are ([`ConnectionLimits::acquire_for_address`]).
    ///
    /// # Errors
    /// The total limit is reached.
    pub fn acquire_total(self: &Arc<Self>) -> Result<ConnectionSlot, LimitExceeded> {
        let mut counts = self.counts();
        if counts.total >= counts.max_total {
            return Err(LimitExceeded::Total);
        }
        counts.total += 1;
        Ok(ConnectionSlot {
            limits: self.clone(),
            total: true,
            ip: None,
        })
    }

    /// Takes a slot for the address a proxy reported, for a connection that
    /// holds a place in the total already.
    ///
    /// # Errors
    /// The per-address limit is reached.
    pub fn acquire_for_address(
        self: &Arc<Self>,
        ip: IpAddr,
    ) -> Result<ConnectionSlot, LimitExceeded> {
        let mut counts = self.counts();
        let max_per_ip = counts.max_per_ip;
        let from_ip = counts.per_ip.entry(ip).or_default();
        if max_per_ip > 0 && *from_ip >= max_per_ip {
            return Err(LimitExceeded::PerIp);
        }
        *from_ip += 1;
        Ok(ConnectionSlot {
            limits: self.clone(),
            total: false,
            ip: Some(ip),
        })
    }

    /// Changes the limits (a reload); connections already open stay.
    pub fn set(&self, max_total: usize, max_per_ip: usize) {
        let mut counts = self.counts();
        counts.max_total = max_total;
        counts.max_per_ip = max_per_ip;
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.counts().total
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut counts = self.limits.counts();
        if self.total {
            counts.total -= 1;
        }
        if let Some(ip) = self.ip {
            if let Some(n) = counts.per_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    counts.per_ip.remove(&ip);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_counted_per_ip_and_in_total_and_given_back() {
        let limits = ConnectionLimits::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let s1 = limits.acquire(a).unwrap();
        let _s2 = limits.acquire(a).unwrap();
        assert_eq!(limits.acquire(a).unwrap_err(), LimitExceeded::PerIp);
        let _s3 = limits.acquire(b).unwrap();
        assert_eq!(limits.acquire(b).unwrap_err(), LimitExceeded::Total);
        drop(s1);
        assert_eq!(limits.open(), 2);
        assert!(limits.acquire(a).is_ok());
    }
}

/// Lets a repeated log line through at most once per interval, counting the
/// ones held back, so a flood of refusals costs one line a second, not one
/// per socket.
#[derive(Debug)]
pub struct LogLimiter {
    interval_ms: u64,
    started: std::time::Instant,
    /// Milliseconds since `started` of the last line let through, plus one (0: none yet).
    last: std::sync::atomic::AtomicU64,
    held_back: std::sync::atomic::AtomicU64,
}

impl LogLimiter {
    /// At most one line per `interval`.
    pub fn new(interval: std::time::Duration) -> Self {
        LogLimiter {
            interval_ms: u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
            started: std::time::Instant::now(),
            last: std::sync::atomic::AtomicU64::new(0),
            held_back: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// `Some(lines held back since the last one)` when this line may be
    /// logged, `None` when it is held back.
    pub fn allow(&self) -> Option<u64> {
        use std::sync::atomic::Ordering;
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX) + 1;
        let last = self.last.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < self.interval_ms {
            self.held_back.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        if self
            .last
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            self.held_back.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.held_back.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod log_limiter_tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count_held_back() {
        let limiter = LogLimiter::new(std::time::Duration::from_millis(200));
        assert_eq!(limiter.allow(), Some(0));
        for _ in 0..5 {
            assert_eq!(limiter.allow(), None);
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
        assert_eq!(limiter.allow(), Some(5));
    }
}
