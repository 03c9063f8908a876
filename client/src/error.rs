//! The client's error type: one variant per gRPC status a caller may want to handle, plus
//! connection and protocol failures.

use tonic::Code;

use ckpt_proto::CURRENT_HEAD_METADATA;

/// An error returned by [`Client`](crate::Client) calls.
///
/// Statuses a caller is likely to handle get their own variant; any other status is kept whole
/// in [`Error::Status`].
#[derive(thiserror::Error, Debug)]
pub enum Error {
    /// The request was malformed (bad name, bad metadata, bad key...); retrying will not help.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The checkpoint, session or branch does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The object to create exists already.
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// A write lost a race: the branch moved since the caller read its head.
    #[error("aborted: {message}")]
    Aborted {
        /// The server's explanation.
        message: String,
        /// The branch's head at the time of the conflict, from the `ckpt-current-head`
        /// response metadata, when the server sent it.
        current_head: Option<String>,
    },
    /// The system is not in a state that allows the call (e.g. deleting a branch head).
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    /// A size or rate limit was hit.
    #[error("resource exhausted: {0}")]
    ResourceExhausted(String),
    /// Stored data is missing or corrupt on the server.
    #[error("data loss: {0}")]
    DataLoss(String),
    /// The server is unreachable or overloaded; the call may be retried.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The server requires an API key and got none, a malformed one, or one that is unknown
    /// or revoked.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The API key is valid, but its role does not allow the call.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The connection to the server could not be established.
    #[error("failed to connect to the server")]
    Connect(#[source] tonic::transport::Error),
    /// Any other gRPC status.
    #[error("{}: {}", .0.code(), .0.message())]
    Status(tonic::Status),
    /// The server sent a response that breaks the protocol (missing field, truncated stream,
    /// value longer than announced...).
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl Error {
    /// The gRPC code this error stands for. Connection failures count as `Unavailable`,
    /// protocol errors as `Internal`.
    pub fn code(&self) -> Code {
        match self {
            Error::InvalidArgument(_) => Code::InvalidArgument,
            Error::NotFound(_) => Code::NotFound,
            Error::AlreadyExists(_) => Code::AlreadyExists,
            Error::Aborted { .. } => Code::Aborted,
            Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::ResourceExhausted(_) => Code::ResourceExhausted,
            Error::DataLoss(_) => Code::DataLoss,
            Error::Unavailable(_) | Error::Connect(_) => Code::Unavailable,
            Error::Unauthenticated(_) => Code::Unauthenticated,
            Error::PermissionDenied(_) => Code::PermissionDenied,
            Error::Status(status) => status.code(),
            Error::Protocol(_) => Code::Internal,
        }
    }

    /// The branch head carried by an [`Error::Aborted`], if any.
    pub fn current_head(&self) -> Option<&str> {
        match self {
            Error::Aborted { current_head, .. } => current_head.as_deref(),
            _ => None,
        }
    }
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        let message = status.message().to_owned();
        match status.code() {
            Code::InvalidArgument => Error::InvalidArgument(message),
            Code::NotFound => Error::NotFound(message),
            Code::AlreadyExists => Error::AlreadyExists(message),
            Code::Aborted => Error::Aborted {
                current_head: current_head(&status),
                message,
            },
            Code::FailedPrecondition => Error::FailedPrecondition(message),
            Code::ResourceExhausted => Error::ResourceExhausted(message),
            Code::DataLoss => Error::DataLoss(message),
            Code::Unavailable => Error::Unavailable(message),
            Code::Unauthenticated => Error::Unauthenticated(message),
            Code::PermissionDenied => Error::PermissionDenied(message),
            _ => Error::Status(status),
        }
    }
}

/// Reads the `ckpt-current-head` response metadata; absent, empty or non-ASCII means none.
fn current_head(status: &tonic::Status) -> Option<String> {
    let value = status.metadata().get(CURRENT_HEAD_METADATA)?;
    let head = value.to_str().ok()?;
    (!head.is_empty()).then(|| head.to_owned())
}

#[cfg(test)]
mod tests {
    use tonic::metadata::MetadataValue;

    use super::*;

    #[test]
    fn aborted_status_carries_current_head_from_metadata() {
        let mut status = tonic::Status::aborted("branch main moved");
        status.metadata_mut().insert(
            CURRENT_HEAD_METADATA,
            MetadataValue::from_static("0193aaaa-0000-7000-8000-000000000001"),
        );

        let err = Error::from(status);

        assert_eq!(err.code(), Code::Aborted);
        match err {
            Error::Aborted {
                message,
                current_head,
            } => {
                assert_eq!(message, "branch main moved");
                assert_eq!(
                    current_head.as_deref(),
                    Some("0193aaaa-0000-7000-8000-000000000001")
                );
            }
            other => panic!("expected Aborted, got {other:?}"),
        }
    }

    #[test]
    fn aborted_status_without_metadata_has_no_current_head() {
        let err = Error::from(tonic::Status::aborted("moved"));
        assert_eq!(err.current_head(), None);

        let mut status = tonic::Status::aborted("moved");
        status
            .metadata_mut()
            .insert(CURRENT_HEAD_METADATA, MetadataValue::from_static(""));
        assert_eq!(Error::from(status).current_head(), None);
    }

    #[test]
    fn statuses_map_to_their_variants_and_keep_their_code() {
        let cases = [
            (Code::InvalidArgument, "InvalidArgument"),
            (Code::NotFound, "NotFound"),
            (Code::AlreadyExists, "AlreadyExists"),
            (Code::FailedPrecondition, "FailedPrecondition"),
            (Code::ResourceExhausted, "ResourceExhausted"),
            (Code::DataLoss, "DataLoss"),
            (Code::Unavailable, "Unavailable"),
            (Code::Internal, "Status"),
            (Code::Unauthenticated, "Unauthenticated"),
            (Code::PermissionDenied, "PermissionDenied"),
            (Code::DeadlineExceeded, "Status"),
        ];
        for (code, variant) in cases {
            let err = Error::from(tonic::Status::new(code, "details"));
            assert_eq!(err.code(), code, "{variant}");
            assert!(
                format!("{err:?}").starts_with(variant),
                "{code:?} -> {err:?}"
            );
            assert!(err.to_string().contains("details"), "{err}");
        }
    }

    #[test]
    fn protocol_errors_report_internal() {
        assert_eq!(Error::Protocol("x".into()).code(), Code::Internal);
    }
}
