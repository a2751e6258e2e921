// Progressive enhancement only: everything works without it (the pages then offer a refresh link).
// - countdowns of time left, in minutes;
// - the reader's local time beside each UTC time;
// - copy buttons;
// - live state: a request's page follows the request through the API's long poll
//   (GET /api/v1/requests/{id}?wait=…, which accepts this page's session cookie for a
//   same-origin read) and swaps in the new page when the request changes state.
(function () {
  "use strict";

  function minutes(s) {
    if (s < 60) return "less than a minute";
    var h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
    if (!h) return m + " min";
    return m ? h + " h " + m + " min" : h + " h";
  }

  function tick() {
    document.querySelectorAll(".countdown").forEach(function (el) {
      var left = parseInt(el.getAttribute("data-seconds"), 10) - 1;
      if (isNaN(left)) return;
      left = Math.max(left, 0);
      el.setAttribute("data-seconds", String(left));
      var text = minutes(left);
      if (el.textContent !== text) el.textContent = text;
    });
  }

  function localTimes(root) {
    root.querySelectorAll("time.local[datetime]").forEach(function (el) {
      if (el.nextElementSibling && el.nextElementSibling.classList.contains("localtime")) return;
      var d = new Date(el.getAttribute("datetime"));
      if (isNaN(d.getTime())) return;
      var span = document.createElement("span");
      span.className = "localtime";
      span.textContent = " (" + d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" }) + " your time)";
      el.insertAdjacentElement("afterend", span);
    });
  }

  function copyButtons(root) {
    root.querySelectorAll("button.copy[data-copy]").forEach(function (button) {
      var source = document.getElementById(button.getAttribute("data-copy"));
      if (!source || !navigator.clipboard) return;
      var label = button.innerHTML;
      button.hidden = false;
      button.addEventListener("click", function () {
        navigator.clipboard.writeText(source.textContent.trim()).then(function () {
          button.textContent = "Copied";
          setTimeout(function () { button.innerHTML = label; }, 2000);
        }, function () {
          button.textContent = "Copy failed: select the text";
        });
      });
    });
  }

  var following = null;

  function follow() {
    var live = document.getElementById("live");
    if (!live) return;
    var id = live.getAttribute("data-request");
    var state = live.getAttribute("data-state");
    var wait = live.getAttribute("data-wait");
    if (!id || !wait || following === id + state) return;
    following = id + state;
    var text = live.querySelector(".live-text");
    if (text) text.textContent = "This page updates by itself when the request changes.";
    var failures = 0;
    function poll() {
      fetch("/api/v1/requests/" + encodeURIComponent(id) + "?wait=" + encodeURIComponent(wait) + "&timeout=50s", {
        credentials: "same-origin",
        headers: { Accept: "application/json" },
        cache: "no-store",
      }).then(function (res) {
        if (!res.ok) throw new Error("status " + res.status);
        return res.json();
      }).then(function (request) {
        failures = 0;
        if (request.state === state) return poll();
        return swap(request.state);
      }).catch(function () {
        failures += 1;
        if (failures >= 5) {
          following = null;
          if (text) text.textContent = "Live updates stopped: refresh to see changes.";
          return;
        }
        setTimeout(poll, 2000 * failures);
      });
    }
    poll();
  }

  // The page as the server renders it now, swapped in without a reload.
  function swap(state) {
    return fetch(location.pathname, { credentials: "same-origin", cache: "no-store" })
      .then(function (res) { return res.text(); })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html").querySelector("main");
        var main = document.querySelector("main");
        if (!fresh || !main) { location.reload(); return; }
        // The confirmation of the reader's own last action stays.
        var done = document.getElementById("done");
        main.innerHTML = fresh.innerHTML;
        if (done) main.insertBefore(done, main.querySelector("h1").nextSibling);
        enhance(main);
        var live = document.getElementById("live");
        var note = live ? live.querySelector(".live-text") : null;
        var shown = document.getElementById("state");
        var now = shown ? shown.textContent.trim() : state;
        var message = "The request is now " + now.replace("_", " ") + ".";
        if (note) {
          note.textContent = message + " This page updates by itself when it changes again.";
        } else {
          var p = document.createElement("p");
          p.className = "live";
          p.id = "live-done";
          p.setAttribute("role", "status");
          p.textContent = message;
          main.insertBefore(p, main.querySelector("h1").nextSibling);
        }
        follow();
      });
  }

  function enhance(root) {
    localTimes(root);
    copyButtons(root);
    follow();
  }

  enhance(document);
  setInterval(tick, 1000);
})();
