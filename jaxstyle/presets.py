"""The presets' values: what each of `jaxstyle.choices.PRESETS` fills in among the options a
run leaves None (`PRESET_VALUES`), and the calibrated constants they are made of."""

from __future__ import annotations

from jaxstyle.choices import NEURAL_NEIGHBOUR

BALANCED_STYLE_STRENGTH = 20.0
"""The balanced preset's style strength: calibrated (docs/how-it-works.md, "How the default was
chosen") so that the subject stays plain and the style is unmistakable across pairs and sizes;
40 for one scale, 20 since the coarse-to-fine schedule, which paints more at equal strength."""

COARSEST = 128
"""The balanced preset's coarsest scale (longest side, px): below it VGG's deepest style and
content layers see too few positions to place a subject (crowsonkb's style-transfer-pytorch
also starts at 128 px); docs/benchmarks.md, "Time to a picture"."""
FINEST_ITERATIONS = 50
"""The balanced preset's most iterations at the full size; each coarser scale may run twice the
next finer's (docs/benchmarks.md, "Time to a picture")."""
_ONE_SCALE = {"coarsest": 0, "finest_iterations": 0, "final_pass": 0}
NEIGHBOUR_TV_WEIGHT = 0.02
"""The neural-neighbour preset's TV weight (NNST has none; its Laplacian-pyramid variable
smooths instead): enough to calm single-pixel noise, small beside the style term."""
CONTENT_ALPHA = 0.75
"""The neural-neighbour preset's default content share, NNST's own default (its alpha)."""
NEIGHBOUR_FINAL_PASS = 50
"""The neural-neighbour preset's last pass (iterations at the output's size, each layer matched
on its own): NNST-Opt always runs one. With 50, the route's quality figures came within 10 % of
NNST-Opt's on chelsea/marbled at 256 px; with 30 the sliced-Wasserstein ratio stayed 12 % above
(docs/guide/losses.md, "Rotations of the style and the last pass")."""
_NOT_NEIGHBOUR = {"style_rotations": False, "original_colors": "none"}
NEIGHBOUR_HISTORY = 50
"""The neural-neighbour preset's L-BFGS history: as many pairs as its finest scale and its last
pass have iterations (at most 50 each), so neither drops a pair; half the memory of neural-style's
100 (about 210 MB less at 512 px)."""

_NEURAL_STYLE = {
    "objective": {"content_weight": 5.0, "style_weight": 100.0, "tv_weight": 1e-3,
                  "weight_normalization": "neural-style", "style_strength": 1.0,
                  **_NOT_NEIGHBOUR},
    "video": {"temporal_weight": 1e3},
}
PRESET_VALUES = {
    "balanced": {
        "objective": {"content_weight": 1.0, "style_weight": 1.0, "tv_weight": 0.3,
                      "weight_normalization": "relative",
                      "style_strength": BALANCED_STYLE_STRENGTH, **_NOT_NEIGHBOUR},
        "optimization": {"lbfgs_linesearch": "zoom", "stop_tolerance": 0.0, "stop_change": 0.1,
                         "lbfgs_history": 100},
        "plan": {"coarsest": COARSEST, "finest_iterations": FINEST_ITERATIONS,
                 "final_pass": 0},
        "performance": {"convolution": "auto"},
        "video": {"temporal_weight": 30.0},
    },
    "neural-style": {
        **_NEURAL_STYLE,
        "optimization": {"lbfgs_linesearch": "none", "stop_tolerance": 0.0, "stop_change": 0.0,
                         "lbfgs_history": 100},
        "plan": _ONE_SCALE, "performance": {"convolution": "direct"},
    },
    # fast's stall rule, 3e-4 (0.03% per iteration), stopped tubingen/starry_night at 384 px
    # within 3.2% of 1e-4's loss at 0.62x its iterations (docs/how-it-works.md, "Why the
    # presets are what they are"; chelsea/marbled 3.1%).
    "fast": {
        **_NEURAL_STYLE,
        "optimization": {"lbfgs_linesearch": "zoom", "stop_tolerance": 3e-4, "stop_change": 0.0,
                         "lbfgs_history": 100},
        "plan": _ONE_SCALE, "performance": {"convolution": "auto"},
    },
    # The neighbour term is a mean cosine distance, O(0.1-1) like the relative objective's
    # terms: the balanced preset's optimizer and schedule; no content term (content_alpha is
    # the knob, as in NNST) and a TV weight that keeps it at a few percent of the style term.
    # NNST-Opt's own defaults for the rest: rotations of the style, a last pass with each layer
    # matched on its own, and its closing colour step in OkLab.
    NEURAL_NEIGHBOUR: {
        "objective": {"content_weight": 0.0, "style_weight": 1.0, "tv_weight": NEIGHBOUR_TV_WEIGHT,
                      "weight_normalization": "relative", "style_strength": 1.0,
                      "style_rotations": True, "original_colors": "oklab"},
        "optimization": {"lbfgs_linesearch": "zoom", "stop_tolerance": 0.0, "stop_change": 0.1,
                         "lbfgs_history": NEIGHBOUR_HISTORY},
        "plan": {"coarsest": COARSEST, "finest_iterations": FINEST_ITERATIONS,
                 "final_pass": NEIGHBOUR_FINAL_PASS},
        "performance": {"convolution": "direct"},
        "video": {"temporal_weight": 0.0},
    },
}
"""What each of `PRESETS` sets, group by group, among the options left None (see
`StyleOptions`)."""
