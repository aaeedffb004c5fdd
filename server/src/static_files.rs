//! Static pages: files under `static_dir`, served for GET and HEAD, so that
//! the demo pages and the JavaScript client come from the same origin as the
//! WebSockets.
//!
//! Only plain paths are served: every segment made of letters, digits, `.`,
//! `_` and `-`, none starting with a dot, so nothing outside `static_dir` (nor
//! a hidden file) can be named, and a symbolic link is served only when its
//! target is inside `static_dir` too. `/` and directories serve their `index.html`.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, StatusCode};

use crate::response::FullResponse;

/// Largest file served, in bytes: these are pages and scripts, not downloads.
const MAX_FILE: u64 = 8 << 20;

/// The file a request path names under `root`, if the path is a plain one.
pub fn resolve(root: &Path, path: &str) -> Option<PathBuf> {
    let mut file = root.to_owned();
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        let plain = !segment.starts_with('.')
            && segment
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !plain {
            return None;
        }
        file.push(segment);
    }
    Some(file)
}

/// The `Content-Type` of a file, by its extension.
pub fn content_type(file: &Path) -> &'static str {
    match file.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "ico" => "image/x-icon",
        "txt" | "md" => "text/plain; charset=utf-8",
        "woff2" => "font/woff2",
        _ => "application/octet-stream",
    }
}

/// Serves a file for GET/HEAD, or `None` when there is no such file (the
/// caller answers 404 or lets an app answer).
pub async fn serve<B>(root: &Path, request: &Request<B>) -> Option<FullResponse> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return None;
    }
    let mut file = resolve(root, request.uri().path())?;
    let mut metadata = tokio::fs::metadata(&file).await.ok()?;
    if metadata.is_dir() {
        file.push("index.html");
        metadata = tokio::fs::metadata(&file).await.ok()?;
    }
    // A symbolic link may point anywhere: serve it only if it stays inside.
    let real_root = tokio::fs::canonicalize(root).await.ok()?;
    let real_file = tokio::fs::canonicalize(&file).await.ok()?;
    if !real_file.starts_with(&real_root) {
        tracing::debug!(file = %file.display(), "a link out of static_dir is not served");
        return None;
    }
    if !metadata.is_file() || metadata.len() > MAX_FILE {
        return None;
    }
    let body = if request.method() == Method::HEAD {
        Bytes::new()
    } else {
        Bytes::from(tokio::fs::read(&file).await.ok()?)
    };
    let mut response = crate::response::with_type(StatusCode::OK, body, content_type(&file));
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    Some(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_paths_resolve() {
        let root = Path::new("/srv/web");
        assert_eq!(resolve(root, "/"), Some(PathBuf::from("/srv/web")));
        assert_eq!(
            resolve(root, "/chat.html"),
            Some(PathBuf::from("/srv/web/chat.html"))
        );
        assert_eq!(
            resolve(root, "/js/switchboard.js"),
            Some(PathBuf::from("/srv/web/js/switchboard.js"))
        );
        for bad in [
            "/../etc/passwd",
            "/.env",
            "/a/../b",
            "/%2e%2e/x",
            "/a b",
            "/a\\\\b",
        ] {
            assert_eq!(resolve(root, bad), None, "{bad}");
        }
    }

    #[test]
    fn types_follow_extensions() {
        assert_eq!(
            content_type(Path::new("a.html")),
            "text/html; charset=utf-8"
        );
        assert_eq!(
            content_type(Path::new("a.js")),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(content_type(Path::new("a")), "application/octet-stream");
    }
}
