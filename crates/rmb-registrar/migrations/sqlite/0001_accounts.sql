-- Twins. AUTOINCREMENT: ids start at 1 and are never reused.
CREATE TABLE accounts (
    twin_id      INTEGER PRIMARY KEY AUTOINCREMENT,
    public_key   BLOB    NOT NULL UNIQUE CHECK (length(public_key) = 32),
    relays       TEXT    NOT NULL,              -- JSON array of "host[:port]"
    rmb_enc_key  BLOB    CHECK (rmb_enc_key IS NULL OR length(rmb_enc_key) = 33),
    created_at   INTEGER NOT NULL,              -- unix seconds
    updated_at   INTEGER NOT NULL,
    last_auth_ts INTEGER NOT NULL DEFAULT 0     -- newest accepted X-Auth timestamp
);
