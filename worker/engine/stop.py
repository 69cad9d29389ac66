"""Raised between two steps (or inside a long method hook) when the job must stop now."""


class Stopped(Exception):
    """The run was cancelled; nothing more was saved."""
