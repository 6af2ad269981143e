"""A caller's own Astra DB per request, through the unmodified SDK: the client adds
`astra-api-token` (and `astra-db-id`) to its default headers, as users of the original system
do. Runs against the Astra stand-in (see the `astra` fixture)."""

import secrets

import openai
import pytest

from sdk_compat import MODEL, POLL_MS, assistants, threads


def new_key() -> str:
    return "sk-sdk-astra-" + secrets.token_hex(12)


def _client(astra, api_key, token, db=None, **kwargs):
    headers = {"astra-api-token": token}
    if db:
        headers["astra-db-id"] = db
    kwargs.setdefault("timeout", 60.0)
    kwargs.setdefault("max_retries", 0)
    return openai.OpenAI(base_url=astra.base_url, api_key=api_key, default_headers=headers,
                         **kwargs)


def test_two_tokens_two_databases_are_disjoint(astra):
    key = new_key()  # the same API key on both sides: only the databases differ
    ta, tb = astra.new_token(), astra.new_token()
    ca = _client(astra, key, ta, astra.new_database(ta, "sdk_astra_a"))
    cb = _client(astra, key, tb, astra.new_database(tb, "sdk_astra_b"))
    made = {}
    for name, c in (("a", ca), ("b", cb)):
        a = assistants(c).create(model=MODEL, name=f"assistant {name}")
        t = threads(c).create(messages=[{"role": "user", "content": f"hello from {name}"}])
        run = threads(c).runs.create_and_poll(thread_id=t.id, assistant_id=a.id,
                                              poll_interval_ms=POLL_MS)
        assert run.status == "completed"
        texts = [m.content[0].text.value for m in threads(c).messages.list(thread_id=t.id)]
        assert any(f"hello from {name}" in x for x in texts), texts
        made[name] = (a.id, t.id)
    assert [a.id for a in assistants(ca).list()] == [made["a"][0]]
    assert [a.id for a in assistants(cb).list()] == [made["b"][0]]
    with pytest.raises(openai.NotFoundError):
        assistants(ca).retrieve(made["b"][0])
    with pytest.raises(openai.NotFoundError):
        threads(cb).retrieve(made["a"][1])
    # Without the headers: the proxy's own store, which has neither.
    plain = openai.OpenAI(base_url=astra.base_url, api_key=key, max_retries=0)
    assert list(assistants(plain).list()) == []
    for c in (ca, cb, plain):
        c.close()
    log = astra.proxy_log.read_text(errors="replace")
    assert ta not in log and tb not in log, "a token appears in the proxy's log"


def test_default_database_is_created_and_the_sdk_retries(astra):
    """No astra-db-id: the proxy creates the token's database and answers 503 + Retry-After
    until it is active; the SDK's own retries carry the call through."""
    token = astra.new_token()
    impatient = _client(astra, new_key(), token)
    with pytest.raises(openai.InternalServerError) as e:
        assistants(impatient).list()
    assert e.value.status_code == 503
    assert e.value.response.headers.get("retry-after") == "1"
    patient = _client(astra, new_key(), token, max_retries=6)
    a = assistants(patient).create(model=MODEL, name="in my own database")
    assert assistants(patient).retrieve(a.id).name == "in my own database"
    impatient.close()
    patient.close()


def test_bad_token_is_an_authentication_error(astra):
    c = _client(astra, new_key(), "AstraCS:not-a-real-token:0123456789")
    with pytest.raises(openai.AuthenticationError) as e:
        assistants(c).list()
    assert e.value.status_code == 401
    assert "not-a-real-token" not in e.value.message
    c.close()
