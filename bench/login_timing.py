"""Failed-login answer time: an existing account vs an unknown username.

Both should cost one password-hash check (models/users.py verify_login), so
the answer time does not tell which usernames exist.  In-process (Flask's test
client) on a throwaway SQLite instance; each attempt from its own client
address so the failed-login limits do not refuse them.  Last line:
``login_time_ratio_unknown_vs_existing: X`` (1.0 is ideal; before the fix
it was about 0.01).

    python bench/login_timing.py --attempts 10
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attempts", type=int, default=10)
    args = parser.parse_args()

    from migrations.runner import upgrade
    from models import Role
    from models.db import session_scope
    from models.settings import load_settings
    from webapp import create_app
    from webapp.bootstrap import create_user

    tmp = Path(tempfile.mkdtemp(prefix="hemaloop-login-bench-"))
    url = f"sqlite:///{tmp / 'db.sqlite'}"
    upgrade(url)
    settings = load_settings({"HEMALOOP_INSTANCE_DIR": str(tmp / "instance"),
                              "HEMALOOP_DATABASE_URL": url,
                              "HEMALOOP_SECRET_KEY": "bench-secret-key-0123456789"})
    with session_scope(url) as s:
        create_user(s, "ada", Role.PATHOLOGIST, "correct-horse-battery")
    app = create_app(settings)

    def attempt(username: str, i: int) -> float:
        client = app.test_client()
        addr = {"REMOTE_ADDR": f"10.{i // 250}.{i % 250}.{len(username)}"}
        page = client.get("/auth/login", environ_base=addr)
        token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page.text).group(1)
        started = time.perf_counter()
        response = client.post("/auth/login", environ_base=addr, data={
            "username": username, "password": "wrong-password", "csrf_token": token})
        elapsed = time.perf_counter() - started
        assert response.status_code == 401, response.status_code
        return elapsed * 1000

    existing = [attempt("ada", i) for i in range(args.attempts)]
    unknown = [attempt("nobody", i) for i in range(args.attempts)]
    print(f"existing account, wrong password: median {statistics.median(existing):.1f} ms")
    print(f"unknown username:                 median {statistics.median(unknown):.1f} ms")
    ratio = statistics.median(unknown) / statistics.median(existing)
    print(f"login_time_ratio_unknown_vs_existing: {ratio:.2f}")


if __name__ == "__main__":
    main()
