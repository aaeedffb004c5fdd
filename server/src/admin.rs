//! `/_/admin`: the operator's page. The apps with their connections and
//! message rates (the page charts them), the plugins and their versions, the
//! latest callback failures and panics, and a reload button.
//!
//! Loopback only by default; other addresses need `[admin] token` (the config
//! refuses one without the other). The token comes as `?token=` on the page's
//! URL or `Authorization: Bearer`, and the page passes it on to its requests.
//! A reload is a `POST` with the token and, from a browser, an `Origin` of
//! this server, so another site's page cannot trigger one.
//!
//! - `GET <path>`: the page (`admin.html`);
//! - `GET <path>/state`: what the page shows, as JSON;
//! - `POST <path>/reload`: a reload, as `switchboard reload` does.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{header, HeaderValue, Method, Request, StatusCode};
use serde_json::json;
use switchboard_plugin_api::sdk::{bearer_token, tokens_match};

use crate::config::AdminConfig;
use crate::response::{self, FullResponse};
use crate::server::Server;

const PAGE: &str = include_str!("admin.html");

/// Whether `path` is the admin page's or under it.
pub fn is_admin_path(config: &AdminConfig, path: &str) -> bool {
    let base = config.endpoint.path.as_str();
    path == base
        || path
            .strip_prefix(base)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Answers a request for the admin page or its data.
pub async fn handle<B>(
    request: Request<B>,
    client: SocketAddr,
    server: &Arc<Server>,
) -> FullResponse {
    let config = server.config().admin.clone();
    if let Some(refusal) = refusal(&config, &request, client) {
        return refusal;
    }
    let rest = &request.uri().path()[config.endpoint.path.len()..];
    match (request.method(), rest) {
        (&Method::GET, "" | "/") => {
            let mut page =
                response::with_type(StatusCode::OK, PAGE.into(), "text/html; charset=utf-8");
            let headers = page.headers_mut();
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            headers.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'",
                ),
            );
            page
        }
        (&Method::GET, "/state") => response::json(StatusCode::OK, &state(server)),
        (&Method::POST, "/reload") => {
            if !same_origin_or_none(&request) {
                return response::text(
                    StatusCode::FORBIDDEN,
                    "a reload from another site's page is refused\n",
                );
            }
            let config_path = server.config().source.clone();
            match crate::reload::reload(server, &config_path).await {
                Ok(report) => response::json(
                    StatusCode::OK,
                    &json!({ "ok": true, "report": report, "text": report.to_string() }),
                ),
                Err(error) => response::json(
                    StatusCode::CONFLICT,
                    &json!({ "ok": false, "error": error.to_string() }),
                ),
            }
        }
        (_, "" | "/" | "/state" | "/reload") => {
            response::text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
        _ => response::text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// The answer to a client the address allow-list or the token (if one is
/// set) refuses; `None` to let it in.
fn refusal<B>(
    config: &AdminConfig,
    request: &Request<B>,
    client: SocketAddr,
) -> Option<FullResponse> {
    if !config.endpoint.allows(client.ip()) {
        return Some(response::not_allowed_from(
            &config.endpoint.path,
            client.ip(),
        ));
    }
    let token = config.token.as_ref()?;
    let from_header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token);
    let from_query = request.uri().query().and_then(|query| {
        let raw = query
            .split('&')
            .find_map(|pair| pair.strip_prefix("token="))?;
        percent_encoding::percent_decode_str(raw).decode_utf8().ok()
    });
    let given = from_header
        .map(std::borrow::Cow::Borrowed)
        .or(from_query)
        .unwrap_or_default();
    (!tokens_match(&given, token)).then(|| {
        response::asking_for_bearer(response::text(
            StatusCode::UNAUTHORIZED,
            "the admin token is required (?token= or Authorization: Bearer)\n",
        ))
    })
}

/// No `Origin` (not a browser), or one naming this server.
fn same_origin_or_none<B>(request: &Request<B>) -> bool {
    let header = |name| {
        request
            .headers()
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    match header(header::ORIGIN) {
        None => true,
        Some(origin) => crate::upgrade::same_origin(origin, header(header::HOST).unwrap_or("")),
    }
}

/// What the page shows: the health document, and per app its counters and
/// latest failures.
fn state(server: &Server) -> serde_json::Value {
    let apps: Vec<serde_json::Value> = server
        .apps()
        .iter()
        .map(|app| {
            let metrics = app.metrics();
            let instance = app.instance();
            let manifest = instance.plugin().plugin.manifest().clone();
            json!({
                "name": app.name().to_string(),
                "paths": app.settings().paths,
                "plugin": manifest.name,
                "plugin_version": manifest.version,
                "connections": app.registry().len(),
                "messages_in": metrics.messages_in.get(),
                "messages_out": metrics.messages_out.get(),
                "bytes_in": metrics.bytes_in.get(),
                "bytes_out": metrics.bytes_out.get(),
                "reloads": app.reloads(),
                "degraded": instance.is_degraded(),
                "failures": instance.recent_failures(),
            })
        })
        .collect();
    let budget = server.memory_budget();
    json!({
        "health": server.health(),
        "apps": apps,
        "memory_budget": { "used_bytes": budget.used(), "limit_bytes": server.config().server.memory_budget },
        "at_unix_ms": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis()),
    })
}
