//! Plays a fuzzer's bytes at an app through `TestHost`, as the server would:
//! clients open, send text and binary messages, leave; a close the app asks
//! for ends that client. At the end the app saves its state and a new
//! instance starts from it (a reload).

use switchboard_plugin_api::testing::TestHost;
use switchboard_plugin_api::{App, ConnId, Message};

/// Each record: an op byte, a client byte, a length byte, that many bytes.
/// `data_of(client byte)` is what the app's handshake would have attached.
pub fn drive<A: App>(config: &str, input: &[u8], data_of: impl Fn(u8) -> String) {
    let host = TestHost::new();
    let Ok(app) = A::new(host.context(config)) else {
        return;
    };
    let mut rest = input;
    while let [op, client, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (payload, next) = tail.split_at(len);
        rest = next;
        let conn = ConnId::from_bytes([client % 6; 16]);
        match op % 4 {
            0 if !host.is_open(conn) => {
                host.open_with_data(conn, &data_of(*client));
                let _ = app.on_open(conn);
            }
            1 if host.is_open(conn) => {
                let text = String::from_utf8_lossy(payload);
                let _ = app.on_message(conn, Message::Text(&text));
            }
            2 if host.is_open(conn) => {
                let _ = app.on_message(conn, Message::Binary(payload));
            }
            3 if host.is_open(conn) => {
                host.disconnect(conn);
                app.on_close(conn, 1000, "");
            }
            _ => {}
        }
        for closed in host.take_closed() {
            if host.is_open(closed.conn) {
                host.disconnect(closed.conn);
                app.on_close(closed.conn, closed.code, &closed.reason);
            }
        }
        host.take_sent();
        host.take_logs();
    }
    if let Ok(state) = app.save_state() {
        app.on_shutdown();
        let _ = A::new(host.context_with_state(config, state));
    }
}
