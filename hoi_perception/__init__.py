"""hoi_perception: 3D hand and object pose from a camera (runtime package)."""

import sys as _sys
from pathlib import Path as _Path


def _add_generated_interfaces() -> None:
    """Let a source checkout first on ``sys.path`` find the messages colcon generated.

    ``colcon build`` generates ``hoi_perception.msg`` (and its typesupport libraries) into
    the installed copy of this package. When the source tree comes first on the path
    (``colcon test``, ``python3 -m pytest`` from the repository root) it would hide them:
    the installed folders that hold ``msg/`` are appended to this package's search path.
    """
    here = _Path(__file__).resolve().parent
    for entry in _sys.path:
        candidate = _Path(entry or ".").resolve() / __name__
        if candidate != here and (candidate / "msg" / "__init__.py").is_file() and str(candidate) not in __path__:
            __path__.append(str(candidate))


_add_generated_interfaces()
