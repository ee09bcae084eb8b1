"""What each check of a claim measures: its statistic's kind (a rate or a median), the criterion
text its verdict states, what an empty check lacks, its threshold in the criteria, which
statistics are judged "at most" and which against a Gaussian control. analysis/claims.py judges
them; docs/findings.md explains each."""

from __future__ import annotations

from analysis.criteria import Criteria

# statistic -> (kind, criterion text with {thr} (and {norm}, {eps}, {h}, {success}), what an
# empty check lacks)
STATISTICS: dict[str, tuple[str, str, str]] = {
    "success_rate": (
        "rate", "share of ok matches that reach the target {success} ≥ {thr}",
        "no ok match rows"),
    "median_psnr": (
        "median", "median PSNR of successful matches ≥ {thr} dB",
        "no successful match with a PSNR"),
    "median_ssim": (
        "median", "median SSIM of successful matches ≥ {thr}",
        "no successful match with an SSIM"),
    "quant_rate": (
        "rate", "share of successful matches still matching after 8-bit rounding ≥ {thr}",
        "no successful match with an 8-bit re-check"),
    "median_disp_over_pair": (
        "median", ("median displacement over the pair distance at the smallest {norm} ε ({eps}) "
                   "≥ {thr}"),
        "no perturb rows"),
    "median_over_random": (
        "median", ("median optimised over random-direction displacement at the smallest {norm} "
                   "ε ({eps}) ≥ {factor} × a Gaussian linear map's of the same shapes{ref}"),
        "no perturb rows with a random baseline"),
    "median_anisotropy": (
        "median", ("median over pairs of σ1 over the median random-direction ‖J v‖ ≥ {factor} × "
                   "a Gaussian linear map's of the same shapes{ref}"),
        "no pair with both `top` and `random` directions"),
    "median_top_over_null_fd": (
        "median", ("median over pairs of the finite-step estimate along top singular directions "
                   "over the one along null-space directions, at h = {h} (a null step within "
                   "round-off counts as 0, the ratio as ∞), ≥ {thr}"),
        "no pair with both `top` and `null` directions"),
    "median_match_nonlinearity": (
        "median", ("median over pairs of ‖f(x_matched) − f(x0) − J (x_matched − x0)‖ / "
                   "‖f(x_matched) − f(x0)‖ along the match path, at h = ‖x_matched − x0‖, ≤ {thr}"),
        "no pair with a successful `match` direction"),
    "head_target_rate": (
        "rate", ("share of successful matches the classifier head labels as the target, over "
                 "pairs it labels differently at source and target, ≥ {thr}"),
        "no classifier-head labels on pairs with different source and target labels"),
    "knn_target_rate": (
        "rate", ("share of successful matches k-NN labels as the target, over pairs it labels "
                 "differently at source and target, ≥ {thr}"),
        "no k-NN labels on pairs with different source and target labels"),
    "zeroshot_target_rate": (
        "rate", ("share of successful matches zero-shot CLIP labels as the target, over pairs it "
                 "labels differently at source and target, ≥ {thr}"),
        "no zero-shot labels on pairs with different source and target labels"),
    "median_walk_ratio": (
        "median", ("median over pairs of the equivalence walk's reachable radius (its predictor "
                   "with J's top subspace removed) over the same walk's with random predictor "
                   "directions, over pairs whose random walk left the set (one that kept every "
                   "step measured the walk's length, not the set's: left out), ≥ {thr}"),
        "no pair with an equivalence walk"),
    "linear_rate": (
        "rate", ("share of successful matches whose segment target → x_matched stays within "
                 "{tol}× the match's own tolerance at x_matched ≥ {thr}"),
        "no successful match with path linearity"),
}
NORM_NAMES = {"linf": "L∞", "l2": "L2"}
# statistics judged "at most" (every other one is "at least")
AT_MOST = {"median_match_nonlinearity"}
# statistic -> the statistic of gaussian_reference (checks judged against a Gaussian control)
CONTROLLED = {"median_over_random": "over_random", "median_anisotropy": "sigma1_over_random"}
NO_CONTROL = ("no Gaussian control: add control:gaussian:<model> to the spec beside the model "
              "(or a run whose units record input_dim and embed_dim)")


def thresholds(criteria: Criteria) -> dict[str, float]:
    """Each statistic's threshold; for a controlled statistic, the factor over the control."""
    return {
        "success_rate": criteria.equivalence.min_success_rate,
        "median_psnr": criteria.invisibility.min_median_psnr,
        "median_ssim": criteria.invisibility.min_median_ssim,
        "quant_rate": criteria.invisibility.min_quant_rate,
        "median_disp_over_pair": criteria.normal_space.min_disp_over_pair,
        "median_over_random": criteria.normal_space.min_over_control,
        "median_anisotropy": criteria.lipschitz.min_anisotropy_over_control,
        "median_top_over_null_fd": criteria.lipschitz.min_top_over_null_fd,
        "median_match_nonlinearity": criteria.lipschitz.max_match_nonlinearity,
        "head_target_rate": criteria.overgeneralisation.min_target_rate,
        "knn_target_rate": criteria.overgeneralisation.min_target_rate,
        "zeroshot_target_rate": criteria.overgeneralisation.min_target_rate,
        "median_walk_ratio": criteria.large_equivalence.min_median_walk_ratio,
        "linear_rate": criteria.piecewise_linear.min_linear_rate,
    }

# a claim's checks when its probe has no rows at all (each says what it lacks)
EMPTY_STATISTIC: dict[str, tuple[str, ...]] = {"equivalence": ("success_rate",),
                    "invisibility": ("median_psnr", "median_ssim", "quant_rate"),
                    "normal_space": ("median_disp_over_pair", "median_over_random"),
                    "lipschitz": ("median_anisotropy", "median_top_over_null_fd"),
                    "overgeneralisation": ("head_target_rate", "knn_target_rate", "zeroshot_target_rate"),
                    "large_equivalence": ("median_walk_ratio",), "piecewise_linear": ("linear_rate",)}
