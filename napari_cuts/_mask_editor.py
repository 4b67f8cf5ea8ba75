"""Mask editing with undo/redo, independent of Qt and napari.

:class:`MaskEditor` owns a ``uint8`` 0/1 mask of the image's shape (``(H, W)``
or ``(Z, H, W)``). Every edit works on one 2-D slice and is recorded as the
flat indices it changed with their old and new values, so undo/redo are exact
and cheap even for large stacks. The array is edited in place: hand
``editor.mask`` to a napari Labels layer and refresh the layer after each edit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Mode = Literal["replace", "add", "remove"]

#: Mode for a click with modifiers (napari reports e.g. ``{"Shift"}``).
MODIFIER_MODES: dict[str, Mode] = {"Shift": "add", "Alt": "remove"}


def mode_from_modifiers(modifiers) -> Mode:
    """``"add"`` for Shift, ``"remove"`` for Alt, ``"replace"`` otherwise."""
    names = {str(getattr(m, "name", m)) for m in (modifiers or ())}
    if "Alt" in names:
        return "remove"
    if "Shift" in names:
        return "add"
    return "replace"


@dataclass
class _Edit:
    z: int | None
    index: np.ndarray  # flat indices into the slice
    old: np.ndarray
    new: np.ndarray
    label: str


class MaskEditor:
    """A binary mask with slice-wise edits and an undo/redo history.

    Parameters
    ----------
    shape : tuple
        ``(H, W)`` or ``(Z, H, W)``.
    max_history : int
        Oldest edits are forgotten beyond this many.
    """

    def __init__(self, shape: tuple[int, ...], *, max_history: int = 200) -> None:
        if len(shape) not in (2, 3):
            raise ValueError(f"a mask is (H, W) or (Z, H, W), got shape {shape}.")
        self.mask = np.zeros(shape, dtype=np.uint8)
        self.max_history = max_history
        self._undo: list[_Edit] = []
        self._redo: list[_Edit] = []

    # ---------------------------------------------------------------- properties
    @property
    def is_stack(self) -> bool:
        return self.mask.ndim == 3

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    def _slice(self, z: int | None) -> np.ndarray:
        if self.is_stack:
            if z is None:
                raise ValueError("this mask is a stack: give the slice index z.")
            return self.mask[int(z)]
        return self.mask

    def area(self, z: int | None = None) -> int:
        """Pixels in the mask on slice ``z`` (the whole mask when ``z`` is ``None``)."""
        if z is None or not self.is_stack:
            return int(np.count_nonzero(self.mask))
        return int(np.count_nonzero(self.mask[int(z)]))

    # ---------------------------------------------------------------- editing
    def apply(self, region: np.ndarray, mode: Mode = "replace", z: int | None = None, label: str = "") -> bool:
        """Edit slice ``z`` with the boolean ``region``; return whether anything changed.

        ``replace``: the slice becomes ``region``; ``add``: union; ``remove``: difference.
        """
        target = self._slice(z)
        region = np.asarray(region, dtype=bool)
        if region.shape != target.shape:
            raise ValueError(f"region shape {region.shape} does not match the mask slice {target.shape}.")
        if mode == "replace":
            new = region.astype(np.uint8)
        elif mode == "add":
            new = target | region.astype(np.uint8)
        elif mode == "remove":
            new = target & ~region.astype(np.uint8) & np.uint8(1)
        else:
            raise ValueError(f"unknown mode {mode!r}; use 'replace', 'add' or 'remove'.")
        return self._commit(z, target, new, label or mode)

    def clear(self, z: int | None = None) -> bool:
        """Empty slice ``z`` (or the whole mask of a 2-D image)."""
        target = self._slice(z)
        return self._commit(z, target, np.zeros_like(target), "clear")

    def set_slice(self, values: np.ndarray, z: int | None = None, label: str = "set") -> bool:
        """Replace slice ``z`` with ``values`` (0/1) as one undoable edit."""
        target = self._slice(z)
        return self._commit(z, target, (np.asarray(values) > 0).astype(np.uint8), label)

    def _commit(self, z: int | None, target: np.ndarray, new: np.ndarray, label: str) -> bool:
        flat_old = target.reshape(-1)
        flat_new = new.reshape(-1)
        index = np.flatnonzero(flat_old != flat_new)
        if index.size == 0:
            return False
        edit = _Edit(z if self.is_stack else None, index, flat_old[index].copy(), flat_new[index].copy(), label)
        flat_old[index] = edit.new  # target is a view into self.mask
        self._undo.append(edit)
        if len(self._undo) > self.max_history:
            del self._undo[0]
        self._redo.clear()
        return True

    def undo(self) -> int | None:
        """Undo the last edit; return the slice it touched (``None`` for 2-D), or ``-1`` if none."""
        if not self._undo:
            return -1
        edit = self._undo.pop()
        self._slice(edit.z).reshape(-1)[edit.index] = edit.old
        self._redo.append(edit)
        return edit.z

    def redo(self) -> int | None:
        """Redo the last undone edit; return the slice it touched, or ``-1`` if none."""
        if not self._redo:
            return -1
        edit = self._redo.pop()
        self._slice(edit.z).reshape(-1)[edit.index] = edit.new
        self._undo.append(edit)
        return edit.z

    def reset(self, shape: tuple[int, ...] | None = None) -> None:
        """Empty the mask (optionally with a new shape) and forget the history."""
        self.mask = np.zeros(shape or self.mask.shape, dtype=np.uint8)
        self._undo.clear()
        self._redo.clear()
