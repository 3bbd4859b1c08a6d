//! Account storage: one sqlx code path (the `Any` driver) over SQLite and PostgreSQL.
//!
//! Queries are written once with `$N` placeholders, which both backends accept; only the
//! table definition differs (id generation), so each backend has its own embedded
//! migration directory. SQLite runs in WAL mode so readers do not wait for the writer.
//!
//! The replay guard of `X-Auth` (`crate::auth::admit`) is stored here: [`Store::update`]
//! changes a row only if its guard (`last_auth_ts`, `last_auth_digests`) is still the one
//! the request was admitted against, in the same statement (compare and swap), so of two
//! concurrent updates carrying the same header and body at most one succeeds.

use std::borrow::Cow;
use std::time::{Duration, Instant};

use rmb_metrics::{HistogramVec, Registry};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, Executor, Row, SqlSafeStr};

use crate::auth::ReplayGuard;
use crate::error::Error;

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A registered twin, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub twin_id: u32,
    pub public_key: [u8; 32],
    pub relays: Vec<String>,
    pub rmb_enc_key: Option<[u8; 33]>,
    pub created_at: u64,
    pub updated_at: u64,
    /// The newest `X-Auth` timestamp accepted for this account (0: none yet), and the
    /// digests of the bodies accepted with it.
    pub auth: ReplayGuard,
}

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("this public key is already registered")]
    KeyExists,
    #[error("no twin ids left")]
    IdsExhausted,
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("stored row is invalid: {0}")]
    Corrupt(String),
}

/// What an update changes; `None` keeps the stored value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountUpdate {
    pub relays: Option<Vec<String>>,
    /// `Some(None)` removes the e2e key.
    pub rmb_enc_key: Option<Option<[u8; 33]>>,
}

/// The database. Cheap to clone (a pool handle).
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// `registrar_store_duration_seconds{op}`, once a server measures this store.
    durations: Option<HistogramVec>,
}

// One statement per shape of update, all static: the SET list is the only difference.
// $1 now, $2 new guard timestamp, $3 twin, $4/$5 the guard admitted against, $6 new
// digests, then the changed values.
const UPDATE_NONE: &str = "UPDATE accounts SET updated_at = $1, last_auth_ts = $2, last_auth_digests = $6 \
     WHERE twin_id = $3 AND last_auth_ts = $4 AND last_auth_digests = $5 \
     RETURNING twin_id, public_key, relays, rmb_enc_key, created_at, updated_at, last_auth_ts, last_auth_digests";
const UPDATE_RELAYS: &str = "UPDATE accounts SET updated_at = $1, last_auth_ts = $2, last_auth_digests = $6, relays = $7 \
     WHERE twin_id = $3 AND last_auth_ts = $4 AND last_auth_digests = $5 \
     RETURNING twin_id, public_key, relays, rmb_enc_key, created_at, updated_at, last_auth_ts, last_auth_digests";
const UPDATE_KEY: &str = "UPDATE accounts SET updated_at = $1, last_auth_ts = $2, last_auth_digests = $6, rmb_enc_key = $7 \
     WHERE twin_id = $3 AND last_auth_ts = $4 AND last_auth_digests = $5 \
     RETURNING twin_id, public_key, relays, rmb_enc_key, created_at, updated_at, last_auth_ts, last_auth_digests";
const UPDATE_BOTH: &str = "UPDATE accounts SET updated_at = $1, last_auth_ts = $2, last_auth_digests = $6, relays = $7, rmb_enc_key = $8 \
     WHERE twin_id = $3 AND last_auth_ts = $4 AND last_auth_digests = $5 \
     RETURNING twin_id, public_key, relays, rmb_enc_key, created_at, updated_at, last_auth_ts, last_auth_digests";

/// Turns the configured database into a sqlx URL: a plain path means a SQLite file,
/// created if missing.
pub fn database_url(database: &str) -> Result<(String, Backend), Error> {
    if database.starts_with("postgres://") || database.starts_with("postgresql://") {
        return Ok((database.to_string(), Backend::Postgres));
    }
    let url = if database.starts_with("sqlite:") {
        database.to_string()
    } else if database.contains("://") || database.is_empty() {
        return Err(Error::UnsupportedDatabase(database.to_string()));
    } else {
        // sqlx percent-decodes the path and splits off `?`: escape those.
        let path = database
            .replace('%', "%25")
            .replace('?', "%3F")
            .replace('#', "%23");
        format!("sqlite://{path}")
    };
    let url = if url.contains("mode=") {
        url
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    };
    Ok((url, Backend::Sqlite))
}

fn migrator(backend: Backend) -> Migrator {
    let sql = match backend {
        Backend::Sqlite => [
            include_str!("../migrations/sqlite/0001_accounts.sql"),
            include_str!("../migrations/sqlite/0002_auth_digests.sql"),
        ],
        Backend::Postgres => [
            include_str!("../migrations/postgres/0001_accounts.sql"),
            include_str!("../migrations/postgres/0002_auth_digests.sql"),
        ],
    };
    let names = ["accounts", "auth_digests"];
    Migrator::with_migrations(
        sql.into_iter()
            .zip(names)
            .zip(1..)
            .map(|((sql, name), version)| {
                Migration::new(
                    version,
                    Cow::Borrowed(name),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

impl Store {
    /// Connects (creating a SQLite file if needed) and applies the embedded migrations.
    pub async fn open(database: &str) -> Result<Store, Error> {
        sqlx::any::install_default_drivers();
        let (url, backend) = database_url(database)?;
        let db_err = |source| Error::Database {
            url: redact(&url),
            source,
        };
        let options = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(10));
        let options = match backend {
            // Readers run in parallel in WAL mode; one connection per core is enough
            // (each SQLite connection is served by its own thread).
            Backend::Sqlite => options.max_connections(4).after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    conn.execute("PRAGMA synchronous = NORMAL").await?;
                    conn.execute("PRAGMA busy_timeout = 10000").await?;
                    Ok(())
                })
            }),
            Backend::Postgres => options.max_connections(16),
        };
        let pool = options.connect(&url).await.map_err(db_err)?;
        migrator(backend)
            .run(&pool)
            .await
            .map_err(|source| Error::Migrate {
                url: redact(&url),
                source,
            })?;
        Ok(Store {
            pool,
            backend,
            durations: None,
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Closes every connection; waits until they are closed (so the file or database
    /// can be removed right after).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Registers a key; the registrar assigns the next twin id.
    pub async fn create(
        &self,
        public_key: &[u8; 32],
        relays: &[String],
        rmb_enc_key: Option<&[u8; 33]>,
        now: u64,
    ) -> Result<Account, StoreError> {
        let started = Instant::now();
        let relays_json = serde_json::to_string(relays).expect("strings serialize");
        let result = sqlx::query(
            "INSERT INTO accounts (public_key, relays, rmb_enc_key, created_at, updated_at, last_auth_ts, last_auth_digests) \
             VALUES ($1, $2, $3, $4, $4, 0, '') \
             RETURNING twin_id, public_key, relays, rmb_enc_key, created_at, updated_at, last_auth_ts, last_auth_digests",
        )
        .bind(public_key.to_vec())
        .bind(relays_json)
        .bind(rmb_enc_key.map(|k| k.to_vec()))
        .bind(to_i64(now))
        .fetch_one(&self.pool)
        .await;
        self.record("create", started);
        match result {
            Ok(row) => account_from_row(&row),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(StoreError::KeyExists),
            Err(sqlx::Error::Database(e))
                if self.backend == Backend::Postgres && e.code().as_deref() == Some("2200H") =>
            {
                // sequence reached MAXVALUE (u32::MAX)
                Err(StoreError::IdsExhausted)
            }
            Err(e) => Err(e.into()),
        }
    }

    pub async fn by_id(&self, twin_id: u32) -> Result<Option<Account>, StoreError> {
        let started = Instant::now();
        let row = sqlx::query(
            "SELECT twin_id, public_key, relays, rmb_enc_key, created_at, updated_at, last_auth_ts, last_auth_digests \
             FROM accounts WHERE twin_id = $1",
        )
        .bind(i64::from(twin_id))
        .fetch_optional(&self.pool)
        .await?;
        self.record("by_id", started);
        row.as_ref().map(account_from_row).transpose()
    }

    pub async fn by_public_key(
        &self,
        public_key: &[u8; 32],
    ) -> Result<Option<Account>, StoreError> {
        let started = Instant::now();
        let row = sqlx::query(
            "SELECT twin_id, public_key, relays, rmb_enc_key, created_at, updated_at, last_auth_ts, last_auth_digests \
             FROM accounts WHERE public_key = $1",
        )
        .bind(public_key.to_vec())
        .fetch_optional(&self.pool)
        .await?;
        self.record("by_public_key", started);
        row.as_ref().map(account_from_row).transpose()
    }

    /// Applies `update` and stores the replay guard `new`, only if the stored guard is
    /// still `admitted_against`. `None`: nothing changed (another update came first, or
    /// the twin does not exist).
    pub async fn update(
        &self,
        twin_id: u32,
        update: &AccountUpdate,
        admitted_against: &ReplayGuard,
        new: &ReplayGuard,
        now: u64,
    ) -> Result<Option<Account>, StoreError> {
        let started = Instant::now();
        let relays = update
            .relays
            .as_ref()
            .map(|r| serde_json::to_string(r).expect("strings serialize"));
        let key = update
            .rmb_enc_key
            .as_ref()
            .map(|k| k.as_ref().map(|k| k.to_vec()));
        let sql = match (&relays, &key) {
            (None, None) => UPDATE_NONE,
            (Some(_), None) => UPDATE_RELAYS,
            (None, Some(_)) => UPDATE_KEY,
            (Some(_), Some(_)) => UPDATE_BOTH,
        };
        let mut query = sqlx::query(sql)
            .bind(to_i64(now))
            .bind(to_i64(new.last_ts))
            .bind(i64::from(twin_id))
            .bind(to_i64(admitted_against.last_ts))
            .bind(admitted_against.digests.clone())
            .bind(new.digests.clone());
        if let Some(relays) = relays {
            query = query.bind(relays);
        }
        if let Some(key) = key {
            query = query.bind(key);
        }
        let row = query.fetch_optional(&self.pool).await?;
        self.record("update", started);
        row.as_ref().map(account_from_row).transpose()
    }

    /// Accounts ordered by twin id, `limit` of them after skipping `offset`.
    pub async fn list(&self, offset: u64, limit: u32) -> Result<Vec<Account>, StoreError> {
        let started = Instant::now();
        let rows = sqlx::query(
            "SELECT twin_id, public_key, relays, rmb_enc_key, created_at, updated_at, last_auth_ts, last_auth_digests \
             FROM accounts ORDER BY twin_id LIMIT $1 OFFSET $2",
        )
        .bind(i64::from(limit))
        .bind(to_i64(offset))
        .fetch_all(&self.pool)
        .await?;
        self.record("list", started);
        rows.iter().map(account_from_row).collect()
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

impl Store {
    /// This store, timing its operations in `registry`.
    pub(crate) fn measured(mut self, registry: &Registry) -> Store {
        self.durations = Some(registry.histogram_vec(
            "registrar_store_duration_seconds",
            "Time of a database operation, by operation.",
            &["op"],
            crate::metrics::BUCKETS,
        ));
        self
    }

    fn record(&self, op: &'static str, started: Instant) {
        if let Some(durations) = &self.durations {
            durations.observe(&[op], started.elapsed().as_secs_f64());
        }
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn account_from_row(row: &AnyRow) -> Result<Account, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(what.to_string());
    let twin_id: i64 = row.try_get(0)?;
    let public_key: Vec<u8> = row.try_get(1)?;
    let relays: String = row.try_get(2)?;
    let rmb_enc_key: Option<Vec<u8>> = row.try_get(3)?;
    let created_at: i64 = row.try_get(4)?;
    let updated_at: i64 = row.try_get(5)?;
    let last_auth_ts: i64 = row.try_get(6)?;
    let last_auth_digests: String = row.try_get(7)?;
    Ok(Account {
        twin_id: u32::try_from(twin_id).map_err(|_| StoreError::IdsExhausted)?,
        public_key: public_key
            .try_into()
            .map_err(|_| corrupt("public_key is not 32 bytes"))?,
        relays: serde_json::from_str(&relays).map_err(|_| corrupt("relays is not a JSON list"))?,
        rmb_enc_key: rmb_enc_key
            .map(|k| k.try_into())
            .transpose()
            .map_err(|_| corrupt("rmb_enc_key is not 33 bytes"))?,
        created_at: created_at.max(0) as u64,
        updated_at: updated_at.max(0) as u64,
        auth: ReplayGuard {
            last_ts: last_auth_ts.max(0) as u64,
            digests: last_auth_digests,
        },
    })
}

/// The URL without a password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls() {
        assert_eq!(
            database_url("rmb-registrar.db").unwrap(),
            ("sqlite://rmb-registrar.db?mode=rwc".into(), Backend::Sqlite)
        );
        assert_eq!(
            database_url("/tmp/a?b#c%d.db").unwrap().0,
            "sqlite:///tmp/a%3Fb%23c%25d.db?mode=rwc"
        );
        assert_eq!(
            database_url("sqlite://x.db?mode=ro").unwrap().0,
            "sqlite://x.db?mode=ro"
        );
        assert_eq!(
            database_url("postgres://u@h/db").unwrap(),
            ("postgres://u@h/db".into(), Backend::Postgres)
        );
        assert!(database_url("mysql://h/db").is_err());
        assert!(database_url("").is_err());
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite://x.db"), "sqlite://x.db");
    }
}
