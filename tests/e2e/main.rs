//! The end-to-end suite: the whole stack in-process, real receivers on 127.0.0.1.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

mod e2e_api;
mod e2e_catalog;
mod e2e_cost;
mod e2e_delivery;
mod e2e_faults;
mod e2e_identity;
mod e2e_isolation;
mod e2e_openapi;
mod e2e_poison;
mod e2e_replay;
mod e2e_seeds;
mod e2e_semantics;
mod e2e_tenancy;
mod e2e_trust;
mod e2e_verifier;
