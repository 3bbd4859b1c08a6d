//! Errors of starting and running a registrar server.

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database {url:?}: {source}")]
    Database {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("migrating database {url:?}: {source}")]
    Migrate {
        url: String,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    #[error("unsupported database {0:?}: use postgres://..., sqlite://path or a file path")]
    UnsupportedDatabase(String),
    #[error("server I/O: {0}")]
    Io(#[from] std::io::Error),
}
