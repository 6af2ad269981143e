//! code_interpreter: the executors that run the model's Python (`local`: a bubblewrap
//! sandbox per session; `jupyter`: kernels on a gateway) and the sessions kept per thread.
//! The run engine (`runs`) turns executions into run steps; nothing here knows of runs.

pub mod executor;
pub mod jupyter;
pub mod local;
pub mod sessions;

pub use executor::{
    ExecError, ExecLimits, Execution, Executor, InputFile, Output, OutputFile, Session,
};
pub use sessions::{Cell, Interpreter, Key, Loader, Staged};

use std::sync::Arc;

use crate::config::{ExecutorChoice, InterpreterConfig};

/// The executor the configuration chose: None when code_interpreter is off, `Err` when its
/// settings cannot make one (the proxy still starts; calls answer that error).
pub fn executor_for(config: &InterpreterConfig) -> Result<Option<Arc<dyn Executor>>, String> {
    let (limits, start) = (config.limits.clone(), config.start_timeout);
    Ok(match &config.executor {
        ExecutorChoice::Off => None,
        ExecutorChoice::Local(l) => Some(Arc::new(local::Local::new(l.clone(), limits, start))),
        ExecutorChoice::Jupyter(j) => {
            Some(Arc::new(jupyter::Jupyter::new(j.clone(), limits, start)?))
        }
    })
}
