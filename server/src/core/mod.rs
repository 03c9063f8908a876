//! The logic that is ours: chunking, manifests, the write and read paths. It sits on the
//! catalog and the blob store, and knows nothing of gRPC.

pub mod bundle;
pub mod chunker;
pub mod codec;
pub mod diff;
pub mod hash;
pub mod manifest;
pub mod merge;
pub mod retention;
pub mod validate;

mod collect;
mod engine;
mod history;
mod merging;
mod read;
mod refs;
mod search;
mod sink;
mod transfer;
mod verify;
mod watch;
mod write;

pub use self::collect::{
    BATCH, CollectOptions, CollectReport, Collection, Explained, PolicySource,
};
pub use self::engine::{Engine, EngineConfig, EngineError};
pub use self::merging::{
    Choice, KeyResolution, MergeOutcome, MergeReport, MergeRequest, MergeSource, Strategy,
};
pub use self::read::{ReadEvent, ReadFilter, ReadTarget};
pub use self::verify::{Problem, ProblemKind, VerifyOptions, VerifyReport};
pub use self::watch::{EventKind, FeedTail, WatchScope};
pub use self::write::{CheckpointWriter, CreateHeader, Mode};
