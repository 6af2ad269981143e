"""Assistants: create, list with auto-pagination, retrieve, update, delete."""

import openai
import pytest

from sdk_compat import MODEL, assistants


def test_create_retrieve_update_delete(client):
    a = assistants(client).create(
        model=MODEL,
        name="Math tutor",
        description="helps with sums",
        instructions="You are a tutor.",
        tools=[{"type": "function", "function": {"name": "add", "parameters": {
            "type": "object", "properties": {"a": {"type": "number"}}}}}],
        metadata={"team": "sdk"},
        temperature=0.5,
        top_p=0.9,
    )
    assert a.id.startswith("asst_")
    assert a.object == "assistant"
    assert a.model == MODEL
    assert a.name == "Math tutor"
    assert a.description == "helps with sums"
    assert a.instructions == "You are a tutor."
    assert a.metadata == {"team": "sdk"}
    assert a.temperature == 0.5 and a.top_p == 0.9
    assert a.tools[0].type == "function" and a.tools[0].function.name == "add"
    assert isinstance(a.created_at, int)

    got = assistants(client).retrieve(a.id)
    assert got.id == a.id and got.name == "Math tutor"

    up = assistants(client).update(a.id, name="Renamed", metadata={"team": "sdk", "v": "2"},
                                   tools=[{"type": "file_search"}])
    assert up.name == "Renamed"
    assert up.metadata == {"team": "sdk", "v": "2"}
    assert [t.type for t in up.tools] == ["file_search"]
    assert up.instructions == "You are a tutor."  # untouched fields survive
    assert assistants(client).retrieve(a.id).name == "Renamed"

    d = assistants(client).delete(a.id)
    assert d.id == a.id and d.deleted is True and d.object == "assistant.deleted"
    with pytest.raises(openai.NotFoundError):
        assistants(client).retrieve(a.id)


def test_list_auto_paginates(client):
    ids = [assistants(client).create(model=MODEL, name=f"a{i}").id for i in range(5)]

    page = assistants(client).list(limit=2, order="asc")
    assert [a.id for a in page.data] == ids[:2]
    assert page.has_more is True
    # Iterating the page object follows `after` cursors through every page.
    assert [a.id for a in page] == ids
    # Explicit next page, as the SDK builds it.
    assert page.has_next_page()
    nxt = page.get_next_page()
    assert [a.id for a in nxt.data] == ids[2:4]

    desc = [a.id for a in assistants(client).list(limit=2)]
    assert desc == list(reversed(ids)), "default order is desc by creation"

    last = assistants(client).list(limit=2, order="asc", after=ids[3])
    assert [a.id for a in last.data] == ids[4:]
    assert last.has_more is False
    before = assistants(client).list(order="asc", before=ids[2])
    assert [a.id for a in before.data] == ids[:2]


def test_list_limit_out_of_range_is_bad_request(client):
    with pytest.raises(openai.BadRequestError) as e:
        assistants(client).list(limit=101)
    assert e.value.status_code == 400
    assert e.value.code == "integer_above_max_value"
    assert e.value.param == "limit"
