//! The plugin host: loading plugin files, giving each app its `Host` handle,
//! and calling an app's callbacks safely.
//!
//! - [`loader`]: open a plugin file with abi_stable's version and layout checks.
//! - [`host`]: the server side of the `Host` trait object handed to each app.
//! - [`instance`]: one instance of an app, the calls into its callbacks, and
//!   the rule for what happens when one fails.
//! - [`mount`]: one app on its paths: settings, connections, the current
//!   instance and the gate that lets a reload replace it.
//! - [`store`]: the private, content-named copies the server loads plugins from.

pub mod host;
pub mod instance;
pub mod loader;
pub mod mount;
pub mod store;

pub use instance::{AppInstance, CallbackFailure};
pub use loader::{LoadPluginError, Plugin};
pub use mount::MountedApp;
