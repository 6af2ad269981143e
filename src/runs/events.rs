//! Assistants stream events and their SSE encoding: `event: <name>` + `data: <json>` + a
//! blank line; the stream ends with `event: done` / `data: [DONE]`.

use bytes::Bytes;
use serde_json::Value;

use crate::model::{Message, Run, RunStep, Thread};

/// One event of a run's stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    ThreadCreated(Thread),
    /// `thread.run.<suffix>` with the run.
    Run(&'static str, Box<Run>),
    /// `thread.run.step.<suffix>` with the step.
    Step(&'static str, Box<RunStep>),
    /// `thread.run.step.delta`.
    StepDelta(Value),
    /// `thread.message.<suffix>` with the message.
    Message(&'static str, Box<Message>),
    /// `thread.message.delta`.
    MessageDelta(Value),
    /// `error` with OpenAI's envelope.
    Error(Value),
    Done,
}

impl Event {
    pub fn name(&self) -> String {
        match self {
            Event::ThreadCreated(_) => "thread.created".into(),
            Event::Run(s, _) => format!("thread.run.{s}"),
            Event::Step(s, _) => format!("thread.run.step.{s}"),
            Event::StepDelta(_) => "thread.run.step.delta".into(),
            Event::Message(s, _) => format!("thread.message.{s}"),
            Event::MessageDelta(_) => "thread.message.delta".into(),
            Event::Error(_) => "error".into(),
            Event::Done => "done".into(),
        }
    }

    /// Whether this event ends a stream segment (a terminal run state or requires_action).
    pub fn ends_stream(&self) -> bool {
        matches!(
            self,
            Event::Run(
                "completed" | "failed" | "cancelled" | "expired" | "incomplete" | "requires_action",
                _
            )
        )
    }

    /// The SSE frame, with data on one line.
    pub fn to_sse(&self, render: &dyn Fn(&Event) -> Value) -> Bytes {
        let data = match self {
            Event::Done => "[DONE]".to_owned(),
            other => render(other).to_string(),
        };
        Bytes::from(format!("event: {}\ndata: {data}\n\n", self.name()))
    }
}
