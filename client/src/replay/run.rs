//! Replaying a recording against a server: one incremental checkpoint per step, then every
//! checkpoint loaded back and compared with what was written.

use std::time::{Duration, Instant};

use crate::{Client, Error, NewCheckpoint, Op, ReadFilter, State, Target};

use super::{Recording, apply};

/// What a replay wrote and measured.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplayReport {
    /// The session the checkpoints went to.
    pub session_id: String,
    /// Checkpoints written: one per step.
    pub steps: usize,
    /// Logical bytes of the final state.
    pub final_bytes: u64,
    /// Logical bytes summed over every checkpoint: what full snapshots would have sent.
    pub logical_bytes: u64,
    /// Bytes the server stored for the whole replay (its checkpoints' `stored_bytes`).
    pub stored_bytes: u64,
    /// Time spent writing.
    pub write_time: Duration,
    /// Time spent loading every checkpoint back and comparing (zero without verification).
    pub verify_time: Duration,
}

/// Why a replay failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayRunError {
    /// The server refused or failed a call.
    #[error("step {step}: {source}")]
    Server {
        /// The step (0-based) whose write or read failed.
        step: usize,
        /// The client error.
        source: Error,
    },
    /// A checkpoint loaded back differs from what was written.
    #[error("checkpoint {checkpoint} (step {step}) does not load back as written")]
    Mismatch {
        /// The step (0-based).
        step: usize,
        /// The checkpoint id.
        checkpoint: String,
    },
}

/// Writes `recording` into `session_id` as a chain of checkpoints (the first full, the rest
/// incremental against the one before) and, with `verify`, loads each back and compares it
/// byte for byte with the state written.
pub async fn replay(
    client: &Client,
    recording: &Recording,
    session_id: &str,
    verify: bool,
) -> Result<ReplayReport, ReplayRunError> {
    let started = Instant::now();
    let mut state = State::new();
    let mut written: Vec<(String, State)> = Vec::new();
    let mut parent: Option<String> = None;
    let (mut logical_bytes, mut stored_bytes) = (0, 0);
    for (step, change) in recording.steps.iter().enumerate() {
        apply(&mut state, change);
        let new = match &parent {
            None => NewCheckpoint::full(session_id, state.clone()),
            Some(p) => NewCheckpoint::incremental(session_id, p, ops(change)),
        };
        let new = new
            .message(change.message.clone())
            .metadata(change.metadata.clone());
        let checkpoint = client
            .create(new)
            .await
            .map_err(|source| ReplayRunError::Server { step, source })?;
        logical_bytes += checkpoint.summary.logical_bytes;
        stored_bytes += checkpoint.summary.stored_bytes;
        parent = Some(checkpoint.id.clone());
        if verify {
            written.push((checkpoint.id, state.clone()));
        }
    }
    let write_time = started.elapsed();

    let verifying = Instant::now();
    for (step, (id, expected)) in written.iter().enumerate() {
        let (_, loaded) = client
            .read_state(Target::checkpoint(id), ReadFilter::default())
            .await
            .map_err(|source| ReplayRunError::Server { step, source })?;
        if loaded != *expected {
            return Err(ReplayRunError::Mismatch {
                step,
                checkpoint: id.clone(),
            });
        }
    }
    Ok(ReplayReport {
        session_id: session_id.to_owned(),
        steps: recording.steps.len(),
        final_bytes: state.values().map(|v| v.len() as u64).sum(),
        logical_bytes,
        stored_bytes,
        write_time,
        verify_time: if verify {
            verifying.elapsed()
        } else {
            Duration::ZERO
        },
    })
}

/// A step as operations against the previous state.
fn ops(step: &super::Step) -> Vec<Op> {
    let deletes = step.deletes.iter().map(|k| Op::Delete(k.clone()));
    let puts = step.puts.iter().map(|(k, v)| Op::Put(k.clone(), v.clone()));
    deletes.chain(puts).collect()
}
