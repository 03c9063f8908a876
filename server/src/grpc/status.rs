//! Engine errors as gRPC statuses, in one place. Storage detail goes to the log, never into a
//! status message.

use tonic::Status;
use tonic::metadata::MetadataValue;
use tracing::{error, warn};

use crate::core::EngineError;

impl From<EngineError> for Status {
    fn from(err: EngineError) -> Self {
        match err {
            EngineError::InvalidArgument { field, reason } => {
                Status::invalid_argument(format!("{field}: {reason}"))
            }
            EngineError::NotFound(what) => Status::not_found(format!("{what} not found")),
            EngineError::HeadMoved { branch, current } => {
                let head = current.map(|c| c.to_string());
                let mut status = Status::aborted(format!(
                    "branch {branch} has moved: its head is {}; retry with that parent",
                    head.as_deref().unwrap_or("empty")
                ));
                if let Some(head) = head
                    && let Ok(value) = MetadataValue::try_from(head.as_str())
                {
                    status
                        .metadata_mut()
                        .insert(ckpt_proto::CURRENT_HEAD_METADATA, value);
                }
                status
            }
            EngineError::AlreadyExists(what) => Status::already_exists(what),
            EngineError::FailedPrecondition(why) => Status::failed_precondition(why),
            EngineError::Aborted(why) => Status::aborted(why),
            EngineError::ResourceExhausted(why) => Status::resource_exhausted(why),
            EngineError::DataLoss(why) => {
                error!(error = %why, "stored data is missing or damaged");
                Status::data_loss(why)
            }
            EngineError::Unavailable(why) => {
                warn!(error = %why, "storage unavailable");
                Status::unavailable("storage is unavailable; retry later")
            }
            EngineError::Internal(why) => {
                error!(error = %why, "internal error");
                Status::internal("internal error")
            }
        }
    }
}

/// tonic reports a message over the decoding limit as OUT_OF_RANGE; gRPC's convention, and
/// our contract, is RESOURCE_EXHAUSTED.
pub(crate) fn too_large_is_exhausted(status: Status) -> Status {
    if status.code() == tonic::Code::OutOfRange
        && status.message().contains("message length too large")
    {
        return Status::resource_exhausted(status.message().to_owned());
    }
    status
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    #[test]
    fn head_moved_carries_the_current_head() {
        let head = Uuid::now_v7();
        let status = Status::from(EngineError::HeadMoved {
            branch: "main".into(),
            current: Some(head),
        });
        assert_eq!(status.code(), tonic::Code::Aborted);
        let sent = status
            .metadata()
            .get(ckpt_proto::CURRENT_HEAD_METADATA)
            .unwrap();
        assert_eq!(sent.to_str().unwrap(), head.to_string());
    }

    #[test]
    fn internal_detail_is_not_leaked() {
        let status = Status::from(EngineError::Internal(
            "duplicate key violates \"chunks_pkey\"".into(),
        ));
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(!status.message().contains("chunks_pkey"));
    }
}
