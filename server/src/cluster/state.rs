//! Shared state in Redis: `Host::state` on a node of a cluster. Each
//! operation maps to one Redis command, or one Lua script where it must be
//! atomic (compare-and-swap, set, capped push), with the semantics of
//! [`MemoryState`](switchboard_plugin_api::memory_state::MemoryState) on a
//! single node, down to the message refusing an operation on a key that
//! holds another kind. Keys live under `<prefix>:state:<app>:`.
//!
//! Every operation of every app on this node goes into the link's queue,
//! the one that also carries the node's publications (see `link.rs`), and
//! the link sends what is queued as one pipeline. So operations run in the
//! order they were asked, a write that does not wait (`detached`) is seen by
//! every later operation of this node, and a write queued before a broadcast
//! is in Redis before any node delivers the broadcast (a chat message is in
//! the room's history before anyone can answer it); a burst of writes costs
//! one round trip, not one each.
//!
//! `Host` calls are synchronous, Redis is not: a call that waits, made on a
//! runtime worker (a plugin callback), waits in `block_in_place`, which hands
//! the worker's other tasks to another thread first; a call from a plugin's
//! own thread waits on the runtime's handle. Either way the wait is bounded
//! by `request_timeout`.

use abi_stable::std_types::{RString, RVec};
use redis::aio::MultiplexedConnection;
use switchboard_plugin_api::abi::{StateOp, StateReply, StateRequest};
use tokio::sync::oneshot;

use super::{Cluster, ClusterError, Outbound, Work};

/// `SET` that refuses a key holding a hash or a list, as a single node does.
const SET: &str = r"
local t = redis.call('TYPE', KEYS[1]).ok
if t ~= 'none' and t ~= 'string' then
  return redis.error_reply('WRONGTYPE Operation against a key holding the wrong kind of value')
end
if ARGV[2] ~= '0' then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
else redis.call('SET', KEYS[1], ARGV[1]) end
return 1
";

/// Compare and swap of a key's value.
const SWAP: &str = r"
local cur = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
  if cur ~= ARGV[2] then return 0 end
elseif cur then return 0 end
if ARGV[3] == '1' then
  if ARGV[5] ~= '0' then redis.call('SET', KEYS[1], ARGV[4], 'PX', ARGV[5])
  else redis.call('SET', KEYS[1], ARGV[4]) end
else redis.call('DEL', KEYS[1]) end
return 1
";

/// Compare and swap of one hash field.
const HASH_SWAP: &str = r"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[2] == '1' then
  if cur ~= ARGV[3] then return 0 end
elseif cur then return 0 end
if ARGV[4] == '1' then redis.call('HSET', KEYS[1], ARGV[1], ARGV[5])
else redis.call('HDEL', KEYS[1], ARGV[1]) end
return 1
";

/// Append, then keep the last `ARGV[2]` entries.
const LIST_PUSH: &str = r"
local n = redis.call('RPUSH', KEYS[1], ARGV[1])
local keep = tonumber(ARGV[2])
if keep > 0 and n > keep then
  redis.call('LTRIM', KEYS[1], -keep, -1)
  n = keep
end
return n
";

fn flag(value: Option<&str>) -> (&'static str, &str) {
    match value {
        Some(value) => ("1", value),
        None => ("0", ""),
    }
}

fn eval(script: &str, key: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(script).arg(1).arg(key);
    cmd
}

/// One operation, owned, waiting in the queue.
#[derive(Debug)]
pub(super) struct StateJob {
    op: StateOp,
    /// The Redis key.
    key: String,
    /// The app's own name for it, for messages.
    name: String,
    field: String,
    value: Option<String>,
    expected: Option<String>,
    ttl_ms: u64,
    limit: u64,
    /// Where the answer goes; none for a write that does not wait.
    reply: Option<oneshot::Sender<Result<StateReply, ClusterError>>>,
}

impl Cluster {
    /// Runs one state operation of `app` in Redis (or queues it, when
    /// detached).
    ///
    /// # Errors
    /// `Unavailable` when Redis cannot be reached (or does not answer within
    /// `request_timeout`); `QueueFull`; `Refused` for an operation on a key
    /// that holds another kind, or an unknown operation.
    pub fn state(&self, app: &str, request: &StateRequest<'_>) -> Result<StateReply, ClusterError> {
        if !self.is_up() {
            return Err(ClusterError::Unavailable);
        }
        let text = |v: abi_stable::std_types::ROption<abi_stable::std_types::RStr<'_>>| {
            v.into_option().map(|v| v.as_str().to_owned())
        };
        let mut job = StateJob {
            op: request.op,
            key: format!(
                "{}:state:{app}:{}",
                self.config.prefix,
                request.key.as_str()
            ),
            name: request.key.as_str().to_owned(),
            field: request.field.as_str().to_owned(),
            value: text(request.value),
            expected: text(request.expected),
            ttl_ms: request.ttl_ms,
            limit: request.limit,
            reply: None,
        };
        if !self.linked.load(std::sync::atomic::Ordering::Acquire) {
            // Before the link runs (the apps being built): one at a time, now.
            let connection = self
                .commands
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
                .ok_or(ClusterError::Unavailable)?;
            let timeout = self.config.request_timeout;
            return self.block_on(async move {
                tokio::time::timeout(timeout, job.run_now(connection))
                    .await
                    .unwrap_or(Err(ClusterError::Unavailable))
            });
        }
        let queue = |job: StateJob| {
            self.enqueue(Outbound {
                kind: "state",
                work: Work::State(job),
            })
        };
        if request.detached {
            queue(job)?;
            return Ok(StateReply::default());
        }
        let (tx, rx) = oneshot::channel();
        job.reply = Some(tx);
        queue(job)?;
        let timeout = self.config.request_timeout;
        self.block_on(async move {
            match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(answer)) => answer,
                _ => Err(ClusterError::Unavailable),
            }
        })
    }

    /// Waits for `future` from synchronous code: a `Host` call.
    fn block_on<T>(
        &self,
        future: impl std::future::Future<Output = Result<T, ClusterError>>,
    ) -> Result<T, ClusterError> {
        use tokio::runtime::{Handle, RuntimeFlavor};
        match Handle::try_current() {
            Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| handle.block_on(future))
            }
            // A thread of the plugin's own.
            Err(_) => match self.runtime.get() {
                Some(handle) => handle.block_on(future),
                None => Err(ClusterError::Unavailable),
            },
            // A single-threaded runtime cannot wait for its own task.
            Ok(_) => Err(ClusterError::Unavailable),
        }
    }
}

impl StateJob {
    /// Runs it on its own (before the link runs).
    async fn run_now(
        self,
        mut connection: MultiplexedConnection,
    ) -> Result<StateReply, ClusterError> {
        let mut pipe = redis::pipe();
        pipe.ignore_errors().add_command(self.command());
        let mut values: Vec<redis::Value> = pipe
            .query_async(&mut connection)
            .await
            .map_err(|_| ClusterError::Unavailable)?;
        let value = values.pop().ok_or(ClusterError::Unavailable)?;
        self.decode(value, &mut connection).await
    }

    /// Bytes it holds, for the queue's bound.
    pub(super) fn len(&self) -> usize {
        self.key.len() + self.field.len() + self.value.as_ref().map_or(0, String::len)
    }

    pub(super) fn answer(self, result: Result<StateReply, ClusterError>) {
        match self.reply {
            Some(reply) => {
                let _ = reply.send(result);
            }
            None => {
                if let Err(error) = result {
                    tracing::warn!(
                        key = %self.name,
                        "cluster: a shared-state write that did not wait failed: {error}"
                    );
                }
            }
        }
    }

    /// The command that does it.
    pub(super) fn command(&self) -> redis::Cmd {
        let (key, field) = (&self.key, &self.field);
        let value = self.value.as_deref();
        match self.op {
            StateOp::GET => redis::cmd("GET").arg(key).clone(),
            StateOp::SET => eval(SET, key)
                .arg(value.unwrap_or_default())
                .arg(self.ttl_ms)
                .clone(),
            StateOp::SWAP => {
                let (has_expected, expected) = flag(self.expected.as_deref());
                let (has_value, value) = flag(value);
                eval(SWAP, key)
                    .arg(has_expected)
                    .arg(expected)
                    .arg(has_value)
                    .arg(value)
                    .arg(self.ttl_ms)
                    .clone()
            }
            StateOp::DELETE => redis::cmd("DEL").arg(key).clone(),
            StateOp::HASH_GET => redis::cmd("HGET").arg(key).arg(field).clone(),
            StateOp::HASH_SET => match value {
                Some(value) => redis::cmd("HSET").arg(key).arg(field).arg(value).clone(),
                None => redis::cmd("HDEL").arg(key).arg(field).clone(),
            },
            StateOp::HASH_SWAP => {
                let (has_expected, expected) = flag(self.expected.as_deref());
                let (has_value, value) = flag(value);
                eval(HASH_SWAP, key)
                    .arg(field)
                    .arg(has_expected)
                    .arg(expected)
                    .arg(has_value)
                    .arg(value)
                    .clone()
            }
            StateOp::HASH_ALL => redis::cmd("HGETALL").arg(key).clone(),
            StateOp::HASH_LEN => redis::cmd("HLEN").arg(key).clone(),
            StateOp::LIST_PUSH => eval(LIST_PUSH, key)
                .arg(value.unwrap_or_default())
                .arg(self.limit)
                .clone(),
            StateOp::LIST_RANGE => {
                let start = if self.limit == 0 {
                    0
                } else {
                    -i64::try_from(self.limit).unwrap_or(i64::MAX)
                };
                redis::cmd("LRANGE").arg(key).arg(start).arg(-1).clone()
            }
            StateOp::LIST_REMOVE => redis::cmd("LREM")
                .arg(key)
                .arg(0)
                .arg(value.unwrap_or_default())
                .clone(),
            // Refused in `decode` without a round trip's worth of meaning.
            StateOp(_) => redis::cmd("PING"),
        }
    }

    /// The reply from what Redis answered.
    pub(super) async fn decode(
        &self,
        value: redis::Value,
        connection: &mut MultiplexedConnection,
    ) -> Result<StateReply, ClusterError> {
        if let redis::Value::ServerError(error) = &value {
            if error.code() == "WRONGTYPE"
                || error.details().is_some_and(|d| d.contains("WRONGTYPE"))
            {
                return Err(ClusterError::Refused(self.wrong_kind(connection).await));
            }
            tracing::warn!("cluster: Redis refused a shared-state operation: {error:?}");
            return Err(ClusterError::Unavailable);
        }
        let unreadable = |e: redis::ParsingError| {
            tracing::warn!("cluster: an unreadable answer from Redis: {e}");
            ClusterError::Unavailable
        };
        let mut reply = StateReply::default();
        match self.op {
            StateOp::GET | StateOp::HASH_GET => {
                let got: Option<String> = redis::from_redis_value(value).map_err(unreadable)?;
                reply.value = got.map(RString::from).into();
            }
            StateOp::SET => reply.done = true,
            StateOp::SWAP | StateOp::HASH_SWAP | StateOp::DELETE | StateOp::HASH_SET => {
                let n: i64 = redis::from_redis_value(value).map_err(unreadable)?;
                reply.done = n > 0;
            }
            StateOp::HASH_ALL | StateOp::LIST_RANGE => {
                let items: Vec<String> = redis::from_redis_value(value).map_err(unreadable)?;
                reply.items = items.into_iter().map(RString::from).collect::<RVec<_>>();
            }
            StateOp::HASH_LEN | StateOp::LIST_PUSH | StateOp::LIST_REMOVE => {
                let n: u64 = redis::from_redis_value(value).map_err(unreadable)?;
                reply.count = n;
                reply.done = self.op == StateOp::LIST_PUSH || n > 0;
            }
            StateOp(other) => {
                return Err(ClusterError::Refused(format!(
                    "unknown state operation {other}"
                )))
            }
        }
        Ok(reply)
    }

    /// The message a single node gives for an operation on a key of another kind.
    async fn wrong_kind(&self, connection: &mut MultiplexedConnection) -> String {
        let holds: String = redis::cmd("TYPE")
            .arg(&self.key)
            .query_async(connection)
            .await
            .unwrap_or_default();
        let holds = match holds.as_str() {
            "hash" => "a hash",
            "list" => "a list",
            "string" => "a value",
            _ => "another kind",
        };
        let wanted = match self.op {
            StateOp::HASH_GET
            | StateOp::HASH_SET
            | StateOp::HASH_SWAP
            | StateOp::HASH_ALL
            | StateOp::HASH_LEN => "a hash",
            StateOp::LIST_PUSH | StateOp::LIST_RANGE | StateOp::LIST_REMOVE => "a list",
            _ => "a value",
        };
        format!("state key {:?} holds {holds}, not {wanted}", self.name)
    }
}
