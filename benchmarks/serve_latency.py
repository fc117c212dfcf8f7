"""Latency (p50, p99) and throughput of `mtbert serve` on loopback with 1, 8 and 32 concurrent clients, for
the torch engine, ONNX fp32 and ONNX int8: each request is one text, answered by every single-text head
(POST /predict/all).

    python benchmarks/serve_latency.py [--run-dir runs/deeppavlov_example] [--requests 400] [--clients 1,8,32]

Exports the run to RUN_DIR/onnx and RUN_DIR/onnx-int8 if they are missing. Each engine is served by its
own `mtbert serve` process; the clients run here, on the same cores (2 on this project's machines), so
the numbers include the load generator. Writes the 'serve_latency' section of benchmarks/RESULTS.md
(--no-write: print it only, e.g. for a smoke run on a tiny model).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
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
    from mtbert.inference.export import default_out_dir, export_onnx

    out = default_out_dir(run_dir, quantize)
    if not (out / "model.onnx").exists():
        print(f"exporting {run_dir} to {out}", flush=True)
        export_onnx(run_dir, out, quantize)
    return out


def start_server(path: Path, engine: str, port: int, precision: str | None) -> subprocess.Popen:
    extra = ["--precision", precision] if precision else []
    proc = subprocess.Popen([sys.executable, "-m", "mtbert", "-q", "serve", str(path), "--engine", engine,
                             "--port", str(port), *extra], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"mtbert serve {path} --engine {engine} stopped: {proc.stderr.read()}")
        try:
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
            return proc
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"mtbert serve {path} did not answer within 120 s")


async def load(url: str, clients: int, requests: int) -> tuple[list[float], float]:
    """`clients` concurrent clients, each sending its next request when its last is answered; latencies
    (s) of `requests` requests in all, and the wall time."""
    latencies: list[float] = []
    counter = iter(range(requests))
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:
        async def one_client():
            for i in counter:
                start = time.perf_counter()
                r = await client.post("/predict/all", json={"texts": [TEXTS[i % len(TEXTS)]]})
                r.raise_for_status()
                latencies.append(time.perf_counter() - start)

        for i in range(min(8, requests)):  # warm-up: allocator, kernels, connections
            (await client.post("/predict/all", json={"texts": [TEXTS[i % len(TEXTS)]]})).raise_for_status()
        start = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(clients)))
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
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--no-write", action="store_true", help="print the section, leave RESULTS.md alone")
    args = ap.parse_args()
    run_dir = Path(args.run_dir)
    clients = [int(c) for c in args.clients.split(",")]
    engines = args.engines.split(",")
    rows, throughput = [], {}
    for name in engines:
        engine, quantize, precision = ENGINES[name]
        path = run_dir if engine == "torch" else bundle(run_dir, quantize)
        port = free_port()
        proc = start_server(path, engine, port, precision)
        try:
            for c in clients:
                lat, wall = asyncio.run(load(f"http://127.0.0.1:{port}", c, args.requests))
                health = httpx.get(f"http://127.0.0.1:{port}/health").json()
                throughput[name, c] = len(lat) / wall
                rows.append(f"| {name} | {c} | {1000 * statistics.median(lat):.1f} | {1000 * percentile(lat, 99):.1f} | "
                            f"{throughput[name, c]:.1f} |")
                print(rows[-1], f"(requests per model call so far: {health['requests'] / max(1, health['model_calls']):.1f})",
                      flush=True)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
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

- command: `python benchmarks/serve_latency.py --run-dir {args.run_dir} --requests {args.requests} --clients {args.clients}`
- machine: {machine()}
- date: {today()}
- setup: `mtbert serve` per engine (micro-batching: up to 32 texts a model call, 5 ms wait), one text per
  request, every single-text head (`POST /predict/all`); the clients share the machine with the server

| engine | clients | p50 ms | p99 ms | requests/s |
|---|---|---|---|---|
{chr(10).join(rows)}

{chr(10).join(lines)}
"""
    if not args.no_write:
        write_section("serve_latency", body)
    print(body)


if __name__ == "__main__":
    main()
