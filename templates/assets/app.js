// Progressive enhancement only: live countdowns. Everything works without it.
(function () {
  function fmt(s) {
    if (s <= 0) return "0s";
    var h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    return (h ? h + "h" : "") + (m ? m + "m" : "") + (!h && r ? r + "s" : "") || "0s";
  }
  function tick() {
    document.querySelectorAll(".countdown").forEach(function (el) {
      var left = parseInt(el.getAttribute("data-seconds"), 10) - 1;
      if (isNaN(left)) return;
      el.setAttribute("data-seconds", String(Math.max(left, 0)));
      el.textContent = fmt(left);
    });
  }
  setInterval(tick, 1000);
})();
