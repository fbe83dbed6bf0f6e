"""3D Gaussian models: the trainable container, initialisation from a mesh, and the standard 3DGS PLY format."""

from pla4d.gaussians.init import gaussians_from_mesh
from pla4d.gaussians.model import SH_C0, GaussianModel, rgb_to_sh0, sh0_to_rgb
from pla4d.gaussians.ply import load_ply, save_ply

__all__ = ["SH_C0", "GaussianModel", "gaussians_from_mesh", "load_ply", "rgb_to_sh0", "save_ply", "sh0_to_rgb"]
