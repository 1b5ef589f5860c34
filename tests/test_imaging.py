import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deflate.data.image_tokens import (
    NotADalleEncoder,
    Patches,
    VisualWords,
    load_dalle_encoder,
    load_tokens,
    run_stage,
    to_patches,
)
from deflate.data.images import BadImage, open_rgb
from deflate.data.records import Record
from deflate.data.synth import make_product, render_image
from deflate.infra.errors import UserError

CFG = {"tokenizer": "visual_words", "grid": 4, "vocab_size": 16, "resize": 32, "batch_size": 4, "num_threads": 1,
       "dalle_encoder_path": "", "dalle_resize": 32, "dalle_sizes": {}, "vit_path": ""}


def make_images(root, n, offset=0):
    paths = []
    for i in range(n):
        p = root / f"{offset + i}.jpg"
        render_image(make_product(offset + i, 0, 0.25, 0.0), 0, size=64).save(p)
        paths.append(str(p))
    return paths


@pytest.fixture
def records(tmp_path):
    imgs = make_images(tmp_path, 14)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    recs = {"train": [Record(f"t{i}", "x", image=p) for i, p in enumerate(imgs[:10])],
            "val": [Record("v0", "x", image=imgs[10]), Record("v1", "x", image=str(bad)), Record("v2", "x")],
            "test": [Record(f"s{i}", "x", image=p) for i, p in enumerate(imgs[11:])]}
    return recs


def test_patches_are_row_major():
    img = np.zeros((4, 4, 3), np.uint8)
    img[:2, 2:] = 255  # top-right patch of a 2x2 grid
    p = to_patches(img, 2)
    assert p.shape == (4, 12) and p[1].min() == 1.0 and p[[0, 2, 3]].max() == 0.0


def test_visual_words_stage_shapes_ranges_determinism_and_bad_images(records, tmp_path):
    meta = run_stage(records, CFG, tmp_path / "tok", seed=0, progress=False)
    tokens, has, _ = load_tokens(tmp_path / "tok", "val")
    assert tokens.shape == (3, 16) and tokens.dtype == np.int64
    assert has.tolist() == [True, False, False]
    assert (tokens[~has] == meta["pad_id"]).all() and meta["pad_id"] == 16
    assert tokens[has].max() < 16 and tokens.min() >= 0
    assert set(meta["splits"]["val"]["problems"]) == {"v1", "v2"}
    assert "unreadable image" in meta["splits"]["val"]["problems"]["v1"]
    run_stage(records, CFG, tmp_path / "tok2", seed=0, progress=False)
    for s in ("train", "val", "test"):
        assert (tmp_path / "tok" / f"{s}.safetensors").read_bytes() == (tmp_path / "tok2" / f"{s}.safetensors").read_bytes()


def test_codebook_is_fit_on_train_only(records, tmp_path):
    meta = run_stage(records, CFG, tmp_path / "tok", seed=0, progress=False)
    train_imgs = [np.asarray(open_rgb(r.image).resize((32, 32), Image.BILINEAR)) for r in records["train"]]
    expected = VisualWords(4, 16, 32, seed=0).fit(train_imgs)
    assert meta["codebook_sha256"] == expected.save(tmp_path / "cb.safetensors")
    changed = dict(records, test=records["test"][:1])  # test images do not move the codebook
    assert run_stage(changed, CFG, tmp_path / "tok3", seed=0, progress=False)["codebook_sha256"] == meta["codebook_sha256"]


def test_visual_words_separate_distinct_colours():
    vw = VisualWords(grid=2, vocab_size=2, resize=8, seed=0)
    red, blue = np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8)
    red[..., 0], blue[..., 2] = 255, 255
    vw.fit([red, blue])
    r, b = vw.encode([red, blue])
    assert len(set(r)) == 1 and len(set(b)) == 1 and r[0] != b[0]


@pytest.mark.parametrize("mode", ["CMYK", "L", "P", "RGBA", "I;16"])
def test_unusual_modes_become_rgb(tmp_path, mode):
    p = tmp_path / "x.png" if mode not in ("CMYK",) else tmp_path / "x.jpg"
    Image.new(mode, (9, 7)).save(p)
    assert open_rgb(p).mode == "RGB"


def test_tiny_huge_and_truncated_images_are_refused(tmp_path):
    Image.new("RGB", (1, 1)).save(tmp_path / "tiny.png")
    with pytest.raises(BadImage, match="too small"):
        open_rgb(tmp_path / "tiny.png")
    Image.new("1", (5000, 5000)).save(tmp_path / "huge.png")  # 25 MP, a few KB on disk
    with pytest.raises(BadImage, match="too large"):
        open_rgb(tmp_path / "huge.png")
    Image.new("RGB", (64, 64), (1, 2, 3)).save(tmp_path / "t.jpg")
    data = (tmp_path / "t.jpg").read_bytes()
    (tmp_path / "trunc.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(BadImage, match="unreadable"):
        open_rgb(tmp_path / "trunc.jpg")


def test_patches_tokenizer_gives_features(records, tmp_path):
    meta = run_stage(records, dict(CFG, tokenizer="patches"), tmp_path / "p", seed=0, progress=False)
    tokens, has, _ = load_tokens(tmp_path / "p", "val")
    assert meta["continuous"] and tokens.shape == (3, 16, 8 * 8 * 3) and tokens.dtype == np.float16
    assert not tokens[~has].any()


def test_patches_with_a_local_vit(tmp_path):
    from transformers import ViTConfig, ViTImageProcessor, ViTModel
    cfg = ViTConfig(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                    intermediate_size=32)
    ViTModel(cfg).save_pretrained(tmp_path / "vit")
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path / "vit")
    tok = Patches(vit_path=str(tmp_path / "vit"))
    out = tok.encode([np.zeros((32, 32, 3), np.uint8)] * 2)
    assert tok.resize == 32 and out.shape == (2, 16, 16)


def tiny_encoder():
    from dall_e.encoder import Encoder
    torch.manual_seed(0)
    return Encoder(n_hid=64, n_blk_per_group=1, vocab_size=512)


def test_dalle_end_to_end_with_a_tiny_pickled_encoder(records, tmp_path):
    torch.save(tiny_encoder(), tmp_path / "encoder.pkl")  # the format of OpenAI's encoder.pkl
    cfg = dict(CFG, tokenizer="dalle", dalle_encoder_path=str(tmp_path / "encoder.pkl"), dalle_resize=32)
    records["test"][0].pic_tokens = list(range(16))  # DESIRE ships tokens: used as they are
    meta = run_stage(records, cfg, tmp_path / "d", seed=0, progress=False)
    tokens, has, _ = load_tokens(tmp_path / "d", "test")
    assert meta["vocab_size"] == 512 and tokens.shape == (3, 16) and tokens[has].max() < 512
    assert tokens[0].tolist() == list(range(16))
    run_stage(records, cfg, tmp_path / "d2", seed=0, progress=False)
    assert (tmp_path / "d" / "train.safetensors").read_bytes() == (tmp_path / "d2" / "train.safetensors").read_bytes()


def test_dalle_state_dict_and_refusals(tmp_path):
    enc = tiny_encoder()
    torch.save(enc.state_dict(), tmp_path / "sd.pt")
    assert load_dalle_encoder(tmp_path / "sd.pt", n_hid=64, vocab_size=512, n_blk_per_group=1).vocab_size == 512
    with pytest.raises(NotADalleEncoder, match="does not fit"):
        load_dalle_encoder(tmp_path / "sd.pt")  # default sizes: n_hid 256
    torch.save({"not": "an encoder"}, tmp_path / "dict.pt")
    with pytest.raises(NotADalleEncoder, match="holds a dict"):
        load_dalle_encoder(tmp_path / "dict.pt")
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            import os
            return (os.system, (f"touch {marker}",))
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(NotADalleEncoder, match="refused to unpickle"):
        load_dalle_encoder(tmp_path / "evil.pkl")
    assert not marker.exists()
    with pytest.raises(UserError, match="dalle_encoder_path"):
        load_dalle_encoder(tmp_path / "missing.pkl")


def test_no_training_pictures_means_text_only(tmp_path):
    recs = {s: [Record(f"{s}{i}", "x") for i in range(3)] for s in ("train", "val", "test")}
    meta = run_stage(recs, CFG, tmp_path / "tok", seed=0, progress=False)
    assert meta["text_only"] and not list((tmp_path / "tok").glob("*.safetensors"))
    from deflate.data.records import records_to_frame
    from deflate.data.splits import (
        load_data,  # the model side then reads it as text-only
    )
    (tmp_path / "proc").mkdir()
    records_to_frame(recs["val"]).to_parquet(tmp_path / "proc" / "val.parquet")
    data = load_data(tmp_path / "proc", tmp_path / "tok", "val")
    assert data.image is None and data.has_image is None and len(data.records) == 3


def test_every_pil_mode_becomes_correct_rgb(tmp_path):
    from deflate.data.images import open_rgb, to_rgb
    ramp16 = (np.arange(32 * 32).reshape(32, 32) * 60).astype(np.uint16)  # 0 .. 61380
    Image.fromarray(ramp16).save(tmp_path / "sixteen.png")  # mode I;16: convert("RGB") clips it to white
    got = np.asarray(open_rgb(tmp_path / "sixteen.png"), dtype=np.float64)
    assert got.shape == (32, 32, 3) and abs(got.mean() - ramp16.mean() / 257) < 1 and got.min() == 0
    assert abs(np.asarray(to_rgb(Image.fromarray(ramp16.astype(np.int32), "I"))).mean() - ramp16.mean() / 257) < 1
    assert np.asarray(to_rgb(Image.fromarray(np.full((4, 4), 0.5, np.float32), "F"))).max() == 128  # [0, 1] floats
    clear = Image.new("RGBA", (4, 4), (10, 20, 30, 0))  # fully transparent: the white background shows
    assert (np.asarray(to_rgb(clear)) == 255).all()
    assert (np.asarray(to_rgb(Image.new("LA", (4, 4), (0, 255)))) == 0).all()  # opaque black stays black
    pal = Image.new("P", (4, 4), 1)
    pal.putpalette([0, 0, 0, 200, 0, 0] + [0] * 762)
    pal.info["transparency"] = 1
    assert (np.asarray(to_rgb(pal)) == 255).all()
    assert np.asarray(to_rgb(Image.new("CMYK", (4, 4), (0, 0, 0, 0)))).min() == 255
    for mode in ("1", "L", "P", "RGB", "YCbCr", "HSV", "I;16B"):
        assert to_rgb(Image.new(mode, (4, 4))).mode == "RGB"
    assert open_rgb((tmp_path / "sixteen.png").read_bytes()).size == (32, 32)  # bytes work like a path


def test_confine_keeps_paths_inside_one_folder(tmp_path):
    from deflate.data.images import confine
    root = tmp_path / "pics"
    (root / "sub").mkdir(parents=True)
    (tmp_path / "out.jpg").write_bytes(b"x")
    (root / "ok.jpg").write_bytes(b"x")
    (root / "up").symlink_to(tmp_path)
    assert confine(root, "ok.jpg") == (root / "ok.jpg").resolve()
    assert confine(root, "sub/../ok.jpg") == (root / "ok.jpg").resolve()
    assert confine(root, "missing.jpg") == (root / "missing.jpg").resolve()  # inside, even if absent
    for name in ("../out.jpg", str(tmp_path / "out.jpg"), "up/out.jpg", "/etc/shadow", "/nonexistent/x.jpg"):
        assert confine(root, name) is None, name


def test_a_model_trained_on_patch_features_encodes_new_pictures_with_patches(tmp_path):
    """The patches variant trains on data/tokens_patches while params' image.tokenizer says
    visual_words: the model folder must rebuild the tokenizer that made its features."""
    from deflate.data.image_tokens import load_for_inference, save_for_inference
    from deflate.infra.config import load_params
    cfg = load_params(Path(__file__).resolve().parents[1] / "params.yaml")["image"]
    tokens = tmp_path / "tokens_patches"
    tokens.mkdir()
    (tokens / "meta.json").write_text(json.dumps({"tokenizer": "patches", "continuous": True, "feature_dim": 192}))
    save_for_inference(tokens, {**cfg, "tokenizer": "visual_words"}, tmp_path)  # no codebook exists
    tok = load_for_inference(tmp_path)
    assert isinstance(tok, Patches)
    feats = tok.encode([np.zeros((cfg["resize"], cfg["resize"], 3), np.uint8)])
    assert feats.shape == (1, cfg["grid"] ** 2, 192)


def _pinned_images(n=24, size=16):
    """Blocky pictures from a seeded generator: a fixed input whose tokens are pinned below."""
    rng = np.random.default_rng(123)
    small = rng.integers(0, 256, (n, 4, 4, 3), dtype=np.uint8)
    return [np.kron(s, np.ones((size // 4, size // 4, 1), np.uint8)) + rng.integers(0, 8, (size, size, 3), dtype=np.uint8)
            for s in small]


def test_visual_words_tokens_are_pinned_whatever_the_threads():
    """The codebook and tokens of a fixed input are exact integers, so their checksum is the same on
    any machine; one thread or two (a different BLAS partition) must not change a bit."""
    import hashlib

    imgs = _pinned_images()
    digests = set()
    for threads in (1, 2):
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            vw = VisualWords(grid=4, vocab_size=32, resize=16, seed=7).fit(imgs[:16], progress=False)
            tok = vw.encode(imgs)
        finally:
            torch.set_num_threads(before)
        assert vw.codebook.dtype == np.uint8 and tok.shape == (24, 16) and tok.max() < 32
        digests.add(hashlib.sha256(vw.codebook.tobytes() + tok.tobytes()).hexdigest())
    assert digests == {PINNED_TOKENS_SHA256}


PINNED_TOKENS_SHA256 = "740042ad1311647b390ae17ba9329edd0804956460e11a84f8d07db35943a3a5"


def test_nearest_code_is_exact_with_lowest_index_on_ties():
    from deflate.data.image_tokens import nearest_code

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (500, 48), dtype=np.uint8)
    cb = rng.integers(0, 256, (40, 48), dtype=np.uint8)
    cb[7] = cb[3]  # a duplicated codeword: the lower index wins
    x[:5] = cb[3]
    ref = ((x.astype(np.int64)[:, None, :] - cb.astype(np.int64)[None]) ** 2).sum(-1)  # exact integers
    got = nearest_code(x, cb, chunk=128)
    assert (ref[np.arange(len(x)), got] == ref.min(1)).all()
    assert (got == ref.argmin(1)).all() and (got[:5] == 3).all()


def test_old_float_codebooks_are_refused_with_a_clear_message(tmp_path):
    from safetensors.numpy import save_file

    save_file({"codebook": np.zeros((4, 12), np.float32)}, str(tmp_path / "cb.safetensors"))
    with pytest.raises(ValueError, match="re-run the image_tokens stage"):
        VisualWords(grid=2, vocab_size=4, resize=4).load(tmp_path / "cb.safetensors")


def test_codebook_sample_over_the_cap_is_drawn_in_two_passes_from_streamed_images():
    """Over ``max_patches`` the fit streams the images twice; the sample is the one drawn from all
    patches at once (as the codebook was fit before streaming), and a stream read once per pass."""
    from deflate.data.image_tokens import to_patches_u8

    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(9)]
    passes = []

    class Stream:
        def __iter__(self):
            passes.append(1)
            return iter(images)

    for cap in (9 * 16, 40):  # at the cap: every patch, one pass; under it: a sample, two passes
        passes.clear()
        vw = VisualWords(grid=4, vocab_size=8, resize=32, seed=5)
        got = vw._patches(Stream(), cap, np.random.default_rng(5))
        every = np.concatenate([to_patches_u8(im, 4) for im in images])
        want = every if len(every) <= cap else every[np.sort(np.random.default_rng(5).choice(len(every), cap, replace=False))]
        assert np.array_equal(got, want) and len(passes) == (1 if cap == len(every) else 2)
        # and the codebook is the one fit on the in-memory list
        assert np.array_equal(VisualWords(4, 8, 32, seed=5).fit(Stream(), max_patches=cap, progress=False).codebook,
                              VisualWords(4, 8, 32, seed=5).fit(images, max_patches=cap, progress=False).codebook)
    with pytest.raises(ValueError, match="no usable training image"):
        VisualWords(4, 8, 32).fit([], progress=False)
