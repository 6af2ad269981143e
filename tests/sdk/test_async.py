"""The async client (AsyncOpenAI) on the same surface: CRUD, create_and_poll, a streamed run
with an AsyncAssistantEventHandler, and async auto-pagination."""

import asyncio

import openai
from openai import AsyncAssistantEventHandler

from sdk_compat import MODEL, POLL_MS, TOOL_MODEL
from conftest import new_key


class AsyncRecorder(AsyncAssistantEventHandler):
    def __init__(self):
        super().__init__()
        self.events = []
        self.text = ""

    async def on_event(self, event):
        self.events.append(event.event)

    async def on_text_delta(self, delta, snapshot):
        self.text += delta.value or ""


def test_async_client(servers):
    async def scenario():
        async with openai.AsyncOpenAI(base_url=servers.base_url, api_key=new_key(),
                                      max_retries=0, timeout=30.0) as c:
            ids = [(await c.beta.assistants.create(model=MODEL, name=f"a{i}")).id
                   for i in range(3)]
            seen = [a.id async for a in c.beta.assistants.list(limit=2, order="asc")]
            assert seen == ids

            t = await c.beta.threads.create(messages=[{"role": "user", "content": "async hi"}])
            run = await c.beta.threads.runs.create_and_poll(thread_id=t.id, assistant_id=ids[0],
                                                            poll_interval_ms=POLL_MS)
            assert run.status == "completed"

            await c.beta.threads.messages.create(t.id, role="user", content="async stream")
            handler = AsyncRecorder()
            async with c.beta.threads.runs.stream(thread_id=t.id, assistant_id=ids[0],
                                                  event_handler=handler) as stream:
                await stream.until_done()
            assert handler.text == "Echo: async stream"
            assert handler.events[-1] == "thread.run.completed"
            assert (await stream.get_final_run()).status == "completed"

            tools = [{"type": "function", "function": {"name": "f", "parameters": {
                "type": "object", "properties": {"input": {"type": "string"}}}}}]
            a = await c.beta.assistants.create(model=TOOL_MODEL, tools=tools)
            t2 = await c.beta.threads.create(messages=[{"role": "user", "content": "x"}])
            async with c.beta.threads.runs.stream(thread_id=t2.id, assistant_id=a.id) as s:
                await s.until_done()
            r = await s.get_final_run()
            assert r.status == "requires_action"
            call = r.required_action.submit_tool_outputs.tool_calls[0]
            async with c.beta.threads.runs.submit_tool_outputs_stream(
                    run_id=r.id, thread_id=t2.id,
                    tool_outputs=[{"tool_call_id": call.id, "output": "ok"}]) as s2:
                text = "".join([d async for d in s2.text_deltas])
            assert text == "Tool results: ok"

    asyncio.run(scenario())
