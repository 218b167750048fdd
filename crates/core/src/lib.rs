//! The Hookbridge domain, free of I/O.
//!
//! Everything here is a value, a pure decision or a port (a trait the two backends
//! implement). Nothing here touches the network, the disk, a clock of its own or an
//! async runtime: callers pass `now` in, so every decision is testable as a function.

pub mod aead;
pub mod catalog;
pub mod circuit;
pub mod delivery;
pub mod envelope;
pub mod error;
pub mod health;
pub mod hook;
pub mod ids;
pub mod message;
pub mod newer;
pub mod outcome;
pub mod pattern;
pub mod payload;
pub mod portal;
pub mod ports;
pub mod properties;
pub mod rate;
pub mod replay;
pub mod retry;
pub mod secret;
pub mod settings;
pub mod signing;
pub mod topology;
pub mod validation;

pub use error::{Error, Result};
