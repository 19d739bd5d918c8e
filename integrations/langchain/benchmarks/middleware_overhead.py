"""What CtxMemMiddleware adds to each model call, with the real encoder (all-MiniLM-L6-v2).

Measures, per call, median and p95 milliseconds of:

* ``wrap_model_call`` with a handler that returns at once (the model's own time excluded),
  without the middleware (the bare handler) and with it: for a new user message (embed the
  query, hybrid search in the user's namespace, format, override the system message) and for
  a repeated one (an agent's later tool rounds, served from the middleware's recall cache);
* a whole ``agent.invoke`` with a fake model, with and without the middleware (adds the
  ``after_agent`` write: embedding and committing the new user and assistant turns).

The memory holds ``--users`` x ``--threads`` x ``--turns`` turns before the runs.

    python integrations/langchain/benchmarks/middleware_overhead.py [--calls 200] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

from langchain.agents import create_agent
from langchain.agents.middleware import ModelRequest, ModelResponse
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.runtime import Runtime
from typing_extensions import TypedDict

from ctxmem_plugin.encoders import SentenceEncoder
from ctxmem_plugin.memory import ContextMemory
from langchain_ctxmem import CtxMemMiddleware

SUBJECTS = [
    "my dog",
    "my sister",
    "the new job",
    "our trip to Lisbon",
    "the garden",
    "my bike",
    "the book club",
    "dinner",
]
VERBS = ["reminds me of", "was better than", "needs more time than", "is the reason for", "happened before"]
OBJECTS = [
    "the beach last summer",
    "a long night shift",
    "the cello lessons",
    "spicy ramen",
    "the red Volvo",
    "a rainy Sunday",
]
QUESTIONS = [
    "What is my dog's name?",
    "Where did we travel last year?",
    "What do I like to eat?",
    "Who plays the cello?",
]


class UserContext(TypedDict):
    user_id: str


def _sentence(rng: random.Random) -> str:
    return f"{rng.choice(SUBJECTS).capitalize()} {rng.choice(VERBS)} {rng.choice(OBJECTS)}."


def _timed(fn: Callable[[], Any], calls: int) -> list[float]:
    out = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000.0)
    return out


def _summary(ms: list[float]) -> dict[str, float]:
    ordered = sorted(ms)
    return {"median_ms": statistics.median(ordered), "p95_ms": ordered[int(0.95 * (len(ordered) - 1))]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--threads", type=int, default=3)
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: torch's choice). On a loaded 2-core machine 1 thread avoids "
        "OpenMP oversubscription, which can make a single query 20x slower",
    )
    args = parser.parse_args()
    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
    rng = random.Random(0)
    encoder = SentenceEncoder(device="cpu")
    encoder.encode(["warm up"])
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp, ContextMemory(tmp, encoder=encoder) as memory:
        for u in range(args.users):
            for t in range(args.threads):
                turns = [
                    {"role": "user" if i % 2 == 0 else "assistant", "content": _sentence(rng)}
                    for i in range(args.turns)
                ]
                memory.add(turns, ("users", f"u{u}", f"t{t}"))
        results["turns_in_memory"] = memory.stats()["turns"]

        # 1. wrap_model_call alone: the cost the middleware puts in front of every model call.
        middleware = CtxMemMiddleware(memory, k=5, max_tokens=400, save=False)
        model = GenericFakeChatModel(messages=iter([]))
        request = ModelRequest(
            model=model,
            messages=[HumanMessage(content=rng.choice(QUESTIONS))],
            system_message=SystemMessage(content="You are helpful."),
            runtime=Runtime(context={"user_id": "u3"}),
        )
        reply = ModelResponse(result=[AIMessage(content="ok")])

        def handler(req: ModelRequest) -> ModelResponse:
            return reply

        middleware.wrap_model_call(request, handler)  # warm: FAISS index load
        query = request.messages[0].text
        results["encode_query"] = _summary(_timed(lambda: encoder.encode_query(query), args.calls))
        bare = _timed(lambda: handler(request), args.calls)
        # A new user message each call (a cache miss: embed + search), as on an agent's first
        # model call of a run; then the same message again, as on its later tool rounds.
        fresh = iter(
            [
                request.override(messages=[HumanMessage(content=f"{rng.choice(QUESTIONS)} ({n})")])
                for n in range(args.calls)
            ]
        )
        wrapped = _timed(lambda: middleware.wrap_model_call(next(fresh), handler), args.calls)
        repeated = _timed(lambda: middleware.wrap_model_call(request, handler), args.calls)
        results["wrap_model_call"] = {"without": _summary(bare), "with": _summary(wrapped)}
        results["wrap_model_call_tool_round"] = {"without": _summary(bare), "with": _summary(repeated)}

        # 2. whole agent runs (fake model): recall before the call, save after the agent ends.
        def agent(with_memory: bool) -> Any:
            return create_agent(
                GenericFakeChatModel(messages=iter([AIMessage(content="ok")] * (args.calls + 5))),
                tools=[],
                system_prompt="You are helpful.",
                middleware=[CtxMemMiddleware(memory, k=5, max_tokens=400)] if with_memory else [],
                checkpointer=InMemorySaver(),
                context_schema=UserContext,
            )

        for label, with_memory in [("without", False), ("with", True)]:
            graph = agent(with_memory)
            counter = iter(range(10**9))

            def run(graph: Any = graph, counter: Any = counter) -> None:
                n = next(counter)
                graph.invoke(
                    {"messages": [{"role": "user", "content": rng.choice(QUESTIONS)}]},
                    {"configurable": {"thread_id": f"bench-{n}"}},
                    context={"user_id": f"u{n % args.users}"},
                )

            run()
            results.setdefault("agent_invoke", {})[label] = _summary(_timed(run, max(20, args.calls // 4)))

    w = results["wrap_model_call"]
    a = results["agent_invoke"]
    import os

    import torch

    load = os.getloadavg()[0]
    print(
        f"memory: {results['turns_in_memory']} turns; all-MiniLM-L6-v2 on CPU ({torch.get_num_threads()} torch "
        f"threads, {os.cpu_count()} cores, load average {load:.1f}); {args.calls} calls"
    )
    e = results["encode_query"]
    print(f"{'encode_query alone':28} {'':10} {e['median_ms']:10.2f} {'':10}   [p95 {e['p95_ms']:.2f}]")
    print(f"{'':28} {'without':>10} {'with':>10} {'overhead':>10}   (median ms; p95 in brackets)")
    rounds = [
        ("wrap_model_call (new msg)", w),
        ("wrap_model_call (tool round)", results["wrap_model_call_tool_round"]),
        ("agent.invoke (1 model call)", a),
    ]
    for name, row in rounds:
        extra = row["with"]["median_ms"] - row["without"]["median_ms"]
        print(
            f"{name:28} {row['without']['median_ms']:10.2f} {row['with']['median_ms']:10.2f} {extra:10.2f}"
            f"   [{row['without']['p95_ms']:.2f} / {row['with']['p95_ms']:.2f}]"
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main()
