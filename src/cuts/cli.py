"""The ``cuts`` command line: train, embed, segment, evaluate, bench."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from cuts import __version__


class _Bar:
    """A tqdm progress bar that tolerates being updated with absolute positions."""

    def __init__(self, desc: str, total: int, unit: str = "it") -> None:
        from tqdm.auto import tqdm

        self._bar = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, file=sys.stderr)

    def to(self, done: int, total: int | None = None, **postfix: Any) -> None:
        if total is not None and total != self._bar.total:
            self._bar.total = total
        self._bar.update(done - self._bar.n)
        if postfix:
            self._bar.set_postfix(postfix, refresh=False)

    def close(self) -> None:
        self._bar.close()


def _train_settings(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("steps", "max_seconds", "lam", "temperature", "batch_size"):
        value = getattr(args, key, None)
        if value is not None:
            out[key] = value
    return out


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return value


def _add_train_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training")
    g.add_argument("--steps", type=int, help="optimiser updates (default: TrainConfig.steps)")
    g.add_argument("--max-seconds", type=float, help="time budget for training, in seconds")
    g.add_argument("--lam", type=float, help="weight of the contrastive loss")
    g.add_argument("--temperature", type=float, help="contrastive temperature")
    g.add_argument("--batch-size", type=int, help="images per step")
    g.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default auto)")


def _read_images(paths: list[str]) -> list[Any]:
    from cuts.images import as_image_list
    from cuts.io import read_image

    images = []
    for p in paths:
        images.extend(as_image_list(read_image(p).data))
    return images


def _expand(paths: list[str]) -> list[str]:
    from cuts.io import list_images

    out: list[str] = []
    for p in paths:
        out.extend(str(f) for f in list_images(p)) if Path(p).is_dir() else out.append(p)
    if not out:
        raise ValueError("no image files were given.")
    return out


def cmd_train(args: argparse.Namespace) -> int:
    from cuts.checkpoint import save_model
    from cuts.training import train

    images = _read_images(_expand(args.images))
    bar = _Bar("training", 1, "step")
    try:
        model = train(
            images, seed=args.seed, device=args.device,
            callback=lambda p: bar.to(p.step, p.total_steps, loss=f"{p.loss:.4f}"),
            **_train_settings(args),
        )
    finally:
        bar.close()
    save_model(model, args.output)
    info = model.metadata["training"]
    print(
        f"trained on {info['n_images']} image(s) for {info['steps_done']} steps in {info['seconds']:.1f} s "
        f"on {info['device']}; final loss {info['final_loss']:.4f}; saved {args.output}"
    )
    return 0


def _load(args: argparse.Namespace, in_channels: int) -> Any:
    from cuts.checkpoint import load_default_model, load_model

    if args.model:
        return load_model(args.model, in_channels=in_channels, device=args.device)
    return load_default_model(in_channels, device=args.device)


def cmd_embed(args: argparse.Namespace) -> int:
    from cuts.embedding import embed_to_file
    from cuts.images import n_channels
    from cuts.io import stem

    files = _expand(args.images)
    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    bar = _Bar("embedding", len(files), "image")
    model = None
    try:
        for i, path in enumerate(files):
            for j, img in enumerate(_read_images([path])):
                model = model or _load(args, n_channels(img))
                name = stem(path) + (f"_z{j:03d}" if j else "") + ".npy"
                # streamed tile by tile into a temp file, renamed when complete: memory stays
                # bounded whatever the image size
                embed_to_file(model, img, out_dir / name)
            bar.to(i + 1)
    finally:
        bar.close()
    print(f"wrote embeddings of {len(files)} file(s) to {out_dir}")
    return 0


def cmd_segment(args: argparse.Namespace) -> int:
    import numpy as np
    import tifffile

    from cuts.atomic import atomic_path
    from cuts.embedding import embed
    from cuts.hierarchy import condense
    from cuts.images import n_channels
    from cuts.io import stem

    files = _expand(args.images)
    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = None
    if args.train:
        from cuts.training import train

        images = _read_images(files)
        bar = _Bar("training", 1, "step")
        model = train(images, seed=args.seed, device=args.device,
                      callback=lambda p: bar.to(p.step, p.total_steps, loss=f"{p.loss:.4f}"),
                      **_train_settings(args))
        bar.close()
    bar = _Bar("segmenting", len(files), "image")
    for i, path in enumerate(files):
        slices = _read_images([path])
        model = model or _load(args, n_channels(slices[0]))
        maps = []
        for j, img in enumerate(slices):
            h = condense(embed(model, img), seed=args.seed)
            suffix = f"_z{j:03d}" if len(slices) > 1 else ""
            h.save(out_dir / f"{stem(path)}{suffix}_hierarchy.npz")
            persistent = h.persistent()
            maps.append(persistent.astype(np.uint16 if persistent.max() < 65536 else np.uint32))
        with atomic_path(out_dir / f"{stem(path)}_persistent.tif") as tmp:
            tifffile.imwrite(tmp, maps[0] if len(maps) == 1 else np.stack(maps))
        bar.to(i + 1)
    bar.close()
    print(f"wrote hierarchies and persistent label maps of {len(files)} file(s) to {out_dir}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from cuts.atomic import atomic_path
    from cuts.evaluation import DEFAULT_METHODS, evaluate_folder, format_table

    bars: dict[str, _Bar] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if stage not in bars:
            for b in bars.values():
                b.close()
            bars[stage] = _Bar(stage, total, "step" if stage == "train" else "image")
        bars[stage].to(done, total)

    model = None
    if args.model:
        from cuts.checkpoint import load_model

        model = load_model(args.model, device=args.device)
    methods = args.methods.split(",") if args.methods else DEFAULT_METHODS
    try:
        result = evaluate_folder(
            args.images, args.masks or args.images, methods=methods, clicks=not args.no_clicks,
            model=model, seed=args.seed, device=args.device, progress=progress, workers=args.workers,
            **_train_settings(args),
        )
    finally:
        for b in bars.values():
            b.close()
    print(format_table(result))
    if args.json:
        with atomic_path(args.json) as tmp:
            tmp.write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from cuts.bench import run_bench

    run_bench(json_path=args.json, quick=args.quick, sections=args.only)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cuts", description="CUTS: label-free multi-granular segmentation.")
    parser.add_argument("--version", action="version", version=f"cuts {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train an encoder on images (files or folders)")
    p.add_argument("images", nargs="+")
    p.add_argument("-o", "--output", required=True, help="checkpoint to write (.safetensors)")
    _add_train_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("embed", help="write per-pixel embeddings (.npy, H x W x 128) of images")
    p.add_argument("images", nargs="+")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--model", help="checkpoint (default: the bundled encoder)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("segment", help="write the hierarchy (.npz) and persistent label map (.tif) of images")
    p.add_argument("images", nargs="+")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--model", help="checkpoint (default: the bundled encoder)")
    p.add_argument("--train", action="store_true", help="train an encoder on these images first")
    _add_train_options(p)
    p.set_defaults(func=cmd_segment)

    p = sub.add_parser("evaluate", help="train, segment and score against expert masks")
    p.add_argument("--images", required=True, help="folder of images")
    p.add_argument("--masks", help="folder of masks NAME.ext or NAME_seg.ext (default: the images folder)")
    p.add_argument("--json", help="also write the results as JSON here")
    p.add_argument("--model", help="use this checkpoint instead of training")
    p.add_argument("--methods", help="comma-separated subset of methods")
    p.add_argument("--no-clicks", action="store_true", help="skip the simulated click workflow")
    p.add_argument(
        "--workers", type=_positive_int, default=None,
        help="images segmented and scored at once (default: one per CPU core up to 4; 1 for images over 1024x1024)",
    )
    _add_train_options(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("bench", help="print speed and memory benchmarks")
    p.add_argument("--json", help="also write the results as JSON here")
    p.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke test")
    p.add_argument("--only", nargs="+", choices=["train", "embed", "hierarchy"], metavar="SECTION",
                   help="run only these sections (train, embed, hierarchy); with --json, an existing "
                        "file keeps the results of the others")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``cuts`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from cuts.checkpoint import CheckpointError
    from cuts.images import ImageError

    try:
        return int(args.func(args) or 0)
    except (ImageError, CheckpointError, ValueError, FileNotFoundError, FileExistsError) as exc:
        print(f"cuts {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cuts {args.command}: interrupted; nothing was written.", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
