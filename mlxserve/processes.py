"""Whether a process is still there, asked alike everywhere."""

from __future__ import annotations

import os


def process_exists(pid: int) -> bool:
    """A process with this id exists (possibly another user's, possibly a zombie)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists; it is not ours to signal
    return True
