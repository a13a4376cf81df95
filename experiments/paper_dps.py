"""DPS (Chung et al., ICLR 2023, arXiv 2209.14687), appendix Table 6: FFHQ 256 x 256, 1k validation
images, Gaussian noise sigma_y = 0.05 in [-1, 1] units (0.025 here), PSNR / SSIM of DPS and DDRM.

Operators (the paper's Sec. 4 and the official configs/*_config.yaml): SR x4 with the bicubic
(imresize) kernel; box inpainting 128 x 128 centred; random inpainting with 92 % of the pixels
missing; Gaussian blur 61 x 61, std 3.0; motion blur 61 x 61, intensity 0.5. Solvers use
``preset="paper"`` (DPS: 1000 steps, zeta 0.3 for SR / deblurring and 0.5 for inpainting;
DDRM: 20 steps, eta 0.85, eta_b 1.0) on the guided-diffusion FFHQ checkpoint ``ffhq_10m.pt``.

Run (a GPU is needed for the full table: 1000 images x 5 tasks x 1000 steps):
    python experiments/paper_dps.py --checkpoint ffhq_10m.pt --data ffhq256_val --device cuda
    python experiments/paper_dps.py --dry-run          # the config and the table skeleton, no files
Reruns resume from the rows in the output folder.
"""

from __future__ import annotations

import sys

from paper_common import Method, Paper, Task, main

PAPER = Paper(
    name="paper_dps",
    title="DPS, FFHQ 256 (1k validation images), sigma_y = 0.05 in [-1, 1]",
    citation="Chung, Kim, McCann, Klasky & Ye, Diffusion Posterior Sampling for General Noisy "
             "Inverse Problems, ICLR 2023, arXiv 2209.14687",
    table="appendix Table 6 (PSNR / SSIM)",
    tasks=[
        Task("sr4", "SR ×4", "sr4"),
        Task("box", "Inpaint (box)", "inpaint_box", {"box": 128},
             note="128 x 128 box centred; the DPS code places it at random, 16 px or more from the border"),
        Task("random", "Inpaint (random 92 %)", "inpaint_random", {"missing": 0.92},
             note="one seeded mask for every image; the DPS code draws a new random mask per image"),
        Task("gauss", "Deblur (Gaussian)", "blur_gauss", {"kernel_size": 61, "std": 3.0}),
        Task("motion", "Deblur (motion)", "blur_motion", {"kernel_size": 61, "intensity": 0.5},
             note="61 x 61 kernel from deepinv's MotionBlurGenerator (intensity 0.5 = its trajectory "
                  "std); DPS draws one from the motionblur package, a different trajectory model"),
    ],
    methods=[
        Method("dps", "DPS",
               psnr={"sr4": 25.67, "box": 22.47, "random": 25.23, "gauss": 24.25, "motion": 24.92},
               ssim={"sr4": 0.852, "box": 0.873, "random": 0.851, "gauss": 0.811, "motion": 0.859}),
        Method("ddrm", "DDRM",
               psnr={"sr4": 25.36, "box": 22.24, "random": 9.19, "gauss": 23.36}),
    ],
    noise_sigma=0.025,
    noise_note="the paper's 0.05 on [-1, 1] images",
    n_default=1000,
    data_help="the FFHQ validation images at 256 x 256 as PNG files (DPS: the 1k validation set, "
              "FFHQ images 69000-69999 of NVlabs/ffhq-dataset https://github.com/NVlabs/ffhq-dataset; "
              "1024 x 1024 originals are resized to 256 on loading); --n images are taken in file-name "
              "order",
    notes=[("DDRM on SR x4 needs an SVD of the operator; invsolve's bicubic SR is not decomposable, so "
           "that cell reports DDRM's refusal instead of a number"),
           "DDRM's SSIM values of Table 6 are not transcribed here (blank)"],
)

if __name__ == "__main__":
    sys.exit(main(PAPER, __doc__))
