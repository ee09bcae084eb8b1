"""The report's prose: how numbers and verdicts become sentences, one builder per claim. Every
sentence about a claim is conditioned on its verdict or only states numbers."""

from __future__ import annotations

from typing import Any

from analysis.claims import NOT_SUPPORTED, SUPPORTED
from analysis.report.model import _VERDICT_WORDS, Claim, Figure, Table, VerdictRows, fmt

_NO_DATA = "for this model, weights and embedding point"


def _verdict_of(verdicts: VerdictRows, config_hash: str | None, claim: str) -> dict[str, Any] | None:
    return verdicts.get((config_hash, claim)) if config_hash else None


def _verdict_sentence(label: str, v: dict[str, Any] | None) -> str:
    """One sentence stating a claim's verdict, its criterion and what decided it."""
    if v is None:
        return f"No verdict on {label}: its rows are missing from the claims table."
    word = _VERDICT_WORDS[v["verdict"]]
    return f"Verdict on {label}: {word} ({v['reason']}). Criterion: {v['criterion']}."


def _failing(v: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in v["checks"] if c["verdict"] == NOT_SUPPORTED]


def _invisibility_sentence(v: dict[str, Any] | None) -> str:
    """What the invisibility verdict lets the report say about how the matched images look."""
    if v is None:
        return "No invisibility verdict: nothing is said about how the matched images look."
    if v["verdict"] == SUPPORTED:
        return ("By the invisibility criterion the matched images pass as their sources "
                "(every check's interval clears its threshold).")
    if v["verdict"] == NOT_SUPPORTED:
        fails = "; ".join(f"{c['criterion']}: estimate {fmt(c['estimate'])}, 95% interval "
                          f"{fmt(c['ci_low'])}–{fmt(c['ci_high'])}" for c in _failing(v))
        return f"The matched images fail the invisibility criterion: {fails}."
    return (f"The invisibility criterion does not decide how the matched images look here "
            f"({v['reason']}).")


# ---------------------------------------------------------------- claims

def _claim_equivalence(eq: dict | None, inv: dict | None, fig: bytes | None, slug: str,
                       verdicts: VerdictRows | None = None) -> Claim:
    claim = Claim("equivalence", "1. Equivalence: does a different image reach the same embedding?")
    if not eq or not eq["n_ok"]:
        claim.empty = f"No match rows (status ok) {_NO_DATA}: claim 1 not measured."
        return claim
    verdicts = verdicts or {}
    v_eq = _verdict_of(verdicts, eq["config_hash"], "equivalence")
    v_inv = _verdict_of(verdicts, eq["config_hash"], "invisibility")
    claim.verdicts = [v for v in (v_eq, v_inv) if v is not None]
    claim.sentences.append(
        f"{fmt(eq['n_success'], 'int')} of {fmt(eq['n_ok'], 'int')} matches reached the target's "
        f"embedding ({fmt(eq['success_rate'], 'pct')} success rate), in a median of "
        f"{fmt(eq['median_steps_success'])} steps for those that did. The final rel_dist has median "
        f"{fmt(eq['median_rel_dist'])} (source vs target at the start: "
        f"{fmt(eq['median_rel_dist_start'])}) and the final cosine median {fmt(eq['median_cos'])}."
    )
    claim.sentences.append(_verdict_sentence("equivalence", v_eq))
    if inv and inv["n_success"]:
        claim.sentences.append(
            f"Pixel change of the successful matches against their sources: median PSNR "
            f"{fmt(inv['median_psnr'])} dB (lowest {fmt(inv['min_psnr'])} dB), median SSIM "
            f"{fmt(inv['median_ssim'])}, median largest pixel change "
            f"{fmt(inv['median_pix_linf_255'])}/255. {fmt(inv['quant_success_rate'], 'pct')} of the "
            f"successful matches still succeed after rounding to 8-bit pixels."
        )
    else:
        claim.sentences.append("No match succeeded, so there are no pixel-change numbers.")
    claim.sentences.append(_invisibility_sentence(v_inv))
    if eq["n_error"]:
        rows = "row" if eq["n_error"] == 1 else "rows"
        claim.sentences.append(f"{fmt(eq['n_error'], 'int')} match {rows} ended in an error and "
                               f"{'is' if eq['n_error'] == 1 else 'are'} left out of every number.")
    if fig:
        claim.figures.append(Figure("Final rel_dist and PSNR of successful matches", fig,
                                    f"fig-{slug}-match.png"))
    return claim


_NORM_NAMES = {"l2": "L2", "linf": "L∞"}


def _eps_label(norm: str, eps: float) -> str:
    return f"{eps * 255:.3g}/255" if norm == "linf" else fmt(eps)


def _check_of(v: dict[str, Any] | None, statistic: str, norm: str | None = None) -> dict[str, Any] | None:
    """One check of a verdict row (by statistic, and norm where given)."""
    for c in (v or {}).get("checks") or []:
        if c["statistic"] == statistic and (norm is None or c.get("norm") == norm):
            return c
    return None


def _control_text(check: dict[str, Any] | None) -> str:
    """"(a Gaussian linear map of these shapes: M×, from a control run)" where the check has one."""
    if not check or check.get("control_estimate") is None:
        return ""
    source = "a control run" if check.get("control_source") == "run" else "closed form"
    return (f" (a Gaussian linear map of these shapes: {fmt(check['control_estimate'], 'x')}, "
            f"{source})")


def _claim_normal(rows: list[dict], fig: bytes | None, slug: str,
                  verdicts: VerdictRows | None = None) -> Claim:
    claim = Claim("normal_space", "2. Normal spaces: do invisible changes move the embedding far?")
    if not rows:
        claim.empty = f"No perturb rows (status ok) {_NO_DATA}: claim 2 not measured."
        return claim
    v = _verdict_of(verdicts or {}, rows[0]["config_hash"], "normal_space")
    claim.verdicts = [v] if v is not None else []
    for norm in sorted({r["norm"] for r in rows}):
        at_norm = [r for r in rows if r["norm"] == norm]
        low = min(at_norm, key=lambda r: r["eps"])  # the ε the verdict is computed at
        top = max(at_norm, key=lambda r: r["eps"])
        name = _NORM_NAMES.get(norm, norm)
        control = _control_text(_check_of(v, "median_over_random", norm))
        claim.sentences.append(
            f"At the smallest {name} ε = {_eps_label(norm, low['eps'])} (the ε the verdict uses), a "
            f"change of at most ε moves the embedding by a median "
            f"{fmt(low['median_disp_over_pair'])} times the source-target distance; a random change "
            f"of the same size (the median of its random draws) moves it "
            f"{fmt(low['median_random_disp_over_pair'])} times (median ratio "
            f"{fmt(low['median_over_random'], 'x')}{control})."
        )
        if top["eps"] != low["eps"]:
            claim.sentences.append(
                f"At the largest {name} ε = {_eps_label(norm, top['eps'])}: a median "
                f"{fmt(top['median_disp_over_pair'])} times the distance, random "
                f"{fmt(top['median_random_disp_over_pair'])} (median ratio "
                f"{fmt(top['median_over_random'], 'x')})."
            )
    claim.sentences.append(_verdict_sentence("normal spaces", v))
    claim.table = Table(
        ["norm", "ε", "pairs", "disp / pair dist (median)", "10–90%",
         "random disp / pair dist (median draw)", "random (best draw)", "optimised / random",
         "label changed"],
        [[r["norm"], _eps_label(r["norm"], r["eps"]), fmt(r["n"], "int"),
          fmt(r["median_disp_over_pair"]),
          f"{fmt(r['p10_disp_over_pair'])}–{fmt(r['p90_disp_over_pair'])}",
          fmt(r["median_random_disp_over_pair"]), fmt(r.get("median_random_disp_over_pair_max")),
          fmt(r["median_over_random"], "x"), fmt(r["label_change_rate"], "pct")] for r in rows],
    )
    if fig:
        claim.figures.append(Figure("Displacement over the pair distance against ε, with the "
                                    "random baseline", fig, f"fig-{slug}-eps.png"))
    return claim


def _top_null_sentence(v: dict[str, Any] | None) -> str:
    """Top against null directions at a finite step h (the verdict's check), never on ‖J v‖:
    J v_null = 0 by construction of the null directions, for every map with fewer outputs than
    pixels, so a ratio of exact directional derivatives says nothing about the model."""
    check = _check_of(v, "median_top_over_null_fd")
    if check is None or not check.get("n_pairs"):
        return ("No pair has both top singular directions and null-space directions (family "
                "`null`), so the two are not compared.")
    return (f"At a finite step h = {fmt(check.get('h'))} (L2 pixel units), the finite-difference "
            f"estimate along top singular directions over the one along null-space directions "
            f"has a median {fmt(check['estimate'], 'x')} over {fmt(check['n_pairs'], 'int')} pairs "
            f"(a null step within round-off counts as 0). Along null directions ‖J v‖ itself is "
            f"zero by construction, for any map with fewer outputs than pixels, so it is no "
            f"evidence on its own.")


def _claim_lipschitz(lip: dict | None, families: list[dict], figs: list[tuple[str, bytes | None]],
                     slug: str, verdicts: VerdictRows | None = None) -> Claim:
    claim = Claim("lipschitz", "3. Lipschitz evidence: flat along the null space, steep along top directions?")
    if not lip or not lip["n_pairs"]:
        claim.empty = f"No lipschitz rows (status ok) {_NO_DATA}: claim 3 not measured."
        return claim
    v = _verdict_of(verdicts or {}, lip["config_hash"], "lipschitz")
    claim.verdicts = [v] if v is not None else []
    claim.sentences.append(
        f"Over {fmt(lip['n_pairs'], 'int')} pairs, σ1 (the largest singular value of the Jacobian) "
        f"is a median {fmt(lip['median_sigma1_over_random'], 'x')} the median estimate along random "
        f"directions (geometric mean {fmt(lip['geomean_sigma1_over_random'], 'x')}, range "
        f"{fmt(lip['min_sigma1_over_random'], 'x')} to {fmt(lip['max_sigma1_over_random'], 'x')})"
        f"{_control_text(_check_of(v, 'median_anisotropy'))}."
    )
    claim.sentences.append(_top_null_sentence(v))
    if lip.get("median_grad_over_random") is not None:
        claim.sentences.append(
            f"Along the first matching step (the negative gradient of the matching loss, grad), the "
            f"estimate is a median {fmt(lip['median_grad_over_random'], 'x')} the random one."
        )
    if lip.get("median_match_over_random") is not None:
        claim.sentences.append(
            f"Along the direction a successful match moved the source (match), the estimate is a median "
            f"{fmt(lip['median_match_over_random'], 'x')} the random one."
        )
    claim.sentences.append(_verdict_sentence("Lipschitz evidence", v))
    claim.table = Table(
        ["family", "directions", "min", "25%", "median", "75%", "max"],
        [[f["family"], fmt(f["n_directions"], "int"), fmt(f["min_estimate"]), fmt(f["p25_estimate"]),
          fmt(f["median_estimate"]), fmt(f["p75_estimate"]), fmt(f["max_estimate"])]
         for f in families],
    )
    for (title, png), name in zip(figs, ("families", "nonlinearity")):
        if png:
            claim.figures.append(Figure(title, png, f"fig-{slug}-lipschitz-{name}.png"))
    return claim


def _labeller_sentence(og: dict[str, Any], labeller: str, name: str, adjective: str | None = None) -> str:
    """name: the labeller as a subject ("the classifier head"); adjective: as a modifier
    ("classifier-head"; default: name)."""
    adjective = adjective or name
    labelled, same = og[f"n_{labeller}_labelled_success"], og.get(f"n_{labeller}_same_label_success")
    left_out = (f" {fmt(same, 'int')} successful {'match' if same == 1 else 'matches'} whose "
                f"source and target {name} labels alike {'is' if same == 1 else 'are'} left out."
                if same else "")
    if not labelled:
        return f"No {adjective} labels on successful matches with different source and target labels.{left_out}"
    return (f"Of the {fmt(labelled, 'int')} successful matches whose source and target {name} "
            f"labels differently, {fmt(og[f'{labeller}_target_rate_success'], 'pct')} are labelled "
            f"as the target and {fmt(og[f'{labeller}_source_rate_success'], 'pct')} keep the "
            f"source's label ({fmt(og[f'{labeller}_target_rate_all'], 'pct')} as the target among "
            f"all such ok matches).{left_out}")


def _claim_overgeneralisation(og: dict | None, verdicts: VerdictRows | None = None) -> Claim:
    claim = Claim("overgeneralisation", "4. Overgeneralisation: do labels follow the embedding?")
    if not og or not og["n_ok"]:
        claim.empty = f"No match rows (status ok) {_NO_DATA}: claim 4 not measured."
        return claim
    v = _verdict_of(verdicts or {}, og["config_hash"], "overgeneralisation")
    claim.verdicts = [v] if v is not None else []
    claim.sentences.append(_labeller_sentence(og, "head", "the classifier head", "classifier-head"))
    claim.sentences.append(_labeller_sentence(og, "knn", "k-NN"))
    claim.sentences.append(_verdict_sentence("overgeneralisation", v))
    return claim


def _claim_geometry(g: dict | None, fig: bytes | None, slug: str,
                    verdicts: VerdictRows | None = None) -> Claim:
    """5. The paper's headline (probe equivalence): large_equivalence and piecewise_linear."""
    claim = Claim("large_equivalence", "5. The headline: are equivalence sets large and piecewise linear?")
    if not g or not g["pairs"]:
        claim.empty = f"No equivalence rows (status ok) {_NO_DATA}: claim 5 not measured."
        return claim
    large = _verdict_of(verdicts or {}, g["config_hash"], "large_equivalence")
    linear = _verdict_of(verdicts or {}, g["config_hash"], "piecewise_linear")
    claim.verdicts = [v for v in (large, linear) if v is not None]
    if g["walks"]:
        claim.sentences.append(
            f"Over {fmt(g['walks'], 'int')} walks the median reachable radius (L2 from x0, pixels in "
            f"[0, 1]) is {fmt(g['median_walk_radius'])} along directions with J's top subspace "
            f"removed and {fmt(g['median_random_walk_radius'])} along random directions; the "
            f"median per-pair ratio is {fmt(g['median_walk_ratio'])}, and the equivalence walk's "
            f"end image has a median PSNR of {fmt(g['median_walk_psnr'])} dB against x0. "
            f"{fmt(g['walks_capped'], 'int')} equivalence walks and "
            f"{fmt(g['random_walks_capped'], 'int')} random walks kept every step (they never "
            f"left the set: their radius is the walk's length); pairs whose random walk did are "
            f"left out of the verdict.")
    if g["matches"]:
        claim.sentences.append(
            f"Of {fmt(g['pairs'], 'int')} pairs, {fmt(g['matches'], 'int')} matched; on the segment "
            f"target → x_matched the largest deviation from f(target) is a median "
            f"{fmt(g['median_target_over_end'])} × the match's own tolerance at x_matched.")
    claim.sentences.append(_verdict_sentence("large_equivalence", large))
    claim.sentences.append(_verdict_sentence("piecewise_linear", linear))
    if fig:
        claim.figures.append(Figure("Path linearity and the equivalence walk (medians over pairs, "
                                    "10th to 90th percentile bands)", fig, f"fig-{slug}-geometry.png"))
    return claim


def _with_setting(claim: Claim, row: dict[str, Any] | None) -> Claim:
    if row is not None:
        claim.setting = row.get("setting") or row["config_hash"]
        claim.config_hash = row["config_hash"]
    return claim


def _named(row: dict[str, Any], column: str) -> str:
    """A label index with its class name where the run knows it: `277 (red fox, Vulpes vulpes)`."""
    name = row.get(f"{column}_name")
    return f"{row.get(column)} ({name})" if name else str(row.get(column))
