//! "Inside a callback of connection X, handling message M": the one piece of
//! thread-local state the server keeps, set by the connection task around each
//! app callback and read by the host while the app calls it.
//!
//! Three things depend on it:
//! - a message queued for the connection whose callback is running wakes
//!   nobody ([`is_inside`]): the task looks at its queue right after the
//!   callback returns, and waking the running task would only poll it again;
//! - a reply made of (part of) the message being handled shares the received
//!   buffer instead of copying it ([`share_inbound`]): inbound messages cross
//!   the ABI as borrowed slices of the connection's own `Bytes`, so when the
//!   app hands such a slice back to `send`, `broadcast` or `publish`, the host
//!   recognises the pointer range and takes a reference-counted slice;
//! - what the app logs through the host carries the connection's id
//!   ([`current_conn`]), so log lines say which client they are about.

use std::cell::RefCell;

use bytes::Bytes;
use switchboard_plugin_api::ConnId;

/// Identifies the connection whose callback runs: the address of its outbox's
/// shared state, unique while the connection lives.
pub type ScopeId = usize;

#[derive(Default)]
struct Current {
    connection: Option<ScopeId>,
    conn: Option<ConnId>,
    inbound: Option<Bytes>,
}

thread_local! {
    static CURRENT: RefCell<Current> = RefCell::new(Current::default());
}

/// Runs `f`, a callback of connection `conn` (whose outbox is `connection`),
/// with `inbound` (if any) as the message it handles. Scopes nest: the
/// previous one is restored after.
pub fn enter<T>(
    connection: ScopeId,
    conn: ConnId,
    inbound: Option<&Bytes>,
    f: impl FnOnce() -> T,
) -> T {
    run_in(
        Current {
            connection: Some(connection),
            conn: Some(conn),
            inbound: inbound.cloned(),
        },
        f,
    )
}

/// Runs `f`, a callback about connection `conn` that is not one of its own
/// turns (`on_close`, `on_error`): only the logging knows it.
pub fn about<T>(conn: ConnId, f: impl FnOnce() -> T) -> T {
    run_in(
        Current {
            conn: Some(conn),
            ..Current::default()
        },
        f,
    )
}

fn run_in<T>(scope: Current, f: impl FnOnce() -> T) -> T {
    let previous = CURRENT.with(|current| std::mem::replace(&mut *current.borrow_mut(), scope));
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

/// The connection whose callback runs on this thread, if any.
pub fn current_conn() -> Option<ConnId> {
    CURRENT.with(|current| current.borrow().conn)
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
        enter(7, ConnId::from_bytes([7; 16]), Some(&payload), || {
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
        let (one, two) = (ConnId::from_bytes([1; 16]), ConnId::from_bytes([2; 16]));
        enter(1, one, None, || {
            enter(2, two, None, || assert!(is_inside(2)));
            assert!(is_inside(1));
            assert_eq!(current_conn(), Some(one));
            about(two, || {
                assert!(!is_inside(1), "on_close is not a turn of the connection");
                assert_eq!(current_conn(), Some(two));
            });
        });
        assert!(!is_inside(1));
        assert_eq!(current_conn(), None);
    }
}
