//! Vector stores, their files and file batches, and search.

pub mod service;
