//! The config file: TOML, then every check (durations, sizes, addresses,
//! origins, paths and patterns, TLS, app blocks). Any text must give a config
//! or errors with positions, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::config::{Config, SourceFile};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(error) = Config::parse(&SourceFile::new("/fuzz/switchboard.toml", text)) {
        // Rendering the errors (file:line:column and the excerpt) must not panic either.
        let _ = error.to_string();
    }
});
