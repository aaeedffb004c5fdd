//! The WebSocket handshake checks and the origin policy, on any request head
//! an HTTP parser accepts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::config::OriginPolicy;
use switchboard::upgrade::{check_request, origin_allowed, same_origin};

fuzz_target!(|data: &[u8]| {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut parsed = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(_)) = parsed.parse(data) else {
        return;
    };
    let mut request = http::Request::builder()
        .method(parsed.method.unwrap_or("GET"))
        .uri(parsed.path.unwrap_or("/"))
        .version(if parsed.version == Some(0) {
            http::Version::HTTP_10
        } else {
            http::Version::HTTP_11
        });
    for header in parsed.headers.iter() {
        request = request.header(header.name, header.value);
    }
    let Ok(request) = request.body(()) else {
        return;
    };
    let _ = check_request(&request);
    let header = |name: http::header::HeaderName| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    let (origin, host) = (header(http::header::ORIGIN), header(http::header::HOST));
    let _ = same_origin(origin, host);
    for policy in [
        OriginPolicy::Any,
        OriginPolicy::SameOrigin,
        OriginPolicy::List(vec!["https://example.com".into(), "*".into()]),
    ] {
        let _ = origin_allowed(&policy, origin, host);
    }
});
