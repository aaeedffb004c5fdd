//! One WebSocket connection after the upgrade: a single task that reads
//! frames and hands messages to the app, writes the connection's outbox to the
//! socket (pings included, when the keepalive asks), and performs the close
//! handshake.
//!
//! One task per connection (rather than a reader and a writer task) keeps the
//! app's callbacks for that connection in order and never concurrent, with no
//! locking. Reading is cancel-safe (the reader keeps partial frames), so
//! `select!` can interleave reads, writes and timers freely.
//!
//! All framing decisions (what a frame means, which close code answers which
//! error) live in this module, so that permessage-deflate can be added here
//! without touching the app or host layers.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use abi_stable::std_types::{RSlice, RStr};
use std::pin::Pin;
use switchboard_plugin_api::abi::MessageRef;
use switchboard_plugin_api::ConnId;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use tokio::time::{Instant, Sleep};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::callback_scope::{self, ScopeId};
use crate::limits::ConnectionSlot;
use crate::memory_budget::Received;
use crate::metrics::AppMetrics;
use crate::outbox::{CloseRequest, OutboxEvent, OutboxReceiver};
use crate::plugin::mount::InstanceCache;
use crate::plugin::{AppInstance, CallbackFailure, MountedApp};
use crate::rate::RateLimiter;
use crate::registry::Connection;
use crate::websocket::{ClosePayload, Incoming, ReadError, ReadLimits, WebSocket};

/// Most queued messages written before the socket is flushed and reads get a
/// turn (1 for connections in one-frame-per-write mode).
const WRITE_BATCH: usize = 64;

/// Settings every connection shares, from the `[server]` block.
#[derive(Debug, Clone)]
pub struct ConnectionSettings {
    /// What reading a client's frames is held to.
    pub read_limits: ReadLimits,
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
    /// The settings from the `[server]` block.
    pub fn new(server: &crate::config::ServerConfig) -> Self {
        ConnectionSettings {
            read_limits: ReadLimits {
                max_message_size: server.max_message_size,
                max_frame_size: server.max_frame_size,
                read_size: server.read_buffer_size,
            },
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
    pub client_slot: Option<Box<ConnectionSlot>>,
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
pub fn serve<S>(
    mut ws: WebSocket<S>,
    open: OpenConnection,
    received: Received,
) -> impl Future<Output = ()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // Taken apart here, outside the future: an `async fn` would keep both its
    // arguments and the parts in its state (rust-lang/rust#62958), and every
    // connection carries that state for its lifetime.
    let OpenConnection {
        app,
        connection,
        mut outbox,
        settings,
        shutdown,
        slot,
        client_slot,
    } = open;
    async move {
        // `connection.id` rather than a copy: every byte of this future's
        // state is held by every idle connection.
        app.registry().insert(connection.clone());
        app.metrics().accepted.inc();
        app.metrics().open.inc();
        tracing::debug!("connection open");

        let mut instance = app.instance_cache();
        let mut rate = RateLimiter::new(app.settings().rate_limits);
        // Rare awaits are boxed throughout: the task's future is as large as its
        // largest state, and an idle connection should not carry them.
        let mut step = match Box::pin(app.call(&connection.in_callback, &mut instance, |app| {
            callback_scope::enter(outbox.scope_id(), connection.id, None, || {
                app.on_open(connection.id)
            })
        }))
        .await
        {
            Ok(()) => Step::Continue,
            Err(_) => Step::Close(internal_error()),
        };
        // Shutdown reaches registered connections through their close channel
        // (`Server::run` asks every registry); one that registered after that
        // sweep sees the cancelled token here.
        if shutdown.is_cancelled() {
            step = Step::Close(going_away());
        }
        drop(shutdown);
        let mut pacing = Pacing::new();
        // Set once our close frame is sent: until then, wait for the client's
        // (within `close_timeout`).
        let mut closing: Option<Box<Ending>> = None;
        let mut close_timer: Option<Pin<Box<Sleep>>> = None;

        let ending = loop {
            // What the last event queued goes out before anything else is
            // taken in (a client that does not read stops being read). This is
            // the loop's one wait besides the `select!` below, and it holds
            // nothing but the socket: the connection's state stays small.
            // A close (`Step::Close`, `Step::Abort`) writes the queue itself.
            if ws.has_queued() && matches!(step, Step::Continue | Step::End(_)) {
                let written = write_queued(&mut ws, settings.write_timeout).await;
                if matches!(step, Step::Continue) {
                    step = flushed(written);
                    pacing.wrote(&connection);
                }
            }
            match step {
                Step::Continue => {}
                Step::Close(request) | Step::Abort(request) if closing.is_some() => {
                    tracing::trace!(code = request.code, "already closing");
                }
                Step::Close(request) => {
                    let sent = Box::pin(within(settings.write_timeout, async {
                        while let Some(message) = outbox.try_recv() {
                            ws.queue(&message);
                        }
                        ws.queue_close(request.code, &request.reason);
                        ws.flush().await
                    }))
                    .await;
                    let ending = Ending::new(request.code, request.reason);
                    if !matches!(sent, Some(Ok(()))) {
                        break ending;
                    }
                    closing = Some(Box::new(ending));
                    close_timer = Some(Box::pin(tokio::time::sleep(settings.close_timeout)));
                }
                Step::Abort(request) => {
                    ws.queue_close(request.code, &request.reason);
                    Box::pin(async {
                        let sent = within(settings.write_timeout, ws.flush()).await;
                        if matches!(sent, Some(Ok(()))) {
                            linger(ws.get_mut(), settings.close_timeout).await;
                        }
                    })
                    .await;
                    break Ending::new(request.code, request.reason);
                }
                Step::End(ending) => break ending,
            }

            step = tokio::select! {
                biased;
                event = outbox.next(), if closing.is_none() => match event {
                    OutboxEvent::Unresponsive => {
                        tracing::debug!("no answer to ping; dropping connection");
                        Step::End(Ending::new(1006, "ping timeout"))
                    }
                    OutboxEvent::Close(request) => Step::Close(request),
                    OutboxEvent::Ping => {
                        // Quiet for a keepalive interval: a good moment to give back buffers.
                        ws.release_idle();
                        let payload = bytes::Bytes::copy_from_slice(app.settings().ping_payload.as_bytes());
                        ws.queue(&Message::Ping(payload));
                        Step::Continue
                    }
                    OutboxEvent::Message(message) => {
                        if let Some(wait) = pacing.wait_before_write(&connection) {
                            Box::pin(tokio::time::sleep(wait)).await;
                        }
                        queue_batch(&mut ws, &mut outbox, message, pacing.batch(&connection), app.metrics());
                        Step::Continue
                    }
                },
                incoming = ws.read() => {
                    connection.heard();
                    pacing.heard();
                    match incoming {
                        Ok(incoming) => {
                            let caller = Caller { app: &app, connection: &connection, instance: &mut instance, rate: &mut rate };
                            // What on_frame queued (a pong, the close reply) is
                            // written at the top of the loop.
                            let step = match on_frame(caller, &outbox, &mut ws, incoming, closing.is_some()) {
                                Handled::Step(step) => step,
                                Handled::Paused(incoming) => {
                                    let caller = Caller { app: &app, connection: &connection, instance: &mut instance, rate: &mut rate };
                                    Box::pin(deliver_when_resumed(caller, &outbox, incoming)).await
                                }
                            };
                            received.handled();
                            step
                        }
                        Err(error) => Box::pin(on_read_error(&app, connection.id, error, closing.is_some())).await,
                    }
                }
                () = poll_timer(&mut close_timer), if close_timer.is_some() => {
                    tracing::debug!("client did not answer the close frame in time");
                    Step::End(Ending::new(1006, "close timeout"))
                }
            };
            // Once our close frame is out, whatever ends the loop (the client's reply,
            // its absence, an error), `on_close` reports the code we sent.
            if let (Step::End(_), Some(ending)) = (&step, closing.as_ref()) {
                step = Step::End(Ending::new(ending.code, ending.reason.clone()));
            }
        };
        drop(ws);

        app.registry().remove(connection.id);
        app.metrics().open.dec();
        outbox.close();
        tracing::debug!(code = ending.code, reason = %ending.reason, "connection closed");
        let id = connection.id;
        Box::pin(app.call_shared(|app| {
            callback_scope::about(id, || app.on_close(id, ending.code, &ending.reason))
        }))
        .await;
        drop(slot);
        drop(client_slot);
    }
}

/// Writes what is queued on `ws`, for at most `limit`; `None` if time ran
/// out. Like [`within`], but its state is a reference and a timer armed only
/// if the socket makes it wait, so the connection's future stays small.
fn write_queued<S>(
    ws: &mut WebSocket<S>,
    limit: Duration,
) -> impl Future<Output = Option<std::io::Result<()>>> + '_
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut deadline: Option<Pin<Box<Sleep>>> = None;
    std::future::poll_fn(move |cx| {
        if let std::task::Poll::Ready(result) = ws.poll_flush(cx) {
            return std::task::Poll::Ready(Some(result));
        }
        let sleep = deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        sleep.as_mut().poll(cx).map(|()| None)
    })
}

/// Waits for the close timer (never ready without one).
async fn poll_timer(timer: &mut Option<Pin<Box<Sleep>>>) {
    match timer {
        Some(sleep) => sleep.as_mut().await,
        None => std::future::pending().await,
    }
}

/// The step after a write: on, or the end of a connection whose write failed.
fn flushed(result: Option<std::io::Result<()>>) -> Step {
    match result {
        Some(Ok(())) => Step::Continue,
        Some(Err(error)) => {
            tracing::debug!(%error, "write failed");
            Step::End(Ending::new(1006, "connection lost"))
        }
        None => write_timed_out(),
    }
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

    /// How long a paced connection waits before its next write, if at all.
    fn wait_before_write(&self, connection: &Connection) -> Option<Duration> {
        if !connection.one_frame_per_write.load(Ordering::Relaxed) || self.heard_since_write {
            return None;
        }
        let pause = Duration::from_micros(connection.frame_pause_micros.load(Ordering::Relaxed));
        let wait = pause.saturating_sub(self.last_write.elapsed());
        (!wait.is_zero()).then_some(wait)
    }

    /// How many queued messages the next write may take.
    fn batch(&self, connection: &Connection) -> usize {
        if connection.one_frame_per_write.load(Ordering::Relaxed) {
            1
        } else {
            WRITE_BATCH
        }
    }

    /// A frame went out (the clock is read only for a paced connection).
    fn wrote(&mut self, connection: &Connection) {
        if connection.one_frame_per_write.load(Ordering::Relaxed) {
            self.last_write = Instant::now();
        }
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

/// Queues one message and up to `limit - 1` of those queued behind it, to go
/// out in one write.
fn queue_batch<S>(
    ws: &mut WebSocket<S>,
    outbox: &mut OutboxReceiver,
    first: Message,
    limit: usize,
    metrics: &AppMetrics,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut next = Some(first);
    let mut queued = 0;
    while let Some(message) = next {
        metrics.messages_out.inc();
        metrics.bytes_out.inc_by(message.len() as u64);
        ws.queue(&message);
        queued += 1;
        next = if queued < limit {
            outbox.try_recv()
        } else {
            None
        };
    }
}

/// What calling one of a connection's own callbacks needs.
struct Caller<'a> {
    app: &'a MountedApp,
    connection: &'a Connection,
    instance: &'a mut InstanceCache,
    rate: &'a mut Option<RateLimiter>,
}

/// What handling a frame left to do (an answer it queued, a pong or the
/// close reply, is written before the step is taken).
enum Handled {
    Step(Step),
    /// The mount is paused (a reload): deliver this once it resumes.
    Paused(Incoming),
}

/// Handles one message or control frame from the client, without waiting.
fn on_frame<S>(
    caller: Caller<'_>,
    outbox: &OutboxReceiver,
    ws: &mut WebSocket<S>,
    incoming: Incoming,
    closing: bool,
) -> Handled
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Caller {
        app,
        connection,
        instance,
        rate,
    } = caller;
    let len = match &incoming {
        Incoming::Text(text) => text.len(),
        Incoming::Binary(bytes) => bytes.len(),
        Incoming::Ping(payload) => {
            ws.queue_pong(payload);
            return Handled::Step(Step::Continue);
        }
        // Any frame counts as a sign of life.
        Incoming::Pong => return Handled::Step(Step::Continue),
        Incoming::Close(payload) => {
            let ending = match payload {
                ClosePayload::Status { code, reason } => Ending::new(*code, reason.as_str()),
                ClosePayload::Empty => Ending::new(1005, ""),
            };
            if closing {
                // The answer to our own close frame.
                return Handled::Step(Step::End(ending));
            }
            // Answer with the client's code.
            ws.queue_close_reply(payload);
            return Handled::Step(Step::End(ending));
        }
    };
    app.metrics().messages_in.inc();
    app.metrics().bytes_in.inc_by(len as u64);
    if let Some(Err(exceeded)) = rate.as_mut().map(|r| r.spend(len)) {
        tracing::debug!(%exceeded, "closing a client over its rate limit");
        return Handled::Step(Step::Close(CloseRequest {
            code: 1008,
            reason: exceeded.to_string(),
        }));
    }
    if closing {
        // After our close frame, data is discarded (RFC 6455 §1.4).
        return Handled::Step(Step::Continue);
    }
    let scope = outbox.scope_id();
    let delivered = app.try_call(&connection.in_callback, instance, |app| {
        deliver(app, connection.id, scope, &incoming)
    });
    match delivered {
        Ok(result) => Handled::Step(delivered_step(result)),
        Err(_) => Handled::Paused(incoming),
    }
}

/// Calls `on_message` with a text or binary message (other frames never get here).
fn deliver(
    app: &AppInstance,
    id: ConnId,
    scope: ScopeId,
    incoming: &Incoming,
) -> Result<(), CallbackFailure> {
    match incoming {
        Incoming::Text(text) => {
            let bytes: &bytes::Bytes = text.as_ref();
            callback_scope::enter(scope, id, Some(bytes), || {
                app.on_message(id, MessageRef::Text(RStr::from_str(text.as_str())))
            })
        }
        Incoming::Binary(bytes) => callback_scope::enter(scope, id, Some(bytes), || {
            app.on_message(id, MessageRef::Binary(RSlice::from_slice(bytes)))
        }),
        _ => Ok(()),
    }
}

fn delivered_step(result: Result<(), CallbackFailure>) -> Step {
    match result {
        Ok(()) => Step::Continue,
        Err(_) => Step::Close(internal_error()),
    }
}

/// Delivers a message that arrived while the mount was paused, once it resumes.
async fn deliver_when_resumed(
    caller: Caller<'_>,
    outbox: &OutboxReceiver,
    incoming: Incoming,
) -> Step {
    let Caller {
        app,
        connection,
        instance,
        ..
    } = caller;
    let scope = outbox.scope_id();
    let result = app
        .call(&connection.in_callback, instance, |app| {
            deliver(app, connection.id, scope, &incoming)
        })
        .await;
    delivered_step(result)
}

/// Maps a read error to the close code RFC 6455 asks for.
async fn on_read_error(app: &MountedApp, id: ConnId, error: ReadError, closing: bool) -> Step {
    let code = match error.close_code() {
        None => {
            tracing::debug!(%error, "connection lost");
            let reason = match error {
                ReadError::Closed => "closed without a close frame",
                _ => "connection lost",
            };
            return Step::End(Ending::new(1006, reason));
        }
        Some(_) if closing => return Step::End(Ending::new(1006, "error while closing")),
        Some(code) => code,
    };
    let reason = match code {
        1009 => "message too big",
        1007 => "invalid UTF-8 in text message",
        _ => "protocol error",
    };
    tracing::debug!(%error, code, "closing on client error");
    let text = error.to_string();
    app.call_shared(|app| callback_scope::about(id, || app.on_error(id, &text)))
        .await;
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
