/* payrelay ops: the dashboard's live refresh and confirmation prompts. Plain JS, no dependencies.
 * Formatting mirrors service/ops/views.py, so the server's first render and the refresh agree. */
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
  var interval = Number(root.getAttribute("data-interval")) || 2000;
  var toggle = document.getElementById("live-toggle");
  var updated = document.getElementById("updated-at");
  var brokerAlert = document.getElementById("broker-alert");
  var paused = false;
  var timer = null;
  var busy = false;
  var lastRecent = null;
  var FIELDS = ["ready", "unacked", "consumers", "publish_rate", "deliver_rate"];
  var DASH = "\u2014";
  var TONE = { recorded: "good", failed: "warn", dead_lettered: "bad", in_progress: "info" };

  function count(v) { return v === null || v === undefined ? DASH : String(v); }
  function rate(v) { return v === null || v === undefined ? DASH : Number(v).toFixed(1); }
  function percent(v) { return v === null || v === undefined ? DASH : (v * 100).toFixed(1) + "%"; }

  function flash(el) {
    el.removeAttribute("data-changed");
    void el.offsetWidth; // restart the animation
    el.setAttribute("data-changed", "");
  }

  // Only real changes touch the DOM, so the aria-live summary announces changes, not ticks.
  function setText(el, text) {
    if (el && el.textContent !== text) {
      el.textContent = text;
      flash(el);
    }
  }

  function summary(name) { return root.querySelector('[data-summary="' + name + '"]'); }

  function updateQueues(queues) {
    var seen = {};
    queues.forEach(function (q) {
      seen[q.name] = q;
    });
    root.querySelectorAll("[data-queue][data-field]").forEach(function (cell) {
      var q = seen[cell.getAttribute("data-queue")];
      var field = cell.getAttribute("data-field");
      var value = q ? q[field] : null;
      setText(cell, field.slice(-5) === "_rate" ? rate(value) : count(value));
    });
  }

  function updateSummary(data) {
    var work = data.queues.filter(function (q) { return q.role === "work"; })[0] || {};
    var counts = data.ledger.counts;
    var settled = (counts.recorded || 0) + (counts.failed || 0) + (counts.dead_lettered || 0);
    setText(summary("consumers"), count(data.consumers));
    setText(summary("health"), data.consumers_healthy ? "Healthy" : "No consumer");
    setText(summary("dead_letters"), count(data.dead_letters));
    setText(summary("work_ready"), count(work.ready));
    setText(summary("work_unacked"), count(work.unacked));
    setText(summary("error_rate"), percent(data.chargebee_error_rate));
    setText(summary("settled"), String(settled));
    document.getElementById("card-health").setAttribute("data-state", data.consumers_healthy ? "good" : "bad");
    var dead = data.dead_letters === null ? "unknown" : data.dead_letters ? "bad" : "good";
    document.getElementById("card-dead-letters").setAttribute("data-state", dead);
    root.querySelectorAll("[data-count]").forEach(function (el) {
      setText(el, String(counts[el.getAttribute("data-count")] || 0));
    });
    brokerAlert.hidden = data.broker === "open";
  }

  function cell(content, className) {
    var td = document.createElement("td");
    if (className) { td.className = className; }
    if (content instanceof Node) { td.appendChild(content); } else { td.textContent = content; }
    return td;
  }

  function lookupLink(value) {
    if (!value) { return DASH; }
    var a = document.createElement("a");
    a.href = "/lookup?q=" + encodeURIComponent(value);
    a.textContent = value;
    return a;
  }

  function when(value) {
    var t = document.createElement("time");
    t.setAttribute("datetime", value);
    t.textContent = value.replace("T", " ").slice(0, 19) + " UTC";
    return t;
  }

  function recentRow(e) {
    var tr = document.createElement("tr");
    var badge = document.createElement("span");
    badge.className = "badge " + (TONE[e.state] || "info");
    badge.textContent = e.state.replace("_", " ");
    var detail = e.transaction_id || e.reason || e.last_error || "";
    var detailCell = cell(detail.length > 80 ? detail.slice(0, 79) + "\u2026" : detail, "detail");
    if (detail) { detailCell.title = detail; }
    [cell(when(e.updated_at)), cell(lookupLink(e.event_id), "mono"), cell(e.origin),
      cell(lookupLink(e.invoice_id)), cell(badge), cell(String(e.attempts), "num"), detailCell]
      .forEach(function (td) { tr.appendChild(td); });
    return tr;
  }

  function updateRecent(recent) {
    var signature = JSON.stringify(recent);
    if (signature === lastRecent) { return; }
    lastRecent = signature;
    var body = document.getElementById("recent-rows");
    var rows = recent.map(recentRow);
    if (!rows.length) {
      var tr = document.createElement("tr");
      var td = cell("No outcomes yet.", "empty");
      td.colSpan = 7;
      tr.appendChild(td);
      rows = [tr];
    }
    body.replaceChildren.apply(body, rows);
  }

  function showTime(data) {
    updated.setAttribute("datetime", data.generated_at);
    updated.textContent = data.generated_at.slice(11, 19) + " UTC";
  }

  function refresh() {
    timer = null;
    busy = true;
    fetch("/api/overview", { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (response.status === 401) {
          window.location.assign("/login");
          throw new Error("signed out");
        }
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.json();
      })
      .then(function (data) {
        updateQueues(data.queues);
        updateSummary(data);
        updateRecent(data.recent);
        showTime(data);
      })
      .catch(function () {
        updated.textContent = "failed; retrying";
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
