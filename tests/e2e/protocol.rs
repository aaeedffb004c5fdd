use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use switchboard_tests::{TestConfig, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{CloseFrame, Frame};
use tokio_tungstenite::tungstenite::Message;

use crate::util::{ends, expect_close, next, WAIT};

fn frame(data: &[u8], opcode: Data, fin: bool) -> Message {
    Message::Frame(Frame::message(data.to_vec(), OpCode::Data(opcode), fin))
}

#[tokio::test(flavor = "multi_thread")]
async fn fragmented_messages_are_reassembled() {
    let server = TestServer::start(TestConfig::new()).await;
    let mut ws = server.ws("/echo").await;
    ws.send(frame(b"frag", Data::Text, false)).await.unwrap();
    ws.send(frame(b"men", Data::Continue, false)).await.unwrap();
    // A ping between fragments is allowed and answered.
    ws.send(Message::Ping(b"mid".to_vec().into()))
        .await
        .unwrap();
    ws.send(frame("ted ✓".as_bytes(), Data::Continue, true))
        .await
        .unwrap();
    assert_eq!(next(&mut ws).await, Message::text("fragmented ✓"));

    ws.send(frame(&[1, 2], Data::Binary, false)).await.unwrap();
    ws.send(frame(&[3], Data::Continue, true)).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::binary(vec![1, 2, 3]));
}

#[tokio::test(flavor = "multi_thread")]
async fn ping_is_answered_with_pong_carrying_the_same_payload() {
    let server = TestServer::start(TestConfig::new()).await;
    let mut ws = server.ws("/echo").await;
    ws.send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    let pong = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(Ok(Message::Pong(payload))) = ws.next().await {
                return payload;
            }
        }
    })
    .await
    .expect("pong");
    assert_eq!(&pong[..], b"are you there");
}

#[tokio::test(flavor = "multi_thread")]
async fn client_close_is_answered_with_the_same_code() {
    let server = TestServer::start(TestConfig::new()).await;
    let mut ws = server.ws("/echo").await;
    ws.close(Some(CloseFrame {
        code: 1000.into(),
        reason: "done".into(),
    }))
    .await
    .unwrap();
    assert_eq!(expect_close(&mut ws).await, (1000, "done".to_owned()));
    assert!(ends(&mut ws).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_utf8_in_text_closes_with_1007() {
    let server = TestServer::start(TestConfig::new()).await;
    let mut ws = server.ws("/echo").await;
    ws.send(frame(&[0x68, 0xff, 0xfe], Data::Text, true))
        .await
        .unwrap();
    assert_eq!(expect_close(&mut ws).await.0, 1007);
    // The server keeps serving everyone else.
    let mut other = server.ws("/echo").await;
    other.send(Message::text("still here")).await.unwrap();
    assert_eq!(next(&mut other).await, Message::text("still here"));
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_message_closes_with_1009() {
    let server = TestServer::start(TestConfig::new().server("max_message_size = \"64 KiB\"")).await;
    let mut ws = server.ws("/echo").await;
    ws.send(Message::binary(vec![0u8; 64 * 1024]))
        .await
        .unwrap();
    assert_eq!(
        next(&mut ws).await.len(),
        64 * 1024,
        "a message at the limit passes"
    );
    ws.send(Message::binary(vec![0u8; 64 * 1024 + 1]))
        .await
        .unwrap();
    assert_eq!(expect_close(&mut ws).await.0, 1009);
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_fragmented_message_closes_with_1009() {
    let server = TestServer::start(TestConfig::new().server("max_message_size = \"64 KiB\"")).await;
    let mut ws = server.ws("/echo").await;
    ws.send(frame(&[b'a'; 30 * 1024], Data::Text, false))
        .await
        .unwrap();
    for _ in 0..2 {
        ws.send(frame(&[b'a'; 30 * 1024], Data::Continue, false))
            .await
            .unwrap();
    }
    ws.send(frame(b"end", Data::Continue, true)).await.unwrap();
    assert_eq!(expect_close(&mut ws).await.0, 1009);
}

/// Completes a WebSocket handshake on a raw socket and returns it.
pub(crate) async fn raw_websocket(server: &TestServer, path: &str) -> TcpStream {
    raw_websocket_offering(server, path, None).await.0
}

/// A handshake on a raw socket offering `extensions` (a
/// `Sec-WebSocket-Extensions` value); the socket and the answer's
/// `Sec-WebSocket-Extensions`, if any.
pub(crate) async fn raw_websocket_offering(
    server: &TestServer,
    path: &str,
    extensions: Option<&str>,
) -> (TcpStream, Option<String>) {
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let extensions = extensions.map_or(String::new(), |e| {
        format!("Sec-WebSocket-Extensions: {e}\r\n")
    });
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extensions}\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let answer = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("sec-websocket-extensions")
            .then(|| value.trim().to_owned())
    });
    (stream, answer)
}

/// Reads one unmasked server frame: (opcode, payload).
pub(crate) async fn read_frame(stream: &mut TcpStream) -> (u8, Vec<u8>) {
    let (_, _, opcode, payload) = read_whole_frame(stream).await;
    (opcode, payload)
}

/// Reads one unmasked server frame: (FIN, RSV1, opcode, payload).
pub(crate) async fn read_whole_frame(stream: &mut TcpStream) -> (bool, bool, u8, Vec<u8>) {
    let mut header = [0u8; 2];
    stream.read_exact(&mut header).await.unwrap();
    let len = match header[1] & 0x7f {
        126 => stream.read_u16().await.unwrap() as usize,
        127 => stream.read_u64().await.unwrap() as usize,
        n => n as usize,
    };
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).await.unwrap();
    let first = header[0];
    (first & 0x80 != 0, first & 0x40 != 0, first & 0x0f, payload)
}

#[tokio::test(flavor = "multi_thread")]
async fn unmasked_client_frame_closes_with_1002() {
    let server = TestServer::start(TestConfig::new()).await;
    let mut stream = raw_websocket(&server, "/echo").await;
    // FIN + text, no mask bit, "hi".
    stream.write_all(&[0x81, 0x02, b'h', b'i']).await.unwrap();
    let (opcode, payload) = tokio::time::timeout(WAIT, read_frame(&mut stream))
        .await
        .unwrap();
    assert_eq!(opcode, 0x8, "expected a close frame");
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1002);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_never_answers_pings_is_dropped() {
    let server = TestServer::start(TestConfig::new().server("ping_interval = \"200ms\"")).await;
    let mut stream = raw_websocket(&server, "/echo").await;
    // The server pings; this client reads but never answers.
    let (opcode, _) = tokio::time::timeout(WAIT, read_frame(&mut stream))
        .await
        .unwrap();
    assert_eq!(opcode, 0x9, "expected a ping");
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
    assert!(
        read.is_ok(),
        "the server should drop a client that does not answer pings"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_answers_pings_stays_connected() {
    let server = TestServer::start(TestConfig::new().server("ping_interval = \"250ms\"")).await;
    let mut ws = server.ws("/echo").await;
    // Reading lets the client library answer the server's pings.
    let _ = tokio::time::timeout(Duration::from_millis(1200), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    ws.send(Message::text("alive")).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::text("alive"));
}

/// A masked client frame (`first` is FIN/RSV/opcode).
pub(crate) fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xFA, 0x21, 0x3D];
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
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// Sends `wire` on a fresh raw connection to `/echo` and returns the close
/// code the server answers with, skipping the frames before it.
async fn close_code_for(server: &TestServer, wire: &[u8]) -> u16 {
    let mut stream = raw_websocket(server, "/echo").await;
    stream.write_all(wire).await.unwrap();
    loop {
        let (opcode, payload) = tokio::time::timeout(WAIT, read_frame(&mut stream))
            .await
            .unwrap();
        if opcode == 0x8 {
            return u16::from_be_bytes([payload[0], payload[1]]);
        }
    }
}

/// Frames the protocol forbids, each with the close code it must get; the
/// first (RSV1 with no extension) only where permessage-deflate is not
/// negotiated.
pub(crate) fn forbidden_frames() -> Vec<(&'static str, Vec<u8>, u16)> {
    vec![
        ("RSV1 without an extension", masked(0xC1, b"x"), 1002),
        ("RSV3", masked(0x91, b"x"), 1002),
        ("reserved opcode 0x3", masked(0x83, b"x"), 1002),
        ("reserved control opcode 0xB", masked(0x8B, b""), 1002),
        ("fragmented ping", masked(0x09, b"x"), 1002),
        ("ping longer than 125 bytes", masked(0x89, &[0; 126]), 1002),
        (
            "continuation with nothing to continue",
            masked(0x80, b"x"),
            1002,
        ),
        ("close frame of one byte", masked(0x88, &[3]), 1002),
        (
            "close code 1005 on the wire",
            masked(0x88, &1005u16.to_be_bytes()),
            1002,
        ),
        ("close code 999", masked(0x88, &999u16.to_be_bytes()), 1002),
        (
            "close reason not UTF-8",
            masked(0x88, &[0x03, 0xE8, 0xFF]),
            1007,
        ),
        (
            "text not UTF-8",
            masked(0x81, &[0xCE, 0xBA, 0xE1, 0xBD]),
            1007,
        ),
        (
            "a new message inside a fragmented one",
            [masked(0x01, b"a"), masked(0x81, b"b")].concat(),
            1002,
        ),
        (
            "text split inside a character, then broken",
            [masked(0x01, &[0xCE]), masked(0x80, &[0x41])].concat(),
            1007,
        ),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn frames_the_protocol_forbids_close_with_1002_and_bad_text_with_1007() {
    // Each case on a connection of its own, all through one server's checks.
    let server = TestServer::start(TestConfig::new()).await;
    let cases = forbidden_frames();
    for (what, wire, expected) in cases {
        assert_eq!(close_code_for(&server, &wire).await, expected, "{what}");
    }
    // The server is still there for a well-behaved client.
    let mut ws = server.ws("/echo").await;
    ws.send(Message::text("still here")).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::text("still here"));
}

#[tokio::test(flavor = "multi_thread")]
async fn pings_inside_a_fragmented_message_and_pipelined_messages_are_handled_in_order() {
    let server = TestServer::start(TestConfig::new()).await;
    let mut stream = raw_websocket(&server, "/echo").await;
    // A text message in three fragments with a ping between, then two whole
    // messages, then a text split inside a multi-byte character: all in one write.
    let mut wire = masked(0x01, b"frag");
    wire.extend(masked(0x89, b"p1"));
    wire.extend(masked(0x00, b"men"));
    wire.extend(masked(0x80, b"ted"));
    wire.extend(masked(0x82, &[1, 2, 3]));
    wire.extend(masked(0x81, b"last"));
    wire.extend(masked(0x01, &[b'c', 0xC3]));
    wire.extend(masked(0x80, &[0xA9]));
    stream.write_all(&wire).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(
            tokio::time::timeout(WAIT, read_frame(&mut stream))
                .await
                .unwrap(),
        );
    }
    assert_eq!(
        got,
        vec![
            (0xA, b"p1".to_vec()),
            (0x1, b"fragmented".to_vec()),
            (0x2, vec![1, 2, 3]),
            (0x1, b"last".to_vec()),
            (0x1, "cé".as_bytes().to_vec()),
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_large_message_sent_a_byte_at_a_time_and_one_in_one_write_come_back_whole() {
    let server = TestServer::start(TestConfig::new()).await;
    let mut stream = raw_websocket(&server, "/echo").await;
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    stream.write_all(&masked(0x82, &big)).await.unwrap();
    let (opcode, payload) = tokio::time::timeout(WAIT, read_frame(&mut stream))
        .await
        .unwrap();
    assert_eq!(opcode, 0x2);
    assert!(payload == big, "300 KB in one write");

    let small = masked(0x82, &big[..2000]);
    for byte in &small {
        stream.write_all(&[*byte]).await.unwrap();
    }
    let (opcode, payload) = tokio::time::timeout(WAIT, read_frame(&mut stream))
        .await
        .unwrap();
    assert_eq!((opcode, payload.as_slice()), (0x2, &big[..2000]));
}
