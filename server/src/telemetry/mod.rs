//! Telemetry: structured logs to stderr (text or JSON); OpenTelemetry traces and metrics,
//! exported over OTLP when the standard `OTEL_EXPORTER_OTLP_*` variables name a collector;
//! and a Prometheus scrape endpoint when `--metrics-listen` is set. With none of those, no
//! OpenTelemetry layer, exporter or provider is installed and the instruments are no-ops.
//!
//! Providers are process-wide (tracing's subscriber and OpenTelemetry's globals), so
//! [`Telemetry`] installs them once, before the server starts: `main` through [`init`], tests
//! through [`Telemetry::builder`] with exporters of their own.

pub mod catalog;
pub mod layer;
pub mod metrics;
pub mod scrape;

use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithTonicConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::{MeterProviderBuilder, PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanExporter, TracerProviderBuilder};
use tonic::transport::ClientTlsConfig;
use tracing::info;
use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

use crate::config::{Config, LogFormat};

/// How long shutdown waits for the last spans and metrics to reach a collector.
const EXPORT_DEADLINE: Duration = Duration::from_secs(5);

/// What [`TelemetryBuilder::install`] turned on, for the server's wiring to read.
#[derive(Debug)]
struct Installed {
    traces: bool,
    metrics: bool,
    prometheus: Option<prometheus::Registry>,
}

static INSTALLED: OnceLock<Installed> = OnceLock::new();

/// Installs logging, and OpenTelemetry as the environment and `config` ask. Call once, from
/// `main`, inside the runtime (the OTLP exporter's channel needs it) and before the server
/// starts. Where telemetry goes is logged once.
pub fn init(config: &Config) -> anyhow::Result<Telemetry> {
    let otlp = Otlp::from_env();
    let mut builder = Telemetry::builder().log(&config.log, config.log_format);
    if otlp.traces {
        let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic();
        if otlp.traces_tls {
            exporter = exporter.with_tls_config(collector_tls());
        }
        let exporter = exporter
            .build()
            .context("building the OTLP span exporter")?;
        builder = builder.batch_span_exporter(exporter);
    }
    if otlp.metrics {
        let mut exporter = opentelemetry_otlp::MetricExporter::builder().with_tonic();
        if otlp.metrics_tls {
            exporter = exporter.with_tls_config(collector_tls());
        }
        let exporter = exporter
            .build()
            .context("building the OTLP metric exporter")?;
        builder = builder.periodic_metric_exporter(exporter);
    }
    if config.metrics_listen.is_some() {
        builder = builder.prometheus()?;
    }
    let telemetry = builder.install()?;
    log_config(config, &otlp);
    Ok(telemetry)
}

/// Which signals go to an OTLP collector: those whose endpoint is set, unless
/// `OTEL_SDK_DISABLED=true` or `OTEL_{TRACES,METRICS}_EXPORTER=none` says otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Otlp {
    traces: bool,
    metrics: bool,
    /// Whether the endpoint of each signal is `https://`: the exporter then speaks TLS, trusting
    /// the platform's certificate authorities (and `SSL_CERT_FILE`).
    traces_tls: bool,
    metrics_tls: bool,
}

impl Otlp {
    fn from_env() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Self {
        let set = |name: &str| var(name).is_some_and(|v| !v.trim().is_empty());
        let is = |name: &str, value: &str| {
            var(name).is_some_and(|v| v.trim().eq_ignore_ascii_case(value))
        };
        if is("OTEL_SDK_DISABLED", "true") {
            return Self {
                traces: false,
                metrics: false,
                traces_tls: false,
                metrics_tls: false,
            };
        }
        let shared = set("OTEL_EXPORTER_OTLP_ENDPOINT");
        // The signal's own endpoint wins over the shared one, as the SDK reads them.
        let https = |own: &str| {
            let endpoint = var(own)
                .filter(|v| !v.trim().is_empty())
                .or_else(|| var("OTEL_EXPORTER_OTLP_ENDPOINT"));
            endpoint.is_some_and(|e| e.trim().to_ascii_lowercase().starts_with("https://"))
        };
        Self {
            traces: (shared || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
                && !is("OTEL_TRACES_EXPORTER", "none"),
            metrics: (shared || set("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"))
                && !is("OTEL_METRICS_EXPORTER", "none"),
            traces_tls: https("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            metrics_tls: https("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"),
        }
    }
}

/// The installed providers; flush and shut them down when the server has stopped.
#[derive(Debug)]
pub struct Telemetry {
    tracer: Option<SdkTracerProvider>,
    meter: Option<SdkMeterProvider>,
}

impl Telemetry {
    pub fn builder() -> TelemetryBuilder {
        TelemetryBuilder::default()
    }

    /// Exports everything recorded so far. Blocks: call it from a blocking thread, never from
    /// a current-thread runtime, where the exporters' own work could never run.
    pub fn force_flush(&self) {
        if let Some(tracer) = &self.tracer {
            let _ = tracer.force_flush();
        }
        if let Some(meter) = &self.meter {
            let _ = meter.force_flush();
        }
    }

    /// Flushes and stops the exporters, waiting at most a few seconds for a collector.
    pub async fn shutdown(self) {
        let stopped = tokio::task::spawn_blocking(move || {
            if let Some(tracer) = self.tracer {
                let _ = tracer.shutdown_with_timeout(EXPORT_DEADLINE);
            }
            if let Some(meter) = self.meter {
                let _ = meter.shutdown_with_timeout(EXPORT_DEADLINE);
            }
        });
        let _ = stopped.await;
    }
}

/// Chooses what [`TelemetryBuilder::install`] installs.
#[derive(Default)]
pub struct TelemetryBuilder {
    log: Option<(String, LogFormat)>,
    tracer: Option<TracerProviderBuilder>,
    meter: Option<MeterProviderBuilder>,
    prometheus: Option<prometheus::Registry>,
}

impl std::fmt::Debug for TelemetryBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryBuilder")
            .field("log", &self.log)
            .field("traces", &self.tracer.is_some())
            .field("metrics", &self.meter.is_some())
            .field("prometheus", &self.prometheus.is_some())
            .finish()
    }
}

impl TelemetryBuilder {
    /// Logs to stderr through `filter` (tracing's EnvFilter syntax) in `format`.
    pub fn log(mut self, filter: &str, format: LogFormat) -> Self {
        self.log = Some((filter.to_owned(), format));
        self
    }

    /// Exports spans in batches from a thread of their own (for a network exporter).
    pub fn batch_span_exporter(self, exporter: impl SpanExporter + 'static) -> Self {
        self.with_tracer(|b| b.with_batch_exporter(exporter))
    }

    /// Exports each span as it ends (for tests' in-memory exporter).
    pub fn simple_span_exporter(self, exporter: impl SpanExporter + 'static) -> Self {
        self.with_tracer(|b| b.with_simple_exporter(exporter))
    }

    fn with_tracer(
        mut self,
        add: impl FnOnce(TracerProviderBuilder) -> TracerProviderBuilder,
    ) -> Self {
        let builder = self
            .tracer
            .take()
            .unwrap_or_else(SdkTracerProvider::builder);
        self.tracer = Some(add(builder));
        self
    }

    /// Pushes metrics to `exporter` every `OTEL_METRIC_EXPORT_INTERVAL` (default 60 s), and
    /// on flush and shutdown.
    pub fn periodic_metric_exporter(self, exporter: impl PushMetricExporter) -> Self {
        self.with_meter(|b| b.with_reader(PeriodicReader::builder(exporter).build()))
    }

    /// Keeps metrics for the Prometheus scrape endpoint.
    pub fn prometheus(mut self) -> anyhow::Result<Self> {
        let registry = prometheus::Registry::new();
        let exporter = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .build()
            .context("building the Prometheus exporter")?;
        self.prometheus = Some(registry);
        Ok(self.with_meter(|b| b.with_reader(exporter)))
    }

    fn with_meter(
        mut self,
        add: impl FnOnce(MeterProviderBuilder) -> MeterProviderBuilder,
    ) -> Self {
        let builder = self.meter.take().unwrap_or_else(SdkMeterProvider::builder);
        self.meter = Some(add(builder));
        self
    }

    /// Installs the log subscriber and the chosen providers, process-wide. Fails when called
    /// twice, or when metrics were recorded before (their instruments are bound for good).
    pub fn install(self) -> anyhow::Result<Telemetry> {
        anyhow::ensure!(
            !metrics::instruments_made(),
            "metric instruments were made before telemetry was installed"
        );
        let resource = resource();

        // Traces.
        let tracer = self
            .tracer
            .map(|b| b.with_resource(resource.clone()).build());
        let otel_layer = tracer.as_ref().map(|provider| {
            // Source locations, thread names and busy/idle times on every span are noise to
            // an operator and cost bytes on every export.
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer(metrics::SCOPE))
                .with_location(false)
                .with_threads(false)
                .with_tracked_inactivity(false)
                .with_filter(traced_targets())
        });
        if let Some(provider) = &tracer {
            opentelemetry::global::set_tracer_provider(provider.clone());
            opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        }

        // Logs.
        let fmt_layer = match &self.log {
            Some((filter, format)) => {
                let filter = EnvFilter::try_new(quiet_sdk(filter))?;
                let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
                let layer = match format {
                    LogFormat::Text => layer.boxed(),
                    LogFormat::Json => layer.json().flatten_event(true).boxed(),
                };
                Some(layer.with_filter(filter))
            }
            None => None,
        };
        tracing_subscriber::registry()
            .with(fmt_layer)
            .with(otel_layer)
            .try_init()
            .map_err(|e| anyhow::anyhow!("installing the log subscriber: {e}"))?;

        // Metrics.
        let meter = self.meter.map(|b| b.with_resource(resource).build());
        if let Some(provider) = &meter {
            opentelemetry::global::set_meter_provider(provider.clone());
        }

        let installed = Installed {
            traces: tracer.is_some(),
            metrics: meter.is_some(),
            prometheus: self.prometheus,
        };
        INSTALLED
            .set(installed)
            .map_err(|_| anyhow::anyhow!("telemetry is installed already"))?;
        Ok(Telemetry { tracer, meter })
    }
}

/// `filter`, with libraries' chatter at INFO kept out unless the filter names them: their
/// warnings and errors still show. OpenTelemetry logs its lifecycle (a collector that is down
/// still shows); PostgreSQL's notices include "relation _sqlx_migrations already exists" at
/// every start.
fn quiet_sdk(filter: &str) -> String {
    let mut filter = filter.to_owned();
    for (name, directive) in [
        ("opentelemetry", "opentelemetry=warn"),
        ("sqlx", "sqlx::postgres::notice=warn"),
    ] {
        if !filter.contains(name) {
            filter = format!("{filter},{directive}");
        }
    }
    filter
}

/// What traces carry: everything of ours down to DEBUG (the catalog and object-store spans),
/// INFO from libraries, and nothing from OpenTelemetry's own exporters (their failures would
/// otherwise feed the pipeline that failed).
fn traced_targets() -> Targets {
    Targets::new()
        .with_default(LevelFilter::INFO)
        .with_target("ckpt_server", LevelFilter::DEBUG)
        .with_target("opentelemetry", LevelFilter::OFF)
        .with_target("opentelemetry_sdk", LevelFilter::OFF)
        .with_target("opentelemetry_otlp", LevelFilter::OFF)
}

/// The standard resource (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`), naming the service
/// `checkpointd` when neither does.
fn resource() -> Resource {
    let named = std::env::var_os("OTEL_SERVICE_NAME").is_some()
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|a| a.contains("service.name="));
    let builder = Resource::builder();
    let builder = match named {
        true => builder,
        false => builder.with_service_name("checkpointd"),
    };
    builder
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build()
}

/// The RPC layer as installed: joins callers' traces when traces are on, records metrics
/// when a meter provider is installed, passes calls through otherwise.
pub fn rpc_layer() -> layer::RpcLayer {
    match INSTALLED.get() {
        Some(installed) => {
            layer::RpcLayer::new(installed.traces, installed.metrics.then(metrics::metrics))
        }
        None => layer::RpcLayer::default(),
    }
}

/// The registry the scrape endpoint serves, when Prometheus was asked for.
pub fn prometheus_registry() -> Option<prometheus::Registry> {
    INSTALLED.get()?.prometheus.clone()
}

/// A server's own telemetry: its pool gauges and its scrape endpoint.
#[derive(Debug)]
pub struct ServerTelemetry {
    _pool_gauges: Vec<opentelemetry::metrics::ObservableUpDownCounter<i64>>,
    endpoint: Option<scrape::MetricsEndpoint>,
}

impl ServerTelemetry {
    /// Registers `catalog`'s pool gauges and, with `--metrics-listen`, starts the endpoint.
    pub async fn start(
        config: &Config,
        catalog: &std::sync::Arc<dyn crate::catalog::Catalog>,
    ) -> anyhow::Result<Self> {
        let endpoint = match config.metrics_listen {
            Some(addr) => {
                let registry = prometheus_registry().context(
                    "--metrics-listen is set but telemetry was installed without Prometheus",
                )?;
                Some(scrape::MetricsEndpoint::start(addr, registry).await?)
            }
            None => None,
        };
        Ok(Self {
            _pool_gauges: catalog::observe_pools(catalog),
            endpoint,
        })
    }

    /// Where the scrape endpoint listens, if it runs.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.endpoint.as_ref().map(scrape::MetricsEndpoint::addr)
    }

    pub async fn shutdown(self) {
        if let Some(endpoint) = self.endpoint {
            endpoint.shutdown().await;
        }
    }
}

/// TLS towards an `https://` collector, trusting the platform's certificate authorities.
fn collector_tls() -> ClientTlsConfig {
    ClientTlsConfig::new().with_enabled_roots()
}

/// Logs where telemetry goes; `main` logs the rest of the configuration.
fn log_config(config: &Config, otlp: &Otlp) {
    info!(
        metrics_listen = %config
            .metrics_listen
            .map_or_else(|| "off".to_owned(), |addr| addr.to_string()),
        otlp_traces = otlp.traces,
        otlp_metrics = otlp.metrics,
        "telemetry configured"
    );
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn library_chatter_is_quiet_unless_the_filter_names_the_library() {
        assert_eq!(
            quiet_sdk("info"),
            "info,opentelemetry=warn,sqlx::postgres::notice=warn"
        );
        assert_eq!(
            quiet_sdk("debug,sqlx=debug"),
            "debug,sqlx=debug,opentelemetry=warn"
        );
    }

    fn otlp(vars: &[(&str, &str)]) -> Otlp {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Otlp::from_lookup(|name| vars.get(name).cloned())
    }

    /// Which signals are exported: (traces, metrics).
    fn exported(vars: &[(&str, &str)]) -> (bool, bool) {
        let otlp = otlp(vars);
        (otlp.traces, otlp.metrics)
    }

    #[test]
    fn otlp_is_off_unless_an_endpoint_is_set() {
        assert_eq!(exported(&[]), (false, false));
        assert_eq!(
            exported(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]),
            (false, false)
        );
        assert_eq!(
            exported(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317")]),
            (true, true)
        );
        assert_eq!(
            exported(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4317")]),
            (true, false)
        );
    }

    #[test]
    fn otlp_honours_the_standard_switches() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317");
        assert_eq!(
            exported(&[endpoint, ("OTEL_METRICS_EXPORTER", "none")]),
            (true, false)
        );
        assert_eq!(
            exported(&[endpoint, ("OTEL_SDK_DISABLED", "TRUE")]),
            (false, false)
        );
    }

    #[test]
    fn an_https_endpoint_turns_tls_on_for_its_signals() {
        let plain = otlp(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317")]);
        assert!(!plain.traces_tls && !plain.metrics_tls);

        let secure = otlp(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "HTTPS://c:4317")]);
        assert!(secure.traces_tls && secure.metrics_tls);

        // A signal's own endpoint wins over the shared one.
        let mixed = otlp(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4317"),
            ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://local:4317"),
        ]);
        assert!(mixed.traces_tls && !mixed.metrics_tls);
    }
}
