//! The [`App`] trait a plugin implements, and the [`Context`] its constructor
//! gets (host handle and config).

use serde::de::DeserializeOwned;

use super::{Accept, ConnId, Handshake, Host, LogLevel, Message, Push, PushDecision, Reject};

/// The error type of app callbacks and constructors: any error converts into it with `?`.
pub type Error = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What an app's constructor gets: the host handle and the app's `[app.config]` table.
pub struct Context {
    /// The app's handle to the server.
    pub host: Host,
    pub(super) config_json: String,
    pub(super) saved_state: Option<Vec<u8>>,
}

impl Context {
    /// The app's config, deserialized (the `[app.config]` table of the server config;
    /// an empty table when there is none).
    ///
    /// # Errors
    /// The serde error, which the server reports with the app's path.
    /// The error names the key at fault (`invalid app config at `history`:
    /// invalid type: string "x", expected usize`), and the server reports it
    /// at that key's line in the config file.
    pub fn config<T: DeserializeOwned>(&self) -> Result<T, Error> {
        let value: serde_json::Value =
            serde_json::from_str(&self.config_json).map_err(|e| format!("{CONFIG_ERROR}: {e}"))?;
        serde_path_to_error::deserialize(value).map_err(|e| {
            let key = e.path().to_string();
            let message = if key == "." {
                format!("{CONFIG_ERROR}: {}", e.inner())
            } else {
                format!("{CONFIG_ERROR} at `{key}`: {}", e.inner())
            };
            message.into()
        })
    }

    /// The state the instance this one replaces saved ([`App::save_state`]),
    /// when a reload in `migrate` mode builds this one; `None` at start-up.
    /// It is the bytes your plugin wrote, possibly by an older version of it:
    /// read the previous version's format too, or start empty.
    pub fn saved_state(&self) -> Option<&[u8]> {
        self.saved_state.as_deref()
    }

    /// The saved state ([`Context::saved_state`]) read as JSON, if there is
    /// some and `readable` accepts it (say, its version field is one this
    /// build reads). State that is there but unreadable is logged as a warning
    /// and `None` is returned: start empty rather than fail.
    pub fn saved_state_json<T: DeserializeOwned>(
        &self,
        readable: impl FnOnce(&T) -> bool,
    ) -> Option<T> {
        match serde_json::from_slice::<T>(self.saved_state.as_deref()?) {
            Ok(state) if readable(&state) => Some(state),
            _ => {
                self.host.log(
                    LogLevel::WARN,
                    "the state saved by the previous instance is not in a format this version reads; starting empty",
                );
                None
            }
        }
    }

    /// The app's config as JSON text.
    pub fn config_json(&self) -> &str {
        &self.config_json
    }
}

/// How every config error of [`Context::config`] starts.
const CONFIG_ERROR: &str = "invalid app config";

/// The `[app.config]` key a constructor's error message is about, if it is
/// one of [`Context::config`]'s (`""` for the table as a whole). The server
/// uses it to point at the key's line in its config file.
#[doc(hidden)]
pub fn config_error_key(message: &str) -> Option<&str> {
    let rest = message.strip_prefix(CONFIG_ERROR)?;
    if let Some(keyed) = rest.strip_prefix(" at `") {
        return keyed.split_once("`: ").map(|(key, _)| key);
    }
    rest.starts_with(": ").then_some("")
}

/// A Switchboard app. Implement it, then export it with `export_app!`.
///
/// One instance serves every connection of one mount (`[[app]]` block): keep
/// shared state in a [`Shared`](super::Shared) (a lock that a panic does not
/// poison) or atomics. Callbacks for one connection come
/// in order and never at the same time; different connections are served
/// concurrently. Callbacks must not block: hand slow work to a thread of your
/// own and send the result through the [`Host`] when it is ready.
pub trait App: Send + Sync + Sized + 'static {
    /// Builds the app from its host handle and config.
    ///
    /// # Errors
    /// An error refuses start-up; the server prints it with the app's path.
    fn new(context: Context) -> Result<Self, Error>;

    /// Decides whether to accept a connection. Default: accept.
    ///
    /// # Errors
    /// A [`Reject`] answers the client with its HTTP status and body.
    fn on_handshake(&self, request: &Handshake<'_>) -> Result<Accept, Reject> {
        let _ = request;
        Ok(Accept::default())
    }

    /// The connection is open.
    ///
    /// # Errors
    /// An error closes the connection with 1011.
    fn on_open(&self, conn: ConnId) -> Result<(), Error> {
        let _ = conn;
        Ok(())
    }

    /// A message arrived.
    ///
    /// # Errors
    /// An error closes the connection with 1011.
    fn on_message(&self, conn: ConnId, message: Message<'_>) -> Result<(), Error> {
        let _ = (conn, message);
        Ok(())
    }

    /// The connection closed (called exactly once per opened connection).
    /// `code` is 1006 when the client vanished without a close frame.
    fn on_close(&self, conn: ConnId, code: u16, reason: &str) {
        let _ = (conn, code, reason);
    }

    /// The connection failed (protocol error, oversized message, I/O error);
    /// `on_close` follows.
    fn on_error(&self, conn: ConnId, error: &str) {
        let _ = (conn, error);
    }

    /// The app is being shut down: every connection is already closed, and
    /// host calls (from any thread) now fail with `SHUT_DOWN`. Stop your threads here.
    fn on_shutdown(&self) {}

    /// A reload in `migrate` mode is replacing this instance: return the
    /// state the next one should start from ([`Context::saved_state`]), in a
    /// format of your own, or `None` (the default) to let it start empty.
    /// Connections, their ids, groups and handshake data are kept by the
    /// server either way.
    ///
    /// # Errors
    /// An error refuses the reload; this instance keeps serving.
    fn save_state(&self) -> Result<Option<Vec<u8>>, Error> {
        Ok(None)
    }

    /// A connection opened on the instance this one replaced now belongs to
    /// this one (a reload in `migrate` mode). Default: [`App::on_open`], for
    /// apps that keep no state across reloads.
    ///
    /// # Errors
    /// An error closes the connection with 1011.
    fn on_resume(&self, conn: ConnId) -> Result<(), Error> {
        self.on_open(conn)
    }

    /// A connection of this app on another node of a cluster is gone without
    /// an `on_close` anywhere (its node was killed, crashed or lost Redis for
    /// longer than `node_timeout`): release what it held in
    /// [`SharedState`](super::SharedState), as `on_close` would. Called on
    /// one node of the cluster, once per such connection; never on a single
    /// node. Default: nothing.
    ///
    /// # Errors
    /// An error is logged and counted.
    fn on_lost(&self, conn: ConnId) -> Result<(), Error> {
        let _ = conn;
        Ok(())
    }

    /// A backend pushes a message through the push API. Default: deliver it.
    /// Runs on the HTTP request's thread, possibly while a callback of the
    /// connection concerned runs on another.
    ///
    /// # Errors
    /// An error answers the backend with 500 and delivers nothing.
    fn on_push(&self, push: &Push<'_>) -> Result<PushDecision, Error> {
        let _ = push;
        Ok(PushDecision::Deliver)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_errors_name_their_key() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Config {
            history: usize,
            rooms: Vec<Room>,
        }
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Room {
            name: String,
        }
        let context = |json: &str| Context {
            host: Host::detached(),
            config_json: json.to_owned(),
            saved_state: None,
        };
        let error = context(r#"{"history": "x", "rooms": []}"#)
            .config::<Config>()
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("invalid app config at `history`: invalid type: string"),
            "{error}"
        );
        assert_eq!(config_error_key(&error), Some("history"));
        let error = context(r#"{"history": 1, "rooms": [{"name": 5}]}"#)
            .config::<Config>()
            .unwrap_err()
            .to_string();
        assert_eq!(config_error_key(&error), Some("rooms[0].name"), "{error}");
        let error = context(r#"{"rooms": []}"#)
            .config::<Config>()
            .unwrap_err()
            .to_string();
        assert_eq!(error, "invalid app config: missing field `history`");
        assert_eq!(config_error_key(&error), Some(""));
        assert_eq!(config_error_key("something else"), None);
    }
}
