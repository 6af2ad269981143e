//! Integration tests, one binary (link once): the proxy in-process against the fake upstream.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../support/mod.rs"]
mod support;

mod api_core;
mod binary;
mod files;
mod files_list;
mod fixtures;
mod forward_h1;
mod proxy;
mod request_checks;
mod runs;
mod search_rewrite;
mod vector_store_activity;
mod vector_stores;
