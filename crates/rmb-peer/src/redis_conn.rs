//! A Redis connection that reconnects, which failures are worth retrying, and a retry
//! loop with capped backoff.

use std::future::Future;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ErrorKind, RedisError, RedisResult};
use tokio_util::sync::CancellationToken;

/// How long to wait for Redis, and between retries.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub min: Duration,
    pub max: Duration,
    /// Longest a command (other than a blocking pop's own wait) may take before the
    /// connection is given up and the command retried on a new one.
    pub response_timeout: Duration,
    pub connect_timeout: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            min: Duration::from_millis(100),
            max: Duration::from_secs(5),
            response_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(3),
        }
    }
}

/// One lazily (re)opened connection. Blocking moves get their own, so they never hold
/// up other commands.
pub struct Redis {
    client: redis::Client,
    conn: Option<MultiplexedConnection>,
    backoff: Backoff,
}

impl Redis {
    pub fn new(url: &str, backoff: Backoff) -> RedisResult<Self> {
        Ok(Redis {
            client: redis::Client::open(url)?,
            conn: None,
            backoff,
        })
    }

    /// The open connection, connecting first if needed. `blocking` is how long the
    /// commands sent on it may block on purpose (a `BLMOVE` timeout), added to the
    /// response timeout.
    pub async fn conn(&mut self, blocking: Duration) -> RedisResult<MultiplexedConnection> {
        if let Some(conn) = &self.conn {
            return Ok(conn.clone());
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(self.backoff.connect_timeout)
            .set_response_timeout(self.backoff.response_timeout + blocking);
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        self.conn = Some(conn.clone());
        Ok(conn)
    }

    /// Forgets the connection after an error (the next use reconnects).
    pub fn reset(&mut self) {
        self.conn = None;
    }

    pub fn backoff(&self) -> Backoff {
        self.backoff
    }
}

/// Whether `e` may go away by itself (Redis down, restarting, loading its data, a
/// connection dropped or slow), so the same command is worth sending again. Anything
/// else (WRONGTYPE, OOM, a script error, a bad argument) would fail the same way every
/// time: retrying it forever would wedge whatever waits behind it.
pub fn is_transient(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || matches!(
            e.kind(),
            ErrorKind::BusyLoadingError
                | ErrorKind::TryAgain
                | ErrorKind::MasterDown
                | ErrorKind::ClusterDown
                | ErrorKind::ReadOnly
        )
}

/// Why [`retry`] stopped without a result.
#[derive(Debug)]
pub enum Stop {
    /// The peer is shutting down.
    Cancelled,
    /// A failure that retrying would not cure.
    Permanent(RedisError),
}

/// Runs `op` until it succeeds, reconnecting and backing off between transient
/// failures; `on_error` sees every failure. Stops at the first permanent failure.
pub async fn retry<T, F, Fut>(
    redis: &mut Redis,
    cancel: &CancellationToken,
    what: &str,
    blocking: Duration,
    mut on_error: impl FnMut(),
    mut op: F,
) -> Result<T, Stop>
where
    F: FnMut(MultiplexedConnection) -> Fut,
    Fut: Future<Output = RedisResult<T>>,
{
    let backoff = redis.backoff();
    let mut delay = backoff.min;
    let mut failures = 0u32;
    loop {
        if cancel.is_cancelled() {
            return Err(Stop::Cancelled);
        }
        let result = match redis.conn(blocking).await {
            Ok(conn) => op(conn).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(value) => {
                if failures > 0 {
                    tracing::info!("redis is back: {what} done after {failures} failures");
                }
                return Ok(value);
            }
            Err(e) => {
                on_error();
                if !is_transient(&e) {
                    tracing::warn!("redis: {what} failed for good: {e}");
                    return Err(Stop::Permanent(e));
                }
                redis.reset();
                failures += 1;
                if failures == 1 || failures % 20 == 0 {
                    tracing::warn!("redis: {what} failed ({e}); retrying");
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = cancel.cancelled() => return Err(Stop::Cancelled),
        }
        delay = (delay * 2).min(backoff.max);
    }
}

/// `url` with its password (and user name) replaced by `***`, for logs and errors: a
/// Redis URL may carry credentials (`redis://:secret@host:6379`). Anything that does
/// not parse as a URL is hidden whole.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "***".into();
    };
    // The authority ends at the first '/', '?' or '#'; credentials end at its last '@'.
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    // A query may carry a password too (`?password=...`).
    let path = match path.split_once('?') {
        Some((path, _)) => format!("{path}?***"),
        None => path.to_string(),
    };
    match authority.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://***@{host}{path}"),
        None => format!("{scheme}://{authority}{path}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_reach_the_logs() {
        assert_eq!(
            redact_url("redis://:hunter2@10.0.0.1:6379/0"),
            "redis://***@10.0.0.1:6379/0"
        );
        assert_eq!(
            redact_url("rediss://user:p%40ss@host/"),
            "rediss://***@host/"
        );
        assert_eq!(redact_url("redis://a:b@c@host"), "redis://***@host");
        assert_eq!(
            redact_url("redis://localhost:6379"),
            "redis://localhost:6379"
        );
        assert_eq!(
            redact_url("unix:///run/redis.sock"),
            "unix:///run/redis.sock"
        );
        assert_eq!(
            redact_url("redis://host/0?password=hunter2"),
            "redis://host/0?***"
        );
        assert_eq!(redact_url("hunter2"), "***");
    }

    #[test]
    fn only_failures_that_can_pass_are_transient() {
        let server = |kind, text: &'static str| RedisError::from((kind, text));
        assert!(!is_transient(&server(ErrorKind::TypeError, "WRONGTYPE")));
        assert!(!is_transient(&server(ErrorKind::ResponseError, "ERR")));
        assert!(is_transient(&server(
            ErrorKind::BusyLoadingError,
            "LOADING"
        )));
        let io = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(is_transient(&io));
    }
}
