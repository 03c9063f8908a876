//! Wiring: storage, engine, gRPC services and middleware, listener and shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use ckpt_proto::v1::checkpoint_service_server::CheckpointServiceServer;
use http::HeaderValue;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::codec::CompressionEncoding;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tracing::{info, warn};

use crate::auth::{AuthLayer, RateLimiter};
use crate::blobs::BlobStore;
use crate::catalog::{self, KeyStore};
use crate::config::{AuthMode, Config};
use crate::core::{CollectOptions, Engine, EngineError};
use crate::grpc::CheckpointApi;
use crate::middleware::{ConcurrencyLimitLayer, DeadlineLayer};
use crate::telemetry::{self, ServerTelemetry};
use crate::tls::{self, TlsState};

/// The health service name that answers SERVING for as long as the process serves at all.
pub const LIVENESS: &str = "liveness";

/// A server accepting calls; dropped or shut down, it stops.
#[derive(Debug)]
pub struct RunningServer {
    addr: SocketAddr,
    health: HealthReporter,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
    grace: std::time::Duration,
    drain_delay: std::time::Duration,
    collector: Option<JoinHandle<()>>,
    telemetry: ServerTelemetry,
    tls: Option<TlsTasks>,
}

/// The TLS accept loop and file watcher, stopped with the server or when it is dropped.
#[derive(Debug)]
struct TlsTasks {
    accept: JoinHandle<()>,
    watch: JoinHandle<()>,
}

impl Drop for TlsTasks {
    fn drop(&mut self) {
        self.accept.abort();
        self.watch.abort();
    }
}

impl RunningServer {
    /// The address the server listens on (with the real port when configured with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, or `https://ADDR` when serving TLS, for clients.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// The address of the Prometheus endpoint, when `--metrics-listen` started one.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.telemetry.metrics_addr()
    }

    /// Turns health to NOT_SERVING, keeps accepting calls for the drain delay, then stops
    /// accepting and lets in-flight calls finish within the grace period.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.health
            .set_not_serving::<CheckpointServiceServer<CheckpointApi>>()
            .await;
        // "" stands for the whole server: probes that name no service ask for it.
        self.health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        if !self.drain_delay.is_zero() {
            let delay = self.drain_delay;
            info!(
                ?delay,
                "health reports NOT_SERVING; accepting calls until the delay ends"
            );
            tokio::time::sleep(self.drain_delay).await;
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(collector) = self.collector.take() {
            // A pass cut short resumes safely on the next one (see core::collect).
            collector.abort();
        }
        // Connections already accepted drain below; no new handshake starts.
        drop(self.tls.take());
        match tokio::time::timeout(self.grace, &mut self.task).await {
            Ok(joined) => joined
                .context("server task panicked")?
                .context("server failed")?,
            Err(_) => {
                warn!(grace = ?self.grace, "in-flight calls outlived the grace period; stopping anyway");
                self.task.abort();
            }
        }
        self.telemetry.shutdown().await;
        Ok(())
    }
}

/// Opens storage, applies migrations, binds the listener and starts serving.
pub async fn start(config: Config) -> anyhow::Result<RunningServer> {
    // Settings that cannot work, refused before anything is opened.
    config.check_auth().map_err(anyhow::Error::msg)?;
    let tls_files = config.tls_files().map_err(anyhow::Error::msg)?;
    let tls_state = tls_files
        .map(|files| TlsState::load(files).context("loading the tls files"))
        .transpose()?;

    // Storage.
    let database = config.database();
    let store = config.store();
    let (catalog, keys) = catalog::open_with_keys(
        &database,
        config.db_max_connections,
        config.db_acquire_timeout,
    )
    .await
    .with_context(|| format!("opening the catalog at {}", config.redacted_database()))?;
    let catalog = telemetry::catalog::TracedCatalog::wrap(catalog);
    let server_telemetry = ServerTelemetry::start(&config, &catalog).await?;
    let blobs =
        BlobStore::open(&store).with_context(|| format!("opening the object store {store}"))?;
    blobs
        .probe()
        .await
        .with_context(|| format!("the object store {store} does not answer"))?;
    let engine = Arc::new(Engine::new(catalog, blobs, config.engine()));

    // Services.
    let max_message = config.max_message_size.as_u64() as usize;
    let collector = (!config.gc_interval.is_zero())
        .then(|| tokio::spawn(collect_every(Arc::clone(&engine), config.gc_interval)));
    let api = CheckpointServiceServer::new(CheckpointApi::new(engine))
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message)
        .accept_compressed(CompressionEncoding::Zstd)
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Zstd)
        .send_compressed(CompressionEncoding::Gzip);
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<CheckpointServiceServer<CheckpointApi>>()
        .await;
    // For liveness probes: SERVING while the process answers, through shutdown too, so that a
    // draining instance is not restarted. Readiness asks for the API's own name instead.
    health
        .set_service_status(LIVENESS, ServingStatus::Serving)
        .await;
    let auth = auth_layer(&config, keys);
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(ckpt_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("building the reflection service")?;

    // Listener. tonic ignores its own nodelay setting on a listener we bind, hence TcpIncoming.
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let router = tonic::transport::Server::builder()
        .layer(telemetry::rpc_layer())
        .layer(tower::util::MapResponseLayer::new(
            oversize_is_exhausted::<tonic::body::Body>,
        ))
        .layer(ConcurrencyLimitLayer::new(
            config.max_concurrent_calls as usize,
        ))
        .layer(DeadlineLayer::new(config.request_timeout))
        .layer(auth)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(api);
    let stopped = async {
        let _ = stopped.await;
    };
    let (task, tls) = match &tls_state {
        Some(state) => {
            let (incoming, accept) = tls::incoming(listener, Arc::clone(state));
            let watch = state.watch(config.tls_reload_interval);
            let task = tokio::spawn(router.serve_with_incoming_shutdown(incoming, stopped));
            (task, Some(TlsTasks { accept, watch }))
        }
        None => {
            let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
            (
                tokio::spawn(router.serve_with_incoming_shutdown(incoming, stopped)),
                None,
            )
        }
    };

    announce(&config, addr, &store, tls.is_some());
    Ok(RunningServer {
        addr,
        health,
        stop: Some(stop),
        task,
        grace: config.shutdown_grace,
        drain_delay: config.shutdown_drain_delay,
        collector,
        telemetry: server_telemetry,
        tls,
    })
}

/// Logs where the server listens, what it serves from, and how callers get in; warns when
/// anyone who reaches the port gets in.
fn announce(config: &Config, addr: SocketAddr, store: &str, tls: bool) {
    let tls_mode = match (tls, &config.tls_client_ca) {
        (false, _) => "off",
        (true, None) => "on",
        (true, Some(_)) => "mutual",
    };
    let auth_mode = match config.auth {
        AuthMode::Required => "required",
        AuthMode::Off => "off",
    };
    if config.auth == AuthMode::Off && addr.ip().is_loopback() {
        warn!(%addr, "authentication is off: any local process may read, write and delete every session (--auth required turns it on)");
    } else if config.auth == AuthMode::Off {
        warn!(%addr, "authentication is off beyond loopback (--allow-unauthenticated): anyone who reaches the port may read, write and delete every session");
    }
    let database = config.redacted_database();
    info!(%addr, %store, %database, auth = auth_mode, tls = tls_mode, "checkpointd listening");
}

/// The auth layer the settings ask for.
fn auth_layer(config: &Config, keys: Arc<dyn KeyStore>) -> AuthLayer {
    match config.auth {
        AuthMode::Required => {
            let limiter = config.rate_limit().map(RateLimiter::new);
            AuthLayer::required(keys, limiter)
        }
        AuthMode::Off => {
            if config.rate_limit().is_some() {
                warn!(
                    "--rate-limit applies to tenants, which need --auth required; no limit applies"
                );
            }
            AuthLayer::off()
        }
    }
}

/// Runs a collection pass every `interval`. Every instance schedules passes; the collector
/// lease lets one run at a time, and an instance that finds a pass running skips its turn.
async fn collect_every(engine: Arc<Engine>, interval: std::time::Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick fires at once; a pass right at start-up would only slow the start.
    ticks.tick().await;
    loop {
        ticks.tick().await;
        match engine.collect(CollectOptions::default()).await {
            Ok(_) => {}
            Err(EngineError::Aborted(why)) => info!(reason = %why, "collection pass skipped"),
            Err(err) => warn!(error = %err, "collection pass failed; the next one resumes"),
        }
    }
}

/// Applies pending catalog migrations and returns: what `checkpointd migrate` does.
pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    // Opening the catalog migrates it, under the database's own lock against a concurrent run.
    catalog::open(&config.database(), 1, config.db_acquire_timeout)
        .await
        .with_context(|| format!("migrating the catalog at {}", config.redacted_database()))?;
    info!(database = %config.redacted_database(), "catalog migrations applied");
    Ok(())
}

/// Runs until SIGINT or SIGTERM, then shuts down gracefully; a second signal exits at once.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let server = start(config).await?;
    wait_for_signal().await;
    info!("shutting down");
    tokio::spawn(async {
        wait_for_signal().await;
        warn!("second signal: exiting now");
        std::process::exit(130);
    });
    server.shutdown().await?;
    info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// tonic answers a request over the decoding limit with OUT_OF_RANGE before any handler runs;
/// gRPC's convention, and our contract, is RESOURCE_EXHAUSTED.
fn oversize_is_exhausted<B>(mut response: http::Response<B>) -> http::Response<B> {
    let headers = response.headers();
    let out_of_range = headers.get("grpc-status").is_some_and(|s| s == "11");
    let too_large = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .is_some_and(|m| m.contains("too%20large") || m.contains("too large"));
    if out_of_range && too_large {
        response
            .headers_mut()
            .insert("grpc-status", HeaderValue::from_static("8"));
    }
    response
}
