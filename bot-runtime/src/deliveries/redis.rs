//! The Redis side of the IM delivery queue: one stream all replicas read as
//! one consumer group, so each delivery goes to one replica; entries a dead
//! replica had read are claimed by another once idle past the lease.
//!
//! Keys, under `redis.key_prefix`:
//! - `deliveries`: the stream; entry field `d` is the delivery as JSON
//! - `delivery:<platform>:<id>`: the dedupe marker, `processing` (short
//!   expiry, while the delivery is being recorded), then `done` (dedupe TTL)
//! - `signature:<key>`: the message a signed callback's credentials first
//!   carried (DingTalk), until they could no longer be fresh
//!
//! The stream has no length cap: an entry leaves it only once answered
//! (or found unreadable), so a backlog is never trimmed away unanswered.
//! A Redis out of memory fails the record; the platform gets an error and
//! delivers again.

use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::streams::{StreamAutoClaimReply, StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, RedisError, Script};

use super::{Binding, Claimed, DeliveryStore, QueueError, Recorded, StoreFuture};

const GROUP: &str = "bot-runtime";

/// Step one: sets every marker to `processing:<token>` (short expiry) if
/// none exists yet; 0 = a duplicate.
const MARK: &str = r#"
for _, k in ipairs(KEYS) do
  if redis.call('EXISTS', k) == 1 then return 0 end
end
for _, k in ipairs(KEYS) do
  redis.call('SET', k, ARGV[2], 'PX', ARGV[1])
end
return 1
"#;

/// Step two: only while the markers are still this delivery's
/// `processing:<token>`, appends the entry to the stream and turns the
/// markers `done` for the dedupe TTL; 0 = not ours (nothing written).
/// KEYS: stream, markers..; ARGV: token value, payload, dedupe TTL ms.
const RECORD: &str = r#"
for i = 2, #KEYS do
  if redis.call('GET', KEYS[i]) ~= ARGV[1] then return 0 end
end
redis.call('XADD', KEYS[1], '*', 'd', ARGV[2])
for i = 2, #KEYS do
  redis.call('SET', KEYS[i], 'done', 'PX', ARGV[3])
end
return 1
"#;

/// Deletes the markers still holding `ARGV[1]` (a failed record's own).
const RELEASE: &str = r#"
local n = 0
for _, k in ipairs(KEYS) do
  if redis.call('GET', k) == ARGV[1] then n = n + redis.call('DEL', k) end
end
return n
"#;

pub struct RedisQueue {
    conn: ConnectionManager,
    /// Its own connection: a blocking read would stall every command
    /// multiplexed behind it.
    reader: ConnectionManager,
    stream: String,
    prefix: String,
    consumer: String,
    timeout: Duration,
    release: Script,
    /// The `channels` timings the [`DeliveryStore`] calls use.
    lease: Duration,
    processing_ttl: Duration,
    dedupe_ttl: Duration,
}

fn manager(
    client: &redis::Client,
    connect: Duration,
    response: Duration,
) -> redis::RedisResult<ConnectionManager> {
    let cfg = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(connect))
        .set_response_timeout(Some(response))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(500));
    ConnectionManager::new_lazy_with_config(client.clone(), cfg)
}

fn describe(e: &RedisError) -> QueueError {
    QueueError(if e.is_timeout() {
        "Redis did not answer in time".into()
    } else if e.is_connection_refusal() || e.is_connection_dropped() || e.is_io_error() {
        "Redis connection failed".into()
    } else {
        format!("Redis error ({})", e.category())
    })
}

impl RedisQueue {
    pub const BLOCK: Duration = Duration::from_millis(1000);

    pub fn new(
        url: &str,
        cfg: &clawdbot_config::RedisConfig,
        consumer: String,
    ) -> anyhow::Result<Self> {
        let client = crate::support::redis::open(url)?;
        let connect = Duration::from_millis(cfg.connect_timeout_ms);
        let timeout = Duration::from_millis(cfg.command_timeout_ms);
        Ok(Self {
            lease: Duration::ZERO,
            processing_ttl: Duration::ZERO,
            dedupe_ttl: Duration::ZERO,
            conn: manager(&client, connect, timeout)?,
            reader: manager(&client, connect, Self::BLOCK + timeout)?,
            stream: format!("{}deliveries", cfg.key_prefix),
            prefix: cfg.key_prefix.clone(),
            consumer,
            timeout,
            release: Script::new(RELEASE),
        }
        .timing(&clawdbot_config::ChannelsConfig::default()))
    }

    /// The claim lease and marker TTLs from `channels`.
    pub fn timing(mut self, cfg: &clawdbot_config::ChannelsConfig) -> Self {
        self.lease = Duration::from_secs(cfg.claim_lease_secs);
        self.processing_ttl = Duration::from_secs(cfg.processing_ttl_secs);
        self.dedupe_ttl = Duration::from_secs(cfg.dedupe_ttl_secs);
        self
    }

    fn marker(&self, key: &str) -> String {
        format!("{}delivery:{key}", self.prefix)
    }

    /// Creates the consumer group (from the stream's start, so entries
    /// written before any replica ran are read too); idempotent.
    pub async fn ensure_group(&self) -> Result<(), QueueError> {
        let mut c = self.conn.clone();
        let r: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.stream)
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut c)
            .await;
        match r {
            Ok(()) => Ok(()),
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) => Err(describe(&e)),
        }
    }

    /// Step one: the `processing` markers (atomic, short expiry); step
    /// two, the stream entry and `done` markers with the dedupe TTL, only
    /// if the markers are still this delivery's. Both steps go in one
    /// pipeline (one round trip); Redis runs each script atomically, and
    /// other clients' commands may run between them, as between any two
    /// steps. `Ok(false)`: a duplicate.
    pub async fn record(
        &self,
        keys: &[String],
        payload: &str,
        processing_ttl: Duration,
        dedupe_ttl: Duration,
    ) -> Result<bool, QueueError> {
        let markers: Vec<String> = keys.iter().map(|k| self.marker(k)).collect();
        let token = format!("processing:{:032x}", rand::random::<u128>());
        let mut pipe = redis::pipe();
        pipe.cmd("EVAL")
            .arg(MARK)
            .arg(markers.len())
            .arg(&markers)
            .arg(processing_ttl.as_millis() as u64)
            .arg(&token);
        pipe.cmd("EVAL")
            .arg(RECORD)
            .arg(markers.len() + 1)
            .arg(&self.stream)
            .arg(&markers)
            .arg(&token)
            .arg(payload)
            .arg(dedupe_ttl.as_millis() as u64);
        let mut c = self.conn.clone();
        match pipe.query_async::<(i64, i64)>(&mut c).await {
            Ok((0, _)) => Ok(false),
            Ok((_, 1)) => Ok(true),
            // Marked but not recorded (the marker expired in between).
            Ok(_) => {
                self.release_markers(&markers, &token).await;
                Err(QueueError(
                    "the delivery's marker expired before it was recorded".into(),
                ))
            }
            Err(e) => {
                // Not recorded: free the markers so the platform's retry is taken.
                self.release_markers(&markers, &token).await;
                Err(describe(&e))
            }
        }
    }

    /// Binds `key` to `message` for `ttl` unless it is bound already:
    /// whether it is bound to `message` now.
    pub async fn bind(&self, key: &str, message: &str, ttl: Duration) -> Result<bool, QueueError> {
        let mut c = self.conn.clone();
        let k = format!("{}signature:{key}", self.prefix);
        let opts = redis::SetOptions::default()
            .conditional_set(redis::ExistenceCheck::NX)
            .with_expiration(redis::SetExpiry::PX(ttl.as_millis() as u64));
        let set: Option<String> = c
            .set_options(&k, message, opts)
            .await
            .map_err(|e| describe(&e))?;
        if set.is_some() {
            return Ok(true);
        }
        let bound: Option<String> = c.get(&k).await.map_err(|e| describe(&e))?;
        Ok(bound.as_deref() == Some(message))
    }

    /// Deletes the markers that are still this delivery's `processing` ones.
    async fn release_markers(&self, markers: &[String], token: &str) {
        let mut c = self.conn.clone();
        let mut inv = self.release.prepare_invoke();
        for m in markers {
            inv.key(m);
        }
        inv.arg(token);
        let _: redis::RedisResult<i64> = inv.invoke_async(&mut c).await;
    }

    /// New entries for this replica, waiting up to [`Self::BLOCK`].
    pub async fn read_new(&self, max: usize) -> Result<Vec<Claimed>, QueueError> {
        let mut c = self.reader.clone();
        let opts = StreamReadOptions::default()
            .group(GROUP, &self.consumer)
            .count(max)
            .block(Self::BLOCK.as_millis() as usize);
        let reply: Option<StreamReadReply> = c
            .xread_options(&[&self.stream], &[">"], &opts)
            .await
            .map_err(|e| describe(&e))?;
        let mut out = Vec::new();
        for key in reply.map(|r| r.keys).unwrap_or_default() {
            for entry in key.ids {
                let payload: Option<String> = entry.get("d");
                out.push(Claimed {
                    key: entry.id,
                    payload: payload.unwrap_or_default(),
                    attempts: 1,
                });
            }
        }
        Ok(out)
    }

    /// Entries read by a replica that has not renewed them for `lease`
    /// (it died): now this replica's.
    pub async fn claim_stale(
        &self,
        lease: Duration,
        max: usize,
    ) -> Result<Vec<Claimed>, QueueError> {
        let mut c = self.conn.clone();
        let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
            .arg(&self.stream)
            .arg(GROUP)
            .arg(&self.consumer)
            .arg(lease.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(max)
            .query_async(&mut c)
            .await
            .map_err(|e| describe(&e))?;
        Ok(reply
            .claimed
            .into_iter()
            .map(|entry| Claimed {
                payload: entry.get::<String>("d").unwrap_or_default(),
                key: entry.id,
                attempts: 2,
            })
            .collect())
    }

    /// Resets the entry's idle time: the claim stays ours.
    pub async fn renew(&self, id: &str) -> Result<(), QueueError> {
        let mut c = self.conn.clone();
        redis::cmd("XCLAIM")
            .arg(&self.stream)
            .arg(GROUP)
            .arg(&self.consumer)
            .arg(0)
            .arg(id)
            .arg("JUSTID")
            .query_async::<redis::Value>(&mut c)
            .await
            .map(drop)
            .map_err(|e| describe(&e))
    }

    /// Answered: acknowledged and removed (its markers keep the dedupe).
    pub async fn finish(&self, id: &str) -> Result<(), QueueError> {
        let mut c = self.conn.clone();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("XACK")
            .arg(&self.stream)
            .arg(GROUP)
            .arg(id)
            .ignore()
            .cmd("XDEL")
            .arg(&self.stream)
            .arg(id)
            .ignore();
        pipe.query_async::<()>(&mut c)
            .await
            .map_err(|e| describe(&e))
    }

    /// Entries in the stream not yet answered (tests, diagnostics).
    #[allow(clippy::len_without_is_empty)]
    pub async fn len(&self) -> Result<u64, QueueError> {
        let mut c = self.conn.clone();
        c.xlen(&self.stream).await.map_err(|e| describe(&e))
    }

    pub fn command_timeout(&self) -> Duration {
        self.timeout
    }
}

impl DeliveryStore for RedisQueue {
    fn is_shared(&self) -> bool {
        true
    }

    fn claims_on_record(&self) -> bool {
        false
    }

    fn recovery_every(&self) -> Duration {
        self.lease / 2
    }

    fn prepare(&self) -> StoreFuture<'_, ()> {
        Box::pin(self.ensure_group())
    }

    fn record<'a>(
        &'a self,
        keys: &'a [String],
        payload: &'a str,
        _claim_here: bool,
        binding: Option<Binding<'a>>,
    ) -> StoreFuture<'a, Recorded> {
        // Every replica's workers read new entries from the stream.
        Box::pin(async move {
            if let Some(b) = binding
                && !RedisQueue::bind(self, b.key, &keys[0], b.ttl).await?
            {
                return Ok(Recorded::Replayed);
            }
            let fresh =
                RedisQueue::record(self, keys, payload, self.processing_ttl, self.dedupe_ttl)
                    .await?;
            Ok(if fresh {
                Recorded::New
            } else {
                Recorded::Duplicate
            })
        })
    }

    fn read_new(&self, max: usize) -> StoreFuture<'_, Vec<Claimed>> {
        Box::pin(RedisQueue::read_new(self, max))
    }

    fn claim_lapsed(&self, max: usize) -> StoreFuture<'_, Vec<Claimed>> {
        Box::pin(self.claim_stale(self.lease, max))
    }

    fn renew<'a>(&'a self, key: &'a str) -> StoreFuture<'a, bool> {
        // A read entry cannot be lost to another replica while renewed.
        Box::pin(async move { RedisQueue::renew(self, key).await.map(|()| true) })
    }

    fn complete<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(self.finish(key))
    }

    fn release<'a>(&'a self, _key: &'a str) -> StoreFuture<'a, ()> {
        // A read entry stays in this replica's pending list; another
        // replica claims it once idle past the lease.
        Box::pin(async { Ok(()) })
    }

    fn prune(&self) -> StoreFuture<'_, u64> {
        // Markers expire by themselves.
        Box::pin(async { Ok(0) })
    }

    fn pending(&self) -> StoreFuture<'_, u64> {
        Box::pin(self.len())
    }
}
