//! [`AuthLayer`]: checks the API key of every call against the catalog, refuses what the key's
//! role does not allow, applies the tenant's rate limit, and hands the handlers a
//! [`Principal`].
//!
//! A key is looked up in the catalog on every call, with no cache: a revocation made by any
//! process (`checkpointd keys revoke` included) is refused by the next call. On PostgreSQL the
//! lookup is one primary-key read; on SQLite one read on a local file.
//! TODO: a cache invalidated by LISTEN/NOTIFY would save that read where it matters.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{HeaderMap, Request, Response};
use tonic::Status;
use tonic::body::Body;
use tower::{Layer, Service};
use tracing::{debug, warn};

use super::rate::RateLimiter;
use super::{Principal, Role, key};
use crate::catalog::{CatalogError, KeyStore};
use crate::middleware::is_exempt;

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'static>>;

/// The path prefix of the API's methods.
const SERVICE_PREFIX: &str = "/ckpt.v1.CheckpointService/";

/// The role each method of `ckpt.v1.CheckpointService` needs. A method missing here needs
/// admin, and a unit test fails until it is listed: a new RPC adds one line.
///
/// - read: everything that only looks, exports included (an export reveals no more than reads).
/// - write: everything that changes a session's checkpoints, branches, tags or the session
///   itself: deleting a checkpoint or a whole session is part of a writer's work.
/// - admin: what acts on the deployment rather than on one session's data: collection
///   (deletes across every session), verification (reads every blob, may delete orphans) and
///   retention policies (decide what collection deletes).
const ROLES: &[(&str, Role)] = &[
    ("CreateCheckpoint", Role::Write),
    ("UploadCheckpoint", Role::Write),
    ("GetCheckpoint", Role::Read),
    ("ReadState", Role::Read),
    ("ListCheckpoints", Role::Read),
    ("ListSessions", Role::Read),
    ("GetSession", Role::Read),
    ("DeleteCheckpoint", Role::Write),
    ("DeleteSession", Role::Write),
    ("ExportSession", Role::Read),
    ("ImportSession", Role::Write),
    ("CreateBranch", Role::Write),
    ("GetBranch", Role::Read),
    ("ListBranches", Role::Read),
    ("DeleteBranch", Role::Write),
    ("ResetBranch", Role::Write),
    ("ListRefLog", Role::Read),
    ("ForkSession", Role::Write),
    ("SetTag", Role::Write),
    ("DeleteTag", Role::Write),
    ("ListTags", Role::Read),
    ("GetHistory", Role::Read),
    ("IsAncestor", Role::Read),
    ("GetMergeBase", Role::Read),
    ("Diff", Role::Read),
    ("Merge", Role::Write),
    ("Search", Role::Read),
    ("SetRetentionPolicy", Role::Admin),
    ("GetRetentionPolicy", Role::Read),
    ("Collect", Role::Admin),
    ("Verify", Role::Admin),
    ("Watch", Role::Read),
    ("AcquireLease", Role::Write),
    ("RenewLease", Role::Write),
    ("ReleaseLease", Role::Write),
];

/// The role a call to `path` (`/package.Service/Method`) needs: the table's for the API's
/// methods, admin for anything else that is not exempt.
pub fn required_role(path: &str) -> Role {
    path.strip_prefix(SERVICE_PREFIX)
        .and_then(|method| ROLES.iter().find(|(name, _)| *name == method))
        .map_or(Role::Admin, |(_, role)| *role)
}

/// Builds [`Auth`] services. [`AuthLayer::off`] passes every call through.
#[derive(Clone, Debug, Default)]
pub struct AuthLayer {
    shared: Option<Arc<Shared>>,
}

#[derive(Debug)]
struct Shared {
    keys: Arc<dyn KeyStore>,
    limiter: Option<RateLimiter>,
}

impl AuthLayer {
    /// Requires a valid key on every call that is not exempt; with a `limiter`, also holds
    /// each tenant to its rate.
    pub fn required(keys: Arc<dyn KeyStore>, limiter: Option<RateLimiter>) -> Self {
        Self {
            shared: Some(Arc::new(Shared { keys, limiter })),
        }
    }

    /// No authentication: every call passes, with no [`Principal`].
    pub fn off() -> Self {
        Self::default()
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Auth {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// See [`AuthLayer`].
#[derive(Clone, Debug)]
pub struct Auth<S> {
    inner: S,
    shared: Option<Arc<Shared>>,
}

impl<S, B> Service<Request<B>> for Auth<S>
where
    S: Service<Request<B>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Response<Body>, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let Some(shared) = self.shared.clone() else {
            return Box::pin(self.inner.call(request));
        };
        if is_exempt(&request) {
            return Box::pin(self.inner.call(request));
        }
        // The service polled ready is the one that must serve the call; leave a clone behind.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let needed = required_role(request.uri().path());
            match shared
                .admit(request.headers(), request.uri().path(), needed)
                .await
            {
                Ok(principal) => {
                    request.extensions_mut().insert(principal);
                    inner.call(request).await
                }
                Err(refusal) => Ok(refusal.into_http()),
            }
        })
    }
}

impl Shared {
    /// The caller behind the call's key, if the key is valid, allows `needed` and is within
    /// its tenant's rate.
    async fn admit(
        &self,
        headers: &HeaderMap,
        path: &str,
        needed: Role,
    ) -> Result<Principal, Status> {
        let principal = self.authenticate(headers).await?;
        if principal.role < needed {
            debug!(key = %principal.key_id, role = %principal.role, %needed, path, "call refused: role too low");
            return Err(Status::permission_denied(format!(
                "API key {} has role {}; {} needs {needed}",
                principal.key_id,
                principal.role,
                method_name(path)
            )));
        }
        if let Some(limiter) = &self.limiter
            && let Err(wait) = limiter.admit(&principal.tenant, Instant::now())
        {
            let limit = limiter.limit();
            debug!(tenant = %principal.tenant, "call refused: over the rate limit");
            return Err(Status::resource_exhausted(format!(
                "tenant {} is over its request rate limit of {} calls/s (burst {}); retry in {} ms",
                principal.tenant,
                limit.per_second,
                limit.burst,
                wait.as_millis().max(1)
            )));
        }
        Ok(principal)
    }

    /// The key the call presents, checked against the catalog.
    async fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, Status> {
        let text = bearer_token(headers)?;
        let Some(id) = key::key_id(text) else {
            debug!("call refused: malformed API key");
            return Err(Status::unauthenticated(
                "malformed API key: expected ckpt_<id>_<secret> as `authorization: Bearer <key>`",
            ));
        };
        let record = match self.keys.key(id).await {
            Ok(record) => record,
            Err(err) => return Err(lookup_failed(err, id)),
        };
        let valid = record
            .as_ref()
            .filter(|r| r.revoked_at.is_none() && key::matches(text, &r.secret_hash));
        let Some(record) = valid else {
            debug!(key = id, "call refused: unknown, revoked or wrong API key");
            return Err(Status::unauthenticated(format!(
                "API key {id} is unknown or revoked"
            )));
        };
        Ok(Principal {
            key_id: record.id.clone(),
            tenant: record.tenant.clone(),
            role: record.role,
        })
    }
}

/// The key in `authorization: Bearer <key>`.
fn bearer_token(headers: &HeaderMap) -> Result<&str, Status> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Err(Status::unauthenticated(
            "this server requires an API key: send `authorization: Bearer <key>`",
        ));
    };
    let value = value.to_str().unwrap_or_default().trim();
    let token = value
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    token.ok_or_else(|| {
        Status::unauthenticated("the authorization metadata must read `Bearer <key>`")
    })
}

fn lookup_failed(err: CatalogError, id: &str) -> Status {
    warn!(error = %err, key = id, "failed to look up an API key");
    match err {
        CatalogError::Unavailable(_) => {
            Status::unavailable("cannot check the API key right now; retry")
        }
        _ => Status::internal("failed to check the API key"),
    }
}

/// `CreateCheckpoint` for `/ckpt.v1.CheckpointService/CreateCheckpoint`.
fn method_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn every_method_of_the_api_has_a_role_and_every_listed_one_exists() {
        let set = prost_types::FileDescriptorSet::decode(ckpt_proto::FILE_DESCRIPTOR_SET).unwrap();
        let methods: Vec<String> = set
            .file
            .iter()
            .filter(|file| file.package() == "ckpt.v1")
            .flat_map(|file| &file.service)
            .filter(|service| service.name() == "CheckpointService")
            .flat_map(|service| &service.method)
            .map(|method| method.name().to_owned())
            .collect();
        for method in &methods {
            assert!(
                ROLES.iter().any(|(name, _)| name == method),
                "{method} has no role in auth::layer::ROLES"
            );
        }
        for &(name, _) in ROLES {
            assert!(methods.iter().any(|m| m == name), "{name} is not a method");
        }
    }

    #[test]
    fn unknown_paths_need_admin() {
        assert_eq!(
            required_role("/ckpt.v1.CheckpointService/GetCheckpoint"),
            Role::Read
        );
        assert_eq!(
            required_role("/ckpt.v1.CheckpointService/Collect"),
            Role::Admin
        );
        assert_eq!(
            required_role("/ckpt.v1.CheckpointService/Nope"),
            Role::Admin
        );
        assert_eq!(required_role("/other.Service/GetCheckpoint"), Role::Admin);
    }

    #[test]
    fn the_bearer_scheme_is_read_case_insensitively() {
        let mut headers = HeaderMap::new();
        assert_eq!(
            bearer_token(&headers).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        headers.insert("authorization", "bearer  ckpt_x ".parse().unwrap());
        assert_eq!(bearer_token(&headers).unwrap(), "ckpt_x");
        headers.insert("authorization", "Basic abc".parse().unwrap());
        assert!(bearer_token(&headers).is_err());
        headers.insert("authorization", "ckpt_x".parse().unwrap());
        assert!(bearer_token(&headers).is_err());
    }
}
