"""The Go system's recipe syntax: `START <cmd>` and `RUN --timeout=<duration> <cmd>`, with Go's
duration format, and its healthcheck flags; its code runner recipe and healthcheck parse."""

from __future__ import annotations

import pytest

from wrenn_server.controlplane.builds.recipe import (
    Env,
    Healthcheck,
    Run,
    Start,
    describe,
    parse,
    parse_duration,
    parse_healthcheck,
)
from wrenn_server.controlplane.errors import BadRequest

# recipes/code-runner-beta.recipefile of the Go system, verbatim.
GO_CODE_RUNNER = """\
RUN --timeout=5m sudo apt install -y python3 python3-pip python3-venv
ENV PYTHONUNBUFFERED=1

RUN python3 -m venv ~/jupyter-env
RUN --timeout=5m ~/jupyter-env/bin/pip install --upgrade pip
RUN --timeout=5m ~/jupyter-env/bin/pip install jupyter-server ipykernel
RUN --timeout=5m ~/jupyter-env/bin/python -m ipykernel install --sys-prefix

START ~/jupyter-env/bin/jupyter server --ServerApp.ip=0.0.0.0 --ServerApp.port=8888 \
--ServerApp.token='' --ServerApp.password='' --ServerApp.allow_origin='*' \
--ServerApp.disable_check_xsrf=True --no-browser --log-level=INFO
"""


def test_the_go_code_runner_recipe_parses() -> None:
    steps = parse(GO_CODE_RUNNER.splitlines())
    assert steps == [
        Run("sudo apt install -y python3 python3-pip python3-venv", timeout_sec=300),
        Env("PYTHONUNBUFFERED", "1"),
        Run("python3 -m venv ~/jupyter-env"),
        Run("~/jupyter-env/bin/pip install --upgrade pip", timeout_sec=300),
        Run("~/jupyter-env/bin/pip install jupyter-server ipykernel", timeout_sec=300),
        Run("~/jupyter-env/bin/python -m ipykernel install --sys-prefix", timeout_sec=300),
        Start(
            "~/jupyter-env/bin/jupyter server --ServerApp.ip=0.0.0.0 --ServerApp.port=8888 "
            "--ServerApp.token='' --ServerApp.password='' --ServerApp.allow_origin='*' "
            "--ServerApp.disable_check_xsrf=True --no-browser --log-level=INFO"
        ),
    ]
    assert describe(steps[0]) == "RUN --timeout=300s sudo apt install -y python3 python3-pip " \
        "python3-venv"  # fmt: skip
    assert describe(steps[2]) == "RUN python3 -m venv ~/jupyter-env"
    assert describe(steps[-1]).startswith("START ~/jupyter-env/bin/jupyter server ")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("5m", 300.0),
        ("90s", 90.0),
        ("1h30m", 5400.0),
        ("1.5h", 5400.0),
        ("300ms", 0.3),
        ("2m30.5s", 150.5),
        (".5s", 0.5),
        ("1500us", 0.0015),
        ("1µs", 1e-6),
    ],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "m", "5 m", "5min", "-5m", "5m ", "1d", "1h+5m", "s5"])
def test_what_is_not_a_duration(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("START", "START needs a command"),
        ("START   ", "START needs a command"),
        ("RUN --timeout=5m", "RUN needs a command"),
        ("RUN --timeout=5m   ", "RUN needs a command"),
        ("RUN --timeout=soon echo", "needs a duration such as 90s"),
        ("RUN --timeout= echo", "needs a duration such as 90s"),
        ("RUN --timeout=0s echo", "more than 0 and at most 30m"),
        ("RUN --timeout=31m echo", "more than 0 and at most 30m"),
    ],
)
def test_bad_start_and_timeout_lines_are_named(line: str, message: str) -> None:
    with pytest.raises(BadRequest, match=message) as err:
        parse(["ENV A=1", line])
    assert str(err.value).startswith("line 2: ")


def test_start_and_timeout_keep_the_rest_of_the_line() -> None:
    assert parse(["start  python3 -m http.server 8000 "]) == [Start("python3 -m http.server 8000")]
    # Only a leading --timeout= is the flag; later ones belong to the command.
    assert parse(["RUN curl --timeout=5 x"]) == [Run("curl --timeout=5 x")]
    assert parse(["RUN --timeout=2m30s make  all"]) == [Run("make  all", timeout_sec=150)]


def test_the_go_healthcheck_syntax() -> None:
    # recipes/code-runner-beta.healthcheck of the Go system, verbatim.
    go = (
        "--interval=5s --timeout=5s --start-period=60s --retries=5 "
        "curl -sf http://127.0.0.1:8888/api/status"
    )
    assert parse_healthcheck(go) == Healthcheck(
        "curl -sf http://127.0.0.1:8888/api/status",
        interval_sec=5,
        timeout_sec=5,
        start_period_sec=60,
        retries=5,
    )
    # A plain command takes the defaults; flags end at the first word that is not one.
    assert parse_healthcheck("test -f /srv/ready") == Healthcheck("test -f /srv/ready")
    assert parse_healthcheck("--retries=2 grep --count x f").command == "grep --count x f"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("--interval=5s", "a command is needed"),
        ("--every=5s true", "unknown flag '--every'"),
        ("--interval true", "unknown flag '--interval'"),
        ("--interval=soon true", "--interval needs a duration"),
        ("--timeout=11m true", "--timeout is at most 600s"),
        ("--retries=-1 true", "--retries needs a whole number"),
        ("--retries=many true", "--retries needs a whole number"),
    ],
)
def test_bad_healthchecks_are_refused(text: str, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        parse_healthcheck(text)
