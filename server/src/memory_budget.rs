//! One budget of bytes for what every connection together holds in memory:
//! messages being received (from their first byte read until the message has
//! been handled) and messages queued for sending.
//!
//! Per-connection limits (`max_message_size`, `outbound_queue_bytes`) bound
//! one client; this bounds them all together, so that many clients each within
//! their limits cannot exhaust the machine. When the budget is spent:
//!
//! - reading slows to a trickle on every connection (one byte per 10 ms, so
//!   TCP pushes back on the clients, yet a client that leaves is noticed)
//!   until bytes are freed; a client that stays blocked has its pongs stuck
//!   behind its message and is closed by the keepalive like any silent client;
//! - a message that would not fit into the budget is refused; its recipient is
//!   closed with 1013 (try again later), unless it is paced, where the message
//!   is only dropped (see `Outbox`).
//!
//! Reads are counted after they happen, so the budget can be exceeded by at
//! most one read per connection reading at that moment: `read_buffer_size`,
//! or for the rest of a large frame (read straight into its message) what the
//! socket holds, at most the kernel's receive buffer.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How often a connection whose reading is paused looks at the budget again.
const RETRY: Duration = Duration::from_millis(10);

/// The shared budget (cheap to clone).
#[derive(Clone, Debug)]
pub struct MemoryBudget {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Bytes held now: the exported gauge's own atomic, so counting costs one
    /// atomic operation and scraping reads it as is.
    used: Gauge,
    /// Changed by a reload.
    limit: AtomicUsize,
    refusals: Counter,
}

impl MemoryBudget {
    /// A budget of `limit` bytes, reporting to the given metrics.
    pub fn new(limit: usize, used_gauge: Gauge, refusals: Counter) -> Self {
        MemoryBudget {
            inner: Arc::new(Inner {
                used: used_gauge,
                limit: AtomicUsize::new(limit),
                refusals,
            }),
        }
    }

    /// A budget nothing reaches (unit tests, tools).
    pub fn unlimited() -> Self {
        MemoryBudget::new(usize::MAX, Gauge::default(), Counter::default())
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        usize::try_from(self.inner.used.get()).unwrap_or(0)
    }

    /// Sets the limit (a reload).
    pub fn set_limit(&self, limit: usize) {
        self.inner.limit.store(limit, Ordering::Relaxed);
    }

    /// Whether nothing more fits.
    pub fn is_spent(&self) -> bool {
        self.used() >= self.inner.limit.load(Ordering::Relaxed)
    }

    /// Takes `bytes` if they fit; counts a refusal if not.
    pub fn try_reserve(&self, bytes: usize) -> bool {
        let limit = i64::try_from(self.inner.limit.load(Ordering::Relaxed)).unwrap_or(i64::MAX);
        let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
        // One atomic add, undone when it went over: no compare-and-swap loop
        // for the many senders that fit (near the limit, two senders racing
        // may both be refused where one would have fit).
        let before = self.inner.used.inc_by(bytes);
        if before.saturating_add(bytes) <= limit {
            return true;
        }
        self.inner.used.dec_by(bytes);
        self.inner.refusals.inc();
        false
    }

    /// Takes `bytes` that are already held (bytes read from a socket).
    fn force_reserve(&self, bytes: usize) {
        if bytes > 0 {
            self.inner
                .used
                .inc_by(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
    }

    /// Gives back `bytes` taken earlier.
    pub fn release(&self, bytes: usize) {
        if bytes > 0 {
            self.inner
                .used
                .dec_by(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
    }
}

/// Bytes one connection has read and not yet handled, shared between its
/// socket ([`BudgetedIo`]) and its task, which calls [`Received::handled`]
/// after each message.
#[derive(Clone, Debug)]
pub struct Received {
    budget: MemoryBudget,
    held: Arc<AtomicUsize>,
}

impl Received {
    /// Gives back what was read so far: the message it belonged to is handled.
    pub fn handled(&self) {
        self.budget.release(self.held.swap(0, Ordering::Relaxed));
    }
}

/// A socket whose reads count against the budget and pause while it is spent.
#[derive(Debug)]
pub struct BudgetedIo<S> {
    io: S,
    received: Received,
    retry: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> BudgetedIo<S> {
    /// Wraps `io`; the returned [`Received`] releases what it read.
    pub fn new(io: S, budget: MemoryBudget) -> (Self, Received) {
        let received = Received {
            budget,
            held: Arc::default(),
        };
        let io = BudgetedIo {
            io,
            received: received.clone(),
            retry: None,
        };
        (io, received)
    }

    /// The wrapped socket.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.io
    }
}

impl<S> Drop for BudgetedIo<S> {
    fn drop(&mut self) {
        self.received.handled();
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for BudgetedIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.received.budget.is_spent() {
            // Spent: one byte per `RETRY`, enough to notice a client that left
            // (its bytes are given back only when its connection ends).
            let retry = this
                .retry
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(RETRY)));
            std::task::ready!(retry.as_mut().poll(cx));
            let mut one = [0u8; 1];
            let mut small = ReadBuf::new(&mut one);
            std::task::ready!(Pin::new(&mut this.io).poll_read(cx, &mut small))?;
            this.retry = None;
            let read = small.filled();
            buf.put_slice(read);
            this.received.held.fetch_add(read.len(), Ordering::Relaxed);
            this.received.budget.force_reserve(read.len());
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        std::task::ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        let read = buf.filled().len() - before;
        this.received.held.fetch_add(read, Ordering::Relaxed);
        this.received.budget.force_reserve(read);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for BudgetedIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn reservations_fit_the_limit_and_count_refusals() {
        let refusals = Counter::default();
        let budget = MemoryBudget::new(10, Gauge::default(), refusals.clone());
        assert!(budget.try_reserve(6));
        assert!(!budget.try_reserve(5));
        assert!(budget.try_reserve(4));
        budget.release(10);
        assert_eq!(budget.used(), 0);
        assert_eq!(refusals.get(), 1);
    }

    #[tokio::test]
    async fn reading_trickles_while_the_budget_is_spent_and_handled_bytes_come_back() {
        let budget = MemoryBudget::new(4, Gauge::default(), Counter::default());
        let (mut client, server) = tokio::io::duplex(64);
        let (mut io, received) = BudgetedIo::new(server, budget.clone());
        client.write_all(b"abcdefgh").await.unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(io.read(&mut buf).await.unwrap(), 8);
        assert_eq!(budget.used(), 8);
        let mut more = [0u8; 1];
        client.write_all(b"i").await.unwrap();
        let started = tokio::time::Instant::now();
        assert_eq!(
            io.read(&mut more).await.unwrap(),
            1,
            "a trickle while spent"
        );
        assert!(started.elapsed() >= RETRY);
        received.handled();
        client.write_all(b"j").await.unwrap();
        assert_eq!(budget.used(), 0);
        assert_eq!(io.read(&mut more).await.unwrap(), 1);
        drop(io);
        assert_eq!(budget.used(), 0);
    }
}
