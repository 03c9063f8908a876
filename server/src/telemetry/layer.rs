//! [`RpcLayer`]: the one tower layer that gives every gRPC call its telemetry. When traces are
//! on, each call gets a server span (`package.Service/Method`) joined to the caller's trace
//! (W3C `traceparent`/`tracestate` metadata) and carrying the status code; the handler's
//! operation span (`checkpoint.create`, …) is its child. It records the call's count, latency,
//! in-flight gauge and received bytes by method and status code.
//!
//! The status code is read from the response headers when the call ends without a body
//! (tonic answers every error that way, before or instead of a stream); otherwise from the
//! trailers that close the body, so a stream is timed and counted when it finishes. A body
//! dropped before its trailers (the caller went away) counts as CANCELLED.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use futures::future::{BoxFuture, Either};
use http::{HeaderMap, Request, Response};
use http_body::{Frame, SizeHint};
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry::{KeyValue, StringValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use prost::Message;
use tonic::body::Body;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::metrics::Metrics;

/// gRPC's CANCELLED: the caller went away before the response ended.
const CANCELLED: i64 = 1;
/// gRPC's UNKNOWN: a response that ended without saying how.
const UNKNOWN: i64 = 2;

/// Builds [`RpcService`]s. A disabled layer (neither traces nor metrics) passes calls through.
#[derive(Clone, Debug, Default)]
pub struct RpcLayer {
    shared: Option<Arc<Shared>>,
}

#[derive(Debug)]
struct Shared {
    join_traces: bool,
    metrics: Option<&'static Metrics>,
    methods: HashMap<String, Labels>,
    other: Labels,
}

impl RpcLayer {
    /// A layer joining callers' traces when `join_traces`, and recording into `metrics` when
    /// given; with neither, a pass-through.
    pub fn new(join_traces: bool, metrics: Option<&'static Metrics>) -> Self {
        if !join_traces && metrics.is_none() {
            return Self::default();
        }
        let shared = Shared {
            join_traces,
            metrics,
            methods: known_methods(),
            other: Labels::new("_OTHER", "_OTHER"),
        };
        Self {
            shared: Some(Arc::new(shared)),
        }
    }
}

impl<S> tower::Layer<S> for RpcLayer {
    type Service = RpcService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The labels that name a method: prebuilt once, so a call clones two reference counts.
#[derive(Clone, Debug)]
struct Labels {
    service: KeyValue,
    method: KeyValue,
}

impl Labels {
    fn new(service: &str, method: &str) -> Self {
        Self {
            service: KeyValue::new("rpc.service", StringValue::from(Arc::<str>::from(service))),
            method: KeyValue::new("rpc.method", StringValue::from(Arc::<str>::from(method))),
        }
    }

    fn with_code(&self, code: i64) -> [KeyValue; 4] {
        [
            KeyValue::new("rpc.system", "grpc"),
            self.service.clone(),
            self.method.clone(),
            KeyValue::new("rpc.grpc.status_code", code),
        ]
    }

    fn without_code(&self) -> [KeyValue; 3] {
        [
            KeyValue::new("rpc.system", "grpc"),
            self.service.clone(),
            self.method.clone(),
        ]
    }
}

/// Every method the server serves, by request path (`/package.Service/Method`). Paths outside
/// it are labelled `_OTHER`, so a scanner cannot grow the label set.
fn known_methods() -> HashMap<String, Labels> {
    let sets = [
        ckpt_proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
    ];
    let mut methods = HashMap::new();
    for set in sets {
        let Ok(set) = prost_types::FileDescriptorSet::decode(set) else {
            continue;
        };
        for file in set.file {
            let package = file.package();
            for service in &file.service {
                let service_name = match package {
                    "" => service.name().to_owned(),
                    package => format!("{package}.{}", service.name()),
                };
                for method in &service.method {
                    let path = format!("/{service_name}/{}", method.name());
                    methods.insert(path, Labels::new(&service_name, method.name()));
                }
            }
        }
    }
    methods
}

/// A service wrapped by [`RpcLayer`].
#[derive(Clone, Debug)]
pub struct RpcService<S> {
    inner: S,
    shared: Option<Arc<Shared>>,
}

impl<S> tower::Service<Request<Body>> for RpcService<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Either<S::Future, BoxFuture<'static, Result<Response<Body>, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let Some(shared) = &self.shared else {
            return Either::Left(self.inner.call(request));
        };

        let labels = shared
            .methods
            .get(request.uri().path())
            .unwrap_or(&shared.other)
            .clone();
        let span = shared
            .join_traces
            .then(|| server_span(&labels, request.headers()));

        let mut request = request;
        if let Some(metrics) = shared.metrics {
            request = request.map(|body| {
                Body::new(CountedBody {
                    inner: body,
                    bytes: 0,
                    metrics,
                    labels: labels.clone(),
                })
            });
        }
        let call = Call::start(shared.metrics, labels, span.clone());

        // The handler runs inside the server span, so its operation span is a child of it.
        let response = match &span {
            Some(span) => span.in_scope(|| self.inner.call(request)),
            None => self.inner.call(request),
        };
        let future = async move {
            let response = response.await?;
            Ok(call.on_response(response))
        };
        match span {
            Some(span) => Either::Right(Box::pin(future.instrument(span))),
            None => Either::Right(Box::pin(future)),
        }
    }
}

/// The server span of one call, parented on the caller's span when the request names one.
/// Its status fields are filled in by [`Call::finish`].
fn server_span(labels: &Labels, headers: &HeaderMap) -> tracing::Span {
    let span = tracing::info_span!(
        target: "ckpt_server::rpc",
        "rpc",
        otel.name = %format_args!("{}/{}", labels.service.value, labels.method.value),
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = %labels.service.value,
        rpc.method = %labels.method.value,
        rpc.grpc.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    if let Some(cx) = caller_context(headers) {
        let _ = span.set_parent(cx);
    }
    span
}

/// Whether a status code is the server's failure rather than the caller's, as OpenTelemetry's
/// conventions for gRPC servers say: NOT_FOUND or INVALID_ARGUMENT is a correct answer.
fn is_server_error(code: i64) -> bool {
    matches!(code, 2 | 4 | 12 | 13 | 14 | 15)
}

/// The caller's trace context from `traceparent`/`tracestate`, when it names a valid span.
fn caller_context(headers: &HeaderMap) -> Option<opentelemetry::Context> {
    headers.get("traceparent")?;
    let cx = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    cx.span().span_context().is_valid().then_some(cx)
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

fn grpc_status(headers: &HeaderMap) -> Option<i64> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// One call being measured and traced; recorded exactly once, when it ends or is dropped.
#[derive(Debug)]
struct Call {
    metrics: Option<&'static Metrics>,
    labels: Labels,
    span: Option<tracing::Span>,
    start: Instant,
    done: bool,
}

impl Call {
    fn start(
        metrics: Option<&'static Metrics>,
        labels: Labels,
        span: Option<tracing::Span>,
    ) -> Self {
        if let Some(metrics) = metrics {
            metrics.rpc_active.add(1, &labels.without_code());
        }
        Self {
            metrics,
            labels,
            span,
            start: Instant::now(),
            done: false,
        }
    }

    /// Records the call now when the headers carry its status, else when its body ends.
    fn on_response(mut self, response: Response<Body>) -> Response<Body> {
        if let Some(code) = grpc_status(response.headers()) {
            self.finish(code);
            return response;
        }
        response.map(|body| {
            Body::new(MeteredBody {
                inner: body,
                call: self,
            })
        })
    }

    fn finish(&mut self, code: i64) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        if let Some(span) = self.span.take() {
            span.record("rpc.grpc.status_code", code);
            if is_server_error(code) {
                span.record("otel.status_code", "ERROR");
            }
        }
        let Some(metrics) = self.metrics else {
            return;
        };
        let attributes = self.labels.with_code(code);
        let seconds = self.start.elapsed().as_secs_f64();
        metrics.rpc_calls.add(1, &attributes);
        metrics.rpc_duration.record(seconds, &attributes);
        metrics.rpc_active.add(-1, &self.labels.without_code());
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.finish(CANCELLED);
    }
}

/// A response body that records its call when the trailers pass (or it ends or is dropped).
struct MeteredBody {
    inner: Body,
    call: Call,
}

impl http_body::Body for MeteredBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(trailers) = frame.trailers_ref() {
                    this.call.finish(grpc_status(trailers).unwrap_or(UNKNOWN));
                }
            }
            Some(Err(status)) => this.call.finish(status.code() as i64),
            None => this.call.finish(UNKNOWN),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body that counts the bytes read through it, recorded once when it is dropped.
struct CountedBody {
    inner: Body,
    bytes: u64,
    metrics: &'static Metrics,
    labels: Labels,
}

impl http_body::Body for CountedBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        if let Some(Ok(data)) = frame.as_ref().map(|f| f.as_ref().map(Frame::data_ref)) {
            this.bytes += data.map_or(0, |d| d.len() as u64);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for CountedBody {
    fn drop(&mut self) {
        if self.bytes > 0 {
            let labels = self.labels.without_code();
            self.metrics.rpc_received.add(self.bytes, &labels);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_checkpoint_service_method_is_known_by_its_path() {
        let methods = known_methods();
        let create = &methods["/ckpt.v1.CheckpointService/CreateCheckpoint"];
        assert_eq!(create.method.value.as_str(), "CreateCheckpoint");
        assert_eq!(create.service.value.as_str(), "ckpt.v1.CheckpointService");
        assert!(methods.contains_key("/grpc.health.v1.Health/Check"));
    }

    #[test]
    fn a_caller_context_needs_a_valid_traceparent() {
        let mut headers = HeaderMap::new();
        assert!(caller_context(&headers).is_none());
        headers.insert("traceparent", "garbage".parse().unwrap());
        assert!(caller_context(&headers).is_none());
        headers.insert(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
                .parse()
                .unwrap(),
        );
        let cx = caller_context(&headers).expect("a valid context");
        let span = cx.span();
        let parent = span.span_context();
        assert_eq!(
            parent.trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert!(parent.is_remote());
    }
}
