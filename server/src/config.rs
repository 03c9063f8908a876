//! checkpointd's configuration: flags, each with a `CKPT_` environment twin.

use crate::core::retention::Policy;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use clap::{Parser, ValueEnum};

use crate::auth::RateLimit;
use crate::core::EngineConfig;
use crate::tls::TlsFiles;

/// checkpointd: a networked checkpoint service for AI-agent sessions.
#[derive(Debug, Clone, Parser)]
#[command(name = "checkpointd", version, about)]
pub struct Config {
    /// Address to serve gRPC on.
    #[arg(long, env = "CKPT_LISTEN", default_value = "127.0.0.1:7777")]
    pub listen: SocketAddr,

    /// Where the embedded default keeps its data: the SQLite catalog `catalog.db` and the
    /// chunk directory `chunks/`, unless --database and --store say otherwise.
    #[arg(long, env = "CKPT_DATA_DIR", default_value = "./checkpointd-data")]
    pub data_dir: PathBuf,

    /// Catalog database: a `postgres://` URL, or a SQLite file (`sqlite://PATH` or a plain
    /// path). Default: DATA_DIR/catalog.db.
    // Its value may hold a password: --help must not show it.
    #[arg(long, env = "CKPT_DATABASE", hide_env_values = true)]
    pub database: Option<String>,

    /// Object store for chunks: a directory, or `s3://bucket/prefix` (endpoint, region and
    /// credentials from the usual AWS_* variables). Default: DATA_DIR/chunks.
    #[arg(long, env = "CKPT_STORE", hide_env_values = true)]
    pub store: Option<String>,

    /// Database connections in the pool.
    #[arg(long, env = "CKPT_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,

    /// How long a call waits for a database connection before failing with UNAVAILABLE.
    #[arg(long, env = "CKPT_DB_ACQUIRE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub db_acquire_timeout: Duration,

    /// Largest value a state may hold.
    #[arg(long, env = "CKPT_MAX_VALUE_SIZE", default_value = "1GiB")]
    pub max_value_size: ByteSize,

    /// Largest gRPC message, in either direction; at least 4MiB, since clients send states of
    /// up to 2 MiB in one message and stream larger ones.
    #[arg(long, env = "CKPT_MAX_MESSAGE_SIZE", default_value = "64MiB", value_parser = message_size)]
    pub max_message_size: ByteSize,

    /// zstd level for stored chunks (1-19).
    #[arg(long, env = "CKPT_ZSTD_LEVEL", default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=19))]
    pub zstd_level: i32,

    /// Chunks and manifest pages at most this size (compressed) are kept in the catalog row
    /// instead of a separate object.
    #[arg(long, env = "CKPT_INLINE_MAX", default_value = "8KiB")]
    pub inline_max: ByteSize,

    /// How long in-flight calls may run after SIGTERM before the server stops anyway.
    #[arg(long, env = "CKPT_SHUTDOWN_GRACE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,

    /// Retention policy for sessions and branches without an override, e.g.
    /// "last=50,within=7days,daily=30". "none" keeps everything. Heads and tags are always kept.
    #[arg(long, env = "CKPT_RETENTION", default_value = "none")]
    pub retention: Policy,

    /// How often this instance runs a collection pass (retention, then freeing unreferenced
    /// blobs); "0s" turns the schedule off. Instances take turns through a lease: one pass
    /// runs at a time across the deployment.
    #[arg(long, env = "CKPT_GC_INTERVAL", default_value = "1h", value_parser = humantime::parse_duration)]
    pub gc_interval: Duration,

    /// How long an uploaded object may wait for its commit before collection reclaims it.
    /// Writes slower than half of this are refused.
    #[arg(long, env = "CKPT_UPLOAD_LEASE", default_value = "24h", value_parser = humantime::parse_duration)]
    pub upload_lease: Duration,

    /// How long a collector's lease lasts without renewal: the delay before another instance
    /// takes over from a collector that died.
    #[arg(long, env = "CKPT_COLLECTOR_LEASE", default_value = "60s", value_parser = humantime::parse_duration)]
    pub collector_lease: Duration,

    /// How long the change feed keeps events; each collection pass drops older ones. A watcher resuming from an older cursor is refused
    /// with FAILED_PRECONDITION rather than silently missing events.
    #[arg(long, env = "CKPT_FEED_RETENTION", default_value = "7days", value_parser = humantime::parse_duration)]
    pub feed_retention: Duration,

    /// Log format.
    #[arg(long, env = "CKPT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter, in tracing's EnvFilter syntax.
    #[arg(long, env = "CKPT_LOG", default_value = "info")]
    pub log: String,

    // Protection.
    /// Longest a call may run, streamed uploads and reads included; a client's shorter
    /// deadline wins. A call past it ends with DEADLINE_EXCEEDED and commits nothing. Allow for
    /// the largest state over the slowest client link. "0s" leaves only the clients' deadlines.
    #[arg(long, env = "CKPT_REQUEST_TIMEOUT", default_value = "5m", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,

    /// Calls served at once; any call beyond them is refused at once with RESOURCE_EXHAUSTED,
    /// never queued. Health checks and reflection do not count.
    #[arg(long, env = "CKPT_MAX_CONCURRENT_CALLS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_calls: u32,

    /// On SIGTERM, how long health reports NOT_SERVING while calls are still accepted, so
    /// that load balancers stop sending new ones before the listener closes. The grace period
    /// for in-flight calls starts after it.
    #[arg(long, env = "CKPT_SHUTDOWN_DRAIN_DELAY", default_value = "0s", value_parser = humantime::parse_duration)]
    pub shutdown_drain_delay: Duration,

    // Access.
    /// Whether every call needs an API key (`required`) or none does (`off`). Off is allowed
    /// only while --listen is a loopback address, unless --allow-unauthenticated says
    /// otherwise. Keys come from `checkpointd keys create`.
    #[arg(long, env = "CKPT_AUTH", value_enum, default_value_t = AuthMode::Off)]
    pub auth: AuthMode,

    /// Serve with --auth off on an address beyond loopback: anyone who reaches the port may
    /// read, write and delete every session. Only for a network where something else admits
    /// callers.
    #[arg(long, env = "CKPT_ALLOW_UNAUTHENTICATED")]
    pub allow_unauthenticated: bool,

    /// Calls per second each tenant may make to this instance; beyond it calls are refused
    /// with RESOURCE_EXHAUSTED. "0" means no limit. Applies only with --auth required.
    #[arg(long, env = "CKPT_RATE_LIMIT", default_value_t = 0)]
    pub rate_limit: u32,

    /// Calls a tenant may make at once above --rate-limit after a quiet spell. Default: one
    /// second's worth (the rate itself).
    #[arg(long, env = "CKPT_RATE_LIMIT_BURST", value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit_burst: Option<u32>,

    /// PEM certificate chain to serve TLS with (the server's certificate first); needs
    /// --tls-key. Unset: plain-text HTTP/2.
    #[arg(long, env = "CKPT_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "CKPT_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA certificate(s) for mutual TLS: every client must present a certificate they
    /// signed. Unset: no client certificate is asked for.
    #[arg(long, env = "CKPT_TLS_CLIENT_CA", value_name = "FILE")]
    pub tls_client_ca: Option<PathBuf>,

    /// How often the TLS files are checked for changes; changed files are loaded for new
    /// connections without a restart. SIGHUP reloads at once; "0s" leaves it to SIGHUP.
    #[arg(long, env = "CKPT_TLS_RELOAD_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub tls_reload_interval: Duration,

    // Telemetry.
    //
    // Traces and metrics go to an OTLP collector when the standard OTEL_EXPORTER_OTLP_*
    // variables name one (see telemetry::init); these flags add what the environment cannot.
    /// Address to serve Prometheus metrics on, at `GET /metrics`. Unset: no endpoint.
    #[arg(long, env = "CKPT_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
}

/// Whether calls need an API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthMode {
    /// Every call but health checks and reflection needs a valid key.
    Required,
    /// No authentication: anyone who reaches the port may do anything. Loopback only.
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

impl Config {
    /// The configuration with every default, listening on `listen`; tests start from this.
    pub fn for_test(listen: SocketAddr, database: &str, store: &str) -> Self {
        let mut config = Config::parse_from(["checkpointd"]);
        config.listen = listen;
        config.database = Some(database.to_owned());
        config.store = Some(store.to_owned());
        config
    }

    pub fn engine(&self) -> EngineConfig {
        EngineConfig {
            zstd_level: self.zstd_level,
            inline_max_bytes: self.inline_max.as_u64() as usize,
            max_value_bytes: self.max_value_size.as_u64(),
            upload_lease: self.upload_lease,
            collector_lease: self.collector_lease,
            feed_retention: self.feed_retention,
            default_retention: self.retention.clone(),
            ..EngineConfig::default()
        }
    }

    /// The TLS files, when TLS is configured; an error names a half-configured pair.
    pub fn tls_files(&self) -> Result<Option<TlsFiles>, String> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Ok(Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.tls_client_ca.clone(),
            })),
            (None, None) if self.tls_client_ca.is_none() => Ok(None),
            (None, None) => Err("--tls-client-ca needs --tls-cert and --tls-key".into()),
            (Some(_), None) => Err("--tls-cert needs --tls-key".into()),
            (None, Some(_)) => Err("--tls-key needs --tls-cert".into()),
        }
    }

    /// Refuses to serve without authentication beyond loopback, unless told to.
    pub fn check_auth(&self) -> Result<(), String> {
        let beyond_loopback = !self.listen.ip().is_loopback();
        if self.auth == AuthMode::Off && beyond_loopback && !self.allow_unauthenticated {
            return Err(format!(
                "refusing to listen on {} with --auth off: without authentication anyone who \
                 reaches the port may read, write and delete every session. Use --auth required \
                 (create keys with `checkpointd keys create`), listen on a loopback address, \
                 or add --allow-unauthenticated if something else admits callers",
                self.listen
            ));
        }
        Ok(())
    }

    /// The per-tenant rate limit, when one is set.
    pub fn rate_limit(&self) -> Option<RateLimit> {
        (self.rate_limit > 0).then(|| RateLimit {
            per_second: f64::from(self.rate_limit),
            burst: f64::from(self.rate_limit_burst.unwrap_or(self.rate_limit)),
        })
    }

    /// The catalog URL or path in effect.
    pub fn database(&self) -> String {
        self.database.clone().unwrap_or_else(|| {
            self.data_dir
                .join("catalog.db")
                .to_string_lossy()
                .into_owned()
        })
    }

    /// The object store in effect.
    pub fn store(&self) -> String {
        self.store
            .clone()
            .unwrap_or_else(|| self.data_dir.join("chunks").to_string_lossy().into_owned())
    }

    /// The database URL with any password replaced, for logs.
    pub fn redacted_database(&self) -> String {
        redact_url_password(&self.database())
    }
}

/// `url` with passwords replaced by `***`: the one of `scheme://user:password@host`, and
/// the value of a `password=` query parameter.
pub fn redact_url_password(url: &str) -> String {
    let mut url = match url_password_span(url) {
        Some((start, end)) => format!("{}***{}", &url[..start], &url[end..]),
        None => url.to_owned(),
    };
    let mut from = 0;
    while let Some(found) = url[from..].find("password=") {
        let start = from + found + "password=".len();
        let preceded = url[..from + found].ends_with(['?', '&']);
        let end = url[start..].find('&').map_or(url.len(), |i| start + i);
        if preceded {
            url.replace_range(start..end, "***");
        }
        from = start;
    }
    url
}

/// Smallest `--max-message-size`: the Rust client sends states up to 2 MiB in one message
/// (`ckpt_client::UNARY_LIMIT`); twice that leaves room for the envelope and metadata.
const MIN_MESSAGE_SIZE: ByteSize = ByteSize::mib(4);

fn message_size(text: &str) -> Result<ByteSize, String> {
    let size: ByteSize = text.parse()?;
    if size < MIN_MESSAGE_SIZE {
        return Err(format!(
            "{size} is below the minimum of {MIN_MESSAGE_SIZE}: clients send states up to 2 MiB in one message"
        ));
    }
    Ok(size)
}

/// Byte range of the password in `scheme://user:password@host`, if any.
fn url_password_span(url: &str) -> Option<(usize, usize)> {
    let authority_start = url.find("://")? + 3;
    let at = authority_start + url[authority_start..].find('@')?;
    let colon = authority_start + url[authority_start..at].find(':')?;
    Some((colon + 1, at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        let mut c = Config::for_test(
            "127.0.0.1:0".parse().unwrap(),
            "postgres://u:secret@h:5432/db",
            "x",
        );
        assert_eq!(c.redacted_database(), "postgres://u:***@h:5432/db");
        c.database = Some("postgres://u@h/db".into());
        assert_eq!(c.redacted_database(), "postgres://u@h/db");
        c.database = Some("postgres://u@h/db?sslmode=require&password=hunter2&x=1".into());
        assert_eq!(
            c.redacted_database(),
            "postgres://u@h/db?sslmode=require&password=***&x=1"
        );
        c.database = Some("postgres://u@h/db?password=hunter2".into());
        assert_eq!(c.redacted_database(), "postgres://u@h/db?password=***");
    }

    #[test]
    fn with_no_flags_everything_lives_under_the_data_dir() {
        let c = Config::parse_from(["checkpointd"]);
        assert_eq!(c.listen.to_string(), "127.0.0.1:7777");
        assert_eq!(c.database(), "./checkpointd-data/catalog.db");
        assert_eq!(c.store(), "./checkpointd-data/chunks");
        let c = Config::parse_from(["checkpointd", "--data-dir", "/srv/ckpt"]);
        assert_eq!(c.database(), "/srv/ckpt/catalog.db");
    }

    #[test]
    fn protection_flags_parse_durations_and_refuse_a_zero_limit() {
        let c = Config::parse_from(["checkpointd"]);
        assert_eq!(c.request_timeout, Duration::from_secs(300));
        assert_eq!(c.max_concurrent_calls, 1024);
        assert_eq!(c.shutdown_drain_delay, Duration::ZERO);
        let c = Config::parse_from([
            "checkpointd",
            "--request-timeout",
            "90s",
            "--shutdown-drain-delay",
            "5s",
        ]);
        assert_eq!(c.request_timeout, Duration::from_secs(90));
        assert_eq!(c.shutdown_drain_delay, Duration::from_secs(5));
        assert!(Config::try_parse_from(["checkpointd", "--max-concurrent-calls", "0"]).is_err());
    }

    #[test]
    fn a_message_size_below_what_clients_send_is_refused() {
        let err =
            Config::try_parse_from(["checkpointd", "--max-message-size", "1MiB"]).unwrap_err();
        assert!(err.to_string().contains("minimum"), "{err}");
        let c = Config::parse_from(["checkpointd", "--max-message-size", "4MiB"]);
        assert_eq!(c.max_message_size, ByteSize::mib(4));
    }

    #[test]
    fn auth_may_be_off_only_on_loopback() {
        let c = Config::parse_from(["checkpointd"]);
        assert_eq!(c.auth, AuthMode::Off);
        assert!(c.check_auth().is_ok());
        let c = Config::parse_from(["checkpointd", "--listen", "[::1]:7777"]);
        assert!(c.check_auth().is_ok());
        let c = Config::parse_from(["checkpointd", "--listen", "0.0.0.0:7777"]);
        let err = c.check_auth().unwrap_err();
        assert!(err.contains("--auth required"), "{err}");
        let c = Config::parse_from([
            "checkpointd",
            "--listen",
            "0.0.0.0:7777",
            "--auth",
            "required",
        ]);
        assert!(c.check_auth().is_ok());
        let c = Config::parse_from([
            "checkpointd",
            "--listen",
            "0.0.0.0:7777",
            "--allow-unauthenticated",
        ]);
        assert!(c.check_auth().is_ok());
    }

    #[test]
    fn tls_needs_both_files() {
        assert_eq!(Config::parse_from(["checkpointd"]).tls_files(), Ok(None));
        let c = Config::parse_from(["checkpointd", "--tls-cert", "c.pem"]);
        assert!(c.tls_files().unwrap_err().contains("--tls-key"));
        let c = Config::parse_from(["checkpointd", "--tls-client-ca", "ca.pem"]);
        assert!(c.tls_files().is_err());
        let c = Config::parse_from([
            "checkpointd",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--tls-client-ca",
            "ca.pem",
        ]);
        let files = c.tls_files().unwrap().unwrap();
        assert_eq!(files.client_ca, Some(PathBuf::from("ca.pem")));
    }

    #[test]
    fn the_rate_limit_bursts_one_second_by_default() {
        assert_eq!(Config::parse_from(["checkpointd"]).rate_limit(), None);
        let c = Config::parse_from(["checkpointd", "--rate-limit", "50"]);
        assert_eq!(c.rate_limit().unwrap().burst, 50.0);
        let c = Config::parse_from([
            "checkpointd",
            "--rate-limit",
            "50",
            "--rate-limit-burst",
            "5",
        ]);
        assert_eq!(c.rate_limit().unwrap().burst, 5.0);
    }

    #[test]
    fn sizes_parse_with_units() {
        let c = Config::parse_from(["checkpointd", "--max-value-size", "2MiB"]);
        assert_eq!(c.max_value_size.as_u64(), 2 * 1024 * 1024);
    }
}
