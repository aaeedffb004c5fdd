//! permessage-deflate (RFC 7692): the negotiation, and whole messages
//! compressed and decompressed.
//!
//! Memory decides the design. zlib keeps a 32 KiB window per direction plus
//! tables, a few hundred KiB per connection, and a server holds many
//! connections that are idle most of the time. So:
//! - the server always answers with `server_no_context_takeover` (RFC 7692
//!   §7.1.1.1 lets it, even unasked): each message is compressed on its own,
//!   by one compressor per worker thread, reset per message. A connection
//!   holds no compressor, and a message broadcast to many connections is
//!   compressed once per thread, not once per connection ([`Compressor`]'s
//!   cache);
//! - messages from the client are inflated by one decompressor per worker
//!   thread too. A client that keeps its context (browsers do) may refer back
//!   into its earlier messages, so its connection keeps the last
//!   2^`client_max_window_bits` bytes it sent (nothing until it sends a
//!   compressed message), and the thread's decompressor is primed with them
//!   as a dictionary. A client that offers `client_no_context_takeover` is
//!   asked to use it, and then the connection keeps nothing;
//! - a message inflates into a buffer that grows in steps and never past
//!   `max_message_size` + 1 bytes: a small message that would inflate to
//!   gigabytes is refused (1009) as soon as it crosses the limit.
//!
//! Invalid compressed data closes the connection with 1007 (invalid payload
//! data): its frames were well formed, and what they carry is not what their
//! RSV1 bit says it is, which is the same kind of fault as a text message
//! that is not UTF-8. Framing faults (RSV1 on a continuation or a control
//! frame) are 1002.

use std::cell::RefCell;

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

pub use crate::config::DeflateSettings;

/// The extension's name in `Sec-WebSocket-Extensions`.
pub const NAME: &str = "permessage-deflate";

/// The largest message the per-thread cache keeps (with its compressed form)
/// for the other recipients of a broadcast.
const CACHE_MAX: usize = 1 << 20;

/// What a compressed message ends with before the sender removes it (§7.2.1),
/// and the receiver puts back.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// What a negotiation settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreed {
    /// The window the server compresses with; below 9 it sends every message
    /// uncompressed (zlib cannot make raw deflate with an 8-bit window).
    pub server_window_bits: u8,
    /// The client's window: how much of its earlier messages it may refer to.
    pub client_window_bits: u8,
    /// The client resets its compressor after each message.
    pub client_no_context_takeover: bool,
    /// Messages smaller than this are sent uncompressed.
    pub threshold: usize,
}

/// One offer's parameters (§7.1).
#[derive(Debug, Default)]
struct Offer {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// `Some(None)`: offered without a value ("you may choose").
    client_max_window_bits: Option<Option<u8>>,
}

/// Tries the permessage-deflate offers among `header_values` (the
/// `Sec-WebSocket-Extensions` headers of a handshake) in order; the first one
/// the server can honour is agreed. Returns what was agreed and the value of
/// the response's `Sec-WebSocket-Extensions` header; `None` if there was no
/// offer, or none that can be honoured (the connection goes on uncompressed).
pub fn negotiate<'a>(
    header_values: impl IntoIterator<Item = &'a str>,
    settings: &DeflateSettings,
) -> Option<(Agreed, String)> {
    header_values
        .into_iter()
        .flat_map(|value| value.split(','))
        .filter_map(parse_offer)
        .find_map(|offer| accept(&offer, settings))
}

/// One extension of the header; `None` if it is not permessage-deflate or its
/// parameters are not valid (an unknown or repeated parameter, a bad value).
fn parse_offer(extension: &str) -> Option<Offer> {
    let mut parts = extension.split(';').map(str::trim);
    if !parts.next()?.eq_ignore_ascii_case(NAME) {
        return None;
    }
    let mut offer = Offer::default();
    for parameter in parts {
        let (name, value) = match parameter.split_once('=') {
            Some((name, value)) => (name.trim(), Some(unquote(value.trim())?)),
            None => (parameter, None),
        };
        match (name.to_ascii_lowercase().as_str(), value) {
            ("server_no_context_takeover", None) if !offer.server_no_context_takeover => {
                offer.server_no_context_takeover = true;
            }
            ("client_no_context_takeover", None) if !offer.client_no_context_takeover => {
                offer.client_no_context_takeover = true;
            }
            ("server_max_window_bits", Some(value)) if offer.server_max_window_bits.is_none() => {
                offer.server_max_window_bits = Some(window_bits(value)?);
            }
            ("client_max_window_bits", value) if offer.client_max_window_bits.is_none() => {
                let bits = match value {
                    Some(value) => Some(window_bits(value)?),
                    None => None,
                };
                offer.client_max_window_bits = Some(bits);
            }
            _ => return None,
        }
    }
    Some(offer)
}

/// A parameter value: a token or a quoted string (§7.1: the quoted form is
/// allowed and means the same).
fn unquote(value: &str) -> Option<&str> {
    match value.strip_prefix('"') {
        Some(rest) => rest.strip_suffix('"'),
        None => Some(value),
    }
}

/// A window size: 8 to 15, digits only, no leading zero (§7.1.2).
fn window_bits(value: &str) -> Option<u8> {
    if value.starts_with('0') || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let bits: u8 = value.parse().ok()?;
    (8..=15).contains(&bits).then_some(bits)
}

/// The server's answer to one valid offer.
fn accept(offer: &Offer, settings: &DeflateSettings) -> Option<(Agreed, String)> {
    let ours = settings.window_bits.clamp(8, 15);
    let server_window_bits = offer.server_max_window_bits.unwrap_or(15).min(ours);
    // Without the parameter the client may not be told a window: it uses 15.
    let client_window_bits = match offer.client_max_window_bits {
        Some(offered) => offered.unwrap_or(15).min(ours),
        None => 15,
    };
    let mut response = format!("{NAME}; server_no_context_takeover");
    if offer.server_max_window_bits.is_some() {
        response.push_str(&format!("; server_max_window_bits={server_window_bits}"));
    }
    // Offered: the server asks for it (unless told to let clients keep
    // context); not offered, it cannot.
    let client_no_context_takeover =
        offer.client_no_context_takeover && !settings.client_context_takeover;
    if client_no_context_takeover {
        response.push_str("; client_no_context_takeover");
    }
    if offer.client_max_window_bits.is_some() {
        response.push_str(&format!("; client_max_window_bits={client_window_bits}"));
    }
    Some((
        Agreed {
            server_window_bits,
            client_window_bits,
            client_no_context_takeover,
            threshold: settings.threshold,
        },
        response,
    ))
}

/// Why a compressed message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InflateError {
    /// It inflates past the message size limit.
    #[error("a compressed message inflates past the limit of {0} bytes")]
    TooBig(usize),
    /// It is not valid deflate data.
    #[error("invalid compressed data: {0}")]
    Invalid(String),
}

thread_local! {
    /// The worker thread's decompressor (raw deflate, 15-bit window: it reads
    /// data made with any smaller window too).
    static INFLATER: RefCell<Option<Decompress>> = const { RefCell::new(None) };
    /// The worker thread's compressors, one per window size 9..=15, made on
    /// first use.
    static DEFLATERS: RefCell<[Option<Compress>; 7]> = const { RefCell::new([None, None, None, None, None, None, None]) };
    /// The last message compressed on this thread, so a broadcast's copies
    /// for other connections reuse it: the original (kept, so that its address
    /// cannot be reused while it is the key), the window, the result.
    static LAST: RefCell<Option<(Bytes, u8, Option<Bytes>)>> = const { RefCell::new(None) };
}

/// Decompressing one connection's messages.
#[derive(Debug)]
pub struct Inflater {
    /// With the client's context kept: its last messages' bytes (at most the
    /// window), the dictionary its next message may refer to.
    history: Vec<u8>,
    /// Bytes of history to keep; 0 when the client resets per message.
    keep: usize,
}

impl Inflater {
    /// The decompressing side of `agreed`.
    pub fn new(agreed: &Agreed) -> Self {
        // zlib's quirk: asked for an 8-bit window, its deflate uses 9 bits,
        // so a zlib-based client told 8 may refer 512 bytes back.
        let keep = if agreed.client_no_context_takeover {
            0
        } else {
            1 << agreed.client_window_bits.max(9)
        };
        Inflater {
            history: Vec::new(),
            keep,
        }
    }

    /// Inflates one message (its frames' payloads joined), refusing it as soon
    /// as it grows past `limit` bytes.
    pub fn inflate(&mut self, compressed: &[u8], limit: usize) -> Result<Bytes, InflateError> {
        let out = INFLATER.with_borrow_mut(|slot| {
            let inflater = slot.get_or_insert_with(|| Decompress::new_with_window_bits(false, 15));
            inflater.reset(false);
            if !self.history.is_empty() {
                inflater
                    .set_dictionary(self.dictionary())
                    .map_err(|e| InflateError::Invalid(e.to_string()))?;
            }
            let result = inflate_into(inflater, compressed, limit);
            if result.is_err() {
                // A message cut off mid-stream leaves state behind.
                inflater.reset(false);
            }
            result
        })?;
        self.remember(&out);
        Ok(Bytes::from(out))
    }

    /// Keeps (at least) the last `keep` bytes of what the client has sent.
    /// Old bytes are dropped in steps of a quarter window, so that a stream of
    /// small messages does not move the whole window for each one.
    fn remember(&mut self, message: &[u8]) {
        if self.keep == 0 {
            return;
        }
        if message.len() >= self.keep {
            self.history.clear();
            self.history
                .extend_from_slice(&message[message.len() - self.keep..]);
            return;
        }
        let slack = (self.keep / 4).max(1024);
        if self.history.len() + message.len() > self.keep + slack {
            let excess = self.history.len() + message.len() - self.keep;
            self.history.drain(..excess);
        }
        self.history.extend_from_slice(message);
    }

    /// The dictionary for the next message: the last `keep` bytes.
    fn dictionary(&self) -> &[u8] {
        &self.history[self.history.len().saturating_sub(self.keep)..]
    }

    /// Bytes this connection holds for decompression.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.history.capacity()
    }
}

/// Runs `compressed` and the tail through `inflater` into a buffer that grows
/// as needed, never past `limit` + 1 bytes.
fn inflate_into(
    inflater: &mut Decompress,
    compressed: &[u8],
    limit: usize,
) -> Result<Vec<u8>, InflateError> {
    let too_big = || InflateError::TooBig(limit);
    let mut out: Vec<u8> = Vec::with_capacity(
        compressed
            .len()
            .saturating_mul(4)
            .clamp(64, limit.saturating_add(1)),
    );
    for input in [compressed, &TAIL[..]] {
        let mut used = 0;
        loop {
            if out.len() == out.capacity() {
                if out.len() > limit {
                    return Err(too_big());
                }
                let grow = out.len().max(4096).min(limit + 1 - out.len());
                out.reserve_exact(grow);
            }
            let (in_before, out_before) = (inflater.total_in(), out.len());
            let status = inflater
                .decompress_vec(&input[used..], &mut out, FlushDecompress::Sync)
                .map_err(|e| InflateError::Invalid(e.to_string()))?;
            used += (inflater.total_in() - in_before) as usize;
            if out.len() > limit {
                return Err(too_big());
            }
            if status == Status::StreamEnd {
                // A final block: nothing after it belongs to the message.
                return Ok(out);
            }
            if used == input.len() && out.len() < out.capacity() {
                break;
            }
            // There was room for output (made above): no progress means the
            // data cannot go on.
            if inflater.total_in() == in_before && out.len() == out_before {
                return Err(InflateError::Invalid(
                    "the data stops making progress".into(),
                ));
            }
        }
    }
    Ok(out)
}

/// Compressing one connection's messages.
#[derive(Debug, Clone, Copy)]
pub struct Compressor {
    window_bits: u8,
    threshold: usize,
}

impl Compressor {
    /// The compressing side of `agreed`.
    pub fn new(agreed: &Agreed) -> Self {
        Compressor {
            window_bits: agreed.server_window_bits,
            threshold: agreed.threshold,
        }
    }

    /// `payload` compressed (without the tail), or `None` when it goes
    /// uncompressed: smaller than the threshold, not smaller compressed, or a
    /// window zlib cannot make.
    pub fn compress(&self, payload: &Bytes) -> Option<Bytes> {
        if payload.len() < self.threshold || self.window_bits < 9 || payload.is_empty() {
            return None;
        }
        let cached = LAST.with_borrow(|last| match last {
            Some((original, bits, result))
                if original.as_ptr() == payload.as_ptr()
                    && original.len() == payload.len()
                    && *bits == self.window_bits =>
            {
                Some(result.clone())
            }
            _ => None,
        });
        if let Some(result) = cached {
            return result;
        }
        let result = DEFLATERS.with_borrow_mut(|deflaters| {
            let slot = &mut deflaters[usize::from(self.window_bits - 9)];
            let deflater = slot.get_or_insert_with(|| {
                Compress::new_with_window_bits(Compression::default(), false, self.window_bits)
            });
            deflater.reset();
            deflate_whole(deflater, payload)
        });
        // Kept until the thread compresses something else: not a message so
        // large that holding it would matter more than compressing it again.
        let keep = (payload.len() <= CACHE_MAX)
            .then(|| (payload.clone(), self.window_bits, result.clone()));
        LAST.with_borrow_mut(|last| *last = keep);
        result
    }
}

/// The whole of `payload`, sync-flushed, without the tail; `None` if it does
/// not come out smaller.
fn deflate_whole(deflater: &mut Compress, payload: &[u8]) -> Option<Bytes> {
    let mut out: Vec<u8> = Vec::with_capacity(payload.len() / 2 + 64);
    let mut used = 0;
    loop {
        if out.len() == out.capacity() {
            out.reserve(out.capacity().max(64));
        }
        let before = deflater.total_in();
        deflater
            .compress_vec(&payload[used..], &mut out, FlushCompress::Sync)
            .ok()?;
        used += (deflater.total_in() - before) as usize;
        // Done once all input is in and the flush left room to spare.
        if used == payload.len() && out.len() < out.capacity() {
            break;
        }
    }
    if out.ends_with(&TAIL) {
        out.truncate(out.len() - TAIL.len());
    }
    (out.len() < payload.len()).then(|| Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> DeflateSettings {
        DeflateSettings {
            threshold: 0,
            window_bits: 15,
            client_context_takeover: false,
        }
    }

    #[test]
    fn a_browser_offer_is_accepted_with_our_parameters() {
        let (agreed, response) =
            negotiate(["permessage-deflate; client_max_window_bits"], &settings()).unwrap();
        assert_eq!(
            response,
            "permessage-deflate; server_no_context_takeover; client_max_window_bits=15"
        );
        assert_eq!(agreed.server_window_bits, 15);
        assert_eq!(agreed.client_window_bits, 15);
        assert!(!agreed.client_no_context_takeover);
    }

    #[test]
    fn every_parameter_is_honoured() {
        let small = DeflateSettings {
            threshold: 0,
            window_bits: 12,
            client_context_takeover: false,
        };
        let (agreed, response) = negotiate(
            ["permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10; client_max_window_bits=\"14\""],
            &small,
        )
        .unwrap();
        assert_eq!(
            response,
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=10; client_no_context_takeover; client_max_window_bits=12"
        );
        assert_eq!(
            (agreed.server_window_bits, agreed.client_window_bits),
            (10, 12)
        );
        assert!(agreed.client_no_context_takeover);
        // Told to let clients keep context, the server does not ask.
        let keep = DeflateSettings {
            client_context_takeover: true,
            ..small
        };
        let (agreed, response) =
            negotiate(["permessage-deflate; client_no_context_takeover"], &keep).unwrap();
        assert_eq!(response, "permessage-deflate; server_no_context_takeover");
        assert!(!agreed.client_no_context_takeover);
        // Without client_max_window_bits the client is not told a window.
        let (agreed, response) = negotiate(["permessage-deflate"], &small).unwrap();
        assert_eq!(response, "permessage-deflate; server_no_context_takeover");
        assert_eq!(agreed.client_window_bits, 15);
    }

    #[test]
    fn bad_offers_are_declined_and_the_next_one_is_tried() {
        for bad in [
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; client_max_window_bits=abc",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; unknown_parameter",
            "x-webkit-deflate-frame",
        ] {
            assert!(negotiate([bad], &settings()).is_none(), "{bad}");
        }
        let (agreed, _) = negotiate(
            [
                "permessage-deflate; server_max_window_bits=99, permessage-deflate; client_max_window_bits=9",
            ],
            &settings(),
        )
        .unwrap();
        assert_eq!(agreed.client_window_bits, 9, "the second offer");
        assert!(negotiate(Vec::<&str>::new(), &settings()).is_none());
    }

    /// What a client sends: raw deflate, sync-flushed, tail removed.
    fn client_compress(compressor: &mut Compress, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len() + 64);
        compressor
            .compress_vec(data, &mut out, FlushCompress::Sync)
            .unwrap();
        assert!(out.ends_with(&TAIL));
        out.truncate(out.len() - 4);
        out
    }

    #[test]
    fn context_takeover_across_messages_and_a_reset_per_message() {
        let (agreed, _) =
            negotiate(["permessage-deflate; client_max_window_bits"], &settings()).unwrap();
        let mut inflater = Inflater::new(&agreed);
        let mut client = Compress::new_with_window_bits(Compression::default(), false, 15);
        let message = br#"{"type":"say","room":"lobby","text":"hello, everyone in the lobby"}"#;
        let mut sizes = Vec::new();
        for _ in 0..20 {
            let compressed = client_compress(&mut client, message);
            sizes.push(compressed.len());
            let plain = inflater.inflate(&compressed, 1 << 20).unwrap();
            assert_eq!(&plain[..], &message[..]);
        }
        assert!(
            sizes[5] < sizes[0] / 2,
            "later messages refer back: {sizes:?}"
        );
        assert!(inflater.held() >= message.len());

        let (agreed, _) = negotiate(
            ["permessage-deflate; client_no_context_takeover"],
            &settings(),
        )
        .unwrap();
        let mut inflater = Inflater::new(&agreed);
        for _ in 0..3 {
            let mut fresh = Compress::new_with_window_bits(Compression::default(), false, 15);
            let compressed = client_compress(&mut fresh, message);
            assert_eq!(
                &inflater.inflate(&compressed, 1 << 20).unwrap()[..],
                &message[..]
            );
        }
        assert_eq!(inflater.held(), 0, "nothing kept without context takeover");
    }

    #[test]
    fn a_bomb_is_refused_at_the_limit_and_garbage_is_invalid() {
        let mut client = Compress::new_with_window_bits(Compression::best(), false, 15);
        let bomb = client_compress(&mut client, &vec![0u8; 8 << 20]);
        assert!(bomb.len() < 16 << 10, "{} bytes", bomb.len());
        let (agreed, _) = negotiate(["permessage-deflate"], &settings()).unwrap();
        let mut inflater = Inflater::new(&agreed);
        assert_eq!(
            inflater.inflate(&bomb, 1 << 20),
            Err(InflateError::TooBig(1 << 20))
        );
        assert!(matches!(
            inflater.inflate(&[0xff, 0xff, 0xff, 0xff, 0x00], 1 << 20),
            Err(InflateError::Invalid(_))
        ));
        // The thread's inflater is usable again after both.
        let mut client = Compress::new_with_window_bits(Compression::default(), false, 15);
        let ok = client_compress(&mut client, b"fine");
        let mut inflater = Inflater::new(&agreed);
        assert_eq!(&inflater.inflate(&ok, 100).unwrap()[..], b"fine");
    }

    #[test]
    fn compression_round_trips_and_is_shared_and_skipped_when_it_does_not_pay() {
        let (agreed, _) = negotiate(["permessage-deflate"], &settings()).unwrap();
        let compressor = Compressor::new(&agreed);
        let payload = Bytes::from(
            r#"{"type":"message","text":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}"#.repeat(10),
        );
        let compressed = compressor.compress(&payload).unwrap();
        assert!(compressed.len() < payload.len() / 4);
        let again = compressor.compress(&payload.clone()).unwrap();
        assert_eq!(
            again.as_ptr(),
            compressed.as_ptr(),
            "compressed once for the same message"
        );
        let mut inflater = Inflater::new(&agreed);
        assert_eq!(inflater.inflate(&compressed, 1 << 20).unwrap(), payload);
        // Random-looking bytes do not shrink: sent as they are.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let noise: Vec<u8> = (0..2000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        assert!(compressor.compress(&Bytes::from(noise)).is_none());
        // Under the threshold, or with an 8-bit window: uncompressed.
        let tiny = Compressor {
            window_bits: 15,
            threshold: 1000,
        };
        assert!(tiny.compress(&payload.slice(..100)).is_none());
        let eight = Compressor {
            window_bits: 8,
            threshold: 0,
        };
        assert!(eight.compress(&payload).is_none());
    }
}
