"""The S3-compatible API: ``make_app(store, settings)`` in ``app`` is the WSGI entry point."""
