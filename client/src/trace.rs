//! Trace propagation: the caller's current OpenTelemetry span travels with every call as W3C
//! `traceparent` (and `tracestate`) metadata, so the server's spans join the caller's trace.
//!
//! Nothing is sent when there is no valid current span (a caller without OpenTelemetry), and
//! looking costs a thread-local read.

use opentelemetry::Context;
use opentelemetry::trace::{SpanContext, TraceContextExt};
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;

/// Adds the current span's W3C trace context to each outgoing request.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TraceContext;

impl Interceptor for TraceContext {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        let headers = Context::map_current(|cx| {
            let span = cx.span();
            let parent = span.span_context();
            parent
                .is_valid()
                .then(|| (traceparent(parent), parent.trace_state().header()))
        });
        if let Some((parent, state)) = headers {
            let metadata = request.metadata_mut();
            if let Ok(value) = MetadataValue::try_from(parent) {
                metadata.insert("traceparent", value);
            }
            if let Ok(value) = MetadataValue::try_from(state)
                && !value.is_empty()
            {
                metadata.insert("tracestate", value);
            }
        }
        Ok(request)
    }
}

/// The `traceparent` value naming `span`: version 00, trace id, span id, flags.
fn traceparent(span: &SpanContext) -> String {
    format!(
        "00-{}-{}-{:02x}",
        span.trace_id(),
        span.span_id(),
        span.trace_flags().to_u8()
    )
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanId, TraceFlags, TraceId, TraceState};

    use super::*;

    fn span() -> SpanContext {
        SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::SAMPLED,
            false,
            TraceState::from_key_value([("vendor", "x")]).unwrap(),
        )
    }

    #[test]
    fn no_current_span_sends_no_metadata() {
        let request = TraceContext.call(tonic::Request::new(())).unwrap();
        assert!(request.metadata().get("traceparent").is_none());
        assert!(request.metadata().get("tracestate").is_none());
    }

    #[test]
    fn the_current_span_travels_as_w3c_metadata() {
        let _attached = Context::current().with_remote_span_context(span()).attach();
        let request = TraceContext.call(tonic::Request::new(())).unwrap();
        assert_eq!(
            request.metadata().get("traceparent").unwrap(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        assert_eq!(request.metadata().get("tracestate").unwrap(), "vendor=x");
    }
}
