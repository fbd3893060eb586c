"""AccountPool on its own, as in a notebook: no server, no event loop needed.

Run:  python examples/notebook_pool.py
"""

from __future__ import annotations

import time

from ccrotate import Account, AccountKind, AccountPool, NoAccountAvailable, Secret

pool = AccountPool([
    Account(name="a", kind=AccountKind.API_KEY, api_key=Secret("sk-ant-api03-example-a")),
    Account(name="b", kind=AccountKind.API_KEY, api_key=Secret("sk-ant-api03-example-b")),
])

first = pool.acquire()
pool.release(first.name)
# Pretend the upstream answered 429 with "retry-after: 30".
pool.report_rate_limited(first.name, {"retry-after": "30"})
second = pool.acquire()
pool.release(second.name)
print(f"served by {first.name}, then {second.name} while {first.name} cools")
for status in pool.statuses():
    print(status.name, status.state.value, status.credential_hint)
pool.report_rate_limited(second.name, {"retry-after": "60"})
try:
    pool.acquire()
except NoAccountAvailable as exc:
    print(f"all cooling: retry in {exc.retry_after:.0f}s ({time.strftime('%H:%M:%S')})")
