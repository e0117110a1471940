"""Check the documentation site as a person would (issue 31).

Builds the site strictly into a temporary folder, serves it on 127.0.0.1 (a port
picked free at run time), loads every page of the nav and the search index over
HTTP, and screenshots the home page and one guide with headless Chromium
(Debian's `chromium`). The server is stopped by its pid, whatever happens.

    python docs/check_site.py [OUT_DIR]      # screenshots: OUT_DIR/home.png, OUT_DIR/guide.png
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _nav_pages(nav):
    for entry in nav:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        if isinstance(value, list):
            yield from _nav_pages(value)
        else:
            yield value


def _url_of(page):
    page = page[: -len(".md")]
    if page == "index":
        return ""
    return (page[: -len("index")] if page.endswith("/index") or page.endswith("index")
            else page + "/")


def main(out_dir):
    import yaml

    with open(os.path.join(ROOT, "mkdocs.yml")) as f:
        config = yaml.safe_load(f)
    pages = list(_nav_pages(config["nav"]))
    site = tempfile.mkdtemp()
    try:
        subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", site],
                       cwd=ROOT, check=True, timeout=600)
        port = _free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
             "--directory", site], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}/"
            for _ in range(100):  # up to 10 s for the server to listen
                try:
                    urllib.request.urlopen(base, timeout=2)
                    break
                except OSError:
                    time.sleep(0.1)
            for page in pages:
                with urllib.request.urlopen(base + _url_of(page), timeout=10) as response:
                    html = response.read().decode()
                    assert response.status == 200 and "<title>" in html, page
            with urllib.request.urlopen(base + "search/search_index.json", timeout=10) as r:
                index = json.load(r)
            assert len(index["docs"]) >= len(pages), len(index["docs"])
            print(f"{len(pages)} nav pages and the search index ({len(index['docs'])} entries) load")
            os.makedirs(out_dir, exist_ok=True)
            browser = shutil.which("chromium") or shutil.which("chromium-browser")
            if browser is None:
                raise SystemExit("chromium not found: apt-get install chromium")
            for name, url in (("home", base), ("guide", base + "guides/grad-cache/")):
                path = os.path.join(out_dir, f"{name}.png")
                subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu",
                                "--hide-scrollbars", "--window-size=1280,1000",
                                f"--screenshot={path}", url],
                               check=True, timeout=120, capture_output=True)
                assert os.path.getsize(path) > 10_000, path
                print("screenshot:", path)
        finally:
            server.kill()  # by its pid
            server.wait(timeout=10)
    finally:
        shutil.rmtree(site, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "out", "docs"))
