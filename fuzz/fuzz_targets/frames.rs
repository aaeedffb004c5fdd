//! The server's WebSocket frame reader, with permessage-deflate negotiated
//! from an offer the input also chooses: any bytes a client may send after
//! its handshake. Every frame and every compressed message must end in a
//! message or an error with a close code, within the limits.
#![no_main]

use std::task::{Context, Poll, Waker};

use libfuzzer_sys::fuzz_target;
use switchboard::config::DeflateSettings;
use switchboard::websocket::deflate::{negotiate, Inflater};
use switchboard::websocket::read::{ReadLimits, Reader};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the server's settings; up to the first newline is
    // the client's Sec-WebSocket-Extensions; the rest is the wire.
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let (offer, wire) = match rest.iter().position(|b| *b == b'\n') {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (&rest[..0], rest),
    };
    let settings = DeflateSettings {
        threshold: 0,
        window_bits: 8 + (flags & 7),
        client_context_takeover: flags & 0x80 != 0,
    };
    let agreed = std::str::from_utf8(offer)
        .ok()
        .and_then(|offer| negotiate([offer], &settings));
    if let Some((_, answer)) = &agreed {
        assert!(answer.starts_with("permessage-deflate; server_no_context_takeover"));
    }
    let limits = ReadLimits {
        max_message_size: 1 << 16,
        max_frame_size: 1 << 16,
        read_size: 4096,
    };
    let mut reader = Reader::new(limits, wire, agreed.map(|(a, _)| Inflater::new(&a)));
    let mut io = tokio::io::empty();
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..10_000 {
        match reader.poll_next(&mut cx, &mut io) {
            Poll::Ready(Ok(message)) => {
                let _ = format!("{message:?}").len();
            }
            Poll::Ready(Err(error)) => {
                let _ = error.close_code();
                break;
            }
            Poll::Pending => break,
        }
    }
});
