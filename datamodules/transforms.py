"""Image transforms: one deterministic evaluation transform, and training augmentations per
domain (only for methods that train on images; cached features use the evaluation transform).

Sketches are sparse black strokes: crops must keep most of the drawing and colour jitter is
meaningless, so they get mild crop/flip/rotation. Photos get crop, flip and colour jitter.
"""

from __future__ import annotations

from collections.abc import Sequence

from torchvision import transforms as T

SKETCH = 0


def eval_transform(size: int, mean: Sequence[float], std: Sequence[float]) -> T.Compose:
    return T.Compose([T.Resize((size, size)), T.ToTensor(), T.Normalize(mean, std)])


def train_transform(
    domain: int, size: int, mean: Sequence[float], std: Sequence[float]
) -> T.Compose:
    if domain == SKETCH:
        aug = [
            T.RandomResizedCrop(size, scale=(0.8, 1.0), ratio=(0.9, 1.1)),
            T.RandomHorizontalFlip(),
            T.RandomRotation(10, fill=255),
        ]
    else:
        aug = [
            T.RandomResizedCrop(size, scale=(0.6, 1.0)),
            T.RandomHorizontalFlip(),
            T.ColorJitter(0.2, 0.2, 0.2),
        ]
    return T.Compose([*aug, T.ToTensor(), T.Normalize(mean, std)])
