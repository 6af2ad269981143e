//! code_interpreter: the executors that run the model's Python (`local`: a bubblewrap
//! sandbox per session; `jupyter`: kernels on a gateway) and the sessions kept per thread.
//! The run engine (`runs`) turns executions into run steps; nothing here knows of runs.

pub mod executor;
pub mod jupyter;

pub use executor::{
    ExecError, ExecLimits, Execution, Executor, InputFile, Output, OutputFile, Session,
};
