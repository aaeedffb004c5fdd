//! The WebSocket protocol (RFC 6455) on an upgraded server connection: frames
//! in, messages out, written by this crate rather than through tungstenite's
//! stream, because the costs that matter are where bytes are kept:
//! tungstenite zero-fills a per-connection read buffer before every read
//! (measured as half the instructions of a small echo) and holds it for the
//! connection's lifetime. Here reads go through one buffer per worker thread,
//! a message is copied once into a buffer of its own size, large frames are
//! read straight into their message, and queued frames leave in one
//! (vectored) write; an idle connection holds no buffer (`release_idle`).
//!
//! The handshake stays with hyper and `tungstenite::handshake`; `frame` is
//! the wire format, `read` and `write` the two directions.

pub mod deflate;
pub mod frame;
pub mod read;
pub mod write;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::Message;

pub use frame::{ClosePayload, OpCode};
pub use read::{Incoming, ReadError, ReadLimits};

use read::Reader;
use write::Writer;

/// One server-side WebSocket connection.
#[derive(Debug)]
pub struct WebSocket<S> {
    io: S,
    reader: Reader,
    writer: Writer,
    /// With permessage-deflate: what compresses outgoing messages.
    compressor: Option<deflate::Compressor>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> WebSocket<S> {
    /// The protocol over `io`, starting with `leftover`, bytes the handshake
    /// read past its end; `deflate`: what the handshake agreed on
    /// permessage-deflate, if it did.
    pub fn new(
        io: S,
        leftover: &[u8],
        limits: ReadLimits,
        deflate: Option<&deflate::Agreed>,
    ) -> Self {
        WebSocket {
            io,
            reader: Reader::new(limits, leftover, deflate.map(deflate::Inflater::new)),
            writer: Writer::default(),
            compressor: deflate.map(deflate::Compressor::new),
        }
    }

    /// The next message or control frame from the client (cancel-safe).
    pub async fn read(&mut self) -> Result<Incoming, ReadError> {
        std::future::poll_fn(|cx| self.reader.poll_next(cx, &mut self.io)).await
    }

    /// Queues a message (written by [`flush`](Self::flush)).
    pub fn queue(&mut self, message: &Message) {
        match message {
            Message::Text(text) => self.queue_data(OpCode::Text, text.as_ref()),
            Message::Binary(bytes) => self.queue_data(OpCode::Binary, bytes),
            Message::Ping(bytes) => self.writer.queue(OpCode::Ping, false, bytes),
            Message::Pong(bytes) => self.writer.queue(OpCode::Pong, false, bytes),
            Message::Close(frame) => {
                let (code, reason) = frame
                    .as_ref()
                    .map_or((1000, ""), |f| (u16::from(f.code), f.reason.as_str()));
                self.writer.queue_close(code, reason);
            }
            // Raw frames are never queued by the server.
            Message::Frame(_) => {}
        }
    }

    /// Queues a data message, compressed when that was agreed and pays.
    fn queue_data(&mut self, opcode: OpCode, payload: &Bytes) {
        match self.compressor.as_ref().and_then(|c| c.compress(payload)) {
            Some(compressed) => self.writer.queue(opcode, true, &compressed),
            None => self.writer.queue(opcode, false, payload),
        }
    }

    /// Queues the answer to a ping.
    pub fn queue_pong(&mut self, payload: &Bytes) {
        self.writer.queue(OpCode::Pong, false, payload);
    }

    /// Queues a close frame.
    pub fn queue_close(&mut self, code: u16, reason: &str) {
        self.writer.queue_close(code, reason);
    }

    /// Queues the answer to the client's close frame: its own status code and
    /// reason, or none if it sent none (RFC 6455 §5.5.1).
    pub fn queue_close_reply(&mut self, payload: &ClosePayload) {
        match payload {
            ClosePayload::Empty => self.writer.queue(OpCode::Close, false, &Bytes::new()),
            ClosePayload::Status { code, reason } => self.writer.queue_close(*code, reason),
        }
    }

    /// Writes everything queued (cancel-safe).
    pub async fn flush(&mut self) -> std::io::Result<()> {
        std::future::poll_fn(|cx| self.poll_flush(cx)).await
    }

    /// Writes what is queued; ready once all of it is written.
    pub fn poll_flush(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.writer.poll_flush(cx, &mut self.io)
    }

    /// Whether queued frames wait to be written.
    pub fn has_queued(&self) -> bool {
        !self.writer.is_empty()
    }

    /// Gives back buffers kept from earlier traffic; for a connection that has
    /// been quiet for a while.
    pub fn release_idle(&mut self) {
        self.reader.release_idle();
        self.writer.release_idle();
    }

    /// The socket.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.io
    }
}

/// Polls once and reports whether it was ready (tests).
#[cfg(test)]
fn now<T>(future: impl std::future::Future<Output = T>) -> Option<T> {
    let mut future = std::pin::pin!(future);
    let waker = futures_util::task::noop_waker();
    match future
        .as_mut()
        .poll(&mut std::task::Context::from_waker(&waker))
    {
        std::task::Poll::Ready(value) => Some(value),
        std::task::Poll::Pending => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_read_waiting_for_bytes_can_be_cancelled_and_resumed() {
        let (mut client, server) = tokio::io::duplex(1024);
        let limits = ReadLimits {
            max_message_size: 1024,
            max_frame_size: 1024,
            read_size: 4096,
        };
        let mut ws = WebSocket::new(server, &[], limits, None);
        // Half a frame, then a cancelled read, then the rest.
        let mut wire = vec![0x81, 0x82, 0, 0, 0, 0];
        wire.extend_from_slice(b"hi");
        client.write_all(&wire[..4]).await.unwrap();
        assert!(now(ws.read()).is_none());
        client.write_all(&wire[4..]).await.unwrap();
        assert_eq!(ws.read().await.unwrap(), Incoming::Text("hi".into()));

        ws.queue(&Message::text("yo"));
        ws.queue_close(1001, "bye");
        ws.flush().await.unwrap();
        let mut got = [0u8; 11];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(
            &got,
            &[0x81, 2, b'y', b'o', 0x88, 5, 0x03, 0xE9, b'b', b'y', b'e']
        );
    }
}
