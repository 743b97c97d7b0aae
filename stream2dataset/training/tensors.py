"""Images between the loader and the models: uint8 from Ray Data, float in [-1, 1] for the
networks, and back to uint8 NHWC for PNG grids and video."""

from __future__ import annotations

import numpy as np
import torch


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 (any layout) to float in [-1, 1], on the tensor's device."""
    return x.float().div_(127.5).sub_(1.0)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """NHWC uint8 images from [N, 3, H, W] tensors in [-1, 1] (any dtype or device)."""
    x = (images.detach().float().clamp(-1, 1) + 1) * 127.5
    return x.round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def random_flip(x: torch.Tensor) -> torch.Tensor:
    """Mirror half the items left-right (all frames of a window alike), on the batch's device."""
    mask = torch.rand(x.shape[0], device=x.device) < 0.5
    return torch.where(mask.view(-1, *[1] * (x.dim() - 1)), x.flip(-1), x)
