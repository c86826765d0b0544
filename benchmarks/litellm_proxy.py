"""Steering in LiteLLM vs LiteLLM alone vs ``steerkit serve``: throughput and latency, one run.

Starts, all on loopback, in front of one stub OpenAI upstream (proxy_load.py's: raw asyncio
HTTP/1.1, a fixed completion, its own process):

- LiteLLM alone (``litellm --config``, from ``.venv-litellm``: scripts/test.sh makes it);
- LiteLLM with steerkit's callback (``steerkit.adapters.litellm.proxy_handler_instance``);
- ``steerkit serve``;

with an example-set cache filled first by the fake scorer (no model runs; miss policy ``off``, so
nothing is searched while measuring). Every server has the same client API key (the client sends
it), one process each, LiteLLM offline (its bundled cost map, no database). Then the same client
(benchmarks/_loadgen.py: raw HTTP/1.1, kept-alive connections, closed loop) sends the same chat
request at each concurrency level to, in turn: LiteLLM alone, LiteLLM with the callback on a cache
hit, the same with steering switched off per request (``"steerkit": {"enabled": false}``:
passthrough), and ``steerkit serve`` on a cache hit. Prints JSON: requests/s and p50/p99 (ms, to
the last byte) per server and level, the serving process's CPU ms per request, and ratios to
LiteLLM alone within the run (the machine is shared: compare ratios, not absolute figures).

    python benchmarks/litellm_proxy.py [--duration 3] [--concurrency 1 16 64]
    python benchmarks/litellm_proxy.py --quick   # minutes, mostly LiteLLM's start-up (2 s runs at 1 and 16 clients)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _loadgen import closed_loop, free_port, machine, read_response, stop

ROOT = Path(__file__).resolve().parent.parent
QUERY = "As a Democrat, what do you think about raising the minimum wage?"
KEY = "sk-" + secrets.token_hex(32)  # LiteLLM refuses to start without a strong master key
MODEL = "fake-bench"  # the search model's id in the cache key (nothing is searched)


def chat_request(body: dict[str, Any]) -> bytes:
    """A raw ``POST /v1/chat/completions`` carrying the API key."""
    payload = json.dumps(body).encode()
    return (b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            b"authorization: Bearer %s\r\ncontent-length: %d\r\n\r\n%s" % (KEY.encode(), len(payload), payload))


def steer_env(cache_dir: Path, pool_items: int | None) -> dict[str, str]:
    """The steerkit settings of the cache fill, the callback and ``steerkit serve`` alike."""
    env = {"STEERKIT_CACHE_DIR": str(cache_dir), "STEERKIT_SEARCH_MODEL__BASE_URL": "http://127.0.0.1:9/v1",
           "STEERKIT_SEARCH_MODEL__MODEL": MODEL, "STEERKIT_STEER__MISS_POLICY": "off",
           "STEERKIT_SERVER__LOG_LEVEL": "warning", "STEERKIT_SERVER__API_KEYS": KEY}
    if pool_items:
        env["STEERKIT_STEER__MAX_POOL_ITEMS"] = str(pool_items)
    return env


async def fill_cache(env: dict[str, str]) -> None:
    """The query's persona's example set, computed by the fake scorer into the shared cache."""
    from steerkit import Settings
    from steerkit._runtime import make_registry, make_steerer, make_store
    from steerkit.testing import FakeScorer

    settings = Settings.load(env=env)
    steerer = make_steerer(settings, make_registry(settings), make_store(settings), FakeScorer(lambda p: 0.7, model=MODEL))
    async with steerer:
        for m in await steerer.extract([{"role": "user", "content": QUERY}]):
            await steerer.compute(m.persona_id)


def base_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STEERKIT_", "LITELLM_", "XDG_"))}
    env.update(XDG_CONFIG_HOME=str(tmp / "xdg"), NO_PROXY="*")
    env.pop("DATABASE_URL", None)
    return env


def start_litellm(exe: str, tmp: Path, name: str, upstream: str, env: dict[str, str], hook: bool) -> tuple[subprocess.Popen, int]:
    config = (f"model_list:\n  - model_name: chat\n    litellm_params:\n      model: openai/stub\n"
              f"      api_base: {upstream}\n      api_key: not-needed\n")
    if hook:
        config += "litellm_settings:\n  callbacks: steerkit.adapters.litellm.proxy_handler_instance\n"
    (tmp / f"{name}.yaml").write_text(config)
    port = free_port()
    env = {**base_env(tmp), **env, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_MASTER_KEY": KEY, "LITELLM_LOG": "ERROR"}
    with open(tmp / f"{name}.log", "wb") as log:
        proc = subprocess.Popen([exe, "--config", str(tmp / f"{name}.yaml"), "--host", "127.0.0.1", "--port", str(port)],
                                env=env, cwd=tmp, stdout=log, stderr=subprocess.STDOUT)
    return proc, port


def start_serve(tmp: Path, upstream: str, env: dict[str, str]) -> tuple[subprocess.Popen, int]:
    port = free_port()
    cmd = [sys.executable, "-m", "steerkit.cli", "serve", "--port", str(port), "--chat-base-url", upstream]
    with open(tmp / "serve.log", "wb") as log:
        proc = subprocess.Popen(cmd, env={**base_env(tmp), **env}, stdout=log, stderr=subprocess.STDOUT)
    return proc, port


def wait_ready(procs: dict[str, tuple[subprocess.Popen, int]], tmp: Path, timeout: float = 600) -> None:
    """Until each server answers a chat request (LiteLLM takes tens of seconds to start)."""
    import httpx

    todo = dict(procs)
    t0 = time.monotonic()
    while todo:
        for name, (proc, port) in list(todo.items()):
            if proc.poll() is not None:
                log = tmp / f"{name}.log"
                raise RuntimeError(f"{name} exited {proc.returncode}:\n{log.read_text()[-3000:] if log.exists() else ''}")
            try:
                r = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=30, trust_env=False,
                               headers={"authorization": f"Bearer {KEY}"},
                               json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]})
                if r.status_code == 200:
                    del todo[name]
            except httpx.HTTPError:
                pass
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"not ready after {timeout:.0f}s: {sorted(todo)}")
        time.sleep(0.5)


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process (from /proc; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


async def measure(proc: subprocess.Popen, port: int, body: dict[str, Any], *, concurrency: int, duration: float,
                  max_requests: int) -> dict[str, Any]:
    """``concurrency`` kept-alive connections sending ``body`` back to back (one warm-up each)."""
    request = chat_request(body)
    conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(concurrency)]
    for r, w in conns:
        w.write(request)
        await w.drain()
        await read_response(r)
    before = _cpu_seconds(proc.pid)
    res = await closed_loop(conns, request, duration=duration, max_requests=max_requests)
    after = _cpu_seconds(proc.pid)
    if before is not None and after is not None and res["requests"]:
        res["server_cpu_ms_per_request"] = round(1000 * (after - before) / res["requests"], 3)
    return res


async def check_steering(port: int) -> dict[str, dict[str, str]]:
    """The X-Steerkit headers of a hit and of a passthrough (fails unless they are what is measured)."""
    import httpx

    out = {}
    async with httpx.AsyncClient(timeout=60, trust_env=False, headers={"authorization": f"Bearer {KEY}"}) as h:
        for case, extra, want in (("hit", {}, "hit"), ("passthrough", {"steerkit": {"enabled": False}}, "off")):
            r = await h.post(f"http://127.0.0.1:{port}/v1/chat/completions",
                             json={"model": "chat", "messages": [{"role": "user", "content": QUERY}], **extra})
            r.raise_for_status()
            out[case] = {k: v for k, v in r.headers.items() if k.startswith("x-steerkit")}
            if out[case].get("x-steerkit-cache") != want:
                raise RuntimeError(f"{case}: expected X-Steerkit-Cache {want}, got {out[case]}")
    return out


async def bench(args: argparse.Namespace, servers: dict[str, tuple[subprocess.Popen, int]]) -> dict[str, Any]:
    headers = {name: await check_steering(servers[name][1]) for name in ("litellm_hook", "steerkit_serve")}
    body = {"model": "chat", "messages": [{"role": "user", "content": QUERY}], "max_tokens": 32}
    cases = {  # (server, request body)
        "litellm_alone": ("litellm_alone", body),
        "litellm_hook_hit": ("litellm_hook", body),
        "litellm_hook_passthrough": ("litellm_hook", {**body, "steerkit": {"enabled": False}}),
        "steerkit_serve_hit": ("steerkit_serve", body),
    }
    runs = []
    for conc in args.concurrency:
        row: dict[str, Any] = {"concurrency": conc}
        for case, (server, b) in cases.items():
            proc, port = servers[server]
            row[case] = await measure(proc, port, b, concurrency=conc, duration=args.duration, max_requests=args.max_requests)
        alone = row["litellm_alone"]
        row["vs_litellm_alone"] = {
            case: {"rps_ratio": round(row[case]["rps"] / alone["rps"], 3) if alone["rps"] else None,
                   "p50_ratio": round(row[case]["p50_ms"] / alone["p50_ms"], 3) if alone["p50_ms"] else None}
            for case in cases if case != "litellm_alone"
        }
        runs.append(row)
        print(f"c={conc}: " + " | ".join(f"{c} {row[c]['rps']} rps p50 {row[c]['p50_ms']} p99 {row[c]['p99_ms']} ms"
                                         for c in cases), file=sys.stderr)
    return {"steering_headers": headers, "runs": runs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=3.0, help="seconds per measurement (default 3)")
    ap.add_argument("--max-requests", type=int, default=20000, help="request cap per measurement")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--pool-items", type=int, default=None, help="cut the persona's pool to this many items")
    ap.add_argument("--litellm", default=os.environ.get("STEERKIT_LITELLM_BIN", str(ROOT / ".venv-litellm" / "bin" / "litellm")),
                    help="the litellm command (default .venv-litellm/bin/litellm)")
    ap.add_argument("--quick", action="store_true", help="2 s runs at 1 and 16 clients, a 12-item pool")
    ap.add_argument("--_stub", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._stub:
        # the same stub upstream as the proxy's load benchmark
        from proxy_load import _stub_main

        asyncio.run(_stub_main(args._stub[0], int(args._stub[1])))
        return
    if args.quick:
        args.duration, args.concurrency, args.max_requests, args.pool_items = 2.0, [1, 16], 2000, 12
    if not (Path(args.litellm).is_file() and os.access(args.litellm, os.X_OK)):
        sys.exit(f"no litellm at {args.litellm}: run scripts/test.sh (it makes .venv-litellm) or pass --litellm")

    with tempfile.TemporaryDirectory(prefix="steerkit-litellm-bench-") as tmp_name:
        tmp = Path(tmp_name)
        env = steer_env(tmp / "cache", args.pool_items)
        asyncio.run(fill_cache(env))
        procs: list[subprocess.Popen] = []
        t0 = time.perf_counter()
        try:
            port_file = tmp / "stub.port"
            stub = subprocess.Popen([sys.executable, __file__, "--_stub", str(port_file), "1"], stdout=subprocess.DEVNULL)
            procs.append(stub)
            while not (port_file.exists() and port_file.read_text().strip()):
                if stub.poll() is not None:
                    sys.exit("the stub upstream did not start")
                time.sleep(0.05)
            upstream = f"http://127.0.0.1:{int(port_file.read_text())}/v1"
            servers = {
                "litellm_alone": start_litellm(args.litellm, tmp, "litellm_alone", upstream, {}, hook=False),
                "litellm_hook": start_litellm(args.litellm, tmp, "litellm_hook", upstream, env, hook=True),
                "steerkit_serve": start_serve(tmp, upstream, env),
            }
            procs += [p for p, _ in servers.values()]
            wait_ready(servers, tmp)
            started = round(time.perf_counter() - t0, 1)
            result = asyncio.run(bench(args, servers))
        finally:
            stop(procs)
    out = {
        "benchmark": "litellm_proxy",
        "machine": machine(),
        "settings": {"duration_s": args.duration, "concurrency": args.concurrency, "pool_items": args.pool_items,
                     "litellm": _litellm_version(args.litellm)},
        "note": "latency is to the last byte; one process per server; client, servers and stub share this machine's "
        "cores, so compare the ratios within this run",
        "startup_s": started,
        "wall_s": round(time.perf_counter() - t0, 1),
        **result,
    }
    print(json.dumps(out, indent=2))


def _litellm_version(exe: str) -> str | None:
    py = Path(exe).parent / "python"
    try:
        res = subprocess.run([str(py), "-c", "import importlib.metadata as m; print(m.version('litellm'))"], check=False,
                             capture_output=True, text=True, timeout=60)
    except OSError:
        return None
    return res.stdout.strip() or None


if __name__ == "__main__":
    main()
