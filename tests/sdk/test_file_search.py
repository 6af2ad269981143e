"""file_search end to end: message attachments create the thread's vector store, and a run with
the citing fake model answers with a file_citation annotation, polled and streamed, with run
steps whose results carry content only when `include` asks for it."""

from openai import AssistantEventHandler

from sdk_compat import CITE_MODEL, FILE_SEARCH_INCLUDE, POLL_MS, assistants, threads, vector_stores

CATS = "Cats purr and chase mice around the barn at night."
STOCKS = "The stock market closed higher on strong bank earnings."


def upload(client, name, text):
    return client.files.create(file=(name, text.encode()), purpose="assistants")


def ready_store(client, files):
    vs = vector_stores(client).create(name="kb", file_ids=[f.id for f in files])
    for f in files:
        got = vector_stores(client).files.poll(f.id, vector_store_id=vs.id, poll_interval_ms=POLL_MS)
        assert got.status == "completed", got.last_error
    return vs


def check_citation(text, cited_file_id):
    """The annotation's text is exactly the marker found at [start_index, end_index)."""
    assert text.annotations, text.value
    ann = text.annotations[0]
    assert ann.type == "file_citation"
    assert ann.file_citation.file_id == cited_file_id
    assert 0 <= ann.start_index < ann.end_index <= len(text.value)
    assert text.value[ann.start_index:ann.end_index] == ann.text
    assert ann.text.startswith("【") and ann.text.endswith("】")


def test_attachment_creates_thread_vector_store(client):
    f1 = upload(client, "cats.txt", CATS)
    t = threads(client).create(messages=[{
        "role": "user", "content": "read this",
        "attachments": [{"file_id": f1.id, "tools": [{"type": "file_search"}]}]}])
    thread = threads(client).retrieve(t.id)
    vs_ids = thread.tool_resources.file_search.vector_store_ids
    assert len(vs_ids) == 1 and vs_ids[0].startswith("vs_")
    msg = threads(client).messages.list(t.id).data[0]
    assert msg.attachments[0].file_id == f1.id
    assert msg.attachments[0].tools[0].type == "file_search"

    vs = vector_stores(client).retrieve(vs_ids[0])
    assert vs.expires_after is not None
    assert vs.expires_after.anchor == "last_active_at" and vs.expires_after.days == 7
    got = vector_stores(client).files.poll(f1.id, vector_store_id=vs.id, poll_interval_ms=POLL_MS)
    assert got.status == "completed"

    # A later attachment goes into the same store.
    f2 = upload(client, "stocks.txt", STOCKS)
    threads(client).messages.create(t.id, role="user", content="and this",
                                    attachments=[{"file_id": f2.id,
                                                  "tools": [{"type": "file_search"}]}])
    assert threads(client).retrieve(t.id).tool_resources.file_search.vector_store_ids == vs_ids
    assert {f.id for f in vector_stores(client).files.list(vector_store_id=vs.id)} == {f1.id, f2.id}


def test_attachment_on_message_create(client):
    f = upload(client, "cats.txt", CATS)
    t = threads(client).create()
    threads(client).messages.create(t.id, role="user", content="file",
                                    attachments=[{"file_id": f.id,
                                                  "tools": [{"type": "file_search"}]}])
    vs_ids = threads(client).retrieve(t.id).tool_resources.file_search.vector_store_ids
    assert len(vs_ids) == 1


def test_file_search_citation_polled(client):
    cats, stocks = upload(client, "cats.txt", CATS), upload(client, "stocks.txt", STOCKS)
    vs = ready_store(client, [cats, stocks])
    a = assistants(client).create(
        model=CITE_MODEL, tools=[{"type": "file_search", "file_search": {"max_num_results": 2}}],
        tool_resources={"file_search": {"vector_store_ids": [vs.id]}})
    assert a.tool_resources.file_search.vector_store_ids == [vs.id]
    t = threads(client).create(messages=[{"role": "user", "content": "what do cats chase"}])
    run = threads(client).runs.create_and_poll(thread_id=t.id, assistant_id=a.id,
                                               include=[FILE_SEARCH_INCLUDE],
                                               poll_interval_ms=POLL_MS)
    assert run.status == "completed", run.last_error

    answer = threads(client).messages.list(t.id).data[0]
    assert answer.role == "assistant"
    check_citation(answer.content[0].text, cats.id)

    steps = threads(client).runs.steps.list(run.id, thread_id=t.id, order="asc",
                                            include=[FILE_SEARCH_INCLUDE]).data
    assert [s.type for s in steps] == ["tool_calls", "message_creation"]
    call = steps[0].step_details.tool_calls[0]
    assert call.type == "file_search" and call.id.startswith("call_")
    results = call.file_search.results
    assert [r.file_name for r in results] == ["cats.txt", "stocks.txt"], "ranked by the embeddings"
    assert results[0].file_id == cats.id and results[0].score > results[1].score
    assert results[0].content[0].type == "text" and results[0].content[0].text == CATS

    # Without include the results carry no content; retrieve honours include too.
    plain = threads(client).runs.steps.list(run.id, thread_id=t.id, order="asc").data
    assert plain[0].step_details.tool_calls[0].file_search.results[0].content is None
    one = threads(client).runs.steps.retrieve(steps[0].id, thread_id=t.id, run_id=run.id,
                                              include=[FILE_SEARCH_INCLUDE])
    assert one.step_details.tool_calls[0].file_search.results[0].content[0].text == CATS


class Collect(AssistantEventHandler):
    def __init__(self):
        super().__init__()
        self.tool_calls = []
        self.events = []
        self.done_text = None

    def on_event(self, event):
        self.events.append(event.event)

    def on_tool_call_created(self, tool_call):
        self.tool_calls.append(tool_call)

    def on_text_done(self, text):
        self.done_text = text


def test_file_search_citation_streamed_from_thread_store(client):
    """The thread's own store (made by an attachment) is searched; the streamed annotation is
    accumulated by the SDK into the same shape as the stored one."""
    cats, stocks = upload(client, "cats.txt", CATS), upload(client, "stocks.txt", STOCKS)
    a = assistants(client).create(model=CITE_MODEL, tools=[{"type": "file_search"}])
    t = threads(client).create(messages=[{
        "role": "user", "content": "what do cats chase",
        "attachments": [{"file_id": f.id, "tools": [{"type": "file_search"}]}
                        for f in (cats, stocks)]}])
    handler = Collect()
    with threads(client).runs.stream(thread_id=t.id, assistant_id=a.id,
                                     event_handler=handler) as stream:
        stream.until_done()
    run = stream.get_final_run()
    assert run.status == "completed", run.last_error
    assert [c.type for c in handler.tool_calls] == ["file_search"]
    assert handler.events.index("thread.run.step.created") < handler.events.index(
        "thread.message.created")

    streamed = stream.get_final_messages()[0].content[0].text
    check_citation(streamed, cats.id)
    check_citation(handler.done_text, cats.id)
    stored = threads(client).messages.list(t.id).data[0].content[0].text
    assert stored.value == streamed.value
    key = lambda a: (a.type, a.text, a.start_index, a.end_index, a.file_citation.file_id)  # noqa: E731
    assert [key(a) for a in stored.annotations] == [key(a) for a in streamed.annotations]
