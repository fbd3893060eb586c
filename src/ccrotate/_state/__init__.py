"""Shared state: what several replicas of one pool must agree on, and where it lives.

``backend`` holds the :class:`StateBackend` protocol, its records and the in-memory
default; ``redis_backend`` the Redis one (``redis`` is imported only when it is used);
``sync`` keeps a local :class:`~ccrotate._pool.pool.AccountPool` in step with a shared
backend. Imports ``_pool``, ``_accounts`` and the base modules; never the request path.
"""
