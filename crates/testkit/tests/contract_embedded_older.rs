//! The backend contract on the embedded backend, on a database made by an earlier version
//! (its page size and table shapes, `EmbeddedHarness::start_on_an_older_database`).

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

hookbridge_testkit::contract_tests!(hookbridge_testkit::EmbeddedHarness::start_on_an_older_database());
