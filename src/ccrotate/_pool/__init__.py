"""The pool: account states, the transition function, selection strategies and quota.

Imports ``_accounts`` and the base modules; never the request path above it.
"""
