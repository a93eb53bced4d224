"""Running a check as a user who is not root: root reads any file whatever its mode, and the suite usually runs as
root, so a forked child drops to 'nobody' and reports back. (A plain module, not conftest: another folder's
conftest.py may be the one `import conftest` finds.)"""

from __future__ import annotations

import os
from typing import Callable

NOBODY = 65534


def outcome_as_nobody(call: Callable[[], object]) -> str:
    """The message of the exception call() raises ("ok" when none) for a user who is not root: root reads any file
    whatever its mode, and the suite usually runs as root, so a forked child drops to 'nobody' and reports back."""
    def outcome() -> str:
        try:
            call()
        except Exception as exc:  # noqa: BLE001 -- the caller compares the message
            return str(exc)
        return "ok"

    if os.geteuid() != 0:
        return outcome()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child never returns into pytest
        try:
            os.close(read_end)
            os.setegid(NOBODY)
            os.seteuid(NOBODY)
            os.write(write_end, outcome().encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        message = pipe.read().decode()
    os.waitpid(pid, 0)
    return message
