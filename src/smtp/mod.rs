//! Test fixtures (moving out of the library).

pub mod sink;
