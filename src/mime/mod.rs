//! mime (to be built).
