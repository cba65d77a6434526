"""Which model answered: recorded with every answer, shown in the TUI, the export and `ask --json`."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ModelInfo:
    name: str
    """general.name of the GGUF (or its file name)."""
    file: str
    """The GGUF file the weights came from."""
    quant: str
    """general.file_type as llama.cpp names it (Q4_K_M, ...), "" when the file does not say."""
    backend: str
    device: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> ModelInfo | None:
        """A stored record; None for answers saved before models were recorded (or a damaged one)."""
        if not isinstance(data, dict):
            return None
        return cls(**{name: str(data.get(name) or "") for name in cls.__dataclass_fields__})

    def title(self) -> str:
        """`name Q4_K_M`."""
        return f"{self.name} {self.quant}" if self.quant else self.name

    def label(self) -> str:
        """`name Q4_K_M · torch/cuda`: also what it ran on."""
        return f"{self.title()} · {self.backend}/{self.device}"
