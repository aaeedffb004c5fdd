//! One WebSocket connection after the upgrade: a single task that reads
//! frames and hands messages to the app, writes the connection's outbox to the
//! socket (pings included, when the keepalive asks), and performs the close
//! handshake.
//!
//! One task per connection (rather than a reader and a writer task) keeps the
//! app's callbacks for that connection in order and never concurrent, with no
//! locking. Reading is cancel-safe (tungstenite keeps partial frames in its own
//! buffer), so `select!` can interleave reads, writes and timers freely.
//!
//! All framing decisions (what a frame means, which close code answers which
//! error) live in this module, so that permessage-deflate can be added here
//! without touching the app or host layers.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use abi_stable::std_types::{RSlice, RStr};
use futures_util::{SinkExt, StreamExt};
use switchboard_plugin_api::abi::MessageRef;
use switchboard_plugin_api::ConnId;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{sleep_until, Instant};
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

use crate::callback_scope;
use crate::limits::ConnectionSlot;
use crate::memory_budget::Received;
use crate::metrics::AppMetrics;
use crate::outbox::{CloseRequest, OutboxEvent, OutboxReceiver};
use crate::plugin::mount::InstanceCache;
use crate::plugin::MountedApp;
use crate::rate::RateLimiter;
use crate::registry::Connection;

/// Most queued messages written before the socket is flushed and reads get a
/// turn (1 for connections in one-frame-per-write mode).
const WRITE_BATCH: usize = 64;

/// Settings every connection shares, from the `[server]` block.
#[derive(Debug, Clone)]
pub struct ConnectionSettings {
    /// tungstenite's limits and buffers.
    pub websocket: WebSocketConfig,
    /// The largest message, in bytes, in either direction: clients get 1009
    /// beyond it, and apps and backends may not send more
    /// (`Registry::deliver`). The one place the server's `max_message_size`
    /// reaches its users from.
    pub max_message_size: usize,
    /// How long to wait for the client's answer to our close frame.
    pub close_timeout: Duration,
    /// How long one write may wait for the client to take the data; a client
    /// that stops reading is dropped after it, whatever the task was doing.
    pub write_timeout: Duration,
}

impl ConnectionSettings {
    /// Builds tungstenite's configuration explicitly: its default read buffer
    /// (128 KiB, zero-filled on every read) halves small-message throughput and
    /// its default write buffer limit is unbounded.
    pub fn new(server: &crate::config::ServerConfig) -> Self {
        let write_buffer_size = 16 * 1024;
        let mut websocket = WebSocketConfig::default();
        websocket.read_buffer_size = server.read_buffer_size;
        websocket.write_buffer_size = write_buffer_size;
        // One frame of the largest message we may send, plus the target buffer and headers.
        websocket.max_write_buffer_size = write_buffer_size + server.max_message_size + 64;
        websocket.max_message_size = Some(server.max_message_size);
        websocket.max_frame_size = Some(server.max_frame_size);
        websocket.accept_unmasked_frames = false;
        ConnectionSettings {
            websocket,
            max_message_size: server.max_message_size,
            close_timeout: server.close_timeout,
            write_timeout: server.write_timeout,
        }
    }
}

/// Everything a connection task needs.
pub struct OpenConnection {
    /// The app it belongs to.
    pub app: Arc<MountedApp>,
    /// Its registry entry (inserted when the task starts).
    pub connection: Arc<Connection>,
    /// Its outbound queue.
    pub outbox: OutboxReceiver,
    /// Shared settings.
    pub settings: Arc<ConnectionSettings>,
    /// Cancelled when the server shuts down (checked once, at the start).
    pub shutdown: CancellationToken,
    /// Its place under the connection limits.
    pub slot: Arc<ConnectionSlot>,
    /// Its place under the per-address limit by the address a trusted proxy
    /// reported, when it came through one.
    pub client_slot: Option<ConnectionSlot>,
}

/// How the connection ended, as `on_close` reports it.
struct Ending {
    code: u16,
    reason: String,
}

impl Ending {
    fn new(code: u16, reason: impl Into<String>) -> Self {
        Ending {
            code,
            reason: reason.into(),
        }
    }
}

/// What the loop does next after an event.
enum Step {
    Continue,
    /// Start the close handshake with this close frame.
    Close(CloseRequest),
    /// Send this close frame, then stop reading frames: the stream is not trustworthy.
    Abort(CloseRequest),
    /// The connection is over.
    End(Ending),
}

/// Serves one upgraded connection until it closes, then calls `on_close` once.
///
/// `received` gives back to the memory budget what was read for each message
/// once it is handled.
pub async fn serve<S>(mut ws: WebSocketStream<S>, open: OpenConnection, received: Received)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let OpenConnection {
        app,
        connection,
        mut outbox,
        settings,
        shutdown,
        slot,
        client_slot,
    } = open;
    let id = connection.id;
    app.registry().insert(connection.clone());
    app.metrics().accepted.inc();
    app.metrics().open.inc();
    tracing::debug!("connection open");

    let mut instance = app.instance_cache();
    let mut rate = RateLimiter::new(app.settings().rate_limits);
    let opened = app
        .call(&connection.in_callback, &mut instance, |app| {
            callback_scope::enter(outbox.scope_id(), None, || app.on_open(id))
        })
        .await;
    let mut step = match opened {
        Ok(()) => Step::Continue,
        Err(_) => Step::Close(internal_error()),
    };
    // Shutdown reaches registered connections through their close channel
    // (`Server::run` asks every registry); one that registered after that
    // sweep sees the cancelled token here.
    if shutdown.is_cancelled() {
        step = Step::Close(going_away());
    }
    let mut pacing = Pacing::new();
    // Set once our close frame is sent: until then, wait for the client's.
    let mut closing: Option<(Instant, Ending)> = None;

    let ending = loop {
        match step {
            Step::Continue => {}
            Step::Close(request) | Step::Abort(request) if closing.is_some() => {
                tracing::trace!(code = request.code, "already closing");
            }
            Step::Close(request) => {
                let ending = Ending::new(request.code, request.reason.clone());
                let sent = within(settings.write_timeout, async {
                    write_queued(&mut ws, &mut outbox).await;
                    ws.close(Some(close_frame(&request))).await
                })
                .await;
                if !matches!(sent, Some(Ok(()))) {
                    break ending;
                }
                closing = Some((Instant::now() + settings.close_timeout, ending));
            }
            Step::Abort(request) => {
                let ending = Ending::new(request.code, request.reason.clone());
                let sent = within(
                    settings.write_timeout,
                    ws.close(Some(close_frame(&request))),
                )
                .await;
                if matches!(sent, Some(Ok(()))) {
                    linger(ws.get_mut(), settings.close_timeout).await;
                }
                break ending;
            }
            Step::End(ending) => break ending,
        }
        let close_deadline = closing.as_ref().map(|(deadline, _)| *deadline);

        step = tokio::select! {
            biased;
            event = outbox.next(), if closing.is_none() => match event {
                OutboxEvent::Unresponsive => {
                    tracing::debug!("no answer to ping; dropping connection");
                    Step::End(Ending::new(1006, "ping timeout"))
                }
                OutboxEvent::Close(request) => Step::Close(request),
                OutboxEvent::Ping => {
                    let payload = bytes::Bytes::copy_from_slice(app.settings().ping_payload.as_bytes());
                    pacing.wrote();
                    match within(settings.write_timeout, ws.send(Message::Ping(payload))).await {
                        Some(Ok(())) => Step::Continue,
                        Some(Err(_)) => Step::End(Ending::new(1006, "connection lost")),
                        None => write_timed_out(),
                    }
                }
                OutboxEvent::Message(message) => {
                    let batch = pacing.before_write(&connection).await;
                    let step = within(settings.write_timeout, write_batch(&mut ws, &mut outbox, message, batch, app.metrics()))
                        .await
                        .unwrap_or_else(write_timed_out);
                    pacing.wrote();
                    step
                }
            },
            incoming = ws.next() => {
                connection.heard();
                pacing.heard();
                match incoming {
                    Some(Ok(message)) => {
                        let frame = on_frame(Caller { app: &app, connection: &connection, instance: &mut instance, rate: &mut rate }, &outbox, &mut ws, message, closing.is_some());
                        let step = within(settings.write_timeout, frame)
                            .await
                            .unwrap_or_else(write_timed_out);
                        received.handled();
                        step
                    }
                    Some(Err(error)) => on_read_error(&app, id, error, closing.is_some()).await,
                    None => Step::End(Ending::new(1006, "connection closed")),
                }
            }
            _ = sleep_until(close_deadline.unwrap_or_else(Instant::now)), if close_deadline.is_some() => {
                tracing::debug!("client did not answer the close frame in time");
                Step::End(Ending::new(1006, "close timeout"))
            }
        };
        // Once our close frame is out, whatever ends the loop (the client's reply,
        // its absence, an error), `on_close` reports the code we sent.
        if let (Step::End(_), Some((_, ending))) = (&step, closing.as_ref()) {
            step = Step::End(Ending::new(ending.code, ending.reason.clone()));
        }
    };

    app.registry().remove(id);
    app.metrics().open.dec();
    outbox.close();
    tracing::debug!(code = ending.code, reason = %ending.reason, "connection closed");
    app.call_shared(|app| app.on_close(id, ending.code, &ending.reason))
        .await;
    drop(slot);
    drop(client_slot);
}

/// The close sent to every connection when the server shuts down.
pub fn going_away() -> CloseRequest {
    CloseRequest {
        code: 1001,
        reason: "server shutting down".to_owned(),
    }
}

/// Pacing of a connection in one-frame-per-write mode (`FramePacing::OnePerWrite`):
/// a frame written while the client has sent nothing since our previous one
/// (the 101 response counts) waits for the connection's pause first, so that a
/// client reading one frame per read gets it in a read of its own. A client's
/// message shows it read what we wrote, so request/answer traffic never waits.
struct Pacing {
    last_write: Instant,
    heard_since_write: bool,
}

impl Pacing {
    fn new() -> Self {
        // The 101 response has just gone out.
        Pacing {
            last_write: Instant::now(),
            heard_since_write: false,
        }
    }

    /// Waits if this connection is paced and needs to; returns how many
    /// queued messages the next write may take.
    async fn before_write(&self, connection: &Connection) -> usize {
        if !connection.one_frame_per_write.load(Ordering::Relaxed) {
            return WRITE_BATCH;
        }
        if !self.heard_since_write {
            let pause =
                Duration::from_micros(connection.frame_pause_micros.load(Ordering::Relaxed));
            let wait = pause.saturating_sub(self.last_write.elapsed());
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
        1
    }

    fn wrote(&mut self) {
        self.last_write = Instant::now();
        self.heard_since_write = false;
    }

    fn heard(&mut self) {
        self.heard_since_write = true;
    }
}

/// Runs `future` for at most `limit`; `None` if time ran out.
///
/// The timer is armed only once the future has to wait: nearly every write
/// completes on its first poll, and registering a timer per message would put
/// the timer driver's lock on the hot path.
async fn within<T>(limit: Duration, future: impl std::future::Future<Output = T>) -> Option<T> {
    let mut future = std::pin::pin!(future);
    let mut deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    std::future::poll_fn(|cx| {
        if let std::task::Poll::Ready(value) = future.as_mut().poll(cx) {
            return std::task::Poll::Ready(Some(value));
        }
        let sleep = deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        sleep.as_mut().poll(cx).map(|()| None)
    })
    .await
}

fn write_timed_out() -> Step {
    tracing::debug!("the client did not take our data in time; dropping connection");
    Step::End(Ending::new(1006, "write timeout"))
}

fn internal_error() -> CloseRequest {
    CloseRequest {
        code: 1011,
        reason: "internal error".to_owned(),
    }
}

fn close_frame(request: &CloseRequest) -> CloseFrame {
    CloseFrame {
        code: CloseCode::from(request.code),
        reason: request.reason.as_str().into(),
    }
}

/// Writes one message and up to `limit - 1` of those queued behind it, then flushes.
async fn write_batch<S>(
    ws: &mut WebSocketStream<S>,
    outbox: &mut OutboxReceiver,
    first: Message,
    limit: usize,
    metrics: &AppMetrics,
) -> Step
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut next = Some(first);
    let mut written = 0;
    while let Some(message) = next {
        metrics.messages_out.inc();
        metrics.bytes_out.inc_by(message.len() as u64);
        if let Err(error) = ws.feed(message).await {
            tracing::debug!(%error, "write failed");
            return Step::End(Ending::new(1006, "connection lost"));
        }
        written += 1;
        next = if written < limit {
            outbox.try_recv()
        } else {
            None
        };
    }
    match ws.flush().await {
        Ok(()) => Step::Continue,
        Err(error) => {
            tracing::debug!(%error, "flush failed");
            Step::End(Ending::new(1006, "connection lost"))
        }
    }
}

/// Writes everything queued now (before a close frame), ignoring write errors
/// (the close that follows reports them).
async fn write_queued<S>(ws: &mut WebSocketStream<S>, outbox: &mut OutboxReceiver)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    while let Some(message) = outbox.try_recv() {
        if ws.feed(message).await.is_err() {
            return;
        }
    }
    let _ = ws.flush().await;
}

/// What calling one of a connection's own callbacks needs.
struct Caller<'a> {
    app: &'a MountedApp,
    connection: &'a Connection,
    instance: &'a mut InstanceCache,
    rate: &'a mut Option<RateLimiter>,
}

/// Handles one frame from the client.
async fn on_frame<S>(
    caller: Caller<'_>,
    outbox: &OutboxReceiver,
    ws: &mut WebSocketStream<S>,
    message: Message,
    closing: bool,
) -> Step
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Caller {
        app,
        connection,
        instance,
        rate,
    } = caller;
    let id = connection.id;
    if message.is_text() || message.is_binary() {
        app.metrics().messages_in.inc();
        app.metrics().bytes_in.inc_by(message.len() as u64);
        if let Some(Err(exceeded)) = rate.as_mut().map(|r| r.spend(message.len())) {
            tracing::debug!(%exceeded, "closing a client over its rate limit");
            return Step::Close(CloseRequest {
                code: 1008,
                reason: exceeded.to_string(),
            });
        }
    }
    let delivered = match &message {
        // After our close frame, data is discarded (RFC 6455 §1.4).
        Message::Text(_) | Message::Binary(_) if closing => Ok(()),
        Message::Text(text) => {
            app.call(&connection.in_callback, instance, |app| {
                callback_scope::enter(outbox.scope_id(), Some(text.as_ref()), || {
                    app.on_message(id, MessageRef::Text(RStr::from_str(text.as_str())))
                })
            })
            .await
        }
        Message::Binary(bytes) => {
            app.call(&connection.in_callback, instance, |app| {
                callback_scope::enter(outbox.scope_id(), Some(bytes), || {
                    app.on_message(id, MessageRef::Binary(RSlice::from_slice(bytes)))
                })
            })
            .await
        }
        Message::Close(frame) => {
            // tungstenite queued the close reply; send it now.
            let _ = ws.flush().await;
            let ending = match frame {
                Some(frame) => Ending::new(frame.code.into(), frame.reason.as_str()),
                None => Ending::new(1005, ""),
            };
            return Step::End(ending);
        }
        // tungstenite answers pings itself; any frame counts as a sign of life.
        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => Ok(()),
    };
    match delivered {
        Ok(()) => Step::Continue,
        Err(_) => Step::Close(internal_error()),
    }
}

/// Maps a read error to the close code RFC 6455 asks for.
async fn on_read_error(app: &MountedApp, id: ConnId, error: WsError, closing: bool) -> Step {
    let (code, reason) = match &error {
        WsError::ConnectionClosed | WsError::AlreadyClosed => {
            return Step::End(Ending::new(1005, ""))
        }
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
            return Step::End(Ending::new(1006, "closed without a close frame"))
        }
        WsError::Io(_) => {
            tracing::debug!(%error, "read failed");
            return Step::End(Ending::new(1006, "connection lost"));
        }
        _ if closing => return Step::End(Ending::new(1006, "error while closing")),
        WsError::Capacity(_) => (1009, "message too big"),
        WsError::Utf8(_) => (1007, "invalid UTF-8 in text message"),
        WsError::Protocol(_) => (1002, "protocol error"),
        _ => (1011, "internal error"),
    };
    tracing::debug!(%error, code, "closing on client error");
    let text = error.to_string();
    app.call_shared(|app| app.on_error(id, &text)).await;
    Step::Abort(CloseRequest {
        code,
        reason: reason.to_owned(),
    })
}

/// After a close frame sent because of a broken stream: shut our side and
/// discard whatever the client still sends, until it closes or time runs out,
/// so that closing with unread data does not reset the connection and destroy
/// the close frame before the client reads it.
async fn linger<S>(stream: &mut S, limit: Duration)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let _ = tokio::time::timeout(limit, async {
        let _ = stream.shutdown().await;
        // On the heap: an array here would sit in every connection's future.
        let mut sink = vec![0u8; 4096];
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}
