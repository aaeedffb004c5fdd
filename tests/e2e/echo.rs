use futures_util::SinkExt;
use switchboard_tests::{TestConfig, TestServer};
use tokio_tungstenite::tungstenite::Message;

use crate::util::next;

/// The sizes at the edges of the WebSocket length encodings, and a large message.
const SIZES: [usize; 6] = [0, 125, 126, 65535, 65536, 8 << 20];

fn payload(size: usize, seed: u8) -> Vec<u8> {
    (0..size)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn echoes_text_of_every_length_encoding_unchanged() {
    let server = TestServer::start(TestConfig::new()).await;
    let mut ws = server.ws("/echo").await;
    for size in SIZES {
        let text: String = payload(size, 7)
            .iter()
            .map(|b| char::from(b'a' + b % 26))
            .collect();
        ws.send(Message::text(text.clone())).await.unwrap();
        match next(&mut ws).await {
            Message::Text(echoed) => assert!(
                echoed.as_str() == text,
                "text of {size} bytes came back changed"
            ),
            other => panic!("size {size}: expected text, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn echoes_binary_of_every_length_encoding_unchanged() {
    let server = TestServer::start(TestConfig::new()).await;
    let mut ws = server.ws("/echo").await;
    for size in SIZES {
        let data = payload(size, 3);
        ws.send(Message::binary(data.clone())).await.unwrap();
        match next(&mut ws).await {
            Message::Binary(echoed) => assert!(
                echoed[..] == data[..],
                "binary of {size} bytes came back changed"
            ),
            other => panic!("size {size}: expected binary, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn multibyte_text_is_echoed_intact() {
    let server = TestServer::start(TestConfig::new()).await;
    let mut ws = server.ws("/echo").await;
    let text = "héllo wörld — 你好 🚀".repeat(1000);
    ws.send(Message::text(text.clone())).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::text(text));
}

#[tokio::test(flavor = "multi_thread")]
async fn messages_come_back_in_the_order_sent() {
    let server = TestServer::start(TestConfig::new()).await;
    let mut ws = server.ws("/echo").await;
    for i in 0..500 {
        ws.feed(Message::text(format!("m{i}"))).await.unwrap();
    }
    ws.flush().await.unwrap();
    for i in 0..500 {
        assert_eq!(next(&mut ws).await, Message::text(format!("m{i}")));
    }
}
