// cleanaudit: the web modeler (bpmn-js Modeler, UMD bundle, no bundler) with a small properties panel
// of our own for the properties this deployment uses, written as SpiffWorkflow extension elements
// through our moddle descriptor (static/spiffworkflow-moddle.json). Save = POST the XML; the server
// validates and deploys a new version and answers with the problems, which are listed and marked.
(function () {
  "use strict";

  var ID_PATTERN = /^[A-Za-z_][A-Za-z0-9_.-]*$/;
  var holder, config, modeler, current = null, labels = {}, marked = [];

  function service(name) { return modeler.get(name); }
  function is(bo, type) { return bo && typeof bo.$instanceOf === "function" && bo.$instanceOf(type); }
  function label(key) { return labels[key] || key; }

  // ------------------------------------------------------------------ reading the model
  function extensionValues(bo) { return (bo.extensionElements && bo.extensionElements.get("values")) || []; }

  function findExtension(bo, type) {
    return extensionValues(bo).filter(function (v) { return v.$type === type; })[0];
  }

  function propertyValue(bo, name) {
    var props = findExtension(bo, "spiffworkflow:Properties");
    var found = props ? props.get("properties").filter(function (p) { return p.name === name; }) : [];
    return found.length ? (found[found.length - 1].value || "") : "";
  }

  function eventDefinition(bo, type) {
    return (bo.eventDefinitions || []).filter(function (d) { return is(d, type); })[0];
  }

  function messageHolder(bo) {
    if (is(bo, "bpmn:ReceiveTask") || is(bo, "bpmn:SendTask")) { return bo; }
    return eventDefinition(bo, "bpmn:MessageEventDefinition");
  }

  function kindsOf(element) {
    var bo = element.businessObject, kinds = ["any"];
    if (is(bo, "bpmn:Lane")) {
      kinds.push("lane");
      return kinds;
    }
    if (is(bo, "bpmn:FlowElement") || is(bo, "bpmn:Participant")) { kinds.push("named"); }
    if (is(bo, "bpmn:FlowNode") || is(bo, "bpmn:SequenceFlow")) { kinds.push("documented"); }
    if (is(bo, "bpmn:UserTask") || is(bo, "bpmn:ManualTask")) { kinds.push("usertask"); }
    if (is(bo, "bpmn:SequenceFlow")) {
      var source = bo.sourceRef;
      if (bo.conditionExpression || is(source, "bpmn:ExclusiveGateway") || is(source, "bpmn:InclusiveGateway")
          || (is(source, "bpmn:Activity") && source.get("default") !== bo)) {
        kinds.push("condition");
      }
    }
    if (eventDefinition(bo, "bpmn:TimerEventDefinition")) { kinds.push("timer"); }
    if (messageHolder(bo)) { kinds.push("message"); }
    if (is(bo, "bpmn:ScriptTask")) { kinds.push("script"); }
    return kinds;
  }

  function valueOf(element, name) {
    var bo = element.businessObject, holderOf;
    switch (name) {
      case "id": return bo.id || "";
      case "name": case "laneName": return bo.name || "";
      case "documentation": return (bo.documentation && bo.documentation[0] && bo.documentation[0].text) || "";
      case "instructions":
        holderOf = findExtension(bo, "spiffworkflow:InstructionsForEndUser");
        return (holderOf && holderOf.value) || "";
      case "condition": return (bo.conditionExpression && bo.conditionExpression.body) || "";
      case "timeDate":
        holderOf = eventDefinition(bo, "bpmn:TimerEventDefinition");
        return (holderOf && holderOf.timeDate && holderOf.timeDate.body) || "";
      case "message":
        holderOf = messageHolder(bo);
        return (holderOf && holderOf.messageRef && holderOf.messageRef.name) || "";
      case "script": return bo.script || "";
      default: return propertyValue(bo, name);
    }
  }

  // ------------------------------------------------------------------ writing the model
  function ensureExtensions(element) {
    var bo = element.businessObject;
    if (!bo.extensionElements) {
      service("modeling").updateProperties(element, {
        extensionElements: service("bpmnFactory").create("bpmn:ExtensionElements", { values: [] })
      });
    }
    return bo.extensionElements;
  }

  function addExtension(element, value) {
    var extensions = ensureExtensions(element);
    service("modeling").updateModdleProperties(element, extensions, { values: extensions.get("values").concat([value]) });
  }

  function setProperty(element, name, value) {
    var modeling = service("modeling"), bo = element.businessObject;
    var props = findExtension(bo, "spiffworkflow:Properties");
    var existing = props ? props.get("properties").filter(function (p) { return p.name === name; }) : [];
    if (!value) {
      if (existing.length) {
        modeling.updateModdleProperties(element, props, {
          properties: props.get("properties").filter(function (p) { return p.name !== name; })
        });
      }
      return;
    }
    if (existing.length) {
      modeling.updateModdleProperties(element, existing[existing.length - 1], { value: value });
      return;
    }
    if (!props) {
      props = service("bpmnFactory").create("spiffworkflow:Properties", { properties: [] });
      addExtension(element, props);
    }
    var prop = service("bpmnFactory").create("spiffworkflow:Property", { name: name, value: value });
    modeling.updateModdleProperties(element, props, { properties: props.get("properties").concat([prop]) });
  }

  function setTextExtension(element, type, value) {
    var bo = element.businessObject, found = findExtension(bo, type);
    if (found && value) {
      service("modeling").updateModdleProperties(element, found, { value: value });
    } else if (found) {
      service("modeling").updateModdleProperties(element, bo.extensionElements, {
        values: bo.extensionElements.get("values").filter(function (v) { return v !== found; })
      });
    } else if (value) {
      addExtension(element, service("bpmnFactory").create(type, { value: value }));
    }
  }

  function expression(value) {
    return value ? service("bpmnFactory").create("bpmn:FormalExpression", { body: value }) : undefined;
  }

  function messageNamed(element, name) {
    var definitions = modeler.getDefinitions();
    var roots = definitions.get("rootElements");
    var found = roots.filter(function (e) { return is(e, "bpmn:Message") && e.name === name; })[0];
    if (found) { return found; }
    var attrs = { name: name };
    if (ID_PATTERN.test(name) && !service("moddle").ids.assigned(name)) { attrs.id = name; }
    var message = service("bpmnFactory").create("bpmn:Message", attrs);
    service("modeling").updateModdleProperties(element, definitions, { rootElements: roots.concat([message]) });
    return message;
  }

  function write(element, name, value) {
    var modeling = service("modeling"), bo = element.businessObject, target;
    switch (name) {
      case "id":
        if (value === bo.id) { return true; }
        if (!ID_PATTERN.test(value) || service("moddle").ids.assigned(value)) { return false; }
        modeling.updateProperties(element, { id: value });
        return true;
      case "name": case "laneName":
        modeling.updateLabel(element, value);
        return true;
      case "documentation":
        modeling.updateProperties(element, {
          documentation: value ? [service("bpmnFactory").create("bpmn:Documentation", { text: value })] : []
        });
        return true;
      case "instructions":
        setTextExtension(element, "spiffworkflow:InstructionsForEndUser", value);
        return true;
      case "condition":
        modeling.updateProperties(element, { conditionExpression: expression(value) });
        return true;
      case "timeDate":
        target = eventDefinition(bo, "bpmn:TimerEventDefinition");
        modeling.updateModdleProperties(element, target, {
          timeDate: expression(value), timeDuration: undefined, timeCycle: undefined
        });
        return true;
      case "message":
        target = messageHolder(bo);
        modeling.updateModdleProperties(element, target, { messageRef: value ? messageNamed(element, value) : undefined });
        refreshMessageNames();
        return true;
      case "script":
        modeling.updateProperties(element, { script: value, scriptFormat: bo.scriptFormat || "python" });
        return true;
      default:
        setProperty(element, name, value);
        return true;
    }
  }

  // ------------------------------------------------------------------ the panel
  function panelFields() { return document.querySelectorAll("#props-form .prop"); }

  function fill() {
    var empty = document.getElementById("props-empty");
    var type = document.getElementById("props-type");
    var error = document.getElementById("props-error");
    error.hidden = true;
    if (!current) {
      empty.hidden = false;
      type.hidden = true;
      panelFields().forEach(function (field) { field.hidden = true; });
      return;
    }
    var kinds = kindsOf(current);
    empty.hidden = true;
    type.hidden = false;
    document.getElementById("props-kind").textContent = current.businessObject.$type.replace("bpmn:", "");
    panelFields().forEach(function (field) {
      var wanted = field.getAttribute("data-for").split(" ");
      field.hidden = !wanted.some(function (k) { return kinds.indexOf(k) >= 0; });
      var input = field.querySelector("input, select, textarea");
      if (field.hidden || input === document.activeElement) { return; }
      var value = valueOf(current, input.name);
      if (input.tagName === "SELECT" && value && !input.querySelector('option[value="' + CSS.escape(value) + '"]')) {
        var option = document.createElement("option");
        option.value = value;
        option.textContent = value;
        input.appendChild(option);
      }
      input.value = value;
    });
  }

  function refreshMessageNames() {
    var list = document.getElementById("message-names");
    list.textContent = "";
    modeler.getDefinitions().get("rootElements").forEach(function (e) {
      if (is(e, "bpmn:Message") && e.name) {
        var option = document.createElement("option");
        option.value = e.name;
        list.appendChild(option);
      }
    });
  }

  function bindPanel() {
    modeler.on("selection.changed", function (event) {
      var selected = event.newSelection.length === 1 ? event.newSelection[0] : null;
      if (selected && selected.type === "label") { selected = selected.labelTarget; }
      current = selected && selected.businessObject ? selected : null;
      fill();
    });
    modeler.on("commandStack.changed", fill);
    document.getElementById("props-form").addEventListener("change", function (event) {
      var input = event.target;
      if (!current || !input.name) { return; }
      var ok = write(current, input.name, input.value.trim() === "" ? "" : input.value);
      var error = document.getElementById("props-error");
      error.hidden = ok;
      error.textContent = ok ? "" : label("badId");
      if (!ok) { input.value = valueOf(current, input.name); }
    });
    document.getElementById("props-form").addEventListener("submit", function (event) { event.preventDefault(); });
  }

  // ------------------------------------------------------------------ problems and saving
  function focusElement(id) {
    var element = service("elementRegistry").get(id);
    if (!element) { return; }
    var canvas = service("canvas");
    var root = canvas.findRoot(element);
    if (root && root !== canvas.getRootElement()) { canvas.setRootElement(root); }
    canvas.scrollToElement(element);
    service("selection").select(element);
  }

  function clearMarkers() {
    var canvas = service("canvas");
    marked.forEach(function (entry) {
      if (service("elementRegistry").get(entry[0])) { canvas.removeMarker(entry[0], entry[1]); }
    });
    marked = [];
  }

  function mark(problems, marker) {
    var registry = service("elementRegistry"), canvas = service("canvas");
    (problems || []).forEach(function (problem) {
      var id = problem.element_id;
      if (id && registry.get(id) && marked.every(function (e) { return e[0] !== id || e[1] !== marker; })) {
        canvas.addMarker(id, marker);
        marked.push([id, marker]);
      }
    });
  }

  function problemItem(problem, kind) {
    var item = document.createElement("li");
    item.className = "problem problem-" + kind;
    item.setAttribute("data-element", problem.element_id || "");
    var badge = document.createElement("span");
    badge.className = "badge " + (kind === "error" ? "badge-overdue" : "badge-soon");
    badge.textContent = label(kind);
    item.appendChild(badge);
    item.appendChild(document.createTextNode(" "));
    if (problem.element_id) {
      var code = document.createElement("code");
      code.setAttribute("translate", "no");
      code.textContent = problem.element_id;
      item.appendChild(code);
      item.appendChild(document.createTextNode(" "));
    }
    var text = document.createElement("span");
    text.setAttribute("translate", "no");
    text.textContent = problem.message;
    item.appendChild(text);
    return item;
  }

  function showProblems(errors, warnings) {
    var section = document.getElementById("problems");
    var list = document.getElementById("problem-list");
    list.textContent = "";
    (errors || []).forEach(function (p) { list.appendChild(problemItem(p, "error")); });
    (warnings || []).forEach(function (p) { list.appendChild(problemItem(p, "warning")); });
    section.hidden = !list.children.length;
    clearMarkers();
    mark(warnings, "warning");
    mark(errors, "error");
  }

  function setStatus(text, kind, url) {
    var status = document.getElementById("save-status");
    status.textContent = text;
    status.className = "save-status" + (kind ? " " + kind : "");
    if (url) {
      var link = document.createElement("a");
      link.href = url;
      link.textContent = label("open");
      status.appendChild(document.createTextNode(" "));
      status.appendChild(link);
    }
  }

  function save() {
    var button = document.getElementById("save");
    button.disabled = true;
    setStatus(label("saving"), "");
    modeler.saveXML({ format: true }).then(function (result) {
      var body = new URLSearchParams();
      body.set("csrf_token", config.csrfToken);
      body.set("xml", result.xml);
      return fetch(config.saveUrl, {
        method: "POST", body: body, credentials: "same-origin", headers: { "Accept": "application/json" }
      });
    }).then(function (response) {
      return response.json();
    }).then(function (outcome) {
      setStatus(outcome.message, outcome.ok ? "ok" : "bad", outcome.url);
      showProblems(outcome.errors, outcome.warnings);
      if (outcome.version_label) {
        var version = document.getElementById("current-version");
        version.textContent = outcome.version_label;
        version.hidden = false;
      }
      holder.setAttribute("data-saved", outcome.ok ? "ok" : "error");
    }).catch(function () {
      setStatus(label("failed"), "bad");
      holder.setAttribute("data-saved", "failed");
    }).then(function () {
      button.disabled = false;
    });
  }

  function start() {
    holder = document.getElementById("modeler");
    var source = document.getElementById("modeler-data");
    if (!holder || !source || !window.BpmnJS) { return; }
    config = JSON.parse(source.textContent);
    var template = document.getElementById("labels");
    (template ? template.content.querySelectorAll("[data-key]") : []).forEach(function (el) {
      labels[el.getAttribute("data-key")] = el.textContent;
    });
    document.getElementById("problem-list").addEventListener("click", function (event) {
      var item = event.target.closest("[data-element]");
      if (item && item.getAttribute("data-element") && modeler) { focusElement(item.getAttribute("data-element")); }
    });
    fetch(config.descriptorUrl, { credentials: "same-origin" }).then(function (response) {
      return response.json();
    }).then(function (descriptor) {
      modeler = new window.BpmnJS({ container: holder, moddleExtensions: { spiffworkflow: descriptor } });
      holder.bpmnModeler = modeler;          // for the browser tests
      return modeler.importXML(config.xml);
    }).then(function (result) {
      service("canvas").zoom("fit-viewport");
      bindPanel();
      refreshMessageNames();
      fill();
      showProblems(config.errors, config.warnings);
      var button = document.getElementById("save");
      button.disabled = false;
      button.addEventListener("click", save);
      holder.setAttribute("data-warnings", String((result.warnings || []).length));
      holder.setAttribute("data-imported", "true");
    }).catch(function (error) {
      holder.classList.add("failed-import");
      holder.textContent = (holder.getAttribute("data-error-text") || "") + " " + error.message;
      holder.setAttribute("data-imported", "error");
    });
  }

  document.addEventListener("DOMContentLoaded", start);
})();
