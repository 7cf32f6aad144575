from campfire.common.v1 import tensor_pb2 as _tensor_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DataKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DATA_KIND_UNSPECIFIED: _ClassVar[DataKind]
    DATA_KIND_WEIGHTS: _ClassVar[DataKind]
    DATA_KIND_WEIGHT_DIFF: _ClassVar[DataKind]
    DATA_KIND_METRICS: _ClassVar[DataKind]
    DATA_KIND_COLLECTION: _ClassVar[DataKind]
    DATA_KIND_APP_DEFINED: _ClassVar[DataKind]
    DATA_KIND_FL_MODEL: _ClassVar[DataKind]
    DATA_KIND_ANALYTIC: _ClassVar[DataKind]
    DATA_KIND_STATISTICS: _ClassVar[DataKind]
DATA_KIND_UNSPECIFIED: DataKind
DATA_KIND_WEIGHTS: DataKind
DATA_KIND_WEIGHT_DIFF: DataKind
DATA_KIND_METRICS: DataKind
DATA_KIND_COLLECTION: DataKind
DATA_KIND_APP_DEFINED: DataKind
DATA_KIND_FL_MODEL: DataKind
DATA_KIND_ANALYTIC: DataKind
DATA_KIND_STATISTICS: DataKind

class DataExchange(_message.Message):
    __slots__ = ("kind", "tensors", "values", "meta")
    KIND_FIELD_NUMBER: _ClassVar[int]
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    META_FIELD_NUMBER: _ClassVar[int]
    kind: DataKind
    tensors: _containers.RepeatedCompositeFieldContainer[_tensor_pb2.Tensor]
    values: _struct_pb2.Struct
    meta: _struct_pb2.Struct
    def __init__(self, kind: _Optional[_Union[DataKind, str]] = ..., tensors: _Optional[_Iterable[_Union[_tensor_pb2.Tensor, _Mapping]]] = ..., values: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., meta: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...
