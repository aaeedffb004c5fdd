//! The safe SDK: ordinary Rust types and traits on top of [`crate::abi`], so a
//! plugin never touches an abi_stable type.
//!
//! Unlike `abi`, this module is compiled into each plugin and may change
//! freely between versions. One concept per file:
//!
//! - `app`: the [`App`] trait a plugin implements and its [`Context`];
//! - `message`: [`Message`], what an app receives and sends;
//! - `host`: the [`Host`] handle back to the server;
//! - `conn_info`: [`ConnInfo`], what the server knows of a connection;
//! - `handshake`: [`Handshake`], [`Accept`] and [`Reject`];
//! - `push`: pushes from backends and the app's [`PushDecision`];
//! - `shared`: [`Shared`], state behind a lock a panic does not poison;
//! - `state`: [`SharedState`], state kept by the server, one across a cluster;
//! - `auth`: [`bearer_token`] and [`tokens_match`], for apps that check tokens;
//! - `adapter`: the `catch_unwind` shims between an SDK app and the ABI;
//! - [`testing`]: [`testing::TestHost`], an in-memory server for unit tests and fuzzing.

mod adapter;
mod app;
mod auth;
mod conn_info;
mod handshake;
mod host;
mod message;
mod push;
mod shared;
mod state;
pub mod testing;

pub use crate::abi::{ConnId, HostErrorKind, LogLevel};
#[doc(hidden)]
pub use adapter::new_app;
#[doc(hidden)]
pub use app::config_error_key;
pub use app::{App, Context, Error};
pub use auth::{bearer_token, tokens_match};
pub use conn_info::ConnInfo;
pub use handshake::{Accept, Handshake, Reject};
pub use host::{FramePacing, Host, HostError, ServerInfo};
pub use message::Message;
pub use push::{Push, PushDecision, PushTarget};
pub use shared::Shared;
pub use state::{SharedState, StateWrites};
