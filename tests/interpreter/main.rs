//! The local code_interpreter executor against a real bubblewrap sandbox and the Python
//! environment made by scripts/interpreter-env.sh (`ASSISTANTS_PROXY_PYTHON`, else its
//! default prefix). Missing either is a failure naming the script, never a skip.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod basics;
mod bombs;
mod escapes;
mod support;
