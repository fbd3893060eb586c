"""LiteLLM as a client of the reference server, as ``ccrotate serve`` runs it.

LiteLLM calls ccrotate two ways: as Anthropic (``model="anthropic/…"``, ``api_base`` at
``/api``) and as an OpenAI-compatible server (``model="openai/…"``, ``api_base`` at
``/api/v1``). Both go through ``Rotator(settings).app`` under ``uvicorn_options(settings)``
(the Host/Origin guard, the 415 for non-JSON bodies, the client-key check, the head
deadline and the connection cap) with a client token, in front of the fake upstream.

LiteLLM is large (~200 MB installed, seconds to import), so it is not in the ``test``
extra but in ``litellm-client`` (``.ci/run`` installs it); without it these tests skip.
It is imported by the first test that needs it, never at collection, with
``LITELLM_LOCAL_MODEL_COST_MAP=True`` so that it does not fetch its cost map.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest

from ccrotate._wire import CLAUDE_CODE_IDENTITY
from conftest import ACCOUNT_OF, CLIENT_TOKEN, MODEL, GuardedStack

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("litellm") is None,
                       reason="litellm is not installed: pip install 'ccrotate[litellm-client]'"),
]

HELLO = "Hello from the fake Anthropic upstream."
USER = [{"role": "user", "content": "hello"}]


@pytest.fixture
def litellm(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The ``litellm`` module, imported offline (after the no-network guard is in place)."""
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    monkeypatch.setenv("LITELLM_TELEMETRY", "False")
    import litellm

    monkeypatch.setattr(litellm, "telemetry", False, raising=False)
    return litellm


@pytest.fixture
def stack(serve_guarded: Any) -> GuardedStack:
    guarded: GuardedStack = serve_guarded()
    return guarded


def _anthropic(stack: GuardedStack) -> dict[str, Any]:
    return {"model": f"anthropic/{MODEL}", "api_base": stack.url + "/api",
            "api_key": CLIENT_TOKEN, "max_tokens": 64, "num_retries": 0, "messages": USER}


def _openai(stack: GuardedStack) -> dict[str, Any]:
    return {"model": f"openai/{MODEL}", "api_base": stack.url + "/api/v1",
            "api_key": CLIENT_TOKEN, "max_tokens": 64, "num_retries": 0, "messages": USER}


def _check_heads(stack: GuardedStack, path: str) -> None:
    """Every request reached ``path``, none was refused, each as a non-browser client."""
    assert stack.refused() == [], stack.refused()
    assert {s.path for s in stack.seen} == {path}, stack.seen
    for seen in stack.seen:
        assert seen.method == "POST"
        assert seen.header("host") == f"127.0.0.1:{stack.server.port}"
        assert seen.header("origin") is None
        assert (seen.header("content-type") or "").startswith("application/json")


def test_anthropic_provider_json_and_stream(litellm: Any, stack: GuardedStack) -> None:
    """``litellm.completion`` as Anthropic, plain and streamed, over accounts a and b."""
    out = litellm.completion(**_anthropic(stack))
    assert out.choices[0].message.content == HELLO
    chunks = list(litellm.completion(**_anthropic(stack), stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == HELLO
    _check_heads(stack, "/api/v1/messages")
    for seen in stack.seen:
        assert seen.header("x-api-key") == CLIENT_TOKEN
        assert seen.header("anthropic-version") == "2023-06-01"
    sent = stack.fake.requests_for(path="/v1/messages")
    assert [ACCOUNT_OF.get(r.credential or "") for r in sent] == ["a", "b"]
    assert [r.json.get("stream", False) for r in sent] == [False, True]
    assert all(r.status == 200 and r.json["model"] == MODEL for r in sent)
    # The OAuth account's request gets what the real API demands of it (the fake
    # enforces both): the OAuth beta and the identity block first; the API key's neither.
    assert "oauth-2025-04-20" in sent[1].betas
    assert sent[1].json["system"][0] == {"type": "text", "text": CLAUDE_CODE_IDENTITY}
    assert "system" not in sent[0].json
    assert sent[0].betas == []
    assert all(r.header("user-agent") == stack.seen[0].header("user-agent") for r in sent)
    assert CLIENT_TOKEN not in repr(sent[1].headers)


async def test_anthropic_provider_async(litellm: Any, stack: GuardedStack) -> None:
    """``litellm.acompletion`` as Anthropic, plain and streamed."""
    out = await litellm.acompletion(**_anthropic(stack))
    assert out.choices[0].message.content == HELLO
    stream = await litellm.acompletion(**_anthropic(stack), stream=True)
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == HELLO
    _check_heads(stack, "/api/v1/messages")
    assert [r.status for r in stack.fake.requests_for(path="/v1/messages")] == [200, 200]


def test_openai_compatible_route(litellm: Any, stack: GuardedStack) -> None:
    """``model="openai/…"`` at ``/api/v1``: the OpenAI dialect, plain and streamed."""
    out = litellm.completion(**_openai(stack))
    assert out.choices[0].message.content == HELLO
    chunks = list(litellm.completion(**_openai(stack), stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == HELLO
    _check_heads(stack, "/api/v1/chat/completions")
    for seen in stack.seen:
        assert seen.header("authorization") == f"Bearer {CLIENT_TOKEN}"
        assert seen.header("anthropic-version") is None
    sent = stack.fake.requests_for(path="/v1/messages")
    assert [r.status for r in sent] == [200, 200]
    assert [r.json["model"] for r in sent] == [MODEL, MODEL]


async def test_openai_compatible_route_async(litellm: Any, stack: GuardedStack) -> None:
    """``litellm.acompletion`` through the OpenAI dialect, streamed."""
    stream = await litellm.acompletion(**_openai(stack), stream=True)
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == HELLO
    _check_heads(stack, "/api/v1/chat/completions")
