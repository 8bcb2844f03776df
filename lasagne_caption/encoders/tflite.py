"""Read a TensorFlow Lite ``.tflite`` flatbuffer into plain numpy arrays.

The parsing is done by the maintained ``tflite`` package (the generated
flatbuffers bindings of the TFLite schema, PyPI ``tflite==2.18.0`` with
``flatbuffers``); this module turns its objects into a small, easy to walk
structure:

* :class:`Tensor` -- name, shape, dtype, raw data (if constant) and
  quantisation (``scale``, ``zero_point``, ``quantized_dimension``);
* :class:`Operator` -- builtin op name, input/output tensor indices and the
  builtin options as a dict (padding, strides, fused activation, ...);
* :class:`TFLiteModel` -- tensors, operators (in execution order), graph
  inputs/outputs, plus :meth:`TFLiteModel.dequantize` that gives float32
  weights from int8/uint8/int32 tensors (per-tensor or per-channel).

Every problem with the file is a :class:`~lasagne_caption.errors.UserError`
with a one-line message naming the file.
"""
import os

import numpy as np

from ..errors import UserError

__all__ = ["Tensor", "Operator", "TFLiteModel", "load_tflite", "dequantize"]

_TFLITE_MAGIC = b"TFL3"

# TensorType enum of the schema -> numpy dtype (only those a model may hold).
_DTYPES = {
    0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64,
    6: np.bool_, 7: np.int16, 9: np.int8, 10: np.float64, 12: np.uint64,
    15: np.uint32, 16: np.uint16,
}

_PADDING = {0: "SAME", 1: "VALID"}
_ACTIVATION = {0: None, 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH",
               5: "SIGN_BIT", 6: "SIGMOID"}


class Tensor(object):
    """One tensor of the graph: metadata, constant data and quantisation."""

    def __init__(self, index, name, shape, dtype, data, scale, zero_point,
                 quantized_dimension):
        self.index = index
        self.name = name
        self.shape = tuple(int(s) for s in shape)
        self.dtype = dtype
        self.data = data                  # numpy array of ``dtype`` or None
        self.scale = scale                # float32 array or None
        self.zero_point = zero_point      # int64 array or None
        self.quantized_dimension = quantized_dimension

    @property
    def is_constant(self):
        return self.data is not None

    @property
    def is_quantized(self):
        return self.scale is not None and self.scale.size > 0

    @property
    def scope(self):
        """First name of a fused tensor name (TFLite joins names with ';')."""
        return self.name.split(";")[0]

    def __repr__(self):
        q = ""
        if self.is_quantized:
            q = " scale=%s zp=%s" % (
                self.scale[0] if self.scale.size == 1 else "[%d]" % self.scale.size,
                self.zero_point[0] if self.zero_point.size == 1 else "[...]")
        return "<Tensor %d %s %s %s%s%s>" % (
            self.index, self.name, self.shape, np.dtype(self.dtype).name,
            " const" if self.is_constant else "", q)


class Operator(object):
    """One operator: ``op`` (e.g. ``"CONV_2D"``), tensor indices and options."""

    def __init__(self, index, op, inputs, outputs, options):
        self.index = index
        self.op = op
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.options = options

    def __repr__(self):
        return "<Operator %d %s in=%s out=%s %s>" % (
            self.index, self.op, self.inputs, self.outputs, self.options)


def dequantize(tensor):
    """float32 values of a constant quantised tensor: ``scale * (q - zero_point)``.

    Per-channel quantisation (``scale`` with one entry per slice along
    ``quantized_dimension``) is broadcast along that axis. A float tensor is
    returned as float32; a non-constant tensor raises ``ValueError``.
    """
    if tensor.data is None:
        raise ValueError("tensor %r has no constant data" % tensor.name)
    data = tensor.data
    if not tensor.is_quantized or np.issubdtype(data.dtype, np.floating):
        return data.astype(np.float32)
    scale = tensor.scale.astype(np.float64)
    zero_point = (tensor.zero_point if tensor.zero_point is not None
                  and tensor.zero_point.size else np.zeros(1, np.int64))
    zero_point = zero_point.astype(np.float64)
    values = data.astype(np.float64)
    if scale.size > 1:
        axis = tensor.quantized_dimension
        bshape = [1] * values.ndim
        bshape[axis] = scale.size
        scale = scale.reshape(bshape)
        if zero_point.size > 1:
            zero_point = zero_point.reshape(bshape)
    return (scale * (values - zero_point)).astype(np.float32)


class TFLiteModel(object):
    """A parsed ``.tflite`` file (first subgraph)."""

    def __init__(self, path, tensors, operators, inputs, outputs, version,
                 description):
        self.path = path
        self.tensors = tensors
        self.operators = operators
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.version = version
        self.description = description
        self._by_name = {t.name: t for t in tensors}

    def tensor(self, name_or_index):
        """A tensor by index or by exact name (``KeyError`` if absent)."""
        if isinstance(name_or_index, (int, np.integer)):
            return self.tensors[int(name_or_index)]
        return self._by_name[name_or_index]

    def dequantize(self, name_or_index):
        return dequantize(self.tensor(name_or_index))

    def producers(self):
        """dict: tensor index -> the operator that writes it."""
        return {o: op for op in self.operators for o in op.outputs}

    def consumers(self):
        """dict: tensor index -> list of operators that read it."""
        out = {}
        for op in self.operators:
            for i in op.inputs:
                if i >= 0:
                    out.setdefault(i, []).append(op)
        return out

    def summary(self):
        """Multi-line text: one line per operator (for debugging)."""
        lines = []
        for op in self.operators:
            ins = ", ".join(self.tensors[i].scope if i >= 0 else "-" for i in op.inputs)
            outs = ", ".join(self.tensors[i].scope for i in op.outputs)
            lines.append("%3d %-18s %s -> %s" % (op.index, op.op, ins, outs))
        return "\n".join(lines)


def _import_tflite(path):
    try:
        import tflite  # noqa: F401
    except ImportError as exc:  # pragma: no cover - install problem
        raise UserError("cannot read %s: the 'tflite' package is missing (%s); run: "
                        "pip install tflite==2.18.0 flatbuffers" % (path, exc))
    return tflite


def _options_dict(tfl, op):
    """The builtin options of ``op`` as a plain dict (only the ops we know)."""
    opt_type = op.BuiltinOptionsType()
    table = op.BuiltinOptions()
    if table is None:
        return {}
    opts = {}
    bo = tfl.BuiltinOptions
    if opt_type == bo.Conv2DOptions:
        o = tfl.Conv2DOptions()
        o.Init(table.Bytes, table.Pos)
        opts = dict(padding=_PADDING.get(o.Padding()), stride=(o.StrideH(), o.StrideW()),
                    dilation=(o.DilationHFactor(), o.DilationWFactor()),
                    activation=_ACTIVATION.get(o.FusedActivationFunction()))
    elif opt_type == bo.DepthwiseConv2DOptions:
        o = tfl.DepthwiseConv2DOptions()
        o.Init(table.Bytes, table.Pos)
        opts = dict(padding=_PADDING.get(o.Padding()), stride=(o.StrideH(), o.StrideW()),
                    dilation=(o.DilationHFactor(), o.DilationWFactor()),
                    depth_multiplier=o.DepthMultiplier(),
                    activation=_ACTIVATION.get(o.FusedActivationFunction()))
    elif opt_type == bo.Pool2DOptions:
        o = tfl.Pool2DOptions()
        o.Init(table.Bytes, table.Pos)
        opts = dict(padding=_PADDING.get(o.Padding()), stride=(o.StrideH(), o.StrideW()),
                    filter=(o.FilterHeight(), o.FilterWidth()),
                    activation=_ACTIVATION.get(o.FusedActivationFunction()))
    elif opt_type == bo.AddOptions:
        o = tfl.AddOptions()
        o.Init(table.Bytes, table.Pos)
        opts = dict(activation=_ACTIVATION.get(o.FusedActivationFunction()))
    elif opt_type == bo.FullyConnectedOptions:
        o = tfl.FullyConnectedOptions()
        o.Init(table.Bytes, table.Pos)
        opts = dict(activation=_ACTIVATION.get(o.FusedActivationFunction()))
    elif opt_type == bo.SoftmaxOptions:
        o = tfl.SoftmaxOptions()
        o.Init(table.Bytes, table.Pos)
        opts = dict(beta=o.Beta())
    elif opt_type == bo.ReshapeOptions:
        o = tfl.ReshapeOptions()
        o.Init(table.Bytes, table.Pos)
        opts = dict(new_shape=tuple(o.NewShapeAsNumpy()) if o.NewShapeLength() else None)
    return opts


def _op_names(tfl):
    return {v: k for k, v in vars(tfl.BuiltinOperator).items()
            if not k.startswith("_") and isinstance(v, int)}


def load_tflite(path):
    """Parse ``path`` and return a :class:`TFLiteModel`.

    Raises :class:`UserError` when the file is missing, unreadable, not a
    TFLite flatbuffer or damaged.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise UserError("model file %s does not exist" % path)
    if os.path.isdir(path):
        raise UserError("model file %s is a folder, not a .tflite file" % path)
    try:
        with open(path, "rb") as f:
            buf = f.read()
    except OSError as exc:
        raise UserError("cannot read model file %s: %s" % (path, exc.strerror or exc))
    if len(buf) < 8 or buf[4:8] != _TFLITE_MAGIC:
        raise UserError("%s is not a TensorFlow Lite model (no 'TFL3' flatbuffer "
                        "identifier)" % path)
    tfl = _import_tflite(path)
    try:
        return _parse(tfl, path, buf)
    except UserError:
        raise
    except Exception as exc:  # damaged flatbuffer: offsets out of range etc.
        raise UserError("%s is a damaged TensorFlow Lite model (%s: %s)"
                        % (path, type(exc).__name__, str(exc).splitlines()[0] if str(exc) else ""))


def _parse(tfl, path, buf):
    model = tfl.Model.GetRootAsModel(buf, 0)
    if model.SubgraphsLength() < 1:
        raise UserError("%s is a TensorFlow Lite model without a graph" % path)
    graph = model.Subgraphs(0)
    op_names = _op_names(tfl)

    tensors = []
    for i in range(graph.TensorsLength()):
        t = graph.Tensors(i)
        dtype = _DTYPES.get(t.Type())
        shape = t.ShapeAsNumpy() if t.ShapeLength() else np.zeros(0, np.int32)
        data = None
        b = model.Buffers(t.Buffer()) if t.Buffer() < model.BuffersLength() else None
        if b is not None:
            raw = None
            if b.DataLength():
                raw = b.DataAsNumpy().tobytes()
            elif hasattr(b, "Offset") and b.Offset() > 1 and b.Size():
                raw = buf[b.Offset():b.Offset() + b.Size()]   # >2 GB layout
            if raw is not None:
                if dtype is None:
                    raise UserError("%s: tensor %r has an unsupported type %d"
                                    % (path, t.Name().decode(), t.Type()))
                data = np.frombuffer(raw, dtype=dtype)
                if data.size != int(np.prod(shape)):
                    raise UserError("%s: tensor %r holds %d values for shape %s"
                                    % (path, t.Name().decode(), data.size, tuple(shape)))
                data = data.reshape(tuple(int(s) for s in shape))
        scale = zero_point = None
        qdim = 0
        q = t.Quantization()
        if q is not None and q.ScaleLength():
            scale = q.ScaleAsNumpy().astype(np.float32)
            zero_point = (q.ZeroPointAsNumpy().astype(np.int64) if q.ZeroPointLength()
                          else np.zeros(scale.size, np.int64))
            qdim = q.QuantizedDimension()
        tensors.append(Tensor(i, t.Name().decode("utf-8", "replace"), shape, dtype,
                              data, scale, zero_point, qdim))

    operators = []
    for j in range(graph.OperatorsLength()):
        op = graph.Operators(j)
        code = model.OperatorCodes(op.OpcodeIndex())
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        name = op_names.get(builtin, "UNKNOWN_%d" % builtin)
        if name == "CUSTOM" and code.CustomCode():
            name = "CUSTOM:" + code.CustomCode().decode()
        operators.append(Operator(j, name, op.InputsAsNumpy(), op.OutputsAsNumpy(),
                                  _options_dict(tfl, op)))

    description = model.Description().decode("utf-8", "replace") if model.Description() else ""
    return TFLiteModel(path, tensors, operators, graph.InputsAsNumpy(),
                       graph.OutputsAsNumpy(), model.Version(), description)
