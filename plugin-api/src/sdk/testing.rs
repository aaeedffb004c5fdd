//! [`TestHost`]: an in-memory server for an app's unit tests and fuzzing.
//!
//! It keeps what the real server keeps for an app (open connections, groups)
//! and records what the app asks of it (messages, closes, log lines), so a
//! test can build the app, play connections and messages at it, and look at
//! what came out, all in one process and without a server. Its shared state
//! is a [`MemoryState`], as on a single-node server.

use std::collections::{BTreeMap, BTreeSet};

use std::sync::{Arc, Mutex, MutexGuard};

use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RArc, ROption, RResult, RStr, RString, RVec};

use super::{Context, Host};
use crate::abi::{self, ConnId, ConnOption, HostErrorKind, LogLevel, MessageRef};
use crate::memory_state::MemoryState;

/// A message the app queued for a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// The recipient.
    pub to: ConnId,
    /// The payload.
    pub payload: Payload,
}

/// A message's payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// A text message.
    Text(String),
    /// A binary message.
    Binary(Vec<u8>),
}

impl Payload {
    /// The text, if it is a text message.
    pub fn text(&self) -> Option<&str> {
        match self {
            Payload::Text(text) => Some(text),
            Payload::Binary(_) => None,
        }
    }
}

/// A close the app asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    /// The connection.
    pub conn: ConnId,
    /// The close code.
    pub code: u16,
    /// The reason.
    pub reason: String,
}

#[derive(Debug, Default)]
struct State {
    /// Open connections and the data their handshake attached.
    open: BTreeMap<ConnId, String>,
    groups: BTreeMap<String, BTreeSet<ConnId>>,
    sent: Vec<Sent>,
    closed: Vec<Closed>,
    logs: Vec<(LogLevel, String)>,
    options: Vec<(ConnId, ConnOption, u64)>,
}

/// An in-memory host. Clone it freely: clones share one state.
///
/// ```
/// use switchboard_plugin_api::testing::TestHost;
/// use switchboard_plugin_api::ConnId;
///
/// let host = TestHost::new();
/// let context = host.context("{}");
/// let alice = ConnId::from_bytes([1; 16]);
/// host.open(alice);
/// context.host.send(alice, "hello").unwrap();
/// assert_eq!(host.take_sent()[0].payload.text(), Some("hello"));
/// ```
#[derive(Debug, Clone, Default)]
pub struct TestHost {
    state: Arc<Mutex<State>>,
    shared: Arc<MemoryState>,
}

impl TestHost {
    /// A host with no connections.
    pub fn new() -> Self {
        TestHost::default()
    }

    /// What an app's constructor gets: this host and `config_json` (the
    /// `[app.config]` table as JSON).
    pub fn context(&self, config_json: &str) -> Context {
        self.context_with_state(config_json, None)
    }

    /// As [`TestHost::context`], with the state a previous instance saved.
    pub fn context_with_state(&self, config_json: &str, saved_state: Option<Vec<u8>>) -> Context {
        let inner = abi::Host_TO::from_ptr(RArc::new(self.clone()), TD_Opaque);
        Context {
            host: Host::from_abi(inner),
            config_json: config_json.to_owned(),
            saved_state,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A connection is open (call the app's `on_open` after this).
    pub fn open(&self, conn: ConnId) {
        self.open_with_data(conn, "");
    }

    /// A connection is open, with the data the app attached when it accepted
    /// the handshake (`Accept::data`, seen in `ConnInfo::data`).
    pub fn open_with_data(&self, conn: ConnId, data: &str) {
        self.lock().open.insert(conn, data.to_owned());
    }

    /// A connection is gone, and out of its groups (call `on_close` after this).
    pub fn disconnect(&self, conn: ConnId) {
        let mut state = self.lock();
        state.open.remove(&conn);
        state.groups.retain(|_, members| {
            members.remove(&conn);
            !members.is_empty()
        });
    }

    /// Whether a connection is open.
    pub fn is_open(&self, conn: ConnId) -> bool {
        self.lock().open.contains_key(&conn)
    }

    /// The messages queued since the last call, in order.
    pub fn take_sent(&self) -> Vec<Sent> {
        std::mem::take(&mut self.lock().sent)
    }

    /// The closes asked for since the last call, in order.
    pub fn take_closed(&self) -> Vec<Closed> {
        std::mem::take(&mut self.lock().closed)
    }

    /// The log lines written since the last call.
    pub fn take_logs(&self) -> Vec<(LogLevel, String)> {
        std::mem::take(&mut self.lock().logs)
    }

    /// The transport options set since the last call.
    pub fn take_options(&self) -> Vec<(ConnId, ConnOption, u64)> {
        std::mem::take(&mut self.lock().options)
    }

    /// The members of a group.
    pub fn group(&self, group: &str) -> Vec<ConnId> {
        self.lock()
            .groups
            .get(group)
            .map(|members| members.iter().copied().collect())
            .unwrap_or_default()
    }
}

fn unknown(conn: ConnId) -> abi::HostError {
    abi::HostError {
        kind: HostErrorKind::UNKNOWN_CONNECTION,
        message: RString::from(format!("connection {conn} is not open")),
    }
}

fn payload(message: MessageRef<'_>) -> Payload {
    match message {
        MessageRef::Text(text) => Payload::Text(text.as_str().to_owned()),
        MessageRef::Binary(bytes) => Payload::Binary(bytes.as_slice().to_vec()),
    }
}

impl State {
    fn queue(
        &mut self,
        to: impl IntoIterator<Item = ConnId>,
        message: MessageRef<'_>,
        except: ROption<ConnId>,
    ) -> u64 {
        let payload = payload(message);
        let except = except.into_option();
        let mut count = 0;
        for to in to {
            if Some(to) != except {
                self.sent.push(Sent {
                    to,
                    payload: payload.clone(),
                });
                count += 1;
            }
        }
        count
    }
}

impl abi::Host for TestHost {
    fn send(&self, conn: ConnId, message: MessageRef<'_>) -> RResult<(), abi::HostError> {
        let mut state = self.lock();
        if !state.open.contains_key(&conn) {
            return RResult::RErr(unknown(conn));
        }
        state.queue([conn], message, ROption::RNone);
        RResult::ROk(())
    }

    fn broadcast(
        &self,
        message: MessageRef<'_>,
        except: ROption<ConnId>,
    ) -> RResult<u64, abi::HostError> {
        let mut state = self.lock();
        let open: Vec<ConnId> = state.open.keys().copied().collect();
        RResult::ROk(state.queue(open, message, except))
    }

    fn close(&self, conn: ConnId, code: u16, reason: RStr<'_>) -> RResult<(), abi::HostError> {
        let mut state = self.lock();
        if !state.open.contains_key(&conn) {
            return RResult::RErr(unknown(conn));
        }
        state.closed.push(Closed {
            conn,
            code,
            reason: reason.as_str().to_owned(),
        });
        RResult::ROk(())
    }

    fn connections(&self) -> RResult<RVec<ConnId>, abi::HostError> {
        RResult::ROk(self.lock().open.keys().copied().collect())
    }

    fn info(&self, conn: ConnId) -> RResult<abi::ConnInfo, abi::HostError> {
        let Some(data) = self.lock().open.get(&conn).cloned() else {
            return RResult::RErr(unknown(conn));
        };
        RResult::ROk(abi::ConnInfo {
            id: conn,
            peer: "127.0.0.1:1".into(),
            path: "/".into(),
            query: RString::new(),
            headers: RVec::new(),
            subprotocol: ROption::RNone,
            connected_at_ms: 0,
            data: data.into(),
            params: RVec::new(),
            extensions: RString::new(),
        })
    }

    fn join(&self, conn: ConnId, group: RStr<'_>) -> RResult<(), abi::HostError> {
        let mut state = self.lock();
        if !state.open.contains_key(&conn) {
            return RResult::RErr(unknown(conn));
        }
        state
            .groups
            .entry(group.as_str().to_owned())
            .or_default()
            .insert(conn);
        RResult::ROk(())
    }

    fn leave(&self, conn: ConnId, group: RStr<'_>) -> RResult<(), abi::HostError> {
        let mut state = self.lock();
        if let Some(members) = state.groups.get_mut(group.as_str()) {
            members.remove(&conn);
            if members.is_empty() {
                state.groups.remove(group.as_str());
            }
        }
        RResult::ROk(())
    }

    fn publish(
        &self,
        group: RStr<'_>,
        message: MessageRef<'_>,
        except: ROption<ConnId>,
    ) -> RResult<u64, abi::HostError> {
        let mut state = self.lock();
        let members: Vec<ConnId> = state
            .groups
            .get(group.as_str())
            .map(|members| members.iter().copied().collect())
            .unwrap_or_default();
        RResult::ROk(state.queue(members, message, except))
    }

    fn members(&self, group: RStr<'_>) -> RResult<RVec<ConnId>, abi::HostError> {
        RResult::ROk(self.group(group.as_str()).into_iter().collect())
    }

    fn log(&self, level: LogLevel, text: RStr<'_>) {
        self.lock().logs.push((level, text.as_str().to_owned()));
    }

    fn configure(
        &self,
        conn: ConnId,
        option: ConnOption,
        value: u64,
    ) -> RResult<(), abi::HostError> {
        let mut state = self.lock();
        if !state.open.contains_key(&conn) {
            return RResult::RErr(unknown(conn));
        }
        state.options.push((conn, option, value));
        RResult::ROk(())
    }

    fn state(&self, request: &abi::StateRequest<'_>) -> RResult<abi::StateReply, abi::HostError> {
        self.shared
            .run(request.key.as_str(), request)
            .map_err(|error| abi::HostError {
                kind: HostErrorKind::INVALID_ARGUMENT,
                message: error.to_string().into(),
            })
            .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_state_json_reads_what_it_accepts_and_warns_about_the_rest() {
        let host = TestHost::new();
        let read = |bytes: Option<&[u8]>| {
            host.context_with_state("{}", bytes.map(<[u8]>::to_vec))
                .saved_state_json(|version: &u32| *version == 1)
        };
        assert_eq!(read(None), None);
        assert!(host.take_logs().is_empty());
        assert_eq!(read(Some(b"1")), Some(1));
        assert!(host.take_logs().is_empty());
        for unreadable in [&b"2"[..], b"not json"] {
            assert_eq!(read(Some(unreadable)), None);
            let logs = host.take_logs();
            assert_eq!(logs.len(), 1);
            assert_eq!(logs[0].0, LogLevel::WARN);
        }
    }
}
