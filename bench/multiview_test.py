"""Multi-view testing on the model side: videos/s with a video's views batched through the network against one view
at a time.

For each config, the test pipeline's views of one video (``num_clips`` x ThreeCrop / CenterCrop, e.g. 10 x 3 = 30
clips) are made once as uint8 (what the loader workers hand over) and scored by the tester's own
``sts3d.engine.video_test.video_scores`` (normalisation on the device, the backbone and head, ``average_clips``)
with the views run in chunks of: all of them at once, the config's ``max_testing_views`` (if set), 1, and any
``--chunks``. (The tester itself batches ``max_testing_views`` on a GPU and runs one view at a time on a CPU,
where this benchmark found that fastest.) The
variants alternate in one process, ``--rounds`` videos each; prints videos/s and the ratio to one view at a time.
The scores of every chunking are checked to agree. Decoding is measured separately (``data_loading.py``: one
decode for all views of a video).

    python bench/multiview_test.py [--configs x3d/x3d_s_13x6_STS_k400_video.py] [--threads 2] [--device cuda]
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from sts3d.config import load_config
from sts3d.data.pipeline import clip_settings, num_segments
from sts3d.engine.video_test import video_scores
from sts3d.models.builder import build_recognizer

CONFIGS = Path(__file__).resolve().parents[1] / "Spatiotemporal_Finetuning" / "configs" / "recognition"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=["x3d/x3d_s_13x6_STS_k400_video.py"],
                        help="paths under configs/recognition/")
    parser.add_argument("--rounds", type=int, default=3, help="videos per variant")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--chunks", type=int, nargs="*", default=[], help="more chunk sizes (views per forward)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"device={args.device} threads={args.threads} videos per variant={args.rounds} torch={torch.__version__}")
    for name in args.configs:
        cfg = load_config(CONFIGS / name)
        pipeline = cfg.data.test.pipeline
        settings, _ = clip_settings(pipeline, "data.test.pipeline")
        crops = 3 if settings.test_crop == "three" else 1
        views = torch.randint(0, 256, (settings.num_clips * crops, 3, settings.clip_len, settings.crop_size,
                                       settings.crop_size), dtype=torch.uint8)
        model = build_recognizer({**cfg.model, "num_segments": num_segments(pipeline)}).to(args.device).eval()
        average = cfg.model.test_cfg.get("average_clips", "prob")
        chunks = {"all views at once": len(views), "one view at a time": 1}
        max_views = cfg.model.test_cfg.get("max_testing_views")
        if max_views:
            chunks = {"all views at once": len(views), f"max_testing_views={max_views}": max_views,
                      "one view at a time": 1}
        chunks.update({f"{n} views at a time": n for n in args.chunks if n not in (1, max_views)})
        # warm-up, and every chunking gives the same scores
        scores = {key: video_scores(model, views, None, average, chunk=chunk) for key, chunk in chunks.items()}
        reference = scores["one view at a time"]
        for key, value in scores.items():
            torch.testing.assert_close(value, reference, rtol=1e-4, atol=1e-5, msg=f"{key}: scores differ")
        times: dict[str, list[float]] = {key: [] for key in chunks}
        for _ in range(args.rounds):
            for key, chunk in chunks.items():
                if args.device == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                video_scores(model, views, None, average, chunk=chunk)
                if args.device == "cuda":
                    torch.cuda.synchronize()
                times[key].append(time.perf_counter() - start)
        one = statistics.median(times["one view at a time"])
        print(f"\n{name}: {len(views)} views of {settings.clip_len}x{settings.crop_size}x{settings.crop_size}")
        for key, values in times.items():
            seconds = statistics.median(values)
            print(f"  {key:28s} {1 / seconds:8.3f} videos/s  ({one / seconds:.2f}x)", flush=True)


if __name__ == "__main__":
    main()
