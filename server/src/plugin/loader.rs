//! Opening plugin files.
//!
//! Each file is loaded with `lib_header_from_path` + `init_root_module`, never
//! `RootModule::load_from_*`: those cache one module per root-module type per
//! process, so a second plugin would silently be the first one again
//! (abi_stable issue #92). abi_stable's own errors do not name the file; every
//! error here does, first.
//!
//! The plugin-api version a plugin was built against is checked here before
//! abi_stable's layout check, so that its refusal is one line instead of a
//! layout dump. The rule is abi_stable's: a plugin may be built against this
//! server's plugin-api version or a newer one of the same series (0.1.2 and
//! later 0.1.x for a 0.1.2 server), never an older one. abi_stable's layout
//! check lets the implementation (the plugin) have more trait methods and
//! fields than the interface (the server) expects, never fewer, and the
//! `Host` the server hands a plugin is such a trait object: a plugin built
//! against an older plugin-api expects fewer `Host` methods than the server
//! has, and is refused. A newer plugin loads; a `Host` method the server lacks
//! answers the default the ABI defines for it.

use std::path::{Path, PathBuf};

use abi_stable::library::{lib_header_from_path, LibraryError, RootModuleError};
use abi_stable::sabi_types::VersionNumber;
use abi_stable::std_types::{ROption, RSlice, RStr};
use switchboard_plugin_api::abi::{AppBox, HostBox, PluginModuleRef};
use switchboard_plugin_api::API_VERSION;

use crate::config::PluginSpec;

/// The example plugins of the Switchboard repository, for the not-found hint.
const EXAMPLE_PLUGINS: &[&str] = &[
    "echo", "commands", "chat", "locks", "clock", "progress", "hub",
];

/// `chat` → `libchat.so` (the platform's shared-library naming).
pub fn plugin_file_name(name: &str) -> String {
    format!(
        "{}{name}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    )
}

/// The file of the plugin an app names: `chat` is `libchat.so` in `plugin_dir`.
pub fn plugin_file(plugin_dir: &Path, plugin: &PluginSpec) -> PathBuf {
    match plugin {
        PluginSpec::Named(name) => plugin_dir.join(plugin_file_name(name)),
        PluginSpec::File(file) => file.clone(),
    }
}

/// A plugin's constructor refused to build an app (its config, a failure or a panic).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("plugin {} refused to start: {message}", plugin.display())]
pub struct NewAppError {
    /// The plugin file.
    pub plugin: PathBuf,
    /// The constructor's message.
    pub message: String,
}

/// Why a plugin file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadPluginError {
    /// No file at that path.
    #[error("{}: plugin file not found{}", path.display(), hint_for(path))]
    NotFound {
        /// The plugin file looked for.
        path: PathBuf,
    },
    /// The file could not be read or copied for loading.
    #[error("{}: cannot be loaded: {reason}", path.display())]
    Copy {
        /// The plugin file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// The dynamic loader refused the file.
    #[error("{}: cannot be opened as a shared library: {reason}", path.display())]
    Open {
        /// The plugin file.
        path: PathBuf,
        /// The dynamic loader's message.
        reason: String,
    },
    /// A shared library, but not a Switchboard plugin.
    #[error("{}: not a Switchboard plugin (it exports no plugin root module; was it built with export_app!?)", path.display())]
    NotAPlugin {
        /// The plugin file.
        path: PathBuf,
    },
    /// Built against an older plugin-api version of an incompatible series.
    #[error(
        "{}: built against switchboard-plugin-api {built_against}, but this server loads plugins built against {accepted}; rebuild the plugin against switchboard-plugin-api {server}",
        path.display()
    )]
    IncompatibleVersion {
        /// The plugin file.
        path: PathBuf,
        /// The plugin-api version the plugin was built against.
        built_against: String,
        /// The range this server loads (`0.1.0 to 0.1.2`).
        accepted: String,
        /// This server's plugin-api version.
        server: String,
    },
    /// Built against an older plugin-api of this server's series.
    #[error(
        "{}: built against switchboard-plugin-api {built_against}, older than this server's {server}; rebuild the plugin against switchboard-plugin-api {server} (the ABI only grew, so its code needs no change)",
        path.display()
    )]
    OlderVersion {
        /// The plugin file.
        path: PathBuf,
        /// The plugin-api version the plugin was built against.
        built_against: String,
        /// This server's plugin-api version.
        server: String,
    },
    /// The ABI types differ from this server's (the layout check failed).
    #[error("{}: built against an incompatible switchboard-plugin-api (its ABI types differ from this server's): {detail}", path.display())]
    IncompatibleLayout {
        /// The plugin file.
        path: PathBuf,
        /// The start of abi_stable's report.
        detail: String,
    },
    /// Any other abi_stable refusal (incompatible abi_stable version, C ABI test failure).
    #[error("{}: refused by the ABI checks: {detail}", path.display())]
    Refused {
        /// The plugin file.
        path: PathBuf,
        /// abi_stable's explanation, on one line.
        detail: String,
    },
    /// The plugin's root module failed to initialise.
    #[error("{}: the plugin's root module failed to initialise: {detail}", path.display())]
    Init {
        /// The plugin file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
}

fn hint_for(path: &Path) -> String {
    let Some(dir) = path.parent() else {
        return String::new();
    };
    if !dir.is_dir() {
        return format!(" (plugin_dir {} does not exist)", dir.display());
    }
    let file = path.file_name().and_then(|f| f.to_str()).unwrap_or("");
    if EXAMPLE_PLUGINS
        .iter()
        .any(|name| plugin_file_name(name) == file)
    {
        " (the example plugins are built by `cargo build --release --workspace` in the Switchboard repository; or check plugin_dir)".to_owned()
    } else {
        format!(
            " (build the plugin with `cargo build --release` and copy its {file} into {}, or give the file's path in `plugin`)",
            dir.display()
        )
    }
}

/// Squeezes abi_stable's multi-line reports into one line of bounded length.
fn one_line(text: &str) -> String {
    let mut line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.len() > 600 {
        let cut = (0..=600)
            .rev()
            .find(|&i| line.is_char_boundary(i))
            .unwrap_or(0);
        line.truncate(cut);
        line.push_str(" ...");
    }
    line
}

/// What a plugin says about itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PluginManifest {
    /// The plugin's name.
    pub name: String,
    /// The plugin's own version.
    pub version: String,
    /// The plugin-api version it was built against.
    pub api_version: String,
    /// One line on what it does.
    pub description: String,
}

/// A loaded, checked plugin file.
pub struct Plugin {
    path: PathBuf,
    loaded_from: PathBuf,
    manifest: PluginManifest,
    module: PluginModuleRef,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("path", &self.path)
            .field("manifest", &self.manifest)
            .finish()
    }
}

impl Plugin {
    /// Loads and checks a plugin file in place. The library stays mapped until
    /// the process exits; the server itself loads private copies
    /// ([`super::store::PluginStore`]), this is for `check` and `plugins`.
    ///
    /// # Errors
    /// A [`LoadPluginError`] that names the file.
    pub fn load(path: &Path) -> Result<Plugin, LoadPluginError> {
        Plugin::load_copy(path, path)
    }

    /// Loads and checks `copy`, a copy of the plugin file `path`; errors and
    /// the plugin name `path`.
    ///
    /// # Errors
    /// A [`LoadPluginError`] that names `path`.
    pub fn load_copy(path: &Path, copy: &Path) -> Result<Plugin, LoadPluginError> {
        let path = path.to_owned();
        if !copy.is_file() {
            return Err(LoadPluginError::NotFound { path });
        }
        let header = lib_header_from_path(copy).map_err(|error| classify(path.clone(), error))?;
        if let Ok(built_against) = VersionNumber::new(header.version_strings()) {
            check_api_version(&path, built_against)?;
        }
        let module = header
            .init_root_module::<PluginModuleRef>()
            .map_err(|error| classify(path.clone(), error))?;
        let m = module.manifest();
        let manifest = PluginManifest {
            name: m.name.to_string(),
            version: m.version.to_string(),
            api_version: m.api_version.to_string(),
            description: m.description.to_string(),
        };
        Ok(Plugin {
            path,
            loaded_from: copy.to_owned(),
            manifest,
            module,
        })
    }

    /// The plugin file (in `plugin_dir`, or as the config names it).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file actually mapped: the server's private copy of [`Plugin::path`].
    pub fn loaded_from(&self) -> &Path {
        &self.loaded_from
    }

    /// What the plugin says about itself.
    pub fn manifest(&self) -> &PluginManifest {
        &self.manifest
    }

    /// Builds one app instance.
    ///
    /// # Errors
    /// The constructor refused (a panic in it is caught inside the plugin).
    pub fn new_app(
        &self,
        host: HostBox,
        config_json: &str,
        saved_state: ROption<RSlice<'_, u8>>,
    ) -> Result<AppBox, NewAppError> {
        // Present in every plugin this server loads (0.1.3 and later).
        let built = match self.module.new_app_with_state() {
            Some(new_app) => new_app(host, RStr::from_str(config_json), saved_state),
            None => (self.module.new_app())(host, RStr::from_str(config_json)),
        };
        built.into_result().map_err(|message| NewAppError {
            plugin: self.path.clone(),
            message: message.into_string(),
        })
    }
}

/// This server's plugin-api version.
fn server_api_version() -> VersionNumber {
    let mut parts = API_VERSION.split('.').map(|p| p.parse().unwrap_or(0));
    VersionNumber {
        major: parts.next().unwrap_or(0),
        minor: parts.next().unwrap_or(0),
        patch: parts.next().unwrap_or(0),
    }
}

/// Whether a plugin built against `plugin` may be loaded by a server built
/// against `server`: the same compatible series (the same major version, and
/// for 0.x the same minor) and not older.
///
/// # Errors
/// `IncompatibleVersion` for another series, `OlderVersion` for an older plugin.
fn check_api_version(path: &Path, plugin: VersionNumber) -> Result<(), LoadPluginError> {
    let server = server_api_version();
    let series = |v: &VersionNumber| {
        if v.major == 0 {
            (0, v.minor)
        } else {
            (v.major, 0)
        }
    };
    if series(&plugin) != series(&server) {
        let (major, minor) = series(&server);
        let accepted = if major == 0 {
            format!("0.{minor}.{} and later 0.{minor}.x", server.patch)
        } else {
            format!("{server} and later {major}.x")
        };
        return Err(LoadPluginError::IncompatibleVersion {
            path: path.to_owned(),
            built_against: plugin.to_string(),
            accepted,
            server: server.to_string(),
        });
    }
    let as_tuple = |v: &VersionNumber| (v.major, v.minor, v.patch);
    if as_tuple(&plugin) < as_tuple(&server) {
        return Err(LoadPluginError::OlderVersion {
            path: path.to_owned(),
            built_against: plugin.to_string(),
            server: server.to_string(),
        });
    }
    Ok(())
}

fn classify(path: PathBuf, error: LibraryError) -> LoadPluginError {
    match error {
        LibraryError::OpenError { err, .. } => LoadPluginError::Open {
            path,
            reason: err.to_string(),
        },
        LibraryError::GetSymbolError { .. } => LoadPluginError::NotAPlugin { path },
        // Normally caught by `check_api_version` first.
        LibraryError::IncompatibleVersionNumber {
            expected_version,
            actual_version,
            ..
        } => LoadPluginError::IncompatibleVersion {
            path,
            built_against: actual_version.to_string(),
            accepted: format!("{}.{}.x", expected_version.major, expected_version.minor),
            server: expected_version.to_string(),
        },
        LibraryError::AbiInstability(report) => LoadPluginError::IncompatibleLayout {
            path,
            detail: one_line(&report.to_string()),
        },
        LibraryError::RootModule {
            err: RootModuleError::Unwound,
            ..
        } => LoadPluginError::Init {
            path,
            detail: "the root module loader panicked".to_owned(),
        },
        LibraryError::RootModule { err, .. } => LoadPluginError::Init {
            path,
            detail: one_line(&err.to_string()),
        },
        other => LoadPluginError::Refused {
            path,
            detail: one_line(&other.to_string()),
        },
    }
}

/// Every `lib*.so` file in a directory, sorted.
///
/// # Errors
/// The directory cannot be read.
pub fn plugin_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.is_file()
                && path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|name| {
                        name.starts_with(std::env::consts::DLL_PREFIX)
                            && name.ends_with(std::env::consts::DLL_SUFFIX)
                    })
        })
        .collect();
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_reports_become_one_bounded_line() {
        let report = "\nline one\n   line two\n".to_owned() + &"é".repeat(700);
        let line = one_line(&report);
        assert!(line.starts_with("line one line two é"));
        assert!(line.ends_with(" ...") && line.len() <= 604);
    }

    fn version(text: &str) -> VersionNumber {
        let mut parts = text.split('.').map(|p| p.parse().unwrap());
        VersionNumber {
            major: parts.next().unwrap(),
            minor: parts.next().unwrap(),
            patch: parts.next().unwrap(),
        }
    }

    #[test]
    fn newer_plugins_of_the_series_load_and_older_ones_are_refused() {
        let server = server_api_version();
        let path = Path::new("libx.so");
        assert!(check_api_version(path, server).is_ok());
        let newer = version(&format!("0.{}.{}", server.minor, server.patch + 1));
        assert!(check_api_version(path, newer).is_ok());
        let older = version(&format!("0.{}.0", server.minor));
        if server.patch > 0 {
            let error = check_api_version(path, older).unwrap_err().to_string();
            assert_eq!(
                error,
                format!("libx.so: built against switchboard-plugin-api {older}, older than this server's {server}; rebuild the plugin against switchboard-plugin-api {server} (the ABI only grew, so its code needs no change)")
            );
        }
        let next_series = version(&format!("0.{}.0", server.minor + 1));
        assert!(matches!(
            check_api_version(path, next_series),
            Err(LoadPluginError::IncompatibleVersion { .. })
        ));
        let error = check_api_version(path, version("0.0.1"))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(&format!(
                "but this server loads plugins built against 0.{}.{} and later 0.{}.x",
                server.minor, server.patch, server.minor
            )),
            "{error}"
        );
    }

    #[test]
    fn a_missing_file_is_named() {
        let error = Plugin::load(Path::new("/nonexistent-dir/libnope.so")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "/nonexistent-dir/libnope.so: plugin file not found (plugin_dir /nonexistent-dir does not exist)"
        );
    }
}
