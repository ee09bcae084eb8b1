"""`vitsweep probe {match,perturb,lipschitz}`: run one probe on one image pair.

    vitsweep probe match --model vit_tiny_patch16_224 --weights random:0 --src a.jpg --tgt b.jpg --out o --json
    vitsweep probe perturb --model vit_tiny_patch16_224 --src a.jpg --tgt b.jpg --param "eps=[0.0039, 0.0157]" --out o
    vitsweep probe lipschitz --model vit_tiny_patch16_224 --src a.jpg --tgt b.jpg --param top_k=8 --out o

Writes source, target and probed image (and the amplified difference) as PNG into --out, and
metrics.json beside them; with --json also prints that one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from sweep.errors import UserError, int_at_least
from sweep.files import dumps_json


def _parameters_help() -> str:
    """Each probe's parameters with their defaults (as the probe resolves them)."""
    from sweep.probes import PROBES, build_probe

    lines = ["probe parameters (--param KEY=VALUE, values as YAML) and their defaults:"]
    for name in PROBES:
        defaults = json.loads(build_probe(name).params_json())
        lines.append(f"  {name}: " + ", ".join(f"{key}={json.dumps(value)}" for key, value in defaults.items()))
    lines.append("  (match: --param preset=paper switches lr, max_steps, tau, min_cos and optimizer to the paper's values)")
    return "\n".join(lines)


def register(parser: argparse.ArgumentParser) -> None:
    from sweep.probes import PROBES

    parser.epilog = _parameters_help()
    parser.add_argument("probe", choices=list(PROBES), help="which probe to run")
    parser.add_argument("--model", required=True, help="timm name[.tag] or package.module:callable")
    parser.add_argument("--weights", default="random:0", help="pretrained | random:<seed> | file:<path> (default random:0)")
    parser.add_argument("--embed", default="pre_logits", help="pre_logits | cls:<block> | mean_patch:<block>")
    parser.add_argument("--src", required=True, help="source image (any format Pillow reads)")
    parser.add_argument("--tgt", required=True, help="target image")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="probe parameter (repeatable)")
    parser.add_argument("--out", required=True, help="folder for the PNGs and metrics.json")
    parser.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    parser.add_argument("--seed", type=int_at_least(0), default=0, help="seed of random starts and directions")
    parser.add_argument("--device", default=None, help="cpu | cuda (default: cuda when present)")


def run(args: argparse.Namespace) -> int:
    from sweep.params import parse_params
    from sweep.probes import build_probe

    params = parse_params(args.param)
    for key, value in params.items():
        if value is None:
            raise UserError(f"bad {args.probe} parameter {key}=: give a value (leave the --param out for the default)")
        if value == []:
            raise UserError(f"bad {args.probe} parameter {key}=[]: must be a non-empty list")
    probe = build_probe(args.probe, params)  # bad parameters fail before the model loads
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is a file, not a folder")
    src_img, tgt_img = _read_images(args.src, args.tgt)

    from sweep.encoders import load_encoder
    from sweep.data.images import amplified_difference, preprocess, to_uint8_image
    from sweep.probes.base import PairInput

    encoder = load_encoder(args.model, args.weights, args.embed, device=_device(args.device))
    pair = PairInput("pair", preprocess(src_img, encoder.preprocess), preprocess(tgt_img, encoder.preprocess))
    (result,) = list(probe.run(encoder, [pair], batch_size=16, seed=args.seed))
    if result.error:
        raise UserError(f"the {args.probe} probe failed on this pair: {result.error}")

    out.mkdir(parents=True, exist_ok=True)
    images = {"src": pair.src, "tgt": pair.tgt, **{k: v for k, v in result.images.items() if k == "adv"}}
    if "adv" in images:
        images["diff"] = amplified_difference(images["adv"], pair.src)
    written = {}
    for name, pixels in images.items():
        path = out / f"{name}.png"
        to_uint8_image(pixels).save(path)
        written[name] = str(path)

    report: dict[str, Any] = {
        "probe": args.probe, "model": encoder.name, "weights": encoder.weights, "embed": encoder.embed_point,
        "device": str(encoder.device), "params": json.loads(probe.params_json()), "images": written,
    }
    report.update(probe.cli_fields(result))
    text = dumps_json(report)
    (out / "metrics.json").write_text(text + "\n")
    if args.json:
        print(text)
    else:
        for line in probe.cli_summary(report):
            print(line)
        print(f"images and metrics.json written to {out}")
    return 0


def _read_images(src: str, tgt: str) -> tuple[Any, Any]:
    from sweep.data.images import ImageDecodeError, load_image_file

    try:
        return load_image_file(src), load_image_file(tgt)
    except ImageDecodeError as err:
        raise UserError(str(err)) from None


def _device(name: str | None) -> Any:
    import torch

    if name is None:
        return None
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but no CUDA device is available")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r} (use cpu or cuda)") from None
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device
