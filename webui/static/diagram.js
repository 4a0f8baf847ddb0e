// cleanaudit: an instance's diagram (bpmn-js NavigatedViewer) with the elements it went through
// marked. The data (XML and the ids per state) is a JSON block in the page: no inline script.
(function () {
  "use strict";

  var STATES = ["completed", "active", "failed", "cancelled"];

  function markPath(viewer, data) {
    var canvas = viewer.get("canvas");
    var registry = viewer.get("elementRegistry");
    var marked = 0;
    STATES.forEach(function (state) {
      (data[state] || []).forEach(function (id) {
        if (registry.get(id)) { canvas.addMarker(id, state); marked += 1; }
      });
    });
    (data.flows || []).forEach(function (id) {
      if (registry.get(id)) { canvas.addMarker(id, "taken"); marked += 1; }
    });
    return marked;
  }

  function show(holder) {
    var source = document.getElementById(holder.getAttribute("data-diagram"));
    if (!source || !window.BpmnJS) { return; }
    var data = JSON.parse(source.textContent);
    var viewer = new window.BpmnJS({ container: holder });
    holder.bpmnViewer = viewer;              // for the browser tests
    viewer.importXML(data.xml).then(function (result) {
      viewer.get("canvas").zoom("fit-viewport");
      holder.setAttribute("data-marked", String(markPath(viewer, data)));
      holder.setAttribute("data-warnings", String((result.warnings || []).length));
      holder.setAttribute("data-imported", "true");
    }).catch(function (error) {
      holder.classList.add("failed-import");
      holder.textContent = (holder.getAttribute("data-error-text") || "") + " " + error.message;
      holder.setAttribute("data-imported", "error");
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-diagram]").forEach(show);
  });
})();
