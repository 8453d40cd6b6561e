from .checkpoint_convert import convert_to_encoder_state_dict, load_addp_encoder_state_dict
from .mask_ratio import MaskRatioSchedule, TruncatedNormalMaskRatio

__all__ = ["convert_to_encoder_state_dict", "load_addp_encoder_state_dict", "TruncatedNormalMaskRatio", "MaskRatioSchedule"]
