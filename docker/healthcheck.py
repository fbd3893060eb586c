"""The container's HEALTHCHECK: exit 0 when ``GET /health`` on this container answers 200.

Standard library only (the slim image has no curl); the port is the server's own
``CCROTATE_PORT``. /health needs no token and answers to the loopback Host.
"""

import os
import sys
import urllib.request

url = f"http://127.0.0.1:{os.environ.get('CCROTATE_PORT', '8080')}/health"
try:
    with urllib.request.urlopen(url, timeout=4) as response:
        sys.exit(0 if response.status == 200 else 1)
except OSError as exc:
    print(f"unhealthy: {url}: {exc}", file=sys.stderr)
    sys.exit(1)
