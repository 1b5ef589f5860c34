"""Image-token throughput on this CPU (issue: image-token stage).

* visual_words: images/s including JPEG decode + resize + encode (codebook fit timed apart);
* dalle: the real architecture (n_hid=256, 8,192 codes, random weights: speed does not depend on
  them) on 256px images, one image per call vs batched, in the same run.

    python benchmarks/bench_image_tokens.py [--n-images 400] [--dalle-images 8]
"""
import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from deflate.data.image_tokens import Dalle, VisualWords, load_images
from deflate.data.synth import make_product, render_image


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-images", type=int, default=400)
    ap.add_argument("--dalle-images", type=int, default=8)
    ap.add_argument("--dalle-batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    res = {"threads": args.threads}
    with tempfile.TemporaryDirectory() as d:
        paths = []
        for i in range(args.n_images):
            p = Path(d) / f"{i}.jpg"
            render_image(make_product(i, 0, 0.25, 0.0), 0).save(p, quality=90)
            paths.append(str(p))
        vw = VisualWords(grid=8, vocab_size=512, resize=64, seed=0)
        t = time.perf_counter()
        imgs = [im for _, im, _ in load_images(paths, 64, "fit", progress=False)]
        vw.fit(imgs)
        res["visual_words_fit_s"] = round(time.perf_counter() - t, 2)
        t = time.perf_counter()
        batch = []
        for _, im, _ in load_images(paths, 64, "encode", progress=False):  # decode + resize + encode
            batch.append(im)
            if len(batch) == 64:
                vw.encode(batch)
                batch = []
        if batch:
            vw.encode(batch)
        dt = time.perf_counter() - t
        res["visual_words_images_per_s"] = round(args.n_images / dt, 1)

        from dall_e.encoder import Encoder
        enc_path = Path(d) / "encoder_random_n_hid256.pkl"
        torch.save(Encoder(n_hid=256, vocab_size=8192), enc_path)
        dalle = Dalle(str(enc_path), resize=256, batch_size=args.dalle_batch)
        imgs = [im for _, im, _ in load_images(paths[: args.dalle_images], 256, "dalle", progress=False)]
        dalle.encode(imgs[:1])  # warm-up
        t = time.perf_counter()
        single = [dalle.encode([im]) for im in imgs]
        res["dalle_one_at_a_time_s_per_image"] = round((time.perf_counter() - t) / len(imgs), 3)
        t = time.perf_counter()
        batched = dalle.encode(imgs)
        res["dalle_batched_s_per_image"] = round((time.perf_counter() - t) / len(imgs), 3)
        res["dalle_batched_speedup"] = round(res["dalle_one_at_a_time_s_per_image"] / res["dalle_batched_s_per_image"], 2)
        res["dalle_batched_equals_single"] = bool(np.array_equal(np.concatenate(single), batched))
        res["dalle_batch_size"] = args.dalle_batch
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
