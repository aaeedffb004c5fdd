//! The interface crate: everything a Switchboard plugin and the server share
//! across the ABI boundary, plus the safe SDK that plugin authors use.
//!
//! A plugin is a `cdylib` crate that depends on this crate only:
//!
//! ```no_run
//! use switchboard_plugin_api::{export_app, App, ConnId, Context, Error, Host, Message};
//!
//! struct Echo {
//!     host: Host,
//! }
//!
//! impl App for Echo {
//!     fn new(context: Context) -> Result<Self, Error> {
//!         Ok(Echo { host: context.host })
//!     }
//!
//!     fn on_message(&self, conn: ConnId, message: Message<'_>) -> Result<(), Error> {
//!         self.host.send(conn, message)?;
//!         Ok(())
//!     }
//! }
//!
//! export_app!(Echo);
//! ```
//!
//! # Layout
//!
//! - [`abi`]: the frozen, versioned part: the root module, the `App` and `Host`
//!   trait objects and every `StableAbi` type that crosses the boundary. abi_stable
//!   checks its layout and this crate's version when the server loads a plugin.
//! - [`sdk`]: plain Rust on top of the ABI: the [`App`] trait with default methods,
//!   the [`Host`] handle, [`Shared`] state, and the shims that keep panics from
//!   crossing the boundary.
//! - [`memory_state`]: shared state in memory, as a single node keeps it
//!   (and the reference for a cluster's Redis).
//! - `export_app!`: the one macro a plugin calls to export its app.

pub mod abi;
mod export;
pub mod memory_state;
pub mod sdk;
pub use sdk::testing;

pub use abi::{ConnId, LogLevel};
pub use sdk::{
    Accept, App, ConnInfo, Context, Error, FramePacing, Handshake, Host, HostError, HostErrorKind,
    Message, Push, PushDecision, PushTarget, Reject, ServerInfo, Shared, SharedState,
};

/// The version of this crate, which is the plugin ABI version a plugin is built against.
pub const API_VERSION: &str = env!("CARGO_PKG_VERSION");

#[doc(hidden)]
pub mod __private {
    //! Items used by `export_app!`; not part of the public API.
    pub use crate::export::{lib_header, root_module};
    pub use abi_stable::library::{
        __call_root_module_loader as call_root_module_loader, LibHeader, RootModuleResult,
    };
    pub use abi_stable::std_types::{ROption, RResult, RSlice, RStr, RString};
}
