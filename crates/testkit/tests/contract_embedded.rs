//! The backend contract on the embedded (SQLite) backend.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

hookbridge_testkit::contract_tests!(hookbridge_testkit::EmbeddedHarness::start());
