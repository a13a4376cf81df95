"""Forward operators, all ``deepinv.physics.Physics``: ``build(name, **kw)``, ``available()``."""

from . import imaging as imaging  # registers blur, inpainting, SR, denoise, colorize
from . import pde  # noqa: F401
from .hdr import HighDynamicRange as HighDynamicRange
from .imaging import CircularBlur as CircularBlur
from .imaging import Colorization as Colorization
from .imaging import Denoising as Denoising
from .imaging import Inpainting as Inpainting
from .imaging import SuperResolution as SuperResolution
from .imaging import ValidBlur as ValidBlur
from .matrix import Matrix
from .mri import MRI as MRI
from .mri import MultiCoilMRI as MultiCoilMRI
from .phase_retrieval import FourierPhaseRetrieval as FourierPhaseRetrieval
from .registry import available, build, register
from .tomography import CT as CT

__all__ = ["Matrix", "available", "build", "register"]
