//! Reading a client's messages: frames parsed, unmasked, checked and
//! reassembled, with the limits applied from each frame's header, before its
//! payload is read.
//!
//! Where the bytes go, which is what makes this cheaper than a general-purpose
//! codec:
//! - a socket is read into a buffer of the worker thread's (reused, never
//!   zero-filled again), and a message is copied out of it, unmasked on the
//!   way, into a buffer of exactly its size: an idle connection holds no read
//!   buffer at all;
//! - the remainder of a large frame is read straight into its message's
//!   buffer, reserved from the frame's length, and unmasked in place;
//! - bytes read past the end of a message (a client that pipelines) are
//!   carried in a buffer of the connection's own until they are parsed.

use std::cell::RefCell;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::AsyncRead;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::io::poll_read_buf;

use super::deflate::{InflateError, Inflater};
use super::frame::{self, CloseError, ClosePayload, Header, HeaderError, OpCode};

/// Most bytes reserved for a message before its bytes arrive: a frame's
/// header may announce a large payload it never sends.
const RESERVE_AHEAD: usize = 1 << 20;

thread_local! {
    /// The worker thread's read buffer, shared by every connection it polls:
    /// filled and emptied within one poll.
    static SCRATCH: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// The limits a reader applies.
#[derive(Debug, Clone, Copy)]
pub struct ReadLimits {
    /// Largest message (1009 beyond).
    pub max_message_size: usize,
    /// Largest frame (1009 beyond).
    pub max_frame_size: usize,
    /// Most bytes taken from the socket in one read.
    pub read_size: usize,
}

/// A message or control frame from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A text message (valid UTF-8).
    Text(Utf8Bytes),
    /// A binary message.
    Binary(Bytes),
    /// A ping, to be answered with a pong carrying its payload.
    Ping(Bytes),
    /// A pong.
    Pong,
    /// A close frame.
    Close(ClosePayload),
}

/// Why reading stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The client closed the TCP connection without a close frame.
    #[error("connection closed without a close frame")]
    Closed,
    /// The socket failed.
    #[error("read failed: {0}")]
    Io(#[from] std::io::Error),
    /// A frame the protocol forbids.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A frame or message over the limit.
    #[error("message too big: {0}")]
    TooBig(String),
    /// A text message or close reason that is not UTF-8.
    #[error("invalid UTF-8 in a text message or close reason")]
    Utf8,
    /// A compressed message whose data does not inflate (permessage-deflate).
    #[error("{0}")]
    Compression(String),
}

impl ReadError {
    /// The close code RFC 6455 answers this with; `None` if the connection is gone.
    pub fn close_code(&self) -> Option<u16> {
        match self {
            ReadError::Closed | ReadError::Io(_) => None,
            ReadError::Protocol(_) => Some(1002),
            ReadError::TooBig(_) => Some(1009),
            ReadError::Utf8 | ReadError::Compression(_) => Some(1007),
        }
    }
}

impl From<HeaderError> for ReadError {
    fn from(error: HeaderError) -> Self {
        ReadError::Protocol(error.to_string())
    }
}

/// A frame whose header is read and whose payload is still arriving.
#[derive(Debug)]
struct FrameInProgress {
    opcode: OpCode,
    fin: bool,
    mask: [u8; 4],
    /// Payload bytes received so far (the masking offset).
    received: usize,
    remaining: usize,
}

/// A data message being assembled from its frames.
#[derive(Debug)]
struct MessageInProgress {
    text: bool,
    /// Its first frame had RSV1 (permessage-deflate): the payload is compressed.
    compressed: bool,
    payload: BytesMut,
}

/// One connection's reading state.
#[derive(Debug)]
pub struct Reader {
    limits: ReadLimits,
    /// Read and not parsed yet (empty, without an allocation, nearly always).
    carried: BytesMut,
    frame: Option<FrameInProgress>,
    message: Option<MessageInProgress>,
    /// The payload of the control frame in progress.
    control: BytesMut,
    /// With permessage-deflate negotiated: RSV1 marks compressed messages.
    inflater: Option<Box<Inflater>>,
}

impl Reader {
    /// A reader that starts with `leftover`, bytes read with the handshake;
    /// with `inflater`, compressed messages are inflated.
    pub fn new(limits: ReadLimits, leftover: &[u8], inflater: Option<Inflater>) -> Self {
        Reader {
            limits,
            carried: BytesMut::from(leftover),
            frame: None,
            message: None,
            control: BytesMut::new(),
            inflater: inflater.map(Box::new),
        }
    }

    /// Reads until a message or control frame is complete. Cancel-safe: what
    /// was read stays in the reader.
    pub fn poll_next<S: AsyncRead + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut S,
    ) -> Poll<Result<Incoming, ReadError>> {
        loop {
            if !self.carried.is_empty() {
                let mut carried = std::mem::take(&mut self.carried);
                let (used, incoming) = self.parse(&carried)?;
                carried.advance(used);
                if !carried.is_empty() {
                    self.carried = carried;
                }
                if let Some(incoming) = incoming {
                    return Poll::Ready(Ok(incoming));
                }
            }
            if let Some(incoming) = ready!(self.poll_read_more(cx, io))? {
                return Poll::Ready(Ok(incoming));
            }
        }
    }

    /// One read from the socket, parsed as far as it goes.
    fn poll_read_more<S: AsyncRead + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut S,
    ) -> Poll<Result<Option<Incoming>, ReadError>> {
        let read_size = self.limits.read_size;
        if let (Some(frame), Some(message), true) =
            (&mut self.frame, &mut self.message, self.carried.is_empty())
        {
            if !frame.opcode.is_control() && frame.remaining >= read_size {
                // The rest of a large frame: straight into its message.
                let start = message.payload.len();
                message.payload.reserve(frame.remaining.min(RESERVE_AHEAD));
                let mut limited = (&mut message.payload).limit(frame.remaining);
                let n = ready!(poll_read_buf(Pin::new(io), cx, &mut limited))?;
                if n == 0 {
                    return Poll::Ready(Err(ReadError::Closed));
                }
                frame::apply_mask(&mut message.payload[start..], frame.mask, frame.received);
                frame.received += n;
                frame.remaining -= n;
                return Poll::Ready(if frame.remaining == 0 {
                    self.finish_frame()
                } else {
                    Ok(None)
                });
            }
        }
        SCRATCH.with_borrow_mut(|scratch| {
            scratch.clear();
            scratch.reserve(read_size);
            let n = ready!(poll_read_buf(
                Pin::new(io),
                cx,
                &mut (&mut *scratch).limit(read_size)
            ))?;
            if n == 0 {
                return Poll::Ready(Err(ReadError::Closed));
            }
            if !self.carried.is_empty() {
                self.carried.extend_from_slice(scratch);
                return Poll::Ready(Ok(None));
            }
            let (used, incoming) = self.parse(scratch)?;
            if used < scratch.len() {
                self.carried.extend_from_slice(&scratch[used..]);
            }
            Poll::Ready(Ok(incoming))
        })
    }

    /// Consumes `input` until a message or control frame is complete or the
    /// input runs out; returns how much was used (a partial header is left).
    fn parse(&mut self, input: &[u8]) -> Result<(usize, Option<Incoming>), ReadError> {
        let mut pos = 0;
        loop {
            if let Some(frame) = &mut self.frame {
                let take = frame.remaining.min(input.len() - pos);
                let (mask, offset, control) =
                    (frame.mask, frame.received, frame.opcode.is_control());
                frame.received += take;
                frame.remaining -= take;
                let done = frame.remaining == 0;
                let bytes = &input[pos..pos + take];
                pos += take;
                if control {
                    append_unmasked(&mut self.control, bytes, mask, offset);
                } else if let Some(message) = &mut self.message {
                    // A data frame always has its message (`start_frame`).
                    append_unmasked(&mut message.payload, bytes, mask, offset);
                }
                if !done {
                    return Ok((pos, None));
                }
                if let Some(incoming) = self.finish_frame()? {
                    return Ok((pos, Some(incoming)));
                }
                continue;
            }
            match frame::parse_header(&input[pos..], self.inflater.is_some())? {
                None => return Ok((pos, None)),
                Some((header, len)) => {
                    pos += len;
                    self.start_frame(header)?;
                }
            }
        }
    }

    /// Checks a new frame against the message in progress and the limits.
    fn start_frame(&mut self, header: Header) -> Result<(), ReadError> {
        let len = usize::try_from(header.len).unwrap_or(usize::MAX);
        if len > self.limits.max_frame_size {
            return Err(ReadError::TooBig(format!(
                "a frame of {len} bytes (the limit is {})",
                self.limits.max_frame_size
            )));
        }
        if header.rsv1 && !matches!(header.opcode, OpCode::Text | OpCode::Binary) {
            // RFC 7692 §6.1: only a data message's first frame carries it.
            return Err(ReadError::Protocol(format!(
                "RSV1 set on a {} frame",
                if header.opcode.is_control() {
                    "control"
                } else {
                    "continuation"
                }
            )));
        }
        match header.opcode {
            OpCode::Text | OpCode::Binary => {
                if self.message.is_some() {
                    return Err(ReadError::Protocol(
                        "a new message began before the previous one ended".into(),
                    ));
                }
                self.check_message_size(len)?;
                self.message = Some(MessageInProgress {
                    text: header.opcode == OpCode::Text,
                    compressed: header.rsv1,
                    payload: BytesMut::with_capacity(len.min(RESERVE_AHEAD)),
                });
            }
            OpCode::Continuation => {
                let Some(message) = &self.message else {
                    return Err(ReadError::Protocol(
                        "a continuation frame without a message to continue".into(),
                    ));
                };
                self.check_message_size(message.payload.len().saturating_add(len))?;
            }
            OpCode::Close | OpCode::Ping | OpCode::Pong => self.control.clear(),
        }
        self.frame = Some(FrameInProgress {
            opcode: header.opcode,
            fin: header.fin,
            mask: header.mask,
            received: 0,
            remaining: len,
        });
        Ok(())
    }

    fn check_message_size(&self, len: usize) -> Result<(), ReadError> {
        if len > self.limits.max_message_size {
            return Err(ReadError::TooBig(format!(
                "a message of {len} bytes or more (the limit is {})",
                self.limits.max_message_size
            )));
        }
        Ok(())
    }

    /// The frame in progress is complete: what it completes, if anything.
    fn finish_frame(&mut self) -> Result<Option<Incoming>, ReadError> {
        let Some(frame) = self.frame.take() else {
            return Ok(None);
        };
        match frame.opcode {
            OpCode::Text | OpCode::Binary | OpCode::Continuation => {
                if !frame.fin {
                    return Ok(None);
                }
                let Some(message) = self.message.take() else {
                    return Ok(None);
                };
                let payload = match (message.compressed, &mut self.inflater) {
                    (true, Some(inflater)) => inflater
                        .inflate(&message.payload, self.limits.max_message_size)
                        .map_err(|error| match error {
                            InflateError::TooBig(_) => ReadError::TooBig(error.to_string()),
                            InflateError::Invalid(_) => ReadError::Compression(error.to_string()),
                        })?,
                    _ => message.payload.freeze(),
                };
                if message.text {
                    Utf8Bytes::try_from(payload)
                        .map(|text| Some(Incoming::Text(text)))
                        .map_err(|_| ReadError::Utf8)
                } else {
                    Ok(Some(Incoming::Binary(payload)))
                }
            }
            OpCode::Ping => Ok(Some(Incoming::Ping(Bytes::copy_from_slice(&self.control)))),
            OpCode::Pong => Ok(Some(Incoming::Pong)),
            OpCode::Close => match frame::parse_close(&self.control) {
                Ok(payload) => Ok(Some(Incoming::Close(payload))),
                Err(CloseError::BadCode) => Err(ReadError::Protocol(
                    "close frame with an invalid status code".into(),
                )),
                Err(CloseError::BadReason) => Err(ReadError::Utf8),
            },
        }
    }

    /// Gives back the memory an idle connection does not need.
    pub fn release_idle(&mut self) {
        if self.control.capacity() > 0 && self.frame.is_none() {
            self.control = BytesMut::new();
        }
    }
}

/// Appends `bytes`, payload bytes from `offset` on, unmasked.
fn append_unmasked(buf: &mut BytesMut, bytes: &[u8], mask: [u8; 4], offset: usize) {
    let start = buf.len();
    buf.extend_from_slice(bytes);
    frame::apply_mask(&mut buf[start..], mask, offset);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    const LIMITS: ReadLimits = ReadLimits {
        max_message_size: 1 << 20,
        max_frame_size: 1 << 20,
        read_size: 4096,
    };

    fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
        frame::masked(first, payload, [0xA1, 0xB2, 0xC3, 0xD4])
    }

    /// Feeds `wire` to a reader in pieces of `piece` bytes; collects what it reads.
    async fn read_all(
        wire: Vec<u8>,
        piece: usize,
        limits: ReadLimits,
    ) -> Vec<Result<Incoming, String>> {
        let (mut client, mut server) = tokio::io::duplex(1 << 22);
        tokio::spawn(async move {
            for chunk in wire.chunks(piece) {
                client.write_all(chunk).await.unwrap();
                tokio::task::yield_now().await;
            }
        });
        let mut reader = Reader::new(limits, &[], None);
        let mut out = Vec::new();
        loop {
            match std::future::poll_fn(|cx| reader.poll_next(cx, &mut server)).await {
                Ok(incoming) => out.push(Ok(incoming)),
                Err(ReadError::Closed) => return out,
                Err(error) => {
                    out.push(Err(error.to_string()));
                    return out;
                }
            }
        }
    }

    #[tokio::test]
    async fn messages_come_out_whole_however_the_bytes_are_cut() {
        let big: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        let mut wire = masked(0x81, b"hello");
        wire.extend(masked(0x02, &big[..30_000]));
        wire.extend(masked(0x89, b"are you there"));
        wire.extend(masked(0x80, &big[30_000..]));
        wire.extend(masked(0x8A, b""));
        wire.extend(masked(0x88, &[0x03, 0xE8, b'b', b'y', b'e']));
        for piece in [1, 3, 7, 100, 4096, 1 << 20] {
            let got = read_all(wire.clone(), piece, LIMITS).await;
            assert_eq!(
                got,
                vec![
                    Ok(Incoming::Text("hello".into())),
                    Ok(Incoming::Ping(Bytes::from_static(b"are you there"))),
                    Ok(Incoming::Binary(Bytes::from(big.clone()))),
                    Ok(Incoming::Pong),
                    Ok(Incoming::Close(ClosePayload::Status {
                        code: 1000,
                        reason: "bye".into()
                    })),
                ],
                "pieces of {piece}"
            );
        }
    }

    #[tokio::test]
    async fn limits_apply_from_the_header() {
        let limits = ReadLimits {
            max_message_size: 100,
            max_frame_size: 60,
            read_size: 4096,
        };
        let got = read_all(masked(0x82, &[0; 61]), 4096, limits).await;
        assert!(
            matches!(&got[..], [Err(e)] if e.contains("frame of 61")),
            "{got:?}"
        );
        let mut wire = masked(0x02, &[0; 60]);
        wire.extend(masked(0x80, &[0; 41]));
        let got = read_all(wire, 4096, limits).await;
        assert!(
            matches!(&got[..], [Err(e)] if e.contains("message of 101")),
            "{got:?}"
        );
    }

    #[tokio::test]
    async fn broken_sequences_are_protocol_errors() {
        let got = read_all(masked(0x80, b"x"), 4096, LIMITS).await;
        assert!(matches!(&got[..], [Err(e)] if e.contains("continuation")));
        let mut wire = masked(0x01, b"a");
        wire.extend(masked(0x81, b"b"));
        let got = read_all(wire, 4096, LIMITS).await;
        assert!(matches!(&got[..], [Err(e)] if e.contains("new message")));
        let got = read_all(masked(0x81, &[0xC3, 0x28]), 4096, LIMITS).await;
        assert!(matches!(&got[..], [Err(e)] if e.contains("UTF-8")));
        let got = read_all(masked(0x88, &[0x03, 0xED]), 4096, LIMITS).await;
        assert!(matches!(&got[..], [Err(e)] if e.contains("status code")));
    }

    #[tokio::test]
    async fn leftover_handshake_bytes_are_read_first() {
        let wire = masked(0x81, b"early");
        let (_client, mut server) = tokio::io::duplex(64);
        let mut reader = Reader::new(LIMITS, &wire, None);
        let got = std::future::poll_fn(|cx| reader.poll_next(cx, &mut server)).await;
        assert_eq!(got.unwrap(), Incoming::Text("early".into()));
        assert!(reader.carried.is_empty() && reader.carried.capacity() == 0);
    }
}
