"""The ``flags`` subcommands, one module per area; each imports only what it needs."""
