//! The server's private copies of plugin files.
//!
//! The server never maps a file in `plugin_dir`: writing over a mapped shared
//! library changes the code under the running process, which then crashes.
//! Each plugin file is read, hashed (SHA-256) and copied into the runtime
//! directory under a name made of its content hash (written to a temporary
//! name, then renamed), and the copy is loaded. Overwriting, deleting or
//! rebuilding a plugin file is then harmless until a reload; a changed file
//! gets a new name, which is also what lets it be loaded at all (the dynamic
//! loader and abi_stable cache libraries by path, and abi_stable never
//! unloads one).
//!
//! Loaded plugins are kept by hash: a reload that finds a file unchanged
//! reuses its library instead of mapping another copy.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use super::loader::{LoadPluginError, Plugin};

/// A loaded plugin and what the store knows of it.
#[derive(Debug, Clone)]
pub struct StoredPlugin {
    /// The plugin.
    pub plugin: Arc<Plugin>,
    /// The SHA-256 of its file, hex.
    pub hash: String,
    /// When it was loaded.
    pub loaded_at: std::time::SystemTime,
}

/// Plugin copies in the runtime directory, loaded once per content.
#[derive(Debug)]
pub struct PluginStore {
    dir: PathBuf,
    loaded: Mutex<HashMap<String, StoredPlugin>>,
}

impl PluginStore {
    /// A store copying into `dir`, which the caller has created.
    pub fn new(dir: PathBuf) -> Self {
        PluginStore {
            dir,
            loaded: Mutex::new(HashMap::new()),
        }
    }

    /// How many libraries are mapped (one per distinct content ever loaded;
    /// libraries are never unloaded).
    pub fn mapped(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, StoredPlugin>> {
        self.loaded.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Loads the plugin file `source` through a private copy, or returns the
    /// plugin already loaded from the same content. Blocking file I/O: call
    /// it outside the async runtime's workers.
    ///
    /// # Errors
    /// The file cannot be read or copied, or the copy cannot be loaded; the
    /// error names `source`.
    pub fn load(&self, source: &Path) -> Result<StoredPlugin, LoadPluginError> {
        let bytes = std::fs::read(source).map_err(|error| match error.kind() {
            std::io::ErrorKind::NotFound => LoadPluginError::NotFound {
                path: source.to_owned(),
            },
            _ => LoadPluginError::Copy {
                path: source.to_owned(),
                reason: error.to_string(),
            },
        })?;
        let hash = hex(&Sha256::digest(&bytes));
        if let Some(stored) = self.lock().get(&hash) {
            return Ok(stored.clone());
        }
        let copy = self
            .copy(source, &hash, &bytes)
            .map_err(|error| LoadPluginError::Copy {
                path: source.to_owned(),
                reason: format!("cannot copy it into {}: {error}", self.dir.display()),
            })?;
        let plugin = Plugin::load_copy(source, &copy)?;
        let stored = StoredPlugin {
            plugin: Arc::new(plugin),
            hash: hash.clone(),
            loaded_at: std::time::SystemTime::now(),
        };
        self.lock().insert(hash, stored.clone());
        Ok(stored)
    }

    /// Writes `bytes` to `<stem>-<hash prefix>.so` in the runtime directory,
    /// through a temporary file and a rename, so no reader ever sees half a file.
    fn copy(&self, source: &Path, hash: &str, bytes: &[u8]) -> std::io::Result<PathBuf> {
        let stem = source
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("plugin");
        let name = format!("{stem}-{}{}", &hash[..16], std::env::consts::DLL_SUFFIX);
        let target = self.dir.join(name);
        if !target.exists() {
            let temporary = self.dir.join(format!(".{}.partial", &hash[..16]));
            std::fs::write(&temporary, bytes)?;
            std::fs::rename(&temporary, &target)?;
        }
        Ok(target)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_is_not_there_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let store = PluginStore::new(dir.path().to_owned());
        let error = store.load(Path::new("/nonexistent/libx.so")).unwrap_err();
        assert!(matches!(error, LoadPluginError::NotFound { .. }), "{error}");
    }

    #[test]
    fn copies_are_named_by_content_and_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = PluginStore::new(dir.path().to_owned());
        let a = store
            .copy(Path::new("/x/libecho.so"), &"ab".repeat(32), b"one")
            .unwrap();
        assert_eq!(a.file_name().unwrap(), "libecho-abababababababab.so");
        assert_eq!(std::fs::read(&a).unwrap(), b"one");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "no temporary file is left: {names:?}");
    }
}
