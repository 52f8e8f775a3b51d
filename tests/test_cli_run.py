"""``hemaloop run`` refuses a port that is taken before it starts anything."""

from __future__ import annotations

import socket

from click.testing import CliRunner

from tests.helpers import base_env
from webapp.cli import main


def test_run_on_a_busy_port_says_so_and_starts_nothing(tmp_path, monkeypatch):
    for name, value in base_env(tmp_path, HEMALOOP_DATABASE_URL=f"sqlite:///{tmp_path}/h.sqlite"
                                ).items():
        monkeypatch.setenv(name, value)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = CliRunner().invoke(main, ["run", "--port", str(port)])
    assert result.exit_code == 1, result.output
    assert f"port {port} on 127.0.0.1 is already in use" in result.output
    assert f"--port {port + 1}" in result.output and f"make run PORT={port + 1}" in result.output
    assert "hemaloop is at" not in result.output  # it never claimed to serve


def test_a_free_port_is_no_problem():
    from webapp.cli import port_problem

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert port_problem("127.0.0.1", port) is None
    assert "cannot serve on" in port_problem("no-such-host.invalid", 5000)
