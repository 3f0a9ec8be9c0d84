"""The `lsal` command line (entry point `cli.main:app`)."""
