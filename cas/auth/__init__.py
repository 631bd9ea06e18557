"""Users, credentials and request authentication shared by every protocol."""
