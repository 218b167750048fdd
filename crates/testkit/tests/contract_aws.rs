//! The backend contract on the AWS backend, against the emulator.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

hookbridge_testkit::contract_tests!(hookbridge_testkit::AwsHarness::start());
