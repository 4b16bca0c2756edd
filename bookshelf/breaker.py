"""A circuit breaker: once the database has stopped answering, fail at once instead of waiting."""

import threading
import time
from collections.abc import Callable


class Breaker:
    """Whether a request may wait for the database, given how the last waits went.

    A hung database (a partition, a stuck primary) answers nothing, so each request would wait
    out its whole timeout, and the requests queued behind those would each wait again: with all
    of waitress's threads waiting, the queue grows faster than it drains. So after a wait has
    timed out (`failed`), the breaker opens and `allow` says no for `retry_after` seconds, and
    those requests fail at once. Then one thread may try (a trial): if it gets an answer
    (`succeeded`) the breaker closes for everyone; if not, it stays open for another
    `retry_after`. A trial that reports nothing within `trial_timeout` lets another thread try.

    A timeout opens it only if nothing answered any wait since the timed-out one began: while
    other waits get answers, the database is alive and only that statement was stuck. Counting
    timeouts instead would not tell slow from hung (a few heavy queries time out together) and
    would keep a lone client waiting one more timeout per count when it really hangs; with no
    other traffic, an open breaker costs nobody anything until its next trial.

    Closed, it costs a clock read per call. Thread-safe.
    """

    def __init__(
        self,
        retry_after: float,
        trial_timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.retry_after = retry_after
        self.trial_timeout = trial_timeout
        self.clock = clock
        self._lock = threading.Lock()
        self._open = False
        self._next_trial = 0.0
        self._trial_thread: int | None = None
        self._answered_at = float("-inf")

    @property
    def closed(self) -> bool:
        return not self._open

    def allow(self) -> bool:
        """May this thread wait for the database now? At most one thread at a time while open."""
        if not self._open:
            return True
        with self._lock:
            if not self._open:
                return True
            now, thread = self.clock(), threading.get_ident()
            if thread == self._trial_thread and now < self._next_trial:
                return True  # the trial's own next wait (a ping, then its statement)
            if now < self._next_trial:
                return False
            self._trial_thread = thread
            self._next_trial = now + self.trial_timeout
            return True

    def succeeded(self) -> bool:
        """The database answered: close. True if this closed an open breaker."""
        self._answered_at = self.clock()
        if not self._open:
            return False
        with self._lock:
            was_open, self._open, self._trial_thread = self._open, False, None
        return was_open

    def failed(self, since: float) -> bool:
        """A wait begun at `since` (on `clock`) got no answer: open for `retry_after`, unless
        another wait has been answered since. True if this opened a closed breaker."""
        with self._lock:
            if self._answered_at > since:
                return False
            was_closed = not self._open
            self._open, self._trial_thread = True, None
            self._next_trial = self.clock() + self.retry_after
        return was_closed
