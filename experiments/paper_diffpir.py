"""DiffPIR (Zhu et al., arXiv 2305.08995), FFHQ table: 100 validation images
(the repository's testsets/ffhq_val_100 list), Gaussian noise sigma = 0.05 in [0, 1] units, 100 NFE,
PSNR of DiffPIR.

Operators (main_ddpir_deblur.py / main_ddpir_sisr.py): Gaussian blur 61 x 61, std 3.0; motion blur
61 x 61, intensity 0.5; SR x4 with the bicubic kernel. DiffPIR's noise_level_img = 12.75/255 is
already in [0, 1] units (the code adds 2 x that to [-1, 1] images), so sigma stays 0.05 here.
``preset="paper"`` gives the official steps, lambda and zeta per task; the checkpoint is the
guided-diffusion FFHQ model ``ffhq_10m.pt`` (``diffusion_ffhq_10m`` in DiffPIR's model_zoo).
``--all`` also runs the DPS and DDRM rows of the same table (README "FFHQ/Method(sigma=0.05)").

Run:
    python experiments/paper_diffpir.py --checkpoint ffhq_10m.pt --data ffhq_val --device cuda
    python experiments/paper_diffpir.py --dry-run
"""

from __future__ import annotations

import sys

from paper_common import Method, Paper, Task, main

FFHQ_VAL_100 = [f"{69007 + 10 * i}.png" for i in range(100)]
"""yuanzhi-zhu/DiffPIR testsets/ffhq_val_100/ffhq_val_100.txt: 69007.png, 69017.png, ..., 69997.png."""

PAPER = Paper(
    name="paper_diffpir",
    title="DiffPIR, FFHQ 256 (ffhq_val_100), sigma = 0.05 in [0, 1], 100 NFE",
    citation="Zhu et al., Denoising Diffusion Models for Plug-and-Play Image Restoration, "
             "arXiv 2305.08995",
    table="FFHQ table at sigma = 0.05 (PSNR), as in the repository README (yuanzhi-zhu/DiffPIR)",
    tasks=[
        Task("gauss", "Deblur (Gaussian)", "blur_gauss", {"kernel_size": 61, "std": 3.0},
             note="std 3.0 as in the paper; main_ddpir_deblur.py draws std 3 x (1 + 2u) per image "
                  "(u uniform, seeded by the image index), one kernel per image"),
        Task("motion", "Deblur (motion)", "blur_motion", {"kernel_size": 61, "intensity": 0.5},
             note="deepinv's MotionBlurGenerator kernel (intensity 0.5 = its trajectory std); DiffPIR "
                  "uses the motionblur package, one kernel per image"),
        Task("sr4", "SR ×4", "sr4"),
    ],
    methods=[
        Method("diffpir", "DiffPIR", psnr={"gauss": 27.36, "motion": 26.57, "sr4": 26.64}),
        Method("dps", "DPS", psnr={"gauss": 25.46, "motion": 23.31, "sr4": 25.77}, optional=True),
        Method("ddrm", "DDRM", psnr={"gauss": 25.93, "sr4": 27.92}, optional=True),
    ],
    noise_sigma=0.05,
    noise_note="DiffPIR's noise_level_img 12.75/255, already in [0, 1] units",
    n_default=100,
    files=FFHQ_VAL_100,
    data_help="the 100 FFHQ validation images of DiffPIR's testsets/ffhq_val_100/ffhq_val_100.txt "
              "(69007.png, 69017.png, ..., 69997.png: every 10th of FFHQ 69000-69999, NVlabs/"
              "ffhq-dataset https://github.com/NVlabs/ffhq-dataset) at 256 x 256; a folder holding "
              "all of 69000-69999 works too (the listed names are picked)",
)

if __name__ == "__main__":
    sys.exit(main(PAPER, __doc__))
