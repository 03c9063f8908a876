//! The logic that is ours: chunking, manifests, the write and read paths. It sits on the
//! catalog and the blob store, and knows nothing of gRPC.

pub mod bundle;
pub mod chunker;
pub mod codec;
pub mod hash;
pub mod manifest;
pub mod validate;

mod engine;
mod read;
mod sink;
mod transfer;
mod write;

pub use self::engine::{Engine, EngineConfig, EngineError};
pub use self::read::{ReadEvent, ReadFilter, ReadTarget};
pub use self::write::{CheckpointWriter, CreateHeader, Mode};
