"""Less travelled options through the SDK: tool_choice and parallel_tool_calls, per-run tool
overrides, truncation, image and code_interpreter attachments, search options, batch cancel,
cursor pagination backwards."""

import openai
import pytest

from sdk_compat import MODEL, PARALLEL_TOOL_MODEL, POLL_MS, assistants, threads, vector_stores
from test_runs import TIME, WEATHER


def test_tool_choice_and_parallel_tool_calls(client):
    a = assistants(client).create(model=PARALLEL_TOOL_MODEL, tools=[WEATHER, TIME])
    t = threads(client).create(messages=[{"role": "user", "content": "Kyiv"}])

    def calls(**kw):
        run = threads(client).runs.create_and_poll(thread_id=t.id, assistant_id=a.id,
                                                   poll_interval_ms=POLL_MS, **kw)
        assert run.status == "requires_action"
        threads(client).runs.cancel(run.id, thread_id=t.id)
        threads(client).runs.poll(run.id, thread_id=t.id, poll_interval_ms=POLL_MS)
        return [c.function.name for c in run.required_action.submit_tool_outputs.tool_calls], run

    names, run = calls(parallel_tool_calls=False)
    assert names == ["get_weather"] and run.parallel_tool_calls is False
    names, run = calls(tool_choice={"type": "function", "function": {"name": "get_time"}})
    assert names == ["get_time"]
    assert run.tool_choice.type == "function" and run.tool_choice.function.name == "get_time"
    names, run = calls(tools=[TIME])
    assert names == ["get_time"] and [x.function.name for x in run.tools] == ["get_time"]

    done = threads(client).runs.create_and_poll(thread_id=t.id, assistant_id=a.id,
                                                tool_choice="none", poll_interval_ms=POLL_MS)
    assert done.status == "completed" and done.tool_choice == "none"


def test_truncation_last_messages(client):
    a = assistants(client).create(model=MODEL)
    t = threads(client).create(messages=[{"role": "user", "content": f"message {i} " + "x " * 20}
                                         for i in range(6)])
    full = threads(client).runs.create_and_poll(thread_id=t.id, assistant_id=a.id,
                                                poll_interval_ms=POLL_MS)
    short = threads(client).runs.create_and_poll(
        thread_id=t.id, assistant_id=a.id, poll_interval_ms=POLL_MS,
        truncation_strategy={"type": "last_messages", "last_messages": 1})
    assert short.truncation_strategy.type == "last_messages"
    assert short.truncation_strategy.last_messages == 1
    assert short.usage.prompt_tokens < full.usage.prompt_tokens


def test_image_file_content_and_code_interpreter_attachment(client):
    img = client.files.create(file=("cat.png", b"\x89PNG\r\n\x1a\nfake"), purpose="vision")
    data = client.files.create(file=("data.csv", b"a,b\n1,2\n"), purpose="assistants")
    t = threads(client).create()
    m = threads(client).messages.create(
        t.id, role="user",
        content=[{"type": "image_file", "image_file": {"file_id": img.id, "detail": "high"}},
                 {"type": "text", "text": "what is this"}],
        attachments=[{"file_id": data.id, "tools": [{"type": "code_interpreter"}]}])
    assert m.content[0].type == "image_file"
    assert m.content[0].image_file.file_id == img.id and m.content[0].image_file.detail == "high"
    assert m.attachments[0].tools[0].type == "code_interpreter"
    tr = threads(client).retrieve(t.id).tool_resources
    assert tr.code_interpreter.file_ids == [data.id]

    a = assistants(client).create(model=MODEL, tools=[{"type": "code_interpreter"}],
                                  tool_resources={"code_interpreter": {"file_ids": [data.id]}})
    assert a.tool_resources.code_interpreter.file_ids == [data.id]
    up = assistants(client).update(a.id, tool_resources={"code_interpreter": {"file_ids": []}})
    assert up.tool_resources.code_interpreter.file_ids == []


def test_search_options(client):
    docs = {"birds.txt": "Sparrows and finches sing in the garden hedge.",
            "ships.txt": "Container ships sail across the ocean to the harbour."}
    files = [client.files.create(file=(n, t.encode()), purpose="assistants")
             for n, t in docs.items()]
    vs = vector_stores(client).create(name="opts", file_ids=[f.id for f in files])
    for f in files:
        vector_stores(client).files.poll(f.id, vector_store_id=vs.id, poll_interval_ms=POLL_MS)

    page = vector_stores(client).search(vs.id, query=["sparrows finches", "garden hedge"])
    results = list(page)
    assert results[0].filename == "birds.txt"
    exact = list(vector_stores(client).search(
        vs.id, query="Container ships sail across the ocean to the harbour.",
        ranking_options={"ranker": "auto", "score_threshold": 0.9}))
    assert [r.filename for r in exact] == ["ships.txt"]
    assert exact[0].score >= 0.9
    none = list(vector_stores(client).search(vs.id, query="zebra quantum",
                                             ranking_options={"score_threshold": 0.99}))
    assert none == []
    rewritten = list(vector_stores(client).search(vs.id, query="ships harbour",
                                                  rewrite_query=True))
    assert rewritten[0].filename == "ships.txt"
    with pytest.raises(openai.BadRequestError):
        vector_stores(client).search(vs.id, query="x", max_num_results=51)


def test_batch_cancel(client):
    vs = vector_stores(client).create(name="cancel")
    files = [client.files.create(file=(f"f{i}.txt", f"document number {i} ".encode() * 50),
                                 purpose="assistants") for i in range(3)]
    batch = vector_stores(client).file_batches.create(vector_store_id=vs.id,
                                                      file_ids=[f.id for f in files])
    assert batch.file_counts.total == 3
    cancelled = vector_stores(client).file_batches.cancel(batch.id, vector_store_id=vs.id)
    assert cancelled.id == batch.id
    assert cancelled.status in ("cancelled", "completed", "in_progress")
    final = vector_stores(client).file_batches.poll(batch.id, vector_store_id=vs.id,
                                                    poll_interval_ms=POLL_MS)
    assert final.status in ("cancelled", "completed")
    counts = final.file_counts
    assert counts.in_progress == 0
    assert counts.completed + counts.cancelled + counts.failed == 3


def test_pagination_backwards_and_runs_list(client):
    a = assistants(client).create(model=MODEL)
    t = threads(client).create(messages=[{"role": "user", "content": "hi"}])
    runs = [threads(client).runs.create_and_poll(thread_id=t.id, assistant_id=a.id,
                                                 poll_interval_ms=POLL_MS).id for _ in range(3)]
    assert [r.id for r in threads(client).runs.list(t.id, order="asc", limit=1)] == runs
    before = threads(client).runs.list(t.id, order="asc", before=runs[2])
    assert [r.id for r in before.data] == runs[:2]
    after_desc = threads(client).runs.list(t.id, after=runs[2])
    assert [r.id for r in after_desc.data] == [runs[1], runs[0]]
    msgs = [m.id for m in threads(client).messages.list(t.id, order="asc")]
    assert len(msgs) == 4
    assert [m.id for m in threads(client).messages.list(t.id, before=msgs[1])] == msgs[2:][::-1]
