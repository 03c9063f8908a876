//! checkpointd: a networked checkpoint service for AI-agent sessions.
//!
//! Floors, each using only what stands below it: [`server`] wires configuration, storage and
//! services; [`grpc`] turns requests into engine calls; [`core`] holds the logic (chunking,
//! manifests, writes and reads); [`catalog`] and [`blobs`] hold the bytes.

pub mod admin;
pub mod auth;
pub mod blobs;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod core;
pub mod grpc;
pub mod middleware;
pub mod server;
pub mod telemetry;
pub mod tls;

pub use self::config::Config;
pub use self::server::{RunningServer, migrate, run, start};
