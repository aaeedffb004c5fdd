//! The server's own HTTP responses: plain text and JSON bodies, built one way
//! for every endpoint (router, upgrade refusals, push API, status endpoints).

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;

/// A response with a complete body.
pub type FullResponse = Response<Full<Bytes>>;

/// A plain-text response.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> FullResponse {
    with_type(status, body.into(), "text/plain; charset=utf-8")
}

/// A JSON response.
pub fn json(status: StatusCode, body: &serde_json::Value) -> FullResponse {
    with_type(status, Bytes::from(body.to_string()), "application/json")
}

/// A response with a body of the given content type.
pub fn with_type(status: StatusCode, body: Bytes, content_type: &'static str) -> FullResponse {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// 403 for a server endpoint its allow-list keeps from `ip`.
pub fn not_allowed_from(path: &str, ip: std::net::IpAddr) -> FullResponse {
    text(
        StatusCode::FORBIDDEN,
        format!("{path} is not allowed from {ip}\n"),
    )
}

/// `response`, as a 401 that asks for a bearer token (`WWW-Authenticate: Bearer`).
pub fn asking_for_bearer(mut response: FullResponse) -> FullResponse {
    *response.status_mut() = StatusCode::UNAUTHORIZED;
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}
