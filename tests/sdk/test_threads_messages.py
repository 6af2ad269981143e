"""Threads (create with messages, retrieve, update, delete) and messages (string and array
content, list with run_id, retrieve, update, delete)."""

import openai
import pytest

from sdk_compat import MODEL, POLL_MS, assistants, threads


def test_thread_lifecycle(client):
    t = threads(client).create(
        messages=[
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "an injected assistant turn"},
            {"role": "user", "content": [{"type": "text", "text": "third"}]},
        ],
        metadata={"k": "v"},
    )
    assert t.id.startswith("thread_") and t.object == "thread"
    assert t.metadata == {"k": "v"}
    assert isinstance(t.created_at, int)

    msgs = threads(client).messages.list(t.id, order="asc")
    assert [m.role for m in msgs.data] == ["user", "assistant", "user"]
    assert [m.content[0].text.value for m in msgs.data] == [
        "first", "an injected assistant turn", "third"]
    for m in msgs.data:
        assert m.thread_id == t.id and m.run_id is None and m.status == "completed"

    got = threads(client).retrieve(t.id)
    assert got.id == t.id and got.metadata == {"k": "v"}

    up = threads(client).update(t.id, metadata={"k": "w", "n": "1"})
    assert up.metadata == {"k": "w", "n": "1"}
    assert threads(client).retrieve(t.id).metadata == {"k": "w", "n": "1"}

    d = threads(client).delete(t.id)
    assert d.deleted is True and d.object == "thread.deleted" and d.id == t.id
    with pytest.raises(openai.NotFoundError):
        threads(client).retrieve(t.id)
    with pytest.raises(openai.NotFoundError):
        threads(client).messages.list(t.id)


def test_empty_thread(client):
    t = threads(client).create()
    assert threads(client).messages.list(t.id).data == []
    assert t.metadata == {}


def test_message_crud(client):
    t = threads(client).create()
    m1 = threads(client).messages.create(t.id, role="user", content="plain string")
    assert m1.id.startswith("msg_") and m1.object == "thread.message"
    assert m1.role == "user" and m1.thread_id == t.id
    assert m1.content[0].type == "text"
    assert m1.content[0].text.value == "plain string"
    assert m1.content[0].text.annotations == []
    assert m1.attachments == [] or m1.attachments is None
    assert m1.assistant_id is None and m1.run_id is None

    m2 = threads(client).messages.create(
        t.id, role="user",
        content=[{"type": "text", "text": "part one"},
                 {"type": "image_url", "image_url": {"url": "https://example.com/cat.png",
                                                     "detail": "low"}},
                 {"type": "text", "text": "part two"}],
        metadata={"source": "array"},
    )
    assert [c.type for c in m2.content] == ["text", "image_url", "text"]
    assert m2.content[0].text.value == "part one"
    assert m2.content[1].image_url.url == "https://example.com/cat.png"
    assert m2.content[1].image_url.detail == "low"
    assert m2.content[2].text.value == "part two"
    assert m2.metadata == {"source": "array"}

    got = threads(client).messages.retrieve(m2.id, thread_id=t.id)
    assert got.id == m2.id and got.content[2].text.value == "part two"

    up = threads(client).messages.update(m1.id, thread_id=t.id, metadata={"seen": "yes"})
    assert up.metadata == {"seen": "yes"}
    assert up.content[0].text.value == "plain string"

    listed = threads(client).messages.list(t.id)
    assert [m.id for m in listed.data] == [m2.id, m1.id], "default order is desc"

    d = threads(client).messages.delete(m1.id, thread_id=t.id)
    assert d.deleted is True and d.object == "thread.message.deleted" and d.id == m1.id
    assert [m.id for m in threads(client).messages.list(t.id)] == [m2.id]
    with pytest.raises(openai.NotFoundError):
        threads(client).messages.retrieve(m1.id, thread_id=t.id)


def test_messages_paginate_in_creation_order(client):
    t = threads(client).create()
    # Same second, so the order comes from the ids, not created_at.
    ids = [threads(client).messages.create(t.id, role="user", content=f"m{i}").id for i in range(7)]
    assert [m.id for m in threads(client).messages.list(t.id, limit=3, order="asc")] == ids
    assert [m.id for m in threads(client).messages.list(t.id, limit=3)] == ids[::-1]


def test_list_messages_by_run_id(client):
    a = assistants(client).create(model=MODEL)
    t = threads(client).create(messages=[{"role": "user", "content": "hello there"}])
    r1 = threads(client).runs.create_and_poll(thread_id=t.id, assistant_id=a.id,
                                              poll_interval_ms=POLL_MS)
    assert r1.status == "completed"
    threads(client).messages.create(t.id, role="user", content="again")
    r2 = threads(client).runs.create_and_poll(thread_id=t.id, assistant_id=a.id,
                                              poll_interval_ms=POLL_MS)
    assert r2.status == "completed"

    by_r1 = threads(client).messages.list(t.id, run_id=r1.id).data
    by_r2 = threads(client).messages.list(t.id, run_id=r2.id).data
    assert [m.content[0].text.value for m in by_r1] == ["Echo: hello there"]
    assert [m.content[0].text.value for m in by_r2] == ["Echo: again"]
    assert by_r1[0].role == "assistant" and by_r1[0].assistant_id == a.id
    assert by_r1[0].run_id == r1.id
    assert len(threads(client).messages.list(t.id).data) == 4
