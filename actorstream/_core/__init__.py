"""The pure core: decisions without trio, sockets or the transport (tested without Redis)."""
