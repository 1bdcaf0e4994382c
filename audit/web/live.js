// Adds records to the table as they are appended to the trail, for the
// filter the page shows, through server-sent events.
(function () {
  "use strict";
  var tbody = document.getElementById("records");
  var status = document.getElementById("live");
  if (!tbody || !window.EventSource) {
    return;
  }
  var params = new URLSearchParams(window.location.search);
  params.delete("limit");
  params.delete("msg");
  params.set("after", tbody.dataset.last || "0");
  var source = new EventSource("/live?" + params.toString());
  source.onopen = function () { status.textContent = "· live"; };
  source.onerror = function () { status.textContent = "· reconnecting…"; };

  function cell(tr, text, code) {
    var td = document.createElement("td");
    var el = td;
    if (code) {
      el = document.createElement("code");
      td.appendChild(el);
    }
    el.textContent = text;
    tr.appendChild(td);
    return td;
  }

  source.addEventListener("record", function (ev) {
    var r = JSON.parse(ev.data);
    if (document.getElementById("seq-" + r.seq)) {
      return;
    }
    var empty = tbody.querySelector("tr.empty");
    if (empty) {
      empty.remove();
    }
    var tr = document.createElement("tr");
    tr.id = "seq-" + r.seq;
    tr.className = String(r.kind).replace(/\./g, "-") + " new";
    var seq = cell(tr, "");
    var a = document.createElement("a");
    a.href = "/records/" + r.seq;
    a.textContent = r.seq;
    seq.appendChild(a);
    cell(tr, String(r.time).replace("T", " "));
    cell(tr, r.kind);
    cell(tr, r.target);
    cell(tr, r.remediator);
    cell(tr, r.actor);
    cell(tr, JSON.stringify(r.details), true);
    tbody.insertBefore(tr, tbody.firstChild);
  });
})();
