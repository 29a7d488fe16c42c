"""`evalkit report` commands (see the module that implements them)."""
