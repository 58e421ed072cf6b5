"""``python -m fetalmlops.stack``: the stack CLI without the umbrella `fetalmlops` command."""

from fetalmlops.stack.cli import app

app(prog_name="fetalmlops-stack")
