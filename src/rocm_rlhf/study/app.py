"""The study's local web app (Flask): a rater sees the prompt and two images and answers left, right or tie.

Pages: ``/`` (enter a rater id, and a resume code to continue elsewhere), ``/rate`` (the study; keys: left arrow or 1
= left, down arrow, space or 2 = tie, right arrow or 3 = right), ``/stop`` (answers saved, how to resume). The page
is a small script over the JSON interface that the simulated raters use too:

- ``POST /api/raters`` ``{"rater_id": ..., "code": optional}``: claims the id (a new resume code is made when none is
  given) and sets the session cookies; 409 if the id is held by another code.
- ``GET /api/next``: the rater's next unanswered item ``{"item_id", "prompt", "left", "right", "position",
  "total"}`` (image URLs) or ``{"done": true}``. Each rater gets every item, in an order of its own.
- ``POST /api/answer`` ``{"item_id", "choice"}``: 201 when recorded, 200 for the same answer again (a double
  submit), 409 for another answer to an answered item (nothing is overwritten).
- ``GET /images/<name>``: the study's images (their names reveal neither arm nor run).

A request without a valid rater session gets 401 (no session) or 403 (wrong resume code); a malformed one 400; an
unknown item 404. API: :func:`create_app`, :func:`serving` (a server in a thread, for tests and the simulation),
:func:`serve` (the ``rocm-rlhf study-serve`` command).
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import secrets
import threading
from pathlib import Path
from typing import Iterator

import numpy as np

from .db import AnswerStore, study_fingerprint
from .design import CHOICES, load_study

RATER_ID = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
IMAGE_NAME = re.compile(r"[0-9a-f]{20}\.png")
COOKIE_RATER, COOKIE_CODE = "study_rater", "study_code"

START_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Image preference study</title>
<style>body{font-family:sans-serif;max-width:40em;margin:3em auto;padding:0 1em}input,button{font-size:1.1em;margin:.3em 0}
.err{color:#b00020}</style></head><body>
<h1>Image preference study</h1>
<p>You will see a text prompt and two images generated for it. Choose the image you prefer: the one that shows the
prompt better and looks better. If you cannot tell them apart, choose <em>tie</em>. {{ total }} questions; you can stop
at any time and continue later.</p>
<form id="start">
<label>Your rater id (letters, digits, <code>_ . @ -</code>)<br><input id="rater" name="rater_id" required
 maxlength="64" autofocus></label><br>
<label>Resume code (only to continue on another browser)<br><input id="code" name="code"></label><br>
<button id="begin" type="submit">Start</button>
</form><p id="error" class="err"></p>
<script>
document.getElementById('start').addEventListener('submit', async (e) => {
  e.preventDefault();
  const body = {rater_id: document.getElementById('rater').value.trim()};
  const code = document.getElementById('code').value.trim();
  if (code) body.code = code;
  const r = await fetch('/api/raters', {method: 'POST', headers: {'Content-Type': 'application/json'},
                                        body: JSON.stringify(body)});
  if (r.ok) { window.location = '/rate'; } else { document.getElementById('error').textContent = (await r.json()).error; }
});
</script></body></html>"""

RATE_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Image preference study</title>
<style>body{font-family:sans-serif;margin:1.5em auto;max-width:60em;padding:0 1em;text-align:center}
#prompt{font-size:1.4em;margin:.6em 0 1em}.pair{display:flex;gap:2em;justify-content:center}
.pair img{width:min(40vw,320px);height:auto;image-rendering:pixelated;border:1px solid #999;background:#eee}
button{font-size:1.1em;padding:.5em 1.2em;margin:1em .5em}kbd{border:1px solid #999;border-radius:3px;padding:0 .3em}
#meta{color:#555;font-size:.9em}</style></head><body>
<p id="meta">Rater <b>{{ rater }}</b> &middot; resume code <code id="resume">{{ code }}</code> &middot;
<span id="progress"></span> &middot; <a href="/stop">stop for now</a></p>
<div id="question"><div id="prompt"></div>
<div class="pair"><img id="img-left" alt="left image"><img id="img-right" alt="right image"></div>
<div><button id="btn-left" data-choice="left">Left is better <kbd>&larr;</kbd></button>
<button id="btn-tie" data-choice="tie">Tie / can't tell <kbd>&darr;</kbd></button>
<button id="btn-right" data-choice="right">Right is better <kbd>&rarr;</kbd></button></div></div>
<div id="done" hidden><h2>Thank you: every question is answered.</h2></div>
<p id="error" style="color:#b00020"></p>
<script>
let item = null, busy = false;
async function next() {
  const r = await fetch('/api/next');
  const j = await r.json();
  if (!r.ok) { document.getElementById('error').textContent = j.error; return; }
  if (j.done) { item = null; document.getElementById('question').hidden = true;
                document.getElementById('done').hidden = false;
                document.getElementById('progress').textContent = j.total + ' / ' + j.total; return; }
  item = j;
  document.getElementById('prompt').textContent = j.prompt;
  document.getElementById('img-left').src = j.left;
  document.getElementById('img-right').src = j.right;
  document.getElementById('progress').textContent = 'question ' + j.position + ' / ' + j.total;
  busy = false;
}
async function answer(choice) {
  if (busy || !item) return;
  busy = true;
  const r = await fetch('/api/answer', {method: 'POST', headers: {'Content-Type': 'application/json'},
                                        body: JSON.stringify({item_id: item.item_id, choice: choice})});
  if (!r.ok && r.status !== 409) { document.getElementById('error').textContent = (await r.json()).error; busy = false;
                                   return; }
  await next();
}
for (const b of document.querySelectorAll('button[data-choice]')) b.addEventListener('click', () => answer(b.dataset.choice));
const KEYS = {ArrowLeft: 'left', '1': 'left', ArrowDown: 'tie', ' ': 'tie', '2': 'tie', ArrowRight: 'right', '3': 'right'};
document.addEventListener('keydown', (e) => { if (KEYS[e.key] && !e.repeat) { e.preventDefault(); answer(KEYS[e.key]); } });
next();
</script></body></html>"""

STOP_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Image preference study</title></head>
<body style="font-family:sans-serif;max-width:40em;margin:3em auto">
<h1>Your answers are saved</h1><p>You answered {{ answered }} of {{ total }} questions. To continue, open
<a href="/rate">the study</a> again in this browser, or enter rater id <b>{{ rater }}</b> with resume code
<code>{{ code }}</code> on the start page of another browser.</p></body></html>"""


def rater_order(item_ids: list[str], seed: int, rater_id: str) -> list[str]:
    """The order in which ``rater_id`` sees the items: a permutation drawn from (the study's seed, the rater id)."""
    digest = hashlib.sha256(f"{seed}|{rater_id}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    return [item_ids[i] for i in rng.permutation(len(item_ids))]


def create_app(study_dir: str | Path, db_path: str | Path, *, durable: bool = True):
    """The Flask app of the study folder ``study_dir`` writing the answers to the SQLite file ``db_path``
    (``durable``: :class:`~.db.AnswerStore`'s)."""
    from flask import Flask, jsonify, make_response, redirect, render_template_string, request, send_from_directory

    study_dir = Path(study_dir).resolve()
    study = load_study(study_dir)
    store = AnswerStore(db_path, study_fingerprint(study), durable=durable)
    items = {i["item_id"]: i for i in study["items"]}
    ids = sorted(items)
    app = Flask(__name__)
    app.extensions["study_store"] = store
    app.config["MAX_CONTENT_LENGTH"] = 16 * 1024

    def error(status: int, message: str):
        return jsonify({"error": message}), status

    def session():
        """(rater id, code) of the request's cookies, or an error response."""
        rater, code = request.cookies.get(COOKIE_RATER), request.cookies.get(COOKIE_CODE)
        if not rater or not code:
            return None, error(401, "no rater session: start on the study's first page (/) with your rater id")
        if not store.holds(rater, code):
            return None, error(403, f"the resume code of this session does not hold rater id {rater!r}: start again "
                                    "on the first page (/)")
        return (rater, code), None

    def body(*fields: str):
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            return None, error(400, f"expected a JSON object body with {', '.join(fields)} "
                                    "(Content-Type: application/json)")
        missing = [f for f in fields if not isinstance(data.get(f), str)]
        if missing:
            return None, error(400, f"the JSON body lacks {', '.join(missing)} (strings)")
        return data, None

    @app.errorhandler(413)
    def too_large(_):
        return error(413, "request body too large")

    @app.get("/")
    def start():
        return render_template_string(START_PAGE, total=len(ids))

    @app.post("/api/raters")
    def claim():
        data, err = body("rater_id")
        if err:
            return err
        rater = data["rater_id"]
        if not RATER_ID.fullmatch(rater):
            return error(400, "a rater id is 1 to 64 letters, digits or _ . @ - (no spaces)")
        code = data.get("code")
        if code is not None and (not isinstance(code, str) or not code):
            return error(400, "code must be a non-empty string (the resume code shown while rating)")
        code = code or secrets.token_urlsafe(9)
        if not store.claim(rater, code):
            return error(409, f"rater id {rater!r} is taken: enter its resume code to continue, or choose another id")
        resp = make_response(jsonify({"rater_id": rater, "code": code, "total": len(ids),
                                      "answered": len(store.answered(rater))}), 200)
        for name, value in ((COOKIE_RATER, rater), (COOKIE_CODE, code)):
            resp.set_cookie(name, value, max_age=180 * 24 * 3600, httponly=True, samesite="Strict")
        return resp

    @app.get("/rate")
    def rate():
        s, err = session()
        if err:
            return redirect("/")
        return render_template_string(RATE_PAGE, rater=s[0], code=s[1])

    @app.get("/stop")
    def stop():
        s, err = session()
        if err:
            return redirect("/")
        return render_template_string(STOP_PAGE, rater=s[0], code=s[1], answered=len(store.answered(s[0])),
                                      total=len(ids))

    @app.get("/api/next")
    def next_item():
        s, err = session()
        if err:
            return err
        done = store.answered(s[0])
        order = rater_order(ids, study["seed"], s[0])
        todo = [i for i in order if i not in done]
        if not todo:
            return jsonify({"done": True, "total": len(ids)})
        item = items[todo[0]]
        store.served(s[0], item["item_id"])
        return jsonify({"done": False, "item_id": item["item_id"], "prompt": item["prompt"],
                        "left": f"/images/{item['left_image']}", "right": f"/images/{item['right_image']}",
                        "position": len(done) + 1, "total": len(ids)})

    @app.post("/api/answer")
    def answer():
        s, err = session()
        if err:
            return err
        data, err = body("item_id", "choice")
        if err:
            return err
        if data["item_id"] not in items:
            return error(404, f"unknown item {data['item_id']!r}")
        if data["choice"] not in CHOICES:
            return error(400, f"choice must be one of {', '.join(CHOICES)}, got {data['choice']!r}")
        status, stored = store.answer(s[0], data["item_id"], data["choice"])
        if status == "conflict":
            return error(409, f"item {data['item_id']!r} is already answered ({stored!r}); answers are not changed")
        return jsonify({"status": status, "item_id": data["item_id"], "choice": stored}), (
            201 if status == "created" else 200)

    @app.get("/images/<name>")
    def image(name: str):
        if not IMAGE_NAME.fullmatch(name):
            return error(404, f"no image {name!r}")
        return send_from_directory(study_dir / "images", name, max_age=3600)

    return app


@contextlib.contextmanager
def serving(app, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve ``app`` from a thread on ``host``:``port`` (0: a free port) and yield its base URL."""
    from werkzeug.serving import WSGIRequestHandler, make_server

    class Quiet(WSGIRequestHandler):
        def log_request(self, *args, **kwargs):
            pass

    server = make_server(host, port, app, threaded=True, request_handler=Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_port}"
    finally:
        server.shutdown()
        thread.join()


def serve(study_dir: str | Path, db_path: str | Path, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve the study until interrupted (the ``rocm-rlhf study-serve`` command)."""
    from werkzeug.serving import run_simple

    app = create_app(study_dir, db_path)
    print(f"study of {Path(study_dir)}: answers go to {Path(db_path)}; open http://{host}:{port}/ (Ctrl-C stops)")
    run_simple(host, port, app, threaded=True)
