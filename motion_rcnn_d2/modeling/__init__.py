from . import backbone  # noqa: F401  (registers the C6 backbones)
from . import camera_head, roi_heads  # noqa: F401  (register the camera / RoI motion heads)
from . import meta_arch  # noqa: F401  (registers the meta-architectures)
