//! [`Shared`]: an app's state shared by its callbacks and threads, behind a
//! lock that a panic does not poison.
//!
//! With a plain `std::sync::Mutex`, a panic in a callback while the lock is
//! held poisons it; from then on every `lock().unwrap()` panics too, so every
//! new connection fails (1011) although the server itself is fine. `Shared`
//! recovers the lock instead: the state stays usable after a panic.

use std::sync::{Mutex, MutexGuard};

/// State shared by an app's callbacks (and its own threads).
///
/// A panic while the state is locked does not poison it: the next
/// [`lock`](Shared::lock) gets the state as the panicking code left it. Keep
/// each update short and make every step leave the state valid (insert into
/// two maps, then send; not send between the two inserts), so that a panic
/// half-way leaves nothing inconsistent behind.
///
/// Do not block while holding it, and never call it again from inside
/// [`with`](Shared::with) (that deadlocks, as with any mutex).
#[derive(Debug, Default)]
pub struct Shared<T> {
    inner: Mutex<T>,
}

impl<T> Shared<T> {
    /// Wraps the initial state.
    pub fn new(value: T) -> Self {
        Shared {
            inner: Mutex::new(value),
        }
    }

    /// Locks the state until the guard is dropped.
    pub fn lock(&self) -> MutexGuard<'_, T> {
        self.inner.lock().unwrap_or_else(|poisoned| {
            self.inner.clear_poison();
            poisoned.into_inner()
        })
    }

    /// Runs `f` with the state locked and returns what it returns.
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        f(&mut self.lock())
    }

    /// The state, once nobody else can reach it.
    pub fn into_inner(self) -> T {
        self.inner
            .into_inner()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_while_locked_does_not_poison_the_state() {
        let shared = std::sync::Arc::new(Shared::new(vec![1]));
        let clone = shared.clone();
        let result = std::thread::spawn(move || {
            clone.with(|v| {
                v.push(2);
                panic!("in the middle of an update");
            })
        })
        .join();
        assert!(result.is_err());
        shared.with(|v| v.push(3));
        assert_eq!(*shared.lock(), vec![1, 2, 3]);
    }
}
