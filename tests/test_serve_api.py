"""The screening API (issue 8) through FastAPI's TestClient: page, models, predictions, DICOM, every bad input."""
from __future__ import annotations

import asyncio
import base64
import builtins
import dataclasses
import io
import json
import logging
import tempfile

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from conftest import sample_images
from cxrkit.cli.main import main
from cxrkit.inference.bundle import resolve_model, save_bundle
from cxrkit.inference.predictor import predict_paths
from cxrkit.serving import create_app
from serve_support import PATIENT_STRINGS, dicom_bytes, encode, film, without_inline_images

MB = 2**20


@pytest.fixture(scope="module")
def bundle():
    return resolve_model(None)


@pytest.fixture(scope="module")
def client(bundle):
    return TestClient(create_app(bundle, max_upload_mb=4, max_files=4, workers=2))


def _post(client, files, query: str = ""):
    """``files``: [(name, bytes)]."""
    return client.post(f"/api/predict{query}", files=[("files", (n, d, "application/octet-stream")) for n, d in files])


def _image(uri: str) -> Image.Image:
    head, b64 = uri.split(",", 1)
    assert head == "data:image/jpeg;base64"
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def _assert_refused(r, status: int, file: str | None, reason: str):
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"detail", "errors"} and "\n" not in body["detail"] and "Traceback" not in r.text
    assert body["errors"][0]["file"] == file
    assert reason in body["errors"][0]["reason"]


# ---------------------------------------------------------------- page, health, models, docs


def test_page_has_drop_zone_model_card_and_disclaimer(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "Not a medical device" in r.text and 'type="file"' in r.text and "multiple" in r.text
    assert "default-src 'self'" in r.headers["content-security-policy"]
    js = client.get("/static/app.js")
    assert js.status_code == 200 and "/api/predict" in js.text and "heatmap" in js.text
    assert "innerHTML" not in js.text  # file names and reasons are inserted as text, never parsed as HTML
    assert client.get("/static/app.css").status_code == 200


def test_health_and_model_card(client, bundle):
    assert client.get("/healthz").json() == {"status": "ok", "models": ["cxr_cnn"]}
    body = client.get("/api/models").json()
    assert body["default"] == "cxr_cnn" and (body["max_upload_mb"], body["max_files"]) == (4, 4)
    card = body["models"][0]
    assert card["classes"] == ["NORMAL", "PNEUMONIA"] and card["positive_class"] == "PNEUMONIA"
    assert card["threshold"] == pytest.approx(bundle.threshold, abs=1e-6)
    assert card["threshold_rule"] == bundle.info["threshold_rule"] and card["threshold_rule"].startswith("youden")
    assert card["heatmap"] is True and card["format"] == "pytorch" and card["input"] == f"{bundle.preprocess.size}x{bundle.preprocess.size} grayscale"
    assert card["disclaimer"] == "Not a medical device." and "Not for diagnosis" in card["intended_use"]
    assert "Kermany" in card["card_markdown"] and "test split" in card["card_markdown"]  # data and metrics
    assert card["validation_metrics"]["n"] == 522


def test_openapi_documents_the_api(client):
    spec = client.get("/openapi.json").json()
    op = spec["paths"]["/api/predict"]["post"]
    assert "multipart/form-data" in op["requestBody"]["content"]
    assert {p["name"] for p in op["parameters"]} == {"heatmap", "preview", "model"}
    assert {"200", "400", "404", "413", "415", "422"} <= set(op["responses"])
    assert {"/api/models", "/healthz"} <= set(spec["paths"])
    assert client.get("/docs").status_code == 200


# ---------------------------------------------------------------- predictions


def test_jpeg_and_png_agree_with_cxrkit_predict(client, bundle):
    path = sample_images("test", "PNEUMONIA")[0]
    expected = predict_paths(bundle, [path])[0][0]
    png = encode(film("PNEUMONIA"), "PNG")
    r = _post(client, [("a.jpeg", path.read_bytes()), ("a.png", png)])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "cxr_cnn" and [x["file"] for x in body["results"]] == ["a.jpeg", "a.png"]
    for res in body["results"]:
        assert res["label"] == expected.label and res["uncertain"] is expected.uncertain
        assert res["probabilities"]["PNEUMONIA"] == pytest.approx(expected.probabilities["PNEUMONIA"], abs=1e-4)
        assert res["heatmap"] is None and res["preview"] is None


def test_normal_film_is_called_normal(client):
    r = _post(client, [("n.jpeg", sample_images("test", "NORMAL")[0].read_bytes())])
    res = r.json()["results"][0]
    assert res["probabilities"]["NORMAL"] + res["probabilities"]["PNEUMONIA"] == pytest.approx(1.0, abs=1e-5)
    assert set(res["probabilities"]) == {"NORMAL", "PNEUMONIA"}


def test_heatmap_and_preview_are_display_sized_jpegs(client, bundle):
    big = encode(film("PNEUMONIA"), "JPEG", side=1024)
    res = _post(client, [("big.jpeg", big)], "?heatmap=true&preview=true").json()["results"][0]
    assert (res["width"], res["height"]) == (1024, 1024)
    preview, heat = _image(res["preview"]), _image(res["heatmap"])
    assert preview.size == heat.size == (512, 512) and preview.mode == "L" and heat.mode == "RGB"
    rgb = np.asarray(heat).astype(int)
    assert np.abs(rgb[..., 0] - rgb[..., 2]).max() > 60  # coloured where the model looked, not a gray copy


def test_server_gradcam_equals_explain_image(client, bundle):
    """The server's copies stop the backward pass at the explained layer; the heatmap must not change."""
    from cxrkit.explain import explain_image

    served = client.app.state.models["cxr_cnn"]
    assert not any(p.requires_grad for p in served.explainers.queue[0].model.parameters())  # the fast path is on
    for path in sample_images("test", "NORMAL")[:2] + sample_images("test", "PNEUMONIA")[:2]:
        image = film(path.parent.name, sample_images("test", path.parent.name).index(path))
        reference = explain_image(bundle, image)
        assert reference.heatmap.max() > 0.5
        np.testing.assert_allclose(served.explain(image, reference.label), reference.heatmap, atol=1e-5)


def test_dicom_windowed_inverted_and_equal_to_the_jpeg(client):
    gray = film("PNEUMONIA")
    jpeg = _post(client, [("f.png", encode(gray, "PNG"))]).json()["results"][0]
    stored = gray.astype(np.uint16) * 16  # 12-bit detector values
    m2 = _post(client, [("f.dcm", dicom_bytes(stored))]).json()["results"][0]
    m1 = _post(client, [("f1.dcm", dicom_bytes(4080 - stored, "MONOCHROME1"))]).json()["results"][0]
    for res in (m1, m2):
        assert res["label"] == jpeg["label"]
        assert res["probabilities"]["PNEUMONIA"] == pytest.approx(jpeg["probabilities"]["PNEUMONIA"], abs=2e-3)
    ramp = np.tile(np.linspace(0, 4000, 64).astype(np.uint16), (24, 1))
    res = _post(client, [("w.dcm", dicom_bytes(ramp, window=(1000, 500)))], "?preview=true").json()["results"][0]
    row = np.asarray(_image(res["preview"]))[12].astype(int)
    assert row[:8].max() <= 8 and row[-24:].min() >= 247  # values outside the window are clipped


def test_dicom_patient_identifiers_never_shown_or_logged(client, caplog, capfd):
    stored = film("NORMAL").astype(np.uint16) * 16
    with caplog.at_level(logging.DEBUG):
        ok = _post(client, [("scan.dcm", dicom_bytes(stored))], "?heatmap=true&preview=true")
        bad = _post(client, [("nopix.dcm", dicom_bytes(None))])
        page = client.get("/").text + client.get("/api/models").text
    assert ok.status_code == 200 and bad.status_code == 422
    assert "data:image/jpeg;base64," in ok.text  # the heatmap and preview came back, and are left out below
    seen = without_inline_images(ok.text) + bad.text + page + caplog.text + "".join(capfd.readouterr())
    for secret in PATIENT_STRINGS:
        assert secret not in seen


def test_uncertain_when_the_model_abstains(bundle):
    unsure = dataclasses.replace(bundle, confidence_threshold=1.000001)  # above any probability, even a saturated 1.0
    client = TestClient(create_app(unsure, workers=1))
    paths = sample_images("test", "NORMAL")[:2] + sample_images("test", "PNEUMONIA")[:2]
    files = [(p.name, p.read_bytes()) for p in paths]
    results = _post(client, files).json()["results"]
    assert len(results) == 4 and all(r["uncertain"] is True for r in results)
    never = dataclasses.replace(bundle, confidence_threshold=0.0)  # 0: no confidence threshold, never UNCERTAIN
    sure = _post(TestClient(create_app(never, workers=1)), files).json()["results"]
    assert [r["label"] for r in sure] == [r["label"] for r in results]  # abstaining does not change the decision
    assert not any(r["uncertain"] for r in sure)


def test_onnx_model_serves_without_heatmap(bundle, tmp_path):
    from cxrkit.export import export_model

    onnx = export_model(bundle, "onnx", tmp_path / "cxr.onnx").path
    run_dir = tmp_path / "my_run"
    run_dir.mkdir()
    save_bundle(bundle, run_dir / "model.safetensors")
    client = TestClient(create_app([bundle, onnx, str(run_dir)], workers=1))
    models = client.get("/api/models").json()
    assert [m["id"] for m in models["models"]] == ["cxr_cnn", "cxr.onnx", "my_run"] and models["default"] == "cxr_cnn"
    assert models["models"][1]["heatmap"] is False and "PyTorch" in models["models"][1]["heatmap_note"]
    data = sample_images("test", "PNEUMONIA")[1].read_bytes()
    torch_res = _post(client, [("x.jpeg", data)]).json()["results"][0]
    r = _post(client, [("x.jpeg", data)], "?model=cxr.onnx&heatmap=true&preview=true")
    assert r.status_code == 200 and r.json()["model"] == "cxr.onnx"
    res = r.json()["results"][0]
    assert res["heatmap"] is None and "PyTorch" in res["heatmap_note"] and res["preview"].startswith("data:image/jpeg")
    assert res["probabilities"]["PNEUMONIA"] == pytest.approx(torch_res["probabilities"]["PNEUMONIA"], abs=1e-3)


def test_three_class_packed_bnn_and_unexplainable_models(tmp_path):
    """N-class decisions (no threshold), a packed BNN (NumPy engine: no heatmap), a model with no spatial layer."""
    import torch
    import torch.nn as nn
    from importlib import resources

    from cxrkit.data.preprocess import Preprocess
    from cxrkit.inference.bundle import ModelBundle
    from cxrkit.models import create_model

    torch.manual_seed(0)
    three = ModelBundle(create_model("seed_cnn", num_classes=3, img_size=64).eval(), "seed_cnn", ("A", "B", "C"),
                        Preprocess(size=64), model_kwargs={"img_size": 64})
    flat = ModelBundle(nn.Sequential(nn.Flatten(), nn.Linear(32 * 32, 2)).eval(), "mlp", ("NORMAL", "PNEUMONIA"),
                       Preprocess(size=32))
    packed = str(resources.files("cxrkit") / "weights" / "cxr_bnn.bnn.npz")
    client = TestClient(create_app([three, packed, flat], workers=1))
    cards = {m["id"]: m for m in client.get("/api/models").json()["models"]}
    assert list(cards) == ["seed_cnn", "cxr_bnn.bnn.npz", "mlp"]
    assert cards["seed_cnn"]["threshold"] is None and cards["seed_cnn"]["positive_class"] is None
    assert [cards[m]["heatmap"] for m in cards] == [True, False, False]
    assert cards["cxr_bnn.bnn.npz"]["recipe"].startswith("weight average of cxr_bnn_deep224_clahe_veil_view_warm")  # built, not trained
    assert cards["seed_cnn"]["recipe"] is None
    assert "spatial" in cards["mlp"]["heatmap_note"]
    data = sample_images("test", "PNEUMONIA")[0].read_bytes()
    for model_id in cards:
        res = _post(client, [("x.jpeg", data)], f"?heatmap=true&model={model_id}").json()["results"][0]
        probs = res["probabilities"]
        assert res["label"] == max(probs, key=probs.get) or model_id != "seed_cnn"
        assert (res["heatmap"] is not None) == cards[model_id]["heatmap"]
        assert res["heatmap_note"] == cards[model_id]["heatmap_note"]


# ---------------------------------------------------------------- bad input: clear 4xx, and the server goes on


def _bomb_png() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (8000, 7000)).save(buf, format="PNG")  # 56 Mpx of zeros: ~55 KB on the wire
    return buf.getvalue()


BAD_FILES = {
    "empty": ("empty.jpeg", lambda: b"", "empty file"),
    "not an image": ("notes.jpeg", lambda: b"patient notes, not an image\n" * 20, "not a JPEG, PNG or DICOM"),
    "truncated JPEG": ("cut.jpeg", lambda: sample_images("test", "NORMAL")[0].read_bytes()[:3000], "truncated"),
    "decompression bomb": ("bomb.png", _bomb_png, "pixel limit"),
    "DICOM without pixels": ("nopix.dcm", lambda: dicom_bytes(None), "no pixel data"),
    "unsupported photometric": ("color.dcm", lambda: dicom_bytes(np.zeros((8, 8, 3), np.uint16), "YBR_FULL", 3),
                                "unsupported DICOM photometric interpretation YBR_FULL"),
    # the file's own text is not echoed back unless it is a DICOM code string
    "photometric with markup": ("markup.dcm", lambda: dicom_bytes(np.zeros((8, 8), np.uint16), "PALETTE <b>X</b>"),
                                "photometric interpretation (not a DICOM code string)"),
    # pydicom would inflate the whole dataset before any size check: 400 KiB on the wire became 400 MiB
    "deflated DICOM": ("deflated.dcm", lambda: dicom_bytes(np.zeros((8, 8), np.uint16),
                                                           transfer_syntax="1.2.840.10008.1.2.1.99"),
                       "deflated DICOM transfer syntax"),
    # 36 Mpx passes the pixel limit; 3 samples of 16 bits would decode to 216 MB
    "DICOM too many decoded bytes": ("rgb16.dcm", lambda: dicom_bytes(np.zeros((8, 8, 3), np.uint16), "RGB", 3,
                                                                      claimed_shape=(6000, 6000)),
                                     "decoded pixel data would exceed"),
    # only the promised formats are decoded: TIFF, GIF, BMP, ... are Pillow attack surface nobody needs here
    "TIFF named .png": ("scan.png", lambda: encode(np.zeros((64, 64), np.uint8), "TIFF"), "not a JPEG, PNG or DICOM"),
    "BMP named .jpeg": ("scan.jpeg", lambda: encode(np.zeros((64, 64), np.uint8), "BMP"), "not a JPEG, PNG or DICOM"),
}


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # Pillow's warning, then our refusal
@pytest.mark.filterwarnings("ignore:Invalid value for VR CS")  # pydicom's, writing the markup case
@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_file_is_a_clear_422_and_the_server_keeps_serving(client, case):
    name, make, reason = BAD_FILES[case]
    good = sample_images("test", "NORMAL")[1].read_bytes()
    _assert_refused(_post(client, [("fine.jpeg", good), (name, make())]), 422, name, reason)
    assert _post(client, [("fine.jpeg", good)]).status_code == 200


def test_every_bad_file_of_a_request_is_listed(client):
    r = _post(client, [("a.jpeg", b""), ("b.jpeg", b"xx")])
    assert [e["file"] for e in r.json()["errors"]] == ["a.jpeg", "b.jpeg"]
    assert r.json()["detail"] == "a.jpeg: empty file (and 1 more)"


def test_too_many_pixels_in_one_request(client):
    wide = encode(np.zeros((6000, 6000), np.uint8), "PNG")  # 36 Mpx each: one passes, two exceed 50 Mpx
    _assert_refused(_post(client, [("a.png", wide), ("b.png", wide)]), 422, "b.png", "in total")


def _multipart(parts: list[tuple[bytes, bytes]], boundary: bytes = b"cxrkitboundary") -> tuple[bytes, dict]:
    """A raw multipart body (file names as given, unlike httpx, which percent-encodes odd characters)."""
    body = b"".join(b"--" + boundary + b'\r\nContent-Disposition: form-data; name="files"; filename="' + name
                    + b'"\r\nContent-Type: application/octet-stream\r\n\r\n' + data + b"\r\n" for name, data in parts)
    return body + b"--" + boundary + b"--\r\n", {"content-type": "multipart/form-data; boundary=" + boundary.decode()}


def test_upload_over_the_size_limit_is_413_while_streaming(client):
    """Driven as raw ASGI with an endless body: the app must stop reading at the 4 MB limit by itself."""
    head, headers = _multipart([(b"huge.dcm", b"")])
    head = head[:head.index(b"\r\n--cxrkitboundary--")]
    chunk, pulled, sent = b"\xff" * 65536, [], []

    async def receive():
        pulled.append(1)
        return {"type": "http.request", "body": head if len(pulled) == 1 else chunk, "more_body": True}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/api/predict", "raw_path": b"/api/predict", "root_path": "", "query_string": b"",
             "headers": [(b"content-type", headers["content-type"].encode())], "client": ("127.0.0.1", 1),
             "server": ("127.0.0.1", 80)}
    asyncio.run(asyncio.wait_for(client.app(scope, receive, send), timeout=30))
    assert sent[0]["status"] == 413
    body = json.loads(b"".join(m.get("body", b"") for m in sent[1:]))
    assert body["errors"] == [{"file": "huge.dcm", "reason": "request exceeds the 4 MB upload limit"}]
    assert 4 * MB <= len(pulled) * len(chunk) <= 4 * MB + 2 * len(chunk)
    big = _post(client, [("big.jpeg", b"\xff" * (5 * MB))])  # the same through the HTTP client
    _assert_refused(big, 413, "big.jpeg", "4 MB upload limit")
    assert _post(client, [("ok.jpeg", sample_images("test", "NORMAL")[0].read_bytes())]).status_code == 200


def test_too_many_files_names_the_first_one_over(client):
    data = sample_images("test", "NORMAL")[0].read_bytes()
    _assert_refused(_post(client, [(f"f{i}.jpeg", data) for i in range(6)]), 400, "f4.jpeg", "more than 4 files")


@pytest.mark.parametrize("kwargs, status, reason", [
    ({"content": b"{}", "headers": {"content-type": "application/json"}}, 415, "multipart/form-data"),
    ({"content": b"x", "headers": {"content-type": "multipart/form-data"}}, 400, "without a boundary"),
    ({"content": b"--b\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhi\r\n--b--\r\n",
      "headers": {"content-type": "multipart/form-data; boundary=b"}}, 400, "no files"),
    ({"content": b"garbage without any boundary", "headers": {"content-type": "multipart/form-data; boundary=b"}},
     400, ""),
])
def test_malformed_requests(client, kwargs, status, reason):
    r = client.post("/api/predict", **kwargs)
    assert r.status_code == status and reason in r.json()["detail"]


def test_unknown_model_and_bad_options(client):
    data = sample_images("test", "NORMAL")[0].read_bytes()
    r = _post(client, [("x.jpeg", data)], "?model=../../etc/passwd")
    assert r.status_code == 404 and "cxr_cnn" in r.json()["detail"]
    _assert_refused(_post(client, [("x.jpeg", data)], "?heatmap=maybe"), 422, None, "query.heatmap: Input should be")
    r = client.get("/nowhere")
    assert r.status_code == 404 and r.json() == {"detail": "Not Found", "errors": []}
    assert client.put("/api/predict").status_code == 405


def test_file_names_are_cleaned_for_display(client):
    data = sample_images("test", "NORMAL")[0].read_bytes()
    r = _post(client, [("../../etc/evil\x00\x1b[31m.jpeg", data), ("", b"")])
    assert [e["file"] for e in r.json()["errors"]] == ["file 2"]
    body, headers = _multipart([(b"C:\\scans\\..\\x\x07\x1b.jpeg", data), (b"\xff\xfe.png", data),
                                (b"\xe2\x80\xaegpj.exe", data)])  # U+202E RIGHT-TO-LEFT OVERRIDE
    res = client.post("/api/predict", content=body, headers=headers).json()["results"]
    assert [r["file"] for r in res] == ["x.jpeg", "\ufffd\ufffd.png", "gpj.exe"]


# ---------------------------------------------------------------- files: memory only, unless --save-dir


def test_uploads_are_never_written_to_disk(client, monkeypatch):
    def refuse(*_a, **_k):
        raise AssertionError("an upload was written to disk")

    real_open = builtins.open

    def open_for_reading_only(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+"):
            refuse()
        return real_open(file, mode, *args, **kwargs)

    import starlette.formparsers

    for name in ("SpooledTemporaryFile", "TemporaryFile", "NamedTemporaryFile", "mkstemp"):
        monkeypatch.setattr(tempfile, name, refuse)
    monkeypatch.setattr(starlette.formparsers, "SpooledTemporaryFile", refuse)
    monkeypatch.setattr(builtins, "open", open_for_reading_only)
    stored = np.tile(film("NORMAL").astype(np.uint16) * 16, (4, 4))  # 896 x 896 x 2 bytes: over Starlette's 1 MB spool
    r = _post(client, [("big.dcm", dicom_bytes(stored))], "?heatmap=true")
    assert r.status_code == 200, r.text


def test_save_dir_keeps_uploads_under_random_names(bundle, tmp_path):
    folder = tmp_path / "kept"
    client = TestClient(create_app(bundle, save_dir=folder, workers=1))
    jpeg = sample_images("test", "NORMAL")[0].read_bytes()
    dcm = dicom_bytes(np.zeros((8, 8), np.uint16) + 7)
    assert _post(client, [("../../../outside.jpeg", jpeg), ("scan.dcm", dcm)]).status_code == 200
    saved = sorted(folder.iterdir(), key=lambda p: p.suffix)
    assert [p.suffix for p in saved] == [".dcm", ".jpg"]
    assert all(len(p.stem) == 32 and int(p.stem, 16) >= 0 for p in saved)
    assert {p.read_bytes() for p in saved} == {jpeg, dcm}
    assert not list(tmp_path.glob("outside*")) and [p.name for p in tmp_path.iterdir()] == ["kept"]


# ---------------------------------------------------------------- CLI


def test_cli_serve_user_errors_are_one_line(capsys):
    assert main(["serve", "--model", "no_such_model"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cxrkit: error: no_such_model: not a shipped model") and err.count("\n") == 1
    assert main(["serve", "--max-upload-mb", "0"]) == 2
    assert "--max-upload-mb must be positive" in capsys.readouterr().err
    assert main(["serve", "--workers", "0"]) == 2
    with pytest.raises(SystemExit):
        main(["serve", "--port", "eighty"])


def test_a_server_of_exported_models_never_imports_torch(tmp_path):
    """Exported models (int8 ONNX, packed BNN) serve with torch made unimportable, give the PyTorch-side
    predictor's probabilities, and say they have no heatmaps; a clinic's int8 server then needs no PyTorch in
    memory (docs/serve.md)."""
    import subprocess
    import sys

    jpeg = sample_images("test", "PNEUMONIA")[0]
    probe = ("import sys, json; sys.modules['torch'] = None\n"
             "from fastapi.testclient import TestClient\n"
             "from cxrkit.serving import create_app\n"
             "client = TestClient(create_app(['cxr_cnn.int8.onnx', 'cxr_bnn.bnn.npz'], workers=1))\n"
             "out = {'models': client.get('/api/models').json(), 'predict': {}}\n"
             "for m in ('cxr_cnn.int8.onnx', 'cxr_bnn.bnn.npz'):\n"
             f"    with open({str(jpeg)!r}, 'rb') as f:\n"
             "        r = client.post(f'/api/predict?model={m}&heatmap=true', files={'files': ('a.jpeg', f, 'image/jpeg')})\n"
             "    out['predict'][m] = [r.status_code, r.json()]\n"
             "print(json.dumps(out))\n")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert [m["heatmap"] for m in out["models"]["models"]] == [False, False]
    for name, (status, body) in out["predict"].items():
        assert status == 200, body
        (result,) = body["results"]
        preds, _ = predict_paths(resolve_model(name), [jpeg])
        assert result["probabilities"] == preds[0].probabilities and result["label"] == preds[0].label, name


def test_a_boundary_over_multipart_limit_is_a_400(client):
    r = client.post("/api/predict", content=b"--" + b"a" * 5000 + b"\r\n",
                    headers={"content-type": "multipart/form-data; boundary=" + "a" * 5000})
    assert r.status_code == 400 and "malformed multipart body" in r.json()["detail"]


def test_an_unexpected_error_is_a_500_logged_by_type_only(bundle, monkeypatch, caplog):
    """Starlette's last-resort handler re-raises to the server, which logs message and traceback: not here."""
    import cxrkit.serving.app as served_app

    def broken(*_args, **_kwargs):
        raise RuntimeError(f"failed on {PATIENT_STRINGS[0]}")

    monkeypatch.setattr(served_app, "screen", broken)
    client = TestClient(create_app(bundle, workers=1))  # raise_server_exceptions: anything re-raised fails here
    with caplog.at_level("DEBUG"):
        r = _post(client, [("a.jpeg", sample_images("test", "NORMAL")[0].read_bytes())])
    assert r.status_code == 500 and r.json()["detail"] == "internal server error"
    assert "RuntimeError" in caplog.text and PATIENT_STRINGS[0] not in caplog.text
    assert client.get("/healthz").status_code == 200


def test_every_answer_says_nosniff(client):
    for r in (client.get("/api/models"), client.get("/healthz"), client.get("/no/such/path"),
              _post(client, [("a.jpeg", b"")])):
        assert r.headers["x-content-type-options"] == "nosniff"
    static = client.get("/").text.split('src="/static/')[1].split('"')[0]
    assert client.get(f"/static/{static}").headers["x-content-type-options"] == "nosniff"
