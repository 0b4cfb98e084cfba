(function () {
  "use strict";
  var detail = function () { return document.getElementById("mark-detail"); };
  function show(mark) {
    var d = detail();
    if (d && mark) { d.textContent = mark.getAttribute("aria-label"); }
  }
  document.addEventListener("focusin", function (e) {
    var m = e.target.closest && e.target.closest(".mark"); if (m) { show(m); }
  });
  document.addEventListener("mouseover", function (e) {
    var m = e.target.closest && e.target.closest(".mark"); if (m) { show(m); }
  });
  if (document.body.dataset.live !== "1") { return; }
  var interval = parseInt(document.body.dataset.interval, 10) || 5000;
  var last = null;
  function refresh() {
    var opened = Array.prototype.map.call(document.querySelectorAll("details[open]"), function (d) { return d.id; });
    var focused = document.activeElement && document.activeElement.id;
    fetch(window.location.pathname + "?part=main", { headers: { "Accept": "text/html" }, credentials: "same-origin" })
      .then(function (r) { if (!r.ok) { throw new Error("HTTP " + r.status); } return r.text(); })
      .then(function (html) {
        var main = document.getElementById("main");
        if (html === last) { return; }
        last = html;
        var shown = detail() && detail().textContent;
        main.innerHTML = html;
        if (shown && detail()) { detail().textContent = shown; }
        opened.forEach(function (id) { var d = id && document.getElementById(id); if (d) { d.open = true; } });
        if (focused) { var f = document.getElementById(focused); if (f) { f.focus(); } }
      })
      .catch(function () { /* the next poll tries again */ })
      .then(function () { window.setTimeout(refresh, interval); });
  }
  window.setTimeout(refresh, interval);
})();
