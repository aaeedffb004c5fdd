//! The hub app's protocol (phpWebSocketServer's): browsers and backends,
//! chunked messages, feedback; any sequence, never a panic.
#![no_main]

#[path = "drive.rs"]
mod drive;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Clients whose byte has the high bit set are backends with an ident.
    drive::drive::<hub::Hub>(r#"{"chunk_timeout_ms": 1000}"#, data, |client| {
        if client & 0x80 != 0 {
            format!("php:worker{}", client % 3)
        } else {
            "web:".to_owned()
        }
    });
});
