// The steward console's keys, decisions and undo. The pages are rendered by the service; this
// script only moves between them and posts decisions to /steward/act/ (JSON, same origin).
"use strict";

(function () {
  const body = document.body;
  const page = body.dataset.page;
  const LAST = "identity.steward.last";   // the last decision made here: {command_id, text, url}
  const TOAST = "identity.steward.toast"; // a message for the next page

  // --- messages -------------------------------------------------------------------------------
  let toastTimer = null;
  function toast(text, kind) {
    const el = document.getElementById("toast");
    el.textContent = text;
    el.className = kind || "";
    el.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { el.hidden = true; }, kind === "error" ? 12000 : 6000);
  }
  function toastNext(text) { sessionStorage.setItem(TOAST, text); }
  const pending = sessionStorage.getItem(TOAST);
  if (pending) { sessionStorage.removeItem(TOAST); toast(pending); }

  // --- the actions ----------------------------------------------------------------------------
  let busy = false;
  async function act(path, payload) {
    const response = await fetch(path, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "Accept": "application/json" },
      body: JSON.stringify(payload || {}),
    });
    let data = null;
    try { data = await response.json(); } catch (e) { data = null; }
    if (!response.ok) {
      const error = new Error((data && (data.detail || data.title)) || response.statusText);
      error.status = response.status;
      error.problem = data;
      throw error;
    }
    return data;
  }
  function explain(error) {
    if (error.status === 409) {
      return "Someone changed this first: " + error.message + ". Press . to reload.";
    }
    if (error.status === 401 || error.status === 403) {
      return "Not allowed: " + error.message + " (sign in again?)";
    }
    return "Not done: " + error.message;
  }
  async function run(label, path, payload, after) {
    if (busy) return;
    busy = true;
    try {
      const outcome = await act(path, payload);
      after(outcome);
    } catch (error) {
      busy = false;
      toast(explain(error), "error");
    }
  }
  function remember(outcome, text, url) {
    sessionStorage.setItem(LAST, JSON.stringify({ command_id: outcome.command_id, text: text, url: url }));
  }
  // Undo a command, then show where it was decided (the item, in its queue) or this page again.
  async function undoCommand(commandId, url, text) {
    await run("undo", "/steward/act/commands/" + encodeURIComponent(commandId) + "/undo", {}, () => {
      const last = JSON.parse(sessionStorage.getItem(LAST) || "null");
      if (last && last.command_id === commandId) sessionStorage.removeItem(LAST);
      toastNext("Undone: " + (text || "the decision") + ".");
      if (url) { location.assign(url); } else { location.reload(); }
    });
  }
  function undoLast() {
    const last = JSON.parse(sessionStorage.getItem(LAST) || "null");
    if (!last) { toast("Nothing to undo: no decision was made here in this session."); return; }
    undoCommand(last.command_id, last.url, last.text);
  }

  // --- the item view --------------------------------------------------------------------------
  const WORDS = {
    same_person: "same person: linked",
    different_persons: "not a duplicate: remembered",
    dismiss: "dismissed",
  };
  function reasonText() {
    const field = document.querySelector(".decide input[name=reason]");
    return field && field.value.trim() ? field.value.trim() : null;
  }
  function decide(decision) {
    if (body.dataset.status !== "open") { toast("This item is already decided."); return; }
    const item = body.dataset.item;
    const payload = { decision: decision, version: Number(body.dataset.version) };
    const reason = reasonText();
    if (reason) payload.reason = reason;
    run(decision, "/steward/act/review/" + item + "/decision", payload, (outcome) => {
      const text = "#" + item + " " + WORDS[decision];
      remember(outcome, text, body.dataset.self);
      toastNext(text + " · u to undo");
      location.assign(body.dataset.after);
    });
  }
  function merge() {
    if (!body.dataset.merge) { toast("No two persons to merge here."); return; }
    const payload = JSON.parse(body.dataset.mergeBody);
    const reason = reasonText();
    if (reason) payload.reason = reason;
    const item = body.dataset.item;
    run("merge", body.dataset.merge, payload, (outcome) => {
      const text = (item ? "#" + item + " " : "") + "persons merged";
      remember(outcome, text, body.dataset.self);
      toastNext(text + " · u to undo");
      location.assign(body.dataset.after);
    });
  }
  function toggleNormalised() {
    const received = document.querySelector("table.pair tbody.received");
    const normalised = document.querySelector("table.pair tbody.normalised");
    if (!received || !normalised) return;
    const show = normalised.hidden;
    normalised.hidden = !show;
    received.hidden = show;
    toast(show ? "Showing the values as normalised for matching (v: as received)." : "Showing the values as received.");
  }

  // --- rows of a list (queue, search results) -------------------------------------------------
  const rows = Array.from(document.querySelectorAll("[data-rows] tbody tr[data-href]"));
  let selected = -1;
  function select(index) {
    if (!rows.length) return;
    selected = Math.max(0, Math.min(rows.length - 1, index));
    rows.forEach((row, i) => row.classList.toggle("selected", i === selected));
    rows[selected].scrollIntoView({ block: "nearest" });
  }
  rows.forEach((row, i) => row.addEventListener("click", (event) => {
    if (event.target.closest("a, button")) return;
    select(i);
    location.assign(row.dataset.href);
  }));
  if (page === "queue" && rows.length) select(0);

  // --- buttons --------------------------------------------------------------------------------
  document.querySelectorAll("[data-decision]").forEach((button) =>
    button.addEventListener("click", () => decide(button.dataset.decision)));
  document.querySelectorAll("[data-merge-button]").forEach((button) =>
    button.addEventListener("click", merge));
  document.querySelectorAll("[data-undo]").forEach((button) =>
    button.addEventListener("click", () => undoCommand(button.dataset.undo,
      button.dataset.undoItem ? "/steward/review/" + button.dataset.undoItem : null, "the decision")));
  document.querySelectorAll("[data-unlink]").forEach((button) =>
    button.addEventListener("click", () => {
      if (!confirm("Unlink " + button.dataset.label + " from this person? It becomes a person of its own.")) return;
      run("unlink", "/steward/act/records/" + button.dataset.unlink + "/unlink",
        { version: Number(body.dataset.version) }, (outcome) => {
          const text = button.dataset.label + " unlinked";
          remember(outcome, text, null);
          toastNext(text + " · u to undo");
          location.reload();
        });
    }));
  document.querySelectorAll("[data-help]").forEach((button) =>
    button.addEventListener("click", () => document.getElementById("help").showModal()));

  // --- keys -----------------------------------------------------------------------------------
  let prefix = null;
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const target = event.target;
    const typing = target.closest && target.closest("input, textarea, select");
    if (typing) {
      if (event.key === "Escape") target.blur();
      return;
    }
    const help = document.getElementById("help");
    if (help.open) return; // the dialog closes itself on Esc
    const key = event.key;
    if (prefix === "g") {
      prefix = null;
      if (key === "q") { location.assign("/steward/"); event.preventDefault(); }
      else if (key === "d") { location.assign("/steward/dashboard"); event.preventDefault(); }
      return;
    }
    let handled = true;
    switch (key) {
      case "?": help.showModal(); break;
      case "/":
        if (page === "search") {
          const first = document.querySelector("[data-search-first]");
          if (first) first.focus();
        } else { location.assign("/steward/search"); }
        break;
      case "g": prefix = "g"; setTimeout(() => { prefix = null; }, 1500); break;
      case "u": undoLast(); break;
      default: handled = false;
    }
    if (!handled && page === "merge") {
      handled = true;
      switch (key) {
        case "m": merge(); break;
        case "r": {
          const field = document.querySelector(".decide input[name=reason]");
          if (field) field.focus();
          break;
        }
        case "Escape": history.back(); break;
        default: handled = false;
      }
    }
    if (!handled && page === "item") {
      handled = true;
      switch (key) {
        case "l": decide("same_person"); break;
        case "n": decide("different_persons"); break;
        case "d": decide("dismiss"); break;
        case "m": merge(); break;
        case "s": case "j": location.assign(body.dataset.skip); break;
        case "k":
          if (body.dataset.prev) location.assign(body.dataset.prev);
          else toast("This is the first item of the queue.");
          break;
        case "v": toggleNormalised(); break;
        case "r": {
          const field = document.querySelector(".decide input[name=reason]");
          if (field) field.focus();
          break;
        }
        case ".": location.reload(); break;
        case "Escape": location.assign(body.dataset.queue); break;
        default: handled = false;
      }
    } else if (!handled && rows.length) {
      handled = true;
      switch (key) {
        case "j": case "ArrowDown": select(selected + 1); break;
        case "k": case "ArrowUp": select(selected - 1); break;
        case "Enter": if (selected >= 0) location.assign(rows[selected].dataset.href); break;
        default: handled = false;
      }
    } else if (!handled && key === "Escape" && page !== "queue") {
      location.assign("/steward/");
      handled = true;
    }
    if (handled) event.preventDefault();
  });
})();
