//! cryptshare (to be built).
