"""Tests of the web UI, the JSON API, tokens, events, metrics and the container (issue 7)."""
