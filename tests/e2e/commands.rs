use switchboard_tests::{TestConfig, TestServer};

use crate::util::{ends, expect_close, next_text, send_text};

#[tokio::test(flavor = "multi_thread")]
async fn answers_every_command_of_the_classic_bot() {
    let server = TestServer::start(TestConfig::new()).await;
    let mut ws = server.ws("/commands").await;
    let fixed = [
        ("hello", "hello human"),
        ("hi", "zup human"),
        ("name", "my name is Multivac, silly I know"),
        ("age", "I am older than time itself"),
        ("thanks", "you're welcome"),
        ("what is love", "what is love not understood"),
    ];
    for (command, reply) in fixed {
        send_text(&mut ws, command).await;
        assert_eq!(next_text(&mut ws).await, reply, "command {command:?}");
    }

    send_text(&mut ws, "date").await;
    let date = next_text(&mut ws).await;
    let rest = date
        .strip_prefix("today is ")
        .unwrap_or_else(|| panic!("date reply {date:?}"));
    let parts: Vec<&str> = rest.split('.').collect();
    assert_eq!(
        parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
        vec![4, 2, 2],
        "{date:?}"
    );
    assert!(
        parts.iter().all(|p| p.chars().all(|c| c.is_ascii_digit())),
        "{date:?}"
    );

    send_text(&mut ws, "time").await;
    let time = next_text(&mut ws).await;
    let rest = time
        .strip_prefix("server time is ")
        .unwrap_or_else(|| panic!("time reply {time:?}"));
    let parts: Vec<&str> = rest.split(':').collect();
    assert_eq!(
        parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
        vec![2, 2, 2],
        "{time:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bye_answers_then_closes_normally() {
    let server = TestServer::start(TestConfig::new()).await;
    let mut ws = server.ws("/commands").await;
    send_text(&mut ws, "bye").await;
    assert_eq!(next_text(&mut ws).await, "bye");
    assert_eq!(expect_close(&mut ws).await, (1000, "bye".to_owned()));
    assert!(
        ends(&mut ws).await,
        "the connection should end after the close handshake"
    );
}
