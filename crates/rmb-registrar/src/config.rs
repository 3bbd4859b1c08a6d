//! Server configuration, shared by the binary's flags and in-process users (tests, `rmb up`).

use std::time::Duration;

/// The database used when none is given: a SQLite file in the current directory.
pub const DEFAULT_DATABASE: &str = "rmb-registrar.db";
/// Default accepted distance between a signed timestamp and the server clock.
pub const DEFAULT_TIME_WINDOW: Duration = Duration::from_secs(30);
/// Default request body limit; an account update is well under 1 KiB.
pub const DEFAULT_MAX_BODY: usize = 16 * 1024;

/// How a registrar server runs. The listen address is not here: [`crate::serve`] takes
/// a bound listener.
#[derive(Debug, Clone)]
pub struct Config {
    /// `postgres://...` / `postgresql://...` for PostgreSQL; `sqlite://path` or a plain
    /// file path for SQLite (created and migrated if missing).
    pub database: String,
    /// Signed timestamps (account creation, `X-Auth`) are accepted this far from now,
    /// in both directions. Whole seconds.
    pub time_window: Duration,
    /// Request bodies larger than this are refused with 413.
    pub max_body: usize,
    /// Connection cap and HTTP timeouts (slow or silent clients are cut off).
    pub http: rmb_http::ServeLimits,
}

impl Config {
    /// Defaults for everything except the database.
    pub fn new(database: impl Into<String>) -> Self {
        Config {
            database: database.into(),
            time_window: DEFAULT_TIME_WINDOW,
            max_body: DEFAULT_MAX_BODY,
            http: rmb_http::ServeLimits::default(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::new(DEFAULT_DATABASE)
    }
}
