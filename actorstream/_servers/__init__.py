"""Local ``redis-server`` processes: finding the binary, free ports, start, PING, stop, reap.

Shipped: ``actorstream demo`` starts one (``_embedded``), and the test kit builds its
``RedisServer``, clusters and workers on the same pieces.
"""
