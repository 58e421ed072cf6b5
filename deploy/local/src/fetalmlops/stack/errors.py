"""The one error type of the local stack: its message tells the reader what to do next."""


class StackError(Exception):
    """A problem a developer can fix (a missing tool, a taken port, a component that won't start).

    The CLI prints only the message, so the message must say what happened and what to do.
    """
