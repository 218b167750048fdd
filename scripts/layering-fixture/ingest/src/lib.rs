//! Stub. Wrong: a stage's library reaching a backend.
pub use hookbridge_aws::*;
