//! The local runner: the same stage code the Lambda functions run, wired to either
//! backend on one machine. It serves the API router on 127.0.0.1 and drives the three
//! queue consumers the way Lambda's event source mappings do (batches of up to ten,
//! partial batch failures, delete on success).

mod api_server;
pub mod cli;
mod consumer;
mod database_lock;
mod ingest_at_publish;
pub mod migrate;
mod receive;
pub mod runtime;
mod stack;

pub use database_lock::LockError;
pub use stack::{BackendChoice, DEFAULT_DELIVERY_CONCURRENCY, RunningStack, StackOptions, StartError, open_backend};
