"""The request path: the ASGI app and middleware, one attempt loop, one relay, dialects.

Imports ``_upstream``, ``_tokens`` (protocols), ``_state``, ``_pool``, ``_accounts`` and the
base modules.
"""
