"""Runs through the SDK's helpers: create_and_poll, streaming with an AssistantEventHandler,
function calls (single and parallel, polled and streamed), create_and_run_poll, cancel, run
steps, run metadata, and the thread lock."""

import json

import openai
import pytest
from openai import AssistantEventHandler

from sdk_compat import MODEL, PARALLEL_TOOL_MODEL, POLL_MS, SLOW_MODEL, TOOL_MODEL, assistants, threads

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "weather for a city",
    "parameters": {"type": "object", "properties": {"input": {"type": "string"}},
                   "required": ["input"]}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "parameters": {"type": "object", "properties": {"input": {"type": "string"}}}}}

RUN_TERMINAL_EVENTS = {"thread.run.completed", "thread.run.requires_action", "thread.run.failed",
                       "thread.run.cancelled", "thread.run.expired", "thread.run.incomplete"}


class Recorder(AssistantEventHandler):
    """Collects what the SDK's stream helper reports, callback by callback."""

    def __init__(self):
        super().__init__()
        self.events: list[str] = []
        self.text = ""
        self.text_snapshots: list[str] = []
        self.messages_done = []
        self.steps_created = []
        self.steps_done = []
        self.tool_calls_created = []
        self.tool_call_deltas = []
        self.tool_calls_done = []

    def on_event(self, event):
        self.events.append(event.event)

    def on_text_delta(self, delta, snapshot):
        self.text += delta.value or ""
        self.text_snapshots.append(snapshot.value)

    def on_message_done(self, message):
        self.messages_done.append(message)

    def on_run_step_created(self, run_step):
        self.steps_created.append(run_step)

    def on_run_step_done(self, run_step):
        self.steps_done.append(run_step)

    def on_tool_call_created(self, tool_call):
        self.tool_calls_created.append(tool_call)

    def on_tool_call_delta(self, delta, snapshot):
        self.tool_call_deltas.append((delta, snapshot))

    def on_tool_call_done(self, tool_call):
        self.tool_calls_done.append(tool_call)


def collapse(events):
    """Event names with runs of deltas folded into one."""
    out = []
    for e in events:
        if e.endswith(".delta") and out and out[-1] == e:
            continue
        out.append(e)
    return out


def test_create_and_poll(client):
    a = assistants(client).create(model=MODEL, instructions="Be brief.")
    t = threads(client).create(messages=[{"role": "user", "content": "ping pong"}])
    run = threads(client).runs.create_and_poll(thread_id=t.id, assistant_id=a.id,
                                               poll_interval_ms=POLL_MS)
    assert run.status == "completed"
    assert run.object == "thread.run" and run.id.startswith("run_")
    assert run.thread_id == t.id and run.assistant_id == a.id
    assert run.model == MODEL and run.instructions == "Be brief."
    assert run.completed_at is not None and run.started_at is not None
    assert run.expires_at is None, "expires_at is null once the run is terminal"
    assert run.usage is not None and run.usage.total_tokens == (
        run.usage.prompt_tokens + run.usage.completion_tokens) > 0
    assert run.last_error is None and run.required_action is None

    msgs = threads(client).messages.list(t.id)
    assert msgs.data[0].role == "assistant"
    assert msgs.data[0].content[0].text.value == "Echo: ping pong"
    assert msgs.data[0].status == "completed"

    # The proxy tells the polling helpers how long to wait.
    raw = threads(client).runs.with_raw_response.retrieve(run.id, thread_id=t.id)
    assert int(raw.headers["openai-poll-after-ms"]) > 0
    assert raw.parse().id == run.id

    listed = threads(client).runs.list(t.id)
    assert [r.id for r in listed.data] == [run.id]


def test_run_overrides(client):
    a = assistants(client).create(model=MODEL, instructions="base")
    t = threads(client).create()
    run = threads(client).runs.create_and_poll(
        thread_id=t.id, assistant_id=a.id, model="gpt-4o", additional_instructions="more",
        additional_messages=[{"role": "user", "content": "added by the run"}],
        metadata={"src": "sdk"}, temperature=0.2, poll_interval_ms=POLL_MS)
    assert run.status == "completed"
    assert run.model == "gpt-4o"
    assert run.instructions.startswith("base") and run.instructions.endswith("more")
    assert run.metadata == {"src": "sdk"}
    assert run.temperature == 0.2
    texts = [m.content[0].text.value for m in threads(client).messages.list(t.id, order="asc")]
    assert texts == ["added by the run", "Echo: added by the run"]


def test_stream_with_event_handler(client):
    a = assistants(client).create(model=MODEL)
    t = threads(client).create(messages=[{"role": "user", "content": "stream me some words"}])
    handler = Recorder()
    with threads(client).runs.stream(thread_id=t.id, assistant_id=a.id,
                                     event_handler=handler) as stream:
        stream.until_done()

    assert collapse(handler.events) == [
        "thread.run.created", "thread.run.queued", "thread.run.in_progress",
        "thread.run.step.created", "thread.run.step.in_progress",
        "thread.message.created", "thread.message.in_progress", "thread.message.delta",
        "thread.message.completed", "thread.run.step.completed", "thread.run.completed",
    ]
    expected = "Echo: stream me some words"
    assert handler.text == expected
    assert handler.text_snapshots[-1] == expected
    assert handler.events.count("thread.message.delta") > 1, "the text arrives in pieces"
    assert len(handler.messages_done) == 1
    assert handler.messages_done[0].content[0].text.value == expected
    assert [s.type for s in handler.steps_created] == ["message_creation"]
    assert handler.steps_created[0].step_details.message_creation.message_id == \
        handler.messages_done[0].id

    final = stream.get_final_run()
    assert final.status == "completed" and final.usage is not None
    final_messages = stream.get_final_messages()
    assert [m.content[0].text.value for m in final_messages] == [expected]
    assert stream.current_run.id == final.id
    # What was streamed is what is stored.
    stored = threads(client).messages.retrieve(final_messages[0].id, thread_id=t.id)
    assert stored.content[0].text.value == expected and stored.run_id == final.id


def test_stream_text_deltas_iterator(client):
    a = assistants(client).create(model=MODEL)
    t = threads(client).create(messages=[{"role": "user", "content": "one two three"}])
    with threads(client).runs.stream(thread_id=t.id, assistant_id=a.id) as stream:
        text = "".join(stream.text_deltas)
    assert text == "Echo: one two three"


def test_function_call_poll_and_submit(client):
    a = assistants(client).create(model=TOOL_MODEL, tools=[WEATHER])
    t = threads(client).create(messages=[{"role": "user", "content": "Paris"}])
    run = threads(client).runs.create_and_poll(thread_id=t.id, assistant_id=a.id,
                                               poll_interval_ms=POLL_MS)
    assert run.status == "requires_action"
    assert run.required_action.type == "submit_tool_outputs"
    calls = run.required_action.submit_tool_outputs.tool_calls
    assert len(calls) == 1
    assert calls[0].id.startswith("call_") and calls[0].type == "function"
    assert calls[0].function.name == "get_weather"
    assert json.loads(calls[0].function.arguments) == {"input": "Paris"}
    assert run.expires_at is not None

    # While the run waits for outputs the thread is locked.
    with pytest.raises(openai.BadRequestError):
        threads(client).messages.create(t.id, role="user", content="too early")

    done = threads(client).runs.submit_tool_outputs_and_poll(
        run_id=run.id, thread_id=t.id, poll_interval_ms=POLL_MS,
        tool_outputs=[{"tool_call_id": calls[0].id, "output": "sunny, 21C"}])
    assert done.status == "completed" and done.required_action is None
    assert threads(client).messages.list(t.id).data[0].content[0].text.value == \
        "Tool results: sunny, 21C"

    steps = threads(client).runs.steps.list(run.id, thread_id=t.id, order="asc").data
    assert [s.type for s in steps] == ["tool_calls", "message_creation"]
    assert all(s.status == "completed" and s.run_id == run.id for s in steps)
    fn = steps[0].step_details.tool_calls[0]
    assert fn.type == "function" and fn.id == calls[0].id
    assert fn.function.name == "get_weather" and fn.function.output == "sunny, 21C"
    one = threads(client).runs.steps.retrieve(steps[1].id, thread_id=t.id, run_id=run.id)
    assert one.id == steps[1].id and one.object == "thread.run.step"
    assert one.step_details.message_creation.message_id == \
        threads(client).messages.list(t.id).data[0].id


def test_parallel_function_calls(client):
    a = assistants(client).create(model=PARALLEL_TOOL_MODEL, tools=[WEATHER, TIME])
    t = threads(client).create(messages=[{"role": "user", "content": "Oslo"}])
    run = threads(client).runs.create_and_poll(thread_id=t.id, assistant_id=a.id,
                                               poll_interval_ms=POLL_MS)
    assert run.status == "requires_action"
    calls = run.required_action.submit_tool_outputs.tool_calls
    assert [c.function.name for c in calls] == ["get_weather", "get_time"]
    assert len({c.id for c in calls}) == 2

    # All outputs must arrive in one request.
    with pytest.raises(openai.BadRequestError):
        threads(client).runs.submit_tool_outputs(
            run_id=run.id, thread_id=t.id,
            tool_outputs=[{"tool_call_id": calls[0].id, "output": "only one"}])

    done = threads(client).runs.submit_tool_outputs_and_poll(
        run_id=run.id, thread_id=t.id, poll_interval_ms=POLL_MS,
        tool_outputs=[{"tool_call_id": calls[0].id, "output": "rain"},
                      {"tool_call_id": calls[1].id, "output": "noon"}])
    assert done.status == "completed"
    assert threads(client).messages.list(t.id).data[0].content[0].text.value == \
        "Tool results: rain; noon"

    # Submitting again once the run is done is refused.
    with pytest.raises(openai.BadRequestError):
        threads(client).runs.submit_tool_outputs(
            run_id=run.id, thread_id=t.id,
            tool_outputs=[{"tool_call_id": calls[0].id, "output": "late"},
                          {"tool_call_id": calls[1].id, "output": "late"}])


def test_function_call_streamed_both_ways(client):
    a = assistants(client).create(model=PARALLEL_TOOL_MODEL, tools=[WEATHER, TIME])
    t = threads(client).create(messages=[{"role": "user", "content": "Rome"}])
    first = Recorder()
    with threads(client).runs.stream(thread_id=t.id, assistant_id=a.id,
                                     event_handler=first) as stream:
        stream.until_done()
    assert collapse(first.events) == [
        "thread.run.created", "thread.run.queued", "thread.run.in_progress",
        "thread.run.step.created", "thread.run.step.in_progress", "thread.run.step.delta",
        "thread.run.requires_action",
    ]
    assert [s.type for s in first.steps_created] == ["tool_calls"]
    assert [c.type for c in first.tool_calls_created] == ["function", "function"]
    assert [c.function.name for c in first.tool_calls_created] == ["get_weather", "get_time"]
    assert first.tool_call_deltas, "argument fragments arrive as tool-call deltas"
    # The SDK rebuilt each call's arguments from the fragments.
    snapshots = {}
    for _delta, snap in first.tool_call_deltas:
        snapshots[snap.id] = snap
    assert {json.loads(s.function.arguments)["input"] for s in snapshots.values()} == {"Rome"}

    run = stream.get_final_run()
    assert run.status == "requires_action"
    calls = run.required_action.submit_tool_outputs.tool_calls
    assert {c.id for c in calls} == set(snapshots)
    assert [json.loads(c.function.arguments) for c in calls] == [{"input": "Rome"}] * 2

    second = Recorder()
    with threads(client).runs.submit_tool_outputs_stream(
            run_id=run.id, thread_id=t.id, event_handler=second,
            tool_outputs=[{"tool_call_id": calls[0].id, "output": "warm"},
                          {"tool_call_id": calls[1].id, "output": "late"}]) as stream2:
        stream2.until_done()
    events = collapse(second.events)
    assert events[0] == "thread.run.step.completed", "the tool step completes first"
    assert events[1:] == [
        "thread.run.queued", "thread.run.in_progress",
        "thread.run.step.created", "thread.run.step.in_progress",
        "thread.message.created", "thread.message.in_progress", "thread.message.delta",
        "thread.message.completed", "thread.run.step.completed", "thread.run.completed",
    ]
    assert second.text == "Tool results: warm; late"
    assert stream2.get_final_run().status == "completed"
    assert [m.content[0].text.value for m in stream2.get_final_messages()] == [
        "Tool results: warm; late"]
    outputs = {c.id: c.function.output for c in
               threads(client).runs.steps.list(run.id, thread_id=t.id, order="asc")
               .data[0].step_details.tool_calls}
    assert outputs == {calls[0].id: "warm", calls[1].id: "late"}


def test_create_and_run_poll(client):
    a = assistants(client).create(model=MODEL)
    run = threads(client).create_and_run_poll(
        assistant_id=a.id, poll_interval_ms=POLL_MS,
        thread={"messages": [{"role": "user", "content": "new thread"}], "metadata": {"x": "1"}})
    assert run.status == "completed"
    assert run.thread_id.startswith("thread_")
    assert threads(client).retrieve(run.thread_id).metadata == {"x": "1"}
    texts = [m.content[0].text.value
             for m in threads(client).messages.list(run.thread_id, order="asc")]
    assert texts == ["new thread", "Echo: new thread"]


def test_create_and_run_stream(client):
    a = assistants(client).create(model=MODEL)
    handler = Recorder()
    with threads(client).create_and_run_stream(
            assistant_id=a.id, event_handler=handler,
            thread={"messages": [{"role": "user", "content": "streamed thread"}]}) as stream:
        stream.until_done()
    assert handler.events[0] == "thread.created"
    assert handler.events[1] == "thread.run.created"
    assert handler.events[-1] == "thread.run.completed"
    assert handler.text == "Echo: streamed thread"


def test_cancel_a_slow_run(client):
    a = assistants(client).create(model=SLOW_MODEL)
    words = " ".join(f"w{i}" for i in range(60))  # ~3 s of upstream stream at 50 ms a word
    t = threads(client).create(messages=[{"role": "user", "content": words}])
    run = threads(client).runs.create(thread_id=t.id, assistant_id=a.id)
    assert run.status == "queued"

    # While the run is active the thread is locked for messages and runs.
    with pytest.raises(openai.BadRequestError) as e:
        threads(client).messages.create(t.id, role="user", content="blocked")
    assert e.value.status_code == 400
    with pytest.raises(openai.BadRequestError):
        threads(client).runs.create(thread_id=t.id, assistant_id=a.id)

    cancelling = threads(client).runs.cancel(run.id, thread_id=t.id)
    assert cancelling.id == run.id
    assert cancelling.status in ("cancelling", "cancelled")
    ended = threads(client).runs.poll(run.id, thread_id=t.id, poll_interval_ms=POLL_MS)
    assert ended.status == "cancelled"
    assert ended.cancelled_at is not None

    with pytest.raises(openai.BadRequestError) as e:
        threads(client).runs.cancel(run.id, thread_id=t.id)
    assert "Cannot cancel run with status 'cancelled'" in e.value.message

    # The lock is released: the thread takes messages and runs again.
    threads(client).messages.create(t.id, role="user", content="after cancel")
    fast = assistants(client).create(model=MODEL)
    again = threads(client).runs.create_and_poll(thread_id=t.id, assistant_id=fast.id,
                                                 poll_interval_ms=POLL_MS)
    assert again.status == "completed"


def test_cancel_requires_action(client):
    a = assistants(client).create(model=TOOL_MODEL, tools=[WEATHER])
    t = threads(client).create(messages=[{"role": "user", "content": "Lima"}])
    run = threads(client).runs.create_and_poll(thread_id=t.id, assistant_id=a.id,
                                               poll_interval_ms=POLL_MS)
    assert run.status == "requires_action"
    threads(client).runs.cancel(run.id, thread_id=t.id)
    ended = threads(client).runs.poll(run.id, thread_id=t.id, poll_interval_ms=POLL_MS)
    assert ended.status == "cancelled"


def test_run_update_metadata_and_list(client):
    a = assistants(client).create(model=MODEL)
    t = threads(client).create(messages=[{"role": "user", "content": "hi"}])
    r1 = threads(client).runs.create_and_poll(thread_id=t.id, assistant_id=a.id,
                                              poll_interval_ms=POLL_MS)
    r2 = threads(client).runs.create_and_poll(thread_id=t.id, assistant_id=a.id,
                                              poll_interval_ms=POLL_MS)
    up = threads(client).runs.update(r1.id, thread_id=t.id, metadata={"label": "first"})
    assert up.metadata == {"label": "first"} and up.status == "completed"
    assert threads(client).runs.retrieve(r1.id, thread_id=t.id).metadata == {"label": "first"}
    assert [r.id for r in threads(client).runs.list(t.id, limit=1)] == [r2.id, r1.id]


def test_upstream_failure_fails_the_run(client):
    a = assistants(client).create(model="fake-error-500")
    t = threads(client).create(messages=[{"role": "user", "content": "boom"}])
    run = threads(client).runs.create_and_poll(thread_id=t.id, assistant_id=a.id,
                                               poll_interval_ms=POLL_MS)
    assert run.status == "failed"
    assert run.last_error is not None and run.last_error.code == "server_error"
    assert run.failed_at is not None


@pytest.mark.parametrize("model,code", [("fake-error-429", "rate_limit_exceeded"),
                                        ("fake-drop", "server_error")])
def test_upstream_faults_fail_the_run(client, model, code):
    a = assistants(client).create(model=model)
    t = threads(client).create(messages=[{"role": "user", "content": "one two three four five"}])
    run = threads(client).runs.create_and_poll(thread_id=t.id, assistant_id=a.id,
                                               poll_interval_ms=POLL_MS)
    assert run.status == "failed"
    assert run.last_error.code == code


def test_failed_run_streams_run_failed(client):
    a = assistants(client).create(model="fake-error-500")
    t = threads(client).create(messages=[{"role": "user", "content": "boom"}])
    handler = Recorder()
    with threads(client).runs.stream(thread_id=t.id, assistant_id=a.id,
                                     event_handler=handler) as stream:
        stream.until_done()
    assert handler.events[-1] == "thread.run.failed"
    assert stream.get_final_run().last_error.code == "server_error"


def test_max_completion_tokens_makes_the_run_incomplete(client):
    a = assistants(client).create(model=MODEL)
    words = " ".join(f"w{i}" for i in range(300))  # echoed back: over 256 "tokens"
    t = threads(client).create(messages=[{"role": "user", "content": words}])
    run = threads(client).runs.create_and_poll(thread_id=t.id, assistant_id=a.id,
                                               max_completion_tokens=256,
                                               poll_interval_ms=POLL_MS)
    assert run.status == "incomplete"
    assert run.incomplete_details.reason == "max_completion_tokens"
    msg = threads(client).messages.list(t.id).data[0]
    assert msg.status == "incomplete"
    assert msg.incomplete_details.reason == "max_tokens"


def test_json_response_format(client):
    a = assistants(client).create(model=MODEL, response_format={"type": "json_object"})
    assert a.response_format.type == "json_object"
    t = threads(client).create(messages=[{"role": "user", "content": "as json"}])
    run = threads(client).runs.create_and_poll(thread_id=t.id, assistant_id=a.id,
                                               poll_interval_ms=POLL_MS)
    assert run.status == "completed"
    assert json.loads(threads(client).messages.list(t.id).data[0].content[0].text.value) == {
        "echo": "as json"}
