//! Many hosts writing one branch through two server processes: every write lands exactly
//! once, none is lost, and losers learn the head to retry on.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use ckpt_client::{Client, Error, NewCheckpoint, Op, ReadFilter, State, Target};
use common::Setup;

const WRITERS: usize = 32;
const WRITES_EACH: usize = 3;

/// Appends `key` to the branch, retrying on ABORTED with the head the server reports.
async fn write_until_it_lands(client: &Client, key: String) -> u32 {
    let mut parent = client
        .read_state(
            Target::head("race"),
            ReadFilter {
                prefix: Some("~".into()),
                keys: vec![],
            },
        )
        .await
        .unwrap()
        .0
        .id;
    let mut attempts = 0;
    loop {
        attempts += 1;
        assert!(attempts < 500, "{key} never landed");
        let ops = vec![Op::Put(key.clone(), Bytes::from(key.clone()))];
        match client
            .create(NewCheckpoint::incremental("race", &parent, ops))
            .await
        {
            Ok(_) => return attempts,
            Err(Error::Aborted {
                current_head: Some(head),
                ..
            }) => parent = head,
            Err(e) if e.code() == tonic::Code::Unavailable => {
                tokio::time::sleep(Duration::from_millis(5)).await
            }
            Err(e) => panic!("{key}: unexpected {e:?}"),
        }
    }
}

async fn racing_writers_on_two_servers_each_land_exactly_once(setup: Setup) {
    let dir = tempfile::tempdir().unwrap();
    let db = common::fresh_catalog(setup, dir.path()).await;
    let store = common::fresh_store(setup, dir.path());
    let mut one = common::spawn_server(&db, &store, common::free_port()).await;
    let mut two = common::spawn_server(&db, &store, common::free_port()).await;
    let clients = [
        Client::connect(one.url.clone()).await.unwrap(),
        Client::connect(two.url.clone()).await.unwrap(),
    ];
    clients[0]
        .create(NewCheckpoint::full("race", State::new()))
        .await
        .unwrap();

    let writers = (0..WRITERS).map(|w| {
        let client = clients[w % 2].clone();
        tokio::spawn(async move {
            let mut attempts = 0;
            for i in 0..WRITES_EACH {
                attempts += write_until_it_lands(&client, format!("w{w:02}/{i}")).await;
            }
            attempts
        })
    });
    let attempts: u32 = futures::future::join_all(writers)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .sum();
    assert!(
        attempts as usize > WRITERS * WRITES_EACH,
        "writers must have collided at least once"
    );

    // The branch's first-parent history holds every write exactly once, in a line.
    let mut history = Vec::new();
    let mut token = String::new();
    loop {
        let page = clients[1]
            .history(Target::head("race"), true, 1000, &token)
            .await
            .unwrap();
        history.extend(page.items);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(history.len(), WRITERS * WRITES_EACH + 1);
    let (_, state) = clients[0]
        .read_state(Target::head("race"), ReadFilter::default())
        .await
        .unwrap();
    let keys: HashSet<&String> = state.keys().collect();
    assert_eq!(
        keys.len(),
        WRITERS * WRITES_EACH,
        "every write is in the final state"
    );
    for pair in history.windows(2) {
        assert_eq!(
            pair[0].parent_ids,
            vec![pair[1].id.clone()],
            "history is a single line"
        );
    }
    let listed = clients[1].list_all_checkpoints("race", None).await.unwrap();
    assert_eq!(listed.len(), history.len(), "no stray checkpoints");
    for server in [&mut one, &mut two] {
        server.child.kill().unwrap();
        server.child.wait().unwrap();
    }
}

on_every_setup!(racing_writers_on_two_servers_each_land_exactly_once);
