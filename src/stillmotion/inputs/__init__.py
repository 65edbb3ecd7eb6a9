"""What users give us: the image, arrows (straight or multi-point trajectories) and a mask."""

from stillmotion.inputs.arrows import Arrow, load_arrows_file, parse_arrow_option, save_arrows_json
from stillmotion.inputs.image import load_image
from stillmotion.inputs.mask import load_mask

__all__ = ["Arrow", "load_arrows_file", "parse_arrow_option", "save_arrows_json", "load_image", "load_mask"]
