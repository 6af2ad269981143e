"""Streams that do not end the ordinary way: the client leaves early (the run goes on), and a
run cancelled while its stream is open (the stream closes the message and ends cancelled)."""

import threading

from sdk_compat import POLL_MS, SLOW_MODEL, assistants, threads
from test_runs import Recorder


def test_client_leaving_a_stream_does_not_stop_the_run(client):
    a = assistants(client).create(model=SLOW_MODEL)
    words = " ".join(f"w{i}" for i in range(20))
    t = threads(client).create(messages=[{"role": "user", "content": words}])
    seen = 0
    with threads(client).runs.stream(thread_id=t.id, assistant_id=a.id) as stream:
        for event in stream:
            if event.event == "thread.message.delta":
                seen += 1
                if seen == 2:
                    break  # leaving the `with` closes the connection
        run_id = stream.current_run.id
    run = threads(client).runs.poll(run_id, thread_id=t.id, poll_interval_ms=POLL_MS)
    assert run.status == "completed"
    assert threads(client).messages.list(t.id).data[0].content[0].text.value == "Echo: " + words


def test_cancel_while_streaming(client):
    a = assistants(client).create(model=SLOW_MODEL)
    words = " ".join(f"w{i}" for i in range(80))
    t = threads(client).create(messages=[{"role": "user", "content": words}])
    cancel_sent = threading.Event()

    class CancelOnSecondDelta(Recorder):
        def on_text_delta(self, delta, snapshot):
            super().on_text_delta(delta, snapshot)
            if len(self.text_snapshots) == 2 and not cancel_sent.is_set():
                threads(client).runs.cancel(self.current_run.id, thread_id=t.id)
                cancel_sent.set()

    handler = CancelOnSecondDelta()
    with threads(client).runs.stream(thread_id=t.id, assistant_id=a.id,
                                     event_handler=handler) as stream:
        stream.until_done()
    assert cancel_sent.is_set()
    events = handler.events
    assert events[-1] == "thread.run.cancelled", events[-6:]
    # The open message is closed before the run ends (one active message at a time).
    assert "thread.message.incomplete" in events
    assert events.index("thread.message.incomplete") < events.index("thread.run.cancelled")
    final = stream.get_final_run()
    assert final.status == "cancelled" and final.cancelled_at is not None
    msg = threads(client).messages.list(t.id).data[0]
    assert msg.status == "incomplete" and msg.incomplete_details.reason == "run_cancelled"
    assert handler.text.startswith(msg.content[0].text.value[:len(handler.text)])
