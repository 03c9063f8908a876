-- API keys. A key reads `ckpt_<id>_<secret>`: the id is public (it names the key in logs and
-- in `checkpointd keys list`), the secret is 256 random bits of which only a BLAKE3 hash is
-- kept. Each key belongs to one tenant and carries one role. A revoked key stays listed, with
-- the time it was revoked, and is refused from then on.
CREATE TABLE api_keys (
    id          TEXT        PRIMARY KEY,
    tenant      TEXT        NOT NULL,
    role        TEXT        NOT NULL CHECK (role IN ('read', 'write', 'admin')),
    secret_hash BYTEA       NOT NULL CHECK (octet_length(secret_hash) = 32),
    name        TEXT        NOT NULL DEFAULT '',
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    revoked_at  TIMESTAMPTZ
);

CREATE INDEX api_keys_by_tenant ON api_keys (tenant);
