//! The outbound side of one connection: a queue bounded in messages and in
//! bytes, plus a close request, shared between everyone who sends to the
//! connection (plugin threads, broadcasts, the push API, shutdown) and the
//! connection task that writes to the socket.
//!
//! Senders never wait: a full queue means the client does not read fast enough,
//! so the message is refused and the connection is closed (slow consumer). A
//! close request travels in its own slot beside the queue, so it gets through
//! even when the queue is full; the connection task writes what was queued
//! before it first.
//!
//! The connection task polls both on every turn of its loop, so neither takes a
//! lock there: the queue is a tokio channel and the close slot an atomic flag
//! with an `AtomicWaker` (`tokio::sync::Notify` would lock its waiter list on
//! every poll, and a one-slot tokio channel allocates a 32-slot block).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;

use futures_util::task::AtomicWaker;

use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// Close code sent to a client whose outbound queue overflowed.
pub const SLOW_CONSUMER_CODE: u16 = 1008;

/// Why a message could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// The connection task is gone.
    #[error("connection is closed")]
    Closed,
    /// The queue is full; the connection is being closed.
    #[error(
        "outbound queue is full (the client reads too slowly); the connection is being closed"
    )]
    Full,
}

/// A close the connection task should perform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseRequest {
    /// The close code to send.
    pub code: u16,
    /// The reason to send (at most 123 bytes).
    pub reason: String,
}

/// The sending half, shared by everyone who sends to the connection.
#[derive(Debug)]
pub struct Outbox {
    queue: mpsc::Sender<Message>,
    close: Arc<CloseSlot>,
    queued_bytes: Arc<AtomicUsize>,
    max_bytes: usize,
}

/// Holds the first close request and wakes the connection task.
#[derive(Debug, Default)]
struct CloseSlot {
    requested: AtomicBool,
    request: Mutex<Option<CloseRequest>>,
    waker: AtomicWaker,
}

/// The receiving half, owned by the connection task: two fields, so a
/// `select!` can wait on both at once.
#[derive(Debug)]
pub struct OutboxReceiver {
    /// Queued messages.
    pub messages: QueuedMessages,
    /// Close requests (the first one wins).
    pub close_requests: CloseRequests,
}

/// Where the connection task receives the close request.
#[derive(Debug)]
pub struct CloseRequests {
    slot: Arc<CloseSlot>,
    taken: bool,
}

impl CloseRequests {
    /// The close request, once one is made (cancel-safe); never resolves after
    /// it was taken or after `close`.
    pub async fn recv(&mut self) -> CloseRequest {
        std::future::poll_fn(|cx| {
            if self.taken {
                return Poll::Pending;
            }
            self.slot.waker.register(cx.waker());
            if !self.slot.requested.load(Ordering::Acquire) {
                return Poll::Pending;
            }
            self.taken = true;
            let request = self
                .slot
                .request
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            Poll::Ready(request.expect("a request is stored before the flag is set"))
        })
        .await
    }

    /// The close request if one was made and not yet taken.
    pub fn try_recv(&mut self) -> Option<CloseRequest> {
        if self.taken || !self.slot.requested.load(Ordering::Acquire) {
            return None;
        }
        self.taken = true;
        self.slot
            .request
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }
}

/// The queued messages of one connection.
#[derive(Debug)]
pub struct QueuedMessages {
    queue: mpsc::Receiver<Message>,
    queued_bytes: Arc<AtomicUsize>,
}

/// A new outbox holding at most `max_messages` messages and `max_bytes` bytes
/// (a single message larger than `max_bytes` is still accepted into an empty queue).
pub fn outbox(max_messages: usize, max_bytes: usize) -> (Outbox, OutboxReceiver) {
    let (queue_tx, queue_rx) = mpsc::channel(max_messages);
    let close = Arc::new(CloseSlot::default());
    let queued_bytes = Arc::new(AtomicUsize::new(0));
    (
        Outbox {
            queue: queue_tx,
            close: close.clone(),
            queued_bytes: queued_bytes.clone(),
            max_bytes,
        },
        OutboxReceiver {
            messages: QueuedMessages {
                queue: queue_rx,
                queued_bytes,
            },
            close_requests: CloseRequests {
                slot: close,
                taken: false,
            },
        },
    )
}

fn payload_len(message: &Message) -> usize {
    match message {
        Message::Text(text) => text.len(),
        Message::Binary(bytes) => bytes.len(),
        _ => 0,
    }
}

impl Outbox {
    /// Queues a message without waiting.
    ///
    /// # Errors
    /// [`QueueError::Full`] (and the connection is asked to close with 1008) or
    /// [`QueueError::Closed`].
    pub fn push(&self, message: Message) -> Result<(), QueueError> {
        let len = payload_len(&message);
        let before = self.queued_bytes.fetch_add(len, Ordering::Relaxed);
        if before > 0 && before + len > self.max_bytes {
            self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            self.overflowed();
            return Err(QueueError::Full);
        }
        match self.queue.try_send(message) {
            Ok(()) => Ok(()),
            Err(error) => {
                self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
                match error {
                    mpsc::error::TrySendError::Full(_) => {
                        self.overflowed();
                        Err(QueueError::Full)
                    }
                    mpsc::error::TrySendError::Closed(_) => Err(QueueError::Closed),
                }
            }
        }
    }

    fn overflowed(&self) {
        self.request_close(CloseRequest {
            code: SLOW_CONSUMER_CODE,
            reason: "outbound queue full: the client reads too slowly".to_owned(),
        });
    }

    /// Asks the connection task to close after writing what is already queued.
    /// The first request wins.
    pub fn request_close(&self, request: CloseRequest) {
        let mut stored = self.close.request.lock().unwrap_or_else(|e| e.into_inner());
        if self.close.requested.load(Ordering::Acquire) {
            return;
        }
        *stored = Some(request);
        self.close.requested.store(true, Ordering::Release);
        drop(stored);
        self.close.waker.wake();
    }

    /// Whether the connection task is gone.
    pub fn is_closed(&self) -> bool {
        self.queue.is_closed()
    }
}

impl QueuedMessages {
    /// The next queued message; `None` once every sender is gone.
    pub async fn recv(&mut self) -> Option<Message> {
        let message = self.queue.recv().await?;
        self.dequeued(&message);
        Some(message)
    }

    /// A queued message if one is ready now.
    pub fn try_recv(&mut self) -> Option<Message> {
        let message = self.queue.try_recv().ok()?;
        self.dequeued(&message);
        Some(message)
    }

    fn dequeued(&self, message: &Message) {
        self.queued_bytes
            .fetch_sub(payload_len(message), Ordering::Relaxed);
    }
}

impl OutboxReceiver {
    /// Refuses further messages and close requests (already queued messages can
    /// still be received).
    pub fn close(&mut self) {
        self.messages.queue.close();
        self.close_requests.taken = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn overflow_in_messages_refuses_and_requests_a_close() {
        let (tx, mut rx) = outbox(2, 1 << 20);
        tx.push(Message::text("a")).unwrap();
        tx.push(Message::text("b")).unwrap();
        assert_eq!(tx.push(Message::text("c")), Err(QueueError::Full));
        assert_eq!(
            rx.close_requests.try_recv().map(|c| c.code),
            Some(SLOW_CONSUMER_CODE)
        );
        assert_eq!(rx.messages.recv().await, Some(Message::text("a")));
    }

    #[tokio::test]
    async fn overflow_in_bytes_refuses_but_one_large_message_fits_an_empty_queue() {
        let (tx, mut rx) = outbox(100, 10);
        tx.push(Message::binary(vec![0; 50])).unwrap();
        assert_eq!(tx.push(Message::binary(vec![0; 1])), Err(QueueError::Full));
        assert_eq!(rx.messages.try_recv().map(|m| m.len()), Some(50));
        assert!(rx.close_requests.try_recv().is_some());
        tx.push(Message::binary(vec![0; 5])).unwrap();
    }

    #[tokio::test]
    async fn first_close_request_wins_and_wakes_the_task() {
        let (tx, mut rx) = outbox(4, 100);
        tx.request_close(CloseRequest {
            code: 1000,
            reason: "bye".into(),
        });
        tx.request_close(CloseRequest {
            code: 1011,
            reason: "later".into(),
        });
        assert_eq!(rx.close_requests.recv().await.code, 1000);
        assert!(rx.close_requests.try_recv().is_none());
    }

    #[tokio::test]
    async fn sending_to_a_gone_task_is_closed() {
        let (tx, rx) = outbox(4, 100);
        drop(rx);
        assert_eq!(tx.push(Message::text("x")), Err(QueueError::Closed));
        assert!(tx.is_closed());
    }
}
