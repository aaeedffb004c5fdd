//! The chat app's protocol: any sequence of clients and messages, never a panic.
#![no_main]

#[path = "drive.rs"]
mod drive;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    drive::drive::<chat::Chat>("{}", data, |_| String::new());
});
