//! permessage-deflate (RFC 7692) on the raw wire: what the server answers to
//! each kind of offer, compressed messages both ways with every window size,
//! fragmented compressed messages, and what a bad or hostile client gets
//! (1002 for RSV1 where it may not be, 1007 for data that does not inflate,
//! 1009 for a message that inflates past the limit, early).

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use serde_json::json;
use switchboard_tests::{TestConfig, TestServer};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::kit::{call, kit_config};
use crate::protocol::{masked, raw_websocket_offering, read_whole_frame};
use crate::util::WAIT;

/// What Chromium and Firefox offer.
const BROWSER_OFFER: &str = "permessage-deflate; client_max_window_bits";

/// `/echo` compressed (messages from 256 bytes on), `/plain` with
/// compression off.
fn config() -> TestConfig {
    TestConfig::new()
        .server("compression_threshold = \"256 B\"")
        .apps(
            "[[app]]\npath = \"/echo\"\nplugin = \"echo\"\n\n\
         [[app]]\npath = \"/plain\"\nplugin = \"echo\"\ncompression = \"off\"\n",
        )
}

/// Raw deflate of `data`, sync-flushed, the tail removed (§7.2.1).
fn deflate(compressor: &mut Compress, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 1024);
    let start = compressor.total_in();
    loop {
        let used = (compressor.total_in() - start) as usize;
        compressor
            .compress_vec(&data[used..], &mut out, FlushCompress::Sync)
            .unwrap();
        if (compressor.total_in() - start) as usize == data.len() && out.len() < out.capacity() {
            break;
        }
        out.reserve(out.capacity().max(1024));
    }
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    out
}

/// Inflates one server message with a decompressor of `window_bits`, fresh
/// for every message (the server promised no context takeover).
fn inflate(payload: &[u8], window_bits: u8) -> Vec<u8> {
    let mut inflater = Decompress::new_with_window_bits(false, window_bits);
    let mut input = payload.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut out = Vec::with_capacity(payload.len() * 100 + (64 << 10));
    inflater
        .decompress_vec(&input, &mut out, FlushDecompress::Sync)
        .unwrap();
    assert_eq!(
        inflater.total_in() as usize,
        input.len(),
        "one call inflates it all"
    );
    out
}

/// One server frame: (FIN, RSV1, opcode, payload), in time.
async fn read_frame(stream: &mut TcpStream) -> (bool, bool, u8, Vec<u8>) {
    tokio::time::timeout(WAIT, read_whole_frame(stream))
        .await
        .expect("a frame in time")
}

/// The close code the server sends, skipping frames before it.
async fn close_code(stream: &mut TcpStream) -> u16 {
    loop {
        let (_, _, opcode, payload) = read_frame(stream).await;
        if opcode == 0x8 {
            return u16::from_be_bytes([payload[0], payload[1]]);
        }
    }
}

/// A chat-like JSON message of about `len` bytes.
fn chat_message(i: usize, len: usize) -> Vec<u8> {
    let text = "the quick brown fox jumps over the lazy dog ".repeat(len / 44 + 1);
    json!({"type": "message", "room": "lobby", "nick": format!("guest-{i}"), "text": &text[..len]})
        .to_string()
        .into_bytes()
}

#[tokio::test(flavor = "multi_thread")]
async fn offers_are_answered_as_rfc_7692_says_and_apps_may_turn_compression_off() {
    let server = TestServer::start(config()).await;
    let answer = |path: &'static str, offer: Option<&'static str>| {
        let server = &server;
        async move { raw_websocket_offering(server, path, offer).await.1 }
    };
    assert_eq!(answer("/echo", None).await, None, "no offer, no header");
    assert_eq!(
        answer("/echo", Some(BROWSER_OFFER)).await.as_deref(),
        Some("permessage-deflate; server_no_context_takeover; client_max_window_bits=12")
    );
    assert_eq!(
        answer(
            "/echo",
            Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10; client_max_window_bits=12")
        )
        .await
        .as_deref(),
        Some("permessage-deflate; server_no_context_takeover; server_max_window_bits=10; client_no_context_takeover; client_max_window_bits=12")
    );
    // Offers are tried in order; one that cannot be honoured is skipped.
    assert_eq!(
        answer(
            "/echo",
            Some("permessage-deflate; server_max_window_bits=16, permessage-deflate; client_no_context_takeover")
        )
        .await
        .as_deref(),
        Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
    );
    for declined in [
        "permessage-deflate; server_max_window_bits",
        "permessage-deflate; client_max_window_bits=7",
        "permessage-deflate; mystery=1",
        "x-webkit-deflate-frame",
    ] {
        assert_eq!(answer("/echo", Some(declined)).await, None, "{declined}");
    }
    assert_eq!(
        answer("/plain", Some(BROWSER_OFFER)).await,
        None,
        "compression = \"off\""
    );

    // A declined offer leaves an uncompressed connection: RSV1 means nothing.
    let (mut stream, _) =
        raw_websocket_offering(&server, "/echo", Some("permessage-deflate; mystery")).await;
    stream.write_all(&masked(0xC1, b"x")).await.unwrap();
    assert_eq!(close_code(&mut stream).await, 1002);

    // Server-wide off, one app on.
    let server = TestServer::start(TestConfig::new().server("compression = \"off\"").apps(
        "[[app]]\npath = \"/echo\"\nplugin = \"echo\"\n\n\
             [[app]]\npath = \"/on\"\nplugin = \"echo\"\ncompression = \"on\"\n",
    ))
    .await;
    assert_eq!(
        raw_websocket_offering(&server, "/echo", Some(BROWSER_OFFER))
            .await
            .1,
        None
    );
    assert!(raw_websocket_offering(&server, "/on", Some(BROWSER_OFFER))
        .await
        .1
        .is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn compressed_messages_go_both_ways_with_every_window_size() {
    let server = TestServer::start(config().server("compression_window_bits = 15")).await;
    for bits in 8u8..=15 {
        let offer = format!(
            "permessage-deflate; server_max_window_bits={bits}; client_max_window_bits={bits}"
        );
        let (mut stream, answer) =
            raw_websocket_offering(&server, "/echo", Some(offer.as_str())).await;
        assert_eq!(
            answer.as_deref(),
            Some(format!("permessage-deflate; server_no_context_takeover; server_max_window_bits={bits}; client_max_window_bits={bits}").as_str())
        );
        // zlib cannot make 8-bit raw deflate; it uses 9 bits (the quirk the
        // server allows for by keeping 512 bytes of a client told 8).
        let mut client = Compress::new_with_window_bits(Compression::default(), false, bits.max(9));
        let mut sizes = Vec::new();
        for i in 0..12 {
            let message = chat_message(i % 3, 600);
            let compressed = deflate(&mut client, &message);
            sizes.push(compressed.len());
            stream.write_all(&masked(0xC1, &compressed)).await.unwrap();
            let (fin, rsv1, opcode, payload) = read_frame(&mut stream).await;
            assert!(fin && opcode == 0x1, "bits {bits}: a whole text message");
            if bits == 8 {
                assert!(!rsv1, "with an 8-bit window the server sends uncompressed");
                assert_eq!(payload, message);
            } else {
                assert!(rsv1, "bits {bits}: the echo is compressed");
                assert!(payload.len() < message.len() / 2);
                assert_eq!(inflate(&payload, bits), message, "bits {bits}, message {i}");
            }
        }
        // The client kept its context (referring back as far as its window
        // reaches), and the server followed it.
        assert!(sizes[6] < sizes[0], "bits {bits}: {sizes:?}");
        if bits >= 11 {
            assert!(sizes[6] < sizes[0] / 2, "bits {bits}: {sizes:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn fragmented_compressed_messages_small_ones_and_uncompressed_ones_all_arrive() {
    let server = TestServer::start(config()).await;
    let (mut stream, answer) = raw_websocket_offering(&server, "/echo", Some(BROWSER_OFFER)).await;
    assert!(answer.unwrap().ends_with("client_max_window_bits=12"));
    // The window the server asked for (its default, 12 bits).
    let mut client = Compress::new_with_window_bits(Compression::default(), false, 12);

    // One compressed message in three frames, RSV1 on the first only, with a
    // ping between the second and the third.
    let message = chat_message(1, 5000);
    let compressed = deflate(&mut client, &message);
    let third = compressed.len() / 3;
    let mut wire = masked(0x41, &compressed[..third]);
    wire.extend(masked(0x00, &compressed[third..2 * third]));
    wire.extend(masked(0x89, b"ping"));
    wire.extend(masked(0x80, &compressed[2 * third..]));
    stream.write_all(&wire).await.unwrap();
    let (_, rsv1, opcode, payload) = read_frame(&mut stream).await;
    assert_eq!(
        (rsv1, opcode, payload.as_slice()),
        (false, 0xA, &b"ping"[..]),
        "the pong first"
    );
    let (_, rsv1, opcode, payload) = read_frame(&mut stream).await;
    assert!(rsv1 && opcode == 0x1);
    assert_eq!(inflate(&payload, 15), message);

    // Under the threshold (256 bytes here, 1 KiB by default): sent as it is.
    let small = chat_message(2, 40);
    stream
        .write_all(&masked(0xC1, &deflate(&mut client, &small)))
        .await
        .unwrap();
    let (_, rsv1, _, payload) = read_frame(&mut stream).await;
    assert!(!rsv1);
    assert_eq!(payload, small);

    // An uncompressed message on a compressed connection is fine too, and
    // binary data that does not shrink goes back uncompressed.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let noise: Vec<u8> = (0..4000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    stream.write_all(&masked(0x82, &noise)).await.unwrap();
    let (_, rsv1, opcode, payload) = read_frame(&mut stream).await;
    assert!(!rsv1 && opcode == 0x2);
    assert_eq!(payload, noise);
}

#[tokio::test(flavor = "multi_thread")]
async fn misplaced_rsv1_is_1002_and_data_that_does_not_inflate_is_1007() {
    let server = TestServer::start(config()).await;
    let mut client = Compress::new_with_window_bits(Compression::default(), false, 15);
    let compressed = deflate(&mut client, &chat_message(0, 1000));
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "RSV1 on a continuation frame",
            [
                masked(0x41, &compressed[..10]),
                masked(0xC0, &compressed[10..]),
            ]
            .concat(),
            1002,
        ),
        ("RSV1 on a ping", masked(0xC9, b"x"), 1002),
        (
            "RSV1 on a close",
            masked(0xC8, &1000u16.to_be_bytes()),
            1002,
        ),
        ("RSV2 stays reserved", masked(0xA1, b"x"), 1002),
        (
            "compressed garbage",
            masked(0xC1, &[0xff, 0xff, 0xff, 0xff, 0x00, 0x12]),
            1007,
        ),
        (
            "compressed text that is not UTF-8",
            masked(
                0xC1,
                &deflate(
                    &mut Compress::new_with_window_bits(Compression::default(), false, 15),
                    &[0xCE, 0xBA, 0xE1, 0xBD],
                ),
            ),
            1007,
        ),
    ];
    for (what, wire, expected) in cases {
        let (mut stream, answer) =
            raw_websocket_offering(&server, "/echo", Some(BROWSER_OFFER)).await;
        assert!(answer.is_some());
        stream.write_all(&wire).await.unwrap();
        assert_eq!(close_code(&mut stream).await, expected, "{what}");
    }
    // Others are not affected.
    let (mut stream, _) = raw_websocket_offering(&server, "/echo", Some(BROWSER_OFFER)).await;
    stream
        .write_all(&masked(0x81, b"still here"))
        .await
        .unwrap();
    assert_eq!(read_frame(&mut stream).await.3, b"still here");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_decompression_bomb_is_refused_with_1009_before_it_costs_memory() {
    let server = TestServer::start(config().server("max_message_size = \"1 MiB\"")).await;
    // 1 MiB of zeros deflates to about 1 KiB; after a sync flush the stream
    // is at a block boundary, so the same bytes again are 1 MiB more zeros:
    // 200 copies are a 200 KB message that inflates to 200 MiB.
    let mut zeros = Compress::new_with_window_bits(Compression::best(), false, 15);
    let mut chunk = Vec::with_capacity(64 << 10);
    zeros
        .compress_vec(&vec![0u8; 1 << 20], &mut chunk, FlushCompress::Sync)
        .unwrap();
    assert_eq!(zeros.total_in(), 1 << 20);
    let bomb = chunk.repeat(200);
    assert!(bomb.len() < 512 << 10, "{} bytes", bomb.len());

    let (mut bystander, _) = raw_websocket_offering(&server, "/echo", Some(BROWSER_OFFER)).await;
    let peak_before = server.memory_kib("VmHWM");
    for _ in 0..3 {
        let (mut stream, _) = raw_websocket_offering(&server, "/echo", Some(BROWSER_OFFER)).await;
        stream.write_all(&masked(0xC2, &bomb)).await.unwrap();
        assert_eq!(close_code(&mut stream).await, 1009);
    }
    let grew = server.memory_kib("VmHWM").saturating_sub(peak_before);
    assert!(
        grew < 24 << 10,
        "the peak resident memory grew by {grew} KiB"
    );
    bystander
        .write_all(&masked(0x81, b"unharmed"))
        .await
        .unwrap();
    assert_eq!(read_frame(&mut bystander).await.3, b"unharmed");
}

#[tokio::test(flavor = "multi_thread")]
async fn plugins_see_whether_a_connection_is_compressed() {
    let server = TestServer::start(kit_config("")).await;
    let mut plain = server.ws("/kit").await;
    let info = call(&mut plain, json!({"op": "info"})).await["ok"].clone();
    assert_eq!(info["compressed"], false, "{info}");
    assert_eq!(info["extensions"], "");

    // A client that offers it: the kit asks about itself over the raw socket.
    let (mut stream, answer) = raw_websocket_offering(&server, "/kit", Some(BROWSER_OFFER)).await;
    let answer = answer.expect("negotiated");
    stream
        .write_all(&masked(0x81, json!({"op": "info"}).to_string().as_bytes()))
        .await
        .unwrap();
    let (_, rsv1, _, payload) = read_frame(&mut stream).await;
    let text = if rsv1 { inflate(&payload, 15) } else { payload };
    let reply: serde_json::Value = serde_json::from_slice(&text).unwrap();
    assert_eq!(reply["result"]["ok"]["compressed"], true, "{reply}");
    assert_eq!(reply["result"]["ok"]["extensions"], answer.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn python_websockets_negotiates_every_parameter_set_and_messages_arrive_intact() {
    // Python's `websockets` implements RFC 7692 fully, window bits included.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python");
    let deps = dir.join("deps");
    if !deps.join("websockets").exists() {
        let installed = std::process::Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "--target"])
            .arg(&deps)
            .arg("websockets==15.*")
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must run the Python interop test, but websockets could not be installed into {}",
                deps.display()
            );
            eprintln!("SKIPPED: python3 -m pip could not install websockets");
            return;
        }
    }
    let server = TestServer::start(config()).await;
    let output = tokio::process::Command::new("python3")
        .arg(dir.join("deflate_client.py"))
        .arg(format!("ws://{}/echo", server.addr))
        .env("PYTHONPATH", &deps)
        .output()
        .await
        .expect("run python3");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{text}");
    assert_eq!(
        text.lines().filter(|l| l.starts_with("ok ")).count(),
        5,
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_protocol_checks_hold_with_compression_negotiated() {
    let server = TestServer::start(config()).await;
    // Every forbidden frame gets the same close code (RSV1 on a data frame
    // is no longer forbidden: it is the compressed bit).
    for (what, wire, expected) in crate::protocol::forbidden_frames().into_iter().skip(1) {
        let (mut stream, answer) =
            raw_websocket_offering(&server, "/echo", Some(BROWSER_OFFER)).await;
        assert!(answer.is_some());
        stream.write_all(&wire).await.unwrap();
        assert_eq!(close_code(&mut stream).await, expected, "{what}");
    }

    // Pings inside a fragmented message and pipelined messages, in order.
    let (mut stream, _) = raw_websocket_offering(&server, "/echo", Some(BROWSER_OFFER)).await;
    let mut wire = masked(0x01, b"frag");
    wire.extend(masked(0x89, b"p1"));
    wire.extend(masked(0x00, b"men"));
    wire.extend(masked(0x80, b"ted"));
    wire.extend(masked(0x82, &[1, 2, 3]));
    wire.extend(masked(0x81, b"last"));
    stream.write_all(&wire).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..4 {
        let (_, rsv1, opcode, payload) = read_frame(&mut stream).await;
        assert!(!rsv1, "small messages go uncompressed");
        got.push((opcode, payload));
    }
    assert_eq!(
        got,
        vec![
            (0xA, b"p1".to_vec()),
            (0x1, b"fragmented".to_vec()),
            (0x2, vec![1, 2, 3]),
            (0x1, b"last".to_vec()),
        ]
    );

    // 300 KB in one write, and 2 KB a byte at a time: back whole (compressed).
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    stream.write_all(&masked(0x82, &big)).await.unwrap();
    let (_, rsv1, opcode, payload) = read_frame(&mut stream).await;
    assert!(rsv1 && opcode == 0x2);
    assert!(inflate(&payload, 15) == big, "300 KB");
    for byte in masked(0x82, &big[..2000]) {
        stream.write_all(&[byte]).await.unwrap();
    }
    let (_, rsv1, _, payload) = read_frame(&mut stream).await;
    assert!(rsv1);
    assert!(inflate(&payload, 15) == big[..2000]);
}
