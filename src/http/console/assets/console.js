// The Tidings console's only script: shows times in the viewer's time zone, tells forms which zone a typed
// time is in, and asks before ending a subscription. Every page works without it (times then read as UTC).
(function () {
  "use strict";
  var format = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "short", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit",
    timeZoneName: "short"
  });
  var short = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
  function localTimes() {
    document.querySelectorAll("time[datetime]").forEach(function (el) {
      var t = new Date(el.getAttribute("datetime"));
      if (!isNaN(t)) {
        el.title = el.textContent;
        el.textContent = (el.hasAttribute("data-short") ? short : format).format(t);
      }
    });
  }
  function zones() {
    document.querySelectorAll("input[data-tz]").forEach(function (el) {
      el.value = String(-new Date().getTimezoneOffset());
    });
  }
  function confirms() {
    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (e) {
        if (!window.confirm(form.getAttribute("data-confirm"))) e.preventDefault();
      });
    });
  }
  document.addEventListener("DOMContentLoaded", function () { localTimes(); zones(); confirms(); });
})();
