from .batch_affine import BatchRandomAffine
from .checkpoint_convert import convert_to_encoder_state_dict, load_addp_encoder_state_dict
from .data_preprocessor import UNIT_RANGE_PREPROCESSOR, CodeIdDataPreprocessor
from .mask_ratio import MaskRatioSchedule, TruncatedNormalMaskRatio

__all__ = ["BatchRandomAffine", "convert_to_encoder_state_dict", "load_addp_encoder_state_dict", "TruncatedNormalMaskRatio", "MaskRatioSchedule", "UNIT_RANGE_PREPROCESSOR", "CodeIdDataPreprocessor"]
