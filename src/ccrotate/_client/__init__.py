"""Client-side rotation: ``httpx2`` transports that rotate an :class:`~ccrotate.AccountPool`.

For notebooks and batch jobs that call the Anthropic SDK directly, with no ccrotate
server in between. The failover loop, the error taxonomy and the providers are the
proxy's own (``ccrotate._proxy.attempts``); this package only adapts ``httpx2`` to them.
"""
