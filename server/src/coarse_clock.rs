//! A clock that costs one atomic load to read: milliseconds since the server
//! started, advanced every few milliseconds by a thread of its own. It times
//! plugin callbacks on every message without two system-clock reads each, and
//! keeps ticking while a callback blocks a runtime worker (the thread is not
//! one of the runtime's).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How often the clock advances: its resolution.
pub const RESOLUTION: Duration = Duration::from_millis(5);

static NOW_MS: AtomicU64 = AtomicU64::new(0);
static STARTED: OnceLock<()> = OnceLock::new();

/// Milliseconds since the clock started (it starts on the first call).
pub fn now_ms() -> u64 {
    STARTED.get_or_init(|| {
        let origin = Instant::now();
        // A detached thread: it lives as long as the process.
        let _ = std::thread::Builder::new()
            .name("coarse-clock".into())
            .spawn(move || loop {
                std::thread::sleep(RESOLUTION);
                let elapsed = u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX);
                NOW_MS.store(elapsed, Ordering::Relaxed);
            });
    });
    NOW_MS.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_advances() {
        let start = now_ms();
        std::thread::sleep(Duration::from_millis(60));
        let later = now_ms();
        assert!(later >= start + 40, "{start} -> {later}");
    }
}
