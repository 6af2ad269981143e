"""What strictly typed clients need: every key the spec marks required is present (even when
null), and every object and stream event validates against the SDK's own pydantic models
(types and enum literals; the SDK itself only constructs, it does not validate). The raw
responses come through the SDK's `with_raw_response` / `with_streaming_response`."""

import json

import pytest
from pydantic import TypeAdapter

from openai.types import FileObject
from openai.types.beta import Assistant, AssistantStreamEvent, Thread
from openai.types.beta.threads import Message, Run
from openai.types.beta.threads.runs import RunStep

from sdk_compat import (CITE_MODEL, FILE_SEARCH_INCLUDE, MODEL, POLL_MS, TOOL_MODEL, assistants,
                        threads, vector_stores)

try:  # 1.66+ / 3.x
    from openai.types import VectorStore
    from openai.types.vector_stores import VectorStoreFile, VectorStoreFileBatch
except ImportError:  # pragma: no cover - older SDK lines
    from openai.types.beta import VectorStore
    from openai.types.beta.vector_stores import VectorStoreFile, VectorStoreFileBatch

# Required keys per object (spec §2.1, §3.1, §4.1, §5.1, §5.9, §8.1, §8.4, §8.5, §9.1).
REQUIRED = {
    "assistant": ["id", "object", "created_at", "name", "description", "model", "instructions",
                  "tools", "metadata"],
    "thread": ["id", "object", "created_at", "tool_resources", "metadata"],
    "thread.message": ["id", "object", "created_at", "thread_id", "status", "incomplete_details",
                       "completed_at", "incomplete_at", "role", "content", "assistant_id",
                       "run_id", "attachments", "metadata"],
    "thread.run": ["id", "object", "created_at", "thread_id", "assistant_id", "status",
                   "required_action", "last_error", "expires_at", "started_at", "cancelled_at",
                   "failed_at", "completed_at", "incomplete_details", "model", "instructions",
                   "tools", "metadata", "usage", "temperature", "top_p", "max_prompt_tokens",
                   "max_completion_tokens", "truncation_strategy", "tool_choice",
                   "parallel_tool_calls", "response_format"],
    "thread.run.step": ["id", "object", "created_at", "assistant_id", "thread_id", "run_id",
                        "type", "status", "step_details", "last_error", "expired_at",
                        "cancelled_at", "failed_at", "completed_at", "metadata", "usage"],
    "vector_store": ["id", "object", "created_at", "name", "usage_bytes", "file_counts",
                     "status", "last_active_at", "metadata"],
    "vector_store.file": ["id", "object", "usage_bytes", "created_at", "vector_store_id",
                          "status", "last_error"],
    "vector_store.files_batch": ["id", "object", "created_at", "vector_store_id", "status",
                                 "file_counts"],
    "file": ["id", "object", "bytes", "created_at", "filename", "purpose", "status"],
}
MODELS = {
    "assistant": Assistant, "thread": Thread, "thread.message": Message, "thread.run": Run,
    "thread.run.step": RunStep, "vector_store": VectorStore,
    "vector_store.file": VectorStoreFile, "vector_store.files_batch": VectorStoreFileBatch,
    "file": FileObject,
}
EVENTS = TypeAdapter(AssistantStreamEvent)
RUN_EVENT_STATUS = {
    "thread.run.created": "queued", "thread.run.queued": "queued",
    "thread.run.in_progress": "in_progress", "thread.run.requires_action": "requires_action",
    "thread.run.completed": "completed", "thread.run.incomplete": "incomplete",
    "thread.run.failed": "failed", "thread.run.cancelling": "cancelling",
    "thread.run.cancelled": "cancelled", "thread.run.expired": "expired",
}


def check_object(obj: dict, where: str = ""):
    kind = obj.get("object")
    assert kind in REQUIRED, f"{where}: unexpected object {kind!r}"
    missing = [k for k in REQUIRED[kind] if k not in obj]
    assert not missing, f"{where}: {kind} lacks required keys {missing}: {obj}"
    MODELS[kind].model_validate(obj)  # raises on a wrong type or an enum value outside the spec
    if kind == "thread.run":
        terminal = obj["status"] in ("completed", "failed", "cancelled", "expired", "incomplete")
        assert (obj["expires_at"] is None) == terminal, f"{where}: expires_at {obj}"
        assert (obj["required_action"] is not None) == (obj["status"] == "requires_action")
    if kind == "thread.message":
        for i, part in enumerate(obj["content"]):
            if part["type"] == "text":
                for ann in part["text"]["annotations"]:
                    assert part["text"]["value"][ann["start_index"]:ann["end_index"]] == ann["text"]
    return obj


def raw_json(raw):
    return raw.http_response.json()


def sse_events(lines):
    """(event, data) pairs from raw SSE lines; data stays text for [DONE]."""
    out, name, data = [], None, []
    for line in list(lines) + [""]:
        if line.startswith("event:"):
            name = line[len("event:"):].strip()
        elif line.startswith("data:"):
            data.append(line[len("data:"):].strip())
        elif line == "" and name is not None:
            assert len(data) == 1, f"{name}: one single-line data field per event, got {data}"
            out.append((name, data[0]))
            name, data = None, []
    return out


def check_stream(events, first_run_event="thread.run.created", known_steps=()):
    """Validates each event against the SDK union and the ordering rules of spec §6.5."""
    names = [n for n, _ in events]
    assert names[-1] == "done" and events[-1][1] == "[DONE]", names[-3:]
    run_events = [n for n in names if n in RUN_EVENT_STATUS]
    assert run_events and run_events[-1] in (
        "thread.run.completed", "thread.run.requires_action", "thread.run.failed",
        "thread.run.cancelled", "thread.run.expired", "thread.run.incomplete"), names
    if first_run_event:
        assert run_events[0] == first_run_event, names
    messages_created, active_message, steps_created = set(), None, set(known_steps)
    parsed = []
    for name, data in events[:-1]:
        obj = json.loads(data)
        EVENTS.validate_python({"event": name, "data": obj})
        parsed.append((name, obj))
        if name in RUN_EVENT_STATUS:
            check_object(obj, name)
            assert obj["status"] == RUN_EVENT_STATUS[name], (name, obj["status"])
        elif name.startswith("thread.run.step.") and name != "thread.run.step.delta":
            check_object(obj, name)
            if name == "thread.run.step.created":
                steps_created.add(obj["id"])
            else:
                assert obj["id"] in steps_created, f"{name} before step.created"
        elif name == "thread.run.step.delta":
            assert obj["object"] == "thread.run.step.delta"
            assert obj["id"] in steps_created, "step delta before step.created"
            for call in obj["delta"].get("step_details", {}).get("tool_calls", []):
                assert "index" in call
        elif name == "thread.message.created":
            check_object(obj, name)
            assert active_message is None, "a message was created while another is active"
            assert obj["id"] not in messages_created
            assert obj["status"] == "in_progress" and obj["content"] == []
            messages_created.add(obj["id"])
            active_message = obj["id"]
        elif name in ("thread.message.in_progress", "thread.message.completed",
                      "thread.message.incomplete"):
            check_object(obj, name)
            assert obj["id"] == active_message, f"{name} for a message that is not active"
            if name != "thread.message.in_progress":
                active_message = None
        elif name == "thread.message.delta":
            assert obj["object"] == "thread.message.delta"
            assert obj["id"] == active_message, "delta for a message that is not active"
            for part in obj["delta"].get("content", []):
                assert "index" in part
        elif name == "thread.created":
            check_object(obj, name)
    assert active_message is None, "the stream ended with a message still active"
    return parsed


def stream_raw(resource_call):
    with resource_call as response:
        return sse_events(response.iter_lines())


WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"input": {"type": "string"}}}}}


def test_objects_and_streams_match_the_schema(client):
    A, T = assistants(client), threads(client)
    a = check_object(raw_json(A.with_raw_response.create(model=MODEL, name="s")))
    check_object(raw_json(A.with_raw_response.retrieve(a["id"])))
    for item in raw_json(A.with_raw_response.list())["data"]:
        check_object(item)
    t = check_object(raw_json(T.with_raw_response.create(
        messages=[{"role": "user", "content": "schema check"}])))
    for m in raw_json(T.messages.with_raw_response.list(t["id"]))["data"]:
        check_object(m)
    lst = raw_json(T.messages.with_raw_response.list(t["id"]))
    assert set(lst) >= {"object", "data", "first_id", "last_id", "has_more"}
    assert lst["object"] == "list" and lst["first_id"] == lst["data"][0]["id"]

    # A plain streamed run.
    events = stream_raw(T.runs.with_streaming_response.create(
        thread_id=t["id"], assistant_id=a["id"], stream=True))
    parsed = check_stream(events)
    first = parsed[0][1]
    assert first["usage"] is None and first["expires_at"] is not None
    completed = [o for n, o in parsed if n == "thread.run.completed"][0]
    assert completed["usage"]["total_tokens"] > 0 and completed["expires_at"] is None
    msg_done = [o for n, o in parsed if n == "thread.message.completed"][0]
    assert msg_done["completed_at"] is not None and msg_done["status"] == "completed"
    step_done = [o for n, o in parsed if n == "thread.run.step.completed"][0]
    assert step_done["usage"] is not None and step_done["completed_at"] is not None
    run_id = first["id"]
    check_object(raw_json(T.runs.with_raw_response.retrieve(run_id, thread_id=t["id"])))
    for s in raw_json(T.runs.steps.with_raw_response.list(run_id, thread_id=t["id"]))["data"]:
        check_object(s)

    # create-and-run streams start with thread.created.
    events = stream_raw(T.with_streaming_response.create_and_run(
        assistant_id=a["id"], stream=True,
        thread={"messages": [{"role": "user", "content": "new"}]}))
    assert events[0][0] == "thread.created"
    check_stream(events)

    # Function calls: the stream ends at requires_action; submit streams a new one that
    # starts with the tool step's completion.
    fa = check_object(raw_json(A.with_raw_response.create(model=TOOL_MODEL, tools=[WEATHER])))
    ft = raw_json(T.with_raw_response.create(messages=[{"role": "user", "content": "Oslo"}]))
    parsed = check_stream(stream_raw(T.runs.with_streaming_response.create(
        thread_id=ft["id"], assistant_id=fa["id"], stream=True)))
    ra = parsed[-1][1]
    assert parsed[-1][0] == "thread.run.requires_action"
    tool_step = [o for n, o in parsed if n == "thread.run.step.created"][0]["id"]
    calls = ra["required_action"]["submit_tool_outputs"]["tool_calls"]
    deltas = [o for n, o in parsed if n == "thread.run.step.delta"]
    opening = deltas[0]["delta"]["step_details"]["tool_calls"][0]
    assert opening["id"] == calls[0]["id"] and opening["function"]["name"] == "get_weather"
    assert all("name" not in d["delta"]["step_details"]["tool_calls"][0].get("function", {})
               for d in deltas[1:]), "a tool call's name is sent once"
    parsed = check_stream(stream_raw(T.runs.with_streaming_response.submit_tool_outputs(
        run_id=ra["id"], thread_id=ft["id"], stream=True,
        tool_outputs=[{"tool_call_id": calls[0]["id"], "output": "fine"}])),
        first_run_event=None, known_steps={tool_step})
    assert parsed[0][0] == "thread.run.step.completed"
    assert parsed[0][1]["step_details"]["tool_calls"][0]["function"]["output"] == "fine"
    for s in raw_json(T.runs.steps.with_raw_response.list(ra["id"], thread_id=ft["id"]))["data"]:
        check_object(s)

    # Cancelled, failed and incomplete runs.
    ca = raw_json(T.runs.with_raw_response.create(thread_id=ft["id"], assistant_id=fa["id"]))
    T.runs.poll(ca["id"], thread_id=ft["id"], poll_interval_ms=POLL_MS)
    check_object(raw_json(T.runs.with_raw_response.cancel(ca["id"], thread_id=ft["id"])))
    T.runs.poll(ca["id"], thread_id=ft["id"], poll_interval_ms=POLL_MS)
    check_object(raw_json(T.runs.with_raw_response.retrieve(ca["id"], thread_id=ft["id"])))
    bad = A.create(model="fake-error-500")
    check_stream(stream_raw(T.runs.with_streaming_response.create(
        thread_id=t["id"], assistant_id=bad.id, stream=True)))
    words = " ".join(f"w{i}" for i in range(300))
    T.messages.create(t["id"], role="user", content=words)
    parsed = check_stream(stream_raw(T.runs.with_streaming_response.create(
        thread_id=t["id"], assistant_id=a["id"], stream=True, max_completion_tokens=256)))
    assert [n for n, _ in parsed][-1] == "thread.run.incomplete"
    assert "thread.message.incomplete" in [n for n, _ in parsed]
    for r in raw_json(T.runs.with_raw_response.list(t["id"]))["data"]:
        check_object(r)
    for m in raw_json(T.messages.with_raw_response.list(t["id"]))["data"]:
        check_object(m)


def test_retrieval_objects_match_the_schema(client):
    V = vector_stores(client)
    f = check_object(raw_json(client.files.with_raw_response.create(
        file=("cats.txt", b"Cats purr and chase mice around the barn."), purpose="assistants")))
    check_object(raw_json(client.files.with_raw_response.retrieve(f["id"])))
    vs = check_object(raw_json(V.with_raw_response.create(name="s", file_ids=[f["id"]])))
    V.files.poll(f["id"], vector_store_id=vs["id"], poll_interval_ms=POLL_MS)
    check_object(raw_json(V.with_raw_response.retrieve(vs["id"])))
    check_object(raw_json(V.files.with_raw_response.retrieve(f["id"], vector_store_id=vs["id"])))
    g = client.files.create(file=("dogs.txt", b"Dogs bark at the mail carrier."),
                            purpose="assistants")
    b = check_object(raw_json(V.file_batches.with_raw_response.create(
        vector_store_id=vs["id"], file_ids=[g.id])))
    V.file_batches.poll(b["id"], vector_store_id=vs["id"], poll_interval_ms=POLL_MS)
    check_object(raw_json(V.file_batches.with_raw_response.retrieve(
        b["id"], vector_store_id=vs["id"])))
    page = raw_json(V.with_raw_response.search(vs["id"], query="cats chase mice"))
    assert page["object"] == "vector_store.search_results.page"
    assert set(page) >= {"search_query", "data", "has_more", "next_page"}
    assert set(page["data"][0]) >= {"file_id", "filename", "score", "attributes", "content"}
    content = raw_json(V.files.with_raw_response.content(f["id"], vector_store_id=vs["id"]))
    assert content["object"] == "vector_store.file_content.page"
    assert set(content) >= {"data", "has_more", "next_page"}

    # A file_search run: the step's results validate, with content only under include[].
    a = assistants(client).create(model=CITE_MODEL, tools=[{"type": "file_search"}],
                                  tool_resources={"file_search": {"vector_store_ids": [vs["id"]]}})
    t = threads(client).create(messages=[{"role": "user", "content": "what do cats chase"}])
    parsed = check_stream(stream_raw(threads(client).runs.with_streaming_response.create(
        thread_id=t.id, assistant_id=a.id, stream=True, include=[FILE_SEARCH_INCLUDE])))
    done_msg = [o for n, o in parsed if n == "thread.message.completed"][0]
    assert done_msg["content"][0]["text"]["annotations"][0]["type"] == "file_citation"
    ann_deltas = [o for n, o in parsed if n == "thread.message.delta"
                  and any(p.get("text", {}).get("annotations") for p in o["delta"]["content"])]
    assert len(ann_deltas) == 1, "an annotation is streamed exactly once"
    run_id = parsed[0][1]["id"]
    steps = raw_json(threads(client).runs.steps.with_raw_response.list(
        run_id, thread_id=t.id, include=[FILE_SEARCH_INCLUDE]))["data"]
    for s in steps:
        check_object(s)
    fs = [s for s in steps if s["type"] == "tool_calls"][0]["step_details"]["tool_calls"][0]
    assert fs["type"] == "file_search" and fs["file_search"]["results"][0]["content"]


@pytest.mark.parametrize("kind", ["assistant", "thread", "message", "vector_store", "file"])
def test_delete_objects(client, kind):
    if kind == "assistant":
        x = assistants(client).create(model=MODEL)
        d = raw_json(assistants(client).with_raw_response.delete(x.id))
        expected = "assistant.deleted"
    elif kind == "thread":
        x = threads(client).create()
        d = raw_json(threads(client).with_raw_response.delete(x.id))
        expected = "thread.deleted"
    elif kind == "message":
        t = threads(client).create()
        x = threads(client).messages.create(t.id, role="user", content="x")
        d = raw_json(threads(client).messages.with_raw_response.delete(x.id, thread_id=t.id))
        expected = "thread.message.deleted"
    elif kind == "vector_store":
        x = vector_stores(client).create(name="x")
        d = raw_json(vector_stores(client).with_raw_response.delete(x.id))
        expected = "vector_store.deleted"
    else:
        x = client.files.create(file=("x.txt", b"x"), purpose="assistants")
        d = raw_json(client.files.with_raw_response.delete(x.id))
        expected = "file"
    assert d == {"id": x.id, "object": expected, "deleted": True}
