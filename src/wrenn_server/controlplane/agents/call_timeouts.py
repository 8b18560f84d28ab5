"""How long the control plane waits for an agent's answer to the capsule calls that change a
capsule's status, in one place: the calls wait this long, and the reconciler leaves a capsule
to a call under way (its row's time says when the call began) for as long as the call may still
answer, and not longer."""

from __future__ import annotations

import datetime as dt

# A pause: the capsule's checkpoint (the agent gives runsc checkpoint up to 300 s, sized for
# the largest memory image on a slow disk), then its teardown (up to 30 s for the disk's
# release). Waiting less would leave the caller with a timeout for a pause that still ends well.
PAUSE_TIMEOUT = 360.0
# A resume: the restore, then the agent's wait for the capsule's envd.
RESUME_TIMEOUT = 120.0
# A snapshot: a pause, then copies of the capsule's disk and memory image.
SNAPSHOT_TIMEOUT = 600.0
# The row's time is written just before the call and its outcome recorded just after.
_MARGIN = 30.0


def grace(timeout: float) -> dt.timedelta:
    """How long after its row's time a call that waits `timeout` seconds may still answer."""
    return dt.timedelta(seconds=timeout + _MARGIN)
