"""The web page in headless Chromium against a real uvicorn server and the quick models.

Each panel gets a real upload and must render the server's answer; screenshots go to
``artifacts/screenshots/`` for a person to look at.
"""

from __future__ import annotations

import base64
import contextlib
import io
import re
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from benchmarks.servers import UvicornServer
from tests.paths import REPO_ROOT, SHARED_DATA
from tests.training import image_folders

pytestmark = pytest.mark.browser

SCREENSHOTS = REPO_ROOT / "artifacts" / "screenshots"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
RESULT_TIMEOUT_MS = 60_000
API_KEY = "secret"

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (scripts/install-browser.sh)"
)
if not Path(CHROMIUM).exists():
    pytest.skip("chromium is not installed (scripts/install-browser.sh)", allow_module_level=True)


def gallery_env(root: Path) -> dict[str, str]:
    """Each server keeps its living gallery in its own temporary folder: the default,
    ``gallery/`` in the working directory, would be the repository."""
    return {"GALLERY_DIR": str(root / "gallery")}


@pytest.fixture(scope="module")
def base_url(quick_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``uvicorn app.main:app`` in a subprocess, as the README starts it, once it is ready."""
    root = tmp_path_factory.mktemp("server")
    env = {"MODEL_DIR": str(quick_models), "RELOAD_INTERVAL_S": "0", **gallery_env(root)}
    log_path = root / "uvicorn.log"
    with UvicornServer("app.main:app", env, log_path, ready_path="/readyz") as server:
        yield server.base_url


@pytest.fixture(scope="module")
def browser() -> Iterator[sync_api.Browser]:
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def keyed_base_url(quick_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second server where every endpoint but the probes and the page needs the API key."""
    root = tmp_path_factory.mktemp("keyed-server")
    log_path = root / "uvicorn.log"
    env = {
        "MODEL_DIR": str(quick_models),
        "RELOAD_INTERVAL_S": "0",
        "API_KEY": API_KEY,
        "API_KEY_SCOPE": "all",
        **gallery_env(root),
    }
    with UvicornServer("app.main:app", env, log_path, ready_path="/readyz") as server:
        yield server.base_url


@contextlib.contextmanager
def opened_page(browser: sync_api.Browser, url: str) -> Iterator[sync_api.Page]:
    """The page at ``url`` in a fresh context; any JavaScript error, or anything the
    server's Content-Security-Policy blocked (reported on the console), fails the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    opened.set_default_timeout(RESULT_TIMEOUT_MS)
    script_errors: list[str] = []
    opened.on("pageerror", lambda error: script_errors.append(str(error)))
    opened.on(
        "console",
        lambda message: (
            script_errors.append(message.text)
            if "Content Security Policy" in message.text
            else None
        ),
    )
    opened.goto(url)
    yield opened
    context.close()
    if script_errors:
        pytest.fail(f"JavaScript errors on the page: {script_errors}")


@pytest.fixture
def page(browser: sync_api.Browser, base_url: str) -> Iterator[sync_api.Page]:
    with opened_page(browser, base_url) as opened:
        yield opened


@pytest.fixture(scope="module")
def sign_image() -> Path:
    images = sorted((SHARED_DATA / "signs" / "train").glob("*.jpg"))
    if not images:
        pytest.skip(f"no SIGNS images under {SHARED_DATA}")
    return images[0]


@pytest.fixture(scope="module")
def cell_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    archive = SHARED_DATA / "malaria" / "cell_images.zip"
    if not archive.exists():
        pytest.skip(f"no {archive}")
    with zipfile.ZipFile(archive) as cells:
        name = next(n for n in cells.namelist() if n.endswith(".png") and "Parasitized" in n)
        path = tmp_path_factory.mktemp("cells") / Path(name).name
        path.write_bytes(cells.read(name))
    return path


def screenshot(page: sync_api.Page, selector: str, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.locator(selector).screenshot(path=SCREENSHOTS / f"{name}.png")


def image_width(page: sync_api.Page, selector: str) -> int:
    """Natural width of an <img>, after waiting until it has loaded (a broken image times out)."""
    page.wait_for_function(
        "s => { const i = document.querySelector(s); return i.complete && i.naturalWidth > 0; }",
        arg=selector,
    )
    return page.eval_on_selector(selector, "img => img.naturalWidth")


def classify_with_api(base_url: str, image: Path) -> dict[str, Any]:
    """The API's own answer for ``image``, which the page must show."""
    files = {"file": (image.name, image.read_bytes())}
    return httpx.post(f"{base_url}/classify", files=files).json()["predictions"][0]


def test_classify_shows_the_servers_label_and_a_bar_per_class(
    page: sync_api.Page, base_url: str, sign_image: Path
) -> None:
    expected = classify_with_api(base_url, sign_image)
    page.set_input_files("#classify-file", sign_image)
    page.wait_for_selector("#classify-result:not([hidden])")
    assert page.inner_text("#classify-label") == expected["label"]
    assert page.inner_text("#classify-message") == f"Predicted class {expected['label']}."
    assert page.locator("#classify-bars li").count() == len(expected["probabilities"])
    assert page.locator("#classify-bars li.predicted").count() == 1
    assert image_width(page, "#classify-preview") == 64
    screenshot(page, "#classify", "classify")


def test_dropping_an_image_on_the_panel_classifies_it(
    page: sync_api.Page, base_url: str, sign_image: Path
) -> None:
    transfer = page.evaluate_handle(
        """([name, encoded]) => {
            const bytes = Uint8Array.from(atob(encoded), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, { type: "image/jpeg" }));
            return transfer;
        }""",
        [sign_image.name, base64.b64encode(sign_image.read_bytes()).decode()],
    )
    page.dispatch_event("#classify-form", "drop", {"dataTransfer": transfer})
    page.wait_for_selector("#classify-result:not([hidden])")
    assert page.inner_text("#classify-label") == classify_with_api(base_url, sign_image)["label"]


def test_denoise_shows_noisy_and_denoised_at_the_upload_size(
    page: sync_api.Page, cell_image: Path
) -> None:
    page.fill("#denoise-sigma", "0.2")
    page.set_input_files("#denoise-file", cell_image)
    page.wait_for_selector("#denoise-result:not([hidden])")
    sent_width = image_width(page, "#denoise-input")
    assert image_width(page, "#denoise-output") == sent_width > 0
    assert "sigma 0.2" in page.inner_text("#denoise-result")
    screenshot(page, "#denoise", "denoise")


def test_similar_shows_the_servers_k_nearest_cells(
    page: sync_api.Page, base_url: str, cell_image: Path
) -> None:
    expected = httpx.post(
        f"{base_url}/similar",
        params={"k": 4},
        files={"file": (cell_image.name, cell_image.read_bytes())},
    ).json()["results"]
    page.fill("#similar-k", "4")
    page.set_input_files("#similar-file", cell_image)
    page.wait_for_selector("#similar-result:not([hidden])")
    labels = page.locator("#similar-tiles .tile-label").all_inner_texts()
    assert labels == [f"{rank}. {result['label']}" for rank, result in enumerate(expected, 1)]
    for index in range(len(expected)):
        assert image_width(page, f"#similar-tiles li:nth-child({index + 1}) img") > 0
    screenshot(page, "#similar", "similar")


def test_with_api_key_scope_all_the_similar_panel_needs_the_key_from_the_settings(
    browser: sync_api.Browser, keyed_base_url: str, cell_image: Path
) -> None:
    with opened_page(browser, keyed_base_url) as page:
        page.fill("#similar-k", "3")
        page.set_input_files("#similar-file", cell_image)
        refused = page.locator("#similar-message.error")
        refused.wait_for()
        assert refused.inner_text() == "missing or wrong X-API-Key header (HTTP 401)"

        page.fill("#api-key", API_KEY)
        page.click("#similar-form button[type=submit]")
        page.wait_for_selector("#similar-result:not([hidden])")
        assert page.locator("#similar-tiles li").count() == 3
        for index in range(3):
            selector = f"#similar-tiles li:nth-child({index + 1}) img"
            assert image_width(page, selector) > 0
            assert page.get_attribute(selector, "src").startswith("blob:")
        page.locator("#models-info", has_text="signs_classifier").wait_for()
        screenshot(page, "#similar", "similar-with-api-key")


def test_a_text_file_gives_a_readable_error(
    page: sync_api.Page, base_url: str, tmp_path: Path
) -> None:
    text_file = tmp_path / "notes.txt"
    text_file.write_text("this is not an image\n")
    answer = httpx.post(
        f"{base_url}/classify", files={"file": (text_file.name, text_file.read_bytes())}
    )
    assert 400 <= answer.status_code < 500
    page.set_input_files("#classify-file", text_file)
    message = page.locator("#classify-message.error")
    message.wait_for()
    assert message.inner_text() == f"{answer.json()['detail']} (HTTP {answer.status_code})"
    assert page.is_hidden("#classify-result")
    screenshot(page, "#classify", "classify-error")


def test_a_validation_error_list_reads_as_text(page: sync_api.Page, cell_image: Path) -> None:
    page.fill("#similar-k", "0")
    page.set_input_files("#similar-file", cell_image)
    message = page.locator("#similar-message.error")
    message.wait_for()
    text = message.inner_text()
    assert text.startswith("query.k: ")
    assert text.endswith("(HTTP 422)")


def focus_outline(page: sync_api.Page) -> str:
    return page.evaluate("getComputedStyle(document.activeElement).outlineStyle")


def test_every_control_is_labelled_and_usable_by_keyboard(
    page: sync_api.Page, cell_image: Path
) -> None:
    unlabelled = page.eval_on_selector_all(
        "input, select, textarea", "els => els.filter(e => e.labels.length === 0).map(e => e.id)"
    )
    assert unlabelled == []
    page.keyboard.press("Tab")  # the two view links in the header come first
    assert page.evaluate("document.activeElement.textContent") == "Try the models"
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "classify-file"
    assert focus_outline(page) != "none"

    page.set_input_files("#denoise-file", cell_image)
    page.locator("#denoise-input-caption", has_text="sigma 0.1").wait_for()
    page.focus("#denoise-sigma")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Denoise"
    assert focus_outline(page) != "none"
    page.keyboard.press("Enter")
    page.locator("#denoise-input-caption", has_text="sigma 0.11").wait_for()


def test_footer_names_the_loaded_models_and_device(page: sync_api.Page, base_url: str) -> None:
    device = httpx.get(f"{base_url}/models").json()["device"]
    footer = page.locator("#models-info")
    footer.filter(has_text="signs_classifier").wait_for()
    text = footer.inner_text()
    assert "malaria_autoencoder" in text
    assert "malaria_index" in text
    assert f"device {device}" in text


def test_narrow_screen_has_no_horizontal_scroll(
    browser: sync_api.Browser, base_url: str, sign_image: Path
) -> None:
    context = browser.new_context(viewport={"width": 360, "height": 740})
    narrow = context.new_page()
    narrow.goto(base_url)
    narrow.set_input_files("#classify-file", sign_image)
    narrow.wait_for_selector("#classify-result:not([hidden])")
    overflow = narrow.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    narrow.screenshot(path=SCREENSHOTS / "narrow.png", full_page=True)
    context.close()
    assert overflow <= 0


def psnr_db(reference: np.ndarray, image: np.ndarray) -> float:
    squared = np.mean((reference[..., :3].astype(float) - image[..., :3].astype(float)) ** 2)
    return float(10 * np.log10(255**2 / squared))


def test_denoise_shows_original_noisy_and_denoised_with_psnr(
    page: sync_api.Page, cell_image: Path
) -> None:
    page.fill("#denoise-sigma", "0.2")
    page.set_input_files("#denoise-file", cell_image)
    page.wait_for_selector("#denoise-result:not([hidden])")
    assert page.is_visible("#denoise-original")
    assert image_width(page, "#denoise-original") == image_width(page, "#denoise-output")
    sent = page.inner_text("#denoise-input-psnr")
    denoised = page.inner_text("#denoise-output-psnr")
    pattern = r"^PSNR \d+\.\d dB$"
    assert re.match(pattern, sent) and re.match(pattern, denoised)
    assert page.locator("#denoise-ood").inner_text().startswith(("Looks like", "Does not look"))
    screenshot(page, "#denoise", "denoise-psnr")


def test_denoise_psnr_without_noise_matches_the_servers_image(
    page: sync_api.Page, base_url: str, cell_image: Path
) -> None:
    answer = httpx.post(
        f"{base_url}/denoise",
        params={"size": "original"},
        files={"file": (cell_image.name, cell_image.read_bytes())},
    )
    original = np.asarray(Image.open(cell_image).convert("RGB"))
    denoised = np.asarray(Image.open(io.BytesIO(answer.content)).convert("RGB"))
    expected = psnr_db(original, denoised)
    page.uncheck("#denoise-add-noise")
    page.set_input_files("#denoise-file", cell_image)
    page.wait_for_selector("#denoise-result:not([hidden])")
    assert page.is_hidden("#denoise-original-figure")
    assert page.inner_text("#denoise-input-psnr") == "PSNR ∞ dB (identical)"
    shown = float(re.match(r"PSNR (\S+) dB", page.inner_text("#denoise-output-psnr")).group(1))
    assert shown == pytest.approx(expected, abs=0.11)


def test_classify_says_whether_the_image_looks_like_a_hand_sign(
    page: sync_api.Page, base_url: str, sign_image: Path, tmp_path: Path
) -> None:
    noise = tmp_path / "noise.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(noise)
    expected = classify_with_api(base_url, noise)
    assert expected["in_distribution"] is False
    page.set_input_files("#classify-file", noise)
    flag = page.locator("#classify-ood.flagged")
    flag.wait_for()
    assert flag.inner_text().startswith("Does not look like the images this model was trained on")
    screenshot(page, "#classify", "classify-ood")


def test_models_view_shows_each_report_with_metrics_and_plots(
    page: sync_api.Page, base_url: str
) -> None:
    for name in ("signs_classifier", "malaria_autoencoder", "malaria_index"):
        report = httpx.get(f"{base_url}/models/{name}/report").json()
        article = page.locator(f"#report-{name}")
        article.wait_for()
        assert article.locator("h3").inner_text() == f"{name} v{report['version']}"
        plots = [f for f in report["files"] if f["content_type"] == "image/png"]
        assert article.locator(".figures img").count() == len(plots) > 0
        for index in range(len(plots)):
            selector = f"#report-{name} .figures figure:nth-child({index + 1}) img"
            page.locator(selector).scroll_into_view_if_needed()
            assert image_width(page, selector) > 0
    signs = page.locator("#report-signs_classifier .metrics")
    text = signs.inner_text()
    assert "OOD AUROC" in text and "calibration error (ECE) after" in text
    auroc = httpx.get(f"{base_url}/models/signs_classifier/report").json()["ood"]["auroc"]
    assert f"{auroc:.4f}" in text
    screenshot(page, "#models", "models")


@pytest.fixture(scope="module")
def user_base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server on models trained on class folders and cell folders of a user's own naming."""
    root = tmp_path_factory.mktemp("user")
    models = image_folders.train_user_models(root)
    env = {"MODEL_DIR": str(models), "RELOAD_INTERVAL_S": "0", **gallery_env(root)}
    with UvicornServer("app.main:app", env, root / "uvicorn.log", ready_path="/readyz") as server:
        yield server.base_url


def test_a_model_of_the_users_classes_is_shown_under_their_names(
    browser: sync_api.Browser, user_base_url: str, tmp_path: Path
) -> None:
    image = tmp_path / "upload.png"
    image_folders.picture(2, 0, (90, 70)).save(image)
    expected = classify_with_api(user_base_url, image)
    names = sorted(image_folders.USER_CLASSES)
    with opened_page(browser, user_base_url) as user_page:
        classes = user_page.locator("#classify-classes", has_text="3 classes")
        classes.wait_for()
        assert f"3 classes: {', '.join(names)}" in classes.inner_text()
        user_page.set_input_files("#classify-file", image)
        user_page.wait_for_selector("#classify-result:not([hidden])")
        assert user_page.inner_text("#classify-label") == expected["label"]
        assert user_page.inner_text("#classify-message") == f"Predicted class {expected['label']}."
        bars = user_page.locator("#classify-bars .bar-name").all_inner_texts()
        assert bars == list(expected["probabilities"])
        assert sorted(bars) == names
        report = user_page.locator("#report-signs_classifier")
        report.locator("dt", has_text="class dog house").wait_for()
        terms = report.locator("dt").all_inner_texts()
        assert [f"class {name}" for name in names] == [t for t in terms if t.startswith("class ")]
        assert "precision" in report.locator("dd").all_inner_texts()[terms.index("class Cat")]
        screenshot(user_page, "#classify", "classify-user-classes")


# The living gallery (issue #26) in the similar-cell view: a label filter, and adding the
# query cell under a label. Writes need the API key whenever the server has one.
@pytest.fixture(scope="module")
def gallery_base_url(quick_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server whose gallery writes need the API key (the default scope: reads are open)."""
    root = tmp_path_factory.mktemp("gallery-server")
    env = {
        "MODEL_DIR": str(quick_models),
        "RELOAD_INTERVAL_S": "0",
        "API_KEY": API_KEY,
        **gallery_env(root),
    }
    with UvicornServer("app.main:app", env, root / "uvicorn.log", ready_path="/readyz") as server:
        yield server.base_url


def similar_with_api(base_url: str, image: Path, k: int, label: str) -> list[dict[str, Any]]:
    answer = httpx.post(
        f"{base_url}/similar",
        params={"k": k, "label": label},
        files={"file": (image.name, image.read_bytes())},
    )
    assert answer.status_code == 200, answer.text
    return answer.json()["results"]


def test_the_label_filter_shows_the_servers_neighbours_of_that_label(
    browser: sync_api.Browser, gallery_base_url: str, cell_image: Path
) -> None:
    labels = {item["label"] for item in httpx.get(f"{gallery_base_url}/gallery").json()["items"]}
    assert len(labels) >= 2, f"the offline gallery should hold several labels, got {labels}"
    with opened_page(browser, gallery_base_url) as page:
        for label in sorted(labels):
            page.locator(f'#gallery-labels option[value="{label}"]').wait_for(state="attached")
        label = sorted(labels)[-1]
        expected = similar_with_api(gallery_base_url, cell_image, 4, label)
        assert [result["label"] for result in expected] == [label] * 4
        page.fill("#similar-k", "4")
        page.fill("#similar-label", label)
        page.set_input_files("#similar-file", cell_image)
        page.wait_for_selector("#similar-result:not([hidden])")
        shown = page.locator("#similar-tiles .tile-label").all_inner_texts()
        assert shown == [f"{rank}. {label}" for rank in range(1, 5)]
        alts = page.locator("#similar-tiles img").evaluate_all("imgs => imgs.map(i => i.alt)")
        assert alts == [f"Gallery cell {result['id']}, {label}" for result in expected]
        assert page.inner_text("#similar-message") == f"Found 4 similar cells labelled {label}."


def test_adding_the_query_cell_needs_the_key_then_says_its_id_and_is_found_by_label(
    browser: sync_api.Browser, gallery_base_url: str, cell_image: Path
) -> None:
    label = "added from the page"
    with opened_page(browser, gallery_base_url) as page:
        page.set_input_files("#similar-file", cell_image)
        page.wait_for_selector("#similar-result:not([hidden])")
        page.fill("#gallery-label", label)
        page.fill("#gallery-note", "a note")
        page.click("#gallery-add-form button[type=submit]")
        refused = page.locator("#gallery-add-message.error")
        refused.wait_for()
        assert refused.inner_text() == (
            "missing or wrong X-API-Key header (HTTP 401). "
            "Enter the API key at the bottom of the page."
        )
        assert httpx.get(f"{gallery_base_url}/gallery", params={"label": label}).json() == {
            "items": [],
            "next": None,
        }

        page.fill("#api-key", API_KEY)
        page.click("#gallery-add-form button[type=submit]")
        added = page.locator("#gallery-add-message.saved")
        added.wait_for()
        match = re.fullmatch(
            rf"Added to the gallery as id (\d+) \(label {label}\)\.", added.inner_text()
        )
        assert match, added.inner_text()
        item_id = int(match.group(1))
        item = httpx.get(f"{gallery_base_url}/gallery/{item_id}").json()
        assert (item["label"], item["note"], item["source"]) == (label, "a note", "added")
        screenshot(page, "#similar", "similar-gallery-added")

        page.click("#gallery-add-form button[type=submit]")
        page.locator("#gallery-add-message", has_text="Already in the gallery").wait_for()
        assert page.inner_text("#gallery-add-message") == (
            f"Already in the gallery as id {item_id} (label {label})."
        )
        assert page.locator(f'#gallery-labels option[value="{label}"]').count() == 1

        page.fill("#similar-label", label)
        page.click("#similar-form button[type=submit]")
        page.locator("#similar-message", has_text=f"labelled {label}").wait_for()
        assert page.locator("#similar-tiles .tile-label").all_inner_texts() == [f"1. {label}"]
        assert page.get_attribute("#similar-tiles img", "alt") == f"Gallery cell {item_id}, {label}"
        assert image_width(page, "#similar-tiles img") > 0
        assert page.inner_text("#gallery-add-message") == ""


def test_adding_without_a_label_asks_for_one_before_any_request(
    browser: sync_api.Browser, gallery_base_url: str, cell_image: Path
) -> None:
    with opened_page(browser, gallery_base_url) as page:
        page.set_input_files("#similar-file", cell_image)
        page.wait_for_selector("#similar-result:not([hidden])")
        posts: list[str] = []
        page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
        page.fill("#gallery-label", "   ")
        page.click("#gallery-add-form button[type=submit]")
        message = page.locator("#gallery-add-message.error")
        message.wait_for()
        assert message.inner_text() == "Give the cell a label."
        page.fill("#gallery-label", "x" * 65)
        page.click("#gallery-add-form button[type=submit]")
        page.locator("#gallery-add-message", has_text="at most 64").wait_for()
        assert posts == []
