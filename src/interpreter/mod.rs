//! code_interpreter: the executors that run the model's Python (`local`: a bubblewrap
//! sandbox per session; `jupyter`: kernels on a gateway) and the sessions kept per thread.
//! The run engine (`runs`) turns executions into run steps; nothing here knows of runs.

pub mod executor;
pub mod sessions;

pub use executor::{
    ExecError, ExecLimits, Execution, Executor, InputFile, Output, OutputFile, Session,
};
pub use sessions::{Cell, Interpreter, Key, Loader, Staged};

use std::sync::Arc;

use crate::config::{ExecutorChoice, InterpreterConfig};

/// The executor the configuration chose, or None when code_interpreter is off.
pub fn executor_for(config: &InterpreterConfig) -> Option<Arc<dyn Executor>> {
    match &config.executor {
        ExecutorChoice::Off => None,
        ExecutorChoice::Local(_) | ExecutorChoice::Jupyter(_) => None,
    }
}
