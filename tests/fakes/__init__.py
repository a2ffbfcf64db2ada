"""Fake model servers for the provider tests: each answers with the shapes its real server documents
(and records what it was sent), as an httpx transport or, through ``tests.loopback``, on a real
loopback socket. ``tests/test_provider_contract.py`` runs the Provider contract against every one."""
