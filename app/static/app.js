// cellsign web page: three forms that call the JSON/PNG API and render the answers, and a
// Models view with each serving model's training report.
// Plain browser JavaScript, no build step and no third-party code, so the page works offline.
"use strict";

const $ = (id) => document.getElementById(id);

/** Turn FastAPI's `detail` (a string or a list of validation errors) into one sentence. */
function describeDetail(detail) {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail
      .map((item) => {
        if (item && typeof item === "object") {
          const where = Array.isArray(item.loc) ? item.loc.join(".") : "";
          return where ? `${where}: ${item.msg}` : String(item.msg);
        }
        return String(item);
      })
      .join("; ");
  }
  return "";
}

// The optional API key lives in sessionStorage: it survives a reload, not the tab.
const API_KEY_STORAGE = "cellsign-api-key";
const apiKey = () => sessionStorage.getItem(API_KEY_STORAGE) || "";

/**
 * Fetch (with the API key, when one is set) and throw an Error whose message is readable
 * by a person when the answer is not OK.
 */
async function request(url, options = {}) {
  const headers = new Headers(options.headers);
  if (apiKey()) headers.set("X-API-Key", apiKey());
  let response;
  try {
    response = await fetch(url, { ...options, headers });
  } catch (networkError) {
    throw new Error("Cannot reach the server. Is it running?");
  }
  if (response.ok) return response;
  let detail = "";
  try {
    detail = describeDetail((await response.json()).detail);
  } catch (notJson) {
    detail = "";
  }
  const error = new Error(
    `${detail || response.statusText || "Request failed"} (HTTP ${response.status})`,
  );
  error.status = response.status;
  throw error;
}

function showMessage(panel, text, kind) {
  const message = $(`${panel}-message`);
  message.textContent = text;
  message.className = `message ${kind || ""}`.trim();
}

/**
 * Run one panel's request, ignoring new submits while it runs, and announce the outcome in
 * the panel's live region: `work` returns a short summary, or throws with a readable message.
 * The button stays focusable (aria-disabled, not disabled) so keyboard focus is not lost.
 */
async function runPanel(panel, work) {
  const section = $(panel);
  const button = $(`${panel}-form`).querySelector("button[type=submit]");
  const file = $(`${panel}-file`).files[0];
  if (section.getAttribute("aria-busy") === "true") return;
  if (!file) {
    showMessage(panel, "Choose an image first.", "error");
    return;
  }
  section.setAttribute("aria-busy", "true");
  button.setAttribute("aria-disabled", "true");
  showMessage(panel, "Working…", "busy");
  try {
    showMessage(panel, await work(file), "done");
  } catch (error) {
    $(`${panel}-result`).hidden = true;
    showMessage(panel, error.message, "error");
  } finally {
    section.removeAttribute("aria-busy");
    button.removeAttribute("aria-disabled");
  }
}

// Object URLs are kept per <img> so the previous one is released when replaced.
const objectUrls = new Map();
function releaseBlob(img) {
  if (objectUrls.has(img)) URL.revokeObjectURL(objectUrls.get(img));
  objectUrls.delete(img);
}

function showBlob(img, blob) {
  releaseBlob(img);
  const url = URL.createObjectURL(blob);
  objectUrls.set(img, url);
  img.src = url;
}

/** An <img src> cannot send the API key: with a key, fetch the image and show it as a blob. */
async function showServerImage(img, url) {
  if (!apiKey()) {
    img.src = url;
    return;
  }
  showBlob(img, await (await request(url)).blob());
}

function formWith(blob, filename) {
  const body = new FormData();
  body.append("file", blob, filename);
  return body;
}

/**
 * Say under a result whether the input looks like the model's training data. `verdict` has
 * the API's optional `ood_score` and `in_distribution`; older model versions send neither.
 */
function showOod(element, verdict, what) {
  if (verdict.in_distribution === null || verdict.in_distribution === undefined) {
    element.hidden = true;
    return;
  }
  const score = Number(verdict.ood_score).toPrecision(3);
  element.textContent = verdict.in_distribution
    ? `Looks like ${what} (OOD score ${score}).`
    : `Does not look like ${what} (OOD score ${score}, above the model's threshold): ` +
      "treat this answer as a guess.";
  element.className = verdict.in_distribution ? "ood" : "ood flagged";
  element.hidden = false;
}

async function classify(file) {
  const response = await request("/classify", { method: "POST", body: formWith(file, file.name) });
  const answer = await response.json();
  const prediction = answer.predictions[0];
  showBlob($("classify-preview"), file);
  $("classify-label").textContent = prediction.label;
  $("classify-confidence").textContent = `(${(prediction.confidence * 100).toFixed(1)}%)`;
  const bars = $("classify-bars");
  bars.replaceChildren();
  for (const [name, probability] of Object.entries(prediction.probabilities)) {
    const percent = (probability * 100).toFixed(1);
    const row = document.createElement("li");
    row.className = name === prediction.label ? "bar predicted" : "bar";
    row.innerHTML =
      '<span class="bar-name"></span><span class="bar-track" aria-hidden="true">' +
      '<span class="bar-fill"></span></span><span class="bar-value"></span>';
    row.querySelector(".bar-name").textContent = name;
    row.querySelector(".bar-fill").style.width = `${percent}%`;
    row.querySelector(".bar-value").textContent = `${percent}%`;
    bars.append(row);
  }
  showOod($("classify-ood"), prediction, "the images this model was trained on");
  $("classify-model").textContent = `${answer.model.name} v${answer.model.version}`;
  $("classify-result").hidden = false;
  return `Predicted class ${prediction.label}.`;
}

/** One draw from a standard normal distribution (Box-Muller). */
function gaussian() {
  const u = 1 - Math.random();
  const v = Math.random();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
}

function isGray(data) {
  for (let i = 0; i < data.length; i += 4) {
    if (data[i] !== data[i + 1] || data[i] !== data[i + 2]) return false;
  }
  return true;
}

/**
 * Decode the file, add N(0, sigma) noise to every RGB channel (pixels in [0, 1]) and
 * return a PNG blob. Returns null when the browser cannot decode the file, so the server
 * gets the original bytes and answers with its own error message.
 */
async function addNoise(file, sigma) {
  let bitmap;
  try {
    bitmap = await createImageBitmap(file);
  } catch (notAnImage) {
    return null;
  }
  const canvas = document.createElement("canvas");
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  const context = canvas.getContext("2d");
  context.drawImage(bitmap, 0, 0);
  const pixels = context.getImageData(0, 0, canvas.width, canvas.height);
  const data = pixels.data; // a Uint8ClampedArray: out-of-range sums are clamped to [0, 255]
  const gray = isGray(data);
  for (let i = 0; i < data.length; i += 4) {
    const shared = gaussian();
    for (let channel = 0; channel < 3; channel += 1) {
      // Grey cells get the same noise on R, G and B so they stay grey.
      data[i + channel] += Math.round((gray ? shared : gaussian()) * sigma * 255);
    }
  }
  context.putImageData(pixels, 0, 0);
  return new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
}

/** RGBA pixels of an image blob drawn at `width` x `height`; null when it cannot decode. */
async function pixelsOf(blob, width, height) {
  let bitmap;
  try {
    bitmap = await createImageBitmap(blob);
  } catch (notAnImage) {
    return null;
  }
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  const context = canvas.getContext("2d");
  context.drawImage(bitmap, 0, 0, width, height);
  return context.getImageData(0, 0, width, height).data;
}

/** Peak signal-to-noise ratio in dB of `image` against `reference` over R, G and B. */
function psnr(reference, image) {
  let squared = 0;
  let count = 0;
  for (let i = 0; i < reference.length; i += 4) {
    for (let channel = 0; channel < 3; channel += 1) {
      const difference = reference[i + channel] - image[i + channel];
      squared += difference * difference;
      count += 1;
    }
  }
  if (squared === 0) return Infinity;
  return 10 * Math.log10((255 * 255) / (squared / count));
}

function formatPsnr(value) {
  return value === Infinity ? "PSNR ∞ dB (identical)" : `PSNR ${value.toFixed(1)} dB`;
}

/**
 * Put the PSNR of the sent and the denoised image, each against the original upload, under
 * them; computed here on the decoded pixels, so a person can judge by eye and by number.
 */
async function showPsnr(original, sent, denoised) {
  $("denoise-input-psnr").textContent = "";
  $("denoise-output-psnr").textContent = "";
  const bitmap = await createImageBitmap(original).catch(() => null);
  if (!bitmap) return null;
  const [reference, sentPixels, denoisedPixels] = await Promise.all(
    [original, sent, denoised].map((blob) => pixelsOf(blob, bitmap.width, bitmap.height)),
  );
  if (!reference || !sentPixels || !denoisedPixels) return null;
  const scores = { sent: psnr(reference, sentPixels), denoised: psnr(reference, denoisedPixels) };
  $("denoise-input-psnr").textContent = formatPsnr(scores.sent);
  $("denoise-output-psnr").textContent = formatPsnr(scores.denoised);
  return scores;
}

async function denoise(file) {
  const sigma = Number($("denoise-sigma").value);
  const noisy = $("denoise-add-noise").checked && sigma > 0 ? await addNoise(file, sigma) : null;
  const upload = noisy || file;
  const name = noisy ? file.name.replace(/\.[^.]*$/, "") + "-noisy.png" : file.name;
  const response = await request("/denoise?size=original", {
    method: "POST",
    headers: { Accept: "image/png" },
    body: formWith(upload, name),
  });
  const denoised = await response.blob();
  const verdict = {
    ood_score: response.headers.get("X-OOD-Score"),
    in_distribution: response.headers.has("X-In-Distribution")
      ? response.headers.get("X-In-Distribution") === "true"
      : null,
  };
  showBlob($("denoise-original"), file);
  $("denoise-original-figure").hidden = !noisy;
  showBlob($("denoise-input"), upload);
  showBlob($("denoise-output"), denoised);
  $("denoise-input-caption").textContent = noisy ? `Sent (sigma ${sigma})` : "Sent";
  showOod($("denoise-ood"), verdict, "a blood-smear cell");
  await showPsnr(file, upload, denoised);
  $("denoise-result").hidden = false;
  return "Denoised image ready.";
}

// Gallery labels the page has seen (in results, in additions, on the first page of
// GET /gallery), offered as suggestions by the label filter and the "add" form.
const seenLabels = new Set();

function rememberLabels(labels) {
  const before = seenLabels.size;
  for (const label of labels) {
    if (typeof label === "string" && label) seenLabels.add(label);
  }
  if (seenLabels.size === before) return;
  const options = [...seenLabels].sort().map((label) => {
    const option = document.createElement("option");
    option.value = label;
    return option;
  });
  $("gallery-labels").replaceChildren(...options);
}

/** Suggestions only: when the listing is refused or absent the inputs still take any text. */
async function loadGalleryLabels() {
  try {
    const answer = await (await request("/gallery")).json();
    rememberLabels((answer.items || []).map((item) => item.label));
  } catch (unavailable) {
    // Nothing to suggest yet; labels seen in results are added as they come.
  }
}

// The cell of the last search shown: "Add this cell to the gallery" sends it.
let queryFile = null;

async function similar(file) {
  const query = new URLSearchParams({ k: $("similar-k").value });
  const label = $("similar-label").value.trim();
  if (label) query.set("label", label);
  const response = await request(`/similar?${query}`, {
    method: "POST",
    body: formWith(file, file.name),
  });
  const answer = await response.json();
  showBlob($("similar-query"), file);
  const tiles = $("similar-tiles");
  tiles.querySelectorAll("img").forEach(releaseBlob);
  tiles.replaceChildren();
  const loads = answer.results.map((result, rank) => {
    const tile = document.createElement("li");
    tile.className = "tile";
    const img = document.createElement("img");
    img.width = 96;
    img.height = 96;
    img.alt = `Gallery cell ${result.id}, ${result.label}`;
    const caption = document.createElement("span");
    caption.className = "tile-caption";
    caption.innerHTML = '<strong class="tile-label"></strong><span class="tile-distance"></span>';
    caption.querySelector(".tile-label").textContent = `${rank + 1}. ${result.label}`;
    caption.querySelector(".tile-distance").textContent = `dist. ${result.distance.toPrecision(3)}`;
    tile.append(img, caption);
    tiles.append(tile);
    return showServerImage(img, result.image_url);
  });
  await Promise.all(loads);
  rememberLabels(answer.results.map((result) => result.label));
  showOod($("similar-ood"), answer, "a blood-smear cell");
  queryFile = file;
  showMessage("gallery-add", "", "");
  $("similar-result").hidden = false;
  const among = label ? ` labelled ${label}` : "";
  return `Found ${answer.results.length} similar cells${among}.`;
}

/** What is wrong with the "add" form before any request, or null. Lengths count characters
 * (code points), as the server does. */
function galleryAddProblem(label, note) {
  if (!queryFile) return "Search with a cell first.";
  if (!label) return "Give the cell a label.";
  if ([...label].length > 64) return "A label has at most 64 characters.";
  if ([...note].length > 256) return "A note has at most 256 characters.";
  return null;
}

/** POST the query cell to /gallery under the label; say its id, or that it was there. */
async function addToGallery() {
  const form = $("gallery-add-form");
  const button = form.querySelector("button[type=submit]");
  if (form.getAttribute("aria-busy") === "true") return;
  const label = $("gallery-label").value.trim();
  const note = $("gallery-note").value.trim();
  const problem = galleryAddProblem(label, note);
  if (problem) {
    showMessage("gallery-add", problem, "error");
    return;
  }
  form.setAttribute("aria-busy", "true");
  button.setAttribute("aria-disabled", "true");
  showMessage("gallery-add", "Adding…", "busy");
  try {
    const body = new FormData();
    body.append("label", label);
    if (note) body.append("note", note);
    body.append("file", queryFile, queryFile.name);
    const answer = await (await request("/gallery", { method: "POST", body })).json();
    const item = answer.items[0];
    rememberLabels([item.label]);
    const text = item.created_now
      ? `Added to the gallery as id ${item.id} (label ${item.label}).`
      : `Already in the gallery as id ${item.id} (label ${item.label}).`;
    showMessage("gallery-add", text, "saved");
  } catch (error) {
    const needsKey = error.status === 401 || error.status === 403;
    const hint = needsKey ? ". Enter the API key at the bottom of the page." : "";
    showMessage("gallery-add", `${error.message}${hint}`, "error");
  } finally {
    form.removeAttribute("aria-busy");
    button.removeAttribute("aria-disabled");
  }
}

/** Wire a panel: submit runs the request; choosing or dropping a file runs it at once. */
function setUpPanel(panel, work) {
  const form = $(`${panel}-form`);
  const input = $(`${panel}-file`);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    runPanel(panel, work);
  });
  input.addEventListener("change", () => form.requestSubmit());
  form.addEventListener("dragover", (event) => {
    event.preventDefault();
    form.classList.add("dragging");
  });
  form.addEventListener("dragleave", () => form.classList.remove("dragging"));
  form.addEventListener("drop", (event) => {
    event.preventDefault();
    form.classList.remove("dragging");
    if (event.dataTransfer.files.length) {
      input.files = event.dataTransfer.files;
      form.requestSubmit();
    }
  });
}

/** One line for the footer: each model's name and version, the index, the device. */
function describeModels(answer) {
  const parts = (answer.models || []).map((model) => `${model.name} v${model.version}`);
  if (answer.index) {
    parts.push(`${answer.index.name} v${answer.index.version} (${answer.index.size} cells)`);
  }
  parts.push(`device ${answer.device}`);
  const missing = Object.keys(answer.missing || {});
  if (missing.length) parts.push(`not loaded: ${missing.join(", ")}`);
  return `Models: ${parts.join(" · ")}`;
}

/** The served classifier's classes and input size, from its metadata (GET /models). */
function describeClassifier(answer) {
  const classifier = (answer.models || []).find((model) => model.name === "signs_classifier");
  if (!classifier || !Array.isArray(classifier.class_names)) return null;
  const [height, width] = classifier.input_shape || [];
  const size = height ? `, input ${height}x${width}` : "";
  return (
    `${classifier.class_names.length} classes: ${classifier.class_names.join(", ")} ` +
    `(${classifier.name} v${classifier.version}${size})`
  );
}

async function showModels() {
  const footer = $("models-info");
  try {
    const answer = await (await request("/models")).json();
    footer.textContent = describeModels(answer);
    const classes = describeClassifier(answer);
    if (classes) $("classify-classes").textContent = `The classifier knows ${classes}.`;
  } catch (error) {
    footer.textContent = `Model information unavailable: ${error.message}`;
  }
}

/** Keep the key for this tab and refresh the footer, which may have been refused before. */
function setUpApiKey() {
  const input = $("api-key");
  input.value = apiKey();
  input.addEventListener("input", () => {
    sessionStorage.setItem(API_KEY_STORAGE, input.value.trim());
  });
  input.addEventListener("change", () => {
    showModels();
    showReports();
    loadGalleryLabels();
  });
}

// The Models view: each serving model's report (GET /models/{name}/report).
const REPORTED_MODELS = ["signs_classifier", "malaria_autoencoder", "malaria_index"];
const percent = (value) => `${(value * 100).toFixed(1)}%`;
const fixed = (digits) => (value) => value.toFixed(digits);
// The headline numbers per model: [path into the report's metrics, label, format].
const KEY_METRICS = {
  signs_classifier: [
    [["test_accuracy"], "held-out test accuracy", percent],
    [["test_balanced_accuracy"], "balanced accuracy (mean recall over classes)", percent],
    [["test_ece_before"], "calibration error (ECE) before temperature scaling", fixed(3)],
    [["test_ece_after"], "calibration error (ECE) after", fixed(3)],
  ],
  malaria_autoencoder: [
    [["reconstruction", "psnr"], "reconstruction PSNR of clean test cells (dB)", fixed(1)],
    [["denoise_sigma_0.1", "psnr_gain_db"], "denoising gain at sigma 0.1 (dB)", fixed(1)],
    [["denoise_sigma_0.2", "psnr_gain_db"], "denoising gain at sigma 0.2 (dB)", fixed(1)],
  ],
  malaria_index: [
    [["precision_at_10", "all"], "precision@10 on held-out cells", fixed(3)],
    [["recall_at_10_vs_exact"], "recall@10 against exact search", fixed(3)],
    [["queries"], "held-out query cells", String],
  ],
};

function valueAt(object, path) {
  const step = (inner, key) => (inner && typeof inner === "object" ? inner[key] : undefined);
  return path.reduce(step, object);
}

/** "precision 0.95, recall 0.90 (20 test images)" for one class of the report. */
function classScores(scores) {
  const text = ["precision", "recall"]
    .filter((key) => typeof scores[key] === "number")
    .map((key) => `${key} ${scores[key].toFixed(3)}`)
    .join(", ");
  return typeof scores.support === "number" ? `${text} (${scores.support} test images)` : text;
}

/** [label, text] rows: the model's headline metrics, its classes, calibration and OOD check. */
function reportRows(report) {
  const rows = [];
  const perClass = valueAt(report.metrics, ["test_per_class"]);
  if (perClass && typeof perClass === "object") {
    rows.push(["classes", Object.keys(perClass).join(", ")]);
  }
  for (const [path, label, format] of KEY_METRICS[report.name] || []) {
    const value = valueAt(report.metrics, path);
    if (typeof value === "number") rows.push([label, format(value)]);
  }
  if (perClass && typeof perClass === "object") {
    for (const [name, scores] of Object.entries(perClass)) {
      rows.push([`class ${name}`, classScores(scores)]);
    }
  }
  if (report.calibration) {
    rows.push(["temperature (fitted on validation)", report.calibration.temperature.toFixed(3)]);
  }
  if (report.ood) {
    rows.push(["OOD score", report.ood.score]);
    rows.push(["OOD AUROC (test vs never-seen negatives)", report.ood.auroc.toFixed(4)]);
    rows.push(["OOD false flags on test images", percent(report.ood.test_false_flag_rate)]);
    rows.push(["OOD threshold", Number(report.ood.threshold).toPrecision(4)]);
  }
  return rows;
}

/** "learning_curves.png" -> "learning curves" */
const captionOf = (filename) => filename.replace(/\.[^.]*$/, "").replaceAll("_", " ");

function renderReport(report) {
  const article = document.createElement("article");
  article.className = "report";
  article.id = `report-${report.name}`;
  const heading = document.createElement("h3");
  heading.textContent = `${report.name} v${report.version}`;
  const table = document.createElement("dl");
  table.className = "metrics";
  for (const [label, text] of reportRows(report)) {
    const term = document.createElement("dt");
    term.textContent = label;
    const value = document.createElement("dd");
    value.textContent = text;
    table.append(term, value);
  }
  const figures = document.createElement("div");
  figures.className = "figures";
  const links = document.createElement("p");
  links.className = "report-files";
  for (const file of report.files) {
    if (file.content_type === "image/png") {
      const figure = document.createElement("figure");
      const img = document.createElement("img");
      img.alt = `${report.name}: ${captionOf(file.name)}`;
      img.loading = "lazy";
      const caption = document.createElement("figcaption");
      caption.textContent = captionOf(file.name);
      figure.append(img, caption);
      figures.append(figure);
      showServerImage(img, file.url).catch(() => figure.remove());
    } else {
      const link = document.createElement("a");
      link.href = file.url;
      link.textContent = file.name;
      links.append(link, " ");
    }
  }
  article.append(heading, table, figures, links);
  return article;
}

async function showReports() {
  const holder = $("model-reports");
  const problems = [];
  const reports = await Promise.all(
    REPORTED_MODELS.map((name) =>
      request(`/models/${name}/report`)
        .then((response) => response.json())
        .catch((error) => {
          problems.push(`${name}: ${error.message}`);
          return null;
        }),
    ),
  );
  holder.querySelectorAll("img").forEach(releaseBlob);
  holder.replaceChildren();
  for (const report of reports.filter(Boolean)) {
    holder.append(renderReport(report));
  }
  showMessage("models", problems.join(" · "), problems.length ? "error" : "done");
}

setUpApiKey();
setUpPanel("classify", classify);
setUpPanel("denoise", denoise);
setUpPanel("similar", similar);
$("gallery-add-form").addEventListener("submit", (event) => {
  event.preventDefault();
  addToGallery();
});
loadGalleryLabels();
$("denoise-sigma").addEventListener("input", (event) => {
  $("denoise-sigma-value").textContent = Number(event.target.value).toFixed(2);
});
showModels();
showReports();

// Service status: while a model is not ready (say, still training beside the server), a line
// under the header says which and why, from /readyz; it checks again every 10 s until ready.
const STATUS_POLL_MS = 10000;

async function showServiceStatus() {
  let body;
  try {
    body = await (await fetch("/readyz")).json();
  } catch (unreachable) {
    return;
  }
  const notReady = Object.entries(body.components || {}).filter(([, state]) => !state.ready);
  const line = $("service-status");
  line.hidden = notReady.length === 0;
  line.textContent = notReady.map(([name, state]) => `${name}: ${state.reason}`).join(" · ");
  if (notReady.length) setTimeout(showServiceStatus, STATUS_POLL_MS);
}

showServiceStatus();
