//! Assistants stream events and their SSE encoding: `event: <name>` + `data: <json>` + a
//! blank line; the stream ends with `event: done` / `data: [DONE]`. Every event name the
//! proxy sends is spelled here and nowhere else.

use bytes::Bytes;
use serde_json::Value;

use crate::model::{Message, Run, RunStatus, RunStep, StepStatus, Thread};

/// What a `thread.run.*` event announces: the run's creation, or the status it moved to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunNews {
    Created,
    Now(RunStatus),
}

/// What a `thread.run.step.*` event announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepNews {
    Created,
    Now(StepStatus),
}

/// What a `thread.message.*` event announces (messages: created, in_progress, and how they
/// end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageNews {
    Created,
    InProgress,
    Completed,
    Incomplete,
}

/// One event of a run's stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    ThreadCreated(Thread),
    Run(RunNews, Box<Run>),
    Step(StepNews, Box<RunStep>),
    /// `thread.run.step.delta`.
    StepDelta(Value),
    Message(MessageNews, Box<Message>),
    /// `thread.message.delta`.
    MessageDelta(Value),
    /// `error` with OpenAI's envelope.
    Error(Value),
    Done,
}

impl Event {
    pub fn name(&self) -> &'static str {
        match self {
            Event::ThreadCreated(_) => "thread.created",
            Event::Run(RunNews::Created, _) => "thread.run.created",
            Event::Run(RunNews::Now(s), _) => match s {
                RunStatus::Queued => "thread.run.queued",
                RunStatus::InProgress => "thread.run.in_progress",
                RunStatus::RequiresAction => "thread.run.requires_action",
                RunStatus::Cancelling => "thread.run.cancelling",
                RunStatus::Cancelled => "thread.run.cancelled",
                RunStatus::Failed => "thread.run.failed",
                RunStatus::Completed => "thread.run.completed",
                RunStatus::Incomplete => "thread.run.incomplete",
                RunStatus::Expired => "thread.run.expired",
            },
            Event::Step(StepNews::Created, _) => "thread.run.step.created",
            Event::Step(StepNews::Now(s), _) => match s {
                StepStatus::InProgress => "thread.run.step.in_progress",
                StepStatus::Cancelled => "thread.run.step.cancelled",
                StepStatus::Failed => "thread.run.step.failed",
                StepStatus::Completed => "thread.run.step.completed",
                StepStatus::Expired => "thread.run.step.expired",
            },
            Event::StepDelta(_) => "thread.run.step.delta",
            Event::Message(news, _) => match news {
                MessageNews::Created => "thread.message.created",
                MessageNews::InProgress => "thread.message.in_progress",
                MessageNews::Completed => "thread.message.completed",
                MessageNews::Incomplete => "thread.message.incomplete",
            },
            Event::MessageDelta(_) => "thread.message.delta",
            Event::Error(_) => "error",
            Event::Done => "done",
        }
    }

    /// A `thread.run.<status>` event for the run as it is now.
    pub fn run_now(run: Run) -> Event {
        Event::Run(RunNews::Now(run.status), Box::new(run))
    }

    /// A `thread.run.step.<status>` event for the step as it is now.
    pub fn step_now(step: RunStep) -> Event {
        Event::Step(StepNews::Now(step.status), Box::new(step))
    }

    /// Whether this event ends a stream segment (a terminal run state or requires_action).
    pub fn ends_stream(&self) -> bool {
        match self {
            Event::Run(RunNews::Now(s), _) => !s.is_active() || *s == RunStatus::RequiresAction,
            _ => false,
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn run(status: RunStatus) -> Run {
        let mut rec = crate::runs::fixtures::record(serde_json::Value::Null);
        rec.run.status = status;
        rec.run
    }

    #[test]
    fn run_events_are_named_after_the_status_and_end_the_stream_when_it_waits_or_ends() {
        let created = Event::Run(RunNews::Created, Box::new(run(RunStatus::Queued)));
        assert_eq!(created.name(), "thread.run.created");
        assert!(!created.ends_stream());
        for (status, name, ends) in [
            (RunStatus::Queued, "thread.run.queued", false),
            (RunStatus::InProgress, "thread.run.in_progress", false),
            (
                RunStatus::RequiresAction,
                "thread.run.requires_action",
                true,
            ),
            (RunStatus::Cancelling, "thread.run.cancelling", false),
            (RunStatus::Cancelled, "thread.run.cancelled", true),
            (RunStatus::Failed, "thread.run.failed", true),
            (RunStatus::Completed, "thread.run.completed", true),
            (RunStatus::Incomplete, "thread.run.incomplete", true),
            (RunStatus::Expired, "thread.run.expired", true),
        ] {
            let ev = Event::run_now(run(status));
            assert_eq!(ev.name(), name);
            assert_eq!(ev.ends_stream(), ends, "{name}");
            // The name's suffix is the status clients read in the body.
            assert_eq!(name.rsplit('.').next(), Some(status.as_str()));
        }
    }

    #[test]
    fn step_and_message_events_carry_the_spec_names() {
        for s in [
            StepStatus::InProgress,
            StepStatus::Cancelled,
            StepStatus::Failed,
            StepStatus::Completed,
            StepStatus::Expired,
        ] {
            let name = Event::Step(StepNews::Now(s), Box::new(step())).name();
            assert_eq!(name, format!("thread.run.step.{}", s.as_str()));
        }
        assert_eq!(
            Event::Message(MessageNews::Incomplete, Box::new(message())).name(),
            "thread.message.incomplete"
        );
        assert_eq!(
            Event::Done.to_sse(&|_| Value::Null),
            "event: done\ndata: [DONE]\n\n"
        );
    }

    fn step() -> RunStep {
        serde_json::from_value(serde_json::json!({
            "id": "step_a", "object": "thread.run.step", "created_at": 1,
            "assistant_id": "asst_a", "thread_id": "thread_a", "run_id": "run_a",
            "type": "message_creation", "status": "in_progress", "step_details": {},
            "last_error": null, "expired_at": null, "cancelled_at": null, "failed_at": null,
            "completed_at": null, "metadata": {}, "usage": null,
        }))
        .unwrap()
    }

    fn message() -> Message {
        serde_json::from_value(serde_json::json!({
            "id": "msg_a", "object": "thread.message", "created_at": 1, "thread_id": "thread_a",
            "status": "incomplete", "incomplete_details": null, "completed_at": null,
            "incomplete_at": null, "role": "assistant", "content": [], "assistant_id": null,
            "run_id": null, "attachments": [], "metadata": {},
        }))
        .unwrap()
    }
}
