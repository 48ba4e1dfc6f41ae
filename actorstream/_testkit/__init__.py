"""Test helpers behind ``actorstream.testing`` (public there): real servers and workers."""
