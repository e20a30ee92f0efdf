//! The support code the integration tests share: raw SMTP clients ([`smtp`]), the real binary
//! and other processes with bounded waits ([`process`]), Postfix `smtp-sink` as a next hop
//! ([`smtp_sink`]), and the OpenAPI check of the Cryptshare emulator's exchanges ([`openapi`]). Test-specific harnesses (`e2e_support`, `ops_e2e_support`,
//! `pipeline_support`, …) build on it; a test file declares `mod support;` next to them.
//! The scriptable in-process next hop and the pass-through handler are in `testkit/`.
#![allow(dead_code)]

pub mod openapi;
pub mod process;
pub mod smtp;
pub mod smtp_sink;
