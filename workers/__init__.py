"""The runtime: Celery app, tasks, provider calls, producer, collector, embedded broker, CLI."""
