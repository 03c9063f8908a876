//! Rust client for checkpointd: an async [`Client`] over the `ckpt.v1` gRPC API, domain types
//! for what it sends and returns, and helpers to diff states and store JSON documents as states.
//!
//! ```no_run
//! # async fn example() -> Result<(), ckpt_client::Error> {
//! use ckpt_client::{Client, NewCheckpoint, ReadFilter, State, Target};
//!
//! let client = Client::connect("http://127.0.0.1:7777").await?;
//! let mut state = State::new();
//! state.insert("notes.md".into(), "hello".into());
//! let checkpoint = client.create(NewCheckpoint::full("session-1", state)).await?;
//! let (_, restored) = client
//!     .read_state(Target::checkpoint(&checkpoint.id), ReadFilter::default())
//!     .await?;
//! # Ok(()) }
//! ```

mod client;
mod error;
mod feed;
mod gc;
pub mod json;
mod metadata;
mod model;
mod read;
mod refs;
pub mod replay;
mod trace;
mod transfer;
mod write;

pub use client::{
    CREATE_ATTEMPTS, Client, ClientBuilder, ListFilter, MAX_MESSAGE_BYTES, UNARY_LIMIT,
};
pub use error::Error;
pub use feed::{Event, EventKind, Lease};
pub use gc::{
    CollectOptions, CollectReport, Collection, RetentionDecision, RetentionPolicy, VerifyProblem,
    VerifyReport,
};
pub use model::{Checkpoint, Page, Session, State, Summary};
pub use read::{EntryHeader, ReadFilter, StateReader, Target};
pub use refs::{
    Branch, Conflict, ConflictKind, DiffEntry, DiffKind, MergeOptions, MergeOutcome, MergeResult,
    MergeStrategy, RefLogEntry, Resolution, Tag,
};
pub use transfer::ImportReport;
pub use write::{Changes, NewCheckpoint, Op, UPLOAD_PIECE_BYTES, diff};
