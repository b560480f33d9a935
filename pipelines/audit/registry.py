"""Named plug-ins of one kind (identity judges, protocols, metric families), kept in registration order.

A leaf module: the audit's extension points (:func:`~guide_unlearn.pipelines.audit.register_judge`,
``register_protocol``, ``register_metric_family``, ``register_attack``) are thin wrappers over one of these."""

from __future__ import annotations

from typing import Generic, Iterator, Mapping, TypeVar

from guide_unlearn.errors import ConfigError

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """A read-only mapping name -> plug-in that plug-ins add themselves to.

    kind: what the plug-ins are, for messages ("identity judge", "audit protocol", ...).
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T, replace: bool = False) -> T:
        """Add ``item`` under ``name``; a name already taken is refused (ConfigError) unless ``replace``. -> item."""
        if not isinstance(name, str) or not name:
            raise ConfigError(f"a {self.kind} needs a non-empty name, got {name!r}")
        if name in self._items and not replace:
            raise ConfigError(f"a {self.kind} named {name!r} is already registered; choose another name (or pass "
                              "replace=True to replace it on purpose)")
        self._items[name] = item
        return item

    def unregister(self, name: str) -> None:
        """Remove the plug-in called ``name`` (KeyError when there is none)."""
        del self._items[name]

    def lookup(self, name: str) -> T:
        """The plug-in called ``name``; ConfigError listing the registered names when there is none."""
        if name not in self._items:
            raise ConfigError(f"unknown {self.kind} {name!r}; choose one of {', '.join(self._items) or '(none)'}")
        return self._items[name]

    def __getitem__(self, name: str) -> T:
        return self._items[name]

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._items)})"

