//! The logic that is ours: chunking, manifests, the write and read paths. It sits on the
//! catalog and the blob store, and knows nothing of gRPC.

pub mod bundle;
pub mod chunker;
pub mod codec;
pub mod diff;
pub mod hash;
pub mod manifest;
pub mod merge;
pub mod validate;

mod engine;
mod history;
mod merging;
mod read;
mod refs;
mod search;
mod sink;
mod transfer;
mod write;

pub use self::engine::{Engine, EngineConfig, EngineError};
pub use self::merging::{
    Choice, KeyResolution, MergeOutcome, MergeReport, MergeRequest, MergeSource, Strategy,
};
pub use self::read::{ReadEvent, ReadFilter, ReadTarget};
pub use self::write::{CheckpointWriter, CreateHeader, Mode};
