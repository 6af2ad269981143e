//! The store contract suite as its own test binary: it needs no fake upstream and no proxy,
//! so backend work iterates without building the proxy tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cassandra;
mod contract;
mod migrate;
mod sqlite_crash;
mod sqlite_index;
