"""Upstream transports (httptools, aiohttp, httpx, in-process ASGI) and providers.

A transport sends one request and hands back a streaming response; a provider
decides how an account is presented upstream. Imports ``_accounts`` and the base modules.
"""
