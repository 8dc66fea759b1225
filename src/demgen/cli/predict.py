"""`demgen predict`: a checkpoint applied to whole scenes, one GeoTIFF per output layer.

The checkpoint's task declares its named inputs and outputs (``task.spec``, see
:mod:`demgen.tasks.spec`); this command maps rasters onto those names and never looks at the
task's name: ``--input NAME=PATH`` names a layer (``--layer`` is an alias kept for old
scripts), and positional IMAGE paths are the shorthand for the first input (several of them,
or a glob, predict several scenes of a one-input task, resumably and, under a launcher,
shared among the ranks: :func:`demgen.inference.many.predict_many`).
"""

from __future__ import annotations

import argparse
import glob
import sys
import time
from pathlib import Path

from demgen.cli.common import EXIT_USAGE, add_precision_argument, positive_int
from demgen.errors import DemgenError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="predict heights for whole scenes from a checkpoint",
        description=(
            "Apply CHECKPOINT to whole scenes (any size; read window by window) and write "
            "each output layer the checkpoint declares (heights in metres for the DEM tasks) "
            "as float32 with the first input's CRS and transform. Windows overlap and are "
            "blended with a smooth weight, so there are no seams. The bands, normalization "
            "and training pixel size stored in the checkpoint are applied; pixels that are "
            "nodata in an input are nodata (-9999) in the output. Inputs go by name: "
            "--input NAME=PATH (the error lists the names a checkpoint needs; refinement "
            "reads ortho1, initial_dsm, ...); a positional IMAGE is the first input. One "
            "scene: OUTPUT is the file (a task with several outputs writes "
            "OUTPUT-stem_<name>.tif for each). Several IMAGEs or a glob (one-input "
            "checkpoints): OUTPUT is a folder and each result is OUTPUT/<input name>_dem.tif; "
            "scenes whose outputs exist are skipped, a scene that fails is reported and the "
            "others go on (exit 2 at the end), so a rerun predicts only what is missing. "
            "Under torchrun or srun each process predicts its share of the scenes on its own "
            "GPU. Files appear only when complete."
        ),
    )
    p.add_argument("checkpoint", type=Path, help="model checkpoint (.ckpt) from demo or fit")
    p.add_argument(
        "inputs", nargs="*", help="image raster(s), the first input; quoted globs are expanded"
    )
    p.add_argument("-o", "--output", type=Path, required=True, help="output file or folder")
    p.add_argument(
        "--input",
        "--layer",
        dest="layers",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="a named input layer of the checkpoint (image; ortho1, initial_dsm, ortho2, "
        "triangulation_error for refinement); repeat for each (--layer: the old name)",
    )
    p.add_argument("--overlap", type=float, default=0.25, help="window overlap 0..0.9 (0.25)")
    p.add_argument(
        "--window",
        type=positive_int,
        default=None,
        help="window size in pixels (default: twice the training chip size; the chip size "
        "for relative (per-chip) and refinement models)",
    )
    p.add_argument("--batch-size", type=positive_int, default=4, help="windows per batch (4)")
    p.add_argument(
        "--tta",
        action="store_true",
        help="average the 8 flips/rotations; band 2 = their std (uncertainty, m)",
    )
    p.add_argument(
        "--reference",
        type=Path,
        default=None,
        help="coarse DEM anchoring relative (global-shift) models per window",
    )
    g = p.add_argument_group(
        "diffusion checkpoints",
        "the whole scene is sampled at once, its windows blended at every denoising step",
    )
    g.add_argument("--seed", type=int, default=0,
                   help="noise seed; the same seed writes the same file (0)")  # fmt: skip
    g.add_argument("--samples", type=positive_int, default=1,
                   help="samples to draw: the output is their mean, OUTPUT-stem_std.tif "
                   "their per-pixel standard deviation (1)")  # fmt: skip
    g.add_argument("--steps", type=positive_int, default=None,
                   help="DDIM steps (default: the checkpoint's sample_steps)")  # fmt: skip
    g.add_argument("--guidance", type=float, default=None,
                   help="classifier-free guidance scale (default: the checkpoint's; 1: "
                   "plain conditional sampling)")  # fmt: skip
    g.add_argument(
        "--eta",
        type=float,
        default=None,
        help="DDIM eta: 0 deterministic, 1 DDPM-like (default: the checkpoint's)",
    )
    g.add_argument(
        "--attribute",
        dest="attributes",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="what to draw, for checkpoints trained with attributes: a fraction for each "
        "(snow, vegetation, water), e.g. --attribute snow=0.8; none: unconstrained",
    )
    p.add_argument("--cog", action="store_true", help="write Cloud-Optimized GeoTIFFs")
    add_precision_argument(p)
    p.add_argument(
        "--any-resolution",
        action="store_true",
        help="predict even if the pixel size differs from the training data's",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace existing outputs (else an existing OUTPUT file is refused, and the "
        "existing outputs in an OUTPUT folder are skipped)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def expand_inputs(patterns: list[str]) -> list[Path]:
    """Existing files as given; anything else is a glob that must match at least one file."""
    out: list[Path] = []
    for pat in patterns:
        if Path(pat).exists():
            out.append(Path(pat))
            continue
        hits = sorted(glob.glob(pat))
        if not hits:
            raise DemgenError(f"{pat}: no such file")
        out.extend(Path(h) for h in hits)
    return out


def parse_layers(items: list[str]) -> dict[str, Path]:
    """``NAME=PATH`` items as a dict; each file must exist, each name appear once."""
    layers: dict[str, Path] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise DemgenError(f"--input expects NAME=PATH, got {item!r}")
        if name in layers:
            raise DemgenError(f"--input {name} given twice")
        if not Path(path).exists():
            raise DemgenError(f"{path}: no such file")
        layers[name] = Path(path)
    return layers


def parse_attributes(items: list[str]) -> dict[str, float] | None:
    """``NAME=VALUE`` items as a dict of floats (None for none); each name once."""
    out: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            number = float(value)
        except ValueError:
            sep = ""
        if not sep or not name:
            raise DemgenError(f"--attribute expects NAME=VALUE (a number), got {item!r}")
        if name in out:
            raise DemgenError(f"--attribute {name} given twice")
        out[name] = number
    return out or None


def scenes(spec, images: list[Path], layers: dict[str, Path]) -> list[dict[str, Path]]:
    """The named inputs of each scene to predict: one scene of ``layers`` (a positional image
    being the first input), or one scene per image for a one-input checkpoint."""
    first = spec.inputs[0].name
    if not images and not layers:
        raise DemgenError(f"no input given: the checkpoint reads {spec.input_names} "
                          "(IMAGE or --input NAME=PATH)")  # fmt: skip
    if len(images) > 1:
        if layers or len(spec.inputs) > 1:
            raise DemgenError(f"several images are for one-input checkpoints; this one reads "
                              f"{spec.input_names}: name each with --input NAME=PATH")  # fmt: skip
        return [{first: p} for p in images]
    if images:
        if first in layers:
            raise DemgenError(f"{first} given twice (as IMAGE and as --input {first}=...)")
        layers = {first: images[0], **layers}
    return [layers]


def run(args: argparse.Namespace) -> int:
    if not 0.0 <= args.overlap <= 0.9:
        raise DemgenError(f"--overlap must be between 0 and 0.9, got {args.overlap}")
    images = expand_inputs(args.inputs)
    layers = parse_layers(args.layers)
    if not args.checkpoint.exists():
        raise DemgenError(f"{args.checkpoint}: no such checkpoint")

    from demgen.inference.many import predict_many
    from demgen.inference.ranks import world
    from demgen.inference.scene import output_files, output_paths, predict_scene, resolve_inputs
    from demgen.tasks.registry import load_task

    task = load_task(args.checkpoint)
    spec = task.spec
    jobs = scenes(spec, images, layers)
    for job in jobs:
        resolve_inputs(spec, job)  # one line naming what is missing, before anything runs
    first = spec.inputs[0].name
    outputs = output_paths([job[first] for job in jobs], args.output)
    options = dict(window=args.window, overlap=args.overlap, batch_size=args.batch_size,
                   precision=args.precision, tta=args.tta, reference=args.reference,
                   cog=args.cog, any_resolution=args.any_resolution,
                   progress=not args.quiet, seed=args.seed, samples=args.samples,
                   steps=args.steps, guidance=args.guidance, eta=args.eta,
                   attributes=parse_attributes(args.attributes))  # fmt: skip
    rank, size, _ = ranks = world()
    folder = len(jobs) > 1 or outputs[0] != args.output
    if not folder and rank == 0 and not args.overwrite:  # one named file: refused, as ever
        existing = [f for f in output_files(spec, outputs[0]).values() if f.exists()]
        if existing:
            raise DemgenError(f"{existing[0]} already exists (pass --overwrite to replace it)")
    if not folder and size == 1:  # one scene, one process: its error is the command's
        t0 = time.time()
        predict_scene(task, jobs[0], outputs[0], **options)
        files = list(output_files(spec, outputs[0]).values())
        if spec.diffusion and args.samples > 1:
            from demgen.inference.sampling import std_file

            files += [std_file(f) for f in files]
        written = ", ".join(str(p) for p in files)
        print(f"wrote {written} ({time.time() - t0:.1f} s)")
        return 0
    summary = predict_many(
        task, jobs, outputs, overwrite=args.overwrite or not folder, ranks=ranks,
        log=lambda line: print(line, flush=True),
        warn=lambda line: print(f"demgen predict: error: {line}", file=sys.stderr, flush=True),
        **options,
    )  # fmt: skip
    return EXIT_USAGE if summary.failed else 0
