"""Fixtures for the official-SDK compatibility suite.

One pytest session = one SDK version x one store backend. The session starts the deterministic
fake OpenAI upstream (`examples/fake_upstream.rs`) and the proxy binary on free loopback ports,
with a fresh SQLite file or a fresh Cassandra keyspace, and stops both at the end.

Every test gets its own API key, i.e. its own tenant, so tests never see each other's data.

Configuration (pytest option, else environment variable):
  --backend / SDK_TEST_BACKEND                 sqlite (default) | cassandra
  --cassandra / ASSISTANTS_PROXY_TEST_CASSANDRA  HOST:PORT[,HOST:PORT] (required for cassandra)
  --proxy-bin / ASSISTANTS_PROXY_BIN           path of the built `assistants-proxy`
  --fake-upstream-bin / FAKE_UPSTREAM_BIN      path of the built `fake_upstream` example
(the binaries default to $CARGO_TARGET_DIR/debug or <repo>/target/debug).

code_interpreter (test_code_interpreter.py; missing parts fail those tests, never skip them):
  ASSISTANTS_PROXY_PYTHON        the sandbox's Python for the local executor (default
                                 /opt/assistants-proxy/python/bin/python3, scripts/interpreter-env.sh)
  ASSISTANTS_PROXY_TEST_JUPYTER  URL of a Jupyter Kernel Gateway (scripts/kernel-gateway.sh), whose
                                 token is in KG_TOKEN; a second proxy runs the jupyter executor on it
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest

from sdk_compat import SDK_VERSION

REPO = Path(__file__).resolve().parents[2]

def pytest_addoption(parser):
    group = parser.getgroup("assistants-proxy SDK suite")
    group.addoption("--backend", default=os.environ.get("SDK_TEST_BACKEND", "sqlite"),
                    choices=["sqlite", "cassandra"], help="store backend the proxy runs on")
    group.addoption("--cassandra", default=os.environ.get("ASSISTANTS_PROXY_TEST_CASSANDRA"),
                    help="Cassandra contact points HOST:PORT[,HOST:PORT]")
    group.addoption("--proxy-bin", default=os.environ.get("ASSISTANTS_PROXY_BIN"))
    group.addoption("--fake-upstream-bin", default=os.environ.get("FAKE_UPSTREAM_BIN"))


def _default_bin(name: str) -> Path:
    target = Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target")
    return target / "debug" / name


def pytest_report_header(config):
    return (f"openai SDK {SDK_VERSION} (python {sys.version.split()[0]}), "
            f"proxy backend: {config.getoption('--backend')}")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    terminalreporter.write_line(
        f"SDK suite ran with openai=={SDK_VERSION} against the {config.getoption('--backend')} backend")


@dataclass
class Servers:
    base_url: str      # the proxy's /v1, what OPENAI_BASE_URL would be
    proxy_origin: str  # the proxy without /v1 (for /healthz)
    upstream_url: str
    backend: str
    store_url: str
    log_dir: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(origin: str) -> bool:
    try:
        with urllib.request.urlopen(origin + "/healthz", timeout=1) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


@pytest.fixture(scope="session")
def servers(request, tmp_path_factory):
    opt = request.config.getoption
    backend = opt("--backend")
    proxy_bin = Path(opt("--proxy-bin") or _default_bin("assistants-proxy"))
    fake_bin = Path(opt("--fake-upstream-bin") or _default_bin("examples/fake_upstream"))
    for b in (proxy_bin, fake_bin):
        if not b.is_file():
            pytest.exit(f"{b} is missing: build it with "
                        "`cargo build --bin assistants-proxy --example fake_upstream`", returncode=3)
    work = tmp_path_factory.mktemp("servers")

    # The fake upstream binds port 0 and prints its URL.
    fake_log = work / "fake_upstream.log"
    fake = subprocess.Popen([str(fake_bin), "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE,
                            stderr=fake_log.open("wb"), text=True)
    line = fake.stdout.readline().strip()
    if not line.startswith("listening on "):
        _stop(fake)
        pytest.exit(f"fake upstream did not start: {line!r}\n{_tail(fake_log)}", returncode=3)
    upstream = line.removeprefix("listening on ")

    if backend == "sqlite":
        store_url = f"sqlite://{work / 'sdk.db'}"
    else:
        hosts = opt("--cassandra")
        if not hosts:
            _stop(fake)
            pytest.exit("backend cassandra needs ASSISTANTS_PROXY_TEST_CASSANDRA=HOST:PORT "
                        "(scripts/cassandra.sh start)", returncode=3)
        # A fresh keyspace per session: the proxy creates and migrates it.
        store_url = f"cassandra://{hosts}/sdk_{int(time.time())}_{secrets.token_hex(3)}"

    proxy_log = work / "proxy.log"
    proxy, origin = _start_proxy(proxy_bin, upstream, store_url, proxy_log, backend)
    if proxy is None:
        _stop(fake)
        pytest.exit(f"the proxy did not start ({store_url}):\n{_tail(proxy_log)}", returncode=3)

    yield Servers(base_url=origin + "/v1", proxy_origin=origin, upstream_url=upstream,
                  backend=backend, store_url=store_url, log_dir=work)

    _stop(proxy)
    _stop(fake)
    if proxy.returncode not in (0, -signal.SIGTERM):
        sys.stderr.write(f"proxy exited with {proxy.returncode}:\n{_tail(proxy_log)}\n")
    if backend == "cassandra" and not os.environ.get("SDK_TESTS_KEEP_KEYSPACE"):
        _drop_keyspace(opt("--cassandra"), store_url.rsplit("/", 1)[1])


DEFAULT_INTERPRETER_PYTHON = "/opt/assistants-proxy/python/bin/python3"


def interpreter_python() -> str:
    """The sandbox Python the local executor runs (what the proxy reads from the same variable)."""
    return os.environ.get("ASSISTANTS_PROXY_PYTHON") or DEFAULT_INTERPRETER_PYTHON


def _start_proxy(proxy_bin: Path, upstream: str, store_url: str, log: Path, backend: str,
                 extra_args=(), extra_env=None):
    """Starts the proxy on a free port (three tries, a port may be taken meanwhile); returns
    (process, origin), or (None, None) when it never became healthy."""
    for _attempt in range(3):
        port = _free_port()
        origin = f"http://127.0.0.1:{port}"
        # code_interpreter's local executor: the sandbox Python, passed on explicitly.
        env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "warn"),
                   ASSISTANTS_PROXY_PYTHON=interpreter_python(), **(extra_env or {}))
        proxy = subprocess.Popen(
            [str(proxy_bin), "serve", "--listen", f"127.0.0.1:{port}", "--upstream", upstream,
             "--store", store_url, *extra_args],
            stdout=log.open("ab"), stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + (120 if backend == "cassandra" else 30)
        while time.monotonic() < deadline and proxy.poll() is None and not _healthy(origin):
            time.sleep(0.05)
        if proxy.poll() is None and _healthy(origin):
            return proxy, origin
        _stop(proxy)
    return None, None


@pytest.fixture(scope="session")
def jupyter_servers(request, servers, tmp_path_factory):
    """A second proxy, on the same fake upstream and backend (its own SQLite file or keyspace),
    whose code_interpreter runs on the Kernel Gateway named by ASSISTANTS_PROXY_TEST_JUPYTER."""
    url = os.environ.get("ASSISTANTS_PROXY_TEST_JUPYTER")
    if not url:
        pytest.fail("the jupyter executor tests need ASSISTANTS_PROXY_TEST_JUPYTER=<gateway URL> "
                    "and KG_TOKEN=<its token>: start a Kernel Gateway with "
                    "scripts/kernel-gateway.sh and export what it prints")
    opt = request.config.getoption
    proxy_bin = Path(opt("--proxy-bin") or _default_bin("assistants-proxy"))
    work = tmp_path_factory.mktemp("jupyter")
    config = work / "proxy.toml"
    token = '\ntoken_env = "KG_TOKEN"' if os.environ.get("KG_TOKEN") else ""
    config.write_text(f'[code_interpreter]\nexecutor = "jupyter"\n\n'
                      f'[code_interpreter.jupyter]\nurl = "{url}"{token}\n')
    if servers.backend == "sqlite":
        store_url = f"sqlite://{work / 'jupyter.db'}"
    else:
        store_url = servers.store_url + "_jupyter"
    log = work / "proxy.log"
    proxy, origin = _start_proxy(proxy_bin, servers.upstream_url, store_url, log,
                                 servers.backend, extra_args=("--config", str(config)))
    if proxy is None:
        pytest.fail(f"the jupyter proxy did not start ({url}):\n{_tail(log)}")
    yield Servers(base_url=origin + "/v1", proxy_origin=origin, upstream_url=servers.upstream_url,
                  backend=servers.backend, store_url=store_url, log_dir=work)
    _stop(proxy)
    if servers.backend == "cassandra" and not os.environ.get("SDK_TESTS_KEEP_KEYSPACE"):
        _drop_keyspace(opt("--cassandra"), store_url.rsplit("/", 1)[1])


def _drop_keyspace(hosts: str, keyspace: str) -> None:
    """Best effort: a long-lived dev node should not collect one keyspace per run. Uses the
    stdlib CQL client of scripts/cassandra (no driver needed); a node that wants a login is
    left alone."""
    sys.path.insert(0, str(REPO / "scripts" / "cassandra"))
    try:
        import struct

        import cql_check as cql

        host, port = hosts.split(",")[0].rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.settimeout(60)
            op, _ = cql._request(sock, cql.OP_STARTUP, struct.pack(">H", 1)
                                 + cql._string("CQL_VERSION") + cql._string("3.0.0"))
            if op != cql.OP_READY:
                return
            query = f"DROP KEYSPACE IF EXISTS {keyspace}".encode()
            cql._request(sock, cql.OP_QUERY,
                         struct.pack(">i", len(query)) + query + struct.pack(">HB", 0x0001, 0))
    except Exception as e:  # noqa: BLE001 - cleanup must not fail the run
        sys.stderr.write(f"note: could not drop keyspace {keyspace}: {e}\n")
    finally:
        sys.path.pop(0)


def new_key() -> str:
    return "sk-sdk-" + secrets.token_hex(12)


def client_factory(base_url: str):
    """A function building SDK clients for the proxy at `base_url` (each call with no key is a
    new tenant), and the list of clients it made, to close."""
    made = []

    def make(api_key: str | None = None, **kwargs) -> openai.OpenAI:
        kwargs.setdefault("timeout", 30.0)
        # No silent retries: a 5xx or 409 from the proxy must fail the test, not be papered over.
        kwargs.setdefault("max_retries", 0)
        c = openai.OpenAI(base_url=base_url, api_key=api_key or new_key(), **kwargs)
        made.append(c)
        return c

    return make, made


@pytest.fixture
def make_client(servers):
    """Builds SDK clients for the proxy; each call with no key is a new tenant."""
    make, made = client_factory(servers.base_url)
    yield make
    for c in made:
        c.close()


@pytest.fixture
def client(make_client) -> openai.OpenAI:
    return make_client()


# --- Astra: a caller's own database per request ------------------------------------------------

@dataclass
class AstraServers:
    """The Astra stand-in (`examples/fake_astra.rs`) and a proxy whose per-request databases
    are its databases (default store: a fresh SQLite file)."""
    base_url: str
    devops_url: str

    def _post(self, path: str, body: dict) -> dict:
        import json

        req = urllib.request.Request(self.devops_url + path, data=json.dumps(body).encode(),
                                     headers={"content-type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read())

    def new_token(self) -> str:
        """A new valid `AstraCS:` token with no database yet."""
        return self._post("/stand-in/tokens", {})["token"]

    def new_database(self, token: str, keyspace: str) -> str:
        """An ACTIVE database of `token` whose keyspace is `keyspace`; returns its id."""
        return self._post("/stand-in/databases", {"token": token, "keyspace": keyspace})["id"]


@pytest.fixture(scope="session")
def astra(request, servers, tmp_path_factory):
    node = os.environ.get("ASSISTANTS_PROXY_TEST_CASSANDRA_AUTH")
    if not node:
        pytest.fail("the Astra tests need ASSISTANTS_PROXY_TEST_CASSANDRA_AUTH=HOST:PORT of a "
                    "password-mode node (CASSANDRA_AUTH=password scripts/cassandra.sh start; "
                    "scripts/test.sh does both)")
    opt = request.config.getoption
    proxy_bin = Path(opt("--proxy-bin") or _default_bin("assistants-proxy"))
    astra_bin = Path(os.environ.get("FAKE_ASTRA_BIN") or _default_bin("examples/fake_astra"))
    if not astra_bin.is_file():
        pytest.fail(f"{astra_bin} is missing: build it with `cargo build --example fake_astra`")
    work = tmp_path_factory.mktemp("astra")
    astra_log = work / "fake_astra.log"
    fake = subprocess.Popen([str(astra_bin)], stdout=subprocess.PIPE,
                            stderr=astra_log.open("wb"), text=True)
    line = fake.stdout.readline().strip()
    if not line.startswith("devops "):
        _stop(fake)
        pytest.fail(f"the Astra stand-in did not start: {line!r}\n{_tail(astra_log)}")
    devops = line.removeprefix("devops ")
    config = work / "proxy.toml"
    # Each database's own keyspace (the one its bundle names), so databases that share the one
    # test node stay apart; a short Retry-After so the SDK's own retries wait little.
    config.write_text(f'[astra]\ndevops_url = "{devops}"\nkeyspace_from_bundle = true\n'
                      'retry_after_seconds = 1\n')
    port = _free_port()
    origin = f"http://127.0.0.1:{port}"
    proxy_log = work / "proxy.log"
    proxy = subprocess.Popen(
        [str(proxy_bin), "serve", "--listen", f"127.0.0.1:{port}", "--upstream",
         servers.upstream_url, "--store", f"sqlite://{work / 'default.db'}", "--config",
         str(config)],
        stdout=proxy_log.open("ab"), stderr=subprocess.STDOUT,
        env=dict(os.environ, RUST_LOG="debug"))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proxy.poll() is None and not _healthy(origin):
        time.sleep(0.05)
    if not _healthy(origin):
        _stop(proxy)
        _stop(fake)
        pytest.fail(f"the Astra proxy did not start:\n{_tail(proxy_log)}")
    srv = AstraServers(base_url=origin + "/v1", devops_url=devops)
    srv.proxy_log = proxy_log
    yield srv
    _stop(proxy)
    _stop(fake)
