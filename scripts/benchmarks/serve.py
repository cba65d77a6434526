"""`scripts/bench.py serve`: what `dg-chat serve` adds to the bare engine, on the demo model.

One engine, loaded once: this process runs the server over it (uvicorn in a thread on a free
port of 127.0.0.1, the app and worker of `dg-chat serve`) and, while the server is idle, the same
turns on it directly. The same prompts, seeds and sampler (sent in full with each request),
interleaved, best of --repeat:
- per request: a whole answer over HTTP against `Engine.turn` (ratio, milliseconds added);
- per streamed step: a stream with the dg_chat.canvas extension, one SSE event per denoising
  step, against `Engine.turn` (ratio, milliseconds added per step); and a plain stream (a chunk
  per block);
- concurrency: --clients clients at once, every other one streamed, each answer checked against
  the bare engine's for its seed: none lost, none mixed up.
Each repeat rotates the order of the runs of a prompt, and the bare engine runs twice: the ratio
of its two runs ("bare_again") is the noise floor the other ratios are read against. Noise-free:
"outside_turn_ms", what a request took beyond its own turn on the server's engine thread (HTTP,
JSON, the queue hand-off), measured on the same request. The HTTP client runs in this process
too: its parsing is counted as overhead (an upper bound).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[2]
PROMPTS = ["Tell me of the king", "Who is there?", "Speak of love and war", "What news from Rome?",
           "Sing me a song", "Who are you, sir?", "Where is the fool?", "Farewell, my lord"]
MODES = ["bare", "whole", "stream", "canvas", "bare_again"]
SERVED = ("whole", "stream", "canvas")


def body(i: int, sampler: Any, **fields: Any) -> dict:
    return {"messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
            "dg_chat": {"sampler": dataclasses.asdict(sampler), **fields.pop("dg_chat", {})}, **fields}


Run = tuple[float, str, int]
"""(seconds, answer, a count: denoising steps of a bare run, canvas events of a stream)."""


def bare(engine: Any, i: int, sampler: Any) -> Run:
    """The turn run directly, from an empty context as the server runs it."""
    from dg_chat.engine.events import TurnFinished
    from dg_chat.text.chat import Message

    engine.backend.prefill([])
    started = time.perf_counter()
    *_, finished = engine.turn([Message("user", PROMPTS[i % len(PROMPTS)])], sampler)
    assert isinstance(finished, TurnFinished), finished
    return time.perf_counter() - started, finished.answer, finished.stats.forwards


def whole(client: Any, i: int, sampler: Any) -> Run:
    started = time.perf_counter()
    response = client.post("/chat/completions", json=body(i, sampler))
    response.raise_for_status()
    return time.perf_counter() - started, response.json()["choices"][0]["message"]["content"], 0


def streamed(client: Any, i: int, sampler: Any, canvas: bool) -> Run:
    answer, events = "", 0
    started = time.perf_counter()
    with client.stream("POST", "/chat/completions", json=body(i, sampler, stream=True,
                                                               dg_chat={"canvas": canvas})) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line.startswith("event: dg_chat.canvas"):
                events += 1
            elif line.startswith("data: {"):
                data = json.loads(line.removeprefix("data: "))
                if "choices" in data:
                    answer += data["choices"][0]["delta"]["content"]
    return time.perf_counter() - started, answer, events


class TimedEngine:
    """The engine, timing each turn (from its start to its last event, taken before that event is
    handed on, so a response never arrives before its turn's time is set)."""

    def __init__(self, engine: Any):
        self.engine = engine
        self.last_seconds = 0.0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    def turn(self, *args: Any) -> Iterator[Any]:
        from dg_chat.engine.events import TurnFailed, TurnFinished

        started = time.perf_counter()
        for event in self.engine.turn(*args):
            if isinstance(event, (TurnFinished, TurnFailed)):
                self.last_seconds = time.perf_counter() - started
            yield event


def concurrent(client: Any, engine: Any, args: argparse.Namespace, sampler_of: Callable[[int], Any]) -> dict:
    """--clients at once (odd ones streamed): answers lost (an error) and mixed up (another's answer)."""
    seeds = range(1000, 1000 + args.clients)
    expected = [bare(engine, i, sampler_of(seed)) for i, seed in enumerate(seeds)]

    def one(i: int) -> str | None:
        sampler = sampler_of(seeds[i])
        try:
            run = streamed(client, i, sampler, canvas=True) if i % 2 else whole(client, i, sampler)
        except Exception:  # noqa: BLE001 - a lost answer is what is counted
            return None
        return run[1]

    started = time.perf_counter()
    with ThreadPoolExecutor(args.clients) as pool:
        answers = list(pool.map(one, range(args.clients)))
    seconds = time.perf_counter() - started
    sequential = sum(seconds for seconds, _, _ in expected)
    return {"clients": args.clients, "seconds": seconds, "bare_sequential_seconds": sequential,
            "ratio": seconds / sequential, "lost": answers.count(None),
            "mixed": sum(a is not None and a != e for a, (_, e, _) in zip(answers, expected, strict=True)),
            "distinct_answers": len({e for _, e, _ in expected})}


def main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(prog="bench.py serve")
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "demo.gguf")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--steps", type=int, default=48, help="most denoising steps per block")
    args = parser.parse_args(argv)

    import httpx

    from dg_chat.config import SamplerSettings, Settings
    from dg_chat.engine.loader import load_engine
    from dg_chat.serve.app import create_app
    from dg_chat.serve.server import listen, running, url
    from dg_chat.serve.worker import EngineWorker

    torch.set_num_threads(args.threads)
    engine = load_engine(Settings(model=str(args.model), device="cpu"))
    timed = TimedEngine(engine)
    worker = EngineWorker(timed)

    def sampler_of(seed: int) -> SamplerSettings:
        return SamplerSettings(seed=seed, max_steps=args.steps)

    n = len(PROMPTS)
    best = {mode: [float("inf")] * n for mode in MODES}
    outside = {mode: [float("inf")] * n for mode in SERVED}
    counts: dict[str, list[int]] = {mode: [0] * n for mode in MODES}
    identical = True
    try:
        with listen("127.0.0.1", 0) as sock, running(create_app(worker, "demo", SamplerSettings()), worker, sock), \
                httpx.Client(base_url=url(sock), timeout=600) as client:
            runners: dict[str, Callable[[int, Any], Run]] = {
                "bare": lambda i, s: bare(engine, i, s), "bare_again": lambda i, s: bare(engine, i, s),
                "whole": lambda i, s: whole(client, i, s),
                "stream": lambda i, s: streamed(client, i, s, canvas=False),
                "canvas": lambda i, s: streamed(client, i, s, canvas=True)}
            for run in runners.values():  # warm-up: first-call costs (the canvas pieces, allocations)
                run(0, sampler_of(0))
            for repeat in range(args.repeat):
                order = MODES[repeat % len(MODES):] + MODES[:repeat % len(MODES)]
                for i in range(n):
                    answers = set()
                    for mode in order:
                        seconds, answer, counts[mode][i] = runners[mode](i, sampler_of(i + 1))
                        best[mode][i] = min(best[mode][i], seconds)
                        if mode in SERVED:
                            outside[mode][i] = min(outside[mode][i], seconds - timed.last_seconds)
                        answers.add(answer)
                    identical &= len(answers) == 1 and counts["canvas"][i] == counts["bare"][i]
            crowd = concurrent(client, engine, args, sampler_of)
    finally:
        worker.close()
        engine.close()

    total = {mode: sum(values) for mode, values in best.items()}
    steps = sum(counts["bare"])

    def against_bare(mode: str) -> dict:
        added = total[mode] - total["bare"]
        report = {"seconds": total[mode], "ratio": total[mode] / total["bare"],
                  "added_ms_per_request": 1000 * added / n, "added_ms_per_step": 1000 * added / steps}
        if mode in SERVED:
            report["outside_turn_ms_per_request"] = 1000 * sum(outside[mode]) / n
        return report

    return {
        "model": args.model.name, "threads": args.threads, "repeat": args.repeat,
        "workload": {"requests": n, "denoising_steps": steps, "max_steps": args.steps},
        "identical_answers": identical,
        "bare": {"seconds": total["bare"], "ms_per_request": 1000 * total["bare"] / n,
                 "ms_per_step": 1000 * total["bare"] / steps},
        "bare_again": against_bare("bare_again"),
        "whole": against_bare("whole"),
        "stream": against_bare("stream"),
        "stream_canvas": {**against_bare("canvas"), "canvas_events": sum(counts["canvas"])},
        "concurrent": crowd,
    }
