/* payrelay ops: the dashboard's live refresh and confirmation prompts. Plain JS, no dependencies.
 * The refresh fetches /fragments/dashboard, the server's rendering of the same template partial
 * the page includes, and swaps it in: every figure is formatted on the server, none here. */
(function () {
  "use strict";

  // A submit button (or form) with data-confirm asks first; without JS the action just runs.
  document.addEventListener("submit", function (event) {
    var button = event.submitter;
    var message = (button && button.getAttribute("data-confirm")) || event.target.getAttribute("data-confirm");
    if (message && !window.confirm(message)) {
      event.preventDefault();
    }
  });

  var root = document.querySelector("[data-live-overview]");
  if (!root) {
    return;
  }
  var FRAGMENT = "/fragments/dashboard";
  var FLASHING = "[data-summary], [data-field], [data-count]";
  var interval = Number(root.getAttribute("data-interval")) || 2000;
  var toggle = document.getElementById("live-toggle");
  var updated = document.getElementById("updated-at");
  var brokerAlert = document.getElementById("broker-alert");
  var paused = false;
  var timer = null;
  var busy = false;

  function flash(el) {
    el.removeAttribute("data-changed");
    void el.offsetWidth; // restart the animation
    el.setAttribute("data-changed", "");
  }

  function syncAttributes(old, fresh) {
    Array.prototype.slice.call(old.attributes).forEach(function (a) {
      if (a.name !== "data-changed" && !fresh.hasAttribute(a.name)) { old.removeAttribute(a.name); }
    });
    Array.prototype.slice.call(fresh.attributes).forEach(function (a) {
      if (old.getAttribute(a.name) !== a.value) { old.setAttribute(a.name, a.value); }
    });
  }

  // Make `old` match `fresh`, touching only what differs: the aria-live summary then announces
  // real changes rather than every tick, and a changed figure flashes.
  function morph(old, fresh) {
    if (old.nodeName !== fresh.nodeName || old.childNodes.length !== fresh.childNodes.length) {
      old.replaceWith(fresh); // say the recent outcomes gained a row
      if (old === root) { root = fresh; }
      return;
    }
    if (old.nodeType === Node.TEXT_NODE) {
      if (old.nodeValue !== fresh.nodeValue) {
        old.nodeValue = fresh.nodeValue;
        var cell = old.parentElement;
        if (cell && cell.matches(FLASHING)) { flash(cell); }
      }
      return;
    }
    if (old.nodeType !== Node.ELEMENT_NODE) { return; }
    syncAttributes(old, fresh);
    var olds = Array.prototype.slice.call(old.childNodes);
    var freshes = Array.prototype.slice.call(fresh.childNodes);
    olds.forEach(function (child, i) { morph(child, freshes[i]); });
  }

  function showState() {
    updated.setAttribute("datetime", root.getAttribute("data-generated-at"));
    updated.textContent = root.getAttribute("data-generated-label");
    brokerAlert.hidden = root.getAttribute("data-broker") === "open";
  }

  function refresh() {
    timer = null;
    busy = true;
    fetch(FRAGMENT, { credentials: "same-origin", redirect: "manual", headers: { Accept: "text/html" } })
      .then(function (response) {
        // Signed out (or the session expired): the server redirects a page to the sign-in form.
        if (response.type === "opaqueredirect" || response.status === 401) {
          window.location.assign("/login");
          throw new Error("signed out");
        }
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.text();
      })
      .then(function (html) {
        if (paused) { return; } // paused while this was on its way: the page stays as it was
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("overview");
        if (!fresh) { throw new Error("no dashboard in the fragment"); }
        morph(root, fresh);
        showState();
      })
      .catch(function () {
        if (!paused) { updated.textContent = "failed; retrying"; }
      })
      .finally(function () {
        busy = false;
        schedule();
      });
  }

  function schedule() {
    if (!paused && !busy && !document.hidden && timer === null) {
      timer = window.setTimeout(refresh, interval);
    }
  }

  toggle.addEventListener("click", function () {
    paused = !paused;
    // The label stays; aria-pressed says whether updates are paused.
    toggle.setAttribute("aria-pressed", String(paused));
    if (paused && timer !== null) {
      window.clearTimeout(timer);
      timer = null;
    }
    if (paused) {
      updated.textContent = "paused";
    }
    schedule();
  });

  document.addEventListener("visibilitychange", schedule);
  schedule();
})();
