// Hookbridge console: conveniences only; every page works without this script.
(function () {
  "use strict";

  // Times in the viewer's zone; UTC stays in the title.
  document.querySelectorAll("time[datetime]").forEach(function (t) {
    var d = new Date(t.getAttribute("datetime"));
    if (!isNaN(d)) { t.textContent = d.toLocaleString(); }
  });

  // The replay window in the viewer's zone, as the times on the page are shown: without
  // this script the form asks for UTC. Each time is sent as the UTC instant it names (a
  // hidden copy; the typed box is left out of the post), so a time copied from a row
  // above means what it says.
  document.querySelectorAll("form.replay").forEach(function (f) {
    // A browser without the date-and-time box shows a text box, whose text is sent as it
    // is: UTC, as the form says without this script.
    var since = f.querySelector("input[name=since]");
    if (!since || since.type !== "datetime-local") { return; }
    f.querySelectorAll("label").forEach(function (l) {
      l.childNodes.forEach(function (n) {
        if (n.nodeType === 3) { n.textContent = n.textContent.replace("(UTC", "(your time"); }
      });
    });
    // A refused form shown again: the instants it sent, in the viewer's zone again.
    f.querySelectorAll("input[data-instant]").forEach(function (i) {
      var d = new Date(i.dataset.instant);
      if (isNaN(d)) { return; }
      var two = function (n) { return String(n).padStart(2, "0"); };
      i.value = d.getFullYear() + "-" + two(d.getMonth() + 1) + "-" + two(d.getDate()) +
        "T" + two(d.getHours()) + ":" + two(d.getMinutes());
    });
    f.addEventListener("submit", function () {
      f.querySelectorAll("input[type=datetime-local]").forEach(function (i) {
        var d = new Date(i.value);
        if (!i.value || isNaN(d)) { return; }
        var utc = document.createElement("input");
        utc.type = "hidden";
        utc.name = i.name;
        utc.value = d.toISOString();
        utc.dataset.utc = "1";
        f.appendChild(utc);
        i.disabled = true;
      });
    });
  });

  // A form posts once: a second click while the first post is on its way would create,
  // rotate or send again, and the page shown would be the second's (a new hook's secret
  // lost behind "name taken"). A page brought back from the history may post again.
  document.querySelectorAll("form[method=post]").forEach(function (f) {
    f.addEventListener("submit", function (e) {
      if (f.dataset.posted) { e.preventDefault(); } else { f.dataset.posted = "1"; }
    });
  });
  window.addEventListener("pageshow", function (e) {
    if (e.persisted) {
      document.querySelectorAll("form[data-posted]").forEach(function (f) { delete f.dataset.posted; });
      document.querySelectorAll("input[data-utc]").forEach(function (i) { i.remove(); });
      document.querySelectorAll("form.replay input[type=datetime-local]").forEach(function (i) { i.disabled = false; });
    }
  });

  // Only the chosen auth type's fields (the others are disabled, so they are not sent).
  var authSelect = document.querySelector("[data-auth-select]");
  function showAuth() {
    document.querySelectorAll("[data-auth]").forEach(function (box) {
      var on = box.getAttribute("data-auth") === authSelect.value;
      box.hidden = !on;
      box.querySelectorAll("input, select, button").forEach(function (i) { i.disabled = !on; });
    });
  }
  if (authSelect) { authSelect.addEventListener("change", showAuth); showAuth(); }

  // Sites only when the hook applies to specific sites.
  var sites = document.getElementById("sites");
  function showSites() {
    var chosen = document.querySelector("input[name=scope]:checked");
    if (sites && chosen) {
      var box = sites.closest(".field");
      // A field the API refused stays in sight, so its reason can be read.
      box.hidden = chosen.value !== "sites" && !box.classList.contains("invalid");
    }
  }
  document.querySelectorAll("input[name=scope]").forEach(function (r) { r.addEventListener("change", showSites); });
  showSites();

  // Another row of headers or parameters: a copy of the last one, renumbered and empty.
  document.querySelectorAll("[data-add-row]").forEach(function (button) {
    button.addEventListener("click", function () {
      var box = button.closest("[data-rows]");
      var rows = box.querySelectorAll(".row");
      var last = rows[rows.length - 1];
      var copy = last.cloneNode(true);
      var n = rows.length;
      copy.querySelectorAll("[name], [for], [id]").forEach(function (el) {
        ["name", "for", "id"].forEach(function (a) {
          var v = el.getAttribute(a);
          if (v) { el.setAttribute(a, v.replace(/\[\d+\]/, "[" + n + "]")); }
        });
        if (el.type === "checkbox") { el.checked = false; } else if ("value" in el && el.tagName !== "BUTTON") { el.value = ""; }
      });
      copy.querySelectorAll(".error").forEach(function (e) { e.remove(); });
      last.after(copy);
      var first = copy.querySelector("input");
      if (first) { first.focus(); }
    });
  });

  // Live preview: which known event types the patterns match.
  var patterns = document.querySelector("[data-preview]");
  var preview = document.getElementById("preview");
  var timer = null;
  function refresh() {
    var lines = patterns.value.split("\n").map(function (l) { return l.trim(); }).filter(Boolean);
    if (lines.length === 0) { lines = ["*"]; }
    var q = lines.map(function (p) { return "pattern=" + encodeURIComponent(p); }).join("&");
    fetch("/console/preview?" + q, { credentials: "same-origin" })
      .then(function (r) { return r.json(); })
      .then(function (data) {
        preview.textContent = "";
        var head = document.createElement("span");
        head.className = "muted";
        head.textContent = data.matches.length === 0
          ? "Matches no known event type yet. "
          : "Matches " + data.matches.length + " known event type" + (data.matches.length === 1 ? "" : "s") + ": ";
        preview.appendChild(head);
        data.matches.forEach(function (m) {
          var c = document.createElement("code");
          c.textContent = m;
          preview.appendChild(c);
        });
        (data.errors || []).forEach(function (e) {
          var p = document.createElement("p");
          p.className = "error";
          p.textContent = e.pattern + ": " + e.message;
          preview.appendChild(p);
        });
      })
      .catch(function () { /* The preview is a convenience; the form works without it. */ });
  }
  if (patterns && preview) {
    patterns.addEventListener("input", function () { clearTimeout(timer); timer = setTimeout(refresh, 250); });
    refresh();
  }
})();
