"""The server's HTTP routes, one module per area of the protocol."""
