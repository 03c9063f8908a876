//! The service's metric instruments, made once from the global meter provider.
//!
//! A leaf: it knows the OpenTelemetry API and nothing of the rest of the crate, so every floor
//! may record into it as it may log. With no provider installed the instruments are no-ops and
//! recording costs a virtual call. Labels never carry ids, names, tenants or paths.

use std::sync::OnceLock;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, Meter, UpDownCounter};

/// Instrumentation scope of every instrument here.
pub const SCOPE: &str = "checkpointd";

/// Bucket bounds of the RPC latency histogram, in seconds: from 100 µs (an answer from memory)
/// to 30 s (a large streamed upload), roughly 2.5× apart.
pub const LATENCY_BUCKETS: [f64; 17] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// Every instrument the server records into.
#[derive(Debug)]
pub struct Metrics {
    /// Finished calls, by method and gRPC status code.
    pub rpc_calls: Counter<u64>,
    /// Seconds from the request's arrival to the end of the response, by method and code.
    pub rpc_duration: Histogram<f64>,
    /// Calls started and not yet finished, by method.
    pub rpc_active: UpDownCounter<i64>,
    /// Request body bytes read off the connection (gRPC frames, as sent), by method.
    pub rpc_received: Counter<u64>,
    /// Object-store operations, by `operation` and `result`.
    pub store_operations: Counter<u64>,
    /// Compressed bytes newly stored by commits and imports (objects and inline rows).
    pub stored: Counter<u64>,
    /// Uncompressed bytes a write found already stored, and so neither compressed nor
    /// uploaded again.
    pub deduplicated: Counter<u64>,
    /// Collection passes, by `outcome`.
    pub collection_passes: Counter<u64>,
    /// Checkpoints retention deleted.
    pub collected_checkpoints: Counter<u64>,
    /// Objects collection deleted from the object store.
    pub collected_objects: Counter<u64>,
}

impl Metrics {
    /// Makes every instrument from `meter`.
    pub fn new(meter: &Meter) -> Self {
        Self {
            rpc_calls: meter
                .u64_counter("rpc.server.calls")
                .with_description("Finished gRPC calls, by method and status code.")
                .with_unit("{call}")
                .build(),
            rpc_duration: meter
                .f64_histogram("rpc.server.call.duration")
                .with_description("Time from a request's arrival to the end of its response.")
                .with_unit("s")
                .with_boundaries(LATENCY_BUCKETS.to_vec())
                .build(),
            rpc_active: meter
                .i64_up_down_counter("rpc.server.active_calls")
                .with_description("gRPC calls in progress.")
                .with_unit("{call}")
                .build(),
            rpc_received: meter
                .u64_counter("ckpt.rpc.received")
                .with_description("Request payload bytes received (gRPC frames as sent).")
                .with_unit("By")
                .build(),
            store_operations: meter
                .u64_counter("ckpt.store.operations")
                .with_description("Object-store operations, by operation and result.")
                .with_unit("{operation}")
                .build(),
            stored: meter
                .u64_counter("ckpt.write.stored")
                .with_description("Compressed bytes newly stored, in objects or inline.")
                .with_unit("By")
                .build(),
            deduplicated: meter
                .u64_counter("ckpt.write.deduplicated")
                .with_description("Uncompressed bytes of blobs a write found already stored.")
                .with_unit("By")
                .build(),
            collection_passes: meter
                .u64_counter("ckpt.collection.passes")
                .with_description("Collection passes, by outcome.")
                .with_unit("{pass}")
                .build(),
            collected_checkpoints: meter
                .u64_counter("ckpt.collection.deleted_checkpoints")
                .with_description("Checkpoints deleted by retention.")
                .with_unit("{checkpoint}")
                .build(),
            collected_objects: meter
                .u64_counter("ckpt.collection.deleted_objects")
                .with_description("Objects deleted from the object store by collection.")
                .with_unit("{object}")
                .build(),
        }
    }
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// The instruments, made from the global meter provider on first use: install the provider
/// (see [`super::Telemetry`]) before the server starts, or they stay no-ops.
pub fn metrics() -> &'static Metrics {
    METRICS.get_or_init(|| Metrics::new(&opentelemetry::global::meter(SCOPE)))
}

/// An object-store operation, as the `operation` label names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreOp {
    Get,
    Put,
    Delete,
    List,
}

impl StoreOp {
    fn label(self) -> &'static str {
        match self {
            StoreOp::Get => "get",
            StoreOp::Put => "put",
            StoreOp::Delete => "delete",
            StoreOp::List => "list",
        }
    }
}

/// How an object-store operation ended, as the `result` label names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreResult {
    Ok,
    NotFound,
    Error,
}

impl StoreResult {
    fn label(self) -> &'static str {
        match self {
            StoreResult::Ok => "ok",
            StoreResult::NotFound => "not_found",
            StoreResult::Error => "error",
        }
    }
}

/// Counts one object-store operation.
pub fn store_operation(op: StoreOp, result: StoreResult) {
    metrics().store_operations.add(
        1,
        &[
            KeyValue::new("operation", op.label()),
            KeyValue::new("result", result.label()),
        ],
    );
}

/// How a collection pass ended, as the `outcome` label names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PassOutcome {
    /// Ran to the end and deleted what it found.
    Ok,
    /// Ran to the end without deleting (a dry run).
    DryRun,
    /// Did not run: another instance held the lease, or a write got in the way.
    Skipped,
    Failed,
}

impl PassOutcome {
    fn label(self) -> &'static str {
        match self {
            PassOutcome::Ok => "ok",
            PassOutcome::DryRun => "dry_run",
            PassOutcome::Skipped => "skipped",
            PassOutcome::Failed => "failed",
        }
    }
}

/// Counts one collection pass.
pub fn collection_pass(outcome: PassOutcome) {
    metrics()
        .collection_passes
        .add(1, &[KeyValue::new("outcome", outcome.label())]);
}

/// Whether [`metrics`] has made the instruments (and so bound them to a provider for good).
pub fn instruments_made() -> bool {
    METRICS.get().is_some()
}
