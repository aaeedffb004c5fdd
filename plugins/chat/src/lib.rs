//! `chat`: rooms, nicknames, messages broadcast within a room, the last N
//! messages of a room replayed on join, member lists, and system messages on
//! join, leave, rename and disconnect. The JSON protocol is in this plugin's
//! README.md.
//!
//! Rooms are host groups (`room:<name>`), so a message to a room is encoded
//! once and shared by every member's queue. The app keeps nicknames, each
//! client's rooms and each room's history behind one mutex, held only for map
//! work (never while calling the host).

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::json;
use switchboard_plugin_api::sdk::{bearer_token, tokens_match};
use switchboard_plugin_api::{
    export_app, Accept, App, ConnId, Context, Error, Handshake, Host, Message, Reject, Shared,
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

#[derive(Default)]
struct State {
    nicks: HashMap<ConnId, String>,
    /// Every nickname in use, so a check or a new guest name is one lookup.
    taken: HashSet<String>,
    rooms_of: HashMap<ConnId, BTreeSet<String>>,
    history: HashMap<String, VecDeque<Line>>,
}

/// The state a reload hands to the next instance (`save_state`): JSON, with
/// connection ids as text. Version 1; a later version must read this one.
#[derive(Serialize, Deserialize)]
struct SavedState {
    version: u32,
    nicks: Vec<(String, String)>,
    rooms_of: Vec<(String, Vec<String>)>,
    history: Vec<(String, Vec<Line>)>,
}

impl State {
    /// Gives `conn` the nickname `nick`; returns its previous one.
    /// Nicknames are unique, so the previous one was this connection's alone.
    fn set_nick(&mut self, conn: ConnId, nick: String) -> Option<String> {
        let old = self.nicks.insert(conn, nick.clone());
        if let Some(old) = old.as_ref().filter(|old| **old != nick) {
            self.taken.remove(old);
        }
        self.taken.insert(nick);
        old
    }

    /// Forgets `conn`'s nickname; returns it.
    fn remove_nick(&mut self, conn: ConnId) -> Option<String> {
        let old = self.nicks.remove(&conn)?;
        self.taken.remove(&old);
        Some(old)
    }

    fn save(&self) -> SavedState {
        SavedState {
            version: 1,
            nicks: self
                .nicks
                .iter()
                .map(|(conn, nick)| (conn.to_string(), nick.clone()))
                .collect(),
            rooms_of: self
                .rooms_of
                .iter()
                .map(|(conn, rooms)| (conn.to_string(), rooms.iter().cloned().collect()))
                .collect(),
            history: self
                .history
                .iter()
                .map(|(room, lines)| (room.clone(), lines.iter().cloned().collect()))
                .collect(),
        }
    }

    /// The state saved by a previous instance; connection ids that do not
    /// parse are dropped, a history longer than this instance keeps is cut.
    fn restore(saved: SavedState, history: usize) -> State {
        let conn = |id: &str| id.parse::<ConnId>().ok();
        let nicks: HashMap<ConnId, String> = saved
            .nicks
            .into_iter()
            .filter_map(|(id, nick)| Some((conn(&id)?, nick)))
            .collect();
        State {
            taken: nicks.values().cloned().collect(),
            nicks,
            rooms_of: saved
                .rooms_of
                .into_iter()
                .filter_map(|(id, rooms)| Some((conn(&id)?, rooms.into_iter().collect())))
                .collect(),
            history: saved
                .history
                .into_iter()
                .map(|(room, lines)| {
                    let skip = lines.len().saturating_sub(history);
                    (room, lines.into_iter().skip(skip).collect())
                })
                .collect(),
        }
    }
}

/// The chat app (exported to the server by `export_app!`; public for tests and fuzzing).
pub struct Chat {
    host: Host,
    config: ChatConfig,
    state: Shared<State>,
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
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock()
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
        let history: Vec<Line> = {
            let mut state = self.lock();
            let rooms = state.rooms_of.entry(conn).or_default();
            if rooms.contains(&room) {
                drop(state);
                return self.error(conn, format!("already in room {room:?}"));
            }
            if rooms.len() >= self.config.max_rooms_per_client {
                drop(state);
                return self.error(
                    conn,
                    format!("at most {} rooms at once", self.config.max_rooms_per_client),
                );
            }
            rooms.insert(room.clone());
            state
                .history
                .get(&room)
                .map(|h| h.iter().cloned().collect())
                .unwrap_or_default()
        };
        self.host.join(conn, &group(&room))?;
        let nick = self.nick(conn);
        self.host.send_json(
            conn,
            &json!({ "type": "joined", "room": room, "members": self.members(&room), "history": history }),
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

    fn members(&self, room: &str) -> Vec<String> {
        let ids = self.host.members(&group(room)).unwrap_or_default();
        let state = self.lock();
        let mut nicks: Vec<String> = ids
            .iter()
            .filter_map(|id| state.nicks.get(id).cloned())
            .collect();
        nicks.sort();
        nicks
    }

    fn nick(&self, conn: ConnId) -> String {
        self.lock().nicks.get(&conn).cloned().unwrap_or_default()
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
                let (old, rooms) = {
                    let mut state = self.lock();
                    if state.taken.contains(&nick) && state.nicks.get(&conn) != Some(&nick) {
                        drop(state);
                        return self.error(conn, format!("nickname {nick:?} is taken"));
                    }
                    let old = state.set_nick(conn, nick.clone()).unwrap_or_default();
                    (old, state.rooms_of.get(&conn).cloned().unwrap_or_default())
                };
                self.host
                    .send_json(conn, &json!({ "type": "nick", "nick": nick }))?;
                for room in rooms {
                    self.system(&room, format!("{old} is now {nick}"), None)?;
                }
                Ok(())
            }
            Command::Join { room } => self.join(conn, room),
            Command::Leave { room } => {
                let was_in = self
                    .lock()
                    .rooms_of
                    .get_mut(&conn)
                    .is_some_and(|rooms| rooms.remove(&room));
                if !was_in {
                    return self.error(conn, format!("not in room {room:?}"));
                }
                self.host.leave(conn, &group(&room))?;
                self.host
                    .send_json(conn, &json!({ "type": "left", "room": room }))?;
                let nick = self.nick(conn);
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
                let line = {
                    let mut state = self.lock();
                    if !state
                        .rooms_of
                        .get(&conn)
                        .is_some_and(|rooms| rooms.contains(&room))
                    {
                        drop(state);
                        return self
                            .error(conn, format!("join room {room:?} before speaking in it"));
                    }
                    let line = Line {
                        nick: state.nicks.get(&conn).cloned().unwrap_or_default(),
                        text,
                        at: now_ms(),
                    };
                    if self.config.history > 0 {
                        let history = state.history.entry(room.clone()).or_default();
                        if history.len() == self.config.history {
                            history.pop_front();
                        }
                        history.push_back(line.clone());
                    }
                    line
                };
                let message = json!({ "type": "message", "room": room, "nick": line.nick, "text": line.text, "at": line.at });
                self.host.publish_json(&group(&room), None, &message)?;
                Ok(())
            }
            Command::Members { room } => {
                self.host.send_json(
                    conn,
                    &json!({ "type": "members", "room": room, "members": self.members(&room) }),
                )?;
                Ok(())
            }
        }
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
        let state = context
            .saved_state_json(|saved: &SavedState| saved.version == 1)
            .map_or_else(State::default, |saved| {
                State::restore(saved, config.history)
            });
        Ok(Chat {
            host: context.host,
            config,
            state: Shared::new(state),
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

    fn save_state(&self) -> Result<Option<Vec<u8>>, Error> {
        Ok(Some(serde_json::to_vec(&self.lock().save())?))
    }

    fn on_resume(&self, conn: ConnId) -> Result<(), Error> {
        // A client the previous instance knew keeps its nickname and rooms
        // (the server kept its groups); one it did not know is welcomed.
        if self.lock().nicks.contains_key(&conn) {
            Ok(())
        } else {
            self.on_open(conn)
        }
    }

    fn on_open(&self, conn: ConnId) -> Result<(), Error> {
        let nick = {
            let mut state = self.lock();
            let mut n = state.nicks.len() + 1;
            let mut nick = format!("guest-{n}");
            while state.taken.contains(&nick) {
                n += 1;
                nick = format!("guest-{n}");
            }
            state.set_nick(conn, nick.clone());
            nick
        };
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

    fn on_message(&self, conn: ConnId, message: Message<'_>) -> Result<(), Error> {
        match message.parse_json::<Command>() {
            Ok(command) => self.handle(conn, command),
            Err(why) => self.error(conn, why),
        }
    }

    fn on_close(&self, conn: ConnId, _code: u16, _reason: &str) {
        let (nick, rooms) = {
            let mut state = self.lock();
            (
                state.remove_nick(conn).unwrap_or_default(),
                state.rooms_of.remove(&conn).unwrap_or_default(),
            )
        };
        // The host has already removed the connection from its groups.
        for room in rooms {
            let _ = self.system(&room, format!("{nick} disconnected"), None);
        }
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
