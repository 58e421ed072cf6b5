"""The `fetalmlops` command."""
