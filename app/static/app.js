// cellsign web page: three forms that call the JSON/PNG API and render the answers.
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
  throw new Error(`${detail || response.statusText || "Request failed"} (HTTP ${response.status})`);
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
  $("classify-model").textContent = `${answer.model.name} v${answer.model.version}`;
  $("classify-result").hidden = false;
  return `Predicted digit ${prediction.label}.`;
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
  showBlob($("denoise-input"), upload);
  showBlob($("denoise-output"), denoised);
  $("denoise-input-caption").textContent = noisy ? `Sent (sigma ${sigma})` : "Sent";
  $("denoise-result").hidden = false;
  return "Denoised image ready.";
}

async function similar(file) {
  const k = $("similar-k").value;
  const response = await request(`/similar?k=${encodeURIComponent(k)}`, {
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
  $("similar-result").hidden = false;
  return `Found ${answer.results.length} similar cells.`;
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

async function showModels() {
  const footer = $("models-info");
  try {
    const answer = await (await request("/models")).json();
    footer.textContent = describeModels(answer);
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
  input.addEventListener("change", showModels);
}

setUpApiKey();
setUpPanel("classify", classify);
setUpPanel("denoise", denoise);
setUpPanel("similar", similar);
$("denoise-sigma").addEventListener("input", (event) => {
  $("denoise-sigma-value").textContent = Number(event.target.value).toFixed(2);
});
showModels();
