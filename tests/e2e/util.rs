//! Helpers shared by the test modules.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use switchboard_tests::Client;
use tokio_tungstenite::tungstenite::Message;

/// How long a test waits for any one thing to arrive.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

/// The next data or close message (pings and pongs skipped).
pub(crate) async fn next(ws: &mut Client) -> Message {
    loop {
        let message = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("timed out waiting for a message")
            .expect("connection ended")
            .expect("read error");
        if !matches!(message, Message::Ping(_) | Message::Pong(_)) {
            return message;
        }
    }
}

/// The next message, which must be text.
pub(crate) async fn next_text(ws: &mut Client) -> String {
    match next(ws).await {
        Message::Text(text) => text.as_str().to_owned(),
        other => panic!("expected text, got {other:?}"),
    }
}

/// Waits for the server's close frame; returns its code and reason.
pub(crate) async fn expect_close(ws: &mut Client) -> (u16, String) {
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("timed out waiting for close")
        {
            Some(Ok(Message::Close(Some(frame)))) => {
                return (frame.code.into(), frame.reason.as_str().to_owned())
            }
            Some(Ok(Message::Close(None))) => return (1005, String::new()),
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("error before close frame: {e}"),
            None => panic!("connection ended without a close frame"),
        }
    }
}

/// Sends a text message.
pub(crate) async fn send_text(ws: &mut Client, text: &str) {
    ws.send(Message::text(text)).await.expect("send");
}

/// Whether the stream ends (after a close) within the wait time.
pub(crate) async fn ends(ws: &mut Client) -> bool {
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await {
            Err(_) => return false,
            Ok(None) | Ok(Some(Err(_))) => return true,
            Ok(Some(Ok(_))) => continue,
        }
    }
}
