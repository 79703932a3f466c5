// Drives Chromium (playwright-core) through a running ComfyUI: for each node design and workflow it opens
// the workflow, screenshots it, records the missing-models box, download offers, console warnings, node
// overlaps and clipped boxes, optionally queues it and records the same after the run. Called by
// tools/browser_check.py with one JSON config path; writes results_<mode>.json and PNGs into config.out.
import { createRequire } from "node:module";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

const require = createRequire(import.meta.url);
const { chromium } = require("playwright-core");
const cfg = JSON.parse(readFileSync(process.argv[2], "utf8"));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function api(path, body) {
  const init = body === undefined ? {} : { method: "POST", body: JSON.stringify(body),
                                          headers: { "Content-Type": "application/json" } };
  const r = await fetch(cfg.url + path, init);
  const text = await r.text();
  try { return JSON.parse(text); } catch { return text; }
}

// Everything measured inside the page: node boxes (graph and DOM), overlaps, clipped boxes, dialog texts.
function inspect(packName) {
  const app = window.app ?? window.comfyAPI?.app?.app;
  const visible = (el) => el && el.getClientRects().length > 0 && getComputedStyle(el).visibility !== "hidden";
  const nodes = app.graph._nodes ?? app.graph.nodes;
  const title = (n) => `${n.title ?? n.type}#${n.id}`;
  const graphBoxes = nodes.filter((n) => !n.flags?.collapsed).map((n) => {
    let b = n.boundingRect ? Array.from(n.boundingRect) : null;
    if (!b) { const t = 30; b = [n.pos[0], n.pos[1] - t, n.size[0], n.size[1] + t]; }
    return { name: title(n), box: b.map(Math.round) };
  });
  const byId = Object.fromEntries(nodes.map((n) => [String(n.id), n]));
  const domBoxes = [...document.querySelectorAll("[data-node-id]")].filter(visible).map((el) => {
    const r = el.getBoundingClientRect();
    const n = byId[el.getAttribute("data-node-id")];
    return { name: n ? title(n) : el.getAttribute("data-node-id"), box: [r.x, r.y, r.width, r.height].map(Math.round),
             el };
  });
  const overlaps = (boxes) => {
    const out = [];
    for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
      const [a, b] = [boxes[i].box, boxes[j].box];
      const w = Math.min(a[0] + a[2], b[0] + b[2]) - Math.max(a[0], b[0]);
      const h = Math.min(a[1] + a[3], b[1] + b[3]) - Math.max(a[1], b[1]);
      if (w > 1 && h > 1) out.push(`${boxes[i].name} x ${boxes[j].name}: ${Math.round(w)}x${Math.round(h)} px`);
    }
    return out;
  };
  const vue = domBoxes.length > 0;
  const clipped = [];
  for (const ta of document.querySelectorAll("textarea")) {
    if (!visible(ta) || ta.scrollHeight <= ta.clientHeight + 2) continue;
    const owner = ta.closest("[data-node-id]");
    const n = owner ? byId[owner.getAttribute("data-node-id")] : null;
    clipped.push(`textarea${n ? " in " + title(n) : ""} shows ${ta.clientHeight}/${ta.scrollHeight} px: ` +
                 JSON.stringify(ta.value.slice(0, 80)));
  }
  for (const d of domBoxes) {
    if (d.el.scrollHeight > d.el.clientHeight + 12) clipped.push(`node ${d.name} content ${d.el.scrollHeight} px in ${d.el.clientHeight} px`);
  }
  const texts = (re, max) => {
    const found = new Set();
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    while (walker.nextNode()) {
      const t = walker.currentNode;
      if (!re.test(t.textContent) || !visible(t.parentElement)) continue;
      const block = t.parentElement.closest("[role=dialog], .p-dialog, .p-toast-message, .p-panel, section, li, div");
      found.add((block?.innerText ?? t.textContent).trim().replace(/\s+/g, " ").slice(0, 400));
      if (found.size >= max) break;
    }
    return [...found];
  };
  const dialogs = [...document.querySelectorAll("[role=dialog], .p-dialog, .p-toast-message, .comfy-modal")]
    .filter(visible).map((el) => el.innerText.trim().replace(/\s+/g, " ").slice(0, 1500)).filter(Boolean);
  const buttons = [...document.querySelectorAll("button, a")].filter(visible)
    .map((b) => b.innerText.trim()).filter((t) => /^(download( all)?( \(\?\))?|copy url|copy link)$/i.test(t));
  const redNodes = nodes.filter((n) => n.has_errors || n.color === "#FF0000").map(title);
  return { graph_boxes: graphBoxes, dom_boxes: domBoxes.map(({ name, box }) => ({ name, box })),
           overlaps: overlaps(vue ? domBoxes : graphBoxes), clipped, dialogs, missing_models: texts(/models? (is|are) missing|missing models/i, 6),
           download_offers: buttons, errors_shown: texts(/error|exception/i, 8), red_nodes: redNodes,
           extension_urls: [...document.querySelectorAll("script")].map((s) => s.src).filter((s) => s.includes(packName)) };
}

// Media drawn inside nodes: images loaded, videos playable, and every canvas other than the graph's own
// (Preview 3D, point-cloud previews) sampled from a screenshot: a blank canvas has one or two colours.
async function media(page) {
  const found = await page.evaluate(() => {
    const visible = (el) => el.getClientRects().length > 0;
    const box = (el) => { const r = el.getBoundingClientRect(); return { x: r.x, y: r.y, width: r.width, height: r.height }; };
    const onScreen = (b) => b.width > 8 && b.height > 8 && b.x >= 0 && b.y >= 0 && b.x + b.width <= innerWidth && b.y + b.height <= innerHeight;
    const canvases = [...document.querySelectorAll("canvas")].filter((c) => visible(c) && c.id !== "graph-canvas"
      && !c.closest(".minimap-container, [class*=minimap]")).map((c) => box(c)).filter(onScreen)
      .filter((b) => b.width < innerWidth * 0.8);        // not the graph canvas itself
    const images = [...document.querySelectorAll("img")].filter(visible).filter((i) => /\/(api\/)?view\?/.test(i.src))
      .map((i) => ({ src: i.src.replace(/^.*\/view\?/, "view?"), size: `${i.naturalWidth}x${i.naturalHeight}` }));
    const videos = [...document.querySelectorAll("video")].filter(visible)
      .map((v) => ({ src: v.currentSrc.replace(/^.*\/view\?/, "view?"), ready: v.readyState, duration: v.duration,
                     size: `${v.videoWidth}x${v.videoHeight}` }));
    return { canvases, images, videos };
  });
  found.canvas_colours = [];
  for (const clip of found.canvases.slice(0, 6)) {
    const png = (await page.screenshot({ clip })).toString("base64");
    found.canvas_colours.push(await page.evaluate(async (b64) => {
      const img = new Image();
      img.src = "data:image/png;base64," + b64;
      await img.decode();
      const c = document.createElement("canvas");
      [c.width, c.height] = [img.width, img.height];
      const g = c.getContext("2d");
      g.drawImage(img, 0, 0);
      const d = g.getImageData(0, 0, c.width, c.height).data;
      const colours = new Set();
      for (let i = 0; i < d.length; i += 4 * 7) colours.add((d[i] >> 3) << 10 | (d[i + 1] >> 3) << 5 | d[i + 2] >> 3);
      return colours.size;
    }, png));
  }
  found.canvases = found.canvases.map((b) => `${Math.round(b.width)}x${Math.round(b.height)}@${Math.round(b.x)},${Math.round(b.y)}`);
  return found;
}

// The missing-models list behind the box's "Show missing models" button (1.45) or in the dialog (1.27):
// model names, the group they are filed under, and the download / copy-URL offers.
function missingPanel() {
  const visible = (el) => el && el.getClientRects().length > 0;
  const found = new Set();
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode() && found.size < 16) {
    const t = walker.currentNode;
    if (!/\.(pth|pt|safetensors|ckpt)\b|unknown|download|copy url|models\//i.test(t.textContent)) continue;
    if (!visible(t.parentElement)) continue;
    const block = t.parentElement.closest("li, tr, [role=listitem], div");
    found.add((block?.innerText ?? t.textContent).trim().replace(/\s+/g, " ").slice(0, 300));
  }
  const buttons = [...document.querySelectorAll("button, a")].filter(visible)
    .map((b) => (b.innerText.trim() || b.getAttribute("aria-label") || b.title || "").trim())
    .filter((t) => /^(download( all)?( \(\?\))?|copy url|copy link)$/i.test(t));
  return { texts: [...found], download_offers: buttons };
}

async function showMissing(page, file) {
  const button = page.locator("button:visible", { hasText: /missing models/i });
  if ((await button.count()) > 0) {
    await button.first().click({ timeout: 3000 }).catch(() => {});
    await sleep(1500);
  }
  const panel = await page.evaluate(missingPanel);
  if (panel.texts.length || panel.download_offers.length) await page.screenshot({ path: file });
  return panel;
}

async function closeDialogs(page) {
  for (let i = 0; i < 3; i++) {
    const close = page.locator(".p-dialog-close-button:visible, [aria-label=Close]:visible, button:has-text('Close'):visible");
    if ((await close.count()) === 0) break;
    await close.first().click({ timeout: 2000 }).catch(() => {});
    await sleep(300);
  }
  await page.keyboard.press("Escape");
  await page.evaluate(async () => {                  // 1.45's right-hand panel (missing models, errors)
    const app = window.app ?? window.comfyAPI?.app?.app;
    try { await app.extensionManager.setting.set("Comfy.RightSidePanel.IsOpen", false); } catch {}
  });
}

async function fitView(page) {
  await page.evaluate(async () => {
    const app = window.app ?? window.comfyAPI?.app?.app;
    try { await app.extensionManager.command.execute("Comfy.Canvas.FitView"); return; } catch {}
    try { app.canvas.ds.fitToBounds?.(app.graph.boundingRect ?? [0, 0, 2000, 1200]); } catch {}
    app.graph.setDirtyCanvas(true, true);
  });
  await sleep(800);
}

let lastPrompt = null;                                // the page's POST /prompt answer (node_errors)

async function runWorkflow(page) {
  lastPrompt = null;
  const before = new Set(Object.keys(await api("/history")));
  const t0 = Date.now();
  await page.evaluate(async () => {
    const app = window.app ?? window.comfyAPI?.app?.app;
    if (app.queuePrompt) return app.queuePrompt(0, 1);
    return app.extensionManager.command.execute("Comfy.QueuePrompt");
  });
  let status = "timeout", messages = [];
  while (Date.now() - t0 < cfg.timeout_ms) {
    await sleep(1000);
    const q = await api("/queue");
    const history = await api("/history");
    const fresh = Object.keys(history).filter((k) => !before.has(k));
    const busy = (q.queue_running?.length ?? 0) + (q.queue_pending?.length ?? 0);
    if (fresh.length && !busy) {
      const h = history[fresh[fresh.length - 1]];
      status = h.status?.status_str ?? "unknown";
      messages = (h.status?.messages ?? []).filter(([k]) => k === "execution_error")
        .map(([, m]) => `${m.node_type}: ${m.exception_type}: ${String(m.exception_message).slice(0, 300)}`);
      break;
    }
    if (!fresh.length && !busy && Date.now() - t0 > 8000) { status = "not queued (validation?)"; break; }
  }
  if (status === "timeout") await api("/interrupt", {});
  const nodeErrors = Object.entries(lastPrompt?.node_errors ?? {}).map(([id, e]) =>
    `${e.class_type}#${id}: ${(e.errors ?? []).map((x) => x.details || x.message).join("; ").slice(0, 300)}`);
  if (lastPrompt?.error) nodeErrors.unshift(`prompt: ${JSON.stringify(lastPrompt.error).slice(0, 300)}`);
  return { status, messages, node_errors: nodeErrors, seconds: (Date.now() - t0) / 1000 };
}

const results = [];
const browser = await chromium.launch({
  executablePath: cfg.chromium, headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"],
});
try {
  for (const design of cfg.designs) {
    await api("/settings", { "Comfy.VueNodes.Enabled": design === "nodes2", "Comfy.TutorialCompleted": true,
                             "Comfy.Workflow.ShowMissingModelsWarning": true, "Comfy.Workflow.Persist": false,
                             // full detail at the zoom that fits a whole workflow (1.45, then 1.27's name)
                             "LiteGraph.Canvas.MinFontSizeForLOD": 0,
                             "LiteGraph.Canvas.LowQualityRenderingZoomThreshold": 0.1 });
    const context = await browser.newContext({ viewport: { width: 1920, height: 1200 } });
    const page = await context.newPage();
    let bucket = [];
    page.on("console", (m) => {
      if (m.type() === "warning" || m.type() === "error") bucket.push(`${m.type()}: ${m.text()} @ ${m.location()?.url ?? ""}`);
    });
    page.on("response", async (r) => {
      if (r.request().method() === "POST" && /\/prompt$/.test(r.url())) lastPrompt = await r.json().catch(() => null);
    });
    page.on("pageerror", (e) => bucket.push(`pageerror: ${e.message}`));
    await page.goto(cfg.url, { waitUntil: "load" });
    await page.waitForFunction(() => (window.app ?? window.comfyAPI?.app?.app)?.graph, null, { timeout: 120000 });
    await sleep(4000);
    await closeDialogs(page);
    for (const wf of cfg.workflows) {
      const stem = `${cfg.mode}_${design}_${wf.name}`;
      const shots = [];
      await page.evaluate(async ([graph, name]) => {
        const app = window.app ?? window.comfyAPI?.app?.app;
        await app.loadGraphData(graph, true, true, name);
      }, [wf.graph, wf.name]);
      await sleep(2500);
      await fitView(page);
      const open = await page.evaluate(inspect, cfg.pack_name);
      await page.screenshot({ path: join(cfg.out, `${stem}_open.png`) });
      shots.push(`${stem}_open.png`);
      if (open.missing_models.length || open.dialogs.length) {
        open.missing_panel = await showMissing(page, join(cfg.out, `${stem}_missing.png`));
        if (open.missing_panel.texts.length || open.missing_panel.download_offers.length) shots.push(`${stem}_missing.png`);
        await closeDialogs(page);
      }
      let run = null;
      if (cfg.run) {
        await closeDialogs(page);
        run = await runWorkflow(page);
        await sleep(3000);                             // previews, Preview 3D and video elements settle
        Object.assign(run, await page.evaluate(inspect, cfg.pack_name));
        run.media = await media(page);
        await page.screenshot({ path: join(cfg.out, `${stem}_run.png`) });
        shots.push(`${stem}_run.png`);
      }
      await closeDialogs(page);
      results.push({ mode: cfg.mode, design, workflow: wf.name, open, run, console: bucket, screenshots: shots });
      bucket = [];
      console.log(`${stem}: missing=${open.missing_models.length} overlaps=${open.overlaps.length}` +
                  (run ? ` run=${run.status} ${run.seconds.toFixed(1)}s overlaps=${run.overlaps.length}` : ""));
    }
    await context.close();
  }
} finally {
  await browser.close();
}
writeFileSync(join(cfg.out, `results_${cfg.mode}.json`), JSON.stringify(results, null, 1));
