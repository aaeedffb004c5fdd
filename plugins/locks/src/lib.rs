//! `locks`: shared record locks, as a library's acquisition system uses them
//! so that experts looking at the same new titles see which ones a colleague
//! is already handling. In memory, no database. The JSON protocol is in this
//! plugin's README.md.
//!
//! A client announces the ids it shows (`show`, replacing what it showed
//! before). Each free id goes to it, first come first served; for ids someone
//! else holds it gets the holder's name and waits in line. Everyone else is
//! told when ids are taken or freed. When a holder stops showing an id, or
//! disconnects, the id passes to the client that has been waiting longest.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::json;
use switchboard_plugin_api::{export_app, App, ConnId, Context, Error, Host, Message, Shared};

/// The `[app.config]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocksConfig {
    /// Most ids one client may show at once.
    pub max_ids: usize,
    /// Most locks held at once across all clients; ids shown beyond it are
    /// not locked (the client is told).
    pub max_locks: usize,
    /// Longest id, in bytes.
    pub max_id_length: usize,
    /// Longest user name, in characters.
    pub max_user_length: usize,
}

impl Default for LocksConfig {
    fn default() -> Self {
        LocksConfig {
            max_ids: 1000,
            max_locks: 10_000,
            max_id_length: 200,
            max_user_length: 64,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum Command {
    Hello { user: String },
    Show { ids: Vec<String> },
    Release { ids: Vec<String> },
    State,
}

/// Who holds an id, as clients see it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
struct Holder {
    user: String,
    conn: String,
    since: u64,
}

struct Lock {
    holder: ConnId,
    since: u64,
    /// Clients showing the id while someone else holds it, longest waiting first.
    waiting: VecDeque<ConnId>,
}

#[derive(Default)]
struct State {
    users: HashMap<ConnId, String>,
    shown: HashMap<ConnId, BTreeSet<String>>,
    locks: BTreeMap<String, Lock>,
}

/// The state a reload hands to the next instance (`save_state`): JSON, with
/// connection ids as text. Version 1; a later version must read this one.
#[derive(Serialize, Deserialize)]
struct SavedState {
    version: u32,
    users: Vec<(String, String)>,
    shown: Vec<(String, Vec<String>)>,
    /// Id, holder, since, waiting line.
    locks: Vec<(String, String, u64, Vec<String>)>,
}

impl State {
    fn save(&self) -> SavedState {
        SavedState {
            version: 1,
            users: self
                .users
                .iter()
                .map(|(conn, user)| (conn.to_string(), user.clone()))
                .collect(),
            shown: self
                .shown
                .iter()
                .map(|(conn, ids)| (conn.to_string(), ids.iter().cloned().collect()))
                .collect(),
            locks: self
                .locks
                .iter()
                .map(|(id, lock)| {
                    (
                        id.clone(),
                        lock.holder.to_string(),
                        lock.since,
                        lock.waiting.iter().map(ConnId::to_string).collect(),
                    )
                })
                .collect(),
        }
    }

    /// The state saved by a previous instance; entries whose connection ids
    /// do not parse are dropped.
    fn restore(saved: SavedState) -> State {
        let conn = |id: &str| id.parse::<ConnId>().ok();
        State {
            users: saved
                .users
                .into_iter()
                .filter_map(|(id, user)| Some((conn(&id)?, user)))
                .collect(),
            shown: saved
                .shown
                .into_iter()
                .filter_map(|(id, ids)| Some((conn(&id)?, ids.into_iter().collect())))
                .collect(),
            locks: saved
                .locks
                .into_iter()
                .filter_map(|(id, holder, since, waiting)| {
                    let lock = Lock {
                        holder: conn(&holder)?,
                        since,
                        waiting: waiting.iter().filter_map(|w| conn(w)).collect(),
                    };
                    Some((id, lock))
                })
                .collect(),
        }
    }
}

/// What a change did, to be told to clients after the lock is released.
#[derive(Default)]
struct Outcome {
    /// Ids the acting client now holds (after `show`).
    mine: Vec<String>,
    /// Ids others hold that the acting client shows.
    held_by_others: BTreeMap<String, Holder>,
    /// Ids taken, by new holder.
    taken: BTreeMap<ConnId, Vec<String>>,
    /// Ids nobody holds any more.
    freed: Vec<String>,
    /// Ids not locked because the app holds its maximum.
    over_limit: Vec<String>,
}

/// Locks per snapshot message: a snapshot of many locks is sent in pages,
/// each far below `max_message_size`.
const SNAPSHOT_PAGE: usize = 500;

/// The locks app (exported to the server by `export_app!`; public for tests and fuzzing).
pub struct Locks {
    host: Host,
    config: LocksConfig,
    state: Shared<State>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl State {
    fn holder(&self, lock: &Lock) -> Holder {
        Holder {
            user: self.users.get(&lock.holder).cloned().unwrap_or_default(),
            conn: lock.holder.to_string(),
            since: lock.since,
        }
    }

    fn all(&self) -> BTreeMap<String, Holder> {
        self.locks
            .iter()
            .map(|(id, lock)| (id.clone(), self.holder(lock)))
            .collect()
    }

    /// `conn` no longer shows `id`: give the lock to the longest waiter still
    /// showing it, or free it.
    fn drop_interest(&mut self, conn: ConnId, id: &str, outcome: &mut Outcome) {
        let Some(lock) = self.locks.get_mut(id) else {
            return;
        };
        if lock.holder != conn {
            lock.waiting.retain(|w| *w != conn);
            return;
        }
        while let Some(next) = lock.waiting.pop_front() {
            if self.shown.get(&next).is_some_and(|ids| ids.contains(id)) {
                lock.holder = next;
                lock.since = now_ms();
                outcome.taken.entry(next).or_default().push(id.to_owned());
                return;
            }
        }
        self.locks.remove(id);
        outcome.freed.push(id.to_owned());
    }

    /// `conn` now shows exactly `ids`.
    fn show(&mut self, conn: ConnId, ids: BTreeSet<String>, max_locks: usize) -> Outcome {
        let mut outcome = Outcome::default();
        let before = self.shown.insert(conn, ids.clone()).unwrap_or_default();
        for id in before.difference(&ids) {
            self.drop_interest(conn, id, &mut outcome);
        }
        let now = now_ms();
        for id in &ids {
            if !self.locks.contains_key(id) && self.locks.len() >= max_locks {
                outcome.over_limit.push(id.clone());
                continue;
            }
            match self.locks.get_mut(id) {
                None => {
                    self.locks.insert(
                        id.clone(),
                        Lock {
                            holder: conn,
                            since: now,
                            waiting: VecDeque::new(),
                        },
                    );
                    outcome.taken.entry(conn).or_default().push(id.clone());
                    outcome.mine.push(id.clone());
                }
                Some(lock) if lock.holder == conn => outcome.mine.push(id.clone()),
                Some(lock) => {
                    if !lock.waiting.contains(&conn) {
                        lock.waiting.push_back(conn);
                    }
                    let holder = self.holder(&self.locks[id]);
                    outcome.held_by_others.insert(id.clone(), holder);
                }
            }
        }
        outcome
    }
}

impl Locks {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock()
    }

    /// Sends every lock: the first page as `kind` (`welcome` or `state`),
    /// the rest as `locks` messages; `more` says whether another page follows.
    fn send_snapshot(
        &self,
        conn: ConnId,
        kind: &str,
        locks: BTreeMap<String, Holder>,
    ) -> Result<(), Error> {
        let entries: Vec<(String, Holder)> = locks.into_iter().collect();
        let mut pages = entries.chunks(SNAPSHOT_PAGE).peekable();
        let first: BTreeMap<_, _> = pages.next().unwrap_or_default().iter().cloned().collect();
        let mut message = json!({ "type": kind, "locks": first, "more": pages.peek().is_some() });
        if kind == "welcome" {
            message["id"] = json!(conn.to_string());
        }
        self.host.send_json(conn, &message)?;
        while let Some(page) = pages.next() {
            let page: BTreeMap<_, _> = page.iter().cloned().collect();
            self.host.send_json(
                conn,
                &json!({ "type": "locks", "locks": page, "more": pages.peek().is_some() }),
            )?;
        }
        Ok(())
    }

    fn error(&self, conn: ConnId, message: impl Into<String>) -> Result<(), Error> {
        self.host
            .send_json(conn, &json!({ "type": "error", "message": message.into() }))?;
        Ok(())
    }

    fn check_ids(&self, ids: &[String]) -> Result<BTreeSet<String>, String> {
        if ids.len() > self.config.max_ids {
            return Err(format!("at most {} ids at once", self.config.max_ids));
        }
        if let Some(bad) = ids
            .iter()
            .find(|id| id.is_empty() || id.len() > self.config.max_id_length)
        {
            return Err(format!(
                "id {bad:?} must have 1 to {} bytes",
                self.config.max_id_length
            ));
        }
        Ok(ids.iter().cloned().collect())
    }

    /// Tells everyone what changed: new holders (to themselves and to the
    /// others) and freed ids.
    fn announce(&self, outcome: &Outcome) -> Result<(), Error> {
        for (holder, ids) in &outcome.taken {
            let (user, since) = {
                let state = self.lock();
                let since = ids
                    .first()
                    .and_then(|id| state.locks.get(id))
                    .map_or(0, |l| l.since);
                (state.users.get(holder).cloned().unwrap_or_default(), since)
            };
            let message = json!({ "type": "locked", "ids": ids, "user": user, "conn": holder.to_string(), "since": since });
            self.host.broadcast_json(Some(*holder), &message)?;
            // A client that waited for an id learns it is now its own.
            let _ = self
                .host
                .send_json(*holder, &json!({ "type": "acquired", "ids": ids }));
        }
        if !outcome.freed.is_empty() {
            self.host
                .broadcast_json(None, &json!({ "type": "released", "ids": outcome.freed }))?;
        }
        Ok(())
    }

    fn handle(&self, conn: ConnId, command: Command) -> Result<(), Error> {
        match command {
            Command::Hello { user } => {
                let length = user.chars().count();
                if length == 0
                    || length > self.config.max_user_length
                    || user.chars().any(char::is_control)
                {
                    return self.error(
                        conn,
                        format!(
                            "a user name has 1 to {} characters",
                            self.config.max_user_length
                        ),
                    );
                }
                self.lock().users.insert(conn, user.clone());
                self.host
                    .send_json(conn, &json!({ "type": "hello", "user": user }))?;
                Ok(())
            }
            Command::Show { ids } => {
                let ids = match self.check_ids(&ids) {
                    Ok(ids) => ids,
                    Err(message) => return self.error(conn, message),
                };
                let mut outcome = self.lock().show(conn, ids, self.config.max_locks);
                self.host.send_json(
                    conn,
                    &json!({ "type": "shown", "mine": outcome.mine, "held_by_others": outcome.held_by_others, "over_limit": outcome.over_limit }),
                )?;
                if !outcome.over_limit.is_empty() {
                    self.error(
                        conn,
                        format!(
                            "the app holds its maximum of {} locks: {} id(s) not locked",
                            self.config.max_locks,
                            outcome.over_limit.len()
                        ),
                    )?;
                }
                // The acting client was just told what it holds.
                if let Some(mine) = outcome.taken.remove(&conn) {
                    let user = self.lock().users.get(&conn).cloned().unwrap_or_default();
                    let message = json!({ "type": "locked", "ids": mine, "user": user, "conn": conn.to_string(), "since": now_ms() });
                    self.host.broadcast_json(Some(conn), &message)?;
                }
                self.announce(&outcome)
            }
            Command::Release { ids } => {
                let ids = match self.check_ids(&ids) {
                    Ok(ids) => ids,
                    Err(message) => return self.error(conn, message),
                };
                let outcome = {
                    let mut state = self.lock();
                    let remaining: BTreeSet<String> = state
                        .shown
                        .get(&conn)
                        .map(|shown| shown.difference(&ids).cloned().collect())
                        .unwrap_or_default();
                    state.show(conn, remaining, self.config.max_locks)
                };
                self.host
                    .send_json(conn, &json!({ "type": "released_own", "ids": ids }))?;
                self.announce(&outcome)
            }
            Command::State => {
                let locks = self.lock().all();
                self.send_snapshot(conn, "state", locks)
            }
        }
    }
}

impl App for Locks {
    fn new(context: Context) -> Result<Self, Error> {
        let config: LocksConfig = context.config()?;
        if config.max_ids == 0
            || config.max_id_length == 0
            || config.max_user_length == 0
            || config.max_locks == 0
        {
            return Err(
                "max_ids, max_locks, max_id_length and max_user_length must be at least 1".into(),
            );
        }
        let state = context
            .saved_state_json(|saved: &SavedState| saved.version == 1)
            .map_or_else(State::default, State::restore);
        Ok(Locks {
            host: context.host,
            config,
            state: Shared::new(state),
        })
    }

    fn save_state(&self) -> Result<Option<Vec<u8>>, Error> {
        Ok(Some(serde_json::to_vec(&self.lock().save())?))
    }

    fn on_resume(&self, _conn: ConnId) -> Result<(), Error> {
        // Its user name, shown ids, held locks and places in waiting lines
        // came with the saved state; the client already has the lock table.
        Ok(())
    }

    fn on_open(&self, conn: ConnId) -> Result<(), Error> {
        let locks = {
            let mut state = self.lock();
            state
                .users
                .insert(conn, format!("user-{}", &conn.to_string()[..8]));
            state.all()
        };
        self.send_snapshot(conn, "welcome", locks)
    }

    fn on_message(&self, conn: ConnId, message: Message<'_>) -> Result<(), Error> {
        match message.parse_json::<Command>() {
            Ok(command) => self.handle(conn, command),
            Err(why) => self.error(conn, why),
        }
    }

    fn on_close(&self, conn: ConnId, _code: u16, _reason: &str) {
        let outcome = {
            let mut state = self.lock();
            let outcome = state.show(conn, BTreeSet::new(), self.config.max_locks);
            state.shown.remove(&conn);
            state.users.remove(&conn);
            outcome
        };
        let _ = self.announce(&outcome);
    }
}

export_app!(Locks);

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> ConnId {
        ConnId::from_bytes([n; 16])
    }

    fn set(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn first_come_first_served_and_the_longest_waiter_inherits() {
        let mut state = State::default();
        let (a, b, c) = (id(1), id(2), id(3));
        let outcome = state.show(a, set(&["x", "y"]), usize::MAX);
        assert_eq!(outcome.mine, vec!["x", "y"]);
        let outcome = state.show(b, set(&["x"]), usize::MAX);
        assert!(outcome.mine.is_empty());
        assert!(outcome.held_by_others.contains_key("x"));
        state.show(c, set(&["x"]), usize::MAX);
        // a stops showing x: b waited first and gets it; y stays a's.
        let outcome = state.show(a, set(&["y"]), usize::MAX);
        assert_eq!(outcome.taken.get(&b), Some(&vec!["x".to_owned()]));
        assert!(outcome.freed.is_empty());
        // b disconnects: c inherits x; then c leaves and x is free.
        let outcome = state.show(b, set(&[]), usize::MAX);
        assert_eq!(outcome.taken.get(&c), Some(&vec!["x".to_owned()]));
        let outcome = state.show(c, set(&[]), usize::MAX);
        assert_eq!(outcome.freed, vec!["x"]);
        assert_eq!(state.locks.keys().collect::<Vec<_>>(), vec!["y"]);
    }

    #[test]
    fn a_waiter_that_moved_on_is_skipped() {
        let mut state = State::default();
        let (a, b, c) = (id(1), id(2), id(3));
        state.show(a, set(&["x"]), usize::MAX);
        state.show(b, set(&["x"]), usize::MAX);
        state.show(c, set(&["x"]), usize::MAX);
        state.show(b, set(&["z"]), usize::MAX);
        let outcome = state.show(a, set(&[]), usize::MAX);
        assert_eq!(outcome.taken.get(&c), Some(&vec!["x".to_owned()]));
    }
}
