"""Docs stay true: links resolve, the README's commands are what CI runs, examples import."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_relative_links_resolve(doc: Path) -> None:
    """Every relative link in README.md and docs/ points at a file that exists."""
    for target in LINK.findall(doc.read_text()):
        if "://" in target or target.startswith("mailto:"):
            continue
        assert (doc.parent / target).exists(), f"{doc.name} links to missing {target}"


def test_readme_opens_with_the_two_commands_and_ci_runs_the_second() -> None:
    """The README's first block holds the demo and test commands; .ci/run runs the latter."""
    readme = (ROOT / "README.md").read_text().splitlines()
    block = readme[readme.index("```sh") + 1: readme.index("```sh") + 3]
    assert "ccrotate demo" in block[0]
    assert "pytest" in block[1]
    assert block[1] in (ROOT / ".ci" / "run").read_text()


def test_readme_states_the_terms() -> None:
    """The README says plainly that pooled subscriptions are for your own accounts."""
    text = (ROOT / "README.md").read_text()
    assert "your own accounts" in text
    assert "Anthropic's terms" in text


@pytest.mark.parametrize("example", sorted((ROOT / "examples").glob("*.py")),
                         ids=lambda p: p.name)
def test_examples_compile(example: Path) -> None:
    """Every example is valid Python that the type-checked package can import from."""
    compile(example.read_text(), str(example), "exec")


def test_server_example_serves_through_the_fake_upstream(tmp_path: Path) -> None:
    """examples/server.py builds a working server: a request goes through to the fake."""
    import json
    import time

    import httpx

    from ccrotate.testing import FakeUpstream, serve_app

    spec = importlib.util.spec_from_file_location("example_server", ROOT / "examples/server.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fake = FakeUpstream()
    accounts = tmp_path / "accounts.json"
    accounts.write_text(json.dumps({"version": 1, "accounts": {
        "k": {"apiKey": "sk-ant-api03-example"},
        "o": {"accessToken": "sk-ant-oat01-example", "refreshToken": "sk-ant-ort01-example",
              "expiresAt": int(time.time() * 1000) + 3_600_000}}}))
    with serve_app(fake) as upstream, serve_app(module.build_app(str(accounts), upstream.url)
                                                ) as server:
        served = set()
        for _ in range(2):
            r = httpx.post(server.url + "/api/v1/messages", json={
                "model": "claude-sonnet-4-6", "max_tokens": 16,
                "messages": [{"role": "user", "content": "hi"}]})
            assert r.status_code == 200
            served.add(r.headers["x-ccrotate-account"])
        assert served == {"k", "o"}
        assert httpx.get(server.url + "/health").status_code == 200
