"""Error classes the SDK raises for the proxy's answers (NotFoundError, BadRequestError,
AuthenticationError), and tenant isolation: two API keys see disjoint data."""

import openai
import pytest

from sdk_compat import MODEL, SDK_MAJOR, assistants, threads, vector_stores


def test_not_found(client):
    a = assistants(client).create(model=MODEL)
    t = threads(client).create()
    cases = [
        lambda: assistants(client).retrieve("asst_doesnotexist0000000000"),
        lambda: assistants(client).update("asst_doesnotexist0000000000", name="x"),
        lambda: assistants(client).delete("asst_doesnotexist0000000000"),
        lambda: threads(client).retrieve("thread_doesnotexist000000000"),
        lambda: threads(client).messages.create("thread_doesnotexist000000000", role="user",
                                                content="x"),
        lambda: threads(client).messages.retrieve("msg_doesnotexist00000000000", thread_id=t.id),
        lambda: threads(client).runs.retrieve("run_doesnotexist00000000000", thread_id=t.id),
        lambda: threads(client).runs.cancel("run_doesnotexist00000000000", thread_id=t.id),
        lambda: threads(client).runs.steps.list("run_doesnotexist00000000000", thread_id=t.id),
        lambda: threads(client).runs.create(thread_id=t.id, assistant_id="asst_missing00000"),
        lambda: threads(client).runs.create(thread_id="thread_missing000", assistant_id=a.id),
        lambda: vector_stores(client).retrieve("vs_doesnotexist000000000000"),
        lambda: client.files.retrieve("file-doesnotexist0000000000"),
    ]
    for call in cases:
        with pytest.raises(openai.NotFoundError) as e:
            call()
        assert e.value.status_code == 404
        assert e.value.type == "invalid_request_error"
        assert isinstance(e.value.body, dict) and e.value.message
    with pytest.raises(openai.NotFoundError) as e:
        threads(client).retrieve("thread_doesnotexist000000000")
    assert "No thread found with id 'thread_doesnotexist000000000'" in e.value.message
    assert e.value.request_id, "x-request-id reaches the SDK"


def test_bad_request_validation(client):
    with pytest.raises(openai.BadRequestError) as e:
        assistants(client).create(model=MODEL, name="n" * 257)
    assert e.value.code == "string_above_max_length" and e.value.param == "name"

    with pytest.raises(openai.BadRequestError) as e:
        assistants(client).create(model=MODEL, metadata={f"k{i}": "v" for i in range(17)})
    assert e.value.status_code == 400

    with pytest.raises(openai.BadRequestError) as e:
        assistants(client).create(model=MODEL, extra_body={"no_such_field": 1})
    assert e.value.code == "unknown_parameter"

    with pytest.raises(openai.BadRequestError) as e:
        assistants(client).create(model=MODEL, tools=[{"type": "web_browser"}])
    assert e.value.status_code == 400

    with pytest.raises(openai.BadRequestError) as e:
        assistants(client).create(model=MODEL, temperature=3)
    assert e.value.status_code == 400

    # A malformed id is refused before any lookup.
    with pytest.raises(openai.BadRequestError) as e:
        threads(client).retrieve("not-a-thread-id")
    assert "Expected an ID that begins with 'thread'" in e.value.message

    t = threads(client).create()
    with pytest.raises(openai.BadRequestError):
        threads(client).messages.create(t.id, role="system", content="no such role")
    with pytest.raises(openai.BadRequestError):
        threads(client).messages.create(t.id, role="user", content=[])


AUTH_CALLS = {
    "assistants.list": lambda c, h: assistants(c).list(extra_headers=h),
    "threads.create": lambda c, h: threads(c).create(extra_headers=h),
    "vector_stores.list": lambda c, h: vector_stores(c).list(extra_headers=h),
    "files.list": lambda c, h: c.files.list(extra_headers=h),
}


# ("Bearer " with a trailing space is refused by the HTTP client itself, so it is not sent.)
@pytest.mark.parametrize("header", ["omit", "Bearer", "Basic dXNlcjpwYXNz", ""])
@pytest.mark.parametrize("call", list(AUTH_CALLS))
def test_authentication_error(client, header, call):
    """A request without a usable bearer key is a 401. `openai.Omit()` as a per-request header
    is how both SDK lines send a request with no Authorization header at all."""
    h = {"Authorization": openai.Omit() if header == "omit" else header}
    with pytest.raises(openai.AuthenticationError) as e:
        AUTH_CALLS[call](client, h)
    assert e.value.status_code == 401
    assert e.value.type == "invalid_request_error"


def test_empty_api_key(servers):
    if SDK_MAJOR >= 2:
        # Newer SDKs refuse an empty key before sending anything.
        with pytest.raises(openai.OpenAIError):
            openai.OpenAI(base_url=servers.base_url, api_key="")
        return
    # 1.x sends the request with no Authorization header: the proxy answers 401.
    c = openai.OpenAI(base_url=servers.base_url, api_key="", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        assistants(c).list()
    c.close()


def test_tenants_see_disjoint_data(make_client):
    alice, bob = make_client(), make_client()
    a = assistants(alice).create(model=MODEL, name="alice's")
    t = threads(alice).create(messages=[{"role": "user", "content": "secret"}])
    m = threads(alice).messages.list(t.id).data[0]
    f = alice.files.create(file=("a.txt", b"alice only"), purpose="assistants")
    vs = vector_stores(alice).create(name="alice kb")

    for call in [
        lambda: assistants(bob).retrieve(a.id),
        lambda: assistants(bob).update(a.id, name="stolen"),
        lambda: assistants(bob).delete(a.id),
        lambda: threads(bob).retrieve(t.id),
        lambda: threads(bob).delete(t.id),
        lambda: threads(bob).messages.list(t.id),
        lambda: threads(bob).messages.retrieve(m.id, thread_id=t.id),
        lambda: threads(bob).messages.create(t.id, role="user", content="injected"),
        lambda: threads(bob).runs.create(thread_id=t.id, assistant_id=a.id),
        lambda: bob.files.retrieve(f.id),
        lambda: vector_stores(bob).retrieve(vs.id),
        lambda: vector_stores(bob).files.create(vector_store_id=vs.id, file_id=f.id),
    ]:
        with pytest.raises(openai.NotFoundError):
            call()

    # Bob cannot use Alice's assistant or file from his own thread/store either.
    bt = threads(bob).create()
    with pytest.raises(openai.NotFoundError):
        threads(bob).runs.create(thread_id=bt.id, assistant_id=a.id)
    bvs = vector_stores(bob).create(name="bob kb")
    with pytest.raises(openai.NotFoundError):
        vector_stores(bob).files.create(vector_store_id=bvs.id, file_id=f.id)

    assert [x.id for x in assistants(bob).list()] == []
    assert [x.id for x in bob.files.list()] == []
    assert [x.id for x in vector_stores(bob).list()] == [bvs.id]
    # Alice's data is untouched.
    assert assistants(alice).retrieve(a.id).name == "alice's"
    assert [x.id for x in threads(alice).messages.list(t.id)] == [m.id]
