//! Telemetry through the real server and the real client: the caller's trace is joined, the
//! catalog and object store add child spans, the RPC layer counts calls by method and status
//! code, and the Prometheus endpoint serves them.
//!
//! Providers are process-wide, so this binary installs one set (in-memory exporters plus the
//! Prometheus reader) before any server starts, and its tests take turns so counts stay exact.

mod common;

use std::sync::OnceLock;

use bytes::Bytes;
use ckpt_client::{Error, NewCheckpoint, ReadFilter, State, Target};
use ckpt_server::telemetry::Telemetry;
use opentelemetry::trace::{SpanId, SpanKind, Status, TraceContextExt, TraceId};
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{
    InMemoryMetricExporter, InMemoryMetricExporterBuilder, Temporality,
};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use common::{Setup, TestEnv, noise};

struct Harness {
    telemetry: Telemetry,
    spans: InMemorySpanExporter,
    metrics: InMemoryMetricExporter,
}

static HARNESS: OnceLock<Harness> = OnceLock::new();
/// Counts are process-wide: one test at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn harness() -> &'static Harness {
    HARNESS.get_or_init(|| {
        let spans = InMemorySpanExporter::default();
        let metrics = InMemoryMetricExporterBuilder::new()
            .with_temporality(Temporality::Cumulative)
            .build();
        let telemetry = Telemetry::builder()
            .simple_span_exporter(spans.clone())
            .periodic_metric_exporter(metrics.clone())
            .prometheus()
            .expect("prometheus exporter")
            .install()
            .expect("telemetry installs");
        Harness {
            telemetry,
            spans,
            metrics,
        }
    })
}

/// The cumulative count of finished calls to `method` that ended with `code`.
async fn rpc_calls(method: &str, code: i64) -> u64 {
    let harness = harness();
    // Flushing blocks on the reader's thread: never on a runtime worker (see the design notes
    // on OpenTelemetry and current-thread runtimes).
    tokio::task::spawn_blocking(|| harness.telemetry.force_flush())
        .await
        .unwrap();
    let exported = harness.metrics.get_finished_metrics().unwrap();
    let Some(latest) = exported.last() else {
        return 0;
    };
    let mut total = 0;
    for scope in latest.scope_metrics() {
        for metric in scope.metrics().filter(|m| m.name() == "rpc.server.calls") {
            let AggregatedMetrics::U64(MetricData::Sum(sum)) = metric.data() else {
                panic!("rpc.server.calls is not a u64 sum");
            };
            for point in sum.data_points() {
                let has = |key: &str, value: &str| {
                    point
                        .attributes()
                        .any(|kv| kv.key.as_str() == key && kv.value.as_str() == value)
                };
                if has("rpc.method", method) && has("rpc.grpc.status_code", &code.to_string()) {
                    total += point.value();
                }
            }
        }
    }
    total
}

fn state_with_an_object() -> State {
    let mut state = State::new();
    // Incompressible and over the inline limit: stored as an object, so the store is called.
    state.insert("blob.bin".into(), Bytes::from(noise(64 * 1024, 7)));
    state.insert("notes.md".into(), Bytes::from_static(b"hello"));
    state
}

/// The finished spans of one trace, printed for `--nocapture` readers.
/// The finished spans of `trace_id`, once the server's span for the call is among them: the
/// server ends that span when the response body is done, which may be just after the client
/// has read the reply.
async fn finished_trace(harness: &Harness, trace_id: TraceId) -> Vec<SpanData> {
    let mut trace = Vec::new();
    for _ in 0..200 {
        trace = harness
            .spans
            .get_finished_spans()
            .unwrap()
            .into_iter()
            .filter(|s| s.span_context.trace_id() == trace_id)
            .collect();
        if trace.iter().any(|s| s.span_kind == SpanKind::Server) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    print_trace(&trace);
    trace
}

fn print_trace(spans: &[SpanData]) {
    println!(
        "{:<28} {:<32} {:<16} {:<16}",
        "name", "trace", "span", "parent"
    );
    for span in spans {
        println!(
            "{:<28} {:<32} {:<16} {:<16}",
            span.name,
            span.span_context.trace_id(),
            span.span_context.span_id(),
            span.parent_span_id
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_create_joins_the_callers_trace_with_catalog_and_store_spans() {
    let harness = harness();
    let _turn = SERIAL.lock().await;
    let env = TestEnv::start(Setup::Sqlite).await;
    let before = rpc_calls("CreateCheckpoint", 0).await;

    let caller = tracing::info_span!("caller");
    let (trace_id, caller_id) = {
        let cx = caller.context();
        let span = cx.span();
        (
            span.span_context().trace_id(),
            span.span_context().span_id(),
        )
    };
    env.client
        .create(NewCheckpoint::full("traced", state_with_an_object()))
        .instrument(caller.clone())
        .await
        .expect("create succeeds");
    drop(caller);

    // The server span is a child of the caller's, in the caller's trace, and says how the
    // call ended; the operation's span is its child.
    let trace = finished_trace(harness, trace_id).await;
    let server = trace
        .iter()
        .find(|s| s.name == "ckpt.v1.CheckpointService/CreateCheckpoint")
        .expect("a server span in the caller's trace");
    assert_eq!(server.parent_span_id, caller_id);
    assert_eq!(server.span_kind, SpanKind::Server);
    assert_eq!(
        attribute(server, "rpc.grpc.status_code"),
        Some("0".to_owned())
    );
    let operation = trace
        .iter()
        .find(|s| s.name == "checkpoint.create")
        .expect("a checkpoint.create span in the caller's trace");
    assert_eq!(operation.parent_span_id, server.span_context.span_id());

    // The catalog and the object store add children.
    let children: Vec<&str> = trace
        .iter()
        .filter(|s| s.parent_span_id == operation.span_context.span_id())
        .map(|s| s.name.as_ref())
        .collect();
    assert!(children.contains(&"catalog.commit"), "{children:?}");
    assert!(children.contains(&"store.put"), "{children:?}");

    assert_eq!(rpc_calls("CreateCheckpoint", 0).await - before, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_without_a_caller_span_starts_a_trace_of_its_own() {
    let harness = harness();
    let _turn = SERIAL.lock().await;
    let env = TestEnv::start(Setup::Sqlite).await;

    let created = env
        .client
        .create(NewCheckpoint::full("untraced", state_with_an_object()))
        .await
        .expect("create succeeds");
    env.client.get(&created.id).await.expect("get succeeds");

    let finished = harness.spans.get_finished_spans().unwrap();
    let server = finished
        .iter()
        .rfind(|s| s.name == "ckpt.v1.CheckpointService/GetCheckpoint")
        .expect("a server span for GetCheckpoint");
    assert_eq!(server.parent_span_id, SpanId::INVALID);
    let get = finished
        .iter()
        .rfind(|s| s.name == "checkpoint.get")
        .expect("a checkpoint.get span");
    assert_eq!(get.parent_span_id, server.span_context.span_id());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_streamed_read_keeps_its_storage_calls_in_the_calls_trace() {
    let harness = harness();
    let _turn = SERIAL.lock().await;
    let env = TestEnv::start(Setup::Sqlite).await;
    let created = env
        .client
        .create(NewCheckpoint::full("streamed", state_with_an_object()))
        .await
        .unwrap();

    let caller = tracing::info_span!("reader");
    let trace_id = caller.context().span().span_context().trace_id();
    env.client
        .read_state(Target::checkpoint(&created.id), ReadFilter::default())
        .instrument(caller.clone())
        .await
        .expect("read succeeds");
    drop(caller);

    // The blobs are read after the handler returned, by the task feeding the stream: those
    // reads were once roots of traces of their own.
    let trace = finished_trace(harness, trace_id).await;
    let names: Vec<&str> = trace.iter().map(|s| s.name.as_ref()).collect();
    assert!(names.contains(&"state.read"), "{names:?}");
    assert!(names.contains(&"store.get"), "{names:?}");
    assert!(names.contains(&"catalog.blobs"), "{names:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_call_is_traced_with_its_code_but_not_as_a_server_error() {
    let harness = harness();
    let _turn = SERIAL.lock().await;
    let env = TestEnv::start(Setup::Sqlite).await;
    let missing = uuid::Uuid::now_v7().to_string();

    let caller = tracing::info_span!("asker");
    let trace_id = caller.context().span().span_context().trace_id();
    let err = env
        .client
        .get(&missing)
        .instrument(caller.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "{err:?}");
    drop(caller);

    let trace = finished_trace(harness, trace_id).await;
    let server = trace
        .iter()
        .find(|s| s.name == "ckpt.v1.CheckpointService/GetCheckpoint")
        .expect("a server span for the refused call");
    assert_eq!(
        attribute(server, "rpc.grpc.status_code"),
        Some("5".to_owned())
    );
    // NOT_FOUND is a correct answer, not the server failing (OpenTelemetry's gRPC conventions).
    assert_eq!(server.status, Status::Unset);
}

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.as_str().into_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_calls_are_counted_with_their_status_code() {
    let _harness = harness();
    let _turn = SERIAL.lock().await;
    let env = TestEnv::start(Setup::Sqlite).await;
    let missing = uuid::Uuid::now_v7().to_string();

    // Unary: the status arrives in the headers.
    let before = rpc_calls("GetCheckpoint", 5).await;
    let err = env.client.get(&missing).await.unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "{err:?}");
    assert_eq!(rpc_calls("GetCheckpoint", 5).await - before, 1);

    // Streaming: a failure before the stream is headers-only too; a success ends in trailers.
    let (not_found, ok) = (
        rpc_calls("ReadState", 5).await,
        rpc_calls("ReadState", 0).await,
    );
    let err = env
        .client
        .read_state(Target::checkpoint(&missing), ReadFilter::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "{err:?}");
    let created = env
        .client
        .create(NewCheckpoint::full("read", state_with_an_object()))
        .await
        .unwrap();
    env.client
        .read_state(Target::checkpoint(&created.id), ReadFilter::default())
        .await
        .expect("read succeeds");
    assert_eq!(rpc_calls("ReadState", 5).await - not_found, 1);
    assert_eq!(rpc_calls("ReadState", 0).await - ok, 1);
}

/// `GET path` over plain HTTP/1.1; returns the status line and the body.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head.lines().next().unwrap_or_default().to_owned();
    (status, body.to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_prometheus_endpoint_serves_rpc_counts() {
    let _harness = harness();
    let _turn = SERIAL.lock().await;
    let env = TestEnv::start_with(Setup::Sqlite, |c| {
        c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let calls = 3;
    for i in 0..calls {
        env.client
            .create(NewCheckpoint::full(
                format!("scraped-{i}"),
                state_with_an_object(),
            ))
            .await
            .unwrap();
    }

    let addr = env
        .server
        .as_ref()
        .unwrap()
        .metrics_addr()
        .expect("endpoint");
    let (status, body) = http_get(addr, "/metrics").await;
    assert!(status.contains("200"), "{status}");
    let sample: Vec<&str> = body
        .lines()
        .filter(|l| {
            l.starts_with("rpc_server_calls_total")
                || l.starts_with("rpc_server_call_duration_seconds_bucket{")
                    && l.contains("CreateCheckpoint")
                    && l.contains("le=\"0.01\"")
                || l.starts_with("db_client_connection")
                || l.starts_with("ckpt_")
        })
        .collect();
    println!("{}", sample.join("\n"));

    let created: f64 = body
        .lines()
        .filter(|l| {
            l.starts_with("rpc_server_calls_total{")
                && l.contains("rpc_method=\"CreateCheckpoint\"")
                && l.contains("rpc_grpc_status_code=\"0\"")
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert!(created >= f64::from(calls), "{created}\n{body}");
    assert!(body.contains("rpc_server_call_duration_seconds_bucket{"));
    assert!(body.contains("db_client_connection_count{"));
    assert!(body.contains("ckpt_write_stored_bytes_total"));
    assert!(body.contains("ckpt_store_operations_total{"));

    let (status, _) = http_get(addr, "/elsewhere").await;
    assert!(status.contains("404"), "{status}");
}
