//! [`SharedState`]: state an app keeps in the server rather than in its own
//! memory, so it is one state on every node of a cluster (in Redis) and
//! survives a reload of the app (on a single node, in the server's memory).
//!
//! Keys hold a value, a hash or a list. Conditional writes
//! ([`SharedState::swap`], [`SharedState::hash_swap`]) are atomic across
//! nodes: read, decide, swap, and read again when another node changed the
//! entry in between. Every call is a round trip to Redis in a cluster (tens
//! of microseconds on a LAN), made synchronously: keep them out of tight
//! loops. In a cluster whose Redis is unreachable, calls fail with
//! `UNAVAILABLE`.

use std::time::Duration;

use abi_stable::std_types::{ROption, RStr};

use super::host::HostError;
use super::Host;
use crate::abi::{StateOp, StateReply, StateRequest};

/// Writes to shared state that do not wait for the answer, from
/// [`SharedState::without_waiting`].
#[derive(Debug, Clone, Copy)]
pub struct StateWrites<'h> {
    state: SharedState<'h>,
}

impl StateWrites<'_> {
    fn run(&self, request: StateRequest<'_>) -> Result<(), HostError> {
        self.state.run(StateRequest {
            detached: true,
            ..request
        })?;
        Ok(())
    }

    /// As [`SharedState::set`].
    ///
    /// # Errors
    /// `UNAVAILABLE`, or `QUEUE_FULL` when too many writes wait already.
    pub fn set(&self, key: &str, value: &str, ttl: Option<Duration>) -> Result<(), HostError> {
        self.run(StateRequest {
            value: opt(Some(value)),
            ttl_ms: ttl_ms(ttl),
            ..SharedState::request(StateOp::SET, key)
        })
    }

    /// As [`SharedState::delete`].
    ///
    /// # Errors
    /// As [`StateWrites::set`].
    pub fn delete(&self, key: &str) -> Result<(), HostError> {
        self.run(SharedState::request(StateOp::DELETE, key))
    }

    /// As [`SharedState::hash_set`].
    ///
    /// # Errors
    /// As [`StateWrites::set`].
    pub fn hash_set(&self, key: &str, field: &str, value: Option<&str>) -> Result<(), HostError> {
        self.run(StateRequest {
            field: RStr::from_str(field),
            value: opt(value),
            ..SharedState::request(StateOp::HASH_SET, key)
        })
    }

    /// As [`SharedState::list_push`].
    ///
    /// # Errors
    /// As [`StateWrites::set`].
    pub fn list_push(&self, key: &str, value: &str, keep: usize) -> Result<(), HostError> {
        self.run(StateRequest {
            value: opt(Some(value)),
            limit: keep as u64,
            ..SharedState::request(StateOp::LIST_PUSH, key)
        })
    }

    /// As [`SharedState::list_remove`].
    ///
    /// # Errors
    /// As [`StateWrites::set`].
    pub fn list_remove(&self, key: &str, value: &str) -> Result<(), HostError> {
        self.run(StateRequest {
            value: opt(Some(value)),
            ..SharedState::request(StateOp::LIST_REMOVE, key)
        })
    }
}

/// The app's shared state, from [`Host::state`].
#[derive(Debug, Clone, Copy)]
pub struct SharedState<'h> {
    host: &'h Host,
}

fn ttl_ms(ttl: Option<Duration>) -> u64 {
    ttl.map_or(0, |ttl| {
        u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
    })
}

fn opt(value: Option<&str>) -> ROption<RStr<'_>> {
    value.map(RStr::from_str).into()
}

impl<'h> SharedState<'h> {
    pub(super) fn new(host: &'h Host) -> Self {
        SharedState { host }
    }

    fn run(&self, request: StateRequest<'_>) -> Result<StateReply, HostError> {
        self.host.state_call(&request)
    }

    fn request<'a>(op: StateOp, key: &'a str) -> StateRequest<'a> {
        StateRequest {
            op,
            key: RStr::from_str(key),
            field: RStr::from_str(""),
            value: ROption::RNone,
            expected: ROption::RNone,
            ttl_ms: 0,
            limit: 0,
            detached: false,
        }
    }

    /// Writes that do not wait for Redis: each is queued after every
    /// earlier operation of the app on this node and returns at once (in a
    /// cluster; on a single node they are as fast either way). Use them on
    /// hot paths for writes whose result the app does not need, such as
    /// appending to a history. A failure is logged by the server.
    pub fn without_waiting(&self) -> StateWrites<'h> {
        StateWrites { state: *self }
    }

    /// The value of `key`, if it has one.
    ///
    /// # Errors
    /// The key holds a hash or a list (`INVALID_ARGUMENT`); `UNAVAILABLE`.
    pub fn get(&self, key: &str) -> Result<Option<String>, HostError> {
        let reply = self.run(Self::request(StateOp::GET, key))?;
        Ok(reply.value.into_option().map(Into::into))
    }

    /// Sets `key` to `value`, expiring after `ttl` (never when `None`).
    ///
    /// # Errors
    /// As [`SharedState::get`].
    pub fn set(&self, key: &str, value: &str, ttl: Option<Duration>) -> Result<(), HostError> {
        self.run(StateRequest {
            value: opt(Some(value)),
            ttl_ms: ttl_ms(ttl),
            ..Self::request(StateOp::SET, key)
        })?;
        Ok(())
    }

    /// If `key`'s value is `expected` (absent: `None`), sets it to `new`
    /// (deletes it: `None`), expiring after `ttl`; returns whether it did.
    /// `swap(key, None, Some(me), ttl)` takes a key nobody holds;
    /// `swap(key, Some(me), None, None)` gives it back only if still held.
    ///
    /// # Errors
    /// As [`SharedState::get`].
    pub fn swap(
        &self,
        key: &str,
        expected: Option<&str>,
        new: Option<&str>,
        ttl: Option<Duration>,
    ) -> Result<bool, HostError> {
        let reply = self.run(StateRequest {
            value: opt(new),
            expected: opt(expected),
            ttl_ms: ttl_ms(ttl),
            ..Self::request(StateOp::SWAP, key)
        })?;
        Ok(reply.done)
    }

    /// Deletes `key`, whatever it holds; returns whether it existed.
    ///
    /// # Errors
    /// `UNAVAILABLE`.
    pub fn delete(&self, key: &str) -> Result<bool, HostError> {
        Ok(self.run(Self::request(StateOp::DELETE, key))?.done)
    }

    /// The value of `field` in the hash `key`.
    ///
    /// # Errors
    /// The key holds a value or a list (`INVALID_ARGUMENT`); `UNAVAILABLE`.
    pub fn hash_get(&self, key: &str, field: &str) -> Result<Option<String>, HostError> {
        let reply = self.run(StateRequest {
            field: RStr::from_str(field),
            ..Self::request(StateOp::HASH_GET, key)
        })?;
        Ok(reply.value.into_option().map(Into::into))
    }

    /// Sets `field` of the hash `key` (removes it when `value` is `None`);
    /// returns whether a field was added or removed.
    ///
    /// # Errors
    /// As [`SharedState::hash_get`].
    pub fn hash_set(&self, key: &str, field: &str, value: Option<&str>) -> Result<bool, HostError> {
        let reply = self.run(StateRequest {
            field: RStr::from_str(field),
            value: opt(value),
            ..Self::request(StateOp::HASH_SET, key)
        })?;
        Ok(reply.done)
    }

    /// If `field` of the hash `key` is `expected` (absent: `None`), sets it
    /// to `new` (removes it: `None`); returns whether it did.
    ///
    /// # Errors
    /// As [`SharedState::hash_get`].
    pub fn hash_swap(
        &self,
        key: &str,
        field: &str,
        expected: Option<&str>,
        new: Option<&str>,
    ) -> Result<bool, HostError> {
        let reply = self.run(StateRequest {
            field: RStr::from_str(field),
            value: opt(new),
            expected: opt(expected),
            ..Self::request(StateOp::HASH_SWAP, key)
        })?;
        Ok(reply.done)
    }

    /// Every field of the hash `key` with its value, in no particular order.
    ///
    /// # Errors
    /// As [`SharedState::hash_get`].
    pub fn hash_all(&self, key: &str) -> Result<Vec<(String, String)>, HostError> {
        let reply = self.run(Self::request(StateOp::HASH_ALL, key))?;
        let mut pairs = Vec::with_capacity(reply.items.len() / 2);
        let mut items = reply.items.into_iter().map(String::from);
        while let (Some(field), Some(value)) = (items.next(), items.next()) {
            pairs.push((field, value));
        }
        Ok(pairs)
    }

    /// How many fields the hash `key` has.
    ///
    /// # Errors
    /// As [`SharedState::hash_get`].
    pub fn hash_len(&self, key: &str) -> Result<usize, HostError> {
        let reply = self.run(Self::request(StateOp::HASH_LEN, key))?;
        Ok(usize::try_from(reply.count).unwrap_or(usize::MAX))
    }

    /// Appends `value` to the list `key` and keeps its last `keep` entries
    /// (all when 0); returns its length.
    ///
    /// # Errors
    /// The key holds a value or a hash (`INVALID_ARGUMENT`); `UNAVAILABLE`.
    pub fn list_push(&self, key: &str, value: &str, keep: usize) -> Result<usize, HostError> {
        let reply = self.run(StateRequest {
            value: opt(Some(value)),
            limit: keep as u64,
            ..Self::request(StateOp::LIST_PUSH, key)
        })?;
        Ok(usize::try_from(reply.count).unwrap_or(usize::MAX))
    }

    /// The last `last` entries of the list `key` (all when 0), oldest first.
    ///
    /// # Errors
    /// As [`SharedState::list_push`].
    pub fn list_range(&self, key: &str, last: usize) -> Result<Vec<String>, HostError> {
        let reply = self.run(StateRequest {
            limit: last as u64,
            ..Self::request(StateOp::LIST_RANGE, key)
        })?;
        Ok(reply.items.into_iter().map(String::from).collect())
    }

    /// Removes every entry equal to `value` from the list `key`; returns how many.
    ///
    /// # Errors
    /// As [`SharedState::list_push`].
    pub fn list_remove(&self, key: &str, value: &str) -> Result<usize, HostError> {
        let reply = self.run(StateRequest {
            value: opt(Some(value)),
            ..Self::request(StateOp::LIST_REMOVE, key)
        })?;
        Ok(usize::try_from(reply.count).unwrap_or(usize::MAX))
    }
}
