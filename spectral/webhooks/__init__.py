"""Webhooks: subscriptions, a durable outbox, signed deliveries with retries.

Modules: ``store`` (tables), ``signing``, ``guard`` (SSRF), ``schedule`` (retries),
``payload`` (filters, body), ``outbox``, ``delivery``, ``service`` (wires them up).
Nothing is imported here, so that ``spectral.settings`` can use ``schedule``.
"""
