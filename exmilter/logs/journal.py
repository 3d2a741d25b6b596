"""Whether stderr is systemd's journal, and the ``<N>`` priority prefix journald reads.

Twisted-free: the Twisted daemon's observer, the milter and the one-shot commands (``exmilter
check`` as a unit's ``ExecReload=``) all use it, so ``journalctl -p err`` selects their errors.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

#: syslog priorities journald reads from a ``<N>`` line prefix (sd-daemon(3)).
ERR = 3
WARNING = 4


def journal_attached(environ: Mapping[str, str] | None = None, fd: int = 2) -> bool:
    """``fd`` (stderr) is the journal: systemd sets ``JOURNAL_STREAM=<device>:<inode>`` of the
    stream it connected, and a child whose stderr was redirected elsewhere (the sandbox's log
    file) inherits the variable but not the stream (systemd.exec(5), ``$JOURNAL_STREAM``)."""
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    if not (dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat(fd)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


def prefixed(line: str, priority: int, attached: bool) -> str:
    """``line`` with journald's ``<priority>`` prefix when stderr is the journal."""
    return f"<{priority}>{line}" if attached else line
