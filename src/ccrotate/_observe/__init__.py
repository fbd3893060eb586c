"""Observability and control: metrics, access log and stores, status API, health, dashboard.

Observes the proxy through ``RequestRecord`` and reads the pool; imports nothing above ``_proxy``.
"""
