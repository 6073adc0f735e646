"""Dataset intake: detect the layout, validate, profile, split and decode (cached) a folder of images.

    ds = load_dataset(path, describe=None)
    split = ds.split(seed=0)                   # indices into ds.items
    images = ds.decode()                       # uint8 (N, H, W, C), cached by fingerprint
    info = data_info(ds, images, split.train)  # DataInfo for generated code
"""

from automodel.intake.dataset import Dataset, ImageItem, load_dataset
from automodel.intake.decode import DecodedImages
from automodel.intake.info import data_info
from automodel.intake.splits import Split

__all__ = ["Dataset", "DecodedImages", "ImageItem", "Split", "data_info", "load_dataset"]
