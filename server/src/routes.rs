//! What the server serves now: a config and the apps mounted from it, with
//! the table that finds the app for a request. Requests take the snapshot
//! current when they start; a reload puts a new one in place.
//!
//! A path is exact (`/chat`) or a pattern (`/rooms/{room}`, `/files/{*rest}`),
//! matched by `matchit` (exact paths win, then the most specific pattern).
//! One path may hold several apps, chosen by the subprotocol the client
//! offers; a path with one app gives it every request, as it always did.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::Config;
use crate::connection::ConnectionSettings;
use crate::plugin::MountedApp;

/// The apps on one path.
#[derive(Debug, Default)]
pub struct PathApps {
    /// The app for clients whose offer names none of the others.
    default: Option<Arc<MountedApp>>,
    /// Subprotocol → the app that lists it, in config order.
    by_subprotocol: Vec<(String, Arc<MountedApp>)>,
    /// Every app on the path, in config order.
    all: Vec<Arc<MountedApp>>,
}

/// A client's offer that no app on the path serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoAppForOffer {
    /// What the client offered.
    pub offered: Vec<String>,
    /// What the path serves.
    pub served: Vec<String>,
}

impl PathApps {
    /// The app for a client offering `offered` (in its order of
    /// preference): the first app that lists one of them; for a client that
    /// offers none, the path's default. A path with a single app gives it
    /// every client, as a path always did.
    ///
    /// An offer that matches no app is refused even where there is a default:
    /// the default lists no subprotocol, so it could not answer one the
    /// client requires, and the client would fail the connection after the 101.
    ///
    /// # Errors
    /// No app for this offer.
    pub fn select(&self, offered: &[String]) -> Result<&Arc<MountedApp>, NoAppForOffer> {
        if let [only] = self.all.as_slice() {
            return Ok(only);
        }
        let chosen = if offered.is_empty() {
            self.default.as_ref()
        } else {
            offered.iter().find_map(|protocol| {
                self.by_subprotocol
                    .iter()
                    .find(|(p, _)| p == protocol)
                    .map(|(_, app)| app)
            })
        };
        chosen.ok_or_else(|| NoAppForOffer {
            offered: offered.to_vec(),
            served: self.subprotocols(),
        })
    }

    /// The app a push names by path and, on a shared path, subprotocol.
    pub fn named_by(&self, subprotocol: Option<&str>) -> Option<&Arc<MountedApp>> {
        match subprotocol {
            Some(protocol) => self
                .by_subprotocol
                .iter()
                .find(|(p, _)| p == protocol)
                .map(|(_, app)| app),
            None => match self.all.as_slice() {
                [only] => Some(only),
                _ => self.default.as_ref(),
            },
        }
    }

    /// The subprotocols the path's apps list.
    pub fn subprotocols(&self) -> Vec<String> {
        self.by_subprotocol.iter().map(|(p, _)| p.clone()).collect()
    }
}

/// A request path matched to its apps.
#[derive(Debug)]
pub struct Matched<'a> {
    /// The apps on the matched path.
    pub apps: &'a PathApps,
    /// What a pattern captured, percent-decoded.
    pub params: Vec<(String, String)>,
}

/// A capture that cannot be handed to an app.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadCapture {
    /// Not valid UTF-8 once decoded.
    #[error("the path segment for {{{0}}} is not valid UTF-8 once decoded")]
    NotUtf8(String),
    /// An empty segment or a `.`/`..` segment.
    #[error("the path for {{{0}}} has an empty, '.' or '..' segment")]
    BadSegment(String),
}

/// What the server serves now.
#[derive(Debug)]
pub struct Routes {
    /// The configuration.
    pub config: Arc<Config>,
    /// Every app, in config order.
    mounts: Vec<Arc<MountedApp>>,
    /// Path (as written, patterns too) → its apps.
    paths: HashMap<String, PathApps>,
    /// Request path → the path it matches.
    table: PathTable,
    /// App name → its demo page under `static_dir`.
    pages: HashMap<String, String>,
    /// Settings every new WebSocket connection takes.
    pub connection_settings: Arc<ConnectionSettings>,
}

impl Routes {
    /// Builds the routes of `config` over already mounted apps (in config order).
    pub fn new(config: Arc<Config>, mounts: Vec<Arc<MountedApp>>) -> Self {
        let mut paths: HashMap<String, PathApps> = HashMap::new();
        let mut table = PathTable::default();
        for mount in &mounts {
            let settings = mount.settings();
            for path in &settings.paths {
                let entry = paths.entry(path.clone()).or_insert_with(|| {
                    table.insert(path);
                    PathApps::default()
                });
                entry.all.push(mount.clone());
                if settings.subprotocols.is_empty() {
                    entry.default = Some(mount.clone());
                }
                for protocol in &settings.subprotocols {
                    entry.by_subprotocol.push((protocol.clone(), mount.clone()));
                }
            }
        }
        let pages = demo_pages(&config, &mounts);
        Routes {
            connection_settings: Arc::new(ConnectionSettings::new(&config.server)),
            config,
            mounts,
            paths,
            table,
            pages,
        }
    }

    /// The apps for a request path (raw, as the request line has it).
    ///
    /// # Errors
    /// A pattern matched, but what it captured cannot be handed to an app.
    pub fn lookup(&self, path: &str) -> Option<Result<Matched<'_>, BadCapture>> {
        let (pattern, params) = self.table.find(path)?;
        let apps = self.paths.get(pattern)?;
        Some(params.map(|params| Matched { apps, params }))
    }

    /// The apps mounted on a path exactly as the config writes it (patterns too).
    pub fn at_path(&self, path: &str) -> Option<&PathApps> {
        self.paths.get(path)
    }

    /// The app with this name.
    pub fn app_named(&self, name: &str) -> Option<&Arc<MountedApp>> {
        self.mounts.iter().find(|app| &**app.name() == name)
    }

    /// Every mounted app, in config order.
    pub fn apps(&self) -> Vec<Arc<MountedApp>> {
        self.mounts.clone()
    }

    /// An app's demo page under `static_dir`, if it has one.
    pub fn page(&self, name: &str) -> Option<&String> {
        self.pages.get(name)
    }
}

/// What a pattern captured from a request path: (name, decoded value).
pub type Captures = Vec<(String, String)>;

/// The mounted paths and patterns (matchit), and what a request path
/// captures from them, decoded and checked.
#[derive(Debug, Default)]
pub struct PathTable {
    router: matchit::Router<String>,
}

impl PathTable {
    /// Adds a path or pattern (the config has refused ambiguous ones already;
    /// one that still does not fit is left out).
    pub fn insert(&mut self, pattern: &str) {
        let _ = self.router.insert(pattern, pattern.to_owned());
    }

    /// The pattern a request path (raw, as the request line has it) matches,
    /// and its captures, percent-decoded.
    ///
    /// # Errors
    /// A capture is not UTF-8, or holds an empty, `.` or `..` segment.
    pub fn find(&self, path: &str) -> Option<(&str, Result<Captures, BadCapture>)> {
        let found = self.router.at(path).ok()?;
        let params = found
            .params
            .iter()
            .map(|(name, raw)| decode(name, raw).map(|value| (name.to_owned(), value)))
            .collect();
        Some((found.value.as_str(), params))
    }
}

/// A captured segment, percent-decoded and checked: UTF-8, no empty, `.` or
/// `..` segment (a catch-all may hold several segments).
fn decode(name: &str, raw: &str) -> Result<String, BadCapture> {
    let value = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| BadCapture::NotUtf8(name.to_owned()))?
        .into_owned();
    if raw.split('/').any(|s| s.is_empty())
        || value
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(BadCapture::BadSegment(name.to_owned()));
    }
    Ok(value)
}

/// Each app's demo page: `<plugin name>.html` under `static_dir`, if it exists.
fn demo_pages(config: &Config, apps: &[Arc<MountedApp>]) -> HashMap<String, String> {
    let Some(dir) = &config.server.static_dir else {
        return HashMap::new();
    };
    apps.iter()
        .filter_map(|app| {
            let instance = app.instance();
            let page = format!("{}.html", instance.plugin().plugin.manifest().name);
            dir.join(&page)
                .is_file()
                .then(|| (app.name().to_string(), format!("/{page}")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_are_decoded_and_checked() {
        assert_eq!(decode("room", "caf%C3%A9").unwrap(), "café");
        assert_eq!(decode("rest", "a/b%20c").unwrap(), "a/b c");
        assert_eq!(
            decode("rest", "a/../b"),
            Err(BadCapture::BadSegment("rest".into()))
        );
        assert_eq!(
            decode("room", "%2E%2E"),
            Err(BadCapture::BadSegment("room".into()))
        );
        assert_eq!(
            decode("rest", "a//b"),
            Err(BadCapture::BadSegment("rest".into()))
        );
        assert_eq!(
            decode("room", "%FF"),
            Err(BadCapture::NotUtf8("room".into()))
        );
    }
}
