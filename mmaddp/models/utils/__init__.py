from .checkpoint_convert import convert_to_encoder_state_dict, load_addp_encoder_state_dict

__all__ = ['convert_to_encoder_state_dict', 'load_addp_encoder_state_dict']
