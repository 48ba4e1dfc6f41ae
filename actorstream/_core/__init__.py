"""The pure core of actorstream: decisions and data, no trio, no sockets."""
