"""The fast video path: PyAV / torchcodec frames equal decord's, fused training crops, normalisation, multi-clip mode.

Videos are tiny H.264 files written with PyAV with x264's default B-frames (so non-reference frames exist and the
skipping of their decoding is exercised) and short keyframe intervals (so clips cross keyframes).
"""
from pathlib import Path

import av
import cv2
import decord
import numpy as np
import pytest
import torch

from sts3d.data.sampling import sample_frame_indices
from sts3d.data.transforms import (crop_frames, random_resized_crop_box, resize_frames, resized_crops,
                                   short_side_size, source_box, three_crop_boxes)
from sts3d.data.mp4 import read_sample_table
from sts3d.data.video import (MEAN, STD, ClipSettings, PyAVReader, TorchcodecReader, VideoDataset, VideoRecord,
                              normalize_clips, open_video, read_frames, to_tensor)


def write_bframe_mp4(path, frames, gop):
    """``frames`` (T, H, W, 3) uint8 -> H.264 with B-frames (x264 defaults, lossy) and a keyframe every ``gop``."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": "20", "preset": "medium", "g": str(gop), "keyint_min": str(gop), "bf": "3"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    rng = np.random.default_rng(0)
    t = np.arange(90)[:, None, None, None]
    y, x = (grid[None, :, :, None] for grid in np.mgrid[:64, :96])
    # moving texture plus noise: x264 picks B-frames, and every frame differs
    frames = ((x * 3 + t * 4) % 256 + (y * 2) % 64 + rng.integers(0, 30, (90, 64, 96, 3))).astype(np.uint8)
    return write_bframe_mp4(tmp_path_factory.mktemp("fast") / "clip.mp4", frames, gop=24)


def decord_frames(path, indices):
    return decord.VideoReader(str(path), num_threads=1).get_batch(list(indices)).asnumpy()


def test_the_video_has_nonreference_frames(video):
    container = av.open(str(video))
    stream = container.streams.video[0]
    stream.codec_context.skip_frame = "NONREF"
    assert len(list(container.decode(stream))) < 90  # otherwise the skipping below is not tested


@pytest.mark.parametrize("start,interval,length", [(0, 2, 32), (5, 2, 32), (23, 1, 20), (30, 8, 7), (71, 3, 6)])
def test_pyav_frames_equal_decords(video, start, interval, length):
    indices = np.arange(start, start + interval * length, interval) % 90  # the last case wraps around
    reader = open_video(video, "pyav")
    assert len(reader) == len(decord.VideoReader(str(video)))
    np.testing.assert_array_equal(read_frames(reader, indices), decord_frames(video, indices))


def test_pyav_reader_is_reusable_and_takes_any_order(video):
    reader = PyAVReader(video)
    for indices in ([40, 3, 3, 88], [0], [89, 88, 87]):
        np.testing.assert_array_equal(reader.get(indices), decord_frames(video, indices))
    with pytest.raises(IndexError):
        reader.get([90])


def _torchcodec_or_skip(video):
    try:
        return TorchcodecReader(video)
    except (ImportError, RuntimeError, OSError) as error:  # no torchcodec, or FFmpeg's shared libraries missing
        pytest.skip(f"torchcodec unusable here (pip install torchcodec; apt-get install ffmpeg): {error}")


def test_torchcodec_frames_equal_decords(video):
    reader = _torchcodec_or_skip(video)
    indices = sample_frame_indices(90, 16, 2, 3, test_mode=True)
    assert len(reader) == 90
    # equal, not merely close: torchcodec and decord convert with the same swscale path
    np.testing.assert_array_equal(read_frames(reader, indices), decord_frames(video, indices))


@pytest.mark.parametrize("decoder", ["decord", "pyav", "torchcodec"])
def test_test_views_are_the_seeds_two_step_resize(video, decoder):
    if decoder == "torchcodec":
        _torchcodec_or_skip(video)
    settings = ClipSettings(clip_len=8, frame_interval=2, num_clips=2, short_side=48, crop_size=48,
                            test_crop="three")
    views, label, skipped = VideoDataset([VideoRecord(video, 3, "x:1")], settings, test_mode=True,
                                         decoder=decoder)[0]
    frames = decord_frames(video, sample_frame_indices(90, 8, 2, 2, test_mode=True))
    frames = np.stack([cv2.resize(f, (72, 48), interpolation=cv2.INTER_LINEAR) for f in frames])
    expected = []
    for box in three_crop_boxes((48, 72), 48):
        clip = torch.from_numpy(crop_frames(frames, box).copy()).float()
        clip = (clip - torch.tensor(MEAN)) / torch.tensor(STD)
        expected.append(clip.view(2, 8, 48, 48, 3).permute(0, 4, 1, 2, 3))
    assert (label, skipped) == (3, 0)
    torch.testing.assert_close(views, torch.cat(expected), rtol=0, atol=0)


def test_fused_resize_maps_the_box_to_the_source():
    assert source_box((10, 20, 110, 220), (256, 454), (320, 568)) == (13, 25, 138, 275)
    assert source_box((0, 0, 454, 256), (256, 454), (320, 568)) == (0, 0, 568, 320)
    frames = np.random.default_rng(3).integers(0, 256, (3, 80, 120, 3), dtype=np.uint8)
    for flip in (False, True):
        out = resized_crops(frames, (10, 5, 90, 65), (32, 32), flip)
        expected = resize_frames(crop_frames(frames, (10, 5, 90, 65)), (32, 32))
        np.testing.assert_array_equal(out, expected[:, :, ::-1] if flip else expected)
    # close to the seed's two resizes: the same part of the scene, one interpolation instead of two
    rng = np.random.default_rng(4)
    smooth = cv2.GaussianBlur(frames[0], (0, 0), 4)[None]
    resized = short_side_size(80, 120, 64)
    box = random_resized_crop_box(resized, rng)
    seed = resize_frames(crop_frames(resize_frames(smooth, resized), box), (32, 32))
    fused = resized_crops(smooth, source_box(box, resized, (80, 120)), (32, 32))
    assert np.abs(seed.astype(int) - fused).mean() < 3


@pytest.mark.parametrize("fused", [True, False])
def test_train_clips_shape_dtype_and_normalisation(video, fused):
    settings = ClipSettings(clip_len=8, frame_interval=2, short_side=48, crop_size=32, fused_train_resize=fused)
    data = VideoDataset([VideoRecord(video, 1, "x:1")], settings, seed=7)
    clip, label, skipped = data[0]
    assert clip.shape == (1, 3, 8, 32, 32) and clip.dtype == torch.float32 and clip.is_contiguous()
    assert (label, skipped) == (1, 0)
    pixels = clip * torch.tensor(STD).view(3, 1, 1, 1) + torch.tensor(MEAN).view(3, 1, 1, 1)
    torch.testing.assert_close(pixels, pixels.round(), atol=1e-3, rtol=0)  # uint8 values, normalised per channel
    assert pixels.min() >= -1e-3 and pixels.max() <= 255 + 1e-3


def test_train_output_equals_a_direct_computation(video):
    """The fast train path against crop, resize, flip, normalise written out plainly, with the same draws."""
    settings = ClipSettings(clip_len=8, frame_interval=2, short_side=48, crop_size=32)
    data = VideoDataset([VideoRecord(video, 0, "x:1")], settings, decoder="pyav")
    for seed in range(4):
        clip = data.load(data.records[0], np.random.default_rng(seed))
        rng = np.random.default_rng(seed)
        frames = decord_frames(video, sample_frame_indices(90, 8, 2, 1, rng=rng))
        box = random_resized_crop_box((48, 72), rng)
        x1, y1, x2, y2 = source_box(box, (48, 72), (64, 96))
        crops = np.stack([cv2.resize(f[y1:y2, x1:x2], (32, 32), interpolation=cv2.INTER_LINEAR) for f in frames])
        if rng.random() < 0.5:
            crops = crops[:, :, ::-1]
        expected = (torch.from_numpy(crops.copy()).float() - torch.tensor(MEAN)) / torch.tensor(STD)
        torch.testing.assert_close(clip[0], expected.permute(3, 0, 1, 2), rtol=0, atol=0)


def test_several_clips_from_one_decode(video, monkeypatch):
    calls = []
    get = PyAVReader.get
    monkeypatch.setattr(PyAVReader, "get", lambda self, indices: calls.append(len(indices)) or get(self, indices))
    settings = ClipSettings(clip_len=8, frame_interval=2, short_side=48, crop_size=32, clips_per_decode=4)
    clips, _, _ = VideoDataset([VideoRecord(video, 0, "x:1")], settings, decoder="pyav", seed=1)[0]
    assert clips.shape == (4, 3, 8, 32, 32) and len(calls) == 1
    # different starts and crops: no two clips alike
    assert all(not torch.equal(clips[i], clips[j]) for i in range(4) for j in range(i))
    test = VideoDataset([VideoRecord(video, 0, "x:1")], ClipSettings(clip_len=8, short_side=48, crop_size=48,
                                                                     clips_per_decode=4), test_mode=True)
    assert test[0][0].shape == (1, 3, 8, 48, 48)  # test views ignore it


# ----------------------------------------------------------------------------------- the MP4 sample-table reader

def write_video(path, frames, codec="libx264", options=None, container_options=None, colour=None):
    """``frames`` -> ``path`` in the container its suffix names (PyAV / FFmpeg muxers)."""
    with av.open(str(path), "w", options=container_options or {}) as container:
        stream = container.add_stream(codec, rate=25, options=options or {})
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.codec_context.thread_count = 1
        for name, value in (colour or {}).items():
            setattr(stream.codec_context, name, value)
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def small_frames():
    rng = np.random.default_rng(5)
    t = np.arange(40)[:, None, None, None]
    y, x = (grid[None, :, :, None] for grid in np.mgrid[:64, :96])
    return ((x * 3 + t * 4) % 256 + (y * 2) % 64 + rng.integers(0, 30, (40, 64, 96, 3))).astype(np.uint8)


def test_mp4_tables_give_the_demuxers_packets(video):
    table = read_sample_table(video)
    assert table is not None and table.codec == "h264" and (table.width, table.height) == (96, 64)
    container = av.open(str(video))
    stream = container.streams.video[0]
    packets = [packet for packet in container.demux(stream) if packet.size > 0]
    assert stream.codec_context.extradata == table.extradata
    np.testing.assert_array_equal([p.pos for p in packets], table.offsets)
    np.testing.assert_array_equal([p.size for p in packets], table.sizes)
    np.testing.assert_array_equal([p.is_keyframe for p in packets], table.keyframes)
    shift = table.pts - np.array([p.pts for p in packets])  # FFmpeg moves times by the edit list's start
    assert len(set(shift.tolist())) == 1 and np.array_equal(table.dts - [p.dts for p in packets], shift)
    with open(video, "rb") as file:
        file.seek(int(table.offsets[7]))
        assert file.read(int(table.sizes[7])) == bytes(packets[7])


# (file name, encoder options, muxer options, colour tags, read from the tables?)
CONTAINERS = [
    ("bframes.mp4", {"bf": "3", "g": "12"}, None, None, True),
    ("no_bframes.mp4", {"bf": "0", "g": "12"}, None, None, True),
    ("faststart.mp4", {"bf": "3"}, {"movflags": "faststart"}, None, True),  # moov before mdat
    ("tagged_bt709.mp4", {"bf": "3"}, None, {"colorspace": 1, "color_primaries": 1, "color_trc": 1}, True),
    ("quicktime.mov", {"bf": "3"}, None, None, True),
    ("fragmented.mp4", {"bf": "3"}, {"movflags": "frag_keyframe+empty_moov"}, None, False),
    ("matroska.mkv", {"bf": "3"}, None, None, False),
]


@pytest.mark.parametrize("name,options,container_options,colour,from_tables", CONTAINERS)
def test_pyav_reader_on_other_layouts_and_containers(tmp_path, small_frames, name, options, container_options,
                                                     colour, from_tables):
    path = write_video(tmp_path / name, small_frames, options=options, container_options=container_options,
                       colour=colour)
    assert (read_sample_table(path) is not None) == from_tables  # else demuxed
    reader = PyAVReader(path)
    assert len(reader) == len(decord.VideoReader(str(path))) == 40
    for indices in (range(40), [39, 2, 2, 17]):
        np.testing.assert_array_equal(reader.get(list(indices)), decord_frames(path, indices))


def test_pyav_reader_with_an_audio_track_first(tmp_path, small_frames):
    path = tmp_path / "with_audio.mp4"
    rng = np.random.default_rng(2)
    with av.open(str(path), "w") as container:
        audio = container.add_stream("aac", rate=16000)  # the first track; its chunks interleave with the video's
        stream = container.add_stream("libx264", rate=25, options={"bf": "3", "g": "10"})
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        for number, frame in enumerate(small_frames):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            sound = av.AudioFrame.from_ndarray(rng.normal(0, 0.1, (1, 640)).astype(np.float32), format="fltp",
                                               layout="mono")
            sound.sample_rate, sound.pts = 16000, number * 640
            container.mux(audio.encode(sound))
        container.mux(stream.encode())
        container.mux(audio.encode())
    assert read_sample_table(path) is not None
    np.testing.assert_array_equal(PyAVReader(path).get(range(40)), decord_frames(path, range(40)))


def test_pyav_reader_demuxes_webm(tmp_path, small_frames):
    path = write_video(tmp_path / "vp9.webm", small_frames[:12], codec="libvpx-vp9", options={"deadline": "realtime"})
    assert read_sample_table(path) is None
    np.testing.assert_array_equal(PyAVReader(path).get(range(12)), decord_frames(path, range(12)))


def test_pyav_reader_on_the_synthetic_videos(tmp_path):
    from sts3d.data.synthetic import render_video, write_mp4

    path = tmp_path / "synthetic.mp4"
    write_mp4(path, render_video(np.random.default_rng(1), "star", "bottom_to_top", 16, 96))
    assert read_sample_table(path) is not None
    np.testing.assert_array_equal(PyAVReader(path).get(range(16)), decord_frames(path, range(16)))


BENCH_VIDEOS = sorted((Path(__file__).resolve().parents[2] / "shared" / "bench-videos").glob("*.mp4"))


@pytest.mark.skipif(not BENCH_VIDEOS, reason="../shared/bench-videos not present")
@pytest.mark.parametrize("path", BENCH_VIDEOS, ids=lambda path: path.stem)
def test_pyav_frames_equal_decords_on_the_bench_videos(path):
    reader = PyAVReader(path)
    assert reader._table is not None and len(reader) == len(decord.VideoReader(str(path)))
    for start in (0, 231):  # from the first keyframe; across the end of a gop30 and past gop250's second keyframe
        indices = np.arange(start, start + 64, 2) % len(reader)
        np.testing.assert_array_equal(reader.get(indices), decord_frames(path, indices))


def _patched(source, target, find, offset, value):
    """A copy of ``source`` with the big-endian 16-bit field ``offset`` bytes after the first ``find`` set."""
    data = bytearray(source.read_bytes())
    at = data.index(find, data.index(b"moov")) + offset
    data[at:at + 2] = value.to_bytes(2, "big")
    target.write_bytes(bytes(data))
    return target


def test_a_container_frame_size_the_decoder_contradicts(video, tmp_path):
    """The avc1 box says 98 pixels wide, the bitstream 96: frames and training clips are still decord's / the
    unpatched file's, through the demuxer."""
    path = _patched(video, tmp_path / "wrong_width.mp4", b"avc1", 4 + 24, 98)
    assert read_sample_table(path).width == 98
    reader = PyAVReader(path)
    assert reader.frame_shape == (64, 98)
    np.testing.assert_array_equal(reader.get([3, 50]), decord_frames(video, [3, 50]))
    assert reader.frame_shape == (64, 96) and reader._table is None
    settings = ClipSettings(clip_len=8, frame_interval=2, short_side=48, crop_size=32)
    for seed in range(3):
        clips = [VideoDataset([VideoRecord(p, 0, "x:1")], settings, decoder="pyav").load(
            VideoRecord(p, 0, "x:1"), np.random.default_rng(seed)) for p in (path, video)]
        torch.testing.assert_close(clips[0], clips[1], rtol=0, atol=0)


def test_inconsistent_tables_are_left_to_the_demuxer(video, tmp_path):
    path = _patched(video, tmp_path / "short_stsz.mp4", b"stsz", 4 + 8 + 2, 89)  # 89 sizes for 90 samples
    assert read_sample_table(path) is None
    assert read_sample_table(tmp_path / "missing.mp4") is None
    (tmp_path / "noise.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    assert read_sample_table(tmp_path / "noise.mp4") is None


@pytest.mark.parametrize("num_clips,interval", [(1, 2), (2, 2), (1, 4)])  # 32x4 loops over the 90 frames
def test_train_clips_identical_with_every_decoder(video, num_clips, interval):
    """The pyav reader's streaming path (crop, resize, flip, normalise as frames decode) against decord's frames
    through the general path, same draws."""
    settings = ClipSettings(clip_len=32, frame_interval=interval, num_clips=num_clips, short_side=48, crop_size=32)
    record = VideoRecord(video, 0, "x:1")
    for seed in range(4):
        clips = [VideoDataset([record], settings, decoder=decoder).load(record, np.random.default_rng(seed))
                 for decoder in ("decord", "pyav")]
        torch.testing.assert_close(clips[0], clips[1], rtol=0, atol=0)


def test_normalisation_tables_equal_the_formula():
    frames = np.arange(256 * 3, dtype=np.int64).reshape(1, 16, 16, 3).astype(np.uint8)  # every value per channel
    frames = np.concatenate([frames, frames[:, ::-1]])
    expected = (torch.from_numpy(frames).float() - torch.tensor(MEAN)) / torch.tensor(STD)
    expected = expected.permute(3, 0, 1, 2)[None]
    torch.testing.assert_close(to_tensor(frames, 2), expected, rtol=0, atol=0)
    strided = torch.empty((1, 2, 3, 16, 16)).transpose(1, 2)  # not contiguous: the plain formula's path
    torch.testing.assert_close(to_tensor(frames, 2, strided), expected, rtol=0, atol=0)


@pytest.mark.parametrize("decoder,fused", [("decord", True), ("pyav", True), ("decord", False)])
def test_uint8_clips_normalised_on_the_device_equal_the_float_clips(video, decoder, fused):
    """``normalize=False`` (the engine's workers): the same pixels as uint8, which ``normalize_clips`` turns into
    exactly the float clips of ``normalize=True``, for training clips (each path) and test views."""
    record = VideoRecord(video, 0, "x:1")
    train = ClipSettings(clip_len=8, frame_interval=2, num_clips=2, short_side=48, crop_size=32,
                         fused_train_resize=fused)
    test = ClipSettings(clip_len=8, frame_interval=2, num_clips=2, short_side=48, crop_size=48, test_crop="three")
    for settings, test_mode in ((train, False), (test, True)):
        for seed in range(3):
            float_clips, raw = (VideoDataset([record], settings, test_mode, decoder, normalize=normalize)
                                .load(record, np.random.default_rng(seed)) for normalize in (True, False))
            assert raw.dtype == torch.uint8 and raw.shape == float_clips.shape and raw.is_contiguous()
            assert normalize_clips(float_clips) is float_clips  # already normalised: untouched
            torch.testing.assert_close(normalize_clips(raw), float_clips, rtol=0, atol=0)


def test_uint8_to_tensor_keeps_the_pixels():
    frames = np.random.default_rng(0).integers(0, 256, (4, 5, 6, 3), dtype=np.uint8)
    expected = torch.from_numpy(frames).unflatten(0, (2, 2)).permute(0, 4, 1, 2, 3)
    for out in (torch.empty((2, 3, 2, 5, 6), dtype=torch.uint8),
                torch.empty((2, 2, 3, 5, 6), dtype=torch.uint8).transpose(1, 2)):
        assert torch.equal(to_tensor(frames, 2, out), expected)


@pytest.mark.parametrize("decoder", ["decord", "pyav"])
def test_train_clips_without_a_short_side_resize_crop_the_decoded_frames(video, decoder):
    """A training pipeline without ``Resize(scale=(-1, S))`` (``short_side=None``): mmaction's RandomResizedCrop
    draws its box on the decoded 64x96 frames, then the fixed-size Resize; both train paths give exactly that."""
    record = VideoRecord(video, 0, "x:1")
    for fused in (True, False):
        settings = ClipSettings(clip_len=8, frame_interval=2, short_side=None, crop_size=32, fused_train_resize=fused)
        for seed in range(3):
            clip = VideoDataset([record], settings, decoder=decoder).load(record, np.random.default_rng(seed))
            rng = np.random.default_rng(seed)
            frames = decord_frames(video, sample_frame_indices(90, 8, 2, 1, rng=rng))
            x1, y1, x2, y2 = random_resized_crop_box((64, 96), rng)
            crops = np.stack([cv2.resize(f[y1:y2, x1:x2], (32, 32), interpolation=cv2.INTER_LINEAR) for f in frames])
            if rng.random() < 0.5:
                crops = crops[:, :, ::-1]
            expected = (torch.from_numpy(crops.copy()).float() - torch.tensor(MEAN)) / torch.tensor(STD)
            torch.testing.assert_close(clip[0], expected.permute(3, 0, 1, 2), rtol=0, atol=0)
