"""The embedded default dataset: synthetic gourmet products in DESIRE's raw format.

DESIRE is private, so the default pipeline runs on products this module generates
deterministically from a seed. Every (product, attribute, value) has a known source:

* ``explicit``      the value string occurs in the product's name or description;
* ``text_implied``  only a cue phrase implies it (a dish name implying a cooking method);
* ``image_only``    only the rendered picture shows it (colours, chilies, ice, steam ...).

Sources are recomputed from the final text (an intended ``image_only`` value that happens to
occur in the text is labelled ``explicit``), so the side file never lies.
A second, MEPAVE-shaped explicit-only variant feeds the adaptability table and the
low-resource curve.
"""
from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from deflate.infra.files import atomic_writer, write_json

# Attribute names as DESIRE's Table 1 (in Chinese, the language of the data).
ATTRIBUTES = ["主料", "辅料", "烹饪方法", "荤素", "是否甜", "冷热", "奶油类型", "茶", "辣度"]

MEAT = ["牛肉", "猪肉", "鸡肉", "鸭肉", "羊肉", "鲈鱼", "大虾"]
VEG = ["豆腐", "土豆", "茄子", "西兰花", "香菇"]
DESSERT_MAIN = ["芒果", "草莓", "巧克力", "抹茶", "榴莲", "红豆"]
SNACK_MAIN = ["花生", "鱿鱼", "海苔", "玉米", "牛肉", "土豆"]

VALUES: dict[str, list[str]] = {
    "辅料": ["小葱", "生姜", "大蒜", "青椒", "洋葱", "香菜", "芝麻", "花椒"],
    "烹饪方法": ["红烧", "清蒸", "油炸", "爆炒", "卤制", "烧烤", "凉拌", "炖煮"],
    "荤素": ["荤菜", "素菜"],
    "是否甜": ["甜口", "咸口"],
    "冷热": ["冷食", "热食", "常温"],
    "奶油类型": ["动物奶油", "植物奶油", "乳脂奶油", "芝士奶油", "慕斯奶油"],
    "茶": ["绿茶", "红茶", "乌龙茶", "普洱茶", "茉莉花茶", "白茶"],
    "辣度": ["不辣", "微辣", "中辣", "特辣"],
}

# Cue phrases that imply a value without containing it (text_implied).
CUES: dict[str, dict[str, list[str]]] = {
    "烹饪方法": {"红烧": ["东坡", "酱汁浓郁"], "清蒸": ["原汁原味", "蒸笼现出"], "油炸": ["外酥里嫩", "金黄酥脆"],
              "爆炒": ["干锅", "大火快手"], "卤制": ["酱香入味", "老汤慢卤"], "烧烤": ["炭火", "串串"],
              "凉拌": ["爽口开胃", "拌好即食"], "炖煮": ["砂锅", "慢火煨"]},
    "辣度": {"不辣": ["清淡", "老少皆宜"], "微辣": ["微微带劲"], "中辣": ["香辣", "川味"], "特辣": ["变态辣", "重庆火爆"]},
    "冷热": {"冷食": ["冰镇", "冷藏后风味更佳"], "热食": ["趁烫享用", "现烤出炉"], "常温": ["开袋即享", "无需加热"]},
    "茶": {"绿茶": ["西湖龙井", "明前嫩芽"], "红茶": ["正山小种", "滇红"], "乌龙茶": ["铁观音", "大红袍"],
          "普洱茶": ["云南陈年饼", "熟普"], "茉莉花茶": ["花香窨制"], "白茶": ["白毫银针", "福鼎"]},
    "是否甜": {"甜口": ["蜂蜜", "糖霜", "蜜汁"], "咸口": ["椒盐", "海盐"]},
}

# Product types decide which attributes a product can have (and so what the discriminator learns).
# Each entry: attribute -> probability that a product of this type has it.
TYPES: dict[str, dict[str, float]] = {
    "菜肴": {"主料": 1.0, "辅料": 0.6, "烹饪方法": 0.9, "荤素": 0.9, "辣度": 0.8, "冷热": 0.6},
    "糕点": {"主料": 1.0, "奶油类型": 0.85, "是否甜": 0.7, "冷热": 0.6},
    "饮品": {"茶": 1.0, "是否甜": 0.7, "冷热": 0.8},
    "零食": {"主料": 1.0, "烹饪方法": 0.7, "辣度": 0.8, "是否甜": 0.6},
}
TYPE_WORDS = {"菜肴": ["家常菜", "招牌菜", "私房菜"], "糕点": ["蛋糕", "糕点", "千层"],
              "饮品": ["茶饮", "冲泡饮品", "袋泡饮品"], "零食": ["零食", "小吃", "休闲食品"]}
MAIN_BY_TYPE = {"菜肴": MEAT + VEG, "糕点": DESSERT_MAIN, "零食": SNACK_MAIN}

# Where a value may come from, with weights (attributes the picture cannot show have no image_only).
SOURCES: dict[str, dict[str, float]] = {
    "主料": {"explicit": 0.7, "image_only": 0.3},
    "辅料": {"explicit": 1.0},
    "烹饪方法": {"explicit": 0.4, "text_implied": 0.3, "image_only": 0.3},
    "荤素": {"explicit": 0.2, "text_implied": 0.8},  # implied by the main material (text or picture)
    "是否甜": {"explicit": 0.5, "text_implied": 0.5},
    "冷热": {"explicit": 0.3, "text_implied": 0.2, "image_only": 0.5},
    "奶油类型": {"explicit": 0.4, "image_only": 0.6},
    "茶": {"explicit": 0.5, "text_implied": 0.2, "image_only": 0.3},
    "辣度": {"explicit": 0.4, "text_implied": 0.25, "image_only": 0.35},
}

BRANDS = ["老字号", "外婆家", "阿香", "川渝人家", "江南春", "食味坊", "小厨娘", "御膳房", "百味斋", "山野间"]
FILLERS = ["精选优质食材", "工厂直发", "真空包装", "新鲜现做", "家庭聚餐必备", "办公室下午茶", "送礼佳品",
           "独立小包装", "健康美味", "产地直供", "口碑爆款", "顺丰包邮"]

# Saturated, well separated colours carry semantic values; clutter uses muted colours only.
PALETTE = {
    "牛肉": (150, 40, 30), "猪肉": (230, 150, 140), "鸡肉": (240, 200, 120), "鸭肉": (120, 60, 20),
    "羊肉": (200, 90, 60), "鲈鱼": (200, 210, 220), "大虾": (250, 110, 60), "豆腐": (250, 250, 225),
    "土豆": (215, 180, 80), "茄子": (100, 30, 120), "西兰花": (40, 150, 40), "香菇": (90, 70, 50),
    "芒果": (255, 190, 0), "草莓": (230, 30, 80), "巧克力": (70, 35, 15), "抹茶": (120, 180, 60),
    "榴莲": (230, 220, 90), "红豆": (130, 20, 40), "花生": (190, 140, 90), "鱿鱼": (245, 220, 210),
    "海苔": (20, 60, 30), "玉米": (250, 220, 40),
    # sauce ring / bag border per cooking method
    "红烧": (140, 30, 10), "清蒸": (180, 230, 255), "油炸": (255, 170, 30), "爆炒": (255, 60, 0),
    "卤制": (60, 30, 10), "烧烤": (30, 30, 30), "凉拌": (0, 200, 120), "炖煮": (160, 110, 200),
    # cream topping
    "动物奶油": (255, 255, 255), "植物奶油": (255, 240, 150), "乳脂奶油": (255, 210, 190),
    "芝士奶油": (255, 200, 60), "慕斯奶油": (200, 160, 230),
    # tea liquid
    "绿茶": (160, 200, 60), "红茶": (170, 40, 20), "乌龙茶": (200, 130, 40), "普洱茶": (60, 20, 10),
    "茉莉花茶": (240, 240, 150), "白茶": (235, 230, 200),
    # chili colour per spice level (count also grows with the level)
    "微辣": (255, 140, 0), "中辣": (230, 0, 0), "特辣": (120, 0, 0),
}
SPICE_COUNT = {"不辣": 0, "微辣": 1, "中辣": 2, "特辣": 3}

DESIRE_COLUMNS = ["name", "sku_id", "shop_id", "category1", "category2", "category3", "price",
                  "image_path", "label_name", "description", "pic_token", "attribute"]


@dataclass
class Product:
    id: str
    type: str
    name: str
    description: str
    values: dict[str, str]                     # gold attribute -> value (after label noise)
    sources: dict[str, str] = field(default_factory=dict)
    shown: dict[str, str] = field(default_factory=dict)  # what text/image really show (before noise)


def _pick(rng: np.random.Generator, items):
    return items[int(rng.integers(len(items)))]


def _pick_weighted(rng: np.random.Generator, weights: dict[str, float]) -> str:
    keys = list(weights)
    p = np.array([weights[k] for k in keys], dtype=float)
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def _source_of(value: str, text: str, cue_used: bool) -> str:
    if value in text:
        return "explicit"
    return "text_implied" if cue_used else "image_only"


def make_product(i: int, seed: int, long_desc_fraction: float, label_noise: float) -> Product:
    """One product, deterministic in (seed, i): scaling n_products keeps earlier products identical."""
    rng = np.random.default_rng([seed, i])
    ptype = _pick(rng, list(TYPES))
    attrs = [a for a, p in TYPES[ptype].items() if rng.random() < p]
    values: dict[str, str] = {}
    for a in attrs:
        values[a] = _pick(rng, MAIN_BY_TYPE[ptype]) if a == "主料" else _pick(rng, VALUES[a])
    if "荤素" in values:
        values["荤素"] = "荤菜" if values["主料"] in MEAT else "素菜"
    if ptype == "糕点" and "是否甜" in values:
        values["是否甜"] = "甜口" if rng.random() < 0.85 else "咸口"

    intended = {a: _pick_weighted(rng, SOURCES[a]) for a in values}
    if "荤素" in values and intended["荤素"] == "text_implied" and intended["主料"] == "image_only":
        intended["荤素"] = "image_only"  # implied by the main-material colour in the picture
    # A value shown in the picture must be drawable; an attribute without a picture falls back to text.
    drawable = {"主料", "烹饪方法", "荤素", "冷热", "奶油类型", "茶", "辣度"}
    for a in values:
        if intended[a] == "image_only" and (a not in drawable or (a == "冷热" and values[a] == "常温")):
            intended[a] = "explicit"

    # Text mentions: explicit -> the value inside a phrase, text_implied -> a cue phrase.
    core_main = values.get("主料") if intended.get("主料") == "explicit" else None
    name_parts: list[str] = [_pick(rng, BRANDS)]
    mentions: list[str] = []
    cue_used: set[str] = set()
    for a in values:
        if a in ("主料",):
            continue
        v, how = values[a], intended[a]
        if a == "荤素" and how == "text_implied":
            cue_used.add(a)  # the main material (in text or picture) implies it
            continue
        if how == "explicit":
            mentions.append(v)
        elif how == "text_implied":
            mentions.append(_pick(rng, CUES[a][v]))
            cue_used.add(a)
    rng.shuffle(mentions)
    has_long = rng.random() < long_desc_fraction
    name_mentions = mentions if not has_long else mentions[: int(rng.integers(0, len(mentions) + 1))]
    desc_mentions = [] if not has_long else mentions[len(name_mentions):]
    name_parts += name_mentions
    name_parts.append(core_main or "")
    name_parts.append(_pick(rng, TYPE_WORDS[ptype]))
    name = "".join(name_parts)
    description = ""
    if has_long:
        sents = [_pick(rng, FILLERS) for _ in range(int(rng.integers(2, 5)))]
        for m in desc_mentions:
            sents.insert(int(rng.integers(len(sents) + 1)), m + "风味" if rng.random() < 0.3 else m)
        description = "，".join(sents) + "。"

    text = name + description
    shown = dict(values)
    sources = {}
    for a, v in values.items():
        if a == "荤素" and a in cue_used:
            sources[a] = "explicit" if v in text else ("text_implied" if intended["主料"] == "explicit" else "image_only")
        else:
            sources[a] = _source_of(v, text, a in cue_used)
    # Label noise: the gold label of a few values disagrees with what text and picture show.
    gold = dict(values)
    for a in gold:
        if rng.random() < label_noise:
            pool = MAIN_BY_TYPE[ptype] if a == "主料" else VALUES[a]
            gold[a] = _pick(rng, [x for x in pool if x != gold[a]])
    return Product(id=f"P{i:06d}", type=ptype, name=name, description=description,
                   values=gold, sources=sources, shown=shown)


def _jitter(rng: np.random.Generator, rgb: tuple[int, int, int], amount: int = 12) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in rgb)


def render_image(p: Product, seed: int, size: int = 128) -> Image.Image:
    """Draw the product: the shape shows the type, colours and small items show values.

    Position, scale, background colour and clutter are random so pixels cannot be memorised.
    """
    rng = np.random.default_rng([seed, int(p.id[1:]), 7])
    bg = tuple(int(x) for x in rng.integers(150, 215, size=3))
    img = Image.new("RGB", (size, size), bg)
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(4, 10))):  # muted clutter
        c = tuple(int(x) for x in rng.integers(100, 170, size=3))
        x0, y0 = rng.integers(0, size, size=2)
        if rng.random() < 0.5:
            d.line([int(x0), int(y0), int(x0 + rng.integers(-30, 30)), int(y0 + rng.integers(-30, 30))], fill=c, width=2)
        else:
            r = int(rng.integers(2, 6))
            d.ellipse([int(x0) - r, int(y0) - r, int(x0) + r, int(y0) + r], fill=c)
    s = size / 128 * float(rng.uniform(0.85, 1.1))
    cx = size / 2 + float(rng.uniform(-12, 12)) * size / 128
    cy = size / 2 + 8 * size / 128 + float(rng.uniform(-8, 8)) * size / 128
    v = p.shown
    main = _jitter(rng, PALETTE[v["主料"]]) if "主料" in v else None
    if p.type == "菜肴":
        d.ellipse([cx - 40 * s, cy - 30 * s, cx + 40 * s, cy + 30 * s], fill=(245, 245, 245))
        if "烹饪方法" in v:
            d.ellipse([cx - 32 * s, cy - 23 * s, cx + 32 * s, cy + 23 * s], fill=_jitter(rng, PALETTE[v["烹饪方法"]]))
        d.ellipse([cx - 25 * s, cy - 17 * s, cx + 25 * s, cy + 17 * s], fill=main)
    elif p.type == "糕点":
        d.rectangle([cx - 32 * s, cy - 14 * s, cx + 32 * s, cy + 22 * s], fill=main)
        if "奶油类型" in v:
            d.rectangle([cx - 32 * s, cy - 28 * s, cx + 32 * s, cy - 14 * s], fill=_jitter(rng, PALETTE[v["奶油类型"]]))
    elif p.type == "饮品":
        d.rectangle([cx - 20 * s, cy - 30 * s, cx + 20 * s, cy + 30 * s], outline=(60, 60, 60), width=3,
                    fill=(250, 250, 250))
        d.rectangle([cx - 17 * s, cy - 18 * s, cx + 17 * s, cy + 27 * s], fill=_jitter(rng, PALETTE[v["茶"]]))
    else:  # 零食: a bag, border colour = cooking method
        border = _jitter(rng, PALETTE[v["烹饪方法"]]) if "烹饪方法" in v else (90, 90, 90)
        d.rounded_rectangle([cx - 28 * s, cy - 32 * s, cx + 28 * s, cy + 30 * s], radius=8, fill=main,
                            outline=border, width=max(3, int(6 * s)))
        d.rectangle([cx - 18 * s, cy - 6 * s, cx + 18 * s, cy + 6 * s], fill=(250, 250, 250))
    for k in range(SPICE_COUNT.get(v.get("辣度", "不辣"), 0)):  # chilies along the top band
        x = size * (0.12 + 0.27 * k) + float(rng.uniform(-4, 4))
        y = size * 0.1 + float(rng.uniform(-4, 4))
        d.polygon([(x, y - 7), (x + 7, y + 7), (x - 7, y + 7)], fill=_jitter(rng, PALETTE[v["辣度"]]))
    if v.get("冷热") == "冷食":  # ice cubes at the bottom
        for k in range(int(rng.integers(2, 4))):
            x = size * (0.15 + 0.3 * k) + float(rng.uniform(-4, 4))
            y = size * 0.9 + float(rng.uniform(-3, 3))
            d.rectangle([x - 6, y - 6, x + 6, y + 6], fill=_jitter(rng, (150, 220, 255), 6))
    elif v.get("冷热") == "热食":  # steam lines at the bottom
        for k in range(int(rng.integers(2, 4))):
            x = size * (0.15 + 0.3 * k) + float(rng.uniform(-4, 4))
            y = size * 0.9
            d.line([(x - 8, y - 5), (x, y + 5), (x + 8, y - 5)], fill=(255, 255, 255), width=3)
    arr = np.asarray(img).astype(np.int16) + rng.integers(-6, 7, size=(size, size, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _desire_row(p: Product, image_rel: str, rng: np.random.Generator) -> list[str]:
    cat3 = p.type
    attribute = repr(dict(p.values))  # a Python dict literal, as DESIRE stores it
    return [p.name, p.id, f"S{int(rng.integers(1000, 9999))}", "食品", "美食", cat3,
            f"{float(rng.uniform(5, 200)):.2f}", image_rel, p.type, p.description, "", attribute]


def split_of(i: int, n: int, fractions: tuple[float, float]) -> str:
    """Deterministic split by product index (interleaved so every split sees every type)."""
    r = (i * 7919) % 100 / 100.0
    return "train" if r < fractions[0] else ("val" if r < fractions[0] + fractions[1] else "test")


def write_desire(out: Path, n_products: int, seed: int, long_desc_fraction: float = 0.25,
                 label_noise: float = 0.03, image_size: int = 128,
                 split: tuple[float, float] = (0.8, 0.1), progress: bool = True) -> dict:
    """Write ``{train,val,test}.tsv`` + ``images/`` + ``sources.jsonl`` + ``stats.json`` under ``out``.
    Each product's rows are written as it is made (memory does not grow with ``n_products``); every
    file appears whole or not at all."""
    from tqdm import tqdm

    out.mkdir(parents=True, exist_ok=True)
    (out / "images").mkdir(exist_ok=True)
    stats = {"products": 0, "by_split": {s: 0 for s in ("train", "val", "test")}, "by_type": {},
             "attribute_counts": {}, "sources": {}, "long_description_share": 0.0}
    with contextlib.ExitStack() as files:
        tsv = {sp: files.enter_context(atomic_writer(out / f"{sp}.tsv")) for sp in stats["by_split"]}
        for f in tsv.values():
            f.write("\t".join(DESIRE_COLUMNS) + "\n")
        sources = files.enter_context(atomic_writer(out / "sources.jsonl"))
        for i in tqdm(range(n_products), desc="synth products", disable=not progress, unit="prod"):
            p = make_product(i, seed, long_desc_fraction, label_noise)
            render_image(p, seed, image_size).save(out / "images" / f"{p.id}.jpg", quality=90)
            sp = split_of(i, n_products, split)
            tsv[sp].write("\t".join(_desire_row(p, f"images/{p.id}.jpg", np.random.default_rng([seed, i, 3]))) + "\n")
            stats["by_split"][sp] += 1
            for a, v in p.values.items():
                sources.write(json.dumps({"id": p.id, "attribute": a, "value": v, "source": p.sources[a]},
                                         ensure_ascii=False) + "\n")
                stats["attribute_counts"][a] = stats["attribute_counts"].get(a, 0) + 1
                stats["sources"][p.sources[a]] = stats["sources"].get(p.sources[a], 0) + 1
            stats["by_type"][p.type] = stats["by_type"].get(p.type, 0) + 1
            stats["long_description_share"] += bool(p.description)
        if not stats["sources"]:
            sources.write("\n")  # as before: an empty list of sources is one blank line
    stats["products"] = n_products
    stats["long_description_share"] = round(stats["long_description_share"] / max(n_products, 1), 4)
    total = sum(stats["sources"].values())
    stats["source_share"] = {k: round(v / total, 4) for k, v in sorted(stats["sources"].items())}
    write_json(out / "stats.json", stats, ensure_ascii=False, indent=2, sort_keys=True)
    return stats


# --- MEPAVE-shaped explicit-only variant (fashion, as MEPAVE) --------------------------------
FASHION = {
    "材质": ["真皮", "棉麻", "牛仔", "雪纺", "羊毛", "丝绸", "帆布"],
    "风格": ["复古风", "简约风", "韩版", "商务风", "运动风", "学院风"],
    "颜色": ["黑色", "白色", "酒红色", "藏青色", "米色", "卡其色"],
    "款式": ["连衣裙", "衬衫", "单肩包", "运动鞋", "外套", "半身裙", "双肩包"],
    "闭合方式": ["搭扣", "拉链", "系带", "纽扣"],
    "图案": ["条纹", "格子", "碎花", "纯色"],
}
FASHION_BRANDS = ["爱华仕", "菲利克斯", "森马", "太平鸟", "优衣库", "江南布衣", "李宁", "回力"]
FASHION_GLUE = ["", "的", "款", "设计", "风格的"]


def make_mepave_row(i: int, seed: int) -> tuple[str, str, str, str]:
    rng = np.random.default_rng([seed, i, 11])
    k = int(rng.integers(1, 4))
    attrs = list(rng.choice(list(FASHION), size=k, replace=False))
    if "款式" not in attrs and rng.random() < 0.7:
        attrs.append("款式")
    attrs = [a for a in FASHION if a in attrs]  # stable order, the item type last but one
    text, labelled = [], []
    if rng.random() < 0.6:
        b = _pick(rng, FASHION_BRANDS)
        text.append(b)
        labelled.append(b)
    for a in attrs:
        v = _pick(rng, FASHION[a])
        glue = _pick(rng, FASHION_GLUE) if a != "款式" else ""
        text.append(v + glue)
        labelled.append(f"<{a}>{v}</{a}>{glue}")
    if rng.random() < 0.3:
        tail = _pick(rng, ["百搭", "显瘦", "新款", "时尚", "潮流"])
        text.append(tail)
        labelled.append(tail)
    return f"c_{int(rng.integers(10**8, 10**9))}", f"s_{i}", "".join(text), "".join(labelled)


def write_mepave(out: Path, n_rows: int, seed: int, split: tuple[float, float] = (0.8, 0.1)) -> dict:
    """Write ``jdai.jave.fashion.{train,valid,test}`` (cid, sid, text, labelled_text; no header)."""
    out.mkdir(parents=True, exist_ok=True)
    counts = {"train": 0, "valid": 0, "test": 0}
    with contextlib.ExitStack() as files:
        part = {sp: files.enter_context(atomic_writer(out / f"jdai.jave.fashion.{sp}")) for sp in counts}
        for i in range(n_rows):
            sp = split_of(i, n_rows, split)
            sp = "valid" if sp == "val" else sp
            part[sp].write(("\n" if counts[sp] else "") + "\t".join(make_mepave_row(i, seed)))
            counts[sp] += 1
        for f in part.values():
            f.write("\n")
    return counts


def write_synth(out: Path, n_products: int, mepave_rows: int, seed: int, long_desc_fraction: float = 0.25,
                label_noise: float = 0.03, image_size: int = 128) -> dict:
    """The default data: ``desire/`` (:func:`write_desire`) and its MEPAVE-shaped twin ``mepave/``
    (:func:`write_mepave`) under ``out``; the DESIRE-shaped set's stats."""
    stats = write_desire(out / "desire", n_products, seed, long_desc_fraction, label_noise, image_size)
    write_mepave(out / "mepave", mepave_rows, seed)
    return stats

