//! Replays every recorded agent session in `../shared/data/agent-sessions` as a chain of
//! incremental checkpoints, then loads each checkpoint back and compares it byte for byte.

mod common;

use ckpt_client::replay;
use common::{Setup, TestEnv};

async fn every_recording_replays_identically(setup: Setup) {
    let recordings = replay::load_dir(&replay::default_data_dir()).expect("recordings load");
    assert_eq!(recordings.len(), 14, "the data set has 14 recordings");
    let env = TestEnv::start(setup).await;
    println!(
        "{:<90} {:>6} {:>12} {:>12} {:>8}",
        "recording", "steps", "final", "stored", "seconds"
    );
    for recording in &recordings {
        let report = replay::replay(&env.client, recording, &recording.name, true)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", recording.name));
        assert_eq!(report.steps, recording.steps.len());
        println!(
            "{:<90} {:>6} {:>12} {:>12} {:>8.2}",
            recording.name,
            report.steps,
            report.final_bytes,
            report.stored_bytes,
            report.write_time.as_secs_f64()
        );
        let listed = env
            .client
            .list_all_checkpoints(&recording.name, None)
            .await
            .unwrap();
        assert_eq!(listed.len(), report.steps);
    }
}

on_every_setup!(every_recording_replays_identically,);
