//! Helpers for the integration tests.
pub fn probe() {}
