// airlock review UI: expiry countdowns and the live inbox. The pages work without this script;
// it only keeps them current. Served from /ui/static so the pages can forbid inline scripts.
(function () {
  "use strict";

  function human(seconds) {
    var s = Math.max(0, Math.floor(seconds));
    if (s < 60) return s + "s";
    var m = Math.floor(s / 60);
    if (m < 60) return m + "m " + String(s % 60).padStart(2, "0") + "s";
    var h = Math.floor(m / 60);
    if (h < 48) return h + "h " + String(m % 60).padStart(2, "0") + "m";
    return Math.floor(h / 24) + "d";
  }

  // Every element with data-expires="<RFC 3339>" shows a live countdown.
  function tick() {
    var now = Date.now();
    document.querySelectorAll("[data-expires]").forEach(function (el) {
      var at = Date.parse(el.getAttribute("data-expires"));
      if (isNaN(at)) return;
      var left = (at - now) / 1000;
      el.textContent = left > 0 ? "in " + human(left) : "expired";
      el.classList.toggle("soon", left > 0 && left < 300);
    });
  }
  tick();
  setInterval(tick, 1000);

  var list = document.getElementById("inbox-list");
  if (!list) return;
  var src = list.getAttribute("data-src");
  var live = document.getElementById("live");
  var badge = document.getElementById("inbox-count");
  var pollTimer = null;
  var busy = false;
  var again = false;
  var closing = false;

  function setState(state, text) {
    if (!live) return;
    live.setAttribute("data-state", state);
    live.textContent = text;
  }

  function refresh() {
    if (busy) {
      // A change arrived while a refresh was in flight: fetch once more after it.
      again = true;
      return;
    }
    busy = true;
    again = false;
    fetch(src, { credentials: "same-origin", headers: { Accept: "text/html" }, cache: "no-store" })
      .then(function (r) {
        if (r.status === 401) {
          window.location.href = "/ui/login";
          return null;
        }
        return r.ok ? r.text() : null;
      })
      .then(function (html) {
        if (html === null) return;
        list.innerHTML = html;
        var n = list.querySelector("[data-count]");
        var count = n ? n.getAttribute("data-count") : "0";
        if (badge) {
          badge.textContent = count;
          badge.setAttribute("data-n", count);
        }
        document.title = (count !== "0" ? "(" + count + ") " : "") + "Inbox · airlock";
        tick();
      })
      .catch(function () {})
      .then(function () {
        busy = false;
        if (again) refresh();
      });
  }

  function startPolling() {
    if (pollTimer) return;
    pollTimer = setInterval(refresh, 5000);
  }

  function stopPolling() {
    if (pollTimer) clearInterval(pollTimer);
    pollTimer = null;
  }

  if ("EventSource" in window) {
    var events = new EventSource("/ui/events");
    events.addEventListener("open", function () {
      stopPolling();
      setState("live", "live");
      // Anything that changed while the stream was being (re)connected.
      refresh();
    });
    events.addEventListener("approvals", refresh);
    // The server ends each stream after a while; the browser reconnects by itself.
    events.addEventListener("bye", function () {
      closing = true;
    });
    events.addEventListener("error", function () {
      if (closing && events.readyState !== EventSource.CLOSED) {
        closing = false;
        return;
      }
      setState("polling", events.readyState === EventSource.CLOSED ? "polling every 5 s" : "reconnecting…");
      startPolling();
    });
  } else {
    setState("polling", "polling every 5 s");
    startPolling();
  }
  // Relative ages ("3m ago") are rendered by the server: refresh them now and then.
  setInterval(refresh, 60000);
})();
