"""Provider callbacks: inbound integrations that drive tasks from a provider's webhooks.

Modules: ``paths`` (dotted paths into a payload), ``verify`` (signatures), ``mapping``
(a verified payload → what to do to which task), pure all three; ``store`` (the
registry tables: integrations and processed deliveries); ``service`` (the glue that
applies a delivery through the task operations). Nothing is imported here.
"""
