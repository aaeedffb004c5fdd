//! RFC 6455 §5.2 frames: parsing a client's frame header, writing a server's,
//! unmasking, and the close frame's payload.
//!
//! Only what a server needs: clients must mask (§5.1), servers never do.

use std::fmt;

/// Largest header a frame can have: 2 bytes, an 8-byte length, a 4-byte mask.
pub const MAX_HEADER_LEN: usize = 14;

/// Largest payload of a control frame (§5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// A frame's opcode (§5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    /// 0x0: more of a fragmented message.
    Continuation,
    /// 0x1
    Text,
    /// 0x2
    Binary,
    /// 0x8
    Close,
    /// 0x9
    Ping,
    /// 0xA
    Pong,
}

impl OpCode {
    fn from_bits(bits: u8) -> Option<OpCode> {
        Some(match bits {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            _ => return None,
        })
    }

    fn bits(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }

    /// Close, ping or pong.
    pub fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }
}

/// A client frame's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The last frame of its message.
    pub fin: bool,
    /// RSV1 (§5.2; permessage-deflate's "compressed" bit).
    pub rsv1: bool,
    /// What the frame carries.
    pub opcode: OpCode,
    /// The payload's length.
    pub len: u64,
    /// The masking key.
    pub mask: [u8; 4],
}

/// A frame the protocol does not allow (answered with 1002).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// RSV2 or RSV3 set, or RSV1 without an extension that defines it.
    ReservedBits,
    /// An opcode RFC 6455 reserves.
    UnknownOpcode(u8),
    /// A client frame without a mask (§5.1).
    Unmasked,
    /// A control frame fragmented or longer than 125 bytes (§5.5).
    BadControlFrame,
    /// A 64-bit length with its most significant bit set, or a length not in
    /// its shortest form.
    BadLength,
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::ReservedBits => f.write_str("reserved bits set"),
            HeaderError::UnknownOpcode(bits) => write!(f, "unknown opcode {bits:#x}"),
            HeaderError::Unmasked => f.write_str("client frame not masked"),
            HeaderError::BadControlFrame => {
                f.write_str("control frame fragmented or longer than 125 bytes")
            }
            HeaderError::BadLength => f.write_str("invalid payload length"),
        }
    }
}

/// Parses a client frame's header from the start of `input`: `Ok(None)` if
/// `input` does not hold all of it yet, else the header and its length in bytes.
/// `rsv1_allowed`: an extension gave RSV1 a meaning.
pub fn parse_header(
    input: &[u8],
    rsv1_allowed: bool,
) -> Result<Option<(Header, usize)>, HeaderError> {
    let [first, second, ..] = *input else {
        return Ok(None);
    };
    let fin = first & 0x80 != 0;
    let rsv1 = first & 0x40 != 0;
    if first & 0x30 != 0 || (rsv1 && !rsv1_allowed) {
        return Err(HeaderError::ReservedBits);
    }
    let opcode = OpCode::from_bits(first & 0x0F).ok_or(HeaderError::UnknownOpcode(first & 0x0F))?;
    if second & 0x80 == 0 {
        return Err(HeaderError::Unmasked);
    }
    let (len, len_bytes) = match second & 0x7F {
        126 => {
            let Some(bytes) = input.get(2..4) else {
                return Ok(None);
            };
            let len = u64::from(u16::from_be_bytes([bytes[0], bytes[1]]));
            if len < 126 {
                return Err(HeaderError::BadLength);
            }
            (len, 2)
        }
        127 => {
            let Some(bytes) = input.get(2..10) else {
                return Ok(None);
            };
            let mut be = [0u8; 8];
            be.copy_from_slice(bytes);
            let len = u64::from_be_bytes(be);
            if len >> 63 != 0 || len <= u64::from(u16::MAX) {
                return Err(HeaderError::BadLength);
            }
            (len, 8)
        }
        short => (u64::from(short), 0),
    };
    if opcode.is_control() && (!fin || len > MAX_CONTROL_PAYLOAD as u64) {
        return Err(HeaderError::BadControlFrame);
    }
    let mask_at = 2 + len_bytes;
    let Some(mask) = input.get(mask_at..mask_at + 4) else {
        return Ok(None);
    };
    let header = Header {
        fin,
        rsv1,
        opcode,
        len,
        mask: [mask[0], mask[1], mask[2], mask[3]],
    };
    Ok(Some((header, mask_at + 4)))
}

/// Appends an unmasked, final frame's header for a payload of `len` bytes.
pub fn write_header(out: &mut impl bytes::BufMut, opcode: OpCode, rsv1: bool, len: usize) {
    let first = 0x80 | if rsv1 { 0x40 } else { 0 } | opcode.bits();
    out.put_u8(first);
    if len < 126 {
        out.put_u8(len as u8);
    } else if let Ok(short) = u16::try_from(len) {
        out.put_u8(126);
        out.put_u16(short);
    } else {
        out.put_u8(127);
        out.put_u64(len as u64);
    }
}

/// Unmasks (or masks) `data`, the payload bytes from `offset` on, in place.
pub fn apply_mask(data: &mut [u8], mask: [u8; 4], offset: usize) {
    let mut key = mask;
    key.rotate_left(offset % 4);
    let wide = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= key[i % 4];
    }
}

/// A close frame's payload (§5.5.1), checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClosePayload {
    /// No status code.
    Empty,
    /// A status code and a reason.
    Status {
        /// The code.
        code: u16,
        /// The reason (UTF-8).
        reason: String,
    },
}

/// Why a close frame's payload is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseError {
    /// One byte, or a code a peer may not send (answered with 1002).
    BadCode,
    /// The reason is not UTF-8 (answered with 1007).
    BadReason,
}

/// Reads a client's close frame payload.
pub fn parse_close(payload: &[u8]) -> Result<ClosePayload, CloseError> {
    match payload {
        [] => Ok(ClosePayload::Empty),
        [_] => Err(CloseError::BadCode),
        [high, low, reason @ ..] => {
            let code = u16::from_be_bytes([*high, *low]);
            if !close_code_allowed(code) {
                return Err(CloseError::BadCode);
            }
            let reason = std::str::from_utf8(reason).map_err(|_| CloseError::BadReason)?;
            Ok(ClosePayload::Status {
                code,
                reason: reason.to_owned(),
            })
        }
    }
}

/// Whether a peer may send `code` in a close frame: the codes RFC 6455 and
/// the IANA registry define for use on the wire, and 3000–4999.
pub fn close_code_allowed(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Appends a close frame with `code` and `reason` (cut to fit 123 bytes at a
/// character boundary).
pub fn write_close(out: &mut impl bytes::BufMut, code: u16, reason: &str) {
    let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let reason = &reason[..end];
    write_header(out, OpCode::Close, false, 2 + reason.len());
    out.put_u16(code);
    out.put_slice(reason.as_bytes());
}

/// A client frame as it comes off the wire (`first`: FIN, RSV and opcode),
/// masked with `mask`; for the frame layer's tests.
#[cfg(test)]
pub(super) fn masked(first: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut frame = vec![first];
    let len = payload.len();
    if len < 126 {
        frame.push(0x80 | len as u8);
    } else if len <= 0xFFFF {
        frame.push(0x80 | 126);
        frame.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        frame.push(0x80 | 127);
        frame.extend_from_slice(&(len as u64).to_be_bytes());
    }
    frame.extend_from_slice(&mask);
    let mut body = payload.to_vec();
    apply_mask(&mut body, mask, 0);
    frame.extend_from_slice(&body);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_of_every_length_form_parse_and_wait_for_their_bytes() {
        for len in [0usize, 125, 126, 65_535, 65_536] {
            let payload = vec![7u8; len];
            let frame = masked(0x82, &payload, [1, 2, 3, 4]);
            let header_len = frame.len() - len;
            for cut in 0..header_len {
                assert_eq!(
                    parse_header(&frame[..cut], false),
                    Ok(None),
                    "len {len} cut {cut}"
                );
            }
            let (header, parsed_len) = parse_header(&frame, false).unwrap().unwrap();
            assert_eq!(parsed_len, header_len);
            assert_eq!(header.len, len as u64);
            assert_eq!(header.opcode, OpCode::Binary);
            assert!(header.fin);
            assert_eq!(header.mask, [1, 2, 3, 4]);
        }
    }

    #[test]
    fn frames_the_protocol_forbids_are_refused() {
        let mask = [9, 9, 9, 9];
        assert_eq!(
            parse_header(&[0x81, 0x05], false),
            Err(HeaderError::Unmasked)
        );
        assert_eq!(
            parse_header(&masked(0xC1, b"x", mask), false),
            Err(HeaderError::ReservedBits)
        );
        assert!(parse_header(&masked(0xC1, b"x", mask), true).is_ok());
        assert_eq!(
            parse_header(&masked(0xA1, b"x", mask), true),
            Err(HeaderError::ReservedBits)
        );
        assert_eq!(
            parse_header(&masked(0x83, b"x", mask), false),
            Err(HeaderError::UnknownOpcode(3))
        );
        assert_eq!(
            parse_header(&masked(0x09, b"x", mask), false),
            Err(HeaderError::BadControlFrame),
            "a fragmented ping"
        );
        assert_eq!(
            parse_header(&masked(0x89, &[0; 126], mask), false),
            Err(HeaderError::BadControlFrame)
        );
        let mut huge = vec![0x82, 0x80 | 127];
        huge.extend_from_slice(&(1u64 << 63).to_be_bytes());
        huge.extend_from_slice(&mask);
        assert_eq!(parse_header(&huge, false), Err(HeaderError::BadLength));
        let not_shortest = [0x82, 0x80 | 126, 0, 5, 1, 2, 3, 4];
        assert_eq!(
            parse_header(&not_shortest, false),
            Err(HeaderError::BadLength)
        );
    }

    #[test]
    fn masking_at_any_offset_matches_byte_by_byte() {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let data: Vec<u8> = (0..100u8).collect();
        for offset in 0..8 {
            let mut fast = data.clone();
            apply_mask(&mut fast, mask, offset);
            let slow: Vec<u8> = data
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[(i + offset) % 4])
                .collect();
            assert_eq!(fast, slow, "offset {offset}");
        }
    }

    #[test]
    fn server_headers_use_the_shortest_length_form() {
        for (len, expected) in [(5usize, 2usize), (126, 4), (65_535, 4), (65_536, 10)] {
            let mut out = Vec::new();
            write_header(&mut out, OpCode::Text, false, len);
            assert_eq!(out.len(), expected, "len {len}");
            assert_eq!(out[0], 0x81);
        }
    }

    #[test]
    fn close_payloads_are_checked() {
        assert_eq!(parse_close(&[]), Ok(ClosePayload::Empty));
        assert_eq!(parse_close(&[3]), Err(CloseError::BadCode));
        assert_eq!(
            parse_close(&[0x03, 0xE8, b'o', b'k']),
            Ok(ClosePayload::Status {
                code: 1000,
                reason: "ok".into()
            })
        );
        for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000] {
            assert_eq!(
                parse_close(&code.to_be_bytes()),
                Err(CloseError::BadCode),
                "{code}"
            );
        }
        assert_eq!(parse_close(&[0x03, 0xE8, 0xFF]), Err(CloseError::BadReason));
        let mut out = Vec::new();
        write_close(&mut out, 1001, &"é".repeat(100));
        assert_eq!(out.len(), 2 + 2 + 122, "cut at a character boundary");
    }
}
