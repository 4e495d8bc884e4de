"""Pack an image folder into array_record shards for the grain pipeline.

    python -m resshift_jax.data.pack --src DIR --out DIR [--num_shards N] [--exts png,jpg]
    python -m resshift_jax.data.pack --src DIR --out DATA_DIR --tfds_name NAME   # a TFDS dataset

Each record holds the original encoded file bytes (no re-encoding, so pixels are unchanged)
and the relative path; see sources.encode_record. Files are taken in the sorted recursive
order of `imageio.list_images` (extensions: imageio.IMAGE_EXTS unless --exts) and dealt
round-robin over the shards.
"""

from __future__ import annotations

import argparse
import pathlib

from resshift_jax.data import sources
from resshift_jax.imageio import IMAGE_EXTS, list_images


def pack(src, out, num_shards: int = 4, exts=IMAGE_EXTS) -> list[str]:
    """Write `out/images-0000i-of-0000N.array_record`; returns the shard paths."""
    from array_record.python.array_record_module import ArrayRecordWriter

    src, out = pathlib.Path(src), pathlib.Path(out)
    files, _ = list_images(src, exts)
    if not files:
        raise FileNotFoundError(f"no images with extensions {exts} under {src}")
    num_shards = max(1, min(num_shards, len(files)))
    out.mkdir(parents=True, exist_ok=True)
    paths = [str(out / f"images-{i:05d}-of-{num_shards:05d}.array_record") for i in range(num_shards)]
    writers = [ArrayRecordWriter(p, "group_size:1") for p in paths]
    try:
        for k, f in enumerate(files):
            rel = str(pathlib.Path(f).relative_to(src))
            writers[k % num_shards].write(sources.encode_record(rel, pathlib.Path(f).read_bytes()))
    finally:
        for w in writers:
            w.close()
    return paths


def pack_tfds(src, data_dir, name: str = "hr_images", exts=IMAGE_EXTS, version: str = "1.0.0") -> str:
    """Write a TFDS dataset `name` (split 'train', array_record, record order = sorted files)
    under `data_dir` without TensorFlow: features `image` (tfds Image holding the original
    encoded bytes) and `name` (relative path). Returns the prepared version folder."""
    import tensorflow_datasets as tfds

    src = pathlib.Path(src)
    files, _ = list_images(src, exts)
    if not files:
        raise FileNotFoundError(f"no images with extensions {exts} under {src}")

    def _info(self):
        feats = tfds.features.FeaturesDict(dict(image=tfds.features.Image(shape=(None, None, 3)),
                                                name=tfds.features.Text()))
        return tfds.core.DatasetInfo(builder=self, features=feats, disable_shuffling=True,
                                     description=f"HR images from {src}")

    def _examples(self):
        for k, f in enumerate(files):
            yield k, dict(image=pathlib.Path(f).read_bytes(), name=str(pathlib.Path(f).relative_to(src)))

    cls = type("".join(w.capitalize() for w in name.split("_")), (tfds.core.GeneratorBasedBuilder,),
               dict(name=name, VERSION=tfds.core.Version(version), _info=_info,
                    _split_generators=lambda self, dl: {"train": self._generate_examples()},
                    _generate_examples=_examples), skip_registration=True)
    builder = cls(data_dir=str(data_dir), file_format="array_record")
    cfg = tfds.download.DownloadConfig(compute_stats=tfds.download.ComputeStatsMode.SKIP)
    builder.download_and_prepare(download_config=cfg)
    return str(builder.data_dir)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", required=True, help="image folder (searched recursively)")
    ap.add_argument("--out", required=True, help="output folder for the shards")
    ap.add_argument("--num_shards", type=int, default=4)
    ap.add_argument("--exts", default=",".join(e.lstrip(".") for e in IMAGE_EXTS))
    ap.add_argument("--tfds_name", default="", help="write a TFDS dataset of this name under --out instead")
    a = ap.parse_args(argv)
    if a.tfds_name:
        print(f"wrote TFDS dataset {pack_tfds(a.src, a.out, a.tfds_name, tuple(a.exts.split(',')))}")
        return
    paths = pack(a.src, a.out, a.num_shards, tuple(a.exts.split(",")))
    print(f"wrote {len(paths)} shards to {a.out}")


if __name__ == "__main__":
    main()
