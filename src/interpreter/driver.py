# The in-sandbox driver of the local code_interpreter executor (src/interpreter/local.rs
# embeds it and runs it with `python3 -I -u -c`). It owns the protocol on a private copy of
# the original stdin/stdout; fds 0/1/2 of the interpreter (and of any process the user's
# code starts) point at /dev/null and at a capture pipe, so nothing the cell prints can
# corrupt a frame.
#
# Frame (both ways): u32 big-endian length of a JSON header, the header, then the raw
# bytes of each blob whose length the header lists in "blobs".
# Requests: {"op": "put", "names": [...]} + one blob per file; {"op": "exec", "code": ...};
# {"op": "close"}. Replies: {"op": "ready"} once at start, {"op": "ok"} / {"op": "fail",
# "reason": ...} to put, {"op": "result", "logs", "error", "images": n, "files": [...]} to
# exec with the PNGs then the files' bytes as blobs.
import json
import os
import signal
import struct
import sys
import threading

ARGS = json.loads(sys.argv[1])
DATA = ARGS["data_dir"]
TIMEOUT = float(ARGS["timeout"])
OUTPUT_BYTES = int(ARGS["output_bytes"])
FILE_BYTES = int(ARGS["file_bytes"])
# Only inside the sandbox's own pid namespace: there kill(-1) reaches the cell's processes
# and nothing else.
REAP = bool(ARGS.get("reap"))

# The protocol moves to private, non-inheritable fds before anything else runs.
PROTO_IN = os.dup(0)
PROTO_OUT = os.dup(1)
_null = os.open(os.devnull, os.O_RDONLY)
os.dup2(_null, 0)
os.close(_null)
CAP_R, CAP_W = os.pipe()
os.dup2(CAP_W, 1)
os.dup2(CAP_W, 2)
os.close(CAP_W)
sys.stdout = open(1, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)
sys.stderr = open(2, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)
sys.stdin = open(0, "r", closefd=False)
sys.__stdout__, sys.__stderr__, sys.__stdin__ = sys.stdout, sys.stderr, sys.stdin
MARK = os.urandom(16).hex().encode()
DRIVER_PID = os.getpid()


def _forked():
    # A process forked by the cell must never speak the protocol (if it falls back into
    # the driver's loop, it leaves at the pid check below).
    os.close(PROTO_IN)
    os.close(PROTO_OUT)


os.register_at_fork(after_in_child=_forked)


class Capture:
    """Reads the capture pipe on a thread, keeps the first OUTPUT_BYTES bytes of a cell
    and counts the rest, so a flood of output neither blocks the writer nor fills memory."""

    def __init__(self):
        self.cond = threading.Condition()
        self.buf = bytearray()
        self.dropped = 0
        self.marks = 0
        threading.Thread(target=self.run, daemon=True).start()

    def run(self):
        tail = b""
        while True:
            chunk = os.read(CAP_R, 65536)
            if not chunk:
                return
            data = tail + chunk
            with self.cond:
                while True:
                    i = data.find(MARK)
                    if i < 0:
                        break
                    self.keep(data[:i])
                    data = data[i + len(MARK):]
                    self.marks += 1
                    self.cond.notify_all()
                # Hold back what could be the start of a mark split across reads.
                cut = max(0, len(data) - len(MARK))
                self.keep(data[:cut])
                tail = data[cut:]

    def keep(self, b):
        room = OUTPUT_BYTES - len(self.buf)
        if room > 0:
            self.buf += b[:room]
        self.dropped += max(0, len(b) - max(room, 0))

    def take(self):
        """Waits until everything written so far has been read, then empties the buffer."""
        with self.cond:
            want = self.marks + 1
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except Exception:
            pass
        os.write(1, MARK)
        with self.cond:
            self.cond.wait_for(lambda: self.marks >= want, timeout=5)
            out, dropped = bytes(self.buf), self.dropped
            self.buf, self.dropped = bytearray(), 0
        return out, dropped


def read_exact(n):
    parts = []
    while n:
        b = os.read(PROTO_IN, min(n, 1 << 20))
        if not b:
            os._exit(0)
        parts.append(b)
        n -= len(b)
    return b"".join(parts)


def read_frame():
    (n,) = struct.unpack(">I", read_exact(4))
    head = json.loads(read_exact(n))
    return head, [read_exact(int(k)) for k in head.get("blobs", [])]


def write_all(b):
    view = memoryview(b)
    while view:
        view = view[os.write(PROTO_OUT, view):]


def send(head, blobs=()):
    head["blobs"] = [len(b) for b in blobs]
    h = json.dumps(head).encode()
    write_all(struct.pack(">I", len(h)) + h)
    for b in blobs:
        write_all(b)


class ExecutionTimeout(BaseException):
    """Raised in the cell by SIGALRM; a BaseException so `except Exception` does not eat it."""


def on_alarm(signum, frame):
    raise ExecutionTimeout()


def snapshot():
    seen = {}
    for root, dirs, files in os.walk(DATA):
        for f in files:
            p = os.path.join(root, f)
            try:
                st = os.lstat(p)
            except OSError:
                continue
            if st.st_mode & 0o170000 == 0o100000:
                seen[os.path.relpath(p, DATA)] = (st.st_size, st.st_mtime_ns, st.st_ino)
    return seen


def preload():
    # The prebuilt font cache (scripts/interpreter-env.sh) goes into the writable config
    # dir: matplotlib ignores a read-only one, and rebuilding costs ~150 ms on the first plot.
    import glob
    import shutil

    conf = os.environ.get("MPLCONFIGDIR")
    if conf:
        os.makedirs(conf, exist_ok=True)
        for f in glob.glob(os.path.join(sys.prefix, "share/assistants-proxy/mpl-cache/fontlist-*.json")):
            shutil.copy(f, conf)
    import numpy  # noqa: F401
    import pandas  # noqa: F401
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Figures still open at the end of a cell are what it "showed"; show() itself is a no-op
    # (Agg would only warn).
    plt.show = lambda *a, **k: None
    return plt


def set_limits():
    import resource

    for name, value in ARGS["rlimits"].items():
        resource.setrlimit(getattr(resource, name), (int(value), int(value)))


def format_tb(exc):
    import traceback

    tb = exc.__traceback__
    # Only the cell's own frames: drop the driver's, which come first.
    while tb is not None and not tb.tb_frame.f_code.co_filename.startswith("<cell-"):
        tb = tb.tb_next
    if isinstance(exc, ExecutionTimeout):
        # The handler's frame (the driver's own code, "<string>") is not the cell's.
        frames = [f for f in traceback.extract_tb(tb) if f.filename != "<string>"] if tb else []
        lines = traceback.format_list(frames)
        head = "Traceback (most recent call last):\n" if lines else ""
        return head + "".join(lines) + (
            "TimeoutError: the execution exceeded its time limit of %g s and was interrupted\n" % TIMEOUT
        )
    return "".join(traceback.format_exception(type(exc), exc, tb))


def run_cell(code, n, ns):
    """Runs code like a notebook cell; returns (value text or None, traceback text or None)."""
    import ast
    import linecache

    name = "<cell-%d>" % n
    linecache.cache[name] = (len(code), None, code.splitlines(True), name)
    try:
        tree = ast.parse(code, name, "exec")
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        # Again each time: a cell may have replaced the handler.
        signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, TIMEOUT)
        try:
            exec(compile(tree, name, "exec"), ns)
            value = eval(compile(last, name, "eval"), ns) if last is not None else None
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        if value is not None:
            ns["_"] = value
            return repr(value), None
        return None, None
    except SyntaxError as e:
        import traceback

        return None, "".join(traceback.format_exception_only(type(e), e))
    except BaseException as e:  # noqa: B036 - the cell's SystemExit/timeout are its output
        return None, format_tb(e)


def figures(plt):
    import io

    out = []
    try:
        for num in plt.get_fignums():
            buf = io.BytesIO()
            plt.figure(num).savefig(buf, format="png")
            out.append(buf.getvalue())
    except Exception as e:
        print("(could not render a figure: %s: %s)" % (type(e).__name__, e), file=sys.stderr)
    finally:
        try:
            plt.close("all")
        except Exception:
            pass
    return out


def reap():
    """Processes a cell started do not outlive it: a fork bomb's spinning children would
    otherwise hold the process limit and the CPU for every later cell."""
    if not REAP:
        return
    try:
        os.kill(-1, signal.SIGKILL)
    except OSError:
        pass
    while True:
        try:
            if os.waitpid(-1, os.WNOHANG) == (0, 0):
                # Children left that are not dead yet; SIGKILL is prompt, so wait for them.
                os.waitpid(-1, 0)
        except ChildProcessError:
            return
        except OSError:
            return


def changed_files(before):
    after = snapshot()
    meta, blobs = [], []
    for name in sorted(after):
        if before.get(name) == after[name]:
            continue
        size = after[name][0]
        data = None
        if size <= FILE_BYTES:
            try:
                with open(os.path.join(DATA, name), "rb") as f:
                    data = f.read(FILE_BYTES + 1)
            except OSError:
                data = None
            if data is not None and len(data) > FILE_BYTES:
                data = None
        meta.append({"name": name, "size": size if data is None else len(data), "bytes": data is not None})
        if data is not None:
            blobs.append(data)
    return after, meta, blobs


def assemble(captured, dropped, tail):
    """The cell's logs within OUTPUT_BYTES: the head of what it printed, then the value or
    traceback (its last half at most), each cut marked with how much was dropped."""

    def note(n):
        return "[... %d bytes of output dropped: the limit is %d bytes per execution ...]\n" % (n, OUTPUT_BYTES)

    raw = tail.encode()
    if len(raw) > OUTPUT_BYTES // 2:
        cut = len(raw) - OUTPUT_BYTES // 2
        tail = note(cut) + raw[cut:].decode("utf-8", "ignore")
    room = max(0, OUTPUT_BYTES - len(tail.encode()))
    if len(captured) > room:
        dropped += len(captured) - room
        captured = captured[:room]
    text = captured.decode("utf-8", "replace")
    if text and not text.endswith("\n") and (dropped or tail):
        text += "\n"
    if dropped:
        text += note(dropped)
    return text + tail


def main():
    os.makedirs(DATA, exist_ok=True)
    os.chdir(DATA)
    plt = preload()
    set_limits()
    signal.signal(signal.SIGALRM, on_alarm)
    cap = Capture()
    cap.take()
    ns = {"__name__": "__main__", "__builtins__": __builtins__}
    state = snapshot()
    send({"op": "ready", "python": sys.version.split()[0]})
    n = 0
    while True:
        head, blobs = read_frame()
        op = head.get("op")
        if op == "close":
            os._exit(0)
        elif op == "put":
            try:
                for name, data in zip(head["names"], blobs):
                    if not name or "/" in name or name in (".", "..") or "\0" in name:
                        raise ValueError("bad file name %r" % name)
                    with open(os.path.join(DATA, name), "wb") as f:
                        f.write(data)
                state = snapshot()
                send({"op": "ok"})
            except Exception as e:
                send({"op": "fail", "reason": "%s: %s" % (type(e).__name__, e)})
        elif op == "exec":
            n += 1
            value, tb = run_cell(head["code"], n, ns)
            if os.getpid() != DRIVER_PID:
                os._exit(0)
            images = figures(plt)
            reap()
            captured, dropped = cap.take()
            tail = ""
            if value is not None:
                tail = value + "\n"
            if tb is not None:
                tail = tb
            state, files, file_blobs = changed_files(state)
            send(
                {
                    "op": "result",
                    "logs": assemble(captured, dropped, tail),
                    "error": tb is not None,
                    "images": len(images),
                    "files": files,
                },
                images + file_blobs,
            )
        else:
            send({"op": "fail", "reason": "unknown op %r" % op})


main()
