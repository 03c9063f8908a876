//! The `ReadState` response stream: the engine's read events as wire messages. Small values,
//! which the engine gathers a few hundred kilobytes at a time, go whole and many to a message
//! when the caller asks (`batch_entries`), and as a header and a data message each otherwise.
//!
//! A state of a thousand 1 KiB values thus costs a handful of messages instead of two
//! thousand.

use std::collections::VecDeque;

use ckpt_proto::v1::{self, read_state_response::Part};
use futures::Stream;
use tokio::sync::mpsc;
use tonic::Status;

use crate::core::{EngineError, ReadEvent};

type Events = mpsc::Receiver<Result<ReadEvent, EngineError>>;

/// Turns read events into `ReadState` parts, batching whole values when `batch` is set.
pub(super) fn parts(events: Events, batch: bool) -> impl Stream<Item = Result<Part, Status>> {
    let parts = Parts {
        events,
        batch,
        queued: VecDeque::new(),
        done: false,
    };
    futures::stream::unfold(parts, |mut parts| async move {
        let part = parts.next_part().await?;
        Some((part, parts))
    })
}

struct Parts {
    events: Events,
    batch: bool,
    /// Parts of gathered values being sent one by one to a caller that did not ask for batches.
    queued: VecDeque<Part>,
    done: bool,
}

impl Parts {
    async fn next_part(&mut self) -> Option<Result<Part, Status>> {
        if let Some(part) = self.queued.pop_front() {
            return Some(Ok(part));
        }
        if self.done {
            return None;
        }
        let event = match self.events.recv().await? {
            Ok(event) => event,
            Err(err) => {
                self.done = true;
                return Some(Err(Status::from(err)));
            }
        };
        Some(Ok(match event {
            ReadEvent::Values(values) if self.batch => Part::Entries(v1::EntryBatch {
                entries: values
                    .into_iter()
                    .map(|(key, value)| v1::Entry { key, value })
                    .collect(),
            }),
            ReadEvent::Values(values) => {
                for (key, value) in values {
                    let size = value.len() as u64;
                    self.queued
                        .push_back(Part::Entry(v1::EntryHeader { key, size }));
                    if size > 0 {
                        self.queued.push_back(Part::Data(value));
                    }
                }
                self.queued.pop_front()?
            }
            ReadEvent::Entry { key, size } => Part::Entry(v1::EntryHeader { key, size }),
            ReadEvent::Data(bytes) => Part::Data(bytes),
        }))
    }
}
