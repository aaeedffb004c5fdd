//! The outbound side of one connection: a queue bounded in messages and in
//! bytes, plus a close request, shared between everyone who sends to the
//! connection (plugin threads, broadcasts, the push API) and the connection task
//! that writes to the socket.
//!
//! Senders never wait: a full queue means the client does not read fast enough,
//! so the message is refused and the connection is closed (slow consumer). A
//! close request travels beside the queue, so it gets through even when the
//! queue is full, and the connection task writes what was queued before it first.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, Notify};
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
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    queued_bytes: AtomicUsize,
    max_bytes: usize,
    close: Mutex<Option<CloseRequest>>,
    wake: Notify,
}

/// The receiving half, owned by the connection task.
#[derive(Debug)]
pub struct OutboxReceiver {
    queue: mpsc::Receiver<Message>,
    shared: Arc<Shared>,
}

/// Where the connection task learns that a close was requested.
#[derive(Debug)]
pub struct CloseSignal {
    shared: Arc<Shared>,
}

impl CloseSignal {
    /// Resolves when a close has been requested (cancel-safe: a request made
    /// while nobody waits is kept).
    pub async fn requested(&self) {
        self.shared.wake.notified().await;
    }

    /// Takes the pending close request, if any.
    pub fn take(&self) -> Option<CloseRequest> {
        self.shared
            .close
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }
}

/// A new outbox holding at most `max_messages` messages and `max_bytes` bytes
/// (a single message larger than `max_bytes` is still accepted into an empty queue).
pub fn outbox(max_messages: usize, max_bytes: usize) -> (Outbox, OutboxReceiver) {
    let (tx, rx) = mpsc::channel(max_messages);
    let shared = Arc::new(Shared {
        queued_bytes: AtomicUsize::new(0),
        max_bytes,
        close: Mutex::new(None),
        wake: Notify::new(),
    });
    (
        Outbox {
            queue: tx,
            shared: shared.clone(),
        },
        OutboxReceiver { queue: rx, shared },
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
        let before = self.shared.queued_bytes.fetch_add(len, Ordering::Relaxed);
        if before > 0 && before + len > self.shared.max_bytes {
            self.shared.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            self.overflowed();
            return Err(QueueError::Full);
        }
        match self.queue.try_send(message) {
            Ok(()) => Ok(()),
            Err(error) => {
                self.shared.queued_bytes.fetch_sub(len, Ordering::Relaxed);
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
        let mut close = self.shared.close.lock().unwrap_or_else(|e| e.into_inner());
        if close.is_none() {
            *close = Some(request);
            drop(close);
            self.shared.wake.notify_one();
        }
    }

    /// Whether the connection task is gone.
    pub fn is_closed(&self) -> bool {
        self.queue.is_closed()
    }
}

impl OutboxReceiver {
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
        self.shared
            .queued_bytes
            .fetch_sub(payload_len(message), Ordering::Relaxed);
    }

    /// The close-request side, usable while the queue is being received from.
    pub fn close_signal(&self) -> CloseSignal {
        CloseSignal {
            shared: self.shared.clone(),
        }
    }

    /// Takes the pending close request, if any.
    pub fn take_close(&self) -> Option<CloseRequest> {
        self.close_signal().take()
    }

    /// Refuses further messages; already queued ones can still be received.
    pub fn close(&mut self) {
        self.queue.close();
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
        assert_eq!(rx.take_close().map(|c| c.code), Some(SLOW_CONSUMER_CODE));
        assert_eq!(rx.recv().await, Some(Message::text("a")));
    }

    #[tokio::test]
    async fn overflow_in_bytes_refuses_but_one_large_message_fits_an_empty_queue() {
        let (tx, mut rx) = outbox(100, 10);
        tx.push(Message::binary(vec![0; 50])).unwrap();
        assert_eq!(tx.push(Message::binary(vec![0; 1])), Err(QueueError::Full));
        assert_eq!(rx.try_recv().map(|m| m.len()), Some(50));
        assert!(rx.take_close().is_some());
    }

    #[tokio::test]
    async fn first_close_request_wins_and_wakes_the_task() {
        let (tx, rx) = outbox(4, 100);
        tx.request_close(CloseRequest {
            code: 1000,
            reason: "bye".into(),
        });
        tx.request_close(CloseRequest {
            code: 1011,
            reason: "later".into(),
        });
        rx.close_signal().requested().await;
        assert_eq!(rx.take_close().map(|c| c.code), Some(1000));
    }

    #[tokio::test]
    async fn sending_to_a_gone_task_is_closed() {
        let (tx, rx) = outbox(4, 100);
        drop(rx);
        assert_eq!(tx.push(Message::text("x")), Err(QueueError::Closed));
        assert!(tx.is_closed());
    }
}
