"""What the tests share: the fake upstream's model names, and small shims over the two SDK lines
(1.66+ and 3.x) so each test is written once."""

from __future__ import annotations

import time

import openai

SDK_VERSION = openai.__version__
SDK_MAJOR = int(SDK_VERSION.split(".")[0])

# Models of the fake upstream (crates/fake-upstream/src/openai.rs): the name picks the
# behaviour. Anything else answers `Echo: <last user text>`.
MODEL = "gpt-4o-mini"
TOOL_MODEL = "fake-tool-call"
PARALLEL_TOOL_MODEL = "fake-tool-call-parallel"
CITE_MODEL = "fake-tool-call-cite"
SLOW_MODEL = "fake-slow"
# Runs the fenced code blocks of the last user message through code_interpreter, one per turn
# (crates/fake-upstream/src/code_model.rs); `parallel`: all remaining blocks in one turn.
CI_MODEL = "fake-code-interpreter"
CI_PARALLEL_MODEL = "fake-code-interpreter-parallel"

# Short poll intervals keep the suite fast; the proxy also sends openai-poll-after-ms.
POLL_MS = 100
FILE_SEARCH_INCLUDE = "step_details.tool_calls[*].file_search.results[*].content"


def vector_stores(client: openai.OpenAI):
    """`client.vector_stores` from 1.66 on; `client.beta.vector_stores` before."""
    vs = getattr(client, "vector_stores", None)
    return vs if vs is not None else client.beta.vector_stores


def assistants(client: openai.OpenAI):
    return client.beta.assistants


def threads(client: openai.OpenAI):
    return client.beta.threads


def wait_until(predicate, timeout: float = 20.0, interval: float = 0.1):
    """Polls `predicate()` until it returns something truthy; returns that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value {value!r})")
        time.sleep(interval)
