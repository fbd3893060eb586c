"""The floor of one Python hop: a pass-through proxy in raw ASGI with a pooled aiohttp client.

It does what any proxy must (read the body, drop hop-by-hop headers, stream the answer
back chunk by chunk) and nothing else: no routing, accounts, failover or accounting.
Served like ccrotate (uvicorn, httptools, uvloop), it is the baseline ccrotate's costs
are compared with. Run: ``python benchmarks/minimal_proxy.py --upstream URL``.
"""

from __future__ import annotations

import aiohttp

HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"upgrade", b"te", b"trailer",
       b"proxy-connection", b"proxy-authenticate", b"proxy-authorization"}
DROP_IN = HOP | {b"host", b"content-length"}  # aiohttp sets both for the upstream
UPSTREAM = "http://127.0.0.1:9"
session: aiohttp.ClientSession | None = None


async def app(scope, receive, send):  # type: ignore[no-untyped-def]
    global session
    if scope["type"] == "lifespan":
        await receive()  # lifespan.startup
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                        auto_decompress=False)
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown
        await session.close()
        return await send({"type": "lifespan.shutdown.complete"})
    body, more = b"", True
    while more:
        message = await receive()
        body, more = body + message.get("body", b""), message.get("more_body", False)
    headers = [(k.decode(), v.decode()) for k, v in scope["headers"] if k not in DROP_IN]
    async with session.request(scope["method"], UPSTREAM + scope["path"],  # type: ignore[union-attr]
                               headers=headers, data=body) as resp:
        out = [(k.lower(), v) for k, v in resp.raw_headers if k.lower() not in HOP]
        await send({"type": "http.response.start", "status": resp.status, "headers": out})
        async for chunk in resp.content.iter_any():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


if __name__ == "__main__":
    import sys

    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    from _serve import main

    def configure(upstream: str) -> object:
        global UPSTREAM
        UPSTREAM = upstream.rstrip("/")
        return app

    main(configure)
