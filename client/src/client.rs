//! [`Client`]: the async handle on a checkpointd server, one method per RPC plus conveniences
//! (size-based choice between unary and streamed writes, collecting reads, following pages).

use std::time::Duration;

use futures::StreamExt;
use prost::Message;
use tonic::codec::CompressionEncoding;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use ckpt_proto::v1 as pb;
use pb::checkpoint_service_client::CheckpointServiceClient;

use crate::metadata::Outgoing;
use crate::model::{convert_all, missing};
use crate::read::StateReader;
use crate::write::{create_request, upload_parts};
use crate::{Checkpoint, Error, NewCheckpoint, Page, ReadFilter, Session, State, Target};

/// Largest gRPC message the client sends or accepts. Values travel in pieces far smaller than
/// this; the limit only bounds unary requests and listings, and matches the server's.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Encoded size under which [`Client::create`] sends one unary request. Above it the state is
/// streamed: a single huge message would have to be built, buffered and decoded whole on both
/// sides, while a stream keeps memory flat.
pub const UNARY_LIMIT: usize = 2 * 1024 * 1024;

/// Attempts [`Client::create`] makes when the server cannot be reached.
pub const CREATE_ATTEMPTS: u32 = 4;

/// The wait before the first retry of a create; each later one waits four times longer.
const RETRY_BACKOFF: Duration = Duration::from_millis(50);

/// How long [`Client::connect`] waits for the TCP and HTTP/2 handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Page size used when following every page of a listing: the server's maximum, to keep the
/// number of round trips down.
const FOLLOW_PAGE_SIZE: u32 = 1000;

/// How to reach a server: its address, an API key sent with every call, and TLS settings.
/// Made by [`Client::builder`]; [`connect`](Self::connect) opens the connection.
///
/// ```no_run
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// let client = ckpt_client::Client::builder("https://ckpt.internal:7777")
///     .api_key(std::env::var("CKPT_API_KEY")?)
///     .tls_ca_pem(std::fs::read("ca.pem")?)
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ClientBuilder {
    addr: String,
    api_key: Option<String>,
    ca_pem: Option<Vec<u8>>,
    identity_pem: Option<(Vec<u8>, Vec<u8>)>,
    domain: Option<String>,
}

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("addr", &self.addr)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("ca_pem", &self.ca_pem.is_some())
            .field("identity_pem", &self.identity_pem.is_some())
            .field("domain", &self.domain)
            .finish()
    }
}

impl ClientBuilder {
    /// Sends `key` (`ckpt_…`, from `checkpointd keys create`) as `authorization: Bearer` with
    /// every call.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// Trusts the CA certificate(s) in `pem` for the server's certificate, instead of the
    /// platform's certificate authorities. Implies TLS.
    pub fn tls_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// Presents this certificate chain and private key (PEM) to a server that requires mutual
    /// TLS. Implies TLS.
    pub fn tls_identity_pem(mut self, cert: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> Self {
        self.identity_pem = Some((cert.into(), key.into()));
        self
    }

    /// The name the server's certificate must carry, when it differs from the address's host
    /// (e.g. when connecting by IP address).
    pub fn tls_domain(mut self, name: impl Into<String>) -> Self {
        self.domain = Some(name.into());
        self
    }

    /// Opens the connection. An address without a scheme means `http://`, or `https://` when
    /// a TLS option is set; TLS options with an `http://` address are refused.
    pub async fn connect(self) -> Result<Client, Error> {
        let outgoing = match &self.api_key {
            Some(key) => Outgoing::with_api_key(key)?,
            None => Outgoing::default(),
        };
        let wants_tls = self.ca_pem.is_some() || self.identity_pem.is_some();
        let mut addr = self.addr.clone();
        if !addr.contains("://") {
            addr.insert_str(0, if wants_tls { "https://" } else { "http://" });
        }
        let tls = addr.starts_with("https://");
        if wants_tls && !tls {
            return Err(Error::InvalidArgument(format!(
                "TLS options need an https:// server address, not {addr}"
            )));
        }

        let mut endpoint = Endpoint::from_shared(addr)
            .map_err(Error::Connect)?
            .tcp_nodelay(true)
            .connect_timeout(CONNECT_TIMEOUT);
        if tls {
            endpoint = endpoint
                .tls_config(self.tls_config())
                .map_err(Error::Connect)?;
        }
        let channel = endpoint.connect().await.map_err(Error::Connect)?;
        Ok(Client::with_metadata(channel, outgoing))
    }

    fn tls_config(&self) -> ClientTlsConfig {
        let mut config = ClientTlsConfig::new();
        config = match &self.ca_pem {
            Some(pem) => config.ca_certificate(Certificate::from_pem(pem)),
            None => config.with_native_roots(),
        };
        if let Some((cert, key)) = &self.identity_pem {
            config = config.identity(Identity::from_pem(cert, key));
        }
        if let Some(domain) = &self.domain {
            config = config.domain_name(domain.clone());
        }
        config
    }
}

/// Which checkpoints a listing returns; every set field must hold.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ListFilter {
    /// Only checkpoints written on this branch.
    pub branch: Option<String>,
    /// Only the checkpoint this tag names.
    pub tag: Option<String>,
    /// A JSON object the metadata must contain (PostgreSQL `jsonb @>` semantics).
    pub metadata_contains: Option<serde_json::Value>,
    /// Created at or after this time.
    pub created_after: Option<chrono::DateTime<chrono::Utc>>,
    /// Created strictly before this time.
    pub created_before: Option<chrono::DateTime<chrono::Utc>>,
    /// Case-insensitive text the message contains.
    pub message_contains: Option<String>,
}

/// The generated client over a channel that carries the caller's trace context and API key.
pub(crate) type Rpc = CheckpointServiceClient<InterceptedService<Channel, Outgoing>>;

/// An async handle on a checkpointd server. Cheap to clone; clones share one connection.
///
/// Each call carries the caller's current OpenTelemetry span (if any) as W3C `traceparent`
/// metadata, so the server's spans join the caller's trace, and the API key given to
/// [`ClientBuilder::api_key`], if any.
#[derive(Clone, Debug)]
pub struct Client {
    inner: Rpc,
}

impl Client {
    /// Connects to `addr`, e.g. `http://127.0.0.1:7777`; `127.0.0.1:7777` means the same.
    /// An `https://` address is reached over TLS, trusting the platform's certificate
    /// authorities. For an API key, a private CA or a client certificate, use
    /// [`Client::builder`].
    pub async fn connect(addr: impl Into<String>) -> Result<Client, Error> {
        Self::builder(addr).connect().await
    }

    /// Starts describing how to reach the server at `addr`; see [`ClientBuilder`].
    pub fn builder(addr: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            addr: addr.into(),
            api_key: None,
            ca_pem: None,
            identity_pem: None,
            domain: None,
        }
    }

    /// Wraps an existing channel (e.g. one built with custom TLS or timeouts).
    pub fn from_channel(channel: Channel) -> Client {
        Self::with_metadata(channel, Outgoing::default())
    }

    fn with_metadata(channel: Channel, outgoing: Outgoing) -> Client {
        let inner = CheckpointServiceClient::with_interceptor(channel, outgoing)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Client { inner }
    }

    /// Compresses requests and asks for compressed responses (zstd). Worth it over slow
    /// links; on fast ones it costs CPU on both ends, since stored values are compressed
    /// already and are decompressed to be verified before they are sent.
    pub fn with_compression(mut self) -> Self {
        self.inner = self
            .inner
            .send_compressed(CompressionEncoding::Zstd)
            .accept_compressed(CompressionEncoding::Zstd)
            .accept_compressed(CompressionEncoding::Gzip);
        self
    }

    /// Creates a checkpoint: in one unary call when the encoded request is under
    /// [`UNARY_LIMIT`], otherwise streamed as by [`upload`](Self::upload).
    ///
    /// The create carries a request id (a fresh one unless `new` names one), so it is retried
    /// when the server was unreachable or the connection broke before the reply, up to
    /// [`CREATE_ATTEMPTS`] times in all: a retry of a create that did commit returns that
    /// checkpoint rather than writing a second one.
    pub async fn create(&self, mut new: NewCheckpoint) -> Result<Checkpoint, Error> {
        new.request_id
            .get_or_insert_with(|| uuid::Uuid::now_v7().to_string());
        let request = create_request(new)?;
        let mut backoff = RETRY_BACKOFF;
        let mut attempt = 1;
        loop {
            match self.create_once(request.clone()).await {
                Err(err) if connection_failed(&err) && attempt < CREATE_ATTEMPTS => {
                    tokio::time::sleep(backoff).await;
                    backoff *= 4;
                    attempt += 1;
                }
                outcome => return outcome,
            }
        }
    }

    async fn create_once(&self, request: pb::CreateCheckpointRequest) -> Result<Checkpoint, Error> {
        if request.encoded_len() >= UNARY_LIMIT {
            return self.stream_upload(request, |_| {}).await;
        }
        let response = self.inner.clone().create_checkpoint(request).await?;
        created(response.into_inner())
    }

    /// Creates a checkpoint through the streamed `UploadCheckpoint`, whatever its size.
    pub async fn upload(&self, new: NewCheckpoint) -> Result<Checkpoint, Error> {
        self.upload_with_progress(new, |_| {}).await
    }

    /// Like [`upload`](Self::upload), calling `progress` with the size of each piece of value
    /// bytes as it is handed to the connection.
    pub async fn upload_with_progress<P>(
        &self,
        new: NewCheckpoint,
        progress: P,
    ) -> Result<Checkpoint, Error>
    where
        P: FnMut(u64) + Send + 'static,
    {
        let request = create_request(new)?;
        self.stream_upload(request, progress).await
    }

    async fn stream_upload<P>(
        &self,
        request: pb::CreateCheckpointRequest,
        mut progress: P,
    ) -> Result<Checkpoint, Error>
    where
        P: FnMut(u64) + Send + 'static,
    {
        let parts = futures::stream::iter(upload_parts(request)).inspect(move |message| {
            if let Some(pb::upload_checkpoint_request::Part::Data(piece)) = &message.part {
                progress(piece.len() as u64);
            }
        });
        let response = self.inner.clone().upload_checkpoint(parts).await?;
        created(response.into_inner())
    }

    /// Returns a checkpoint's metadata and summary.
    pub async fn get(&self, checkpoint_id: &str) -> Result<Checkpoint, Error> {
        let request = pb::GetCheckpointRequest {
            checkpoint_id: checkpoint_id.to_owned(),
        };
        let response = self.inner.clone().get_checkpoint(request).await?;
        Checkpoint::try_from(response.into_inner())
    }

    /// Reads a checkpoint's state (or the part `filter` selects) into memory, with the
    /// checkpoint it resolved to. Any error in the stream fails the whole call.
    pub async fn read_state(
        &self,
        target: Target,
        filter: ReadFilter,
    ) -> Result<(Checkpoint, State), Error> {
        self.read_state_stream(target, filter)
            .await?
            .collect()
            .await
    }

    /// Starts reading a checkpoint's state entry by entry, for states too large to hold in
    /// memory. See [`StateReader`].
    pub async fn read_state_stream(
        &self,
        target: Target,
        filter: ReadFilter,
    ) -> Result<StateReader, Error> {
        let request = filter.into_request(target)?;
        let response = self.inner.clone().read_state(request).await?;
        StateReader::open(response.into_inner().boxed()).await
    }

    /// Lists one page of a session's checkpoints, newest first, optionally only those written
    /// on `branch`. A `page_size` of 0 lets the server choose (100).
    pub async fn list_checkpoints(
        &self,
        session_id: &str,
        branch: Option<&str>,
        page_size: u32,
        page_token: &str,
    ) -> Result<Page<Checkpoint>, Error> {
        let filter = ListFilter {
            branch: branch.map(str::to_owned),
            ..ListFilter::default()
        };
        self.list_checkpoints_where(session_id, &filter, page_size, page_token)
            .await
    }

    /// Lists one page of a session's checkpoints that pass `filter`, newest first.
    pub async fn list_checkpoints_where(
        &self,
        session_id: &str,
        filter: &ListFilter,
        page_size: u32,
        page_token: &str,
    ) -> Result<Page<Checkpoint>, Error> {
        let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
            t.map(|t| prost_types::Timestamp {
                seconds: t.timestamp(),
                nanos: t.timestamp_subsec_nanos() as i32,
            })
        };
        let request = pb::ListCheckpointsRequest {
            session_id: session_id.to_owned(),
            branch: filter.branch.clone().unwrap_or_default(),
            page_size,
            page_token: page_token.to_owned(),
            tag: filter.tag.clone().unwrap_or_default(),
            metadata_contains: filter
                .metadata_contains
                .as_ref()
                .map(|m| m.to_string())
                .unwrap_or_default(),
            created_after: time(filter.created_after),
            created_before: time(filter.created_before),
            message_contains: filter.message_contains.clone().unwrap_or_default(),
        };
        let response = self.inner.clone().list_checkpoints(request).await?;
        let response = response.into_inner();
        Ok(Page {
            items: convert_all(response.checkpoints)?,
            next_page_token: response.next_page_token,
        })
    }

    /// Lists all of a session's checkpoints, newest first, following the pages.
    pub async fn list_all_checkpoints(
        &self,
        session_id: &str,
        branch: Option<&str>,
    ) -> Result<Vec<Checkpoint>, Error> {
        let mut all = Vec::new();
        let mut token = String::new();
        loop {
            let page = self
                .list_checkpoints(session_id, branch, FOLLOW_PAGE_SIZE, &token)
                .await?;
            all.extend(page.items);
            if !advance(&mut token, page.next_page_token)? {
                return Ok(all);
            }
        }
    }

    /// Lists one page of sessions in id order. A `page_size` of 0 lets the server choose.
    pub async fn list_sessions(
        &self,
        page_size: u32,
        page_token: &str,
    ) -> Result<Page<Session>, Error> {
        let request = pb::ListSessionsRequest {
            page_size,
            page_token: page_token.to_owned(),
        };
        let response = self.inner.clone().list_sessions(request).await?;
        let response = response.into_inner();
        Ok(Page {
            items: convert_all(response.sessions)?,
            next_page_token: response.next_page_token,
        })
    }

    /// Lists all sessions in id order, following the pages.
    pub async fn list_all_sessions(&self) -> Result<Vec<Session>, Error> {
        let mut all = Vec::new();
        let mut token = String::new();
        loop {
            let page = self.list_sessions(FOLLOW_PAGE_SIZE, &token).await?;
            all.extend(page.items);
            if !advance(&mut token, page.next_page_token)? {
                return Ok(all);
            }
        }
    }

    /// Returns one session.
    pub async fn get_session(&self, session_id: &str) -> Result<Session, Error> {
        let request = pb::GetSessionRequest {
            session_id: session_id.to_owned(),
        };
        let response = self.inner.clone().get_session(request).await?;
        Session::try_from(response.into_inner())
    }

    /// The generated client, for calls this wrapper does not cover.
    pub(crate) fn raw(&self) -> Rpc {
        self.inner.clone()
    }

    /// Deletes one checkpoint. A branch head cannot be deleted
    /// ([`Error::FailedPrecondition`]).
    pub async fn delete_checkpoint(&self, checkpoint_id: &str) -> Result<(), Error> {
        let request = pb::DeleteCheckpointRequest {
            checkpoint_id: checkpoint_id.to_owned(),
        };
        self.inner.clone().delete_checkpoint(request).await?;
        Ok(())
    }

    /// Deletes a session with all its branches and checkpoints; returns how many checkpoints
    /// were deleted.
    pub async fn delete_session(&self, session_id: &str) -> Result<u64, Error> {
        let request = pb::DeleteSessionRequest {
            session_id: session_id.to_owned(),
        };
        let response = self.inner.clone().delete_session(request).await?;
        Ok(response.into_inner().checkpoints_deleted)
    }
}

fn created(response: pb::CreateCheckpointResponse) -> Result<Checkpoint, Error> {
    let checkpoint = response
        .checkpoint
        .ok_or_else(|| missing("CreateCheckpointResponse.checkpoint"))?;
    Checkpoint::try_from(checkpoint)
}

/// Moves `token` to `next`; false on the last page. A server that hands back the token it was
/// given would make the caller loop forever, so that is a protocol error.
fn advance(token: &mut String, next: String) -> Result<bool, Error> {
    if next.is_empty() {
        return Ok(false);
    }
    if next == *token {
        return Err(Error::Protocol(
            "listing returned the same page token twice".into(),
        ));
    }
    *token = next;
    Ok(true)
}

/// Whether a call failed for want of a connection, before or after the server saw it: the
/// server was unreachable or unavailable, or the connection broke before the reply arrived
/// (tonic reports that as `UNKNOWN` or `CANCELLED` with the transport error as its source,
/// while a status the server sent has no source).
fn connection_failed(err: &Error) -> bool {
    match err {
        Error::Unavailable(_) | Error::Connect(_) => true,
        Error::Status(status) => {
            matches!(status.code(), tonic::Code::Unknown | tonic::Code::Cancelled)
                && std::error::Error::source(status).is_some()
        }
        _ => false,
    }
}
