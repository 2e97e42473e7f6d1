"""User settings persisted with QSettings (device, precision, caches, model folders, UI)."""
from __future__ import annotations

import os
from typing import Any

from PySide6.QtCore import QSettings, QStandardPaths
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QListWidget,
    QPushButton,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from engine.spec import EngineSettings

ORGANIZATION = "Kiln"
APPLICATION = "Kiln"
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
MAX_RECENT = 10
GIB = 1024**3


class AppSettings:
    """Typed access to a QSettings store. Tests pass their own (an ini file in a temp folder)."""

    def __init__(self, store: QSettings | None = None):
        self.store = store if store is not None else QSettings(ORGANIZATION, APPLICATION)

    def _get(self, key: str, default: Any, kind: type) -> Any:
        value = self.store.value(key, default)
        try:
            return kind(value) if value is not None else default
        except (TypeError, ValueError):
            return default

    def _folder(self) -> str:
        return os.path.dirname(self.store.fileName()) or QStandardPaths.writableLocation(
            QStandardPaths.StandardLocation.AppDataLocation)

    # --- engine ------------------------------------------------------------------------
    def engine_settings(self) -> EngineSettings:
        cache_dir = self._get("engine/cache_dir", "", str) or None
        return EngineSettings(
            device=self._get("engine/device", "auto", str),
            precision=self._get("engine/precision", "auto", str),
            output_dir=self._get("engine/output_dir", "", str) or self.default_output_dir(),
            model_dirs=tuple(self.model_dirs()),
            cache_dir=cache_dir,
            memory_cache_bytes=int(self._get("engine/memory_cache_gib", 2.0, float) * GIB),
            disk_cache_bytes=int(self._get("engine/disk_cache_gib", 4.0, float) * GIB),
            absolute_paths=self.flag_engine("absolute_paths"),
        )

    def flag_engine(self, name: str) -> bool:
        return self.store.value(f"engine/{name}", False) in (True, "true", "1", 1)

    def default_output_dir(self) -> str:
        pictures = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.PicturesLocation)
        return os.path.join(pictures or os.path.expanduser("~"), "Kiln")

    def model_dirs(self) -> list[str]:
        raw = self._get("engine/model_dirs", "", str)
        return [d for d in raw.split(os.pathsep) if d]

    def set_engine(self, **values: Any) -> None:
        for key, value in values.items():
            if key == "model_dirs":
                value = os.pathsep.join(value)
            self.store.setValue(f"engine/{key}", value)
        self.store.sync()

    # --- files ------------------------------------------------------------------------
    def recent_files(self) -> list[str]:
        raw = self.store.value("files/recent", [])
        items = [raw] if isinstance(raw, str) else list(raw or [])
        return [p for p in items if p]

    def add_recent(self, path: str) -> None:
        path = os.path.abspath(path)
        items = [path] + [p for p in self.recent_files() if p != path]
        self.store.setValue("files/recent", items[:MAX_RECENT])
        self.store.sync()

    def recovery_path(self) -> str:
        return os.path.join(self._folder(), "recovery", "autosave.kiln.json")

    def last_dir(self) -> str:
        return self._get("files/last_dir", os.path.expanduser("~"), str)

    def set_last_dir(self, path: str) -> None:
        self.store.setValue("files/last_dir", os.path.dirname(os.path.abspath(path)))

    # --- UI ---------------------------------------------------------------------------
    def flag(self, name: str, default: bool = False) -> bool:
        value = self.store.value(f"ui/{name}", default)
        return value in (True, "true", "1", 1)

    def set_flag(self, name: str, value: bool) -> None:
        self.store.setValue(f"ui/{name}", bool(value))

    def window_state(self) -> tuple[Any, Any]:
        return self.store.value("ui/geometry"), self.store.value("ui/state")

    def save_window_state(self, geometry: Any, state: Any) -> None:
        self.store.setValue("ui/geometry", geometry)
        self.store.setValue("ui/state", state)
        self.store.sync()


class SettingsDialog(QDialog):
    """Edit the engine settings; OK writes them to the store."""

    def __init__(self, settings: AppSettings, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Kiln settings")
        self.settings = settings
        current = settings.engine_settings()
        self.device = _combo(DEVICES, current.device)
        self.precision = _combo(PRECISIONS, current.precision)
        self.memory = _spin(current.memory_cache_bytes / GIB, 0, 256, " GiB")
        self.disk = _spin(current.disk_cache_bytes / GIB, 0, 4096, " GiB")
        self.cache_dir = _folder_field(self, current.cache_dir or "", "default user cache folder")
        self.output_dir = _folder_field(self, current.output_dir, "")
        self.absolute_paths = QCheckBox("Record absolute file paths in saved PNGs")
        self.absolute_paths.setToolTip("Off (private): paths relative to the graph's folder plus each file's sha256")
        self.absolute_paths.setChecked(current.absolute_paths)
        self.model_dirs = QListWidget()
        self.model_dirs.addItems(list(current.model_dirs))
        form = QFormLayout()
        form.addRow("Device", self.device)
        form.addRow("Precision", self.precision)
        form.addRow("Memory cache", self.memory)
        form.addRow("Disk cache", self.disk)
        form.addRow("Cache folder", self.cache_dir)
        form.addRow("Output folder", self.output_dir)
        form.addRow("Model folders", self._model_dirs_box())
        form.addRow("Privacy", self.absolute_paths)
        ok_cancel = QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        buttons = QDialogButtonBox(ok_cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(buttons)

    def _model_dirs_box(self) -> QWidget:
        box = QWidget()
        layout = QVBoxLayout(box)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.model_dirs)
        row = QHBoxLayout()
        add, remove = QPushButton("Add…"), QPushButton("Remove")
        add.clicked.connect(self._add_model_dir)
        remove.clicked.connect(lambda: self.model_dirs.takeItem(self.model_dirs.currentRow()))
        row.addWidget(add)
        row.addWidget(remove)
        row.addStretch(1)
        layout.addLayout(row)
        return box

    def _add_model_dir(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Model folder")
        if folder:
            self.model_dirs.addItem(folder)

    def accept(self) -> None:
        self.settings.set_engine(
            device=self.device.currentText(), precision=self.precision.currentText(),
            memory_cache_gib=float(self.memory.value()), disk_cache_gib=float(self.disk.value()),
            cache_dir=self.cache_dir.findChild(QLineEdit).text().strip(),
            output_dir=self.output_dir.findChild(QLineEdit).text().strip(),
            model_dirs=[self.model_dirs.item(i).text() for i in range(self.model_dirs.count())],
            absolute_paths=self.absolute_paths.isChecked())
        super().accept()


def _combo(options: tuple[str, ...], current: str) -> QComboBox:
    combo = QComboBox()
    combo.addItems(list(options))
    combo.setEditable(True)  # cuda:1 and the like
    combo.setCurrentText(current)
    return combo


def _spin(value: float, lo: float, hi: float, suffix: str) -> QDoubleSpinBox:
    spin = QDoubleSpinBox()
    spin.setDecimals(1)
    spin.setSingleStep(0.5)
    spin.setRange(lo, hi)
    spin.setSuffix(suffix)
    spin.setValue(value)
    return spin


def _folder_field(parent: QWidget, value: str, placeholder: str) -> QWidget:
    box = QWidget(parent)
    row = QHBoxLayout(box)
    row.setContentsMargins(0, 0, 0, 0)
    edit = QLineEdit(value)
    edit.setPlaceholderText(placeholder)
    browse = QToolButton(text="…")
    browse.setToolTip("Choose a folder")

    def choose() -> None:
        folder = QFileDialog.getExistingDirectory(parent, "Folder", edit.text())
        if folder:
            edit.setText(folder)

    browse.clicked.connect(choose)
    row.addWidget(edit, 1)
    row.addWidget(browse)
    return box
