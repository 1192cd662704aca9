//! The cases, grouped by where they come from. Each is an `async fn(&Harness) ->
//! Result<(), Failure>`; the table in the crate root lists them with their needs.

pub mod graphtest;
pub mod hostile;
pub mod lifecycle;
pub mod malformed;
pub mod mounts;
pub mod roundtrip;
pub mod snapshotter;
pub mod whiteouts;
