//! Tower layers that protect the server: a deadline on every call and a global limit on calls in
//! flight that turns the excess away at once. `server::start` stacks them in front of the router.
//!
//! Both cover the whole call, response body included: a server-streaming read that a client
//! drains slowly keeps its permit, and meets its deadline, like any other call. Health checks and
//! reflection are exempt from the limit and from the server's own cap on duration, so an
//! overloaded server still answers its probes and a health `Watch` may stay open.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::Frame;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tonic::Status;
use tonic::body::Body;
use tower::{Layer, Service};

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'static>>;

/// Path prefixes of the calls that stay reachable under any load, and without an API key.
const EXEMPT: [&str; 3] = [
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// Calls that are open for as long as their client wants: out of the concurrency limit and the
/// deadline, but not of authentication. The change feed's `Watch` has a cap of its own (see
/// `grpc::feed`).
const OPEN_ENDED: [&str; 1] = ["/ckpt.v1.CheckpointService/Watch"];

/// Health checks and reflection: no key, no limit, no deadline.
pub(crate) fn is_exempt<B>(request: &Request<B>) -> bool {
    let path = request.uri().path();
    EXEMPT.iter().any(|prefix| path.starts_with(prefix))
}

/// Calls the concurrency limit and the deadline leave alone.
fn is_unlimited<B>(request: &Request<B>) -> bool {
    is_exempt(request) || OPEN_ENDED.contains(&request.uri().path())
}

// ---------------------------------------------------------------------------------------------
// Concurrency limit
// ---------------------------------------------------------------------------------------------

/// Serves at most `limit` calls at once and answers any call beyond that at once with
/// RESOURCE_EXHAUSTED. Nothing waits in a queue: a queue would only turn overload into
/// latency, while a prompt refusal lets the client back off or try another instance.
#[derive(Clone, Debug)]
pub struct ConcurrencyLimitLayer {
    permits: Arc<Semaphore>,
    limit: usize,
}

impl ConcurrencyLimitLayer {
    /// A limit of `limit` calls in flight; at least one is always allowed.
    pub fn new(limit: usize) -> Self {
        let limit = limit.max(1);
        Self {
            permits: Arc::new(Semaphore::new(limit)),
            limit,
        }
    }
}

impl<S> Layer<S> for ConcurrencyLimitLayer {
    type Service = ConcurrencyLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ConcurrencyLimit {
            inner,
            permits: Arc::clone(&self.permits),
            limit: self.limit,
        }
    }
}

/// See [`ConcurrencyLimitLayer`].
#[derive(Clone, Debug)]
pub struct ConcurrencyLimit<S> {
    inner: S,
    permits: Arc<Semaphore>,
    limit: usize,
}

impl<S, B> Service<Request<B>> for ConcurrencyLimit<S>
where
    S: Service<Request<B>, Response = Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Response<Body>, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if is_unlimited(&request) {
            return Box::pin(self.inner.call(request));
        }
        let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() else {
            let refusal = Status::resource_exhausted(format!(
                "server is at its limit of {} concurrent calls; retry with backoff",
                self.limit
            ));
            return Box::pin(std::future::ready(Ok(refusal.into_http())));
        };
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| Guarded::wrap(body, None, Some(permit))))
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Deadline
// ---------------------------------------------------------------------------------------------

/// Ends every call at the earlier of the client's deadline (the `grpc-timeout` header) and
/// `max` after it arrived, with DEADLINE_EXCEEDED. A handler cut short is dropped, which is how
/// a cancelled call ends too: writes commit in one transaction, so nothing partial remains.
///
/// tonic's own `Server::timeout` stops at the response headers, so it would let a streamed
/// response run on forever, and it answers CANCELLED, which reads as if the client gave up.
#[derive(Clone, Copy, Debug)]
pub struct DeadlineLayer {
    max: Option<Duration>,
}

impl DeadlineLayer {
    /// Caps every call at `max`; zero leaves only the clients' own deadlines.
    pub fn new(max: Duration) -> Self {
        Self {
            max: (!max.is_zero()).then_some(max),
        }
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Deadline {
            inner,
            max: self.max,
        }
    }
}

/// See [`DeadlineLayer`].
#[derive(Clone, Debug)]
pub struct Deadline<S> {
    inner: S,
    max: Option<Duration>,
}

impl<S, B> Service<Request<B>> for Deadline<S>
where
    S: Service<Request<B>, Response = Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Response<Body>, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let cap = if is_unlimited(&request) {
            None
        } else {
            self.max
        };
        let Some(limit) = earlier(grpc_timeout(request.headers()), cap) else {
            return Box::pin(self.inner.call(request));
        };
        let deadline = Instant::now() + limit;
        let response = self.inner.call(request);
        Box::pin(async move {
            match tokio::time::timeout_at(deadline, response).await {
                Ok(response) => Ok(response?.map(|body| Guarded::wrap(body, Some(deadline), None))),
                Err(_) => Ok(deadline_exceeded().into_http()),
            }
        })
    }
}

fn earlier(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn deadline_exceeded() -> Status {
    Status::deadline_exceeded("the call ran past its deadline and was stopped")
}

/// The client's deadline from `grpc-timeout`: at most eight digits and a unit (H, M, S, m, u,
/// n), per gRPC over HTTP/2. A malformed value counts as absent.
fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

// ---------------------------------------------------------------------------------------------
// Response body
// ---------------------------------------------------------------------------------------------

/// A response body that holds a concurrency permit until it ends or is dropped, and that ends
/// with DEADLINE_EXCEEDED trailers if its deadline passes first.
struct Guarded {
    inner: Body,
    deadline: Option<Pin<Box<Sleep>>>,
    _permit: Option<OwnedSemaphorePermit>,
    /// Trailers went out (ours or the inner body's): nothing may follow.
    ended: bool,
}

impl Guarded {
    fn wrap(inner: Body, deadline: Option<Instant>, permit: Option<OwnedSemaphorePermit>) -> Body {
        // An already finished body (a trailers-only answer) is dropped here by `Body::new`,
        // and the permit with it.
        Body::new(Guarded {
            inner,
            deadline: deadline.map(|at| Box::pin(tokio::time::sleep_until(at))),
            _permit: permit,
            ended: false,
        })
    }
}

impl http_body::Body for Guarded {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        if let Some(sleep) = this.deadline.as_mut()
            && sleep.as_mut().poll(cx).is_ready()
        {
            this.ended = true;
            let mut trailers = HeaderMap::new();
            // Cannot fail: the status's code and message are plain ASCII.
            let _ = deadline_exceeded().add_header(&mut trailers);
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        let frame = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &frame
            && frame.is_trailers()
        {
            this.ended = true;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn timeout_of(value: &str) -> Option<Duration> {
        let mut headers = HeaderMap::new();
        headers.insert("grpc-timeout", HeaderValue::from_str(value).unwrap());
        grpc_timeout(&headers)
    }

    #[test]
    fn grpc_timeouts_parse_in_every_unit() {
        assert_eq!(timeout_of("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(timeout_of("3M"), Some(Duration::from_secs(180)));
        assert_eq!(timeout_of("4S"), Some(Duration::from_secs(4)));
        assert_eq!(timeout_of("500m"), Some(Duration::from_millis(500)));
        assert_eq!(timeout_of("250u"), Some(Duration::from_micros(250)));
        assert_eq!(
            timeout_of("99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
    }

    #[test]
    fn malformed_grpc_timeouts_count_as_absent() {
        for bad in ["", "S", "5", "5s", "123456789S", "-5S", "1.5S", "5 S"] {
            assert_eq!(timeout_of(bad), None, "{bad:?}");
        }
        assert_eq!(grpc_timeout(&HeaderMap::new()), None);
    }

    /// A service that answers after its delay, with a body of one frame.
    #[derive(Clone)]
    struct Slow(Duration);

    impl Service<Request<()>> for Slow {
        type Response = Response<Body>;
        type Error = std::convert::Infallible;
        type Future = BoxFuture<Response<Body>, Self::Error>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Request<()>) -> Self::Future {
            let delay = self.0;
            Box::pin(async move {
                tokio::time::sleep(delay).await;
                Ok(Response::new(Body::new(String::from("done"))))
            })
        }
    }

    fn slow(delay: Duration) -> Slow {
        Slow(delay)
    }

    fn call_to(path: &str, grpc_timeout: Option<&str>) -> Request<()> {
        let mut request = Request::builder().uri(path).body(()).unwrap();
        if let Some(value) = grpc_timeout {
            let value = HeaderValue::from_str(value).unwrap();
            request.headers_mut().insert("grpc-timeout", value);
        }
        request
    }

    fn grpc_status(response: &Response<Body>) -> Option<&str> {
        response.headers().get("grpc-status")?.to_str().ok()
    }

    #[tokio::test]
    async fn the_client_deadline_ends_a_call_under_the_servers_cap() {
        use tower::ServiceExt;
        let service =
            DeadlineLayer::new(Duration::from_secs(60)).layer(slow(Duration::from_secs(10)));
        let started = std::time::Instant::now();
        let call = call_to("/ckpt.v1.CheckpointService/GetSession", Some("200m"));
        let response = service.oneshot(call).await.unwrap();
        assert_eq!(grpc_status(&response), Some("4"));
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(200) && took < Duration::from_secs(2),
            "{took:?}"
        );
    }

    #[tokio::test]
    async fn health_checks_escape_the_servers_cap_but_not_their_own_deadline() {
        use tower::ServiceExt;
        let layer = DeadlineLayer::new(Duration::from_millis(50));
        let call = call_to("/grpc.health.v1.Health/Check", None);
        let response = layer
            .layer(slow(Duration::from_millis(200)))
            .oneshot(call)
            .await;
        assert_eq!(grpc_status(&response.unwrap()), None);
        let call = call_to("/grpc.health.v1.Health/Check", Some("50m"));
        let response = layer
            .layer(slow(Duration::from_secs(10)))
            .oneshot(call)
            .await;
        assert_eq!(grpc_status(&response.unwrap()), Some("4"));
    }

    #[tokio::test]
    async fn calls_past_the_limit_are_refused_while_health_checks_pass() {
        use tower::ServiceExt;
        let layer = ConcurrencyLimitLayer::new(1);
        let holder = layer.layer(slow(Duration::ZERO));
        let held = holder.oneshot(call_to("/ckpt.v1.CheckpointService/GetSession", None));
        // The body of the first response is still alive: its permit is held.
        let held = held.await.unwrap();
        let refused = layer
            .layer(slow(Duration::ZERO))
            .oneshot(call_to("/ckpt.v1.CheckpointService/GetSession", None))
            .await
            .unwrap();
        assert_eq!(grpc_status(&refused), Some("8"));
        let health = layer
            .layer(slow(Duration::ZERO))
            .oneshot(call_to("/grpc.health.v1.Health/Check", None))
            .await
            .unwrap();
        assert_eq!(grpc_status(&health), None);
        drop(held);
        let served = layer
            .layer(slow(Duration::ZERO))
            .oneshot(call_to("/ckpt.v1.CheckpointService/GetSession", None))
            .await
            .unwrap();
        assert_eq!(grpc_status(&served), None);
    }

    #[test]
    fn the_earlier_deadline_wins() {
        let s = Duration::from_secs;
        assert_eq!(earlier(Some(s(1)), Some(s(2))), Some(s(1)));
        assert_eq!(earlier(None, Some(s(2))), Some(s(2)));
        assert_eq!(earlier(Some(s(3)), None), Some(s(3)));
        assert_eq!(earlier(None, None), None);
    }
}
