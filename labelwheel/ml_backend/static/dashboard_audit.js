// The dashboard's audit panel: on request, GET /dashboard/api/audit and show the suspects.
// Text only (textContent), never markup from the data: labels and reasons come from users.
(function () {
  "use strict";
  var button = document.getElementById("audit-run");
  var status = document.getElementById("audit-status");
  var result = document.getElementById("audit-result");
  if (!button || !status || !result) {
    return;
  }

  function el(tag, text, cls) {
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) {
      node.textContent = String(text);
    }
    if (cls) {
      node.className = cls;
    }
    return node;
  }

  function percent(x) {
    return x === null || x === undefined ? "–" : Math.round(x * 100) + "%";
  }

  function render(data) {
    result.textContent = "";
    var head = el(
      "p",
      data.labeled + " labels audited (" + data.folds + "-fold out-of-fold accuracy " +
        percent(data.oof_accuracy) + "); " + data.suspects_total + " suspect(s)" +
        (data.holdout ? "; " + data.holdout + " held-out task(s), " +
          data.holdout_leaks.length + " labelled near-duplicate(s) of them" : "") + "."
    );
    head.id = "audit-summary";
    result.appendChild(head);
    (data.notes || []).forEach(function (note) {
      result.appendChild(el("p", note, "note"));
    });
    if (!data.suspects.length) {
      result.appendChild(el("p", "No suspects: every label agrees with the model and its context.", "ok"));
      return;
    }
    var table = el("table", null, "data");
    table.id = "suspects";
    var thead = el("thead");
    var row = el("tr");
    ["#", "task", "given", "suggested", "suspicion", "why"].forEach(function (h) {
      row.appendChild(el("th", h));
    });
    thead.appendChild(row);
    table.appendChild(thead);
    var body = el("tbody");
    data.suspects.forEach(function (s) {
      var tr = el("tr");
      tr.appendChild(el("td", s.rank));
      tr.appendChild(el("td", s.task_id));
      tr.appendChild(el("td", s.given));
      tr.appendChild(el("td", s.suggested === null ? "–" : s.suggested));
      tr.appendChild(el("td", s.suspicion.toFixed(3)));
      tr.appendChild(el("td", s.reasons.join("; ")));
      body.appendChild(tr);
    });
    table.appendChild(body);
    result.appendChild(table);
    if (data.suspects_total > data.suspects.length) {
      result.appendChild(
        el("p", "Showing the " + data.suspects.length + " most suspicious of " + data.suspects_total + ".", "muted")
      );
    }
  }

  button.addEventListener("click", function () {
    button.disabled = true;
    status.textContent = "auditing the labels (cross-validated model, a few seconds to minutes)…";
    fetch(button.getAttribute("data-url"), {
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    })
      .then(function (response) {
        return response.json().then(function (data) {
          if (!response.ok) {
            throw new Error(data && data.message ? data.message : "HTTP " + response.status);
          }
          return data;
        });
      })
      .then(function (data) {
        render(data);
        status.textContent = "";
      })
      .catch(function (err) {
        result.textContent = "";
        var p = el("p", "Audit failed: " + err.message, "error");
        p.id = "audit-error";
        result.appendChild(p);
        status.textContent = "";
      })
      .finally(function () {
        button.disabled = false;
      });
  });
})();
