//! Opening plugin files.
//!
//! Each file is loaded with `lib_header_from_path` + `init_root_module`, never
//! `RootModule::load_from_*`: those cache one module per root-module type per
//! process, so a second plugin would silently be the first one again
//! (abi_stable issue #92). abi_stable's own errors do not name the file; every
//! error here does, first.

use std::path::{Path, PathBuf};

use abi_stable::library::{lib_header_from_path, LibraryError, RootModuleError};
use abi_stable::std_types::RStr;
use switchboard_plugin_api::abi::{AppBox, HostBox, PluginModuleRef};

/// Why a plugin file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadPluginError {
    /// No file at that path.
    #[error("{}: plugin file not found{}", path.display(), hint_for(path))]
    NotFound {
        /// The plugin file looked for.
        path: PathBuf,
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
    /// Built against a plugin-api version this server cannot load.
    #[error(
        "{}: built against switchboard-plugin-api {built_against}, but this server loads plugins built against {expected}; rebuild the plugin against switchboard-plugin-api {expected}",
        path.display()
    )]
    IncompatibleVersion {
        /// The plugin file.
        path: PathBuf,
        /// The plugin-api version the plugin was built against.
        built_against: String,
        /// The plugin-api version of this server.
        expected: String,
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
    match path.parent() {
        Some(dir) if !dir.is_dir() => format!(" (plugin_dir {} does not exist)", dir.display()),
        Some(_) => {
            " (build it with `cargo build --release --workspace`, or check plugin_dir)".to_owned()
        }
        None => String::new(),
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
    /// Loads and checks a plugin file. The library stays mapped until the process exits.
    ///
    /// # Errors
    /// A [`LoadPluginError`] that names the file.
    pub fn load(path: &Path) -> Result<Plugin, LoadPluginError> {
        let path = path.to_owned();
        if !path.is_file() {
            return Err(LoadPluginError::NotFound { path });
        }
        let module = lib_header_from_path(&path)
            .and_then(|header| header.init_root_module::<PluginModuleRef>())
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
            manifest,
            module,
        })
    }

    /// The file it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the plugin says about itself.
    pub fn manifest(&self) -> &PluginManifest {
        &self.manifest
    }

    /// Builds one app instance.
    ///
    /// # Errors
    /// The constructor's message (a panic in it is caught inside the plugin).
    pub fn new_app(&self, host: HostBox, config_json: &str) -> Result<AppBox, String> {
        (self.module.new_app())(host, RStr::from_str(config_json))
            .into_result()
            .map_err(Into::into)
    }
}

fn classify(path: PathBuf, error: LibraryError) -> LoadPluginError {
    match error {
        LibraryError::OpenError { err, .. } => LoadPluginError::Open {
            path,
            reason: err.to_string(),
        },
        LibraryError::GetSymbolError { .. } => LoadPluginError::NotAPlugin { path },
        LibraryError::IncompatibleVersionNumber {
            expected_version,
            actual_version,
            ..
        } => LoadPluginError::IncompatibleVersion {
            path,
            built_against: actual_version.to_string(),
            expected: format!("{}.{}.x", expected_version.major, expected_version.minor),
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

    #[test]
    fn a_missing_file_is_named() {
        let error = Plugin::load(Path::new("/nonexistent-dir/libnope.so")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "/nonexistent-dir/libnope.so: plugin file not found (plugin_dir /nonexistent-dir does not exist)"
        );
    }
}
