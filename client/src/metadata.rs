//! What travels with every call besides the request: the caller's trace context and, when
//! the client has one, its API key as `authorization: Bearer <key>`.

use std::fmt;

use tonic::metadata::AsciiMetadataValue;
use tonic::service::Interceptor;

use crate::Error;
use crate::trace::TraceContext;

/// Adds the trace context and the API key to each outgoing request.
#[derive(Clone, Default)]
pub(crate) struct Outgoing {
    authorization: Option<AsciiMetadataValue>,
}

impl Outgoing {
    /// Sends `key` with every call; refused when it cannot be metadata (not visible ASCII).
    pub(crate) fn with_api_key(key: &str) -> Result<Self, Error> {
        let key = key.trim();
        // HTTP accepts some bytes above ASCII in a header value; no key has them.
        let invalid = || Error::InvalidArgument("api key: must be printable ASCII".into());
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid());
        }
        let mut value =
            AsciiMetadataValue::try_from(format!("Bearer {key}")).map_err(|_| invalid())?;
        // Kept out of Debug output and, where HTTP/2 honours it, out of header compression.
        value.set_sensitive(true);
        Ok(Self {
            authorization: Some(value),
        })
    }
}

impl fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outgoing")
            .field(
                "api_key",
                &self.authorization.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl Interceptor for Outgoing {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let mut request = TraceContext.call(request)?;
        if let Some(value) = &self.authorization {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_travels_as_a_bearer_token_and_stays_out_of_debug() {
        let mut outgoing = Outgoing::with_api_key("ckpt_0123_secret").unwrap();
        let request = outgoing.call(tonic::Request::new(())).unwrap();
        assert_eq!(
            request.metadata().get("authorization").unwrap(),
            "Bearer ckpt_0123_secret"
        );
        assert!(!format!("{outgoing:?}").contains("secret"));

        let request = Outgoing::default().call(tonic::Request::new(())).unwrap();
        assert!(request.metadata().get("authorization").is_none());
        assert!(Outgoing::with_api_key("ckpt_é").is_err());
        assert!(Outgoing::with_api_key("ckpt_a b").is_err());
        assert!(
            Outgoing::with_api_key("ckpt_a\n").is_ok(),
            "surrounding space is trimmed"
        );
    }
}
