//! The plugin host: loading plugin files, giving each app its `Host` handle,
//! and calling an app's callbacks safely.
//!
//! - [`loader`]: open a plugin file with abi_stable's version and layout checks.
//! - [`host`]: the server side of the `Host` trait object handed to each app.
//! - [`mount`]: one app instance on its paths, with its settings, its
//!   connections, and the rule for what happens when a callback fails.

pub mod host;
pub mod loader;
pub mod mount;

pub use loader::{LoadPluginError, Plugin};
pub use mount::{CallbackFailure, MountedApp};
