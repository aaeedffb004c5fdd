//! The client's address from `Forwarded` and `X-Forwarded-For`, as a trusted
//! proxy passes them: an address, or a refusal naming the entry.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::client_addr::client_addr;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the header(s); the rest is the value(s), split at NUL.
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let mut headers = http::HeaderMap::new();
    for (i, value) in rest.split(|b| *b == 0).enumerate() {
        let Ok(value) = http::HeaderValue::from_bytes(value) else {
            return;
        };
        let name = if (which >> (i % 8)) & 1 == 0 {
            "forwarded"
        } else {
            "x-forwarded-for"
        };
        headers.append(name, value);
    }
    let trusted = [
        "127.0.0.0/8".parse().unwrap(),
        "10.0.0.0/8".parse().unwrap(),
    ];
    let peer = "127.0.0.1:4000".parse().unwrap();
    if let Ok(addr) = client_addr(peer, &headers, &trusted) {
        let _ = addr.to_string();
    }
});
