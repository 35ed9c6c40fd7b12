"""The two small objects of onnxruntime's session API that ``Classifier`` reads, for the sessions
of the other engines (``litert.LiteRTSession``, ``openvino_engine.OpenVINOSession``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class NodeArg:
    """onnxruntime's ``NodeArg``: a name, a shape (None where dynamic), a type ("tensor(uint8)")."""

    name: str
    shape: Sequence[int | None]
    type: str

    def __post_init__(self) -> None:
        self.shape = list(self.shape)


@dataclass
class ModelMeta:
    """onnxruntime's ``ModelMetadata`` as far as edgeclf reads it."""

    custom_metadata_map: dict[str, str] = field(default_factory=dict)
