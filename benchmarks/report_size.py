"""How large and how slow is the HTML report for many cases?

    .venv/bin/python benchmarks/report_size.py --cases 100 --out bench_out/report100

Synthesises ``--cases`` organ test images (``synth --kind organ``), takes each ground-truth labelmap eroded by one
voxel as a "prediction" (labelmap + marching-cubes mesh, as a voxel method writes them), and builds the report
with metrics against the ground truth. Prints the file size, the size per case and the build time.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench_out/report100"))
    parser.add_argument("--cases", type=int, default=100)
    args = parser.parse_args()

    import numpy as np
    from scipy import ndimage

    from implicitseg.data.synthetic import write_synthetic_dataset
    from implicitseg.evaluation.report import build_report
    from implicitseg.io.dataset import case_id
    from implicitseg.io.images import Volume, read_labelmap, write_image
    from implicitseg.io.meshes import write_mesh
    from implicitseg.meshing.isosurface import labelmap_to_mesh

    dataset = args.out / "dataset"
    if not (dataset / "dataset.json").is_file():
        write_synthetic_dataset(dataset, kind="organ", n_cases=1, n_test=args.cases, seed=2)
    predictions = args.out / "predictions"
    for label_path in sorted((dataset / "labelsTs").iterdir()):
        identifier = case_id(label_path)
        case_dir = predictions / identifier
        if (case_dir / "prediction.json").is_file():
            continue
        truth = read_labelmap(label_path)
        eroded = np.where(ndimage.binary_erosion(truth.array > 0), truth.array, 0).astype(np.uint8)
        predicted = Volume(eroded, truth.affine_lps)
        write_image(case_dir / "labelmap.nii.gz", predicted)
        write_mesh(case_dir / "mesh.vtk", labelmap_to_mesh(predicted))
        (case_dir / "prediction.json").write_text(json.dumps(
            {"case": identifier, "image": str(dataset / "imagesTs" / f"{identifier}.nii.gz"),
             "method": "eroded-truth", "preset": "-", "mesh_space": "LPS"}))
    start = time.perf_counter()
    written = build_report([predictions], args.out / "report.html", gt=dataset)
    elapsed = time.perf_counter() - start
    print(f"{written['n_cases']} cases: {written['size_bytes'] / 1e6:.1f} MB "
          f"({written['size_bytes'] / 1e3 / written['n_cases']:.0f} kB per case), built in {elapsed:.0f} s "
          f"({elapsed / written['n_cases']:.2f} s per case, metrics included)")


if __name__ == "__main__":
    main()
