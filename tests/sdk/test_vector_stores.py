"""Vector stores: create with file_ids and poll, files.upload_and_poll, file batches
(upload_and_poll, create_and_poll), search ranked as the fake embeddings predict, the files list
with a status filter, the file content page, update and delete."""

import openai
import pytest

from sdk_compat import POLL_MS, vector_stores

# Distinct vocabularies: the fake upstream's embeddings make cosine track shared words.
DOCS = {
    "astronomy.txt": "Planets orbit distant stars. Telescopes observe galaxies, nebulae and comets.",
    "cooking.txt": "Bake bread with flour, yeast, butter and sugar. Knead the dough, heat the oven.",
    "finance.txt": "Stocks, bonds and dividends. Investors balance a portfolio of shares and markets.",
}


def upload(client, name, text=None):
    return client.files.create(file=(name, (text or DOCS[name]).encode()), purpose="assistants")


def poll_files(client, vs_id, file_ids):
    return [vector_stores(client).files.poll(fid, vector_store_id=vs_id, poll_interval_ms=POLL_MS)
            for fid in file_ids]


def test_create_with_file_ids_then_poll(client):
    f1, f2 = upload(client, "astronomy.txt"), upload(client, "cooking.txt")
    vs = vector_stores(client).create(name="kb", file_ids=[f1.id, f2.id], metadata={"k": "v"})
    assert vs.id.startswith("vs_") and vs.object == "vector_store"
    assert vs.name == "kb" and vs.metadata == {"k": "v"}
    assert vs.file_counts.total == 2

    done = poll_files(client, vs.id, [f1.id, f2.id])
    assert [f.status for f in done] == ["completed", "completed"]
    assert [f.id for f in done] == [f1.id, f2.id], "a vector store file's id is the File id"
    for f in done:
        assert f.object == "vector_store.file" and f.vector_store_id == vs.id
        assert f.last_error is None and f.usage_bytes > 0
        assert f.chunking_strategy.type == "static"
        assert f.chunking_strategy.static.max_chunk_size_tokens == 800
        assert f.chunking_strategy.static.chunk_overlap_tokens == 400

    vs = vector_stores(client).retrieve(vs.id)
    assert vs.status == "completed"
    assert vs.file_counts.completed == 2 and vs.file_counts.in_progress == 0
    assert vs.usage_bytes > 0

    completed = vector_stores(client).files.list(vector_store_id=vs.id, filter="completed")
    assert {f.id for f in completed} == {f1.id, f2.id}
    assert list(vector_stores(client).files.list(vector_store_id=vs.id, filter="failed")) == []
    one = vector_stores(client).files.retrieve(f1.id, vector_store_id=vs.id)
    assert one.id == f1.id and one.status == "completed"
    # The SDK pollers sleep as long as the proxy says.
    raw = vector_stores(client).files.with_raw_response.retrieve(f1.id, vector_store_id=vs.id)
    assert int(raw.headers["openai-poll-after-ms"]) > 0


def test_upload_and_poll_and_content_page(client):
    vs = vector_stores(client).create(name="uploads")
    vfs = vector_stores(client).files.upload_and_poll(
        vector_store_id=vs.id, file=("cooking.txt", DOCS["cooking.txt"].encode()),
        poll_interval_ms=POLL_MS)
    assert vfs.status == "completed" and vfs.vector_store_id == vs.id
    assert client.files.retrieve(vfs.id).purpose == "assistants"

    page = vector_stores(client).files.content(vfs.id, vector_store_id=vs.id)
    parts = list(page)
    assert parts and all(p.type == "text" for p in parts)
    assert "Knead the dough" in "".join(p.text for p in parts)


def test_file_batches(client):
    vs = vector_stores(client).create(name="batches")
    batch = vector_stores(client).file_batches.upload_and_poll(
        vs.id, files=[(n, t.encode()) for n, t in DOCS.items()], poll_interval_ms=POLL_MS)
    assert batch.id.startswith("vsfb_") and batch.object == "vector_store.files_batch"
    assert batch.vector_store_id == vs.id
    assert batch.status == "completed"
    assert batch.file_counts.completed == 3 and batch.file_counts.total == 3
    assert batch.file_counts.in_progress == 0
    in_batch = vector_stores(client).file_batches.list_files(batch.id, vector_store_id=vs.id)
    assert len(list(in_batch)) == 3
    again = vector_stores(client).file_batches.retrieve(batch.id, vector_store_id=vs.id)
    assert again.id == batch.id and again.status == "completed"

    extra = [upload(client, "extra1.txt", "violins cellos orchestra"),
             upload(client, "extra2.txt", "football goal referee")]
    b2 = vector_stores(client).file_batches.create_and_poll(
        vector_store_id=vs.id, file_ids=[f.id for f in extra], poll_interval_ms=POLL_MS)
    assert b2.status == "completed" and b2.file_counts.completed == 2
    assert {f.id for f in vector_stores(client).file_batches.list_files(
        b2.id, vector_store_id=vs.id)} == {f.id for f in extra}
    assert vector_stores(client).retrieve(vs.id).file_counts.completed == 5


def test_search_ranking(client):
    files = {name: upload(client, name) for name in DOCS}
    vs = vector_stores(client).create(name="search", file_ids=[f.id for f in files.values()])
    poll_files(client, vs.id, [f.id for f in files.values()])

    for query, best in [("how to bake bread with yeast and flour", "cooking.txt"),
                        ("telescopes observe galaxies and comets", "astronomy.txt"),
                        ("dividends for investors holding stocks", "finance.txt")]:
        results = list(vector_stores(client).search(vs.id, query=query))
        assert results, query
        assert results[0].filename == best, [(r.filename, r.score) for r in results]
        assert results[0].file_id == files[best].id
        scores = [r.score for r in results]
        assert scores == sorted(scores, reverse=True)
        assert results[0].content[0].type == "text"
        assert results[0].content[0].text == DOCS[best]

    top1 = list(vector_stores(client).search(vs.id, query="bread oven", max_num_results=1))
    assert [r.filename for r in top1] == ["cooking.txt"]


def test_update_list_delete(client):
    f = upload(client, "finance.txt")
    vs = vector_stores(client).create(name="before", file_ids=[f.id])
    poll_files(client, vs.id, [f.id])
    up = vector_stores(client).update(vs.id, name="after", metadata={"n": "1"})
    assert up.name == "after" and up.metadata == {"n": "1"}

    others = [vector_stores(client).create(name=f"other{i}") for i in range(3)]
    listed = [v.id for v in vector_stores(client).list(limit=2)]
    assert listed == [o.id for o in reversed(others)] + [vs.id]

    d = vector_stores(client).files.delete(f.id, vector_store_id=vs.id)
    assert d.deleted is True and d.id == f.id and d.object == "vector_store.file.deleted"
    assert list(vector_stores(client).files.list(vector_store_id=vs.id)) == []
    assert client.files.retrieve(f.id).id == f.id, "the File itself survives"

    d = vector_stores(client).delete(vs.id)
    assert d.deleted is True and d.object == "vector_store.deleted"
    with pytest.raises(openai.NotFoundError):
        vector_stores(client).retrieve(vs.id)


def test_deleting_a_file_detaches_it(client):
    f = upload(client, "astronomy.txt")
    vs = vector_stores(client).create(name="detach", file_ids=[f.id])
    poll_files(client, vs.id, [f.id])
    client.files.delete(f.id)
    assert list(vector_stores(client).files.list(vector_store_id=vs.id)) == []
    assert list(vector_stores(client).search(vs.id, query="telescopes galaxies")) == []


def test_attributes_and_search_filters(client):
    files = {name: upload(client, name) for name in DOCS}
    vs = vector_stores(client).create(name="filters")
    attrs = {"astronomy.txt": {"topic": "science", "year": 2021, "public": True},
             "cooking.txt": {"topic": "home", "year": 2023, "public": True},
             "finance.txt": {"topic": "money", "year": 2024, "public": False}}
    for name, f in files.items():
        vector_stores(client).files.create(vector_store_id=vs.id, file_id=f.id,
                                           attributes=attrs[name])
    poll_files(client, vs.id, [f.id for f in files.values()])
    got = vector_stores(client).files.retrieve(files["cooking.txt"].id, vector_store_id=vs.id)
    assert got.attributes == attrs["cooking.txt"]

    def names(**kw):
        return {r.filename for r in vector_stores(client).search(vs.id, query="anything", **kw)}

    assert names(filters={"type": "eq", "key": "topic", "value": "home"}) == {"cooking.txt"}
    assert names(filters={"type": "gte", "key": "year", "value": 2023}) == {
        "cooking.txt", "finance.txt"}
    assert names(filters={"type": "and", "filters": [
        {"type": "eq", "key": "public", "value": True},
        {"type": "lt", "key": "year", "value": 2023}]}) == {"astronomy.txt"}
    assert names(filters={"type": "in", "key": "topic", "value": ["money", "science"]}) == {
        "astronomy.txt", "finance.txt"}

    up = vector_stores(client).files.update(files["finance.txt"].id, vector_store_id=vs.id,
                                            attributes={"topic": "home"})
    assert up.attributes == {"topic": "home"}
    assert names(filters={"type": "eq", "key": "topic", "value": "home"}) == {
        "cooking.txt", "finance.txt"}
    for r in vector_stores(client).search(vs.id, query="bread"):
        assert r.attributes is not None


def test_tool_resources_vector_store_helpers(client):
    """`tool_resources.file_search.vector_stores` on assistant and thread create makes a
    store from the listed files."""
    from sdk_compat import MODEL, assistants, threads
    f1, f2 = upload(client, "astronomy.txt"), upload(client, "cooking.txt")
    a = assistants(client).create(model=MODEL, tools=[{"type": "file_search"}], tool_resources={
        "file_search": {"vector_stores": [{"file_ids": [f1.id], "metadata": {"by": "helper"}}]}})
    (avs,) = a.tool_resources.file_search.vector_store_ids
    assert vector_stores(client).retrieve(avs).metadata == {"by": "helper"}
    assert [f.id for f in poll_files(client, avs, [f1.id])] == [f1.id]

    t = threads(client).create(tool_resources={
        "file_search": {"vector_stores": [{"file_ids": [f2.id]}]}})
    (tvs,) = t.tool_resources.file_search.vector_store_ids
    assert poll_files(client, tvs, [f2.id])[0].status == "completed"
    assert vector_stores(client).retrieve(tvs).expires_after.days == 7
