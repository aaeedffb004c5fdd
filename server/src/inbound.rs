//! The message an app callback is handling on this thread, so that a reply
//! made of (part of) it shares the received buffer instead of copying it.
//!
//! Inbound messages cross the ABI as borrowed slices of the connection's own
//! `Bytes`. When the app passes such a slice back to `Host::send` (or
//! `broadcast`, `publish`) during the same callback, as an echo or a relay
//! does, the host recognises the pointer range and takes a reference-counted
//! slice of the buffer. Anything else is copied, as before.

use std::cell::RefCell;

use bytes::Bytes;

thread_local! {
    static CURRENT: RefCell<Option<Bytes>> = const { RefCell::new(None) };
}

/// Runs `f` with `payload` as this thread's current inbound message.
pub fn with_current<T>(payload: &Bytes, f: impl FnOnce() -> T) -> T {
    let previous = CURRENT.with(|current| current.replace(Some(payload.clone())));
    let result = f();
    CURRENT.with(|current| *current.borrow_mut() = previous);
    result
}

/// A shared slice of the current inbound message if `part` lies inside it.
pub fn share(part: &[u8]) -> Option<Bytes> {
    if part.is_empty() {
        return None;
    }
    CURRENT.with(|current| {
        let current = current.borrow();
        let whole = current.as_ref()?;
        let (start, end) = (
            whole.as_ptr() as usize,
            whole.as_ptr() as usize + whole.len(),
        );
        let (part_start, part_end) = (part.as_ptr() as usize, part.as_ptr() as usize + part.len());
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
        with_current(&payload, || {
            let shared = share(&payload[6..]).expect("inside");
            assert_eq!(&shared[..], b"world");
            assert_eq!(shared.as_ptr(), payload[6..].as_ptr(), "no copy");
            assert!(share(&other).is_none());
        });
        assert!(
            share(&payload).is_none(),
            "outside the callback nothing is current"
        );
    }
}
