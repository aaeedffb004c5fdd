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
//!
//! Everything is kept in the host's shared state, so the locks are one set
//! for clients on every node of a cluster (and survive a reload): the hash
//! `users` (connection → user name), the hash `shown` (connection → the ids
//! it shows, JSON) and the hash `locks` (id → holder, since and waiting
//! line, JSON). A lock changes by compare-and-swap of its entry, so two
//! nodes acting on one id at once cannot both take it: the loser reads the
//! entry again and acts on what it finds. A connection whose node dies is
//! released by `on_lost` on a surviving node, like a disconnect.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::json;
use switchboard_plugin_api::{
    export_app, App, ConnId, Context, Error, Host, HostError, Message, SharedState,
};

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

/// One lock, as kept in the shared hash `locks`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Lock {
    holder: String,
    since: u64,
    /// Clients showing the id while someone else holds it, longest waiting first.
    #[serde(default)]
    waiting: VecDeque<String>,
}

/// The shared hashes.
const USERS: &str = "users";
const SHOWN: &str = "shown";
const LOCKS: &str = "locks";

/// What a change did, to be told to clients afterwards.
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
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The locks in shared state, one operation per method.
struct Table<'h> {
    state: SharedState<'h>,
}

impl Table<'_> {
    /// A lock and its entry as stored (for the swap that changes it).
    fn lock(&self, id: &str) -> Result<Option<(String, Lock)>, HostError> {
        Ok(self.state.hash_get(LOCKS, id)?.and_then(|raw| {
            let lock = serde_json::from_str(&raw).ok()?;
            Some((raw, lock))
        }))
    }

    /// Replaces the entry `old` of a lock by `new` (none: the lock goes);
    /// false when another client changed it first.
    fn swap(&self, id: &str, old: Option<&str>, new: Option<&Lock>) -> Result<bool, HostError> {
        let new = new.map(|lock| serde_json::to_string(lock).unwrap_or_default());
        self.state.hash_swap(LOCKS, id, old, new.as_deref())
    }

    fn shown(&self, conn: ConnId) -> Result<BTreeSet<String>, HostError> {
        Ok(self
            .state
            .hash_get(SHOWN, &conn.to_string())?
            .and_then(|raw| serde_json::from_str(&raw).ok())
            .unwrap_or_default())
    }

    fn user(&self, conn: &str) -> Result<String, HostError> {
        Ok(self.state.hash_get(USERS, conn)?.unwrap_or_default())
    }

    fn holder(&self, lock: &Lock) -> Result<Holder, HostError> {
        Ok(Holder {
            user: self.user(&lock.holder)?,
            conn: lock.holder.clone(),
            since: lock.since,
        })
    }

    fn all(&self) -> Result<BTreeMap<String, Holder>, HostError> {
        let users: BTreeMap<String, String> = self.state.hash_all(USERS)?.into_iter().collect();
        Ok(self
            .state
            .hash_all(LOCKS)?
            .into_iter()
            .filter_map(|(id, raw)| {
                let lock: Lock = serde_json::from_str(&raw).ok()?;
                let holder = Holder {
                    user: users.get(&lock.holder).cloned().unwrap_or_default(),
                    conn: lock.holder,
                    since: lock.since,
                };
                Some((id, holder))
            })
            .collect())
    }

    /// `conn` no longer shows `id`: leave its waiting line, or, if it holds
    /// the lock, give it to the longest waiter still showing it, or free it.
    fn drop_interest(
        &self,
        conn: ConnId,
        id: &str,
        outcome: &mut Outcome,
    ) -> Result<(), HostError> {
        let me = conn.to_string();
        loop {
            let Some((raw, mut lock)) = self.lock(id)? else {
                return Ok(());
            };
            if lock.holder != me {
                if !lock.waiting.contains(&me) {
                    return Ok(());
                }
                lock.waiting.retain(|w| *w != me);
                if self.swap(id, Some(&raw), Some(&lock))? {
                    return Ok(());
                }
                continue;
            }
            let mut next = None;
            while let Some(waiter) = lock.waiting.pop_front() {
                let Ok(waiter_id) = waiter.parse::<ConnId>() else {
                    continue;
                };
                if self.shown(waiter_id)?.contains(id) {
                    next = Some((waiter, waiter_id));
                    break;
                }
            }
            match next {
                Some((waiter, waiter_id)) => {
                    lock.holder = waiter;
                    lock.since = now_ms();
                    if self.swap(id, Some(&raw), Some(&lock))? {
                        outcome
                            .taken
                            .entry(waiter_id)
                            .or_default()
                            .push(id.to_owned());
                        return Ok(());
                    }
                }
                None => {
                    if self.swap(id, Some(&raw), None)? {
                        outcome.freed.push(id.to_owned());
                        return Ok(());
                    }
                }
            }
        }
    }

    /// `conn` now shows exactly `ids` (and none when it leaves).
    fn show(
        &self,
        conn: ConnId,
        ids: &BTreeSet<String>,
        max_locks: usize,
    ) -> Result<Outcome, HostError> {
        let mut outcome = Outcome::default();
        let me = conn.to_string();
        let before = self.shown(conn)?;
        if ids.is_empty() {
            self.state.hash_set(SHOWN, &me, None)?;
        } else {
            let list = serde_json::to_string(ids).unwrap_or_default();
            self.state.hash_set(SHOWN, &me, Some(&list))?;
        }
        for id in before.difference(ids) {
            self.drop_interest(conn, id, &mut outcome)?;
        }
        for id in ids {
            loop {
                match self.lock(id)? {
                    None => {
                        if self.state.hash_len(LOCKS)? >= max_locks {
                            outcome.over_limit.push(id.clone());
                            break;
                        }
                        let lock = Lock {
                            holder: me.clone(),
                            since: now_ms(),
                            waiting: VecDeque::new(),
                        };
                        if self.swap(id, None, Some(&lock))? {
                            outcome.taken.entry(conn).or_default().push(id.clone());
                            outcome.mine.push(id.clone());
                            break;
                        }
                    }
                    Some((_, lock)) if lock.holder == me => {
                        outcome.mine.push(id.clone());
                        break;
                    }
                    Some((raw, mut lock)) => {
                        if !lock.waiting.contains(&me) {
                            lock.waiting.push_back(me.clone());
                            if !self.swap(id, Some(&raw), Some(&lock))? {
                                continue;
                            }
                        }
                        outcome
                            .held_by_others
                            .insert(id.clone(), self.holder(&lock)?);
                        break;
                    }
                }
            }
        }
        Ok(outcome)
    }

    /// `conn` is gone (closed here, or lost with its node): it shows
    /// nothing and has no name any more.
    fn leave(&self, conn: ConnId, max_locks: usize) -> Result<Outcome, HostError> {
        let outcome = self.show(conn, &BTreeSet::new(), max_locks)?;
        self.state.hash_set(USERS, &conn.to_string(), None)?;
        Ok(outcome)
    }
}

impl Locks {
    fn table(&self) -> Table<'_> {
        Table {
            state: self.host.state(),
        }
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
        let table = self.table();
        for (holder, ids) in &outcome.taken {
            let since = match ids.first() {
                Some(id) => table.lock(id)?.map_or(0, |(_, lock)| lock.since),
                None => 0,
            };
            let user = table.user(&holder.to_string())?;
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
        let table = self.table();
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
                table
                    .state
                    .hash_set(USERS, &conn.to_string(), Some(&user))?;
                self.host
                    .send_json(conn, &json!({ "type": "hello", "user": user }))?;
                Ok(())
            }
            Command::Show { ids } => {
                let ids = match self.check_ids(&ids) {
                    Ok(ids) => ids,
                    Err(message) => return self.error(conn, message),
                };
                let mut outcome = table.show(conn, &ids, self.config.max_locks)?;
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
                    let user = table.user(&conn.to_string())?;
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
                let remaining: BTreeSet<String> =
                    table.shown(conn)?.difference(&ids).cloned().collect();
                let outcome = table.show(conn, &remaining, self.config.max_locks)?;
                self.host
                    .send_json(conn, &json!({ "type": "released_own", "ids": ids }))?;
                self.announce(&outcome)
            }
            Command::State => {
                let locks = table.all()?;
                self.send_snapshot(conn, "state", locks)
            }
        }
    }

    /// A connection is gone, here or with its node: release what it held.
    fn forget(&self, conn: ConnId) -> Result<(), Error> {
        let outcome = self.table().leave(conn, self.config.max_locks)?;
        self.announce(&outcome)
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
        Ok(Locks {
            host: context.host,
            config,
        })
    }

    fn on_resume(&self, _conn: ConnId) -> Result<(), Error> {
        // Its user name, shown ids, held locks and places in waiting lines
        // are in the host's shared state; the client already has the table.
        Ok(())
    }

    fn on_open(&self, conn: ConnId) -> Result<(), Error> {
        let table = self.table();
        let user = format!("user-{}", &conn.to_string()[..8]);
        table
            .state
            .hash_set(USERS, &conn.to_string(), Some(&user))?;
        self.send_snapshot(conn, "welcome", table.all()?)
    }

    fn on_message(&self, conn: ConnId, message: Message<'_>) -> Result<(), Error> {
        match message.parse_json::<Command>() {
            Ok(command) => match self.handle(conn, command) {
                Err(error) if HostError::is_unavailable_error(&*error) => {
                    // Shared state out of reach (a cluster without Redis):
                    // the client hears it and may try again.
                    self.error(conn, format!("locks are unavailable: {error}"))
                }
                other => other,
            },
            Err(why) => self.error(conn, why),
        }
    }

    fn on_close(&self, conn: ConnId, _code: u16, _reason: &str) {
        let _ = self.forget(conn);
    }

    fn on_lost(&self, conn: ConnId) -> Result<(), Error> {
        self.forget(conn)
    }
}

export_app!(Locks);

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_plugin_api::testing::TestHost;

    fn id(n: u8) -> ConnId {
        ConnId::from_bytes([n; 16])
    }

    fn set(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn first_come_first_served_and_the_longest_waiter_inherits() {
        let host = TestHost::new();
        let context = host.context("{}");
        let table = Table {
            state: context.host.state(),
        };
        let (a, b, c) = (id(1), id(2), id(3));
        let outcome = table.show(a, &set(&["x", "y"]), usize::MAX).unwrap();
        assert_eq!(outcome.mine, vec!["x", "y"]);
        let outcome = table.show(b, &set(&["x"]), usize::MAX).unwrap();
        assert!(outcome.mine.is_empty());
        assert!(outcome.held_by_others.contains_key("x"));
        table.show(c, &set(&["x"]), usize::MAX).unwrap();
        // a stops showing x: b waited first and gets it; y stays a's.
        let outcome = table.show(a, &set(&["y"]), usize::MAX).unwrap();
        assert_eq!(outcome.taken.get(&b), Some(&vec!["x".to_owned()]));
        assert!(outcome.freed.is_empty());
        // b disconnects: c inherits x; then c leaves and x is free.
        let outcome = table.leave(b, usize::MAX).unwrap();
        assert_eq!(outcome.taken.get(&c), Some(&vec!["x".to_owned()]));
        let outcome = table.leave(c, usize::MAX).unwrap();
        assert_eq!(outcome.freed, vec!["x"]);
        assert_eq!(table.all().unwrap().keys().collect::<Vec<_>>(), vec!["y"]);
    }

    #[test]
    fn a_waiter_that_moved_on_is_skipped_and_the_limit_holds() {
        let host = TestHost::new();
        let context = host.context("{}");
        let table = Table {
            state: context.host.state(),
        };
        let (a, b, c) = (id(1), id(2), id(3));
        table.show(a, &set(&["x"]), usize::MAX).unwrap();
        table.show(b, &set(&["x"]), usize::MAX).unwrap();
        table.show(c, &set(&["x"]), usize::MAX).unwrap();
        table.show(b, &set(&["z"]), usize::MAX).unwrap();
        let outcome = table.show(a, &set(&[]), usize::MAX).unwrap();
        assert_eq!(outcome.taken.get(&c), Some(&vec!["x".to_owned()]));
        let outcome = table.show(a, &set(&["p", "q"]), 3).unwrap();
        assert_eq!(outcome.mine, vec!["p"]);
        assert_eq!(outcome.over_limit, vec!["q"]);
    }
}
