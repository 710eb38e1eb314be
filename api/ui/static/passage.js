/* The passage page: a cited passage marked within its neighbouring text, for a link a chat
 * client shows as a citation. The page is the same for every passage; the data comes from
 * /ui/passages/{id}/context with the session cookie, after signing in here when needed.
 * Every piece of document text is put into the page as text (textContent), never as markup. */
(() => {
  "use strict";

  const { UI_HEADER, errorFrom } = window.HearthSignIn; // signin.js
  const $ = (id) => document.getElementById(id);
  const chunkId = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop() || "");

  async function getJSON(path) {
    const resp = await fetch(path, { headers: UI_HEADER, credentials: "same-origin" });
    if (!resp.ok) throw await errorFrom(resp);
    return resp.json();
  }

  function showMissing(message) {
    $("passage").hidden = true;
    $("missing").textContent = message;
    $("missing").hidden = false;
  }

  function render(data) {
    const doc = data.document;
    document.title = `${doc.title || doc.path} · Hearth`;
    $("doc-title").textContent = doc.title || doc.path;
    $("doc-path").textContent = doc.path;
    $("doc-collection").textContent = doc.collection;
    const where = [];
    if (data.page) where.push(`page ${data.page}`);
    if (data.heading_path.length) where.push("§ " + data.heading_path.join(" › "));
    $("where").textContent = where.join(" · ");
    $("where").hidden = $("where-dt").hidden = !where.length;
    const download = $("download");
    const isPdf = (doc.mime || "").toLowerCase() === "application/pdf";
    download.href = doc.download_url + (isPdf && data.page ? `#page=${data.page}` : "");
    const box = $("context");
    box.replaceChildren();
    let heading = "";
    let first = null;
    for (const piece of data.context) {
      const path = piece.heading_path.join(" › ");
      if (path && path !== heading) box.append(Object.assign(document.createElement("span"), { className: "heading", textContent: path }));
      else if (box.childNodes.length && !piece.continues) box.append("\n\n");
      heading = path || heading;
      const node = document.createElement(piece.highlight ? "mark" : "span");
      node.className = "piece";
      node.dataset.chunk = String(piece.chunk_id);
      node.textContent = piece.text;
      box.append(node);
      if (piece.highlight && !first) first = node;
    }
    $("more-before").hidden = !data.more_before;
    $("more-after").hidden = !data.more_after;
    $("missing").hidden = true;
    $("passage").hidden = false;
    if (first) first.scrollIntoView({ block: "center" });
  }

  async function load() {
    try {
      const me = await getJSON("/ui/me");
      $("user-name").textContent = me.name;
    } catch (err) {
      if (err.status === 401) return signin.show("");
      throw err;
    }
    signin.enter();
    const span = new URLSearchParams(location.search).get("span");
    const query = span ? `?span=${encodeURIComponent(span)}` : "";
    try {
      render(await getJSON(`/ui/passages/${encodeURIComponent(chunkId)}/context${query}`));
    } catch (err) {
      if (err.status === 401) return signin.show("Your session has ended. Sign in again.");
      showMissing(
        err.status === 404
          ? "This passage is not in the documents you can read (it may have been re-indexed or removed)."
          : err.message,
      );
    }
  }

  let signin;

  document.addEventListener("DOMContentLoaded", () => {
    signin = window.HearthSignIn.mount("page", load);
    load().catch((err) => {
      $("loading").textContent = `Could not load the passage: ${err.message}`;
    });
  });
})();
