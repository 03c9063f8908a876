//! Authentication and authorization: API keys (`key`), the tower layer that checks one on
//! every call and the role each RPC needs (`layer`), and the per-tenant rate limit (`rate`).
//!
//! The layer stands between the server's protection layers and the router (see
//! `server::start`); handlers find the caller's [`Principal`] in the request's extensions.
//! Health checks and reflection need no key.

pub mod key;
pub mod layer;
pub mod rate;

pub use self::layer::{AuthLayer, required_role};
pub use self::rate::{RateLimit, RateLimiter};
pub use crate::catalog::Role;

/// Who is calling: the key that authenticated the call, the tenant it belongs to and its
/// role. Put into every authenticated request's extensions; absent when auth is off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub key_id: String,
    pub tenant: String,
    pub role: Role,
}

impl Principal {
    /// The caller of `request`; `None` when the server runs without authentication.
    /// TODO: nothing reads it yet; scoping sessions by tenant starts here.
    pub fn of<T>(request: &tonic::Request<T>) -> Option<&Principal> {
        request.extensions().get::<Principal>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handlers_find_the_principal_the_layer_put_into_the_http_request() {
        let principal = Principal {
            key_id: "0123456789abcdef".into(),
            tenant: "acme".into(),
            role: Role::Write,
        };
        let mut http = http::Request::new(());
        http.extensions_mut().insert(principal.clone());
        let request = tonic::Request::from_http(http);
        assert_eq!(Principal::of(&request), Some(&principal));
        assert_eq!(Principal::of(&tonic::Request::new(())), None);
    }
}
