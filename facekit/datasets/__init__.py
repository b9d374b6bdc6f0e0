"""facekit.datasets: readers (RecordIO, image folders), synthetic identities, verification
.bin files, transforms and the MindSpore data loader builder."""
from . import transforms  # noqa: F401  (fills TRANSFORMS)
from .synthetic import SyntheticIdentities  # noqa: F401
from .verification_bin import (UnsafeFileError, load_bin, make_verification_bin,  # noqa: F401
                               raw_pixel_floor, save_bin)
