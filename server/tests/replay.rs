//! Replays every recorded agent session in `../shared/data/agent-sessions` as a chain of
//! incremental checkpoints, then loads each checkpoint back and compares it byte for byte.

mod common;

use std::time::Instant;

use ckpt_client::replay::{self, Recording};
use ckpt_client::{NewCheckpoint, Op, ReadFilter, State, Target};
use common::{Setup, TestEnv};

struct Figures {
    steps: usize,
    logical: u64,
    stored: u64,
    seconds: f64,
}

async fn replay_one(env: &TestEnv, recording: &Recording) -> Figures {
    let started = Instant::now();
    let session = recording.name.clone();
    let mut expected = State::new();
    let mut written: Vec<(String, State)> = Vec::new();
    let mut parent: Option<String> = None;
    let mut stored = 0;
    for step in &recording.steps {
        replay::apply(&mut expected, step);
        let ops: Vec<Op> = step
            .deletes
            .iter()
            .map(|k| Op::Delete(k.clone()))
            .chain(step.puts.iter().map(|(k, v)| Op::Put(k.clone(), v.clone())))
            .collect();
        let new = match &parent {
            None => NewCheckpoint::full(session.clone(), expected.clone()),
            Some(p) => NewCheckpoint::incremental(session.clone(), p, ops),
        };
        let cp = env
            .client
            .create(
                new.message(step.message.clone())
                    .metadata(step.metadata.clone()),
            )
            .await
            .unwrap_or_else(|e| panic!("{session}: step {} failed: {e}", written.len()));
        stored += cp.summary.stored_bytes;
        parent = Some(cp.id.clone());
        written.push((cp.id, expected.clone()));
    }
    for (i, (id, state)) in written.iter().enumerate() {
        let (_, loaded) = env
            .client
            .read_state(Target::checkpoint(id), ReadFilter::default())
            .await
            .unwrap();
        assert!(
            loaded == *state,
            "{session}: checkpoint {i} ({id}) differs from what was written"
        );
    }
    let logical = expected.values().map(|v| v.len() as u64).sum();
    Figures {
        steps: written.len(),
        logical,
        stored,
        seconds: started.elapsed().as_secs_f64(),
    }
}

async fn every_recording_replays_identically(setup: Setup) {
    let recordings = replay::load_dir(&replay::default_data_dir()).expect("recordings load");
    assert_eq!(recordings.len(), 14, "the data set has 14 recordings");
    let env = TestEnv::start(setup).await;
    println!(
        "{:<90} {:>6} {:>12} {:>12} {:>8}",
        "recording", "steps", "logical", "stored", "seconds"
    );
    for recording in &recordings {
        let f = replay_one(&env, recording).await;
        assert_eq!(f.steps, recording.steps.len());
        println!(
            "{:<90} {:>6} {:>12} {:>12} {:>8.2}",
            recording.name, f.steps, f.logical, f.stored, f.seconds
        );
        let listed = env
            .client
            .list_all_checkpoints(&recording.name, None)
            .await
            .unwrap();
        assert_eq!(listed.len(), f.steps);
    }
}

on_every_setup!(every_recording_replays_identically,);
