"""Training data: one sample schema, dataset loaders, unlabelled frame sources, augmentation.

* :mod:`.sample` - :class:`HandObjectSample` (every loader's output; metres, OpenCV
  camera frame, HO-3D joint order, flat-mean MANO) and :func:`collate_samples`;
* :mod:`.ho3d` - HO-3D v2/v3 (OpenGL labels converted to OpenCV);
* :mod:`.dexycb` - DexYCB with the toolkit's s0-s3 splits (PCA hand poses to axis-angle);
* :mod:`.synthetic` - datasets written by ``hoi-train synth``;
* :mod:`.frames` - unlabelled video files, Something-Something v2 + Something-Else boxes, ROS 2 bags;
* :mod:`.augment` - SHO/HFL crops and jitter with labels kept consistent in 2D and 3D.
"""

from hoi_perception.synth.sequence_files import DatasetFormatError
from hoi_training.data.augment import AugmentConfig, Augmenter, CropTransform, augment_sample, evaluation_crop
from hoi_training.data.dexycb import DexYCBConfig, DexYCBDataset
from hoi_training.data.frames import Frame, LabelledBox, RosBagFrameSource, SomethingElseFrameSource, VideoFrameSource
from hoi_training.data.ho3d import HO3DConfig, HO3DDataset
from hoi_training.data.sample import HandObjectSample, SampleError, collate_samples
from hoi_training.data.synthetic import SyntheticConfig, SyntheticDataset

__all__ = [
    "AugmentConfig",
    "Augmenter",
    "CropTransform",
    "DatasetFormatError",
    "DexYCBConfig",
    "DexYCBDataset",
    "Frame",
    "HO3DConfig",
    "HO3DDataset",
    "HandObjectSample",
    "LabelledBox",
    "RosBagFrameSource",
    "SampleError",
    "SomethingElseFrameSource",
    "SyntheticConfig",
    "SyntheticDataset",
    "VideoFrameSource",
    "augment_sample",
    "collate_samples",
    "evaluation_crop",
]
