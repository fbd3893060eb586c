"""Test helpers for ccrotate users: a fake Anthropic upstream and pytest fixtures.

:class:`FakeUpstream` is an ASGI app that answers the Messages API (JSON and SSE),
``count_tokens``, ``models`` and the OAuth token endpoint like ``api.anthropic.com``,
with behaviours scripted per credential. :func:`serve_app` runs it (or any ASGI app) on
a loopback port. The pytest fixtures ``fake_upstream`` and ``fake_upstream_server`` are
loaded automatically once ccrotate is installed::

    import anthropic
    from ccrotate.testing import RateLimited, Reply

    def test_retry(fake_upstream_server):
        fake = fake_upstream_server.app
        fake.script("sk-ant-api03-test", RateLimited(retry_after=5), Reply(text="hi"))
        client = anthropic.Anthropic(base_url=fake_upstream_server.url,
                                     api_key="sk-ant-api03-test", max_retries=0)
        with pytest.raises(anthropic.RateLimitError):
            client.messages.create(model="claude-sonnet-4-6", max_tokens=64,
                                   messages=[{"role": "user", "content": "hello"}])
        assert len(fake.requests_for("sk-ant-api03-test")) == 1

See ``docs/testing.md`` for the full guide.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ccrotate._lazy import attach

if TYPE_CHECKING:
    from ccrotate.testing._behaviours import (
        ApiError,
        Behaviour,
        CutStream,
        Forbidden,
        NotEntitled,
        Overloaded,
        RateLimited,
        Reply,
        SpendCapReached,
        StreamError,
        ToolUse,
        Unauthorized,
    )
    from ccrotate.testing._fake import FakeUpstream
    from ccrotate.testing._oauth import (
        FakeOAuth,
        OAuthProblem,
        TokenError,
        TokenReply,
        TokenSet,
        pkce_challenge,
    )
    from ccrotate.testing._records import RecordedRequest
    from ccrotate.testing._server import ServerHandle, serve_app
    from ccrotate.testing._sync import Gate
    from ccrotate.testing._wire import Limits

# Imported on first use: pytest imports this package at start-up for the plugin
# (ccrotate.testing._plugin), and a test session must not pay for Starlette then.
_LAZY: dict[str, str] = {
    "ApiError": "ccrotate.testing._behaviours",
    "Behaviour": "ccrotate.testing._behaviours",
    "CutStream": "ccrotate.testing._behaviours",
    "FakeOAuth": "ccrotate.testing._oauth",
    "FakeUpstream": "ccrotate.testing._fake",
    "Forbidden": "ccrotate.testing._behaviours",
    "Gate": "ccrotate.testing._sync",
    "NotEntitled": "ccrotate.testing._behaviours",
    "Limits": "ccrotate.testing._wire",
    "OAuthProblem": "ccrotate.testing._oauth",
    "Overloaded": "ccrotate.testing._behaviours",
    "RateLimited": "ccrotate.testing._behaviours",
    "RecordedRequest": "ccrotate.testing._records",
    "Reply": "ccrotate.testing._behaviours",
    "ServerHandle": "ccrotate.testing._server",
    "SpendCapReached": "ccrotate.testing._behaviours",
    "StreamError": "ccrotate.testing._behaviours",
    "TokenError": "ccrotate.testing._oauth",
    "TokenReply": "ccrotate.testing._oauth",
    "TokenSet": "ccrotate.testing._oauth",
    "ToolUse": "ccrotate.testing._behaviours",
    "Unauthorized": "ccrotate.testing._behaviours",
    "pkce_challenge": "ccrotate.testing._oauth",
    "serve_app": "ccrotate.testing._server",
}

__all__ = [
    "ApiError",
    "Behaviour",
    "CutStream",
    "FakeOAuth",
    "FakeUpstream",
    "Forbidden",
    "Gate",
    "Limits",
    "NotEntitled",
    "OAuthProblem",
    "Overloaded",
    "RateLimited",
    "RecordedRequest",
    "Reply",
    "ServerHandle",
    "SpendCapReached",
    "StreamError",
    "TokenError",
    "TokenReply",
    "TokenSet",
    "ToolUse",
    "Unauthorized",
    "pkce_challenge",
    "serve_app",
    "serve_fake_upstream",
]


__getattr__, __dir__ = attach(__name__, globals(), _LAZY, __all__)


@contextmanager
def serve_fake_upstream(fake: FakeUpstream | None = None,
                        **kwargs: Any) -> Iterator[ServerHandle[FakeUpstream]]:
    """Serve ``fake`` (a fresh :class:`FakeUpstream` if ``None``) on loopback.

    Keyword arguments go to :func:`serve_app`.
    """
    from ccrotate.testing._fake import FakeUpstream
    from ccrotate.testing._server import serve_app

    with serve_app(fake if fake is not None else FakeUpstream(), **kwargs) as handle:
        yield handle
