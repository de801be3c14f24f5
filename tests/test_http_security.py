"""HTTP-level security regressions on loopback (design/RELIABILITY.md §6.3, §0 items 2, 3, 5, 14).

The app is served in this process on 127.0.0.1 with the shipped queue and launch options and stand-in weights (see
tests/test_app.py), and probed with plain HTTP: the file route must not serve anything outside Gradio's cache, the
queue cannot be bypassed, monitoring is closed, oversized and malformed uploads are refused, error payloads carry no
path or exception text, and nothing a user sends is echoed back as HTML.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from urllib.parse import quote

import httpx
import pytest
from gradio_client import Client, handle_file

from pipeline.config import REPO_ROOT
from tests.serving import (
    HTML_FILENAME,
    Served,
    default_inputs,
    file_data,
    files_in,
    portrait,
    queue_call,
    upload,
)

MIB = 1024 * 1024
TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("photos") / "portrait.png"
    portrait(tint=(200, 200, 60)).save(path)
    return path


def get(url: str, **kwargs: object) -> httpx.Response:
    return httpx.get(url, timeout=TIMEOUT_S, **kwargs)  # type: ignore[arg-type]


def assert_alive(served: Served) -> None:
    assert get(f"{served.url}/config").status_code == 200


# -- the file route ----------------------------------------------------------------------------------------------


def test_file_route_serves_uploads_but_nothing_outside_the_cache(
    served: Served, stand_in_weights_dir: Path, temp_dir: Path, photo: Path
) -> None:
    uploaded = upload(served.url, photo)
    assert get(f"{served.url}/gradio_api/file={uploaded}").content == photo.read_bytes(), "the route works"
    refused = {
        "/etc/passwd": (403,),
        "%2Fetc%2Fpasswd": (403,),
        "/proc/self/environ": (403,),
        f"{temp_dir}/../../../../../../etc/passwd": (403, 404),  # httpx removes the dot segments: 404
        quote(f"{temp_dir}/../../../../../../etc/passwd", safe=""): (403,),  # encoded: reaches the server as is
        "app.py": (403, 404),  # the working directory is not served (since Gradio 4)
        "../../app.py": (403, 404),
        "..%2F..%2Fapp.py": (403, 404),
        str(REPO_ROOT / "app.py"): (403,),
        str(REPO_ROOT / "checkpoints" / "boundaries" / "fine" / "all" / "boundary.npy"): (403,),
        str(stand_in_weights_dir / "e4e_ffhq_encode.pt"): (403,),  # blocked_paths
        "http://169.254.169.254/latest/meta-data/": (403,),  # no server-side fetches (SSRF)
    }
    for path, statuses in refused.items():
        response = get(f"{served.url}/gradio_api/file={path}")
        assert response.status_code in statuses, (path, response.status_code)
        assert b"root:" not in response.content and b"import" not in response.content, path
    assert_alive(served)


def test_uploaded_html_and_svg_come_back_as_downloads_not_pages(served: Served) -> None:
    for name, content, kind in (
        ("page.html", b"<html><script>alert(1)</script></html>", "text/html"),
        ("image.svg", b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>', "image/svg+xml"),
    ):
        response = httpx.post(f"{served.url}/gradio_api/upload", files={"files": (name, content, kind)}, timeout=30)
        fetched = get(f"{served.url}/gradio_api/file={response.json()[0]}")
        assert fetched.status_code == 200
        assert fetched.headers["content-disposition"].startswith("attachment"), name
        assert "html" not in fetched.headers["content-type"] and "svg" not in fetched.headers["content-type"]


# -- queue, monitoring, CORS ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("api_name", ["remove_double_chin", "strength_sweep"])
def test_the_queue_cannot_be_bypassed(served: Served, api_name: str) -> None:
    for route in (f"/gradio_api/run/{api_name}", f"/gradio_api/api/{api_name}"):
        response = httpx.post(served.url + route, json={"data": default_inputs(None)}, timeout=TIMEOUT_S)
        assert response.status_code == 404, (route, response.status_code)


def test_monitoring_is_closed(served: Served) -> None:
    for route in ("/monitoring", "/monitoring/summary"):
        assert get(served.url + route).status_code == 403, route


def test_other_origins_get_no_cors_grant(served: Served) -> None:
    response = get(f"{served.url}/config", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in response.headers


def test_launch_options_are_the_public_service_ones(app_module: ModuleType, stand_in_weights_dir: Path) -> None:
    options = app_module.launch_options()
    assert options["max_file_size"] == "10mb" and options["show_error"] is False
    assert options["allowed_paths"] == [] and options["share"] is False and options["strict_cors"] is True
    assert str(stand_in_weights_dir.resolve()) in options["blocked_paths"]
    assert app_module.QUEUE_OPTIONS == {"max_size": 16, "default_concurrency_limit": 1, "api_open": False}


# -- uploads -----------------------------------------------------------------------------------------------------


def test_upload_above_the_size_limit_gets_413_and_below_it_is_accepted(served: Served) -> None:
    url = f"{served.url}/gradio_api/upload"
    assert httpx.post(url, files={"files": ("big.jpg", bytes(11 * MIB))}, timeout=TIMEOUT_S).status_code == 413
    assert httpx.post(url, files={"files": ("ok.jpg", bytes(9 * MIB))}, timeout=TIMEOUT_S).status_code == 200
    assert_alive(served)


def test_huge_filename_and_too_many_files_are_refused(served: Served, temp_dir: Path) -> None:
    url = f"{served.url}/gradio_api/upload"
    long_name = httpx.post(url, files={"files": ("a" * (5 * MIB) + ".jpg", b"x")}, timeout=TIMEOUT_S)
    assert long_name.status_code in (400, 413)  # CVE-2025-0187: a huge multipart header
    many = [("files", (f"f{index}.jpg", b"x")) for index in range(1001)]
    too_many = httpx.post(url, files=many, timeout=TIMEOUT_S)
    assert too_many.status_code == 400 and "Too many files" in too_many.text  # Gradio's max_files=1000
    assert not [name for name in files_in(temp_dir) if Path(name).name.startswith("f1000")], "nothing was kept"
    assert_alive(served)


# -- payloads ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/etc/passwd", "../../../../etc/passwd", str(REPO_ROOT / "app.py")], ids=["absolute", "dotdot", "repo"]
)
def test_file_payload_naming_a_server_file_is_rejected(served: Served, temp_dir: Path, path: str) -> None:
    messages = queue_call(served.url, "remove_double_chin", default_inputs(file_data(path, name="passwd")))
    completed = messages[-1]
    assert completed["msg"] == "process_completed" and completed["success"] is False
    assert completed["output"] == {"error": None}, "Gradio's InvalidPathError text is not shown"
    raw = json.dumps(messages)
    assert "passwd" not in raw and "root:" not in raw and "app.py" not in raw
    assert not [name for name in files_in(temp_dir) if Path(name).name in ("passwd", "app.py")], "nothing copied"


def test_html_in_a_filename_is_never_echoed(served: Served, photo: Path, tmp_path: Path) -> None:
    named = tmp_path / HTML_FILENAME
    named.write_bytes(photo.read_bytes())
    client = Client(served.url, verbose=False, download_files=str(tmp_path / "downloads"))
    (_, after), _, downloads, summary, notes, _ = client.predict(
        handle_file(str(named)), w_plus_code=None, api_name="/remove_double_chin"
    )
    shown = json.dumps(summary) + notes + "".join(Path(path).name for path in downloads) + Path(after).name
    assert "<img" not in shown and "onerror" not in shown
