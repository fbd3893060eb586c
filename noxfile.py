"""Project habits, one session each: tests, lint, types, docs, bench, soak, claude_code."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "types", "docs"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite (what CI runs), on the installed package with every extra."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff over the package, tests, examples and benchmarks; the import-layer contracts."""
    session.install("ruff>=0.12", "import-linter>=2.1", "-e", ".")
    session.run("ruff", "check", "src", "tests", "examples", "benchmarks", "noxfile.py")
    session.run("lint-imports")


@nox.session
def types(session: nox.Session) -> None:
    """mypy --strict on the package, pyright strict on the public typing test."""
    session.install("-e", ".[test]", "mypy>=1.15", "pyright>=1.1.400")
    session.run("mypy")
    session.run("pyright")


@nox.session
def docs(session: nox.Session) -> None:
    """Docs stay true (links resolve, snippets run), and the site builds: mkdocs --strict."""
    session.install("-e", ".[test,docs]")
    session.run("pytest", "tests/test_docs.py", "-q")
    session.run("mkdocs", "build", "--strict", env={"NO_MKDOCS_2_WARNING": "1"})


@nox.session
def bench(session: nox.Session) -> None:
    """The benchmark suite: prints ratios against a direct connection, writes JSON.

    ``nox -s bench -- --quick`` is CI's regression guard (about 25 s): ccrotate's throughput
    as a ratio to the minimal proxy's in the same run, failing below a bound.
    """
    # granian for `--server granian`, the comparison in docs/benchmarks.md.
    session.install("-e", ".[server,metrics,aiohttp]", "granian>=2.5")
    session.run("python", "benchmarks/run.py", *session.posargs)


@nox.session
def soak(session: nox.Session) -> None:
    """Minutes of mixed load through the reference server; fails if RSS, fds or tasks grow.

    Not a default session and not in CI: ``nox -s soak`` runs 10 minutes, ``nox -s soak --
    --minutes 2`` less.
    """
    session.install("-e", ".[server,metrics,aiohttp]")
    session.run("python", "benchmarks/soak.py", *session.posargs)


@nox.session
def claude_code(session: nox.Session) -> None:
    """Claude Code itself (npm) through the proxy against the fake upstream (opt-in, slow)."""
    session.install("-e", ".[test]")
    session.run("pytest", "-m", "claude_code", "-q", "tests/test_claude_code.py",
                env={"CCROTATE_TEST_CLAUDE_CODE": "1"})
