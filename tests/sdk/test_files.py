"""Files: upload (purpose assistants), list with the purpose filter, retrieve, delete, and the
download rule (assistants-purpose content is refused)."""

import openai
import pytest


def test_file_lifecycle(client):
    data = b"hello from the sdk suite\n"
    f = client.files.create(file=("notes.txt", data), purpose="assistants")
    assert f.id.startswith("file-") and f.object == "file"
    assert f.bytes == len(data) and f.filename == "notes.txt" and f.purpose == "assistants"
    assert f.status in ("uploaded", "processed")
    assert isinstance(f.created_at, int)

    got = client.files.retrieve(f.id)
    assert (got.id, got.filename, got.bytes, got.purpose) == (f.id, "notes.txt", len(data),
                                                               "assistants")

    # Assistants files are not downloadable (OpenAI answers 400).
    with pytest.raises(openai.BadRequestError) as e:
        client.files.content(f.id)
    assert "Not allowed to download files of purpose: assistants" in e.value.message

    d = client.files.delete(f.id)
    assert d.id == f.id and d.deleted is True and d.object == "file"
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(f.id)


def test_list_files_with_purpose_filter(client):
    a = client.files.create(file=("a.txt", b"alpha"), purpose="assistants")
    b = client.files.create(file=("b.txt", b"beta"), purpose="assistants")
    v = client.files.create(file=("c.txt", b"gamma"), purpose="user_data")
    everything = [f.id for f in client.files.list()]
    assert set(everything) == {a.id, b.id, v.id}
    assert everything[0] == v.id, "newest first"
    assert [f.id for f in client.files.list(purpose="assistants")] == [b.id, a.id]
    assert [f.id for f in client.files.list(purpose="user_data")] == [v.id]
    # Cursor pagination (the SDK follows `after`).
    assert [f.id for f in client.files.list(limit=1, order="asc")] == [a.id, b.id, v.id]
    with pytest.raises(openai.BadRequestError):
        client.files.content(v.id)


def test_downloadable_purpose_round_trips_bytes(client):
    # Over 2 MiB of non-UTF-8 bytes: stored in several pieces, returned exactly.
    data = bytes(range(256)) * (9 * 1024 + 7)
    f = client.files.create(file=("pixels.png", data), purpose="vision")
    assert f.bytes == len(data) and f.purpose == "vision"
    body = client.files.content(f.id)
    assert body.content == data
    client.files.delete(f.id)
    with pytest.raises(openai.NotFoundError):
        client.files.content(f.id)
