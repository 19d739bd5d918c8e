"""A LangChain agent with short-term memory (a checkpointer) and ctxmem long-term memory.

Runs offline as is: a small stand-in chat model answers from the memories ctxmem injects, so
you can watch a fact told in one conversation come back in another one of the same user (and
not in another user's). To use a real model, name it with an ``init_chat_model`` spec:

    pip install -e '.[cpu]' -e 'integrations/langchain'
    python examples/langchain_agent.py                        # offline
    CTXMEM_CHAT_MODEL=openai:gpt-4o-mini python examples/langchain_agent.py   # needs its key and package
    python examples/langchain_agent.py --memory ./agent-memory   # keep the memory between runs

Pieces (see docs/integrations.md): ``CtxMemMiddleware`` recalls and saves conversations,
``CtxMemStore`` is the agent's LangGraph store (for tools that use ``runtime.store``), and
``InMemorySaver`` keeps each thread's own history.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Sequence
from typing import Any

from langchain.agents import create_agent
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langgraph.checkpoint.memory import InMemorySaver
from typing_extensions import TypedDict

from ctxmem_plugin.memory import ContextMemory
from langchain_ctxmem import CtxMemMiddleware, CtxMemStore

MODEL_ENV = "CTXMEM_CHAT_MODEL"


class UserContext(TypedDict):
    """What each run says about who is talking; the memory namespace is built from it."""

    user_id: str


class OfflineModel(BaseChatModel):
    """A stand-in chat model: it repeats what the long-term memory told it, or says it noted."""

    @property
    def _llm_type(self) -> str:
        return "ctxmem-offline-demo"

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        system = messages[0].text if messages and isinstance(messages[0], SystemMessage) else ""
        _, _, recalled = system.partition("(oldest first):\n")
        answer = f"From what you told me before: {' | '.join(recalled.splitlines())}" if recalled else "Noted."
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=answer))])

    def bind_tools(self, tools: Any, **kwargs: Any) -> OfflineModel:
        return self


def chat_model() -> BaseChatModel:
    """The model named by ``$CTXMEM_CHAT_MODEL`` (an ``init_chat_model`` spec), else the offline one."""
    spec = os.environ.get(MODEL_ENV)
    if not spec:
        return OfflineModel()
    from langchain.chat_models import init_chat_model

    return init_chat_model(spec)


CONVERSATIONS = [
    ("alice", "thread-1", "Hi! My dog is called Biscuit and I live in Lisbon."),
    ("bob", "thread-2", "Hello, I'm Bob. My cat is called Whiskers."),
    ("alice", "thread-3", "What is the name of my dog?"),
    ("bob", "thread-4", "What is the name of my dog?"),
]


def run(memory_dir: str, model: BaseChatModel | None = None, encoder: Any = None) -> list[tuple[str, str, str, str]]:
    """Play :data:`CONVERSATIONS`; returns ``(user, thread, question, answer)`` for each."""
    transcript = []
    with ContextMemory(memory_dir, encoder=encoder) as memory, CtxMemStore(memory) as store:
        agent = create_agent(
            model or chat_model(),
            tools=[],
            system_prompt="You are a friendly assistant. Use what you remember about the user.",
            middleware=[CtxMemMiddleware(memory, namespace=("users", "{user_id}"), k=5, max_tokens=300)],
            checkpointer=InMemorySaver(),  # short-term: each thread's own messages
            store=store,  # long-term store for tools that use runtime.store (e.g. langmem)
            context_schema=UserContext,
        )
        for user, thread, text in CONVERSATIONS:
            out = agent.invoke(
                {"messages": [{"role": "user", "content": text}]},
                {"configurable": {"thread_id": thread}},
                context={"user_id": user},
            )
            transcript.append((user, thread, text, out["messages"][-1].text))
    return transcript


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memory", help="memory directory (default: a temporary one)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        for user, thread, question, answer in run(args.memory or tmp):
            print(f"[{user} / {thread}] {question}\n  -> {answer}")


if __name__ == "__main__":
    main()
