//! Session bundles: [`Client::export_session`] and [`Client::import_session`].

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use ckpt_proto::v1 as pb;

use crate::{Client, Error};

/// Bundle bytes are sent to the server in pieces of this size.
const IMPORT_PIECE: usize = 1024 * 1024;

/// What an import changed on the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportReport {
    /// The session the bundle held.
    pub session_id: String,
    /// Checkpoints added.
    pub checkpoints_imported: u64,
    /// Checkpoints of the bundle the server already had.
    pub checkpoints_present: u64,
    /// Branches created or moved forward.
    pub branches_updated: u64,
    /// Bytes of blobs the server did not hold before.
    pub stored_bytes: u64,
    /// Tags created.
    pub tags_created: u64,
}

impl From<pb::ImportSessionResponse> for ImportReport {
    fn from(r: pb::ImportSessionResponse) -> Self {
        Self {
            session_id: r.session_id,
            checkpoints_imported: r.checkpoints_imported,
            checkpoints_present: r.checkpoints_present,
            branches_updated: r.branches_updated,
            stored_bytes: r.stored_bytes,
            tags_created: r.tags_created,
        }
    }
}

impl Client {
    /// Writes a self-contained bundle of `session_id` (every checkpoint, branch and the data
    /// they need, with a checksum) to `out`; returns the bytes written. On error, what was
    /// written is incomplete and must be discarded.
    pub async fn export_session<W: AsyncWrite + Unpin>(
        &self,
        session_id: &str,
        out: &mut W,
    ) -> Result<u64, Error> {
        let request = pb::ExportSessionRequest {
            session_id: session_id.to_owned(),
        };
        let mut stream = self.raw().export_session(request).await?.into_inner();
        let mut written = 0;
        while let Some(piece) = stream.next().await {
            let data = piece?.data;
            out.write_all(&data)
                .await
                .map_err(|e| Error::Protocol(format!("writing the bundle: {e}")))?;
            written += data.len() as u64;
        }
        out.flush()
            .await
            .map_err(|e| Error::Protocol(format!("writing the bundle: {e}")))?;
        Ok(written)
    }

    /// Loads a bundle read from `input` into the server. The server checks it whole before
    /// committing anything, so a damaged bundle changes nothing.
    pub async fn import_session<R: AsyncRead + Unpin + Send + 'static>(
        &self,
        input: R,
    ) -> Result<ImportReport, Error> {
        let pieces = futures::stream::unfold(Some(input), |reader| async move {
            let mut reader = reader?;
            let mut buf = BytesMut::with_capacity(IMPORT_PIECE);
            while buf.len() < IMPORT_PIECE {
                match reader.read_buf(&mut buf).await {
                    Ok(0) => break,
                    Ok(_) => {}
                    // Ending the stream early makes the server refuse a truncated bundle.
                    Err(_) => return None,
                }
            }
            if buf.is_empty() {
                return None;
            }
            let data: Bytes = buf.freeze();
            Some((pb::BundleData { data }, Some(reader)))
        });
        let response = self.raw().import_session(pieces).await?;
        Ok(ImportReport::from(response.into_inner()))
    }
}
