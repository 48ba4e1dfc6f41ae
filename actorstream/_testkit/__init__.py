"""Helpers behind ``actorstream.testing`` (real Redis processes for tests)."""
