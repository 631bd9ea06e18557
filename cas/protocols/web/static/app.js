// cas web UI: plain JavaScript, no build step, no external resources.
// Talks to the JSON API under /api/ with a bearer token from POST /api/login (kept in sessionStorage).
"use strict";

(function () {
  const $ = (sel) => document.querySelector(sel);
  const SINGLE_PUT_MAX = 8 * 1024 * 1024;   // larger files go in parts (multipart upload)
  const PART_TRIES = 6;                      // per part, with exponential back-off
  const PARALLEL_FILES = 2;
  const RESUME_PREFIX = "cas-upload:";

  const state = {
    token: sessionStorage.getItem("cas-token"),
    user: sessionStorage.getItem("cas-user"),
    root: sessionStorage.getItem("cas-root") === "1",
    bucket: null,
    prefix: "",
    next: null,
    uploads: [],          // {file, row, loaded, total, state}
    queue: [],
    active: 0,
    eventsCursor: null,
    pollGen: 0,
  };

  // ---- helpers ----------------------------------------------------------------------------
  function fmtBytes(n) {
    if (n === null || n === undefined) return "";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i === 0 ? String(n) : n.toFixed(1)) + " " + units[i];
  }
  function fmtTime(t) { return t ? new Date(t * 1000).toLocaleString() : ""; }
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else if (k === "dataset") Object.assign(e.dataset, v);
      else e.setAttribute(k, v);
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c);
    return e;
  }
  function toast(msg, isError) {
    const t = $("#toast");
    t.textContent = msg;
    t.className = "toast" + (isError ? " error" : "");
    t.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { t.hidden = true; }, isError ? 6000 : 2500);
  }
  const enc = encodeURIComponent;

  class ApiError extends Error {
    constructor(status, code, message) { super(message); this.status = status; this.code = code; }
  }

  async function api(method, path, body) {
    const headers = {};
    if (state.token) headers["Authorization"] = "Bearer " + state.token;
    const opts = { method, headers };
    if (body !== undefined) { headers["Content-Type"] = "application/json"; opts.body = JSON.stringify(body); }
    const resp = await fetch(path, opts);
    if (resp.status === 401 && path !== "/api/login") { logout("Your session has ended; please log in again."); }
    if (resp.status === 204) return null;
    const data = await resp.json().catch(() => ({}));
    if (!resp.ok) throw new ApiError(resp.status, data.error, data.message || resp.statusText);
    return data;
  }

  // XMLHttpRequest, because fetch() reports no upload progress.
  function xhrPut(url, blob, onProgress, contentType) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open("PUT", url);
      if (state.token) xhr.setRequestHeader("Authorization", "Bearer " + state.token);
      xhr.setRequestHeader("Content-Type", "application/octet-stream");
      if (contentType) xhr.setRequestHeader("X-Content-Type", contentType);
      xhr.upload.onprogress = (e) => { if (e.lengthComputable) onProgress(e.loaded); };
      xhr.onload = () => {
        let data = {};
        try { data = JSON.parse(xhr.responseText || "{}"); } catch (e) { /* not JSON */ }
        if (xhr.status >= 200 && xhr.status < 300) resolve(data);
        else reject(new ApiError(xhr.status, data.error, data.message || ("HTTP " + xhr.status)));
      };
      xhr.onerror = () => reject(new ApiError(0, "NetworkError", "network error"));
      xhr.ontimeout = () => reject(new ApiError(0, "Timeout", "timed out"));
      xhr.send(blob);
    });
  }

  // ---- modal ------------------------------------------------------------------------------
  function ask(message, { input = null, okText = "OK", danger = false } = {}) {
    return new Promise((resolve) => {
      const dlg = $("#modal"), inp = $("#modal-input"), ok = $("#modal-ok");
      $("#modal-message").textContent = message;
      inp.hidden = input === null;
      inp.value = input || "";
      ok.textContent = okText;
      ok.className = danger ? "danger" : "";
      const finish = (value) => {
        dlg.close();
        $("#modal-form").onsubmit = null;
        $("#modal-cancel").onclick = null;
        resolve(value);
      };
      $("#modal-form").onsubmit = (e) => { e.preventDefault(); finish(input === null ? true : inp.value); };
      $("#modal-cancel").onclick = () => finish(null);
      dlg.oncancel = () => finish(null);
      dlg.showModal();
      if (input !== null) { inp.focus(); inp.select(); } else ok.focus();
    });
  }

  // ---- session ----------------------------------------------------------------------------
  function showLogin(message) {
    $("#app-view").hidden = true;
    $("#whoami").hidden = true;
    $("#logout-btn").hidden = true;
    $("#login-view").hidden = false;
    $("#login-error").textContent = message || "";
    $("#login-user").focus();
  }
  function logout(message) {
    state.token = null;
    state.pollGen++;
    sessionStorage.removeItem("cas-token");
    showLogin(message);
  }
  async function login(e) {
    e.preventDefault();
    $("#login-error").textContent = "";
    try {
      const r = await api("POST", "/api/login", { user: $("#login-user").value, password: $("#login-password").value });
      state.token = r.token; state.user = r.user; state.root = r.root;
      sessionStorage.setItem("cas-token", r.token);
      sessionStorage.setItem("cas-user", r.user);
      sessionStorage.setItem("cas-root", r.root ? "1" : "0");
      $("#login-password").value = "";
      await showApp();
    } catch (err) {
      $("#login-error").textContent = err.status === 401 ? "Wrong user name or password." : err.message;
    }
  }
  async function showApp() {
    $("#login-view").hidden = true;
    $("#app-view").hidden = false;
    $("#whoami").textContent = state.user + (state.root ? " (root)" : "");
    $("#whoami").hidden = false;
    $("#logout-btn").hidden = false;
    const hash = decodeURIComponent(location.hash.slice(1));
    if (hash) {
      const i = hash.indexOf("/");
      state.bucket = i < 0 ? hash : hash.slice(0, i);
      state.prefix = i < 0 ? "" : hash.slice(i + 1);
    }
    await loadBuckets();
    await Promise.all([loadObjects(), loadStats()]);
    followEvents();
  }

  // ---- buckets and listing ----------------------------------------------------------------
  async function loadBuckets() {
    const { buckets } = await api("GET", "/api/buckets");
    const ul = $("#buckets");
    ul.replaceChildren();
    for (const b of buckets) {
      const a = el("a", { href: "#" + enc(b.name), class: b.name === state.bucket ? "active" : "",
                          dataset: { bucket: b.name } }, b.name);
      a.addEventListener("click", (e) => { e.preventDefault(); navigate(b.name, ""); });
      ul.append(el("li", {}, a));
    }
    if (state.bucket && !buckets.some((b) => b.name === state.bucket)) { state.bucket = null; state.prefix = ""; }
  }

  function navigate(bucket, prefix) {
    state.bucket = bucket; state.prefix = prefix || "";
    history.replaceState(null, "", "#" + (bucket ? enc(bucket + "/" + state.prefix) : ""));
    for (const a of document.querySelectorAll("#buckets a")) a.classList.toggle("active", a.dataset.bucket === bucket);
    loadObjects();
  }

  function renderCrumbs() {
    const nav = $("#crumbs");
    nav.replaceChildren();
    const link = (text, bucket, prefix) => {
      const a = el("a", { href: "#", class: "crumb" }, text);
      a.addEventListener("click", (e) => { e.preventDefault(); navigate(bucket, prefix); });
      return a;
    };
    nav.append(link("Buckets", null, ""));
    if (!state.bucket) return;
    nav.append(el("span", { class: "sep" }, "/"), link(state.bucket, state.bucket, ""));
    let acc = "";
    for (const part of state.prefix.split("/").filter(Boolean)) {
      acc += part + "/";
      nav.append(el("span", { class: "sep" }, "/"), link(part, state.bucket, acc));
    }
  }

  async function loadObjects(append) {
    renderCrumbs();
    const tbody = $("#objects tbody");
    const hasBucket = !!state.bucket;
    $("#no-bucket-note").hidden = hasBucket;
    $("#objects").hidden = !hasBucket;
    for (const id of ["#new-folder-btn", "#refresh-btn", "#delete-bucket-btn"]) $(id).disabled = !hasBucket;
    $("label[for=file-input]").hidden = !hasBucket;
    $("#delete-bucket-btn").hidden = !hasBucket || state.prefix !== "";
    if (!hasBucket) { tbody.replaceChildren(); $("#empty-note").hidden = true; $("#more-btn").hidden = true; return; }
    const q = "prefix=" + enc(state.prefix) + "&delimiter=%2F" + (append && state.next ? "&after=" + enc(state.next) : "");
    let page;
    try {
      page = await api("GET", `/api/buckets/${enc(state.bucket)}/objects?` + q);
    } catch (err) {
      if (err.status === 404) { toast(err.message, true); state.bucket = null; await loadBuckets(); return loadObjects(); }
      throw err;
    }
    if (!append) tbody.replaceChildren();
    for (const p of page.prefixes) tbody.append(folderRow(p));
    for (const o of page.entries) if (!o.folder) tbody.append(fileRow(o));
    state.next = page.next;
    $("#more-btn").hidden = !page.truncated;
    $("#empty-note").hidden = tbody.children.length > 0;
  }

  function folderRow(prefix) {
    const name = prefix.slice(state.prefix.length).replace(/\/$/, "");
    const a = el("a", { href: "#", class: "folder" }, name + "/");
    a.addEventListener("click", (e) => { e.preventDefault(); navigate(state.bucket, prefix); });
    return el("tr", { dataset: { key: prefix, kind: "folder" } },
      el("td", {}, a), el("td", { class: "num" }, ""), el("td", {}, ""),
      el("td", { class: "actions" },
        el("button", { type: "button", class: "link rename", onclick: () => renameItem(prefix) }, "Rename"),
        el("button", { type: "button", class: "link danger delete", onclick: () => deleteItem(prefix) }, "Delete")));
  }

  function fileRow(o) {
    const name = o.key.slice(state.prefix.length);
    return el("tr", { dataset: { key: o.key, kind: "file" } },
      el("td", { class: "file" }, name),
      el("td", { class: "num" }, fmtBytes(o.size)),
      el("td", {}, fmtTime(o.mtime)),
      el("td", { class: "actions" },
        el("button", { type: "button", class: "link download", onclick: () => download(o.key) }, "Download"),
        el("button", { type: "button", class: "link rename", onclick: () => renameItem(o.key) }, "Rename"),
        el("button", { type: "button", class: "link danger delete", onclick: () => deleteItem(o.key) }, "Delete")));
  }

  async function loadStats() {
    const dl = $("#storage");
    let s;
    try { s = await api("GET", "/api/stats"); } catch (err) { dl.replaceChildren(); return; }
    const rows = s.scope === "store"
      ? [["Objects", s.objects], ["Logical", fmtBytes(s.logical_bytes)], ["Stored", fmtBytes(s.stored_bytes)],
         ["Blocks", s.unique_blocks], ["Dedup ratio", s.dedup_ratio.toFixed(2) + "×"],
         ["Compression", s.compression_ratio.toFixed(2) + "×"]]
      : [["Objects", s.objects + (s.approximate ? "+" : "")], ["Logical", fmtBytes(s.logical_bytes)]];
    dl.replaceChildren(...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", { dataset: { stat: k } }, String(v))]));
  }

  // ---- actions ----------------------------------------------------------------------------
  async function createBucket(e) {
    e.preventDefault();
    const name = $("#new-bucket-name").value.trim();
    if (!name) return;
    try {
      await api("POST", "/api/buckets", { name });
      $("#new-bucket-name").value = "";
      await loadBuckets();
      navigate(name, "");
      toast(`Bucket ${name} created`);
    } catch (err) { toast(err.message, true); }
  }

  async function deleteBucket() {
    if (!state.bucket) return;
    if (!(await ask(`Delete the bucket "${state.bucket}"? It must be empty.`, { okText: "Delete", danger: true }))) return;
    try {
      await api("DELETE", `/api/buckets/${enc(state.bucket)}`);
      toast(`Bucket ${state.bucket} deleted`);
      state.bucket = null; state.prefix = "";
      await loadBuckets();
      navigate(null, "");
      loadStats();
    } catch (err) { toast(err.message, true); }
  }

  async function newFolder() {
    const name = await ask("Name of the new folder:", { input: "", okText: "Create" });
    if (!name || !name.trim()) return;
    try {
      await api("POST", `/api/buckets/${enc(state.bucket)}/folder`, { path: state.prefix + name.trim().replace(/^\/+|\/+$/g, "") });
      await loadObjects();
    } catch (err) { toast(err.message, true); }
  }

  async function download(key) {
    try {
      const { url } = await api("POST", `/api/buckets/${enc(state.bucket)}/link?key=${enc(key)}`);
      const a = el("a", { href: url, download: key.split("/").pop() });
      document.body.append(a);
      a.click();
      a.remove();
    } catch (err) { toast(err.message, true); }
  }

  async function renameItem(key) {
    const isFolder = key.endsWith("/");
    const target = await ask(`Rename or move "${key}" to (path in bucket ${state.bucket}):`,
                             { input: isFolder ? key.slice(0, -1) : key, okText: "Rename" });
    if (!target || target === key || target + "/" === key) return;
    try {
      await api("POST", `/api/buckets/${enc(state.bucket)}/move`, { from: key, to: isFolder ? target.replace(/\/+$/, "") + "/" : target });
      await loadObjects();
      toast("Renamed");
    } catch (err) { toast(err.message, true); }
  }

  async function deleteItem(key) {
    const isFolder = key.endsWith("/");
    const what = isFolder ? `the folder "${key}" and everything in it` : `"${key}"`;
    if (!(await ask(`Delete ${what}?`, { okText: "Delete", danger: true }))) return;
    try {
      await api("DELETE", `/api/buckets/${enc(state.bucket)}/object?key=${enc(key)}` + (isFolder ? "&recursive=1" : ""));
      await loadObjects();
      loadStats();
      toast("Deleted");
    } catch (err) { toast(err.message, true); }
  }

  // ---- uploads ----------------------------------------------------------------------------
  function addFiles(files) {
    if (!state.bucket) { toast("Choose a bucket first", true); return; }
    $("#uploads").hidden = false;
    for (const file of files) {
      const key = state.prefix + (file.webkitRelativePath || file.name);
      const prog = el("progress", { max: "100", value: "0", class: "file-progress" });
      const row = el("li", { class: "upload-row", dataset: { name: file.name, key } },
        el("span", { class: "name", title: key }, file.name), prog,
        el("span", { class: "pct" }, "0%"), el("span", { class: "status" }, "waiting"));
      $("#upload-list").append(row);
      const u = { file, key, bucket: state.bucket, row, prog, loaded: 0, total: file.size, state: "waiting" };
      state.uploads.push(u);
      state.queue.push(u);
    }
    updateOverall();
    pump();
  }

  function clearFinished() {
    const finished = state.uploads.filter((u) => u.state === "done" || u.state === "failed");
    for (const u of finished) u.row.remove();
    state.uploads = state.uploads.filter((u) => !finished.includes(u));
    if (!state.uploads.length) $("#uploads").hidden = true;
    updateOverall();
  }

  function pump() {
    while (state.active < PARALLEL_FILES && state.queue.length) {
      const u = state.queue.shift();
      state.active++;
      runUpload(u).finally(() => { state.active--; pump(); });
    }
  }

  function setProgress(u, loaded) {
    u.loaded = Math.min(loaded, u.total);
    const pct = u.total ? Math.floor((u.loaded / u.total) * 100) : 100;
    u.prog.value = pct;
    u.row.querySelector(".pct").textContent = pct + "%";
    u.row.dataset.percent = String(pct);
    updateOverall();
  }
  function setStatus(u, text, cls) {
    u.state = cls || u.state;
    u.row.querySelector(".status").textContent = text;
    if (cls) u.row.classList.add(cls);
  }
  function updateOverall() {
    const total = state.uploads.reduce((s, u) => s + u.total, 0);
    const loaded = state.uploads.reduce((s, u) => s + u.loaded, 0);
    const pct = total ? Math.floor((loaded / total) * 100) : 100;
    $("#overall-progress").value = pct;
    $("#overall-text").textContent = pct + "%";
  }

  async function runUpload(u) {
    setStatus(u, "uploading");
    try {
      if (u.total <= SINGLE_PUT_MAX) {
        await withRetry(u, () => xhrPut(`/api/buckets/${enc(u.bucket)}/object?key=${enc(u.key)}`, u.file,
                                         (n) => setProgress(u, n), u.file.type));
      } else {
        await multipart(u);
      }
      setProgress(u, u.total);
      setStatus(u, "done", "done");
      if (u.bucket === state.bucket) loadObjects();
      loadStats();
    } catch (err) {
      setStatus(u, "failed: " + err.message, "failed");
      toast(`Upload of ${u.file.name} failed: ${err.message}`, true);
    }
  }

  function retryable(err) { return err.status === 0 || err.status === 408 || err.status === 429 || err.status >= 500; }

  async function withRetry(u, attempt) {
    for (let i = 1; ; i++) {
      try { return await attempt(); } catch (err) {
        if (!retryable(err) || i >= PART_TRIES) throw err;
        const delay = Math.min(30, 2 ** (i - 1));
        setStatus(u, `retrying in ${delay}s`);
        await new Promise((r) => setTimeout(r, delay * 1000));
        setStatus(u, "uploading");
      }
    }
  }

  // Large files: multipart upload. The upload id is remembered (localStorage) per file, so that
  // after a network error or a reload the same file continues with the parts still missing.
  async function multipart(u) {
    const resumeKey = RESUME_PREFIX + JSON.stringify([u.bucket, u.key, u.file.size, u.file.lastModified]);
    let saved = null;
    try { saved = JSON.parse(localStorage.getItem(resumeKey) || "null"); } catch (e) { saved = null; }
    const done = new Map();
    if (saved) {
      try {
        const info = await api("GET", `/api/uploads/${enc(saved.upload_id)}`);
        for (const p of info.parts) done.set(p.number, p);
      } catch (err) {
        if (err.status !== 404) throw err;
        saved = null;
      }
    }
    if (!saved) {
      const r = await api("POST", `/api/buckets/${enc(u.bucket)}/uploads`,
                          { key: u.key, size: u.file.size, content_type: u.file.type || null });
      saved = { upload_id: r.upload_id, part_size: r.part_size };
      localStorage.setItem(resumeKey, JSON.stringify(saved));
    }
    const size = saved.part_size;
    const count = Math.max(1, Math.ceil(u.file.size / size));
    const parts = [];
    let base = 0;
    for (let n = 1; n <= count; n++) {
      const start = (n - 1) * size, stop = Math.min(u.file.size, n * size);
      const have = done.get(n);
      if (have && have.size === stop - start) {
        parts.push({ number: n, etag: have.etag });
      } else {
        const r = await withRetry(u, () => xhrPut(`/api/uploads/${enc(saved.upload_id)}/parts/${n}`,
                                                  u.file.slice(start, stop), (x) => setProgress(u, base + x)));
        parts.push({ number: n, etag: r.etag });
      }
      base = stop;
      setProgress(u, base);
    }
    setStatus(u, "finishing");
    await withRetry(u, () => api("POST", `/api/uploads/${enc(saved.upload_id)}/complete`, { parts }));
    localStorage.removeItem(resumeKey);
  }

  // ---- change feed: refresh the listing when something changes in this bucket --------------
  // The UI polls (no long-poll: a waiting request would hold one of the server's worker threads
  // for as long as the tab is open); sync clients use ?wait= instead.
  const POLL_MS = 5000;
  async function followEvents() {
    const gen = ++state.pollGen;
    try {
      state.eventsCursor = (await api("GET", "/api/events?after=latest")).next;
    } catch (err) { return; }
    for (let failures = 0; gen === state.pollGen && failures < 20;) {
      await new Promise((r) => setTimeout(r, POLL_MS * (1 + failures)));
      if (gen !== state.pollGen) return;
      if (document.hidden) continue;
      try {
        const r = await api("GET", `/api/events?after=${state.eventsCursor}&limit=500`);
        failures = 0;
        if (gen !== state.pollGen) return;
        state.eventsCursor = r.next;
        if (r.events.some((e) => e.bucket === state.bucket) && state.queue.length === 0 && state.active === 0) {
          loadObjects();
          loadStats();
        }
        if (r.events.some((e) => e.op === "create_bucket" || e.op === "delete_bucket")) loadBuckets();
      } catch (err) {
        failures++;
      }
    }
  }

  // ---- wiring -----------------------------------------------------------------------------
  function init() {
    $("#login-form").addEventListener("submit", login);
    $("#logout-btn").addEventListener("click", () => logout(""));
    $("#new-bucket-form").addEventListener("submit", createBucket);
    $("#new-folder-btn").addEventListener("click", newFolder);
    $("#refresh-btn").addEventListener("click", () => { loadObjects(); loadStats(); });
    $("#delete-bucket-btn").addEventListener("click", deleteBucket);
    $("#more-btn").addEventListener("click", () => loadObjects(true));
    $("#clear-uploads-btn").addEventListener("click", clearFinished);
    $("#file-input").addEventListener("change", (e) => { addFiles([...e.target.files]); e.target.value = ""; });
    const zone = $("#drop-zone");
    let depth = 0;
    zone.addEventListener("dragenter", (e) => { e.preventDefault(); depth++; zone.classList.add("dragover"); });
    zone.addEventListener("dragover", (e) => { e.preventDefault(); e.dataTransfer.dropEffect = "copy"; });
    zone.addEventListener("dragleave", () => { if (--depth <= 0) { depth = 0; zone.classList.remove("dragover"); } });
    zone.addEventListener("drop", (e) => {
      e.preventDefault(); depth = 0; zone.classList.remove("dragover");
      const files = [...(e.dataTransfer.files || [])];
      if (files.length) addFiles(files);
    });
    window.addEventListener("unhandledrejection", (e) => {
      if (e.reason instanceof ApiError && e.reason.status !== 401) toast(e.reason.message, true);
    });
    if (state.token) {
      showApp().catch((err) => { if (err.status !== 401) toast(err.message, true); });
    } else {
      showLogin("");
    }
  }

  document.addEventListener("DOMContentLoaded", init);
})();
