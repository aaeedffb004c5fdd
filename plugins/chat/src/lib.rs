//! `chat`: rooms, nicknames, messages broadcast within a room, the last N
//! messages of a room replayed on join, member lists, and system messages on
//! join, leave, rename and disconnect. The JSON protocol is in this plugin's
//! README.md.
//!
//! Rooms are host groups (`room:<name>`), so a message to a room is encoded
//! once and shared by every member's queue, on every node of a cluster.
//! Nicknames, each client's rooms and each room's history are in the host's
//! shared state (the hashes `nicks`, `taken`, `rooms` and the capped lists
//! `history:<room>`), so a room is one room for clients on every node, and
//! a reload keeps it. A nickname is claimed by compare-and-swap; a client
//! whose node dies leaves its rooms through `on_lost` on a surviving node.

use std::collections::{BTreeSet, HashMap};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::json;
use switchboard_plugin_api::sdk::{bearer_token, tokens_match};
use switchboard_plugin_api::{
    export_app, Accept, App, ConnId, Context, Error, Handshake, Host, HostError, LogLevel, Message,
    Reject, Shared, SharedState,
};

/// The `[app.config]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChatConfig {
    /// Messages replayed to a client joining a room.
    pub history: usize,
    /// Longest chat message, in characters.
    pub max_message_length: usize,
    /// Longest nickname, in characters.
    pub max_nick_length: usize,
    /// Longest room name, in characters.
    pub max_room_length: usize,
    /// Most rooms one client may be in.
    pub max_rooms_per_client: usize,
    /// When set, a client must present this token (`?token=`, an
    /// `Authorization: Bearer` header or a `chat_token` cookie) or the
    /// handshake is refused with 401.
    pub auth_token: Option<String>,
}

impl Default for ChatConfig {
    fn default() -> Self {
        ChatConfig {
            history: 50,
            max_message_length: 2000,
            max_nick_length: 32,
            max_room_length: 64,
            max_rooms_per_client: 10,
            auth_token: None,
        }
    }
}

/// A message from a client.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum Command {
    Nick { nick: String },
    Join { room: String },
    Leave { room: String },
    Say { room: String, text: String },
    Members { room: String },
}

/// One line of a room's history.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Line {
    nick: String,
    text: String,
    at: u64,
}

/// The shared hashes and lists (the host's shared state, one across a cluster).
const NICKS: &str = "nicks";
/// Nickname → the connection using it: a nickname is claimed by
/// compare-and-swap, so two clients on two nodes cannot both get it.
const TAKEN: &str = "taken";
/// Connection → its rooms (JSON), for leaving them when it goes.
const ROOMS: &str = "rooms";

fn history_key(room: &str) -> String {
    format!("history:{room}")
}

/// The chat app (exported to the server by `export_app!`; public for tests and fuzzing).
pub struct Chat {
    host: Host,
    config: ChatConfig,
    /// The nickname and rooms of this node's own connections, as written to
    /// shared state: only a connection's own commands (handled on its node)
    /// change them, so reading them here saves a round trip to Redis per
    /// message in a cluster. Filled again from shared state on a miss (after
    /// a reload).
    own: Shared<HashMap<ConnId, Own>>,
}

/// What [`Chat::own`] keeps of one connection.
#[derive(Debug, Clone, Default)]
struct Own {
    nick: String,
    rooms: BTreeSet<String>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn group(room: &str) -> String {
    format!("room:{room}")
}

fn valid_name(name: &str, max: usize) -> bool {
    let length = name.chars().count();
    length >= 1 && length <= max && !name.chars().any(char::is_control) && name.trim() == name
}

impl Chat {
    fn state(&self) -> SharedState<'_> {
        self.host.state()
    }

    /// What this node keeps of its own connection, read from shared state
    /// when it is not kept yet.
    fn own(&self, conn: ConnId) -> Result<Own, HostError> {
        if let Some(own) = self.own.lock().get(&conn) {
            return Ok(own.clone());
        }
        let me = conn.to_string();
        let own = Own {
            nick: self.state().hash_get(NICKS, &me)?.unwrap_or_default(),
            rooms: self
                .state()
                .hash_get(ROOMS, &me)?
                .and_then(|raw| serde_json::from_str(&raw).ok())
                .unwrap_or_default(),
        };
        self.own.lock().insert(conn, own.clone());
        Ok(own)
    }

    fn rooms_of(&self, conn: ConnId) -> Result<BTreeSet<String>, HostError> {
        Ok(self.own(conn)?.rooms)
    }

    fn set_rooms(&self, conn: ConnId, rooms: &BTreeSet<String>) -> Result<(), HostError> {
        let value = (!rooms.is_empty()).then(|| serde_json::to_string(rooms).unwrap_or_default());
        self.state()
            .hash_set(ROOMS, &conn.to_string(), value.as_deref())?;
        if let Some(own) = self.own.lock().get_mut(&conn) {
            own.rooms = rooms.clone();
        }
        Ok(())
    }

    /// Claims `nick` for `conn` and gives up its previous one; false when
    /// another client has it.
    fn set_nick(&self, conn: ConnId, nick: &str) -> Result<bool, HostError> {
        let (state, me) = (self.state(), conn.to_string());
        if !state.hash_swap(TAKEN, nick, None, Some(&me))?
            && state.hash_get(TAKEN, nick)?.as_deref() != Some(me.as_str())
        {
            return Ok(false);
        }
        let old = state.hash_get(NICKS, &me)?;
        state.hash_set(NICKS, &me, Some(nick))?;
        if let Some(old) = old.filter(|old| old != nick) {
            state.hash_swap(TAKEN, &old, Some(&me), None)?;
        }
        if let Some(own) = self.own.lock().get_mut(&conn) {
            own.nick = nick.to_owned();
        }
        Ok(true)
    }

    /// Forgets `conn`'s nickname; returns it.
    fn remove_nick(&self, conn: ConnId) -> Result<String, HostError> {
        let (state, me) = (self.state(), conn.to_string());
        let old = state.hash_get(NICKS, &me)?.unwrap_or_default();
        state.hash_set(NICKS, &me, None)?;
        state.hash_swap(TAKEN, &old, Some(&me), None)?;
        Ok(old)
    }

    /// Puts a client in a room: the room's history and members to it, a
    /// system message to the others.
    fn join(&self, conn: ConnId, room: String) -> Result<(), Error> {
        if !valid_name(&room, self.config.max_room_length) {
            return self.error(
                conn,
                format!(
                    "a room name has 1 to {} characters, no leading or trailing spaces",
                    self.config.max_room_length
                ),
            );
        }
        let mut rooms = self.rooms_of(conn)?;
        if rooms.contains(&room) {
            return self.error(conn, format!("already in room {room:?}"));
        }
        if rooms.len() >= self.config.max_rooms_per_client {
            return self.error(
                conn,
                format!("at most {} rooms at once", self.config.max_rooms_per_client),
            );
        }
        rooms.insert(room.clone());
        self.set_rooms(conn, &rooms)?;
        let history: Vec<Line> = if self.config.history > 0 {
            self.state()
                .list_range(&history_key(&room), self.config.history)?
                .iter()
                .filter_map(|line| serde_json::from_str(line).ok())
                .collect()
        } else {
            Vec::new()
        };
        self.host.join(conn, &group(&room))?;
        let nick = self.nick(conn)?;
        self.host.send_json(
            conn,
            &json!({ "type": "joined", "room": room, "members": self.members(&room)?, "history": history }),
        )?;
        self.system(&room, format!("{nick} joined"), Some(conn))
    }

    fn error(&self, conn: ConnId, message: impl Into<String>) -> Result<(), Error> {
        self.host
            .send_json(conn, &json!({ "type": "error", "message": message.into() }))?;
        Ok(())
    }

    fn system(&self, room: &str, text: String, except: Option<ConnId>) -> Result<(), Error> {
        let message = json!({ "type": "system", "room": room, "text": text, "at": now_ms() });
        self.host.publish_json(&group(room), except, &message)?;
        Ok(())
    }

    /// The nicknames of a room's members, on every node.
    fn members(&self, room: &str) -> Result<Vec<String>, HostError> {
        let ids = self.host.members(&group(room)).unwrap_or_default();
        let nicks: HashMap<String, String> = self.state().hash_all(NICKS)?.into_iter().collect();
        let mut members: Vec<String> = ids
            .iter()
            .filter_map(|id| nicks.get(&id.to_string()).cloned())
            .collect();
        members.sort();
        Ok(members)
    }

    fn nick(&self, conn: ConnId) -> Result<String, HostError> {
        Ok(self.own(conn)?.nick)
    }

    fn handle(&self, conn: ConnId, command: Command) -> Result<(), Error> {
        match command {
            Command::Nick { nick } => {
                if !valid_name(&nick, self.config.max_nick_length) {
                    return self.error(
                        conn,
                        format!(
                            "a nickname has 1 to {} characters, no leading or trailing spaces",
                            self.config.max_nick_length
                        ),
                    );
                }
                let old = self.nick(conn)?;
                if !self.set_nick(conn, &nick)? {
                    return self.error(conn, format!("nickname {nick:?} is taken"));
                }
                self.host
                    .send_json(conn, &json!({ "type": "nick", "nick": nick }))?;
                for room in self.rooms_of(conn)? {
                    self.system(&room, format!("{old} is now {nick}"), None)?;
                }
                Ok(())
            }
            Command::Join { room } => self.join(conn, room),
            Command::Leave { room } => {
                let mut rooms = self.rooms_of(conn)?;
                if !rooms.remove(&room) {
                    return self.error(conn, format!("not in room {room:?}"));
                }
                self.set_rooms(conn, &rooms)?;
                self.host.leave(conn, &group(&room))?;
                self.host
                    .send_json(conn, &json!({ "type": "left", "room": room }))?;
                let nick = self.nick(conn)?;
                self.system(&room, format!("{nick} left"), None)
            }
            Command::Say { room, text } => {
                let length = text.chars().count();
                if length == 0 || length > self.config.max_message_length {
                    return self.error(
                        conn,
                        format!(
                            "a message has 1 to {} characters (this one has {length})",
                            self.config.max_message_length
                        ),
                    );
                }
                if !self.rooms_of(conn)?.contains(&room) {
                    return self.error(conn, format!("join room {room:?} before speaking in it"));
                }
                let line = Line {
                    nick: self.nick(conn)?,
                    text,
                    at: now_ms(),
                };
                if self.config.history > 0 {
                    // Nothing here needs the answer: the push is queued,
                    // before any later read of this node. Without Redis the
                    // room still hears the message; the history misses it.
                    let entry = serde_json::to_string(&line)?;
                    if let Err(error) = self.state().without_waiting().list_push(
                        &history_key(&room),
                        &entry,
                        self.config.history,
                    ) {
                        self.host.log(
                            LogLevel::DEBUG,
                            &format!("history of {room:?} not written: {error}"),
                        );
                    }
                }
                let message = json!({ "type": "message", "room": room, "nick": line.nick, "text": line.text, "at": line.at });
                self.host.publish_json(&group(&room), None, &message)?;
                Ok(())
            }
            Command::Members { room } => {
                self.host.send_json(
                    conn,
                    &json!({ "type": "members", "room": room, "members": self.members(&room)? }),
                )?;
                Ok(())
            }
        }
    }

    /// A connection is gone, here or with its node: its nickname is free
    /// and its rooms hear it.
    fn forget(&self, conn: ConnId) -> Result<(), Error> {
        let rooms = self.rooms_of(conn)?;
        let nick = self.remove_nick(conn)?;
        self.set_rooms(conn, &BTreeSet::new())?;
        self.own.lock().remove(&conn);
        // The host has already removed the connection from its groups.
        for room in rooms {
            self.system(&room, format!("{nick} disconnected"), None)?;
        }
        Ok(())
    }
}

impl App for Chat {
    fn new(context: Context) -> Result<Self, Error> {
        let config: ChatConfig = context.config()?;
        if config.max_message_length == 0
            || config.max_nick_length == 0
            || config.max_room_length == 0
        {
            return Err(
                "max_message_length, max_nick_length and max_room_length must be at least 1".into(),
            );
        }
        if config.auth_token.as_deref() == Some("") {
            return Err("auth_token must not be empty (leave it out to allow everyone)".into());
        }
        Ok(Chat {
            host: context.host,
            config,
            own: Shared::default(),
        })
    }

    fn on_handshake(&self, request: &Handshake<'_>) -> Result<Accept, Reject> {
        let Some(expected) = &self.config.auth_token else {
            return Ok(Accept::new());
        };
        let bearer = request
            .header("authorization")
            .and_then(bearer_token)
            .map(str::to_owned);
        let presented = request
            .query_param("token")
            .or(bearer)
            .or_else(|| request.cookie("chat_token").map(str::to_owned));
        match presented {
            Some(token) if tokens_match(&token, expected) => Ok(Accept::new()),
            Some(_) => {
                Err(Reject::new(401, "invalid chat token").header("www-authenticate", "Bearer"))
            }
            None => {
                Err(Reject::new(401, "a chat token is required")
                    .header("www-authenticate", "Bearer"))
            }
        }
    }

    fn on_resume(&self, conn: ConnId) -> Result<(), Error> {
        // A client the previous instance knew keeps its nickname and rooms
        // (shared state and groups are the server's); one it did not know
        // is welcomed.
        if self.nick(conn)?.is_empty() {
            self.on_open(conn)
        } else {
            Ok(())
        }
    }

    fn on_open(&self, conn: ConnId) -> Result<(), Error> {
        match self.welcome(conn) {
            Err(error) if HostError::is_unavailable_error(&*error) => {
                // A cluster without its Redis cannot give a nickname that is
                // unique on every node: come back later.
                self.host
                    .close(conn, 1013, "chat is unavailable; try again later")?;
                Ok(())
            }
            other => other,
        }
    }

    fn on_message(&self, conn: ConnId, message: Message<'_>) -> Result<(), Error> {
        match message.parse_json::<Command>() {
            Ok(command) => match self.handle(conn, command) {
                Err(error) if HostError::is_unavailable_error(&*error) => {
                    self.error(conn, format!("not now: {error}"))
                }
                other => other,
            },
            Err(why) => self.error(conn, why),
        }
    }

    fn on_close(&self, conn: ConnId, _code: u16, _reason: &str) {
        let _ = self.forget(conn);
        self.own.lock().remove(&conn);
    }

    fn on_lost(&self, conn: ConnId) -> Result<(), Error> {
        self.forget(conn)
    }
}

impl Chat {
    /// A new client: a guest nickname, the welcome, and the room its URL names.
    fn welcome(&self, conn: ConnId) -> Result<(), Error> {
        let mut n = self.state().hash_len(NICKS)? + 1;
        let mut nick = format!("guest-{n}");
        while !self.set_nick(conn, &nick)? {
            n += 1;
            nick = format!("guest-{n}");
        }
        self.own.lock().insert(
            conn,
            Own {
                nick: nick.clone(),
                rooms: BTreeSet::new(),
            },
        );
        self.host.send_json(
            conn,
            &json!({ "type": "welcome", "id": conn.to_string(), "nick": nick }),
        )?;
        // Mounted on a pattern such as `/chat/{room}`: the room is in the URL.
        if let Some(room) = self.host.info(conn)?.param("room") {
            self.join(conn, room.to_owned())?;
        }
        Ok(())
    }
}

export_app!(Chat);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_and_unknown_fields_are_refused() {
        let command: Command =
            serde_json::from_str(r#"{"type":"say","room":"a","text":"hi"}"#).unwrap();
        assert!(matches!(command, Command::Say { .. }));
        assert!(serde_json::from_str::<Command>(r#"{"type":"say","room":"a"}"#).is_err());
        assert!(serde_json::from_str::<Command>(r#"{"type":"dance"}"#).is_err());
    }

    #[test]
    fn a_message_reaches_every_member_of_the_room_through_a_test_host() {
        use switchboard_plugin_api::testing::TestHost;
        let host = TestHost::new();
        let chat = Chat::new(host.context("{}")).unwrap();
        let (alice, bob) = (ConnId::from_bytes([1; 16]), ConnId::from_bytes([2; 16]));
        for conn in [alice, bob] {
            host.open(conn);
            chat.on_open(conn).unwrap();
            chat.on_message(conn, Message::Text(r#"{"type":"join","room":"lobby"}"#))
                .unwrap();
        }
        host.take_sent();
        chat.on_message(
            alice,
            Message::Text(r#"{"type":"say","room":"lobby","text":"hi"}"#),
        )
        .unwrap();
        let sent = host.take_sent();
        let to: Vec<ConnId> = sent.iter().map(|s| s.to).collect();
        assert_eq!(to.len(), 2, "{sent:?}");
        assert!(to.contains(&alice) && to.contains(&bob));
        let message: serde_json::Value =
            serde_json::from_str(sent[0].payload.text().unwrap()).unwrap();
        assert_eq!(
            (message["type"].as_str(), message["text"].as_str()),
            (Some("message"), Some("hi"))
        );
    }

    #[test]
    fn names_are_bounded_and_trimmed() {
        assert!(valid_name("lobby", 10));
        assert!(!valid_name("", 10));
        assert!(!valid_name(" lobby", 10));
        assert!(!valid_name("a\nb", 10));
        assert!(!valid_name("ééééééééééé", 10));
    }
}
