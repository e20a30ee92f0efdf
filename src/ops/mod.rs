//! ops (to be built).
