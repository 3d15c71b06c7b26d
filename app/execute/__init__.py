"""The executor: durable, resumable DAG execution of approved plans (see docs/executor.md).

``runner.Runner`` drives a run; ``scheduler``, ``retry``, ``saga``, ``refs``, ``budget`` and
``breaker`` are its pure parts (world injected); ``state`` and ``locks`` keep durable state in
SQLite; ``ports`` holds the Protocols it consumes (approval gate, runtime policy, events,
incidents); ``actions/`` are the action implementations behind the ``Action`` port.

Importing this package imports nothing: modules are imported where they are used, so the
``Action`` port (``actions.base``) stays free of the adapters' dependencies.
"""
