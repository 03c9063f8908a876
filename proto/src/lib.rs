//! Wire types and gRPC stubs of checkpointd's `ckpt.v1` API, generated from `proto/` at build
//! time. Both the server and the client depend on this crate; nothing here knows either of them.

/// The `ckpt.v1` package: messages, the `CheckpointService` client and server.
pub mod v1 {
    tonic::include_proto!("ckpt.v1");
}

/// The encoded descriptor set of every `.proto` file, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("ckpt_descriptor");

/// Response metadata key that carries the current head of a branch when a write is ABORTED
/// because the branch moved.
pub const CURRENT_HEAD_METADATA: &str = "ckpt-current-head";
