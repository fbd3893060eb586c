"""Token and accounts-file lifecycle: the refresher and the hot-reload watcher.

Imports ``_state``, ``_pool`` and ``_accounts``; the proxy reaches the refresher through a
protocol.
"""
