"""Corpus listing speed against fsspec's own ``find`` on the same tree (median of 3 runs each).

python benchmarks/listing.py --files 20000
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import machine, save  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=20000)
    args = parser.parse_args()
    import fsspec

    from pipelines.engine.sources import list_corpus

    root = Path(tempfile.mkdtemp(prefix="voxflow-listing-"))
    for i in range(args.files):
        path = root / f"spk{i % 100:03d}" / f"book{i % 7}" / f"utt{i:06d}.flac"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"fLaC")
    fs = fsspec.filesystem("file")
    t_find, t_list = [], []
    for _ in range(3):
        t0 = time.perf_counter()
        found = fs.find(str(root))
        t_find.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        rows = list_corpus([str(root)])
        t_list.append(time.perf_counter() - t0)
    assert len(rows) == len(found) == args.files
    result = {
        "files": args.files,
        "fsspec_find_s": statistics.median(t_find),
        "list_corpus_s": statistics.median(t_list),
        "ratio": statistics.median(t_list) / statistics.median(t_find),
        "machine": machine(),
    }
    path = save(result, "listing")
    print(
        f"{args.files} files: fsspec find {result['fsspec_find_s']:.3f}s, voxflow listing "
        f"(ids, rel paths, loop guard) {result['list_corpus_s']:.3f}s, ratio {result['ratio']:.2f} -> {path}"
    )


if __name__ == "__main__":
    main()
