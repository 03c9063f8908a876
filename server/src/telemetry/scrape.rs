//! The Prometheus scrape endpoint: `GET /metrics` on a listener of its own, rendering the
//! meter provider's current values in the text exposition format.

use std::convert::Infallible;
use std::net::SocketAddr;

use anyhow::Context as _;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use prometheus::{Encoder, TextEncoder};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info};

/// A running scrape endpoint; [`MetricsEndpoint::shutdown`] stops it.
#[derive(Debug)]
pub struct MetricsEndpoint {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl MetricsEndpoint {
    /// Binds `addr` and serves `registry` until shut down.
    pub async fn start(addr: SocketAddr, registry: prometheus::Registry) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the metrics listener {addr}"))?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(accept(listener, registry, stopped));
        info!(%addr, "serving prometheus metrics at /metrics");
        Ok(Self { addr, stop, task })
    }

    /// The address it listens on (with the real port when bound to port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and ends open connections.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        let _ = (&mut self.task).await;
    }
}

impl Drop for MetricsEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept(
    listener: TcpListener,
    registry: prometheus::Registry,
    mut stopped: watch::Receiver<bool>,
) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    debug!(error = %err, "metrics listener failed to accept");
                    continue;
                }
            },
            _ = stopped.changed() => break,
        };
        let registry = registry.clone();
        let service = hyper::service::service_fn(move |request| {
            let response = respond(&registry, &request);
            async move { Ok::<_, Infallible>(response) }
        });
        connections.spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            if let Err(err) = connection.await {
                debug!(error = %err, "metrics connection ended with an error");
            }
        });
        // Reap finished connections so the set does not grow with every scrape.
        while connections.try_join_next().is_some() {}
    }
    connections.shutdown().await;
}

fn respond(registry: &prometheus::Registry, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.uri().path() != "/metrics" {
        return plain(
            StatusCode::NOT_FOUND,
            "not found; metrics are at /metrics\n",
        );
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
    }
    let encoder = TextEncoder::new();
    let mut text = Vec::new();
    if let Err(err) = encoder.encode(&registry.gather(), &mut text) {
        return plain(StatusCode::INTERNAL_SERVER_ERROR, &format!("{err}\n"));
    }
    Response::builder()
        .header(header::CONTENT_TYPE, encoder.format_type())
        .body(Full::new(Bytes::from(text)))
        .expect("a valid response")
}

fn plain(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(text.to_owned())))
        .expect("a valid response")
}
