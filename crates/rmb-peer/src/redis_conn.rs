//! A Redis connection that reconnects, and a retry loop with capped backoff.

use std::future::Future;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisResult};
use tokio_util::sync::CancellationToken;

/// Longest a command (other than a blocking pop's own wait) may take.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// One lazily (re)opened connection. Blocking pops get their own, so they never hold
/// up other commands.
pub struct Redis {
    client: redis::Client,
    conn: Option<MultiplexedConnection>,
}

impl Redis {
    pub fn new(url: &str) -> RedisResult<Self> {
        Ok(Redis {
            client: redis::Client::open(url)?,
            conn: None,
        })
    }

    /// The open connection, connecting first if needed.
    pub async fn conn(&mut self) -> RedisResult<MultiplexedConnection> {
        if let Some(conn) = &self.conn {
            return Ok(conn.clone());
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(CONNECT_TIMEOUT)
            .set_response_timeout(RESPONSE_TIMEOUT);
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

/// Backoff between Redis retries.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub min: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            min: Duration::from_millis(100),
            max: Duration::from_secs(5),
        }
    }
}

/// Runs `op` until it succeeds, reconnecting and backing off between failures;
/// `on_error` sees every failure. `None` only when cancelled.
pub async fn retry<T, F, Fut>(
    redis: &mut Redis,
    backoff: Backoff,
    cancel: &CancellationToken,
    what: &str,
    mut on_error: impl FnMut(),
    mut op: F,
) -> Option<T>
where
    F: FnMut(MultiplexedConnection) -> Fut,
    Fut: Future<Output = RedisResult<T>>,
{
    let mut delay = backoff.min;
    let mut failures = 0u32;
    loop {
        if cancel.is_cancelled() {
            return None;
        }
        let result = match redis.conn().await {
            Ok(conn) => op(conn).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(value) => {
                if failures > 0 {
                    tracing::info!("redis is back: {what} done after {failures} failures");
                }
                return Some(value);
            }
            Err(e) => {
                redis.reset();
                on_error();
                failures += 1;
                if failures == 1 || failures % 20 == 0 {
                    tracing::warn!("redis: {what} failed ({e}); retrying");
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = cancel.cancelled() => return None,
        }
        delay = (delay * 2).min(backoff.max);
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

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
}
