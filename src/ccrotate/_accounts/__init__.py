"""Accounts: the account model, the accounts file and its safe writes, OAuth and login.

Bottom of the domain layers: imports only ``ccrotate._exceptions`` and ``ccrotate._wire``.
"""
