//! Request paths against mounted paths and patterns: a match's captures are
//! decoded UTF-8 with no empty, `.` or `..` segment, or the match is refused.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::routes::PathTable;

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let mut table = PathTable::default();
    for pattern in [
        "/",
        "/echo",
        "/chat",
        "/chat/{room}",
        "/files/{*rest}",
        "/t/{tenant}/apps/{app}",
        "/_/push",
    ] {
        table.insert(pattern);
    }
    if let Some((_, Ok(captures))) = table.find(path) {
        for (_, value) in captures {
            assert!(value
                .split('/')
                .all(|segment| !segment.is_empty() && segment != "." && segment != ".."));
        }
    }
});
