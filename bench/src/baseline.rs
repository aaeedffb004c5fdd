//! The baseline: the simplest correct tokio-tungstenite echo server, configured
//! like Switchboard (same read buffer, limits and write buffer). Whatever
//! Switchboard adds (HTTP via hyper, the plugin call across the ABI, the
//! outbox, the registry) shows up as the difference from this.

use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

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

/// Serves echo on `listen` until SIGTERM or Ctrl-C; prints `listening on ADDR` first.
pub(crate) async fn serve(listen: SocketAddr, read_buffer: usize) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    println!("listening on {}", listener.local_addr()?);
    let config = websocket_config(read_buffer);
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => accepted?,
            _ = terminate.recv() => return Ok(()),
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        stream.set_nodelay(true)?;
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
