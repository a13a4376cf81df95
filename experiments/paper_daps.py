"""DAPS (Zhang et al., arXiv 2407.01521), Table 1: FFHQ 256 x 256, 100 test images,
Gaussian noise sigma_y = 0.05 in [-1, 1] units (0.025 here), PSNR of DAPS and DPS.

Operators (the official configs/task/*.yaml, "pixel" group): SR x4 (bicubic); box inpainting
128 x 128; random inpainting with 70 % missing; Gaussian blur 61 x 61, std 3.0; motion blur 61 x 61,
intensity 0.5; Fourier phase retrieval with oversampling 2.0, the best of 4 runs per image by PSNR
(commands/pixel_ffhq.sh: num_runs=4, the code's best-sample selection); HDR with factor 2. Nonlinear
deblurring (the learned GOPRO blur of bkse) has no operator in invsolve and is printed as not
available. Solvers use ``preset="paper"`` on the guided-diffusion FFHQ checkpoint ``ffhq_10m.pt``;
DAPS queries it through the official VPPrecond conversion (``schedule="vp_linear"``).

Run (a GPU is needed: 100 images x 7 tasks, DAPS-1K/4K budgets):
    python experiments/paper_daps.py --checkpoint ffhq_10m.pt --data test-ffhq --device cuda
    python experiments/paper_daps.py --dry-run
Reruns resume from the rows in the output folder.
"""

from __future__ import annotations

import sys

from paper_common import Method, Paper, Task, main

MOTION_NOTE = ("61 x 61 kernel from deepinv's MotionBlurGenerator (intensity 0.5 = its trajectory std); "
               "the DAPS code draws one from the motionblur package, a different trajectory model")

PAPER = Paper(
    name="paper_daps",
    title="DAPS, FFHQ 256 (100 test images), sigma_y = 0.05 in [-1, 1]",
    citation="Zhang et al., Improving Diffusion Inverse Problem Solving with Decoupled Noise "
             "Annealing, arXiv 2407.01521",
    table="Table 1 (PSNR; also the project page's main table)",
    tasks=[
        Task("sr4", "SR ×4", "sr4"),
        Task("box", "Inpaint (box)", "inpaint_box", {"box": 128},
             note="128 x 128 box centred; the DAPS code places it at random, 16 px or more from the "
                  "border"),
        Task("random", "Inpaint (random 70 %)", "inpaint_random", {"missing": 0.7},
             note="one seeded mask for every image; the DAPS code draws one per image"),
        Task("gauss", "Deblur (Gaussian)", "blur_gauss", {"kernel_size": 61, "std": 3.0}),
        Task("motion", "Deblur (motion)", "blur_motion", {"kernel_size": 61, "intensity": 0.5},
             note=MOTION_NOTE),
        Task("pr", "Phase retrieval", "phase_retrieval", {"oversample": 2.0},
             note="each of the 4 runs uses its own config seed, which also redraws the measurement "
                  "noise (the DAPS code measures y once); sigma 0.025 is the paper's 0.05 relative to "
                  "the image range (|F(2x - 1)| is not 2 |F(x)|)"),
        Task("nl_deblur", "Deblur (nonlinear)", None,
             note="not available: invsolve has no operator for the learned GOPRO blur (bkse)"),
        Task("hdr", "HDR", "hdr", {"alpha": 2.0}),
    ],
    methods=[
        Method("daps", "DAPS",
               psnr={"sr4": 29.07, "box": 24.07, "random": 31.12, "gauss": 29.19, "motion": 29.66,
                     "pr": 30.63, "nl_deblur": 28.29, "hdr": 27.12},
               prior_kwargs={"schedule": "vp_linear"}),
        Method("dps", "DPS",
               psnr={"sr4": 25.86, "box": 22.51, "random": 25.46, "gauss": 25.87, "motion": 24.52}),
    ],
    noise_sigma=0.025,
    noise_note="the paper's 0.05 on [-1, 1] images",
    n_default=100,
    best_of={"pr": 4},
    data_help="the DAPS test set: 100 FFHQ images at 256 x 256 (PNG), test-ffhq.zip from the DAPS "
              "README, https://drive.google.com/drive/folders/1RHNif32W0hvB4M75ppG1ypTChy-W3q3Z "
              "(zhangbingliang2019/DAPS, configs/data/test-ffhq.yaml: images 0-99 in name order)",
)

if __name__ == "__main__":
    sys.exit(main(PAPER, __doc__))
