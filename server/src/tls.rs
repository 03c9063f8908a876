//! TLS for the gRPC listener: rustls (aws-lc) with ALPN h2, optionally requiring client
//! certificates signed by a given CA (mutual TLS), and certificate reload without restart.
//!
//! The files are read again when their modification time or size changes (checked every
//! `--tls-reload-interval`) or on SIGHUP. A new set that does not load (unreadable, not PEM, a
//! key that does not match the certificate) is logged and the previous one kept; it is retried
//! at the next check, so a certificate and key replaced one after the other load together once
//! both are in place. Each new connection takes the configuration current at its handshake;
//! established connections keep theirs.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{debug, error, info, warn};

/// How long a client may take over its TLS handshake before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepted connections waiting for the server to pick them up.
const ACCEPTED_BACKLOG: usize = 64;

/// The files a TLS configuration is built from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, the server's own certificate first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA certificates that sign acceptable client certificates; with it, every client
    /// must present one.
    pub client_ca: Option<PathBuf>,
}

/// The configuration new connections use, replaced whole on reload.
#[derive(Debug)]
pub struct TlsState {
    files: TlsFiles,
    current: RwLock<Arc<ServerConfig>>,
}

impl TlsState {
    /// Loads the files; fails when they do not make a configuration.
    pub fn load(files: TlsFiles) -> anyhow::Result<Arc<Self>> {
        let config = server_config(&files)?;
        Ok(Arc::new(Self {
            files,
            current: RwLock::new(config),
        }))
    }

    fn current(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Reads the files again and, when they make a configuration, uses it from the next
    /// handshake on.
    pub fn reload(&self) -> anyhow::Result<()> {
        let config = server_config(&self.files)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = config;
        Ok(())
    }

    /// Checks the files every `interval` (and on SIGHUP) and reloads them when they changed.
    /// A zero interval leaves SIGHUP alone.
    pub fn watch(self: &Arc<Self>, interval: Duration) -> JoinHandle<()> {
        // Taken before returning, so that a change or a SIGHUP right after is not missed.
        let seen = self.fingerprint();
        let hangups = hangups();
        let state = Arc::clone(self);
        tokio::spawn(async move { state.watch_loop(interval, seen, hangups).await })
    }

    async fn watch_loop(
        &self,
        interval: Duration,
        mut seen: Vec<Option<(SystemTime, u64)>>,
        mut hangups: Hangups,
    ) {
        let mut failing = false;
        let mut ticks = (!interval.is_zero()).then(|| {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks
        });
        loop {
            let forced = tokio::select! {
                _ = next_tick(&mut ticks) => false,
                _ = next_hangup(&mut hangups) => true,
            };
            let now = self.fingerprint();
            if !forced && !failing && now == seen {
                continue;
            }
            match self.reload() {
                Ok(()) => {
                    info!(cert = %self.files.cert.display(), "tls certificate reloaded");
                    failing = false;
                }
                // Logged once per change of the files, retried at every check until it loads.
                Err(err) if forced || now != seen || !failing => {
                    error!(
                        error = format!("{err:#}"),
                        "failed to reload tls files; keeping the previous ones"
                    );
                    failing = true;
                }
                Err(_) => {}
            }
            seen = now;
        }
    }

    /// Modification times and sizes of the files, to notice a change.
    fn fingerprint(&self) -> Vec<Option<(SystemTime, u64)>> {
        let files = [
            Some(&self.files.cert),
            Some(&self.files.key),
            self.files.client_ca.as_ref(),
        ];
        files
            .into_iter()
            .flatten()
            .map(|path| {
                let meta = std::fs::metadata(path).ok()?;
                Some((meta.modified().ok()?, meta.len()))
            })
            .collect()
    }
}

async fn next_tick(ticks: &mut Option<tokio::time::Interval>) {
    match ticks {
        Some(ticks) => {
            ticks.tick().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(unix)]
type Hangups = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangups = ();

#[cfg(unix)]
fn hangups() -> Hangups {
    use tokio::signal::unix::{SignalKind, signal};
    signal(SignalKind::hangup())
        .inspect_err(|err| warn!(error = %err, "cannot listen for SIGHUP; tls files are still checked on a timer"))
        .ok()
}

#[cfg(not(unix))]
fn hangups() -> Hangups {}

#[cfg(unix)]
async fn next_hangup(hangups: &mut Hangups) {
    match hangups {
        Some(signal) => {
            signal.recv().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(not(unix))]
async fn next_hangup(_: &mut Hangups) {
    std::future::pending().await
}

/// The rustls configuration the files describe.
fn server_config(files: &TlsFiles) -> anyhow::Result<Arc<ServerConfig>> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let chain = read_certs(&files.cert)?;
    let key = read_key(&files.key)?;
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .context("choosing tls versions")?;
    let builder = match &files.client_ca {
        Some(ca) => builder.with_client_cert_verifier(client_verifier(ca, provider)?),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .with_context(|| format!("{} does not go with the certificate", files.key.display()))?;
    // gRPC runs over HTTP/2 only.
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

fn client_verifier(
    ca: &Path,
    provider: Arc<CryptoProvider>,
) -> anyhow::Result<Arc<dyn rustls::server::danger::ClientCertVerifier>> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(ca)? {
        roots
            .add(cert)
            .with_context(|| format!("{}: not a usable CA certificate", ca.display()))?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .with_context(|| format!("{}: cannot verify clients with it", ca.display()))
}

fn read_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{}: not PEM certificates", path.display()))?;
    if certs.is_empty() {
        bail!("{}: holds no certificate", path.display());
    }
    Ok(certs)
}

fn read_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    PrivateKeyDer::from_pem_slice(&pem)
        .with_context(|| format!("{}: not a PEM private key", path.display()))
}

/// TLS connections accepted on `listener`, for `serve_with_incoming`. Handshakes run on tasks
/// of their own, so a slow client never holds up the next; a failed one is logged at DEBUG and
/// dropped. The accepting task ends when the stream is dropped.
pub fn incoming(
    listener: TcpListener,
    state: Arc<TlsState>,
) -> (
    ReceiverStream<io::Result<TlsStream<TcpStream>>>,
    JoinHandle<()>,
) {
    let (tx, rx) = mpsc::channel(ACCEPTED_BACKLOG);
    let task = tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = tx.closed() => return,
            };
            let (tcp, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    warn!(error = %err, "failed to accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // tonic's own nodelay setting does not reach sockets we accept (Nagle stalls).
            let _ = tcp.set_nodelay(true);
            let acceptor = TlsAcceptor::from(state.current());
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(err)) => debug!(%peer, error = %err, "tls handshake failed"),
                    Err(_) => debug!(%peer, "tls handshake timed out"),
                }
            });
        }
    });
    (ReceiverStream::new(rx), task)
}
