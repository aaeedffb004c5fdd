//! The outbound side of one connection: a queue bounded in messages and in
//! bytes, plus a close request, shared between everyone who sends to the
//! connection (plugin threads, broadcasts, the push API, shutdown) and the
//! connection task that writes to the socket.
//!
//! Senders never wait: a full queue means the client does not read fast enough,
//! so the message is refused and the connection is closed (slow consumer). A
//! close request gets through even when the queue is full, and the connection
//! task writes what was queued before it first.
//!
//! The keepalive (`keepalive.rs`) asks for pings through it too, so an idle
//! connection needs no timer of its own.
//!
//! The queue is a `VecDeque` under a mutex (held for a push or a pop, never
//! across an `.await`) with one `AtomicWaker`, measured cheaper per message
//! than a tokio channel (and it allocates nothing until a message is queued).
//! A message queued from inside the connection's own callback, as a reply is,
//! wakes nobody (see [`crate::callback_scope`]): the task looks at its queue as
//! soon as the callback returns, and waking the running task would only poll it
//! again for nothing.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;

use futures_util::task::AtomicWaker;
use tokio_tungstenite::tungstenite::Message;

use crate::callback_scope::{self, ScopeId};
use crate::memory_budget::MemoryBudget;

/// Close code sent to a client whose outbound queue overflowed.
pub const SLOW_CONSUMER_CODE: u16 = 1008;

/// Close code sent to a client whose message did not fit the server's memory budget.
pub const TRY_AGAIN_LATER_CODE: u16 = 1013;

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
    /// The server's memory budget is spent; the connection is being closed.
    #[error("the server's memory budget is spent; the connection is being closed")]
    OverBudget,
}

/// A close the connection task should perform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseRequest {
    /// The close code to send.
    pub code: u16,
    /// The reason to send (at most 123 bytes).
    pub reason: String,
}

/// What the connection task is asked to do next.
#[derive(Debug, PartialEq)]
pub enum OutboxEvent {
    /// The client did not answer the last keepalive ping: drop it (1006).
    Unresponsive,
    /// Close (after writing what is queued).
    Close(CloseRequest),
    /// Send a keepalive ping.
    Ping,
    /// Write this message.
    Message(Message),
}

#[derive(Debug, Default)]
struct Queue {
    messages: VecDeque<Message>,
    bytes: usize,
    /// Boxed: rare, and every connection's queue would carry it.
    close: Option<Box<CloseRequest>>,
    close_requested: bool,
    receiver_gone: bool,
    /// The keepalive asks for a ping.
    ping: bool,
    /// The keepalive found the client silent since the last ping.
    unresponsive: bool,
}

#[derive(Debug)]
struct Shared {
    queue: Mutex<Queue>,
    /// Set (under the lock) whenever something is queued, cleared (under the
    /// lock) when the receiver finds the queue empty: so the connection task,
    /// which looks at its queue on every turn of its loop, takes no lock when
    /// there is nothing.
    pending: AtomicBool,
    waker: AtomicWaker,
    /// Queued bytes count against it.
    budget: MemoryBudget,
}

impl Drop for Shared {
    fn drop(&mut self) {
        let queue = self.queue.get_mut().unwrap_or_else(|e| e.into_inner());
        self.budget.release(queue.bytes);
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn scope_id(self: &Arc<Self>) -> ScopeId {
        Arc::as_ptr(self) as ScopeId
    }
}

/// The sending half, shared by everyone who sends to the connection.
#[derive(Debug)]
pub struct Outbox {
    shared: Arc<Shared>,
    /// u32: every connection carries them (a larger setting is taken as
    /// 4 Gi).
    max_messages: u32,
    max_bytes: u32,
    drops: DropCounter,
    /// Close the connection when its queue overflows (a slow consumer). Off
    /// for a paced connection (one frame per write): the server itself sets
    /// its pace, so a full queue does not mean the client stopped reading
    /// (`write_timeout` and pings still catch one that did).
    close_when_full: AtomicBool,
}

/// Counts messages refused because the queue was full (a metrics handle).
pub type DropCounter = prometheus_client::metrics::counter::Counter;

/// The receiving half, owned by the connection task.
#[derive(Debug)]
pub struct OutboxReceiver {
    shared: Arc<Shared>,
}

/// A new outbox holding at most `max_messages` messages and `max_bytes` bytes
/// (a single message larger than `max_bytes` is still accepted into an empty
/// queue), its bytes counted against `budget`.
pub fn outbox(
    max_messages: usize,
    max_bytes: usize,
    drops: DropCounter,
    budget: MemoryBudget,
) -> (Outbox, OutboxReceiver) {
    let shared = Arc::new(Shared {
        queue: Mutex::default(),
        pending: AtomicBool::new(false),
        waker: AtomicWaker::new(),
        budget,
    });
    (
        Outbox {
            shared: shared.clone(),
            max_messages: u32::try_from(max_messages).unwrap_or(u32::MAX),
            max_bytes: u32::try_from(max_bytes).unwrap_or(u32::MAX),
            drops,
            close_when_full: AtomicBool::new(true),
        },
        OutboxReceiver { shared },
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
        let mut queue = self.shared.lock();
        if queue.receiver_gone {
            return Err(QueueError::Closed);
        }
        let full = queue.messages.len() >= self.max_messages as usize
            || (queue.bytes > 0 && queue.bytes + len > self.max_bytes as usize);
        let refused = if full {
            Some((QueueError::Full, slow_consumer()))
        } else if !self.shared.budget.try_reserve(len) {
            Some((QueueError::OverBudget, over_budget()))
        } else {
            None
        };
        if let Some((error, close)) = refused {
            self.drops.inc();
            if self.close_when_full.load(Ordering::Relaxed) {
                request(&mut queue, close);
                self.shared.pending.store(true, Ordering::Release);
                drop(queue);
                self.shared.waker.wake();
            }
            return Err(error);
        }
        queue.messages.push_back(message);
        queue.bytes += len;
        self.shared.pending.store(true, Ordering::Release);
        drop(queue);
        self.wake();
        Ok(())
    }

    /// Whether an overflow closes the connection (see `close_when_full`).
    pub fn set_close_when_full(&self, close: bool) {
        self.close_when_full.store(close, Ordering::Relaxed);
    }

    /// Asks the connection task to close after writing what is already queued.
    /// The first request wins.
    pub fn request_close(&self, close: CloseRequest) {
        let mut queue = self.shared.lock();
        request(&mut queue, close);
        self.shared.pending.store(true, Ordering::Release);
        drop(queue);
        self.shared.waker.wake();
    }

    /// Asks the connection task to send a keepalive ping.
    pub fn request_ping(&self) {
        let mut queue = self.shared.lock();
        queue.ping = true;
        self.shared.pending.store(true, Ordering::Release);
        drop(queue);
        self.shared.waker.wake();
    }

    /// Tells the connection task its client did not answer the last ping.
    pub fn report_unresponsive(&self) {
        let mut queue = self.shared.lock();
        queue.unresponsive = true;
        self.shared.pending.store(true, Ordering::Release);
        drop(queue);
        self.shared.waker.wake();
    }

    /// Whether the connection task is gone.
    pub fn is_closed(&self) -> bool {
        self.shared.lock().receiver_gone
    }

    fn wake(&self) {
        if !callback_scope::is_inside(self.shared.scope_id()) {
            self.shared.waker.wake();
        }
    }
}

fn request(queue: &mut Queue, close: CloseRequest) {
    if !queue.close_requested {
        queue.close_requested = true;
        queue.close = Some(Box::new(close));
    }
}

fn over_budget() -> CloseRequest {
    CloseRequest {
        code: TRY_AGAIN_LATER_CODE,
        reason: "the server's memory budget is spent; try again later".to_owned(),
    }
}

fn slow_consumer() -> CloseRequest {
    CloseRequest {
        code: SLOW_CONSUMER_CODE,
        reason: "outbound queue full: the client reads too slowly".to_owned(),
    }
}

impl OutboxReceiver {
    /// The next thing to do: a close request first, else the next message
    /// (cancel-safe; pending while there is nothing).
    pub async fn next(&mut self) -> OutboxEvent {
        std::future::poll_fn(|cx| {
            if let Some(event) = self.try_next() {
                return Poll::Ready(event);
            }
            self.shared.waker.register(cx.waker());
            // Look again: a push between the first look and the registration woke nobody.
            match self.try_next() {
                Some(event) => Poll::Ready(event),
                None => Poll::Pending,
            }
        })
        .await
    }

    fn try_next(&mut self) -> Option<OutboxEvent> {
        if !self.shared.pending.load(Ordering::Acquire) {
            return None;
        }
        let mut queue = self.shared.lock();
        if std::mem::take(&mut queue.unresponsive) {
            return Some(OutboxEvent::Unresponsive);
        }
        if let Some(close) = queue.close.take() {
            return Some(OutboxEvent::Close(*close));
        }
        if std::mem::take(&mut queue.ping) {
            return Some(OutboxEvent::Ping);
        }
        self.pop(&mut queue).map(OutboxEvent::Message)
    }

    /// A queued message if one is ready now.
    pub fn try_recv(&mut self) -> Option<Message> {
        if !self.shared.pending.load(Ordering::Acquire) {
            return None;
        }
        self.pop(&mut self.shared.lock())
    }

    /// The next message; clears `pending` when nothing at all is left.
    fn pop(&self, queue: &mut Queue) -> Option<Message> {
        let message = pop(queue, &self.shared.budget);
        if queue.messages.is_empty() && queue.close.is_none() && !queue.ping && !queue.unresponsive
        {
            self.shared.pending.store(false, Ordering::Release);
        }
        message
    }

    /// The connection's identity for [`callback_scope::enter`]: messages
    /// queued for it inside that scope wake nobody.
    pub fn scope_id(&self) -> ScopeId {
        self.shared.scope_id()
    }

    /// Refuses further messages and close requests; drops what is queued.
    pub fn close(&mut self) {
        let mut queue = self.shared.lock();
        queue.receiver_gone = true;
        queue.messages.clear();
        self.shared.budget.release(queue.bytes);
        queue.bytes = 0;
        queue.close = None;
    }
}

fn pop(queue: &mut Queue, budget: &MemoryBudget) -> Option<Message> {
    let message = queue.messages.pop_front()?;
    let len = payload_len(&message);
    queue.bytes -= len;
    budget.release(len);
    if queue.messages.is_empty() && queue.messages.capacity() > 64 {
        // Give back what a burst grew, so idle connections stay small.
        queue.messages.shrink_to(16);
    }
    Some(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn overflow_in_messages_refuses_and_requests_a_close_before_the_queue() {
        let (tx, mut rx) = outbox(
            2,
            1 << 20,
            DropCounter::default(),
            MemoryBudget::unlimited(),
        );
        tx.push(Message::text("a")).unwrap();
        tx.push(Message::text("b")).unwrap();
        assert_eq!(tx.push(Message::text("c")), Err(QueueError::Full));
        assert_eq!(rx.next().await, OutboxEvent::Close(slow_consumer()));
        assert_eq!(rx.next().await, OutboxEvent::Message(Message::text("a")));
        assert_eq!(rx.try_recv(), Some(Message::text("b")));
    }

    #[tokio::test]
    async fn overflow_in_bytes_refuses_but_one_large_message_fits_an_empty_queue() {
        let (tx, mut rx) = outbox(100, 10, DropCounter::default(), MemoryBudget::unlimited());
        tx.push(Message::binary(vec![0; 50])).unwrap();
        assert_eq!(tx.push(Message::binary(vec![0; 1])), Err(QueueError::Full));
        assert!(matches!(rx.next().await, OutboxEvent::Close(_)));
        assert_eq!(rx.try_recv().map(|m| m.len()), Some(50));
        tx.push(Message::binary(vec![0; 5])).unwrap();
    }

    #[tokio::test]
    async fn the_first_close_request_wins_once() {
        let (tx, mut rx) = outbox(4, 100, DropCounter::default(), MemoryBudget::unlimited());
        tx.request_close(CloseRequest {
            code: 1000,
            reason: "bye".into(),
        });
        tx.request_close(CloseRequest {
            code: 1011,
            reason: "later".into(),
        });
        tx.push(Message::text("x")).unwrap();
        assert!(matches!(
            rx.next().await,
            OutboxEvent::Close(CloseRequest { code: 1000, .. })
        ));
        assert_eq!(rx.next().await, OutboxEvent::Message(Message::text("x")));
    }

    #[tokio::test]
    async fn a_push_from_another_task_wakes_the_receiver() {
        let (tx, mut rx) = outbox(4, 100, DropCounter::default(), MemoryBudget::unlimited());
        let receiver = tokio::spawn(async move { rx.next().await });
        tokio::task::yield_now().await;
        tx.push(Message::text("late")).unwrap();
        assert_eq!(
            receiver.await.unwrap(),
            OutboxEvent::Message(Message::text("late"))
        );
    }

    #[tokio::test]
    async fn a_paced_connection_refuses_but_is_not_closed_when_full() {
        let (tx, mut rx) = outbox(1, 100, DropCounter::default(), MemoryBudget::unlimited());
        tx.set_close_when_full(false);
        tx.push(Message::text("a")).unwrap();
        assert_eq!(tx.push(Message::text("b")), Err(QueueError::Full));
        assert_eq!(rx.next().await, OutboxEvent::Message(Message::text("a")));
        tx.push(Message::text("c")).unwrap();
    }

    #[tokio::test]
    async fn sending_to_a_gone_task_is_closed() {
        let (tx, mut rx) = outbox(4, 100, DropCounter::default(), MemoryBudget::unlimited());
        rx.close();
        assert_eq!(tx.push(Message::text("x")), Err(QueueError::Closed));
        assert!(tx.is_closed());
    }
}
