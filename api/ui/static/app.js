/* Hearth's chat UI: a single page over the public API, signed in by an httpOnly session cookie.
 * No build step; marked (Markdown) and DOMPurify (sanitising) are vendored beside this file.
 * Every piece of text that comes from a document, a model or a user is put into the page as text
 * (textContent) or, for answers, as Markdown rendered to HTML and sanitised by DOMPurify. */
(() => {
  "use strict";

  const { UI_HEADER, errorFrom } = window.HearthSignIn; // signin.js
  const BUSY = new Set(["queued", "parsing", "embedding"]);
  const POLL_MS = 2000;
  const $ = (id) => document.getElementById(id);

  const state = {
    user: null,
    conversations: [],
    currentId: null,
    backendModel: null,
    collections: [],
    controller: null, // AbortController of the answer being streamed
    documents: [],
    uploadsInFlight: 0,
    pollTimer: null,
    view: "chat",
  };

  /* ---------- HTTP ---------- */

  async function api(path, { method = "GET", body, headers = {}, signal } = {}) {
    const init = { method, headers: { ...UI_HEADER, ...headers }, credentials: "same-origin", signal };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const resp = await fetch(path, init);
    if (!resp.ok) {
      const err = await errorFrom(resp);
      if (resp.status === 401 && state.user) signedOut("Your session has ended. Sign in again.");
      throw err;
    }
    return resp.json();
  }

  /* ---------- small helpers ---------- */

  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children) if (child !== null && child !== undefined) node.append(child);
    return node;
  }

  const SVG_NS = "http://www.w3.org/2000/svg";
  const ICONS = {
    pencil: "M4 20h4L19 9l-4-4L4 16v4zM14 6l4 4",
    trash: "M4 7h16M9 7V4h6v3M6 7l1 13h10l1-13",
  };
  function icon(name) {
    const svg = document.createElementNS(SVG_NS, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("aria-hidden", "true");
    const path = document.createElementNS(SVG_NS, "path");
    path.setAttribute("d", ICONS[name]);
    svg.append(path);
    return svg;
  }

  let toastTimer = null;
  function toast(message) {
    const box = $("toast");
    box.textContent = message;
    box.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => (box.hidden = true), 5000);
  }

  const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
  function ago(epoch) {
    if (!epoch) return "never";
    const secs = Math.round(epoch - Date.now() / 1000);
    const steps = [
      [60, "second"],
      [60, "minute"],
      [24, "hour"],
      [30, "day"],
      [12, "month"],
      [Infinity, "year"],
    ];
    let value = secs;
    for (const [size, unit] of steps) {
      if (Math.abs(value) < size) return relative.format(Math.round(value), unit);
      value /= size;
    }
    return "";
  }
  const fullDate = (epoch) => (epoch ? new Date(epoch * 1000).toLocaleString() : "");

  function bytes(n) {
    if (n === null || n === undefined) return "";
    if (n < 1024) return `${n} B`;
    if (n < 1024 ** 2) return `${(n / 1024).toFixed(1)} KB`;
    return `${(n / 1024 ** 2).toFixed(1)} MB`;
  }

  const basename = (path) => String(path || "").split(/[\\/]/).pop();

  async function copyText(text) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch (_) {
      // plain http on a LAN address is not a secure context: no Clipboard API there
      const area = el("textarea", { class: "offscreen", "aria-hidden": "true" });
      area.value = text;
      area.style.position = "fixed";
      area.style.opacity = "0";
      document.body.append(area);
      area.select();
      const ok = document.execCommand("copy");
      area.remove();
      return ok;
    }
  }

  /* ---------- Markdown, sanitised ---------- */

  let markdownReady = false;
  function setupMarkdown() {
    if (markdownReady) return;
    marked.use({ gfm: true, breaks: true });
    DOMPurify.addHook("afterSanitizeAttributes", (node) => {
      if (node.tagName === "A") {
        node.setAttribute("target", "_blank");
        node.setAttribute("rel", "noopener noreferrer");
      }
    });
    markdownReady = true;
  }

  /** Markdown to sanitised DOM nodes: no scripts, no event handlers, no javascript: links. */
  function renderMarkdown(text) {
    setupMarkdown();
    const html = marked.parse(text, { async: false });
    return DOMPurify.sanitize(html, {
      RETURN_DOM_FRAGMENT: true,
      USE_PROFILE: { html: true },
      FORBID_TAGS: ["style", "img", "form", "input", "button", "textarea", "select", "iframe", "svg", "math"],
      FORBID_ATTR: ["style", "class", "id"],
    });
  }

  /** Turn `[n]` markers that name a source into chips (never inside code or links). */
  function chipify(container, sources, message) {
    const byIndex = new Map(sources.map((s) => [Number(s.index), s]));
    if (!byIndex.size) return;
    const walker = document.createTreeWalker(container, NodeFilter.SHOW_TEXT, {
      acceptNode: (n) =>
        n.parentElement && n.parentElement.closest("code, pre, a")
          ? NodeFilter.FILTER_REJECT
          : NodeFilter.FILTER_ACCEPT,
    });
    const nodes = [];
    while (walker.nextNode()) nodes.push(walker.currentNode);
    const marker = /\[(\d{1,3})\]/g;
    for (const node of nodes) {
      const text = node.nodeValue;
      let last = 0;
      let changed = false;
      const frag = document.createDocumentFragment();
      for (const m of text.matchAll(marker)) {
        const source = byIndex.get(Number(m[1]));
        if (!source) continue;
        frag.append(text.slice(last, m.index), chip(source, message));
        last = m.index + m[0].length;
        changed = true;
      }
      if (changed) {
        frag.append(text.slice(last));
        node.replaceWith(frag);
      }
    }
  }

  function sourceLabel(source) {
    return source.title || basename(source.path) || `Source ${source.index}`;
  }

  function sourceTooltip(source) {
    const file = basename(source.path);
    const label = sourceLabel(source);
    return file && file !== label ? `${label} — ${file}` : label;
  }

  function chip(source, message) {
    return el("button", {
      type: "button",
      class: "chip",
      text: String(source.index),
      "aria-label": `Source ${source.index}: ${sourceLabel(source)}`,
      title: sourceTooltip(source),
      "data-source": source.index,
      onclick: (ev) => openSource(source, message, ev.currentTarget),
    });
  }

  /* ---------- the source panel ---------- */

  const norm = (word) => word.toLowerCase().replace(/[^\p{L}\p{N}]+/gu, "");

  /** Ranges of the snippet that the answer repeats (runs of at least `n` words). */
  function quotedRanges(snippet, answer, n = 4) {
    const words = [...snippet.matchAll(/\S+/g)]
      .map((m) => ({ start: m.index, end: m.index + m[0].length, key: norm(m[0]) }))
      .filter((w) => w.key);
    const answerKeys = answer.replace(/\[\d+\]/g, " ").split(/\s+/).map(norm).filter(Boolean);
    const size = Math.min(n, answerKeys.length);
    if (!size) return [];
    const grams = new Set();
    for (let i = 0; i + size <= answerKeys.length; i++) grams.add(answerKeys.slice(i, i + size).join(" "));
    const keep = new Array(words.length).fill(false);
    for (let i = 0; i + size <= words.length; i++) {
      const gram = words.slice(i, i + size).map((w) => w.key).join(" ");
      if (grams.has(gram)) for (let k = i; k < i + size; k++) keep[k] = true;
    }
    const ranges = [];
    words.forEach((w, i) => {
      if (!keep[i]) return;
      const prev = ranges[ranges.length - 1];
      if (prev && keep[i - 1]) prev[1] = w.end;
      else ranges.push([w.start, w.end]);
    });
    return ranges;
  }

  function fillSnippet(box, snippet, answer) {
    box.replaceChildren();
    let last = 0;
    for (const [start, end] of quotedRanges(snippet, answer)) {
      box.append(snippet.slice(last, start), el("mark", { text: snippet.slice(start, end) }));
      last = end;
    }
    box.append(snippet.slice(last));
  }

  let panelOpener = null;
  function openSource(source, message, opener) {
    panelOpener = opener || null;
    $("source-number").textContent = String(source.index);
    $("source-title").textContent = sourceLabel(source);
    const path = String(source.path || "");
    $("source-path").textContent = basename(path);
    $("source-dir").textContent = path.slice(0, path.length - basename(path).length);
    const where = [];
    if (source.page) where.push(`page ${source.page}`);
    if (source.heading_path && source.heading_path.length) where.push(source.heading_path.join(" › "));
    $("source-where").textContent = where.join(" · ");
    $("source-where").hidden = $("source-where-dt").hidden = !where.length;
    fillSnippet($("source-snippet"), source.snippet || source.quote || "", message.text || "");
    const open = $("source-open");
    if (source.document_id !== undefined && source.document_id !== null) {
      let href = `/v1/files/file-${encodeURIComponent(source.document_id)}/content`;
      if (source.page && /\.pdf$/i.test(source.path || "")) href += `#page=${Number(source.page)}`;
      open.href = href;
      open.hidden = false;
    } else {
      open.hidden = true;
    }
    $("source-panel").hidden = false;
    $("source-close").focus();
  }

  function closeSource() {
    if ($("source-panel").hidden) return;
    $("source-panel").hidden = true;
    if (panelOpener && panelOpener.isConnected) panelOpener.focus();
    panelOpener = null;
  }

  /* ---------- messages ---------- */

  const messagesBox = () => $("messages");

  function nearBottom() {
    const box = messagesBox();
    return box.scrollHeight - box.scrollTop - box.clientHeight < 120;
  }
  function scrollDown(force) {
    const box = messagesBox();
    if (force || nearBottom()) box.scrollTop = box.scrollHeight;
  }

  function updateEmpty() {
    $("empty-chat").hidden = messagesBox().children.length > 0;
  }

  function addUserMessage(text) {
    const node = el("div", { class: "msg user" }, el("div", { class: "bubble", text }));
    messagesBox().append(node);
    updateEmpty();
    return node;
  }

  /** An assistant message: its element, raw text and sources, re-rendered as tokens arrive. */
  function addAssistantMessage(text = "", sources = []) {
    const message = { text, sources, node: null, bubble: null, tools: null, frame: 0 };
    message.bubble = el("div", { class: "bubble" });
    message.tools = el("div", { class: "msg-tools" });
    message.node = el("div", { class: "msg assistant" }, message.bubble, message.tools);
    messagesBox().append(message.node);
    updateEmpty();
    render(message);
    return message;
  }

  function render(message) {
    const frag = renderMarkdown(message.text);
    chipify(frag, message.sources, message);
    message.bubble.replaceChildren(frag);
  }

  function renderSoon(message) {
    if (message.frame) return;
    message.frame = requestAnimationFrame(() => {
      message.frame = 0;
      const stick = nearBottom();
      render(message);
      if (stick) scrollDown(true);
    });
  }

  function finishMessage(message, note) {
    cancelAnimationFrame(message.frame);
    message.frame = 0;
    message.node.classList.remove("streaming");
    render(message);
    message.tools.replaceChildren();
    if (message.sources.length) {
      const list = el("div", { class: "sources", role: "list", "aria-label": "Sources" });
      for (const source of message.sources) {
        list.append(
          el(
            "button",
            {
              type: "button",
              class: "source-btn",
              role: "listitem",
              title: sourceTooltip(source),
              onclick: (ev) => openSource(source, message, ev.currentTarget),
            },
            el("span", { class: "chip static", text: String(source.index) }),
            el("span", { class: "label", text: sourceLabel(source) }),
          ),
        );
      }
      message.node.insertBefore(list, message.tools);
    }
    if (message.text) {
      message.tools.append(
        el("button", {
          type: "button",
          class: "ghost copy-btn",
          text: "Copy",
          onclick: async (ev) => {
            const btn = ev.currentTarget;
            btn.textContent = (await copyText(message.text)) ? "Copied" : "Copy failed";
            setTimeout(() => (btn.textContent = "Copy"), 1500);
          },
        }),
      );
    }
    if (note) message.tools.append(el("span", { class: note.error ? "msg-note msg-error" : "msg-note", text: note.text }));
  }

  function showConversation(conversation) {
    messagesBox().replaceChildren();
    closeSource();
    for (const m of conversation.messages || []) {
      if (m.role === "user") addUserMessage(m.content);
      else if (m.role === "assistant") {
        const note = m.incomplete ? { text: "Answer interrupted.", error: true } : null;
        finishMessage(addAssistantMessage(m.content, m.sources || []), note);
      }
    }
    updateEmpty();
    scrollDown(true);
  }

  /* ---------- streaming an answer ---------- */

  function chosenModel() {
    if ($("no-retrieval").checked && state.backendModel) return state.backendModel;
    return $("collection").value || "hearth";
  }

  function setStreaming(on) {
    $("send-btn").hidden = on;
    $("stop-btn").hidden = !on;
    $("prompt").disabled = false;
    if (on) $("stop-btn").focus();
  }

  /** Read a Server-Sent Events body; call `onData` with each event's data string. */
  async function readEvents(body, onData) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      buffer += decoder.decode(value || new Uint8Array(), { stream: !done });
      const events = buffer.split(/\r?\n\r?\n/);
      buffer = done ? "" : events.pop();
      for (const event of events) {
        const data = event
          .split(/\r?\n/)
          .filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(5).replace(/^ /, ""))
          .join("\n");
        if (data && onData(data) === false) return;
      }
      if (done) return;
    }
  }

  async function ask(question) {
    if (state.controller) return;
    const controller = new AbortController();
    state.controller = controller;
    setStreaming(true);
    addUserMessage(question);
    const message = addAssistantMessage();
    message.node.classList.add("streaming");
    scrollDown(true);
    const headers = {
      ...UI_HEADER,
      "Content-Type": "application/json",
      Accept: "text/event-stream",
      "X-Hearth-Footer": "off",
    };
    if (state.currentId) headers["X-Conversation-Id"] = state.currentId;
    let note = null;
    let conversationId = null;
    let finished = false;
    try {
      const resp = await fetch("/v1/chat/completions", {
        method: "POST",
        headers,
        credentials: "same-origin",
        signal: controller.signal,
        body: JSON.stringify({
          model: chosenModel(),
          stream: true,
          messages: [{ role: "user", content: question }],
        }),
      });
      if (!resp.ok) {
        const err = await errorFrom(resp);
        if (resp.status === 401) signedOut("Your session has ended. Sign in again.");
        throw err;
      }
      conversationId = resp.headers.get("X-Conversation-Id");
      await readEvents(resp.body, (data) => {
        if (data === "[DONE]") {
          finished = true;
          return false;
        }
        let chunk;
        try {
          chunk = JSON.parse(data);
        } catch (_) {
          return true;
        }
        if (chunk.error) {
          note = { text: chunk.error.message || "The answer failed.", error: true };
          return true;
        }
        const delta = ((chunk.choices || [])[0] || {}).delta || {};
        if (delta.content) {
          message.text += delta.content;
          renderSoon(message);
        }
        if (Array.isArray(chunk.sources)) message.sources = chunk.sources;
        if (chunk.conversation_id) conversationId = chunk.conversation_id;
        return true;
      });
      if (!finished && !note) note = { text: "The answer was cut off.", error: true };
    } catch (err) {
      if (err.name === "AbortError") note = { text: "Stopped. This unfinished answer is not saved." };
      else note = { text: err.message || String(err), error: true };
    } finally {
      state.controller = null;
      setStreaming(false);
      if (!message.text && note && note.error) message.node.classList.add("failed");
      finishMessage(message, note);
      scrollDown(false);
      $("prompt").focus();
    }
    if (finished && conversationId) {
      const isNew = state.currentId !== conversationId;
      state.currentId = conversationId;
      if (isNew) history.replaceState(null, "", `#/c/${encodeURIComponent(conversationId)}`);
      await loadConversations();
    }
  }

  function stop() {
    if (state.controller) state.controller.abort();
  }

  /* ---------- conversations ---------- */

  async function loadConversations() {
    try {
      const body = await api("/v1/conversations");
      state.conversations = body.data || [];
    } catch (err) {
      if (err.status !== 401) toast(`Could not load conversations: ${err.message}`);
      return;
    }
    renderConversations();
  }

  function renderConversations() {
    const list = $("conv-list");
    const query = $("conv-search").value.trim().toLowerCase();
    const shown = state.conversations.filter((c) => !query || (c.title || "").toLowerCase().includes(query));
    list.replaceChildren(...shown.map(conversationItem));
    $("conv-empty").hidden = shown.length > 0;
    $("conv-empty").textContent = state.conversations.length ? "No conversation matches." : "No conversations yet.";
  }

  function conversationItem(conv) {
    const current = conv.id === state.currentId;
    const item = el("li", { class: current ? "conv-item current" : "conv-item", "data-id": conv.id });
    const title = conv.title || "Untitled";
    const open = el(
      "button",
      {
        type: "button",
        class: "conv-open",
        title: title,
        "aria-current": current ? "page" : null,
        onclick: () => {
          location.hash = `#/c/${encodeURIComponent(conv.id)}`;
          closeSidebar();
        },
      },
      el("span", { text: title }),
    );
    const rename = el("button", {
      type: "button",
      class: "icon-btn rename-btn",
      "aria-label": `Rename “${title}”`,
      onclick: () => startRename(item, conv),
    });
    rename.append(icon("pencil"));
    const del = el("button", {
      type: "button",
      class: "icon-btn delete-btn",
      "aria-label": `Delete “${title}”`,
      onclick: () => confirmDelete(item, conv, del),
    });
    del.append(icon("trash"));
    item.append(open, rename, del);
    return item;
  }

  function startRename(item, conv) {
    const input = el("input", { class: "conv-rename", "aria-label": "New title", maxlength: 200 });
    input.value = conv.title || "";
    let done = false;
    const finish = async (save) => {
      if (done) return;
      done = true;
      const title = input.value.trim();
      if (save && title && title !== conv.title) {
        try {
          await api(`/v1/conversations/${encodeURIComponent(conv.id)}`, { method: "PATCH", body: { title } });
          conv.title = title;
        } catch (err) {
          toast(`Could not rename: ${err.message}`);
        }
      }
      renderConversations();
      const again = document.querySelector(`.conv-item[data-id="${CSS.escape(conv.id)}"] .rename-btn`);
      if (again) again.focus();
    };
    input.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter") {
        ev.preventDefault();
        finish(true);
      } else if (ev.key === "Escape") {
        ev.preventDefault();
        ev.stopPropagation();
        finish(false);
      }
    });
    input.addEventListener("blur", () => finish(true));
    item.replaceChildren(input);
    input.focus();
    input.select();
  }

  function confirmDelete(item, conv, button) {
    // a second click confirms; no modal dialogs
    const sure = el("button", {
      type: "button",
      class: "ghost confirm",
      text: "Delete?",
      "aria-label": `Confirm deleting “${conv.title || "Untitled"}”`,
      onclick: async () => {
        try {
          await api(`/v1/conversations/${encodeURIComponent(conv.id)}`, { method: "DELETE" });
        } catch (err) {
          toast(`Could not delete: ${err.message}`);
        }
        if (state.currentId === conv.id) location.hash = "#/";
        await loadConversations();
      },
    });
    button.replaceWith(sure);
    sure.focus();
    setTimeout(() => sure.isConnected && renderConversations(), 4000);
  }

  async function openConversation(id) {
    if (state.controller) stop();
    state.currentId = id;
    renderConversations();
    try {
      showConversation(await api(`/v1/conversations/${encodeURIComponent(id)}`));
    } catch (err) {
      if (err.status === 401) return;
      toast(err.status === 404 ? "That conversation no longer exists." : `Could not open it: ${err.message}`);
      location.hash = "#/";
    }
  }

  function newChat() {
    if (state.controller) stop();
    state.currentId = null;
    messagesBox().replaceChildren();
    closeSource();
    updateEmpty();
    renderConversations();
    $("prompt").focus();
  }

  /* ---------- models and collections ---------- */

  async function loadModels() {
    let models = [];
    try {
      models = (await api("/v1/models")).data || [];
    } catch (err) {
      if (err.status !== 401) toast(`Could not list models: ${err.message}`);
    }
    const select = $("collection");
    const previous = select.value;
    const rag = models.filter((m) => m.owned_by === "hearth");
    const backend = models.find((m) => m.owned_by !== "hearth");
    state.backendModel = backend ? backend.id : null;
    state.collections = rag.filter((m) => m.id.startsWith("hearth:")).map((m) => m.id.slice(7));
    select.replaceChildren(el("option", { value: "hearth", text: "All collections" }));
    for (const name of state.collections) select.append(el("option", { value: `hearth:${name}`, text: name }));
    if ([...select.options].some((o) => o.value === previous)) select.value = previous;
    $("plain-toggle").hidden = !state.backendModel;
    $("collection-names").replaceChildren(...state.collections.map((name) => el("option", { value: name })));
  }

  /* ---------- documents ---------- */

  async function loadDocuments() {
    try {
      state.documents = (await api("/ui/documents")).data || [];
    } catch (err) {
      if (err.status !== 401) toast(`Could not list documents: ${err.message}`);
      return;
    }
    renderDocuments();
    schedulePoll();
  }

  function schedulePoll() {
    clearTimeout(state.pollTimer);
    state.pollTimer = null;
    const busy = state.documents.some((d) => BUSY.has(d.status)) || state.uploadsInFlight > 0;
    if (busy && state.view === "documents" && state.user) state.pollTimer = setTimeout(loadDocuments, POLL_MS);
  }

  const STATUS_TEXT = {
    queued: "queued",
    parsing: "parsing",
    embedding: "embedding",
    indexed: "indexed",
    failed: "failed",
    needs_ocr: "needs OCR",
  };

  function renderDocuments() {
    const docs = state.documents;
    const counts = {};
    for (const d of docs) counts[d.status] = (counts[d.status] || 0) + 1;
    $("docs-summary").textContent = Object.entries(counts)
      .map(([s, n]) => `${n} ${STATUS_TEXT[s] || s}`)
      .join(" · ");
    $("docs-empty").hidden = docs.length > 0;
    const focused = document.activeElement && document.activeElement.closest(".doc");
    const focusKey = focused ? [focused.dataset.id, document.activeElement.dataset.action] : null;
    $("docs-list").replaceChildren(...docs.map(documentItem));
    if (focusKey) {
      const again = document.querySelector(`.doc[data-id="${focusKey[0]}"] [data-action="${focusKey[1]}"]`);
      if (again) again.focus();
    }
  }

  function documentItem(doc) {
    const name = doc.title && doc.title !== doc.filename ? `${doc.title} (${doc.filename})` : doc.filename;
    const facts = [
      el("span", { text: `collection ${doc.collection}` }),
      el("span", { class: "doc-chunks", text: `${doc.chunk_count} chunk${doc.chunk_count === 1 ? "" : "s"}` }),
      el("span", { class: "doc-indexed", text: `indexed ${ago(doc.indexed_at)}`, title: fullDate(doc.indexed_at) }),
      doc.bytes !== null ? el("span", { text: bytes(doc.bytes) }) : null,
      el("span", { text: doc.source === "upload" ? "uploaded" : "watched folder" }),
    ];
    const busy = BUSY.has(doc.status);
    const actions = el(
      "div",
      { class: "doc-actions" },
      el("a", {
        class: "button",
        href: `/v1/files/${doc.file_id}/content`,
        target: "_blank",
        rel: "noopener noreferrer",
        text: "Open",
        "data-action": "open",
      }),
      el("button", {
        type: "button",
        text: "Re-index",
        "data-action": "reindex",
        disabled: busy,
        "aria-label": `Re-index ${doc.filename}`,
        onclick: () => reindex(doc),
      }),
      el("button", {
        type: "button",
        text: "Delete",
        "data-action": "delete",
        "aria-label": `Delete ${doc.filename}`,
        onclick: (ev) => deleteDocument(doc, ev.currentTarget),
      }),
    );
    return el(
      "li",
      { class: "doc", "data-id": doc.id, "data-status": doc.status },
      el("span", { class: "doc-name", text: name }),
      el("span", { class: `status ${doc.status}`, text: STATUS_TEXT[doc.status] || doc.status }),
      el("span", { class: "doc-path", text: doc.path }),
      el("div", { class: "doc-facts" }, ...facts.filter(Boolean)),
      doc.error ? el("p", { class: "doc-error", text: doc.error }) : null,
      actions,
    );
  }

  async function reindex(doc) {
    try {
      await api(`/ui/documents/${doc.id}/reindex`, { method: "POST" });
      toast(`${doc.filename} is queued for re-indexing.`);
    } catch (err) {
      toast(`Could not re-index: ${err.message}`);
    }
    await loadDocuments();
  }

  async function deleteDocument(doc, button) {
    if (button.dataset.confirm !== "1") {
      button.dataset.confirm = "1";
      button.textContent = "Really delete?";
      button.classList.add("danger");
      setTimeout(() => {
        if (button.isConnected) renderDocuments();
      }, 4000);
      return;
    }
    try {
      await api(`/v1/files/${doc.file_id}`, { method: "DELETE" });
      toast(`${doc.filename} was removed from the index.`);
    } catch (err) {
      toast(err.message);
    }
    await loadDocuments();
    await loadModels();
  }

  function upload(file) {
    const collection = $("upload-collection").value.trim(); // empty: the server picks the user's own
    const bar = el("progress", { max: 100, value: 0, "aria-label": `Uploading ${file.name}` });
    const status = el("span", { class: "muted", text: "0%" });
    const row = el("li", { class: "upload-item" }, el("span", { class: "name", text: file.name, title: file.name }), status, bar);
    $("uploads").prepend(row);
    const form = new FormData();
    if (collection) form.append("collection", collection);
    form.append("file", file, file.name);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/v1/files");
    xhr.setRequestHeader("X-Hearth-UI", "1");
    xhr.responseType = "json";
    state.uploadsInFlight += 1;
    xhr.upload.addEventListener("progress", (ev) => {
      if (!ev.lengthComputable) return;
      const pct = Math.round((ev.loaded / ev.total) * 100);
      bar.value = pct;
      status.textContent = `${pct}%`;
    });
    const done = (text, ok) => {
      state.uploadsInFlight -= 1;
      bar.value = 100;
      bar.hidden = ok;
      status.textContent = text;
      status.className = ok ? "muted" : "msg-error";
      row.dataset.state = ok ? "done" : "failed";
      loadDocuments();
      loadModels();
    };
    xhr.addEventListener("load", () => {
      if (xhr.status >= 200 && xhr.status < 300) done("uploaded, queued for indexing", true);
      else {
        const err = xhr.response && xhr.response.error;
        if (xhr.status === 401) signedOut("Your session has ended. Sign in again.");
        done(`failed: ${err ? err.message : `HTTP ${xhr.status}`}`, false);
      }
    });
    xhr.addEventListener("error", () => done("failed: network error", false));
    xhr.addEventListener("abort", () => done("cancelled", false));
    xhr.send(form);
  }

  function uploadAll(files) {
    for (const file of files) upload(file);
  }

  /* ---------- views, routing, sidebar ---------- */

  function openSidebar() {
    $("sidebar").classList.add("open");
    $("scrim").hidden = false;
    $("menu-btn").setAttribute("aria-expanded", "true");
    $("new-chat").focus();
  }
  function closeSidebar() {
    if (!$("sidebar").classList.contains("open")) return;
    $("sidebar").classList.remove("open");
    $("scrim").hidden = true;
    $("menu-btn").setAttribute("aria-expanded", "false");
  }

  function setView(view) {
    state.view = view;
    $("chat-view").hidden = view !== "chat";
    $("docs-view").hidden = view !== "documents";
    $("tab-chat").toggleAttribute("aria-current", false);
    $("tab-docs").toggleAttribute("aria-current", false);
    $(view === "chat" ? "tab-chat" : "tab-docs").setAttribute("aria-current", "page");
    if (view !== "chat") closeSource();
    if (view === "documents") loadDocuments();
    else schedulePoll();
  }

  function route() {
    if (!state.user) return;
    const hash = location.hash || "#/";
    const conv = hash.match(/^#\/c\/([^/]+)$/);
    if (hash === "#/documents") {
      setView("documents");
    } else if (conv) {
      setView("chat");
      const id = decodeURIComponent(conv[1]);
      if (id !== state.currentId || !messagesBox().children.length) openConversation(id);
    } else {
      setView("chat");
      newChat();
    }
  }

  /* ---------- signing in and out ---------- */

  const signin = window.HearthSignIn.mount("app", startApp);
  const showSignIn = signin.show;

  function signedOut(message) {
    stop();
    state.user = null;
    state.currentId = null;
    state.conversations = [];
    state.documents = [];
    clearTimeout(state.pollTimer);
    messagesBox().replaceChildren();
    $("conv-list").replaceChildren();
    $("docs-list").replaceChildren();
    closeSource();
    showSignIn(message);
  }

  async function startApp(user) {
    state.user = user;
    signin.enter();
    $("user-name").textContent = user.name;
    await Promise.all([loadModels(), loadConversations()]);
    route();
  }

  async function signOut() {
    try {
      await fetch("/ui/session", { method: "DELETE", headers: UI_HEADER, credentials: "same-origin" });
    } catch (_) {
      /* signed out locally either way */
    }
    history.replaceState(null, "", "#/");
    signedOut("You are signed out.");
  }

  /* ---------- wiring ---------- */

  function wire() {
    $("signout-btn").addEventListener("click", signOut);
    $("menu-btn").addEventListener("click", () =>
      $("sidebar").classList.contains("open") ? closeSidebar() : openSidebar(),
    );
    $("scrim").addEventListener("click", closeSidebar);
    $("new-chat").addEventListener("click", () => {
      closeSidebar();
      if (location.hash === "#/" || location.hash === "") newChat();
      else location.hash = "#/";
    });
    $("conv-search").addEventListener("input", renderConversations);
    $("source-close").addEventListener("click", closeSource);

    const prompt = $("prompt");
    const grow = () => {
      prompt.style.height = "auto";
      prompt.style.height = `${Math.min(prompt.scrollHeight + 2, 192)}px`;
    };
    prompt.addEventListener("input", grow);
    prompt.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
        ev.preventDefault();
        $("composer").requestSubmit();
      }
    });
    $("composer").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const question = prompt.value.trim();
      if (!question || state.controller) return;
      prompt.value = "";
      grow();
      ask(question);
    });
    $("stop-btn").addEventListener("click", stop);
    $("no-retrieval").addEventListener("change", (ev) => {
      $("collection").disabled = ev.target.checked;
      prompt.placeholder = ev.target.checked ? "Chat with the model (no documents)…" : "Ask about your documents…";
    });

    const zone = $("dropzone");
    $("pick-btn").addEventListener("click", () => $("file-input").click());
    $("file-input").addEventListener("change", (ev) => {
      uploadAll([...ev.target.files]);
      ev.target.value = "";
    });
    for (const type of ["dragenter", "dragover"]) {
      zone.addEventListener(type, (ev) => {
        ev.preventDefault();
        zone.classList.add("over");
      });
    }
    zone.addEventListener("dragleave", () => zone.classList.remove("over"));
    zone.addEventListener("drop", (ev) => {
      ev.preventDefault();
      zone.classList.remove("over");
      if (ev.dataTransfer && ev.dataTransfer.files.length) uploadAll([...ev.dataTransfer.files]);
    });
    // a file dropped anywhere else must not navigate away from the page
    window.addEventListener("dragover", (ev) => ev.preventDefault());
    window.addEventListener("drop", (ev) => ev.preventDefault());
    $("docs-refresh").addEventListener("click", loadDocuments);

    document.addEventListener("keydown", (ev) => {
      if (ev.key !== "Escape") return;
      if (!$("source-panel").hidden) closeSource();
      else if ($("sidebar").classList.contains("open")) {
        closeSidebar();
        $("menu-btn").focus();
      } else if (state.controller) stop();
    });
    window.addEventListener("hashchange", route);
  }

  async function main() {
    wire();
    try {
      const resp = await fetch("/ui/me", { headers: UI_HEADER, credentials: "same-origin" });
      if (resp.ok) await startApp(await resp.json());
      else showSignIn();
    } catch (_) {
      showSignIn("Hearth is not reachable.");
    }
  }

  main();
})();
