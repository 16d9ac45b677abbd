"""Pure policy code: functions of state plus an injected clock. Imports no server code, so the
simulator in eval/ and the live server make the very same decisions."""

from typing import Callable

Clock = Callable[[], float]
