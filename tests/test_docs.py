"""Docs stay true: links resolve, the README's commands are what CI runs, examples import."""

from __future__ import annotations

import importlib.util
import re
import textwrap
from collections.abc import Iterator
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


def test_the_threat_model_names_tests_that_exist() -> None:
    """Every test that docs/security.md's table cites is a test in the file it names."""
    text = (ROOT / "docs" / "security.md").read_text()
    cited = 0
    for row in text.splitlines():
        if not row.startswith("|"):
            continue
        current = None
        for file, name in re.findall(r"`(?:(test_\w+\.py))?::(test_\w+)`", row):
            current = file or current
            assert current is not None, row
            source = (ROOT / "tests" / current).read_text()
            assert re.search(rf"^(async )?def {name}\(", source, re.M), f"{current}::{name}"
            cited += 1
    assert cited >= 30


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


# --- The snippets run ---------------------------------------------------------------------
#
# Every ```python block in README.md and docs/*.md runs, each in its own subprocess with a
# timeout, as described in docs/development.md ("Documentation snippets run"):
#
# - A block fenced ```python skip is not run; the prose next to it says why.
# - A block that defines test_* functions is run by pytest (it must collect and pass at least
#   one test), with the pytest plugins a ccrotate install has (ccrotate.testing's fixtures,
#   pytest-httpx, anyio in auto mode).
# - Any other block is executed as a module named "snippet" (so code under
#   `if __name__ == "__main__":`, such as uvicorn.run(), does not run). A block with a
#   top-level `await` or `async with` runs as a coroutine, as a notebook or
#   `python -m asyncio` would run it.
# - The hidden preamble is the environment: a FakeUpstream served on loopback for the
#   block, CCROTATE_UPSTREAM_URL and CCROTATE_OAUTH_TOKEN_URL pointing at it, HOME and the
#   working directory a fresh temporary directory holding ~/.claude/accounts.json (two API
#   keys, "ci" and "team", and one OAuth account, "work-1", whose refresh token the fake
#   knows), CCROTATE_ACCOUNTS_PATH naming that file, CCROTATE_SERVER_URL the address of a
#   running ccrotate server (a Rotator in front of the same fake, with API-key accounts "ci"
#   and "team" and no client token) for the client snippets, and no other CCROTATE_*,
#   ANTHROPIC_* or OPENAI_* variable.

FENCE = re.compile(r"^(?P<indent>[ \t]*)```python(?P<info>[^\n]*)\n(?P<code>.*?)^(?P=indent)```",
                   re.M | re.S)
SNIPPET_TIMEOUT = 60.0

_RUNNER = r'''
import ast, asyncio, sys, types
path = sys.argv[1]
source = open(path).read()
code = compile(source, path, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
module = types.ModuleType("snippet")
module.__file__ = path
sys.modules["snippet"] = module
result = eval(code, module.__dict__)
if asyncio.iscoroutine(result):
    asyncio.run(result)
'''

_PYTEST_INI = """[pytest]
anyio_mode = auto
addopts = -p no:cacheprovider
filterwarnings = error::pytest.PytestUnraisableExceptionWarning
"""


def _snippets() -> list[tuple[str, str, str]]:
    found = []
    for doc in DOCS:
        text = doc.read_text()
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            found.append((f"{doc.name}:{line}", match["info"].strip(),
                          textwrap.dedent(match["code"])))
    return found


SNIPPETS = _snippets()


SNIPPET_REFRESH_TOKEN = "sk-ant-ort01-snippet-work-1"


@pytest.fixture
def snippet_servers() -> Iterator[tuple[str, str]]:
    """The fake Anthropic API, and a ccrotate server in front of it, fresh for each block."""
    from ccrotate import Account, AccountKind, AccountPool, Rotator, Secret, Settings
    from ccrotate.testing import FakeUpstream, serve_app

    fake = FakeUpstream()
    fake.oauth.add_refresh_token(SNIPPET_REFRESH_TOKEN)
    with serve_app(fake) as upstream:
        pool = AccountPool([Account(name=name, kind=AccountKind.API_KEY,
                                    api_key=Secret(f"sk-ant-api03-server-{name}"))
                            for name in ("ci", "team")])
        rotator = Rotator(Settings(upstream_url=upstream.url, hot_reload=False), pool=pool)
        with serve_app(rotator.app) as server:
            yield upstream.url, server.url


def _snippet_env(home: Path, upstream: str, server: str) -> dict[str, str]:
    import json
    import os
    import time

    claude = home / ".claude"
    claude.mkdir(mode=0o700)
    accounts = claude / "accounts.json"
    accounts.write_text(json.dumps({"version": 1, "accounts": {
        "ci": {"apiKey": "sk-ant-api03-snippet-ci"},
        "team": {"apiKey": "sk-ant-api03-snippet-team"},
        "work-1": {"accessToken": "sk-ant-oat01-snippet-work-1",
                   "refreshToken": SNIPPET_REFRESH_TOKEN,
                   "expiresAt": int(time.time() * 1000) + 3_600_000}}}))
    accounts.chmod(0o600)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CCROTATE_", "CCPROXY_", "ANTHROPIC_", "OPENAI_"))}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"),
               CCROTATE_UPSTREAM_URL=upstream,
               CCROTATE_OAUTH_TOKEN_URL=upstream + "/v1/oauth/token",
               CCROTATE_ACCOUNTS_PATH=str(accounts), CCROTATE_SERVER_URL=server,
               LITELLM_LOCAL_MODEL_COST_MAP="True",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "src"),
                                                        env.get("PYTHONPATH")])))
    return env


def _top_level_imports(code: str) -> set[str]:
    import ast

    names: set[str] = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def test_snippets_are_found_and_few_are_skipped() -> None:
    """The convention is used sparingly: most blocks run."""
    skipped = [where for where, info, _ in SNIPPETS if info == "skip"]
    assert len(SNIPPETS) >= 30
    assert len(skipped) <= 3, skipped
    assert all(info in ("", "skip") for _, info, _ in SNIPPETS)


@pytest.mark.slow
@pytest.mark.parametrize(("where", "info", "code"), SNIPPETS, ids=[s[0] for s in SNIPPETS])
def test_snippet_runs(where: str, info: str, code: str, tmp_path: Path,
                      snippet_servers: tuple[str, str]) -> None:
    """Each ```python block in the docs runs against the fake upstream and does not raise."""
    import subprocess
    import sys

    if info == "skip":
        pytest.skip("fenced `python skip` (the doc says why)")
    for module in _top_level_imports(code):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"needs {module}, which is not installed")
    home = tmp_path / "home"
    home.mkdir()
    env = _snippet_env(home, *snippet_servers)
    is_test = re.search(r"^(async )?def test_", code, re.M) is not None
    if is_test:
        (home / "pytest.ini").write_text(_PYTEST_INI)
        (home / "test_snippet.py").write_text(code)
        command = [sys.executable, "-m", "pytest", "-q", "test_snippet.py"]
    else:
        (home / "snippet.py").write_text(code)
        command = [sys.executable, "-c", _RUNNER, "snippet.py"]
    try:
        done = subprocess.run(command, cwd=home, env=env, capture_output=True, text=True,
                              timeout=SNIPPET_TIMEOUT, check=False)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{where}: still running after {SNIPPET_TIMEOUT:.0f}s\n{exc.stdout!r}")
    assert done.returncode == 0, f"{where} failed:\n{done.stdout}\n{done.stderr}"
    if is_test:
        assert " passed" in done.stdout, f"{where}: no test ran\n{done.stdout}"
