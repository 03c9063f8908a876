//! API keys in SQLite. Lookups go through the read pool: under WAL each read transaction sees
//! every commit made before it began, by this process or by `checkpointd keys` in another.

use async_trait::async_trait;

use super::SqliteCatalog;
use super::rows::{classify, from_micros, now_micros};
use crate::catalog::keys::{ApiKeyRecord, KeyStore, NewApiKey, parse_key_row};
use crate::catalog::{CatalogError, Result};

const KEY_COLUMNS: &str = "id, tenant, role, secret_hash, name, created_at, revoked_at";

#[derive(sqlx::FromRow)]
struct ApiKeyRow {
    id: String,
    tenant: String,
    role: String,
    secret_hash: Vec<u8>,
    name: String,
    created_at: i64,
    revoked_at: Option<i64>,
}

impl TryFrom<ApiKeyRow> for ApiKeyRecord {
    type Error = CatalogError;

    fn try_from(row: ApiKeyRow) -> Result<Self> {
        let (role, secret_hash) = parse_key_row(&row.role, &row.secret_hash, &row.id)?;
        Ok(ApiKeyRecord {
            id: row.id,
            tenant: row.tenant,
            role,
            secret_hash,
            name: row.name,
            created_at: from_micros(row.created_at),
            revoked_at: row.revoked_at.map(from_micros),
        })
    }
}

#[async_trait]
impl KeyStore for SqliteCatalog {
    async fn create_key(&self, key: NewApiKey) -> Result<ApiKeyRecord> {
        let sql = format!(
            "INSERT INTO api_keys (id, tenant, role, secret_hash, name, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING {KEY_COLUMNS}"
        );
        let row: ApiKeyRow = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(&key.id)
            .bind(&key.tenant)
            .bind(key.role.as_str())
            .bind(key.secret_hash.as_slice())
            .bind(&key.name)
            .bind(now_micros())
            .fetch_one(&self.writer)
            .await
            .map_err(|err| match &err {
                sqlx::Error::Database(db) if db.is_unique_violation() => {
                    CatalogError::AlreadyExists(format!("api key {} exists", key.id))
                }
                _ => classify(err),
            })?;
        row.try_into()
    }

    async fn key(&self, id: &str) -> Result<Option<ApiKeyRecord>> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ?1");
        let row: Option<ApiKeyRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.reader)
            .await
            .map_err(classify)?;
        row.map(TryInto::try_into).transpose()
    }

    async fn list_keys(&self) -> Result<Vec<ApiKeyRecord>> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at, id");
        let rows: Vec<ApiKeyRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.reader)
            .await
            .map_err(classify)?;
        rows.into_iter().map(TryInto::try_into).collect()
    }

    async fn revoke_key(&self, id: &str) -> Result<ApiKeyRecord> {
        let sql = format!(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1 \
             RETURNING {KEY_COLUMNS}"
        );
        let row: Option<ApiKeyRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(now_micros())
            .fetch_optional(&self.writer)
            .await
            .map_err(classify)?;
        row.ok_or_else(|| CatalogError::NotFound(format!("api key {id}")))?
            .try_into()
    }
}
