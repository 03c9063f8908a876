//! API keys as the catalog keeps them: a public id, the tenant and role the key acts for, and
//! a hash of its secret (never the secret). The server's auth layer and the `checkpointd keys`
//! command use this; what a key looks like on the wire is `crate::auth::key`'s business.

use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::catalog::{CatalogError, Result};

/// What a key may do. Each role includes the ones below it: admin ⊃ write ⊃ read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Reads: loads, listings, history, diffs, exports.
    Read,
    /// Reads and writes of checkpoints, branches, tags and sessions.
    Write,
    /// Everything, including deployment-wide operations (collection, verification, retention).
    Admin,
}

impl Role {
    /// The role's name as stored and as typed: `read`, `write` or `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        match text {
            "read" => Ok(Role::Read),
            "write" => Ok(Role::Write),
            "admin" => Ok(Role::Admin),
            other => Err(format!("unknown role {other:?}: use read, write or admin")),
        }
    }
}

/// A key to store: made by `crate::auth::key::generate`, which alone sees the secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewApiKey {
    pub id: String,
    pub tenant: String,
    pub role: Role,
    /// BLAKE3 of the whole key text (see `crate::auth::key`).
    pub secret_hash: [u8; 32],
    /// A note for people: who or what the key is for. May be empty.
    pub name: String,
}

/// A stored key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub id: String,
    pub tenant: String,
    pub role: Role,
    pub secret_hash: [u8; 32],
    pub name: String,
    pub created_at: DateTime<Utc>,
    /// When the key was revoked; a revoked key is refused from then on.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// The catalog's API keys. Lookups read the database every time, so a revocation made by any
/// process is seen by the next call that presents the key.
#[async_trait]
pub trait KeyStore: Send + Sync + fmt::Debug {
    /// Stores a new key; [`CatalogError::AlreadyExists`] when its id is taken.
    async fn create_key(&self, key: NewApiKey) -> Result<ApiKeyRecord>;

    /// The key with this id, revoked or not.
    async fn key(&self, id: &str) -> Result<Option<ApiKeyRecord>>;

    /// Every key, revoked ones included, oldest first.
    async fn list_keys(&self) -> Result<Vec<ApiKeyRecord>>;

    /// Revokes a key and returns it; revoking a revoked key keeps its first revocation time.
    /// [`CatalogError::NotFound`] when no key has this id.
    async fn revoke_key(&self, id: &str) -> Result<ApiKeyRecord>;
}

/// A stored role or hash, checked.
pub(crate) fn parse_key_row(role: &str, hash: &[u8], id: &str) -> Result<(Role, [u8; 32])> {
    let role = role
        .parse()
        .map_err(|e| CatalogError::Internal(format!("api key {id}: {e}")))?;
    let hash = hash
        .try_into()
        .map_err(|_| CatalogError::Internal(format!("api key {id}: malformed hash")))?;
    Ok((role, hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_from_their_names_and_order_by_power() {
        for role in [Role::Read, Role::Write, Role::Admin] {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert!("owner".parse::<Role>().is_err());
        assert!(Role::Read < Role::Write && Role::Write < Role::Admin);
    }
}
