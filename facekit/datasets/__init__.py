"""facekit.datasets: the dataset contract (BaseFaceDataset), readers (RecordIO, image folders,
MindRecord, the IJB-B/C release), face alignment, synthetic identities, verification .bin files,
decoding/normalization (preprocess), transforms and the MindSpore data loader builder. Never imports
facekit.evaluation."""
from . import transforms  # noqa: F401  (fills TRANSFORMS)
from .base import BaseFaceDataset  # noqa: F401
from .builder import (DEFAULT_TRAIN_PIPELINE, FaceDataLoader, ShardedShuffleSampler,  # noqa: F401
                      as_face_dataset, build_dataloader, build_dataset)
from .image_folder import ImageFolderDataset  # noqa: F401
from .ijb import IJBFormatError, IJBRelease, find_ijb_release  # noqa: F401
from .mindrecord import MindRecordFaceDataset  # noqa: F401
from .mx_face import MXFaceDataset  # noqa: F401
from .preprocess import IMAGE_SIZE, MEAN, STD, decode_image, normalize, to_model_input  # noqa: F401
from .recordio import (IndexedRecordIOReader, IndexedRecordIOWriter, IRHeader, RecordIOError,  # noqa: F401
                       RecordIOReader, RecordIOWriter, pack, pack_img, unpack, unpack_img)
from .synthetic import SyntheticIdentities  # noqa: F401
from .verification_bin import UnsafeFileError, load_bin, make_verification_bin, save_bin  # noqa: F401
