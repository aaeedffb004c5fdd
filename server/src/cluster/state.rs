//! Shared state in Redis: `Host::state` on a node of a cluster. Each
//! operation maps to one Redis command, or one Lua script where it must be
//! atomic (compare-and-swap, set, capped push), with the semantics of
//! [`MemoryState`](switchboard_plugin_api::memory_state::MemoryState) on a
//! single node, down to the message refusing an operation on a key that
//! holds another kind. Keys live under `<prefix>:state:<app>:`.
//!
//! `Host` calls are synchronous, Redis is not: a call made on a runtime
//! worker (a plugin callback) waits in `block_in_place`, which hands the
//! worker's other tasks to another thread first; a call from a plugin's own
//! thread waits on the runtime's handle. Either way the wait is bounded by
//! `request_timeout`.

use abi_stable::std_types::{RString, RVec};
use redis::aio::MultiplexedConnection;
use switchboard_plugin_api::abi::{StateOp, StateReply, StateRequest};

use super::{Cluster, ClusterError};

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

impl Cluster {
    /// Runs one state operation of `app` in Redis.
    ///
    /// # Errors
    /// `Unavailable` when Redis cannot be reached (or does not answer within
    /// `request_timeout`); `Refused` for an operation on a key that holds
    /// another kind, or an unknown operation.
    pub fn state(&self, app: &str, request: &StateRequest<'_>) -> Result<StateReply, ClusterError> {
        let connection = self
            .commands
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let Some(connection) = connection.filter(|_| self.is_up()) else {
            return Err(ClusterError::Unavailable);
        };
        let key = format!(
            "{}:state:{app}:{}",
            self.config.prefix,
            request.key.as_str()
        );
        self.block_on(run(connection, &key, request))
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

async fn run(
    mut connection: MultiplexedConnection,
    key: &str,
    request: &StateRequest<'_>,
) -> Result<StateReply, ClusterError> {
    let value = request.value.into_option().map(|v| v.as_str());
    let expected = request.expected.into_option().map(|v| v.as_str());
    let field = request.field.as_str();
    let limit = request.limit;
    let c = &mut connection;
    let mut reply = StateReply::default();
    let answered: redis::RedisResult<()> = async {
        match request.op {
            StateOp::GET => {
                let got: Option<String> = redis::cmd("GET").arg(key).query_async(c).await?;
                reply.value = got.map(RString::from).into();
            }
            StateOp::SET => {
                eval(SET, key)
                    .arg(value.unwrap_or_default())
                    .arg(request.ttl_ms)
                    .query_async::<i64>(c)
                    .await?;
                reply.done = true;
            }
            StateOp::SWAP => {
                let (has_expected, expected) = flag(expected);
                let (has_value, value) = flag(value);
                let done: i64 = eval(SWAP, key)
                    .arg(has_expected)
                    .arg(expected)
                    .arg(has_value)
                    .arg(value)
                    .arg(request.ttl_ms)
                    .query_async(c)
                    .await?;
                reply.done = done == 1;
            }
            StateOp::DELETE => {
                let deleted: i64 = redis::cmd("DEL").arg(key).query_async(c).await?;
                reply.done = deleted > 0;
            }
            StateOp::HASH_GET => {
                let got: Option<String> = redis::cmd("HGET")
                    .arg(key)
                    .arg(field)
                    .query_async(c)
                    .await?;
                reply.value = got.map(RString::from).into();
            }
            StateOp::HASH_SET => {
                let changed: i64 = match value {
                    Some(value) => {
                        redis::cmd("HSET")
                            .arg(key)
                            .arg(field)
                            .arg(value)
                            .query_async(c)
                            .await?
                    }
                    None => {
                        redis::cmd("HDEL")
                            .arg(key)
                            .arg(field)
                            .query_async(c)
                            .await?
                    }
                };
                reply.done = changed > 0;
            }
            StateOp::HASH_SWAP => {
                let (has_expected, expected) = flag(expected);
                let (has_value, value) = flag(value);
                let done: i64 = eval(HASH_SWAP, key)
                    .arg(field)
                    .arg(has_expected)
                    .arg(expected)
                    .arg(has_value)
                    .arg(value)
                    .query_async(c)
                    .await?;
                reply.done = done == 1;
            }
            StateOp::HASH_ALL => {
                let items: Vec<String> = redis::cmd("HGETALL").arg(key).query_async(c).await?;
                reply.items = items.into_iter().map(RString::from).collect::<RVec<_>>();
            }
            StateOp::HASH_LEN => {
                reply.count = redis::cmd("HLEN").arg(key).query_async(c).await?;
            }
            StateOp::LIST_PUSH => {
                let length: u64 = eval(LIST_PUSH, key)
                    .arg(value.unwrap_or_default())
                    .arg(limit)
                    .query_async(c)
                    .await?;
                reply.count = length;
                reply.done = true;
            }
            StateOp::LIST_RANGE => {
                let start = if limit == 0 {
                    0
                } else {
                    -i64::try_from(limit).unwrap_or(i64::MAX)
                };
                let items: Vec<String> = redis::cmd("LRANGE")
                    .arg(key)
                    .arg(start)
                    .arg(-1)
                    .query_async(c)
                    .await?;
                reply.items = items.into_iter().map(RString::from).collect::<RVec<_>>();
            }
            StateOp::LIST_REMOVE => {
                let removed: u64 = redis::cmd("LREM")
                    .arg(key)
                    .arg(0)
                    .arg(value.unwrap_or_default())
                    .query_async(c)
                    .await?;
                reply.count = removed;
                reply.done = removed > 0;
            }
            StateOp(other) => {
                return Err(redis::RedisError::from((
                    redis::ErrorKind::Client,
                    "unknown state operation",
                    other.to_string(),
                )));
            }
        }
        Ok(())
    }
    .await;
    match answered {
        Ok(()) => Ok(reply),
        Err(error) if error.to_string().contains("WRONGTYPE") => {
            Err(ClusterError::Refused(wrong_kind(c, key, request).await))
        }
        Err(error) if error.kind() == redis::ErrorKind::Client => Err(ClusterError::Refused(
            format!("unknown state operation {}", request.op.0),
        )),
        Err(error) => {
            tracing::warn!("cluster: a state operation failed: {error}");
            Err(ClusterError::Unavailable)
        }
    }
}

/// The message a single node gives for an operation on a key of another kind.
async fn wrong_kind(
    c: &mut MultiplexedConnection,
    key: &str,
    request: &StateRequest<'_>,
) -> String {
    let holds: String = redis::cmd("TYPE")
        .arg(key)
        .query_async(c)
        .await
        .unwrap_or_default();
    let holds = match holds.as_str() {
        "hash" => "a hash",
        "list" => "a list",
        "string" => "a value",
        _ => "another kind",
    };
    let wanted = match request.op {
        StateOp::HASH_GET | StateOp::HASH_SET | StateOp::HASH_SWAP | StateOp::HASH_ALL => "a hash",
        StateOp::LIST_PUSH | StateOp::LIST_RANGE | StateOp::LIST_REMOVE => "a list",
        _ => "a value",
    };
    format!(
        "state key {:?} holds {holds}, not {wanted}",
        request.key.as_str()
    )
}
