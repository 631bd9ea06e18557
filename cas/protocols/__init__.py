"""Protocol front-ends: translate HTTP to Store calls and back, nothing more."""
