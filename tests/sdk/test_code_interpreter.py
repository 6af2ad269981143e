"""code_interpreter end to end, on both executors (local bubblewrap sandbox, Jupyter Kernel
Gateway): the fake model `fake-code-interpreter` runs the fenced code blocks of the user's message
one per turn, the proxy executes them and the SDK sees OpenAI's objects: `code_interpreter` tool
calls with logs and image outputs, `assistants_output` Files, `image_file` message parts,
`file_path` annotations, streamed input and output deltas, one session per thread, cancel, and
tenant isolation. The Node SDK streams one run too (tests/sdk/node/code_interpreter.mjs)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from typing import Callable

import openai
import pytest
from openai import AssistantEventHandler

from conftest import REPO, client_factory, interpreter_python, new_key
from sdk_compat import (CI_MODEL, CI_PARALLEL_MODEL, MODEL, POLL_MS, assistants, threads,
                        wait_until)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def links_to(text: str, name: str) -> list[tuple[int, str]]:
    """(character offset, link) of each `sandbox:<data dir>/<name>` in `text`. The data
    directory is whatever the tool result showed (/mnt/data locally, the session's directory on
    the gateway); a sentence's full stop after the name is not part of the link."""
    pattern = r"sandbox:/[^\s()\[\]<>\"'`]*?/" + re.escape(name) + r"(?![\w/-]|\.\w)"
    return [(m.start(), m.group()) for m in re.finditer(pattern, text)]


@dataclass
class Interp:
    executor: str                     # "local" | "jupyter"
    make_client: Callable[..., openai.OpenAI]

    @property
    def data_dir(self) -> str:
        """A Python expression for the data directory, for the code the tests run: /mnt/data
        in the local sandbox; the kernel's working directory, the session's own data directory,
        on the gateway."""
        return '"/mnt/data"' if self.executor == "local" else '__import__("os").getcwd()'

    def code(self, text: str) -> str:
        return text.replace("{D}", self.data_dir)


@pytest.fixture(scope="session")
def local_python():
    py = interpreter_python()
    try:
        r = subprocess.run([py, "-c", "import numpy, pandas, matplotlib"], capture_output=True,
                           text=True, timeout=120)
        ok, why = r.returncode == 0, r.stderr.strip()[-500:]
    except OSError as e:
        ok, why = False, str(e)
    if not ok:
        pytest.fail(f"the local executor's Python {py} cannot import numpy, pandas and matplotlib "
                    f"({why}): make it with scripts/interpreter-env.sh (or set "
                    "ASSISTANTS_PROXY_PYTHON to such an environment)")
    return py


@pytest.fixture(params=["local", "jupyter"])
def ci(request, servers):
    """Clients of a proxy whose code_interpreter runs on the given executor."""
    if request.param == "local":
        request.getfixturevalue("local_python")
        base = servers.base_url
    else:
        base = request.getfixturevalue("jupyter_servers").base_url
    make, made = client_factory(base)
    yield Interp(request.param, make)
    for c in made:
        c.close()


# --- helpers ------------------------------------------------------------------------------------

def fenced(*blocks: str, prose: str = "Please run this:") -> str:
    return prose + "\n" + "".join(f"```python\n{b}\n```\n" for b in blocks)


def ci_assistant(client, model=CI_MODEL, **kw):
    return assistants(client).create(model=model, tools=[{"type": "code_interpreter"}], **kw)


@dataclass
class Result:
    run: object
    thread_id: str
    steps: list
    message: object   # the newest message of the thread (the assistant's answer)

    @property
    def calls(self):
        """The code_interpreter calls of the run, in step order."""
        return [c for s in self.steps if s.type == "tool_calls"
                for c in s.step_details.tool_calls]

    @property
    def text(self) -> str:
        return next(p.text.value for p in self.message.content if p.type == "text")


def finish(client, run, thread_id) -> Result:
    assert run.status == "completed", (run.status, run.last_error)
    steps = threads(client).runs.steps.list(run.id, thread_id=thread_id, order="asc").data
    message = threads(client).messages.list(thread_id).data[0]
    assert message.role == "assistant" and message.run_id == run.id
    return Result(run, thread_id, steps, message)


def run_code(client, *blocks, assistant=None, thread_id=None, model=CI_MODEL, **run_kw) -> Result:
    """Posts the blocks as one user message (on a new thread unless given) and runs to the end."""
    a = assistant or ci_assistant(client, model=model)
    if thread_id is None:
        thread_id = threads(client).create(
            messages=[{"role": "user", "content": fenced(*blocks)}]).id
    else:
        threads(client).messages.create(thread_id, role="user", content=fenced(*blocks))
    run = threads(client).runs.create_and_poll(thread_id=thread_id, assistant_id=a.id,
                                               poll_interval_ms=POLL_MS, **run_kw)
    return finish(client, run, thread_id)


def logs(call) -> str:
    assert call.type == "code_interpreter", call
    return "".join(o.logs for o in call.code_interpreter.outputs if o.type == "logs")


def images(call) -> list[str]:
    return [o.image.file_id for o in call.code_interpreter.outputs if o.type == "image"]


def output_files(client) -> dict:
    """The tenant's assistants_output Files by filename (a name written twice keeps its newest)."""
    files = sorted((f for f in client.files.list() if f.purpose == "assistants_output"),
                   key=lambda f: (f.created_at, f.id))
    return {f.filename: f for f in files}


def download(client, file_id) -> bytes:
    return client.files.content(file_id).read()


# --- computation, state, errors ----------------------------------------------------------------

def test_computation_with_logs(ci):
    client = ci.make_client()
    code = ('import sys\nx = 6 * 7\nprint("x is", x)\nprint("careful", file=sys.stderr)\n'
            'x + 1')
    r = run_code(client, code)
    assert [s.type for s in r.steps] == ["tool_calls", "message_creation"]
    assert r.steps[0].status == "completed"
    [call] = r.calls
    assert call.id.startswith("call_")
    assert call.code_interpreter.input == code
    assert [o.type for o in call.code_interpreter.outputs] == ["logs"]
    out = logs(call)
    # stdout, stderr, and the last expression's value, notebook-style.
    assert "x is 42\n" in out and "careful" in out, out
    assert out.rstrip().endswith("43"), out
    assert r.text.startswith("Tool results: ") and "x is 42" in r.text, r.text
    assert [p.type for p in r.message.content] == ["text"]
    assert r.message.content[0].text.annotations == []
    assert output_files(client) == {}, "nothing was written"


def test_state_survives_calls_and_runs_on_one_thread(ci):
    client = ci.make_client()
    a = ci_assistant(client)
    r = run_code(client, "import math\nx = 41", "print(x + 1, math.pi > 3)", assistant=a)
    assert [s.type for s in r.steps] == ["tool_calls", "tool_calls", "message_creation"]
    first, second = r.calls
    assert first.code_interpreter.input == "import math\nx = 41"
    assert "Error" not in logs(first), logs(first)
    assert logs(second).strip() == "42 True"
    # The model saw the last turn's result.
    assert r.text.startswith("Tool results: ") and "42 True" in r.text, r.text

    # A second run on the same thread: same session, same variables.
    r2 = run_code(client, "x *= 2\nprint(x)", assistant=a, thread_id=r.thread_id)
    [call] = r2.calls
    assert logs(call).strip() == "82"
    assert r2.run.id != r.run.id


def test_exception_traceback_is_in_the_logs_and_the_session_goes_on(ci):
    client = ci.make_client()
    r = run_code(client, 'def f(n):\n    return n / 0\nprint("before")\nf(1)',
                 'print("still alive", 6 * 7)')
    assert r.run.status == "completed"
    failed, after = r.calls
    out = logs(failed)
    assert "before" in out and "Traceback" in out and "ZeroDivisionError" in out, out
    assert "division by zero" in out and "f(1)" in out, out
    assert "\x1b[" not in out, "no ANSI colour codes: " + repr(out)
    assert logs(after).strip() == "still alive 42"
    assert [s.status for s in r.steps] == ["completed", "completed", "completed"]


# --- files in and out ---------------------------------------------------------------------------

def test_files_of_assistant_thread_and_attachment_are_in_the_data_dir(ci):
    client = ci.make_client()
    up = lambda name, text: client.files.create(file=(name, text.encode()), purpose="assistants")
    prices = up("prices.csv", "item,price\napple,3\npear,5\n")
    notes = up("notes.txt", "hello from the thread")
    sales = up("sales.csv", "region,amount\nnorth,10\nsouth,32\n")
    a = ci_assistant(client, tool_resources={"code_interpreter": {"file_ids": [prices.id]}})
    code = ci.code('import pandas as pd\nD = {D}\n'
                   'sales = pd.read_csv(D + "/sales.csv")\n'
                   'prices = pd.read_csv(D + "/prices.csv")\n'
                   'print("total", sales["amount"].sum(), "prices", prices["price"].sum())\n'
                   'print(open(D + "/notes.txt").read())')
    t = threads(client).create(
        tool_resources={"code_interpreter": {"file_ids": [notes.id]}},
        messages=[{"role": "user", "content": fenced(code),
                   "attachments": [{"file_id": sales.id,
                                    "tools": [{"type": "code_interpreter"}]}]}])
    assert set(threads(client).retrieve(t.id).tool_resources.code_interpreter.file_ids) \
        == {notes.id, sales.id}
    run = threads(client).runs.create_and_poll(thread_id=t.id, assistant_id=a.id,
                                               poll_interval_ms=POLL_MS)
    r = finish(client, run, t.id)
    out = logs(r.calls[0])
    assert "total 42 prices 8" in out, out
    assert "hello from the thread" in out, out
    assert output_files(client) == {}, "files only read are not outputs"


def test_written_files_become_downloadable_assistants_output_files(ci):
    client = ci.make_client()
    payload = bytes(range(256)) * 8 + b"\x00end"
    code = ci.code('import os\nD = {D}\n'
                   'open(D + "/out.bin", "wb").write(bytes(range(256)) * 8 + b"\\x00end")\n'
                   'os.makedirs(D + "/sub", exist_ok=True)\n'
                   'open(D + "/sub/table.csv", "w").write("a,b\\n1,2\\n")\n'
                   'print("wrote")')
    a = ci_assistant(client)
    r = run_code(client, code, assistant=a)
    assert "wrote" in logs(r.calls[0])
    files = output_files(client)
    assert set(files) == {"out.bin", "sub/table.csv"}, files
    assert {f.id for f in client.files.list(purpose="assistants_output")} \
        == {f.id for f in files.values()}
    for name, want in [("out.bin", payload), ("sub/table.csv", b"a,b\n1,2\n")]:
        f = files[name]
        assert f.id.startswith("file-") and f.purpose == "assistants_output"
        assert f.bytes == len(want)
        assert client.files.retrieve(f.id).filename == name
        assert download(client, f.id) == want, name
        # The model was told each file's id and sandbox link (the fake echoes its tool result).
        assert f.id in r.text, r.text
        assert links_to(r.text, name), r.text

    # A later call that changes one file: a new File for it, none for the untouched one.
    r2 = run_code(client, ci.code('open({D} + "/sub/table.csv", "a").write("3,4\\n")'),
                  assistant=a, thread_id=r.thread_id)
    after = [f for f in client.files.list() if f.purpose == "assistants_output"]
    assert sorted(f.filename for f in after) == ["out.bin", "sub/table.csv", "sub/table.csv"]
    changed = output_files(client)["sub/table.csv"]
    assert changed.id != files["sub/table.csv"].id and changed.id in r2.text
    assert download(client, changed.id) == b"a,b\n1,2\n3,4\n"


def test_matplotlib_figure_is_an_image_output_and_an_image_file_part(ci):
    client = ci.make_client()
    code = ('import matplotlib.pyplot as plt\nplt.figure(figsize=(3, 2))\n'
            'plt.plot([1, 2, 3], [1, 4, 9])\nplt.title("squares")\nplt.show()')
    r = run_code(client, code)
    [call] = r.calls
    [image_id] = images(call)
    f = client.files.retrieve(image_id)
    assert f.purpose == "assistants_output"
    png = download(client, image_id)
    assert png.startswith(PNG_MAGIC) and len(png) > 1000
    # The figure comes first in the answer, then the text; the model was told its file id.
    assert [p.type for p in r.message.content] == ["image_file", "text"]
    assert r.message.content[0].image_file.file_id == image_id
    assert image_id in r.text, r.text


def test_sandbox_links_get_file_path_annotations_with_exact_offsets(ci):
    client = ci.make_client()
    # Non-ASCII before the links: offsets count characters, not UTF-8 bytes or UTF-16 units.
    code = ci.code('import os\nD = {D}\nos.makedirs(D + "/data", exist_ok=True)\n'
                   'open(D + "/report.txt", "w").write("résumé ✓ 🐍")\n'
                   'open(D + "/data/summary.csv", "w").write("k,v\\n")\n'
                   'print("written: résumé ✓ 🐍")')
    r = run_code(client, code)
    text = r.message.content[-1].text
    files = output_files(client)
    links = []  # (offset, link, file name)
    for name in ("report.txt", "data/summary.csv"):
        found = links_to(text.value, name)
        assert found, (name, text.value)
        links += [(start, link, name) for start, link in found]
    if ci.executor == "local":
        assert {link for _, link, _ in links} == {"sandbox:/mnt/data/report.txt",
                                                  "sandbox:/mnt/data/data/summary.csv"}
    anns = sorted(text.annotations, key=lambda a: a.start_index)
    assert [a.type for a in anns] == ["file_path"] * len(links), (anns, text.value)
    for (start, link, name), ann in zip(sorted(links), anns):
        assert ann.text == link
        assert (ann.start_index, ann.end_index) == (start, start + len(link))
        assert text.value[ann.start_index:ann.end_index] == link
        assert ann.file_path.file_id == files[name].id
    assert download(client, files["report.txt"].id) == "résumé ✓ 🐍".encode()


def test_output_files_are_invisible_to_another_tenant(ci):
    owner, other = ci.make_client(), ci.make_client()
    code = ci.code('import matplotlib.pyplot as plt\nopen({D} + "/secret.txt", "w").write("s3cret")\n'
                   'plt.plot([1, 2])\nplt.show()')
    r = run_code(owner, code)
    ids = [output_files(owner)["secret.txt"].id] + images(r.calls[0])
    assert len(ids) == 2
    for file_id in ids:
        with pytest.raises(openai.NotFoundError):
            other.files.retrieve(file_id)
        with pytest.raises(openai.NotFoundError):
            other.files.content(file_id).read()
        assert owner.files.retrieve(file_id).id == file_id
    assert not {f.id for f in other.files.list()} & set(ids)
    # The same key is the same tenant.
    same = ci.make_client(api_key=owner.api_key)
    assert download(same, ids[0]) == b"s3cret"


# --- tools, choice, parallel --------------------------------------------------------------------

def test_parallel_calls_run_in_one_step(ci):
    client = ci.make_client()
    blocks = ["print('one')", "print('two')", "print('three')"]
    a = ci_assistant(client, model=CI_PARALLEL_MODEL)
    r = run_code(client, *blocks, assistant=a)
    assert [s.type for s in r.steps] == ["tool_calls", "message_creation"]
    calls = r.calls
    assert [c.code_interpreter.input for c in calls] == blocks
    assert [logs(c).strip() for c in calls] == ["one", "two", "three"]
    assert len({c.id for c in calls}) == 3
    assert re.search(r"one.*; .*two.*; .*three", r.text, re.S), r.text

    # parallel_tool_calls=false: one call per step.
    r = run_code(client, *blocks, assistant=a, parallel_tool_calls=False)
    assert [s.type for s in r.steps] == ["tool_calls"] * 3 + ["message_creation"]
    assert [len(s.step_details.tool_calls) for s in r.steps[:3]] == [1, 1, 1]
    assert [logs(c).strip() for c in r.calls] == ["one", "two", "three"]


def test_tool_choice_forces_or_forbids_code(ci):
    client = ci.make_client()
    a = ci_assistant(client)
    r = run_code(client, "print(7 * 6)", assistant=a, tool_choice={"type": "code_interpreter"})
    assert r.run.tool_choice.type == "code_interpreter"
    assert logs(r.calls[0]).strip() == "42"
    r = run_code(client, "print(7 * 6)", assistant=a, tool_choice="none")
    assert [s.type for s in r.steps] == ["message_creation"]
    assert r.text.startswith("Echo: ")


def test_a_function_named_code_interpreter_is_refused_beside_the_tool(client):
    fn = {"type": "function", "function": {
        "name": "code_interpreter",
        "parameters": {"type": "object", "properties": {"code": {"type": "string"}}}}}
    with pytest.raises(openai.BadRequestError) as e:
        assistants(client).create(model=MODEL, tools=[{"type": "code_interpreter"}, fn])
    assert e.value.status_code == 400
    # The offending field, as OpenAI names nested params (tools[1].function.name).
    assert e.value.param.startswith("tools"), e.value.body
    assert "code_interpreter" in e.value.message


# --- streaming ----------------------------------------------------------------------------------

class CodeRecorder(AssistantEventHandler):
    def __init__(self):
        super().__init__()
        self.events = []          # (name, data), in order
        self.created = []
        self.deltas = []
        self.done = []
        self.images_done = []

    def on_event(self, event):
        self.events.append((event.event, event.data))

    def on_tool_call_created(self, tool_call):
        self.created.append(tool_call)

    def on_tool_call_delta(self, delta, snapshot):
        self.deltas.append((delta, snapshot))

    def on_tool_call_done(self, tool_call):
        self.done.append(tool_call)

    def on_image_file_done(self, image_file):
        self.images_done.append(image_file)


def test_streamed_code_turn_has_openai_order_and_incremental_input(ci):
    client = ci.make_client()
    # Quotes and line breaks: JSON escapes the proxy decodes as the arguments stream in.
    code = ('label = "a \\"quoted\\" word"\nfor i in range(3):\n    print(label, i)\n'
            'import matplotlib.pyplot as plt\nplt.plot([0, 1], [1, 0])\nplt.show()')
    a = ci_assistant(client)
    t = threads(client).create(messages=[{"role": "user", "content": fenced(code)}])
    handler = CodeRecorder()
    with threads(client).runs.stream(thread_id=t.id, assistant_id=a.id,
                                     event_handler=handler) as stream:
        stream.until_done()
    final = stream.get_final_run()
    assert final.status == "completed", final.last_error
    names = [n for n, _ in handler.events]
    assert names[-1] == "thread.run.completed", names[-5:]

    def at(name, step_type=None):
        return [i for i, (n, d) in enumerate(handler.events)
                if n == name and (step_type is None or d.type == step_type)]

    [created] = at("thread.run.step.created", "tool_calls")
    [in_progress] = [i for i in at("thread.run.step.in_progress") if i > created][:1]
    [completed] = at("thread.run.step.completed", "tool_calls")
    [msg_step] = at("thread.run.step.created", "message_creation")
    step_id = handler.events[created][1].id
    assert handler.events[created][1].step_details.tool_calls == []
    assert created < in_progress < completed < msg_step
    assert at("thread.message.created")[0] > msg_step
    assert at("thread.message.completed")[0] < len(names) - 1

    # Every delta of the step lies between in_progress and completed; the input comes in
    # several pieces that concatenate to the code, all before any output.
    inputs, outputs = [], []
    for i, (n, d) in enumerate(handler.events):
        if n != "thread.run.step.delta" or d.id != step_id:
            continue
        assert in_progress < i < completed, (i, names)
        for tc in d.delta.step_details.tool_calls:
            assert tc.type == "code_interpreter" and tc.index == 0
            if tc.code_interpreter is None:
                continue
            if tc.code_interpreter.input:
                inputs.append((i, tc.code_interpreter.input))
            for o in tc.code_interpreter.outputs or []:
                outputs.append((i, o))
    assert "".join(piece for _, piece in inputs) == code
    assert len(inputs) >= 3, inputs
    assert outputs and max(i for i, _ in inputs) < min(i for i, _ in outputs)
    streamed_logs = "".join(o.logs or "" for _, o in outputs if o.type == "logs")
    [image_id] = [o.image.file_id for _, o in outputs if o.type == "image"]
    assert "a \"quoted\" word 2" in streamed_logs, streamed_logs

    # The completed step carries the same call in full, and so does the stored step.
    done_call = handler.events[completed][1].step_details.tool_calls[0]
    assert done_call.code_interpreter.input == code
    assert logs(done_call) == streamed_logs and images(done_call) == [image_id]
    stored = threads(client).runs.steps.retrieve(step_id, thread_id=t.id, run_id=final.id)
    assert stored.step_details.tool_calls[0].code_interpreter.input == code
    assert logs(stored.step_details.tool_calls[0]) == streamed_logs

    # The SDK's helpers accumulated the same call from the deltas.
    assert len(handler.created) == 1 and len(handler.deltas) >= 2
    assert handler.done[0].id == done_call.id
    assert handler.done[0].code_interpreter.input == code
    assert logs(handler.done[0]) == streamed_logs

    # The figure is the message's first part, streamed before the text.
    assert [f.file_id for f in handler.images_done] == [image_id]
    message = threads(client).messages.list(t.id).data[0]
    assert [p.type for p in message.content] == ["image_file", "text"]
    assert message.content[0].image_file.file_id == image_id
    snapshots = [d for n, d in handler.events if n == "thread.message.completed"]
    assert snapshots[-1].content[0].image_file.file_id == image_id


# --- cancel -------------------------------------------------------------------------------------

def test_cancel_stops_a_running_execution(ci):
    client = ci.make_client()
    code = 'import time\nprint("sleeping", flush=True)\ntime.sleep(30)\nprint("woke up")'
    a = ci_assistant(client)
    t = threads(client).create(messages=[{"role": "user", "content": fenced(code)}])
    events, typed, run_id, cancel_sent = [], "", None, None
    with threads(client).runs.stream(thread_id=t.id, assistant_id=a.id) as stream:
        for event in stream:
            events.append(event.event)
            if event.event == "thread.run.created":
                run_id = event.data.id
            if event.event != "thread.run.step.delta" or cancel_sent is not None:
                continue
            for tc in event.data.delta.step_details.tool_calls or []:
                typed += (tc.code_interpreter and tc.code_interpreter.input) or ""
            if typed == code:
                # All the code is in, so it runs next: cancel well inside its 30 s sleep.
                time.sleep(3.0)
                cancel_sent = time.monotonic()
                cancelled = threads(client).runs.cancel(run_id, thread_id=t.id)
                assert cancelled.status in ("cancelling", "cancelled")
    assert cancel_sent is not None, events
    # Ended long before the sleep could: the execution was stopped, not waited out.
    assert events[-1] == "thread.run.cancelled", events[-6:]
    assert time.monotonic() - cancel_sent < 25
    final = threads(client).runs.retrieve(run_id, thread_id=t.id)
    assert final.status == "cancelled" and final.cancelled_at is not None
    assert events.index("thread.run.step.cancelled") < len(events) - 1, events[-6:]
    [step] = threads(client).runs.steps.list(run_id, thread_id=t.id).data
    assert step.type == "tool_calls" and step.status == "cancelled"
    assert step.cancelled_at is not None

    # The thread's interpreter is usable again at once (a new session when cancel closed the
    # old one: the proxy then says so before the output).
    r = run_code(client, 'print("next")', assistant=a, thread_id=t.id)
    assert logs(r.calls[0]).strip().splitlines()[-1] == "next"
    assert "woke up" not in logs(r.calls[0])

    # The cancelled step still says which code was stopped (the stream showed it).
    assert len(step.step_details.tool_calls) == 1, f"the cancelled step lost its call: {step}"
    [call] = step.step_details.tool_calls
    assert call.code_interpreter.input == code
    assert "woke up" not in logs(call)


# --- the Node SDK -------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def node_sdk():
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not on PATH: the Node SDK test needs Node.js >= 20 with npm "
                        "(scripts/node-sdk.sh installs the SDK once they are there)")
    r = subprocess.run([str(REPO / "scripts" / "node-sdk.sh")], capture_output=True, text=True,
                       timeout=600)
    if r.returncode != 0:
        pytest.fail(f"scripts/node-sdk.sh failed:\n{r.stderr[-2000:]}")
    return r.stdout.strip().splitlines()[-1]


def test_node_sdk_streams_a_code_interpreter_run(ci, node_sdk):
    key = new_key()
    client = ci.make_client(api_key=key)
    env = dict(os.environ, OPENAI_BASE_URL=str(client.base_url).rstrip("/"), OPENAI_API_KEY=key,
               NODE_SDK_DIR=node_sdk, CI_MODEL=CI_MODEL)
    r = subprocess.run(["node", str(REPO / "tests" / "sdk" / "node" / "code_interpreter.mjs")],
                       capture_output=True, text=True, timeout=110, env=env)
    assert r.returncode == 0, f"stdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert report["sdk"].startswith("6."), report
    assert report["input_deltas"] >= 3, report
    # What the Node client saw is what the Python client reads back.
    [step] = [s for s in threads(client).runs.steps.list(report["run_id"],
                                                          thread_id=report["thread_id"],
                                                          order="asc").data
              if s.type == "tool_calls"]
    call = step.step_details.tool_calls[0]
    assert call.code_interpreter.input == report["code"]
    assert logs(call) == report["logs"]
