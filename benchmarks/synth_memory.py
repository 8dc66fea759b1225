"""Peak-memory benchmark: one 8192 x 8192 synthetic scene streamed in 512-pixel tiles.

Prints peak RSS and elapsed time; peak memory should depend on the tile size, not the scene.
Usage: python benchmarks/synth_memory.py [OUT_DIR] [--size N] [--tile T] [--relief R]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

from demgen.data.synth import SceneConfig, generate_scene


def main(argv: list[str] | None = None) -> int:
    """Generate one large scene and report peak RSS (MiB) and wall time (s)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", default=None, help="output folder (default: a temp dir)")
    ap.add_argument("--size", type=int, default=8192)
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--relief", default="alpine")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out) if args.out else Path(tmp) / "scene"
        cfg = SceneConfig(size=args.size, tile=args.tile, relief=args.relief, seed=args.seed)
        t0 = time.perf_counter()
        generate_scene(out, cfg, progress=True)
        elapsed = time.perf_counter() - t0
        size_mb = sum(p.stat().st_size for p in out.iterdir()) / 2**20
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(
        f"size={args.size} tile={args.tile} relief={args.relief}: "
        f"peak RSS {peak_kib / 1024:.0f} MiB, elapsed {elapsed:.1f} s, output {size_mb:.0f} MiB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
