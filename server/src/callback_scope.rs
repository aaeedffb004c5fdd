//! "Inside a callback of connection X, handling message M": the one piece of
//! thread-local state the server keeps, set by the connection task around each
//! app callback and read by the host while the app calls it.
//!
//! Two things depend on it:
//! - a message queued for the connection whose callback is running wakes
//!   nobody ([`is_inside`]): the task looks at its queue right after the
//!   callback returns, and waking the running task would only poll it again;
//! - a reply made of (part of) the message being handled shares the received
//!   buffer instead of copying it ([`share_inbound`]): inbound messages cross
//!   the ABI as borrowed slices of the connection's own `Bytes`, so when the
//!   app hands such a slice back to `send`, `broadcast` or `publish`, the host
//!   recognises the pointer range and takes a reference-counted slice.

use std::cell::RefCell;

use bytes::Bytes;

/// Identifies the connection whose callback runs: the address of its outbox's
/// shared state, unique while the connection lives.
pub type ScopeId = usize;

#[derive(Default)]
struct Current {
    connection: Option<ScopeId>,
    inbound: Option<Bytes>,
}

thread_local! {
    static CURRENT: RefCell<Current> = RefCell::new(Current::default());
}

/// Runs `f`, a callback of connection `connection`, with `inbound` (if any)
/// as the message it handles. Scopes nest: the previous one is restored after.
pub fn enter<T>(connection: ScopeId, inbound: Option<&Bytes>, f: impl FnOnce() -> T) -> T {
    let previous = CURRENT.with(|current| {
        std::mem::replace(
            &mut *current.borrow_mut(),
            Current {
                connection: Some(connection),
                inbound: inbound.cloned(),
            },
        )
    });
    // Restored on unwind too (the SDK catches plugin panics, but a panic in
    // the server's own code must not leave a stale scope behind).
    struct Restore(Option<Current>);
    impl Drop for Restore {
        fn drop(&mut self) {
            if let Some(previous) = self.0.take() {
                CURRENT.with(|current| *current.borrow_mut() = previous);
            }
        }
    }
    let _restore = Restore(Some(previous));
    f()
}

/// Whether a callback of `connection` is running on this thread.
pub fn is_inside(connection: ScopeId) -> bool {
    CURRENT.with(|current| current.borrow().connection == Some(connection))
}

/// A shared slice of the message being handled if `part` lies inside it.
pub fn share_inbound(part: &[u8]) -> Option<Bytes> {
    if part.is_empty() {
        return None;
    }
    CURRENT.with(|current| {
        let current = current.borrow();
        let whole = current.inbound.as_ref()?;
        let start = whole.as_ptr() as usize;
        let end = start + whole.len();
        let part_start = part.as_ptr() as usize;
        let part_end = part_start + part.len();
        (part_start >= start && part_end <= end).then(|| whole.slice_ref(part))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_of_the_current_message_are_shared_and_others_are_not() {
        let payload = Bytes::from(b"hello world".to_vec());
        let other = b"hello world".to_vec();
        enter(7, Some(&payload), || {
            assert!(is_inside(7));
            assert!(!is_inside(8));
            let shared = share_inbound(&payload[6..]).expect("inside");
            assert_eq!(&shared[..], b"world");
            assert_eq!(shared.as_ptr(), payload[6..].as_ptr(), "no copy");
            assert!(share_inbound(&other).is_none());
        });
        assert!(!is_inside(7));
        assert!(
            share_inbound(&payload).is_none(),
            "outside the callback nothing is current"
        );
    }

    #[test]
    fn scopes_nest_and_are_restored() {
        enter(1, None, || {
            enter(2, None, || assert!(is_inside(2)));
            assert!(is_inside(1));
        });
        assert!(!is_inside(1));
    }
}
