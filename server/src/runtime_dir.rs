//! The server's runtime directory: where it keeps its private plugin copies
//! and its control socket (`switchboard reload` talks to it).
//!
//! By default it is `<temp>/switchboard-<hash of the config file's path>`, so
//! `switchboard reload -c FILE` finds the server serving FILE without being
//! told more; `[server] runtime_dir` sets another. It is created with mode
//! 0700 (only the server's user can reach the control socket) and emptied at
//! start, unless a server still answers on its control socket, in which case
//! starting is refused.

use std::path::{Path, PathBuf};

/// The control socket's name inside the runtime directory.
pub const CONTROL_SOCKET: &str = "control.sock";

/// Why the runtime directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeDirError {
    /// Another server runs with it.
    #[error("another switchboard is serving from runtime directory {} (its control socket answers); stop it, or give this one another [server] runtime_dir", dir.display())]
    InUse {
        /// The directory.
        dir: PathBuf,
    },
    /// It cannot be created or emptied.
    #[error("cannot prepare runtime directory {}: {source}", dir.display())]
    Io {
        /// The directory.
        dir: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// The default runtime directory for a config file.
pub fn default_for(config_path: &Path) -> PathBuf {
    let canonical = std::fs::canonicalize(config_path).unwrap_or_else(|_| config_path.to_owned());
    // FNV-1a: a stable name, not a secret.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in canonical.as_os_str().as_encoded_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    std::env::temp_dir().join(format!("switchboard-{hash:016x}"))
}

/// The runtime directory a config file sets, read leniently: a file that does
/// not parse as a whole still names it if its `[server] runtime_dir` line is
/// intact (so `switchboard reload` can reach the server and let it say what is
/// wrong). Relative paths are resolved against the file's directory.
pub fn named_in(config_path: &Path, text: &str) -> PathBuf {
    let (document, _errors) = toml::de::DeTable::parse_recoverable(text);
    let named = document
        .get_ref()
        .get("server")
        .and_then(|server| match server.get_ref() {
            toml::de::DeValue::Table(server) => server.get("runtime_dir"),
            _ => None,
        })
        .and_then(|dir| match dir.get_ref() {
            toml::de::DeValue::String(dir) => Some(PathBuf::from(dir.as_ref())),
            _ => None,
        });
    match named {
        Some(dir) => {
            let base = config_path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            base.join(dir)
        }
        None => default_for(config_path),
    }
}

/// The control socket of a runtime directory.
pub fn control_socket(dir: &Path) -> PathBuf {
    dir.join(CONTROL_SOCKET)
}

/// Creates (mode 0700) and empties `dir` for a starting server. Blocking.
///
/// # Errors
/// Another server answers on its control socket, or the directory cannot be
/// created or emptied.
pub fn prepare(dir: &Path) -> Result<(), RuntimeDirError> {
    let io = |source| RuntimeDirError::Io {
        dir: dir.to_owned(),
        source,
    };
    #[cfg(unix)]
    if std::os::unix::net::UnixStream::connect(control_socket(dir)).is_ok() {
        return Err(RuntimeDirError::InUse {
            dir: dir.to_owned(),
        });
    }
    std::fs::create_dir_all(dir).map_err(io)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
    }
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path).map_err(io)?;
        } else {
            std::fs::remove_file(&path).map_err(io)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_depends_on_the_config_path_only() {
        let a = default_for(Path::new("/etc/switchboard/a.toml"));
        assert_eq!(a, default_for(Path::new("/etc/switchboard/a.toml")));
        assert_ne!(a, default_for(Path::new("/etc/switchboard/b.toml")));
        assert!(a.starts_with(std::env::temp_dir()));
    }

    #[test]
    fn a_broken_file_still_names_its_runtime_dir() {
        let path = Path::new("/etc/sb/switchboard.toml");
        assert_eq!(
            named_in(path, "[server]\nruntime_dir = \"run\"\n[[app\n"),
            PathBuf::from("/etc/sb/run")
        );
        assert_eq!(named_in(path, "[[[ nothing"), default_for(path));
    }

    #[test]
    fn prepare_empties_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = dir.path().join("run");
        std::fs::create_dir(&runtime).unwrap();
        std::fs::write(runtime.join("libold-0123.so"), b"x").unwrap();
        prepare(&runtime).unwrap();
        assert_eq!(std::fs::read_dir(&runtime).unwrap().count(), 0);
    }
}
