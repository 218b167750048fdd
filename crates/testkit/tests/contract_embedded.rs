//! The backend contract on the embedded (SQLite) backend.

hookbridge_testkit::contract_tests!(hookbridge_testkit::EmbeddedHarness::start());
