//! Test support shared by the backend contract suite, the handler tests and the e2e suite.
//!
//! Nothing here stands in for a real component: harnesses open real SQLite files (and,
//! for AWS, a real emulator process), and receivers are real HTTP servers on 127.0.0.1.

pub mod contract;
pub mod emulator;
pub mod events;
pub mod harness;
pub mod lambda;
pub mod logs;
pub mod oidc;
pub mod receiver;
pub mod template;

pub use emulator::Emulator;
pub use harness::{AwsHarness, EmbeddedHarness, Harness};
pub use logs::CapturedLogs;
pub use oidc::{IdentityProvider, KeyKind};
pub use receiver::{BlackHole, Received, Receiver, Reply};
