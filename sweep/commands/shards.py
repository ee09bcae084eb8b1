"""`vitsweep shards`: make WebDataset shards of image pairs, and check a shard set.

    vitsweep shards make --from-folder imagenet/val --out shards/val --pairing cross-class --pairs 50000
    vitsweep shards make --from-wds 's3://bucket/in1k-val-{0000..0063}.tar' --out shards/val
    vitsweep shards make --demo --out shards/demo --pairing all
    vitsweep shards check shards/val        # exit 0 clean, 1 errors found, 2 unusable input
"""

from __future__ import annotations

import argparse
import sys

from sweep.errors import UserError, int_at_least
from sweep.data.pairing import STRATEGIES

_SHOWN_ERRORS = 20  # make: skipped files printed before pointing at the manifest


def register(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    make = actions.add_parser("make", help="Write pair shards from an image folder, WebDataset shards or the demo set.")
    source = make.add_mutually_exclusive_group(required=True)
    source.add_argument("--from-folder", metavar="DIR", help="image folder, flat or one sub-folder per class")
    source.add_argument("--from-wds", metavar="URLS", nargs="+",
                        help="ImageNet-style WebDataset shards (jpg/png + cls): paths, globs, {a..b} patterns, s3://...")
    source.add_argument("--demo", action="store_true", help="the built-in demo photographs (scikit-image)")
    make.add_argument("--out", required=True, metavar="DIR", help="folder for pairs-NNNNNN.tar and manifest.json")
    make.add_argument("--pairing", default="random", choices=STRATEGIES, help="pairing strategy (default: random)")
    make.add_argument("--pairs", type=int_at_least(1), metavar="N",
                      help="number of pairs (default: 1000 or as many as exist; not for --pairing all)")
    make.add_argument("--shard-size", type=int_at_least(1), default=1000, metavar="N", help="pairs per shard (default: 1000)")
    make.add_argument("--seed", type=int_at_least(0), default=0, help="seed of the pairing (default: 0)")
    make.add_argument("--resize", type=int_at_least(1), metavar="PX",
                      help="re-encode images whose shorter side exceeds PX down to PX (default: original bytes)")
    make.add_argument("--target", metavar="KEY", help="fixed-target: the target image's key (default: drawn with the seed)")
    make.add_argument("--workers", type=int_at_least(0), metavar="N",
                      help="processes for checking images (default: CPU count, max 8; 0: in this process)")
    make.add_argument("--force", action="store_true", help="replace a shard set already in --out")

    check = actions.add_parser("check", help="Validate a shard set: decode every image, compare with the manifest.")
    check.add_argument("location", metavar="DIR", help="shard folder (or a shard URL/pattern)")
    check.add_argument("--workers", type=int_at_least(0), default=2, metavar="N",
                       help="decoding processes (default: 2; 0: in this process)")


def run(args: argparse.Namespace) -> int:
    return _make(args) if args.action == "make" else _check(args)


def _make(args: argparse.Namespace) -> int:
    from sweep.data import sources
    from sweep.data.build import make_shards

    if args.from_folder is not None:
        listing = sources.list_folder(args.from_folder)
    elif args.from_wds is not None:
        listing = sources.list_wds(args.from_wds)
    else:
        listing = sources.list_demo()
    manifest = make_shards(
        listing,
        args.out,
        pairing=args.pairing,
        pairs=args.pairs,
        seed=args.seed,
        shard_size=args.shard_size,
        resize=args.resize,
        target=args.target,
        workers=args.workers,
        force=args.force,
        progress=True,
    )
    counts = manifest["counts"]
    errors = manifest["errors"]
    for line in errors[:_SHOWN_ERRORS]:
        print(f"skipped: {line}", file=sys.stderr)
    if len(errors) > _SHOWN_ERRORS:
        print(f"skipped: ... and {len(errors) - _SHOWN_ERRORS} more (see {args.out}/manifest.json)", file=sys.stderr)
    print(
        f"wrote {counts['pairs']} {args.pairing} pairs of {counts['images']} images "
        f"({counts['labels']} labels) in {counts['shards']} shard(s) to {args.out}; "
        f"{counts['errors']} bad file(s) skipped"
    )
    return 0


def _check(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from sweep.data.shards import check_shards

    with tqdm(desc="checking pairs", unit="pair", leave=False, dynamic_ncols=True, disable=None) as bar:
        report = check_shards(args.location, workers=args.workers, progress=bar.update)
    if report.pairs == 0 and not report.errors:
        raise UserError(f"{args.location}: the shards hold no samples")
    print(
        f"{report.location}: {len(report.shards)} shard(s), {report.pairs} pairs, "
        f"{report.pairs_ok} ok, {len(report.errors)} error(s), {len(report.labels)} labels seen"
    )
    if report.source_errors:
        print(f"note: {len(report.source_errors)} source file(s) were skipped when the set was made:")
        for line in report.source_errors:
            print(f"  skipped: {line}")
    for line in report.errors:
        print(f"error: {line}")
    return 1 if report.errors else 0
