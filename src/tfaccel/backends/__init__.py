"""Backends: a support query for placement and a compiler for subgraphs, behind one protocol.

The contract (the protocol, what a backend is given and what it answers) is :mod:`tfaccel.backends.base`;
this package's ``__init__`` is only the registry keyed by name, which keeps the rest of tfaccel free of
backend-specific imports. Each backend's module is imported when the backend is first made, so that
``import tfaccel`` stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from tfaccel.errors import OptionsError

if TYPE_CHECKING:  # the registry itself imports no backend (nor TensorFlow): each is made on first use
    from tfaccel.backends.base import Backend, BackendSettings

__all__ = ["AUTO_ORDER", "available_backends", "candidate_backends", "get_backend", "resolve_auto"]


def _make_xla(settings: BackendSettings | None) -> Backend:
    from tfaccel.backends.xla import XlaBackend

    return XlaBackend(settings)


def _make_openvino(settings: BackendSettings | None) -> Backend:
    from tfaccel.backends.openvino import OpenVinoBackend

    return OpenVinoBackend(settings)


#: name -> factory(settings); None means the defaults (:class:`~tfaccel.backends.base.BackendSettings`)
_FACTORIES: dict[str, Callable[[BackendSettings | None], Backend]] = {
    "openvino": _make_openvino,
    "xla": _make_xla,
}

#: ``--backend=auto`` (the default): the first of these that is available
AUTO_ORDER = ("openvino", "xla")


def available_backends() -> tuple[str, ...]:
    return tuple(sorted(_FACTORIES))


def resolve_auto() -> tuple[str, str | None]:
    """What ``--backend=auto`` means here: ``openvino`` when its op library loads, else ``xla`` and why."""
    from tfaccel import native

    library = native.load()
    if library.available:
        return "openvino", None
    return "xla", f"the openvino backend is unavailable ({library.error}); using xla"


def get_backend(name: str, settings: BackendSettings | None = None) -> Backend:
    """The backend called ``name``; an unknown name is an :class:`OptionsError` listing the known ones."""
    if name not in _FACTORIES:
        raise OptionsError(
            f"unknown backend {name!r}; available backends: auto, {', '.join(available_backends())}"
        )
    return _FACTORIES[name](settings)


def candidate_backends(name: str, settings: BackendSettings | None = None) -> tuple[list[Backend], list[str]]:
    """The backends one trace may use, in order of preference, and sentences on what was left out.

    ``auto`` means every available backend (openvino first, then xla): static placement gives each node
    to the first one that takes it, profiled placement times each subgraph on each. A named backend is
    the only candidate. With ``--fp32-cast`` only the first available backend is a candidate: openvino
    casts inside its compiler while xla needs the captured graph rewritten, and one capture cannot serve
    both.
    """
    fp32_cast = "none" if settings is None else settings.fp32_cast
    if name != "auto":
        backend = get_backend(name, settings)
        return [backend], list(backend.notes)
    names = list(AUTO_ORDER)
    notes: list[str] = []
    first, why_not = resolve_auto()
    if why_not:
        notes.append(why_not)
        names = [first]
    elif fp32_cast != "none" and len(names) > 1:
        notes.append(
            f"--fp32-cast={fp32_cast}: only {names[0]} is a candidate backend ({names[0]} casts in its "
            f"compiler, {', '.join(names[1:])} would need a differently captured graph)"
        )
        names = names[:1]
    backends = [get_backend(n, settings) for n in names]
    return backends, [*notes, *(note for b in backends for note in b.notes)]
