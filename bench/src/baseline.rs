//! The baseline: the simplest correct tokio-tungstenite echo server, configured
//! like Switchboard (same read buffer, limits and write buffer). Whatever
//! Switchboard adds (HTTP via hyper, the plugin call across the ABI, the
//! outbox, the registry) shows up as the difference from this.
//!
//! With `--broadcast` it is instead the simplest fan-out server of the same
//! stack: a data message from one connection goes to every other connection,
//! through a `tokio::sync::broadcast` channel each connection task listens on.

use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

/// The tungstenite settings both servers use.
pub(crate) fn websocket_config(read_buffer: usize) -> WebSocketConfig {
    let mut config = WebSocketConfig::default();
    config.read_buffer_size = read_buffer;
    config.write_buffer_size = 16 * 1024;
    config.max_write_buffer_size = 16 * 1024 + (64 << 20) + 64;
    config.max_message_size = Some(16 << 20);
    config.max_frame_size = Some(16 << 20);
    config
}

/// Serves echo (or, with `broadcast`, fan-out) on `listen` until SIGTERM or
/// Ctrl-C; prints `listening on ADDR` first.
pub(crate) async fn serve(
    listen: SocketAddr,
    read_buffer: usize,
    broadcast: bool,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    println!("listening on {}", listener.local_addr()?);
    let config = websocket_config(read_buffer);
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let fan_out = tokio::sync::broadcast::channel::<(u64, Message)>(1024).0;
    let mut next_id = 0u64;
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => accepted?,
            _ = terminate.recv() => return Ok(()),
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        stream.set_nodelay(true)?;
        if broadcast {
            let channel = fan_out.clone();
            next_id += 1;
            tokio::spawn(listen_and_relay(stream, config, next_id, channel));
            continue;
        }
        tokio::spawn(async move {
            let Ok(mut ws) =
                tokio_tungstenite::accept_async_with_config(stream, Some(config)).await
            else {
                return;
            };
            while let Some(Ok(message)) = ws.next().await {
                if message.is_text() || message.is_binary() {
                    if ws.send(message).await.is_err() {
                        return;
                    }
                } else if message.is_close() {
                    return;
                }
            }
        });
    }
}

/// One connection of the fan-out server: its data messages go to the
/// channel, and the channel's messages from the others go to it.
async fn listen_and_relay(
    stream: TcpStream,
    config: WebSocketConfig,
    id: u64,
    channel: tokio::sync::broadcast::Sender<(u64, Message)>,
) {
    let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await else {
        return;
    };
    let mut relayed = channel.subscribe();
    loop {
        tokio::select! {
            received = ws.next() => match received {
                Some(Ok(message)) if message.is_text() || message.is_binary() => {
                    let _ = channel.send((id, message));
                }
                Some(Ok(message)) if message.is_close() => return,
                Some(Ok(_)) => {}
                _ => return,
            },
            relayed_message = relayed.recv() => match relayed_message {
                Ok((from, message)) if from != id => {
                    if ws.send(message).await.is_err() {
                        return;
                    }
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}
