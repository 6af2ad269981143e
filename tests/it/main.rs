//! Integration tests, one binary (link once): the proxy in-process against the fake upstream.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../support/mod.rs"]
mod support;

mod api_core;
mod assistant_files;
mod beta_header;
mod binary;
mod body_timeout;
mod code_interpreter;
mod files;
mod files_list;
mod fixtures;
mod forward_h1;
mod key_rotation;
mod log_escape;
mod migrate_api;
mod protocol_answers;
mod proxy;
mod request_checks;
mod run_faults;
mod runs;
mod search_rewrite;
mod sqlite_lock;
mod vector_store_activity;
mod vector_stores;
