// cleanaudit: repeating rows (add/remove) in task forms. Everything works without this file too:
// "add a row" then submits the form and the server draws it one row longer.
(function () {
  "use strict";
  document.documentElement.classList.add("js");

  function nextIndex(tbody) {
    var max = -1;
    tbody.querySelectorAll(":scope > tr[data-index]").forEach(function (tr) {
      var n = parseInt(tr.getAttribute("data-index"), 10);
      if (!isNaN(n) && n > max) { max = n; }
    });
    return max + 1;
  }

  function renumber(tbody) {
    var n = 1;
    tbody.querySelectorAll(":scope > tr[data-index] > td.rownum").forEach(function (td) { td.textContent = String(n++); });
  }

  function addRow(name) {
    var tbody = document.querySelector('tbody[data-rows="' + name + '"]');
    var template = document.getElementById("tpl-" + name);
    if (!tbody || !template) { return; }
    var max = parseInt(tbody.getAttribute("data-max") || "0", 10);
    if (max && tbody.querySelectorAll(":scope > tr[data-index]").length >= max) { return; }
    var index = String(nextIndex(tbody));
    // rows inside a row have their own placeholder (__index1__, ...), left for their own template
    var placeholder = template.getAttribute("data-placeholder") || "__index__";
    var html = template.innerHTML.split(placeholder).join(index);
    var holder = document.createElement("tbody");
    holder.innerHTML = html;
    var row = holder.firstElementChild;
    while (holder.firstElementChild) { tbody.appendChild(holder.firstElementChild); }   // the row and its nested rows
    renumber(tbody);
    var first = row.querySelector("input, select, textarea");
    if (first) { first.focus(); }
  }

  function removeRow(button) {
    var row = button.closest("tr");
    var tbody = row && row.parentElement;
    if (!tbody) { return; }
    var sub = row.nextElementSibling;                   // the rows inside this row, drawn under it
    if (!sub || !sub.classList.contains("subrows")) { sub = null; }
    if (tbody.querySelectorAll(":scope > tr[data-index]").length <= 1) {
      // keep one row to type into; clearing it removes it from the submission
      [row, sub].forEach(function (part) {
        if (!part) { return; }
        part.querySelectorAll("input, select, textarea").forEach(function (el) {
          if (el.type === "checkbox" || el.type === "radio") { el.checked = false; } else { el.value = ""; }
        });
      });
      return;
    }
    if (sub) { tbody.removeChild(sub); }
    tbody.removeChild(row);
    renumber(tbody);
  }

  document.addEventListener("click", function (event) {
    var add = event.target.closest("[data-add-row]");
    if (add) {
      event.preventDefault();
      addRow(add.getAttribute("data-add-row"));
      return;
    }
    var remove = event.target.closest("[data-remove-row]");
    if (remove) {
      event.preventDefault();
      removeRow(remove);
    }
  });

  document.addEventListener("DOMContentLoaded", function () {
    var summary = document.getElementById("error-summary");
    if (summary) { summary.focus(); }
  });
})();
