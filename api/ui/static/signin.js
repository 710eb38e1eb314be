/* Signing in, the same on every Hearth page (the chat UI, app.js; a cited passage, passage.js).
 * The token form is built here, once, into the page's #signin box, under the page's own lead line
 * (its data-lead); the token is traded for an httpOnly session cookie (POST /ui/session) and kept
 * nowhere in the browser. Also the UI's request header and its error type, which both pages use.
 * Loaded (deferred) before the page's own script, which calls HearthSignIn.mount. */
(() => {
  "use strict";

  const UI_HEADER = { "X-Hearth-UI": "1" };
  const $ = (id) => document.getElementById(id);

  class HttpError extends Error {
    constructor(status, message, code) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  /** The OpenAI-shaped error of a failed response (its message and code), as an HttpError. */
  async function errorFrom(resp) {
    let message = `${resp.status} ${resp.statusText}`;
    let code = null;
    try {
      const body = await resp.json();
      if (body && body.error) {
        message = body.error.message || message;
        code = body.error.code || null;
      }
    } catch (_) {
      /* not JSON */
    }
    return new HttpError(resp.status, message, code);
  }

  // fixed markup, no data in it: the page's lead line is set as text
  const CARD = `
    <h1 class="brand-title"><img src="/ui/static/icon.svg" alt="" width="32" height="32"> Hearth</h1>
    <p class="muted"><span class="signin-lead"></span> Use a Hearth token: the admin token
      <code>hearth up</code> printed, or one from <code>hearth token create</code>.</p>
    <label for="token">Token</label>
    <input id="token" name="token" type="password" autocomplete="off" spellcheck="false"
           autocapitalize="off" required placeholder="hearth_…">
    <p id="signin-error" class="error" role="alert"></p>
    <button id="signin-btn" type="submit" class="primary">Sign in</button>
    <p class="muted small">The token is exchanged for a session cookie; it is not stored in the browser.</p>`;

  /**
   * Build the sign-in form into #signin for the page whose signed-in view is #`pageId`.
   * `signedIn(user)` runs once a token was accepted (what it throws is shown on the form).
   * Returns show(message): the form, with `message`, instead of the page; and enter(): the page.
   */
  function mount(pageId, signedIn) {
    const box = $("signin");
    const form = document.createElement("form");
    form.id = "signin-form";
    form.className = "signin-card";
    form.autocomplete = "off";
    form.innerHTML = CARD;
    form.querySelector(".signin-lead").textContent = box.dataset.lead || "";
    box.replaceChildren(form);

    function show(message) {
      $("loading").hidden = true;
      $(pageId).hidden = true;
      box.hidden = false;
      $("signin-error").textContent = message || "";
      $("token").focus();
    }

    function enter() {
      $("loading").hidden = true;
      box.hidden = true;
      $(pageId).hidden = false;
    }

    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const input = $("token");
      const token = input.value.trim();
      if (!token) return;
      $("signin-btn").disabled = true;
      $("signin-error").textContent = "";
      try {
        const resp = await fetch("/ui/session", {
          method: "POST",
          headers: { ...UI_HEADER, "Content-Type": "application/json" },
          credentials: "same-origin",
          body: JSON.stringify({ token }),
        });
        if (!resp.ok) throw await errorFrom(resp);
        const body = await resp.json();
        input.value = "";
        await signedIn(body.user);
      } catch (err) {
        $("signin-error").textContent =
          err.status === 401 ? "That token is not valid (wrong, expired or revoked)." : err.message;
        input.select();
      } finally {
        $("signin-btn").disabled = false;
      }
    });

    return { show, enter };
  }

  window.HearthSignIn = Object.freeze({ UI_HEADER, HttpError, errorFrom, mount });
})();
