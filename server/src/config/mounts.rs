//! The checks that need every `[[app]]` at once: which paths the apps share
//! and how, path patterns, subprotocol tokens and app names.
//!
//! Apps may share a path when each lists its `subprotocols`: a client is
//! routed by the subprotocol it offers, and at most one app on the path lists
//! none (the path's default). A path may be a pattern (`/rooms/{room}`,
//! `/files/{*rest}`); exact paths win over patterns and patterns that could
//! match the same request in the same way are refused. Every app has a name,
//! unique in the file: its `name`, else its first path, else (on a path it
//! shares) `path#first-subprotocol`.

use std::collections::HashMap;
use std::ops::Range;

use super::source::SourceFile;
use super::ConfigProblem;

/// Where one app's values are written, for the problems found here.
pub(super) struct Located {
    /// Each path with its span.
    pub(super) paths: Vec<(String, Range<usize>)>,
    /// Each subprotocol with its span.
    pub(super) subprotocols: Vec<(String, Range<usize>)>,
    /// The explicit `name`, with its span.
    pub(super) name: Option<(String, Range<usize>)>,
}

/// What is wrong with an app path, if anything: it starts with `/`, is not
/// reserved, and each segment is plain text (no `?`, `#`, spaces, braces), a
/// `{name}` or, last, a `{*name}`.
pub(super) fn path_problem(path: &str, reserved_prefix: &str) -> Option<String> {
    if !path.starts_with('/') {
        return Some(format!("app path {path:?} must start with '/'"));
    }
    if path.starts_with(reserved_prefix) || path == "/_" {
        return Some(format!(
            "app path {path:?} is reserved for the server's own endpoints ({reserved_prefix}...)"
        ));
    }
    if path.contains(['?', '#', ' ']) {
        return Some(format!(
            "app path {path:?} may not contain '?', '#' or spaces"
        ));
    }
    let segments: Vec<&str> = path[1..].split('/').collect();
    for (i, segment) in segments.iter().enumerate() {
        if !segment.contains(['{', '}']) {
            continue;
        }
        let inner = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}'));
        let (name, rest) = match inner {
            Some(inner) => match inner.strip_prefix('*') {
                Some(name) => (name, true),
                None => (inner, false),
            },
            None => {
                return Some(format!(
                    "app path {path:?}: a pattern segment is a whole segment, {{name}} or a last {{*name}}"
                ))
            }
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Some(format!(
                "app path {path:?}: {segment:?} must name its capture with letters, digits and '_'"
            ));
        }
        if rest && i + 1 != segments.len() {
            return Some(format!(
                "app path {path:?}: {{*{name}}} takes the rest of the path, so it must be the last segment"
            ));
        }
    }
    None
}

/// Whether `text` is a valid subprotocol: an HTTP token (RFC 7230 §3.2.6).
fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// One app's place on a path.
struct OnPath {
    app: usize,
    line: usize,
    subprotocols: Vec<String>,
    span: Range<usize>,
}

/// Checks every app against the others; returns each app's name.
pub(super) fn check(
    apps: &[Located],
    source: &SourceFile,
    problems: &mut Vec<ConfigProblem>,
) -> Vec<String> {
    let mut on_path: HashMap<&str, Vec<OnPath>> = HashMap::new();
    let mut order: Vec<&str> = Vec::new();
    for (index, app) in apps.iter().enumerate() {
        for (protocol, span) in &app.subprotocols {
            if !is_token(protocol) {
                problems.push(source.problem(
                    Some(span.clone()),
                    format!("subprotocol {protocol:?} is not a valid token (letters, digits and !#$%&'*+-.^_`|~, no spaces or commas)"),
                ));
            }
        }
        for (path, span) in &app.paths {
            let entry = on_path.entry(path.as_str()).or_default();
            if entry.is_empty() {
                order.push(path);
            }
            if let Some(same) = entry.iter().find(|p| p.app == index) {
                problems.push(source.problem(
                    Some(span.clone()),
                    format!(
                        "app path {path:?} is mounted twice (first at line {})",
                        same.line
                    ),
                ));
                continue;
            }
            entry.push(OnPath {
                app: index,
                line: source.line_of(span.start),
                subprotocols: app.subprotocols.iter().map(|(p, _)| p.clone()).collect(),
                span: span.clone(),
            });
        }
    }
    for path in &order {
        let entries = &on_path[path];
        if entries.len() < 2 {
            continue;
        }
        let mut default: Option<&OnPath> = None;
        let mut claimed: HashMap<&str, &OnPath> = HashMap::new();
        for entry in entries {
            if entry.subprotocols.is_empty() {
                if let Some(first) = default {
                    problems.push(source.problem(
                        Some(entry.span.clone()),
                        format!(
                            "app path {path:?} is mounted twice (first at line {}); apps share a path only when they list `subprotocols`, and at most one without them is the path's default",
                            first.line
                        ),
                    ));
                } else {
                    default = Some(entry);
                }
            }
            for protocol in &entry.subprotocols {
                if let Some(first) = claimed.get(protocol.as_str()) {
                    problems.push(source.problem(
                        Some(entry.span.clone()),
                        format!(
                            "subprotocol {protocol:?} is claimed by two apps on path {path:?} (first at line {})",
                            first.line
                        ),
                    ));
                } else {
                    claimed.insert(protocol, entry);
                }
            }
        }
    }
    check_patterns(&order, &on_path, source, problems);
    names(apps, &on_path, source, problems)
}

/// Patterns that a request could match in the same way are ambiguous.
fn check_patterns(
    order: &[&str],
    on_path: &HashMap<&str, Vec<OnPath>>,
    source: &SourceFile,
    problems: &mut Vec<ConfigProblem>,
) {
    let mut router = matchit::Router::new();
    for path in order {
        // Braces are pattern syntax only; checked by `path_problem` already.
        if let Err(error) = router.insert(*path, ()) {
            let span = on_path[path].first().map(|p| p.span.clone());
            let message = match error {
                matchit::InsertError::Conflict { with } => format!(
                    "app path {path:?} is ambiguous with {with:?}: a request could match both"
                ),
                other => format!("app path {path:?} is not a valid pattern: {other}"),
            };
            problems.push(source.problem(span, message));
        }
    }
}

fn names(
    apps: &[Located],
    on_path: &HashMap<&str, Vec<OnPath>>,
    source: &SourceFile,
    problems: &mut Vec<ConfigProblem>,
) -> Vec<String> {
    // Name → (line, whether it was written). Two derived names collide only
    // when two apps claim the same path and subprotocol, reported already.
    let mut taken: HashMap<String, (usize, bool)> = HashMap::new();
    apps.iter()
        .map(|app| {
            let (first_path, first_span) = app
                .paths
                .first()
                .cloned()
                .unwrap_or_else(|| (String::new(), 0..0));
            let shared = on_path.get(first_path.as_str()).is_some_and(|p| p.len() > 1);
            let (name, span) = match &app.name {
                Some((name, span)) => (name.clone(), span.clone()),
                None => match app.subprotocols.first() {
                    Some((protocol, _)) if shared => (format!("{first_path}#{protocol}"), first_span),
                    _ => (first_path, first_span),
                },
            };
            let line = source.line_of(span.start);
            if app.name.is_some() && name.is_empty() {
                problems.push(source.problem(Some(span), "app name is empty"));
            } else if let Some((first, written)) = taken.get(&name) {
                if *written || app.name.is_some() {
                    problems.push(source.problem(
                        Some(span),
                        format!("app name {name:?} is used twice (first at line {first}); give one a `name`"),
                    ));
                }
            } else {
                taken.insert(name.clone(), (line, app.name.is_some()));
            }
            name
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_are_whole_segments() {
        assert_eq!(path_problem("/rooms/{room}", "/_/"), None);
        assert_eq!(path_problem("/files/{*rest}", "/_/"), None);
        assert!(path_problem("/files/{*rest}/more", "/_/")
            .unwrap()
            .contains("last segment"));
        assert!(path_problem("/a{b}", "/_/")
            .unwrap()
            .contains("whole segment"));
        assert!(path_problem("/{}", "/_/")
            .unwrap()
            .contains("name its capture"));
    }

    #[test]
    fn subprotocols_are_tokens() {
        assert!(is_token("chat.v1") && is_token("x-y_z~1"));
        assert!(!is_token("a b") && !is_token("a,b") && !is_token(""));
    }
}
