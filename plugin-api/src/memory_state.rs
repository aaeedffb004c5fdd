//! Shared state in one process's memory: what `Host::state` does on a single
//! node (the server keeps one per app) and in [`crate::testing::TestHost`].
//! It is also the reference for the Redis implementation a cluster uses:
//! both answer every [`StateOp`] alike, down to expiry and the refusal of
//! an operation on a key that holds another kind.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use abi_stable::std_types::{ROption, RString};

use crate::abi::{StateOp, StateReply, StateRequest};

/// What a key holds.
#[derive(Debug)]
enum Value {
    Text(String),
    Hash(HashMap<String, String>),
    List(VecDeque<String>),
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::Text(_) => "a value",
            Value::Hash(_) => "a hash",
            Value::List(_) => "a list",
        }
    }
}

#[derive(Debug)]
struct Entry {
    value: Value,
    expires: Option<Instant>,
}

/// An operation the state refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateError(String);

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StateError {}

/// Operations between two sweeps of expired keys (a key that is never
/// read again is removed by a sweep, not only when read).
const SWEEP_EVERY: u64 = 1024;

/// Keys and what they hold, behind one lock held only for map work.
#[derive(Debug, Default)]
pub struct MemoryState {
    entries: Mutex<HashMap<String, Entry>>,
    operations: AtomicU64,
}

fn expiry(ttl_ms: u64) -> Option<Instant> {
    (ttl_ms > 0).then(|| Instant::now() + Duration::from_millis(ttl_ms))
}

fn wrong_kind(key: &str, entry: &Entry, wanted: &str) -> StateError {
    StateError(format!(
        "state key {key:?} holds {}, not {wanted}",
        entry.value.kind()
    ))
}

fn text(value: Option<&str>) -> ROption<RString> {
    value.map(RString::from).into()
}

impl MemoryState {
    /// An empty state.
    pub fn new() -> Self {
        MemoryState::default()
    }

    /// How many keys it holds (expired ones included until swept).
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether it holds no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Runs one operation on `key` (the request's own key is ignored: the
    /// caller passes it, namespaced as it likes).
    ///
    /// # Errors
    /// The key holds another kind than the operation works on, or the
    /// operation is unknown.
    pub fn run(&self, key: &str, request: &StateRequest<'_>) -> Result<StateReply, StateError> {
        let named = request.key.as_str();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if self.operations.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == 0 {
            entries.retain(|_, entry| entry.expires.is_none_or(|at| at > now));
        } else if entries
            .get(key)
            .is_some_and(|entry| entry.expires.is_some_and(|at| at <= now))
        {
            entries.remove(key);
        }
        let value = request.value.into_option().map(|v| v.as_str());
        let expected = request.expected.into_option().map(|v| v.as_str());
        let field = request.field.as_str();
        let limit = usize::try_from(request.limit).unwrap_or(usize::MAX);
        let mut reply = StateReply::default();
        match request.op {
            StateOp::GET => match entries.get(key) {
                None => {}
                Some(Entry {
                    value: Value::Text(text),
                    ..
                }) => reply.value = ROption::RSome(text.as_str().into()),
                Some(other) => return Err(wrong_kind(named, other, "a value")),
            },
            StateOp::SET => {
                if let Some(other) = entries.get(key) {
                    if !matches!(other.value, Value::Text(_)) {
                        return Err(wrong_kind(named, other, "a value"));
                    }
                }
                let value = value.unwrap_or_default().to_owned();
                entries.insert(
                    key.to_owned(),
                    Entry {
                        value: Value::Text(value),
                        expires: expiry(request.ttl_ms),
                    },
                );
                reply.done = true;
            }
            StateOp::SWAP => {
                let current = match entries.get(key) {
                    None => None,
                    Some(Entry {
                        value: Value::Text(text),
                        ..
                    }) => Some(text.as_str()),
                    Some(other) => return Err(wrong_kind(named, other, "a value")),
                };
                if current == expected {
                    match value {
                        Some(value) => {
                            entries.insert(
                                key.to_owned(),
                                Entry {
                                    value: Value::Text(value.to_owned()),
                                    expires: expiry(request.ttl_ms),
                                },
                            );
                        }
                        None => {
                            entries.remove(key);
                        }
                    }
                    reply.done = true;
                }
            }
            StateOp::DELETE => reply.done = entries.remove(key).is_some(),
            StateOp::HASH_GET => match entries.get(key) {
                None => {}
                Some(Entry {
                    value: Value::Hash(hash),
                    ..
                }) => reply.value = text(hash.get(field).map(String::as_str)),
                Some(other) => return Err(wrong_kind(named, other, "a hash")),
            },
            StateOp::HASH_SET | StateOp::HASH_SWAP => {
                let hash = match entries.get_mut(key) {
                    Some(Entry {
                        value: Value::Hash(hash),
                        ..
                    }) => Some(hash),
                    Some(other) => return Err(wrong_kind(named, other, "a hash")),
                    None => None,
                };
                let current = hash.as_ref().and_then(|h| h.get(field)).map(String::as_str);
                let swap = request.op == StateOp::HASH_SWAP;
                if swap && current != expected {
                    return Ok(reply);
                }
                reply.done = if swap {
                    true
                } else {
                    current.is_none() != value.is_none()
                };
                match (value, hash) {
                    (Some(value), Some(hash)) => {
                        hash.insert(field.to_owned(), value.to_owned());
                    }
                    (Some(value), None) => {
                        let hash = HashMap::from([(field.to_owned(), value.to_owned())]);
                        entries.insert(
                            key.to_owned(),
                            Entry {
                                value: Value::Hash(hash),
                                expires: None,
                            },
                        );
                    }
                    (None, Some(hash)) => {
                        hash.remove(field);
                        if hash.is_empty() {
                            entries.remove(key);
                        }
                    }
                    (None, None) => {}
                }
            }
            StateOp::HASH_ALL => match entries.get(key) {
                None => {}
                Some(Entry {
                    value: Value::Hash(hash),
                    ..
                }) => {
                    reply.items = hash
                        .iter()
                        .flat_map(|(field, value)| [field.as_str().into(), value.as_str().into()])
                        .collect();
                }
                Some(other) => return Err(wrong_kind(named, other, "a hash")),
            },
            StateOp::HASH_LEN => match entries.get(key) {
                None => {}
                Some(Entry {
                    value: Value::Hash(hash),
                    ..
                }) => reply.count = hash.len() as u64,
                Some(other) => return Err(wrong_kind(named, other, "a hash")),
            },
            StateOp::LIST_PUSH => {
                let list = match entries.get_mut(key) {
                    Some(Entry {
                        value: Value::List(list),
                        ..
                    }) => list,
                    Some(other) => return Err(wrong_kind(named, other, "a list")),
                    None => {
                        let entry = entries.entry(key.to_owned()).or_insert(Entry {
                            value: Value::List(VecDeque::new()),
                            expires: None,
                        });
                        let Value::List(list) = &mut entry.value else {
                            unreachable!("just inserted a list");
                        };
                        list
                    }
                };
                list.push_back(value.unwrap_or_default().to_owned());
                if limit > 0 {
                    while list.len() > limit {
                        list.pop_front();
                    }
                }
                reply.count = list.len() as u64;
                reply.done = true;
            }
            StateOp::LIST_RANGE => match entries.get(key) {
                None => {}
                Some(Entry {
                    value: Value::List(list),
                    ..
                }) => {
                    let skip = if limit == 0 {
                        0
                    } else {
                        list.len().saturating_sub(limit)
                    };
                    reply.items = list.iter().skip(skip).map(|v| v.as_str().into()).collect();
                }
                Some(other) => return Err(wrong_kind(named, other, "a list")),
            },
            StateOp::LIST_REMOVE => match entries.get_mut(key) {
                None => {}
                Some(Entry {
                    value: Value::List(list),
                    ..
                }) => {
                    let before = list.len();
                    let unwanted = value.unwrap_or_default();
                    list.retain(|v| v != unwanted);
                    reply.count = (before - list.len()) as u64;
                    reply.done = reply.count > 0;
                    if list.is_empty() {
                        entries.remove(key);
                    }
                }
                Some(other) => return Err(wrong_kind(named, other, "a list")),
            },
            StateOp(other) => {
                return Err(StateError(format!("unknown state operation {other}")));
            }
        }
        Ok(reply)
    }
}
