"""Latency (p50, p99) and throughput of `mtbert serve` on loopback with 1, 8 and 32 concurrent clients, for
the torch engine, ONNX fp32 and ONNX int8: each request is one text, answered by every single-text head
(POST /predict/all).

    python benchmarks/serve_latency.py [--run-dir runs/deeppavlov_example] [--requests 400] [--clients 1,8,32]
                                       [--repeats 3]

Exports the run to RUN_DIR/onnx and RUN_DIR/onnx-int8 if they are missing (or the int8 one is stale). Each engine is served by its
own `mtbert serve` process; the clients run here, on the same cores (2 on this project's machines), as
light as they can be (see `Connection`), so that the numbers are the server's. Writes the
'serve_latency' section of benchmarks/RESULTS.md (--no-write: print it only, e.g. for a smoke run on a
tiny model).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, today, write_section  # noqa: E402

# single sentences of the lengths CoLA, SST-2 and CoNLL-2003 have (8 to 40 words)
TEXTS = [
    "The sailors rode the breeze clear of the rocks.",
    "John lives in Paris and works for the United Nations in Geneva.",
    "a gripping , funny and ultimately touching film about growing up",
    "The more we study verbs, the crazier they get.",
    "Germany's representative to the European Union's veterinary committee Werner Zwingmann said on Wednesday "
    "consumers should buy sheepmeat from countries other than Britain until the scientific advice was clearer.",
    "it 's a charming and often affecting journey .",
    "Peter Blackburn , BRUSSELS 1996-08-22",
    "the film is strictly routine , with a story that meanders and characters that never come alive .",
]
# name: (engine, ONNX quantisation, precision of the torch engine). torch-fp32 is the baseline;
# torch-auto is what `mtbert serve` does by default (bf16 where the CPU has it)
ENGINES = {"torch-fp32": ("torch", None, "fp32"), "torch-auto": ("torch", None, "auto"),
           "onnx-fp32": ("onnx", None, None), "onnx-int8": ("onnx", "int8", None)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bundle(run_dir: Path, quantize: str | None) -> Path:
    """The run's ONNX bundle, exported if it is missing or an int8 one was made by another scheme."""
    from mtbert.inference.export import INT8_SCHEME, default_out_dir, export_onnx

    out = default_out_dir(run_dir, quantize)
    manifest = out / "manifest.json"
    stale = quantize and manifest.exists() and json.loads(manifest.read_text()).get("quantization_scheme") != INT8_SCHEME
    if stale or not (out / "model.onnx").exists():
        print(f"exporting {run_dir} to {out}", flush=True)
        export_onnx(run_dir, out, quantize, force=True)  # our own stale bundle
    return out


def start_server(path: Path, engine: str, port: int, precision: str | None) -> subprocess.Popen:
    extra = ["--precision", precision] if precision else []
    # stderr to a file, not a pipe: nobody reads a pipe while the servers run, and a full one would block
    errors = tempfile.TemporaryFile("w+")
    proc = subprocess.Popen([sys.executable, "-m", "mtbert", "-q", "serve", str(path), "--engine", engine,
                             "--port", str(port), *extra], stdout=subprocess.DEVNULL, stderr=errors,
                            text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            errors.seek(0)
            raise SystemExit(f"mtbert serve {path} --engine {engine} stopped: {errors.read()}")
        try:
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
            return proc
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"mtbert serve {path} did not answer within 120 s")


class Connection:
    """One keep-alive HTTP/1.1 connection that POSTs JSON and reads the answer, on bare asyncio streams.
    The load generator shares the server's 2 cores, and httpx spent about 6 ms of CPU a request at 32
    clients (40% of the machine), which capped the server's throughput and its batches; this spends a
    fraction of that, so the numbers are the server's."""

    def __init__(self, port: int):
        self.port = port

    async def __aenter__(self):
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc):
        self.writer.close()

    async def post(self, path: str, payload: dict) -> bytes:
        body = json.dumps(payload).encode()
        self.writer.write(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                          f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        status = await self.reader.readline()
        length = None
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        if length is None:
            raise SystemExit(f"POST {path}: answer without Content-Length ({status!r})")
        answer = await self.reader.readexactly(length)
        if status.split()[1] != b"200":
            raise SystemExit(f"POST {path}: {status.decode().strip()}: {answer[:200]!r}")
        return answer


async def warm_up(port: int) -> None:
    """A few requests before measuring: allocator, kernels."""
    async with Connection(port) as connection:
        for text in TEXTS:
            await connection.post("/predict/all", {"texts": [text]})


async def load(port: int, clients: int, requests: int) -> tuple[list[float], float]:
    """`clients` concurrent clients, each on its own connection sending its next request when its last
    is answered; latencies (s) of `requests` requests in all, and the wall time."""
    latencies: list[float] = []
    counter = iter(range(requests))

    async def one_client(connection: Connection):
        for i in counter:
            start = time.perf_counter()
            await connection.post("/predict/all", {"texts": [TEXTS[i % len(TEXTS)]]})
            latencies.append(time.perf_counter() - start)

    async with contextlib.AsyncExitStack() as stack:
        connections = [await stack.enter_async_context(Connection(port)) for _ in range(clients)]
        start = time.perf_counter()
        await asyncio.gather(*(one_client(c) for c in connections))
        wall = time.perf_counter() - start
    return latencies, wall


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run-dir", default="runs/deeppavlov_example")
    ap.add_argument("--requests", type=int, default=400, help="per engine and number of clients")
    ap.add_argument("--clients", default="1,8,32")
    ap.add_argument("--repeats", type=int, default=3, help="rounds, engines alternating; the median round counts")
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--no-write", action="store_true", help="print the section, leave RESULTS.md alone")
    args = ap.parse_args()
    run_dir = Path(args.run_dir)
    clients = [int(c) for c in args.clients.split(",")]
    engines = args.engines.split(",")
    servers: dict[str, tuple[subprocess.Popen, int]] = {}
    runs: dict[tuple[str, int], list[tuple[float, list[float], float]]] = {}
    try:
        for name in engines:  # all up at once (idle ones cost no CPU), so that the rounds can alternate
            engine, quantize, precision = ENGINES[name]
            path = run_dir if engine == "torch" else bundle(run_dir, quantize)
            port = free_port()
            servers[name] = start_server(path, engine, port, precision), port
            asyncio.run(warm_up(port))
        for r in range(args.repeats):
            for c in clients:
                for name in engines:
                    port = servers[name][1]
                    before = httpx.get(f"http://127.0.0.1:{port}/health").json()
                    lat, wall = asyncio.run(load(port, c, args.requests))
                    after = httpx.get(f"http://127.0.0.1:{port}/health").json()
                    calls = max(1, after["model_calls"] - before["model_calls"])
                    runs.setdefault((name, c), []).append(
                        (len(lat) / wall, lat, (after["requests"] - before["requests"]) / calls))
                    print(f"round {r + 1}: {name}, {c} clients: {len(lat) / wall:.1f} requests/s", flush=True)
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(timeout=30)
    rows, throughput = [], {}
    for name in engines:
        for c in clients:
            throughput[name, c] = statistics.median(t for t, _, _ in runs[name, c])
            lat = [x for _, latencies, _ in runs[name, c] for x in latencies]
            per_call = statistics.mean(k for _, _, k in runs[name, c])
            rows.append(f"| {name} | {c} | {1000 * statistics.median(lat):.1f} | {1000 * percentile(lat, 99):.1f} | "
                        f"{throughput[name, c]:.1f} | {per_call:.1f} |")
    lines = []
    lo, hi = min(clients), max(clients)
    for name in engines:
        if (name, lo) in throughput and (name, hi) in throughput and hi != lo:
            ratio = throughput[name, hi] / throughput[name, lo]
            lines.append(f"- {name}: {hi} clients / {lo} client throughput **{ratio:.2f}x** (bar: >= 3x)")
    for base in ("torch-fp32", "torch-auto"):
        if base in engines and "onnx-int8" in engines:
            for c in clients:
                ratio = throughput["onnx-int8", c] / throughput[base, c]
                bar = " (bar: >= 1.5x)" if base == "torch-fp32" else ""
                lines.append(f"- onnx-int8 / {base} throughput with {c} client{'s' if c > 1 else ''}: "
                             f"**{ratio:.2f}x**{bar}")
    body = f"""## Serving: latency and throughput on loopback (issue 5)

- command: `python benchmarks/serve_latency.py --run-dir {args.run_dir} --requests {args.requests} --clients {args.clients} --repeats {args.repeats}`
- machine: {machine()}
- date: {today()}
- setup: `mtbert serve` per engine (micro-batching: up to 32 texts a model call, 5 ms wait), one text per
  request, every single-text head (`POST /predict/all`); the clients share the machine with the server,
  each a keep-alive HTTP/1.1 connection on bare asyncio streams (about 0.1 ms of CPU a request)

{args.repeats} rounds, the engines alternating within each; requests/s is the median round, latencies
are over all rounds' requests.

| engine | clients | p50 ms | p99 ms | requests/s | requests per model call |
|---|---|---|---|---|---|
{chr(10).join(rows)}

{chr(10).join(lines)}
"""
    if not args.no_write:
        write_section("serve_latency", body)
    print(body)


if __name__ == "__main__":
    main()
