-- API keys: the same table as migrations/postgres, in SQLite's dialect (times in microseconds
-- since the epoch, as elsewhere in this catalog).
CREATE TABLE api_keys (
    id          TEXT    PRIMARY KEY,
    tenant      TEXT    NOT NULL,
    role        TEXT    NOT NULL CHECK (role IN ('read', 'write', 'admin')),
    secret_hash BLOB    NOT NULL CHECK (length(secret_hash) = 32),
    name        TEXT    NOT NULL DEFAULT '',
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);

CREATE INDEX api_keys_by_tenant ON api_keys (tenant);
