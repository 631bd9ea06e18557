"""The browser UI, the JSON admin API (/api/) and /metrics of the --http listener (see ``app``)."""
