"""MobileNetV2 1.0/224 in plain PyTorch float32, with the toolkit's weights: the encoder's peer.

Only for ``benchmarks/encode_throughput.py`` (torch is the optional ``bench``
extra, never a toolkit dependency). The weights are those the toolkit reads,
:func:`lasagne_caption.encoders.mobilenet_v2.read_tflite_weights` (the int8
``.tflite`` dequantised to float32; batch norm is already folded into them),
in the same layers as :func:`lasagne_caption.encoders.mobilenet_v2.build_model`:
TensorFlow ``SAME`` padding (one more row/column at the bottom/right for a
stride-2 layer on an even size), ReLU6, residual sums, average pool, the 1x1
logits layer. Plain float math: no fake quantisation (the toolkit's
``fake_quant=False``).

    >>> from benchmarks.torch_mobilenet_v2 import TorchMobileNetV2   # doctest: +SKIP
    >>> net = TorchMobileNetV2.from_tflite("mobilenet_v2_1.0_224_quant.tflite")  # doctest: +SKIP
    >>> logits, pool = net.encode(uint8_images_nhwc)                 # doctest: +SKIP
"""
import numpy as np
import torch
import torch.nn.functional as F


def _same_pads(size, kernel, stride):
    """(before, after) of TensorFlow SAME padding (as lasagne_caption's tf_same_padding)."""
    out = (size + stride - 1) // stride
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class TorchMobileNetV2(torch.nn.Module):
    """The network of ``build_model`` in PyTorch; ``forward`` takes float NCHW 0..255.

    ``params``, ``input_quant``: :func:`read_tflite_weights`'s first and
    third results. ``channels_last=True`` keeps activations NHWC in memory
    (``torch.channels_last``), which PyTorch's CPU convolutions may prefer.
    """

    def __init__(self, params, input_quant, channels_last=False):
        super(TorchMobileNetV2, self).__init__()
        from lasagne_caption.encoders.mobilenet_v2 import _block_names
        self.channels_last = bool(channels_last)
        self.input_scale, self.input_shift = (float(v) for v in input_quant)
        self.names = {}
        self._weights = torch.nn.ParameterDict()
        for scope, (w, b) in params.items():
            key = scope.replace("/", "__")
            self.names[scope] = key
            w = torch.from_numpy(np.ascontiguousarray(w, np.float32))
            if scope == "Logits/Conv2d_1c_1x1":            # (1280, 1001) dense -> (1001, 1280)
                w = w.t().contiguous()
            self._weights[key + "__W"] = torch.nn.Parameter(w, requires_grad=False)
            self._weights[key + "__b"] = torch.nn.Parameter(
                torch.from_numpy(np.asarray(b, np.float32)), requires_grad=False)
        self.blocks = _block_names()
        if self.channels_last:
            for p in self._weights.values():
                if p.dim() == 4:
                    p.data = p.data.contiguous(memory_format=torch.channels_last)

    @classmethod
    def from_tflite(cls, path, channels_last=False):
        from lasagne_caption.encoders.mobilenet_v2 import read_tflite_weights
        params, _, input_quant = read_tflite_weights(path)
        return cls(params, input_quant, channels_last=channels_last)

    def _wb(self, scope):
        key = self.names[scope]
        return self._weights[key + "__W"], self._weights[key + "__b"]

    def _conv(self, x, scope, stride=1, groups=1, act=True):
        w, b = self._wb(scope)
        k = w.shape[-1]
        if k > 1:
            t, bo = _same_pads(x.shape[2], k, stride)
            l, r = _same_pads(x.shape[3], k, stride)
            if t == bo and l == r:
                y = F.conv2d(x, w, b, stride=stride, padding=(t, l), groups=groups)
            else:
                y = F.conv2d(F.pad(x, (l, r, t, bo)), w, b, stride=stride, groups=groups)
        else:
            y = F.conv2d(x, w, b, stride=stride, groups=groups)
        return F.hardtanh(y, 0.0, 6.0) if act else y

    def forward(self, x):
        """``(logits (N, 1001), pool (N, 1280))`` of float32 NCHW images with values 0..255."""
        x = (x - self.input_shift) * self.input_scale
        x = self._conv(x, "Conv", stride=2)
        for scope, t, in_ch, out_ch, stride, residual in self.blocks:
            inp = x
            if t != 1:
                x = self._conv(x, scope + "/expand")
            x = self._conv(x, scope + "/depthwise", stride=stride, groups=x.shape[1])
            x = self._conv(x, scope + "/project", act=False)
            if residual:
                x = x + inp
        x = self._conv(x, "Conv_1")
        pool = x.mean(dim=(2, 3))
        w, b = self._wb("Logits/Conv2d_1c_1x1")
        return F.linear(pool, w, b), pool

    def encode(self, images):
        """``(logits, pool)`` numpy float32 of uint8 RGB images ``(N, 224, 224, 3)``."""
        with torch.inference_mode():
            x = torch.from_numpy(np.asarray(images, np.uint8)).permute(0, 3, 1, 2).float()
            x = x.contiguous(memory_format=torch.channels_last if self.channels_last
                             else torch.contiguous_format)
            logits, pool = self(x)
            return logits.numpy(), pool.numpy()
