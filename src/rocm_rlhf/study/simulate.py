"""Simulated raters that answer a study through the app's HTTP interface, as a person's browser does.

:class:`GoldRater` is the sandbox's gold judge choosing with noise: a Bradley-Terry rater whose strength of an image
is its gold score, ``P(left) = g_L^(1/T) / (g_L^(1/T) + g_R^(1/T))`` (``g`` = gold + 1e-6, ``T`` the temperature:
1 is the plain Bradley-Terry model, smaller is more decided), answering a tie when the two log-strengths differ by
less than ``tie_margin`` (identical images always tie). :class:`CarelessRater` answers at random (it fails the
attention checks). :func:`answer_study` runs one rater against a served app: it claims a rater id, fetches each next
item and its two images, decides and posts the answer, until the study is done or ``max_items`` are answered.
Each rater's randomness comes from its own seed. API: :class:`GoldRater`, :class:`CarelessRater`,
:func:`answer_study`, :func:`simulate`.
"""

from __future__ import annotations

import http.cookiejar
import io
import json
import math
import urllib.error
import urllib.request
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from .design import CHOICES

GOLD_FLOOR = 1e-6
"""Added to the gold score before it is a Bradley-Terry strength (gold can be exactly 0)."""


class GoldRater:
    """The gold judge choosing with noise. ``gold(images, prompts)``: per image a score >= 0, images a float array
    (B, H, W, 3) in [0, 1] (:func:`sandbox_gold`)."""

    def __init__(self, gold: Callable[[np.ndarray, Sequence[str]], np.ndarray], *, temperature: float = 1.0,
                 tie_margin: float = 0.1, seed: int = 0):
        if not (temperature > 0 and math.isfinite(temperature)):
            raise ValueError(f"study.simulate.temperature must be > 0, got {temperature}")
        if not tie_margin >= 0:
            raise ValueError(f"study.simulate.tie_margin must be >= 0, got {tie_margin}")
        self.gold, self.temperature, self.tie_margin = gold, float(temperature), float(tie_margin)
        self.rng = np.random.default_rng(seed)

    def choose(self, prompt: str, left: np.ndarray, right: np.ndarray) -> str:
        g = np.asarray(self.gold(np.stack([left, right]), [prompt, prompt]), dtype=float)
        diff = float(np.log(g[0] + GOLD_FLOOR) - np.log(g[1] + GOLD_FLOOR))
        if abs(diff) < self.tie_margin or np.array_equal(left, right):
            return "tie"
        p_left = 1.0 / (1.0 + math.exp(-diff / self.temperature))
        return "left" if self.rng.random() < p_left else "right"


class CarelessRater:
    """Answers left, right or tie uniformly at random, whatever it is shown."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)

    def choose(self, prompt: str, left: np.ndarray, right: np.ndarray) -> str:
        return CHOICES[int(self.rng.integers(len(CHOICES)))]


def sandbox_gold(world, tau: float | None) -> Callable[[np.ndarray, Sequence[str]], np.ndarray]:
    """The sandbox's gold score of images as the raters see them (the PNGs the app serves)."""
    import torch

    from ..sandbox.judge import GoldJudge

    judge = GoldJudge(world, tau=tau)

    def gold(images: np.ndarray, prompts: Sequence[str]) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).float()
        return judge(x, list(prompts))["gold"].numpy()

    return gold


class _Client:
    """A browser-like HTTP client of the app: keeps the session cookies, speaks JSON."""

    def __init__(self, base_url: str):
        self.base = base_url.rstrip("/")
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

    def request(self, method: str, path: str, data: dict | None = None) -> tuple[int, bytes]:
        body = None if data is None else json.dumps(data).encode()
        req = urllib.request.Request(self.base + path, data=body, method=method,
                                     headers={"Content-Type": "application/json"} if body else {})
        try:
            with self.opener.open(req, timeout=30) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def json(self, method: str, path: str, data: dict | None = None, ok=(200, 201)) -> dict:
        status, raw = self.request(method, path, data)
        if status not in ok:
            raise RuntimeError(f"{method} {path} answered {status}: {raw[:300]!r}")
        return json.loads(raw)

    def image(self, path: str) -> np.ndarray:
        status, raw = self.request("GET", path)
        if status != 200:
            raise RuntimeError(f"GET {path} answered {status}")
        return np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"), dtype=np.float32) / 255.0


def answer_study(base_url: str, rater_id: str, rater, *, max_items: int | None = None) -> int:
    """Answer the study served at ``base_url`` as ``rater_id`` with ``rater`` (its ``choose(prompt, left, right)``);
    stops when the study is done or after ``max_items`` answers. Returns the number of answers recorded."""
    client = _Client(base_url)
    client.json("POST", "/api/raters", {"rater_id": rater_id})
    n = 0
    while max_items is None or n < max_items:
        item = client.json("GET", "/api/next")
        if item["done"]:
            break
        choice = rater.choose(item["prompt"], client.image(item["left"]), client.image(item["right"]))
        client.json("POST", "/api/answer", {"item_id": item["item_id"], "choice": choice})
        n += 1
    return n


def simulate(base_url: str, gold, *, raters: int, careless: int, temperature: float, tie_margin: float,
             seed: int) -> dict[str, int]:
    """``raters`` gold raters (``sim-gold-<k>``) and ``careless`` careless ones (``sim-careless-<k>``) answer every
    item of the study at ``base_url``; returns ``{rater id: answers}``."""
    done = {}
    for k in range(raters):
        rater = GoldRater(gold, temperature=temperature, tie_margin=tie_margin, seed=seed * 1000 + k)
        done[f"sim-gold-{k}"] = answer_study(base_url, f"sim-gold-{k}", rater)
    for k in range(careless):
        done[f"sim-careless-{k}"] = answer_study(base_url, f"sim-careless-{k}", CarelessRater(seed * 1000 + 500 + k))
    return done
