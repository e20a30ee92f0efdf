//! sim (to be built).
