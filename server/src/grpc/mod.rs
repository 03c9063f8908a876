//! The `ckpt.v1.CheckpointService` handlers: take the request apart, call the engine, map the
//! outcome to a response or a status.

mod convert;
mod feed;
mod gc;
mod refs;
mod state;
mod status;

use std::pin::Pin;
use std::sync::Arc;

use ckpt_proto::v1::checkpoint_service_server::CheckpointService;
use ckpt_proto::v1::{
    self, change, read_state_request, read_state_response, upload_checkpoint_request,
};
use futures::Stream;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, instrument};

use self::status::too_large_is_exhausted;
use crate::core::{
    CheckpointWriter, CreateHeader, Engine, EngineError, Mode, ReadFilter, ReadTarget, validate,
};

/// Page size when a list request names none.
const DEFAULT_PAGE_SIZE: u32 = 100;
/// Largest page a list returns.
const MAX_PAGE_SIZE: u32 = 1000;

/// The gRPC face of the engine.
#[derive(Debug, Clone)]
pub struct CheckpointApi {
    engine: Arc<Engine>,
    watches: Arc<tokio::sync::Semaphore>,
}

impl CheckpointApi {
    pub fn new(engine: Arc<Engine>) -> Self {
        Self {
            engine,
            watches: feed::watch_permits(),
        }
    }
}

type StateStream = Pin<Box<dyn Stream<Item = Result<v1::ReadStateResponse, Status>> + Send>>;
type BundleStream = Pin<Box<dyn Stream<Item = Result<v1::BundleData, Status>> + Send>>;

#[tonic::async_trait]
impl CheckpointService for CheckpointApi {
    #[instrument(name = "checkpoint.create", skip_all, fields(session = %request.get_ref().session_id))]
    async fn create_checkpoint(
        &self,
        request: Request<v1::CreateCheckpointRequest>,
    ) -> Result<Response<v1::CreateCheckpointResponse>, Status> {
        let req = request.into_inner();
        let mode = mode(req.mode)?;
        let header = CreateHeader::new(
            &req.session_id,
            &req.branch,
            &req.parent_id,
            &req.metadata,
            &req.message,
            mode,
        )?
        .with_request(&req.request_id, req.lease_token)?;
        // A retry of a create that committed is recognised by the commit itself, under the
        // session lock; asking first would cost every create a round trip to the catalog.
        let mut writer = CheckpointWriter::begin_whole(Arc::clone(&self.engine), header).await?;
        for (i, change) in req.changes.into_iter().enumerate() {
            match change.op {
                Some(change::Op::Put(entry)) => {
                    writer
                        .put(&format!("changes[{i}].put.key"), entry.key, entry.value)
                        .await?;
                }
                Some(change::Op::Delete(key)) => {
                    writer.delete(&format!("changes[{i}].delete"), key)?
                }
                None => {
                    return Err(Status::invalid_argument(format!(
                        "changes[{i}]: names no operation"
                    )));
                }
            }
        }
        let checkpoint = writer.commit(None).await?;

        debug!(checkpoint = %checkpoint.id, stored = checkpoint.stored_bytes, "checkpoint created");
        Ok(Response::new(v1::CreateCheckpointResponse {
            checkpoint: Some(convert::checkpoint(checkpoint)),
        }))
    }

    #[instrument(name = "checkpoint.upload", skip_all)]
    async fn upload_checkpoint(
        &self,
        request: Request<Streaming<v1::UploadCheckpointRequest>>,
    ) -> Result<Response<v1::CreateCheckpointResponse>, Status> {
        let mut stream = request.into_inner();

        // The header opens the upload.
        let first = next_part(&mut stream).await?;
        let Some(upload_checkpoint_request::Part::Header(h)) = first else {
            return Err(Status::invalid_argument(
                "header: the first message of an upload must be its header",
            ));
        };
        let header = CreateHeader::new(
            &h.session_id,
            &h.branch,
            &h.parent_id,
            &h.metadata,
            &h.message,
            mode(h.mode)?,
        )?
        .with_request(&h.request_id, h.lease_token)?;
        tracing::Span::current().record("session", h.session_id.as_str());
        // A retry of an upload that committed is answered before its data is read again.
        if let Some(earlier) = self.engine.earlier_create(&header).await? {
            debug!(checkpoint = %earlier.id, "upload retried after it committed");
            return Ok(Response::new(v1::CreateCheckpointResponse {
                checkpoint: Some(convert::checkpoint(earlier)),
            }));
        }
        let mut writer = CheckpointWriter::begin(Arc::clone(&self.engine), header).await?;

        // Entries until the commit message; a stream that ends or fails first commits nothing.
        loop {
            match next_part(&mut stream).await? {
                Some(upload_checkpoint_request::Part::Put(put)) => {
                    writer.start_value("put.key", put.key, put.size).await?
                }
                Some(upload_checkpoint_request::Part::Data(data)) => {
                    writer.value_data("data", &data).await?
                }
                Some(upload_checkpoint_request::Part::Delete(key)) => {
                    writer.delete("delete", key)?
                }
                Some(upload_checkpoint_request::Part::Commit(commit)) => {
                    let checkpoint = writer.commit(Some(commit.change_count)).await?;
                    debug!(checkpoint = %checkpoint.id, stored = checkpoint.stored_bytes, "checkpoint uploaded");
                    let response = v1::CreateCheckpointResponse {
                        checkpoint: Some(convert::checkpoint(checkpoint)),
                    };
                    return Ok(Response::new(response));
                }
                Some(upload_checkpoint_request::Part::Header(_)) => {
                    return Err(Status::invalid_argument("header: sent twice"));
                }
                None => {
                    return Err(Status::invalid_argument(
                        "commit: the upload ended without a commit message",
                    ));
                }
            }
        }
    }

    #[instrument(name = "checkpoint.get", skip_all, fields(checkpoint = %request.get_ref().checkpoint_id))]
    async fn get_checkpoint(
        &self,
        request: Request<v1::GetCheckpointRequest>,
    ) -> Result<Response<v1::Checkpoint>, Status> {
        let id = validate::checkpoint_id("checkpoint_id", &request.get_ref().checkpoint_id)?;
        let checkpoint = self.engine.checkpoint(id).await?;
        Ok(Response::new(convert::checkpoint(checkpoint)))
    }

    type ReadStateStream = StateStream;

    #[instrument(name = "state.read", skip_all)]
    async fn read_state(
        &self,
        request: Request<v1::ReadStateRequest>,
    ) -> Result<Response<StateStream>, Status> {
        let req = request.into_inner();
        let target = match req.target {
            Some(read_state_request::Target::CheckpointId(id)) => {
                ReadTarget::Checkpoint(validate::checkpoint_id("checkpoint_id", &id)?)
            }
            Some(read_state_request::Target::Head(head)) => ReadTarget::Head {
                session: head.session_id,
                branch: head.branch,
            },
            None => {
                return Err(Status::invalid_argument(
                    "target: name a checkpoint_id or a head",
                ));
            }
        };
        let checkpoint = self.engine.resolve(target).await?;
        let filter = ReadFilter {
            prefix: req.prefix,
            keys: req.keys,
        };
        let events = self.engine.read(checkpoint.clone(), filter)?;

        let first = v1::ReadStateResponse {
            part: Some(read_state_response::Part::Checkpoint(convert::checkpoint(
                checkpoint,
            ))),
        };
        let rest = state::parts(events, req.batch_entries)
            .map(|part| part.map(|part| v1::ReadStateResponse { part: Some(part) }));
        let stream = tokio_stream::once(Ok(first)).chain(rest);
        Ok(Response::new(Box::pin(stream)))
    }

    #[instrument(name = "checkpoint.list", skip_all, fields(session = %request.get_ref().session_id))]
    async fn list_checkpoints(
        &self,
        request: Request<v1::ListCheckpointsRequest>,
    ) -> Result<Response<v1::ListCheckpointsResponse>, Status> {
        let req = request.into_inner();
        let limit = page_size(req.page_size)?;
        let before = decode_seq_token(&req.page_token)?;
        let filter = validate::checkpoint_filter(
            &req.branch,
            &req.tag,
            &req.metadata_contains,
            time("created_after", req.created_after)?,
            time("created_before", req.created_before)?,
            &req.message_contains,
        )?;

        let mut records = self
            .engine
            .list_checkpoints(&req.session_id, &filter, before, limit + 1)
            .await?;
        if records.is_empty() && before.is_none() {
            // An empty first page of an unknown session is NOT_FOUND, not silence.
            self.engine.session(&req.session_id).await?;
        }
        let next_page_token = if records.len() > limit as usize {
            records.truncate(limit as usize);
            records
                .last()
                .map(|r| encode_seq_token(r.seq))
                .unwrap_or_default()
        } else {
            String::new()
        };

        let checkpoints = records.into_iter().map(convert::checkpoint).collect();
        Ok(Response::new(v1::ListCheckpointsResponse {
            checkpoints,
            next_page_token,
        }))
    }

    #[instrument(name = "session.list", skip_all)]
    async fn list_sessions(
        &self,
        request: Request<v1::ListSessionsRequest>,
    ) -> Result<Response<v1::ListSessionsResponse>, Status> {
        let req = request.into_inner();
        let limit = page_size(req.page_size)?;
        let after = decode_name_token(&req.page_token)?;

        let mut records = self
            .engine
            .list_sessions(after.as_deref(), limit + 1)
            .await?;
        let next_page_token = if records.len() > limit as usize {
            records.truncate(limit as usize);
            records
                .last()
                .map(|r| encode_name_token(&r.name))
                .unwrap_or_default()
        } else {
            String::new()
        };

        let sessions = records.into_iter().map(convert::session).collect();
        Ok(Response::new(v1::ListSessionsResponse {
            sessions,
            next_page_token,
        }))
    }

    #[instrument(name = "session.get", skip_all, fields(session = %request.get_ref().session_id))]
    async fn get_session(
        &self,
        request: Request<v1::GetSessionRequest>,
    ) -> Result<Response<v1::Session>, Status> {
        let session = self.engine.session(&request.get_ref().session_id).await?;
        Ok(Response::new(convert::session(session)))
    }

    #[instrument(name = "checkpoint.delete", skip_all, fields(checkpoint = %request.get_ref().checkpoint_id))]
    async fn delete_checkpoint(
        &self,
        request: Request<v1::DeleteCheckpointRequest>,
    ) -> Result<Response<v1::DeleteCheckpointResponse>, Status> {
        let id = validate::checkpoint_id("checkpoint_id", &request.get_ref().checkpoint_id)?;
        self.engine.delete_checkpoint(id).await?;
        debug!(checkpoint = %id, "checkpoint deleted");
        Ok(Response::new(v1::DeleteCheckpointResponse {}))
    }

    #[instrument(name = "session.delete", skip_all, fields(session = %request.get_ref().session_id))]
    async fn delete_session(
        &self,
        request: Request<v1::DeleteSessionRequest>,
    ) -> Result<Response<v1::DeleteSessionResponse>, Status> {
        let deleted = self
            .engine
            .delete_session(&request.get_ref().session_id)
            .await?;
        debug!(checkpoints = deleted, "session deleted");
        Ok(Response::new(v1::DeleteSessionResponse {
            checkpoints_deleted: deleted,
        }))
    }

    #[instrument(name = "branch.create", skip_all)]
    async fn create_branch(
        &self,
        request: Request<v1::CreateBranchRequest>,
    ) -> Result<Response<v1::Branch>, Status> {
        refs::create_branch(&self.engine, request.into_inner())
            .await
            .map(Response::new)
    }

    #[instrument(name = "branch.get", skip_all)]
    async fn get_branch(
        &self,
        request: Request<v1::GetBranchRequest>,
    ) -> Result<Response<v1::Branch>, Status> {
        refs::get_branch(&self.engine, request.into_inner())
            .await
            .map(Response::new)
    }

    #[instrument(name = "branch.list", skip_all)]
    async fn list_branches(
        &self,
        request: Request<v1::ListBranchesRequest>,
    ) -> Result<Response<v1::ListBranchesResponse>, Status> {
        refs::list_branches(&self.engine, request.into_inner())
            .await
            .map(Response::new)
    }

    #[instrument(name = "branch.delete", skip_all)]
    async fn delete_branch(
        &self,
        request: Request<v1::DeleteBranchRequest>,
    ) -> Result<Response<v1::DeleteBranchResponse>, Status> {
        refs::delete_branch(&self.engine, request.into_inner()).await?;
        Ok(Response::new(v1::DeleteBranchResponse {}))
    }

    #[instrument(name = "branch.reset", skip_all)]
    async fn reset_branch(
        &self,
        request: Request<v1::ResetBranchRequest>,
    ) -> Result<Response<v1::Branch>, Status> {
        refs::reset_branch(&self.engine, request.into_inner())
            .await
            .map(Response::new)
    }

    #[instrument(name = "reflog.list", skip_all)]
    async fn list_ref_log(
        &self,
        request: Request<v1::ListRefLogRequest>,
    ) -> Result<Response<v1::ListRefLogResponse>, Status> {
        refs::list_ref_log(&self.engine, request.into_inner())
            .await
            .map(Response::new)
    }

    #[instrument(name = "session.fork", skip_all)]
    async fn fork_session(
        &self,
        request: Request<v1::ForkSessionRequest>,
    ) -> Result<Response<v1::Checkpoint>, Status> {
        refs::fork_session(&self.engine, request.into_inner())
            .await
            .map(Response::new)
    }

    #[instrument(name = "tag.set", skip_all)]
    async fn set_tag(
        &self,
        request: Request<v1::SetTagRequest>,
    ) -> Result<Response<v1::Tag>, Status> {
        refs::set_tag(&self.engine, request.into_inner())
            .await
            .map(Response::new)
    }

    #[instrument(name = "tag.delete", skip_all)]
    async fn delete_tag(
        &self,
        request: Request<v1::DeleteTagRequest>,
    ) -> Result<Response<v1::DeleteTagResponse>, Status> {
        refs::delete_tag(&self.engine, request.into_inner()).await?;
        Ok(Response::new(v1::DeleteTagResponse {}))
    }

    #[instrument(name = "tag.list", skip_all)]
    async fn list_tags(
        &self,
        request: Request<v1::ListTagsRequest>,
    ) -> Result<Response<v1::ListTagsResponse>, Status> {
        refs::list_tags(&self.engine, request.into_inner())
            .await
            .map(Response::new)
    }

    #[instrument(name = "history.get", skip_all)]
    async fn get_history(
        &self,
        request: Request<v1::GetHistoryRequest>,
    ) -> Result<Response<v1::GetHistoryResponse>, Status> {
        refs::get_history(&self.engine, request.into_inner())
            .await
            .map(Response::new)
    }

    #[instrument(name = "history.is_ancestor", skip_all)]
    async fn is_ancestor(
        &self,
        request: Request<v1::IsAncestorRequest>,
    ) -> Result<Response<v1::IsAncestorResponse>, Status> {
        let is_ancestor = refs::is_ancestor(&self.engine, request.into_inner()).await?;
        Ok(Response::new(v1::IsAncestorResponse { is_ancestor }))
    }

    #[instrument(name = "history.merge_base", skip_all)]
    async fn get_merge_base(
        &self,
        request: Request<v1::GetMergeBaseRequest>,
    ) -> Result<Response<v1::GetMergeBaseResponse>, Status> {
        let merge_base_ids = refs::merge_base(&self.engine, request.into_inner()).await?;
        Ok(Response::new(v1::GetMergeBaseResponse { merge_base_ids }))
    }

    #[instrument(name = "checkpoint.diff", skip_all)]
    async fn diff(
        &self,
        request: Request<v1::DiffRequest>,
    ) -> Result<Response<v1::DiffResponse>, Status> {
        refs::diff(&self.engine, request.into_inner())
            .await
            .map(Response::new)
    }

    #[instrument(name = "checkpoint.merge", skip_all, fields(session = %request.get_ref().session_id))]
    async fn merge(
        &self,
        request: Request<v1::MergeRequest>,
    ) -> Result<Response<v1::MergeResponse>, Status> {
        refs::merge(&self.engine, request.into_inner())
            .await
            .map(Response::new)
    }

    #[instrument(name = "retention.set", skip_all)]
    async fn set_retention_policy(
        &self,
        request: Request<v1::SetRetentionPolicyRequest>,
    ) -> Result<Response<v1::RetentionPolicy>, Status> {
        gc::set_retention_policy(&self.engine, request.into_inner())
            .await
            .map(Response::new)
    }

    #[instrument(name = "retention.get", skip_all)]
    async fn get_retention_policy(
        &self,
        request: Request<v1::GetRetentionPolicyRequest>,
    ) -> Result<Response<v1::RetentionPolicy>, Status> {
        gc::get_retention_policy(&self.engine, request.into_inner())
            .await
            .map(Response::new)
    }

    #[instrument(name = "store.collect", skip_all)]
    async fn collect(
        &self,
        request: Request<v1::CollectRequest>,
    ) -> Result<Response<v1::CollectResponse>, Status> {
        gc::collect(&self.engine, request.into_inner())
            .await
            .map(Response::new)
    }

    #[instrument(name = "store.verify", skip_all)]
    async fn verify(
        &self,
        request: Request<v1::VerifyRequest>,
    ) -> Result<Response<v1::VerifyResponse>, Status> {
        gc::verify(&self.engine, request.into_inner())
            .await
            .map(Response::new)
    }

    type WatchStream = feed::WatchStream;

    #[instrument(name = "feed.watch", skip_all, fields(session = %request.get_ref().session_id))]
    async fn watch(
        &self,
        request: Request<v1::WatchRequest>,
    ) -> Result<Response<feed::WatchStream>, Status> {
        feed::watch(
            Arc::clone(&self.engine),
            &self.watches,
            request.into_inner(),
        )
        .await
        .map(Response::new)
    }

    #[instrument(name = "lease.acquire", skip_all, fields(session = %request.get_ref().session_id))]
    async fn acquire_lease(
        &self,
        request: Request<v1::AcquireLeaseRequest>,
    ) -> Result<Response<v1::Lease>, Status> {
        let req = request.into_inner();
        let lease = self
            .engine
            .acquire_lease(&req.session_id, &req.branch, &req.holder, req.ttl_ms)
            .await?;
        debug!(token = lease.token, holder = %lease.holder, "lease acquired");
        Ok(Response::new(feed::lease(lease)))
    }

    #[instrument(name = "lease.renew", skip_all, fields(session = %request.get_ref().session_id))]
    async fn renew_lease(
        &self,
        request: Request<v1::RenewLeaseRequest>,
    ) -> Result<Response<v1::Lease>, Status> {
        let req = request.into_inner();
        let lease = self
            .engine
            .renew_lease(&req.session_id, &req.branch, req.token, req.ttl_ms)
            .await?;
        Ok(Response::new(feed::lease(lease)))
    }

    #[instrument(name = "lease.release", skip_all, fields(session = %request.get_ref().session_id))]
    async fn release_lease(
        &self,
        request: Request<v1::ReleaseLeaseRequest>,
    ) -> Result<Response<v1::ReleaseLeaseResponse>, Status> {
        let req = request.into_inner();
        self.engine
            .release_lease(&req.session_id, &req.branch, req.token)
            .await?;
        Ok(Response::new(v1::ReleaseLeaseResponse {}))
    }

    #[instrument(name = "checkpoint.search", skip_all)]
    async fn search(
        &self,
        request: Request<v1::SearchRequest>,
    ) -> Result<Response<v1::SearchResponse>, Status> {
        refs::search(&self.engine, request.into_inner())
            .await
            .map(Response::new)
    }

    type ExportSessionStream = BundleStream;

    #[instrument(name = "session.export", skip_all, fields(session = %request.get_ref().session_id))]
    async fn export_session(
        &self,
        request: Request<v1::ExportSessionRequest>,
    ) -> Result<Response<BundleStream>, Status> {
        let pieces = self.engine.export(&request.get_ref().session_id).await?;
        let stream = ReceiverStream::new(pieces).map(|piece| {
            piece
                .map(|data| v1::BundleData { data })
                .map_err(Status::from)
        });
        Ok(Response::new(Box::pin(stream)))
    }

    #[instrument(name = "session.import", skip_all)]
    async fn import_session(
        &self,
        request: Request<Streaming<v1::BundleData>>,
    ) -> Result<Response<v1::ImportSessionResponse>, Status> {
        let pieces = request.into_inner().map(|piece| {
            piece.map(|p| p.data).map_err(|status| {
                let status = too_large_is_exhausted(status);
                EngineError::InvalidArgument {
                    field: "bundle".into(),
                    reason: status.message().to_owned(),
                }
            })
        });
        let (session_id, outcome) = self.engine.import(pieces).await?;

        debug!(session = %session_id, imported = outcome.imported, "session imported");
        Ok(Response::new(v1::ImportSessionResponse {
            session_id,
            checkpoints_imported: outcome.imported,
            checkpoints_present: outcome.present,
            branches_updated: outcome.branches_updated,
            stored_bytes: outcome.stored_bytes,
            tags_created: outcome.tags_created,
        }))
    }
}

/// The next part of an upload; `None` when the stream ended.
async fn next_part(
    stream: &mut Streaming<v1::UploadCheckpointRequest>,
) -> Result<Option<upload_checkpoint_request::Part>, Status> {
    match stream.message().await.map_err(too_large_is_exhausted)? {
        None => Ok(None),
        Some(msg) => msg
            .part
            .map(Some)
            .ok_or_else(|| Status::invalid_argument("part: an upload message was empty")),
    }
}

fn mode(value: i32) -> Result<Mode, Status> {
    match v1::CreateMode::try_from(value) {
        Ok(v1::CreateMode::Unspecified | v1::CreateMode::Full) => Ok(Mode::Full),
        Ok(v1::CreateMode::Incremental) => Ok(Mode::Incremental),
        Err(_) => Err(Status::invalid_argument(format!(
            "mode: {value} is not a CreateMode"
        ))),
    }
}

fn time(
    field: &str,
    ts: Option<prost_types::Timestamp>,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, Status> {
    let Some(ts) = ts else { return Ok(None) };
    chrono::DateTime::from_timestamp(ts.seconds, u32::try_from(ts.nanos).unwrap_or(u32::MAX))
        .map(Some)
        .ok_or_else(|| Status::invalid_argument(format!("{field}: not a valid time")))
}

fn page_size(requested: u32) -> Result<u32, Status> {
    match requested {
        0 => Ok(DEFAULT_PAGE_SIZE),
        n if n <= MAX_PAGE_SIZE => Ok(n),
        n => Err(Status::invalid_argument(format!(
            "page_size: {n} is over the limit of {MAX_PAGE_SIZE}"
        ))),
    }
}

// Page tokens are opaque to clients; the version prefix lets their form change later.

fn encode_seq_token(seq: u64) -> String {
    format!("c1.{seq:x}")
}

fn decode_seq_token(token: &str) -> Result<Option<u64>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    token
        .strip_prefix("c1.")
        .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        .map(Some)
        .ok_or_else(|| Status::invalid_argument("page_token: not a token this list returned"))
}

fn encode_name_token(name: &str) -> String {
    format!("s1.{}", hex::encode(name))
}

fn decode_name_token(token: &str) -> Result<Option<String>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    token
        .strip_prefix("s1.")
        .and_then(|h| hex::decode(h).ok())
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .map(Some)
        .ok_or_else(|| Status::invalid_argument("page_token: not a token this list returned"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_reject_garbage() {
        assert_eq!(
            decode_seq_token(&encode_seq_token(12345)).unwrap(),
            Some(12345)
        );
        assert_eq!(
            decode_name_token(&encode_name_token("a/b:c"))
                .unwrap()
                .as_deref(),
            Some("a/b:c")
        );
        assert_eq!(decode_seq_token("").unwrap(), None);
        for bad in ["x", "c1.zz", "s1.00"] {
            assert_eq!(
                decode_seq_token(bad).unwrap_err().code(),
                tonic::Code::InvalidArgument
            );
        }
        assert_eq!(
            decode_name_token("s1.zz").unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }
}
