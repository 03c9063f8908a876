//! One suite for every object store: a local directory and an S3-compatible server over HTTP.

mod common;

use bytes::Bytes;
use ckpt_server::blobs::{BlobError, BlobStore, object_key};
use ckpt_server::core::hash::Hash;
use common::{Setup, noise};
use uuid::Uuid;

async fn open(setup: Setup) -> (BlobStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let spec = common::fresh_store(setup, dir.path());
    (BlobStore::open(&spec).expect("store opens"), dir)
}

async fn objects_round_trip_and_vanish_when_deleted(setup: Setup) {
    let (store, _dir) = open(setup).await;
    let small = Bytes::from_static(b"hello");
    let large = Bytes::from(noise(9 * 1024 * 1024 + 3, 4));
    let small_key = object_key(&Hash::of(&small), Uuid::now_v7());
    let large_key = object_key(&Hash::of(&large), Uuid::now_v7());
    store.put(&small_key, small.clone()).await.unwrap();
    store.put(&large_key, large.clone()).await.unwrap();
    assert_eq!(store.get(&small_key).await.unwrap(), small);
    assert_eq!(store.get(&large_key).await.unwrap(), large);

    store.delete(&small_key).await.unwrap();
    assert!(matches!(
        store.get(&small_key).await,
        Err(BlobError::NotFound(_))
    ));
    // Deleting what is gone is not an error: a collector may retry a sweep.
    store.delete(&small_key).await.unwrap();
    assert_eq!(store.get(&large_key).await.unwrap(), large);
}

async fn missing_objects_are_not_found(setup: Setup) {
    let (store, _dir) = open(setup).await;
    let key = object_key(&Hash::of(b"never"), Uuid::now_v7());
    match store.get(&key).await {
        Err(BlobError::NotFound(k)) => assert_eq!(k, key),
        other => panic!("expected NotFound, got {other:?}"),
    }
}

async fn an_empty_object_is_an_object(setup: Setup) {
    let (store, _dir) = open(setup).await;
    let key = object_key(&Hash::of(b""), Uuid::now_v7());
    store.put(&key, Bytes::new()).await.unwrap();
    assert_eq!(store.get(&key).await.unwrap(), Bytes::new());
}

macro_rules! on_every_store {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread")]
            async fn local() {
                super::$name(super::Setup::Postgres).await;
            }
            #[tokio::test(flavor = "multi_thread")]
            async fn s3() {
                super::$name(super::Setup::PostgresS3).await;
            }
        }
    )*};
}

on_every_store!(
    objects_round_trip_and_vanish_when_deleted,
    missing_objects_are_not_found,
    an_empty_object_is_an_object,
);
